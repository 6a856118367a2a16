//! Approval and plan abuse control.rs leaves out (it covers approving one's own request, an
//! approver outside the group, a workload without a user, deciding twice, a replay after the
//! execution, and citing another user's plan or another environment): an approval granted
//! for one requester used by another, the same approved call sent many times at once, and an
//! apply whose arguments differ from its plan's in each field, even once the apply is
//! approved. The transport does not matter here (the official client, over HTTP/2).

use serde_json::{json, Value};

use super::Bench;
use crate::cases::control::{call, decide, make_plan, refused, session, text};

const ALICE: (&str, &[&str]) = ("alice", &["sre"]);
const CAROL: (&str, &[&str]) = ("carol", &["sre"]);
const BOB: (&str, &[&str]) = ("bob", &["approvers"]);

fn approval_id(data: &Value) -> String {
    data.pointer("/approval/id").and_then(Value::as_str).unwrap_or_else(|| panic!("no approval id in {data}")).to_owned()
}

/// The executions since the trail held `before`.
fn since(b: &Bench, before: usize) -> Vec<Value> {
    b.executions().into_iter().skip(before).collect()
}

fn row(b: &mut Bench, name: &str, outcome: &str) {
    let row = format!("{name:<48} rmcp {outcome}");
    eprintln!("adversarial: {row}");
    b.rows.push(row);
}

pub async fn run(b: &mut Bench) {
    another_requester_uses_an_approval(b).await;
    one_approval_many_sends_at_once(b).await;
    apply_arguments_differ_from_the_plan(b).await;
}

/// Bob approves Alice's restart; Carol (the same agent workload, for another user) sends the
/// identical call: she gets an approval request of her own, Alice's approval stays unused.
async fn another_requester_uses_an_approval(b: &mut Bench) {
    let args = json!({"namespace": "shop", "deployment": "adv-other-requester"});
    let alice = session(&b.s, "operator", Some(ALICE)).await;
    let carol = session(&b.s, "operator", Some(CAROL)).await;
    let before = b.executions().len();
    let (_, data) = refused(&alice, "restart_deployment", args.clone(), -32004).await;
    let id = approval_id(&data);
    decide(&b.s, BOB, &id, "approve").await.unwrap_or_else(|e| panic!("bob approves: {e:?}"));
    let (message, data) = refused(&carol, "restart_deployment", args.clone(), -32004).await;
    assert_ne!(approval_id(&data), id, "carol used alice's approval: {message}");
    assert_eq!(data["approval"]["state"], "pending", "{message}");
    assert!(since(b, before).is_empty(), "executed: {:?}", since(b, before));
    row(b, "approval of another requester's call", &format!("-32004 new approval for carol, {id} unused"));
    // Alice's own call runs under it, once.
    let r = call(&alice, "restart_deployment", args.clone()).await.unwrap_or_else(|e| panic!("alice's approved call: {e:?}"));
    assert!(text(&r).contains("restarted deployment shop/adv-other-requester"), "{}", text(&r));
    let new = since(b, before);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["tool"], "restart_deployment", "{new:?}");
    b.allow(1);
    // Carol's request is still hers, still pending.
    let (_, data) = refused(&carol, "restart_deployment", args, -32004).await;
    assert_eq!(data["approval"]["state"], "pending");
    assert_eq!(since(b, before).len(), 1);
}

