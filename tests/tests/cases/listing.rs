//! tools/list trimming: what a caller sees is exactly what it may call, decided by the same
//! policy, over event-stream answers (the shared stack) and JSON answers (a stack whose runner
//! answers `application/json`).

use std::sync::OnceLock;

use portcullis_e2e::mcp::{open_session, post, tools_call, Reply};
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use crate::stack;

/// A stack whose runner answers with JSON bodies instead of event streams.
pub(crate) fn json_stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::start_with(&["--json-response"]))
}

/// Arguments that pass every example tool's schema, so that whether a call goes through is
/// decided by policy alone. A tool missing here fails the test: add it.
fn valid_arguments(tool: &str) -> Value {
    match tool {
        "inspect_sandbox" => json!({}),
        "word_count" => json!({"text": "one two three"}),
        "apply_config" => json!({"name": "listing-test", "content": "x: 1"}),
        "delete_namespace" => json!({"namespace": "scratch-listing"}),
        "list_pods" => json!({"namespace": "team-a"}),
        "tail_logs" => json!({"namespace": "team-a", "pod": "web-1", "lines": 5}),
        "plan_release" | "deploy_release" => json!({"namespace": "team-a", "release": "web", "version": "v1.2.3", "environment": "staging"}),
        "restart_deployment" => json!({"namespace": "team-a", "deployment": "web"}),
        "apply_release" => json!({"plan": format!("sha256:{}", "0".repeat(64)), "namespace": "team-a", "release": "web", "environment": "staging"}),
        "approvals_list" => json!({}),
        "approvals_show" => json!({"id": format!("apr_{}", "0".repeat(32))}),
        "approvals_decide" => json!({"id": format!("apr_{}", "0".repeat(32)), "decision": "deny"}),
        "watch_rollout" => json!({"namespace": "team-a", "deployment": "web", "replicas": 1}),
        other => panic!("listing test: no valid arguments known for catalog tool {other}; add them to valid_arguments"),
    }
}

/// Every tool in the catalog, as the runner (reached directly with the gateway's certificate
/// and credentials as the gateway signs them) lists it untrimmed.
async fn catalog_tools(s: &Stack) -> Vec<String> {
    use crate::cases::direct::{caller, open_direct_session, OPERATOR};
    let http = s.http_client(Some("gateway"));
    let session = open_direct_session(s, &http, OPERATOR).await;
    let assertion = caller(s, OPERATOR, session.as_deref(), "tools/list");
    let headers = [("x-portcullis-caller", assertion.as_str())];
    let r = post(&http, &s.runner_url(), session.as_deref(), &headers, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).await.unwrap();
    names(&r)
}

fn names(r: &Reply) -> Vec<String> {
    let tools = r.message.pointer("/result/tools").and_then(Value::as_array).unwrap_or_else(|| panic!("no tool list: {} {}", r.status, r.text));
    tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

/// Lists tools as `who` (an agent, optionally acting for a user), then calls every catalog
/// tool: listed ⇔ not denied.
async fn listing_matches_calls(s: &Stack, who: (&str, Option<(&str, &str)>), expect_media: &str) -> Vec<String> {
    let all = catalog_tools(s).await;
    assert!(all.len() >= 4, "catalog too small to mean anything: {all:?}");
    let (agent, user) = who;
    let bearer = user.map(|(sub, groups)| format!("Bearer {}", s.user(sub, groups)));
    let who = format!("{agent} for {user:?}");
    // The user's token on every request, initialize included: a session belongs to its user.
    let http = match &bearer {
        Some(bearer) => s.http_client_with_authorization(agent, bearer),
        None => s.http_client(Some(agent)),
    };
    let headers: &[(&str, &str)] = &[];
    let session = open_session(&http, &s.url()).await.ok();
    let list = post(&http, &s.url(), session.as_deref(), headers, r#"{"jsonrpc":"2.0","id":"list","method":"tools/list"}"#).await.unwrap();
    let content_type = list.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if list.error_code() == Some(-32001) {
        // No role at all: nothing listed, and (below) nothing callable.
        assert_eq!(list.message["id"], "list", "{}", list.text);
    } else {
        assert_eq!(list.status, 200, "{who}: {}", list.text);
        assert!(content_type.starts_with(expect_media), "{who}: answer was {content_type}, expected {expect_media}: {}", list.text);
        assert_eq!(list.message["id"], "list");
    }
    let listed = if list.error_code().is_none() { names(&list) } else { Vec::new() };
    for (i, tool) in all.iter().enumerate() {
        let r = post(&http, &s.url(), session.as_deref(), headers, &tools_call(100 + i as i64, tool, valid_arguments(tool))).await.unwrap();
        let denied = r.error_code() == Some(-32001);
        assert!(r.error_code() != Some(-32602), "{who} {tool}: sample arguments are invalid: {}", r.text);
        if listed.contains(tool) {
            assert!(!denied, "{who}: {tool} is listed but the call was denied: {}", r.text);
        } else {
            assert!(denied, "{who}: {tool} is not listed but the call was not denied: {} {}", r.status, r.text);
        }
    }
    listed
}

/// Three callers with three different views: a read-only agent, the operator agent on its own
/// (apply tools need a user), and the operator agent acting for an SRE.
async fn three_identities(s: &Stack, media: &str) {
    let reader = listing_matches_calls(s, ("reader", None), media).await;
    let operator = listing_matches_calls(s, ("operator", None), media).await;
    let operator_for_sre = listing_matches_calls(s, ("operator", Some(("alice", "sre"))), media).await;
    assert!(!reader.is_empty() && reader.len() < operator.len(), "reader {reader:?} operator {operator:?}");
    assert!(operator.len() < operator_for_sre.len(), "operator {operator:?} operator for alice {operator_for_sre:?}");
    assert!(!operator_for_sre.contains(&"delete_namespace".to_owned()), "irreversible without break-glass: {operator_for_sre:?}");
}

#[tokio::test]
async fn event_stream_tool_lists_match_call_time_policy_for_three_identities() {
    three_identities(stack(), "text/event-stream").await;
}

#[tokio::test]
async fn json_tool_lists_match_call_time_policy_for_three_identities() {
    three_identities(json_stack(), "application/json").await;
}
