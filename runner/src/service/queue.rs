//! The job queue: at most [`MAX_JOBS`] sandboxes exist at once; later calls wait for a slot in
//! arrival order (tokio's semaphore is fair). The wait is the call's `queue wait` span and the
//! `portcullis.runner.queue.depth` metric; the sandbox's phases become spans with the
//! backend's own times; each job's outcome is counted.

use tokio::sync::Semaphore;

use crate::sandbox::{Backend, JobOutput, JobSpec, SandboxError};
use crate::telemetry::{self, call::QUEUE_WAIT, metrics, SandboxPhases};

/// Sandboxes one runner runs at once.
pub const MAX_JOBS: usize = 32;

pub struct JobQueue {
    slots: Semaphore,
}

impl JobQueue {
    pub fn new(max_jobs: usize) -> Self {
        JobQueue { slots: Semaphore::new(max_jobs) }
    }

    /// Runs `job` on `backend` once a slot is free.
    pub async fn run(&self, backend: &dyn Backend, job: JobSpec) -> Result<JobOutput, SandboxError> {
        let slot = {
            let _span = telemetry::span(QUEUE_WAIT);
            let _waiting = Waiting::new();
            self.slots.acquire().await
        };
        // The semaphore is never closed.
        let Ok(_slot) = slot else {
            return Err(SandboxError::Unsupported { what: "the job queue is closed".into(), source: None });
        };
        let phases = SandboxPhases::current(backend.name());
        let out = backend.run_observed(job, &phases).await;
        let outcome = match &out {
            Ok(o) if o.timed_out => "timed_out",
            Ok(o) if o.success() => "succeeded",
            Ok(_) => "failed",
            Err(_) => "sandbox_error",
        };
        metrics::job_finished(outcome, backend.name());
        out
    }
}

/// Counts one job in the queue depth while it waits, also when the call is dropped mid-wait.
struct Waiting;

impl Waiting {
    fn new() -> Self {
        metrics::queue_depth(1);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::queue_depth(-1);
    }
}
