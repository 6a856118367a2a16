//! A job queue, one per backend entry (see [`crate::service::backends`]): at most `max_jobs`
//! sandboxes exist at once, and at most `max_queued` calls wait for one, in arrival order
//! (tokio's semaphore is fair). A call that finds the waiting line full is refused at once
//! ([`QueueFull`], with a retry hint): a backend that cannot keep up never makes callers hang.
//! The wait is the call's `queue wait` span and the `portcullis.runner.queue.depth` metric;
//! the sandbox's phases become spans with the backend's own times; each job's outcome is
//! counted.
//!
//! Waiting for a slot is a step of its own ([`JobQueue::slot`]), so that a call cancelled while
//! it waits leaves the queue and never starts, and so that a call holds its slot before it
//! uses up anything one-time (an approval's one execution).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::sandbox::{Backend, CancellationToken, JobOutput, JobSpec, SandboxError};
use crate::telemetry::{self, call::QUEUE_WAIT, metrics, SandboxPhases};

/// Sandboxes one backend entry runs at once.
pub const MAX_JOBS: usize = 32;
/// Calls that may wait for one of an entry's sandboxes; one more is refused at once.
pub const MAX_QUEUED: usize = 128;
/// The retry hint before any job has finished to tell how long jobs take.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// Bounds of the retry hint.
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(60);

pub struct JobQueue {
    slots: Semaphore,
    max_queued: usize,
    waiting: AtomicUsize,
    /// The entry's placement, the metrics' `portcullis.placement`.
    placement: String,
    /// Recent job durations (ms, moving average; 0: none yet): how soon a slot frees up.
    typical_ms: AtomicU64,
}

/// The queue is full: the call was not queued. Retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    pub retry_after: Duration,
}

/// A sandbox slot, held until the job has run (and its environment is gone) or the call ends.
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    queue: &'a JobQueue,
}

impl JobQueue {
    pub fn new(placement: String, max_jobs: usize, max_queued: usize) -> Self {
        JobQueue { slots: Semaphore::new(max_jobs), max_queued, waiting: AtomicUsize::new(0), placement, typical_ms: AtomicU64::new(0) }
    }

    /// A free slot, or a wait for one in line. `Ok(None)` when `cancel` fires first: the call
    /// has left the queue and its job must not start. [`QueueFull`] at once when no slot is
    /// free and `max_queued` calls wait already.
    pub async fn slot(&self, cancel: &CancellationToken) -> Result<Option<Slot<'_>>, QueueFull> {
        let _span = telemetry::span(QUEUE_WAIT);
        if cancel.is_cancelled() {
            return Ok(None);
        }
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(Some(Slot { _permit: permit, queue: self }));
        }
        let Some(_waiting) = Waiting::enter(self) else {
            // A slot may have come free since the first look.
            return match self.slots.try_acquire() {
                Ok(permit) => Ok(Some(Slot { _permit: permit, queue: self })),
                Err(_) => Err(QueueFull { retry_after: self.retry_after() }),
            };
        };
        tokio::select! {
            // Cancellation first: a call cancelled while a slot also came free does not start.
            biased;
            () = cancel.cancelled() => Ok(None),
            permit = self.slots.acquire() => match permit {
                Ok(permit) => Ok(Some(Slot { _permit: permit, queue: self })),
                // The semaphore is never closed; if it were, no slot would ever come.
                Err(_) => Err(QueueFull { retry_after: self.retry_after() }),
            },
        }
    }

    /// How long until a slot is likely free: about one job's time, as jobs took lately.
    pub fn retry_after(&self) -> Duration {
        match self.typical_ms.load(Ordering::Relaxed) {
            0 => DEFAULT_RETRY,
            ms => Duration::from_millis(ms).clamp(MIN_RETRY, MAX_RETRY),
        }
    }

    fn job_took(&self, took: Duration) {
        let ms = (took.as_millis() as u64).max(1);
        // A moving average (new = 3/4 old + 1/4 this one); a lost update between two jobs
        // finishing at once only makes the hint a little less smooth.
        let old = self.typical_ms.load(Ordering::Relaxed);
        let new = if old == 0 { ms } else { (old * 3 + ms) / 4 };
        self.typical_ms.store(new.max(1), Ordering::Relaxed);
    }
}

impl Slot<'_> {
    /// Runs `job` on `backend` in this slot, which is freed when the job is over.
    pub async fn run(self, backend: &dyn Backend, job: JobSpec, cancel: &CancellationToken) -> Result<JobOutput, SandboxError> {
        let phases = SandboxPhases::current(backend.name());
        let started = std::time::Instant::now();
        let out = backend.execute(job, &phases, cancel).await;
        self.queue.job_took(started.elapsed());
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

/// One call waiting in line: counted against `max_queued` and in the queue depth until it
/// stops waiting, also when the call is dropped mid-wait.
struct Waiting<'a> {
    queue: &'a JobQueue,
}

impl<'a> Waiting<'a> {
    /// A place in line, or `None` when the line is full.
    fn enter(queue: &'a JobQueue) -> Option<Self> {
        queue.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < queue.max_queued).then_some(n + 1)).ok()?;
        metrics::queue_depth(1, &queue.placement);
        Some(Waiting { queue })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
        metrics::queue_depth(-1, &self.queue.placement);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call cancelled while every slot is taken leaves the queue without one; the slots of
    /// finished calls are free again.
    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue_without_a_slot() {
        let queue = JobQueue::new("local".into(), 1, 8);
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

    /// With every slot taken and the line full, a call is refused at once with a retry hint;
    /// a place in line frees up when a waiting call leaves.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let queue = JobQueue::new("local".into(), 1, 1);
        let never = CancellationToken::new();
        let held = queue.slot(&never).await.unwrap().expect("a free slot");
        let cancel = CancellationToken::new();
        let waiting = queue.slot(&cancel);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut waiting).await.is_err(), "waits in line");
        let full = tokio::time::timeout(Duration::from_millis(50), queue.slot(&never)).await.expect("answered at once");
        assert_eq!(full.err(), Some(QueueFull { retry_after: DEFAULT_RETRY }));
        cancel.cancel();
        assert!(waiting.await.unwrap().is_none());
        // The cancelled call left the line: one may wait again.
        let again = queue.slot(&never);
        tokio::pin!(again);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut again).await.is_err(), "waits in line again");
        drop(held);
        assert!(again.await.unwrap().is_some());

        // No line at all: the second call is refused while the first runs.
        let queue = JobQueue::new("local".into(), 1, 0);
        let _held = queue.slot(&never).await.unwrap().expect("a free slot");
        assert!(queue.slot(&never).await.is_err());
    }

    #[test]
    fn the_retry_hint_follows_how_long_jobs_take() {
        let queue = JobQueue::new("local".into(), 1, 0);
        assert_eq!(queue.retry_after(), DEFAULT_RETRY);
        queue.job_took(Duration::from_millis(400));
        assert_eq!(queue.retry_after(), Duration::from_millis(400));
        queue.job_took(Duration::from_millis(800));
        assert_eq!(queue.retry_after(), Duration::from_millis(500));
        queue.job_took(Duration::from_micros(1));
        assert!(queue.retry_after() >= MIN_RETRY);
    }
}
