//! The runner's own Ed25519 key (`certs/runner-signing-key.pem`): it signs audit checkpoints
//! and plan statements, and both name it by the same id.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// `pem`: an Ed25519 PKCS#8 private key.
pub fn parse_private(pem: &[u8]) -> anyhow::Result<SigningKey> {
    let pem = std::str::from_utf8(pem)?;
    SigningKey::from_pkcs8_pem(pem).map_err(|e| anyhow::anyhow!("the runner signing key is not an Ed25519 PKCS#8 PEM key: {e}"))
}

/// `pem`: an Ed25519 SPKI public key ("BEGIN PUBLIC KEY").
pub fn parse_public(pem: &[u8]) -> anyhow::Result<VerifyingKey> {
    let pem = std::str::from_utf8(pem)?;
    VerifyingKey::from_public_key_pem(pem).map_err(|e| anyhow::anyhow!("not an Ed25519 public key PEM: {e}"))
}

/// `ed25519:` and the first 16 hex digits of the SHA-256 of the raw 32-byte public key, so a
/// verifier can tell which key a signature claims before checking it.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("ed25519:{}", digest.get(..16).unwrap_or(&digest))
}
