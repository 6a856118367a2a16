//! A policy denial reaches the code that called an official MCP SDK as that SDK's MCP error
//! (JSON-RPC -32001 with the policy's reasons and rule ids in `data`), not as a transport
//! failure, and the session goes on. rmcp here; the TypeScript SDK in ts_sdk.rs, the Python
//! SDK in python_sdk.rs.

use portcullis_e2e::mcp::rmcp_client;
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceError;
use serde_json::{json, Value};

use crate::stack;

/// The gateway's code for a policy denial. Some SDKs use the same number for their own
/// request timeout (the TypeScript SDK does), so the `data` checks below are what prove the
/// error came from the policy.
pub(crate) const POLICY_DENIED: i64 = -32001;

/// An MCP error that an SDK raised for a denied `tools/call` of `tool`: its message names the
/// call and the first reason, and its data is the gateway's decision.
pub(crate) fn assert_policy_denial(code: i64, message: &str, data: &Value, tool: &str) {
    let context = format!("code {code}, message {message:?}, data {data}");
    assert_eq!(code, POLICY_DENIED, "{context}");
    assert!(message.contains(&format!("denied tools/call {tool}")), "{context}");
    let reasons = data["reasons"].as_array().filter(|r| !r.is_empty()).unwrap_or_else(|| panic!("no reasons: {context}"));
    let first = reasons[0].as_str().unwrap_or_else(|| panic!("a reason is not a string: {context}"));
    assert!(message.contains(first), "{context}");
    assert!(data["rule_ids"].as_array().is_some_and(|r| !r.is_empty() && r.iter().all(Value::is_string)), "{context}");
    assert!(data["plan_hash"].as_str().is_some_and(|h| h.starts_with("sha256:")), "{context}");
    assert!(data["decision_id"].as_str().is_some_and(|d| !d.is_empty()), "{context}");
    assert!(data["policy_version"].as_str().is_some_and(|v| !v.is_empty()), "{context}");
}

fn arguments(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn rmcp_denied_call_is_an_mcp_error_with_the_policy_data() {
    let s = stack();
    let client = rmcp_client(s.http_client(Some("reader")), &s.url()).await.unwrap();
    let denied = CallToolRequestParams::new("apply_config").with_arguments(arguments(json!({"name": "rmcp-denial", "content": "x: 1"})));
    let err = client.call_tool(denied).await.expect_err("a reader may not call apply_config");
    let ServiceError::McpError(e) = &err else {
        panic!("want ServiceError::McpError (the gateway's JSON-RPC error), got {err:?}");
    };
    assert_policy_denial(i64::from(e.code.0), &e.message, e.data.as_ref().unwrap_or(&Value::Null), "apply_config");

    // The denial ended that request only: the same session still runs an allowed call.
    let allowed = CallToolRequestParams::new("word_count").with_arguments(arguments(json!({"text": "rmcp after a denial"})));
    let result = client.call_tool(allowed).await.expect("an allowed call after the denial");
    assert_eq!(result.is_error, Some(false), "{result:?}");
    assert_eq!(result.content[0].as_text().map(|t| t.text.trim()), Some("4"), "{result:?}");
    client.cancel().await.ok();
}
