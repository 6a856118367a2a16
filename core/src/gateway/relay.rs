//! The gateway's half of the methods beyond tools: what policy sees of them, and the client's
//! answers to server requests (see [`crate::relay`]).

use serde_json::{json, Value};

use crate::authz::McpInput;
use crate::error::{RejectKind, Rejection, DENIED, INTERNAL_ERROR};
use crate::jsonrpc::{Id, Method};
use crate::relay::{Answered, StreamSeal};
use crate::session::Owner;

use super::Gateway;

/// Fills in what policy needs to know of `method`: the resource, prompt, completion
/// reference or log level it names.
pub(super) fn describe(method: &Method, mcp: &mut McpInput) {
    match method {
        Method::Resource { uri, .. } => mcp.resource = Some(json!({"uri": uri})),
        Method::PromptsGet { name, arguments } => mcp.prompt = Some(json!({"name": name, "arguments": arguments})),
        Method::Complete { reference, argument } => mcp.completion = Some(json!({"ref": reference, "argument": argument})),
        Method::SetLevel { level } => mcp.log_level = Some(level.clone()),
        _ => {}
    }
}

impl Gateway {
    /// Admits a client's response if its id is a server request's sealed for this caller and
    /// session; returns what it answers and the body to forward (with the server's own id).
    pub(super) fn open_response(&self, value: &Value, owner: &Owner, session: Option<&str>, now: u64, id: &Option<Id>) -> Result<(Answered, Vec<u8>), Rejection> {
        let refuse = |why: String| Rejection::new(RejectKind::Denied, 403, DENIED, why, id.clone());
        let Some(sealer) = &self.requests else {
            return Err(refuse("client responses are not accepted: this gateway relays no server requests".into()));
        };
        let Some(Id::String(sealed)) = id else {
            return Err(refuse(crate::relay::SealError::Unknown.to_string()));
        };
        let answered = sealer.open(owner, session, sealed, now).map_err(|e| refuse(e.to_string()))?;
        let mut value = value.clone();
        if let Some(slot) = value.get_mut("id") {
            *slot = answered.id.clone();
        }
        let body = serde_json::to_vec(&value)
            .map_err(|e| Rejection::new(RejectKind::Internal, 500, INTERNAL_ERROR, format!("cannot restate the response: {e}"), id.clone()))?;
        Ok((answered, body))
    }

    /// How server requests in an answer to `owner` on `session` get their ids sealed.
    pub fn stream_seal(&self, owner: &Owner, session: Option<&str>, now: u64) -> Option<StreamSeal> {
        let sealer = self.requests.clone()?;
        Some(StreamSeal { sealer, owner: owner.clone(), session: session.map(str::to_owned), now })
    }
}
