//! Requests the server sends the client (sampling, elicitation, roots), and the client's
//! answers to them.
//!
//! A client's JSON-RPC response is carried only when it answers a request that the server sent
//! on that caller's own session, recently. The gateway keeps no state for this, so every
//! worker and replica agrees: on its way to the client, a server request's id `I` is replaced
//! by a sealed id that carries `I`, the method asked and an expiry, under an HMAC (key derived
//! from the ticket signing key) bound to the caller (workload and user) and the upstream
//! session. A response is admitted only with a sealed id that opens for this caller and
//! session before its expiry; the upstream then sees `I` again, and policy sees which method
//! is being answered. Anything else (a made-up id, another caller's, an old one) is refused.
//! Whether the request is still open is the upstream's to know: it drops an answer to a
//! request it has closed, and the seal limits replays to the caller's own, recent requests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::session::{mac_field, owner_mac, Owner};

/// Domain separation for the key, derived from the ticket signing key.
pub const REQUEST_KEY_LABEL: &[u8] = b"portcullis server-request id mac v1";
/// How long a client may take to answer (a person may be answering an elicitation).
pub const ANSWER_WITHIN_SECONDS: u64 = 600;
const PREFIX: &str = "pcr1.";
const MAC_BYTES: usize = 16;
/// Longest sealed id accepted: a server's id plus method, base64, and the mac.
const MAX_SEALED_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("this response answers no request the server sent on this caller's session (unknown, altered or another caller's id)")]
    Unknown,
    #[error("this response answers a server request that expired (answers are accepted for {ANSWER_WITHIN_SECONDS} s)")]
    Expired,
    #[error("the server request's id cannot be sealed")]
    Unsealable,
}

/// Seals and opens server-request ids. Built once, at configuration.
#[derive(Clone)]
pub struct RequestSealer {
    key: [u8; 32],
}

/// What an admitted response answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The id the server gave its request.
    pub id: Value,
    /// The method the server asked, e.g. `sampling/createMessage`.
    pub method: String,
}

impl RequestSealer {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, owner: &Owner, session: Option<&str>, payload: &[u8]) -> Result<Hmac<Sha256>, SealError> {
        let mut mac = owner_mac(&self.key, owner).ok_or(SealError::Unsealable)?;
        mac_field(&mut mac, session.unwrap_or("").as_bytes());
        mac_field(&mut mac, payload);
        Ok(mac)
    }

    /// The id the client sees for the server's request `id` asking `method`.
    pub fn seal(&self, owner: &Owner, session: Option<&str>, id: &Value, method: &str, now: u64) -> Result<String, SealError> {
        let payload = serde_json::to_vec(&json!([id, method, now.saturating_add(ANSWER_WITHIN_SECONDS)])).map_err(|_| SealError::Unsealable)?;
        let tag = self.mac(owner, session, &payload)?.finalize().into_bytes();
        let tag = tag.get(..MAC_BYTES).ok_or(SealError::Unsealable)?;
        let sealed = format!("{PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag));
        // An id too long for `open` could never be answered: refuse it here instead.
        if sealed.len() > MAX_SEALED_BYTES {
            return Err(SealError::Unsealable);
        }
        Ok(sealed)
    }

    /// What `sealed` answers, if it was sealed for this caller and session and has not expired.
    pub fn open(&self, owner: &Owner, session: Option<&str>, sealed: &str, now: u64) -> Result<Answered, SealError> {
        if sealed.len() > MAX_SEALED_BYTES {
            return Err(SealError::Unknown);
        }
        let (payload, tag) = sealed.strip_prefix(PREFIX).and_then(|rest| rest.split_once('.')).ok_or(SealError::Unknown)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| SealError::Unknown)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SealError::Unknown)?;
        if tag.len() != MAC_BYTES {
            return Err(SealError::Unknown);
        }
        self.mac(owner, session, &payload)?.verify_truncated_left(&tag).map_err(|_| SealError::Unknown)?;
        let (id, method, expires): (Value, String, u64) = serde_json::from_slice(&payload).map_err(|_| SealError::Unknown)?;
        if now > expires {
            return Err(SealError::Expired);
        }
        Ok(Answered { id, method })
    }
}

