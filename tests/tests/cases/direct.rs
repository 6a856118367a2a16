//! Calls sent straight to the runner, bypassing Envoy. The runner must refuse every one that
//! lacks a valid, unexpired, unused ticket bound to exactly this call, and run nothing.
//! Sessions are opened as the gateway opens them, with a caller assertion per request.
//! (These tests present the gateway's own client certificate: the worst case, where an
//! attacker has the network path and the gateway's TLS identity but not its signing key.)

use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::caller::{CallerClaims, CALLER_AUDIENCE};
use portcullis_core::plan::plan_hash;
use portcullis_core::session::session_hash;
use portcullis_core::ticket::{Claims, Signer, AUDIENCE};
use portcullis_e2e::mcp::{post, tools_call, Reply};
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use crate::stack;

pub const OPERATOR: &str = "spiffe://portcullis.local/ns/agents/sa/operator";

/// A ticket's claims, signed per session: a ticket names the session its call is made on.
pub struct Minted {
    key: Vec<u8>,
    claims: Claims,
    pub jti: String,
}

impl Minted {
    /// The ticket for this call on `session` (the runner's id of it).
    pub fn token(&self, session: &str) -> String {
        self.sign(Some(session))
    }

    /// The ticket for this call made without a session (MCP 2026-07-28 has none).
    pub fn sessionless(&self) -> String {
        self.sign(None)
    }

    fn sign(&self, session: Option<&str>) -> String {
        let claims = Claims { session: session.map(session_hash), ..self.claims.clone() };
        Signer::from_pem(&self.key, "portcullis-gateway".into(), 30).unwrap().sign(&claims).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn claims(tool: &str, args: &Value, exp_offset: i64) -> Claims {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let jti = format!("e2e{:08x}{n:04x}{:x}", std::process::id(), now());
    Claims {
        iss: "portcullis-gateway".into(),
        aud: AUDIENCE.into(),
        sub: OPERATOR.into(),
        user: None,
        user_iss: None,
        groups: Vec::new(),
        session: None,
        tool: tool.into(),
        plan_hash: plan_hash(tool, args.as_object()).unwrap(),
        decision_id: jti.clone(),
        require_approval: false,
        placement: None,
        policy_version: "sha256:test".into(),
        jti,
        iat: now(),
        exp: now().saturating_add_signed(30 + exp_offset),
    }
}

fn sign_with(key_pem: &[u8], c: Claims) -> Minted {
    Minted { key: key_pem.to_vec(), jti: c.jti.clone(), claims: c }
}

/// A ticket signed with the gateway's real key (as the filter would issue it).
pub fn mint(s: &Stack, tool: &str, args: &Value, exp_offset: i64) -> Minted {
    let key = std::fs::read(s.certs().join("ticket-signing-key.pem")).unwrap();
    sign_with(&key, claims(tool, args, exp_offset))
}

/// A caller assertion as the gateway would sign it for a POST of `method`.
pub fn caller(s: &Stack, workload: &str, session: Option<&str>, method: &str) -> String {
    caller_for(s, workload, session, "POST", Some(method))
}

/// A caller assertion for an HTTP request (`GET`, `DELETE`: no JSON-RPC method).
pub fn caller_for(s: &Stack, workload: &str, session: Option<&str>, http: &str, method: Option<&str>) -> String {
    let key = std::fs::read(s.certs().join("ticket-signing-key.pem")).unwrap();
    let claims = CallerClaims {
        iss: "portcullis-gateway".into(),
        aud: CALLER_AUDIENCE.into(),
        sub: workload.into(),
        user: None,
        user_iss: None,
        session: session.map(session_hash),
        http: http.into(),
        method: method.map(str::to_owned),
        iat: now(),
        exp: now() + 30,
    };
    Signer::from_pem(&key, "portcullis-gateway".into(), 30).unwrap().sign_caller(&claims).unwrap()
}

/// initialize + notifications/initialized straight to the runner, as `workload`; `None` from
/// a runner without sessions (`--json-response`).
pub async fn open_direct_session(s: &Stack, http: &reqwest::Client, workload: &str) -> Option<String> {
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"portcullis-e2e","version":"1"}}});
    let assertion = caller(s, workload, None, "initialize");
    let r = post(http, &s.runner_url(), None, &[("x-portcullis-caller", &assertion)], &init.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let session = r.headers.get("mcp-session-id")?.to_str().unwrap().to_owned();
    let assertion = caller(s, workload, Some(&session), "notifications/initialized");
    let r = post(http, &s.runner_url(), Some(&session), &[("x-portcullis-caller", &assertion)], r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text);
    Some(session)
}

