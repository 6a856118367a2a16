//! The caller assertion: a short-lived EdDSA JWT, signed with the ticket key, that names the
//! caller of every forwarded request that is not a tools/call (initialize, tools/list,
//! notifications, ping, the GET stream, DELETE). The runner uses it to bind sessions to their
//! owner without trusting anything the agent sent.
//!
//! It has its own audience and its own strict claims type, so a ticket can never pass as a
//! caller assertion nor the reverse.

use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

use crate::ticket::{decode, validation, Signer, TicketError};

/// Request header carrying the caller assertion. The filter strips any inbound copy.
pub const CALLER_HEADER: &str = "x-portcullis-caller";
/// Audience of caller assertions (tickets use [`crate::ticket::AUDIENCE`]).
pub const CALLER_AUDIENCE: &str = "portcullis-runner-caller";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerClaims {
    pub iss: String,
    pub aud: String,
    /// Workload identity (SPIFFE ID) of the calling agent.
    pub sub: String,
    /// The verified user's subject and issuer, when a user token named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_iss: Option<String>,
    /// Hex SHA-256 of the request's MCP session id; absent without a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The HTTP method of the request: POST, GET or DELETE.
    pub http: String,
    /// The JSON-RPC method of a POST; absent for GET and DELETE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub iat: u64,
    pub exp: u64,
}

impl Signer {
    pub fn sign_caller(&self, claims: &CallerClaims) -> Result<String, TicketError> {
        self.sign_json(claims)
    }
}

/// Verifies caller assertions against the gateway's public key: signature, issuer, audience,
/// expiry. They carry no `jti` and are not one-use: what they prove is who is calling.
pub struct CallerVerifier {
    key: DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl CallerVerifier {
    pub fn from_pem(pem: &[u8], issuer: &str, leeway_seconds: u64) -> Result<Self, TicketError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(TicketError::Key)?;
        Ok(Self { key, validation: validation(issuer, CALLER_AUDIENCE, leeway_seconds) })
    }

    pub fn verify(&self, token: &str) -> Result<CallerClaims, TicketError> {
        decode(token, &self.key, &self.validation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{Claims, Verifier, AUDIENCE};

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    const PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims() -> CallerClaims {
        CallerClaims {
            iss: "portcullis-gateway".into(),
            aud: CALLER_AUDIENCE.into(),
            sub: "spiffe://td/ns/a/sa/b".into(),
            user: None,
            user_iss: None,
            session: Some("ab".repeat(32)),
            http: "POST".into(),
            method: Some("tools/list".into()),
            iat: now(),
            exp: now() + 30,
        }
    }

    #[test]
    fn caller_assertions_and_tickets_never_stand_in_for_each_other() {
        let signer = Signer::from_pem(KEY.as_bytes(), "portcullis-gateway".into(), 30).unwrap();
        let callers = CallerVerifier::from_pem(PUB.as_bytes(), "portcullis-gateway", 0).unwrap();
        let tickets = Verifier::from_pem(PUB.as_bytes(), "portcullis-gateway", 0).unwrap();
        let caller = claims();
        let token = signer.sign_caller(&caller).unwrap();
        assert_eq!(callers.verify(&token).unwrap(), caller);
        assert!(tickets.verify(&token).is_err(), "a caller assertion passed as a ticket");
        // Even with the ticket's audience, the claims type refuses it.
        let token = signer.sign_caller(&CallerClaims { aud: AUDIENCE.into(), ..caller.clone() }).unwrap();
        assert!(tickets.verify(&token).is_err());

        let ticket = Claims {
            iss: "portcullis-gateway".into(),
            aud: AUDIENCE.into(),
            sub: caller.sub.clone(),
            user: None,
            user_iss: None,
            groups: Vec::new(),
            session: caller.session.clone(),
            tool: "t".into(),
            plan_hash: "sha256:00".into(),
            decision_id: "d".into(),
            require_approval: false,
            placement: None,
            policy_version: "v".into(),
            jti: "j".into(),
            iat: now(),
            exp: now() + 30,
        };
        assert!(callers.verify(&signer.sign(&ticket).unwrap()).is_err(), "a ticket passed as a caller assertion");
        let ticket = Claims { aud: CALLER_AUDIENCE.into(), ..ticket };
        assert!(callers.verify(&signer.sign(&ticket).unwrap()).is_err());
    }

    #[test]
    fn expired_assertions_are_refused() {
        let signer = Signer::from_pem(KEY.as_bytes(), "portcullis-gateway".into(), 30).unwrap();
        let callers = CallerVerifier::from_pem(PUB.as_bytes(), "portcullis-gateway", 0).unwrap();
        let claims = CallerClaims { http: "GET".into(), method: None, iat: now() - 120, exp: now() - 60, ..claims() };
        assert!(matches!(callers.verify(&signer.sign_caller(&claims).unwrap()), Err(TicketError::Expired)));
    }
}
