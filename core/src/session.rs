//! MCP sessions bound to the identity that opened them.
//!
//! The gateway keeps no session state, so every Envoy worker and every replica agrees: the
//! session id the upstream issues (`S`) reaches the agent as `S.<mac>`, where the mac is an
//! HMAC-SHA256, under a key derived from the ticket signing key, of the owner (workload and
//! verified user) and `S`. A request naming a session is forwarded only if the mac is right
//! for *this* caller; the upstream then sees `S` again. Anyone else's use of the id, or a
//! guessed one, is an unknown session.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{RejectKind, Rejection, INVALID_REQUEST};
use crate::jsonrpc::Id;
use crate::userjwt::VerifiedUser;

/// The Streamable HTTP session header (HTTP header names are case-insensitive).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// Domain separation: the session key is derived from the ticket signing key with this label,
/// so it is never the key of anything else.
pub const SESSION_KEY_LABEL: &[u8] = b"portcullis session-id mac v1";
/// Bytes of HMAC output kept: 128 bits.
const MAC_BYTES: usize = 16;
/// Longest upstream session id the gateway seals (rmcp issues 36-character UUIDs).
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// Who a session belongs to: the workload and, when a verified user token named one, the user
/// as (issuer, subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub workload: String,
    pub user: Option<(String, String)>,
}

impl Owner {
    pub fn new(workload: &str, user: Option<&VerifiedUser>) -> Self {
        Self { workload: workload.to_owned(), user: user.map(|u| (u.iss.clone(), u.sub.clone())) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the upstream session id is empty, longer than {MAX_SESSION_ID_BYTES} bytes or not visible ASCII")]
    BadUpstreamId,
    #[error("unknown session: this Mcp-Session-Id was not issued to this workload and user")]
    Unknown,
}

/// Seals and opens session ids. Built once, at configuration.
pub struct SessionSealer {
    key: [u8; 32],
}

impl SessionSealer {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, owner: &Owner, inner: &str) -> Result<Hmac<Sha256>, SessionError> {
        let mut mac = owner_mac(&self.key, owner).ok_or(SessionError::BadUpstreamId)?;
        mac_field(&mut mac, inner.as_bytes());
        Ok(mac)
    }

    /// The id the agent receives for the upstream's session `inner`: `inner.<mac>`.
    pub fn seal(&self, owner: &Owner, inner: &str) -> Result<String, SessionError> {
        if !is_upstream_id(inner) {
            return Err(SessionError::BadUpstreamId);
        }
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let tag = self.mac(owner, inner)?.finalize().into_bytes();
        let tag = tag.get(..MAC_BYTES).ok_or(SessionError::BadUpstreamId)?;
        Ok(format!("{inner}.{}", URL_SAFE_NO_PAD.encode(tag)))
    }

    /// The upstream session named by `outer`, if `outer` was sealed for `owner`. The mac is
    /// compared in constant time.
    pub fn open<'a>(&self, owner: &Owner, outer: &'a str) -> Result<&'a str, SessionError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let (inner, tag) = outer.rsplit_once('.').ok_or(SessionError::Unknown)?;
        if !is_upstream_id(inner) {
            return Err(SessionError::Unknown);
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SessionError::Unknown)?;
        if tag.len() != MAC_BYTES {
            return Err(SessionError::Unknown);
        }
        let mac = self.mac(owner, inner).map_err(|_| SessionError::Unknown)?;
        mac.verify_truncated_left(&tag).map_err(|_| SessionError::Unknown)?;
        Ok(inner)
    }
}

/// An HMAC-SHA256 under `key` that has taken in `owner`: every field length-prefixed and the
/// user's presence tagged, so no two owners encode alike. Callers add what the owner is bound to.
pub(crate) fn owner_mac(key: &[u8; 32], owner: &Owner) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac_field(&mut mac, owner.workload.as_bytes());
    match &owner.user {
        Some((iss, sub)) => {
            mac_field(&mut mac, b"user");
            mac_field(&mut mac, iss.as_bytes());
            mac_field(&mut mac, sub.as_bytes());
        }
        None => mac_field(&mut mac, b"no user"),
    }
    Some(mac)
}

/// One length-prefixed field of a MAC's input.
pub(crate) fn mac_field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

/// The form of an upstream session id the gateway seals: non-empty, bounded, visible ASCII.
fn is_upstream_id(inner: &str) -> bool {
    !inner.is_empty() && inner.len() <= MAX_SESSION_ID_BYTES && is_visible_ascii(inner)
}

/// MCP: a session id contains only visible ASCII (0x21 to 0x7E).
pub fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// How credentials name a session without carrying it: hex SHA-256 of the upstream id.
pub fn session_hash(inner: &str) -> String {
    hex::encode(Sha256::digest(inner.as_bytes()))
}

/// The refusal for a session id that is not this caller's (or not one at all): HTTP 404, as
/// for a session that does not exist, so a foreign id reveals nothing.
pub fn unknown_session(id: Option<Id>) -> Rejection {
    Rejection::new(RejectKind::Denied, 404, INVALID_REQUEST, SessionError::Unknown.to_string(), id)
}

#[cfg(test)]
mod tests;
