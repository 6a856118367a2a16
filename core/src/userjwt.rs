//! User identity: verifies the `Authorization: Bearer` JWT that names the user an agent acts
//! for. Keys come from a JWKS per trusted issuer in the plugin configuration.
//!
//! Accepted: EdDSA with OKP/Ed25519 keys, ES256 with EC/P-256 keys, RS256 with RSA keys of at
//! least 2048 bits. The token's `alg` must be the one its key's type implies (no algorithm
//! confusion; `none` and HS* never verify). A token with a `kid` is checked against that key
//! only; one without a `kid` against every key of its issuer that fits its `alg`.
//!
//! Claims are checked against the host clock passed in (`now`), with the issuer's leeway:
//! `iss` must name a configured issuer, `aud` must contain one of its audiences, `exp` is
//! required, `nbf` is honoured when present, `sub` is required. `groups` is optional; when
//! present it must be an array of strings, or the token is refused (a malformed claim is an
//! IdP misconfiguration, not "no groups").

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Clock skew tolerated at most; a larger leeway would keep expired tokens alive.
pub const MAX_LEEWAY_SECONDS: u64 = 300;
/// Longest bearer token accepted (bytes).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// The `users` section of the plugin configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// A JWKS document: `{"keys": [...]}` with public keys only.
    pub jwks: Value,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_leeway() -> u64 {
    DEFAULT_LEEWAY_SECONDS
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersConfigError {
    #[error("users.issuers[{index}]: {reason}")]
    Issuer { index: usize, reason: String },
    #[error("users.issuers[{index}].jwks.keys[{key}]: {reason}")]
    Key { index: usize, key: usize, reason: String },
}

/// A verified user, as policy sees it under `input.user`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifiedUser {
    pub sub: String,
    pub iss: String,
    pub groups: Vec<String>,
    /// Every claim of the verified token.
    pub claims: Map<String, Value>,
}

/// Why a request carries no verified user. The message is what policy sees as
/// `input.user_error` and what a denied caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("no bearer token")]
    NoToken,
    #[error("malformed Authorization header: expected \"Bearer <token>\"")]
    MalformedHeader,
    #[error("bearer token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("bearer token is not a well-formed JWT")]
    NotJwt,
    #[error("bearer token header is invalid or names an unsupported algorithm (accepted: EdDSA, ES256, RS256)")]
    BadHeader,
    #[error("bearer token algorithm {0} is not accepted (accepted: EdDSA, ES256, RS256)")]
    Algorithm(String),
    #[error("bearer token has no iss claim")]
    NoIssuer,
    #[error("bearer token issuer {0:?} is not accepted")]
    UnknownIssuer(String),
    #[error("bearer token key id {kid:?} is not in the JWKS of issuer {issuer:?}")]
    UnknownKey { kid: String, issuer: String },
    #[error("bearer token algorithm {alg} does not match the type of key {kid:?}")]
    KeyMismatch { kid: String, alg: String },
    #[error("issuer {issuer:?} has no key for algorithm {alg}")]
    NoKeyForAlgorithm { issuer: String, alg: String },
    #[error("bearer token signature does not verify with any configured key")]
    BadSignature,
    #[error("bearer token has no numeric exp claim")]
    NoExpiry,
    #[error("bearer token expired")]
    Expired,
    #[error("bearer token is not valid yet (nbf)")]
    NotYetValid,
    #[error("bearer token has no aud claim")]
    NoAudience,
    #[error("bearer token audience not accepted")]
    Audience,
    #[error("bearer token has no sub claim")]
    NoSubject,
    #[error("bearer token groups claim is not an array of strings")]
    Groups,
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    leeway: u64,
    keys: Vec<Key>,
}

/// Verifies user tokens against the configured issuers. Built once, at configuration.
#[derive(Default)]
pub struct UserVerifier {
    issuers: Vec<Issuer>,
}

impl UserVerifier {
    pub fn new(config: &UsersConfig) -> Result<Self, UsersConfigError> {
        let mut issuers: Vec<Issuer> = Vec::new();
        for (index, c) in config.issuers.iter().enumerate() {
            let err = |reason: String| UsersConfigError::Issuer { index, reason };
            if c.issuer.is_empty() {
                return Err(err("issuer must not be empty".into()));
            }
            if issuers.iter().any(|i| i.issuer == c.issuer) {
                return Err(err(format!("issuer {:?} is configured twice", c.issuer)));
            }
            if c.audiences.is_empty() || c.audiences.iter().any(String::is_empty) {
                return Err(err("audiences must name at least one non-empty audience".into()));
            }
            if c.leeway_seconds > MAX_LEEWAY_SECONDS {
                return Err(err(format!("leeway_seconds must be at most {MAX_LEEWAY_SECONDS}, got {}", c.leeway_seconds)));
            }
            let keys = parse_jwks(&c.jwks, index)?;
            issuers.push(Issuer { issuer: c.issuer.clone(), audiences: c.audiences.clone(), leeway: c.leeway_seconds, keys });
        }
        Ok(Self { issuers })
    }

    /// Verifies the value of the `Authorization` header (`None` when absent) at time `now`.
    pub fn verify(&self, authorization: Option<&str>, now: u64) -> Result<VerifiedUser, UserError> {
        let token = bearer_token(authorization)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| UserError::BadHeader)?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256) {
            return Err(UserError::Algorithm(format!("{:?}", header.alg)));
        }
        // The unverified `iss` only selects the keys to verify with; nothing else is read
        // before the signature checks out.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token).map_err(|_| UserError::NotJwt)?;
        let iss = unverified.claims.get("iss").and_then(Value::as_str).ok_or(UserError::NoIssuer)?;
        let issuer = self.issuers.iter().find(|i| i.issuer == iss).ok_or_else(|| UserError::UnknownIssuer(iss.to_owned()))?;
        let claims = issuer.verify_signature(token, header.alg, header.kid.as_deref())?;
        issuer.check_claims(claims, now)
    }
}

