//! Spans of one tools/call: the SERVER span and its children.

use std::borrow::Cow;
use std::future::Future;
use std::time::{Instant, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{FutureExt as _, Link, SpanContext, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rmcp::model::CallToolResponse;
use rmcp::ErrorData as McpError;

use super::{enabled, metrics, SCOPE};
use crate::sandbox::{Phase, PhaseObserver, SandboxError};

/// Child span names.
pub const TICKET_CHECK: &str = "ticket check";
pub const APPROVAL_CHECK: &str = "approval check";
pub const QUEUE_WAIT: &str = "queue wait";

/// The W3C trace context an agent may put in `params._meta` (MCP SEP-414).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaContext<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

/// The SERVER span of one tools/call (`tools/call {tool}`), or nothing when telemetry is off.
pub struct CallSpan {
    inner: Option<(Context, Instant, Vec<KeyValue>)>,
}

impl CallSpan {
    /// Starts the span for a call of `tool` with JSON-RPC id `request_id`.
    ///
    /// Parent and links. Envoy's tracer sets the HTTP `traceparent` on the request it forwards,
    /// pointing at its own span for this request (and continuing the agent's HTTP-level trace
    /// when the agent sent a `traceparent` header to the gateway). That header is the parent:
    /// it is the hop that decided the call, so the gateway's span and the runner's always share
    /// one trace. An agent's `params._meta.traceparent` (its MCP client span) becomes a link
    /// when it names another span; an agent that wants one trace id end to end sends the same
    /// context as the HTTP header too, and Envoy continues it. Without the header (Envoy
    /// without a tracer), `_meta` is the parent. Both come from the agent or its gateway and
    /// only ever decide where spans hang, never what runs.
    ///
    /// `mcp.session.id` is the hex SHA-256 of the session id, the value the ticket's `session`
    /// claim carries: session ids are bearer secrets and never leave the runner.
    pub fn start(tool: &str, request_id: &dyn std::fmt::Display, headers: Option<&http::HeaderMap>, meta: MetaContext<'_>) -> Self {
        if !enabled() {
            return CallSpan { inner: None };
        }
        let header = |name: &str| headers.and_then(|h| h.get(name)).and_then(|v| v.to_str().ok());
        let from_header = remote(header("traceparent"), header("tracestate"));
        let from_meta = remote(meta.traceparent, meta.tracestate);
        let (parent, link) = match (from_header, from_meta) {
            (Some(h), Some(m)) if h.span_id() == m.span_id() => (Some(h), None),
            (Some(h), m) => (Some(h), m),
            (None, m) => (m, None),
        };
        let parent_cx = parent.map_or_else(Context::new, |sc| Context::new().with_remote_span_context(sc));
        let metric_attrs = vec![
            KeyValue::new("mcp.method.name", "tools/call"),
            KeyValue::new("gen_ai.tool.name", tool.to_owned()),
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
        ];
        let mut attributes = metric_attrs.clone();
        attributes.push(KeyValue::new("jsonrpc.request.id", request_id.to_string()));
        attributes.push(KeyValue::new("network.transport", "tcp"));
        if let Some(session) = header("mcp-session-id") {
            attributes.push(KeyValue::new("mcp.session.id", portcullis_core::session::session_hash(session)));
        }
        if let Some(version) = header("mcp-protocol-version") {
            attributes.push(KeyValue::new("mcp.protocol.version", version.to_owned()));
        }
        let links = link.map(|sc| vec![Link::new(sc, vec![KeyValue::new("portcullis.link.source", "params._meta.traceparent")], 0)]);
        let tracer = global::tracer(SCOPE);
        let builder = tracer
            .span_builder(format!("tools/call {tool}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .with_links(links.unwrap_or_default());
        let span = tracer.build_with_context(builder, &parent_cx);
        CallSpan { inner: Some((parent_cx.with_span(span), Instant::now(), metric_attrs)) }
    }

    /// Runs `call` with this span as the current context, so [`span`], [`in_span`] and
    /// [`SandboxPhases::current`] inside it make children of it.
    pub async fn scope<F: Future>(&self, call: F) -> F::Output {
        match &self.inner {
            Some((cx, _, _)) => call.with_context(cx.clone()).await,
            None => call.await,
        }
    }

    /// Ends the span with the call's outcome and records `mcp.server.operation.duration`.
    /// A JSON-RPC error sets `error.type` (and `rpc.response.status_code`) to its code; a tool
    /// result with `isError` sets `error.type = tool_error`.
    pub fn finish(self, result: &Result<CallToolResponse, McpError>) {
        let Some((cx, started, mut metric_attrs)) = self.inner else { return };
        let span = cx.span();
        let failure: Option<(String, Cow<'_, str>)> = match result {
            Err(e) => {
                span.set_attribute(KeyValue::new("rpc.response.status_code", e.code.0.to_string()));
                Some((e.code.0.to_string(), Cow::Borrowed(&e.message)))
            }
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => Some(("tool_error".to_owned(), Cow::Borrowed("the tool reported an error"))),
            Ok(_) => None,
        };
        if let Some((error_type, message)) = failure {
            span.set_attribute(KeyValue::new("error.type", error_type.clone()));
            span.set_status(Status::error(message.into_owned()));
            metric_attrs.push(KeyValue::new("error.type", error_type));
        }
        span.end();
        metrics::operation_duration(started.elapsed().as_secs_f64(), &metric_attrs);
    }
}

/// A parsed W3C context, or `None` when absent or invalid (an invalid one is ignored, as the
/// W3C spec asks, rather than refusing the call).
fn remote(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    struct Carrier<'a>(&'a str, Option<&'a str>);
    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.0),
                "tracestate" => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let cx = TraceContextPropagator::new().extract(&Carrier(traceparent?, tracestate));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// A child span of the current call, ended when dropped. Does nothing with telemetry off.
pub struct PhaseSpan(Option<Context>);

impl PhaseSpan {
    /// Marks the span failed: `error_type` is a short, fixed class (`ticket_refused`,
    /// `denied`, ...), `message` the detail.
    pub fn fail(&self, error_type: &'static str, message: impl Into<Cow<'static, str>>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new("error.type", error_type));
            cx.span().set_status(Status::error(message));
        }
    }

    /// Sets an attribute (for example `portcullis.approval.state`).
    pub fn set(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }
}

impl Drop for PhaseSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

/// Starts a child span `name` of the current call (see [`CallSpan::scope`]).
pub fn span(name: &'static str) -> PhaseSpan {
    if !enabled() {
        return PhaseSpan(None);
    }
    let parent = Context::current();
    let tracer = global::tracer(SCOPE);
    let span = tracer.span_builder(name).with_kind(SpanKind::Internal).start_with_context(&tracer, &parent);
    PhaseSpan(Some(parent.with_span(span)))
}

/// Runs `check` inside a child span `name` of the current call; an `Err` marks the span failed
/// with `error_type` and the error's text.
pub fn in_span<T, E: std::fmt::Display>(name: &'static str, error_type: &'static str, check: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let span = span(name);
    let result = check();
    if let Err(e) = &result {
        span.fail(error_type, e.to_string());
    }
    result
}

/// The `approval check` span of the current call: start it where the runner looks up (or
/// records) the call's approval; mark it with [`PhaseSpan::set`]
/// (`portcullis.approval.state`) and [`PhaseSpan::fail`]; it ends when dropped.
pub fn approval_check() -> PhaseSpan {
    span(APPROVAL_CHECK)
}

/// Makes `sandbox create`, `sandbox run` and `sandbox destroy` spans, children of the call
/// that was current when it was made, from the times the backend reports.
pub struct SandboxPhases {
    parent: Option<Context>,
    backend: &'static str,
}

impl SandboxPhases {
    pub fn current(backend: &'static str) -> Self {
        SandboxPhases { parent: enabled().then(Context::current), backend }
    }
}

impl PhaseObserver for SandboxPhases {
    fn phase(&self, phase: Phase, start: SystemTime, end: SystemTime, error: Option<&SandboxError>) {
        let Some(parent) = &self.parent else { return };
        let name = match phase {
            Phase::Create => "sandbox create",
            Phase::Run => "sandbox run",
            Phase::Destroy => "sandbox destroy",
        };
        let tracer = global::tracer(SCOPE);
        let builder = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([KeyValue::new("portcullis.sandbox.backend", self.backend)]);
        let span = tracer.build_with_context(builder, parent);
        let cx = parent.with_span(span);
        if let Some(e) = error {
            cx.span().set_attribute(KeyValue::new("error.type", error_class(e)));
            // The log text may name host paths; traces get the agent's short form.
            cx.span().set_status(Status::error(e.agent_message()));
        }
        cx.span().end_with_timestamp(end);
    }
}

fn error_class(e: &SandboxError) -> &'static str {
    match e {
        SandboxError::InvalidJob(_) => "invalid_job",
        SandboxError::Unsupported { .. } => "unsupported",
        SandboxError::Create { .. } => "create",
        SandboxError::Setup { .. } => "setup",
        SandboxError::Exec { .. } => "exec",
        SandboxError::Io { .. } => "io",
        SandboxError::Teardown { .. } => "teardown",
    }
}
