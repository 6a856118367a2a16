//! The benchmark's proxy-wasm floor: what every request through Portcullis costs before any
//! policy. For each request it reads the peer's URI SAN, reads the request headers and removes
//! `authorization` and the ticket header, buffers the body, parses it as JSON, hashes the
//! arguments (SHA-256), builds a ticket of Portcullis's size and adds it, reads the clock,
//! draws 16 random bytes, counts the request, and names the request in a response header.
//! With `{"sign": true}` it also signs the ticket (Ed25519). It never refuses a call: there is
//! no deny path. `make bench` runs it beside the filter (bench/README.md).
//!
//! The same rules as the filter: host calls through `proxy_wasm::hostcalls` (which return
//! `Result`), no unwrap, expect, panic or indexing, since a panic kills the plugin.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(not(test), deny(clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic))]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod work;

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use work::Config;

/// Portcullis's ticket header (`portcullis_core::TICKET_HEADER`; not linked here, so that the
/// floor carries none of core).
const TICKET_HEADER: &str = "x-portcullis-ticket";
const DECISION_HEADER: &str = "x-portcullis-decision-id";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: None, requests: None }) });
}}

struct Root {
    config: Option<Rc<Config>>,
    requests: Option<u32>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            other => {
                log::error!("floor: refusing to start: no plugin configuration ({other:?})");
                return false;
            }
        };
        match Config::from_json(&bytes) {
            Ok(config) => {
                log::info!("floor: configured (sign: {})", config.signs());
                self.config = Some(Rc::new(config));
                self.requests = hostcalls::define_metric(MetricType::Counter, "floor.requests").ok();
                true
            }
            Err(e) => {
                log::error!("floor: refusing to start: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor { config: self.config.clone(), requests: self.requests, peer: None, decision_id: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    config: Option<Rc<Config>>,
    requests: Option<u32>,
    peer: Option<String>,
    decision_id: Option<String>,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.peer = hostcalls::get_property(vec!["connection", "uri_san_peer_certificate"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        // Read all the headers, as the filter does (it looks for the MCP ones).
        let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
        for name in ["authorization", TICKET_HEADER] {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None) {
                return refuse(500, &format!("cannot remove {name}: {status:?}"));
            }
        }
        if end_of_stream {
            return refuse(400, "a tools/call has a body");
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let Some(config) = self.config.clone() else { return refuse(500, "not configured") };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(status) => return refuse(500, &format!("cannot read the body: {status:?}")),
        };
        let now = hostcalls::get_current_time().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
        let mut entropy = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut entropy) {
            return refuse(500, &format!("no randomness: {e}"));
        }
        let ticket = match config.ticket(&body, self.peer.as_deref().unwrap_or(""), entropy, now) {
            Ok(ticket) => ticket,
            Err(e) => return refuse(400, &e),
        };
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, TICKET_HEADER, Some(&ticket.token)) {
            return refuse(500, &format!("cannot set the ticket: {status:?}"));
        }
        if let Some(id) = self.requests {
            let _ = hostcalls::increment_metric(id, 1);
        }
        self.decision_id = Some(ticket.decision_id);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(id) = &self.decision_id {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, DECISION_HEADER, Some(id));
        }
        Action::Continue
    }
}

/// Answers the request itself with a JSON-RPC error (the floor's only way to fail).
fn refuse(status: u32, message: &str) -> Action {
    log::warn!("floor: {message}");
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": message}}).to_string();
    if let Err(s) = hostcalls::send_http_response(status, vec![("content-type", "application/json")], Some(body.as_bytes())) {
        log::error!("floor: cannot send a reply: {s:?}");
    }
    Action::Pause
}
