//! The dev user-token issuer of the one-machine setup, and the `users` section of the plugin
//! configuration.
//!
//! `<certs>/users/idp.key.pem` is an Ed25519 PKCS#8 key; `<certs>/users/jwks.json` publishes
//! its public key (kid = RFC 7638 thumbprint). Tokens say `iss` [`DEV_ISSUER`], `aud`
//! [`DEV_AUDIENCE`]. A real deployment names its IdP's issuer and JWKS with `up --users FILE`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_core::userjwt::{IssuerConfig, UsersConfig, DEFAULT_LEEWAY_SECONDS};
use serde_json::{json, Value};

use crate::devstack::certs::{self, CertsError};

pub const DEV_ISSUER: &str = "https://idp.portcullis.local";
pub const DEV_AUDIENCE: &str = "portcullis";

/// Paths of the dev issuer's key and JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevIssuer {
    pub key: PathBuf,
    pub jwks: PathBuf,
}

impl DevIssuer {
    /// The dev issuer's paths under a certificates directory (see [`ensure`]).
    pub fn in_dir(certs_dir: &Path) -> Self {
        let dir = certs_dir.join("users");
        Self { key: dir.join("idp.key.pem"), jwks: dir.join("jwks.json") }
    }
}

/// Creates the dev issuer under `<certs_dir>/users` unless a usable one is there; the JWKS
/// is always rewritten from the key, so the two never disagree.
pub fn ensure(certs_dir: &Path) -> Result<DevIssuer, CertsError> {
    certs::prepare_dir(&certs_dir.join("users"))?;
    let issuer = DevIssuer::in_dir(certs_dir);
    let existing = issuer.key.exists().then(|| certs::read(&issuer.key)).transpose()?;
    let key_pem = match existing.filter(|pem| public_key_x(pem).is_some()) {
        Some(pem) => pem,
        None => {
            let (pem, _) = certs::ed25519_pkcs8_v1()?;
            certs::write_file(&issuer.key, &pem, certs::KEY_MODE)?;
            pem
        }
    };
    let jwks = jwks_for(&key_pem).ok_or(CertsError::Ed25519Encoding)?;
    let text = serde_json::to_string_pretty(&jwks).unwrap_or_default() + "\n";
    if certs::read(&issuer.jwks).ok().as_deref() != Some(text.as_str()) {
        certs::write_file(&issuer.jwks, &text, certs::CERT_MODE)?;
    }
    Ok(issuer)
}

/// The base64url Ed25519 public key of a PKCS#8 private key PEM.
fn public_key_x(pem: &str) -> Option<String> {
    let key = rcgen::KeyPair::from_pem(pem).ok()?;
    (key.algorithm() == &rcgen::PKCS_ED25519).then(|| base64url(key.public_key_raw()))
}

fn jwk_for(pem: &str) -> Option<Jwk> {
    let x = public_key_x(pem)?;
    let mut jwk: Jwk = serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig"})).ok()?;
    jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256));
    Some(jwk)
}

fn jwks_for(pem: &str) -> Option<Value> {
    Some(json!({"keys": [jwk_for(pem)?]}))
}

/// The `users` section that trusts the dev issuer.
pub fn dev_users_config(issuer: &DevIssuer) -> Result<UsersConfig> {
    let text = std::fs::read_to_string(&issuer.jwks).with_context(|| format!("reading {} (run `portcullis certs`)", issuer.jwks.display()))?;
    let jwks: Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", issuer.jwks.display()))?;
    Ok(UsersConfig {
        issuers: vec![IssuerConfig {
            issuer: DEV_ISSUER.into(),
            audiences: vec![DEV_AUDIENCE.into()],
            jwks,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        }],
    })
}

/// The `users` section from `file` (JSON, `{"issuers": [...]}`), or the dev issuer's.
pub fn users_config(file: Option<&Path>, dev: &DevIssuer) -> Result<UsersConfig> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading users file {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing users file {}", path.display()))
        }
        None => dev_users_config(dev),
    }
}

/// What a dev token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub groups: Vec<String>,
    pub audience: String,
    /// Seconds from now until `exp`; negative for an already expired token.
    pub expires_in: i64,
}

/// Signs a user token with the dev issuer's key.
pub fn mint(issuer: &DevIssuer, req: &TokenRequest) -> Result<String> {
    let pem = certs::read(&issuer.key)?;
    let jwk = jwk_for(&pem).context("the dev issuer key is not an Ed25519 PKCS#8 key")?;
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).context("loading the dev issuer key")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({
        "iss": DEV_ISSUER,
        "aud": req.audience,
        "sub": req.sub,
        "groups": req.groups,
        "iat": now,
        "exp": now.saturating_add_signed(req.expires_in),
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = jwk.common.key_id;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::userjwt::UserVerifier;

    #[test]
    fn base64url_matches_rfc4648_without_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn dev_issuer_tokens_verify_with_its_jwks_and_the_key_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = ensure(dir.path()).unwrap();
        let key = std::fs::read(&issuer.key).unwrap();
        assert_eq!(ensure(dir.path()).unwrap(), issuer);
        assert_eq!(std::fs::read(&issuer.key).unwrap(), key, "an existing key must be reused");
        let verifier = UserVerifier::new(&dev_users_config(&issuer).unwrap()).unwrap();
        let req = TokenRequest { sub: "alice".into(), groups: vec!["sre".into()], audience: DEV_AUDIENCE.into(), expires_in: 300 };
        let token = mint(&issuer, &req).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let user = verifier.verify(Some(&format!("Bearer {token}")), now).unwrap();
        assert_eq!((user.sub.as_str(), user.groups.as_slice(), user.iss.as_str()), ("alice", &["sre".to_owned()][..], DEV_ISSUER));
    }
}
