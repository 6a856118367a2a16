//! The load generator: N tasks, each with its own HTTP/1.1 keep-alive connection (mTLS with
//! an agent certificate) and one request in flight; every run bounded in both request count
//! and time.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use portcullis_core::caller::{CallerClaims, CALLER_AUDIENCE, CALLER_HEADER};
use portcullis_core::session::session_hash;
use portcullis_core::ticket::{Claims, Signer, AUDIENCE};
use portcullis_core::TICKET_HEADER;
use rustls::ClientConfig;
use serde_json::{Map, Value};

use crate::http::{connect_tls, Conn, Response, TlsConn};
use crate::payload;

/// The MCP endpoint path on the gateway.
pub const MCP_PATH: &str = "/mcp";

/// Longest wait for one response (Envoy's route timeout is 60 s; nothing here should take
/// more than a fraction of a second).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One simulated agent: its own connection and, against the runner, its own MCP session.
pub struct Agent {
    conn: TlsConn,
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    session: Option<String>,
    /// Without the filter in front of the runner: mints what the gateway would add.
    minter: Option<Arc<Minter>>,
}

impl Agent {
    async fn ensure_open(&mut self) -> Result<bool> {
        if self.conn.is_open() {
            return Ok(false);
        }
        self.conn.reopen(connect_tls(self.addr, &self.tls).await?);
        Ok(true)
    }

    /// POSTs `body` with `credential` (a ticket or caller assertion header) when given.
    async fn post(&mut self, credential: Option<(&str, &str)>, body: &[u8]) -> Result<Response> {
        let mut headers = vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
        if let Some(s) = &self.session {
            headers.push(("mcp-session-id", s.as_str()));
            headers.push(("mcp-protocol-version", "2025-06-18"));
        }
        headers.extend(credential);
        self.conn.request("POST", MCP_PATH, &headers, body).await
    }

    /// The caller assertion the gateway would add to a `method` request, when this agent mints.
    fn caller(&self, method: &str) -> Result<Option<String>> {
        self.minter.as_ref().map(|m| m.caller(method, self.session.as_deref())).transpose()
    }
}

/// `n` agents connected to `addr`; with `sessions`, each opens an MCP session (initialize +
/// notifications/initialized) as a real client would before calling tools. With `minter`
/// (the runner without the filter in front), they add the caller assertions themselves.
pub async fn agents(tls: &Arc<ClientConfig>, addr: SocketAddr, n: usize, sessions: bool, minter: Option<Arc<Minter>>) -> Result<Vec<Agent>> {
    let setup = async {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let conn = Conn::new(connect_tls(addr, tls).await?, addr);
            let mut agent = Agent { conn, addr, tls: tls.clone(), session: None, minter: minter.clone() };
            if sessions {
                agent.session = Some(open_session(&mut agent).await?);
            }
            out.push(agent);
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(60), setup).await.with_context(|| format!("connecting {n} agents to {addr} took over 60 s"))?
}

async fn open_session(agent: &mut Agent) -> Result<String> {
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"portcullis-bench","version":"1"}}}"#;
    let caller = agent.caller("initialize")?;
    let r = agent.post(caller.as_deref().map(|c| (CALLER_HEADER, c)), init.as_bytes()).await?;
    ensure!(r.status == 200, "initialize through {} failed: {} {}", agent.addr, r.status, r.text());
    let session = r.header("mcp-session-id").map(str::to_owned).with_context(|| format!("no mcp-session-id from initialize through {}", agent.addr))?;
    agent.session = Some(session.clone());
    agent.ensure_open().await?;
    let caller = agent.caller("notifications/initialized")?;
    let r = agent.post(caller.as_deref().map(|c| (CALLER_HEADER, c)), br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await?;
    ensure!(r.status == 202, "notifications/initialized through {} failed: {} {}", agent.addr, r.status, r.text());
    Ok(session)
}

/// Mints what the gateway adds (tickets and caller assertions) on the client side, for
/// requests that go through Envoy *without* the filter to the real runner (which refuses any
/// request without them). Minting happens before a request's clock starts.
pub struct Minter {
    signer: Signer,
    sub: String,
}

impl Minter {
    pub fn new(signing_key_pem: &[u8], sub: &str) -> Result<Minter> {
        Ok(Minter { signer: Signer::from_pem(signing_key_pem, "portcullis-gateway".into(), 60)?, sub: sub.to_owned() })
    }

    fn now() -> Result<u64> {
        Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
    }

    /// A ticket for `tool` with `arguments` on `session`.
    fn ticket(&self, tool: &str, arguments: &Map<String, Value>, session: Option<&str>) -> Result<String> {
        let mut entropy = [0u8; 16];
        getrandom::fill(&mut entropy).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let id = hex::encode(entropy);
        let now = Self::now()?;
        Ok(self.signer.sign(&Claims {
            iss: self.signer.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            sub: self.sub.clone(),
            user: None,
            user_iss: None,
            groups: Vec::new(),
            session: session.map(session_hash),
            tool: tool.to_owned(),
            plan_hash: portcullis_core::plan::plan_hash(tool, Some(arguments))?,
            decision_id: id.clone(),
            require_approval: false,
            placement: None,
            policy_version: "bench".into(),
            jti: id,
            iat: now,
            exp: now + self.signer.ttl_seconds,
        })?)
    }