/// Seals the ids of server requests in the messages of one response stream.
#[derive(Clone)]
pub struct StreamSeal {
    pub sealer: RequestSealer,
    pub owner: Owner,
    pub session: Option<String>,
    pub now: u64,
}

impl StreamSeal {
    /// If `message` is a server request (a method and an id), replaces its id with the sealed
    /// one; true if it did.
    pub fn seal_message(&self, message: &mut Value) -> Result<bool, SealError> {
        let Some(obj) = message.as_object_mut() else { return Ok(false) };
        let Some(method) = obj.get("method").and_then(Value::as_str).map(str::to_owned) else { return Ok(false) };
        let Some(id) = obj.get_mut("id") else { return Ok(false) };
        if id.is_null() {
            return Ok(false);
        }
        *id = Value::String(self.sealer.seal(&self.owner, self.session.as_deref(), id, &method, self.now)?);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(w: &str) -> Owner {
        Owner { workload: w.to_owned(), user: None }
    }

    #[test]
    fn a_sealed_id_opens_only_for_its_caller_session_and_time() {
        let s = RequestSealer::new([7; 32]);
        let a = owner("spiffe://td/ns/a/sa/x");
        let sealed = s.seal(&a, Some("S1"), &json!(3), "sampling/createMessage", 100).unwrap();
        assert_eq!(s.open(&a, Some("S1"), &sealed, 100), Ok(Answered { id: json!(3), method: "sampling/createMessage".into() }));
        assert_eq!(s.open(&owner("spiffe://td/ns/a/sa/y"), Some("S1"), &sealed, 100), Err(SealError::Unknown));
        assert_eq!(s.open(&a, Some("S2"), &sealed, 100), Err(SealError::Unknown));
        assert_eq!(s.open(&a, None, &sealed, 100), Err(SealError::Unknown));
        assert_eq!(s.open(&a, Some("S1"), &sealed, 100 + ANSWER_WITHIN_SECONDS + 1), Err(SealError::Expired));
        let forged = sealed.replacen("pcr1.", "pcr1.W", 1);
        assert_eq!(s.open(&a, Some("S1"), &forged, 100), Err(SealError::Unknown));
        assert_eq!(s.open(&a, Some("S1"), "7", 100), Err(SealError::Unknown));
    }

    /// Found by fuzzing (fuzz/regressions/listing/long-server-request-method): a server
    /// request whose sealed id would be longer than `open` accepts was sealed all the same, and
    /// the caller's answer then refused as answering nothing.
    #[test]
    fn an_id_too_long_to_answer_is_not_sealed() {
        let s = RequestSealer::new([7; 32]);
        let a = owner("spiffe://td/ns/a/sa/x");
        let long = "m".repeat(MAX_SEALED_BYTES);
        assert_eq!(s.seal(&a, None, &json!(1), &long, 100), Err(SealError::Unsealable));
        assert_eq!(s.seal(&a, None, &json!(long), "roots/list", 100), Err(SealError::Unsealable));
        let longest = "m".repeat(650);
        let sealed = s.seal(&a, None, &json!(1), &longest, 100).unwrap();
        assert_eq!(s.open(&a, None, &sealed, 100).unwrap().method, longest);
    }

    #[test]
    fn only_server_requests_are_sealed() {
        let seal = StreamSeal { sealer: RequestSealer::new([1; 32]), owner: owner("spiffe://td/w"), session: None, now: 5 };
        let mut request = json!({"jsonrpc":"2.0","id":"r1","method":"elicitation/create","params":{}});
        assert!(seal.seal_message(&mut request).unwrap());
        let sealed = request["id"].as_str().unwrap();
        assert_eq!(seal.sealer.open(&seal.owner, None, sealed, 5).unwrap().id, json!("r1"));
        for mut other in [json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}}), json!({"jsonrpc":"2.0","id":1,"result":{}})] {
            let before = other.clone();
            assert!(!seal.seal_message(&mut other).unwrap());
            assert_eq!(other, before);
        }
    }
}