/// A tools/call straight to the runner on a fresh operator session; `ticket` gets the session.
pub async fn direct_call(s: &Stack, ticket: impl FnOnce(&str) -> Option<String>, tool: &str, args: &Value) -> Reply {
    let http = s.http_client(Some("gateway"));
    let session = open_direct_session(s, &http, OPERATOR).await.expect("a session");
    let ticket = ticket(&session);
    let headers: Vec<(&str, &str)> = ticket.iter().map(|t| ("x-portcullis-ticket", t.as_str())).collect();
    post(&http, &s.runner_url(), Some(&session), &headers, &tools_call(1, tool, args.clone())).await.unwrap()
}

fn assert_refused(s: &Stack, r: &Reply, jti: Option<&str>, why: &str) {
    assert_eq!(r.error_code(), Some(-32002), "expected a ticket refusal ({why}), got {}", r.text);
    assert!(r.error_message().contains(why), "expected {why:?} in {}", r.text);
    if let Some(jti) = jti {
        assert!(!s.runner_log().contains(&format!("running tool=word_count workload=spiffe://portcullis.local/ns/agents/sa/operator decision={jti}")), "a refused call ran");
    }
}

#[tokio::test]
async fn direct_calls_without_a_valid_ticket_are_refused_and_nothing_runs() {
    let s = stack();
    let args = json!({"text": "direct"});

    let r = direct_call(s, |_| None, "word_count", &args).await;
    assert_refused(s, &r, None, "no gateway ticket");

    // Forged: right claims, signed by a key that is not the gateway's.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
        .args(["certs", "--dir"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let forged = sign_with(&std::fs::read(other.path().join("ticket-signing-key.pem")).unwrap(), claims("word_count", &args, 0));
    let r = direct_call(s, |session| Some(forged.token(session)), "word_count", &args).await;
    assert_refused(s, &r, Some(&forged.jti), "InvalidSignature");

    // Garbage.
    let r = direct_call(s, |_| Some("not-a-jwt".into()), "word_count", &args).await;
    assert_refused(s, &r, None, "ticket rejected");

    // Expired (well past the runner's one second of leeway).
    let expired = mint(s, "word_count", &args, -60);
    let r = direct_call(s, |session| Some(expired.token(session)), "word_count", &args).await;
    assert_refused(s, &r, Some(&expired.jti), "ticket expired");

    // Valid ticket, arguments changed after signing.
    let bound = mint(s, "word_count", &args, 0);
    let r = direct_call(s, |session| Some(bound.token(session)), "word_count", &json!({"text": "direct, but changed"})).await;
    assert_refused(s, &r, Some(&bound.jti), "does not match the call's plan hash");

    // Valid ticket for another tool.
    let other_tool = mint(s, "inspect_sandbox", &args, 0);
    let r = direct_call(s, |session| Some(other_tool.token(session)), "word_count", &args).await;
    assert_refused(s, &r, Some(&other_tool.jti), "ticket is for tool \"inspect_sandbox\"");

    // Valid ticket: runs once, then the replay is refused.
    let good = mint(s, "word_count", &args, 0);
    let r = direct_call(s, |session| Some(good.token(session)), "word_count", &args).await;
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().unwrap().trim(), "1", "{}", r.text);
    let r = direct_call(s, |session| Some(good.token(session)), "word_count", &args).await;
    assert_refused(s, &r, None, "already used");
}

#[tokio::test]
async fn only_the_gateway_identity_can_reach_the_runner() {
    let s = stack();
    for who in ["reader", "operator"] {
        let http = s.http_client(Some(who));
        let err = post(&http, &s.runner_url(), None, &[], "{}").await.expect_err("agent reached the runner");
        let _ = err;
    }
    let err = post(&s.http_client(None), &s.runner_url(), None, &[], "{}").await;
    assert!(err.is_err(), "anonymous client reached the runner");
}
