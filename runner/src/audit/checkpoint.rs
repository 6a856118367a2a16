//! Signed checkpoints: `{"count":N,"head":"sha256:..","time":"..","key_id":"..","signature":".."}`.
//!
//! `signature` is Ed25519 (RFC 8032) over the RFC 8785 canonical JSON of the checkpoint
//! without `signature`, base64 (standard alphabet, padded). `key_id` is `ed25519:` and the
//! first 16 hex digits of the SHA-256 of the raw 32-byte public key, so a verifier can tell
//! which key a checkpoint claims before checking it.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey};
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
