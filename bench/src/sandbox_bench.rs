//! The local sandbox's cost: start → exit → teardown of a trivial job in fresh namespaces
//! (`LocalNamespaces`, configured as the runner configures it, + `Backend::run`), against a bare `tokio::process::Command` running the
//! same argv with the same environment and stdin. Runs alternate (sandbox, bare, sandbox, ...)
//! so that machine noise hits both sides alike.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use portcullis_runner::devstack::up;
use portcullis_runner::sandbox::{Backend, JobSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats::Summary;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SandboxResult {
    pub name: String,
    pub argv: Vec<String>,
    pub sandbox_us: Summary,
    pub bare_us: Summary,
}

/// Runs `job` `n` times in the sandbox and `n` times bare (after a short warm-up of both).
/// Every run must succeed with exit status 0 (and, when given, print `expect_stdout`).
pub async fn measure(exe: &Path, temp_root: &Path, name: &str, job: &JobSpec, n: usize, expect_stdout: Option<&str>, limit: Duration) -> Result<SandboxResult> {
    std::fs::create_dir_all(temp_root)?;
    // The backend exactly as `portcullis serve` builds it (as root: jobs as a dedicated uid).
    let backend = up::local_backend(exe.to_owned()).with_temp_root(temp_root);
    let deadline = Instant::now() + limit;
    let (mut sandboxed, mut bare) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..(n + 5) {
        ensure!(Instant::now() < deadline, "sandbox benchmark for {name} exceeded {limit:?} after {i} rounds");
        let t0 = Instant::now();
        let out = backend.run(job.clone()).await.with_context(|| format!("sandboxed {name} (this host must allow unprivileged user namespaces)"))?;
        let sandbox_ns = t0.elapsed().as_nanos() as u64;
        ensure!(out.success(), "sandboxed {name} failed: {out:?}");
        check_stdout(name, &out.stdout, expect_stdout)?;

        let t0 = Instant::now();
        let stdout = bare_run(job).await?;
        let bare_ns = t0.elapsed().as_nanos() as u64;
        check_stdout(name, &stdout, expect_stdout)?;
        if i >= 5 {
            sandboxed.push(sandbox_ns);
            bare.push(bare_ns);
        }
    }
    let leftovers = std::fs::read_dir(temp_root)?.count();
    ensure!(leftovers == 0, "{leftovers} sandbox job dirs left in {}", temp_root.display());
    Ok(SandboxResult {
        name: name.to_owned(),
        argv: job.command.clone(),
        sandbox_us: Summary::from_nanos(&mut sandboxed),
        bare_us: Summary::from_nanos(&mut bare),
    })
}

fn check_stdout(name: &str, stdout: &[u8], expect: Option<&str>) -> Result<()> {
    if let Some(want) = expect {
        let got = String::from_utf8_lossy(stdout);
        ensure!(got.trim() == want, "{name} printed {got:?}, want {want:?}");
    }
    Ok(())
}

/// The same command without any isolation: spawn, feed stdin, drain both pipes, reap.
async fn bare_run(job: &JobSpec) -> Result<Vec<u8>> {
    let mut cmd = tokio::process::Command::new(&job.command[0]);
    cmd.args(&job.command[1..])
        .env_clear()
        .envs([("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", "/tmp"), ("TMPDIR", "/tmp")])
        .envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {:?}", job.command))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let input = job.stdin.clone();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let write = async move {
        let _ = stdin.write_all(&input).await;
    };
    let (_, o, e, status) = tokio::join!(write, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
    o?;
    e?;
    let status = status?;
    ensure!(status.success(), "bare {:?} failed: {status}; stderr {}", job.command, String::from_utf8_lossy(&err));
    Ok(out)
}
