//! The control plane through real Envoy and the official rmcp client: plan / apply, human
//! approval bound to the exact call, and durable state across a SIGKILL of the runner.

use std::time::Duration;

use portcullis_e2e::mcp::rmcp_client;
use portcullis_e2e::Stack;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceError};
use serde_json::{json, Value};

use crate::stack;

type Client = RunningService<RoleClient, ()>;

/// An MCP session through the gateway as `agent`, for `user` (sub, groups) when given.
pub async fn session(s: &Stack, agent: &str, user: Option<(&str, &[&str])>) -> Client {
    let http = match user {
        Some((sub, groups)) => s.http_client_with_authorization(agent, &format!("Bearer {}", s.user_token(sub, groups, "portcullis", 600))),
        None => s.http_client(Some(agent)),
    };
    rmcp_client(http, &s.url()).await.unwrap()
}

pub async fn call(c: &Client, tool: &str, args: Value) -> Result<CallToolResult, (i32, String, Value)> {
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().unwrap().clone());
    c.call_tool(params).await.map_err(|e| match e {
        ServiceError::McpError(e) => (e.code.0, e.message.to_string(), e.data.unwrap_or(Value::Null)),
        // rmcp reports a refusal with an HTTP error status (the gateway's 403) as a transport
        // error carrying the body: the JSON-RPC error is in it.
        other => {
            let text = format!("{other:?}").replace("\\\"", "\"");
            let body = text.find("{\"error\"").map(|i| &text[i..]).and_then(|t| serde_json::Deserializer::from_str(t).into_iter::<Value>().next()?.ok());
            let error = body.and_then(|b| b.get("error").cloned()).unwrap_or_else(|| panic!("{tool}: transport error {other:?}"));
            (error["code"].as_i64().unwrap_or(0) as i32, error["message"].as_str().unwrap_or_default().to_owned(), error["data"].clone())
        }
    })
}

pub fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect()
}

/// The error of a call that must fail, with its JSON-RPC code checked.
pub async fn refused(c: &Client, tool: &str, args: Value, code: i32) -> (String, Value) {
    match call(c, tool, args).await {
        Err((got, message, data)) => {
            assert_eq!(got, code, "{tool}: expected error {code}, got {got}: {message}");
            (message, data)
        }
        Ok(r) => panic!("{tool}: expected error {code}, got a result: {}", text(&r)),
    }
}

const ALICE: (&str, &[&str]) = ("alice", &["sre"]);
const ALICE_APPROVER: (&str, &[&str]) = ("alice", &["sre", "approvers"]);
const BOB: (&str, &[&str]) = ("bob", &["approvers"]);

fn release_args(environment: &str) -> Value {
    json!({"namespace": "shop", "release": "cart", "version": "v1.2.3", "environment": environment})
}

fn apply_args(plan: &str, environment: &str) -> Value {
    json!({"plan": plan, "namespace": "shop", "release": "cart", "environment": environment})
}

/// Runs plan_release as `agent` for `user`; returns the stored plan's hash.
pub async fn make_plan(s: &Stack, user: (&str, &[&str]), environment: &str) -> String {
    let c = session(s, "operator", Some(user)).await;
    let r = call(&c, "plan_release", release_args(environment)).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let plan = r.structured_content.as_ref().and_then(|v| v.pointer("/plan/hash")).and_then(Value::as_str).unwrap_or_else(|| panic!("no plan hash: {r:?}"));
    assert!(text(&r).contains(plan), "the agent is told the hash: {}", text(&r));
    plan.to_owned()
}

fn approval_id(data: &Value) -> String {
    data.pointer("/approval/id").and_then(Value::as_str).unwrap_or_else(|| panic!("no approval id in {data}")).to_owned()
}

pub async fn decide(s: &Stack, approver: (&str, &[&str]), id: &str, decision: &str) -> Result<CallToolResult, (i32, String, Value)> {
    let console = session(s, "console", Some(approver)).await;
    call(&console, "approvals_decide", json!({"id": id, "decision": decision})).await
}

