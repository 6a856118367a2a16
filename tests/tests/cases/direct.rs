//! Calls sent straight to the runner, bypassing Envoy. The runner must refuse every one that
//! lacks a valid, unexpired, unused ticket bound to exactly this call, and run nothing.
//! (These tests present the gateway's own client certificate: the worst case, where an
//! attacker has the network path and the gateway's TLS identity but not its signing key.)

use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::plan::plan_hash;
use portcullis_core::ticket::{Claims, Signer, AUDIENCE};
use portcullis_e2e::mcp::{open_session, post, tools_call, Reply};
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use crate::stack;

pub struct Minted {
    pub token: String,
    pub jti: String,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(tool: &str, args: &Value, exp_offset: i64) -> Claims {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let jti = format!("e2e{:08x}{n:04x}{:x}", std::process::id(), now());
    Claims {
        iss: "portcullis-gateway".into(),
        aud: AUDIENCE.into(),
        sub: "spiffe://portcullis.local/ns/agents/sa/operator".into(),
        user: None,
        tool: tool.into(),
        plan_hash: plan_hash(tool, args.as_object()).unwrap(),
        decision_id: jti.clone(),
        require_approval: false,
        policy_version: "sha256:test".into(),
        jti,
        iat: now(),
        exp: now().saturating_add_signed(30 + exp_offset),
    }
}

fn sign_with(key_pem: &[u8], c: Claims) -> Minted {
    let signer = Signer::from_pem(key_pem, "portcullis-gateway".into(), 30).unwrap();
    Minted { token: signer.sign(&c).unwrap(), jti: c.jti }
}

/// A ticket signed with the gateway's real key (as the filter would issue it).
pub fn mint(s: &Stack, tool: &str, args: &Value, exp_offset: i64) -> Minted {
    let key = std::fs::read(s.certs().join("ticket-signing-key.pem")).unwrap();
    sign_with(&key, claims(tool, args, exp_offset))
}

pub async fn direct_call(s: &Stack, ticket: Option<&str>, tool: &str, args: &Value) -> Reply {
    let http = s.http_client(Some("gateway"));
    let session = open_session(&http, &s.runner_url()).await.unwrap();
    let headers: Vec<(&str, &str)> = ticket.map(|t| ("x-portcullis-ticket", t)).into_iter().collect();
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

    let r = direct_call(s, None, "word_count", &args).await;
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
    let r = direct_call(s, Some(&forged.token), "word_count", &args).await;
    assert_refused(s, &r, Some(&forged.jti), "InvalidSignature");

    // Garbage.
    let r = direct_call(s, Some("not-a-jwt"), "word_count", &args).await;
    assert_refused(s, &r, None, "ticket rejected");

    // Expired (well past the runner's one second of leeway).
    let expired = mint(s, "word_count", &args, -60);
    let r = direct_call(s, Some(&expired.token), "word_count", &args).await;
    assert_refused(s, &r, Some(&expired.jti), "ticket expired");

    // Valid ticket, arguments changed after signing.
    let bound = mint(s, "word_count", &args, 0);
    let r = direct_call(s, Some(&bound.token), "word_count", &json!({"text": "direct, but changed"})).await;
    assert_refused(s, &r, Some(&bound.jti), "does not match the call's plan hash");

    // Valid ticket for another tool.
    let other_tool = mint(s, "inspect_sandbox", &args, 0);
    let r = direct_call(s, Some(&other_tool.token), "word_count", &args).await;
    assert_refused(s, &r, Some(&other_tool.jti), "ticket is for tool \"inspect_sandbox\"");

    // Valid ticket: runs once, then the replay is refused.
    let good = mint(s, "word_count", &args, 0);
    let r = direct_call(s, Some(&good.token), "word_count", &args).await;
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().unwrap().trim(), "1", "{}", r.text);
    let r = direct_call(s, Some(&good.token), "word_count", &args).await;
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
