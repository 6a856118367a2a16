//! `portcullis serve`: the MCP server for approved calls.
//!
//! It answers initialize and tools/list from the catalog. A tools/call runs only after its
//! gateway ticket is verified (signature, expiry, replay, plan hash, tool); then the tool runs
//! in a fresh sandbox from the configured backend, which is destroyed before the reply. A call
//! its caller cancels (`notifications/cancelled`; for 2026-07-28, closing its stream) is
//! stopped, its sandbox destroyed, and it gets no reply (see [`crate::service::call`]).
//! Before rmcp sees a request, the session guard ([`crate::service::session_guard`]) checks its gateway
//! credential and that the session it names belongs to its caller.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::caller::CallerVerifier;
use portcullis_core::authz::PlanRules;
use portcullis_core::catalog::Catalog;
use portcullis_core::plan::plan_hash;
use portcullis_core::ticket::{check_binding, Claims, TicketError, Verifier};
use portcullis_core::TICKET_HEADER;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorCode, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::json;

use crate::approvals::webhook::Webhook;
use crate::approvals::Approvals;
use crate::plans::Plans;
use crate::service::backends::{Backends, Limits};
use crate::service::queue::{MAX_JOBS, MAX_QUEUED};
use crate::service::session_guard::SessionGuard;
use crate::store::Store;
use crate::telemetry::{self, call::TICKET_CHECK, CallSpan};

/// JSON-RPC error code for a call refused by the runner's ticket check.
pub const TICKET_REFUSED: i32 = -32002;

/// How often an event stream that carries nothing gets an SSE comment. A proxy between the
/// agent and the runner (Envoy's stream idle timeout, a load balancer's) closes a stream that
/// stays silent for its idle timeout, and a GET stream, or the answer to a long call that
/// reports no progress, can stay silent for minutes; 15 s is well below the usual timeouts
/// (Envoy: 5 min; cloud load balancers: 60 s and more).
pub const SSE_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The `retry:` an event stream's priming event gives (an empty event with an id, sent first,
/// so that even a stream cut before its first message can be resumed with `Last-Event-ID`):
/// how long a client waits before reconnecting.
pub const SSE_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

/// Events of one call's stream kept for a client that reconnects with `Last-Event-ID` (rmcp
/// replays them from memory; its default is 16). At the progress limit of 10 lines a second,
/// this covers a client that was away for several `SSE_RETRY` intervals.
pub const SSE_REPLAY_EVENTS: usize = 64;

/// Shared state of the runner's MCP service.
pub struct Runner {
    pub catalog: SharedCatalog,
    pub verifier: Verifier,
    /// Durable state: seen ticket ids, plans, approvals.
    pub store: Arc<Store>,
    pub plans: Plans,
    pub approvals: Approvals,
    pub webhook: Option<Arc<Webhook>>,
    /// Where jobs run, by placement, each place with its own queue and circuit breaker.
    pub backends: Backends,
    /// The audit trail: record each event (see [`crate::audit`] for the names) with the
    /// call's `decision_id` before the response that it records is sent.
    pub audit: Arc<crate::audit::AuditLog>,
}

/// What the runner decides with, from the operator's sources: the catalog it lists and runs
/// tools from, and the policy bundle's plan rules. `up` replaces both when the policy dir or the
/// catalog changes; a call in progress keeps what it started with.
pub struct RunnerConfig {
    pub catalog: Catalog,
    pub plan_rules: PlanRules,
}

#[derive(Clone)]
pub struct SharedCatalog(Arc<RwLock<Arc<RunnerConfig>>>);

impl SharedCatalog {
    pub fn new(catalog: Catalog, plan_rules: PlanRules) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(RunnerConfig { catalog, plan_rules }))))
    }

    /// Builds both from a policy bundle directory and a catalog file.
    pub fn load(policies: &std::path::Path, catalog: &std::path::Path) -> anyhow::Result<Self> {
        let catalog = crate::devstack::bundle::load_catalog(catalog)?;
        let plan_rules = PlanRules::new(&crate::devstack::bundle::load_policy(policies, false)?, &catalog)?;
        Ok(Self::new(catalog, plan_rules))
    }

    pub fn current(&self) -> Arc<RunnerConfig> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn replace(&self, catalog: Catalog, plan_rules: PlanRules) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(RunnerConfig { catalog, plan_rules });
    }
}

/// One MCP session's handler; all sessions share the [`Runner`].
#[derive(Clone)]
pub struct Handler(pub Arc<Runner>);

