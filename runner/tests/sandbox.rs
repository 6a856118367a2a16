//! The local namespace backend against the real `portcullis` binary. No mocks, and no
//! skipping: on a host without unprivileged user namespaces every test fails, saying why.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use portcullis_runner::sandbox::local::{Limits, LocalNamespaces};
use portcullis_runner::sandbox::{
    Backend, JobOutput, JobSpec, Phase, PhaseObserver, SandboxError,
};

#[path = "sandbox/cancel.rs"]
mod cancel;
#[path = "sandbox/private_dirs.rs"]
mod private_dirs;
#[path = "sandbox/progress.rs"]
mod progress;

/// A backend whose job dirs go to a fresh dir of this test, so leaks are attributable.
struct Fixture {
    backend: LocalNamespaces,
    temp_root: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let temp_root =
            std::env::temp_dir().join(format!("pc-sandbox-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&temp_root);
        std::fs::create_dir_all(&temp_root).unwrap();
        let backend = LocalNamespaces::new(PathBuf::from(env!("CARGO_BIN_EXE_portcullis")))
            .with_temp_root(&temp_root);
        Fixture { backend, temp_root }
    }

    async fn run(&self, job: JobSpec) -> JobOutput {
        match self.backend.run(job).await {
            Ok(out) => out,
            Err(e) => panic!(
                "sandbox failed (this host must support unprivileged user namespaces): {}",
                chain(&e)
            ),
        }
    }

    async fn sh(&self, script: &str) -> JobOutput {
        let out = self.run(sh(script)).await;
        assert!(!out.timed_out, "job timed out: {out:?}");
        out
    }

    /// No job dir may survive a finished `run`.
    fn assert_no_job_dirs(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.temp_root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "job dirs left behind: {left:?}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.temp_root);
    }
}

fn job(argv: &[&str]) -> JobSpec {
    JobSpec {
        job_id: "test-job-0123456789".into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        stdin: vec![],
        timeout: Duration::from_secs(20),
        max_output_bytes: 1 << 20,
        ..JobSpec::default()
    }
}

fn sh(script: &str) -> JobSpec {
    job(&["sh", "-c", script])
}

fn stdout(out: &JobOutput) -> String {
    assert_eq!(
        out.exit_code,
        Some(0),
        "job failed: {out:?}, stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// Host processes whose command line contains `marker`.
fn host_processes(marker: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-af", marker])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn host_check_passes() {
    let f = Fixture::new("check");
    if let Err(e) = f.backend.check() {
        panic!("LocalNamespaces::check failed: {}", chain(&e));
    }
    f.assert_no_job_dirs();
    // And it fails loudly, naming the cause, when a job cannot be set up.
    match f
        .backend
        .clone()
        .with_ro_bind("/nonexistent/pc-check")
        .check()
    {
        Err(SandboxError::Unsupported { what, .. }) => {
            assert!(what.contains("/nonexistent/pc-check"), "{what}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    f.assert_no_job_dirs();
}

#[tokio::test]
async fn network_is_loopback_only_and_up() {
    let f = Fixture::new("net");
    let out = stdout(
        &f.sh(
            "cat /proc/net/dev; echo ---; ls /sys/class/net; echo ---; cat /sys/class/net/lo/flags",
        )
        .await,
    );
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    // /proc/net/dev: two header lines, then one line per interface.
    let ifaces: Vec<&str> = parts[0]
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{out}");
    assert_eq!(
        parts[1].split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "{out}"
    );
    let flags = u32::from_str_radix(parts[2].trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is not IFF_UP: {out}");

    // With lo up, a connection to a closed local port is refused (with lo down it would be
    // "Network is unreachable"); anything off-box is unreachable.
    let out = f
        .run(job(&[
            "bash",
            "-c",
            "(: </dev/tcp/127.0.0.1/9) 2>&1; (: </dev/tcp/1.1.1.1/80) 2>&1; true",
        ]))
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    let (local, remote) = text.split_once("/dev/tcp/127.0.0.1/9").expect("two errors");
    assert!(
        local.contains("Connection refused") && remote.contains("Connection refused"),
        "{text}"
    );
    assert!(remote.contains("Network is unreachable"), "{text}");
}

#[tokio::test]
async fn proc_shows_only_the_sandbox() {
    let f = Fixture::new("proc");
    let out = stdout(&f.sh("echo $$; ls /proc").await);
    let mut lines = out.lines();
    let shell_pid: u32 = lines.next().unwrap().parse().unwrap();
    assert!(shell_pid <= 2, "shell pid {shell_pid}");
    let pids: BTreeSet<u32> = lines.filter_map(|l| l.parse().ok()).collect();
    assert!(
        !pids.is_empty() && pids.len() <= 3,
        "processes visible: {pids:?}"
    );
    assert!(pids.iter().all(|&p| p <= 5), "processes visible: {pids:?}");
    assert!(pids.contains(&shell_pid));
    let me = std::process::id();
    assert!(
        me <= 5 || !pids.contains(&me),
        "runner pid {me} visible: {pids:?}"
    );
}

#[tokio::test]
async fn hostname_and_identity() {
    let f = Fixture::new("uts");
    let out = stdout(&f.sh("hostname; id -u; id -g").await);
    let lines: Vec<&str> = out.lines().collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(lines[0], "pc-testjob01234");
    assert_ne!(lines[0], host.trim());
    assert_eq!(&lines[1..], ["0", "0"]);
}

#[tokio::test]
async fn tmp_is_private_and_removed() {
    let f = Fixture::new("tmp");
    // Something in the host's temp dir (and our temp root) that must not show inside.
    let host_file = f.temp_root.join("host-secret");
    std::fs::write(&host_file, "x").unwrap();
    let out = stdout(
        &f.sh("ls -A /tmp; echo ---; echo hi > /tmp/marker && cat /tmp/marker; pwd")
            .await,
    );
    assert_eq!(out, "---\nhi\n/tmp\n");
    std::fs::remove_file(&host_file).unwrap();
    f.assert_no_job_dirs();
    // The next job starts empty again.
    let out = stdout(&f.sh("ls -A /tmp").await);
    assert_eq!(out, "");
    f.assert_no_job_dirs();
}

#[tokio::test]
async fn host_filesystem_is_hidden_or_read_only() {
    let f = Fixture::new("fs");
    let out = stdout(
        &f.sh(
            "for p in /usr/x /etc/x /x /dev/x /proc/sys/kernel/x; do touch $p 2>/dev/null && echo wrote $p; done; \
             echo h > /proc/sysrq-trigger 2>/dev/null && echo wrote sysrq; \
             mount -o remount,rw /usr 2>/dev/null && echo remounted; \
             ls -d /root /home /work /var /run /opt 2>/dev/null; \
             echo ok",
        )
        .await,
    );
    assert_eq!(out, "ok\n");
    // Capabilities are gone and cannot come back through exec; no signal is ignored.
    let out = stdout(
        &f.sh(
            "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|SigIgn)' /proc/self/status",
        )
        .await,
    );
    for line in out.lines() {
        let (k, v) = line.split_once(':').unwrap();
        let want = if k == "NoNewPrivs" {
            "1"
        } else {
            "0000000000000000"
        };
        assert_eq!(v.trim(), want, "{k}: {out}");
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_namespace() {
    let f = Fixture::new("timeout");
    let mut j = sh("sleep 101.5 & sleep 101.5");
    j.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let out = f.run(j).await;
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(9), "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(took >= Duration::from_millis(500), "took {took:?}");
    assert_eq!(
        host_processes("sleep 101.5"),
        "",
        "processes survived the timeout"
    );
    f.assert_no_job_dirs();
}

#[tokio::test]
async fn background_processes_die_with_the_job() {
    let f = Fixture::new("bg");
    let out = f
        .sh("sleep 102.5 >/dev/null 2>&1 </dev/null & echo started")
        .await;
    assert_eq!(stdout(&out), "started\n");
    assert!(out.duration < Duration::from_secs(5), "{out:?}");
    assert_eq!(
        host_processes("sleep 102.5"),
        "",
        "a background process outlived the job"
    );
    f.assert_no_job_dirs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_kills_the_job() {
    let f = Fixture::new("drop");
    let run = f.backend.run(sh("sleep 103.5 & sleep 103.5"));
    assert!(tokio::time::timeout(Duration::from_millis(500), run)
        .await
        .is_err());
    // Teardown continues in the background: processes die, the job dir goes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = host_processes("sleep 103.5");
        let dirs = std::fs::read_dir(&f.temp_root).unwrap().count();
        if procs.is_empty() && dirs == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after drop: processes {procs:?}, {dirs} job dirs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The runner (here a copy of this test binary running the helper below) is SIGKILLed
/// mid-job: the job must die anyway, and its orphaned job dir is swept later.
#[test]
fn runner_death_kills_the_job() {
    let f = Fixture::new("death");
    let marker = "sleep 104.5";
    let mut runner = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_runner_that_gets_killed", "--ignored"])
        .env(HELPER_ROOT_ENV, &f.temp_root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the helper's job to start", || {
        !host_processes(marker).is_empty()
    });
    runner.kill().unwrap();
    runner.wait().unwrap();
    wait_for("the job to die with its runner", || {
        host_processes(marker).is_empty()
    });
    let dirs = std::fs::read_dir(&f.temp_root).unwrap().count();
    assert_eq!(dirs, 1, "the dead runner's job dir");
    assert_eq!(f.backend.sweep_stale_job_dirs().unwrap(), 1);
    f.assert_no_job_dirs();
}

const HELPER_ROOT_ENV: &str = "PORTCULLIS_TEST_HELPER_TEMP_ROOT";

#[tokio::test]
#[ignore = "helper process of runner_death_kills_the_job; does nothing on its own"]
async fn helper_runner_that_gets_killed() {
    let Some(root) = std::env::var_os(HELPER_ROOT_ENV) else {
        return;
    };
    let backend = LocalNamespaces::new(PathBuf::from(env!("CARGO_BIN_EXE_portcullis")))
        .with_temp_root(PathBuf::from(root));
    let mut j = sh("sleep 104.5 & sleep 104.5");
    j.timeout = Duration::from_secs(60);
    let _ = backend.run(j).await;
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn output_is_capped_without_blocking_the_job() {
    let f = Fixture::new("cap");
    let mut j = job(&[
        "sh",
        "-c",
        "head -c 10000000 /dev/zero; head -c 10000000 /dev/zero >&2; echo done >&2",
    ]);
    j.max_output_bytes = 4096;
    let out = f.run(j).await;
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(!out.timed_out);
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), 4096);
    assert_eq!(out.stderr.len(), 4096);
    assert!(out.stdout.iter().all(|&b| b == 0));
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let f = Fixture::new("exit");
    let out = f.sh("echo oops >&2; exit 7").await;
    assert_eq!(out.exit_code, Some(7));
    assert_eq!(out.signal, None);
    assert_eq!(out.stderr, b"oops\n");
    assert!(!out.success());
    // The sandbox's own exit-code conventions do not hide a tool's identical codes.
    let out = f.sh("exit 125").await;
    assert_eq!(out.exit_code, Some(125));
}

#[tokio::test]
async fn environment_is_exactly_the_spec() {
    let f = Fixture::new("env");
    let mut j = job(&["env"]);
    j.env = vec![
        ("FOO".into(), "bar baz".into()),
        ("TMPDIR".into(), "/tmp/sub".into()),
    ];
    let out = stdout(&f.run(j).await);
    let vars: BTreeSet<&str> = out.lines().collect();
    let want: BTreeSet<&str> = [
        "FOO=bar baz",
        "HOME=/tmp",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "PORTCULLIS_PROGRESS_FD=3",
        "TMPDIR=/tmp/sub",
    ]
    .into();
    // Nothing of the runner's environment (CARGO_*, RUST_*, HOME, ...) leaks in.
    assert_eq!(vars, want);
}

#[tokio::test]
async fn stdin_is_delivered() {
    let f = Fixture::new("stdin");
    let mut j = job(&["cat"]);
    j.stdin = b"hello\nworld\n".to_vec();
    assert_eq!(stdout(&f.run(j).await), "hello\nworld\n");
    // More than a pipe buffer, read fully ...
    let mut j = job(&["wc", "-c"]);
    j.stdin = vec![b'x'; 3 << 20];
    assert_eq!(stdout(&f.run(j).await).trim(), (3 << 20).to_string());
    // ... and not read at all: must not hang.
    let mut j = job(&["true"]);
    j.stdin = vec![b'x'; 3 << 20];
    assert_eq!(f.run(j).await.exit_code, Some(0));
}

#[tokio::test]
async fn limits_apply() {
    let f = Fixture::new("limits");
    let out = stdout(&f.sh("ulimit -n; ulimit -c; ulimit -f").await);
    // dash reports RLIMIT_FSIZE in 512-byte blocks.
    let d = Limits::default();
    assert_eq!(
        out,
        format!(
            "{}\n0\n{}\n",
            d.open_files.unwrap(),
            d.file_size.unwrap() / 512
        ),
    );
}

/// Tries to start 20 background sleeps under RLIMIT_NPROC=10; returns how many started.
/// (dash exits at the first failed fork, after announcing the attempt.)
async fn forks_under_nproc_10(backend: &LocalNamespaces) -> usize {
    let backend = backend.clone().with_limits(Limits {
        processes: Some(10),
        ..Limits::default()
    });
    let out = backend
        .run(sh(
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
                 echo $i; sleep 5 & done",
        ))
        .await
        .unwrap();
    let attempts = String::from_utf8_lossy(&out.stdout).lines().count();
    match out.exit_code {
        Some(0) => attempts,
        _ => {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("fork"),
                "{out:?}"
            );
            attempts - 1
        }
    }
}

#[tokio::test]
async fn fork_bombs_stop_at_nproc_unless_host_root() {
    let f = Fixture::new("nproc");
    let started = forks_under_nproc_10(&f.backend).await;
    if euid() == 0 {
        // The kernel exempts host root's processes from RLIMIT_NPROC (see `with_host_user`).
        assert_eq!(started, 20);
    } else {
        // init and the shell count (they are in the job's user namespace): 2 + 8 = 10.
        // Other processes of the same host uid do not.
        assert_eq!(started, 8, "RLIMIT_NPROC not enforced per job");
    }
}

/// As root, `with_host_user` runs jobs as an unprivileged host uid; a non-root runner cannot
/// switch to another uid, and must fail loudly rather than run the job as itself.
#[tokio::test]
async fn jobs_can_run_as_a_separate_host_user() {
    let f = Fixture::new("hostuser");
    if euid() != 0 {
        let r = f
            .backend
            .clone()
            .with_host_user(0, 0)
            .run(job(&["true"]))
            .await;
        assert!(matches!(r, Err(SandboxError::Create { .. })), "{r:?}");
        f.assert_no_job_dirs();
        return;
    }
    let backend = f.backend.clone().with_host_user(65534, 65534);
    let out = backend
        .run(sh(
            "id -u; echo x > /tmp/f && echo wrote; cat /proc/self/uid_map | tr -s ' '",
        ))
        .await
        .unwrap();
    assert_eq!(stdout(&out), "0\nwrote\n 0 65534 1\n");
    // init and the shell count too: 2 + 8 = 10.
    assert_eq!(
        forks_under_nproc_10(&backend).await,
        8,
        "RLIMIT_NPROC not enforced per job"
    );
    f.assert_no_job_dirs();
    backend.check().unwrap();
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[tokio::test]
async fn missing_command_is_an_exec_error() {
    let f = Fixture::new("enoent");
    match f.backend.run(job(&["no-such-command-xyz"])).await {
        Err(SandboxError::Exec { program, errno, .. }) => {
            assert_eq!(program, "no-such-command-xyz");
            assert_eq!(errno, Some(nix::errno::Errno::ENOENT as i32));
        }
        other => panic!("expected an exec error, got {other:?}"),
    }
    f.assert_no_job_dirs();
}

/// Records what `run_observed` reports: (phase, start, end, failed).
#[derive(Default)]
struct Phases(std::sync::Mutex<Vec<(Phase, std::time::SystemTime, std::time::SystemTime, bool)>>);

impl PhaseObserver for Phases {
    fn phase(
        &self,
        phase: Phase,
        start: std::time::SystemTime,
        end: std::time::SystemTime,
        error: Option<&SandboxError>,
    ) {
        self.0.lock().unwrap().push((phase, start, end, error.is_some()));
    }
}

#[tokio::test]
async fn phases_are_reported_in_order_and_a_failed_exec_ends_the_create_phase() {
    let f = Fixture::new("phases");
    let phases = Phases::default();
    let out = f.backend.run_observed(sh("echo hi"), &phases).await.unwrap();
    assert_eq!(stdout(&out), "hi\n");
    let seen = phases.0.lock().unwrap().clone();
    let names: Vec<(Phase, bool)> = seen.iter().map(|p| (p.0, p.3)).collect();
    assert_eq!(names, [(Phase::Create, false), (Phase::Run, false), (Phase::Destroy, false)]);
    for pair in seen.windows(2) {
        assert!(pair[0].1 <= pair[0].2 && pair[0].2 <= pair[1].1, "{seen:?}");
    }

    let phases = Phases::default();
    let failed = f.backend.run_observed(job(&["no-such-command-xyz"]), &phases).await;
    assert!(matches!(failed, Err(SandboxError::Exec { .. })), "{failed:?}");
    let names: Vec<(Phase, bool)> = phases.0.lock().unwrap().iter().map(|p| (p.0, p.3)).collect();
    assert_eq!(names, [(Phase::Create, true), (Phase::Destroy, false)]);
    f.assert_no_job_dirs();
}

#[tokio::test]
async fn setup_failure_is_a_setup_error() {
    let f = Fixture::new("setup");
    let backend = f
        .backend
        .clone()
        .with_ro_bind("/nonexistent/portcullis-test");
    match backend.run(job(&["true"])).await {
        Err(SandboxError::Setup { message }) => {
            assert!(
                message.contains("/nonexistent/portcullis-test"),
                "{message}"
            )
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    f.assert_no_job_dirs();
}

#[tokio::test]
async fn invalid_specs_are_rejected_before_running() {
    let f = Fixture::new("invalid");
    for bad in [job(&[]), {
        let mut j = job(&["true"]);
        j.env = vec![("A=B".into(), "c".into())];
        j
    }] {
        assert!(matches!(
            f.backend.run(bad).await,
            Err(SandboxError::InvalidJob(_))
        ));
    }
    f.assert_no_job_dirs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_jobs_are_isolated() {
    let f = Fixture::new("concurrent");
    // All started before any is awaited, so they overlap (each sleeps 0.2 s).
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let b = f.backend.clone();
            let mut j = sh("echo $(hostname) > /tmp/id; sleep 0.2; ls /tmp; cat /tmp/id");
            j.job_id = format!("job{i}");
            tokio::spawn(async move { b.run(j).await })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.await.unwrap().unwrap();
        assert_eq!(stdout(&out), format!("id\npc-job{i}\n"));
    }
    f.assert_no_job_dirs();
}

/// Not a check: start→exit→teardown of `true` through the sandbox vs a bare spawn, median
/// wall time of 50 sequential runs each, plus the CPU time the child processes used (less
/// sensitive to a busy machine). `cargo test [--release] -p portcullis-runner --test sandbox
/// -- --ignored --nocapture bench`.
#[tokio::test]
#[ignore = "benchmark; run explicitly"]
async fn bench_trivial_job() {
    use nix::sys::resource::{getrusage, UsageWho};
    const N: u32 = 50;
    let f = Fixture::new("bench");
    let children_cpu = || {
        let u = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
        let d = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        d(u.user_time()) + d(u.system_time())
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut sandboxed = Vec::new();
    let cpu = children_cpu();
    for _ in 0..N {
        let t = Instant::now();
        let out = f.run(job(&["true"])).await;
        assert_eq!(out.exit_code, Some(0));
        sandboxed.push(t.elapsed());
    }
    let sandboxed_cpu = (children_cpu() - cpu) / N;
    let mut bare = Vec::new();
    let cpu = children_cpu();
    for _ in 0..N {
        let t = Instant::now();
        let out = tokio::process::Command::new("true")
            .stdin(std::process::Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        bare.push(t.elapsed());
    }
    let bare_cpu = (children_cpu() - cpu) / N;
    println!(
        "sandboxed `true`: median {:?}, child CPU {sandboxed_cpu:?}/job",
        median(sandboxed)
    );
    println!(
        "bare spawn `true`: median {:?}, child CPU {bare_cpu:?}/job",
        median(bare)
    );
}
