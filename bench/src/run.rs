//! The orchestrator: starts every process on loopback, runs each measurement bounded in
//! count and time, and collects [`Results`].
//!
//! Topology, per upstream kind (static responder, then real runner):
//!
//! ```text
//! load generator ─mTLS─► Envoy bare   ─mTLS─► upstream A
//! load generator ─mTLS─► Envoy+filter ─mTLS─► upstream B
//! ```
//!
//! Both stacks run at once and every measurement alternates between them in blocks (bare,
//! filter, filter, bare, ...), so that the noise of a shared 2-core machine falls on both
//! sides alike instead of on whichever ran second. Each stack has its own upstream process so
//! that memory and CPU are attributable.

use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use portcullis_runner::devstack::certs::{self, DevPki};
use portcullis_runner::sandbox::JobSpec;
use portcullis_runner::devstack::up::{DEV_AGENTS, TRUST_DOMAIN};
use portcullis_runner::devstack::bundle;
use portcullis_runner::service::tools;

use crate::envoy::{self, Envoy, RenderInput, Variant};
use crate::load::{self, Agent, Call, Minter, Outcome};
use crate::procs::{self, Proc};
use crate::results::{CpuPerRequest, Decision, E2e, Host, MemorySeries, Path, Results, Upstream};
use crate::stats::{diff_buckets, summarize_buckets, Summary};
use crate::{cpu, micro, payload, sandbox_bench};

pub struct Options {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub quick: bool,
    /// Skip reading the criterion estimates (for iterating on the end-to-end part only).
    pub skip_micro: bool,
    /// Run only these phases (all when empty): for iterating, and for attaching a profiler.
    pub only: Vec<Phase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Envoy ± filter in front of the static responder (latency, throughput, memory).
    Static,
    /// Envoy ± filter in front of the real runner.
    Runner,
    /// Local sandbox vs bare spawn.
    Sandbox,
}

/// Counts and time limits; every loop is bounded by both.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rounds: usize,
    static_c1: u64,
    c32_block_time: Duration,
    c32_block_cap: u64,
    runner_allow_c1: u64,
    runner_deny_c1: u64,
    runner_c32_block_time: Duration,
    static_memory_calls: u64,
    runner_memory_calls: u64,
    memory_checkpoints: u64,
    sandbox_n: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        // Sized so that `make bench` from a fresh clone stays under 15 minutes on 2 cores
        // (about 3 minutes of this phase), with each figure still over 1000+ samples.
        let full = Plan {
            rounds: 4,
            static_c1: 1200,
            c32_block_time: Duration::from_millis(1500),
            c32_block_cap: 4000,
            runner_allow_c1: 160,
            runner_deny_c1: 400,
            runner_c32_block_time: Duration::from_millis(1500),
            static_memory_calls: 100_000,
            runner_memory_calls: 1500,
            memory_checkpoints: 5,
            sandbox_n: 120,
        };
        if !quick {
            return full;
        }
        Plan {
            rounds: 2,
            static_c1: 300,
            c32_block_time: Duration::from_millis(1000),
            c32_block_cap: 2000,
            runner_allow_c1: 40,
            runner_deny_c1: 200,
            runner_c32_block_time: Duration::from_millis(1000),
            static_memory_calls: 10_000,
            runner_memory_calls: 300,
            memory_checkpoints: 3,
            sandbox_n: 30,
        }
    }
}

/// Everything the phases share.
struct Ctx {
    root: PathBuf,
    state: PathBuf,
    portcullis: PathBuf,
    envoy_bin: PathBuf,
    wasm: PathBuf,
    pki: DevPki,
    template: String,
    plugin_config: String,
    reader_tls: Arc<rustls::ClientConfig>,
    reader_id: String,
    signing_key: Vec<u8>,
    plan: Plan,
}

