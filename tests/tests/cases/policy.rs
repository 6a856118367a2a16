//! The default policy bundle through real Envoy: risk tiers, a verified user for apply tools,
//! argument rules, and change windows decided on an injected time (a stack started with a
//! copy of policies/ whose windows are placed around and away from the current UTC time).

use portcullis_e2e::mcp::{open_session, post, tools_call, Reply};
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use crate::stack;

/// One tools/call through Envoy as `agent`, acting for the user of `token` when given (on a
/// session opened for that user: a session belongs to its workload and user).
async fn call_as(s: &Stack, agent: &str, token: Option<&str>, tool: &str, args: Value) -> Reply {
    let http = match token {
        Some(t) => s.http_client_with_authorization(agent, &format!("Bearer {t}")),
        None => s.http_client(Some(agent)),
    };
    let session = open_session(&http, &s.url()).await.unwrap();
    post(&http, &s.url(), Some(&session), &[], &tools_call(1, tool, args)).await.unwrap()
}

fn user_token(s: &Stack, sub: &str, group: &str) -> String {
    s.user(sub, group)
}

fn allowed_output(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.message["result"]["isError"], false, "{}", r.text);
    r.message["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

fn assert_denied(r: &Reply, rule_ids: &[&str], reason: &str) {
    assert_eq!((r.status, r.error_code()), (200, Some(-32001)), "{}", r.text);
    assert_eq!(r.message["error"]["data"]["rule_ids"], json!(rule_ids), "{}", r.text);
    assert!(r.error_message().contains(reason), "expected {reason:?} in {}", r.text);
}

#[tokio::test]
async fn low_risk_query_is_allowed_to_a_reader() {
    let s = stack();
    let r = call_as(s, "reader", None, "list_pods", json!({"namespace": "team-a"})).await;
    assert!(allowed_output(&r).contains("pod: web-0 Running"), "{}", r.text);
}

#[tokio::test]
async fn medium_risk_is_for_operators_only() {
    let s = stack();
    let args = json!({"namespace": "team-a", "pod": "web-0", "lines": 2});
    let r = call_as(s, "reader", None, "tail_logs", args.clone()).await;
    assert_denied(&r, &["tools.not_permitted"], "may not call query tool tail_logs (risk medium)");
    let r = call_as(s, "operator", None, "tail_logs", args).await;
    assert_eq!(allowed_output(&r).lines().count(), 2, "{}", r.text);
}

#[tokio::test]
async fn apply_tools_need_a_verified_user() {
    let s = stack();
    let r = call_as(s, "operator", None, "apply_config", json!({"name": "app", "content": "x"})).await;
    assert_denied(&r, &["user.required"], "tool apply_config requires a verified user: ");
}

#[tokio::test]
async fn argument_rules_wildcards_and_production_namespaces() {
    let s = stack();
    let r = call_as(s, "reader", None, "list_pods", json!({"namespace": "team-*"})).await;
    assert_denied(&r, &["arguments.wildcard"], "names resources by wildcard (team-*)");
    let r = call_as(s, "reader", None, "list_pods", json!({"namespace": "prod-payments"})).await;
    assert_denied(&r, &["arguments.production"], "targets production (namespace prod-payments): only operators");
    let r = call_as(s, "operator", None, "list_pods", json!({"namespace": "prod-payments"})).await;
    assert!(allowed_output(&r).contains("namespace: prod-payments"), "{}", r.text);
}

/// Needs `portcullis token` and the filter's Authorization handling (identity work).
#[tokio::test]
async fn high_risk_is_allowed_with_approval_required_in_the_ticket() {
    let s = stack();
    let alice = user_token(s, "alice", "sre");
    // A call no other test makes: an earlier identical call would already have its approval.
    let r = call_as(s, "operator", Some(&alice), "restart_deployment", json!({"namespace": "team-a", "deployment": "web-policy-case"})).await;
    // The gateway allowed it with require_approval in the ticket; the runner records a pending
    // approval for it and does not run it (the flow itself: cases/control.rs).
    assert_eq!(r.error_code(), Some(-32004), "{}", r.text);
    let decision = r.headers["x-portcullis-decision-id"].to_str().unwrap();
    assert_eq!(r.message["error"]["data"]["approval"]["decision_id"], decision, "{}", r.text);
    assert!(r.error_message().contains("needs human approval"), "{}", r.text);
    let log = s.runner_log();
    assert!(log.lines().any(|l| l.contains(&format!("decision={decision}")) && l.contains("approval requested")), "{log}");
    assert!(!log.lines().any(|l| l.contains(&format!("decision={decision}")) && l.contains("running")), "{log}");
}

/// Needs `portcullis token` and the filter's Authorization handling (identity work).
#[tokio::test]
async fn irreversible_is_denied_without_break_glass_and_users_are_checked_too() {
    let s = stack();
    let alice = user_token(s, "alice", "sre");
    let r = call_as(s, "operator", Some(&alice), "delete_namespace", json!({"namespace": "team-a"})).await;
    assert_denied(&r, &["risk.irreversible"], "tool delete_namespace is irreversible and no break-glass rule applies");
    // With the user, medium apply is allowed...
    let r = call_as(s, "operator", Some(&alice), "apply_config", json!({"name": "app", "content": "x"})).await;
    assert!(allowed_output(&r).contains("wrote /tmp/config/app"), "{}", r.text);
    // ...but not when the operator agent acts for a user whose roles do not permit it.
    let bob = user_token(s, "bob", "dev");
    let r = call_as(s, "operator", Some(&bob), "apply_config", json!({"name": "app", "content": "x"})).await;
    assert_denied(&r, &["user.not_permitted"], "user bob (roles: reader) may not call apply tool apply_config");
}

/// Minutes since midnight UTC, now.
fn utc_minute_of_day() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    ((secs % 86_400) / 60) as i64
}

