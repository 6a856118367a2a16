//! The runner's side of MCP's stream lifecycle, spoken to directly with the gateway's identity
//! and credentials (as in `direct.rs`): cancellation, event ids and resumption, keep-alives on
//! idle streams, and the sessionless 2026-07-28 revision.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::post;
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use super::direct::{caller, caller_for, mint, open_direct_session, OPERATOR};
use crate::stack;

/// One SSE event as it arrived; `comment` holds a comment line's text (a keep-alive).
#[derive(Debug, Default, Clone)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) data: String,
    pub(crate) retry: Option<u64>,
    comment: Option<String>,
}

impl Event {
    fn parse(block: &str) -> Self {
        let mut event = Event::default();
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "" => event.comment = Some(value.to_owned()),
                "id" => event.id = Some(value.to_owned()),
                "data" => event.data.push_str(value),
                "retry" => event.retry = value.parse().ok(),
                _ => {}
            }
        }
        event
    }

    pub(crate) fn message(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    pub(crate) fn progress(&self) -> Option<String> {
        let m = self.message();
        (m["method"] == "notifications/progress").then(|| m["params"]["message"].as_str().unwrap_or_default().to_owned())
    }
}

/// Reads an event stream event by event, as it arrives.
pub(crate) struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "{response:?}");
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "not an event stream: {content_type}");
        Self { response, buffer: String::new() }
    }

    /// The next event or comment; `None` when the stream has ended. Fails after `within`.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(Event::parse(&block));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => panic!("no event within {within:?}; buffered: {:?}", self.buffer),
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => panic!("the event stream failed: {e}"),
            }
        }
    }

    /// Every event until the stream ends, which it must within `within`.
    pub(crate) async fn rest(&mut self, within: Duration) -> Vec<Event> {
        let deadline = Instant::now() + within;
        let mut events = Vec::new();
        while let Some(event) = self.next(deadline.saturating_duration_since(Instant::now())).await {
            events.push(event);
        }
        events
    }
}

/// A raw request to the runner with the MCP headers of a 2025-06-18 session.
fn request(s: &Stack, http: &reqwest::Client, method: reqwest::Method, session: &str, credential: (&str, &str)) -> reqwest::RequestBuilder {
    http.request(method, s.runner_url())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
        .header(credential.0, credential.1)
}

/// A tools/call of `watch_rollout` (one progress line every 0.3 s) with a progress token.
pub(crate) fn rollout_call(id: i64, args: &Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "watch_rollout", "arguments": args, "_meta": {"progressToken": format!("rollout-{id}")}}})
    .to_string()
}

/// The audit records of one call, once `event` is among them.
pub(crate) async fn audit_records_until(s: &Stack, decision: &str, event: &str) -> Vec<Value> {
    let log = s.state.path().join("audit/audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = records_of(&log, decision);
        if records.iter().any(|r| r["event"] == event) {
            return records;
        }
        assert!(Instant::now() < deadline, "no {event} record for {decision}: {records:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn records_of(log: &Path, decision: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r["decision_id"] == decision).collect()
}

pub(crate) fn events_of(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["event"].as_str().unwrap_or_default()).collect()
}

/// Host processes of the job of `decision` (the runner names the job after the decision, in
/// `PORTCULLIS_JOB_ID`, which the host can read in each process's environment).
pub(crate) fn job_processes(decision: &str) -> Vec<String> {
    let needle = format!("PORTCULLIS_JOB_ID={decision}\0");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(environ) = std::fs::read(entry.path().join("environ")) {
            if String::from_utf8_lossy(&environ).contains(&needle) {
                pids.push(name);
            }
        }
    }
    pids
}

/// Reads a `watch_rollout` call's stream up to its first step (checking the priming event and
/// the event ids) and drops it; returns the stream's id.
pub(crate) async fn read_until_first_step(mut events: Events, deployment: &str) -> String {
    let priming = events.next(Duration::from_secs(10)).await.expect("a priming event");
    let stream = priming.id.as_deref().and_then(|id| id.strip_prefix("0/")).unwrap_or_else(|| panic!("priming event without a stream id: {priming:?}")).to_owned();
    assert_eq!((priming.data.as_str(), priming.retry), ("", Some(3000)), "{priming:?}");
    let first = events.next(Duration::from_secs(20)).await.expect("a first progress event");
    assert_eq!(first.progress(), Some(format!("{deployment}: 1/10 replicas updated")), "{first:?}");
    assert_eq!(first.id.as_deref(), Some(format!("1/{stream}").as_str()), "{first:?}");
    stream
}

