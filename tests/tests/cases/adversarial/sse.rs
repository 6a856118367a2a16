//! Event-stream answers as they reach the agent: a call whose answer streams (progress, then
//! the result) arrives in several pieces (the runner writes one event per rollout step, so
//! the upstream stream is split across chunks, and the filter passes each piece on), and a
//! tools/list answered as an event stream is still trimmed to what the caller may call.
//!
//! What this covers, exactly: the split happens where the runner flushes (between events);
//! the harness cannot make the runner cut an event in the middle. Splits inside an event are
//! the listing rewriter's own tests in core (and its fuzz target); here the client checks that
//! what it gets is well formed, whole events, in order, over both transports.

use serde_json::{json, Value};

use super::{Bench, Case, Expect, BOTH};

const STEPS: u64 = 2;

/// The events of an SSE body, each checked well formed: only known fields or comments, at
/// least one `data` line, whose JSON is a JSON-RPC 2.0 message; the body ends an event.
fn events(body: &str) -> Vec<Value> {
    let body = body.replace("\r\n", "\n");
    assert!(body.ends_with("\n\n"), "the stream ends mid-event: {body:?}");
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.is_empty()) {
        let mut data = Vec::new();
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            assert!(["", "id", "event", "data", "retry"].contains(&field), "unknown field {field:?} in event {block:?}");
            if field == "data" {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if data.iter().all(|d| d.is_empty()) {
            // A priming event (an id, empty data) or a comment.
            continue;
        }
        let message: Value = serde_json::from_str(&data.join("\n")).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {block:?}"));
        assert_eq!(message["jsonrpc"], "2.0", "{block:?}");
        out.push(message);
    }
    out
}

pub async fn run(b: &mut Bench) {
    // A streamed call: one progress event per step, then the result, whole and in order.
    let rollout = json!({"jsonrpc":"2.0","id":"rollout","method":"tools/call","params":{
        "name":"watch_rollout","arguments":{"namespace":"team-a","deployment":"adversarial","replicas":STEPS},
        "_meta":{"progressToken":"adv"}}})
    .to_string();
    let case = Case::post("streamed call (progress, then the result)", rollout, Expect::Runs("watch_rollout"));
    for t in BOTH {
        let a = b.check(&case, t).await;
        let got = events(&a.body);
        let what = format!("{t:?}, {} pieces: {}", a.pieces, a.body);
        let (result, progress) = got.split_last().unwrap_or_else(|| panic!("no events: {what}"));
        assert_eq!(result["id"], "rollout", "{what}");
        let text = result.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default();
        assert!(text.contains("rolled out"), "{what}");
        assert_eq!(progress.len() as u64, STEPS, "{what}");
        for (i, p) in progress.iter().enumerate() {
            assert_eq!(p["method"], "notifications/progress", "{what}");
            assert_eq!(p["params"]["progressToken"], "adv", "{what}");
            assert_eq!(p["params"]["progress"].as_f64(), Some((i + 1) as f64), "{what}");
        }
        assert!(a.pieces > 1, "the stream came in one piece, so nothing was split: {what}");
    }

    // tools/list over an event stream: trimmed to the reader's tools over both transports.
    let list = Case::post("tools/list answered as an event stream", r#"{"jsonrpc":"2.0","id":"list","method":"tools/list"}"#, Expect::Answered(200));
    let mut lists = Vec::new();
    for t in BOTH {
        let a = b.check(&list, t).await;
        let got = events(&a.body);
        assert_eq!(got.len(), 1, "{t:?}: {}", a.body);
        let names: Vec<String> = got[0].pointer("/result/tools").and_then(Value::as_array).unwrap_or_else(|| panic!("{t:?}: {}", a.body)).iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect();
        eprintln!("adversarial: reader's tools over {t:?}: {names:?}");
        assert!(names.contains(&"word_count".to_owned()), "{t:?}: {names:?}");
        for hidden in ["delete_namespace", "restart_deployment", "apply_release", "approvals_decide"] {
            assert!(!names.iter().any(|n| n == hidden), "{t:?}: the reader may not call {hidden}, yet it is listed: {names:?}");
        }
        lists.push(names);
    }
    assert_eq!(lists[0], lists[1], "the two transports list alike");
}
