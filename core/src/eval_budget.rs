//! The time budget of one policy evaluation. A Rego evaluation runs on the thread that handles
//! the request (in Envoy, a worker of the wasm VM): a rule that loops for long would stall every
//! request behind it. Regorus checks a wall-clock limit cooperatively while it evaluates; past
//! [`EVAL_BUDGET`] the evaluation fails, and a failed evaluation is a refusal.

use std::num::NonZeroU32;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use regorus::utils::limits::{set_fallback_execution_timer_config, set_time_source, ExecutionTimerConfig, TimeSource};

/// How long one evaluation may run.
pub const EVAL_BUDGET: Duration = Duration::from_millis(500);

/// Work units between two looks at the clock.
const CHECK_EVERY: NonZeroU32 = NonZeroU32::MIN.saturating_add(63);

/// The monotonic clock regorus reads (built without its `std` feature, it has none of its own).
struct Monotonic;

impl TimeSource for Monotonic {
    fn now(&self) -> Option<Duration> {
        static START: OnceLock<Instant> = OnceLock::new();
        Some(START.get_or_init(Instant::now).elapsed())
    }
}

static CLOCK: Monotonic = Monotonic;

/// Bounds every evaluation of this process by [`EVAL_BUDGET`]. Idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registration fails only when a source is already set: then that one is used.
        let _ = set_time_source(&CLOCK);
        set_fallback_execution_timer_config(Some(ExecutionTimerConfig { limit: EVAL_BUDGET, check_interval: CHECK_EVERY }));
    });
}

/// Lifts the bound for the rest of this process: for offline tools that run a bundle's own Rego
/// unit tests (`policy test`), whose test rules may each decide every tool and every case, far
/// more work than one request's decision, and which stall no request.
pub fn lift() {
    install();
    set_fallback_execution_timer_config(None);
}
