//! The orchestrator: starts every process on loopback, runs each measurement bounded in
//! count and time, and collects [`Results`].
//!
//! Topology, per upstream kind (static responder, then real runner):
//!
//! ```text
//! load generator ─mTLS─► Envoy bare      ─mTLS─► upstream A
//! load generator ─mTLS─► Envoy+filter    ─mTLS─► upstream B
//! load generator ─mTLS─► Envoy native    ─mTLS─► upstream C   (static only: the references)
//! load generator ─mTLS─► Envoy floor     ─mTLS─► upstream D
//! load generator ─mTLS─► Envoy floor+sig ─mTLS─► upstream E
//! ```
//!
//! All stacks run at once and every measurement alternates between them in blocks (bare,
//! filter, native, ..., then the reverse), so that the noise of a shared 2-core machine falls
//! on all of them alike instead of on whichever ran last (see `blocks`). Each stack has its
//! own upstream process so that memory and CPU are attributable.

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

use crate::blocks::{self, Stack};
use crate::envoy::{self, Envoy, RenderInput, Variant};
use crate::load::{self, Call, Minter};
use crate::native::{self, ReaderRules};
use crate::procs::{self, Proc};
use crate::results::{Decision, E2e, Host, Path, Results, Upstream};
use crate::stats::{diff_buckets, summarize_buckets, Summary};
use crate::{micro, payload, sandbox_bench};

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
    /// Requests per path in the profile pass (c=1).
    profile_c1: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        // Sized so that this phase takes about 3 minutes on 2 cores (`make bench` should finish
        // in 15 from a fresh clone; building takes most of it), with each figure still over
        // 1000+ samples. The static memory check (five stacks) is the longest step: 50k calls
        // per stack still shows a leak of 100 bytes per call as 5 MiB of growth; 600 sandboxed
        // calls through the runner, a leak of 10 KiB per call as 6 MiB.
        let full = Plan {
            rounds: 4,
            static_c1: 1200,
            c32_block_time: Duration::from_millis(1500),
            c32_block_cap: 4000,
            runner_allow_c1: 160,
            runner_deny_c1: 400,
            runner_c32_block_time: Duration::from_millis(1500),
            static_memory_calls: 50_000,
            runner_memory_calls: 600,
            memory_checkpoints: 5,
            sandbox_n: 120,
            profile_c1: 600,
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
            profile_c1: 200,
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
    /// The floor module (`bench/floor`), for the static phase's floor stacks.
    floor_wasm: PathBuf,
    pki: DevPki,
    template: String,
    plugin_config: String,
    /// The reader's rules, for the native stack.
    native: ReaderRules,
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
        phase_profile: Vec::new(),
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
        if upstream == Upstream::Static {
            eprintln!("== profile pass (filter with profiling on, static upstream, c=1)");
            results.phase_profile = profile_phase(&ctx).await.context("profile pass")?;
        }
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
    let floor_wasm = opts.target_dir.join("wasm32-wasip1/wasm/portcullis_bench_floor.wasm");
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
    let plugin_config = bundle::plugin_config(&bundle::load_policy(&root.join("policies"), false)?, &root.join("catalog/example.yaml"), &pki.ticket_signing_key, &users)?;
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
        floor_wasm: std::path::absolute(&floor_wasm)?,
        native: native::reader_rules(root)?,
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

/// Starts the upstream of `kind` for stack `variant`; `tag` ends its log's name.
async fn start_upstream(ctx: &Ctx, kind: Upstream, variant: Variant, tag: &str) -> Result<(Proc, std::net::SocketAddr)> {
    let addr = procs::free_port()?;
    let log = ctx.state.join(format!("{}-{}{tag}.log", kind.label(), variant.label()));
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
                .arg("--policies")
                .arg(ctx.root.join("policies"))
                .arg("--ticket-public-key")
                .arg(&ctx.pki.ticket_public_key)
                // Each runner its own state (plans, seen tickets, audit log).
                .arg("--state-dir")
                .arg(ctx.state.join(format!("runner-{}", variant.label())))
                .arg("--signing-key")
                .arg(&ctx.pki.runner_signing_key);
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

/// Starts Envoy `variant` and its own upstream of `kind`; `profiled`: the filter with its
/// `profile` setting on ([`crate::phases`]).
async fn start_stack(ctx: &Ctx, kind: Upstream, variant: Variant, profiled: bool) -> Result<Stack> {
    let tag = if profiled { "-profiled" } else { "" };
    let (upstream, upstream_addr) = start_upstream(ctx, kind, variant, tag).await?;
    let (listen, admin) = (procs::free_port()?, procs::free_port()?);
    let (wasm, plugin_config) = match variant {
        Variant::Floor | Variant::FloorSigned => {
            ensure!(ctx.floor_wasm.is_file(), "{} is missing: build it with `make bench` (or `cargo build -p portcullis-bench-floor --target wasm32-wasip1 --profile wasm`)", ctx.floor_wasm.display());
            let pem = String::from_utf8(ctx.signing_key.clone())?;
            let config = match variant {
                Variant::FloorSigned => serde_json::json!({ "sign": true, "signing_key_pem": pem }),
                _ => serde_json::json!({ "sign": false }),
            };
            (&ctx.floor_wasm, config.to_string())
        }
        _ if profiled => {
            let mut config: serde_json::Value = serde_json::from_str(&ctx.plugin_config)?;
            config["profile"] = serde_json::Value::Bool(true);
            (&ctx.wasm, config.to_string())
        }
        _ => (&ctx.wasm, ctx.plugin_config.clone()),
    };
    let config = envoy::render_config(&RenderInput {
        template: &ctx.template,
        listen,
        upstream: upstream_addr,
        admin,
        wasm,
        plugin_config_json: &plugin_config,
        pki: &ctx.pki,
        variant,
        native: &ctx.native,
    })?;
    let name = format!("envoy-{}-{}{tag}", kind.label(), variant.label());
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

/// The request of `path` in `variant` against `kind`, and what a correct answer looks like;
/// `None` where the variant has no such path (the floor never denies).
fn call_for(kind: Upstream, path: Path, variant: Variant) -> Result<Option<(Call, String)>> {
    let (tool, arguments) = match path {
        Path::Allow | Path::Fresh => ("word_count", payload::word_count_arguments()),
        Path::FreshRead => ("list_pods", payload::list_pods_arguments()),
        Path::Deny => ("apply_config", payload::apply_config_arguments()),
    };
    let mut mint_tickets = false;
    let (status, body, what) = match (kind, path, variant) {
        (_, Path::Deny, Variant::Filter) => (200, "-32001", "filter denies (JSON-RPC error, HTTP 200), upstream never hit".to_owned()),
        (Upstream::Static, Path::Allow, Variant::Filter) => (200, "\"result\"", "filter allows (cached decision) + signs ticket → static".into()),
        (Upstream::Static, Path::Fresh, Variant::Filter) => (200, "\"result\"", "filter: new text, which policy does not read (cached decision) + signs ticket → static".into()),
        (Upstream::Static, Path::FreshRead, Variant::Filter) => (200, "\"result\"", "filter: new namespace, which policy reads (evaluates policy) + signs ticket → static".into()),
        (Upstream::Runner, Path::Fresh | Path::FreshRead, _) => bail!("the runner phase has no allow-new-args path"),
        (Upstream::Static, _, Variant::Bare) => (200, "\"result\"", "same request passes through → static".into()),
        (Upstream::Runner, Path::Allow, Variant::Filter) => (200, "\"isError\":false", "filter allows + ticket → runner runs sandbox".into()),
        (Upstream::Runner, Path::Allow, Variant::Bare) => {
            mint_tickets = true;
            (200, "\"isError\":false", "client-minted ticket → runner runs sandbox".into())
        }
        (Upstream::Runner, Path::Deny, Variant::Bare) => (403, "-32002", "passes through → runner refuses (no ticket)".into()),
        (Upstream::Runner, _, _) => bail!("the references run against the static upstream only"),
        (Upstream::Static, Path::Deny, Variant::Floor | Variant::FloorSigned) => return Ok(None),
        (Upstream::Static, Path::Deny, Variant::Native) => (403, "-32001", "RBAC denies (403, local reply restated as a JSON-RPC error), upstream never hit".into()),
        (Upstream::Static, _, Variant::Native) => (200, "\"result\"", "MCP filter parses + RBAC allows (no cache) → static".into()),
        (Upstream::Static, _, Variant::Floor) => (200, "\"result\"", "floor: parse, hash, unsigned ticket → static".into()),
        (Upstream::Static, _, Variant::FloorSigned) => (200, "\"result\"", "floor: parse, hash, Ed25519-signed ticket → static".into()),
    };
    Ok(Some((Call { tool, arguments, expect_status: status, expect_body: body, mint_tickets, fresh_arguments: matches!(path, Path::Fresh | Path::FreshRead) }, what)))
}

async fn upstream_phase(ctx: &Ctx, kind: Upstream, results: &mut Results) -> Result<()> {
    let plan = ctx.plan;
    // The references are measured beside Portcullis against the static upstream, where the
    // proxy is all there is to measure.
    let (variants, paths): (&[Variant], &[Path]) = match kind {
        Upstream::Static => (&Variant::ALL, &Path::ALL),
        Upstream::Runner => (&[Variant::Bare, Variant::Filter], &[Path::Allow, Path::Deny]),
    };
    let mut stacks = Vec::new();
    for &variant in variants {
        stacks.push(start_stack(ctx, kind, variant, false).await?);
    }
    let filter = stacks.iter().position(|s| s.variant == Variant::Filter).context("no filter stack")?;
    for &path in paths {
        let mut calls = Vec::new();
        let mut whats = Vec::new();
        for s in &stacks {
            let call = call_for(kind, path, s.variant)?;
            whats.push(call.as_ref().map(|c| c.1.clone()).unwrap_or_default());
            calls.push(call.map(|c| Arc::new(c.0)));
        }
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
            let outs = blocks::interleaved(&mut stacks, &calls, concurrency, plan.rounds, cap, time).await?;
            for ((s, out), what) in stacks.iter().zip(outs).zip(&whats) {
                let Some((mut o, cpu)) = out else { continue };
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
                    "     {:<9} p50/p90/p99 {} µs, {:.0} rps, cpu µs/req envoy {:.0} upstream {:.0} loadgen {:.0}",
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
    let (total, block_time) = match kind {
        Upstream::Static => (plan.static_memory_calls, Duration::from_secs(60)),
        Upstream::Runner => (plan.runner_memory_calls, Duration::from_secs(40)),
    };
    let mut calls = Vec::new();
    for s in &stacks {
        calls.push(Arc::new(call_for(kind, Path::Allow, s.variant)?.context("no allow path")?.0));
    }
    results.memory.extend(blocks::memory(kind, &mut stacks, &calls, total, plan.memory_checkpoints, block_time).await?);
    for s in &mut stacks {
        s.envoy.proc.check_alive()?;
        s.upstream.check_alive()?;
    }
    Ok(())
}

/// The profile pass ([`crate::phases`]): every path once more, on its own profiled stack.
async fn profile_phase(ctx: &Ctx) -> Result<Vec<crate::phases::PathProfile>> {
    let mut stack = start_stack(ctx, Upstream::Static, Variant::Filter, true).await?;
    let mut out = Vec::new();
    for path in Path::ALL {
        let (call, _) = call_for(Upstream::Static, path, Variant::Filter)?.context("the filter has every path")?;
        let profile = crate::phases::measure(&mut stack, path, &Arc::new(call), ctx.plan.profile_c1).await?;
        let total: f64 = profile.phases.iter().map(|p| p.us_per_request).sum();
        eprintln!("   {}: {:.1} µs per request in the filter's callbacks over {} requests", path.label(), total, profile.requests);
        out.push(profile);
    }
    stack.envoy.proc.check_alive()?;
    Ok(out)
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
