//! Everything one `make bench` run measured, as written to `target/bench/results.json`.

use serde::{Deserialize, Serialize};

use crate::envoy::Variant;
use crate::micro::Estimate;
use crate::sandbox_bench::SandboxResult;
use crate::stats::Summary;

/// Bumped whenever a field changes meaning, so `compare` can refuse to mix schemas.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upstream {
    /// The static JSON-RPC responder: isolates the proxy.
    Static,
    /// The real runner (ticket verification, MCP, and for allowed calls a sandboxed tool).
    Runner,
}

impl Upstream {
    pub fn label(self) -> &'static str {
        match self {
            Upstream::Static => "static",
            Upstream::Runner => "runner",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// reader → word_count, the same arguments every time: the filter allows it (after the
    /// first call, from its decision cache) and signs a ticket.
    Allow,
    /// reader → word_count with a new `text` on every request. The policy does not read `text`
    /// (it names the arguments it reads), so after the first call the decision cache answers;
    /// a bundle without `argument_names` evaluates every one. Static upstream only.
    Fresh,
    /// reader → list_pods with a new `namespace` on every request: an argument the policy reads
    /// (`argument_names`), so every decision evaluates the policy. Static upstream only.
    FreshRead,
    /// reader → apply_config: the filter answers the denial itself; without the filter the same
    /// request passes through to the upstream.
    Deny,
}

impl Path {
    /// In table order.
    pub const ALL: [Path; 4] = [Path::Allow, Path::Fresh, Path::FreshRead, Path::Deny];

    pub fn label(self) -> &'static str {
        match self {
            Path::Allow => "allow",
            Path::Fresh => "allow-new-args",
            Path::FreshRead => "allow-new-read-args",
            Path::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub kernel: String,
    pub envoy: String,
    pub loadavg_at_start: String,
}

/// One (upstream, path, concurrency, variant) cell of the latency/throughput matrix.
#[derive(Debug, Clone, Serialize)]
pub struct E2e {
    pub upstream: Upstream,
    pub path: Path,
    pub concurrency: usize,
    pub variant: Variant,
    /// What this request does in this variant.
    pub what: String,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Connections the server closed and the client re-opened (outside the clock).
    pub reconnects: u64,
    pub elapsed_s: f64,
    pub rps: f64,
    pub latency_us: Summary,
    /// CPU microseconds per completed request, by process.
    pub cpu_us_per_request: CpuPerRequest,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuPerRequest {
    pub envoy: f64,
    pub upstream: f64,
    pub load_generator: f64,
}

/// The filter's own decision-time histogram over one path's runs.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub upstream: Upstream,
    pub path: Path,
    /// Concurrency of the runs (warm-up included) the histogram covered.
    pub concurrency: usize,
    /// From the histogram's buckets (2 significant digits), microseconds.
    pub summary_us: Summary,
}

/// RSS of one process at checkpoints of a long run.
#[derive(Debug, Clone, Serialize)]
pub struct MemorySeries {
    pub process: String,
    pub upstream: Upstream,
    pub variant: Variant,
    /// (calls completed through this process's stack, VmRSS KiB).
    pub checkpoints: Vec<(u64, u64)>,
    /// RSS at the last checkpoint minus RSS at the first checkpoint after warm-up, KiB.
    pub growth_kib: i64,
    pub growth_flagged: bool,
    /// Envoy's heap at the end (tcmalloc, from its admin `/memory`); none for an upstream.
    pub heap: Option<Heap>,
}

/// Envoy's tcmalloc heap, KiB: what of its RSS is live allocations, what is freed but still
/// mapped (the page heap's free pages and the thread caches), and what was returned to the OS.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Heap {
    pub allocated_kib: u64,
    pub free_mapped_kib: u64,
    pub thread_caches_kib: u64,
    pub released_kib: u64,
    /// The heap's resident part in all (tcmalloc's own estimate, metadata included).
    pub physical_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    pub unit: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub schema: u32,
    pub started_unix: u64,
    pub wall_s: f64,
    pub git_commit: String,
    pub git_dirty: bool,
    pub quick: bool,
    pub host: Host,
    pub e2e: Vec<E2e>,
    pub decisions: Vec<Decision>,
    /// The profile pass: the filter's time inside V8 by phase, per path (static upstream, c=1).
    pub phase_profile: Vec<crate::phases::PathProfile>,
    /// Envoy's own `P0..P100` line for the decision histogram at the end of each phase.
    pub decision_admin_text: Vec<(Upstream, String)>,
    pub sandbox: Vec<SandboxResult>,
    pub micro: Vec<Estimate>,
    pub memory: Vec<MemorySeries>,
    pub targets: Vec<Target>,
}

impl Results {
    pub fn e2e(&self, upstream: Upstream, path: Path, concurrency: usize, variant: Variant) -> Option<&E2e> {
        self.e2e
            .iter()
            .find(|e| e.upstream == upstream && e.path == path && e.concurrency == concurrency && e.variant == variant)
    }
}