/// A resumed stream has every step after the first, in order and of this stream only, and
/// ends with the call's result (returned).
pub(crate) fn assert_resumed(resumed: &[Event], deployment: &str, stream: &str, id: i64) -> Value {
    let trace: Vec<String> = resumed.iter().map(|e| format!("{:?} {}", e.id, e.data)).collect();
    let trace = trace.join("\n");
    let steps: Vec<String> = resumed.iter().filter_map(Event::progress).collect();
    // rmcp 3.9 replays from the Last-Event-ID event itself, so step 1 may come again.
    let first = format!("{deployment}: 1/10 replicas updated");
    let steps: Vec<&String> = steps.iter().skip_while(|m| **m == first).collect();
    let want: Vec<String> = (2..=10).map(|i| format!("{deployment}: {i}/10 replicas updated")).collect();
    assert_eq!(steps, want.iter().collect::<Vec<_>>(), "every step after the first, in order, none lost:\n{trace}");
    assert!(resumed.iter().all(|e| e.id.as_deref().is_some_and(|i| i.ends_with(&format!("/{stream}")))), "events of another stream:\n{trace}");
    let result = resumed.last().map(Event::message).unwrap_or_default();
    assert_eq!(result["id"], id, "the call's result ends the resumed stream:\n{trace}");
    result
}

/// Sends a ten-step `watch_rollout` of `deployment` as request `id`, ticketed, on `session`
/// straight to the runner; returns the ticket and the call's (streaming) response.
async fn start_rollout(s: &Stack, http: &reqwest::Client, session: &str, deployment: &str, id: i64) -> (super::direct::Minted, reqwest::Response) {
    let args = json!({"namespace": "team-c", "deployment": deployment, "replicas": 10});
    let ticket = mint(s, "watch_rollout", &args, 0);
    let response = request(s, http, reqwest::Method::POST, session, ("x-portcullis-ticket", &ticket.token(session)))
        .header("content-type", "application/json")
        .body(rollout_call(id, &args))
        .send()
        .await
        .unwrap();
    (ticket, response)
}

/// `notifications/cancelled` for a running tools/call: the job and everything it started are
/// killed and its sandbox destroyed, the call's event stream ends with no answer to it, and
/// the audit trail records the cancellation (after the teardown: no process of the job is
/// left when the record is there).
#[tokio::test]
async fn a_cancelled_call_is_stopped_and_gets_no_answer() {
    let s = stack();
    let http = s.http_client(Some("gateway"));
    let session = open_direct_session(s, &http, OPERATOR).await.expect("a session");
    let (ticket, response) = start_rollout(s, &http, &session, "cancelled", 7).await;
    let mut events = Events::new(response);
    loop {
        let event = events.next(Duration::from_secs(20)).await.expect("the call's stream ended before any progress");
        if event.progress().is_some() {
            break;
        }
    }
    assert!(!job_processes(&ticket.jti).is_empty(), "the job reports progress, so it runs");

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "e2e: not needed any more"}});
    let assertion = caller(s, OPERATOR, Some(&session), "notifications/cancelled");
    let r = post(&http, &s.runner_url(), Some(&session), &[("x-portcullis-caller", &assertion)], &cancel.to_string()).await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text);

    // The stream ends at once (the rollout would take 3 s more), and answers nothing.
    let rest = events.rest(Duration::from_secs(10)).await;
    assert!(rest.iter().all(|e| e.message().get("id").is_none()), "a cancelled call was answered: {rest:?}");

    audit_records_until(s, &ticket.jti, "job.cancelled").await;
    assert!(job_processes(&ticket.jti).is_empty(), "a process of the cancelled job outlived its audit record");
    let records = audit_records_until(s, &ticket.jti, "sandbox.destroyed").await;
    assert_eq!(events_of(&records), ["ticket.accepted", "job.started", "job.cancelled", "sandbox.destroyed"], "{records:#?}");
    let cancelled = records.iter().find(|r| r["event"] == "job.cancelled").unwrap();
    assert_eq!(cancelled["request_id"], 7, "{cancelled}");
    assert_eq!(cancelled["started"], true, "{cancelled}");
    assert_eq!(cancelled["cancelled_by"], "requester", "{cancelled}");
    assert_eq!(cancelled["workload"], OPERATOR, "{cancelled}");
    let ran = cancelled["ran_ms"].as_u64().unwrap();
    assert!(ran > 0 && ran < 3000, "the job ran {ran} ms of its 3.3 s: {cancelled}");
}

