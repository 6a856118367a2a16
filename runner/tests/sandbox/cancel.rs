//! Cancellation (`Backend::execute` with a token that fires): the job is killed with everything
//! it started, and its sandbox (job dir, namespaces) is gone before `execute` returns.

use std::time::{Duration, Instant};

use portcullis_runner::sandbox::{Backend, CancellationToken, NoPhases};
use tokio::sync::mpsc;

use super::{host_processes, sh, Fixture};

/// Every namespace link (`pid:[4026532...]`) that some host process holds, as a process's
/// namespace or as an open descriptor. A namespace in none of them has no process left in it
/// and nothing keeping it open.
fn namespaces_in_use() -> String {
    let mut links = String::new();
    for proc in std::fs::read_dir("/proc").unwrap().flatten() {
        if !proc.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for sub in ["ns", "fd"] {
            // Processes come and go while we look; a vanished one holds nothing.
            let Ok(entries) = std::fs::read_dir(proc.path().join(sub)) else { continue };
            for entry in entries.flatten() {
                if let Ok(target) = std::fs::read_link(entry.path()) {
                    links.push_str(&target.to_string_lossy());
                    links.push('\n');
                }
            }
        }
    }
    links
}

/// A job with two background processes (one in a child shell) reports its namespaces on fd 3
/// and waits; the test cancels it. `execute` returns promptly, marked cancelled, and at that
/// moment none of its processes, its job dir or its namespaces exist any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_is_killed_and_its_sandbox_is_gone() {
    let f = Fixture::new("cancel");
    let (tx, mut rx) = mpsc::channel(4);
    let mut job = sh(r#"
        sleep 105.1 &
        sh -c 'sleep 105.2; echo never' &
        cd /proc/self/ns
        echo "$(readlink pid) $(readlink user) $(readlink mnt) $(readlink net) $(readlink ipc) $(readlink uts)" >&3
        wait
        echo "not cancelled"
    "#);
    job.progress = Some(tx);
    job.timeout = Duration::from_secs(60);
    let cancel = CancellationToken::new();
    let backend = f.backend.clone();
    let token = cancel.clone();
    let run = tokio::spawn(async move { backend.execute(job, &NoPhases, &token).await });

    let namespaces = match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
        Ok(Some(line)) => line,
        other => panic!("no namespace line from the job: {other:?}"),
    };
    let namespaces: Vec<&str> = namespaces.split(' ').collect();
    assert_eq!(namespaces.len(), 6, "{namespaces:?}");
    assert!(namespaces.iter().all(|ns| ns.ends_with(']')), "{namespaces:?}");
    // readlink inside the job sees what the host sees: the links name the job's namespaces.
    let in_use = namespaces_in_use();
    for ns in &namespaces {
        assert!(in_use.contains(ns), "{ns} not found on the host while the job runs");
    }
    assert!(!host_processes("sleep 105.1").is_empty(), "the job's background process is not running");
    assert!(!host_processes("sleep 105.2").is_empty(), "the child shell's process is not running");
    assert_eq!(std::fs::read_dir(&f.temp_root).unwrap().count(), 1, "one job dir while it runs");

    let cancelled_at = Instant::now();
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("execute returns after a cancel")
        .unwrap()
        .expect("a cancelled job is not a sandbox error");
    let took = cancelled_at.elapsed();

    // Checked at once, with no waiting: execute returns only when all of it is gone.
    assert_eq!(host_processes("sleep 105.1"), "", "a process of the cancelled job survived");
    assert_eq!(host_processes("sleep 105.2"), "", "a process of the cancelled job survived");
    f.assert_no_job_dirs();
    let in_use = namespaces_in_use();
    for ns in &namespaces {
        assert!(!in_use.contains(ns), "{ns} of the cancelled job is still held by a host process");
    }
    assert!(out.cancelled, "{out:?}");
    assert!(!out.timed_out && !out.success(), "{out:?}");
    assert_eq!(out.signal, Some(libc::SIGKILL), "the job was killed: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not cancelled"), "{out:?}");
    assert!(took < Duration::from_secs(5), "cancelling took {took:?}");
    assert_eq!(rx.recv().await, None, "the progress sink closes with the job");
}

/// A token that fired before `execute` (the call was cancelled while it waited): nothing is
/// created, nothing runs.
#[tokio::test]
async fn a_job_cancelled_before_it_starts_never_runs() {
    let f = Fixture::new("cancel-early");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = f
        .backend
        .execute(sh("sleep 105.3"), &NoPhases, &cancel)
        .await
        .expect("a cancelled job is not a sandbox error");
    assert!(out.cancelled, "{out:?}");
    assert_eq!((out.exit_code, out.signal, out.duration), (None, None, Duration::ZERO), "{out:?}");
    assert_eq!(host_processes("sleep 105.3"), "");
    f.assert_no_job_dirs();
}
