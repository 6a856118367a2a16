//! The decision pipeline the filter runs for every request body:
//! strict parse → JSON-RPC/MCP validation → identity → plan hash → Rego → ticket.

use serde_json::{json, Map, Value};

use crate::authz::{Authorizer, Decision, McpInput, PolicyInput, PolicyTime, Workload};
use crate::catalog::Catalog;
use crate::error::{RejectKind, Rejection, DENIED, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, RATE_LIMITED};
use crate::json::{parse_strict, Limits, StrictJsonError};
use crate::jsonrpc::{self, Id, Method, RpcError};
use crate::plan::plan_hash;
use crate::profile::mark;
use crate::ratelimit::RateLimits;
use crate::schema::Invalid;
use crate::listing::Visible;
use crate::record::DecisionRecord;
use crate::relay::RequestSealer;
use crate::session::{session_hash, Owner, SessionSealer};
use crate::ticket::{Claims, Signer, AUDIENCE};
use crate::userjwt::UserVerifier;

mod headers;
mod relay;
mod sessions;
pub use headers::{McpHeaders, METHOD_HEADER, NAME_HEADER, PARAM_HEADER_PREFIX, PROTOCOL_VERSION_HEADER};
pub use sessions::Forward;

/// A configured gateway: everything compiled once at plugin configuration.
pub struct Gateway {
    limits: Limits,
    catalog: Catalog,
    authorizer: Authorizer,
    signer: Signer,
    rate_limits: Option<RateLimits>,
    users: UserVerifier,
    sessions: SessionSealer,
    /// Seals server-request ids; `None` refuses every client response.
    requests: Option<RequestSealer>,
    /// The HTTP status of a policy denial of a request (200 or 403).
    denial_status: u16,
    /// Time each phase of every decision ([`crate::profile`]).
    profile: bool,
}

/// Per-request facts the host supplies.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The peer's URI SAN as the proxy verified it; `None` without a client certificate.
    pub peer_uri_san: Option<&'a str>,
    /// Seconds since the Unix epoch, from the host clock.
    pub now_unix: u64,
    /// Fresh randomness for the decision id and ticket `jti`.
    pub entropy: [u8; 16],
    /// The request's `Authorization` header (a user's bearer token), if any.
    pub authorization: Option<&'a str>,
    /// The request's `Mcp-Session-Id` header, as the agent sent it.
    pub session_id: Option<&'a str>,
    /// The MCP headers that restate the body.
    pub headers: McpHeaders<'a>,
}

/// An allowed request: forward it, with the ticket header when one is issued.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    pub id: Option<Id>,
    pub method: String,
    /// Set for tools/call only: the runner accepts no call without one.
    pub ticket: Option<String>,
    pub plan_hash: Option<String>,
    pub decision_id: String,
    pub decision: Decision,
    /// The caller, the upstream session to name, and the caller assertion (non-tools/call).
    pub forward: Forward,
    /// For a list method: what of the upstream's answer the caller may see.
    pub visible: Option<Visible>,
    /// The body to forward in place of the request's (a client response gets its server
    /// request's own id back).
    pub body: Option<Vec<u8>>,
}

pub type Verdict = Result<Allowed, Rejection>;

/// A verdict and its record for the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub verdict: Verdict,
    pub record: DecisionRecord,
}

impl Gateway {

    pub fn new(limits: Limits, catalog: Catalog, authorizer: Authorizer, signer: Signer, users: UserVerifier, sessions: SessionSealer) -> Self {
        Self { limits, catalog, authorizer, signer, users, sessions, rate_limits: None, requests: None, denial_status: 403, profile: false }
    }

    /// Client responses to server requests (sealed ids), and the HTTP status of a denial.
    pub fn with_relay(mut self, requests: RequestSealer, denial_status: u16) -> Self {
        self.requests = Some(requests);
        self.denial_status = denial_status;
        self
    }

    pub fn with_rate_limits(mut self, rate_limits: Option<RateLimits>) -> Self {
        self.rate_limits = rate_limits;
        self
    }

    /// Per-workload token buckets, when configured.
    pub fn rate_limits(&self) -> Option<&RateLimits> {
        self.rate_limits.as_ref()
    }

    /// The 429 for a workload over its limit. The body has not been validated yet (limiting
    /// comes first, so floods cost little), so the id is recovered leniently for the reply.
    pub fn reject_rate_limited(&self, body: &[u8], workload: &str, retry_after_seconds: u64) -> Rejection {
        let id = serde_json::from_slice::<Value>(body).ok().and_then(|v| jsonrpc::recover_id(&v));
        let mut rejection = Rejection::new(
            RejectKind::RateLimited,
            429,
            RATE_LIMITED,
            format!("rate limit exceeded for {workload}; retry after {retry_after_seconds} s"),
            id,
        )
        .with_data(json!({"retry_after_seconds": retry_after_seconds}));
        rejection.retry_after = Some(retry_after_seconds);
        rejection
    }

