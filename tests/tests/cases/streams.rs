//! The 2025-11-25 transport's streams through real Envoy and the filter: an SDK's cancellation
//! reaches the runner (the job stops, its sandbox is destroyed), and a lost call stream
//! resumes with `Last-Event-ID` on the session's GET.

use std::time::{Duration, Instant};

use portcullis_core::plan::plan_hash;
use portcullis_e2e::mcp::{open_session, post};
use portcullis_e2e::Stack;
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use rmcp::service::PeerRequestOptions;
use serde_json::{json, Value};

use super::runner_protocol::{assert_resumed, audit_records_until, events_of, job_processes, read_until_first_step, rollout_call, Events};
use crate::stack;

/// The decision id of the one job the runner started for `tool` with `args` (the audit trail
/// names it by plan hash), once it runs.
async fn started_job(s: &Stack, tool: &str, args: &Value) -> String {
    let hash = plan_hash(tool, args.as_object()).unwrap();
    let log = s.state.path().join("audit/audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let started = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|r| r["event"] == "job.started" && r["plan_hash"] == hash);
        if let Some(decision) = started.and_then(|r| r["decision_id"].as_str().map(str::to_owned)) {
            if !job_processes(&decision).is_empty() {
                return decision;
            }
        }
        assert!(Instant::now() < deadline, "no running job for {tool} {args}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_sdk_cancellation_through_the_gateway_stops_the_job_and_destroys_its_sandbox() {
    let s = stack();
    let client = portcullis_e2e::mcp::rmcp_client(s.http_client(Some("reader")), &s.url()).await.unwrap();
    let args = json!({"namespace": "team-g", "deployment": "cancel-through-gateway", "replicas": 10});
    let call = CallToolRequest::new(CallToolRequestParams::new("watch_rollout").with_arguments(args.as_object().unwrap().clone()));
    let handle = client.peer().send_cancellable_request(ClientRequest::CallToolRequest(call), PeerRequestOptions::default()).await.expect("tools/call sent");
    let decision = started_job(s, "watch_rollout", &args).await;
    handle.cancel(Some("e2e: the agent gave up".into())).await.expect("notifications/cancelled sent");
    let records = audit_records_until(s, &decision, "sandbox.destroyed").await;
    assert!(job_processes(&decision).is_empty(), "a process of the cancelled job is left");
    // The gateway's own record of the call is shipped from the access log when the call's
    // stream ends, which may be before or after the runner's: the runner's records are checked
    // in order here, the gateway's below once the stream is closed.
    let runner: Vec<Value> = records.iter().filter(|r| r["event"] != "gateway.decision").cloned().collect();
    assert_eq!(events_of(&runner), ["ticket.accepted", "job.started", "job.cancelled", "sandbox.destroyed"], "{records:#?}");
    let cancelled = records.iter().find(|r| r["event"] == "job.cancelled").unwrap();
    assert!(cancelled["ran_ms"].as_u64().is_some_and(|ms| ms < 3000), "stopped before the rollout's 3 s: {cancelled}");
    // The access log shows the cancellation passed the filter, decided like any notification.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.access_log().lines().any(|l| l.contains("notifications/cancelled") && l.contains("allowed")) {
        assert!(Instant::now() < deadline, "no allowed notifications/cancelled in the access log");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.cancel().await.ok();
    let records = audit_records_until(s, &decision, "gateway.decision").await;
    let decided: Vec<&Value> = records.iter().filter(|r| r["event"] == "gateway.decision").collect();
    assert_eq!(decided.len(), 1, "one gateway decision for the call: {records:#?}");
    assert_eq!(decided[0]["outcome"], "allowed", "{records:#?}");
    assert_eq!(decided[0]["tool"], "watch_rollout", "{records:#?}");
}

#[tokio::test]
async fn a_lost_call_stream_resumes_with_last_event_id_through_the_gateway() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let args = json!({"namespace": "team-g", "deployment": "resumed-through-gateway", "replicas": 10});
    let response = http
        .post(s.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(rollout_call(3, &args))
        .send()
        .await
        .unwrap();
    let stream = read_until_first_step(Events::new(response), "resumed-through-gateway").await;

    tokio::time::sleep(Duration::from_millis(700)).await;
    let response = http
        .get(s.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("last-event-id", format!("1/{stream}"))
        .send()
        .await
        .unwrap();
    let resumed = Events::new(response).rest(Duration::from_secs(20)).await;
    assert_resumed(&resumed, "resumed-through-gateway", &stream, 3);

    // Someone else's GET with the same Last-Event-ID gets nothing of it.
    let r = portcullis_e2e::mcp::bodyless(&s.http_client(Some("operator")), reqwest::Method::GET, &s.url(), &session, &[("last-event-id", "1/x")]).await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text);
    let r = post(&http, &s.url(), Some(&session), &[], r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
}
