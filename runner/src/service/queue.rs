//! The job queue: at most [`MAX_JOBS`] sandboxes exist at once; later calls wait for a slot in
//! arrival order (tokio's semaphore is fair). The wait is the call's `queue wait` span and the
//! `portcullis.runner.queue.depth` metric; the sandbox's phases become spans with the
//! backend's own times; each job's outcome is counted.
//!
//! Waiting for a slot is a step of its own ([`JobQueue::slot`]), so that a call cancelled while
//! it waits leaves the queue and never starts, and so that a call holds its slot before it
//! uses up anything one-time (an approval's one execution).

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::sandbox::{Backend, CancellationToken, JobOutput, JobSpec, SandboxError};
use crate::telemetry::{self, call::QUEUE_WAIT, metrics, SandboxPhases};

/// Sandboxes one runner runs at once.
pub const MAX_JOBS: usize = 32;

pub struct JobQueue {
    slots: Semaphore,
}

/// A sandbox slot, held until the job has run (and its environment is gone) or the call ends.
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
}

impl JobQueue {
    pub fn new(max_jobs: usize) -> Self {
        JobQueue { slots: Semaphore::new(max_jobs) }
    }

    /// Waits for a free slot. `Ok(None)` when `cancel` fires first: the call has left the
    /// queue and its job must not start.
    pub async fn slot(&self, cancel: &CancellationToken) -> Result<Option<Slot<'_>>, SandboxError> {
        let _span = telemetry::span(QUEUE_WAIT);
        let _waiting = Waiting::new();
        tokio::select! {
            // Cancellation first: a call cancelled while a slot also came free does not start.
            biased;
            () = cancel.cancelled() => Ok(None),
            permit = self.slots.acquire() => match permit {
                Ok(permit) => Ok(Some(Slot { _permit: permit })),
                // The semaphore is never closed.
                Err(_) => Err(SandboxError::Unsupported { what: "the job queue is closed".into(), source: None }),
            },
        }
    }
}

impl Slot<'_> {
    /// Runs `job` on `backend` in this slot, which is freed when the job is over.
    pub async fn run(self, backend: &dyn Backend, job: JobSpec, cancel: &CancellationToken) -> Result<JobOutput, SandboxError> {
        let phases = SandboxPhases::current(backend.name());
        let out = backend.execute(job, &phases, cancel).await;
        let outcome = match &out {
            Ok(o) if o.cancelled => "cancelled",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A call cancelled while every slot is taken leaves the queue without one; the slots of
    /// finished calls are free again.
    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue_without_a_slot() {
        let queue = JobQueue::new(1);
        let never = CancellationToken::new();
        let held = queue.slot(&never).await.unwrap().expect("a free slot");
        let cancel = CancellationToken::new();
        let waiting = queue.slot(&cancel);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiting).await.is_err(), "no slot is free");
        cancel.cancel();
        assert!(waiting.await.unwrap().is_none(), "a cancelled wait gets no slot");
        drop(held);
        let next = tokio::time::timeout(std::time::Duration::from_secs(1), queue.slot(&never)).await;
        assert!(next.expect("the slot is free again").unwrap().is_some());
        // Already cancelled when a slot is free: still no slot, so the job never starts.
        assert!(queue.slot(&cancel).await.unwrap().is_none());
    }
}
