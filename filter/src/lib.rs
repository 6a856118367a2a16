//! Portcullis proxy-wasm HTTP filter: moves bytes between Envoy and `portcullis-core` and
//! applies the verdict. All decisions live in core.
//!
//! Host calls go through `proxy_wasm::hostcalls`, which return `Result`, rather than the
//! `Context` trait helpers, which unwrap internally and would panic the VM on a host error.
#![cfg_attr(not(test), deny(clippy::unwrap_used))] // a panic here kills the plugin in Envoy
#![cfg_attr(not(test), deny(clippy::expect_used))] // same
#![cfg_attr(not(test), deny(clippy::panic))] // fail closed with a reply instead
#![cfg_attr(not(test), deny(clippy::indexing_slicing))] // bounds via get()
#![forbid(unsafe_code)]

mod listing;
mod ratelimit;
mod session;

use std::rc::Rc;

use listing::Listing;
use std::time::UNIX_EPOCH;

use portcullis_core::error::{RejectKind, Rejection};
use portcullis_core::gateway::{check_transport, Gateway, RequestContext, Transport};
use portcullis_core::TICKET_HEADER;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

/// Response header naming the gateway decision, for correlation with the audit trail.
const DECISION_HEADER: &str = "x-portcullis-decision-id";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { gateway: None, metrics: Metrics::default() }) });
}}

struct Root {
    gateway: Option<Rc<Gateway>>,
    metrics: Metrics,
}

