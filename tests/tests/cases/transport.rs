//! How requests travel and end: HTTP/2 and HTTP/1.1, trailers, resets, bodies on GET, oversized
//! bodies, and the decision record every request leaves in Envoy's access log.

use portcullis_e2e::h2raw::{self, End};
use portcullis_e2e::mcp::{open_session, post, rmcp_client, tools_call};
use portcullis_e2e::Stack;
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};
use std::time::Duration;

use crate::stack;

const INIT: &str = r#"{"jsonrpc":"2.0","id":"init-t","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}"#;

/// A user agent no other request in this run carries, to find a request's access-log line.
fn unique_agent(what: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("e2e-{what}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// The access-log line of the request sent with `user_agent`, and its decision record. Envoy
/// writes the line (to `<state-dir>/access.log`) when the stream ends and flushes its log
/// every 250 ms (`up`), so this waits a little for it.
fn access_log(s: &Stack, user_agent: &str) -> (Value, Value) {
    let line = access_log_where(s, |v| v["user_agent"] == user_agent);
    let record = line["portcullis_decision"].as_str().and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
    (line, record)
}

/// The first access-log line that `matches`, waiting for Envoy's flush.
fn access_log_where(s: &Stack, matches: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let line = s.access_log().lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(&matches);
        if let Some(line) = line {
            return line;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no such access-log line:\n{}", s.access_log());
}

fn post_headers(user_agent: &str) -> Vec<(&str, &str)> {
    vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream"), ("user-agent", user_agent)]
}

#[tokio::test]
async fn agents_clients_speak_http2_to_the_gateway() {
    let s = stack();
    let ua = unique_agent("h2");
    let r = s
        .http_client(Some("reader"))
        .post(s.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("user-agent", &ua)
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let (line, _) = access_log(s, &ua);
    assert_eq!(line["protocol"], "HTTP/2");
}

#[tokio::test]
async fn http1_clients_work_the_same() {
    let s = stack();
    let client = rmcp_client(s.http1_client(Some("reader")), &s.url()).await.unwrap();
    let tools = client.list_tools(None).await.unwrap();
    assert!(tools.tools.iter().any(|t| t.name == "word_count") && !tools.tools.iter().any(|t| t.name == "apply_config"));
    let args = json!({"text": "one two"}).as_object().unwrap().clone();
    let result = client.call_tool(CallToolRequestParams::new("word_count").with_arguments(args)).await.unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_request_ending_in_trailers_is_refused_never_forwarded() {
    let s = stack();
    // An agent with no role must not get a runner session this way.
    let ua = unique_agent("trailers-init");
    let r = h2raw::send(s, "intruder", "POST", &post_headers(&ua), INIT.as_bytes(), End::Trailers).await.unwrap().unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.headers.contains_key("mcp-session-id"), "{r:?}");
    let m = r.json();
    assert_eq!(m["id"], "init-t", "{r:?}");
    assert_eq!(m["error"]["code"], -32600, "{r:?}");
    assert!(m["error"]["message"].as_str().unwrap().contains("trailers"), "{r:?}");
    let (line, record) = access_log(s, &ua);
    assert_eq!(record["outcome"], "invalid", "{line}");
    assert!(line["upstream_host"].is_null(), "forwarded: {line}");

    // Nor may the reader get the untrimmed tool list on its own session.
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let ua = unique_agent("trailers-list");
    let mut headers = post_headers(&ua);
    headers.extend([("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-06-18")]);
    let body = br#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
    let r = h2raw::send(s, "reader", "POST", &headers, body, End::Trailers).await.unwrap().unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["id"], 9, "{r:?}");
    assert!(r.json()["result"].is_null(), "{r:?}");

    // The same request ending with its body is decided and trimmed as usual.
    let r = h2raw::send(s, "reader", "POST", &headers, body, End::Body).await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let tools = r.json()["result"]["tools"].as_array().cloned().unwrap_or_default();
    assert!(!tools.is_empty() && tools.iter().all(|t| t["name"] != "apply_config"), "{r:?}");
}

#[tokio::test]
async fn a_request_reset_midway_reaches_nothing_and_is_logged() {
    let s = stack();
    let ua = unique_agent("reset");
    let half = &INIT.as_bytes()[..INIT.len() / 2];
    let none = h2raw::send(s, "intruder", "POST", &post_headers(&ua), half, End::Reset).await.unwrap();
    assert!(none.is_none());
    let (line, record) = access_log(s, &ua);
    assert!(line["upstream_host"].is_null(), "forwarded: {line}");
    assert_eq!(record["outcome"], "incomplete", "{line}");
    assert_eq!(record["workload"], "spiffe://portcullis.local/ns/agents/sa/intruder", "{line}");
}

/// A refusal the headers decided (here the path) waits for the body to learn the request's id.
/// A body that ends in trailers still gets that refusal with its id; one reset midway gets
/// nothing, and neither reaches the runner.
#[tokio::test]
async fn a_refusal_held_for_the_body_holds_through_trailers_and_resets() {
    let s = stack();
    let body = br#"{"jsonrpc":"2.0","id":"held-t","method":"tools/list"}"#;
    let ua = unique_agent("held-trailers");
    let r = h2raw::send_to(s, "reader", "POST", "/x", &post_headers(&ua), &[body], Duration::ZERO, End::Trailers).await.unwrap().unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["id"], "held-t", "{r:?}");
    assert_eq!(r.json()["error"]["code"], -32600, "{r:?}");
    let (line, record) = access_log(s, &ua);
    assert!(line["upstream_host"].is_null(), "forwarded: {line}");
    assert_eq!(record["outcome"], "invalid", "{line}");

    let ua = unique_agent("held-reset");
    let half: &[u8] = &body[..body.len() / 2];
    let none = h2raw::send_to(s, "reader", "POST", "/x", &post_headers(&ua), &[half], Duration::ZERO, End::Reset).await.unwrap();
    assert!(none.is_none());
    let (line, record) = access_log(s, &ua);
    assert!(line["upstream_host"].is_null(), "forwarded: {line}");
    assert_eq!(record["outcome"], "incomplete", "{line}");
}

#[tokio::test]
async fn get_and_delete_carry_no_body() {
    let s = stack();
    for method in ["GET", "DELETE"] {
        let ua = unique_agent("body-on-get");
        let headers = [("accept", "text/event-stream"), ("user-agent", ua.as_str())];
        let r = h2raw::send(s, "reader", method, &headers, INIT.as_bytes(), End::Body).await.unwrap().unwrap();
        assert_eq!(r.status, 400, "{method}: {r:?}");
        assert_eq!(r.json()["error"]["code"], -32600, "{method}: {r:?}");
        let (line, record) = access_log(s, &ua);
        assert!(line["upstream_host"].is_null(), "forwarded: {line}");
        assert_eq!(record["outcome"], "invalid", "{line}");
    }
}

#[tokio::test]
async fn an_oversized_body_gets_a_jsonrpc_413_with_its_id() {
    let s = stack();
    let text = "a".repeat(1024 * 1024 + 4096);
    let body = json!({"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"word_count","arguments":{"text": text}}}).to_string();
    for (name, http) in [("HTTP/2", s.http_client(Some("reader"))), ("HTTP/1.1", s.http1_client(Some("reader")))] {
        let r = post(&http, &s.url(), None, &[], &body).await.unwrap();
        assert_eq!(r.status, 413, "{name}: {}", r.text);
        assert_eq!(r.message["id"], 77, "{name}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32600), "{name}: {}", r.text);
        assert!(r.error_message().contains("larger than the limit"), "{name}: {}", r.text);
    }
    // Refused by its path first: the refusal held for the body answers as soon as the limit is
    // passed, with the id from the body's start.
    let root = s.url().trim_end_matches("/mcp").to_string();
    let r = post(&s.http_client(Some("reader")), &format!("{root}/x"), None, &[], &body).await.unwrap();
    assert_eq!((r.status, r.error_code()), (404, Some(-32600)), "{}", r.text);
    assert_eq!(r.message["id"], 77, "{}", r.text);
}

#[tokio::test]
async fn meta_of_the_wrong_type_is_a_jsonrpc_error() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    for params in [json!({"_meta": "x"}), json!({"_meta": {"progressToken": 1.5}})] {
        let body = json!({"jsonrpc":"2.0","id":"m","method":"tools/list","params":params}).to_string();
        let r = post(&http, &s.url(), Some(&session), &[], &body).await.unwrap();
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.message["id"], "m", "{}", r.text);
        assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    }
}

#[tokio::test]
async fn an_upstream_error_that_is_not_jsonrpc_is_restated_as_one() {
    let s = stack();
    // The runner answers a GET without a session with a plain-text 400.
    let r = s.http_client(Some("reader")).get(s.url()).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["jsonrpc"], "2.0", "{m}");
    assert_eq!(m["error"]["code"], -32600, "{m}");
    assert!(m["error"]["message"].as_str().unwrap().starts_with("request failed with HTTP 400"), "{m}");
}

#[tokio::test]
async fn every_request_leaves_its_decision_in_the_access_log() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let send = |body: String, ua: String| {
        let http = http.clone();
        let (url, session) = (s.url(), session.clone());
        async move { post(&http, &url, Some(&session), &[("user-agent", ua.as_str())], &body).await.unwrap() }
    };

    let ua = unique_agent("log-allow");
    let r = send(tools_call(1, "word_count", json!({"text": "a b"})), ua.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (line, rec) = access_log(s, &ua);
    assert_eq!(rec["outcome"], "allowed", "{line}");
    assert_eq!(rec["workload"], "spiffe://portcullis.local/ns/agents/sa/reader", "{line}");
    assert_eq!(rec["method"], "tools/call");
    assert_eq!(rec["tool"], "word_count");
    assert!(rec["plan_hash"].as_str().unwrap().starts_with("sha256:"), "{line}");
    assert!(rec["policy_version"].as_str().unwrap().starts_with("sha256:"), "{line}");
    assert!(rec["rule_ids"].is_array(), "{line}");
    assert_eq!(rec["decision_id"].as_str(), r.headers.get("x-portcullis-decision-id").and_then(|v| v.to_str().ok()), "{line}");

    let ua = unique_agent("log-deny");
    let r = send(tools_call(2, "apply_config", json!({"name": "x", "content": "y"})), ua.clone()).await;
    assert_eq!((r.status, r.error_code()), (200, Some(-32001)), "{}", r.text);
    let (line, rec) = access_log(s, &ua);
    assert_eq!(rec["outcome"], "denied", "{line}");
    assert_eq!(rec["status"], 200, "{line}");
    assert_eq!(rec["tool"], "apply_config", "{line}");
    assert!(!rec["rule_ids"].as_array().unwrap().is_empty(), "{line}");
    assert_eq!(rec["decision_id"].as_str(), r.headers.get("x-portcullis-decision-id").and_then(|v| v.to_str().ok()), "{line}");

    let ua = unique_agent("log-invalid");
    let r = send(r#"{"jsonrpc":"2.0","id":3,"id":4,"method":"ping"}"#.to_owned(), ua.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let (line, rec) = access_log(s, &ua);
    assert_eq!(rec["outcome"], "invalid", "{line}");
    assert_eq!(rec["code"], -32700, "{line}");
    assert!(rec["decision_id"].as_str().is_some_and(|d| d.len() == 32), "{line}");

    // No secret in any record: neither the ticket nor the user's token.
    let bearer = s.user_token("alice", &["sre"], "portcullis", 600);
    let ua = unique_agent("log-user");
    let op = s.http_client_with_authorization("operator", &format!("Bearer {bearer}"));
    let op_session = open_session(&op, &s.url()).await.unwrap();
    let r = post(&op, &s.url(), Some(&op_session), &[("user-agent", ua.as_str())], &tools_call(5, "word_count", json!({"text": "x"}))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let (line, rec) = access_log(s, &ua);
    assert_eq!(rec["user"], "alice", "{line}");
    let text = line.to_string();
    assert!(!text.contains(&bearer) && !text.contains("eyJ"), "a token in the access log: {line}");
}

/// Envoy refuses some requests before the filter sees them (its codecs and limits). They are
/// JSON-RPC errors too, with id null (nothing of the body was read), and nothing is forwarded.
#[tokio::test]
async fn envoys_own_refusals_are_jsonrpc_errors() {
    let s = stack();
    let http = s.http1_client(Some("reader"));
    let body = tools_call(61, "word_count", json!({"text": "a"}));
    let big = "a".repeat(70 * 1024);
    let (http10, http11) = (reqwest::Version::HTTP_10, reqwest::Version::HTTP_11);
    let cases = [
        ("HTTP/1.0", http10, ("x-ok", "1"), 426, "low_version"),
        ("underscore header", http11, ("x_portcullis", "1"), 400, "http1.unexpected_underscore"),
        ("headers over 60 KiB", http11, ("x-big", big.as_str()), 431, "http1.headers_too_large"),
    ];
    for (what, version, (name, value), status, details) in cases {
        let req = http.post(s.url()).version(version).header("content-type", "application/json").header("accept", "application/json, text/event-stream").header(name, value);
        let r = req.body(body.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(r.headers()["content-type"], "application/json", "{what}");
        let m: Value = r.json().await.unwrap();
        assert_eq!((&m["jsonrpc"], &m["id"], &m["error"]["code"]), (&json!("2.0"), &Value::Null, &json!(-32600)), "{what}: {m}");
        let text = m["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(&format!("refused the request before it was decided (HTTP {status}: {details})")), "{what}: {m}");
        // Envoy refused it in its codec, before the request's headers were whole: its access-log
        // line names no user agent, only why (no other test makes Envoy refuse this way).
        let line = access_log_where(s, |l| l["response_code_details"] == details);
        assert!(line["upstream_host"].is_null(), "{what} forwarded: {line}");
    }
}

#[tokio::test]
async fn only_the_mcp_endpoint_is_decided_and_forwarded() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let base = s.url();
    let root = base.trim_end_matches("/mcp");
    for path in ["/x", "/MCP", "/mcp;x", "/mcp?x=1", "/mcp/"] {
        let ua = unique_agent("path");
        let url = format!("{root}{path}");
        let r = post(&http, &url, None, &[("user-agent", ua.as_str())], &tools_call(21, "word_count", json!({"text": "a"}))).await.unwrap();
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32600), "{path}: {}", r.text);
        assert_eq!(r.message["id"], 21, "{path}: refused by its path, answered with its id: {}", r.text);
        let (line, record) = access_log(s, &ua);
        assert!(line["upstream_host"].is_null(), "{path} forwarded: {line}");
        assert_eq!(record["outcome"], "invalid", "{path}: {line}");
    }
}

#[tokio::test]
async fn a_nul_in_an_argument_is_refused_before_policy() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let r = post(&http, &s.url(), Some(&session), &[], &tools_call(22, "word_count", json!({"text": "a\u{0}b"}))).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.message["id"], 22, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert_eq!(r.message["error"]["data"]["path"], "/text", "{}", r.text);
}

#[tokio::test]
async fn the_id_is_recovered_from_a_body_that_does_not_parse() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let mut body = br#"{"jsonrpc":"2.0","id":31,"method":"tools/call","params":{"name":"word_count","arguments":{"text":""#.to_vec();
    body.extend_from_slice(b"\xff\"}}}");
    let r = http
        .post(s.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["id"], 31, "{m}");
    assert_eq!(m["error"]["code"], -32700, "{m}");
}

/// The head of a raw HTTP/1.1 POST to the endpoint, its body framed by `framing` (header lines).
fn http1_post(user_agent: &str, framing: &str) -> String {
    format!("POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nuser-agent: {user_agent}\r\n{framing}\r\n\r\n")
}

/// Over HTTP/1.1 a chunked request may end in trailers: Envoy drops them before the filter, so
/// the request ends with its body and is decided like any other; the trailer (here a forged
/// ticket) never reaches the runner.
#[tokio::test]
async fn an_http1_request_ending_in_trailers_is_decided() {
    let s = stack();
    let ua = unique_agent("h1-trailers");
    let raw = format!("{}{:x}\r\n{INIT}\r\n0\r\nx-portcullis-ticket: forged\r\n\r\n", http1_post(&ua, "transfer-encoding: chunked\r\nconnection: close"), INIT.len());
    let answer = h2raw::send_http1(s, "intruder", raw.as_bytes(), false).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("-32001"), "{answer}");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    assert_eq!(portcullis_e2e::mcp::message_of(body)["id"], "init-t", "{answer}");
    let (line, record) = access_log(s, &ua);
    assert_eq!(record["outcome"], "denied", "{line}");
    assert!(line["upstream_host"].is_null(), "forwarded: {line}");
}

/// Over HTTP/1.1 a request cut off midway (the client closes) reaches nothing.
#[tokio::test]
async fn an_http1_request_cut_off_midway_reaches_nothing_and_is_logged() {
    let s = stack();
    let ua = unique_agent("h1-cut");
    let raw = format!("{}{}", http1_post(&ua, &format!("content-length: {}", INIT.len())), &INIT[..INIT.len() / 2]);
    let _ = h2raw::send_http1(s, "reader", raw.as_bytes(), true).await.unwrap();
    let (line, record) = access_log(s, &ua);
    assert!(line["upstream_host"].is_null(), "forwarded: {line}");
    assert_eq!(record["outcome"], "incomplete", "{line}");
}
