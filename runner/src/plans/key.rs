//! The runner's own Ed25519 key (plan statements), and time rendering for records.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

pub fn parse_private(pem: &[u8]) -> anyhow::Result<SigningKey> {
    let pem = std::str::from_utf8(pem)?;
    SigningKey::from_pkcs8_pem(pem).map_err(|e| anyhow::anyhow!("runner signing key is not a PKCS#8 Ed25519 PEM key: {e}"))
}

pub fn parse_public(pem: &[u8]) -> anyhow::Result<VerifyingKey> {
    let pem = std::str::from_utf8(pem)?;
    VerifyingKey::from_public_key_pem(pem).map_err(|e| anyhow::anyhow!("not an Ed25519 SPKI PEM public key: {e}"))
}

/// `sha256:` and the first 16 hex digits of the SHA-256 of the raw public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("sha256:{}", &digest[..16])
}

/// Unix seconds as RFC 3339 UTC (`2026-12-02T07:36:40Z`).
pub fn rfc3339(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| unix.to_string())
}

