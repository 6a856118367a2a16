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

mod headers;
mod listing;
mod profile;
mod ratelimit;
mod session;
mod upstream_error;

use std::rc::Rc;

use listing::Listing;
use std::time::UNIX_EPOCH;
use upstream_error::UpstreamError;

use portcullis_core::error::{RejectKind, Rejection};
use portcullis_core::gateway::{check_transport, reject_body_on, Gateway, RequestContext, Transport};
use portcullis_core::jsonrpc::Id;
use portcullis_core::profile::mark;
use portcullis_core::record::{DecisionRecord, Outcome};
use portcullis_core::TICKET_HEADER;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

/// Response header naming the gateway decision, for correlation with the audit trail.
const DECISION_HEADER: &str = "x-portcullis-decision-id";
/// The property (Envoy filter state `wasm.portcullis_decision`) that carries the decision
/// record into the access log.
const DECISION_PROPERTY: &str = "portcullis_decision";
/// How much of an oversized body is read to recover the request id for the refusal.
const ID_SCAN_BYTES: usize = 4096;

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
                portcullis_core::profile::set_enabled(gateway.profile());
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
        Some(Box::new(Filter {
            gateway: self.gateway.clone(),
            metrics: self.metrics,
            decision_id: None,
            listing: Listing::Off,
            upstream_error: None,
            authorization: None,
            http_method: None,
            transport: None,
            request_id: None,
            settled: false,
            held: None,
            session: session::Session::default(),
            mcp_headers: headers::Values::default(),
            peer: None,
        }))
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
    /// Set when the upstream's answer is an error that is not JSON-RPC: it is restated as one.
    upstream_error: Option<UpstreamError>,
    /// The user's bearer token, read and removed from the request before it is forwarded.
    authorization: Option<String>,
    http_method: Option<String>,
    /// What the headers said to do with this request; `None` until they have been read.
    transport: Option<Transport>,
    /// The JSON-RPC id of the decided request, for restating upstream errors.
    request_id: Option<Id>,
    /// True once this request was forwarded after a decision, or refused. Until then nothing
    /// of it has left the filter: however the request ends (body, trailers, reset), it ends
    /// in exactly one decision or refusal.
    settled: bool,
    /// A refusal that the headers decided, held until the body has come so that it answers
    /// the request's id. Nothing is forwarded while it is held.
    held: Option<Rejection>,
    /// The agent's session id and, once admitted, the caller it is bound to.
    session: session::Session,
    /// The MCP headers that restate the body, checked against it by the decision.
    mcp_headers: headers::Values,
    /// The peer's URI SAN (its SPIFFE ID), read with the headers.
    peer: Option<String>,
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        portcullis_core::profile::begin();
        let action = self.request_headers(end_of_stream);
        mark("filter_headers");
        profile::publish();
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        portcullis_core::profile::begin();
        let action = self.request_body(body_size, end_of_stream);
        mark("filter_apply");
        profile::publish();
        action
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.settled {
            return Action::Continue;
        }
        // The body callbacks never saw its end: this request ends here, undecided. Refuse it
        // (with its id, when the buffered body names one) rather than let it pass.
        match self.held.take() {
            Some(held) => self.reject_naming_id(ID_SCAN_BYTES, |_, prefix| held.answering(prefix)),
            None => self.reject_naming_id(ID_SCAN_BYTES, Gateway::reject_trailers),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(id) = &self.decision_id {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, DECISION_HEADER, Some(id)) {
                log::warn!("portcullis: cannot set {DECISION_HEADER}: {status:?}");
            }
        }
        self.seal_response_session();
        self.upstream_error = UpstreamError::detect(end_of_stream, self.request_id.clone());
        if self.upstream_error.is_none() {
            self.listing.on_headers();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.upstream_error {
            Some(error) => error.on_body(body_size, end_of_stream),
            None => self.listing.on_body(body_size, end_of_stream),
        }
    }

    fn on_log(&mut self) {
        if !self.settled {
            // Reset or abandoned before it was decided: nothing was forwarded.
            if let Some(gateway) = &self.gateway {
                let mut record = gateway.record(peer_uri_san().as_deref(), entropy());
                record.outcome = Some(Outcome::Incomplete);
                record.method.clone_from(&self.http_method);
                set_record(&record);
            }
        }
    }
}