/// An approved call sent eight times at once, each on a session of its own: it runs once,
/// the seven others are refused as already executed.
async fn one_approval_many_sends_at_once(b: &mut Bench) {
    let args = json!({"namespace": "shop", "deployment": "adv-replay"});
    let alice = session(&b.s, "operator", Some(ALICE)).await;
    let before = b.executions().len();
    let (_, data) = refused(&alice, "restart_deployment", args.clone(), -32004).await;
    let id = approval_id(&data);
    decide(&b.s, BOB, &id, "approve").await.unwrap_or_else(|e| panic!("bob approves: {e:?}"));
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(session(&b.s, "operator", Some(ALICE)).await);
    }
    let sends: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let args = args.clone();
            tokio::spawn(async move { call(&c, "restart_deployment", args).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for send in sends {
        outcomes.push(send.await.expect("a send"));
    }
    let ran = outcomes.iter().filter(|o| o.as_ref().is_ok_and(|r| r.is_error != Some(true))).count();
    let codes: Vec<i32> = outcomes.iter().filter_map(|o| o.as_ref().err().map(|e| e.0)).collect();
    assert_eq!(ran, 1, "one approval, {ran} executions: {outcomes:?}");
    assert!(codes.iter().all(|c| *c == -32006), "the others are refused as used: {outcomes:?}");
    let new = since(b, before);
    assert_eq!(new.len(), 1, "{new:?}");
    b.allow(1);
    row(b, "one approval, the call sent 8 times at once", &format!("1 executed, 7 refused {codes:?}"));
    // Bob approving it again after its use changes nothing.
    let again = decide(&b.s, BOB, &id, "approve").await;
    assert!(again.is_err(), "an executed approval was approved again: {again:?}");
    refused(&alice, "restart_deployment", args, -32006).await;
    assert_eq!(since(b, before).len(), 1);
    row(b, "approving a used approval again", &format!("{}", again.err().map(|e| e.0).unwrap_or_default()));
}

/// An apply must match its plan in every argument, approved or not: each differing field is
/// refused before anything runs; Carol cannot apply Alice's plan even once Alice's apply of it
/// is approved; then Alice's exact apply runs once.
async fn apply_arguments_differ_from_the_plan(b: &mut Bench) {
    let before = b.executions().len();
    let plan = make_plan(&b.s, ALICE, "staging").await;
    assert_eq!(since(b, before).len(), 1, "plan_release ran once");
    b.allow(1);
    let before = b.executions().len();
    let alice = session(&b.s, "operator", Some(ALICE)).await;
    let exact = json!({"plan": plan, "namespace": "shop", "release": "cart", "environment": "staging"});
    let (_, data) = refused(&alice, "apply_release", exact.clone(), -32004).await;
    let id = approval_id(&data);
    decide(&b.s, BOB, &id, "approve").await.unwrap_or_else(|e| panic!("bob approves: {e:?}"));
    let mut outcomes = Vec::new();
    for (field, value) in [("namespace", "shop-2"), ("release", "cart-2"), ("environment", "production")] {
        let mut args = exact.clone();
        args[field] = json!(value);
        let (message, _) = refused(&alice, "apply_release", args, -32005).await;
        outcomes.push(format!("{field}: -32005 {message}"));
    }
    // Another plan's hash with the approved apply's other arguments.
    let mut args = exact.clone();
    args["plan"] = json!(format!("sha256:{}", "cd".repeat(32)));
    let (message, _) = refused(&alice, "apply_release", args, -32005).await;
    outcomes.push(format!("plan: -32005 {message}"));
    let carol = session(&b.s, "operator", Some(CAROL)).await;
    let (message, _) = refused(&carol, "apply_release", exact.clone(), -32005).await;
    assert!(message.contains("alice"), "{message}");
    outcomes.push(format!("carol citing alice's approved plan: -32005 {message}"));
    assert!(since(b, before).is_empty(), "executed: {:?}", since(b, before));
    for o in &outcomes {
        row(b, "apply differing from its plan", o);
    }
    let r = call(&alice, "apply_release", exact.clone()).await.unwrap_or_else(|e| panic!("alice's approved apply: {e:?}"));
    assert!(text(&r).contains(&format!("applying {plan}")), "{}", text(&r));
    let new = since(b, before);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["tool"], "apply_release", "{new:?}");
    b.allow(1);
    refused(&alice, "apply_release", exact, -32006).await;
    assert_eq!(since(b, before).len(), 1);
}