fn hhmm(minutes: i64) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Windows (every day) covering [from, to) minutes of the day, split where they cross midnight.
fn windows(id: &str, tool: &str, from: i64, to: i64) -> Vec<Value> {
    let days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let (from, to) = (from.rem_euclid(1440), to.rem_euclid(1440));
    let spans = if from < to { vec![(from, to)] } else { vec![(from, 1440), (0, to)] };
    spans
        .into_iter()
        .filter(|(a, b)| a < b)
        .map(|(a, b)| json!({"id": id, "tools": [tool], "days": days, "start": hhmm(a), "end": hhmm(b)}))
        .collect()
}

/// Needs input.time in the policy input (identity work); nothing here waits for a clock.
#[tokio::test]
async fn change_windows_follow_the_time_the_gateway_injects() {
    let now = utc_minute_of_day();
    let dir = tempfile::Builder::new().prefix("portcullis-policy-windows-").tempdir().unwrap();
    let src = portcullis_e2e::repo_root().join("policies");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rego" || e == "json") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(src.join("data.json")).unwrap()).unwrap();
    // plan_release: open two hours either side of now; tail_logs: only twelve hours away.
    let mut w = windows("around-now", "plan_release", now - 120, now + 120);
    w.extend(windows("far-from-now", "tail_logs", now + 660, now + 780));
    data["portcullis"]["change_windows"] = Value::Array(w);
    std::fs::write(dir.path().join("data.json"), serde_json::to_string_pretty(&data).unwrap()).unwrap();

    let s = Stack::start_with(&["--policies", dir.path().to_str().unwrap()]);
    let plan = json!({"namespace": "team-a", "release": "web", "version": "v1.2.3", "environment": "staging"});
    let r = call_as(&s, "operator", None, "plan_release", plan).await;
    assert!(allowed_output(&r).contains("plan: release web in team-a"), "{}", r.text);
    let r = call_as(&s, "operator", None, "tail_logs", json!({"namespace": "team-a", "pod": "web-0"})).await;
    assert_denied(&r, &["window.closed"], "tool tail_logs may only be called inside its change window (far-from-now:");
}