fn bearer_token(authorization: Option<&str>) -> Result<&str, UserError> {
    let value = authorization.ok_or(UserError::NoToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(UserError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(UserError::MalformedHeader);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(UserError::TooLarge);
    }
    let jwt_chars = token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !jwt_chars || token.split('.').count() != 3 {
        return Err(UserError::NotJwt);
    }
    Ok(token)
}

impl Issuer {
    fn verify_signature(&self, token: &str, alg: Algorithm, kid: Option<&str>) -> Result<Map<String, Value>, UserError> {
        let alg_name = format!("{alg:?}");
        let candidates: Vec<&Key> = match kid {
            Some(kid) => {
                let key = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).ok_or_else(|| UserError::UnknownKey {
                    kid: kid.to_owned(),
                    issuer: self.issuer.clone(),
                })?;
                if key.alg != alg {
                    return Err(UserError::KeyMismatch { kid: kid.to_owned(), alg: alg_name });
                }
                vec![key]
            }
            None => self.keys.iter().filter(|k| k.alg == alg).collect(),
        };
        if candidates.is_empty() {
            return Err(UserError::NoKeyForAlgorithm { issuer: self.issuer.clone(), alg: alg_name });
        }
        // Signature only: the claims are checked below against the host clock.
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => continue,
                Err(_) => return Err(UserError::NotJwt),
            }
        }
        Err(UserError::BadSignature)
    }

    fn check_claims(&self, claims: Map<String, Value>, now: u64) -> Result<VerifiedUser, UserError> {
        let (now, leeway) = (now as f64, self.leeway as f64);
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or(UserError::NoExpiry)?;
        if now >= exp + leeway {
            return Err(UserError::Expired);
        }
        match claims.get("nbf") {
            None => {}
            Some(nbf) => match nbf.as_f64() {
                Some(nbf) if nbf <= now + leeway => {}
                _ => return Err(UserError::NotYetValid),
            },
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Err(UserError::NoAudience),
        };
        if !audiences.iter().any(|a| self.audiences.iter().any(|ok| ok == a)) {
            return Err(UserError::Audience);
        }
        let sub = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(UserError::NoSubject)?.to_owned();
        let groups = match claims.get("groups") {
            None => Vec::new(),
            Some(Value::Array(list)) => list.iter().map(|g| g.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().ok_or(UserError::Groups)?,
            Some(_) => return Err(UserError::Groups),
        };
        Ok(VerifiedUser { sub, iss: self.issuer.clone(), groups, claims })
    }
}

fn parse_jwks(jwks: &Value, index: usize) -> Result<Vec<Key>, UsersConfigError> {
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or_else(|| UsersConfigError::Issuer {
        index,
        reason: "jwks must be an object with a \"keys\" array".into(),
    })?;
    if keys.is_empty() {
        return Err(UsersConfigError::Issuer { index, reason: "jwks has no keys".into() });
    }
    let mut out: Vec<Key> = Vec::new();
    for (n, raw) in keys.iter().enumerate() {
        let key = parse_key(raw).map_err(|reason| UsersConfigError::Key { index, key: n, reason })?;
        if key.kid.is_some() && out.iter().any(|k| k.kid == key.kid) {
            return Err(UsersConfigError::Key { index, key: n, reason: format!("kid {:?} appears twice", key.kid.unwrap_or_default()) });
        }
        out.push(key);
    }
    Ok(out)
}

fn parse_key(raw: &Value) -> Result<Key, String> {
    if ["d", "p", "q", "k"].iter().any(|private| raw.get(private).is_some()) {
        return Err("holds private or symmetric key material; a JWKS here carries public keys only".into());
    }
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("not a supported JWK (OKP/Ed25519, EC/P-256 or RSA): {e}"))?;
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => (Algorithm::EdDSA, DecodingKey::from_ed_components(&p.x)),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => (Algorithm::ES256, DecodingKey::from_ec_components(&p.x, &p.y)),
        AlgorithmParameters::RSA(p) => (Algorithm::RS256, DecodingKey::from_rsa_components(&p.n, &p.e)),
        _ => return Err("unsupported key type or curve (accepted: OKP/Ed25519, EC/P-256, RSA)".into()),
    };
    let key = key.map_err(|e| format!("key parameters do not decode: {e}"))?;
    if let DecodingKeyKind::RsaModulusExponent { n, .. } = key.kind() {
        let bytes = n.iter().skip_while(|b| **b == 0).count();
        if bytes < MIN_RSA_MODULUS_BYTES {
            return Err(format!("RSA key has {} bits; at least 2048 are required", bytes * 8));
        }
    }
    let declared = jwk.common.key_algorithm.map(|a| match a {
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        _ => None,
    });
    if let Some(declared) = declared {
        if declared != Some(alg) {
            return Err(format!("\"alg\" does not match the key type (a key of this type verifies {alg:?} only)"));
        }
    }
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("\"use\" must be \"sig\"".into());
    }
    Ok(Key { kid: jwk.common.key_id.clone(), alg, key })
}

#[cfg(test)]
mod tests;
