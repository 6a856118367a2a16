//! Ingesting the gateway's decisions from Envoy's access log into the audit log.
//!
//! Envoy writes one JSON line per request to `<state-dir>/access.log` (a file access logger,
//! flushed every 250 ms by `up`), with the filter's decision record as the JSON string
//! `portcullis_decision`. [`ingest_gateway_log`] tails that file (every 100 ms; only complete
//! lines) and appends one [`GATEWAY_DECISION`] record per line, carrying the decision's
//! fields, Envoy's view of the request (HTTP status, start time, ...) and where the line was:
//! `source_offset`, `source_next_offset` (just after its `\n`) and `source_inode`.
//!
//! **Exactly once.** The resume point is not kept in a separate file: it is the
//! `source_next_offset` of the last [`GATEWAY_DECISION`] (or [`SOURCE_RESET`]) record in the
//! audit log itself, read back when the ingester starts. A record and its offset are durable
//! together or not at all (one line, one `fdatasync`; a torn last line is removed when the log
//! is opened), so a crash at any point, SIGKILL included, neither loses a line nor records one
//! twice.
//!
//! **While the runner is down** Envoy keeps serving and keeps appending to the access log;
//! nothing is lost. When the runner starts again it reads the lines it has not recorded yet
//! and catches up (their records then carry a later `time` than the request's
//! `request_time`).
//!
//! **Rotation.** Do not truncate the access log (copytruncate would lose lines written
//! between the copy and the cut). Rotate by renaming it and asking Envoy to reopen
//! (`POST /reopen_logs` on the admin socket) while the runner runs: when the ingester sees a
//! new file at the path, it first reads the old one (still open) to its end, writes an
//! [`SOURCE_RESET`] record, and continues at the start of the new one. If the file is replaced
//! or truncated while the runner is down, the ingester cannot find the old file's unread
//! lines: its [`SOURCE_RESET`] record says from which offset of which inode lines may be
//! missing.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{AuditLog, GATEWAY_DECISION, SOURCE_RESET};

/// How often the access log is polled for new lines.
pub const POLL: Duration = Duration::from_millis(100);
/// Most bytes read from the access log in one poll.
const READ_LIMIT: u64 = 8 * 1024 * 1024;
/// Most records in one append (one write, one `fdatasync`).
const BATCH: usize = 1000;
/// The decision record's fields that each [`GATEWAY_DECISION`] record carries.
pub const DECISION_FIELDS: [&str; 12] =
    ["decision_id", "outcome", "workload", "user", "method", "tool", "plan_hash", "rule_ids", "policy_version", "status", "code", "reason"];
/// Envoy's access-log fields each record carries, and their names in the record.
const ENVOY_FIELDS: [(&str, &str); 8] = [
    ("response_code", "http_status"),
    ("start_time", "request_time"),
    ("request_id", "request_id"),
    ("method", "http_method"),
    ("path", "path"),
    ("protocol", "protocol"),
    ("response_flags", "response_flags"),
    ("duration_ms", "duration_ms"),
];

/// Tails one access log into one audit log. [`ingest_gateway_log`] drives it; tests call
/// [`Ingester::poll`] directly.
pub struct Ingester {
    log: Arc<AuditLog>,
    path: PathBuf,
    /// The open access log and its inode.
    file: Option<(File, u64)>,
    /// The inode the resume offset belongs to (`None`: nothing ingested yet).
    inode: Option<u64>,
    /// The next byte to read.
    offset: u64,
}

impl Ingester {
    /// Recovers the resume point from the audit log (see the module docs).
    pub fn new(log: Arc<AuditLog>, path: PathBuf) -> io::Result<Self> {
        let last = log.last_record_where(|r| matches!(r.get("event").and_then(Value::as_str), Some(GATEWAY_DECISION | SOURCE_RESET)))?;
        let (inode, offset) = match last {
            Some(r) => (r.get("source_inode").and_then(Value::as_u64), r.get("source_next_offset").and_then(Value::as_u64).unwrap_or(0)),
            None => (None, 0),
        };
        Ok(Self { log, path, file: None, inode, offset })
    }

    /// The next byte of the access log to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads what is new and records each complete line; returns how many it recorded.
    pub fn poll(&mut self) -> io::Result<usize> {
        let current = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut recorded = 0;
        match (&self.file, current) {
            (None, None) => return Ok(0),
            (None, Some(_)) => {
                let file = File::open(&self.path)?;
                let ino = file.metadata()?.ino();
                if self.inode.is_some_and(|old| old != ino) {
                    self.reset(ino, "the access log was replaced while the runner was not reading it; lines of the old file from previous_offset on may not be recorded")?;
                }
                self.inode = Some(ino);
                self.file = Some((file, ino));
            }
            (Some((_, open_ino)), Some(ino)) if *open_ino != ino => {
                // Rotated while we read: finish the old file, then go on with the new one.
                recorded += self.read_new()?;
                let file = File::open(&self.path)?;
                let ino = file.metadata()?.ino();
                self.reset(ino, "the access log was rotated; the old file was read to its end")?;
                self.file = Some((file, ino));
            }
            _ => {}
        }
        Ok(recorded + self.read_new()?)
    }

