//! OpenTelemetry: a real OTLP/gRPC receiver gets Envoy's span and the runner's spans of one
//! tool call, in one trace.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use portcullis_e2e::mcp::{open_session, post};
use portcullis_e2e::otlp::{hex, ReceivedSpan, Receiver};
use portcullis_e2e::{mcp::rmcp_client, Stack};
use rmcp::model::CallToolRequestParams;
use serde_json::json;

/// Exporters batch (Envoy and the runner flush every 5 s): this only bounds a failing wait.
const WAIT: Duration = Duration::from_secs(60);
const CHILDREN: [&str; 5] = ["ticket check", "queue wait", "sandbox create", "sandbox run", "sandbox destroy"];

/// A receiver, and a stack that exports to it.
fn traced() -> &'static (Receiver, Stack) {
    static TRACED: OnceLock<(Receiver, Stack)> = OnceLock::new();
    TRACED.get_or_init(|| {
        let receiver = Receiver::start();
        let stack = Stack::start_with(&["--otlp-endpoint", &receiver.endpoint()]);
        (receiver, stack)
    })
}

/// The runner's span of the call with JSON-RPC id `id`, its children, and the gateway's spans
/// of its trace, once all have arrived.
struct Trace {
    call: ReceivedSpan,
    children: Vec<ReceivedSpan>,
    gateway: Vec<ReceivedSpan>,
}

impl Trace {
    fn child(&self, name: &str) -> &ReceivedSpan {
        self.children.iter().find(|s| s.span.name == name).unwrap_or_else(|| panic!("no {name} span"))
    }
}

async fn trace_of(receiver: &Receiver, tool: &str, id: impl Fn(&str) -> bool) -> Trace {
    let name = format!("tools/call {tool}");
    let found = receiver
        .wait_for(WAIT, |spans| {
            let call = spans.iter().find(|s| s.service == "portcullis-runner" && s.span.name == name && s.attr("jsonrpc.request.id").is_some_and(|i| id(&i)))?;
            let children: Vec<ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id() == call.span_id()).cloned().collect();
            let gateway: Vec<ReceivedSpan> = spans.iter().filter(|s| s.service == "portcullis-gateway" && s.trace_id() == call.trace_id()).cloned().collect();
            let complete = CHILDREN.iter().all(|c| children.iter().any(|s| s.span.name == *c)) && !gateway.is_empty();
            complete.then(|| Trace { call: call.clone(), children, gateway })
        })
        .await;
    found.unwrap_or_else(|| {
        let seen: Vec<String> = receiver.spans().iter().map(|s| format!("{} {} trace {} span {} parent {}", s.service, s.span.name, s.trace_id(), s.span_id(), s.parent_span_id())).collect();
        panic!("the receiver did not get the gateway's and the runner's spans of {name} within {WAIT:?}; it got:\n{}\n{}", seen.join("\n"), traced().1.logs())
    })
}

#[tokio::test]
async fn one_tool_call_is_one_trace_from_the_gateway_to_the_sandbox() {
    let (receiver, s) = traced();
    let client = rmcp_client(s.http_client(Some("reader")), &s.url()).await.unwrap();
    let result = client.call_tool(CallToolRequestParams::new("inspect_sandbox")).await.unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    client.cancel().await.unwrap();

    // rmcp numbers its requests; the other test here uses string ids.
    let t = trace_of(receiver, "inspect_sandbox", |id| id.parse::<u64>().is_ok()).await;
    let call = &t.call;
    assert_eq!(call.span.kind, SpanKind::Server as i32);
    assert_eq!(call.attr("mcp.method.name").as_deref(), Some("tools/call"));
    assert_eq!(call.attr("gen_ai.tool.name").as_deref(), Some("inspect_sandbox"));
    assert_eq!(call.attr("gen_ai.operation.name").as_deref(), Some("execute_tool"));
    assert_eq!(call.attr("error.type"), None);
    // The session id is a bearer secret: the span carries its SHA-256 (as the ticket does).
    let session = call.attr("mcp.session.id").expect("mcp.session.id");
    assert!(session.len() == 64 && session.bytes().all(|b| b.is_ascii_hexdigit()), "{session}");
    // The gateway's span is the runner's parent, in the same trace.
    assert!(t.gateway.iter().any(|g| g.span_id() == call.parent_span_id()), "the runner's span is not a child of a gateway span: {:?}", t.gateway);
    for name in CHILDREN {
        let child = t.child(name);
        assert_eq!(child.trace_id(), call.trace_id(), "{name}");
        assert_eq!(child.attr("error.type"), None, "{name}");
    }
    // The sandbox's phases follow each other, with the backend's own times.
    let (create, run, destroy) = (t.child("sandbox create"), t.child("sandbox run"), t.child("sandbox destroy"));
    assert!(create.span.end_time_unix_nano <= run.span.start_time_unix_nano);
    assert!(run.span.end_time_unix_nano <= destroy.span.start_time_unix_nano);
    assert!(call.span.start_time_unix_nano <= create.span.start_time_unix_nano && destroy.span.end_time_unix_nano <= call.span.end_time_unix_nano);

    for metric in ["mcp.server.operation.duration", "portcullis.runner.jobs"] {
        assert!(receiver.wait_for_metric(WAIT, "portcullis-runner", metric).await, "no {metric} from the runner: {:?}", receiver.metric_names());
    }
}