    /// A caller assertion for a POST of `method` on `session`.
    fn caller(&self, method: &str, session: Option<&str>) -> Result<String> {
        let now = Self::now()?;
        Ok(self.signer.sign_caller(&CallerClaims {
            iss: self.signer.issuer.clone(),
            aud: CALLER_AUDIENCE.to_owned(),
            sub: self.sub.clone(),
            user: None,
            user_iss: None,
            session: session.map(session_hash),
            http: "POST".into(),
            method: Some(method.to_owned()),
            iat: now,
            exp: now + self.signer.ttl_seconds,
        })?)
    }
}

/// One kind of request and what a correct answer to it looks like.
pub struct Call {
    pub tool: &'static str,
    pub arguments: Map<String, Value>,
    pub expect_status: u16,
    /// A substring every correct response body contains.
    pub expect_body: &'static str,
    /// Mint a ticket for every request (the runner without the filter in front).
    pub mint_tickets: bool,
    /// Make every request a new call: its `text` argument gets the request number appended.
    pub fresh_arguments: bool,
}

/// What one bounded run produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per successful request, nanoseconds from send to the last byte of the response.
    pub latencies_ns: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Connections re-established (outside any request's clock) after the server closed one.
    pub reconnects: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn absorb(&mut self, other: Outcome) {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.elapsed += other.elapsed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn requests(&self) -> u64 {
        self.latencies_ns.len() as u64 + self.errors
    }

    /// Completed requests per second of wall time.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.latencies_ns.len() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Numbers the calls made with `fresh_arguments`.
static FRESH: AtomicU64 = AtomicU64::new(0);

/// Runs `call` with the first `concurrency` agents (each one request in flight) until
/// `max_requests` were sent or `max_time` passed, whichever comes first.
pub async fn run(agents: &mut Vec<Agent>, call: &Arc<Call>, concurrency: usize, max_requests: u64, max_time: Duration) -> Result<Outcome> {
    ensure!(agents.len() >= concurrency, "{} agents for concurrency {concurrency}", agents.len());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + max_time;
    let mut tasks = Vec::with_capacity(concurrency);
    for mut agent in agents.drain(..concurrency) {
        let (issued, call) = (issued.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= max_requests || Instant::now() >= deadline {
                    return (agent, out);
                }
                match agent.ensure_open().await {
                    Ok(true) => out.reconnects += 1,
                    Ok(false) => {}
                    Err(e) => {
                        out.note_error(format!("reconnecting to {}: {e:#}", agent.addr));
                        continue;
                    }
                }
                let minted = match &agent.minter {
                    Some(m) if call.mint_tickets => Some(m.ticket(call.tool, &call.arguments, agent.session.as_deref())),
                    _ => None,
                };
                let ticket = match minted.transpose() {
                    Ok(t) => t,
                    Err(e) => {
                        out.note_error(format!("minting a ticket: {e:#}"));
                        continue;
                    }
                };
                let mut arguments = Cow::Borrowed(&call.arguments);
                if call.fresh_arguments {
                    // Unique for the whole process, so no later run repeats an earlier call.
                    let fresh = FRESH.fetch_add(1, Ordering::Relaxed);
                    if let Some(Value::String(text)) = arguments.to_mut().get_mut("text") {
                        text.push_str(&format!(" #{fresh}"));
                    }
                    if let Some(Value::String(namespace)) = arguments.to_mut().get_mut("namespace") {
                        namespace.push_str(&format!("-{fresh}"));
                    }
                }
                let body = payload::tools_call_with(n + 1, call.tool, &arguments);
                let t0 = Instant::now();
                let reply = match tokio::time::timeout(REQUEST_TIMEOUT, agent.post(ticket.as_deref().map(|t| (TICKET_HEADER, t)), body.as_bytes())).await {
                    Ok(r) => r,
                    Err(_) => {
                        // The connection is mid-response: drop it; the next request reconnects.
                        agent.conn.close();
                        Err(anyhow::anyhow!("no response within {REQUEST_TIMEOUT:?}"))
                    }
                };
                let ns = t0.elapsed().as_nanos() as u64;
                match reply {
                    Ok(r) if r.status == call.expect_status && contains(&r.body, call.expect_body) => out.latencies_ns.push(ns),
                    Ok(r) => out.note_error(format!(
                        "{} via {}: HTTP {} (want {} with {:?}): {}",
                        call.tool,
                        agent.addr,
                        r.status,
                        call.expect_status,
                        call.expect_body,
                        r.text().chars().take(400).collect::<String>()
                    )),
                    Err(e) => out.note_error(format!("{} via {}: {e:#}", call.tool, agent.addr)),
                }
            }
        }));
    }
    let mut total = Outcome::default();
    let mut back = Vec::with_capacity(concurrency);
    for t in tasks {
        let (agent, out) = t.await?;
        back.push(agent);
        total.absorb(out);
    }
    // Put the agents back in front, in their order, so the next run reuses their connections.
    back.append(agents);
    *agents = back;
    total.elapsed = started.elapsed();
    Ok(total)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

impl Outcome {
    fn note_error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}
