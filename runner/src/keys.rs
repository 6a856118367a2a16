//! The runner's own Ed25519 key (`certs/runner-signing-key.pem`): it signs audit checkpoints
//! and plan statements, and both name it by the same id.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

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

/// The id that names a key in checkpoints and plan statements (`ed25519:<16 hex>`).
pub use portcullis_core::audit::key_id;
