//! Faults, through real Envoy, the filter and the runner: the runner down or killed during a
//! job, Envoy restarting under load, a full queue, a failing or runaway policy, a trapping
//! plugin, and a full audit disk. Each fails closed: an error the client can read, and nothing
//! executed that the audit trail does not record, nor anything executed twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::{open_session, post, tools_call, Reply};
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use super::control::{refused, session};
use super::placement::wait_until_running;

fn audit_path(s: &Stack) -> PathBuf {
    s.state.path().join("audit/audit.jsonl")
}

fn audit_records(s: &Stack) -> Vec<Value> {
    std::fs::read_to_string(audit_path(s)).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn count_of(records: &[Value], event: &str) -> usize {
    records.iter().filter(|r| r["event"] == event).count()
}

/// A refusal in JSON-RPC: an error object answering request `id`, and no result.
fn assert_json_rpc_error(r: &Reply, id: Value, what: &str) {
    assert!(r.message.get("result").is_none(), "{what}: a result came back: {} {}", r.status, r.text);
    assert_eq!(r.message["id"], id, "{what}: the error does not answer the request: {} {}", r.status, r.text);
    assert!(r.error_code().is_some() && !r.error_message().is_empty(), "{what}: no JSON-RPC error: {} {}", r.status, r.text);
}

#[tokio::test]
async fn with_the_runner_down_the_client_gets_a_json_rpc_error_at_once() {
    let mut s = Stack::start();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    s.kill_runner();

    let sent = Instant::now();
    let r = post(&http, &s.url(), Some(&session), &[], &tools_call(41, "word_count", json!({"text": "anyone there"}))).await.unwrap();
    let took = sent.elapsed();
    eprintln!("runner down, tools/call: {} in {took:?}: {}", r.status, r.text);
    assert_json_rpc_error(&r, json!(41), "tools/call with the runner down");
    // Generous: the point is that the call fails rather than waits for a timeout.
    assert!(took < Duration::from_secs(5), "the error took {took:?}");

    let init = json!({"jsonrpc": "2.0", "id": "init-1", "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "faults", "version": "1"}}});
    let sent = Instant::now();
    let r = post(&http, &s.url(), None, &[], &init.to_string()).await.unwrap();
    eprintln!("runner down, initialize: {} in {:?}: {}", r.status, sent.elapsed(), r.text);
    assert_json_rpc_error(&r, json!("init-1"), "initialize with the runner down");
}

/// Processes (on the whole host) whose environment carries `ARG_DEPLOYMENT=marker`: a job's.
fn processes_of_job(marker: &str) -> Vec<String> {
    let needle = format!("ARG_DEPLOYMENT={marker}");
    let procs = std::fs::read_dir("/proc").unwrap().flatten().filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()));
    procs
        .filter(|p| std::fs::read(p.path().join("environ")).is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())))
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Job dirs of runner `pid` in the temp dir, and host mounts under them.
fn job_dirs_and_mounts(pid: u32) -> (Vec<String>, Vec<String>) {
    let prefix = format!("portcullis-job-{pid}-");
    let dirs = std::fs::read_dir(std::env::temp_dir()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(&prefix)).collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&prefix)).map(str::to_owned).collect();
    (dirs, mounts)
}