impl Runner {
    /// Verifies everything a ticket must prove before a call may run. Returns the claims.
    pub fn admit(&self, ticket: Option<&str>, tool: &str, arguments: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<Claims, Refusal> {
        let token = ticket.ok_or(Refusal::NoTicket)?;
        let claims = self.verifier.verify(token).map_err(Refusal::Ticket)?;
        if !self.store.first_use_of_ticket(&claims.jti, claims.exp, unix_now(), TICKET_LEEWAY).map_err(Refusal::Store)? {
            return Err(Refusal::Ticket(TicketError::Replayed(claims.jti)));
        }
        let hash = plan_hash(tool, arguments).map_err(|e| Refusal::Arguments(e.to_string()))?;
        check_binding(&claims, tool, &hash).map_err(Refusal::Ticket)?;
        Ok(claims)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no gateway ticket: calls are accepted only through the Portcullis gateway")]
    NoTicket,
    #[error("more than one gateway ticket header")]
    SeveralTickets,
    #[error("the request carries an Authorization header: user credentials never reach the runner (the gateway strips them; the user is in the ticket)")]
    UserCredentials,
    #[error(transparent)]
    Ticket(TicketError),
    #[error("arguments cannot be hashed: {0}")]
    Arguments(String),
    #[error("the runner cannot record the ticket's use, so it is refused: {0}")]
    Store(crate::store::StoreError),
}

/// Seconds of clock skew allowed between gateway and runner.
const TICKET_LEEWAY: u64 = 1;

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("portcullis-runner", env!("CARGO_PKG_VERSION"));
        info.instructions = Some("Tools run in ephemeral sandboxes; every call needs a Portcullis gateway ticket.".into());
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self
            .0
            .catalog
            .current()
            .catalog
            .tools()
            .map(|t| Tool::new(t.name.clone(), t.description.clone(), Arc::new(t.input_schema.clone())))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    /// The call inside its `tools/call {tool}` span (see [`crate::telemetry`]).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let meta = telemetry::call::MetaContext { traceparent: context.meta.get_traceparent(), tracestate: context.meta.get_tracestate() };
        let headers = context.extensions.get::<http::request::Parts>().map(|p| &p.headers);
        let span = CallSpan::start(&request.name, &context.id, headers, meta);
        let result = span.scope(self.run_call(request, context)).await;
        span.finish(&result);
        result
    }
}

impl Handler {
    async fn run_call(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let runner = &self.0;
        let parts = context.extensions.get::<http::request::Parts>();
        let tickets: Vec<&str> = parts
            .map(|parts| parts.headers.get_all(TICKET_HEADER).iter().filter_map(|v| v.to_str().ok()).collect())
            .unwrap_or_default();
        // The gateway strips user credentials; one arriving here did not come through it intact.
        let credentials = parts.is_some_and(|p| p.headers.contains_key(http::header::AUTHORIZATION));
        // Exactly one ticket: two would mean something upstream appended instead of replacing.
        let ticket = match tickets.as_slice() {
            _ if credentials => Err(Refusal::UserCredentials),
            [one] => Ok(Some(*one)),
            [] => Ok(None),
            _ => Err(Refusal::SeveralTickets),
        };
        let claims = telemetry::in_span(TICKET_CHECK, "ticket_refused", || ticket.and_then(|t| runner.admit(t, &request.name, request.arguments.as_ref()))).map_err(|refusal| {
            tracing::warn!(tool = %request.name, %refusal, "call refused");
            // No verified claims: the record names the tool asked for and why, nothing the
            // caller could forge into someone else's decision.
            let _ = runner.audit(crate::audit::TICKET_REFUSED, None, json!({"decision_id": null, "tool": request.name, "reason": refusal.to_string()}));
            McpError::new(ErrorCode(TICKET_REFUSED), refusal.to_string(), Some(json!({"tool": request.name})))
        })?;
        runner.audit(crate::audit::TICKET_ACCEPTED, Some(&claims), json!({"jti": claims.jti, "require_approval": claims.require_approval, "policy_version": claims.policy_version}))?;
        let config = runner.catalog.current();
        let Some(tool) = config.catalog.get(&request.name) else {
            return Err(McpError::invalid_params(format!("tool {} is not in the catalog", request.name), None));
        };
        Ok(runner.call(tool, &config.plan_rules, request.arguments.as_ref(), &claims, &context).await?.into())
    }
}

/// Everything `serve` needs, resolved from the command line.
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub catalog: SharedCatalog,
    pub ticket_public_key_pem: Vec<u8>,
    pub ticket_issuer: String,
    pub tls: rustls::ServerConfig,
    /// Where jobs run, by placement (`up` and `serve` register the local backend as `local`
    /// with no context).
    pub backends: Backends,
    /// Answer single requests with `application/json` instead of an event stream.
    pub json_response: bool,
    pub control: ControlOptions,
    /// The audit trail (opened by the caller, which also starts its checkpointer).
    pub audit: Arc<crate::audit::AuditLog>,
}

/// The control plane's limits, as `serve` and `up` take them on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// How long a stored plan may be applied.
    #[arg(long, default_value_t = 3600)]
    pub plan_ttl_seconds: u64,
    /// How long a pending approval waits for a decision, and an approved call for its one
    /// execution.
    #[arg(long, default_value_t = 3600)]
    pub approval_ttl_seconds: u64,
    /// Users in this group (their token's `groups` claim) may approve others' calls.
    #[arg(long, default_value = "approvers")]
    pub approver_group: String,
    /// POST each new pending approval (JSON, Slack-compatible `text`) to this URL.
    #[arg(long)]
    pub approval_webhook: Option<String>,
    /// Jobs that run at once per backend (placement). Hidden: for tests that need a small one.
    #[arg(long, hide = true, default_value_t = MAX_JOBS, value_parser = at_least_one)]
    pub max_jobs: usize,
    /// Calls that may wait for a job slot per backend (placement); one more is refused at
    /// once. Hidden: for tests that need a small one.
    #[arg(long, hide = true, default_value_t = MAX_QUEUED)]
    pub max_queued: usize,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a number of at least 1")),
    }
}

