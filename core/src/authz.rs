//! The Rego authorizer. Policy is compiled once (at plugin configuration) and evaluated per
//! call; it returns a decision document, never a bare boolean.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::caller_facts::CallerFacts;
use crate::catalog::Catalog;
use crate::decision_cache::{self, DecisionCache};
use crate::placement::Placement;
use crate::profile::mark;
use crate::userjwt::VerifiedUser;

/// The rule every bundle must define.
pub const ENTRYPOINT: &str = "data.portcullis.authz.decision";
/// The optional rule that names the tools/call arguments policy reads (a set or array of
/// strings, evaluated once when the bundle is compiled). A bundle that defines it sees
/// `input.arguments` only at those names and no `input.plan_hash`, so calls that agree on them
/// share one decision (and one decision-cache entry); see [`Authorizer::decide`].
pub const ARGUMENT_NAMES: &str = "data.portcullis.authz.argument_names";
/// The rules about a cited plan, which only the runner can evaluate: it alone knows the plan
/// (which tool made it, for whom, when). Same bundle, same document shape as [`ENTRYPOINT`].
pub const PLAN_ENTRYPOINT: &str = "data.portcullis.authz.plan_decision";

/// Rego modules (file name, source) and the JSON data document they read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBundle {
    pub modules: Vec<PolicyModule>,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyModule {
    pub name: String,
    pub source: String,
}

/// The calling workload, from the SPIFFE ID in its client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub spiffe_id: String,
    pub trust_domain: String,
    /// The path part of the SPIFFE ID, e.g. `/ns/agents/sa/reader`.
    pub path: String,
    /// `agents` and `reader` for a path `/ns/agents/sa/reader`; `None` for any other path shape.
    pub namespace: Option<String>,
    pub service_account: Option<String>,
}

impl Workload {
    /// Parses `spiffe://<trust-domain>/<path>`; anything else is not an identity.
    pub fn from_spiffe_id(id: &str) -> Option<Self> {
        let rest = id.strip_prefix("spiffe://")?;
        let (td, path) = rest.split_once('/')?;
        let td_ok = !td.is_empty()
            && td.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        let path_ok = !path.is_empty()
            && path.split('/').all(|seg| {
                !seg.is_empty() && seg != "." && seg != ".." && seg.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
            });
        if !(td_ok && path_ok) {
            return None;
        }
        let (namespace, service_account) = match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", ns, "sa", sa] => (Some((*ns).to_owned()), Some((*sa).to_owned())),
            _ => (None, None),
        };
        Some(Self { spiffe_id: id.to_owned(), trust_domain: td.to_owned(), path: format!("/{path}"), namespace, service_account })
    }
}

/// The request time as policy sees it (`input.time`), in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyTime {
    pub unix: u64,
    /// English day name, e.g. `Monday`.
    pub weekday: &'static str,
    pub hour: u8,
    pub minute: u8,
}

impl PolicyTime {
    pub fn from_unix(unix: u64) -> Self {
        const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
        let days = unix / 86_400;
        let secs = unix % 86_400;
        // 1970-01-01 was a Thursday.
        let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thursday");
        Self { unix, weekday, hour: (secs / 3600) as u8, minute: (secs % 3600 / 60) as u8 }
    }
}

/// What policy sees as `input`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyInput<'a> {
    pub method: &'a str,
    pub tool: Option<&'a str>,
    pub arguments: Option<&'a Map<String, Value>>,
    pub plan_hash: Option<&'a str>,
    pub workload: &'a Workload,
    /// The verified user; `null` when no valid user token was presented.
    pub user: Option<&'a VerifiedUser>,
    /// Why there is no user (`null` when there is one), e.g. `bearer token expired`.
    pub user_error: Option<&'a str>,
    pub time: PolicyTime,
    /// What a method other than tools/call names (resource, prompt, ...), flattened into `input`.
    #[serde(flatten)]
    pub mcp: McpInput,
}