#[tokio::test]
async fn plan_then_approved_apply_runs_the_stored_plan_exactly_once() {
    let s = stack();
    let plan = make_plan(s, ALICE, "staging").await;
    let agent = session(s, "operator", Some(ALICE)).await;
    let (message, data) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32004).await;
    let id = approval_id(&data);
    assert!(message.contains(&id) && message.contains("approve"), "the agent is told how: {message}");
    assert_eq!(data["approval"]["state"], "pending");
    assert!(data["approval"]["expires_at"].is_string(), "{data}");
    // Still pending when sent again: the same approval, nothing runs.
    let (_, again) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32004).await;
    assert_eq!(approval_id(&again), id);

    let decided = decide(s, BOB, &id, "approve").await.unwrap();
    assert!(text(&decided).contains("approved"), "{}", text(&decided));

    let r = call(&agent, "apply_release", apply_args(&plan, "staging")).await.unwrap();
    let out = text(&r);
    assert_ne!(r.is_error, Some(true), "{out}");
    // What ran is the stored artifact (plan_release's output), cited by its hash.
    assert!(out.contains(&format!("applying {plan}")), "{out}");
    assert!(out.contains("| plan: release cart in shop (staging) -> v1.2.3"), "{out}");
    let (message, data) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32006).await;
    assert_eq!(data["approval"]["state"], "executed", "{message}");

    audit_trail_of_the_approved_apply(s, &id);

    // Provenance checks offline with the public key alone.
    let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
        .args(["plans", "verify", "--dir"])
        .arg(s.state.path().join("runner/plans"))
        .arg("--public-key")
        .arg(s.certs().join("runner-signing-key.pub.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn an_apply_citing_a_plan_it_may_not_use_is_refused() {
    let s = stack();
    let agent = session(s, "operator", Some(ALICE)).await;
    let unknown = format!("sha256:{}", "ab".repeat(32));
    let (message, _) = refused(&agent, "apply_release", apply_args(&unknown, "staging"), -32005).await;
    assert!(message.contains("no stored plan"), "{message}");

    let plan = make_plan(s, ALICE, "staging").await;
    // Another requester: the same operator workload acting for another user.
    let carol = session(s, "operator", Some(("carol", &["sre"]))).await;
    let (message, _) = refused(&carol, "apply_release", apply_args(&plan, "staging"), -32005).await;
    assert!(message.contains("was made by user alice"), "{message}");
    // Another target: planned for staging, applied to production.
    let (message, _) = refused(&agent, "apply_release", apply_args(&plan, "production"), -32005).await;
    assert!(message.contains("made for environment"), "{message}");

    // Altered on disk: the artifact no longer has its hash.
    let plan = make_plan(s, ALICE, "staging").await;
    let file = s.state.path().join("runner/plans").join(plan.trim_start_matches("sha256:"));
    std::fs::write(&file, "plan: something else entirely\n").unwrap();
    let (message, _) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32005).await;
    assert!(message.contains("altered"), "{message}");
}

#[tokio::test]
async fn approvals_are_decided_by_another_verified_person_only() {
    let s = stack();
    let agent = session(s, "operator", Some(ALICE_APPROVER)).await;
    let args = json!({"namespace": "shop", "deployment": "cart-approvals"});
    let (_, data) = refused(&agent, "restart_deployment", args.clone(), -32004).await;
    let id = approval_id(&data);

    // The requester's own user, though an approver, cannot approve.
    let (code, message, _) = decide(s, ALICE_APPROVER, &id, "approve").await.unwrap_err();
    assert_eq!(code, -32007, "{message}");
    assert!(message.contains("own request"), "{message}");
    // A workload with no user cannot approve: the gateway's policy says no.
    let console = session(s, "console", None).await;
    let (message, data) = refused(&console, "approvals_decide", json!({"id": id, "decision": "approve"}), -32001).await;
    assert!(data.to_string().contains("user.required"), "{message} {data}");
    // An agent's workload carrying an approver's token cannot either.
    let agent_as_bob = session(s, "operator", Some(BOB)).await;
    let (message, _) = refused(&agent_as_bob, "approvals_decide", json!({"id": id, "decision": "approve"}), -32001).await;
    assert!(message.contains("may not call approval tool"), "{message}");
    // Nor a person outside the approver group.
    let (code, message, _) = decide(s, ("dave", &["sre"]), &id, "approve").await.unwrap_err();
    assert_eq!(code, -32001, "{message}");
    // Still pending after all that.
    refused(&agent, "restart_deployment", args.clone(), -32004).await;

    decide(s, BOB, &id, "approve").await.unwrap();
    // A changed argument is another call: a new approval, not this one.
    let changed = json!({"namespace": "shop", "deployment": "cart-approvals-2"});
    let (_, data) = refused(&agent, "restart_deployment", changed, -32004).await;
    assert_ne!(approval_id(&data), id);
    let r = call(&agent, "restart_deployment", args.clone()).await.unwrap();
    assert!(text(&r).contains("restarted deployment shop/cart-approvals"), "{}", text(&r));
    refused(&agent, "restart_deployment", args, -32006).await;
}