impl Filter {
    /// The request's headers: strip what only the gateway may read, check the transport, and
    /// hold the headers until the body has been decided.
    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let request = headers::Request::read();
        // Never trust a ticket the client brought, whatever happens next.
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, TICKET_HEADER, None) {
            log::error!("portcullis: cannot strip inbound ticket header: {status:?}");
            return self.reject(&Rejection::internal("cannot strip the inbound ticket header"));
        }
        if let Err(action) = self.session_request_headers(request.session) {
            return action;
        }
        // The user's token is for the gateway only: the runner learns the user from the ticket.
        self.authorization = request.authorization;
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", None) {
            log::error!("portcullis: cannot strip the authorization header: {status:?}");
            return self.reject(&Rejection::internal("cannot strip the authorization header"));
        }
        if self.gateway.is_none() {
            return self.reject(&not_configured());
        }
        self.http_method = request.method;
        self.mcp_headers = request.mcp;
        self.peer = peer_uri_san();
        let path = request.path.unwrap_or_default();
        match check_transport(&path, self.http_method.as_deref().unwrap_or(""), request.content_type.as_deref(), self.peer.as_deref()) {
            Ok(transport) => {
                self.transport = Some(transport);
                if end_of_stream {
                    self.settle(&[])
                } else {
                    // Hold the headers until the request has ended and been decided.
                    Action::Pause
                }
            }
            // A body is coming: refuse once it is here, with the id it names.
            Err(rejection) if !end_of_stream => {
                self.held = Some(rejection);
                Action::Pause
            }
            Err(rejection) => self.reject(&rejection),
        }
    }

    /// A piece of the body: buffer until its end, then decide the whole of it.
    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.settled {
            return Action::Continue;
        }
        let Some(gateway) = &self.gateway else { return self.reject(&not_configured()) };
        let limit = gateway.limits().max_body_bytes;
        let oversized = body_size > limit;
        if !oversized && !end_of_stream {
            return Action::Pause;
        }
        if let Some(held) = self.held.take() {
            let scan = if oversized { ID_SCAN_BYTES } else { body_size };
            return self.reject_naming_id(scan, |_, body| held.answering(body));
        }
        if oversized {
            // Refuse as soon as the limit is passed rather than buffering the rest.
            return self.decide_oversized(body_size);
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        mark("filter_body_read");
        match body {
            Ok(body) => self.settle(&body.unwrap_or_default()),
            Err(status) => {
                log::error!("portcullis: cannot read request body: {status:?}");
                self.reject(&Rejection::internal("cannot read the request body"))
            }
        }
    }

    /// The request has ended (`body` is all of it): decide it, or refuse it.
    fn settle(&mut self, body: &[u8]) -> Action {
        match self.transport {
            Some(Transport::Decide) => self.decide(body),
            Some(Transport::IdentityOnly) => self.pass_identity_only(body),
            // Unreachable: the headers set the transport before anything can end the request.
            None => self.reject(&Rejection::internal("request ended before its headers were read")),
        }
    }

    /// GET (the server's event stream) and DELETE (end of session) make no call: the workload
    /// identity is enough, and they carry no body.
    fn pass_identity_only(&mut self, body: &[u8]) -> Action {
        if !body.is_empty() {
            return self.reject(&reject_body_on(self.http_method.as_deref().unwrap_or("GET")).answering(body));
        }
        let Some(gateway) = self.gateway.clone() else { return self.reject(&not_configured()) };
        let peer = self.peer.clone();
        if let Some(rejection) = ratelimit::check(&gateway, peer.as_deref(), &[]) {
            return self.reject(&rejection);
        }
        let http_method = self.http_method.clone().unwrap_or_default();
        match self.admit_without_body(&gateway, &http_method, peer.as_deref()) {
            Ok(user) => {
                let mut record = gateway.record(peer.as_deref(), entropy()).with_method(&http_method).allowed(false);
                record.user = user;
                self.forward(record)
            }
            Err(action) => action,
        }
    }

    fn decide(&mut self, body: &[u8]) -> Action {
        let Some(gateway) = self.gateway.clone() else { return self.reject(&not_configured()) };
        let peer = self.peer.clone();
        if let Some(rejection) = ratelimit::check(&gateway, peer.as_deref(), body) {
            return self.reject(&rejection);
        }
        mark("filter_peer_ratelimit");
        let started = hostcalls::get_current_time().ok();
        let mcp_headers = self.mcp_headers.view();
        let ctx = RequestContext {
            peer_uri_san: peer.as_deref(),
            now_unix: now_unix(),
            entropy: entropy(),
            authorization: self.authorization.as_deref(),
            session_id: self.session.outer.as_deref(),
            headers: mcp_headers,
        };
        let (hits, misses) = gateway.decision_cache_counts();
        mark("filter_context");
        let decided = gateway.decide_recorded(body, ctx);
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
        mark("filter_metrics");
        match decided.verdict {
            Ok(allowed) => {
                if let Some(replacement) = &allowed.body {
                    if let Err(action) = self.replace_request_body(body.len(), replacement) {
                        return action;
                    }
                }
                self.rewrite_answer(&gateway, &allowed.forward, allowed.visible.clone(), allowed.id.clone());
                if let Some(ticket) = &allowed.ticket {
                    if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, TICKET_HEADER, Some(ticket)) {
                        log::error!("portcullis: cannot set ticket header: {status:?}");
                        return self.reject(&Rejection::internal("cannot set the ticket header"));
                    }
                }
                if let Err(action) = self.forward_session(allowed.forward) {
                    return action;
                }
                log::debug!("portcullis: allow {} decision {}", allowed.method, allowed.decision_id);
                self.request_id = allowed.id;
                self.forward(decided.record)
            }
            Err(rejection) => self.reject_recorded(&rejection, decided.record),
        }
    }

    /// Lets the decided request go on, its decision in the access log.
    fn forward(&mut self, record: DecisionRecord) -> Action {
        Metrics::count(self.metrics.allowed);
        if record.outcome == Some(Outcome::ApprovalRequired) {
            Metrics::count(self.metrics.approval_required);
        }
        set_record(&record);
        self.decision_id = Some(record.decision_id);
        self.settled = true;
        Action::Continue
    }

    /// Refuses the request before a decision record exists for it.
    fn reject(&mut self, rejection: &Rejection) -> Action {
        let record = match &self.gateway {
            Some(gateway) => gateway.record(peer_uri_san().as_deref(), entropy()),
            None => DecisionRecord::new(hex_id(entropy()), "", peer_uri_san().as_deref()),
        };
        let record = match &self.http_method {
            Some(method) => record.with_method(method),
            None => record,
        };
        self.reject_recorded(rejection, record.refused(rejection))
    }

    fn reject_recorded(&mut self, rejection: &Rejection, record: DecisionRecord) -> Action {
        self.metrics.count_rejection(rejection.kind);
        set_record(&record);
        self.settled = true;
        reject(rejection, &record.decision_id)
    }

    fn decide_oversized(&mut self, size: usize) -> Action {
        self.reject_naming_id(ID_SCAN_BYTES, |gateway, prefix| gateway.reject_oversized(size, prefix))
    }

    /// Refuses a request that will not be decided; the first `scan` bytes buffered of its body
    /// may still name its id.
    fn reject_naming_id(&mut self, scan: usize, rejection: impl FnOnce(&Gateway, &[u8]) -> Rejection) -> Action {
        let prefix = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, scan).ok().flatten().unwrap_or_default();
        let rejection = match &self.gateway {
            Some(gateway) => rejection(gateway, &prefix),
            None => not_configured(),
        };
        self.reject(&rejection)
    }
}

/// Puts the decision record where Envoy's access log reads it.
fn set_record(record: &DecisionRecord) {
    if let Err(status) = hostcalls::set_property(vec![DECISION_PROPERTY], Some(&record.to_json())) {
        log::warn!("portcullis: cannot record the decision for the access log: {status:?}");
    }
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

fn hex_id(bytes: [u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn reject(rejection: &Rejection, decision_id: &str) -> Action {
    let body = rejection.body();
    let retry_after = rejection.retry_after.map(|s| s.to_string());
    let mut headers = vec![("content-type", "application/json"), (DECISION_HEADER, decision_id)];
    if let Some(seconds) = retry_after.as_deref() {
        headers.push(("retry-after", seconds));
    }
    if let Err(status) = hostcalls::send_http_response(u32::from(rejection.status), headers, Some(&body)) {
        log::error!("portcullis: cannot send rejection: {status:?}");
    }
    Action::Pause
}

fn not_configured() -> Rejection {
    Rejection::internal("gateway is not configured; refusing all requests")
}
