//! The runner's own lock on sessions, in front of the rmcp service and independent of the
//! gateway's: every request needs exactly one gateway credential (a ticket for tools/call, a
//! caller assertion for anything else), the session it names must have been opened by the
//! same caller, and one JSON-RPC id is in flight at most once per session.
//!
//! Session owners live in memory, as rmcp's `LocalSessionManager` keeps the sessions
//! themselves; both move to the embedded store together.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use portcullis_core::caller::{CallerVerifier, CALLER_HEADER};
use portcullis_core::error::INVALID_REQUEST;
use portcullis_core::session::{session_hash, SessionError, SESSION_HEADER};
use portcullis_core::ticket::Verifier;
use portcullis_core::TICKET_HEADER;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::{json, Value};

use crate::service::serve::TICKET_REFUSED;

/// Largest POST body buffered here (the gateway's own limit is 1 MiB by default).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Who sent a request, as a gateway credential names it: the workload and, when a verified
/// user token named one, the user as (issuer, subject).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Caller {
    workload: String,
    user: Option<(String, String)>,
}

impl Caller {
    fn new(workload: &str, user_iss: Option<&str>, user: Option<&str>) -> Self {
        Self { workload: workload.to_owned(), user: user.map(|sub| (user_iss.unwrap_or_default().to_owned(), sub.to_owned())) }
    }
}

#[derive(Default)]
struct Tables {
    /// Upstream session id → the caller that opened it.
    owners: HashMap<String, Caller>,
    /// (session id, JSON-RPC id as JSON) of every request whose answer is still streaming.
    in_flight: HashSet<(String, String)>,
    /// Owner-table size at which sessions rmcp has since dropped are forgotten.
    prune_at: usize,
}

pub struct SessionGuard {
    tickets: Verifier,
    callers: CallerVerifier,
    sessions: Arc<LocalSessionManager>,
    tables: Mutex<Tables>,
}

/// A refused request: HTTP status, JSON-RPC error, and the reason logged (never the id).
struct Refusal {
    status: StatusCode,
    code: i64,
    message: String,
}