/// A client that loses a call's event stream mid-way reconnects with GET and `Last-Event-ID`
/// on its session and gets what it missed, then the rest, then the result. Every event of a
/// call's stream has an id (`<index>/<stream>`), the first one an empty priming event with
/// `retry`.
#[tokio::test]
async fn a_lost_call_stream_resumes_with_last_event_id() {
    let s = stack();
    let http = s.http_client(Some("gateway"));
    let session = open_direct_session(s, &http, OPERATOR).await.expect("a session");
    let (_ticket, response) = start_rollout(s, &http, &session, "resumed", 3).await;
    let stream = read_until_first_step(Events::new(response), "resumed").await;

    // Step 2 (and maybe 3) goes out while nobody listens. The GET must come before the call
    // ends (about 3 s from now): rmcp forgets a call's stream once its answer was sent.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let assertion = caller_for(s, OPERATOR, Some(&session), "GET", None);
    let response = request(s, &http, reqwest::Method::GET, &session, ("x-portcullis-caller", &assertion))
        .header("last-event-id", format!("1/{stream}"))
        .send()
        .await
        .unwrap();
    let resumed = Events::new(response).rest(Duration::from_secs(20)).await;
    let result = assert_resumed(&resumed, "resumed", &stream, 3);
    let text = result["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("rolled out: 10/10"), "{text}");
}

/// A session's GET stream opens with a priming event that has an id, then carries a
/// keep-alive comment at least every 15 s while nothing else happens.
#[tokio::test]
async fn an_idle_event_stream_gets_keep_alives() {
    let s = stack();
    let http = s.http_client(Some("gateway"));
    let session = open_direct_session(s, &http, OPERATOR).await.expect("a session");
    let assertion = caller_for(s, OPERATOR, Some(&session), "GET", None);
    let response = request(s, &http, reqwest::Method::GET, &session, ("x-portcullis-caller", &assertion)).send().await.unwrap();
    let mut events = Events::new(response);
    let priming = events.next(Duration::from_secs(10)).await.expect("a priming event");
    assert_eq!((priming.id.as_deref(), priming.retry), (Some("0"), Some(3000)), "{priming:?}");
    let opened = Instant::now();
    let keep_alive = events.next(Duration::from_secs(20)).await.expect("the idle stream ended");
    assert!(keep_alive.comment.is_some() && keep_alive.data.is_empty(), "not a keep-alive: {keep_alive:?}");
    let after = opened.elapsed();
    assert!(after > Duration::from_secs(10) && after < Duration::from_secs(17), "keep-alive after {after:?}");
}

// ---------------------------------------------------------------------------------------------
// MCP 2026-07-28: no sessions, every request self-contained.

/// Stands in for the gateway's credential step in front of the runner: a plain-HTTP listener
/// that forwards each request to the runner with the gateway's TLS identity, adding what the
/// gateway adds (a ticket for the tools/call in the body, a caller assertion otherwise, both
/// without a session), and streams the answer back as it comes. The rmcp client talks to it.
struct Forwarder {
    url: String,
    seen: Seen,
}

/// What the forwarder saw, shared with its connections.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Forwarded>>>,
    /// Decision ids of the tickets minted, in order.
    tickets: Arc<Mutex<Vec<String>>>,
}

/// One forwarded request, as the client sent it.
#[derive(Clone, Debug)]
struct Forwarded {
    http: String,
    method: String,
    protocol_version: String,
    mcp_method: String,
    session: bool,
}

impl Forwarder {
    async fn start(s: &'static Stack) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let seen = Seen::default();
        let state = seen.clone();
        tokio::spawn(async move {
            let upstream = s.http_client(Some("gateway"));
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                tokio::spawn(serve_connection(s, upstream.clone(), conn, state.clone()));
            }
        });
        Forwarder { url, seen }
    }
}

/// HTTP/1.1 requests on one client connection, one after another.
async fn serve_connection(s: &'static Stack, upstream: reqwest::Client, conn: tokio::net::TcpStream, seen: Seen) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let mut body = vec![0; header("content-length").parse().unwrap_or(0)];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let rpc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let rpc_method = rpc["method"].as_str().unwrap_or_default().to_owned();
        let credential = if rpc_method == "tools/call" {
            let ticket = mint(s, rpc["params"]["name"].as_str().unwrap_or_default(), &rpc["params"]["arguments"], 0);
            seen.tickets.lock().unwrap().push(ticket.jti.clone());
            ("x-portcullis-ticket", ticket.sessionless())
        } else {
            let rpc_method = (method == "POST").then_some(rpc_method.as_str());
            ("x-portcullis-caller", caller_for(s, OPERATOR, None, &method, rpc_method))
        };
        seen.requests.lock().unwrap().push(Forwarded {
            http: method.clone(),
            method: rpc_method.clone(),
            protocol_version: header("mcp-protocol-version"),
            mcp_method: header("mcp-method"),
            session: !header("mcp-session-id").is_empty(),
        });
        let mut forward = upstream.request(method.parse().unwrap(), s.runner_url()).header(credential.0, credential.1).body(body);
        for (name, value) in &headers {
            if !matches!(name.as_str(), "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive") {
                forward = forward.header(name, value);
            }
        }
        let Ok(mut response) = forward.send().await else { return };
        let mut head = format!("HTTP/1.1 {}\r\ntransfer-encoding: chunked\r\n", response.status());
        for (name, value) in response.headers() {
            if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
                head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or_default()));
            }
        }
        head.push_str("\r\n");
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        // Chunk by chunk, so events arrive as they are sent. When the client goes away, the
        // next write fails and dropping `response` closes the runner's stream too, as the
        // gateway does for an agent that disconnects.
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                    framed.extend_from_slice(&chunk);
                    framed.extend_from_slice(b"\r\n");
                    if write.write_all(&framed).await.is_err() || write.flush().await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if write.write_all(b"0\r\n\r\n").await.is_err() {
            return;
        }
    }
}

