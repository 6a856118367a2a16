//! The runner's sandbox seam: run one job in a fresh, isolated environment and destroy that
//! environment afterwards.
//!
//! A [`Backend`] owns the whole lifecycle of a job's environment: create it, run the command,
//! collect its output, and tear it down before [`Backend::execute`] returns, also when the
//! job is cancelled. Nothing here is Linux-specific, so a Kubernetes backend (a namespace per
//! job, created then deleted) fits the same trait as [`local::LocalNamespaces`] (fresh Linux
//! namespaces per job).

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod local;
pub mod progress;

pub use progress::{ProgressLimits, ProgressStats};

/// One job: a command to run once, in an environment created for it alone.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// Identifies the job in logs and (shortened) in the sandbox's hostname.
    pub job_id: String,
    /// argv; `argv[0]` is resolved via the job's `PATH` inside the sandbox.
    pub command: Vec<String>,
    /// The only environment the job sees, on top of the backend's defaults
    /// (`PATH=/usr/local/bin:/usr/bin:/bin`, `HOME=/tmp`, `TMPDIR=/tmp`); an entry here with
    /// the same name replaces the default.
    pub env: Vec<(String, String)>,
    /// Written to the job's stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Wall-clock limit from start to exit; on expiry everything the job started is killed.
    pub timeout: Duration,
    /// Cap per output stream. Excess is read and discarded (the job is never blocked on a
    /// full pipe) and [`JobOutput::truncated`] is set.
    pub max_output_bytes: usize,
    /// Where the job's progress lines go while it runs (see [`progress`]): one line per
    /// message, bounded and coalesced, never blocking the job. `None` discards them; the job
    /// gets its progress channel either way, so it behaves the same.
    pub progress: Option<tokio::sync::mpsc::Sender<String>>,
    /// Who and what the job is for, for the labels of what a backend creates (a Kubernetes
    /// namespace carries them, so an operator and the reaper can tell whose it is).
    pub meta: JobMeta,
    /// The tool's `execution.kubernetes` section; the Kubernetes backend refuses a job
    /// without one. Other backends ignore it.
    pub kubernetes: Option<portcullis_core::catalog::KubernetesExecution>,
    /// Kubernetes only: the nodes the job's pod may run on (the decided placement's).
    pub node_selector: std::collections::BTreeMap<String, String>,
}

/// The decided call a job executes.
#[derive(Debug, Clone, Default)]
pub struct JobMeta {
    pub tool: String,
    /// `sha256:<hex>` of the call.
    pub plan_hash: String,
    /// The caller: the user if there is one, else the workload.
    pub requester: String,
}

/// What a job did. Returned only after its environment has been torn down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOutput {
    /// The command's exit status, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if it was killed (SIGKILL after a timeout).
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The job hit [`JobSpec::timeout`] and was killed.
    pub timed_out: bool,
    /// stdout or stderr exceeded [`JobSpec::max_output_bytes`].
    pub truncated: bool,
    /// From the start of environment creation to the end of teardown.
    pub duration: Duration,
    /// What became of the job's progress lines.
    pub progress: ProgressStats,
    /// The job was cancelled (see [`Backend::execute`]): everything it started was killed and
    /// its environment destroyed before this was returned. Its output is what it wrote until
    /// then.
    pub cancelled: bool,
}

impl JobOutput {
    /// The command exited with status 0 in time.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }
}

