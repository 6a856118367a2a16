//! Verification of the runner's audit trail (`portcullis audit verify`): the hash chain of the
//! records and the signed checkpoints, from the bytes of the two files. The format and the
//! writer are described in the runner (`runner/src/audit/`); the checks are here, free of I/O,
//! so that they are fuzzed on their own (`fuzz/`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev` of the first record: the SHA-256 of the empty string.
pub const GENESIS: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_tagged(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The RFC 8785 canonical JSON of `object` (a record without `hash`, or a checkpoint without
/// `signature`): what is hashed or signed.
pub fn canonical(object: &Map<String, Value>) -> Result<String, String> {
    crate::plan::canonicalize(&Value::Object(object.clone())).map_err(|e| e.to_string())
}

/// The hash a record (given without its `hash` member) must carry.
pub fn record_hash(without_hash: &Map<String, Value>) -> Result<String, String> {
    Ok(sha256_tagged(canonical(without_hash)?.as_bytes()))
}

/// `ed25519:` and the first 16 hex digits of the SHA-256 of the raw 32-byte public key, so a
/// verifier can tell which key a signature claims before checking it.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("ed25519:{}", digest.get(..16).unwrap_or(&digest))
}

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
            self.records.saturating_sub(self.covered)
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
    Unreadable { path: std::path::PathBuf, error: String },
    #[error("the public key: {0}")]
    Key(String),
    #[error("record {line} (line {line}): {problem}")]
    Record { line: u64, problem: String },
    #[error("checkpoint {line} (line {line} of the checkpoints): {problem}")]
    Checkpoint { line: u64, problem: String },
    #[error("checkpoint {checkpoint}: it covers {count} records, but the log ends at record {records}: the last {} records were cut off", count.saturating_sub(*records))]
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

/// A checkpoint whose signature held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub count: u64,
    pub head: String,
    pub time: String,
}

/// A public key to check checkpoints with.
pub struct CheckpointVerifier {
    key: VerifyingKey,
    key_id: String,
}

impl CheckpointVerifier {
    pub fn new(key: VerifyingKey) -> Self {
        Self { key_id: key_id(&key), key }
    }

    /// Checks one checkpoint line; the error says what is wrong with it.
    pub fn check(&self, line: &[u8]) -> Result<Checkpoint, String> {
        let value = crate::json::parse_strict(line, crate::json::Limits::default()).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(mut object) = value else { return Err("not a JSON object".into()) };
        let signature = match object.remove("signature") {
            Some(Value::String(s)) => s,
            _ => return Err("no signature".into()),
        };
        let expected = ["count", "head", "key_id", "time"];
        if object.len() != expected.len() || expected.iter().any(|k| !object.contains_key(*k)) {
            return Err(format!("members must be exactly count, head, time, key_id, signature; got {:?}", object.keys().collect::<Vec<_>>()));
        }
        let key_id = object.get("key_id").and_then(Value::as_str).unwrap_or_default();
        if key_id != self.key_id {
            return Err(format!("signed by key {key_id}, not by the given public key {}", self.key_id));
        }
        let bytes = STANDARD.decode(signature.as_bytes()).map_err(|e| format!("signature is not base64: {e}"))?;
        let signature = Signature::from_slice(&bytes).map_err(|e| format!("malformed signature: {e}"))?;
        let message = canonical(&object)?;
        self.key.verify(message.as_bytes(), &signature).map_err(|_| "bad signature (the checkpoint was altered or not signed by this key)".to_owned())?;
        let count = object.get("count").and_then(Value::as_u64).ok_or("count is not a non-negative integer")?;
        let head = object.get("head").and_then(Value::as_str).ok_or("head is not a string")?.to_owned();
        let time = object.get("time").and_then(Value::as_str).ok_or("time is not a string")?.to_owned();
        Ok(Checkpoint { count, head, time })
    }
}

/// The `\n`-terminated lines of `bytes`, and whether an unterminated rest followed.
fn complete_lines(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let rest = lines.pop().unwrap_or_default();
    (lines, !rest.is_empty())
}

/// Verifies a log (`log`, its bytes) against its checkpoints (`checkpoints`, their bytes).
pub fn verify(log: &[u8], checkpoints: &[u8], verifier: &CheckpointVerifier) -> Result<Summary, Break> {
    let (lines, unterminated_tail) = complete_lines(log);
    let mut hashes: Vec<String> = Vec::with_capacity(lines.len());
    for (n, line) in (1..).zip(&lines) {
        let prev = hashes.last().map_or(GENESIS, String::as_str);
        let hash = check_record(n, line, prev).map_err(|problem| Break::Record { line: n, problem })?;
        hashes.push(hash);
    }
    let records = hashes.len() as u64;

    let (checkpoint_lines, _) = complete_lines(checkpoints);
    let mut covered = 0;
    for (n, line) in (1..).zip(&checkpoint_lines) {
        let cp = verifier.check(line).map_err(|problem| Break::Checkpoint { line: n, problem })?;
        if cp.count < covered {
            return Err(Break::Checkpoint { line: n, problem: format!("covers {} records, fewer than the {covered} of the checkpoint before it", cp.count) });
        }
        if cp.count > records {
            return Err(Break::Truncated { checkpoint: n, count: cp.count, records });
        }
        let actual = match cp.count.checked_sub(1) {
            None => GENESIS,
            Some(i) => usize::try_from(i).ok().and_then(|i| hashes.get(i)).map_or(GENESIS, String::as_str),
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
    let limits = crate::json::Limits { max_body_bytes: line.len().max(1), max_depth: 64 };
    let value = crate::json::parse_strict(line, limits).map_err(|e| format!("not a valid JSON record: {e}"))?;
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
