//! Signed checkpoints: `{"count":N,"head":"sha256:..","time":"..","key_id":"..","signature":".."}`.
//!
//! `signature` is Ed25519 (RFC 8032) over the RFC 8785 canonical JSON of the checkpoint
//! without `signature`, base64 (standard alphabet, padded). `key_id` is `ed25519:` and the
//! first 16 hex digits of the SHA-256 of the raw 32-byte public key, so a verifier can tell
//! which key a checkpoint claims before checking it.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{Map, Value};
use super::chain::canonical;
use crate::keys::{self, key_id};
use super::AuditLog;

/// The runner's checkpoint signing key.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl CheckpointSigner {
    /// `pem`: an Ed25519 PKCS#8 private key.
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let key = keys::parse_private(pem)?;
        let key_id = key_id(&key.verifying_key());
        Ok(Self { key, key_id })
    }

    /// A checkpoint line (with its `\n`) for the first `count` records, whose last has `head`.
    pub(crate) fn line(&self, count: u64, head: &str, time: &str) -> std::io::Result<String> {
        let mut object = Map::new();
        object.insert("count".into(), count.into());
        object.insert("head".into(), head.into());
        object.insert("time".into(), time.into());
        object.insert("key_id".into(), self.key_id.clone().into());
        let message = canonical(&object).map_err(std::io::Error::other)?;
        let signature = STANDARD.encode(self.key.sign(message.as_bytes()).to_bytes());
        Ok(format!(
            "{{\"count\":{count},\"head\":{},\"time\":{},\"key_id\":{},\"signature\":{}}}\n",
            Value::from(head),
            Value::from(time),
            Value::from(self.key_id.as_str()),
            Value::from(signature)
        ))
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
    /// `pem`: an Ed25519 SPKI public key ("BEGIN PUBLIC KEY").
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let key = keys::parse_public(pem)?;
        Ok(Self { key_id: key_id(&key), key })
    }

    /// Checks one checkpoint line; the error says what is wrong with it.
    pub fn check(&self, line: &[u8]) -> Result<Checkpoint, String> {
        let value = portcullis_core::json::parse_strict(line, portcullis_core::json::Limits::default()).map_err(|e| format!("not valid JSON: {e}"))?;
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

/// Writes a checkpoint every [`super::AuditConfig::checkpoint_every`] when records were
/// appended since the last one. Runs until its task is dropped. A failure is logged and
/// retried at the next tick (records stay durable; only their checkpoint is late).
pub async fn run_checkpointer(log: Arc<AuditLog>) {
    let mut tick = tokio::time::interval(log.checkpoint_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let l = log.clone();
        match tokio::task::spawn_blocking(move || l.checkpoint_if_new()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "audit: writing a checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "audit: the checkpoint task failed"),
        }
    }
}
