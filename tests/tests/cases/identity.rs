//! User identity and argument schemas through real Envoy: the filter verifies the user's
//! bearer token, policy requires a verified user for apply tools and says why there is none,
//! the runner learns the user from the ticket only, and arguments outside a tool's schema are
//! refused with -32602 naming the JSON path.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_e2e::mcp::{open_session, post, rmcp_client, tools_call, Reply};
use portcullis_e2e::Stack;
use portcullis_runner::devstack::users::{DevIssuer, DEV_AUDIENCE, DEV_ISSUER};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};

use crate::stack;

/// One tools/call by `agent` in a fresh session, with `authorization` when given.
async fn call(s: &Stack, agent: &str, authorization: Option<&str>, id: i64, tool: &str, args: Value) -> Reply {
    let http = match authorization {
        Some(a) => s.http_client_with_authorization(agent, a),
        None => s.http_client(Some(agent)),
    };
    let session = open_session(&http, &s.url()).await.unwrap();
    post(&http, &s.url(), Some(&session), &[], &tools_call(id, tool, args)).await.unwrap()
}

fn portcullis(args: &[&str]) -> std::process::Output {
    std::process::Command::new(portcullis_e2e::portcullis_bin()).args(args).output().unwrap()
}

/// A token with the dev issuer's kid and claims, signed by another Ed25519 key.
fn forged_token(s: &Stack) -> String {
    let other = tempfile::tempdir().unwrap();
    let other = portcullis_runner::devstack::users::ensure(other.path()).unwrap();
    let jwks: Value = serde_json::from_str(&std::fs::read_to_string(DevIssuer::in_dir(&s.certs()).jwks).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "mallory", "groups": ["sre"], "exp": now + 600});
    let key = EncodingKey::from_ed_pem(&std::fs::read(other.key).unwrap()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test]
