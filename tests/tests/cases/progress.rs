//! MCP progress through Envoy and the filter: a long-running tool (`watch_rollout`) writes one
//! line per step to its progress fd, and a caller that sent a progress token gets each line as
//! `notifications/progress` on the call's event stream while the tool runs, then the result.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::{message_of, open_session, post, tools_call};
use portcullis_e2e::Stack;
use rmcp::model::{CallToolRequestParams, ProgressNotificationParam};
use rmcp::service::NotificationContext;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};

use crate::stack;

const STEPS: usize = 4;

fn rollout_arguments() -> Value {
    json!({"namespace": "team-a", "deployment": "web", "replicas": STEPS})
}

fn step_message(i: usize) -> String {
    format!("web: {i}/{STEPS} replicas updated")
}

const RESULT: &str = "deployment team-a/web rolled out: 4/4 replicas updated and available\n";

/// An MCP client handler that records every progress notification with the time it was
/// handled.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Instant, ProgressNotificationParam)>>>);

impl ClientHandler for Recorder {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.0.lock().unwrap().push((Instant::now(), params));
    }
}

/// The official rmcp client (which sends a progress token with every request) sees each
/// step's notification before the call's result, with increasing progress values.
#[tokio::test]
async fn rmcp_client_gets_progress_before_the_result() {
    let s = stack();
    let recorder = Recorder::default();
    let transport = StreamableHttpClientTransport::with_client(s.http_client(Some("reader")), StreamableHttpClientTransportConfig::with_uri(s.url()));
    let client = recorder.clone().serve(transport).await.unwrap();
    let started = Instant::now();
    let args = rollout_arguments();
    let result = client.call_tool(CallToolRequestParams::new("watch_rollout").with_arguments(args.as_object().unwrap().clone())).await.unwrap();
    let done = Instant::now();
    let text = &result.content[0].as_text().unwrap().text;
    assert_eq!(result.is_error, Some(false), "{text}");
    assert_eq!(text, RESULT);

    let seen = recorder.0.lock().unwrap().clone();
    let timeline: Vec<String> = seen
        .iter()
        .map(|(t, p)| format!("{:>5} ms  progress {} {:?}", t.duration_since(started).as_millis(), p.progress, p.message.as_deref().unwrap_or("")))
        .chain([format!("{:>5} ms  result", done.duration_since(started).as_millis())])
        .collect();
    let timeline = timeline.join("\n");
    eprintln!("progress timeline:\n{timeline}");
    let before: Vec<&ProgressNotificationParam> = seen.iter().filter(|(t, _)| *t < done).map(|(_, p)| p).collect();
    assert!(before.len() >= 3, "at least three notifications before the result:\n{timeline}");
    assert!(before.windows(2).all(|w| w[0].progress < w[1].progress), "progress increases:\n{timeline}");
    assert!(before.iter().all(|p| p.progress_token == before[0].progress_token), "one token:\n{timeline}");
    let messages: Vec<&str> = seen.iter().filter_map(|(_, p)| p.message.as_deref()).collect();
    let want: Vec<String> = (1..=STEPS).map(step_message).collect();
    assert_eq!(messages, want, "one notification per step, in order:\n{timeline}");
    client.cancel().await.unwrap();
}

/// One SSE event of a response body, and which body chunk completed it.
#[derive(Debug)]
struct Event {
    chunk: usize,
    message: Value,
}

/// Posts a tools/call on the shared stack and reads its event stream chunk by chunk as it
/// arrives.
async fn call_streaming(body: &str) -> (u16, Vec<Event>) {
    let s = stack();
    call_streaming_on(s, &s.http_client(Some("reader")), body, "text/event-stream").await
}

/// Posts a tools/call with `http` (in a session where the runner keeps them) and reads the
/// answer, of media type `media`, chunk by chunk as it arrives.
async fn call_streaming_on(s: &Stack, http: &reqwest::Client, body: &str, media: &str) -> (u16, Vec<Event>) {
    let mut req = http
        .post(s.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    // A stateless runner (`--json-response`) opens no sessions.
    if let Ok(session) = open_session(http, &s.url()).await {
        req = req.header("mcp-session-id", session);
    }
    let mut resp = req.body(body.to_owned()).send().await.unwrap();
    let status = resp.status().as_u16();
    let got = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(got.starts_with(media), "expected an answer of type {media}, got {got:?}");
    let mut events = Vec::new();
    let mut pending = String::new();
    let mut chunk = 0;
    while let Some(bytes) = tokio::time::timeout(Duration::from_secs(30), resp.chunk()).await.expect("the stream goes on").unwrap() {
        chunk += 1;
        pending.push_str(std::str::from_utf8(&bytes).unwrap());
        if media == "application/json" {
            continue;
        }
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let message = message_of(&event);
            if !message.is_null() {
                events.push(Event { chunk, message });
            }
        }
    }
    if media == "application/json" {
        events.push(Event { chunk, message: serde_json::from_str(&pending).unwrap() });
    }
    (status, events)
}

