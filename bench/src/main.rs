//! `portcullis-bench`: runs every benchmark (see `make bench`), prints one table and writes
//! the results as JSON; `compare` puts two such files side by side.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis_bench::{compare, report, responder, run};

#[derive(Parser)]
#[command(name = "portcullis-bench", about = "Portcullis benchmarks (run through `make bench`)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where to write the results JSON (a copy also goes to target/bench/history/).
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Smaller counts, for checking that everything runs (not for numbers).
    #[arg(long)]
    quick: bool,
    /// Do not read criterion's estimates (when only iterating on the end-to-end part).
    #[arg(long)]
    skip_micro: bool,
    /// Run only these phases (repeatable; default all), e.g. to attach a profiler.
    #[arg(long, value_enum)]
    only: Vec<run::Phase>,
}

#[derive(Subcommand)]
enum Command {
    /// Compare two results files (e.g. from two commits).
    Compare { old: PathBuf, new: PathBuf },
    /// Time from a gateway decision's response to its record being readable in the audit log.
    AuditLatency {
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// Internal: the static JSON-RPC upstream.
    #[command(name = "__responder", hide = true)]
    Responder {
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        tls: portcullis_runner::service::tls::ServerTlsArgs,
        #[arg(long)]
        gateway_id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Responder { listen, tls, gateway_id }) => responder::serve(listen, &tls, gateway_id),
        Some(Command::Compare { old, new }) => compare::run(&old, &new),
        Some(Command::AuditLatency { requests }) => audit_latency(requests),
        None => bench(cli.out, cli.quick, cli.skip_micro, cli.only),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn audit_latency(requests: usize) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(portcullis_bench::audit_latency::run(&root, requests))
}

fn bench(out: PathBuf, quick: bool, skip_micro: bool, only: Vec<run::Phase>) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target_dir = if target_dir.is_absolute() { target_dir } else { root.join(target_dir) };
    let out = if out.is_absolute() { out } else { root.join(out) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // A last bound on everything (each phase bounds its own loops far below this).
    let limit = std::time::Duration::from_secs(20 * 60);
    let opts = run::Options { root, target_dir: target_dir.clone(), quick, skip_micro, only };
    let mut results = rt
        .block_on(async { tokio::time::timeout(limit, run::run(opts)).await })
        .map_err(|_| anyhow::anyhow!("the benchmark did not finish within {limit:?}"))??;
    let table = report::build(&mut results);
    println!("{}", table.render());
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &json).with_context(|| format!("writing {}", out.display()))?;
    let history = target_dir.join("bench/history");
    std::fs::create_dir_all(&history)?;
    let short = results.git_commit.get(..12).unwrap_or(&results.git_commit);
    let dirty = if results.git_dirty { "-dirty" } else { "" };
    std::fs::write(history.join(format!("{}-{short}{dirty}.json", results.started_unix)), &json)?;
    println!("{}; results: {}; wall {:.0}s (end-to-end part)", report::summary(&results), out.display(), results.wall_s);
    println!("compare two runs: cargo run --release -p portcullis-bench -- compare OLD.json {}", out.display());
    Ok(())
}
