//! tools/list trimming glue: rewrites the upstream's answer to an allowed tools/list so the
//! caller sees exactly the tools the decision made visible. JSON answers are buffered whole;
//! event streams are rewritten chunk by chunk. The trimming itself is in core.

use portcullis_core::error::{RejectKind, Rejection, INTERNAL_ERROR};
use portcullis_core::json::Limits;
use portcullis_core::jsonrpc::Id;
use portcullis_core::listing::{trim_json, SseTrimmer, TrimError, Visible};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

/// Upstream tool lists carry schemas, so they may be larger and deeper than requests.
const LIMITS: Limits = Limits { max_body_bytes: 4 * 1024 * 1024, max_depth: 64 };

pub enum Listing {
    /// Not an allowed tools/list: responses pass untouched.
    Off,
    /// Allowed tools/list; the response headers have not arrived yet.
    Expecting { visible: Visible, id: Option<Id> },
    Json { visible: Visible, id: Option<Id> },
    Sse { trimmer: SseTrimmer, id: Option<Id> },
    /// Refused at header time: the first body chunk becomes this error, the rest is dropped.
    Replacing(Vec<u8>),
    /// The answer could not be trimmed: everything from here on is dropped.
    Refused,
}

impl Listing {
    pub fn for_tools_list(visible: Option<Vec<String>>, id: Option<Id>) -> Self {
        // A decision without `visible_tools` shows nothing: fail closed.
        Listing::Expecting { visible: visible.unwrap_or_default().into_iter().collect(), id }
    }

    /// Response headers: pick the mode from the content type. The body will change size.
    pub fn on_headers(&mut self) {
        let Listing::Expecting { visible, id } = std::mem::replace(self, Listing::Off) else { return };
        if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None) {
            log::warn!("portcullis: cannot drop content-length of a tools/list answer: {status:?}");
        }
        let media = hostcalls::get_map_value(MapType::HttpResponseHeaders, "content-type")
            .ok()
            .flatten()
            .and_then(|c| c.split(';').next().map(|m| m.trim().to_ascii_lowercase()));
        *self = match media.as_deref() {
            Some("application/json") => Listing::Json { visible, id },
            Some("text/event-stream") => Listing::Sse { trimmer: SseTrimmer::new(visible, LIMITS), id },
            other => {
                log::warn!("portcullis: tools/list answer of type {other:?} cannot be trimmed; replacing it");
                Listing::Replacing(error_body(&id, "it has an unknown content type"))
            }
        };
    }

    pub fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self {
            Listing::Off | Listing::Expecting { .. } => Action::Continue,
            Listing::Replacing(body) => {
                set_body(body_size, body);
                *self = Listing::Refused;
                Action::Continue
            }
            Listing::Refused => {
                set_body(body_size, b"");
                Action::Continue
            }
            Listing::Json { visible, .. } => {
                if body_size > LIMITS.max_body_bytes || end_of_stream {
                    let result = read_body(body_size).and_then(|body| trim_json(&body, visible, LIMITS));
                    match result {
                        Ok(Some(trimmed)) => set_body(body_size, &trimmed),
                        Ok(None) => {}
                        Err(e) => return self.refuse(body_size, &e, false),
                    }
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            Listing::Sse { trimmer, .. } => {
                let result = read_body(body_size).and_then(|chunk| {
                    let mut out = trimmer.push(&chunk)?;
                    if end_of_stream {
                        out.extend(trimmer.finish()?);
                    }
                    Ok(out)
                });
                match result {
                    Ok(out) => set_body(body_size, &out),
                    Err(e) => return self.refuse(body_size, &e, true),
                }
                Action::Continue
            }
        }
    }

    fn refuse(&mut self, body_size: usize, e: &TrimError, sse: bool) -> Action {
        let id = match std::mem::replace(self, Listing::Refused) {
            Listing::Json { id, .. } | Listing::Sse { id, .. } | Listing::Expecting { id, .. } => id,
            Listing::Off | Listing::Replacing(_) | Listing::Refused => None,
        };
        log::warn!("portcullis: refusing a tools/list answer: {e}");
        let body = error_body(&id, &e.to_string());
        if sse {
            let mut event = b"event: message\ndata: ".to_vec();
            event.extend_from_slice(&body);
            event.extend_from_slice(b"\n\n");
            set_body(body_size, &event);
        } else {
            set_body(body_size, &body);
        }
        Action::Continue
    }
}

fn error_body(id: &Option<Id>, why: &str) -> Vec<u8> {
    let message = format!("the tools/list answer could not be filtered by the gateway: {why}");
    Rejection::new(RejectKind::Internal, 502, INTERNAL_ERROR, message, id.clone()).body()
}

fn read_body(size: usize) -> Result<Vec<u8>, TrimError> {
    match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size) {
        Ok(body) => Ok(body.unwrap_or_default()),
        Err(status) => Err(TrimError::NotJson(format!("cannot read the response body: {status:?}"))),
    }
}

/// Replaces the current body chunk. If the host refuses, the untrimmed list must not reach
/// the caller: the stream is reset instead.
fn set_body(size: usize, bytes: &[u8]) {
    if let Err(status) = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, bytes) {
        log::error!("portcullis: cannot rewrite a tools/list answer ({status:?}); resetting the stream");
        if let Err(status) = hostcalls::reset_http_response() {
            log::error!("portcullis: cannot reset the stream either: {status:?}");
        }
    }
}