pub async fn run(opts: Options) -> Result<Results> {
    let started = Instant::now();
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let ctx = prepare(&opts)?;
    let host = Host {
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        envoy: envoy::envoy_version(&ctx.envoy_bin),
        loadavg_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned(),
    };
    let (git_commit, git_dirty) = git_state(&opts.root);
    let micro = if opts.skip_micro { Vec::new() } else { micro::read_all(&micro::criterion_dir(&opts.target_dir))? };
    let mut results = Results {
        schema: crate::results::SCHEMA,
        started_unix,
        wall_s: 0.0,
        git_commit,
        git_dirty,
        quick: opts.quick,
        host,
        e2e: Vec::new(),
        decisions: Vec::new(),
        decision_admin_text: Vec::new(),
        sandbox: Vec::new(),
        micro,
        memory: Vec::new(),
        targets: Vec::new(),
    };

    let wanted = |p: Phase| opts.only.is_empty() || opts.only.contains(&p);
    for (upstream, phase) in [(Upstream::Static, Phase::Static), (Upstream::Runner, Phase::Runner)] {
        if !wanted(phase) {
            continue;
        }
        eprintln!("== {} upstream", upstream.label());
        upstream_phase(&ctx, upstream, &mut results).await.with_context(|| format!("{} upstream phase", upstream.label()))?;
    }
    if wanted(Phase::Sandbox) {
        eprintln!("== local sandbox vs bare spawn");
        results.sandbox = sandbox_phase(&ctx).await?;
    }
    results.wall_s = started.elapsed().as_secs_f64();
    Ok(results)
}

fn prepare(opts: &Options) -> Result<Ctx> {
    let root = &opts.root;
    // $PORTCULLIS_BIN, as for the e2e tests: e.g. to benchmark a runner built elsewhere.
    let portcullis = std::env::var_os("PORTCULLIS_BIN").map(PathBuf::from).unwrap_or_else(|| opts.target_dir.join("release/portcullis"));
    let wasm = opts.target_dir.join("wasm32-wasip1/wasm/portcullis_filter.wasm");
    ensure!(portcullis.is_file(), "{} is missing: run `make build` (make bench does)", portcullis.display());
    ensure!(wasm.is_file(), "{} is missing: run `make build` (make bench does)", wasm.display());
    let envoy_bin = envoy::find_envoy(root)?;
    let state = opts.target_dir.join("bench/state");
    if state.exists() {
        std::fs::remove_dir_all(&state).with_context(|| format!("clearing {}", state.display()))?;
    }
    std::fs::create_dir_all(&state)?;
    let pki = certs::ensure(&state.join("certs"), TRUST_DOMAIN, DEV_AGENTS).context("dev PKI")?;
    let users = portcullis_runner::devstack::users::dev_users_config(&pki.user_issuer)?;
    let plugin_config = bundle::plugin_config(&root.join("policies"), &root.join("catalog/example.yaml"), &pki.ticket_signing_key, &users)?;
    let reader = pki.agent("reader").context("no reader agent in the dev PKI")?;
    let reader_tls = crate::http::tls_config(&std::fs::read(&pki.ca_cert)?, &std::fs::read(&reader.cert)?, &std::fs::read(&reader.key)?)?;
    Ok(Ctx {
        root: root.clone(),
        template: std::fs::read_to_string(root.join("envoy/envoy.yaml")).context("reading envoy/envoy.yaml")?,
        reader_id: reader.spiffe_id.clone(),
        reader_tls,
        signing_key: std::fs::read(&pki.ticket_signing_key)?,
        plugin_config,
        state,
        portcullis,
        envoy_bin,
        wasm: std::path::absolute(&wasm)?,
        pki,
        plan: Plan::new(opts.quick),
    })
}

fn git_state(root: &FsPath) -> (String, bool) {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

/// One Envoy and its own upstream process.
struct Stack {
    variant: Variant,
    envoy: Envoy,
    upstream: Proc,
    agents: Vec<Agent>,
}

async fn start_upstream(ctx: &Ctx, kind: Upstream, variant: Variant) -> Result<(Proc, std::net::SocketAddr)> {
    let addr = procs::free_port()?;
    let log = ctx.state.join(format!("{}-{}.log", kind.label(), variant.label()));
    let gateway_id = ctx.pki.gateway_spiffe_id();
    let mut cmd = match kind {
        Upstream::Static => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("__responder").arg("--listen").arg(addr.to_string());
            cmd
        }
        Upstream::Runner => {
            let mut cmd = Command::new(&ctx.portcullis);
            cmd.arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--catalog")
                .arg(ctx.root.join("catalog/example.yaml"))
                .arg("--ticket-public-key")
                .arg(&ctx.pki.ticket_public_key);
            cmd
        }
    };
    cmd.arg("--tls-cert")
        .arg(&ctx.pki.runner.cert)
        .arg("--tls-key")
        .arg(&ctx.pki.runner.key)
        .arg("--client-ca")
        .arg(&ctx.pki.ca_cert)
        .arg("--gateway-id")
        .arg(&gateway_id)
        .current_dir(&ctx.state);
    let mut proc = Proc::spawn(&format!("{} upstream ({})", kind.label(), variant.label()), cmd, &log)?;
    procs::wait_listening(&mut proc, addr, Duration::from_secs(60)).await?;
    Ok((proc, addr))
}