async fn valid_user_token_lets_the_operator_apply_and_the_ticket_names_the_user() {
    let s = stack();
    let certs = s.certs();
    let out = portcullis(&["token", "--certs", certs.to_str().unwrap(), "--sub", "alice-e2e", "--groups", "sre,dev"]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let bearer = format!("Bearer {token}");
    let r = call(s, "operator", Some(&bearer), 31, "apply_config", json!({"name": "identity-e2e", "content": "x"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["result"]["isError"], false, "{}", r.text);
    assert!(r.message["result"]["content"][0]["text"].as_str().unwrap().contains("wrote /tmp/config/identity-e2e"), "{}", r.text);
    // The runner read the user from the gateway's ticket.
    let log = s.runner_log();
    assert!(log.lines().any(|l| l.contains("running tool=apply_config") && l.contains("user=\"alice-e2e\"")), "{log}");

    // The official client, with the token on every request, works the same way.
    let client = rmcp_client(s.http_client_with_authorization("operator", &bearer), &s.url()).await.unwrap();
    let args = json!({"name": "identity-rmcp", "content": "y"});
    let result = client.call_tool(CallToolRequestParams::new("apply_config").with_arguments(args.as_object().unwrap().clone())).await.unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn apply_tool_without_a_valid_user_is_denied_with_the_reason() {
    let s = stack();
    let expired = s.user_token("alice", &["sre"], DEV_AUDIENCE, -120);
    let wrong_audience = s.user_token("alice", &["sre"], "someone-else", 600);
    let forged = forged_token(s);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("absent", None, "no bearer token"),
        ("expired", Some(format!("Bearer {expired}")), "bearer token expired"),
        ("wrong audience", Some(format!("Bearer {wrong_audience}")), "bearer token audience not accepted"),
        ("wrong key", Some(format!("Bearer {forged}")), "bearer token signature does not verify with any configured key"),
        ("garbage", Some("Bearer garbage".to_owned()), "bearer token is not a well-formed JWT"),
        ("not bearer", Some("Basic YWxpY2U6cHc=".to_owned()), "malformed Authorization header"),
    ];
    for (n, (what, authorization, reason)) in cases.into_iter().enumerate() {
        let name = format!("denied-{n}");
        let r = call(s, "operator", authorization.as_deref(), 40 + n as i64, "apply_config", json!({"name": name, "content": "x"})).await;
        assert_eq!((r.status, r.error_code()), (200, Some(-32001)), "{what}: {}", r.text);
        let want = format!("tool apply_config requires a verified user: {reason}");
        assert!(r.error_message().contains(&want), "{what}: {}", r.text);
        assert_eq!(r.message["error"]["data"]["rule_ids"], json!(["user.required"]), "{what}: {}", r.text);
        assert!(r.message["error"]["data"]["reasons"].as_array().unwrap().iter().any(|x| x.as_str().unwrap().contains(reason)), "{what}");
        assert!(!s.runner_log().contains(&format!("/tmp/config/{name}")), "{what}: a denied call ran");
    }
}

#[tokio::test]
async fn query_tool_needs_no_user_and_a_bad_token_is_no_user() {
    let s = stack();
    for authorization in [None, Some("Bearer garbage")] {
        let r = call(s, "reader", authorization, 50, "word_count", json!({"text": "one two"})).await;
        assert_eq!(r.status, 200, "{authorization:?}: {}", r.text);
        assert_eq!(r.message["result"]["content"][0]["text"].as_str().unwrap().trim(), "2", "{}", r.text);
    }
}

#[tokio::test]
async fn authorization_header_never_reaches_the_runner() {
    let s = stack();
    // Straight to the runner with a valid ticket and a user token: refused, so the check is live.
    let args = json!({"text": "credentials"});
    let ticket = crate::cases::direct::mint(s, "word_count", &args, 0);
    let token = s.user_token("alice", &["sre"], DEV_AUDIENCE, 600);
    let bearer = format!("Bearer {token}");
    let http = s.http_client(Some("gateway"));
    let session = crate::cases::direct::open_direct_session(s, &http, crate::cases::direct::OPERATOR).await.expect("a session");
    let ticket = ticket.token(&session);
    let headers = [("x-portcullis-ticket", ticket.as_str()), ("authorization", bearer.as_str())];
    let r = post(&http, &s.runner_url(), Some(&session), &headers, &tools_call(1, "word_count", args.clone())).await.unwrap();
    assert_eq!(r.error_code(), Some(-32002), "{}", r.text);
    assert!(r.error_message().contains("Authorization header"), "{}", r.text);
    // Through the gateway the same header is stripped, and the call runs.
    let r = call(s, "reader", Some(&bearer), 51, "word_count", args).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().unwrap().trim(), "1", "{}", r.text);
}

#[tokio::test]
async fn arguments_outside_the_schema_are_refused_naming_the_path() {
    let s = stack();
    let bearer = format!("Bearer {}", s.user_token("alice", &["sre"], DEV_AUDIENCE, 600));
    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        ("reader", "word_count", json!({"text": 5}), "/text", "expected string, got number"),
        ("reader", "word_count", json!({}), "/text", "required property is missing"),
        ("reader", "word_count", json!({"text": "a", "extra": true}), "/extra", "property is not allowed"),
        ("operator", "apply_config", json!({"name": "Bad Name!", "content": "x"}), "/name", "does not match pattern"),
    ];
    for (n, (agent, tool, args, path, reason)) in cases.into_iter().enumerate() {
        let r = call(s, agent, Some(&bearer), 60 + n as i64, tool, args.clone()).await;
        assert_eq!((r.status, r.error_code()), (400, Some(-32602)), "{args}: {}", r.text);
        assert_eq!(r.message["id"], 60 + n as i64);
        assert_eq!(r.message["error"]["data"]["path"], path, "{args}: {}", r.text);
        assert!(r.error_message().contains(&format!("invalid arguments for tool {tool}: {path}: {reason}")), "{args}: {}", r.text);
    }
}

#[tokio::test]
async fn a_bad_users_section_is_refused_before_envoy_starts() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"{"issuers":[{"issuer":"https://idp.example","audiences":["portcullis"],"jwks":{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}}]}"#).unwrap();
    let key = s.certs().join("ticket-signing-key.pem");
    let root = portcullis_e2e::repo_root();
    let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
        .current_dir(&root)
        .args(["plugin-config", "--signing-key", key.to_str().unwrap(), "--users", users.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("users.issuers[0].jwks.keys[0]") && err.contains("public keys only"), "{err}");
}
