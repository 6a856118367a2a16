//! The audit trail of a real run: every request sent through Envoy reaches the audit log
//! exactly once with its decision id, and `portcullis audit verify` passes on that log and
//! names the break in tampered copies of it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::{bodyless, post, tools_call, Reply};
use portcullis_e2e::{portcullis_bin, Stack};
use serde_json::{json, Value};

const INIT: &str = r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"audit","version":"1"}}}"#;

pub(crate) fn decision_id(r: &Reply) -> String {
    r.headers.get("x-portcullis-decision-id").and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no decision id: {} {}", r.status, r.text)).to_owned()
}

pub(crate) fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

pub(crate) fn gateway_decisions(path: &Path) -> Vec<Value> {
    records(path).into_iter().filter(|r| r["event"] == "gateway.decision").collect()
}

/// Runs `portcullis audit verify` with `args`; (success, stdout + stderr).
fn verify(args: &[&Path]) -> (bool, String) {
    let mut cmd = std::process::Command::new(portcullis_bin());
    cmd.args(["audit", "verify"]);
    for (flag, path) in ["--log", "--checkpoints", "--public-key"].iter().zip(args) {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Waits (up to `limit`) until the audit log at `log` holds `expected` gateway decisions;
/// returns them, and how many times each decision id appears.
pub(crate) async fn decisions_by_id(log: &Path, expected: usize, limit: Duration) -> (Vec<Value>, HashMap<String, usize>) {
    let deadline = Instant::now() + limit;
    while gateway_decisions(log).len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decisions = gateway_decisions(log);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for d in &decisions {
        if let Some(id) = d["decision_id"].as_str() {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
    }
    (decisions, seen)
}

/// Waits until a signed checkpoint covers at least `records` records of the audit trail in
/// `state`, then runs `portcullis audit verify --state-dir` on it, which must pass; returns
/// its output.
pub(crate) async fn verify_when_checkpointed(state: &Path, records_at_least: u64) -> String {
    let checkpoints = state.join("audit/checkpoints.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    let covered = || records(&checkpoints).last().and_then(|c| c["count"].as_u64()).unwrap_or(0);
    while covered() < records_at_least && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(covered() >= records_at_least, "no checkpoint covers the run: {:?}", records(&checkpoints).last());
    let out = std::process::Command::new(portcullis_bin()).args(["audit", "verify", "--state-dir"]).arg(state).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("intact"), "{text}");
    text
}

#[tokio::test]
async fn every_request_reaches_the_audit_trail_exactly_once_and_the_real_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.yaml");
    // The reader's first eight requests pass; later ones are rate limited (no refill in the test).
    std::fs::write(&settings, "rate_limits:\n  default: { requests_per_second: 0.01, burst: 8 }\n").unwrap();
    let s = Stack::start_with(&["--gateway-settings", settings.to_str().unwrap()]);
    let url = s.url();
    let http = s.http_client(Some("reader"));
    // decision id -> expected outcome
    let mut sent: HashMap<String, &str> = HashMap::new();

    let r = post(&http, &url, None, &[], INIT).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    sent.insert(decision_id(&r), "allowed");
    let session = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let r = post(&http, &url, Some(&session), &[], r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text);
    sent.insert(decision_id(&r), "allowed");
    let r = post(&http, &url, Some(&session), &[], &tools_call(1, "word_count", json!({"text": "audit me"}))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    sent.insert(decision_id(&r), "allowed");
    let r = post(&http, &url, Some(&session), &[], &tools_call(2, "apply_config", json!({"name": "x", "content": "y"}))).await.unwrap();
    assert_eq!((r.status, r.error_code()), (200, Some(-32001)), "{}", r.text);
    sent.insert(decision_id(&r), "denied");
    let r = post(&http, &url, Some(&session), &[], "{not json").await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    sent.insert(decision_id(&r), "invalid");
    let r = post(&http, &url.replace("/mcp", "/elsewhere"), None, &[], INIT).await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text);
    sent.insert(decision_id(&r), "invalid");
    let r = bodyless(&http, reqwest::Method::GET, &url, &session, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    sent.insert(decision_id(&r), "allowed");
    // Another workload, with no role.
    let r = post(&s.http_client(Some("intruder")), &url, None, &[], INIT).await.unwrap();
    assert_eq!((r.status, r.error_code()), (200, Some(-32001)), "{}", r.text);
    sent.insert(decision_id(&r), "denied");
    // Over the reader's limit.
    let mut limited = 0;
    for i in 0..6 {
        let r = post(&http, &url, Some(&session), &[], &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#)).await.unwrap();
        let outcome = if r.status == 429 { "rate_limited" } else { "allowed" };
        limited += usize::from(r.status == 429);
        sent.insert(decision_id(&r), outcome);
    }
    assert!(limited >= 1, "the rate limit never applied");
    // Refused by Envoy itself (underscores in header names): no decision reaches the client.
    let r = s.http1_client(Some("reader")).post(&url).header("x_bad", "1").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("x-portcullis-decision-id").is_none());
    let requests = sent.len() + 1;

    let log = s.state.path().join("audit/audit.jsonl");
    let (decisions, seen) = decisions_by_id(&log, requests, Duration::from_secs(5)).await;
    for (id, outcome) in &sent {
        assert_eq!(seen.get(id), Some(&1), "decision {id} ({outcome}) must be recorded exactly once:\n{decisions:#?}");
        let record = decisions.iter().find(|d| d["decision_id"] == id.as_str()).unwrap();
        assert_eq!(record["outcome"], *outcome, "{record}");
        assert!(record["source_offset"].is_u64() && record["http_status"].is_u64(), "{record}");
    }
    // The request Envoy refused: recorded once, though its client saw no decision id (the
    // filter saw the stream begin and end undecided, or not at all).
    let refused: Vec<&Value> = decisions.iter().filter(|d| d["decision_id"].as_str().is_none_or(|id| !sent.contains_key(id))).collect();
    assert_eq!(refused.len(), 1, "{decisions:#?}");
    assert_eq!(refused[0]["http_status"], 400);
    assert!(["incomplete", "not_decided"].contains(&refused[0]["outcome"].as_str().unwrap()), "{}", refused[0]);
    assert_eq!(decisions.len(), requests, "every request once, nothing else: {decisions:#?}");

    // The log of this real run verifies, once a checkpoint covers all of it.
    verify_when_checkpointed(s.state.path(), requests as u64).await;
    let checkpoints = s.state.path().join("audit/checkpoints.jsonl");
    let covered = || records(&checkpoints).last().and_then(|c| c["count"].as_u64()).unwrap_or(0);

    // Tampered copies fail, naming where.
    let copies = tempfile::tempdir().unwrap();
    let (cp, key) = (copies.path().join("checkpoints.jsonl"), s.certs().join("runner-signing-key.pub.pem"));
    std::fs::copy(&checkpoints, &cp).unwrap();
    let original: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    let cut = covered() as usize - 2;
    let cut_message = format!("records, but the log ends at record {cut}: the last");
    let check = |what: &str, edit: &dyn Fn(&mut Vec<String>), expected: &str| {
        let mut lines = original.clone();
        edit(&mut lines);
        let copy = copies.path().join(format!("{what}.jsonl"));
        std::fs::write(&copy, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let (ok, text) = verify(&[&copy, &cp, &key]);
        assert!(!ok, "{what}: verify passed: {text}");
        assert!(text.contains(expected), "{what}: {text}");
    };
    // Every record has a time: the edit changes whatever record 3 is.
    check("edited", &|l| l[2] = l[2].replacen("\"time\":\"2", "\"time\":\"1", 1), "record 3 (line 3): edited");
    check("deleted", &|l| drop(l.remove(3)), "record 4 (line 4): expected seq 4, found seq 5");
    check("swapped", &|l| l.swap(4, 5), "record 5 (line 5): expected seq 5, found seq 6");
    check("cut", &|l| l.truncate(cut), &cut_message);
}