async fn start_stack(ctx: &Ctx, kind: Upstream, variant: Variant) -> Result<Stack> {
    let (upstream, upstream_addr) = start_upstream(ctx, kind, variant).await?;
    let (listen, admin) = (procs::free_port()?, procs::free_port()?);
    let config = envoy::render_config(&RenderInput {
        template: &ctx.template,
        listen,
        upstream: upstream_addr,
        admin,
        wasm: &ctx.wasm,
        plugin_config_json: &ctx.plugin_config,
        pki: &ctx.pki,
        variant,
    })?;
    let name = format!("envoy-{}-{}", kind.label(), variant.label());
    let config_path = ctx.state.join(format!("{name}.yaml"));
    std::fs::write(&config_path, config)?;
    let envoy = Envoy::start(&ctx.envoy_bin, &config_path, &ctx.state.join(format!("{name}.log")), listen, admin, variant).await?;
    ensure!(envoy.proc.comm() == "envoy", "pid {} is {:?}, not envoy: RSS would be wrong", envoy.proc.pid(), envoy.proc.comm());
    // Without the filter, the agents add the caller assertions the runner requires themselves.
    let minter = match (kind, variant) {
        (Upstream::Runner, Variant::Bare) => Some(Arc::new(Minter::new(&ctx.signing_key, &ctx.reader_id)?)),
        _ => None,
    };
    let agents = load::agents(&ctx.reader_tls, envoy.listen, 32, kind == Upstream::Runner, minter)
        .await
        .with_context(|| format!("connecting agents through {name}"))?;
    Ok(Stack { variant, envoy, upstream, agents })
}

/// The request of `path` in `variant` against `kind`, and what a correct answer looks like.
fn call_for(kind: Upstream, path: Path, variant: Variant) -> Result<(Call, String)> {
    let (tool, arguments) = match path {
        Path::Allow | Path::Fresh => ("word_count", payload::word_count_arguments()),
        Path::Deny => ("apply_config", payload::apply_config_arguments()),
    };
    let mut mint_tickets = false;
    let (status, body, what) = match (kind, path, variant) {
        (_, Path::Deny, Variant::Filter) => (200, "-32001", "filter denies (JSON-RPC error, HTTP 200), upstream never hit".to_owned()),
        (Upstream::Static, Path::Allow, Variant::Filter) => (200, "\"result\"", "filter allows (cached decision) + signs ticket → static".into()),
        (Upstream::Static, Path::Fresh, Variant::Filter) => (200, "\"result\"", "filter evaluates policy + signs ticket → static".into()),
        (Upstream::Runner, Path::Fresh, _) => bail!("the runner phase has no allow-new-args path"),
        (Upstream::Static, _, Variant::Bare) => (200, "\"result\"", "same request passes through → static".into()),
        (Upstream::Runner, Path::Allow, Variant::Filter) => (200, "\"isError\":false", "filter allows + ticket → runner runs sandbox".into()),
        (Upstream::Runner, Path::Allow, Variant::Bare) => {
            mint_tickets = true;
            (200, "\"isError\":false", "client-minted ticket → runner runs sandbox".into())
        }
        (Upstream::Runner, Path::Deny, Variant::Bare) => (403, "-32002", "passes through → runner refuses (no ticket)".into()),
    };
    Ok((Call { tool, arguments, expect_status: status, expect_body: body, mint_tickets, fresh_arguments: path == Path::Fresh }, what))
}

