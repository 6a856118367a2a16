//! The native Envoy peer: Envoy's own MCP filter and RBAC filter, given the rules of the
//! default policy's `reader` role, generated at bench time from `policies/` and the catalog so
//! that they cannot drift from what Portcullis enforces.
//!
//! The chain is `buffer` → `mcp` → `rbac` → router. The buffer filter comes first because the
//! MCP filter lets the headers continue as soon as it has the fields it extracts: an RBAC
//! denial is then a local reply while the request body is still arriving, and Envoy closes an
//! HTTP/1.1 connection it cannot drain, so every denied call would cost a new TLS connection.
//! Buffered, the body has been read whole when RBAC answers and the connection stays open.
//!
//! What RBAC cannot express is left out (argument rules, change windows, users): for the
//! reader and the calls the benchmark makes, none of them applies.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

/// The MCP filter's dynamic-metadata namespace.
pub const MCP_NAMESPACE: &str = "envoy.filters.http.mcp";
/// The JSON-RPC error code of the native denial (the same as the filter's).
pub const DENIED_CODE: i64 = -32001;
const ROLE: &str = "reader";

/// Who is the reader and what it may call.
#[derive(Debug, Clone)]
pub struct ReaderRules {
    /// SPIFFE IDs (URI SANs) of the reader's workloads.
    pub principals: Vec<String>,
    /// Protocol methods every role holder may send (`protocol_methods` in authz.rego).
    pub methods: Vec<String>,
    /// Catalog tools the reader's grants permit without a user, approval or break-glass.
    pub tools: Vec<String>,
}

/// Reads the reader's rules from `root/policies` and `root/catalog/example.yaml`.
pub fn reader_rules(root: &Path) -> Result<ReaderRules> {
    let rego = std::fs::read_to_string(root.join("policies/authz.rego")).context("reading policies/authz.rego")?;
    let data: Value = serde_json::from_str(&std::fs::read_to_string(root.join("policies/data.json")).context("reading policies/data.json")?)?;
    let catalog = portcullis_runner::devstack::bundle::load_catalog_value(&root.join("catalog/example.yaml"))?;
    let rules = ReaderRules { principals: principals(&data)?, methods: rego_set(&rego, "protocol_methods")?, tools: tools(&data, &catalog, &risk_rank(&rego)?)? };
    // The benchmark's allow and deny calls must land on either side of these rules.
    ensure!(rules.tools.iter().any(|t| t == "word_count"), "the reader's rules do not allow word_count: {:?}", rules.tools);
    ensure!(!rules.tools.iter().any(|t| t == "apply_config"), "the reader's rules allow apply_config");
    Ok(rules)
}

fn principals(data: &Value) -> Result<Vec<String>> {
    let workloads = data["portcullis"]["roles"][ROLE]["workloads"].as_array().context("no workloads for the reader role")?;
    let mut out = Vec::new();
    for w in workloads {
        let id = w.as_str().context("a workload is not a string")?;
        // A pattern would need a regex matcher; the default policy names the reader exactly.
        ensure!(!id.split('/').any(|s| s == "*"), "workload pattern {id} is not supported by the native reference");
        out.push(id.to_owned());
    }
    Ok(out)
}