    /// Times each phase of every decision ([`crate::profile`]), at the cost of a clock read per
    /// phase: for measuring, not for serving.
    pub fn with_profile(mut self, on: bool) -> Self {
        self.profile = on;
        self
    }

    pub fn profile(&self) -> bool {
        self.profile
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Decision-cache lookups that hit and that missed under this configuration.
    pub fn decision_cache_counts(&self) -> (u64, u64) {
        self.authorizer.cache_counts()
    }

    pub fn policy_version(&self) -> &str {
        self.authorizer.version()
    }

    /// The rejection for a body that grew past the limit before it was fully buffered;
    /// `prefix` (its first bytes) may still name the request id to answer.
    pub fn reject_oversized(&self, size: usize, prefix: &[u8]) -> Rejection {
        parse_rejection(&StrictJsonError::TooLarge { size, limit: self.limits.max_body_bytes }, prefix)
    }

    /// The rejection for a request that ended in trailers. MCP's Streamable HTTP never sends
    /// them, and a request must end where the gateway can decide it, so it is refused.
    pub fn reject_trailers(&self, body: &[u8]) -> Rejection {
        let id = jsonrpc::scan_id(body);
        Rejection::new(RejectKind::Invalid, 400, INVALID_REQUEST, "request trailers are not accepted: MCP requests end with their body", id)
    }

    /// Decides one request body.
    pub fn decide(&self, body: &[u8], ctx: RequestContext<'_>) -> Verdict {
        self.decide_recorded(body, ctx).verdict
    }

    /// Decides one request body, and records what was decided about whom for the access log.
    pub fn decide_recorded(&self, body: &[u8], ctx: RequestContext<'_>) -> Decided {
        let mut record = self.record(ctx.peer_uri_san, ctx.entropy);
        let verdict = self.decide_into(body, ctx, &mut record);
        record = match &verdict {
            Ok(allowed) => {
                record.rule_ids.clone_from(&allowed.decision.rule_ids);
                record.allowed(allowed.decision.require_approval)
            }
            Err(rejection) => record.refused(rejection),
        };
        mark("record");
        Decided { verdict, record }
    }

    /// An empty record for a request on this connection; `entropy` names the decision.
    pub fn record(&self, peer_uri_san: Option<&str>, entropy: [u8; 16]) -> DecisionRecord {
        DecisionRecord::new(hex::encode(entropy), self.authorizer.version(), peer_uri_san)
    }

    fn decide_into(&self, body: &[u8], ctx: RequestContext<'_>, record: &mut DecisionRecord) -> Verdict {
        let value = parse_strict(body, self.limits).map_err(|e| parse_rejection(&e, body))?;
        mark("parse");
        let message = jsonrpc::validate(&value).map_err(|e| rpc_rejection(&e, jsonrpc::recover_id(&value)))?;
        mark("jsonrpc");
        let id = message.id.clone();
        let method = message.method.name().to_owned();
        record.method = Some(method.clone());

        let workload = ctx.peer_uri_san.and_then(Workload::from_spiffe_id).ok_or_else(|| no_workload(id.clone()))?;

        // A missing or invalid token is never a user; policy sees why instead.
        let verified = self.users.verify(ctx.authorization, ctx.now_unix);
        mark("identity");
        let owner = Owner::new(&workload.spiffe_id, verified.as_ref().ok());
        // Someone else's session is refused before anything is decided about the call.
        let session = self.open_session(&owner, ctx.session_id, &id)?;

        let protocol_version = headers::check(&ctx.headers, &message)?;
        mark("session_headers");
        let mut mcp = McpInput { protocol_version, ..McpInput::default() };
        let mut body_out = None;
        let (tool, arguments, hash) = match &message.method {
            Method::ToolsCall { name, arguments } => {
                record.tool = Some(name.clone());
                let hash = plan_hash(name, arguments.as_ref()).map_err(|e| {
                    Rejection::new(RejectKind::Invalid, 400, INVALID_PARAMS, format!("invalid params: {e}"), id.clone())
                })?;
                record.plan_hash = Some(hash.clone());
                mark("plan_hash");
                self.check_arguments(name, arguments.as_ref(), &hash, &id)?;
                mark("schema");
                (Some(name.as_str()), arguments.as_ref(), Some(hash))
            }
            Method::Response { is_error } => {
                let (answered, body) = self.open_response(&value, &owner, session.as_deref(), ctx.now_unix, &id)?;
                mcp.response = Some(json!({"to": answered.method, "error": is_error}));
                body_out = Some(body);
                (None, None, None)
            }
            other => {
                relay::describe(other, &mut mcp);
                (None, None, None)
            }
        };

        let user_error = verified.as_ref().err().map(ToString::to_string);
        record.user = verified.as_ref().ok().map(|u| u.sub.clone());
        let input = PolicyInput {
            method: &method,
            tool,
            arguments,
            plan_hash: hash.as_deref(),
            workload: &workload,
            user: verified.as_ref().ok(),
            user_error: user_error.as_deref(),
            time: PolicyTime::from_unix(ctx.now_unix),
            mcp,
        };
        let decision_id = hex::encode(ctx.entropy);
        mark("policy_input");
        let decision = self.authorizer.decide(&input).map_err(|e| {
            Rejection::new(RejectKind::Internal, 500, INTERNAL_ERROR, format!("policy evaluation failed: {e}"), id.clone())
        })?;

        if !decision.allow {
            record.rule_ids.clone_from(&decision.rule_ids);
            let what = tool.map_or_else(|| method.clone(), |t| format!("{method} {t}"));
            let reasons = if decision.reasons.is_empty() { "no rule allows it".to_owned() } else { decision.reasons.join("; ") };
            // A request's denial is its JSON-RPC answer (status configurable); a notification
            // or a response has no answer to carry it, so it stays an HTTP refusal.
            let status = if id.is_some() && !matches!(message.method, Method::Response { .. }) { self.denial_status } else { 403 };
            return Err(Rejection::new(RejectKind::Denied, status, DENIED, format!("denied {what}: {reasons}"), id).with_data(json!({
                "reasons": decision.reasons,
                "rule_ids": decision.rule_ids,
                "decision_id": decision_id,
                "plan_hash": hash,
                "policy_version": self.authorizer.version(),
            })));
        }

        let ticket = match (tool, &hash) {
            (Some(tool), Some(hash)) => {
                let claims = Claims {
                    iss: self.signer.issuer.clone(),
                    aud: AUDIENCE.to_owned(),
                    sub: workload.spiffe_id.clone(),
                    user: verified.as_ref().ok().map(|u| u.sub.clone()),
                    user_iss: verified.as_ref().ok().map(|u| u.iss.clone()),
                    groups: verified.as_ref().ok().map(|u| u.groups.clone()).unwrap_or_default(),
                    session: session.as_deref().map(session_hash),
                    tool: tool.to_owned(),
                    plan_hash: hash.clone(),
                    decision_id: decision_id.clone(),
                    require_approval: decision.require_approval,
                    placement: decision.placement.clone(),
                    policy_version: self.authorizer.version().to_owned(),
                    jti: decision_id.clone(),
                    iat: ctx.now_unix,
                    exp: ctx.now_unix.saturating_add(self.signer.ttl_seconds),
                };
                mark("ticket_claims");
                let token = self.signer.sign(&claims).map_err(|e| {
                    Rejection::new(RejectKind::Internal, 500, INTERNAL_ERROR, format!("cannot issue ticket: {e}"), id.clone())
                })?;
                mark("ticket_sign");
                Some(token)
            }
            _ => None,
        };
        let caller = match ticket {
            Some(_) => None,
            None => Some(self.caller_assertion(&owner, session.as_deref(), "POST", Some(&method), ctx.now_unix, &id)?),
        };
        let forward = Forward { owner, session, caller };
        let visible = Visible::for_method(&method, &decision);
        mark("forward");
        Ok(Allowed { id, method, ticket, plan_hash: hash, decision_id, decision, forward, visible, body: body_out })
    }

    /// Validates a tools/call's arguments against its catalog tool's input schema (an absent
    /// `arguments` is `{}`). A tool not in the catalog is left to policy, which denies it.
    fn check_arguments(&self, tool: &str, arguments: Option<&Map<String, Value>>, hash: &str, id: &Option<Id>) -> Result<(), Rejection> {
        let empty = Map::new();
        let arguments = arguments.unwrap_or(&empty);
        let checked = match self.catalog.schema(tool) {
            Some(schema) => schema.validate_object(arguments),
            None => Ok(()),
        };
        checked.and_then(|()| no_nul(arguments)).map_err(|e| {
            Rejection::new(RejectKind::Invalid, 400, INVALID_PARAMS, format!("invalid arguments for tool {tool}: {e}"), id.clone())
                .with_data(json!({"path": e.path, "reason": e.reason, "tool": tool, "plan_hash": hash}))
        })
    }
}

/// No string in the arguments (name or value, at any depth) holds U+0000: a tool gets its
/// arguments also as environment variables and C strings, where a NUL would end the value early
/// and the tool would act on less than policy decided on.
fn no_nul(arguments: &Map<String, Value>) -> Result<(), Invalid> {
    fn members(map: &Map<String, Value>, path: &mut String) -> Result<(), Invalid> {
        map.iter().try_for_each(|(k, v)| {
            within(path, k, |p| if k.contains('\0') { Err(nul(p, "names")) } else { walk(v, p) })
        })
    }
    fn walk(value: &Value, path: &mut String) -> Result<(), Invalid> {
        match value {
            Value::String(s) if s.contains('\0') => Err(nul(path, "strings")),
            Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| within(path, &i.to_string(), |p| walk(item, p))),
            Value::Object(map) => members(map, path),
            _ => Ok(()),
        }
    }
    fn within(path: &mut String, segment: &str, f: impl FnOnce(&mut String) -> Result<(), Invalid>) -> Result<(), Invalid> {
        let len = path.len();
        path.push('/');
        path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
        let result = f(path);
        path.truncate(len);
        result
    }
    fn nul(path: &str, what: &str) -> Invalid {
        Invalid { path: path.to_owned(), reason: format!("{what} must not contain NUL (U+0000)") }
    }
    members(arguments, &mut String::new())
}

