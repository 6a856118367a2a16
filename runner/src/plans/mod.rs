//! Plan / apply. A plan tool's output (its stdout) is its artifact, stored content-addressed:
//! the file `<dir>/<hex>` holds the bytes whose SHA-256 is `<hex>`, and the store holds who made
//! it, with which tool and arguments, and until when it may be applied. An apply tool cites the
//! artifact's hash; [`Plans::check_use`] refuses a plan that is unknown, made by another
//! requester or another tool, made for another target, expired, or altered on disk (the file is
//! hashed again before every use), and returns the stored bytes: the apply executes exactly
//! those, never text the agent sends.
//!
//! Every stored plan carries a signed statement (artifact hash, tool, the call's plan hash,
//! requester, times) from the runner's Ed25519 key, also written next to the artifact
//! (`<hex>.statements.jsonl`), so that anyone holding only the public key can check a plan's
//! provenance offline ([`verify_dir`], `portcullis plans verify`).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use portcullis_core::catalog::PlanUse;
use portcullis_core::ticket::Claims;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::keys;
use crate::store::{rfc3339, Requester, Store, StoreError, PLANS};

/// The statement type: bump it deliberately if the statement's fields change.
pub const STATEMENT_TYPE: &str = "portcullis.plan/v1";

/// One run of a plan tool that produced an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// `sha256:<hex>` of the artifact.
    pub artifact: String,
    pub size: u64,
    /// The plan tool that made it, and the plan hash of that call.
    pub tool: String,
    pub plan_hash: String,
    pub arguments: Map<String, Value>,
    pub requester: Requester,
    pub decision_id: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub statement: Statement,
}

/// A signed provenance statement: `payload` is RFC 8785 JSON, `signature` Ed25519 over its
/// bytes (base64), `key_id` names the runner key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub payload: String,
    pub key_id: String,
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanRefusal {
    #[error("argument {0:?} must cite a stored plan by its hash (sha256:<hex>)")]
    NotCited(String),
    #[error("no stored plan {0}")]
    Unknown(String),
    #[error("plan {plan} was made by {made_by}, not by {caller}")]
    OtherRequester { plan: String, made_by: String, caller: String },
    #[error("plan {plan} was made by {made_by}, which tool {tool} does not apply (it applies plans of {from})")]
    OtherTool { plan: String, made_by: String, tool: String, from: String },
    #[error("plan {plan} was made for {argument} = {planned}, not {applied}")]
    OtherTarget { plan: String, argument: String, planned: String, applied: String },
    #[error("plan {plan} expired at {expired}")]
    Expired { plan: String, expired: String },
    #[error("plan {0} was altered or removed on disk: its artifact no longer has that hash; it is not applied")]
    Altered(String),
    #[error("{0}")]
    Policy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("plan store: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Plans {
    store: Arc<Store>,
    dir: PathBuf,
    key: SigningKey,
    key_id: String,
    /// How long a stored plan may be applied.
    pub ttl_seconds: u64,
}

impl Plans {
    /// `dir` holds the artifacts (created 0700); `key_pem` is the runner's Ed25519 PKCS#8 key.
    pub fn new(store: Arc<Store>, dir: PathBuf, key_pem: &[u8], ttl_seconds: u64) -> anyhow::Result<Self> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let key = keys::parse_private(key_pem)?;
        let key_id = keys::key_id(&key.verifying_key());
        Ok(Self { store, dir, key, key_id, ttl_seconds })
    }

    /// Stores the artifact of a plan tool's successful run and returns its record.
    pub fn store(&self, artifact: &[u8], claims: &Claims, arguments: Map<String, Value>, now: u64) -> Result<PlanRecord, PlanRefusal> {
        let hex = hex::encode(Sha256::digest(artifact));
        let hash = format!("sha256:{hex}");
        write_atomically(&self.dir.join(&hex), artifact)?;
        let requester = Requester::of(claims);
        let expires_at = now.saturating_add(self.ttl_seconds);
        let payload = json!({
            "type": STATEMENT_TYPE,
            "artifact": hash,
            "size": artifact.len(),
            "tool": claims.tool,
            "plan_hash": claims.plan_hash,
            "requester": requester,
            "decision_id": claims.decision_id,
            "created_at": now,
            "expires_at": expires_at,
        });
        let payload = portcullis_core::plan::canonicalize(&payload).map_err(|e| std::io::Error::other(e.to_string()))?;
        let signature = STANDARD.encode(self.key.sign(payload.as_bytes()).to_bytes());
        let statement = Statement { payload, key_id: self.key_id.clone(), signature };
        append_line(&self.dir.join(format!("{hex}.statements.jsonl")), &serde_json::to_string(&statement).map_err(std::io::Error::other)?)?;
        let record = PlanRecord {
            artifact: hash.clone(),
            size: artifact.len() as u64,
            tool: claims.tool.clone(),
            plan_hash: claims.plan_hash.clone(),
            arguments,
            requester,
            decision_id: claims.decision_id.clone(),
            created_at: now,
            expires_at,
            statement,
        };
        self.store.write(|t| {
            let mut runs: Vec<PlanRecord> = t.get(PLANS, &hash)?.unwrap_or_default();
            runs.push(record.clone());
            t.put(PLANS, &hash, &runs)
        })?;
        Ok(record)
    }

    /// The plan an apply call cites, checked for this caller, tool and target, and its artifact
    /// as stored (hashed again here).
    pub fn check_use(&self, plan_use: &PlanUse, tool: &str, arguments: Option<&Map<String, Value>>, claims: &Claims, now: u64) -> Result<(PlanRecord, Vec<u8>), PlanRefusal> {
        let cited = arguments
            .and_then(|a| a.get(&plan_use.argument))
            .and_then(Value::as_str)
            .and_then(|c| c.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).map(|_| c))
            .ok_or_else(|| PlanRefusal::NotCited(plan_use.argument.clone()))?;
        let runs: Vec<PlanRecord> = self.store.get(PLANS, cited)?.ok_or_else(|| PlanRefusal::Unknown(cited.to_owned()))?;
        let record = pick(runs, plan_use, tool, arguments, &Requester::of(claims), now)?;
        let hex = &cited["sha256:".len()..];
        let artifact = std::fs::read(self.dir.join(hex)).map_err(|_| PlanRefusal::Altered(cited.to_owned()))?;
        if hex::encode(Sha256::digest(&artifact)) != hex {
            return Err(PlanRefusal::Altered(cited.to_owned()));
        }
        Ok((record, artifact))
    }
}

