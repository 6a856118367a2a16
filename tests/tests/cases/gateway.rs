//! Calls through Envoy and the filter.

use portcullis_e2e::mcp::{open_session, post, rmcp_client, tools_call};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};

use crate::stack;

#[tokio::test]
async fn agent_certificate_can_initialize_and_list_tools() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let r = post(&http, &s.url(), Some(&session), &[], r#"{"jsonrpc":"2.0","id":"list-1","method":"tools/list"}"#).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["id"], "list-1");
    let names: Vec<&str> = r.message["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    // Trimmed to what the reader may call.
    assert!(names.contains(&"inspect_sandbox") && !names.contains(&"apply_config"), "{names:?}");
    assert!(r.headers.contains_key("x-portcullis-decision-id"));
}

#[tokio::test]
async fn no_client_certificate_no_connection() {
    let s = stack();
    let err = s.http_client(None).post(s.url()).body("{}").send().await.expect_err("must not connect without a certificate");
    assert!(err.is_connect() || err.is_request(), "unexpected error kind: {err:?}");
}

#[tokio::test]
async fn rmcp_allowed_call_runs_in_an_isolated_sandbox() {
    let s = stack();
    let client = rmcp_client(s.http_client(Some("reader")), &s.url()).await.unwrap();
    let tools = client.list_tools(None).await.unwrap();
    assert!(tools.tools.iter().any(|t| t.name == "inspect_sandbox"));
    let result = client.call_tool(CallToolRequestParams::new("inspect_sandbox")).await.unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let text = result.content[0].as_text().unwrap().text.clone();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_default().trim().to_owned();
    // Network: loopback only.
    assert_eq!(field("interfaces"), "lo", "{text}");
    // Processes: only the sandbox's own, in a fresh pid namespace (the job's shell is 1).
    let pids: Vec<u32> = field("processes").split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(pids.contains(&1), "{text}");
    assert!(pids.len() < 10, "host processes visible: {text}");
    assert!(!pids.contains(&std::process::id()), "the test's own pid is visible: {text}");
    assert_ne!(field("hostname"), std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim());
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn rmcp_apply_tool_changes_stay_inside_its_sandbox() {
    let s = stack();
    // Apply tools act for a verified user: the operator presents one's token.
    let bearer = format!("Bearer {}", s.user_token("alice", &["sre"], "portcullis", 600));
    let client = rmcp_client(s.http_client_with_authorization("operator", &bearer), &s.url()).await.unwrap();
    let args = json!({"name": "app", "content": "replicas: 3"});
    let result = client
        .call_tool(CallToolRequestParams::new("apply_config").with_arguments(args.as_object().unwrap().clone()))
        .await
        .unwrap();
    let text = &result.content[0].as_text().unwrap().text;
    assert_eq!(result.is_error, Some(false), "{text}");
    assert!(text.contains("wrote /tmp/config/app (11 bytes)"), "{text}");
    assert!(!std::path::Path::new("/tmp/config/app").exists(), "the sandbox wrote to the host's /tmp");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn denied_call_is_a_json_rpc_error_with_request_id_and_policy_reason() {
    let s = stack();
    // With a verified user, so that the workload's role is the only reason.
    let bearer = format!("Bearer {}", s.user_token("alice", &["sre"], "portcullis", 600));
    let http = s.http_client_with_authorization("reader", &bearer);
    let session = open_session(&http, &s.url()).await.unwrap();
    let r = post(&http, &s.url(), Some(&session), &[], &tools_call(4242, "apply_config", json!({"name":"x","content":"y"}))).await.unwrap();
    // HTTP 200 by default (denial_status), so that every SDK hands the error to its caller.
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["id"], 4242);
    assert_eq!(r.error_code(), Some(-32001));
    assert!(r.error_message().contains("may not call apply tool apply_config"), "{}", r.text);
    assert_eq!(r.message["error"]["data"]["rule_ids"], json!(["tools.not_permitted"]));
    assert!(r.message["error"]["data"]["plan_hash"].as_str().unwrap().starts_with("sha256:"));

    // The official client surfaces the same refusal.
    let client = rmcp_client(s.http_client(Some("reader")), &s.url()).await.unwrap();
    let args = json!({"namespace": "prod"}).as_object().unwrap().clone();
    let err = client.call_tool(CallToolRequestParams::new("delete_namespace").with_arguments(args)).await.expect_err("denied");
    assert!(format!("{err:?}").contains("-32001") && format!("{err}").contains("denied"), "{err:?}");
    client.cancel().await.ok();
}

#[tokio::test]
async fn workload_without_a_role_is_denied_everything() {
    let s = stack();
    let http = s.http_client(Some("intruder"));
    let init = r#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}"#;
    let r = post(&http, &s.url(), None, &[], init).await.unwrap();
    assert_eq!((r.status, r.error_code()), (200, Some(-32001)), "{}", r.text);
    assert_eq!(r.message["id"], "i");
    assert!(r.error_message().contains("holds no role"), "{}", r.text);
}

#[tokio::test]
async fn client_supplied_ticket_header_is_stripped_not_trusted() {
    let s = stack();
    // A ticket that is genuinely valid for this exact call, as if stolen from the gateway.
    let args = json!({"text": "strip me"});
    let stolen = crate::cases::direct::mint(s, "word_count", &args, 0);
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let r = post(&http, &s.url(), Some(&session), &[("x-portcullis-ticket", &stolen.token("any-session"))], &tools_call(7, "word_count", args.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["result"]["content"][0]["text"].as_str().unwrap().trim(), "2");
    // The runner never saw the client's ticket: its jti is still unused, so the runner
    // accepts it now, once.
    let r = crate::cases::direct::direct_call(s, |session| Some(stolen.token(session)), "word_count", &args).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["result"]["isError"], false, "{}", r.text);
    assert!(s.runner_log().contains(&format!("decision={}", stolen.jti)));
}

#[tokio::test]
async fn batch_cannot_smuggle_a_denied_call() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let allowed: Value = serde_json::from_str(&tools_call(1, "word_count", json!({"text":"batch-allowed-marker"}))).unwrap();
    let denied: Value = serde_json::from_str(&tools_call(2, "delete_namespace", json!({"namespace":"prod"}))).unwrap();
    for batch in [json!([allowed, denied]), json!([denied, allowed]), json!([allowed])] {
        let r = post(&http, &s.url(), Some(&session), &[], &batch.to_string()).await.unwrap();
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.error_code(), Some(-32600));
        assert!(r.error_message().contains("batches are not accepted"), "{}", r.text);
    }
    assert!(!s.runner_log().contains("tool=delete_namespace"), "a batched call reached the runner");
}

