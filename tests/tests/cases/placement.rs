//! Placement by policy and backpressure, through real Envoy and the runner: a call the policy
//! places where this runner has no backend is refused with the placements it has and runs
//! nowhere; the placement comes only from the gateway's signed ticket, so an agent cannot pick
//! one; a full job queue answers at once with a retry hint.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use portcullis_core::placement::Placement;
use portcullis_core::session::session_hash;
use portcullis_core::ticket::{Claims, Signer};
use portcullis_e2e::mcp::{open_session, post, tools_call, Reply};
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use super::direct::{claims, open_direct_session, OPERATOR};

/// -32008: the call's placement is not one this runner has.
const PLACEMENT_UNAVAILABLE: i64 = -32008;
/// -32009: the job queue of the call's placement is full.
const QUEUE_FULL: i64 = -32009;

/// A stack whose policy places word_count on a cluster context the runner lacks, and
/// list_pods on a placement that is not one (a context on the local backend).
fn placed() -> &'static Stack {
    static STACK: OnceLock<(tempfile::TempDir, Stack)> = OnceLock::new();
    let (_, stack) = STACK.get_or_init(|| {
        let dir = policies_with_placements(json!({
            "tools": {
                "word_count": {"backend": "kubernetes", "context": "mars"},
                "list_pods": {"backend": "local", "context": "elsewhere"},
            },
        }));
        let stack = Stack::start_with(&["--policies", dir.path().to_str().unwrap()]);
        (dir, stack)
    });
    stack
}

/// A copy of policies/ whose data names `placements`.
pub fn policies_with_placements(placements: Value) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("portcullis-placement-").tempdir().unwrap();
    let src = portcullis_e2e::repo_root().join("policies");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rego") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(src.join("data.json")).unwrap()).unwrap();
    data["portcullis"]["placements"] = placements;
    std::fs::write(dir.path().join("data.json"), serde_json::to_string_pretty(&data).unwrap()).unwrap();
    dir
}

pub async fn call(s: &Stack, agent: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let http = s.http_client(Some(agent));
    let session = open_session(&http, &s.url()).await.unwrap();
    post(&http, &s.url(), Some(&session), headers, body).await.unwrap()
}

pub fn decision_id(r: &Reply) -> String {
    r.headers.get("x-portcullis-decision-id").and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no decision id: {}", r.text)).to_owned()
}

/// The runner's audit records of one decision (the runner writes them before it answers).
pub fn audit_of(s: &Stack, decision: &str) -> Vec<Value> {
    let log = s.state.path().join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["decision_id"] == decision && r["event"] != "gateway.decision").collect()
}

fn events(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["event"].as_str().unwrap_or_default()).collect()
}

/// Refused with -32008 naming `placement` and the runner's placements; recorded as refused,
/// and no job started.
fn assert_unavailable(s: &Stack, r: &Reply, placement: &str) {
    assert_eq!((r.status, r.error_code()), (200, Some(PLACEMENT_UNAVAILABLE)), "{}", r.text);
    let want = format!("this runner has no backend for placement {placement} (it has: local)");
    assert!(r.error_message().contains(&want), "expected {want:?} in {}", r.text);
    assert_eq!(r.message["error"]["data"]["placement"], placement, "{}", r.text);
    assert_eq!(r.message["error"]["data"]["available"], json!(["local"]), "{}", r.text);
    let records = audit_of(s, &decision_id(r));
    assert_eq!(events(&records), ["ticket.accepted", "call.refused"], "{records:#?}");
    assert_eq!(records[1]["code"], PLACEMENT_UNAVAILABLE);
    assert_eq!(records[1]["placement"], placement);
}

#[tokio::test]
async fn a_placement_the_runner_lacks_is_refused_by_name_and_nothing_runs() {
    let s = placed();
    let r = call(s, "reader", &[], &tools_call(1, "word_count", json!({"text": "where am I"}))).await;
    assert_unavailable(s, &r, "kubernetes/mars");

    // A placement that is not a place denies the call at the gateway, before any ticket.
    let r = call(s, "reader", &[], &tools_call(2, "list_pods", json!({"namespace": "team-a"}))).await;
    assert_eq!((r.status, r.error_code()), (200, Some(-32001)), "{}", r.text);
    assert_eq!(r.message["error"]["data"]["rule_ids"], json!(["portcullis.placement"]), "{}", r.text);
    assert!(r.error_message().contains("the policy named an invalid placement: the local backend takes no context"), "{}", r.text);
    assert!(audit_of(s, &decision_id(&r)).is_empty(), "nothing reached the runner");

    // Tools the policy places on the local backend, or not at all, run as before.
    let r = call(s, "reader", &[], &tools_call(3, "inspect_sandbox", json!({}))).await;
    assert_eq!(r.message["result"]["isError"], false, "{}", r.text);
    let records = audit_of(s, &decision_id(&r));
    let started = records.iter().find(|r| r["event"] == "job.started").unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!((&started["backend"], &started["placement"]), (&json!("local"), &json!("local")));
}

/// A call's ticket claims as the gateway makes them, for `session`, with `placement`.
fn claims_for(tool: &str, args: &Value, placement: Option<Placement>, session: &str) -> Claims {
    Claims { placement, session: Some(session_hash(session)), ..claims(tool, args, 0) }
}

