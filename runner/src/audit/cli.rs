//! `portcullis audit verify|show`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::devstack::certs::RUNNER_SIGNING_PUB;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; name the first broken record or
    /// checkpoint. Exit status 0 intact, 1 broken.
    Verify {
        #[arg(long, default_value = ".portcullis")]
        state_dir: PathBuf,
        /// The log (default: <state-dir>/audit/audit.jsonl).
        #[arg(long)]
        log: Option<PathBuf>,
        /// The checkpoints (default: <state-dir>/audit/checkpoints.jsonl).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The runner's Ed25519 public key, SPKI PEM (default:
        /// <state-dir>/certs/runner-signing-key.pub.pem).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print every record of one call (one decision id), in order. Exit status 1 if none.
    Show {
        #[arg(long)]
        decision: String,
        #[arg(long, default_value = ".portcullis")]
        state_dir: PathBuf,
        /// The log (default: <state-dir>/audit/audit.jsonl).
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { state_dir, log, checkpoints, public_key } => {
            let log = log.unwrap_or_else(|| super::default_log(&state_dir));
            let checkpoints = checkpoints.unwrap_or_else(|| super::default_checkpoints(&state_dir));
            let public_key = public_key.unwrap_or_else(|| state_dir.join("certs").join(RUNNER_SIGNING_PUB));
            let pem = std::fs::read(&public_key).with_context(|| format!("reading the public key {}", public_key.display()))?;
            match super::verify(&log, &checkpoints, &pem) {
                Ok(summary) => {
                    println!("audit: {}: {summary}", log.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(super::Break::Key(e)) => anyhow::bail!("{}: {e}", public_key.display()),
                Err(b) => {
                    println!("audit: {}: BROKEN at {b}", log.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Show { decision, state_dir, log } => {
            let log = log.unwrap_or_else(|| super::default_log(&state_dir));
            let found = show(&log, &decision, &mut std::io::stdout().lock())?;
            if found == 0 {
                eprintln!("audit: no record with decision_id {decision} in {}", log.display());
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes every complete line of `log` whose `decision_id` is `decision` to `out`, in order;
/// returns how many.
pub fn show(log: &Path, decision: &str, out: &mut impl Write) -> anyhow::Result<usize> {
    let file = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut found = 0;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line?;
        let Ok(record) = serde_json::from_slice::<Value>(&line) else { continue };
        if record.get("decision_id").and_then(Value::as_str) == Some(decision) {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            found += 1;
        }
    }
    Ok(found)
}
