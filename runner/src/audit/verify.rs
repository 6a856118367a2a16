//! `portcullis audit verify`: checks the hash chain and the signed checkpoints, and names the
//! first place where they break.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{record_hash, GENESIS};
use super::checkpoint::CheckpointVerifier;

/// An intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub checkpoints: u64,
    /// Records covered by the last checkpoint (the rest are newer than it).
    pub covered: u64,
    pub head: String,
    /// The log ended in a line without `\n`: a write in progress (or cut short by a crash,
    /// which the runner removes when it next opens the log). It was not checked.
    pub unterminated_tail: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "intact: {} records, head {}; {} signed checkpoints, the last covering {} records ({} newer)",
            self.records,
            self.head,
            self.checkpoints,
            self.covered,
            self.records - self.covered
        )?;
        if self.unterminated_tail {
            write!(f, "; an unfinished last line was not checked")?;
        }
        Ok(())
    }
}

/// The first place where the audit trail is broken. Records and checkpoints are numbered
/// from 1, by line; an intact record's `seq` is its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("cannot read {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: String },
    #[error("the public key: {0}")]
    Key(String),
    #[error("record {line} (line {line}): {problem}")]
    Record { line: u64, problem: String },
    #[error("checkpoint {line} (line {line} of the checkpoints): {problem}")]
    Checkpoint { line: u64, problem: String },
    #[error("checkpoint {checkpoint}: it covers {count} records, but the log ends at record {records}: the last {} records were cut off", count - records)]
    Truncated { checkpoint: u64, count: u64, records: u64 },
    #[error("checkpoint {checkpoint}: its head for {count} records is {head}, but record {count} hashes to {actual}: the log was rewritten up to record {count}")]
    HeadMismatch { checkpoint: u64, count: u64, head: String, actual: String },
}

impl Break {
    /// The 1-based record number where the log breaks, if the break is in a record.
    pub fn record(&self) -> Option<u64> {
        match self {
            Break::Record { line, .. } => Some(*line),
            Break::HeadMismatch { count, .. } => Some(*count),
            _ => None,
        }
    }

    /// The 1-based checkpoint number, if the break is in (or found by) a checkpoint.
    pub fn checkpoint(&self) -> Option<u64> {
        match self {
            Break::Checkpoint { line, .. } => Some(*line),
            Break::Truncated { checkpoint, .. } | Break::HeadMismatch { checkpoint, .. } => Some(*checkpoint),
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Break> {
    std::fs::read(path).map_err(|e| Break::Unreadable { path: path.to_owned(), error: e.to_string() })
}

/// The `\n`-terminated lines of `bytes`, and whether an unterminated rest followed.
fn complete_lines(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let rest = lines.pop().unwrap_or_default();
    (lines, !rest.is_empty())
}

/// Verifies the log at `log_path` against the checkpoints at `checkpoints_path`, signed by
/// the key whose SPKI PEM is `public_key_pem`.
pub fn verify(log_path: &Path, checkpoints_path: &Path, public_key_pem: &[u8]) -> Result<Summary, Break> {
    let verifier = CheckpointVerifier::from_pem(public_key_pem).map_err(|e| Break::Key(e.to_string()))?;
    // Checkpoints first: one is written only after the records it covers are durable, so
    // reading the log second sees every record a checkpoint read here can name, even while
    // the runner is appending.
    let checkpoint_bytes = read(checkpoints_path)?;
    let log_bytes = read(log_path)?;
    let (lines, unterminated_tail) = complete_lines(&log_bytes);

    let mut hashes: Vec<String> = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        let prev = hashes.last().map_or(GENESIS, String::as_str);
        let hash = check_record(n, line, prev).map_err(|problem| Break::Record { line: n, problem })?;
        hashes.push(hash);
    }
    let records = hashes.len() as u64;

    let (checkpoint_lines, _) = complete_lines(&checkpoint_bytes);
    let mut covered = 0;
    for (i, line) in checkpoint_lines.iter().enumerate() {
        let n = i as u64 + 1;
        let cp = verifier.check(line).map_err(|problem| Break::Checkpoint { line: n, problem })?;
        if cp.count < covered {
            return Err(Break::Checkpoint { line: n, problem: format!("covers {} records, fewer than the {covered} of the checkpoint before it", cp.count) });
        }
        if cp.count > records {
            return Err(Break::Truncated { checkpoint: n, count: cp.count, records });
        }
        let actual = match cp.count {
            0 => GENESIS,
            c => hashes.get(c as usize - 1).map_or(GENESIS, String::as_str),
        };
        if actual != cp.head {
            return Err(Break::HeadMismatch { checkpoint: n, count: cp.count, head: cp.head, actual: actual.to_owned() });
        }
        covered = cp.count;
    }
    Ok(Summary {
        records,
        checkpoints: checkpoint_lines.len() as u64,
        covered,
        head: hashes.last().cloned().unwrap_or_else(|| GENESIS.to_owned()),
        unterminated_tail,
    })
}

/// Checks record `n` (its line) against the previous hash; returns its hash.
fn check_record(n: u64, line: &[u8], prev: &str) -> Result<String, String> {
    let limits = portcullis_core::json::Limits { max_body_bytes: line.len().max(1), max_depth: 64 };
    let value = portcullis_core::json::parse_strict(line, limits).map_err(|e| format!("not a valid JSON record: {e}"))?;
    let Value::Object(mut record) = value else { return Err("not a JSON object".into()) };
    match record.get("seq").and_then(Value::as_u64) {
        None => return Err("no seq".into()),
        Some(seq) if seq > n => {
            return Err(format!("expected seq {n}, found seq {seq}: record {n} was deleted (or records were moved)"));
        }
        Some(seq) if seq < n => {
            return Err(format!("expected seq {n}, found seq {seq}: records were reordered or repeated"));
        }
        Some(_) => {}
    }
    let hash = match record.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return Err("no hash".into()),
    };
    let computed = record_hash(&record)?;
    if computed != hash {
        return Err(format!("edited: its content hashes to {computed}, not to its hash {hash}"));
    }
    match record.get("prev").and_then(Value::as_str) {
        Some(p) if p == prev => Ok(hash),
        Some(p) => Err(format!(
            "its prev {p} is not the hash of the record before it ({prev}): the records before it were edited, removed or reordered"
        )),
        None => Err("no prev".into()),
    }
}