/// Signed with the gateway's real key.
fn sign(s: &Stack, claims: &Claims) -> String {
    let key = std::fs::read(s.certs().join("ticket-signing-key.pem")).unwrap();
    Signer::from_pem(&key, "portcullis-gateway".into(), 30).unwrap().sign(claims).unwrap()
}

/// `signed` with the claims (payload) of `altered` in place of its own, its signature kept: a
/// ticket whose claims were changed after the gateway signed it.
fn splice(signed: &str, altered: &str) -> String {
    let (head, rest) = signed.split_once('.').unwrap();
    let signature = rest.rsplit_once('.').unwrap().1;
    let payload = altered.split('.').nth(1).unwrap();
    format!("{head}.{payload}.{signature}")
}

async fn direct(s: &Stack, tool: &str, args: &Value, ticket: impl FnOnce(&str) -> String) -> Reply {
    let http = s.http_client(Some("gateway"));
    let session = open_direct_session(s, &http, OPERATOR).await.expect("a session");
    let ticket = ticket(&session);
    post(&http, &s.runner_url(), Some(&session), &[("x-portcullis-ticket", &ticket)], &tools_call(1, tool, args.clone())).await.unwrap()
}

#[tokio::test]
async fn only_the_gateway_signed_ticket_places_a_call() {
    let s = placed();
    let args = json!({"text": "put me somewhere else"});

    // Through the gateway: whatever the agent sends (a ticket of its own, signed even with the
    // gateway's real key and placing the call on local, or a placement in _meta), the call
    // runs where the policy put it, which this runner lacks.
    let own = sign(s, &claims_for("word_count", &args, Some(Placement::default()), "any"));
    let mut body: Value = serde_json::from_str(&tools_call(1, "word_count", args.clone())).unwrap();
    body["params"]["_meta"] = json!({"portcullis.dev/placement": {"backend": "local"}});
    let r = call(s, "reader", &[("x-portcullis-ticket", &own)], &body.to_string()).await;
    assert_unavailable(s, &r, "kubernetes/mars");

    // Straight to the runner (with the gateway's own TLS identity): a ticket the gateway
    // signed for kubernetes/mars with its placement rewritten to local, or one signed without
    // a placement with local added, fails its signature and runs nothing.
    let mars: Placement = serde_json::from_value(json!({"backend": "kubernetes", "context": "mars"})).unwrap();
    for placement in [Some(mars), None] {
        let mut jti = String::new();
        let r = direct(s, "word_count", &args, |session| {
            let issued = claims_for("word_count", &args, placement, session);
            let altered = Claims { placement: Some(Placement::default()), ..issued.clone() };
            jti.clone_from(&issued.jti);
            splice(&sign(s, &issued), &sign(s, &altered))
        })
        .await;
        assert_eq!(r.error_code(), Some(-32002), "{}", r.text);
        assert!(r.error_message().contains("InvalidSignature"), "{}", r.text);
        assert!(!s.runner_log().contains(&format!("decision={jti}")), "an altered ticket got past its check:\n{}", s.runner_log());
    }

    // A ticket that names no placement runs at the tool's catalog default (local).
    let r = direct(s, "word_count", &args, |session| sign(s, &claims_for("word_count", &args, None, session))).await;
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().map(str::trim), Some("4"), "{}", r.text);
}

#[tokio::test]
async fn a_full_queue_answers_at_once_with_a_retry_hint() {
    let s = Stack::start_with(&["--max-jobs", "1", "--max-queued", "0"]);
    let slow = tools_call(1, "watch_rollout", json!({"namespace": "team-a", "deployment": "web", "replicas": 10}));
    let (url, http) = (s.url(), s.http_client(Some("reader")));
    let session = open_session(&http, &url).await.unwrap();
    let running = tokio::spawn(async move { post(&http, &url, Some(&session), &[], &slow).await.unwrap() });
    wait_until_running(&s.state.path().join("audit/audit.jsonl"), "watch_rollout").await;

    let sent = Instant::now();
    let r = call(&s, "reader", &[], &tools_call(2, "word_count", json!({"text": "me too"}))).await;
    let took = sent.elapsed();
    assert!(!running.is_finished(), "the refusal came only after the running job ended ({took:?})");
    assert!(took < Duration::from_secs(3), "not at once: {took:?}");
    assert_eq!((r.status, r.error_code()), (200, Some(QUEUE_FULL)), "{}", r.text);
    assert!(r.error_message().contains("word_count not run: the job queue for placement local is full; retry in"), "{}", r.text);
    let retry = r.message["error"]["data"]["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("no retry hint: {}", r.text));
    assert!((1..=60_000).contains(&retry), "{retry}");
    let records = audit_of(&s, &decision_id(&r));
    assert_eq!(events(&records), ["ticket.accepted", "call.refused"], "{records:#?}");
    assert_eq!(records[1]["code"], QUEUE_FULL);

    // The running call is unharmed, and once it is done the queue takes calls again.
    let done = running.await.unwrap();
    assert!(done.text.contains("rolled out: 10/10"), "{}", done.text);
    let r = call(&s, "reader", &[], &tools_call(3, "word_count", json!({"text": "now there is room"}))).await;
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().map(str::trim), Some("4"), "{}", r.text);
}

/// Waits until the audit trail says a job of `tool` started.
pub async fn wait_until_running(log: &Path, tool: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let started = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|r| r["event"] == "job.started" && r["tool"] == tool);
        if started {
            return;
        }
        assert!(Instant::now() < deadline, "no job of {tool} started:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