/// Runs `rounds` blocks per stack, alternating the order each round, after a warm-up.
async fn interleaved(
    stacks: &mut [Stack; 2],
    calls: &[Arc<Call>; 2],
    concurrency: usize,
    rounds: usize,
    block_cap: u64,
    block_time: Duration,
) -> Result<[(Outcome, CpuPerRequest); 2]> {
    for (s, call) in stacks.iter_mut().zip(calls) {
        let warm = if concurrency == 1 { 50 } else { 20 * concurrency as u64 };
        let o = load::run(&mut s.agents, call, concurrency, warm, Duration::from_secs(10)).await?;
        check_errors(s, &o, "warm-up")?;
    }
    let mut out: [(Outcome, CpuSample); 2] = Default::default();
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let s = &mut stacks[i];
            let before = CpuSample::take(s)?;
            let o = load::run(&mut s.agents, &calls[i], concurrency, block_cap, block_time).await?;
            let after = CpuSample::take(s)?;
            check_errors(s, &o, "measurement")?;
            out[i].1.add(&before, &after);
            out[i].0.absorb(o);
        }
    }
    Ok(out.map(|(o, cpu)| {
        let n = o.latencies_ns.len().max(1) as f64;
        let per = CpuPerRequest { envoy: cpu.envoy as f64 / n, upstream: cpu.upstream as f64 / n, load_generator: cpu.own as f64 / n };
        (o, per)
    }))
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
fn check_errors(s: &Stack, o: &Outcome, what: &str) -> Result<()> {
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

async fn upstream_phase(ctx: &Ctx, kind: Upstream, results: &mut Results) -> Result<()> {
    let plan = ctx.plan;
    let mut stacks = [start_stack(ctx, kind, Variant::Bare).await?, start_stack(ctx, kind, Variant::Filter).await?];
    let filter = 1;
    let paths: &[Path] = match kind {
        Upstream::Static => &Path::ALL,
        Upstream::Runner => &[Path::Allow, Path::Deny],
    };
    for &path in paths {
        let mut calls = Vec::new();
        let mut whats = Vec::new();
        for s in &stacks {
            let (call, what) = call_for(kind, path, s.variant)?;
            calls.push(Arc::new(call));
            whats.push(what);
        }
        let calls: [Arc<Call>; 2] = [calls[0].clone(), calls[1].clone()];
        for concurrency in [1usize, 32] {
            let before = stacks[filter].envoy.decision_buckets().await?;
            let (cap, time) = match (kind, path, concurrency) {
                (Upstream::Static, _, 1) => (plan.static_c1 / plan.rounds as u64, Duration::from_secs(30)),
                (Upstream::Runner, Path::Allow, 1) => (plan.runner_allow_c1 / plan.rounds as u64, Duration::from_secs(30)),
                (Upstream::Runner, Path::Deny, 1) => (plan.runner_deny_c1 / plan.rounds as u64, Duration::from_secs(30)),
                (Upstream::Static, _, _) => (plan.c32_block_cap, plan.c32_block_time),
                (Upstream::Runner, _, _) => (plan.c32_block_cap, plan.runner_c32_block_time),
            };
            eprintln!("   {} c={concurrency}: {} rounds × (≤{cap} requests, ≤{time:?}) per stack", path.label(), plan.rounds);
            let outs = interleaved(&mut stacks, &calls, concurrency, plan.rounds, cap, time).await?;
            for ((s, (mut o, cpu)), what) in stacks.iter().zip(outs).zip(&whats) {
                let rps = o.rps();
                let e = E2e {
                    upstream: kind,
                    path,
                    concurrency,
                    variant: s.variant,
                    what: what.clone(),
                    requests: o.requests(),
                    errors: o.errors,
                    first_error: o.first_error.take(),
                    reconnects: o.reconnects,
                    elapsed_s: o.elapsed.as_secs_f64(),
                    rps,
                    latency_us: Summary::from_nanos(&mut o.latencies_ns),
                    cpu_us_per_request: cpu,
                };
                eprintln!(
                    "     {:<6} p50/p90/p99 {} µs, {:.0} rps, cpu µs/req envoy {:.0} upstream {:.0} loadgen {:.0}",
                    s.variant.label(),
                    e.latency_us.triple(),
                    e.rps,
                    cpu.envoy,
                    cpu.upstream,
                    cpu.load_generator
                );
                results.e2e.push(e);
            }
            // Warm-up included: it is the same request on the same path.
            let after = stacks[filter].envoy.decision_buckets().await?;
            let summary_us = summarize_buckets(&diff_buckets(&before, &after));
            eprintln!("     in-filter decision: p50/p90/p99 {} µs over {} decisions", summary_us.triple(), summary_us.count);
            results.decisions.push(Decision { upstream: kind, path, concurrency, summary_us });
        }
    }
    results.decision_admin_text.push((kind, stacks[filter].envoy.decision_text().await?.trim().to_owned()));
    memory_phase(ctx, kind, &mut stacks, results).await?;
    for s in &mut stacks {
        s.envoy.proc.check_alive()?;
        s.upstream.check_alive()?;
    }
    Ok(())
}

/// RSS of each Envoy and upstream at checkpoints over a long allow-path run at c=32,
/// alternating the stacks block by block.
async fn memory_phase(ctx: &Ctx, kind: Upstream, stacks: &mut [Stack; 2], results: &mut Results) -> Result<()> {
    let plan = ctx.plan;
    let (total, block_time) = match kind {
        Upstream::Static => (plan.static_memory_calls, Duration::from_secs(60)),
        Upstream::Runner => (plan.runner_memory_calls, Duration::from_secs(40)),
    };
    let block = total / plan.memory_checkpoints;
    eprintln!("   memory: {total} allow-path calls per stack at c=32, RSS every {block}");
    let mut calls = Vec::new();
    for s in stacks.iter() {
        calls.push(Arc::new(call_for(kind, Path::Allow, s.variant)?.0));
    }
    let mut series: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); 2];
    let mut done = [0u64; 2];
    for (i, s) in stacks.iter().enumerate() {
        series[i].push((0, s.envoy.proc.rss_kib()?, s.upstream.rss_kib()?));
    }
    for round in 0..plan.memory_checkpoints {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let s = &mut stacks[i];
            let o = load::run(&mut s.agents, &calls[i], 32, block, block_time).await?;
            check_errors(s, &o, "memory run")?;
            done[i] += o.latencies_ns.len() as u64;
            series[i].push((done[i], s.envoy.proc.rss_kib()?, s.upstream.rss_kib()?));
        }
    }
    let upstream_name = match kind {
        Upstream::Static => "responder",
        Upstream::Runner => "runner",
    };
    for (i, s) in stacks.iter().enumerate() {
        for (process, pick) in [("envoy", 1usize), (upstream_name, 2)] {
            let checkpoints: Vec<(u64, u64)> = series[i].iter().map(|p| (p.0, if pick == 1 { p.1 } else { p.2 })).collect();
            let (growth_kib, growth_flagged) = growth(&checkpoints);
            eprintln!(
                "     {process:<9} {:<6} RSS MiB: {}{}",
                s.variant.label(),
                checkpoints.iter().map(|(n, kib)| format!("{}:{:.1}", crate::stats::fmt_count(*n), *kib as f64 / 1024.0)).collect::<Vec<_>>().join(" "),
                if growth_flagged { "  GROWING" } else { "" }
            );
            results.memory.push(MemorySeries { process: process.to_owned(), upstream: kind, variant: s.variant, checkpoints, growth_kib, growth_flagged });
        }
    }
    Ok(())
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