impl Refusal {
    fn credential(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, code: i64::from(TICKET_REFUSED), message: message.into() }
    }

    fn unknown_session() -> Self {
        Self { status: StatusCode::NOT_FOUND, code: INVALID_REQUEST, message: SessionError::Unknown.to_string() }
    }

    fn into_response(self, id: Option<&Value>) -> Response {
        let body = json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": self.code, "message": self.message}});
        (self.status, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// The JSON-RPC facts of a POST body the guard needs; a body that is not a JSON object has none.
#[derive(Default)]
struct Rpc {
    id: Option<Value>,
    method: Option<String>,
}

impl Rpc {
    fn parse(body: &[u8]) -> Self {
        let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(body) else { return Self::default() };
        let id = message.remove("id").filter(|id| !id.is_null());
        let method = message.remove("method").and_then(|m| m.as_str().map(str::to_owned));
        Self { id, method }
    }
}

/// Releases an in-flight (session, id) when the answer's body is finished or dropped.
struct InFlight {
    guard: Arc<SessionGuard>,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.guard.tables().in_flight.remove(&self.key);
    }
}

impl SessionGuard {
    pub fn new(tickets: Verifier, callers: CallerVerifier, sessions: Arc<LocalSessionManager>) -> Self {
        Self { tickets, callers, sessions, tables: Mutex::new(Tables { prune_at: 64, ..Tables::default() }) }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The caller named by the request's one gateway credential, and the session hash it names.
    fn credential(&self, headers: &HeaderMap, http: &Method, rpc: &Rpc) -> Result<(Caller, Option<String>), Refusal> {
        let tickets: Vec<_> = headers.get_all(TICKET_HEADER).iter().collect();
        let callers: Vec<_> = headers.get_all(CALLER_HEADER).iter().collect();
        let text = |v: &http::HeaderValue| v.to_str().map(str::to_owned).map_err(|_| Refusal::credential("gateway credential is not ASCII"));
        match (tickets.as_slice(), callers.as_slice()) {
            ([], []) => Err(Refusal::credential("no gateway ticket or caller assertion: requests are accepted only through the Portcullis gateway")),
            ([ticket], []) => {
                let claims = self.tickets.verify(&text(ticket)?).map_err(|e| Refusal::credential(e.to_string()))?;
                if *http != Method::POST || rpc.method.as_deref() != Some("tools/call") {
                    return Err(Refusal::credential("a ticket is accepted only for the tools/call it was issued for"));
                }
                Ok((Caller::new(&claims.sub, claims.user_iss.as_deref(), claims.user.as_deref()), claims.session))
            }
            ([], [caller]) => {
                let claims = self.callers.verify(&text(caller)?).map_err(|e| Refusal::credential(format!("caller assertion rejected: {e}")))?;
                let method = if *http == Method::POST { rpc.method.as_deref() } else { None };
                if claims.http != http.as_str() || claims.method.as_deref() != method || method == Some("tools/call") {
                    return Err(Refusal::credential("the caller assertion was issued for another request"));
                }
                Ok((Caller::new(&claims.sub, claims.user_iss.as_deref(), claims.user.as_deref()), claims.session))
            }
            _ => Err(Refusal::credential("more than one gateway credential")),
        }
    }

    /// Checks the request's session against its credential and the owner table; for a POST
    /// request on a session, marks its id in flight.
    fn admit(self: &Arc<Self>, caller: &Caller, named: Option<String>, session: Option<&str>, rpc: &Rpc, post: bool) -> Result<Option<InFlight>, Refusal> {
        let Some(session) = session else {
            return if named.is_none() { Ok(None) } else { Err(Refusal::unknown_session()) };
        };
        if named.as_deref() != Some(session_hash(session).as_str()) {
            return Err(Refusal::unknown_session());
        }
        let mut tables = self.tables();
        if tables.owners.get(session) != Some(caller) {
            return Err(Refusal::unknown_session());
        }
        let (true, Some(id)) = (post, &rpc.id) else { return Ok(None) };
        let key = (session.to_owned(), id.to_string());
        if !tables.in_flight.insert(key.clone()) {
            return Err(Refusal {
                status: StatusCode::CONFLICT,
                code: INVALID_REQUEST,
                message: format!("request id {id} is already in flight on this session"),
            });
        }
        Ok(Some(InFlight { guard: self.clone(), key }))
    }

    /// After the answer: a session the upstream opened belongs to its caller; a deleted one
    /// is forgotten. Returns true when the owner table should be pruned.
    fn record(&self, caller: Caller, http: &Method, session: Option<&str>, response: &Response) -> bool {
        let mut tables = self.tables();
        if let Some(opened) = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            tables.owners.entry(opened.to_owned()).or_insert(caller);
        }
        if let (true, true, Some(session)) = (*http == Method::DELETE, response.status().is_success(), session) {
            tables.owners.remove(session);
        }
        tables.owners.len() >= tables.prune_at
    }

    /// Forgets owners of sessions rmcp no longer has (idle timeout, closed transport).
    async fn prune(&self) {
        let known: Vec<String> = self.tables().owners.keys().cloned().collect();
        let mut gone = Vec::new();
        for id in known {
            if !self.sessions.has_session(&id.as_str().into()).await.unwrap_or(false) {
                gone.push(id);
            }
        }
        let mut tables = self.tables();
        for id in gone {
            tables.owners.remove(&id);
        }
        tables.prune_at = (tables.owners.len() * 2).max(64);
    }
}

/// The axum middleware in front of the rmcp service.
pub async fn check(State(guard): State<Arc<SessionGuard>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let post = parts.method == Method::POST;
    let (body, rpc) = if post {
        match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(bytes) => {
                let rpc = Rpc::parse(&bytes);
                (Body::from(bytes), rpc)
            }
            Err(_) => {
                let refusal = Refusal { status: StatusCode::PAYLOAD_TOO_LARGE, code: INVALID_REQUEST, message: format!("request body is larger than {MAX_BODY_BYTES} bytes") };
                return refusal.into_response(None);
            }
        }
    } else {
        (body, Rpc::default())
    };
    let session = match parts.headers.get(SESSION_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(s)) => Some(s.to_owned()),
        Some(Err(_)) => return Refusal::unknown_session().into_response(rpc.id.as_ref()),
    };
    let refuse = |refusal: Refusal, workload: Option<&str>| {
        tracing::warn!(workload = workload.unwrap_or("-"), http = %parts.method, method = rpc.method.as_deref().unwrap_or("-"), status = refusal.status.as_u16(), reason = %refusal.message, "request refused by the session guard");
        refusal.into_response(rpc.id.as_ref())
    };
    let (caller, named) = match guard.credential(&parts.headers, &parts.method, &rpc) {
        Ok(credential) => credential,
        Err(refusal) => return refuse(refusal, None),
    };
    let in_flight = match guard.admit(&caller, named, session.as_deref(), &rpc, post) {
        Ok(in_flight) => in_flight,
        Err(refusal) => return refuse(refusal, Some(&caller.workload)),
    };
    let http = parts.method.clone();
    let response = next.run(Request::from_parts(parts, body)).await;
    if guard.record(caller, &http, session.as_deref(), &response) {
        guard.prune().await;
    }
    match in_flight {
        None => response,
        Some(in_flight) => {
            let (parts, body) = response.into_parts();
            let body = body.map_frame(move |frame| {
                let _held = &in_flight;
                frame
            });
            Response::from_parts(parts, Body::new(body))
        }
    }
}
