//! The floor's per-request work, without Envoy: parse the body, hash the arguments, build the
//! ticket (and sign it when configured). Tested natively; `lib.rs` only moves bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The JWT header of an EdDSA token, as Portcullis's tickets carry it.
const JWT_HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

/// The plugin configuration: `{"sign": false}`, or `{"sign": true, "signing_key_pem": "..."}`
/// with a PKCS#8 Ed25519 private key (the same format as the gateway's ticket key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    sign: bool,
    #[serde(default)]
    signing_key_pem: Option<String>,
}

pub struct Config {
    signer: Option<SigningKey>,
}

/// Claims shaped like a Portcullis ticket's (same fields and sizes), so that the floor
/// serializes, encodes and carries as many bytes as the gateway does.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    tool: &'a str,
    plan_hash: String,
    decision_id: &'a str,
    require_approval: bool,
    policy_version: &'a str,
    jti: &'a str,
    iat: u64,
    exp: u64,
}

/// What one request produced.
#[derive(Debug)]
pub struct Ticket {
    /// The header value: `base64url(header).base64url(claims).base64url(signature)`.
    pub token: String,
    pub decision_id: String,
}

impl Config {
    pub fn from_json(bytes: &[u8]) -> Result<Config, String> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| format!("bad configuration: {e}"))?;
        let signer = match (raw.sign, raw.signing_key_pem) {
            (false, _) => None,
            (true, Some(pem)) => Some(SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("signing_key_pem is not a PKCS#8 Ed25519 key: {e}"))?),
            (true, None) => return Err("sign is true but no signing_key_pem is given".into()),
        };
        Ok(Config { signer })
    }

    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// The ticket for a `tools/call` body from `peer`, with `entropy` as its id, at `now_unix`.
    pub fn ticket(&self, body: &[u8], peer: &str, entropy: [u8; 16], now_unix: u64) -> Result<Ticket, String> {
        let request: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let params = request.get("params").ok_or("no params")?;
        let tool = params.get("name").and_then(Value::as_str).ok_or("no params.name")?;
        let arguments = serde_json::to_vec(params.get("arguments").unwrap_or(&Value::Null)).map_err(|e| e.to_string())?;
        let decision_id = hex::encode(entropy);
        let claims = Claims {
            iss: "portcullis-gateway",
            aud: "portcullis-runner",
            sub: peer,
            tool,
            plan_hash: hex::encode(Sha256::digest(&arguments)),
            decision_id: &decision_id,
            require_approval: false,
            policy_version: "0123456789abcdef0123456789abcdef",
            jti: &decision_id,
            iat: now_unix,
            exp: now_unix + 60,
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
        let mut token = String::with_capacity(700);
        URL_SAFE_NO_PAD.encode_string(JWT_HEADER, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        // Unsigned, the token still carries 64 signature bytes (zeros): both floors put the
        // same bytes on the wire, so their difference is the signing alone.
        let signature = match &self.signer {
            Some(key) => key.sign(token.as_bytes()).to_bytes(),
            None => [0u8; 64],
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(Ticket { token, decision_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway key (RFC 8410's example private key).
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"the quick brown fox"}}}"#;
    const PEER: &str = "spiffe://portcullis.local/ns/agents/sa/reader";

    #[test]
    fn unsigned_and_signed_tickets_have_the_same_shape_and_size() {
        let plain = Config::from_json(br#"{"sign": false}"#).unwrap();
        let key = serde_json::json!({"sign": true, "signing_key_pem": KEY}).to_string();
        let signed = Config::from_json(key.as_bytes()).unwrap();
        assert!(!plain.signs() && signed.signs());
        let a = plain.ticket(BODY, PEER, [7; 16], 1_700_000_000).unwrap();
        let b = signed.ticket(BODY, PEER, [7; 16], 1_700_000_000).unwrap();
        assert_eq!(a.token.len(), b.token.len());
        assert!((600..=720).contains(&a.token.len()), "{} bytes", a.token.len());
        assert_eq!(a.token.rsplit_once('.').unwrap().0, b.token.rsplit_once('.').unwrap().0);
        assert_ne!(a.token, b.token);
        assert_eq!(a.decision_id, "07".repeat(16));
        let claims = a.token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["tool"], "word_count");
        assert_eq!(claims["sub"], PEER);
    }

    #[test]
    fn bad_bodies_and_configs_are_errors() {
        let plain = Config::from_json(br#"{"sign": false}"#).unwrap();
        assert!(plain.ticket(b"not json", PEER, [0; 16], 0).is_err());
        assert!(plain.ticket(br#"{"params":{}}"#, PEER, [0; 16], 0).is_err());
        assert!(Config::from_json(br#"{"sign": true}"#).is_err());
        assert!(Config::from_json(br#"{"sign": true, "signing_key_pem": "nope"}"#).is_err());
        assert!(Config::from_json(br#"{"sign": false, "other": 1}"#).is_err());
    }
}
