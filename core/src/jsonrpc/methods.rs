//! The MCP methods the gateway models, and the shape of their params. A method is validated
//! as strictly as the upstream will read it: a member the gateway does not know would be an
//! input that policy never saw.

use serde_json::{Map, Value};

use super::{bad_params, check_jsonrpc, invalid, only_members, parse_id, require_obj, require_str, Message, RpcError};

/// The name policy sees for a client's JSON-RPC response to a server request.
pub const RESPONSE: &str = "response";

#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Initialize { protocol_version: String },
    Initialized,
    Ping,
    /// 2026-07-28: the mandatory first request, in place of the initialize handshake.
    Discover,
    ToolsList,
    ToolsCall { name: String, arguments: Option<Map<String, Value>> },
    ResourcesList,
    ResourceTemplatesList,
    /// resources/read, resources/subscribe or resources/unsubscribe of one URI.
    Resource { method: &'static str, uri: String },
    PromptsList,
    PromptsGet { name: String, arguments: Option<Map<String, Value>> },
    /// completion/complete: the prompt or resource template referred to, and the argument.
    Complete { reference: Value, argument: Value },
    SetLevel { level: String },
    /// A notification the protocol defines for clients (cancelled, progress, roots changed).
    Notification(&'static str),
    /// A client's answer to a request the server sent it (sampling, elicitation, roots).
    Response { is_error: bool },
    /// A method the gateway has no model for; only policy can allow it.
    Other(String),
}

impl Method {
    pub fn name(&self) -> &str {
        match self {
            Method::Initialize { .. } => "initialize",
            Method::Initialized => "notifications/initialized",
            Method::Ping => "ping",
            Method::Discover => "server/discover",
            Method::ToolsList => "tools/list",
            Method::ToolsCall { .. } => "tools/call",
            Method::ResourcesList => "resources/list",
            Method::ResourceTemplatesList => "resources/templates/list",
            Method::Resource { method, .. } | Method::Notification(method) => method,
            Method::PromptsList => "prompts/list",
            Method::PromptsGet { .. } => "prompts/get",
            Method::Complete { .. } => "completion/complete",
            Method::SetLevel { .. } => "logging/setLevel",
            Method::Response { .. } => RESPONSE,
            Method::Other(name) => name,
        }
    }

    /// The value `Mcp-Name` must carry for this method (2026-07-28), if it names something.
    pub fn header_name(&self) -> Option<&str> {
        match self {
            Method::ToolsCall { name, .. } | Method::PromptsGet { name, .. } => Some(name),
            Method::Resource { uri, .. } => Some(uri),
            _ => None,
        }
    }
}

/// 2026-07-28's multi round-trip requests: a retried call carries the client's answers to the
/// server's input requests, and the opaque state the server asked to have echoed.
const ROUND_TRIP: [&str; 2] = ["inputResponses", "requestState"];

const LOG_LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

pub(super) fn parse(method: &str, params: Option<&Map<String, Value>>) -> Result<Method, RpcError> {
    Ok(match method {
        "initialize" => {
            let p = params.ok_or_else(|| bad_params("initialize needs params"))?;
            let protocol_version = require_str(p, "protocolVersion")?.to_owned();
            require_obj(p, "capabilities")?;
            let info = require_obj(p, "clientInfo")?;
            require_str(info, "name")?;
            require_str(info, "version")?;
            Method::Initialize { protocol_version }
        }
        "notifications/initialized" => Method::Initialized,
        "ping" => Method::Ping,
        "server/discover" => {
            members(params, &[])?;
            Method::Discover
        }
        "tools/list" => paged(params, Method::ToolsList)?,
        "resources/list" => paged(params, Method::ResourcesList)?,
        "resources/templates/list" => paged(params, Method::ResourceTemplatesList)?,
        "prompts/list" => paged(params, Method::PromptsList)?,
        "tools/call" => {
            let p = needs(params, method)?;
            // Only name and arguments reach the tool and the plan hash; anything else would be
            // an unhashed input, so it is refused.
            only_members(p, &["name", "arguments", "_meta", ROUND_TRIP[0], ROUND_TRIP[1]])?;
            round_trip(p)?;
            let name = non_empty(p, "name")?;
            Method::ToolsCall { name, arguments: optional_object(p, "arguments")? }
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let p = needs(params, method)?;
            let allowed: &[&str] = if method == "resources/read" { &["uri", "_meta", ROUND_TRIP[0], ROUND_TRIP[1]] } else { &["uri", "_meta"] };
            only_members(p, allowed)?;
            round_trip(p)?;
            let method = match method {
                "resources/read" => "resources/read",
                "resources/subscribe" => "resources/subscribe",
                _ => "resources/unsubscribe",
            };
            Method::Resource { method, uri: non_empty(p, "uri")? }
        }
        "prompts/get" => {
            let p = needs(params, method)?;
            only_members(p, &["name", "arguments", "_meta", ROUND_TRIP[0], ROUND_TRIP[1]])?;
            round_trip(p)?;
            let arguments = optional_object(p, "arguments")?;
            if arguments.iter().flat_map(|a| a.values()).any(|v| !v.is_string()) {
                return Err(bad_params("prompt \"arguments\" must be strings"));
            }
            Method::PromptsGet { name: non_empty(p, "name")?, arguments }
        }
        "completion/complete" => {
            let p = needs(params, method)?;
            only_members(p, &["ref", "argument", "context", "_meta"])?;
            let reference = require_obj(p, "ref")?;
            match reference.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => {
                    require_str(reference, "name")?;
                }
                Some("ref/resource") => {
                    require_str(reference, "uri")?;
                }
                _ => return Err(bad_params("\"ref.type\" must be \"ref/prompt\" or \"ref/resource\"")),
            }
            let argument = require_obj(p, "argument")?;
            require_str(argument, "name")?;
            require_str(argument, "value")?;
            if p.get("context").is_some_and(|c| !c.is_object()) {
                return Err(bad_params("\"context\" must be an object"));
            }
            Method::Complete { reference: Value::Object(reference.clone()), argument: Value::Object(argument.clone()) }
        }
        "logging/setLevel" => {
            let p = needs(params, method)?;
            only_members(p, &["level", "_meta"])?;
            let level = require_str(p, "level")?;
            if !LOG_LEVELS.contains(&level) {
                return Err(RpcError::InvalidParams(format!("\"level\" must be one of {}", LOG_LEVELS.join(", "))));
            }
            Method::SetLevel { level: level.to_owned() }
        }
        "notifications/cancelled" => {
            let p = needs(params, method)?;
            only_members(p, &["requestId", "reason", "_meta"])?;
            if let Some(id) = p.get("requestId") {
                parse_id(id).map_err(|_| bad_params("\"requestId\" must be a string or an integer"))?;
            }
            if p.get("reason").is_some_and(|r| !r.is_string()) {
                return Err(bad_params("\"reason\" must be a string"));
            }
            Method::Notification("notifications/cancelled")
        }
        "notifications/progress" => {
            let p = needs(params, method)?;
            only_members(p, &["progressToken", "progress", "total", "message", "_meta"])?;
            match p.get("progressToken") {
                Some(Value::String(_)) => {}
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
                _ => return Err(bad_params("\"progressToken\" must be a string or an integer")),
            }
            if !p.get("progress").is_some_and(Value::is_number) || p.get("total").is_some_and(|t| !t.is_number()) {
                return Err(bad_params("\"progress\" (and \"total\", if present) must be numbers"));
            }
            Method::Notification("notifications/progress")
        }
        "notifications/roots/list_changed" => {
            members(params, &[])?;
            Method::Notification("notifications/roots/list_changed")
        }
        other => Method::Other(other.to_owned()),
    })
}