impl ControlArgs {
    /// The limits of each backend entry.
    pub fn limits(&self) -> Limits {
        Limits { max_jobs: self.max_jobs, max_queued: self.max_queued, ..Limits::default() }
    }

    pub fn options(&self, state_dir: std::path::PathBuf, signing_key_pem: Vec<u8>) -> ControlOptions {
        ControlOptions {
            state_dir,
            signing_key_pem,
            plan_ttl_seconds: self.plan_ttl_seconds,
            approval_ttl_seconds: self.approval_ttl_seconds,
            approver_group: self.approver_group.clone(),
            webhook: self.approval_webhook.clone(),
        }
    }
}

/// The control plane's settings: where its durable state lives, and its limits.
pub struct ControlOptions {
    /// The runner's state directory (created 0700): `state.redb`, `plans/`.
    pub state_dir: std::path::PathBuf,
    /// The runner's Ed25519 key (PKCS#8 PEM): signs plan statements.
    pub signing_key_pem: Vec<u8>,
    pub plan_ttl_seconds: u64,
    pub approval_ttl_seconds: u64,
    pub approver_group: String,
    /// POST each new pending approval here.
    pub webhook: Option<String>,
}

impl ControlOptions {
    fn open(self) -> anyhow::Result<ControlPlane> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.state_dir)?;
        let store = Arc::new(Store::open(&self.state_dir.join("state.redb"))?);
        let plans = Plans::new(store.clone(), self.state_dir.join("plans"), &self.signing_key_pem, self.plan_ttl_seconds)?;
        let approvals = Approvals::open(store.clone(), self.approval_ttl_seconds, self.approver_group, unix_now())?;
        let webhook = self.webhook.map(Webhook::new).transpose()?.map(Arc::new);
        Ok(ControlPlane { store, plans, approvals, webhook })
    }
}

/// The control plane's parts, opened.
struct ControlPlane {
    store: Arc<Store>,
    plans: Plans,
    approvals: Approvals,
    webhook: Option<Arc<Webhook>>,
}

/// Serves MCP on `/mcp` over TLS until `shutdown` resolves.
pub async fn serve(opts: ServeOptions, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

    // One second of leeway for clock skew between gateway and runner.
    let verifier = Verifier::from_pem(&opts.ticket_public_key_pem, &opts.ticket_issuer, 1)?;
    let guard_tickets = Verifier::from_pem(&opts.ticket_public_key_pem, &opts.ticket_issuer, 1)?;
    let callers = CallerVerifier::from_pem(&opts.ticket_public_key_pem, &opts.ticket_issuer, 1)?;
    let ControlPlane { store, plans, approvals, webhook } = opts.control.open()?;
    // Jobs a killed runner left unended in the trail are recorded aborted before any new one.
    match crate::audit::interrupted::record_interrupted_jobs(&opts.audit) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(jobs = n, "recorded jobs aborted: the runner stopped during them"),
        Err(e) => anyhow::bail!("recording the jobs a stopped runner left unended in the audit trail: {e}"),
    }
    // Notices of pending approvals that no webhook accepted before a restart go out again.
    let redelivery = webhook.clone().map(|hook| hook.redeliver_forever(approvals.clone()));
    let runner = Arc::new(Runner { catalog: opts.catalog, verifier, store, plans, approvals, webhook, backends: opts.backends, audit: opts.audit });
    let mut config = StreamableHttpServerConfig::default();
    if opts.json_response {
        // JSON answers need the stateless mode in rmcp; sessions are not used by the gateway.
        config.legacy_session_mode = false;
        config.json_response = true;
    }
    // The gateway forwards the agent's Host header; the runner is reachable only through it.
    config.allowed_hosts = Vec::new();
    config.sse_keep_alive = Some(SSE_KEEP_ALIVE);
    config.sse_retry = Some(SSE_RETRY);
    // No event store: rmcp would then keep a 2026-07-28 request running after its connection
    // closed (for a resume), and that request has no other way to be cancelled.
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.sse_retry = Some(SSE_RETRY);
    sessions.session_config.channel_capacity = SSE_REPLAY_EVENTS;
    let sessions = Arc::new(sessions);
    let guard = Arc::new(SessionGuard::new(guard_tickets, callers, sessions.clone()));
    let service = StreamableHttpService::new(move || Ok(Handler(runner.clone())), sessions, config);
    // Every request passes the session guard first: one gateway credential, own sessions only.
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(guard, crate::service::session_guard::check));
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    tracing::info!(listen = %opts.listen, "runner listening (TLS, gateway client certificate required)");
    let served = crate::service::tls::bind(opts.listen, opts.tls).handle(handle).serve(app.into_make_service()).await;
    if let Some(task) = redelivery {
        task.abort();
    }
    served?;
    Ok(())
}