/// The members of `input` that methods beyond tools/call fill in; each is left out of `input`
/// when it does not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct McpInput {
    /// The protocol revision the request declares (header, `_meta` or initialize).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// `{"uri"}` for resources/read, resources/subscribe and resources/unsubscribe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    /// `{"name", "arguments"}` for prompts/get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Value>,
    /// `{"ref", "argument"}` for completion/complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<Value>,
    /// The level logging/setLevel asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// `{"to", "error"}` for a client's response (method `response`): the server request it
    /// answers, as the gateway sealed it into the request's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

/// The decision document policy returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub allow: bool,
    #[serde(default)]
    pub require_approval: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub rule_ids: Vec<String>,
    /// For tools/list: the tools this caller may call. The filter trims the upstream's list to
    /// exactly these; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_tools: Option<Vec<String>>,
    /// For resources/list and resources/templates/list: URI prefixes; an entry is shown iff
    /// its `uri` (`uriTemplate`) starts with one of them. Absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_resources: Option<Vec<String>>,
    /// For prompts/list: the prompt names this caller may get (`"*"`: all). Absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_prompts: Option<Vec<String>>,
    /// The policy's word that this decision did not read `input.time`, so the gateway may reuse
    /// it for an identical input until the policy changes (crate::decision_cache). Absent: never.
    #[serde(default)]
    pub cacheable: bool,
    /// For an allowed tools/call: where its job runs. Signed into the ticket, so the runner
    /// runs the call exactly there or not at all. Absent: the tool's catalog default
    /// (`execution.placement`). A placement that fails [`Placement::validate`] denies the
    /// call (see [`RULE_INVALID_PLACEMENT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// The rule id of a decision denied because the policy named a malformed placement.
pub const RULE_INVALID_PLACEMENT: &str = "portcullis.placement";

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("policy module {name} does not compile: {reason}")]
    Module { name: String, reason: String },
    #[error("policy data is not valid: {0}")]
    Data(String),
    #[error("policy does not compile with entrypoint {ENTRYPOINT}: {0}")]
    Compile(String),
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    #[error("policy returned a malformed decision: {0}")]
    Malformed(String),
}

pub struct Authorizer {
    compiled: regorus::CompiledPolicy,
    version: String,
    cache: DecisionCache,
    /// The bundle's [`ARGUMENT_NAMES`]; `None`: policy sees every argument and the plan hash.
    argument_names: Option<BTreeSet<String>>,
    /// The bundle's caller facts ([`crate::caller_facts`]); `None`: it defines none.
    caller_facts: Option<CallerFacts>,
}

impl Authorizer {
    /// Compiles `bundle` with the catalog merged into `data.portcullis.catalog`.
    pub fn new(bundle: &PolicyBundle, catalog: &Catalog) -> Result<Self, AuthzError> {
        let mut engine = engine_with(bundle, catalog)?;
        let argument_names = argument_names(&mut engine)?;
        let caller_facts = CallerFacts::new(engine.clone())?;
        let compiled = engine
            .compile_with_entrypoint(&ENTRYPOINT.into())
            .map_err(|e| AuthzError::Compile(e.to_string()))?;
        Ok(Self { compiled, version: bundle_version(bundle, catalog), cache: DecisionCache::default(), argument_names, caller_facts })
    }

    /// This authorizer, never handing policy its caller facts: every decision computes them
    /// itself, as another engine would; to check that the memo changes no decision.
    pub fn without_caller_facts(mut self) -> Self {
        self.caller_facts = None;
        self
    }

    /// The bundle's caller facts and their memo, when it defines them.
    pub fn caller_facts(&self) -> Option<&CallerFacts> {
        self.caller_facts.as_ref()
    }

    /// This authorizer, showing policy every argument and the plan hash whatever the bundle
    /// names: to check that a bundle's [`ARGUMENT_NAMES`] leaves out nothing it reads.
    pub fn showing_every_argument(mut self) -> Self {
        self.argument_names = None;
        self
    }

