//! The audit trail: an append-only, hash-chained JSON Lines log of every gateway decision and
//! every runner event, with Ed25519-signed checkpoints kept in a second, configurable place.
//!
//! # Records
//!
//! One JSON object per line, each made durable (write + `fdatasync`) before
//! [`AuditLog::append`] returns:
//!
//! ```text
//! {"seq":N,"time":"2025-01-01T12:00:00.123Z","event":"...", ...fields..., "prev":"sha256:<hex>","hash":"sha256:<hex>"}
//! ```
//!
//! - `seq` counts from 1 and equals the record's line number.
//! - `hash` is the SHA-256 of the RFC 8785 canonical JSON of the record without `hash`
//!   ([`portcullis_core::plan::canonicalize`]); key order and whitespace in the file do not
//!   matter, content does.
//! - `prev` is the previous record's `hash`; the first record's `prev` is [`GENESIS`], the
//!   SHA-256 of the empty string.
//!
//! # Checkpoints
//!
//! A hash chain alone cannot show that its tail was cut off. Every
//! [`AuditConfig::checkpoint_every_records`] records, and every
//! [`AuditConfig::checkpoint_every`] when something new was appended ([`run_checkpointer`]),
//! one line goes to the checkpoints file:
//! `{"count":N,"head":"sha256:..","time":"..","key_id":"ed25519:<16 hex>","signature":"<base64>"}`,
//! where `head` is the hash of record `count` and `signature` is Ed25519 over the canonical
//! JSON of the line without `signature` ([`checkpoint`]). Keep that file somewhere an
//! attacker who can rewrite the log cannot (another disk, host or account).
//! [`verify()`] checks the chain and every checkpoint against a public key.
//!
//! # Events
//!
//! The `event` names, as constants below: the gateway's decisions ([`GATEWAY_DECISION`],
//! ingested from Envoy's access log by [`ingest_gateway_log`]) and the runner's own events.
//! Every record of one call carries its `decision_id` (the gateway's), so `portcullis audit
//! show --decision ID` prints a call from its decision to its sandbox's teardown.

mod chain;
pub mod interrupted;
pub mod checkpoint;
pub mod cli;
pub mod ingest;
mod log;
mod revlines;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use chain::GENESIS;
pub use checkpoint::run_checkpointer;
pub use ingest::ingest_gateway_log;
pub use log::AuditLog;
pub use verify::{verify, Break, Summary};

/// One gateway decision, from Envoy's access log (allowed, denied, invalid, rate limited, ...;
/// `outcome: "not_decided"` when Envoy answered before the filter decided).
pub const GATEWAY_DECISION: &str = "gateway.decision";
pub const TICKET_ACCEPTED: &str = "ticket.accepted";
pub const TICKET_REFUSED: &str = "ticket.refused";
pub const PLAN_STORED: &str = "plan.stored";
pub const APPROVAL_REQUESTED: &str = "approval.requested";
pub const APPROVAL_GRANTED: &str = "approval.granted";
pub const APPROVAL_DENIED: &str = "approval.denied";
pub const APPROVAL_EXPIRED: &str = "approval.expired";
pub const JOB_STARTED: &str = "job.started";
pub const JOB_FINISHED: &str = "job.finished";
pub const JOB_ABORTED: &str = "job.aborted";
/// The caller cancelled the call (MCP `notifications/cancelled`, or a 2026-07-28 request's
/// connection closed) while its job waited for a sandbox or ran; a running job was killed and
/// its sandbox destroyed before this record. It says how long the job ran (`ran_ms`, 0 when it
/// never started) and who cancelled (the call's requester). No result was sent.
pub const JOB_CANCELLED: &str = "job.cancelled";
pub const SANDBOX_DESTROYED: &str = "sandbox.destroyed";
/// The reaper deleted an expired Kubernetes job namespace (a runner died mid-job; see
/// `service::cluster`).
pub const SANDBOX_REAPED: &str = "sandbox.reaped";

/// The records that close what an earlier record opened: a job's end and its sandbox's. They
/// may use the room [`AuditLog`] keeps allocated past the log's end; every other record (a
/// decision, a ticket, a job's start) is appended only while that room stays whole, so a job
/// never starts unless its end can be recorded (see [`log::CLOSING_HEADROOM`]).
pub fn closes(event: &str) -> bool {
    [JOB_FINISHED, JOB_ABORTED, JOB_CANCELLED, SANDBOX_DESTROYED, SANDBOX_REAPED].contains(&event)
}
/// The ingester found the access log replaced or truncated and starts over on the new file
/// (see [`ingest`]); the record says which lines of the old file may not have been read.
pub const SOURCE_RESET: &str = "audit.source_reset";

/// Where the audit trail lives and how often it is checkpointed.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The hash-chained log (JSON Lines), created 0600 (its directory 0700).
    pub log: PathBuf,
    /// The signed checkpoints (JSON Lines), created 0600 (its directory 0700).
    pub checkpoints: PathBuf,
    /// The runner's Ed25519 signing key, PKCS#8 PEM.
    pub signing_key_pem: Vec<u8>,
    /// A checkpoint after this many new records (0: only by time).
    pub checkpoint_every_records: u64,
    /// And this often, when something was appended since the last one.
    pub checkpoint_every: Duration,
}

/// Records between checkpoints by default.
pub const DEFAULT_CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// Time between checkpoints by default (when something new was appended).
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// The log under a state dir: `<state-dir>/audit/audit.jsonl`.
pub fn default_log(state_dir: &Path) -> PathBuf {
    state_dir.join("audit").join("audit.jsonl")
}

/// The checkpoints under a state dir: `<state-dir>/audit/checkpoints.jsonl`.
pub fn default_checkpoints(state_dir: &Path) -> PathBuf {
    state_dir.join("audit").join("checkpoints.jsonl")
}

/// Envoy's access log under a state dir (`up` creates it, 0600, before Envoy starts).
pub fn default_access_log(state_dir: &Path) -> PathBuf {
    state_dir.join("access.log")
}

impl AuditConfig {
    /// The default layout under `state_dir`, checkpoints at `checkpoints` if given.
    pub fn in_state_dir(state_dir: &Path, checkpoints: Option<PathBuf>, signing_key_pem: Vec<u8>) -> Self {
        Self {
            log: default_log(state_dir),
            checkpoints: checkpoints.unwrap_or_else(|| default_checkpoints(state_dir)),
            signing_key_pem,
            checkpoint_every_records: DEFAULT_CHECKPOINT_EVERY_RECORDS,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

/// Starts the checkpointer and, when `access_log` is given, the gateway-log ingester, on the
/// current tokio runtime. Both run until the runtime shuts down.
pub fn start_tasks(log: &std::sync::Arc<AuditLog>, access_log: Option<PathBuf>) {
    tokio::spawn(run_checkpointer(log.clone()));
    if let Some(access_log) = access_log {
        tokio::spawn(ingest_gateway_log(log.clone(), access_log));
    }
}

#[cfg(test)]
mod tests;