#[tokio::test]
async fn a_denied_approval_stays_denied() {
    let s = stack();
    let agent = session(s, "operator", Some(ALICE)).await;
    let args = json!({"namespace": "shop", "deployment": "cart-denied"});
    let (_, data) = refused(&agent, "restart_deployment", args.clone(), -32004).await;
    let id = approval_id(&data);
    // An approver at a shell: `portcullis approvals`, through the gateway.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
            .arg("approvals")
            .args(args)
            .args(["--gateway", &s.url(), "--ca"])
            .arg(s.certs().join("ca.pem"))
            .arg("--identity")
            .arg(s.certs().join("agents/console-bundle.pem"))
            .args(["--token", &s.user_token("bob", &["approvers"], "portcullis", 600)])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, listed) = cli(&["list"]);
    assert!(ok && listed.contains(&id) && listed.contains("cart-denied"), "{listed}");
    let (ok, out) = cli(&["deny", &id, "--reason", "not during the sale"]);
    assert!(ok && out.contains("\"denied\""), "{out}");
    for _ in 0..2 {
        let (message, data) = refused(&agent, "restart_deployment", args.clone(), -32006).await;
        assert_eq!(data["approval"]["state"], "denied", "{message}");
        assert!(message.contains("not during the sale"), "{message}");
    }
    // Deciding again changes nothing.
    let (code, message, _) = decide(s, BOB, &id, "approve").await.unwrap_err();
    assert_eq!(code, -32007, "{message}");
}

/// Plans and approvals expire (a stack with three-second limits: room for a loaded machine
/// to decide the approval in time).
#[tokio::test]
async fn expired_plans_and_approvals_are_refused() {
    let s = Stack::start_with(&["--plan-ttl-seconds", "3", "--approval-ttl-seconds", "3"]);
    let plan = make_plan(&s, ALICE, "staging").await;
    let agent = session(&s, "operator", Some(ALICE)).await;
    let args = json!({"namespace": "shop", "deployment": "cart-expiring"});
    let (_, data) = refused(&agent, "restart_deployment", args.clone(), -32004).await;
    decide(&s, BOB, &approval_id(&data), "approve").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (message, _) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32005).await;
    assert!(message.contains("expired"), "{message}");
    let (message, data) = refused(&agent, "restart_deployment", args.clone(), -32006).await;
    assert_eq!(data["approval"]["state"], "expired", "{message}");
    // Sent again, the call asks for a new approval.
    let (_, data) = refused(&agent, "restart_deployment", args, -32004).await;
    assert_eq!(data["approval"]["state"], "pending");
}

