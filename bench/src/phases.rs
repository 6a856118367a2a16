//! The profile pass: where the filter's time goes inside V8, phase by phase.
//!
//! A separate Envoy with the filter, its configuration's `profile` on, so that the clock reads
//! of the profile never touch the measured stacks. The filter adds each phase's time to the
//! counters `portcullis.profile.<phase>_ns` / `_n` (core's `profile` module, the filter's
//! `profile` module); this pass reads them before and after each path's requests at c=1 and
//! reports microseconds per request, with the share of requests that entered each phase (a
//! decision-cache hit never enters the evaluation's phases).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::blocks::Stack;
use crate::load::{self, Call};
use crate::results::{Path, Results};
use crate::table::Table;

const PREFIX: &str = "wasmcustom.portcullis.profile.";
const MEMORY_GAUGE: &str = "wasm_memory_bytes";

/// One path's profile.
#[derive(Debug, Clone, Serialize)]
pub struct PathProfile {
    pub path: Path,
    pub requests: u64,
    /// In order of first appearance on the request's way through the filter.
    pub phases: Vec<PhaseTime>,
    /// One worker's wasm linear memory at the end (every worker holds its own).
    pub wasm_memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub us_per_request: f64,
    /// Times the phase was entered per request (0.5: on every other request).
    pub entered_per_request: f64,
}

/// (nanoseconds, times entered) by phase, and the memory gauge, as the admin reports them.
#[derive(Default)]
struct Counters {
    phases: BTreeMap<String, (u64, u64)>,
    memory: u64,
}

fn parse(text: &str) -> Result<Counters> {
    let v: serde_json::Value = serde_json::from_str(text).context("admin stats are not JSON")?;
    let mut out = Counters::default();
    for s in v["stats"].as_array().into_iter().flatten() {
        let (Some(name), Some(value)) = (s["name"].as_str(), s["value"].as_u64()) else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        if rest == MEMORY_GAUGE {
            out.memory = value;
        } else if let Some(phase) = rest.strip_suffix("_ns") {
            out.phases.entry(phase.to_owned()).or_default().0 = value;
        } else if let Some(phase) = rest.strip_suffix("_n") {
            out.phases.entry(phase.to_owned()).or_default().1 = value;
        }
    }
    Ok(out)
}

async fn read(stack: &Stack) -> Result<Counters> {
    parse(&stack.envoy.admin_get("/stats?filter=portcullis.profile&format=json").await?)
}

/// The phases in the order a request meets them; phases this list does not know go last.
const ORDER: [&str; 27] = [
    "filter_headers",
    "filter_body_read",
    "filter_peer_ratelimit",
    "filter_context",
    "parse",
    "jsonrpc",
    "identity",
    "session_headers",
    "plan_hash",
    "schema",
    "policy_input",
    "narrow",
    "cache_key",
    "cache_hit",
    "cache_miss",
    "input_json",
    "facts_key",
    "facts_eval",
    "input_regorus_facts",
    "rego_eval",
    "decision_read",
    "cache_insert",
    "ticket_claims",
    "ticket_sign",
    "forward",
    "record",
    "filter_metrics",
];

/// Runs `n` requests of `call` at c=1 on the profiled `stack` (after a warm-up) and returns
/// what the counters say of them.
pub async fn measure(stack: &mut Stack, path: Path, call: &Arc<Call>, n: u64) -> Result<PathProfile> {
    let warm = load::run(&mut stack.agents, call, 1, 50, Duration::from_secs(10)).await?;
    anyhow::ensure!(warm.errors == 0, "profile warm-up of {}: {:?}", path.label(), warm.first_error);
    let before = read(stack).await?;
    let out = load::run(&mut stack.agents, call, 1, n, Duration::from_secs(30)).await?;
    anyhow::ensure!(out.errors == 0, "profile run of {}: {:?}", path.label(), out.first_error);
    let after = read(stack).await?;
    let requests = out.requests().max(1);
    let mut phases: Vec<PhaseTime> = after
        .phases
        .iter()
        .map(|(phase, (ns, entered))| {
            let (ns0, entered0) = before.phases.get(phase).copied().unwrap_or_default();
            PhaseTime {
                phase: phase.clone(),
                us_per_request: ns.saturating_sub(ns0) as f64 / 1000.0 / requests as f64,
                entered_per_request: entered.saturating_sub(entered0) as f64 / requests as f64,
            }
        })
        .filter(|p| p.entered_per_request > 0.0)
        .collect();
    phases.sort_by_key(|p| ORDER.iter().position(|o| *o == p.phase).unwrap_or(ORDER.len()));
    Ok(PathProfile { path, requests: out.requests(), phases, wasm_memory_bytes: after.memory })
}

/// Section 2b of the table: one column per path.
pub fn section(t: &mut Table, r: &Results) {
    if r.phase_profile.is_empty() {
        return;
    }
    t.section(
        "2b. Where the filter's time goes inside V8 (profile pass: a separate Envoy with the filter's `profile` on, \
         each path at c=1; µs per request from the filter's portcullis.profile.* counters, each phase timed on the \
         VM's monotonic clock, a host call per phase boundary included). `(×0.5)`: entered on half the requests.",
    );
    let column = |path: Path| r.phase_profile.iter().find(|p| p.path == path);
    let paths = [Path::Allow, Path::Fresh, Path::FreshRead, Path::Deny];
    t.header(["phase".into(), paths[0].label().into(), paths[1].label().into(), paths[2].label().into(), paths[3].label().into(), String::new()]);
    let mut names: Vec<&str> = Vec::new();
    for p in &r.phase_profile {
        for ph in &p.phases {
            if !names.contains(&ph.phase.as_str()) {
                names.push(&ph.phase);
            }
        }
    }
    names.sort_by_key(|n| ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len()));
    let cell = |path: Path, name: &str| {
        column(path).and_then(|p| p.phases.iter().find(|ph| ph.phase == name)).map_or("—".to_owned(), |ph| {
            let entered = if (ph.entered_per_request - 1.0).abs() > 0.05 { format!(" (×{:.2})", ph.entered_per_request) } else { String::new() };
            format!("{:.1}{entered}", ph.us_per_request)
        })
    };
    for name in names {
        t.row([name.to_owned(), cell(paths[0], name), cell(paths[1], name), cell(paths[2], name), cell(paths[3], name), String::new()]);
    }
    let total = |path: Path| column(path).map_or("—".to_owned(), |p| format!("{:.1}", p.phases.iter().map(|ph| ph.us_per_request).sum::<f64>()));
    t.row(["total".into(), total(paths[0]), total(paths[1]), total(paths[2]), total(paths[3]), String::new()]);
    let memory = |path: Path| column(path).map_or("—".to_owned(), |p| format!("{:.1} MiB", p.wasm_memory_bytes as f64 / (1 << 20) as f64));
    t.row(["wasm linear memory, one worker".into(), memory(paths[0]), memory(paths[1]), memory(paths[2]), memory(paths[3]), String::new()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_profile_counters() {
        let text = r#"{"stats":[{"name":"wasmcustom.portcullis.profile.parse_ns","value":1500},{"name":"wasmcustom.portcullis.profile.parse_n","value":3},
            {"name":"wasmcustom.portcullis.profile.wasm_memory_bytes","value":65536},{"name":"other","value":1}]}"#;
        let c = parse(text).unwrap();
        assert_eq!(c.phases.get("parse"), Some(&(1500, 3)));
        assert_eq!(c.memory, 65536);
    }
}