/// The tools `data.portcullis.roles.reader` may call, as authz.rego's `grant_permits` and the
/// risk tiers decide for a workload without a user.
fn tools(data: &Value, catalog: &Value, rank: &BTreeMap<String, i64>) -> Result<Vec<String>> {
    let p = &data["portcullis"];
    let role = &p["roles"][ROLE];
    let operator = role["operator"].as_bool().unwrap_or(false);
    let grants = role["grants"].as_array().context("the reader role has no grants")?;
    let user_kinds: Vec<&str> = p["user_required_kinds"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let windowed: Vec<&str> = p["change_windows"].as_array().into_iter().flatten().flat_map(|w| w["tools"].as_array().into_iter().flatten()).filter_map(Value::as_str).collect();
    let mut out = Vec::new();
    for tool in catalog["tools"].as_array().context("catalog has no tools")? {
        let (Some(name), Some(kind), Some(risk)) = (tool["name"].as_str(), tool["kind"].as_str(), tool["risk"].as_str()) else {
            bail!("catalog tool without name, kind or risk: {tool}");
        };
        let risk_rank = *rank.get(risk).with_context(|| format!("risk {risk} not in risk_rank"))?;
        let permitted = grants.iter().any(|g| {
            let named = g["tools"].as_array().is_some_and(|t| t.iter().any(|t| t == name));
            let by_kind = g["kinds"].as_array().is_some_and(|k| k.iter().any(|k| k == kind))
                && g["max_risk"].as_str().and_then(|m| rank.get(m)).is_some_and(|max| risk_rank <= *max);
            named || by_kind
        });
        let tier = &p["risk_tiers"][risk];
        let needs_more = ["requires_user", "requires_approval", "requires_break_glass"].iter().any(|k| tier[k] == true)
            || (tier["operators_only"] == true && !operator)
            || user_kinds.contains(&kind)
            || windowed.contains(&name);
        if permitted && !needs_more {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// The quoted strings of a Rego set `name := { "a", "b", ... }`.
fn rego_set(rego: &str, name: &str) -> Result<Vec<String>> {
    let body = rego_braces(rego, name)?;
    Ok(body.split('"').skip(1).step_by(2).map(str::to_owned).collect())
}

/// The entries of a Rego object of numbers `name := {"a": 0, "b": 1}`.
fn risk_rank(rego: &str) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for entry in rego_braces(rego, "risk_rank")?.split(',') {
        let (k, v) = entry.split_once(':').with_context(|| format!("risk_rank entry {entry:?}"))?;
        out.insert(k.trim().trim_matches('"').to_owned(), v.trim().parse()?);
    }
    Ok(out)
}

fn rego_braces<'a>(rego: &'a str, name: &str) -> Result<&'a str> {
    let start = rego.find(&format!("\n{name} := {{")).with_context(|| format!("no `{name} := {{` in authz.rego"))?;
    let rest = &rego[start..];
    let open = rest.find('{').context("no {")? + 1;
    let close = rest.find('}').context("no }")?;
    Ok(&rest[open..close])
}

fn mcp_field(path: &[&str], value: Value) -> Value {
    let path: Vec<Value> = path.iter().map(|k| json!({ "key": k })).collect();
    json!({ "sourced_metadata": { "metadata_matcher": { "filter": MCP_NAMESPACE, "path": path, "value": value } } })
}

fn one_of(values: &[String]) -> Value {
    let matchers: Vec<Value> = values.iter().map(|v| json!({ "string_match": { "exact": v } })).collect();
    json!({ "or_match": { "value_matchers": matchers } })
}

/// The `buffer`, `mcp` and `rbac` http filters (in that order), to go before the router.
pub fn http_filters(rules: &ReaderRules, max_body_bytes: u64) -> Vec<Value> {
    let principals: Vec<Value> = rules.principals.iter().map(|id| json!({ "authenticated": { "principal_name": { "exact": id } } })).collect();
    let tools_call = mcp_field(&["method"], json!({ "string_match": { "exact": "tools/call" } }));
    vec![
        json!({ "name": "envoy.filters.http.buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": max_body_bytes } }),
        json!({ "name": "envoy.filters.http.mcp", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp",
            "traffic_mode": "REJECT_NO_MCP" } }),
        json!({ "name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": { "action": "ALLOW", "policies": {
                "reader-protocol": { "principals": principals, "permissions": [ mcp_field(&["method"], one_of(&rules.methods)) ] },
                "reader-tools": { "principals": principals, "permissions": [ { "and_rules": { "rules": [
                    tools_call, mcp_field(&["params", "name"], one_of(&rules.tools)) ] } } ] },
            } } } }),
    ]
}

/// Turns RBAC's plain-text 403 into a JSON-RPC error carrying the request's id.
pub fn local_reply_config() -> Value {
    json!({ "mappers": [ {
        "filter": { "status_code_filter": { "comparison": { "op": "EQ", "value": { "default_value": 403, "runtime_key": "bench.native.denied_status" } } } },
        "body_format_override": { "json_format": {
            "jsonrpc": "2.0",
            "id": format!("%DYNAMIC_METADATA({MCP_NAMESPACE}:id)%"),
            "error": { "code": DENIED_CODE, "message": "%LOCAL_REPLY_BODY%" } } },
    } ] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rego_sets_and_objects() {
        let rego = "package x\n\nprotocol_methods := {\n\t\"initialize\", \"ping\",\n\t\"tools/list\",\n}\n\nrisk_rank := {\"low\": 0, \"medium\": 1}\n";
        assert_eq!(rego_set(rego, "protocol_methods").unwrap(), ["initialize", "ping", "tools/list"]);
        assert_eq!(risk_rank(rego).unwrap().get("medium"), Some(&1));
        assert!(rego_set(rego, "missing").is_err());
    }

    #[test]
    fn the_repository_reader_gets_its_low_query_tools_and_protocol_methods() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let rules = reader_rules(&root).unwrap();
        assert_eq!(rules.principals, ["spiffe://portcullis.local/ns/agents/sa/reader"]);
        assert_eq!(rules.tools, ["inspect_sandbox", "word_count", "list_pods", "watch_rollout"]);
        assert!(rules.methods.iter().any(|m| m == "tools/list") && rules.methods.iter().any(|m| m == "initialize"));
        assert!(!rules.methods.iter().any(|m| m == "tools/call"));
    }
}