/// A client's JSON-RPC response: exactly one of `result` (an object) and `error` (code and
/// message), and the id of the server request it answers.
pub(super) fn validate_response(obj: &Map<String, Value>) -> Result<Message, RpcError> {
    for key in obj.keys() {
        if !matches!(key.as_str(), "jsonrpc" | "id" | "result" | "error") {
            return Err(invalid(&format!("unexpected member {key:?} in a response")));
        }
    }
    check_jsonrpc(obj)?;
    let id = parse_id(obj.get("id").ok_or_else(|| invalid("a response must have the \"id\" of the request it answers"))?)?;
    let is_error = match (obj.get("result"), obj.get("error")) {
        (Some(Value::Object(_)), None) => false,
        (None, Some(Value::Object(e))) => {
            if !e.get("code").is_some_and(|c| c.is_i64()) || !e.get("message").is_some_and(Value::is_string) {
                return Err(invalid("a response's \"error\" needs an integer \"code\" and a string \"message\""));
            }
            true
        }
        (Some(_), Some(_)) => return Err(invalid("a response has either \"result\" or \"error\", not both")),
        _ => return Err(invalid("a response's \"result\" and \"error\" must be objects")),
    };
    Ok(Message { id: Some(id), method: Method::Response { is_error }, protocol_version: None })
}

fn needs<'a>(params: Option<&'a Map<String, Value>>, method: &str) -> Result<&'a Map<String, Value>, RpcError> {
    params.ok_or_else(|| RpcError::InvalidParams(format!("{method} needs params")))
}

fn members(params: Option<&Map<String, Value>>, allowed: &[&str]) -> Result<(), RpcError> {
    let mut with_meta = allowed.to_vec();
    with_meta.push("_meta");
    params.map_or(Ok(()), |p| only_members(p, &with_meta))
}

fn paged(params: Option<&Map<String, Value>>, method: Method) -> Result<Method, RpcError> {
    members(params, &["cursor"])?;
    if params.and_then(|p| p.get("cursor")).is_some_and(|c| !c.is_string()) {
        return Err(bad_params("\"cursor\" must be a string"));
    }
    Ok(method)
}

fn non_empty(p: &Map<String, Value>, key: &str) -> Result<String, RpcError> {
    let value = require_str(p, key)?;
    if value.is_empty() {
        return Err(RpcError::InvalidParams(format!("{key:?} must not be empty")));
    }
    Ok(value.to_owned())
}

fn optional_object(p: &Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>, RpcError> {
    match p.get(key) {
        None => Ok(None),
        Some(Value::Object(a)) => Ok(Some(a.clone())),
        Some(_) => Err(RpcError::InvalidParams(format!("{key:?} must be an object"))),
    }
}

fn round_trip(p: &Map<String, Value>) -> Result<(), RpcError> {
    if p.get("inputResponses").is_some_and(|v| !v.is_object()) || p.get("requestState").is_some_and(|v| !v.is_string()) {
        return Err(bad_params("\"inputResponses\" must be an object and \"requestState\" a string"));
    }
    Ok(())
}