/// One job slot and no waiting line: a running job fills the queue (refused with a retry
/// hint); then the whole stack is SIGKILLed during that job. After the restart the job's
/// processes, mounts and dir are gone, and the audit trail records it aborted.
#[tokio::test]
async fn a_full_queue_then_a_runner_killed_during_a_job() {
    let s = Stack::start_with(&["--max-jobs", "1", "--max-queued", "0"]);
    let marker = format!("faults-{}-killed", std::process::id());
    let slow = tools_call(1, "watch_rollout", json!({"namespace": "team-a", "deployment": marker, "replicas": 10}));
    let (url, http) = (s.url(), s.http_client(Some("reader")));
    let first = open_session(&http, &url).await.unwrap();
    let running = tokio::spawn(async move { post(&http, &url, Some(&first), &[], &slow).await });
    wait_until_running(&audit_path(&s), "watch_rollout").await;

    // The queue is full: the official client reads a clear refusal with a retry hint.
    let client = session(&s, "reader", None).await;
    let (message, data) = refused(&client, "word_count", json!({"text": "me too"}), -32009).await;
    eprintln!("full queue: {message} {data}");
    assert!(message.contains("job queue for placement local is full; retry in"), "{message}");
    assert!(data["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{data}");
    drop(client);

    let started = audit_records(&s).into_iter().find(|r| r["event"] == "job.started" && r["tool"] == "watch_rollout").unwrap();
    let decision = started["decision_id"].as_str().unwrap().to_owned();
    let pid = s.pid();
    assert!(!processes_of_job(&marker).is_empty(), "the job is not running");
    assert!(!job_dirs_and_mounts(pid).0.is_empty(), "no job dir of runner {pid} while its job runs");

    let s = s.kill_and_restart();
    let answer = running.await.unwrap();
    eprintln!("the killed job's caller got: {answer:?}");
    assert!(answer.as_ref().map_or(true, |r| r.message.get("result").is_none()), "a result after the kill: {answer:?}");
    assert_eq!(processes_of_job(&marker), Vec::<String>::new(), "the job's processes outlived the runner");
    assert_eq!(job_dirs_and_mounts(pid), (vec![], vec![]), "the job's dir or mounts outlived the runner");
    let records: Vec<Value> = audit_records(&s).into_iter().filter(|r| r["decision_id"] == decision.as_str() && r["event"] != "gateway.decision").collect();
    eprintln!("records of the killed job: {records:#?}");
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    assert_eq!(events, ["ticket.accepted", "job.started", "job.aborted", "sandbox.destroyed"], "the abort is not recorded");
}

/// What each client of the load saw: answers by decision id, and errors.
#[derive(Default)]
struct Tally {
    results: Vec<String>,
    errors: Vec<String>,
}

async fn load_client(url: String, http: reqwest::Client, client: usize, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let mut session = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sid = match &session {
            Some(sid) => Some(sid),
            None => match open_session(&http, &url).await {
                Ok(sid) => Some(&*session.insert(sid)),
                Err(e) => {
                    tally.lock().unwrap().errors.push(format!("initialize: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let body = tools_call(n, "word_count", json!({"text": format!("client {client} call {n}")}));
        match post(&http, &url, sid.map(String::as_str), &[], &body).await {
            Ok(r) if r.message.get("result").is_some() => {
                let decision = r.headers.get("x-portcullis-decision-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
                tally.lock().unwrap().results.push(decision.to_owned());
            }
            Ok(r) => {
                tally.lock().unwrap().errors.push(format!("{} {}", r.status, r.text));
                session = None;
            }
            Err(e) => {
                tally.lock().unwrap().errors.push(format!("{e}"));
                session = None;
            }
        }
    }
}

/// Envoy is SIGKILLed while eight clients keep calling, and comes back (with the runner, as
/// `up` restarts both). Clients see errors; the audit trail shows every executed call started
/// once, and every answered call executed exactly once.
#[tokio::test]
async fn envoy_restarting_under_load_fails_calls_but_runs_none_twice() {
    let s = Stack::start();
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Tally::default())));
    let clients: Vec<_> = (0..8).map(|c| tokio::spawn(load_client(s.url(), s.http_client(Some("reader")), c, stop.clone(), tally.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = tally.lock().unwrap().results.len();
    let s = s.kill_envoy_and_restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let tally = tally.lock().unwrap();
    let after = tally.results.len() - before;
    eprintln!("under load: {before} answered before the kill, {after} after, {} errors; first errors: {:#?}", tally.errors.len(), tally.errors.iter().take(3).collect::<Vec<_>>());
    assert!(before > 0 && after > 0, "no calls answered before ({before}) or after ({after}) the restart");
    assert!(!tally.errors.is_empty(), "no client saw the restart");

    let records = audit_records(&s);
    let mut started: BTreeMap<&str, usize> = BTreeMap::new();
    let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        let counts = match r["event"].as_str() {
            Some("job.started") => &mut started,
            Some("job.finished") => &mut finished,
            _ => continue,
        };
        *counts.entry(r["decision_id"].as_str().unwrap_or_default()).or_default() += 1;
    }
    let twice: Vec<_> = started.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "calls executed more than once: {twice:?}");
    for decision in &tally.results {
        assert_eq!((started.get(decision.as_str()), finished.get(decision.as_str())), (Some(&1), Some(&1)), "answered call {decision}");
    }
    eprintln!("audit: {} jobs started, {} finished, {} answered", started.len(), finished.len(), tally.results.len());
}

const FAULTY_POLICY: &str = r#"package portcullis.authz

import rego.v1

allowed := {
	"allow": true, "require_approval": false, "reasons": ["faults test bundle"], "rule_ids": ["faults"],
	"cacheable": false, "visible_tools": ["*"], "visible_resources": [""], "visible_prompts": ["*"],
}

decision := allowed if not input.tool in {"word_count", "list_pods"}

# word_count: one complete rule with two values, an evaluation error.
decision := {"allow": true, "reasons": ["one"]} if input.tool == "word_count"

decision := {"allow": true, "reasons": ["two"]} if input.tool == "word_count"

# list_pods: allowed only after a loop far past any time budget.
decision := allowed if {
	input.tool == "list_pods"
	not endless
}

endless if {
	some a in data.faults.big
	some b in data.faults.big
	some c in data.faults.big
	a + b + c < 0
}

plan_decision := allowed
"#;

/// A policy that fails at evaluation, and one that runs past the time budget: both refused,
/// and nothing runs.
#[tokio::test]
async fn a_failing_or_runaway_policy_denies() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("authz.rego"), FAULTY_POLICY).unwrap();
    let big: Vec<u32> = (0..400).collect();
    std::fs::write(policies.path().join("data.json"), json!({"faults": {"big": big}}).to_string()).unwrap();
    let s = Stack::start_with(&["--policies", policies.path().to_str().unwrap()]);
    let http = s.http_client(Some("reader"));
    let sid = open_session(&http, &s.url()).await.unwrap();
    for (id, tool, args) in [(51, "word_count", json!({"text": "a b"})), (52, "list_pods", json!({"namespace": "team-a"}))] {
        let sent = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(20), post(&http, &s.url(), Some(&sid), &[], &tools_call(id, tool, args)))
            .await
            .unwrap_or_else(|_| panic!("{tool}: no answer in 20 s: the policy evaluation is not bounded"))
            .unwrap();
        eprintln!("{tool}: {} in {:?}: {}", r.status, sent.elapsed(), r.text);
        assert_json_rpc_error(&r, json!(id), tool);
        assert!(r.error_message().contains("policy evaluation failed"), "{tool}: {}", r.text);
    }
    assert_eq!(count_of(&audit_records(&s), "ticket.accepted"), 0, "a call reached the runner");
}

/// A proxy-wasm plugin that loads and configures, and traps on every request.
const TRAPPING_PLUGIN: &str = r#"(module
  (memory (export "memory") 16)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "_initialize"))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))"#;