    /// Starts over at offset 0 of the file with inode `ino`, saying so in the audit log.
    fn reset(&mut self, ino: u64, reason: &str) -> io::Result<()> {
        let mut fields = Map::new();
        fields.insert("reason".into(), reason.into());
        fields.insert("previous_inode".into(), self.inode.into());
        fields.insert("previous_offset".into(), self.offset.into());
        fields.insert("source_inode".into(), ino.into());
        fields.insert("source_next_offset".into(), 0.into());
        self.log.append(SOURCE_RESET, fields)?;
        tracing::warn!(access_log = %self.path.display(), previous_offset = self.offset, reason, "audit: access log reset");
        self.inode = Some(ino);
        self.offset = 0;
        Ok(())
    }

    fn read_new(&mut self) -> io::Result<usize> {
        let Some((file, ino)) = &self.file else { return Ok(0) };
        let ino = *ino;
        let size = file.metadata()?.len();
        if size < self.offset {
            self.reset(ino, "the access log is shorter than the offset already recorded (truncated); lines from previous_offset on may not be recorded")?;
        }
        let mut recorded = 0;
        loop {
            let Some((file, _)) = &self.file else { return Ok(recorded) };
            let size = file.metadata()?.len();
            let want = (size - self.offset.min(size)).min(READ_LIMIT);
            if want == 0 {
                return Ok(recorded);
            }
            let mut buf = vec![0u8; want as usize];
            file.read_exact_at(&mut buf, self.offset)?;
            let complete = match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                // One line longer than the read limit: recorded as it is, unreadable.
                None if want == READ_LIMIT => buf.len(),
                None => return Ok(recorded),
            };
            let mut records = Vec::new();
            let mut at = self.offset;
            for line in buf.get(..complete).unwrap_or_default().split_inclusive(|&b| b == b'\n') {
                let next = at + line.len() as u64;
                let text = line.strip_suffix(b"\n").unwrap_or(line);
                records.push((GATEWAY_DECISION, decision_fields(text, at, next, ino)));
                at = next;
            }
            for batch in records.chunks(BATCH) {
                self.log.append_many(batch)?;
                recorded += batch.len();
                if let Some(Value::Number(next)) = batch.last().and_then(|(_, f)| f.get("source_next_offset")) {
                    self.offset = next.as_u64().unwrap_or(self.offset);
                }
            }
        }
    }
}

/// The fields of the [`GATEWAY_DECISION`] record for one access-log line.
pub fn decision_fields(line: &[u8], offset: u64, next: u64, inode: u64) -> Map<String, Value> {
    let mut fields = Map::new();
    let entry: Option<Map<String, Value>> = serde_json::from_slice(line).ok();
    let decision: Option<Map<String, Value>> =
        entry.as_ref().and_then(|e| e.get("portcullis_decision")).and_then(Value::as_str).and_then(|d| serde_json::from_str(d).ok());
    match &decision {
        Some(d) => {
            for k in DECISION_FIELDS {
                if let Some(v) = d.get(k) {
                    fields.insert(k.into(), v.clone());
                }
            }
        }
        None => {
            // Envoy answered before the filter decided (or the line is not Envoy's JSON).
            fields.insert("decision_id".into(), Value::Null);
            fields.insert("outcome".into(), "not_decided".into());
        }
    }
    match &entry {
        Some(e) => {
            for (from, to) in ENVOY_FIELDS {
                if let Some(v) = e.get(from) {
                    fields.insert(to.into(), v.clone());
                }
            }
        }
        None => {
            let text = String::from_utf8_lossy(line);
            fields.insert("unparsed_line".into(), text.chars().take(1024).collect::<String>().into());
        }
    }
    fields.insert("source_offset".into(), offset.into());
    fields.insert("source_next_offset".into(), next.into());
    fields.insert("source_inode".into(), inode.into());
    fields
}

/// Tails `access_log` into `log` until the task is dropped: polls every [`POLL`], survives
/// the file not existing yet, and resumes exactly where the audit log says (see the module
/// docs). Errors are logged and retried.
pub async fn ingest_gateway_log(log: Arc<AuditLog>, access_log: PathBuf) {
    let mut ingester = None;
    loop {
        let current = match ingester.take() {
            Some(i) => Ok(i),
            None => {
                let (l, p) = (log.clone(), access_log.clone());
                tokio::task::spawn_blocking(move || Ingester::new(l, p)).await.unwrap_or_else(|e| Err(io::Error::other(e)))
            }
        };
        let mut i = match current {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "audit: cannot recover the access-log offset; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (back, result) = match tokio::task::spawn_blocking(move || {
            let r = i.poll();
            (i, r)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "audit: the ingester failed; restarting it");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        ingester = Some(back);
        match result {
            // More may be waiting (a catch-up after a restart): read on at once.
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, access_log = %access_log.display(), "audit: ingesting the access log failed; retrying"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Creates Envoy's access log with mode 0600 if it does not exist (Envoy would create it
/// world-readable), and tightens an existing one; its contents are kept (the ingester's
/// offsets point into them).
pub fn create_access_log(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new().append(true).create(true).mode(crate::devstack::certs::KEY_MODE).open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(crate::devstack::certs::KEY_MODE))?;
    }
    Ok(())
}
