//! The local backend: every job in fresh Linux namespaces (user, pid, mount, net, ipc, uts),
//! unprivileged, with nothing but the Rust standard library, `nix` and `libc`.
//!
//! How a job runs (runner side here and in `spawn.rs`/`jobdir.rs`, sandbox side in `init.rs`
//! and `rootfs.rs` under `local/`):
//!
//! 1. The runner creates a private job dir (`$TMPDIR/portcullis-job-*`, mode 0700) holding
//!    `tmp/` (becomes the job's `/tmp`) and `root/` (mount point of the job's new root).
//! 2. It spawns its own binary as `portcullis __sandbox-init`. Between fork and exec a
//!    `pre_exec` hook enters the job dir, unshares all six namespaces, writes the single-line
//!    uid/gid maps (job uid 0 = the runner's uid, or `with_host_user`'s) and executes the
//!    binary. Job dir and binary are reached through descriptors the runner opened, so this
//!    works wherever the binary lives (see `spawn.rs`). The job spec goes through a memfd and
//!    setup errors come back through a status pipe, never through argv or the runner's
//!    environment.
//! 3. `init` (in the new namespaces, but not yet in the new pid namespace, which only applies
//!    to children) forks PID 1 of the new pid namespace. PID 1 builds a minimal read-only root
//!    (`/usr`, `/etc`, a few devices, its own `/proc`, `/tmp` = the job dir), pivots into it,
//!    brings `lo` up, sets the hostname and rlimits, drops every capability and execs the
//!    command.
//! 4. `init` waits for PID 1. When PID 1 exits the kernel kills everything else in the pid
//!    namespace, and `waitpid` returns only once that is done, so "init exited" means "the
//!    job is gone". On timeout or cancellation the runner closes a lifeline pipe; init then
//!    SIGKILLs PID 1 and waits the same way. If init itself dies, PR_SET_PDEATHSIG kills
//!    PID 1.
//! 5. The runner drains stdout/stderr to EOF (discarding past the cap), and the job's progress
//!    pipe (its fd 3, see [`super::progress`]) line by line while it runs, reaps init, removes
//!    the job dir and only then returns.
//!
//! What the job can still see of the host: read-only `/usr` and `/etc` (plus the symlinks or
//! dirs `/bin`, `/sbin`, `/lib*`, and any `with_ro_bind` paths), `/dev/{null,zero,full,
//! random,urandom,tty}`, and a read-only sysfs. Writable: its `/tmp` and a small `/dev/shm`.
//! Nothing else of the host file system, no host processes, no network but its own loopback,
//! no host abstract unix sockets, no capabilities.
//!
//! Not covered here: memory and CPU beyond per-process rlimits (needs cgroups), the total size
//! of `/tmp` (it is on the host's disk), and syscall filtering (seccomp). When the runner runs
//! as root, use `with_host_user`: see there why.

use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::progress::{self, ProgressLimits};
use super::{validate, Backend, CancellationToken, JobOutput, JobSpec, Phase, PhaseObserver, SandboxError};
use jobdir::JobDir;
use protocol::{read_status_blocking, StatusMsg, EXIT_SETUP};
use spawn::{pidfd_open, Prepared};

mod init;
mod jobdir;
mod protocol;
mod rootfs;
mod spawn;

pub use init::init_main;

/// How long init gets to kill and reap the namespace after the lifeline closes before the
/// runner SIGKILLs init itself (PDEATHSIG then still takes the namespace down).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Per-process resource limits applied to the job (soft = hard). `None` leaves the runner's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// RLIMIT_AS, bytes of virtual memory per process. Runtimes that reserve large address
    /// ranges (JVM, V8) need several GiB.
    pub address_space: Option<u64>,
    /// RLIMIT_FSIZE, the largest file a job may write (SIGXFSZ beyond). Note that this does
    /// not bound the total the job writes to its /tmp.
    pub file_size: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_NPROC. Since Linux 5.14 this counts per user namespace, and every job has its
    /// own, so it bounds the job's processes (fork bombs; init counts as one) without
    /// counting the runner's. Not enforced when the job's host uid is root: see
    /// [`LocalNamespaces::with_host_user`].
    pub processes: Option<u64>,
    /// Size of the job's `/dev/shm` tmpfs.
    pub shm_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            address_space: Some(8 << 30),
            file_size: Some(1 << 30),
            open_files: Some(1024),
            processes: Some(512),
            shm_bytes: 64 << 20,
        }
    }
}