    /// The argument names policy sees, when the bundle names them ([`ARGUMENT_NAMES`]).
    pub fn argument_names(&self) -> Option<&BTreeSet<String>> {
        self.argument_names.as_ref()
    }

    /// Hash of the policy modules, data and catalog that this authorizer was built from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Decision-cache lookups that hit and that missed, since this policy was compiled.
    pub fn cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }

    /// How many decisions the cache holds now.
    pub fn cached_decisions(&self) -> usize {
        self.cache.len()
    }

    /// Decides `input`, reusing an earlier decision for the same input (time aside) when the
    /// policy declared that one cacheable.
    ///
    /// When the bundle names the arguments it reads ([`ARGUMENT_NAMES`]), policy is shown, and
    /// the cache is keyed on, only those arguments (and no plan hash): what is evaluated is
    /// exactly what is keyed, so a call whose other arguments are new reuses the decision.
    pub fn decide(&self, input: &PolicyInput<'_>) -> Result<Decision, AuthzError> {
        let mut shown = None;
        let input = self.narrowed(input, &mut shown);
        mark("narrow");
        let key = decision_cache::key(&input);
        mark("cache_key");
        if let Some(hit) = key.as_ref().and_then(|k| self.cache.get(k)) {
            mark("cache_hit");
            return Ok(hit);
        }
        mark("cache_miss");
        let decision = self.evaluate(&input)?;
        if let (Some(key), true) = (key, decision.cacheable) {
            self.cache.insert(key, decision.clone());
        }
        mark("cache_insert");
        Ok(decision)
    }

    /// Evaluates the policy for `input` (shown to policy as [`Authorizer::decide`] shows it),
    /// bypassing the decision cache.
    pub fn decide_uncached(&self, input: &PolicyInput<'_>) -> Result<Decision, AuthzError> {
        let mut shown = None;
        self.evaluate(&self.narrowed(input, &mut shown))
    }

    /// `input` as policy is shown it: with [`ARGUMENT_NAMES`], only those arguments (kept in
    /// `shown`) and no plan hash.
    fn narrowed<'c, 'b>(&self, input: &'c PolicyInput<'b>, shown: &'b mut Option<Map<String, Value>>) -> Cow<'c, PolicyInput<'b>> {
        let Some(names) = &self.argument_names else { return Cow::Borrowed(input) };
        *shown = input.arguments.map(|a| shown_arguments(names, a));
        Cow::Owned(PolicyInput { arguments: shown.as_ref(), plan_hash: None, ..input.clone() })
    }

    /// Evaluates an input already narrowed by [`Authorizer::narrowed`].
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Decision, AuthzError> {
        let input = serde_json::to_value(input).map_err(|e| AuthzError::Eval(e.to_string()))?;
        mark("input_json");
        self.eval_shown(input)
    }

    /// Evaluates an input as shown to policy, with the caller facts when the bundle has them.
    fn eval_shown(&self, input: Value) -> Result<Decision, AuthzError> {
        let input = match &self.caller_facts {
            Some(facts) => facts.attach(input)?,
            None => regorus::Value::from(input),
        };
        mark("input_regorus_facts");
        eval(&self.compiled, input)
    }

    /// Decides for any input document (policy tooling evaluates hand-written inputs), shown to
    /// policy as [`Authorizer::decide`] shows it.
    pub fn decide_value(&self, input: &Value) -> Result<Decision, AuthzError> {
        match (&self.argument_names, input) {
            (Some(names), Value::Object(members)) => {
                let mut shown = members.clone();
                shown.remove("plan_hash");
                if let Some(Value::Object(arguments)) = members.get("arguments") {
                    shown.insert("arguments".into(), Value::Object(shown_arguments(names, arguments)));
                }
                self.eval_shown(Value::Object(shown))
            }
            _ => self.eval_shown(input.clone()),
        }
    }
}

