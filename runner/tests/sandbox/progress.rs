//! Progress lines from inside the sandbox: fd 3, named in PORTCULLIS_PROGRESS_FD, one line per
//! message to the job's sink while it runs, within the backend's bounds.

use std::collections::BTreeSet;
use std::time::Duration;

use portcullis_runner::sandbox::{Backend, JobSpec, ProgressLimits, ProgressStats};
use tokio::sync::mpsc;

use super::{job, sh, stdout, Fixture};

/// The next line from the sink; a job that never sends it fails the test instead of hanging it.
async fn next_line(rx: &mut mpsc::Receiver<String>) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
        Ok(line) => line,
        Err(_) => panic!("no progress line within 20s"),
    }
}

/// The job cannot finish before the test has seen its first line: it waits for a file that
/// the test creates in the job's /tmp only after that line arrived. So the line came while
/// the job was running, with no timing involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_arrive_while_the_job_runs() {
    let f = Fixture::new("progress-live");
    let (tx, mut rx) = mpsc::channel(16);
    let mut job: JobSpec = sh(r#"
        echo "step 1: waiting for the go" >&"$PORTCULLIS_PROGRESS_FD"
        while [ ! -e /tmp/go ]; do sleep 0.05; done
        echo "step 2: going" >&3
        echo finished
    "#);
    job.progress = Some(tx);
    let backend = f.backend.clone();
    let run = tokio::spawn(async move { backend.run(job).await });

    assert_eq!(
        next_line(&mut rx).await.as_deref(),
        Some("step 1: waiting for the go")
    );
    assert!(
        !run.is_finished(),
        "the job cannot have ended before the go"
    );
    let dirs: Vec<_> = std::fs::read_dir(&f.temp_root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "one job dir: {dirs:?}");
    std::fs::write(dirs[0].join("tmp/go"), b"").unwrap();

    assert_eq!(next_line(&mut rx).await.as_deref(), Some("step 2: going"));
    let out = run.await.unwrap().expect("the job runs");
    assert_eq!(stdout(&out), "finished\n");
    assert_eq!(
        next_line(&mut rx).await,
        None,
        "the sink closes with the job"
    );
    assert_eq!(
        out.progress,
        ProgressStats {
            lines: 2,
            delivered: 2,
            ..ProgressStats::default()
        }
    );
    f.assert_no_job_dirs();
}

/// A flood of long lines into a sink nobody reads: the job still finishes at once, at most
/// the sink's capacity arrives, each line cut to the limit, and every line is accounted for.
#[tokio::test]
async fn progress_is_bounded_and_never_blocks_the_job() {
    let mut f = Fixture::new("progress-bounds");
    let limits = ProgressLimits {
        max_line_bytes: 64,
        max_messages: 3,
        per_second: 1000,
        burst: 1000,
    };
    f.backend = f.backend.clone().with_progress_limits(limits);
    let (tx, mut rx) = mpsc::channel(2);
    // 20 MB in 2000 lines of 10000 bytes, then a last short one.
    let mut job = sh(r#"
        line=$(head -c 10000 /dev/zero | tr '\0' x)
        yes "$line" | head -n 2000 >&3
        echo "the end" >&3
        echo done
    "#);
    job.progress = Some(tx);
    let out = f.run(job).await;
    assert_eq!(stdout(&out), "done\n");
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    assert!(!lines.is_empty() && lines.len() <= 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.len() <= 64), "{lines:?}");
    let p = out.progress;
    assert_eq!(p.lines, 2001, "{p:?}");
    assert_eq!(p.truncated, 2000, "{p:?}");
    assert_eq!(p.delivered, lines.len() as u64, "{p:?}");
    assert!(p.delivered <= 3, "{p:?}");
    assert_eq!(p.delivered + p.coalesced + p.dropped, p.lines, "{p:?}");
    f.assert_no_job_dirs();
}

/// Without a sink the job has the same channel and is drained all the same; fd 3 is the
/// write end of a pipe and the job holds no other descriptor of the runner's.
#[tokio::test]
async fn the_progress_fd_is_always_there_and_write_only() {
    let f = Fixture::new("progress-fd");
    let out = f
        .sh(r#"
            echo "fd=$PORTCULLIS_PROGRESS_FD"
            head -c 20000000 /dev/zero >&3 && echo "wrote 20 MB"
            if cat <&3 >/dev/null 2>&1; then echo readable; else echo "not readable"; fi
        "#)
        .await;
    assert_eq!(stdout(&out), "fd=3\nwrote 20 MB\nnot readable\n");
    assert_eq!(out.progress.delivered, 0);
    // What the job inherited, seen by a first process that opens nothing but its listing.
    let listing = stdout(&f.run(job(&["ls", "-l", "/proc/self/fd"])).await);
    let fds: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter(|(_, target)| !target.starts_with("/proc/"))
        .filter_map(|(name, _)| name.split_whitespace().next_back())
        .collect();
    assert_eq!(fds, BTreeSet::from(["0", "1", "2", "3"]), "{listing}");
    assert_eq!(out.progress.delivered, 0);
    f.assert_no_job_dirs();
}