fn parse_rejection(e: &StrictJsonError, body: &[u8]) -> Rejection {
    // The body failed strict parsing, but a lenient parse may still name the id to answer.
    let id = match e {
        StrictJsonError::DuplicateKey { .. } | StrictJsonError::TooDeep { .. } => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| jsonrpc::recover_id(&v)),
        _ => None,
    }
    // Too deep for serde, invalid UTF-8 or a bad number further on: the id may still be
    // readable before the fault.
    .or_else(|| jsonrpc::scan_id(body));
    let (status, code) = match e {
        StrictJsonError::TooLarge { .. } => (413, INVALID_REQUEST),
        _ => (400, PARSE_ERROR),
    };
    Rejection::new(RejectKind::Invalid, status, code, format!("parse error: {e}"), id)
}

/// The refusal of a connection without a workload identity the proxy verified.
fn no_workload(id: Option<Id>) -> Rejection {
    Rejection::new(RejectKind::Denied, 403, DENIED, "no verified SPIFFE workload identity on this connection", id)
}

fn rpc_rejection(e: &RpcError, id: Option<Id>) -> Rejection {
    let code = match e {
        RpcError::InvalidParams(_) => INVALID_PARAMS,
        RpcError::Batch | RpcError::InvalidRequest(_) => INVALID_REQUEST,
    };
    Rejection::new(RejectKind::Invalid, 400, code, e.to_string(), id)
}

