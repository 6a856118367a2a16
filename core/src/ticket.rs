//! The gateway's ticket: a short-lived EdDSA JWT that binds one allowed call (workload, user,
//! tool, plan hash, decision) for the runner, which re-verifies it.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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
    pub tool: String,
    pub plan_hash: String,
    pub decision_id: String,
    pub require_approval: bool,
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
    #[error("cannot sign ticket: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
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
pub struct Signer {
    key: EncodingKey,
    pub issuer: String,
    pub ttl_seconds: u64,
}

impl Signer {
    /// `pem` is a PKCS#8 Ed25519 private key.
    pub fn from_pem(pem: &[u8], issuer: String, ttl_seconds: u64) -> Result<Self, TicketError> {
        Ok(Self { key: EncodingKey::from_ed_pem(pem).map_err(TicketError::Key)?, issuer, ttl_seconds })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TicketError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key).map_err(TicketError::Sign)
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
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = leeway_seconds;
        validation.reject_tokens_expiring_in_less_than = 0;
        Ok(Self { key, validation })
    }

    /// Checks signature, issuer, audience and expiry. Replay and call binding are separate
    /// steps ([`check_binding`]) because replay state lives with the runner.
    pub fn verify(&self, token: &str) -> Result<Claims, TicketError> {
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => Err(TicketError::Expired),
            Err(e) => Err(TicketError::Invalid(e)),
        }
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