/// After SIGKILL and a restart on the same state dir, pending approvals, stored plans and seen
/// ticket ids are all still there.
#[tokio::test]
async fn state_survives_a_sigkill_of_the_runner() {
    let s = Stack::start();
    let plan = make_plan(&s, ALICE, "staging").await;
    let agent = session(&s, "operator", Some(ALICE)).await;
    let args = json!({"namespace": "shop", "deployment": "cart-restart"});
    let (_, data) = refused(&agent, "restart_deployment", args.clone(), -32004).await;
    let pending = approval_id(&data);
    // A ticket used once, straight at the runner (as the gateway would send it).
    let word = json!({"text": "one two"});
    let ticket = super::direct::mint(&s, "word_count", &word, 0);
    let r = super::direct::direct_call(&s, |session| Some(ticket.token(session)), "word_count", &word).await;
    assert!(r.text.contains('2'), "{}", r.text);
    drop(agent);

    let s = s.kill_and_restart();

    let r = super::direct::direct_call(&s, |session| Some(ticket.token(session)), "word_count", &word).await;
    assert_eq!(r.error_code(), Some(-32002), "a ticket used before the crash was accepted again: {}", r.text);
    assert!(r.error_message().contains("already used"), "{}", r.text);

    let console = session(&s, "console", Some(BOB)).await;
    let listed = call(&console, "approvals_list", json!({})).await.unwrap();
    let listed = listed.structured_content.unwrap_or_default().to_string();
    assert!(listed.contains(&pending), "pending approval lost: {listed}");
    decide(&s, BOB, &pending, "approve").await.unwrap();
    let agent = session(&s, "operator", Some(ALICE)).await;
    let r = call(&agent, "restart_deployment", args).await.unwrap();
    assert!(text(&r).contains("restarted deployment shop/cart-restart"), "{}", text(&r));
    // The stored plan is still there: the apply gets past the plan check to its approval.
    let (_, data) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32004).await;
    assert_eq!(data["approval"]["state"], "pending");
}

/// Every record of the call that executed approval `id`, from the gateway's decision to the
/// sandbox's teardown, in order (`portcullis audit show`); the log verifies.
fn audit_trail_of_the_approved_apply(s: &Stack, id: &str) {
    let log = s.state.path().join("audit/audit.jsonl");
    let records = || -> Vec<Value> { std::fs::read_to_string(&log).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let used = records().into_iter().find(|r| r["event"] == "approval.used" && r["approval"] == id).unwrap_or_else(|| panic!("no approval.used for {id}"));
    let decision = used["decision_id"].as_str().unwrap().to_owned();
    let show = || {
        let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
            .args(["audit", "show", "--decision", &decision, "--state-dir"])
            .arg(s.state.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The gateway's record arrives through Envoy's access log within about a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut shown = show();
    while !shown.contains("gateway.decision") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        shown = show();
    }
    let events: Vec<String> = shown.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).map(|r| r["event"].as_str().unwrap_or_default().to_owned()).collect();
    let want = ["ticket.accepted", "approval.used", "job.started", "job.finished", "sandbox.destroyed"];
    let runner: Vec<&String> = events.iter().filter(|e| !e.starts_with("gateway.")).collect();
    assert_eq!(runner, want.iter().collect::<Vec<_>>(), "{shown}");
    assert_eq!(events.iter().filter(|e| *e == "gateway.decision").count(), 1, "{shown}");
    // The whole story of the approved apply, for a reader: the first send (approval
    // requested, then granted) and the send that executed it.
    let first = records().into_iter().find(|r| r["event"] == "approval.requested" && r["approval"] == id).map(|r| r["decision_id"].clone()).unwrap_or_default();
    let story: Vec<String> = records().iter().filter(|r| r["decision_id"] == first || r["decision_id"] == decision.as_str()).map(Value::to_string).collect();
    eprintln!("audit records of approval {id} (decisions {first} and {decision}):\n{}", story.join("\n"));
}

/// The policy's own rules on the cited plan (`plan_decision`, evaluated by the runner, which
/// knows the plan): here a bundle whose plans may be applied for two seconds only.
#[tokio::test]
async fn the_policy_decides_on_the_cited_plans_provenance() {
    let policies = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(portcullis_e2e::repo_root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, policies.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let data = std::fs::read_to_string(policies.path().join("data.json")).unwrap();
    assert!(data.contains(r#""max_age_seconds": 1800"#), "the default bundle changed: adapt this test");
    std::fs::write(policies.path().join("data.json"), data.replace(r#""max_age_seconds": 1800"#, r#""max_age_seconds": 2"#)).unwrap();
    let s = Stack::start_with(&["--policies", policies.path().to_str().unwrap()]);
    let agent = session(&s, "operator", Some(ALICE)).await;
    // Fresh, the plan passes the rules and the apply goes on to its approval.
    let plan = make_plan(&s, ALICE, "staging").await;
    let (_, data) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32004).await;
    assert_eq!(data["approval"]["state"], "pending");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (message, _) = refused(&agent, "apply_release", apply_args(&plan, "staging"), -32005).await;
    assert!(message.contains("plan.age") && message.contains("plans are applied within 2 s"), "{message}");
}
