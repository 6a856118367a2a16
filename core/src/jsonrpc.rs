//! JSON-RPC 2.0 and the MCP methods the gateway understands.
//!
//! Validation is strict: a message that an upstream might read differently from the gateway
//! (extra members, wrong types, a null id) is refused rather than guessed at.

use serde_json::{Map, Value};

/// A JSON-RPC request id. MCP forbids `null`; JSON-RPC discourages fractional numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Number(i64),
    String(String),
}

impl Id {
    pub fn to_value(&self) -> Value {
        match self {
            Id::Number(n) => Value::from(*n),
            Id::String(s) => Value::String(s.clone()),
        }
    }
}

/// One validated client-to-server message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `None` for a notification.
    pub id: Option<Id>,
    pub method: Method,
    /// The protocol revision the message declares: `_meta["io.modelcontextprotocol/protocolVersion"]`
    /// (2026-07-28), or initialize's `protocolVersion`.
    pub protocol_version: Option<String>,
}

pub use methods::{Method, RESPONSE};

/// The protocol revisions whose messages the gateway understands, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-06-18", "2025-11-25", "2026-07-28"];
/// The first revision without sessions, where requests carry their context in `_meta` and
/// POSTs carry `Mcp-Method` / `Mcp-Name`.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// The `_meta` key that carries the protocol revision of a 2026-07-28 request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// Why a message is not a valid request. `InvalidRequest` maps to JSON-RPC -32600 and
/// `InvalidParams` to -32602.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("JSON-RPC batches are not accepted: MCP 2025-06-18 removed batching, and a ticket authorizes exactly one call")]
    Batch,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
}

/// Validates one parsed JSON value as a JSON-RPC 2.0 request or notification from a client.
pub fn validate(value: &Value) -> Result<Message, RpcError> {
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => return Err(RpcError::Batch),
        _ => return Err(invalid("the message must be a JSON object")),
    };
    if obj.contains_key("result") || obj.contains_key("error") {
        return methods::validate_response(obj);
    }
    for key in obj.keys() {
        if !matches!(key.as_str(), "jsonrpc" | "id" | "method" | "params") {
            return Err(invalid(&format!("unexpected member {key:?}")));
        }
    }
    check_jsonrpc(obj)?;
    let id = match obj.get("id") {
        None => None,
        Some(v) => Some(parse_id(v)?),
    };
    let method = match obj.get("method") {
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        Some(_) => return Err(invalid("\"method\" must be a non-empty string")),
        None => return Err(invalid("missing \"method\"")),
    };
    let params = match obj.get("params") {
        None => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => return Err(RpcError::InvalidParams("\"params\" must be an object".into())),
    };
    let mut protocol_version = match params.and_then(|p| p.get("_meta")) {
        Some(meta) => check_meta(meta)?,
        None => None,
    };
    let method = methods::parse(method, params)?;
    if let Method::Initialize { protocol_version: proposed } = &method {
        protocol_version.get_or_insert_with(|| proposed.clone());
    }
    let is_notification = method.name().starts_with("notifications/");
    if is_notification != id.is_none() {
        return Err(invalid(if is_notification {
            "a notification must not have an \"id\""
        } else {
            "a request must have an \"id\""
        }));
    }
    Ok(Message { id, method, protocol_version })
}

fn check_jsonrpc(obj: &Map<String, Value>) -> Result<(), RpcError> {
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => Ok(()),
        Some(_) => Err(invalid("\"jsonrpc\" must be exactly \"2.0\"")),
        None => Err(invalid("missing \"jsonrpc\": \"2.0\"")),
    }
}

/// Reads a usable id out of any JSON value, for error replies to messages that failed
/// validation. Returns `None` where there is no trustworthy id.
pub fn recover_id(value: &Value) -> Option<Id> {
    value.get("id").and_then(|v| parse_id(v).ok())
}

pub(crate) fn parse_id(v: &Value) -> Result<Id, RpcError> {
    match v {
        Value::String(s) => Ok(Id::String(s.clone())),
        Value::Number(n) => n
            .as_i64()
            .map(Id::Number)
            .ok_or_else(|| invalid("\"id\" must be a string or an integer")),
        Value::Null => Err(invalid("\"id\" must not be null")),
        _ => Err(invalid("\"id\" must be a string or an integer")),
    }
}

pub(crate) fn invalid(msg: &str) -> RpcError {
    RpcError::InvalidRequest(msg.to_owned())
}

pub(crate) fn bad_params(msg: &str) -> RpcError {
    RpcError::InvalidParams(msg.to_owned())
}

/// `params._meta` is MCP's reserved metadata object. The members the protocol defines must have
/// the form the upstream will parse them as, or the gateway and the upstream could read one
/// message differently; the protocol revision, when declared, must be one the gateway
/// understands. Returns the declared revision.
fn check_meta(meta: &Value) -> Result<Option<String>, RpcError> {
    let Value::Object(meta) = meta else { return Err(bad_params("\"_meta\" must be an object")) };
    match meta.get("progressToken") {
        None | Some(Value::String(_)) => {}
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        Some(_) => return Err(bad_params("\"_meta.progressToken\" must be a string or an integer")),
    }
    for key in ["io.modelcontextprotocol/clientCapabilities", "io.modelcontextprotocol/clientInfo"] {
        if meta.get(key).is_some_and(|v| !v.is_object()) {
            return Err(RpcError::InvalidParams(format!("\"_meta.{key}\" must be an object")));
        }
    }
    if meta.get("io.modelcontextprotocol/logLevel").is_some_and(|v| !v.is_string()) {
        return Err(bad_params("\"_meta.io.modelcontextprotocol/logLevel\" must be a string"));
    }
    match meta.get(META_PROTOCOL_VERSION) {
        None => Ok(None),
        Some(Value::String(v)) => supported_version(v).map(|()| Some(v.clone())),
        Some(_) => Err(RpcError::InvalidParams(format!("\"_meta.{META_PROTOCOL_VERSION}\" must be a string"))),
    }
}

/// A protocol revision the gateway understands, or the refusal that names those it does.
pub fn supported_version(version: &str) -> Result<(), RpcError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(RpcError::InvalidParams(format!(
        "protocol version {version:?} is not supported by this gateway; supported: {}",
        SUPPORTED_VERSIONS.join(", ")
    )))
}

pub(crate) fn only_members(p: &Map<String, Value>, allowed: &[&str]) -> Result<(), RpcError> {
    match p.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(RpcError::InvalidParams(format!("unexpected member {k:?} in params"))),
        None => Ok(()),
    }
}

pub(crate) fn require_str<'a>(p: &'a Map<String, Value>, key: &str) -> Result<&'a str, RpcError> {
    p.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::InvalidParams(format!("{key:?} must be a string")))
}

pub(crate) fn require_obj<'a>(p: &'a Map<String, Value>, key: &str) -> Result<&'a Map<String, Value>, RpcError> {
    p.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::InvalidParams(format!("{key:?} must be an object")))
}

mod methods;
mod scan;
pub use scan::scan_id;

#[cfg(test)]
mod tests;
