//! MCP sessions belong to the workload (and user) that opened them: through the gateway and,
//! independently, at the runner. A foreign session id is an unknown session; one JSON-RPC id
//! is in flight at most once per session; session ids stay out of the logs.

use std::time::Duration;

use portcullis_e2e::mcp::{bodyless, open_session, post, tools_call, Reply};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cases::direct::{caller, open_direct_session};
use crate::stack;

const LIST: &str = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
const READER: &str = "spiffe://portcullis.local/ns/agents/sa/reader";
const INTRUDER: &str = "spiffe://portcullis.local/ns/agents/sa/intruder";

fn assert_unknown_session(r: &Reply, id: Value, what: &str) {
    assert_eq!(r.status, 404, "{what}: {} {}", r.status, r.text);
    assert_eq!(r.error_code(), Some(-32600), "{what}: {}", r.text);
    assert!(r.error_message().contains("unknown session"), "{what}: {}", r.text);
    assert_eq!(r.message["id"], id, "{what}: {}", r.text);
}

/// The runner's own id inside the one the agent holds (`S.<mac>`).
fn inner(session: &str) -> &str {
    session.rsplit_once('.').map_or(session, |(s, _)| s)
}

#[tokio::test]
async fn another_agents_session_id_is_refused_for_delete_get_and_post() {
    let s = stack();
    let reader = s.http_client(Some("reader"));
    let intruder = s.http_client(Some("intruder"));
    let session = open_session(&reader, &s.url()).await.unwrap();
    assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)), "not visible ASCII: {session:?}");

    let r = bodyless(&intruder, Method::DELETE, &s.url(), &session, &[]).await.unwrap();
    assert_unknown_session(&r, Value::Null, "intruder DELETE");
    let r = bodyless(&intruder, Method::GET, &s.url(), &session, &[]).await.unwrap();
    assert_unknown_session(&r, Value::Null, "intruder GET");
    let r = post(&intruder, &s.url(), Some(&session), &[], LIST).await.unwrap();
    assert_unknown_session(&r, json!(5), "intruder POST");
    let r = post(&intruder, &s.url(), Some(&session), &[], &tools_call(6, "word_count", json!({"text": "x"}))).await.unwrap();
    assert_unknown_session(&r, json!(6), "intruder tools/call");

    // The id the agent holds is not the runner's: the runner's alone is no session here.
    assert_ne!(inner(&session), session);
    let r = post(&reader, &s.url(), Some(inner(&session)), &[], LIST).await.unwrap();
    assert_unknown_session(&r, json!(5), "the runner's raw id");

    // The owner's session still works, and only the owner ends it.
    let r = post(&reader, &s.url(), Some(&session), &[], &tools_call(7, "word_count", json!({"text": "still mine"}))).await.unwrap();
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().map(str::trim), Some("2"), "{}", r.text);
    let r = bodyless(&reader, Method::DELETE, &s.url(), &session, &[]).await.unwrap();
    assert!(r.status == 200 || r.status == 202, "owner DELETE: {} {}", r.status, r.text);
    let r = post(&reader, &s.url(), Some(&session), &[], LIST).await.unwrap();
    assert_eq!(r.status, 404, "a deleted session answered: {}", r.text);

    assert!(!s.runner_log().contains(inner(&session)), "the runner logged a session id");
    assert!(!s.envoy_log().contains(inner(&session)), "Envoy logged a session id");
    assert!(!s.access_log().contains(inner(&session)), "Envoy's access log holds a session id");
}

#[tokio::test]
async fn a_session_opened_for_a_user_needs_that_user() {
    let s = stack();
    let alice = format!("Bearer {}", s.user("alice", "sre"));
    let bob = format!("Bearer {}", s.user("bob", "sre"));
    let as_alice = s.http_client_with_authorization("operator", &alice);
    let session = open_session(&as_alice, &s.url()).await.unwrap();

    let r = post(&s.http_client(Some("operator")), &s.url(), Some(&session), &[], LIST).await.unwrap();
    assert_unknown_session(&r, json!(5), "operator without a user token");
    let r = post(&s.http_client_with_authorization("operator", &bob), &s.url(), Some(&session), &[], LIST).await.unwrap();
    assert_unknown_session(&r, json!(5), "operator with bob's token");
    let r = bodyless(&s.http_client(Some("operator")), Method::DELETE, &s.url(), &session, &[]).await.unwrap();
    assert_unknown_session(&r, Value::Null, "operator DELETE without a user token");

    let r = post(&as_alice, &s.url(), Some(&session), &[], LIST).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["id"], 5, "{}", r.text);
}

