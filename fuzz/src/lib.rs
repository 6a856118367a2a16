//! What the fuzz targets share: a gateway configured like the filter (the repository's
//! policies/, catalog/example.yaml, a test ticket key and the user-token test issuer), and
//! tokens signed with the test keys.
//!
//! Test keys only: the ticket key is `core/tests/data/userjwt/ed25519-b.pem`, the user issuer's
//! key `ed25519-a.pem` (kid `ed-a` of `jwks-a.json`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey};
use portcullis_core::gateway::Gateway;
use serde_json::{json, Value};

/// The ticket issuer of the fixture's gateway.
pub const ISSUER: &str = "portcullis-gateway";
/// The user-token issuer the fixture trusts, and its audience.
pub const USER_ISSUER: &str = "https://idp.portcullis.local";
pub const USER_AUDIENCE: &str = "portcullis";
/// The request time of every decision: 2026-09-21 (a Monday) 10:13:20 UTC; targets add to it.
pub const NOW: u64 = 1_790_000_000;
/// Leeway that makes tickets issued at [`NOW`] (and the days after) verify whenever the fuzzer runs:
/// jsonwebtoken checks expiry against the system clock.
pub const TICKET_LEEWAY: u64 = 20 * 365 * 24 * 3600;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn ticket_key_pem() -> String {
    read("core/tests/data/userjwt/ed25519-b.pem")
}

pub fn ticket_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_pkcs8_pem(&ticket_key_pem()).expect("ticket test key"))
}

/// The ticket key's SPKI PEM (what the runner verifies tickets with).
pub fn ticket_public_pem() -> String {
    ticket_key().verifying_key().to_public_key_pem(Default::default()).expect("public key PEM")
}

pub fn user_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_pkcs8_pem(&read("core/tests/data/userjwt/ed25519-a.pem")).expect("user test key"))
}

/// The `users` section: one issuer with the test JWKS.
pub fn users_config() -> Value {
    let jwks: Value = serde_json::from_str(&read("core/tests/data/userjwt/jwks-a.json")).expect("test JWKS");
    json!({"issuers": [{"issuer": USER_ISSUER, "audiences": [USER_AUDIENCE], "jwks": jwks}]})
}

/// The filter's plugin configuration, as `portcullis plugin-config` builds it.
pub fn plugin_config() -> Value {
    let mut modules = Vec::new();
    let dir = repo().join("policies");
    for entry in std::fs::read_dir(&dir).expect("policies/") {
        let name = entry.expect("policies/ entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".rego") && !name.ends_with("_test.rego") {
            modules.push(json!({"name": name, "source": read(&format!("policies/{name}"))}));
        }
    }
    modules.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let data: Value = serde_json::from_str(&read("policies/data.json")).expect("policies/data.json");
    json!({
        "policy": {"modules": modules, "data": data},
        "catalog": catalog_value(),
        "ticket": {"signing_key_pem": ticket_key_pem(), "issuer": ISSUER, "ttl_seconds": 30},
        "users": users_config(),
    })
}

pub fn catalog_value() -> Value {
    serde_yaml::from_str(&read("catalog/example.yaml")).expect("catalog/example.yaml")
}

/// The gateway, configured once per process.
pub fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let config = serde_json::to_vec(&plugin_config()).expect("JSON");
        Gateway::from_config_json(&config).expect("the fixture configuration builds a gateway")
    })
}

/// A compact EdDSA JWS of `header` and `payload` (any bytes) under `key`.
pub fn sign_jws(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

/// A user token of the trusted issuer for `sub` in `groups`, valid from [`NOW`] for a year.
pub fn user_token(sub: &str, groups: &[&str]) -> String {
    let claims = json!({"iss": USER_ISSUER, "aud": USER_AUDIENCE, "sub": sub, "groups": groups, "iat": NOW, "exp": NOW + 365 * 86400});
    sign_jws(user_key(), br#"{"alg":"EdDSA","typ":"JWT","kid":"ed-a"}"#, claims.to_string().as_bytes())
}

/// Flips bytes of `token` as `edits` says: each triple is (position, 2 bytes big-endian,
/// modulo the length; xor mask).
pub fn mutate(token: &str, edits: &[u8]) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    let len = bytes.len().max(1);
    for edit in edits.chunks_exact(3) {
        if let [hi, lo, mask] = *edit {
            if let Some(b) = bytes.get_mut(usize::from(u16::from_be_bytes([hi, lo])) % len) {
                *b ^= mask;
            }
        }
    }
    bytes
}

/// Decodes unpadded base64url (a JWS part); `None` if it is not.
pub fn b64url_decode(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part).ok()
}
