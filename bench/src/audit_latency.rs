//! `portcullis-bench audit-latency`: how long after a gateway decision its record is readable
//! in the audit log.
//!
//! Starts `portcullis up` (real Envoy with the filter, the runner, the audit ingester) in a
//! throwaway state dir, sends `n` requests through Envoy one at a time with the `reader`
//! certificate (alternately an allowed `ping` and a denied `tools/call`), spaced 20-45 ms
//! apart so they fall at every point of Envoy's 250 ms access-log flush cycle, and notes when
//! each response arrived. A thread reads `<state-dir>/audit/audit.jsonl` every millisecond
//! and notes when each decision id's `gateway.decision` record appears. The latency is the
//! difference: Envoy's log flush + the ingester's 100 ms poll + one write and `fdatasync`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::http::{connect_tls, tls_config, Conn};
use crate::procs::{free_port, Proc};
use crate::stats::Summary;

/// `portcullis up` in `state` (stopped by SIGTERM when the returned process is dropped).
fn start_up(root: &Path, state: &Path) -> Result<(Proc, std::net::SocketAddr)> {
    let bin = std::env::var_os("PORTCULLIS_BIN").map(PathBuf::from).unwrap_or_else(|| root.join("target/release/portcullis"));
    ensure!(bin.is_file(), "{} is missing: run `make build`", bin.display());
    let (listen, runner) = (free_port()?, free_port()?);
    let mut cmd = Command::new(&bin);
    cmd.current_dir(root)
        .args(["up", "--root"])
        .arg(root)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", &listen.to_string(), "--runner-listen", &runner.to_string()]);
    let mut up = Proc::spawn("portcullis up", cmd, &state.with_extension("log"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !up.log_text().contains("portcullis ready") {
        up.check_alive()?;
        ensure!(Instant::now() < deadline, "portcullis up did not become ready:\n{}", up.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((up, listen))
}

/// Notes the first moment each `gateway.decision` record's decision id is readable.
fn watch(log: PathBuf, seen: Arc<Mutex<HashMap<String, Instant>>>, stop: Arc<AtomicBool>) {
    let mut offset = 0;
    let mut pending = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut f) = std::fs::File::open(&log) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let mut buf = Vec::new();
                if let Ok(n) = f.read_to_end(&mut buf) {
                    let now = Instant::now();
                    offset += n as u64;
                    pending.extend_from_slice(&buf);
                    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let Ok(record) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
                        if record["event"] == "gateway.decision" {
                            if let Some(id) = record["decision_id"].as_str() {
                                seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(id.to_owned()).or_insert(now);
                            }
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub async fn run(root: &Path, n: usize) -> Result<()> {
    let state = std::env::temp_dir().join(format!("portcullis-audit-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let result = measure(root, &state, n).await;
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(state.with_extension("log"));
    result
}

async fn measure(root: &Path, state: &Path, n: usize) -> Result<()> {
    let (up, listen) = start_up(root, state)?;
    let certs = state.join("certs");
    let read = |p: &str| std::fs::read(certs.join(p)).with_context(|| format!("reading {p}"));
    let tls = tls_config(&read("ca.pem")?, &read("agents/reader.pem")?, &read("agents/reader-key.pem")?)?;
    let mut conn = Conn::new(connect_tls(listen, &tls).await?, listen);

    let seen = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (log, seen, stop) = (state.join("audit/audit.jsonl"), seen.clone(), stop.clone());
        std::thread::spawn(move || watch(log, seen, stop))
    };

    let headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    let mut answered = Vec::with_capacity(n);
    let mut spacing = 0u64;
    for i in 0..n {
        let body = if i % 2 == 0 {
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#)
        } else {
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"apply_config","arguments":{{"name":"x","content":"y"}}}}}}"#)
        };
        if !conn.is_open() {
            conn.reopen(connect_tls(listen, &tls).await?);
        }
        let r = conn.request("POST", "/mcp", &headers, body.as_bytes()).await?;
        let at = Instant::now();
        let id = r.header("x-portcullis-decision-id").with_context(|| format!("no decision id in a {} response: {}", r.status, r.text()))?.to_owned();
        answered.push((id, at));
        // 20-45 ms, in a fixed pseudo-random order.
        spacing = (spacing * 7 + 11) % 26;
        tokio::time::sleep(Duration::from_millis(20 + spacing)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let all_seen = |seen: &Mutex<HashMap<String, Instant>>| {
        let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        answered.iter().all(|(id, _)| seen.contains_key(id))
    };
    while !all_seen(&seen) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    drop(up);

    let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let missing = answered.iter().filter(|(id, _)| !seen.contains_key(id)).count();
    if missing > 0 {
        bail!("{missing} of {n} decisions never reached the audit log within 10 s");
    }
    let mut nanos: Vec<u64> = answered.iter().map(|(id, at)| seen[id].saturating_duration_since(*at).as_nanos() as u64).collect();
    let early = answered.iter().filter(|(id, at)| seen[id] < *at).count();
    let s = Summary::from_nanos(&mut nanos);
    println!("audit: event-to-readable latency of gateway decisions ({} requests through Envoy, one at a time)", s.count);
    let ms = |us: f64| format!("{:.1} ms", us / 1000.0);
    println!("  p50 {}  p90 {}  p99 {}  max {}  mean {}", ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), ms(s.mean));
    if early > 0 {
        println!("  ({early} records were readable before the client had read the response; counted as 0)");
    }
    Ok(())
}
