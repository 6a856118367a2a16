//! The gateway's half of session binding: which upstream session a request may use, and the
//! credential that names its caller to the runner.

use crate::caller::{CallerClaims, CALLER_AUDIENCE};
use crate::error::{RejectKind, Rejection, INTERNAL_ERROR};
use crate::jsonrpc::Id;
use crate::session::{session_hash, unknown_session, Owner, SessionError};

use super::{Gateway, RequestContext};
use crate::authz::Workload;

/// What goes upstream with an admitted request besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The caller, to seal a session id the upstream answers with.
    pub owner: Owner,
    /// The upstream's own id of the session the request names (to replace the header with).
    pub session: Option<String>,
    /// The caller assertion, for every request that carries no ticket.
    pub caller: Option<String>,
}

impl Gateway {
    /// The upstream session named by the request's `Mcp-Session-Id`, if it was issued to
    /// `owner`; a foreign, tampered or malformed id is refused as an unknown session (404).
    pub(super) fn open_session(&self, owner: &Owner, session_id: Option<&str>, id: &Option<Id>) -> Result<Option<String>, Rejection> {
        match session_id {
            None => Ok(None),
            Some(outer) => match self.sessions.open(owner, outer) {
                Ok(inner) => Ok(Some(inner.to_owned())),
                Err(_) => Err(unknown_session(id.clone())),
            },
        }
    }

    /// Signs the caller assertion for a request that carries no ticket.
    pub(super) fn caller_assertion(&self, owner: &Owner, session: Option<&str>, http: &str, method: Option<&str>, now: u64, id: &Option<Id>) -> Result<String, Rejection> {
        let claims = CallerClaims {
            iss: self.signer.issuer.clone(),
            aud: CALLER_AUDIENCE.to_owned(),
            sub: owner.workload.clone(),
            user: owner.user.as_ref().map(|(_, sub)| sub.clone()),
            user_iss: owner.user.as_ref().map(|(iss, _)| iss.clone()),
            session: session.map(session_hash),
            http: http.to_owned(),
            method: method.map(str::to_owned),
            iat: now,
            exp: now.saturating_add(self.signer.ttl_seconds),
        };
        self.signer.sign_caller(&claims).map_err(|e| {
            Rejection::new(RejectKind::Internal, 500, INTERNAL_ERROR, format!("cannot issue caller assertion: {e}"), id.clone())
        })
    }

    /// Admits a body-less request (Streamable HTTP's GET stream or DELETE): the caller must
    /// have a workload identity, and a session it names must be its own.
    pub fn admit_without_body(&self, http_method: &str, ctx: RequestContext<'_>) -> Result<Forward, Rejection> {
        let workload = ctx.peer_uri_san.and_then(Workload::from_spiffe_id).ok_or_else(|| super::no_workload(None))?;
        let verified = self.users.verify(ctx.authorization, ctx.now_unix);
        let owner = Owner::new(&workload.spiffe_id, verified.as_ref().ok());
        let session = self.open_session(&owner, ctx.session_id, &None)?;
        let caller = self.caller_assertion(&owner, session.as_deref(), http_method, None, ctx.now_unix, &None)?;
        Ok(Forward { owner, session, caller: Some(caller) })
    }

    /// The id the caller receives for the upstream's session `inner`.
    pub fn seal_session(&self, owner: &Owner, inner: &str) -> Result<String, SessionError> {
        self.sessions.seal(owner, inner)
    }
}