#[tokio::test]
async fn duplicate_keys_are_rejected() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    // The filter would read one "name", a lenient upstream the other.
    let body = r#"{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"word_count","name":"delete_namespace","arguments":{"text":"x"}}}"#;
    let r = post(&http, &s.url(), Some(&session), &[], body).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32700));
    assert_eq!(r.message["id"], 99);
    assert!(r.error_message().contains("duplicate object key \"name\""), "{}", r.text);
    let nested = r#"{"jsonrpc":"2.0","id":100,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"a","text":"b"}}}"#;
    let r = post(&http, &s.url(), Some(&session), &[], nested).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("duplicate object key \"text\""), "{}", r.text);
}

#[tokio::test]
async fn malformed_requests_get_clear_jsonrpc_errors() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let cases: &[(&str, u16, i64, &str)] = &[
        ("{not json", 400, -32700, "parse error"),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, 400, -32600, "\"jsonrpc\" must be exactly \"2.0\""),
        (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, 400, -32600, "must not be null"),
        (r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"word_count","arguments":[1]}}"#, 400, -32602, "\"arguments\" must be an object"),
        (r#"{"jsonrpc":"2.0","id":6,"method":"tasks/list"}"#, 200, -32001, "method tasks/list is not allowed"),
    ];
    for (body, status, code, msg) in cases {
        let r = post(&http, &s.url(), None, &[], body).await.unwrap();
        assert_eq!((r.status, r.error_code()), (*status, Some(*code)), "{body} -> {}", r.text);
        assert!(r.error_message().contains(msg), "{body} -> {}", r.text);
    }
    let deep = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"word_count","arguments":{{"text":{}1{}}}}}}}"#, "[".repeat(100), "]".repeat(100));
    let r = post(&http, &s.url(), None, &[], &deep).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("nesting deeper than the limit"), "{}", r.text);
    // Refused by its headers alone, yet answered with its id once the body has come; with no
    // body at all, the id is null.
    let r = http.post(s.url()).header("content-type", "text/plain").body(r#"{"jsonrpc":"2.0","id":"plain-8","method":"ping"}"#).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let m: Value = r.json().await.unwrap();
    assert_eq!((&m["id"], &m["error"]["code"]), (&json!("plain-8"), &json!(-32600)), "{m}");
    assert!(m["error"]["message"].as_str().unwrap().contains("application/json"), "{m}");
    let r = http.post(s.url()).header("content-type", "text/plain").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let m: Value = r.json().await.unwrap();
    assert_eq!((&m["id"], &m["error"]["code"]), (&Value::Null, &json!(-32600)), "{m}");
}