#[tokio::test]
async fn an_agents_trace_context_is_continued_by_header_and_linked_from_meta() {
    let (receiver, s) = traced();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let agent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (agent_http_span, agent_mcp_span) = ("00f067aa0ba902b7", "53995c3f42cd8ad8");
    let call = |id: &str, meta_traceparent: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "inspect_sandbox", "_meta": {"traceparent": meta_traceparent}}})
        .to_string()
    };

    // The agent sends its context as the HTTP header (Envoy continues it) and its MCP span in
    // `_meta`: one trace id from the agent through the gateway to the sandbox.
    let header = format!("00-{agent_trace}-{agent_http_span}-01");
    let body = call("traced-header", &format!("00-{agent_trace}-{agent_mcp_span}-01"));
    let r = post(&http, &s.url(), Some(&session), &[("traceparent", &header)], &body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.message.get("result").is_some(), "{}", r.text);
    let t = trace_of(receiver, "inspect_sandbox", |id| id == "traced-header").await;
    assert_eq!(t.call.trace_id(), agent_trace);
    assert!(t.gateway.iter().any(|g| g.parent_span_id() == agent_http_span), "the gateway did not continue the agent's header: {:?}", t.gateway);
    assert!(t.gateway.iter().any(|g| g.span_id() == t.call.parent_span_id()));
    let links: Vec<(String, String)> = t.call.span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect();
    assert_eq!(links, [(agent_trace.to_owned(), agent_mcp_span.to_owned())]);

    // Only `_meta`: the gateway starts the trace (it does not read bodies for tracing), the
    // runner continues the gateway's and links the agent's MCP span.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let body = call("traced-meta", &format!("00-{other_trace}-{agent_mcp_span}-01"));
    let r = post(&http, &s.url(), Some(&session), &[], &body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let t = trace_of(receiver, "inspect_sandbox", |id| id == "traced-meta").await;
    assert_ne!(t.call.trace_id(), other_trace);
    assert!(t.gateway.iter().any(|g| g.span_id() == t.call.parent_span_id()));
    let links: Vec<(String, String)> = t.call.span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect();
    assert_eq!(links, [(other_trace.to_owned(), agent_mcp_span.to_owned())]);
}

#[tokio::test]
async fn a_refused_call_has_error_type_and_a_failed_ticket_check() {
    let (receiver, s) = traced();
    // Straight to the runner, with the gateway's key: a ticket for other arguments.
    let ticket = super::direct::mint(s, "word_count", &json!({"text": "signed"}), 0);
    let r = super::direct::direct_call(s, |session| Some(ticket.token(session)), "word_count", &json!({"text": "changed"})).await;
    assert_eq!(r.error_code(), Some(-32002), "{}", r.text);

    let found = receiver
        .wait_for(WAIT, |spans| {
            let call = spans.iter().find(|s| s.service == "portcullis-runner" && s.span.name == "tools/call word_count")?;
            let check = spans.iter().find(|s| s.parent_span_id() == call.span_id() && s.span.name == "ticket check")?;
            Some((call.clone(), check.clone(), spans.iter().filter(|s| s.parent_span_id() == call.span_id()).count()))
        })
        .await;
    let (call, check, children) = found.unwrap_or_else(|| panic!("no span of the refused call: {:?}", receiver.spans()));
    assert_eq!(call.attr("error.type").as_deref(), Some("-32002"));
    assert_eq!(check.attr("error.type").as_deref(), Some("ticket_refused"));
    // Nothing queued, nothing ran.
    assert_eq!(children, 1);
}
