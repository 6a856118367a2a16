//! The MCP request headers that restate the body: `MCP-Protocol-Version`, and (2026-07-28)
//! `Mcp-Method` and `Mcp-Name`, which let a proxy route without reading the body. A header that
//! says one thing while the body says another must never reach anything that routes or logs
//! by header, so the gateway checks them against the body before policy runs: HTTP 400 and
//! JSON-RPC -32020 on any disagreement.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::{RejectKind, Rejection, HEADER_MISMATCH, INVALID_REQUEST};
use crate::jsonrpc::{supported_version, Id, Message, Method, STATELESS_VERSION};

/// Every value of each MCP header on the request (HTTP allows a header to repeat).
#[derive(Debug, Clone, Copy, Default)]
pub struct McpHeaders<'a> {
    pub protocol_version: &'a [String],
    pub method: &'a [String],
    pub name: &'a [String],
    /// The names of any `Mcp-Param-*` headers.
    pub params: &'a [String],
}

pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";
pub const PARAM_HEADER_PREFIX: &str = "mcp-param-";

/// Checks the headers against `message`; returns the protocol revision the request speaks.
pub fn check(headers: &McpHeaders<'_>, message: &Message) -> Result<Option<String>, Rejection> {
    let id = &message.id;
    let header_version = single(headers.protocol_version, "MCP-Protocol-Version", id)?;
    if let Some(v) = header_version {
        supported_version(v).map_err(|e| Rejection::new(RejectKind::Invalid, 400, INVALID_REQUEST, e.to_string(), id.clone()))?;
    }
    let version = match (header_version, message.protocol_version.as_deref()) {
        // initialize proposes a revision the server may answer with another; only the
        // 2026-07-28 `_meta` declaration must agree with the header.
        (Some(h), Some(m)) if h != m && !matches!(message.method, Method::Initialize { .. }) => {
            return Err(mismatch(format!("MCP-Protocol-Version header {h:?} does not match the body's protocol version {m:?}"), id));
        }
        (Some(h), _) => Some(h.to_owned()),
        (None, m) => m.map(str::to_owned),
    };
    let stateless = version.as_deref().is_some_and(|v| v >= STATELESS_VERSION);
    let is_response = matches!(message.method, Method::Response { .. });
    let body_method = message.method.name();

    match single(headers.method, "Mcp-Method", id)? {
        Some(_) if is_response => return Err(mismatch("a response carries no Mcp-Method header".into(), id)),
        Some(h) if h != body_method => return Err(mismatch(format!("Mcp-Method header {h:?} does not match the body's method {body_method:?}"), id)),
        None if stateless && !is_response && !matches!(message.method, Method::Initialize { .. }) => {
            return Err(mismatch(format!("missing the Mcp-Method header that protocol {STATELESS_VERSION} requires"), id));
        }
        _ => {}
    }
    match (single(headers.name, "Mcp-Name", id)?, message.method.header_name()) {
        (Some(raw), Some(expected)) => {
            let decoded = decode(raw).ok_or_else(|| mismatch("the Mcp-Name header is not valid Base64".into(), id))?;
            if decoded != expected {
                return Err(mismatch(format!("Mcp-Name header {decoded:?} does not match {expected:?} in the body"), id));
            }
        }
        (Some(raw), None) => return Err(mismatch(format!("Mcp-Name header {raw:?} names nothing: {body_method} has no name"), id)),
        (None, Some(_)) if stateless => {
            return Err(mismatch(format!("missing the Mcp-Name header that protocol {STATELESS_VERSION} requires for {body_method}"), id));
        }
        (None, _) => {}
    }
    // Mcp-Param-* restate tool arguments that a tool's schema marks for headers. The gateway
    // cannot tell which argument such a header stands for, so it cannot vouch for one: refused
    // rather than passed on unchecked.
    if let Some(name) = headers.params.first() {
        return Err(mismatch(format!("the {name} header cannot be checked against the body by this gateway; send the argument in the body only"), id));
    }
    Ok(version)
}

fn single<'a>(values: &'a [String], name: &str, id: &Option<Id>) -> Result<Option<&'a str>, Rejection> {
    match values {
        [] => Ok(None),
        [one] => Ok(Some(one.as_str())),
        _ => Err(mismatch(format!("the {name} header is repeated"), id)),
    }
}

/// SEP-2243 value encoding: `=?base64?<standard base64>?=` carries a value that is not plain
/// visible ASCII; anything else is the value itself.
fn decode(raw: &str) -> Option<String> {
    match raw.strip_prefix("=?base64?").and_then(|inner| inner.strip_suffix("?=")) {
        Some(inner) => String::from_utf8(STANDARD.decode(inner).ok()?).ok(),
        None => Some(raw.to_owned()),
    }
}

fn mismatch(message: String, id: &Option<Id>) -> Rejection {
    Rejection::new(RejectKind::Invalid, 400, HEADER_MISMATCH, message, id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::validate;
    use serde_json::json;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn run(version: &[&str], method: &[&str], name: &[&str], body: serde_json::Value) -> Result<Option<String>, i64> {
        let (version, method, name) = (strings(version), strings(method), strings(name));
        let headers = McpHeaders { protocol_version: &version, method: &method, name: &name, params: &[] };
        check(&headers, &validate(&body).unwrap()).map_err(|r| r.code)
    }

    #[test]
    fn headers_must_restate_the_body() {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"apply_config","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
        let v = Some("2026-07-28".to_owned());
        assert_eq!(run(&["2026-07-28"], &["tools/call"], &["apply_config"], call.clone()), Ok(v.clone()));
        assert_eq!(run(&["2026-07-28"], &["tools/call"], &["=?base64?YXBwbHlfY29uZmln?="], call.clone()), Ok(v));
        assert_eq!(run(&["2026-07-28"], &["tools/call"], &["inspect_sandbox"], call.clone()), Err(HEADER_MISMATCH));
        assert_eq!(run(&["2026-07-28"], &["tools/list"], &["apply_config"], call.clone()), Err(HEADER_MISMATCH));
        assert_eq!(run(&["2026-07-28"], &["tools/call", "tools/call"], &["apply_config"], call.clone()), Err(HEADER_MISMATCH));
        assert_eq!(run(&["2026-07-28"], &[], &["apply_config"], call.clone()), Err(HEADER_MISMATCH), "required at 2026-07-28");
        assert_eq!(run(&["2026-07-28"], &["tools/call"], &[], call.clone()), Err(HEADER_MISMATCH), "required at 2026-07-28");
        assert_eq!(run(&["2025-11-25"], &["tools/call"], &["apply_config"], call), Err(HEADER_MISMATCH), "header and _meta disagree");
    }

    #[test]
    fn older_revisions_need_no_headers_but_a_given_one_must_match() {
        let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
        assert_eq!(run(&[], &[], &[], list.clone()), Ok(None));
        assert_eq!(run(&["2025-11-25"], &[], &[], list.clone()), Ok(Some("2025-11-25".into())));
        assert_eq!(run(&["2025-11-25"], &["tools/call"], &[], list.clone()), Err(HEADER_MISMATCH));
        assert_eq!(run(&["2025-11-25"], &[], &["x"], list.clone()), Err(HEADER_MISMATCH));
        assert_eq!(run(&["1999-01-01"], &[], &[], list), Err(INVALID_REQUEST));
    }
}
