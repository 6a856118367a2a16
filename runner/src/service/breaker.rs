//! A circuit breaker per backend entry: a backend that keeps failing (the sandbox could not be
//! created, the API server does not answer) gets no more jobs for a while, so calls are refused
//! at once with a retry hint instead of each waiting for the same failure.
//!
//! Closed: calls pass; [`FAILURES`] backend failures in a row open it. Open: every call is
//! refused until [`COOLDOWN`] has passed. Then half-open: one trial call passes (the others are
//! refused); its success closes the breaker, its failure opens it again for another cooldown.
//! Only failures of the backend count ([`counts_against_backend`]): a tool that ran and failed,
//! or timed out, is the backend working.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sandbox::{JobOutput, SandboxError};
use crate::telemetry::metrics;

/// Consecutive backend failures that open the breaker.
pub const FAILURES: u32 = 5;
/// How long an open breaker refuses calls before it lets one trial through.
pub const COOLDOWN: Duration = Duration::from_secs(30);
/// The retry hint while the trial call runs: its outcome decides soon.
const TRIAL_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failures: FAILURES, cooldown: COOLDOWN }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    /// The cooldown is over; `trial` while the one trial call is out.
    HalfOpen { trial: bool },
}

pub struct Breaker {
    /// The entry's placement, for logs and metrics.
    placement: String,
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// The breaker refuses calls now; try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub retry_after: Duration,
}

/// A call the breaker let through. Report how the backend did ([`Pass::succeeded`],
/// [`Pass::failed`]); dropped without a report (the call was cancelled, or refused before its
/// job ran), it counts for nothing, and a trial leaves room for the next one.
#[must_use]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    trial: bool,
    reported: bool,
}

/// Whether a sandbox error says the backend is failing. An invalid job, or a program that
/// cannot be executed, is the catalog's or the call's fault: the backend did its part.
pub fn counts_against_backend(e: &SandboxError) -> bool {
    !matches!(e, SandboxError::InvalidJob(_) | SandboxError::Exec { .. })
}

impl Breaker {
    pub fn new(placement: String, settings: BreakerSettings) -> Self {
        Breaker { placement, settings, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    /// Lets a call through, or says for how long none will be.
    pub fn admit(&self) -> Result<Pass<'_>, Open> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<Pass<'_>, Open> {
        let mut state = self.lock();
        let trial = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => return Err(Open { retry_after: until - now }),
            State::Open { .. } | State::HalfOpen { trial: false } => {
                if matches!(*state, State::Open { .. }) {
                    tracing::info!(placement = %self.placement, "backend cooldown over: circuit breaker half-open, one trial call goes through");
                    metrics::breaker_transition(&self.placement, "half_open");
                }
                *state = State::HalfOpen { trial: true };
                true
            }
            State::HalfOpen { trial: true } => return Err(Open { retry_after: TRIAL_RETRY }),
        };
        Ok(Pass { breaker: self, trial, reported: false })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { .. }) {
            tracing::info!(placement = %self.placement, "backend recovered: circuit breaker closed");
            metrics::breaker_transition(&self.placement, "closed");
        }
        *state = State::Closed { failures: 0 };
    }

    fn failed(&self, trial: bool, now: Instant) {
        let mut state = self.lock();
        let open = match *state {
            State::Closed { failures } if failures + 1 >= self.settings.failures => true,
            State::Closed { failures } => {
                *state = State::Closed { failures: failures + 1 };
                false
            }
            // The trial failed: another cooldown.
            State::HalfOpen { .. } => trial,
            // A call admitted before the breaker opened failed too: the cooldown stands.
            State::Open { .. } => false,
        };
        if open {
            *state = State::Open { until: now + self.settings.cooldown };
            let failures = self.settings.failures;
            tracing::warn!(placement = %self.placement, failures, cooldown_ms = self.settings.cooldown.as_millis() as u64, trial,
                "backend failing: circuit breaker open, calls to it are refused until the cooldown is over");
            metrics::breaker_transition(&self.placement, "open");
        }
    }

    fn trial_abandoned(&self) {
        let mut state = self.lock();
        if *state == (State::HalfOpen { trial: true }) {
            *state = State::HalfOpen { trial: false };
        }
    }
}

impl Pass<'_> {
    /// The backend ran the job (whatever the tool's own outcome).
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.succeeded();
    }

    /// The backend failed to run the job.
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.failed(self.trial, Instant::now());
    }

    /// Reports what the backend did with the job: ran it (whatever the tool's own outcome),
    /// or failed ([`counts_against_backend`]). A cancelled job, or an error that is not the
    /// backend's, says nothing either way.
    pub fn report(self, ran: &Result<JobOutput, SandboxError>) {
        match ran {
            Ok(out) if !out.cancelled => self.succeeded(),
            Err(e) if counts_against_backend(e) => self.failed(),
            _ => drop(self),
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.trial && !self.reported {
            self.breaker.trial_abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new("local".into(), BreakerSettings { failures: 3, cooldown: Duration::from_millis(cooldown_ms) })
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_in_between_resets_the_count() {
        let b = breaker(60_000);
        b.admit().unwrap().failed();
        b.admit().unwrap().failed();
        b.admit().unwrap().succeeded();
        b.admit().unwrap().failed();
        b.admit().unwrap().failed();
        assert!(b.admit().is_ok(), "two in a row since the success: still closed");
        b.admit().unwrap().failed();
        let open = b.admit().err().expect("three in a row open it");
        assert!(open.retry_after > Duration::from_secs(59) && open.retry_after <= Duration::from_secs(60), "{open:?}");
    }

    #[test]
    fn after_the_cooldown_one_trial_passes_and_its_outcome_decides() {
        let b = breaker(1000);
        let start = Instant::now();
        for _ in 0..3 {
            b.admit_at(start).unwrap().failed();
        }
        assert!(b.admit_at(start + Duration::from_millis(500)).is_err());
        let later = Instant::now() + Duration::from_secs(2);
        let trial = b.admit_at(later).expect("the cooldown is over: a trial");
        assert_eq!(b.admit_at(later).err(), Some(Open { retry_after: TRIAL_RETRY }), "only one trial at a time");
        trial.failed();
        assert!(b.admit().is_err(), "a failed trial opens it again");

        let b = breaker(1000);
        for _ in 0..3 {
            b.admit_at(start).unwrap().failed();
        }
        b.admit_at(later).unwrap().succeeded();
        assert!(b.admit().is_ok() && b.admit().is_ok(), "a good trial closes it");
    }

    #[test]
    fn an_abandoned_trial_makes_room_for_the_next() {
        let b = breaker(1000);
        let start = Instant::now();
        for _ in 0..3 {
            b.admit_at(start).unwrap().failed();
        }
        let later = start + Duration::from_secs(2);
        drop(b.admit_at(later).unwrap());
        let next = b.admit_at(later).expect("the cancelled trial's room");
        next.succeeded();
    }

    #[test]
    fn only_backend_failures_count() {
        assert!(!counts_against_backend(&SandboxError::InvalidJob("x".into())));
        assert!(!counts_against_backend(&SandboxError::Exec { program: "x".into(), message: "m".into(), errno: None }));
        assert!(counts_against_backend(&SandboxError::Setup { message: "m".into() }));
        assert!(counts_against_backend(&SandboxError::Unsupported { what: "w".into(), source: None }));
    }
}