/// Of the runs that made the cited artifact, the newest that this caller may apply with this
/// tool to this target now; otherwise the refusal of the first check that no run passes.
fn pick(runs: Vec<PlanRecord>, plan_use: &PlanUse, tool: &str, arguments: Option<&Map<String, Value>>, caller: &Requester, now: u64) -> Result<PlanRecord, PlanRefusal> {
    let plan = runs.first().map(|r| r.artifact.clone()).unwrap_or_default();
    let mine: Vec<PlanRecord> = runs.iter().filter(|r| r.requester == *caller).cloned().collect();
    let Some(first) = runs.first() else { return Err(PlanRefusal::Unknown(plan)) };
    if mine.is_empty() {
        return Err(PlanRefusal::OtherRequester { plan, made_by: first.requester.describe(), caller: caller.describe() });
    }
    let from: Vec<PlanRecord> = mine.iter().filter(|r| plan_use.from.contains(&r.tool)).cloned().collect();
    let Some(first) = from.first().or(mine.first()) else { return Err(PlanRefusal::Unknown(plan)) };
    if from.is_empty() {
        return Err(PlanRefusal::OtherTool { plan, made_by: first.tool.clone(), tool: tool.to_owned(), from: plan_use.from.join(", ") });
    }
    let value_of = |args: Option<&Map<String, Value>>, name: &str| args.and_then(|a| a.get(name)).cloned().unwrap_or(Value::Null);
    let mismatch = |r: &PlanRecord| plan_use.target.iter().find(|name| value_of(Some(&r.arguments), name) != value_of(arguments, name)).cloned();
    let on_target: Vec<PlanRecord> = from.iter().filter(|r| mismatch(r).is_none()).cloned().collect();
    if on_target.is_empty() {
        let argument = from.iter().find_map(mismatch).unwrap_or_default();
        let planned = from.first().map(|r| value_of(Some(&r.arguments), &argument)).unwrap_or(Value::Null);
        return Err(PlanRefusal::OtherTarget { plan, applied: value_of(arguments, &argument).to_string(), planned: planned.to_string(), argument });
    }
    let newest = on_target.iter().filter(|r| r.expires_at > now).max_by_key(|r| r.created_at).cloned();
    newest.ok_or_else(|| PlanRefusal::Expired {
        plan,
        expired: rfc3339(on_target.iter().map(|r| r.expires_at).max().unwrap_or(0)),
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// What `portcullis plans verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub artifacts: usize,
    pub statements: usize,
    pub problems: Vec<String>,
}

/// Checks every artifact in a plan directory against its signed statements, with only the
/// runner's public key: each artifact hashes to its name, each statement is signed by the key
/// and names that artifact (and its size).
pub fn verify_dir(dir: &Path, public_key: &VerifyingKey) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut names: Vec<String> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    for name in names.iter().filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())) {
        report.artifacts += 1;
        let artifact = std::fs::read(dir.join(name))?;
        if hex::encode(Sha256::digest(&artifact)) != *name {
            report.problems.push(format!("artifact {name}: content does not hash to its name (altered)"));
        }
        let statements = std::fs::read_to_string(dir.join(format!("{name}.statements.jsonl"))).unwrap_or_default();
        if statements.trim().is_empty() {
            report.problems.push(format!("artifact {name}: no signed statement"));
        }
        for (i, line) in statements.lines().enumerate() {
            report.statements += 1;
            if let Err(why) = check_statement(line, name, artifact.len(), public_key) {
                report.problems.push(format!("artifact {name}: statement {}: {why}", i + 1));
            }
        }
    }
    Ok(report)
}

fn check_statement(line: &str, hex: &str, size: usize, key: &VerifyingKey) -> Result<(), String> {
    let statement: Statement = serde_json::from_str(line).map_err(|e| format!("unreadable: {e}"))?;
    let signature: [u8; 64] = STANDARD
        .decode(&statement.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or("signature is not 64 base64 bytes")?;
    key.verify(statement.payload.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| "signature does not verify under this public key".to_owned())?;
    let payload: Value = serde_json::from_str(&statement.payload).map_err(|e| format!("payload: {e}"))?;
    if payload["type"] != STATEMENT_TYPE || payload["artifact"] != format!("sha256:{hex}") || payload["size"] != size {
        return Err(format!("signed payload names another artifact: {}", statement.payload));
    }
    Ok(())
}