async fn sandbox_phase(ctx: &Ctx) -> Result<Vec<sandbox_bench::SandboxResult>> {
    let catalog = bundle::load_catalog(&ctx.root.join("catalog/example.yaml"))?;
    let word_count = catalog.get("word_count").context("catalog has no word_count")?;
    let args = payload::word_count_arguments();
    let wc_job = tools::job_for(word_count, Some(&args), "bench-word-count")?;
    let true_job = JobSpec {
        job_id: "bench-true".into(),
        command: vec!["true".into()],
        env: Vec::new(),
        stdin: Vec::new(),
        timeout: Duration::from_secs(10),
        max_output_bytes: 64 << 10,
        progress: None,
        ..JobSpec::default()
    };
    // Where the runner puts its job dirs too ($TMPDIR): the teardown cost depends on the file
    // system the job dir is on.
    let temp_root = std::env::temp_dir().join(format!("portcullis-bench-jobs-{}", std::process::id()));
    let n = ctx.plan.sandbox_n;
    let limit = Duration::from_secs(120);
    let mut out = Vec::new();
    for (name, job, expect) in [("word_count", &wc_job, Some("13")), ("true", &true_job, None)] {
        let r = sandbox_bench::measure(&ctx.portcullis, &temp_root, name, job, n, expect, limit).await?;
        eprintln!(
            "   {name}: sandbox p50/p90/p99 {} µs, bare {} µs (N={n} each)",
            r.sandbox_us.triple(),
            r.bare_us.triple()
        );
        out.push(r);
    }
    std::fs::remove_dir(&temp_root).with_context(|| format!("removing {}", temp_root.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::growth;

    #[test]
    fn growth_is_flagged_only_for_a_steady_climb() {
        assert_eq!(growth(&[(0, 50_000), (20, 60_000), (40, 60_100), (60, 60_050)]), (50, false));
        assert!(growth(&[(0, 50_000), (20, 60_000), (40, 64_000), (60, 68_000)]).1);
        assert!(!growth(&[(0, 50_000), (20, 60_000), (40, 70_000), (60, 61_000)]).1);
    }
}
