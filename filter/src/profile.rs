//! The decision path's phase timings ([`portcullis_core::profile`]) as Envoy counters, when
//! the configuration turns profiling on: `portcullis.profile.<phase>_ns` (nanoseconds in that
//! phase) and `portcullis.profile.<phase>_n` (times it was entered), summed over the workers;
//! `portcullis.profile.wasm_memory_bytes`, one worker's linear memory, as a gauge.

use std::cell::RefCell;

use portcullis_core::profile;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// A phase's metric ids: (phase, nanoseconds counter, count counter).
type PhaseMetrics = (&'static str, Option<u32>, Option<u32>);

thread_local! {
    static METRICS: RefCell<Vec<PhaseMetrics>> = const { RefCell::new(Vec::new()) };
    /// The linear-memory gauge's id, defined on first use.
    static MEMORY_GAUGE: Option<u32> = hostcalls::define_metric(MetricType::Gauge, "portcullis.profile.wasm_memory_bytes").ok();
}

/// Ends the timed callback (begun with [`profile::begin`]): adds its phases to the counters.
pub fn publish() {
    if !profile::enabled() {
        return;
    }
    profile::end();
    profile::drain(|phase, ns, n| {
        let (ns_id, n_id) = ids(phase);
        if let Some(id) = ns_id {
            let _ = hostcalls::increment_metric(id, i64::try_from(ns).unwrap_or(i64::MAX));
        }
        if let Some(id) = n_id {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    });
    if let Ok(Some(id)) = MEMORY_GAUGE.try_with(|id| *id) {
        let _ = hostcalls::record_metric(id, linear_memory_bytes());
    }
}

fn ids(phase: &'static str) -> (Option<u32>, Option<u32>) {
    METRICS
        .try_with(|m| {
            let mut m = m.try_borrow_mut().ok()?;
            if let Some((_, ns, n)) = m.iter().find(|(p, _, _)| *p == phase) {
                return Some((*ns, *n));
            }
            let define = |suffix: &str| hostcalls::define_metric(MetricType::Counter, &format!("portcullis.profile.{phase}_{suffix}")).ok();
            let entry = (define("ns"), define("n"));
            m.push((phase, entry.0, entry.1));
            Some(entry)
        })
        .ok()
        .flatten()
        .unwrap_or((None, None))
}

#[cfg(target_arch = "wasm32")]
fn linear_memory_bytes() -> u64 {
    (core::arch::wasm32::memory_size(0) as u64).saturating_mul(65_536)
}

#[cfg(not(target_arch = "wasm32"))]
fn linear_memory_bytes() -> u64 {
    0
}
