//! Where a decision's time goes, phase by phase, measured where it runs (in Envoy: inside the
//! wasm VM, on its own monotonic clock). Off unless a configuration asks for it (the filter's
//! `profile` setting, which the bench turns on for its profile pass): a mark then costs one
//! thread-local read. On, each mark reads the clock (a host call in the VM) and adds the time
//! since the previous mark to its phase.
//!
//! The phases are consecutive slices of one request: [`begin`] starts the clock, each [`mark`]
//! ends the phase it names, [`drain`] hands out the totals since the last drain.

use std::cell::RefCell;
use std::time::Instant;

/// Per-thread (per wasm VM) accumulator.
#[derive(Default)]
struct Phases {
    enabled: bool,
    last: Option<Instant>,
    /// (phase, nanoseconds, times marked), in first-seen order.
    totals: Vec<(&'static str, u64, u64)>,
}

thread_local! {
    static PHASES: RefCell<Phases> = RefCell::new(Phases::default());
}

fn with(f: impl FnOnce(&mut Phases)) {
    // Never panics: a reentrant or late call is simply not measured.
    let _ = PHASES.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            f(&mut p);
        }
    });
}

/// Turns phase timing on or off for this thread.
pub fn set_enabled(on: bool) {
    with(|p| {
        p.enabled = on;
        p.last = None;
    });
}

/// Whether phase timing is on for this thread.
pub fn enabled() -> bool {
    PHASES.try_with(|p| p.try_borrow().is_ok_and(|p| p.enabled)).unwrap_or(false)
}

/// Starts the clock for the phases that follow.
pub fn begin() {
    with(|p| {
        if p.enabled {
            p.last = Some(Instant::now());
        }
    });
}

/// Ends `phase`: the time since the previous mark (or [`begin`]) is added to it. Without a
/// [`begin`] first, nothing is measured.
pub fn mark(phase: &'static str) {
    with(|p| {
        if !p.enabled {
            return;
        }
        let Some(last) = p.last else { return };
        let now = Instant::now();
        let ns = u64::try_from(now.duration_since(last).as_nanos()).unwrap_or(u64::MAX);
        p.last = Some(now);
        match p.totals.iter_mut().find(|(name, _, _)| *name == phase) {
            Some(total) => {
                total.1 = total.1.saturating_add(ns);
                total.2 = total.2.saturating_add(1);
            }
            None => p.totals.push((phase, ns, 1)),
        }
    });
}

/// Ends the measured request: marks after this measure nothing until the next [`begin`].
pub fn end() {
    with(|p| p.last = None);
}

/// Hands out (phase, nanoseconds, times marked) since the last drain, and starts over.
pub fn drain(mut f: impl FnMut(&'static str, u64, u64)) {
    let mut totals = Vec::new();
    with(|p| totals = std::mem::take(&mut p.totals));
    for (phase, ns, n) in totals {
        f(phase, ns, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_only_while_enabled_and_begun() {
        mark("before");
        set_enabled(true);
        mark("not begun");
        begin();
        mark("a");
        mark("b");
        mark("a");
        end();
        mark("after end");
        let mut seen = Vec::new();
        drain(|phase, _, n| seen.push((phase, n)));
        assert_eq!(seen, vec![("a", 2), ("b", 1)]);
        set_enabled(false);
        begin();
        mark("off");
        drain(|phase, _, _| panic!("nothing was measured, yet {phase}"));
    }
}
