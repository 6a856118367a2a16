//! Answer rewriting glue: the upstream's answer to an allowed list method is trimmed so the
//! caller sees exactly what the decision made visible, and server requests in an event stream
//! get sealed ids. JSON answers are buffered whole; event streams are rewritten chunk by
//! chunk. The rewriting itself is in core.

use portcullis_core::error::{RejectKind, Rejection, INTERNAL_ERROR};
use portcullis_core::json::Limits;
use portcullis_core::jsonrpc::Id;
use portcullis_core::listing::{trim_json, Rewrite, SseTrimmer, TrimError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

/// Upstream tool lists carry schemas, so they may be larger and deeper than requests.
const LIMITS: Limits = Limits { max_body_bytes: 4 * 1024 * 1024, max_depth: 64 };

pub enum Listing {
    /// Nothing to rewrite: responses pass untouched.
    Off,
    /// An allowed request whose answer is rewritten; the response headers have not arrived yet.
    Expecting { rewrite: Rewrite, id: Option<Id> },
    Json { rewrite: Rewrite, id: Option<Id> },
    Sse { trimmer: SseTrimmer, id: Option<Id> },
    /// Refused at header time: the first body chunk becomes this error, the rest is dropped.
    Replacing(Vec<u8>),
    /// The answer could not be trimmed: everything from here on is dropped.
    Refused,
}

impl Listing {
    /// The answer to an allowed request: trimmed when `rewrite` has a visible set, its server
    /// requests sealed when it has a seal.
    pub fn for_answer(rewrite: Rewrite, id: Option<Id>) -> Self {
        if rewrite.visible.is_none() && rewrite.seal.is_none() {
            return Listing::Off;
        }
        Listing::Expecting { rewrite, id }
    }

    /// Response headers: pick the mode from the content type. A list answer must be trimmed,
    /// so one that cannot be is replaced; otherwise only event streams (which may carry server
    /// requests) are rewritten.
    pub fn on_headers(&mut self) {
        let Listing::Expecting { rewrite, id } = std::mem::replace(self, Listing::Off) else { return };
        let media = hostcalls::get_map_value(MapType::HttpResponseHeaders, "content-type")
            .ok()
            .flatten()
            .and_then(|c| c.split(';').next().map(|m| m.trim().to_ascii_lowercase()));
        let trims = rewrite.visible.is_some();
        *self = match media.as_deref() {
            Some("text/event-stream") => Listing::Sse { trimmer: SseTrimmer::new(rewrite, LIMITS), id },
            Some("application/json") if trims => Listing::Json { rewrite, id },
            other if trims => {
                log::warn!("portcullis: list answer of type {other:?} cannot be trimmed; replacing it");
                Listing::Replacing(error_body(&id, "it has an unknown content type"))
            }
            _ => return,
        };
        // The body will change size.
        if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None) {
            log::warn!("portcullis: cannot drop content-length of a rewritten answer: {status:?}");
        }
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
            Listing::Json { rewrite, .. } => {
                if body_size > LIMITS.max_body_bytes || end_of_stream {
                    let result = read_body(body_size).and_then(|body| trim_json(&body, rewrite, LIMITS));
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
                trimmer.set_now(crate::now_unix());
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
        log::warn!("portcullis: refusing an answer it cannot rewrite: {e}");
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
    let message = format!("the answer could not be filtered by the gateway: {why}");
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
        log::error!("portcullis: cannot rewrite an answer ({status:?}); resetting the stream");
        if let Err(status) = hostcalls::reset_http_response() {
            log::error!("portcullis: cannot reset the stream either: {status:?}");
        }
    }
}
