//! The runner's metrics. Instruments are created on first use after [`super::init`]; with
//! telemetry off, every function here returns at once.
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `mcp.server.operation.duration` | histogram | s | `mcp.method.name`, `gen_ai.tool.name`, `gen_ai.operation.name`, `error.type` on failure |
//! | `portcullis.runner.jobs` | counter | `{job}` | `portcullis.job.outcome` (`succeeded`, `failed`, `timed_out`, `sandbox_error`), `portcullis.sandbox.backend` |
//! | `portcullis.runner.queue.depth` | up-down counter | `{job}` | `portcullis.placement`: calls waiting for a sandbox slot of that backend entry |
//! | `portcullis.runner.calls.refused` | counter | `{call}` | `portcullis.refusal` (`placement_unavailable`, `queue_full`, `backend_failing`), `portcullis.placement` |
//! | `portcullis.runner.breaker.transitions` | counter | `{transition}` | `portcullis.breaker.state` (`open`, `half_open`, `closed`), `portcullis.placement` |
//! | `portcullis.runner.approvals` | counter | `{approval}` | `portcullis.approval.state` |

use std::sync::OnceLock;

use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use opentelemetry::KeyValue;

use super::{enabled, SCOPE};

/// Bucket boundaries (seconds) the MCP semantic conventions recommend for operation durations.
const DURATION_BUCKETS: [f64; 14] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

struct Instruments {
    duration: Histogram<f64>,
    jobs: Counter<u64>,
    queue_depth: UpDownCounter<i64>,
    refused: Counter<u64>,
    breaker: Counter<u64>,
    approvals: Counter<u64>,
}

fn instruments() -> Option<&'static Instruments> {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    if !enabled() {
        return None;
    }
    Some(INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter(SCOPE);
        Instruments {
            duration: meter
                .f64_histogram("mcp.server.operation.duration")
                .with_unit("s")
                .with_description("Duration of MCP requests handled by the runner")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            jobs: meter.u64_counter("portcullis.runner.jobs").with_unit("{job}").with_description("Sandbox jobs by outcome").build(),
            queue_depth: meter
                .i64_up_down_counter("portcullis.runner.queue.depth")
                .with_unit("{job}")
                .with_description("Calls waiting for a sandbox slot")
                .build(),
            refused: meter
                .u64_counter("portcullis.runner.calls.refused")
                .with_unit("{call}")
                .with_description("Calls refused before a job ran: placement unavailable, queue full, backend failing")
                .build(),
            breaker: meter
                .u64_counter("portcullis.runner.breaker.transitions")
                .with_unit("{transition}")
                .with_description("Circuit breaker state changes by the state entered")
                .build(),
            approvals: meter
                .u64_counter("portcullis.runner.approvals")
                .with_unit("{approval}")
                .with_description("Approval state changes by state")
                .build(),
        }
    }))
}

/// One MCP operation took `seconds`; `attributes` are the call span's low-cardinality ones.
pub(crate) fn operation_duration(seconds: f64, attributes: &[KeyValue]) {
    if let Some(i) = instruments() {
        i.duration.record(seconds, attributes);
    }
}

/// A job ended with `outcome` (`succeeded`, `failed`, `timed_out`, `sandbox_error`).
pub fn job_finished(outcome: &'static str, backend: &'static str) {
    if let Some(i) = instruments() {
        i.jobs.add(1, &[KeyValue::new("portcullis.job.outcome", outcome), KeyValue::new("portcullis.sandbox.backend", backend)]);
    }
}

/// A call started (`+1`) or stopped (`-1`) waiting for a sandbox slot of `placement`.
pub fn queue_depth(delta: i64, placement: &str) {
    if let Some(i) = instruments() {
        i.queue_depth.add(delta, &[KeyValue::new("portcullis.placement", placement.to_owned())]);
    }
}

/// A call was refused before its job ran, for `reason` (`placement_unavailable`,
/// `queue_full`, `backend_failing`).
pub fn call_refused(reason: &'static str, placement: &str) {
    if let Some(i) = instruments() {
        i.refused.add(1, &[KeyValue::new("portcullis.refusal", reason), KeyValue::new("portcullis.placement", placement.to_owned())]);
    }
}

/// The circuit breaker of `placement` entered `state` (`open`, `half_open`, `closed`).
pub fn breaker_transition(placement: &str, state: &'static str) {
    if let Some(i) = instruments() {
        i.breaker.add(1, &[KeyValue::new("portcullis.breaker.state", state), KeyValue::new("portcullis.placement", placement.to_owned())]);
    }
}

/// An approval entered `state` (for example `pending`, `approved`, `denied`, `expired`,
/// `executed`). Call once per transition.
pub fn approval_state(state: &'static str) {
    if let Some(i) = instruments() {
        i.approvals.add(1, &[KeyValue::new("portcullis.approval.state", state)]);
    }
}