#[tokio::test]
async fn one_request_id_is_in_flight_at_most_once_per_session() {
    let s = stack();
    let reader = s.http_client(Some("reader"));
    let session = open_session(&reader, &s.url()).await.unwrap();
    // Same id, different texts: every answer must be the count of its own text.
    let calls: Vec<_> = (1..=12).map(|n| {
        let (reader, url, session) = (reader.clone(), s.url(), session.clone());
        let text = vec!["w"; n].join(" ");
        tokio::spawn(async move { (n, post(&reader, &url, Some(&session), &[], &tools_call(7, "word_count", json!({"text": text}))).await.unwrap()) })
    }).collect();
    let replies = tokio::time::timeout(Duration::from_secs(30), async {
        let mut replies = Vec::new();
        for call in calls {
            replies.push(call.await);
        }
        replies
    })
    .await
    .expect("answers were lost");
    let (mut answered, mut refused) = (0, 0);
    for reply in replies {
        let (n, r) = reply.unwrap();
        assert_eq!(r.message["id"], 7, "{}", r.text);
        if r.status == 409 {
            assert_eq!(r.error_code(), Some(-32600), "{}", r.text);
            assert!(r.error_message().contains("request id 7 is already in flight on this session"), "{}", r.text);
            refused += 1;
        } else {
            let count = r.message["result"]["content"][0]["text"].as_str().map(str::trim).map(str::to_owned);
            assert_eq!(count, Some(n.to_string()), "call {n} got another call's answer: {}", r.text);
            answered += 1;
        }
    }
    assert!(answered >= 1 && refused >= 1, "{answered} answered, {refused} refused");
    // Once the answers are in, the id is free again.
    let r = post(&reader, &s.url(), Some(&session), &[], &tools_call(7, "word_count", json!({"text": "a b c"}))).await.unwrap();
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().map(str::trim), Some("3"), "{}", r.text);
}

#[tokio::test]
async fn the_runner_binds_sessions_to_the_caller_on_its_own() {
    let s = stack();
    // The gateway's TLS identity, but credentials signed per request as the gateway would.
    let http = s.http_client(Some("gateway"));
    let session = open_direct_session(s, &http, READER).await.expect("a session");

    let foreign = caller(s, INTRUDER, Some(&session), "tools/list");
    let r = post(&http, &s.runner_url(), Some(&session), &[("x-portcullis-caller", &foreign)], LIST).await.unwrap();
    assert_unknown_session(&r, json!(5), "intruder's assertion on the reader's session");

    // An assertion for another session (or none) does not open this one.
    let elsewhere = caller(s, READER, Some("another-session"), "tools/list");
    let r = post(&http, &s.runner_url(), Some(&session), &[("x-portcullis-caller", &elsewhere)], LIST).await.unwrap();
    assert_unknown_session(&r, json!(5), "assertion naming another session");

    let r = post(&http, &s.runner_url(), Some(&session), &[], LIST).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32002), "{}", r.text);
    assert!(r.error_message().contains("no gateway ticket or caller assertion"), "{}", r.text);
    assert_eq!(r.message["id"], 5, "{}", r.text);

    // An assertion for another method is not a credential for this one.
    let other = caller(s, READER, Some(&session), "ping");
    let r = post(&http, &s.runner_url(), Some(&session), &[("x-portcullis-caller", &other)], LIST).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text);

    let own = caller(s, READER, Some(&session), "tools/list");
    let r = post(&http, &s.runner_url(), Some(&session), &[("x-portcullis-caller", &own)], LIST).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.message["result"]["tools"].is_array(), "{}", r.text);

    assert!(!s.runner_log().contains(&session), "the runner logged a session id");
}
