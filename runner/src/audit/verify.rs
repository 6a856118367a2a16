//! `portcullis audit verify`: checks the hash chain and the signed checkpoints, and names the
//! first place where they break. The checks are in core ([`portcullis_core::audit`]), which
//! works on the files' bytes; this reads the files.

use std::path::Path;

use portcullis_core::audit::CheckpointVerifier;
pub use portcullis_core::audit::{Break, Summary};

fn read(path: &Path) -> Result<Vec<u8>, Break> {
    std::fs::read(path).map_err(|e| Break::Unreadable { path: path.to_owned(), error: e.to_string() })
}

/// Verifies the log at `log_path` against the checkpoints at `checkpoints_path`, signed by
/// the key whose SPKI PEM is `public_key_pem`.
pub fn verify(log_path: &Path, checkpoints_path: &Path, public_key_pem: &[u8]) -> Result<Summary, Break> {
    let key = crate::keys::parse_public(public_key_pem).map_err(|e| Break::Key(e.to_string()))?;
    // Checkpoints first: one is written only after the records it covers are durable, so
    // reading the log second sees every record a checkpoint read here can name, even while
    // the runner is appending.
    let checkpoints = read(checkpoints_path)?;
    let log = read(log_path)?;
    portcullis_core::audit::verify(&log, &checkpoints, &CheckpointVerifier::new(key))
}
