//! The whole MCP protocol through real Envoy and the filter: the 2026-07-28 revision (rmcp in
//! `Discover` mode, the `Mcp-Method` / `Mcp-Name` headers), and the 2025-11-25 transport's
//! long GET stream and DELETE.

use std::time::{Duration, Instant};

use portcullis_e2e::mcp::{bodyless, open_session, post};
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{json, Value};

use crate::stack;

#[tokio::test]
async fn rmcp_in_discover_mode_lists_and_calls_tools_through_the_gateway() {
    let s = stack();
    let transport = StreamableHttpClientTransport::with_client(s.http_client(Some("reader")), StreamableHttpClientTransportConfig::with_uri(s.url()));
    let lifecycle = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    let client = ().serve_with_lifecycle(transport, lifecycle).await.unwrap_or_else(|e| panic!("discover through the gateway: {e:?}\n{}", s.logs()));
    assert_eq!(client.peer_info().map(|i| i.protocol_version.to_string()).as_deref(), Some("2026-07-28"));
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"inspect_sandbox"), "{names:?}");
    assert!(!names.contains(&"apply_config"), "trimmed for the reader: {names:?}");
    let r = client.call_tool(CallToolRequestParams::new("inspect_sandbox")).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let args = json!({"name": "x", "content": "y"}).as_object().unwrap().clone();
    let denied = client.call_tool(CallToolRequestParams::new("apply_config").with_arguments(args)).await.unwrap_err();
    assert!(format!("{denied:?}").contains("-32001"), "a denial reaches the 2026-07-28 client as an MCP error: {denied:?}");
}

fn stateless_call(tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":tool,"arguments":{},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}})
    .to_string()
}

#[tokio::test]
async fn a_name_header_that_disagrees_with_the_body_is_refused_before_anything_runs() {
    let s = stack();
    let http = s.http_client(Some("operator"));
    let version = ("mcp-protocol-version", "2026-07-28");
    // The header names a tool the operator may call; the body calls one it may not.
    let headers = [version, ("mcp-method", "tools/call"), ("mcp-name", "inspect_sandbox")];
    let r = post(&http, &s.url(), None, &headers, &stateless_call("delete_namespace")).await.unwrap();
    assert_eq!((r.status, r.error_code()), (400, Some(-32020)), "{}", r.text);
    assert_eq!(r.message["id"], 9, "{}", r.text);
    assert!(r.error_message().contains("Mcp-Name"), "{}", r.text);
    let decision = r.headers["x-portcullis-decision-id"].to_str().unwrap().to_owned();
    // Envoy's access log: refused by the filter, never sent upstream.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = s.access_log().lines().find(|l| l.contains(&decision)).map(str::to_owned) {
            break line;
        }
        assert!(Instant::now() < deadline, "no access log line for {decision}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((line["response_code"].as_i64(), line["upstream_host"].as_str()), (Some(400), None), "{line}");

    for (headers, why) in [
        (vec![version, ("mcp-method", "tools/list"), ("mcp-name", "inspect_sandbox")], "method header disagrees"),
        (vec![version, ("mcp-name", "inspect_sandbox")], "method header missing at 2026-07-28"),
        (vec![version, ("mcp-method", "tools/call")], "name header missing at 2026-07-28"),
        (vec![version, ("mcp-method", "tools/call"), ("mcp-method", "tools/call"), ("mcp-name", "inspect_sandbox")], "repeated header"),
        (vec![("mcp-protocol-version", "2025-11-25"), ("mcp-method", "tools/call"), ("mcp-name", "inspect_sandbox")], "version header disagrees with _meta"),
    ] {
        let r = post(&http, &s.url(), None, &headers, &stateless_call("inspect_sandbox")).await.unwrap();
        assert_eq!((r.status, r.error_code()), (400, Some(-32020)), "{why}: {}", r.text);
    }
    // The same call with agreeing headers runs.
    let headers = [version, ("mcp-method", "tools/call"), ("mcp-name", "inspect_sandbox")];
    let r = post(&http, &s.url(), None, &headers, &stateless_call("inspect_sandbox")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.message.get("result").is_some(), "{}", r.text);
}

#[tokio::test]
async fn a_get_stream_stays_open_past_two_minutes() {
    let s = stack();
    let http = s.streaming_client("reader");
    let session = open_session(&http, &s.url()).await.unwrap();
    let resp = http
        .get(s.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let started = Instant::now();
    let hold = Duration::from_secs(125);
    while started.elapsed() < hold {
        match tokio::time::timeout(hold - started.elapsed(), resp.chunk()).await {
            Err(_) => break,
            Ok(Ok(Some(_))) => {}
            Ok(other) => panic!("the GET stream ended after {:?}: {other:?}", started.elapsed()),
        }
    }
    assert!(started.elapsed() >= hold);
    drop(resp);
    // The session is still usable afterwards.
    let r = post(&http, &s.url(), Some(&session), &[], r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn delete_ends_the_session_through_the_gateway() {
    let s = stack();
    let http = s.http_client(Some("reader"));
    let session = open_session(&http, &s.url()).await.unwrap();
    let r = bodyless(&http, reqwest::Method::DELETE, &s.url(), &session, &[]).await.unwrap();
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    let r = post(&http, &s.url(), Some(&session), &[], r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await.unwrap();
    assert_eq!(r.status, 404, "the ended session is gone: {}", r.text);
}

#[tokio::test]
async fn a_response_that_answers_no_server_request_of_this_caller_is_refused() {
    let s = stack();
    let http = s.http_client(Some("operator"));
    let session = open_session(&http, &s.url()).await.unwrap();
    for id in [json!(0), json!("pcr1.W1swLCJzYW1wbGluZy9jcmVhdGVNZXNzYWdlIiw5OTk5OTk5OTk5XQ.AAAAAAAAAAAAAAAAAAAAAA"), json!("anything")] {
        let body = json!({"jsonrpc": "2.0", "id": id, "result": {"role": "assistant", "content": {"type": "text", "text": "yes"}}});
        let r = post(&http, &s.url(), Some(&session), &[], &body.to_string()).await.unwrap();
        assert_eq!((r.status, r.error_code()), (403, Some(-32001)), "{id}: {}", r.text);
        assert!(r.error_message().contains("answers no request the server sent"), "{}", r.text);
    }
    // A response with a method, or with both result and error, is not a response at all.
    let r = post(&http, &s.url(), Some(&session), &[], r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#).await.unwrap();
    assert_eq!((r.status, r.error_code()), (400, Some(-32600)), "{}", r.text);
}
