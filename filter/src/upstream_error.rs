//! Restates error answers that are not JSON-RPC (an upstream's plain-text 4xx, Envoy's own
//! 503 or 504) as a JSON-RPC error object with the request's id, so that every refusal an
//! agent can provoke reads the same way. Answers that are already JSON or an event stream
//! pass untouched.

use portcullis_core::error::Rejection;
use portcullis_core::jsonrpc::Id;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

/// How much of the upstream's text is kept for the message.
const KEEP: usize = 512;

pub struct UpstreamError {
    status: u16,
    id: Option<Id>,
    text: Vec<u8>,
}

impl UpstreamError {
    /// At response headers: an error status with a body that is neither JSON nor an event
    /// stream is restated; the body will change, so its length goes.
    pub fn detect(end_of_stream: bool, id: Option<Id>) -> Option<Self> {
        let status = response_header(":status").and_then(|s| s.parse::<u16>().ok())?;
        if status < 400 || end_of_stream {
            return None;
        }
        let media = response_header("content-type").and_then(|c| c.split(';').next().map(|m| m.trim().to_ascii_lowercase()));
        if matches!(media.as_deref(), Some("application/json" | "text/event-stream")) {
            return None;
        }
        for (name, value) in [("content-length", None), ("content-type", Some("application/json"))] {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value) {
                log::warn!("portcullis: cannot set {name} of an upstream error: {status:?}");
            }
        }
        Some(Self { status, id, text: Vec::new() })
    }

    /// Keeps the start of the text and drops the body until its end, where the JSON-RPC error
    /// takes its place.
    pub fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let room = KEEP.saturating_sub(self.text.len());
        if room > 0 {
            if let Ok(Some(chunk)) = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size.min(room)) {
                self.text.extend_from_slice(&chunk);
            }
        }
        let replacement = if end_of_stream { Rejection::upstream(self.status, &self.text, self.id.clone()).body() } else { Vec::new() };
        if let Err(status) = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &replacement) {
            log::warn!("portcullis: cannot restate an upstream error: {status:?}");
        }
        Action::Continue
    }
}

fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpResponseHeaders, name).ok().flatten()
}