/// The local Linux-namespace backend. Cheap to clone; holds configuration only.
#[derive(Debug, Clone)]
pub struct LocalNamespaces {
    exe: PathBuf,
    limits: Limits,
    ro_binds: Vec<PathBuf>,
    temp_root: PathBuf,
    host_user: Option<(u32, u32)>,
    progress: ProgressLimits,
}

impl LocalNamespaces {
    /// `exe` is the portcullis binary, re-executed as the sandbox's init with the hidden
    /// `__sandbox-init` subcommand. Prefer `/proc/self/exe` (resolved in the forked child, so
    /// always the running binary even after an upgrade replaced the file on disk) over
    /// `std::env::current_exe()` (a path, which could then be a different version).
    pub fn new(exe: PathBuf) -> Self {
        LocalNamespaces {
            exe,
            limits: Limits::default(),
            ro_binds: Vec::new(),
            temp_root: std::env::temp_dir(),
            host_user: None,
            progress: ProgressLimits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Also expose this absolute host path read-only at the same place inside (e.g. a
    /// virtualenv or `/opt/tool`). Paths that do not exist make every job fail setup, and so
    /// do paths the job's host uid cannot reach: the bind is made as that uid, so that a bind
    /// never exposes more than the job could read on the host anyway.
    pub fn with_ro_bind(mut self, path: impl Into<PathBuf>) -> Self {
        self.ro_binds.push(path.into());
        self
    }

    /// Bounds on each job's progress lines (see [`super::progress`]).
    pub fn with_progress_limits(mut self, limits: ProgressLimits) -> Self {
        self.progress = limits;
        self
    }

    /// Where job dirs are created (default `std::env::temp_dir()`).
    pub fn with_temp_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_root = dir.into();
        self
    }

    /// Run jobs as this host uid/gid (still uid 0 inside) instead of the runner's own.
    /// Needs a root runner. Recommended whenever the runner runs as root: otherwise the job's
    /// uid *is* host root (without capabilities), which owns every root-owned file it can see
    /// (read-only /etc included) and is exempt from RLIMIT_NPROC. Use a uid no other process
    /// runs as: a host process with that uid would own the jobs' user namespaces.
    pub fn with_host_user(mut self, uid: u32, gid: u32) -> Self {
        self.host_user = Some((uid, gid));
        self
    }

    /// Removes job dirs left in the temp root by runners that died mid-job (their jobs died
    /// with them: see the lifeline). Call once at startup. Returns how many were removed.
    pub fn sweep_stale_job_dirs(&self) -> Result<usize, SandboxError> {
        jobdir::sweep_stale(&self.temp_root).map_err(|source| SandboxError::Io {
            context: format!("listing {}", self.temp_root.display()),
            source,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs `true` in a full sandbox, synchronously (usable with or without a tokio runtime),
    /// and explains what is missing if that fails.
    pub fn check(&self) -> Result<(), SandboxError> {
        let this = self.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // A thread, so that a wedged probe (it waits without a deadline) cannot hang the
        // caller; it would be leaked, but startup fails loudly.
        std::thread::spawn(move || {
            let _ = tx.send(this.probe());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(r) => r,
            Err(_) => Err(SandboxError::Unsupported {
                what: "a trivial sandboxed job did not finish within 20s".into(),
                source: None,
            }),
        }
    }

    fn probe(&self) -> Result<(), SandboxError> {
        let job = JobSpec {
            job_id: "probe".into(),
            command: vec!["true".into()],
            env: vec![],
            stdin: vec![],
            timeout: Duration::from_secs(10),
            max_output_bytes: 64 << 10,
            progress: None,
            ..JobSpec::default()
        };
        let unsupported = |what: String, source: Option<io::Error>| SandboxError::Unsupported {
            what: format!("{what}{}", host_hints()),
            source,
        };
        let jobdir = JobDir::create(&self.temp_root)?;
        let prep = self.prepare(&job, &jobdir.path)?;
        let Prepared {
            mut cmd,
            status_r,
            child_fds,
            lifeline_w,
            progress_r: _,
        } = prep;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = cmd.spawn();
        drop(child_fds);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let msg = read_status_blocking(status_r);
                return Err(unsupported(
                    format!("cannot start a sandbox: {}", msg.describe("spawn failed")),
                    Some(e),
                ));
            }
        };
        // EOF on the status pipe: the command was exec'd or setup failed.
        let msg = read_status_blocking(status_r);
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let status = child
            .wait()
            .map_err(|e| io_err("waiting for the probe", e))?;
        drop(lifeline_w);
        jobdir.remove()?;
        if let Some(e) = msg.to_error("true") {
            return Err(unsupported(format!("probe job failed: {e}"), None));
        }
        if !status.success() {
            return Err(unsupported(
                format!(
                    "probe job `true` ended with {status}; stderr: {}",
                    stderr.trim()
                ),
                None,
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for LocalNamespaces {
    fn name(&self) -> &'static str {
        "local"
    }

    /// Phases: create is the job dir, the spawn and the sandbox's setup up to the exec of the
    /// command (EOF on the status pipe); run lasts until the command has exited and its
    /// output is drained; destroy is the removal of the job dir. Cancellation ends the job as
    /// a timeout does (the lifeline closes, init kills the pid namespace), then the job dir
    /// is removed as always.
    async fn execute(
        &self,
        mut job: JobSpec,
        phases: &dyn PhaseObserver,
        cancel: &CancellationToken,
    ) -> Result<JobOutput, SandboxError> {
        validate(&job)?;
        if cancel.is_cancelled() {
            return Ok(JobOutput {
                cancelled: true,
                ..JobOutput::default()
            });
        }
        let start = Instant::now();
        let created = SystemTime::now();
        let failed = |phase: Phase, since: SystemTime, e: SandboxError| {
            phases.phase(phase, since, SystemTime::now(), Some(&e));
            e
        };
        let mut jobdir =
            JobDir::create(&self.temp_root).map_err(|e| failed(Phase::Create, created, e))?;
        let Prepared {
            cmd,
            status_r,
            child_fds,
            lifeline_w,
            progress_r,
        } = self
            .prepare(&job, &jobdir.path)
            .map_err(|e| failed(Phase::Create, created, e))?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = cmd.spawn();
        drop(child_fds);
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                let msg = read_status_blocking(status_r);
                let e = SandboxError::Create {
                    context: format!("starting the sandbox: {}", msg.describe("spawn failed")),
                    source,
                };
                return Err(failed(Phase::Create, created, e));
            }
        };
        // If this future is dropped from here on, JobDir's Drop waits (in a thread) for init
        // to exit, which it does promptly because the lifeline closes with this future.
        jobdir.init = child.id().and_then(|pid| pidfd_open(pid as i32).ok());

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let input = job.stdin;
        let write_stdin = async move {
            if let Some(mut s) = stdin {
                // A job that exits without reading its stdin gives EPIPE: not an error.
                let _ = s.write_all(&input).await;
            }
        };
        let cap = job.max_output_bytes;
        let status = async move {
            let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(status_r)?;
            let mut buf = Vec::new();
            rx.read_to_end(&mut buf).await?;
            // EOF: the command was exec'd (or setup failed): the end of the create phase.
            Ok::<_, io::Error>((buf, SystemTime::now()))
        };
        // Read to EOF (every process of the job gone) whether or not anybody listens.
        let sink = job.progress.take();
        let limits = self.progress;
        let progress = async move {
            let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(progress_r)?;
            progress::forward(rx, sink, limits).await
        };
        let mut lifeline = Some(lifeline_w);
        let wait = async {
            let stop = tokio::select! {
                st = child.wait() => return (st, None),
                () = tokio::time::sleep(job.timeout) => Stop::TimedOut,
                () = cancel.cancelled() => Stop::Cancelled,
            };
            drop(lifeline.take());
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(st) => (st, Some(stop)),
                Err(_) => {
                    tracing::warn!(job = %job.job_id, "sandbox init ignored the lifeline; killing it");
                    let _ = child.start_kill();
                    (child.wait().await, Some(stop))
                }
            }
        };
        let (_, out, err, status, progress, (exit, stop)) = tokio::join!(
            write_stdin,
            read_capped(stdout, cap),
            read_capped(stderr, cap),
            status,
            progress,
            wait
        );
        drop(lifeline);
        let ran = SystemTime::now();
        let (status, execed) = match status {
            Ok((buf, at)) => (Ok(buf), at),
            Err(e) => (Err(e), ran),
        };
        let status = StatusMsg(
            status
                .map_err(|e| io_err("reading the status pipe", e))
                .map_err(|e| failed(Phase::Create, created, e))?,
        );
        let cancelled = stop == Some(Stop::Cancelled);
        // A setup or exec failure ends the create phase; nothing ran. A job cancelled during
        // its setup was stopped, not failed.
        let setup_failed = if cancelled {
            None
        } else {
            status.to_error(&job.command[0]).or_else(|| {
                // init failed before it could even use the status pipe.
                let early = matches!(&exit, Ok(st) if st.code() == Some(EXIT_SETUP))
                    && matches!(&err, Ok((e, _)) if e.starts_with(b"portcullis-sandbox:"));
                early.then(|| SandboxError::Setup {
                    message: err
                        .as_ref()
                        .map(|(e, _)| String::from_utf8_lossy(e).trim().to_string())
                        .unwrap_or_default(),
                })
            })
        };
        phases.phase(Phase::Create, created, execed, setup_failed.as_ref());
        let run_phase = |e: SandboxError| {
            phases.phase(Phase::Run, execed, ran, Some(&e));
            e
        };
        let exit = exit
            .map_err(|e| io_err("waiting for the sandbox", e))
            .map_err(run_phase)?;
        let (stdout, out_trunc) = out
            .map_err(|e| io_err("reading stdout", e))
            .map_err(run_phase)?;
        let (stderr, err_trunc) = err
            .map_err(|e| io_err("reading stderr", e))
            .map_err(run_phase)?;
        let progress = progress
            .map_err(|e| io_err("reading the progress pipe", e))
            .map_err(run_phase)?;
        if setup_failed.is_none() {
            phases.phase(Phase::Run, execed, ran, None);
        }

        // Teardown: the namespace is empty once init has exited (see module docs).
        let destroying = SystemTime::now();
        let remove = tokio::task::spawn_blocking(move || jobdir.remove());
        let removed = match remove.await {
            Ok(r) => r,
            Err(e) => Err(io_err("removing the job dir", io::Error::other(e))),
        };
        phases.phase(Phase::Destroy, destroying, SystemTime::now(), removed.as_ref().err());
        removed?;

        if let Some(e) = setup_failed {
            return Err(e);
        }
        Ok(JobOutput {
            exit_code: exit.code(),
            signal: exit.signal(),
            stdout,
            stderr,
            timed_out: stop == Some(Stop::TimedOut),
            truncated: out_trunc || err_trunc,
            duration: start.elapsed(),
            progress,
            cancelled,
        })
    }
}

/// Why the runner ended a job that had not exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// Reads a stream to EOF, keeping the first `cap` bytes. Keeps draining past the cap so the
/// writer never blocks on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(
    stream: Option<R>,
    cap: usize,
) -> io::Result<(Vec<u8>, bool)> {
    let Some(mut stream) = stream else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap - kept.len();
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

fn io_err(context: &str, source: io::Error) -> SandboxError {
    SandboxError::Io {
        context: context.to_string(),
        source,
    }
}

/// Checks that this host can run sandboxed jobs, by running `true` in one with the running
/// executable as init (so only meaningful in the `portcullis` binary). `serve` calls this at
/// startup to refuse to run rather than fail later.
pub fn host_supports_namespaces() -> Result<(), SandboxError> {
    LocalNamespaces::new(PathBuf::from("/proc/self/exe")).check()
}

/// Kernel settings that commonly disable unprivileged user namespaces, as a suffix for errors.
fn host_hints() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut hints = Vec::new();
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        hints.push("user.max_user_namespaces is 0");
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        hints.push("kernel.unprivileged_userns_clone is 0");
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        hints.push("kernel.apparmor_restrict_unprivileged_userns is 1 (AppArmor)");
    }
    if hints.is_empty() {
        String::new()
    } else {
        format!(" (hint: {})", hints.join("; "))
    }
}