#[tokio::test]
async fn filter_metrics_are_in_envoy_stats() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    post(&http, &s.url(), None, &[], r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await.unwrap();
    post(&http, &s.url(), None, &[], &tools_call(2, "delete_namespace", json!({"namespace":"x"}))).await.unwrap();
    // The same denied call twice more: three calls on Envoy's two workers, so one worker sees
    // it at least twice and answers from its decision cache.
    for id in [3, 4] {
        post(&http, &s.url(), None, &[], &tools_call(id, "delete_namespace", json!({"namespace":"x"}))).await.unwrap();
    }
    post(&http, &s.url(), None, &[], "{").await.unwrap();
    let stats = s.admin_get("/stats?filter=portcullis");
    for name in [
        "portcullis.requests.allowed",
        "portcullis.requests.approval_required",
        "portcullis.requests.denied",
        "portcullis.requests.rate_limited",
        "portcullis.requests.invalid",
        "portcullis.decision_us",
        "portcullis.decision_cache.hits",
        "portcullis.decision_cache.misses",
    ] {
        assert!(stats.contains(name), "{name} missing from:\n{stats}");
    }
    let hits = stats
        .lines()
        .find_map(|l| l.split_once("portcullis.decision_cache.hits: ").map(|(_, n)| n.trim().parse::<u64>().unwrap()))
        .expect("hits counter");
    assert!(hits >= 1, "a repeated call must be answered from the decision cache:\n{stats}");
    let prom = s.admin_get("/stats/prometheus?filter=portcullis");
    assert!(prom.contains("portcullis_decision_us_bucket"), "{prom}");
}

/// Prints (does not assert) the median latency of one allowed tools/call through the whole
/// stack: TLS client → Envoy → filter → runner → sandbox → back. `make bench` measures more.
#[tokio::test]
async fn report_median_latency_of_an_allowed_call() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let body = tools_call(1, "word_count", json!({"text": "one two three"}));
    let mut samples = Vec::new();
    for _ in 0..60 {
        let t = std::time::Instant::now();
        let r = post(&http, &s.url(), Some(&session), &[], &body).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(r.message["result"]["content"][0]["text"].as_str().unwrap().trim(), "3", "{}", r.text);
    }
    samples.drain(..10); // warm-up: connection set-up and first sandboxes
    samples.sort();
    eprintln!(
        "allowed tools/call through the whole stack: median {:?}, min {:?}, max {:?} over {} calls",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
}