/// Filter metrics, visible in Envoy's stats (Prometheus: `/stats/prometheus`).
#[derive(Clone, Copy, Default)]
struct Metrics {
    allowed: Option<u32>,
    /// Allowed, but the runner holds the call for human approval.
    approval_required: Option<u32>,
    denied: Option<u32>,
    rate_limited: Option<u32>,
    invalid: Option<u32>,
    internal: Option<u32>,
    /// Time to decide one buffered request, in microseconds.
    decision_us: Option<u32>,
    /// Decisions reused from the decision cache, and cache lookups that found none.
    cache_hits: Option<u32>,
    cache_misses: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Self {
            allowed: counter("portcullis.requests.allowed"),
            approval_required: counter("portcullis.requests.approval_required"),
            denied: counter("portcullis.requests.denied"),
            rate_limited: counter("portcullis.requests.rate_limited"),
            invalid: counter("portcullis.requests.invalid"),
            internal: counter("portcullis.requests.internal_error"),
            decision_us: hostcalls::define_metric(MetricType::Histogram, "portcullis.decision_us").ok(),
            cache_hits: counter("portcullis.decision_cache.hits"),
            cache_misses: counter("portcullis.decision_cache.misses"),
        }
    }

    fn count(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn count_rejection(&self, kind: RejectKind) {
        Self::count(match kind {
            RejectKind::Invalid => self.invalid,
            RejectKind::Denied => self.denied,
            RejectKind::RateLimited => self.rate_limited,
            RejectKind::Internal => self.internal,
        });
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                log::error!("portcullis: refusing to start: the plugin configuration is empty");
                return false;
            }
            Err(status) => {
                log::error!("portcullis: refusing to start: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match Gateway::from_config_json(&config) {
            Ok(gateway) => {
                log::info!(
                    "portcullis: configured: {} tools, policy {}",
                    gateway.catalog().tools().count(),
                    gateway.policy_version()
                );
                self.gateway = Some(Rc::new(gateway));
                self.metrics = Metrics::define();
                true
            }
            Err(e) => {
                // Returning false makes Envoy fail the plugin; with fail_open off every
                // request is then refused. There is no permissive fallback.
                log::error!("portcullis: refusing to start: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { gateway: self.gateway.clone(), metrics: self.metrics, decision_id: None, listing: Listing::Off, authorization: None, session: Default::default() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    gateway: Option<Rc<Gateway>>,
    metrics: Metrics,
    decision_id: Option<String>,
    /// Set for an allowed tools/list: how to trim the answer.
    listing: Listing,
    /// The user's bearer token, read and removed from the request before it is forwarded.
    authorization: Option<String>,
    /// The agent's session id and, once admitted, the caller it is bound to.
    session: session::Session,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Never trust a ticket the client brought, whatever happens next.
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, TICKET_HEADER, None) {
            log::error!("portcullis: cannot strip inbound ticket header: {status:?}");
            return reject_internal();
        }
        if let Err(action) = self.session_request_headers() {
            return action;
        }
        // The user's token is for the gateway only: the runner learns the user from the ticket.
        self.authorization = header("authorization");
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", None) {
            log::error!("portcullis: cannot strip the authorization header: {status:?}");
            return reject_internal();
        }
        if self.gateway.is_none() {
            return reject_internal();
        }
        let method = header(":method");
        let content_type = header("content-type");
        let peer = peer_uri_san();
        match check_transport(method.as_deref().unwrap_or(""), content_type.as_deref(), peer.as_deref()) {
            Ok(Transport::IdentityOnly) => match self.gateway.as_deref().and_then(|g| ratelimit::check(g, peer.as_deref(), &[])) {
                Some(rejection) => self.reject(&rejection),
                None => self.admit_without_body(method.as_deref().unwrap_or("")),
            },
            Ok(Transport::Decide) if end_of_stream => self.decide(&[]),
            // Hold the headers until the whole body is buffered and decided.
            Ok(Transport::Decide) => Action::Pause,
            Err(rejection) => self.reject(&rejection),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(gateway) = &self.gateway else { return reject_internal() };
        let limit = gateway.limits().max_body_bytes;
        if body_size > limit {
            // Refuse as soon as the limit is passed rather than buffering the rest.
            return self.decide_oversized(body_size);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(body) => self.decide(&body.unwrap_or_default()),
            Err(status) => {
                log::error!("portcullis: cannot read request body: {status:?}");
                reject_internal()
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(id) = &self.decision_id {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, DECISION_HEADER, Some(id)) {
                log::warn!("portcullis: cannot set {DECISION_HEADER}: {status:?}");
            }
        }
        self.seal_response_session();
        self.listing.on_headers();
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.listing.on_body(body_size, end_of_stream)
    }
}

impl Filter {
    fn decide(&mut self, body: &[u8]) -> Action {
        let Some(gateway) = &self.gateway else { return reject_internal() };
        let peer = peer_uri_san();
        if let Some(rejection) = ratelimit::check(gateway, peer.as_deref(), body) {
            return self.reject(&rejection);
        }
        let started = hostcalls::get_current_time().ok();
        let ctx = RequestContext { peer_uri_san: peer.as_deref(), now_unix: now_unix(), entropy: entropy(), authorization: self.authorization.as_deref(), session_id: self.session.outer.as_deref() };
        let (hits, misses) = gateway.decision_cache_counts();
        let verdict = gateway.decide(body, ctx);
        if let (Some(id), Some(start), Ok(end)) = (self.metrics.decision_us, started, hostcalls::get_current_time()) {
            let us = end.duration_since(start).map_or(0, |d| d.as_micros());
            let _ = hostcalls::record_metric(id, u64::try_from(us).unwrap_or(u64::MAX));
        }
        // This worker's gateway counts its own lookups; one request adds at most one.
        let (hits_after, misses_after) = gateway.decision_cache_counts();
        if hits_after > hits {
            Metrics::count(self.metrics.cache_hits);
        } else if misses_after > misses {
            Metrics::count(self.metrics.cache_misses);
        }
        match verdict {
            Ok(allowed) => {
                Metrics::count(self.metrics.allowed);
                if allowed.decision.require_approval {
                    Metrics::count(self.metrics.approval_required);
                }
                if allowed.method == "tools/list" {
                    self.listing = Listing::for_tools_list(allowed.decision.visible_tools.clone(), allowed.id.clone());
                }
                if let Some(ticket) = &allowed.ticket {
                    if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, TICKET_HEADER, Some(ticket)) {
                        log::error!("portcullis: cannot set ticket header: {status:?}");
                        return reject_internal();
                    }
                }
                if let Err(action) = self.forward_session(allowed.forward) {
                    return action;
                }
                log::debug!("portcullis: allow {} decision {}", allowed.method, allowed.decision_id);
                self.decision_id = Some(allowed.decision_id);
                Action::Continue
            }
            Err(rejection) => self.reject(&rejection),
        }
    }

    fn reject(&self, rejection: &Rejection) -> Action {
        self.metrics.count_rejection(rejection.kind);
        reject(rejection)
    }

    fn decide_oversized(&mut self, size: usize) -> Action {
        match &self.gateway {
            Some(gateway) => {
                let rejection = gateway.reject_oversized(size);
                self.reject(&rejection)
            }
            None => reject_internal(),
        }
    }
}

fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
}

fn peer_uri_san() -> Option<String> {
    match hostcalls::get_property(vec!["connection", "uri_san_peer_certificate"]) {
        Ok(Some(bytes)) => String::from_utf8(bytes).ok().filter(|s| !s.is_empty()),
        _ => None,
    }
}

fn now_unix() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn entropy() -> [u8; 16] {
    let mut buf = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut buf) {
        // Without randomness ticket ids could repeat; the runner would then refuse them as
        // replays, so this fails closed. Log loudly.
        log::error!("portcullis: no randomness from the host: {e}");
    }
    buf
}

fn reject(rejection: &Rejection) -> Action {
    let body = rejection.body();
    let retry_after = rejection.retry_after.map(|s| s.to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(seconds) = retry_after.as_deref() {
        headers.push(("retry-after", seconds));
    }
    if let Err(status) = hostcalls::send_http_response(u32::from(rejection.status), headers, Some(&body)) {
        log::error!("portcullis: cannot send rejection: {status:?}");
    }
    Action::Pause
}

fn reject_internal() -> Action {
    reject(&Rejection::internal("gateway is not configured; refusing all requests"))
}
