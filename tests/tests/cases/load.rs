//! Load with accounting: 10,000 calls at concurrency 32 through the real stack, about 2 % of
//! them denied by policy. Every call reaches the audit trail exactly once (matched by its
//! decision id), `portcullis audit verify` passes, and neither Envoy's nor the runner's
//! memory grows. Throughput and memory are printed, not asserted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::{open_session, post, tools_call};
use portcullis_e2e::Stack;
use serde_json::json;

use super::audit::{decision_id, decisions_by_id, verify_when_checkpointed};

const CALLS: usize = 10_000;
const CONCURRENCY: usize = 32;
/// Every 50th call asks for a tool the reader may not use: 2 % denied by policy.
const DENY_EVERY: usize = 50;
/// Time before the first memory sample, taken while the calls go on. What the runner keeps
/// per call for a while must reach its steady state first: a ticket id stays in the replay
/// table for the ticket's lifetime (30 s in the dev stack) plus a second of leeway, so that
/// table holds the last 31 s of calls; the runner's RSS was seen to rise for the first 40-55 s
/// of load and then to level off. A count of calls would not do: how long 1,000 calls take
/// depends on the machine.
const WARM_UP: Duration = Duration::from_secs(60);

/// Resident set size of `pid` in KiB (VmRSS in /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_else(|| panic!("no VmRSS for {pid}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// Envoy's pid: the child of `up` whose command is envoy.
fn envoy_pid(up: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{up}/task/{up}/children")).expect("children of up");
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "envoy"))
        .unwrap_or_else(|| panic!("no envoy among the children of up ({children})"))
}

/// One worker: its own agent session, then its share of the call numbers, in order; returns decision id -> expected outcome.
async fn worker(url: String, http: reqwest::Client, calls: Vec<usize>, done: Arc<AtomicUsize>) -> HashMap<String, &'static str> {
    let session = open_session(&http, &url).await.expect("session");
    let mut sent = HashMap::new();
    for n in calls {
        let denied = n % DENY_EVERY == DENY_EVERY - 1;
        let body = if denied {
            tools_call(n as i64, "apply_config", json!({"name": "x", "content": "y"}))
        } else {
            tools_call(n as i64, "word_count", json!({"text": format!("call {n}")}))
        };
        let r = post(&http, &url, Some(&session), &[], &body).await.expect("call");
        assert_eq!(r.status, 200, "call {n}: {}", r.text);
        if denied {
            assert_eq!(r.error_code(), Some(-32001), "call {n} must be denied: {}", r.text);
        } else {
            assert!(r.message.get("error").is_none() && r.message.pointer("/result/isError") != Some(&json!(true)), "call {n}: {}", r.text);
        }
        assert!(sent.insert(decision_id(&r), if denied { "denied" } else { "allowed" }).is_none(), "decision id reused");
        done.fetch_add(1, Ordering::Relaxed);
    }
    sent
}

/// Runs all the calls; `done` counts those answered.
async fn run(s: &Stack, done: &Arc<AtomicUsize>) -> HashMap<String, &'static str> {
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let calls = (0..CALLS).filter(|n| n % CONCURRENCY == w).collect();
            tokio::spawn(worker(s.url(), s.http_client(Some("reader")), calls, done.clone()))
        })
        .collect();
    let mut sent = HashMap::new();
    for t in tasks {
        sent.extend(t.await.expect("worker"));
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_at_concurrency_32_are_each_audited_once_and_memory_stays_flat() {
    // No rate limit: the load is the point (the default settings have none either).
    let s = Stack::start();
    let (up, envoy) = (s.pid(), envoy_pid(s.pid()));

    // The first memory sample is taken once the warm-up time has passed, while the calls go on.
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let warm = {
        let done = done.clone();
        tokio::spawn(async move {
            tokio::time::sleep(WARM_UP).await;
            (done.load(Ordering::Relaxed), rss_kib(up), rss_kib(envoy))
        })
    };
    let sent = run(&s, &done).await;
    let (runner_end, envoy_end) = (rss_kib(up), rss_kib(envoy));
    let took = started.elapsed();
    let (warm_calls, runner_warm, envoy_warm) = warm.await.expect("warm-up sample");
    let denied = sent.values().filter(|o| **o == "denied").count();
    eprintln!("load: {CALLS} calls ({denied} denied) at concurrency {CONCURRENCY} in {took:.1?} ({:.0}/s)", CALLS as f64 / took.as_secs_f64());
    eprintln!("load: RSS after the {WARM_UP:?} warm-up ({warm_calls} calls) / at the end: runner (up) {runner_warm} / {runner_end} KiB, envoy {envoy_warm} / {envoy_end} KiB");
    assert!(warm_calls < CALLS / 2, "the warm-up took {warm_calls} of the {CALLS} calls: too few are left to show memory flat");
    assert_eq!(sent.len(), CALLS);
    assert_eq!(denied, CALLS / DENY_EVERY);

    // Each call's decision, exactly once (the sessions' own requests are recorded too).
    let log = s.state.path().join("audit/audit.jsonl");
    let (decisions, seen) = decisions_by_id(&log, CALLS, Duration::from_secs(30)).await;
    let by_id: HashMap<&str, &serde_json::Value> = decisions.iter().filter_map(|d| Some((d["decision_id"].as_str()?, d))).collect();
    for (id, outcome) in &sent {
        assert_eq!(seen.get(id), Some(&1), "decision {id} ({outcome}) must be recorded exactly once");
        assert_eq!(by_id[id.as_str()]["outcome"], *outcome, "{}", by_id[id.as_str()]);
    }
    let ours = decisions.iter().filter(|d| d["decision_id"].as_str().is_some_and(|id| sent.contains_key(id))).count();
    eprintln!("load: audit trail holds {} gateway decisions, {ours} of them the {CALLS} calls", decisions.len());
    let text = verify_when_checkpointed(s.state.path(), decisions.len() as u64).await;
    eprintln!("load: audit verify: {}", text.trim());

    // No growth once warm. Envoy stays flat (4 KiB in the runs seen); its bound of 8 MiB is
    // below what a leak of 1 KiB per call would add over the calls after the warm-up.
    // The runner: sampled after a fixed 1,000 calls (about 20 s) it grew 7.3-7.4 MiB by the
    // end, because its working set was still filling (see WARM_UP). In a run of 17,000 calls
    // sampled every 5 s it rose until about 55 s (2,100 calls), then by 1.6 MiB over the next
    // 8,900 calls and 0.65 MiB over the 6,100 after those: about 0.1 KiB per call, slowing.
    // Its bound, 4 MiB, is more than twice that and catches a leak of 1 KiB per call over the
    // calls after the warm-up (5,000 or more, as asserted above).
    const ENVOY_BOUND_KIB: u64 = 8 * 1024;
    const RUNNER_BOUND_KIB: u64 = 4 * 1024;
    assert!(runner_end <= runner_warm + RUNNER_BOUND_KIB, "runner RSS grew from {runner_warm} to {runner_end} KiB");
    assert!(envoy_end <= envoy_warm + ENVOY_BOUND_KIB, "envoy RSS grew from {envoy_warm} to {envoy_end} KiB");
}