/// The filter's VM is replaced (through the ECDS file, as a reload would) by a plugin that
/// traps: the filter is configured to fail closed, and requests are refused, never forwarded.
#[tokio::test]
async fn a_trapping_plugin_leaves_envoy_failing_closed() {
    let s = Stack::start();
    let http = s.http_client(Some("reader"));
    let sid = open_session(&http, &s.url()).await.unwrap();
    let ecds_path = s.state.path().join(portcullis_runner::devstack::up::ECDS_FILE);
    let mut ecds: Value = serde_json::from_str(&std::fs::read_to_string(&ecds_path).unwrap()).unwrap();
    let config = ecds.pointer_mut("/resources/0/typed_config/config").unwrap();
    assert_eq!(config["fail_open"], false, "the filter does not fail closed: {config}");
    let trap = s.state.path().join("trapping-plugin.wasm");
    std::fs::write(&trap, wat::parse_str(TRAPPING_PLUGIN).unwrap()).unwrap();
    config["vm_config"]["code"]["local"]["filename"] = json!(trap.to_str().unwrap());
    config["vm_config"]["vm_id"] = json!("trapping");
    ecds["version_info"] = json!("trapping");
    let staged = s.state.path().join("ecds.staged");
    std::fs::write(&staged, ecds.to_string()).unwrap();
    std::fs::rename(&staged, &ecds_path).unwrap();

    let jobs = || count_of(&audit_records(&s), "job.started");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut refusals, mut n) = (Vec::new(), 0);
    while refusals.len() < 5 {
        n += 1;
        let before = jobs();
        let body = tools_call(n, "word_count", json!({"text": "through a broken filter"}));
        match post(&http, &s.url(), Some(&sid), &[], &body).await {
            // The old filter answers until Envoy has loaded the new one.
            Ok(r) if r.headers.contains_key("x-portcullis-decision-id") => {}
            Ok(r) => {
                assert!(r.status >= 500, "not refused: {} {}", r.status, r.text);
                refusals.push(format!("{} {}", r.status, r.text));
                assert_eq!(jobs(), before, "a request ran behind the broken filter");
            }
            Err(e) => {
                refusals.push(format!("{e}"));
                assert_eq!(jobs(), before, "a request ran behind the broken filter");
            }
        }
        assert!(Instant::now() < deadline, "Envoy never loaded the trapping plugin:\n{}", s.envoy_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("behind a trapping plugin: {refusals:#?}");
}