/// What the filter does with a request, decided from its headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A JSON-RPC message in the body: buffer it and [`Gateway::decide`].
    Decide,
    /// Streamable HTTP's GET (server-to-client stream) or DELETE (end of session): no call is
    /// made, so only the workload identity is required.
    IdentityOnly,
}

/// The path of the MCP endpoint (Streamable HTTP has exactly one).
pub const MCP_PATH: &str = "/mcp";

/// Checks the path, HTTP method and content type of a request to the MCP endpoint, and (for
/// body-less requests) that the peer has a workload identity. Only the MCP endpoint is
/// decided and forwarded: a call sent to any other path would be decided, ticketed and then
/// not run, leaving a record that says otherwise.
pub fn check_transport(path: &str, http_method: &str, content_type: Option<&str>, peer_uri_san: Option<&str>) -> Result<Transport, Rejection> {
    if path != MCP_PATH {
        return Err(Rejection::new(RejectKind::Invalid, 404, INVALID_REQUEST, format!("no MCP endpoint at this path; the endpoint is {MCP_PATH}"), None));
    }
    match http_method {
        "POST" => {
            let media = content_type.and_then(|c| c.split(';').next()).map(str::trim);
            if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
                return Err(Rejection::new(RejectKind::Invalid, 415, INVALID_REQUEST, "POST body must be application/json", None));
            }
            Ok(Transport::Decide)
        }
        "GET" | "DELETE" => match peer_uri_san.and_then(Workload::from_spiffe_id) {
            Some(_) => Ok(Transport::IdentityOnly),
            None => Err(no_workload(None)),
        },
        other => Err(Rejection::new(RejectKind::Invalid, 405, INVALID_REQUEST, format!("HTTP method {other} is not part of MCP Streamable HTTP"), None)),
    }
}

/// The refusal of a GET or DELETE that carries a body: those requests make no call, so a body
/// on them would reach the upstream undecided.
pub fn reject_body_on(http_method: &str) -> Rejection {
    Rejection::new(RejectKind::Invalid, 400, INVALID_REQUEST, format!("an MCP {http_method} request carries no body"), None)
}