/// Why a job could not be run. A command that ran and failed is not an error: see
/// [`JobOutput::exit_code`]. These are failures of the sandbox itself or of the request.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec cannot be run (empty command, NUL bytes, `=` in an env name, ...).
    #[error("invalid job: {0}")]
    InvalidJob(String),

    /// This host cannot provide the isolation the backend promises. `what` names the
    /// missing capability and, where known, the setting that disables it.
    #[error("sandbox backend unavailable: {what}")]
    Unsupported {
        what: String,
        #[source]
        source: Option<std::io::Error>,
    },

    /// The environment could not be created, e.g. the sandbox process could not be started.
    #[error("failed to create the job environment: {context}")]
    Create {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The environment was created but setting it up failed before the command started
    /// (a mount, the network, the hostname, limits). `message` comes from inside it.
    #[error("sandbox setup failed: {message}")]
    Setup { message: String },

    /// The command itself could not be started inside the environment (not found, not
    /// executable). Distinct from the command starting and then failing.
    #[error("cannot execute {program:?} in the sandbox: {message}")]
    Exec {
        program: String,
        message: String,
        /// `errno` from `execve` inside the sandbox (e.g. `ENOENT`).
        errno: Option<i32>,
    },

    /// Talking to the running job (pipes, waiting) failed.
    #[error("job I/O failed: {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The environment could not be fully destroyed (e.g. its temp dir could not be removed).
    /// The job's processes are gone; resources may have leaked.
    #[error("failed to tear down the job environment: {context}")]
    Teardown {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    /// For the runner's log: this error and every cause under it, so the failed step and
    /// the errno are there (`...: starting the sandbox: before init: executing ...:
    /// Permission denied (os error 13)`). May name host paths.
    pub fn log_text(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    /// For the agent: short, and free of host paths and host details. The runner's log has
    /// the rest (see [`SandboxError::log_text`]).
    pub fn agent_message(&self) -> String {
        match self {
            SandboxError::InvalidJob(m) => format!("invalid job: {m}"),
            SandboxError::Unsupported { .. } => "the sandbox is unavailable on this host".into(),
            SandboxError::Create { source, .. } => {
                format!("cannot start the job environment ({})", source.kind())
            }
            SandboxError::Setup { .. } => "cannot set up the job environment".into(),
            // The program is the catalog's, the message an errno description.
            SandboxError::Exec { .. } => self.to_string(),
            SandboxError::Io { source, .. } => {
                format!("lost contact with the job ({})", source.kind())
            }
            SandboxError::Teardown { source, .. } => {
                format!("cannot tear down the job environment ({})", source.kind())
            }
        }
    }
}

/// Runs jobs, each in a fresh environment that is destroyed when the job ends.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Short name for logs and metrics (`"local"`, `"kubernetes"`).
    fn name(&self) -> &'static str;

    /// Create a fresh environment, run `job` in it until it exits, times out or `cancel`
    /// fires, destroy the environment, then return what the job did. Never returns while
    /// anything the job started is still running, or before its environment is gone.
    ///
    /// Cancellation is part of the contract because the caller of a long job may withdraw it
    /// (MCP `notifications/cancelled`): when `cancel` fires, the backend kills everything the
    /// job started (all its processes locally; its pods in Kubernetes, by deleting the job's
    /// namespace), destroys the environment as after any other end, and returns
    /// [`JobOutput::cancelled`]. A token that has fired before the call creates nothing.
    /// `phases` is told when each [`Phase`] began and ended, as it ends; a backend that
    /// cannot tell its phases apart reports nothing.
    ///
    /// Dropping the future also destroys the environment (a backend may finish that cleanup
    /// in the background); a caller that must know it is gone cancels instead, and awaits.
    async fn execute(&self, job: JobSpec, phases: &dyn PhaseObserver, cancel: &CancellationToken) -> Result<JobOutput, SandboxError>;

    /// [`Backend::execute`], never cancelled and observing nothing.
    async fn run(&self, job: JobSpec) -> Result<JobOutput, SandboxError> {
        self.execute(job, &NoPhases, &CancellationToken::new()).await
    }

    /// [`Backend::execute`], never cancelled.
    async fn run_observed(&self, job: JobSpec, phases: &dyn PhaseObserver) -> Result<JobOutput, SandboxError> {
        self.execute(job, phases, &CancellationToken::new()).await
    }
}

/// The steps of one job that every backend goes through (fresh namespaces and a job dir
/// locally; a namespace and a pod in Kubernetes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From the start of environment creation until the command is about to run (the
    /// sandbox's setup done, the command exec'd).
    Create,
    /// From the command's start until it has exited (or was killed) and its output is read.
    Run,
    /// Tearing the environment down.
    Destroy,
}

/// Told about each [`Phase`] of a job once it has ended (telemetry makes spans of them).
/// Called from inside [`Backend::execute`]: must be quick and must not block.
pub trait PhaseObserver: Send + Sync {
    /// `phase` ran from `start` to `end`; `error` is set when it failed (then no later phase
    /// follows, except [`Phase::Destroy`]).
    fn phase(&self, phase: Phase, start: std::time::SystemTime, end: std::time::SystemTime, error: Option<&SandboxError>);
}

/// Observes nothing.
pub struct NoPhases;

impl PhaseObserver for NoPhases {
    fn phase(&self, _: Phase, _: std::time::SystemTime, _: std::time::SystemTime, _: Option<&SandboxError>) {}
}

/// Checks a spec against what every backend requires. Backends call this first.
pub(crate) fn validate(job: &JobSpec) -> Result<(), SandboxError> {
    let bad = |m: String| Err(SandboxError::InvalidJob(m));
    match job.command.first() {
        None => return bad("empty command".into()),
        Some(p) if p.is_empty() => return bad("empty program name".into()),
        Some(_) => {}
    }
    if let Some(a) = job.command.iter().find(|a| a.contains('\0')) {
        return bad(format!("NUL byte in argument {a:?}"));
    }
    for (k, v) in &job.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return bad(format!("invalid environment variable name {k:?}"));
        }
        if v.contains('\0') {
            return bad(format!("NUL byte in the value of {k}"));
        }
    }
    if job.timeout.is_zero() {
        return bad("zero timeout".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SandboxError;
    use std::io;

    fn spawn_failure() -> SandboxError {
        SandboxError::Create {
            context: "starting the sandbox: before init: executing the runner binary \
                      /srv/private/portcullis as the sandbox init, as host uid 2000000000"
                .into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        }
    }

    #[test]
    fn the_log_names_the_step_and_the_errno() {
        let text = spawn_failure().log_text();
        assert!(text.contains("executing the runner binary"), "{text}");
        assert!(text.ends_with("Permission denied (os error 13)"), "{text}");
    }

    #[test]
    fn the_agent_gets_the_cause_without_host_paths() {
        assert_eq!(
            spawn_failure().agent_message(),
            "cannot start the job environment (permission denied)"
        );
        let setup = SandboxError::Setup {
            message: "bind source /srv/private/venv: Permission denied".into(),
        };
        assert_eq!(setup.agent_message(), "cannot set up the job environment");
    }
}
