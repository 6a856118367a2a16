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
}

#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Initialize,
    Initialized,
    Ping,
    ToolsList,
    ToolsCall { name: String, arguments: Option<Map<String, Value>> },
    /// A method the gateway has no model for; only policy can allow it.
    Other(String),
}

impl Method {
    pub fn name(&self) -> &str {
        match self {
            Method::Initialize => "initialize",
            Method::Initialized => "notifications/initialized",
            Method::Ping => "ping",
            Method::ToolsList => "tools/list",
            Method::ToolsCall { .. } => "tools/call",
            Method::Other(name) => name,
        }
    }
}

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
    for key in obj.keys() {
        if !matches!(key.as_str(), "jsonrpc" | "id" | "method" | "params") {
            if matches!(key.as_str(), "result" | "error") {
                return Err(invalid("responses to server requests are not accepted by this gateway"));
            }
            return Err(invalid(&format!("unexpected member {key:?}")));
        }
    }
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return Err(invalid("\"jsonrpc\" must be exactly \"2.0\"")),
        None => return Err(invalid("missing \"jsonrpc\": \"2.0\"")),
    }
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
    if let Some(meta) = params.and_then(|p| p.get("_meta")) {
        check_meta(meta)?;
    }
    let method = mcp_method(method, params)?;
    let is_notification = method.name().starts_with("notifications/");
    if is_notification != id.is_none() {
        return Err(invalid(if is_notification {
            "a notification must not have an \"id\""
        } else {
            "a request must have an \"id\""
        }));
    }
    Ok(Message { id, method })
}

/// Reads a usable id out of any JSON value, for error replies to messages that failed
/// validation. Returns `None` where there is no trustworthy id.
pub fn recover_id(value: &Value) -> Option<Id> {
    value.get("id").and_then(|v| parse_id(v).ok())
}

fn parse_id(v: &Value) -> Result<Id, RpcError> {
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

fn invalid(msg: &str) -> RpcError {
    RpcError::InvalidRequest(msg.to_owned())
}

fn bad_params(msg: &str) -> RpcError {
    RpcError::InvalidParams(msg.to_owned())
}

fn mcp_method(method: &str, params: Option<&Map<String, Value>>) -> Result<Method, RpcError> {
    Ok(match method {
        "initialize" => {
            let p = params.ok_or_else(|| bad_params("initialize needs params"))?;
            require_str(p, "protocolVersion")?;
            require_obj(p, "capabilities")?;
            let info = require_obj(p, "clientInfo")?;
            require_str(info, "name")?;
            require_str(info, "version")?;
            Method::Initialize
        }
        "notifications/initialized" => Method::Initialized,
        "ping" => Method::Ping,
        "tools/list" => {
            if let Some(p) = params {
                only_members(p, &["cursor", "_meta"])?;
                if p.get("cursor").is_some_and(|c| !c.is_string()) {
                    return Err(bad_params("\"cursor\" must be a string"));
                }
            }
            Method::ToolsList
        }
        "tools/call" => {
            let p = params.ok_or_else(|| bad_params("tools/call needs params"))?;
            // Only name and arguments reach the tool and the plan hash; anything else would be
            // an unhashed input, so it is refused.
            only_members(p, &["name", "arguments", "_meta"])?;
            let name = require_str(p, "name")?;
            if name.is_empty() {
                return Err(bad_params("\"name\" must not be empty"));
            }
            let arguments = match p.get("arguments") {
                None => None,
                Some(Value::Object(a)) => Some(a.clone()),
                Some(_) => return Err(bad_params("\"arguments\" must be an object")),
            };
            Method::ToolsCall { name: name.to_owned(), arguments }
        }
        other => Method::Other(other.to_owned()),
    })
}

/// `params._meta` is MCP's reserved metadata object; a `progressToken` in it is a string or an
/// integer. The upstream parses it as such, so the gateway refuses any other form itself.
fn check_meta(meta: &Value) -> Result<(), RpcError> {
    let Value::Object(meta) = meta else { return Err(bad_params("\"_meta\" must be an object")) };
    match meta.get("progressToken") {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
        Some(_) => Err(bad_params("\"_meta.progressToken\" must be a string or an integer")),
    }
}

fn only_members(p: &Map<String, Value>, allowed: &[&str]) -> Result<(), RpcError> {
    match p.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(RpcError::InvalidParams(format!("unexpected member {k:?} in params"))),
        None => Ok(()),
    }
}

fn require_str<'a>(p: &'a Map<String, Value>, key: &str) -> Result<&'a str, RpcError> {
    p.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::InvalidParams(format!("{key:?} must be a string")))
}

fn require_obj<'a>(p: &'a Map<String, Value>, key: &str) -> Result<&'a Map<String, Value>, RpcError> {
    p.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::InvalidParams(format!("{key:?} must be an object")))
}

mod scan;
pub use scan::scan_id;

#[cfg(test)]
mod tests;
