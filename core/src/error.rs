//! JSON-RPC error replies: the one place where a rejection becomes an HTTP status and a
//! JSON-RPC error object.

use serde_json::{json, Value};

use crate::jsonrpc::Id;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined server error: the call was denied by policy or identity checks.
pub const DENIED: i64 = -32001;
/// Implementation-defined server error: the workload is over its rate limit (HTTP 429).
pub const RATE_LIMITED: i64 = -32003;
/// MCP 2026-07-28: an HTTP header that restates the body (`Mcp-Method`, `Mcp-Name`,
/// `MCP-Protocol-Version`) disagrees with it (HTTP 400).
pub const HEADER_MISMATCH: i64 = -32020;

/// Why the gateway refused a request, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Not valid JSON, JSON-RPC or MCP.
    Invalid,
    /// Policy or identity said no.
    Denied,
    /// The workload is over its rate limit.
    RateLimited,
    /// The gateway itself failed; it fails closed.
    Internal,
}

/// A refusal, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub kind: RejectKind,
    pub status: u16,
    pub code: i64,
    pub message: String,
    pub id: Option<Id>,
    pub data: Option<Value>,
    /// Seconds for the `retry-after` header (rate limiting).
    pub retry_after: Option<u64>,
}

impl Rejection {
    pub fn new(kind: RejectKind, status: u16, code: i64, message: impl Into<String>, id: Option<Id>) -> Self {
        Self { kind, status, code, message: message.into(), id, data: None, retry_after: None }
    }

    /// The gateway itself failed: refuse (fail closed) with a 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(RejectKind::Internal, 500, INTERNAL_ERROR, message, None)
    }

    /// A refusal decided before the body was read, once (some of) the body is here: it answers
    /// the request's id when `body` names one.
    pub fn answering(mut self, body: &[u8]) -> Self {
        if self.id.is_none() {
            self.id = crate::jsonrpc::scan_id(body);
        }
        self
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// An upstream's (or the proxy's own) error answer that is not JSON-RPC, restated as a
    /// JSON-RPC error for the request `id`: 5xx as an internal error, 4xx as an invalid request.
    /// `text` is the start of the upstream's answer, kept short and printable.
    pub fn upstream(status: u16, text: &[u8], id: Option<Id>) -> Self {
        let text: String = String::from_utf8_lossy(text).chars().filter(|c| !c.is_control()).take(200).collect();
        let text = text.trim();
        let (kind, code) = if status >= 500 { (RejectKind::Internal, INTERNAL_ERROR) } else { (RejectKind::Invalid, INVALID_REQUEST) };
        // The proxy's own refusals (a timeout, no upstream) come this way too: say what failed,
        // not who.
        let message = if text.is_empty() { format!("request failed with HTTP {status}") } else { format!("request failed with HTTP {status}: {text}") };
        Self::new(kind, status, code, message, id)
    }

    /// The JSON-RPC error response body.
    pub fn body(&self) -> Vec<u8> {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(data), Some(obj)) = (&self.data, error.as_object_mut()) {
            obj.insert("data".into(), data.clone());
        }
        let id = self.id.as_ref().map_or(Value::Null, Id::to_value);
        json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_from_the_headers_answers_the_id_its_body_names() {
        let refused = || Rejection::new(RejectKind::Invalid, 415, INVALID_REQUEST, "POST body must be application/json", None);
        assert_eq!(refused().answering(br#"{"jsonrpc":"2.0","id":"a-1","method":"ping"}"#).id, Some(Id::String("a-1".into())));
        assert_eq!(refused().answering(br#"{"id":7,"params":{"#).id, Some(Id::Number(7)));
        for no_id in [&b""[..], b"not json", br#"[{"id":1}]"#, br#"{"id":null}"#] {
            assert_eq!(refused().answering(no_id).id, None, "{}", String::from_utf8_lossy(no_id));
        }
        let known = Rejection::new(RejectKind::Invalid, 400, INVALID_REQUEST, "x", Some(Id::Number(1)));
        assert_eq!(known.answering(br#"{"id":2}"#).id, Some(Id::Number(1)), "an id already known is kept");
    }
}