/// Counts the progress notifications the client gets.
#[derive(Clone, Default)]
struct ProgressSeen(Arc<tokio::sync::Notify>);

impl rmcp::ClientHandler for ProgressSeen {
    async fn on_progress(&self, _params: rmcp::model::ProgressNotificationParam, _context: rmcp::service::NotificationContext<rmcp::RoleClient>) {
        self.0.notify_one();
    }
}

/// The official rmcp client in `Discover` mode (2026-07-28: `server/discover`, then
/// self-contained requests, no session) lists and calls tools on the runner, each request
/// admitted by the session guard on its gateway credential alone. Cancelling a call closes its
/// stream, which is how a 2026-07-28 request is cancelled: the job is stopped as for
/// `notifications/cancelled`.
#[tokio::test]
async fn a_2026_07_28_client_lists_calls_and_cancels_without_a_session() {
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, ProtocolVersion};
    use rmcp::service::PeerRequestOptions;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::{ClientLifecycleMode, ClientServiceExt};

    let s = stack();
    let forwarder = Forwarder::start(s).await;
    let handler = ProgressSeen::default();
    let transport = StreamableHttpClientTransport::with_client(s.http_client(None), StreamableHttpClientTransportConfig::with_uri(forwarder.url.as_str()));
    let client = handler
        .clone()
        .serve_with_lifecycle(transport, ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] })
        .await
        .expect("server/discover with the runner");

    let tools = client.list_tools(None).await.expect("tools/list");
    assert!(tools.tools.iter().any(|t| t.name == "word_count"), "{tools:?}");
    let args = json!({"text": "sessionless and self-contained"});
    let result = client
        .call_tool(CallToolRequestParams::new("word_count").with_arguments(args.as_object().unwrap().clone()))
        .await
        .expect("tools/call");
    assert_eq!(result.content[0].as_text().map(|t| t.text.trim()), Some("3"), "{result:?}");

    let args = json!({"namespace": "team-c", "deployment": "modern", "replicas": 10});
    let call = CallToolRequest::new(CallToolRequestParams::new("watch_rollout").with_arguments(args.as_object().unwrap().clone()));
    let handle = client.peer().send_cancellable_request(ClientRequest::CallToolRequest(call), PeerRequestOptions::default()).await.expect("tools/call sent");
    tokio::time::timeout(Duration::from_secs(20), handler.0.notified()).await.expect("progress from the running job");
    let decision = forwarder.seen.tickets.lock().unwrap().last().cloned().expect("a ticket for the call");
    assert!(!job_processes(&decision).is_empty(), "the job runs");
    handle.cancel(Some("e2e: not needed any more".into())).await.expect("cancelled");
    let records = audit_records_until(s, &decision, "job.cancelled").await;
    assert!(job_processes(&decision).is_empty(), "a process of the cancelled job outlived its audit record");
    assert!(!events_of(&records).contains(&"job.finished"), "{records:#?}");
    client.cancel().await.unwrap();

    let seen = forwarder.seen.requests.lock().unwrap().clone();
    eprintln!("2026-07-28 requests: {seen:?}");
    let methods: Vec<&str> = seen.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(&methods[..3], ["server/discover", "tools/list", "tools/call"], "{seen:?}");
    for r in &seen {
        assert!(!r.session, "a 2026-07-28 request carried a session id: {seen:?}");
        if r.http == "POST" && !r.method.is_empty() {
            assert_eq!(r.protocol_version, "2026-07-28", "{seen:?}");
            assert_eq!(r.mcp_method, r.method, "Mcp-Method names the method: {seen:?}");
        }
    }
}
