//! Measurement blocks over several stacks at once: every stack runs the same kind of block in
//! turn, the order reversed each round (A B C, C B A, ...), so that the noise of a shared
//! machine falls on all of them alike. Also the memory run, which alternates the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cpu;
use crate::envoy::{Envoy, Variant};
use crate::load::{self, Agent, Call, Outcome};
use crate::procs::Proc;
use crate::results::{CpuPerRequest, Heap, MemorySeries, Upstream};

/// One Envoy and its own upstream process.
pub struct Stack {
    pub variant: Variant,
    pub envoy: Envoy,
    pub upstream: Proc,
    pub agents: Vec<Agent>,
}

/// The order of round `round` over `active` stacks: forward on even rounds, reversed on odd.
fn order(active: &[usize], round: usize) -> Vec<usize> {
    let mut order = active.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Runs `rounds` blocks for every stack that has a call (`calls[i]` for `stacks[i]`; `None`:
/// the stack has no such path), after a warm-up each. Returns, per stack, what it measured.
pub async fn interleaved(
    stacks: &mut [Stack],
    calls: &[Option<Arc<Call>>],
    concurrency: usize,
    rounds: usize,
    block_cap: u64,
    block_time: Duration,
) -> Result<Vec<Option<(Outcome, CpuPerRequest)>>> {
    let active: Vec<usize> = (0..stacks.len()).filter(|&i| calls.get(i).is_some_and(Option::is_some)).collect();
    for &i in &active {
        let (s, Some(call)) = (&mut stacks[i], &calls[i]) else { continue };
        let warm = if concurrency == 1 { 50 } else { 20 * concurrency as u64 };
        let o = load::run(&mut s.agents, call, concurrency, warm, Duration::from_secs(10)).await?;
        check_errors(s, &o, "warm-up")?;
    }
    let mut out: Vec<(Outcome, CpuSample)> = stacks.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for i in order(&active, round) {
            let (s, Some(call)) = (&mut stacks[i], &calls[i]) else { continue };
            let before = CpuSample::take(s)?;
            let o = load::run(&mut s.agents, call, concurrency, block_cap, block_time).await?;
            let after = CpuSample::take(s)?;
            check_errors(s, &o, "measurement")?;
            out[i].1.add(&before, &after);
            out[i].0.absorb(o);
        }
    }
    Ok(out
        .into_iter()
        .zip(calls)
        .map(|((o, cpu), call)| {
            call.as_ref()?;
            let n = o.latencies_ns.len().max(1) as f64;
            let per = CpuPerRequest { envoy: cpu.envoy as f64 / n, upstream: cpu.upstream as f64 / n, load_generator: cpu.own as f64 / n };
            Some((o, per))
        })
        .collect())
}

/// Cumulative CPU microseconds of a stack's processes and of this process.
#[derive(Default, Clone, Copy)]
struct CpuSample {
    envoy: u64,
    upstream: u64,
    own: u64,
}

impl CpuSample {
    fn take(s: &Stack) -> Result<CpuSample> {
        Ok(CpuSample { envoy: cpu::cpu_us(s.envoy.proc.pid())?, upstream: cpu::cpu_us(s.upstream.pid())?, own: cpu::cpu_us(0)? })
    }

    fn add(&mut self, before: &CpuSample, after: &CpuSample) {
        self.envoy += after.envoy.saturating_sub(before.envoy);
        self.upstream += after.upstream.saturating_sub(before.upstream);
        self.own += after.own.saturating_sub(before.own);
    }
}

/// A run with more than 1% failed requests is not a measurement: fail loudly.
pub fn check_errors(s: &Stack, o: &Outcome, what: &str) -> Result<()> {
    if o.errors * 100 > o.requests() {
        bail!(
            "{what} through envoy ({}) failed {} of {} requests; first: {}",
            s.variant.label(),
            o.errors,
            o.requests(),
            o.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// RSS of each Envoy and upstream at `checkpoints` over `total` allow-path calls per stack at
/// c=32 (`calls[i]` for `stacks[i]`), alternating the stacks block by block. A reference's
/// upstream is the same responder as bare's: only its Envoy is reported.
pub async fn memory(kind: Upstream, stacks: &mut [Stack], calls: &[Arc<Call>], total: u64, checkpoints: u64, block_time: Duration) -> Result<Vec<MemorySeries>> {
    let block = total / checkpoints;
    eprintln!("   memory: {total} allow-path calls per stack at c=32, RSS every {block}");
    let mut series: Vec<Vec<(u64, u64, u64)>> = Vec::new();
    for s in stacks.iter() {
        series.push(vec![(0, s.envoy.proc.rss_kib()?, s.upstream.rss_kib()?)]);
    }
    let mut done = vec![0u64; stacks.len()];
    let all: Vec<usize> = (0..stacks.len()).collect();
    for round in 0..checkpoints as usize {
        for i in order(&all, round) {
            let s = &mut stacks[i];
            let o = load::run(&mut s.agents, &calls[i], 32, block, block_time).await?;
            check_errors(s, &o, "memory run")?;
            done[i] += o.latencies_ns.len() as u64;
            series[i].push((done[i], s.envoy.proc.rss_kib()?, s.upstream.rss_kib()?));
        }
    }
    let mut heaps = Vec::new();
    for s in stacks.iter() {
        heaps.push(heap(&s.envoy).await?);
    }
    let upstream_name = match kind {
        Upstream::Static => "responder",
        Upstream::Runner => "runner",
    };
    let mut out = Vec::new();
    for ((s, points), envoy_heap) in stacks.iter().zip(&series).zip(heaps) {
        for (process, pick) in [("envoy", 1usize), (upstream_name, 2)] {
            if pick == 2 && s.variant.is_reference() {
                continue;
            }
            let checkpoints: Vec<(u64, u64)> = points.iter().map(|p| (p.0, if pick == 1 { p.1 } else { p.2 })).collect();
            let (growth_kib, growth_flagged) = growth(&checkpoints);
            eprintln!(
                "     {process:<9} {:<9} RSS MiB: {}{}",
                s.variant.label(),
                checkpoints.iter().map(|(n, kib)| format!("{}:{:.1}", crate::stats::fmt_count(*n), *kib as f64 / 1024.0)).collect::<Vec<_>>().join(" "),
                if growth_flagged { "  GROWING" } else { "" }
            );
            let heap = (pick == 1).then_some(envoy_heap);
            out.push(MemorySeries { process: process.to_owned(), upstream: kind, variant: s.variant, checkpoints, growth_kib, growth_flagged, heap });
        }
    }
    Ok(out)
}

/// Envoy's tcmalloc figures from its admin `/memory` (each a decimal string of bytes).
async fn heap(envoy: &Envoy) -> Result<Heap> {
    let text = envoy.admin_get("/memory").await?;
    let memory: serde_json::Value = serde_json::from_str(&text)?;
    let kib = |name: &str| -> Result<u64> {
        let bytes = memory[name].as_str().and_then(|v| v.parse::<u64>().ok());
        bytes.map(|b| b / 1024).with_context(|| format!("no {name} in admin /memory: {text}"))
    };
    Ok(Heap {
        allocated_kib: kib("allocated")?,
        free_mapped_kib: kib("pageheap_free")?,
        thread_caches_kib: kib("total_thread_cache")?,
        released_kib: kib("pageheap_unmapped")?,
        physical_kib: kib("total_physical_bytes")?,
    })
}

/// Growth from the first checkpoint after a block of calls (allocators and caches have warmed
/// up by then) to the last. Flagged when it is both above 4 MiB and above 5%, and the series
/// never went down between those points (a steady climb, not a plateau with noise).
pub fn growth(checkpoints: &[(u64, u64)]) -> (i64, bool) {
    let warm = &checkpoints[1.min(checkpoints.len().saturating_sub(1))..];
    let (Some(first), Some(last)) = (warm.first(), warm.last()) else { return (0, false) };
    let growth = last.1 as i64 - first.1 as i64;
    let monotonic = warm.windows(2).all(|w| w[1].1 >= w[0].1);
    let flagged = growth > 4096 && growth as f64 > 0.05 * first.1 as f64 && monotonic;
    (growth, flagged)
}

#[cfg(test)]
mod tests {
    use super::{growth, order};

    #[test]
    fn growth_is_flagged_only_for_a_steady_climb() {
        assert_eq!(growth(&[(0, 50_000), (20, 60_000), (40, 60_100), (60, 60_050)]), (50, false));
        assert!(growth(&[(0, 50_000), (20, 60_000), (40, 64_000), (60, 68_000)]).1);
        assert!(!growth(&[(0, 50_000), (20, 60_000), (40, 70_000), (60, 61_000)]).1);
    }

    #[test]
    fn rounds_alternate_direction() {
        assert_eq!(order(&[0, 2, 3], 0), [0, 2, 3]);
        assert_eq!(order(&[0, 2, 3], 1), [3, 2, 0]);
    }
}