/// Asserts the events of a watch_rollout call with id `id` and progress token `token`: one
/// progress event per step, then the result, the first step in an earlier body chunk than the
/// result (the gateway forwards events as they come; it does not hold the answer back).
fn assert_progress_then_result(events: &[Event], id: i64, token: &str) {
    let (result, progress) = events.split_last().expect("events");
    assert_eq!(result.message["id"], id, "the result comes last: {events:?}");
    assert_eq!(result.message.pointer("/result/content/0/text").and_then(Value::as_str), Some(RESULT), "{events:?}");
    assert_eq!(progress.len(), STEPS, "{events:?}");
    for (i, e) in progress.iter().enumerate() {
        assert_eq!(e.message["method"], "notifications/progress", "{events:?}");
        let params = &e.message["params"];
        assert_eq!(params["progressToken"], token, "{events:?}");
        assert_eq!(params["progress"].as_f64(), Some((i + 1) as f64), "{events:?}");
        assert_eq!(params["message"], step_message(i + 1), "{events:?}");
    }
    assert!(progress[0].chunk < result.chunk, "the first step arrived before the stream's end: {events:?}");
}

fn rollout_call(id: i64, token: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"watch_rollout","arguments":rollout_arguments(),"_meta":{"progressToken":token}}})
    .to_string()
}

/// On the wire through Envoy: the progress events come with the caller's token, ahead of the
/// result and in earlier body chunks than it (the gateway forwards them as they come; it
/// does not hold the answer back until it ends).
#[tokio::test]
async fn progress_events_stream_through_the_gateway_ahead_of_the_result() {
    let (status, events) = call_streaming(&rollout_call(7, "rollout-7")).await;
    assert_eq!(status, 200, "{events:?}");
    assert_progress_then_result(&events, 7, "rollout-7");
}

/// The same over HTTP/1.1 between the agent and Envoy (a chunked body).
#[tokio::test]
async fn progress_streams_over_http1_too() {
    let s = stack();
    let (status, events) = call_streaming_on(s, &s.http1_client(Some("reader")), &rollout_call(12, "rollout-12"), "text/event-stream").await;
    assert_eq!(status, 200, "{events:?}");
    assert_progress_then_result(&events, 12, "rollout-12");
}

/// A runner started with `--json-response` still streams a call that reports progress: rmcp
/// answers it with an event stream, and one without a token with plain JSON.
#[tokio::test]
async fn a_json_response_runner_streams_progress_too() {
    let s = crate::cases::listing::json_stack();
    let http = s.http_client(Some("reader"));
    let (status, events) = call_streaming_on(s, &http, &rollout_call(10, "rollout-10"), "text/event-stream").await;
    assert_eq!(status, 200, "{events:?}");
    assert_progress_then_result(&events, 10, "rollout-10");
    let (status, events) = call_streaming_on(s, &http, &tools_call(11, "watch_rollout", rollout_arguments()), "application/json").await;
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].message.pointer("/result/content/0/text").and_then(Value::as_str), Some(RESULT), "{events:?}");
}

/// Without a progress token: no notifications, the same result.
#[tokio::test]
async fn without_a_progress_token_only_the_result_comes() {
    let (status, events) = call_streaming(&tools_call(8, "watch_rollout", rollout_arguments())).await;
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(events.len(), 1, "only the result: {events:?}");
    assert_eq!(events[0].message["id"], 8);
    assert_eq!(events[0].message.pointer("/result/content/0/text").and_then(Value::as_str), Some(RESULT), "{events:?}");
    // And through the plain helper, for the record: nothing else in the body.
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let r = post(&http, &s.url(), Some(&session), &[], &tools_call(9, "watch_rollout", rollout_arguments())).await.unwrap();
    assert!(!r.text.contains("notifications/progress"), "{}", r.text);
    assert_eq!(r.message.pointer("/result/content/0/text").and_then(Value::as_str), Some(RESULT), "{}", r.text);
}