/// The bundle's plan rules ([`PLAN_ENTRYPOINT`]), for the runner: input is a tools/call's
/// [`PolicyInput`] plus `plan`, the cited plan's provenance. Cloning shares the compiled policy.
#[derive(Clone)]
pub struct PlanRules {
    compiled: regorus::CompiledPolicy,
}

impl PlanRules {
    pub fn new(bundle: &PolicyBundle, catalog: &Catalog) -> Result<Self, AuthzError> {
        let mut engine = engine_with(bundle, catalog)?;
        let compiled = engine
            .compile_with_entrypoint(&PLAN_ENTRYPOINT.into())
            .map_err(|e| AuthzError::Compile(e.to_string()))?;
        Ok(Self { compiled })
    }

    /// The decision; a bundle that yields nothing denies (fail closed).
    pub fn decide(&self, input: &Value) -> Result<Decision, AuthzError> {
        eval(&self.compiled, regorus::Value::from(input.clone()))
    }
}

fn eval(compiled: &regorus::CompiledPolicy, input: regorus::Value) -> Result<Decision, AuthzError> {
    let out = compiled
        .eval_with_input(input)
        .map_err(|e| AuthzError::Eval(e.to_string()))?;
    mark("rego_eval");
    if out == regorus::Value::Undefined {
        // Fail closed: a bundle that yields nothing for this input denies it.
        return Ok(Decision {
            allow: false,
            require_approval: false,
            reasons: vec!["policy produced no decision for this request".into()],
            rule_ids: vec!["portcullis.undefined".into()],
            cacheable: false,
            ..Decision::default()
        });
    }
    let mut out = serde_json::to_value(&out).map_err(|e| AuthzError::Malformed(e.to_string()))?;
    // The placement is read on its own: a malformed one denies this call with a reason the
    // caller and the policy author can read, where any other malformed member is an error.
    let placement = out.as_object_mut().and_then(|o| o.remove("placement"));
    let mut decision: Decision = serde_json::from_value(out).map_err(|e| AuthzError::Malformed(e.to_string()))?;
    match placement.map(checked_placement).transpose() {
        Ok(placement) => decision.placement = placement.flatten(),
        // Fail closed: a job is never sent somewhere that is not a place.
        Err(reason) => {
            decision.allow = false;
            decision.require_approval = false;
            decision.reasons = vec![format!("the policy named an invalid placement: {reason}")];
            decision.rule_ids = vec![RULE_INVALID_PLACEMENT.into()];
            decision.placement = None;
        }
    }
    mark("decision_read");
    Ok(decision)
}

/// A decision's `placement` member: `null` is none; anything else must be a valid placement.
fn checked_placement(value: Value) -> Result<Option<Placement>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let placement: Placement = serde_json::from_value(value).map_err(|e| e.to_string())?;
    placement.validate()?;
    Ok(Some(placement))
}

/// The arguments at `names`, the only ones policy is shown.
fn shown_arguments(names: &BTreeSet<String>, arguments: &Map<String, Value>) -> Map<String, Value> {
    names.iter().filter_map(|n| arguments.get(n).map(|v| (n.clone(), v.clone()))).collect()
}

/// The bundle's [`ARGUMENT_NAMES`] (evaluated without input: it may read only data), or
/// `None` when the bundle does not define it. Anything but a set or array of strings is an
/// error: a bundle that meant to narrow its input but got it wrong should not start.
fn argument_names(engine: &mut regorus::Engine) -> Result<Option<BTreeSet<String>>, AuthzError> {
    let invalid = |reason: String| AuthzError::Compile(format!("{ARGUMENT_NAMES}: {reason}"));
    engine.set_input(regorus::Value::new_object());
    // A query, unlike a rule evaluation, is simply undefined for a rule the bundle lacks.
    let results = engine.eval_query(ARGUMENT_NAMES.to_owned(), false).map_err(|e| invalid(e.to_string()))?;
    let Some(value) = results.result.first().and_then(|r| r.expressions.first()).map(|e| &e.value) else {
        return Ok(None);
    };
    let value = serde_json::to_value(value).map_err(|e| invalid(e.to_string()))?;
    let names = value.as_array().and_then(|items| items.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<BTreeSet<_>>>());
    names.map(Some).ok_or_else(|| invalid(format!("must be a set of argument names (strings), not {value}")))
}

