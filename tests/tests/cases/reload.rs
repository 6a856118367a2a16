//! Hot reload through a real Envoy: a policy change reaches the running gateway (ECDS from a
//! file, pushed by `portcullis up`) without restarting Envoy and without failing a single
//! request in flight or arriving during the swap; an invalid change is refused and the policy
//! already running keeps deciding.
//!
//! This test runs its own stack on copies of policies/ and the catalog, so it can edit them.
//! The edit is made on the data, not on the rules, so it survives rewrites of the default
//! bundle: every list of SPIFFE IDs (or patterns) that names the `reader` agent gets the
//! role-less `intruder` agent too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_e2e::mcp::{open_session, post, tools_call};
use portcullis_e2e::{repo_root, Stack};
use serde_json::{json, Value};

const READER: &str = "spiffe://portcullis.local/ns/agents/sa/reader";
const INTRUDER: &str = "spiffe://portcullis.local/ns/agents/sa/intruder";
/// The catalog copy makes this tool take a second, so calls are in flight during the swap.
const SLOW_TOOL: &str = "inspect_sandbox";
const FAST_TOOL: &str = "word_count";

/// Copies the policy bundle (the files directly in policies/) and the catalog, with the slow
/// tool sleeping a second before it answers.
fn copy_sources(dir: &Path) -> (PathBuf, PathBuf) {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    for entry in std::fs::read_dir(repo_root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut catalog = portcullis_runner::devstack::bundle::load_catalog_value(&repo_root().join("catalog/example.yaml")).unwrap();
    let slow = catalog["tools"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == SLOW_TOOL)
        .unwrap_or_else(|| panic!("the example catalog has no {SLOW_TOOL}"));
    slow["execution"]["local"]["command"] = json!(["sh", "-c", "sleep 1; echo slept"]);
    let catalog_path = dir.join("catalog.json");
    std::fs::write(&catalog_path, catalog.to_string()).unwrap();
    (policies, catalog_path)
}

/// Adds `INTRUDER` to every list of strings in `v` that contains `READER`; returns how many.
fn grant_reader_roles_to_intruder(v: &mut Value) -> usize {
    match v {
        Value::Array(items) if items.iter().any(|i| i == READER) => {
            items.push(json!(INTRUDER));
            1
        }
        Value::Array(items) => items.iter_mut().map(grant_reader_roles_to_intruder).sum(),
        Value::Object(map) => map.values_mut().map(grant_reader_roles_to_intruder).sum(),
        _ => 0,
    }
}

/// Waits until `up`'s output (or Envoy's log) has a line containing `needle` after the
/// first `skip` such lines; returns that line.
fn wait_for_line(s: &Stack, needle: &str, skip: usize, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(line) = s.logs().lines().filter(|l| l.contains(needle)).nth(skip) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no {needle:?} line after {limit:?}:\n{}", s.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    /// (start, end) of each slow call, to show some were in flight during the swap.
    slow_spans: Vec<(Instant, Instant)>,
}

/// One client looping on an allowed call until `stop`, recording every outcome.
async fn load_client(s: Arc<Stack>, agent: &'static str, tool: &'static str, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let http = s.http_client(Some(agent));
    let session = match open_session(&http, &s.url()).await {
        Ok(session) => session,
        Err(e) => return tally.lock().unwrap().failures.push(format!("{agent} initialize: {e}")),
    };
    let args = if tool == FAST_TOOL { json!({"text": "one two three"}) } else { json!({}) };
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let started = Instant::now();
        let r = post(&http, &s.url(), Some(&session), &[], &tools_call(id, tool, args.clone())).await;
        let ended = Instant::now();
        let mut t = tally.lock().unwrap();
        match r {
            Ok(r) if r.status == 200 && r.message["result"]["isError"] == false => {
                t.ok += 1;
                if tool == SLOW_TOOL {
                    t.slow_spans.push((started, ended));
                }
            }
            Ok(r) => t.failures.push(format!("{agent} {tool} #{id}: {} {}", r.status, r.text)),
            Err(e) => t.failures.push(format!("{agent} {tool} #{id}: {e}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_change_reaches_the_running_gateway_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, catalog) = copy_sources(dir.path());
    let stack = Arc::new(Stack::start_with(&[
        "--policies",
        policies.to_str().unwrap(),
        "--catalog",
        catalog.to_str().unwrap(),
    ]));
    let s = &*stack;

    // Denied: the intruder has no role.
    let intruder = s.http_client(Some("intruder"));
    let call = tools_call(7, FAST_TOOL, json!({"text": "a b"}));
    let session = open_session(&intruder, &s.url()).await.ok();
    let r = post(&intruder, &s.url(), session.as_deref(), &[], &call).await.unwrap();
    assert_eq!(r.error_code(), Some(-32001), "the intruder must be denied before the change: {}", r.text);

    // A steady load of allowed calls, slow ones among them.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut clients = Vec::new();
    for (agent, tool) in [("reader", FAST_TOOL), ("reader", FAST_TOOL), ("operator", FAST_TOOL), ("reader", SLOW_TOOL), ("reader", SLOW_TOOL), ("operator", SLOW_TOOL)] {
        clients.push(tokio::spawn(load_client(stack.clone(), agent, tool, stop.clone(), tally.clone())));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The change: the intruder gets the reader's roles.
    let data_path = policies.join("data.json");
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(&data_path).unwrap()).unwrap();
    assert!(grant_reader_roles_to_intruder(&mut data) > 0, "no list naming {READER} in data.json: {data}");
    std::fs::write(&data_path, serde_json::to_string_pretty(&data).unwrap()).unwrap();
    let pushed = wait_for_line(s, "portcullis: pushed policy version", 0, Duration::from_secs(30));
    let pushed_at = Instant::now();
    let version = pushed.rsplit(' ').next().unwrap().to_owned();
    wait_for_line(s, &format!("policy version {version} active in Envoy"), 0, Duration::from_secs(60));
    let active_at = Instant::now();
    eprintln!("{pushed}; active {:?} later", active_at - pushed_at);

    // The same call is now allowed. Envoy logs a worker's new filter config a moment before
    // that worker's new streams use it: under a loaded CI machine a request sent right after the
    // last "configured" line has been seen to get the old config, so allow a short grace.
    let session = match session {
        Some(session) => session,
        None => {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match open_session(&intruder, &s.url()).await {
                    Ok(session) => break session,
                    Err(e) if Instant::now() < deadline && (e.to_string().contains("-32001") || e.to_string().contains("no mcp-session-id")) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => panic!("the intruder must be allowed after the change: {e}"),
                }
            }
        }
    };
    eprintln!("intruder allowed {:?} after the change was active", active_at.elapsed());
    let r = post(&intruder, &s.url(), Some(&session), &[], &call).await.unwrap();
    assert_eq!(r.status, 200, "the intruder must be allowed after the change: {}", r.text);
    assert_eq!(r.message["result"]["isError"], false, "{}", r.text);

    // Let the load run across the swap for a while longer, then stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    {
        let t = tally.lock().unwrap();
        let spanning = t.slow_spans.iter().filter(|(start, end)| *start < pushed_at && *end > active_at).count();
        eprintln!("load: {} calls ok, {} failed, {spanning} slow calls in flight across the whole swap", t.ok, t.failures.len());
        assert!(t.failures.is_empty(), "{} of {} calls failed during the reload:\n{}", t.failures.len(), t.ok + t.failures.len(), t.failures.join("\n"));
        assert!(t.ok >= 20, "too little load to prove anything: {} calls", t.ok);
        assert!(spanning > 0, "no slow call was in flight across the swap: {:?}", t.slow_spans.len());
    }

    // An invalid change is refused, and the running policy keeps deciding.
    std::fs::write(policies.join("broken.rego"), "package portcullis.authz\n\ndecision := {\n").unwrap();
    let refused = wait_for_line(s, "portcullis: policy change refused", 0, Duration::from_secs(30));
    assert!(refused.contains(&version), "{refused}");
    let r = post(&intruder, &s.url(), Some(&session), &[], &tools_call(8, FAST_TOOL, json!({"text": "a b"}))).await.unwrap();
    assert_eq!(r.status, 200, "the previous policy must keep deciding: {}", r.text);
    assert_eq!(s.logs().matches("portcullis: pushed policy version").count(), 1, "{}", s.logs());
    assert!(!s.envoy_log().contains("portcullis: refusing to start"), "{}", s.envoy_log());
}
