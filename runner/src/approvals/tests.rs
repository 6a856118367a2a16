use super::*;

pub(super) fn claims(user: Option<&str>, groups: &[&str], args: &str) -> Claims {
    let arguments: Map<String, Value> = serde_json::from_str(args).unwrap();
    Claims {
        iss: "g".into(),
        aud: "a".into(),
        sub: "spiffe://td/ns/agents/sa/operator".into(),
        user: user.map(Into::into),
        user_iss: user.map(|_| "https://idp".into()),
        groups: groups.iter().map(|g| (*g).into()).collect(),
        session: None,
        tool: "restart_deployment".into(),
        plan_hash: portcullis_core::plan::plan_hash("restart_deployment", Some(&arguments)).unwrap(),
        decision_id: "d1".into(),
        require_approval: true,
        placement: None,
        policy_version: "v1".into(),
        jti: "j".into(),
        iat: 0,
        exp: 0,
    }
}

pub(super) fn approvals(dir: &tempfile::TempDir) -> Approvals {
    let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
    Approvals::new(store, 60, "approvers".into())
}

fn requested(g: Gate) -> Approval {
    match g {
        Gate::Requested(a) => a,
        other => panic!("expected a new pending approval, got {other:?}"),
    }
}

fn refused(g: Gate) -> State {
    match g {
        Gate::Refused { approval, .. } => approval.state,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn approved_runs_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ap = approvals(&dir);
    let call = claims(Some("alice"), &["sre"], r#"{"namespace":"web"}"#);
    let a = requested(ap.gate(&call, Map::new(), 100).unwrap());
    assert_eq!(refused(ap.gate(&call, Map::new(), 101).unwrap()), State::Pending);
    let bob = claims(Some("bob"), &["approvers"], "{}");
    ap.decide(&a.id, true, None, &bob, 102).unwrap();
    assert!(matches!(ap.gate(&call, Map::new(), 103).unwrap(), Gate::Run(_)));
    assert_eq!(refused(ap.gate(&call, Map::new(), 104).unwrap()), State::Executed);
}

#[test]
fn people_decide_and_never_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let ap = approvals(&dir);
    let call = claims(Some("alice"), &["sre", "approvers"], "{}");
    let a = requested(ap.gate(&call, Map::new(), 100).unwrap());
    assert!(matches!(ap.decide(&a.id, true, None, &claims(None, &[], "{}"), 101), Err(DecideError::NoUser)));
    assert!(matches!(ap.decide(&a.id, true, None, &claims(Some("bob"), &["sre"], "{}"), 101), Err(DecideError::NotApprover(..))));
    assert!(matches!(ap.decide(&a.id, true, None, &call, 101), Err(DecideError::OwnRequest(..))));
    assert_eq!(ap.get(&a.id).unwrap().unwrap().state, State::Pending);
}

#[test]
fn denied_is_final_and_a_changed_call_needs_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let ap = approvals(&dir);
    let call = claims(Some("alice"), &[], r#"{"namespace":"web"}"#);
    let a = requested(ap.gate(&call, Map::new(), 100).unwrap());
    ap.decide(&a.id, false, Some("no".into()), &claims(Some("bob"), &["approvers"], "{}"), 101).unwrap();
    assert_eq!(refused(ap.gate(&call, Map::new(), 102).unwrap()), State::Denied);
    assert_eq!(refused(ap.gate(&call, Map::new(), 10_000).unwrap()), State::Denied);
    let other = claims(Some("alice"), &[], r#"{"namespace":"api"}"#);
    assert_ne!(requested(ap.gate(&other, Map::new(), 103).unwrap()).id, a.id);
}

#[test]
fn expiry_refuses_then_asks_anew() {
    let dir = tempfile::tempdir().unwrap();
    let ap = approvals(&dir);
    let call = claims(Some("alice"), &[], "{}");
    let a = requested(ap.gate(&call, Map::new(), 100).unwrap());
    ap.decide(&a.id, true, None, &claims(Some("bob"), &["approvers"], "{}"), 110).unwrap();
    // Approved at 110 with a 60 s window: at 170 it has expired unexecuted.
    assert!(matches!(ap.gate(&call, Map::new(), 170).unwrap(), Gate::Refused { newly_expired: true, .. }));
    let again = requested(ap.gate(&call, Map::new(), 171).unwrap());
    assert_ne!(again.id, a.id);
    assert!(matches!(ap.decide(&again.id, true, None, &claims(Some("bob"), &["approvers"], "{}"), 232), Err(DecideError::NotPending { .. })));
}

#[test]
fn the_pending_index_follows_every_transition_and_is_rebuilt_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ap = approvals(&dir);
    let bob = claims(Some("bob"), &["approvers"], "{}");
    let call = |ns: &str| claims(Some("alice"), &["sre"], &format!(r#"{{"namespace":"{ns}"}}"#));
    let ids = |ap: &Approvals, now| ap.pending(now).unwrap().into_iter().map(|a| a.id).collect::<Vec<_>>();
    let indexed = |ap: &Approvals| ap.store.entries::<u64>(PENDING_APPROVALS).unwrap().len();
    let a = requested(ap.gate(&call("a"), Map::new(), 100).unwrap());
    let b = requested(ap.gate(&call("b"), Map::new(), 101).unwrap());
    let c = requested(ap.gate(&call("c"), Map::new(), 102).unwrap());
    assert_eq!(ids(&ap, 103), [a.id.clone(), b.id.clone(), c.id.clone()]);
    ap.decide(&a.id, true, None, &bob, 103).unwrap();
    ap.decide(&b.id, false, None, &bob, 104).unwrap();
    assert_eq!(ids(&ap, 105), vec![c.id.clone()]);
    assert_eq!(indexed(&ap), 1, "approved and denied approvals left the index");

    // Past its expiry, c is no longer listed and leaves the index, though nobody decided it;
    // its record stays pending until its call comes again, which expires it (and is audited).
    assert!(ids(&ap, 162).is_empty());
    assert_eq!(indexed(&ap), 0);
    assert_eq!(ap.get(&c.id).unwrap().unwrap().state, State::Pending);
    assert!(matches!(ap.gate(&call("c"), Map::new(), 170).unwrap(), Gate::Refused { newly_expired: true, .. }));
    let d = requested(ap.gate(&call("c"), Map::new(), 171).unwrap());
    assert_eq!(ids(&ap, 171), vec![d.id.clone()]);

    // An index lost, or never kept by an older runner, is built again when the runner starts.
    ap.store.write(|t| t.clear(PENDING_APPROVALS)).unwrap();
    assert!(ids(&ap, 172).is_empty());
    let reopened = Approvals::open(ap.store.clone(), 60, "approvers".into(), 172).unwrap();
    assert_eq!(ids(&reopened, 172), vec![d.id.clone()]);
    assert_eq!(indexed(&reopened), 1);
}
