//! The gateway's ticket: a short-lived EdDSA JWT that binds one allowed call (workload, user,
//! tool, plan hash, decision) for the runner, which re-verifies it.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Audience of every ticket: only the runner accepts them.
pub const AUDIENCE: &str = "portcullis-runner";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Workload identity (SPIFFE ID) of the calling agent.
    pub sub: String,
    /// The user the agent acts for, when a verified user token named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Issuer of the user token (set exactly when `user` is): a user is (issuer, subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_iss: Option<String>,
    /// The verified user's groups (only with `user`): the runner checks the approver role on
    /// its own before it takes an approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Hex SHA-256 of the MCP session id the call was made on; absent without a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub tool: String,
    pub plan_hash: String,
    pub decision_id: String,
    pub require_approval: bool,
    /// Where the call's job runs, as the policy decided; absent: the tool's catalog default.
    /// Only the gateway's signature vouches for it: the agent never chooses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::placement::Placement>,
    /// Version (hash) of the policy bundle that decided.
    pub policy_version: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("ticket key is not valid: {0}")]
    Key(#[source] jsonwebtoken::errors::Error),
    #[error("ticket signing key is not a PKCS#8 Ed25519 PEM key: {0}")]
    KeyFormat(String),
    #[error("cannot encode ticket claims: {0}")]
    Encode(String),
    #[error("ticket expired")]
    Expired,
    #[error("ticket rejected: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("ticket was already used (jti {0})")]
    Replayed(String),
    #[error("ticket is for tool {ticket:?} but the call is for {call:?}")]
    ToolMismatch { ticket: String, call: String },
    #[error("ticket plan hash {ticket} does not match the call's plan hash {call}")]
    PlanMismatch { ticket: String, call: String },
}

/// Signs tickets with the gateway's Ed25519 key.
///
/// The key is parsed once, at configuration: `jsonwebtoken::encode` re-parses its PKCS#8 key
/// on every call, which cost as much as the signature itself. The token is a plain compact
/// JWS (RFC 7515) with `alg: EdDSA` (RFC 8037), so any JWT library verifies it; the runner
/// uses jsonwebtoken, and a test checks the two agree.
pub struct Signer {
    key: ed25519_dalek::SigningKey,
    pub issuer: String,
    pub ttl_seconds: u64,
}

/// `{"typ":"JWT","alg":"EdDSA"}`, base64url: the same for every ticket.
const HEADER_B64: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9";

impl Signer {
    /// `pem` is a PKCS#8 Ed25519 private key.
    pub fn from_pem(pem: &[u8], issuer: String, ttl_seconds: u64) -> Result<Self, TicketError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let pem = std::str::from_utf8(pem).map_err(|e| TicketError::KeyFormat(e.to_string()))?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| TicketError::KeyFormat(e.to_string()))?;
        Ok(Self { key, issuer, ttl_seconds })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TicketError> {
        self.sign_json(claims)
    }

    /// Signs any claims document with the gateway key: callers keep each kind of token apart
    /// by its audience and its own strict claims type.
    pub(crate) fn sign_json<T: Serialize>(&self, claims: &T) -> Result<String, TicketError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use ed25519_dalek::Signer as _;
        let payload = serde_json::to_vec(claims).map_err(|e| TicketError::Encode(e.to_string()))?;
        let mut token = String::with_capacity(HEADER_B64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(HEADER_B64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

impl Signer {
    /// A 256-bit key for another purpose, derived from the signing key as
    /// HMAC-SHA256(seed, label): every holder of the signing key derives the same one, and no
    /// two labels give related keys.
    pub fn derive_key(&self, label: &[u8]) -> Result<[u8; 32], TicketError> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.key.as_bytes()).map_err(|e| TicketError::KeyFormat(e.to_string()))?;
        mac.update(label);
        Ok(mac.finalize().into_bytes().into())
    }
}

/// The EdDSA validation every gateway token gets: issuer, audience, expiry, subject.
pub(crate) fn validation(issuer: &str, audience: &str, leeway_seconds: u64) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = leeway_seconds;
    validation.reject_tokens_expiring_in_less_than = 0;
    validation
}

/// Decodes and verifies a gateway token into its strict claims type.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(token: &str, key: &DecodingKey, validation: &Validation) -> Result<T, TicketError> {
    match jsonwebtoken::decode::<T>(token, key, validation) {
        Ok(data) => Ok(data.claims),
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => Err(TicketError::Expired),
        Err(e) => Err(TicketError::Invalid(e)),
    }
}

/// Verifies tickets against the gateway's public key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// `pem` is the SPKI Ed25519 public key; `leeway_seconds` tolerates clock skew.
    pub fn from_pem(pem: &[u8], issuer: &str, leeway_seconds: u64) -> Result<Self, TicketError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(TicketError::Key)?;
        Ok(Self { key, validation: validation(issuer, AUDIENCE, leeway_seconds) })
    }

    /// Checks signature, issuer, audience and expiry. Replay and call binding are separate
    /// steps ([`check_binding`]) because replay state lives with the runner.
    pub fn verify(&self, token: &str) -> Result<Claims, TicketError> {
        decode(token, &self.key, &self.validation)
    }
}

/// Checks that a verified ticket authorizes exactly this call.
pub fn check_binding(claims: &Claims, tool: &str, plan_hash: &str) -> Result<(), TicketError> {
    if claims.tool != tool {
        return Err(TicketError::ToolMismatch { ticket: claims.tool.clone(), call: tool.to_owned() });
    }
    if claims.plan_hash != plan_hash {
        return Err(TicketError::PlanMismatch { ticket: claims.plan_hash.clone(), call: plan_hash.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway test key (RFC 8032 test vector 1's secret, as PKCS#8) and its SPKI.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    const PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";

    fn claims(now: u64) -> Claims {
        Claims {
            iss: "portcullis-gateway".into(),
            aud: AUDIENCE.into(),
            sub: "spiffe://td/ns/a/sa/b".into(),
            user: Some("alice".into()),
            user_iss: Some("https://idp".into()),
            groups: Vec::new(),
            session: Some("00".repeat(32)),
            tool: "t".into(),
            plan_hash: "sha256:00".into(),
            decision_id: "d".into(),
            require_approval: false,
            placement: Some(crate::placement::Placement::default()),
            policy_version: "v".into(),
            jti: "j".into(),
            iat: now,
            exp: now + 30,
        }
    }

    #[test]
    fn tickets_verify_with_jsonwebtoken_and_tampering_fails() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let signer = Signer::from_pem(KEY.as_bytes(), "portcullis-gateway".into(), 30).unwrap();
        let verifier = Verifier::from_pem(PUB.as_bytes(), "portcullis-gateway", 0).unwrap();
        let token = signer.sign(&claims(now)).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(verifier.verify(&token).unwrap(), claims(now));
        let mut forged = token.clone().into_bytes();
        let mid = forged.len() / 2;
        forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
        assert!(verifier.verify(&String::from_utf8(forged).unwrap()).is_err());
    }

    #[test]
    fn a_key_that_is_not_ed25519_pkcs8_is_refused() {
        assert!(matches!(Signer::from_pem(b"not a key", "i".into(), 30), Err(TicketError::KeyFormat(_))));
        assert!(Signer::from_pem(PUB.as_bytes(), "i".into(), 30).is_err());
    }
}