fn engine_with(bundle: &PolicyBundle, catalog: &Catalog) -> Result<regorus::Engine, AuthzError> {
    crate::eval_budget::install();
    let mut engine = regorus::Engine::new();
    for m in &bundle.modules {
        engine
            .add_policy(m.name.clone(), m.source.clone())
            .map_err(|e| AuthzError::Module { name: m.name.clone(), reason: e.to_string() })?;
    }
    if !bundle.data.is_null() {
        engine.add_data(regorus::Value::from(bundle.data.clone())).map_err(|e| AuthzError::Data(e.to_string()))?;
    }
    let catalog_data = json!({"portcullis": {"catalog": catalog.policy_data()}});
    engine.add_data(regorus::Value::from(catalog_data)).map_err(|e| AuthzError::Data(e.to_string()))?;
    Ok(engine)
}

fn bundle_version(bundle: &PolicyBundle, catalog: &Catalog) -> String {
    let mut h = Sha256::new();
    let mut modules: Vec<&PolicyModule> = bundle.modules.iter().collect();
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    for m in modules {
        // Length-prefixed so that no two different bundles feed the same bytes.
        for part in [m.name.as_bytes(), m.source.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    for doc in [&bundle.data, &catalog.policy_data()] {
        let text = crate::plan::canonicalize(doc).unwrap_or_else(|_| doc.to_string());
        h.update((text.len() as u64).to_be_bytes());
        h.update(text.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The outcome of one Rego unit test (`test_*` rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub name: String,
    pub passed: bool,
    pub detail: Option<String>,
}

/// Runs every `test_*` rule in `bundle`, as `opa test` does: a test passes when its rule
/// evaluates to `true`.
pub fn run_tests(bundle: &PolicyBundle, catalog: &Catalog) -> Result<Vec<TestOutcome>, AuthzError> {
    // Unit tests are offline work, each rule possibly deciding every case: no time budget.
    crate::eval_budget::lift();
    let mut engine = engine_with(bundle, catalog)?;
    let mut outcomes = Vec::new();
    for m in &bundle.modules {
        let Some(package) = m.source.lines().find_map(|l| l.trim().strip_prefix("package ")) else {
            continue;
        };
        let mut seen = std::collections::BTreeSet::new();
        for line in m.source.lines() {
            let Some(name) = test_rule_name(line) else { continue };
            if !seen.insert(name.to_owned()) {
                continue;
            }
            let path = format!("data.{}.{name}", package.trim());
            let (passed, detail) = match engine.eval_rule(path.clone()) {
                Ok(regorus::Value::Bool(true)) => (true, None),
                Ok(regorus::Value::Undefined) => (false, Some("undefined".to_owned())),
                Ok(other) => (false, Some(format!("evaluated to {other}"))),
                Err(e) => (false, Some(format!("error: {e}"))),
            };
            outcomes.push(TestOutcome { name: path, passed, detail });
        }
    }
    Ok(outcomes)
}

fn test_rule_name(line: &str) -> Option<&str> {
    if !line.starts_with("test_") {
        return None;
    }
    let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(line.len());
    line.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_time_is_utc_weekday_hour_minute() {
        let t = PolicyTime::from_unix(1_790_000_000);
        assert_eq!((t.weekday, t.hour, t.minute), ("Monday", 14, 13));
        assert_eq!(PolicyTime::from_unix(0).weekday, "Thursday");
        assert_eq!(PolicyTime::from_unix(4 * 86_400 - 1).weekday, "Sunday");
        assert_eq!(PolicyTime::from_unix(4 * 86_400).weekday, "Monday");
    }

    /// A bundle whose decision names the placement the call's `where` argument gives, so one
    /// authorizer can be asked for every shape.
    fn placing_authorizer() -> Authorizer {
        let source = "package portcullis.authz\n\nimport rego.v1\n\ndecision := {\"allow\": true, \"rule_ids\": [\"t\"], \"cacheable\": true, \"placement\": input.arguments.where} if input.arguments.where != \"none\"\n\ndecision := {\"allow\": true, \"rule_ids\": [\"t\"], \"cacheable\": true} if input.arguments.where == \"none\"\n";
        let bundle = PolicyBundle { modules: vec![PolicyModule { name: "p.rego".into(), source: source.into() }], data: Value::Null };
        let catalog = Catalog::from_value(json!({"version": 1, "tools": [{"name": "t", "description": "d", "kind": "query", "risk": "low", "owner": "o",
            "input_schema": {"type": "object"}, "execution": {"local": {"command": ["true"], "timeout_seconds": 1}}}]}))
        .unwrap();
        Authorizer::new(&bundle, &catalog).unwrap()
    }

    fn placed(a: &Authorizer, place: Value) -> Decision {
        let workload = Workload::from_spiffe_id("spiffe://td/ns/a/sa/b").unwrap();
        let arguments = json!({"where": place});
        let input = PolicyInput {
            method: "tools/call",
            tool: Some("t"),
            arguments: arguments.as_object(),
            plan_hash: Some("sha256:00"),
            workload: &workload,
            user: None,
            user_error: Some("no bearer token"),
            time: PolicyTime::from_unix(0),
            mcp: McpInput::default(),
        };
        a.decide(&input).unwrap()
    }

    #[test]
    fn a_policy_placement_is_part_of_the_decision_and_of_its_cache_entry() {
        let a = placing_authorizer();
        let eu = json!({"backend": "kubernetes", "context": "prod-eu", "node_selector": {"topology.kubernetes.io/region": "eu-west-1"}});
        let d = placed(&a, eu.clone());
        assert!(d.allow, "{d:?}");
        let want: Placement = serde_json::from_value(eu.clone()).unwrap();
        assert_eq!(d.placement.as_ref(), Some(&want));
        // The cached decision is the same decision, placement included.
        assert_eq!(placed(&a, eu), d);
        assert_eq!(a.cache_counts().0, 1, "the second lookup was a hit");
        assert_eq!(placed(&a, json!("none")).placement, None, "no placement: the catalog default");
        assert_eq!(placed(&a, Value::Null).placement, None, "null is no placement");
        assert!(placed(&a, Value::Null).allow);
    }

    #[test]
    fn an_invalid_policy_placement_denies_the_call() {
        let a = placing_authorizer();
        for bad in [
            json!({"backend": "mars"}),
            json!({"backend": "local", "context": "prod-eu"}),
            json!({"backend": "kubernetes", "node_selector": {"bad key!": "x"}}),
            json!({"backend": "kubernetes", "zone": "eu"}),
            json!("kubernetes"),
        ] {
            let d = placed(&a, bad.clone());
            assert!(!d.allow, "{bad} allowed: {d:?}");
            assert_eq!(d.rule_ids, vec![RULE_INVALID_PLACEMENT.to_owned()], "{bad}");
            assert!(d.reasons.first().is_some_and(|r| r.starts_with("the policy named an invalid placement: ")), "{d:?}");
            assert_eq!(d.placement, None);
        }
    }

    #[test]
    fn workload_namespace_and_service_account_only_for_ns_sa_paths() {
        let w = Workload::from_spiffe_id("spiffe://td/ns/agents/sa/reader").unwrap();
        assert_eq!((w.namespace.as_deref(), w.service_account.as_deref()), (Some("agents"), Some("reader")));
        for other in ["spiffe://td/ns/agents/sa/reader/x", "spiffe://td/workload/1", "spiffe://td/ns/agents"] {
            let w = Workload::from_spiffe_id(other).unwrap();
            assert_eq!((w.namespace, w.service_account), (None, None), "{other}");
        }
    }
}
