//! Runs the default policy bundle's Rego unit tests (`policies/*_test.rego`) with regorus,
//! against the example catalog, and checks the bundle compiles as the filter compiles it.

use std::path::Path;

use portcullis_core::authz::{run_tests, Authorizer, PolicyBundle, PolicyModule};
use portcullis_core::catalog::Catalog;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn bundle() -> PolicyBundle {
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rego") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            modules.push(PolicyModule { name, source: std::fs::read_to_string(&path).unwrap() });
        }
    }
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    let data = std::fs::read_to_string(repo().join("policies/data.json")).unwrap();
    PolicyBundle { modules, data: serde_json::from_str(&data).unwrap() }
}

fn catalog() -> Catalog {
    let yaml = std::fs::read_to_string(repo().join("catalog/example.yaml")).unwrap();
    let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    Catalog::from_value(value).unwrap()
}

#[test]
fn rego_unit_tests_pass() {
    let outcomes = run_tests(&bundle(), &catalog()).unwrap();
    assert!(outcomes.len() >= 9, "expected the policy tests to be found, got {outcomes:?}");
    for o in &outcomes {
        println!("{} {}{}", if o.passed { "PASS" } else { "FAIL" }, o.name, o.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default());
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    assert!(failed.is_empty(), "failing Rego tests: {failed:?}");
}

#[test]
fn bundle_compiles_for_the_filter() {
    let bundle = bundle();
    let a = Authorizer::new(&bundle, &catalog()).unwrap();
    assert!(a.version().starts_with("sha256:"));
}

/// The decision cache returns exactly what evaluation returns: it keeps decisions that do not
/// read the time, and never reuses one that does (a change-windowed tool at two times).
#[test]
fn decision_cache_reuses_only_time_independent_decisions() {
    use portcullis_core::authz::{PolicyInput, PolicyTime, Workload};
    use portcullis_core::userjwt::VerifiedUser;

    let a = Authorizer::new(&bundle(), &catalog()).unwrap();
    let reader = Workload::from_spiffe_id("spiffe://portcullis.local/ns/agents/sa/reader").unwrap();
    let operator = Workload::from_spiffe_id("spiffe://portcullis.local/ns/agents/sa/operator").unwrap();
    let alice = VerifiedUser { sub: "alice".into(), iss: "https://idp.portcullis.local".into(), groups: vec!["sre".into()], claims: Default::default() };
    let text: serde_json::Map<_, _> = serde_json::from_str(r#"{"text":"hello"}"#).unwrap();
    let release: serde_json::Map<_, _> =
        serde_json::from_str(r#"{"namespace":"team-a","release":"web","version":"v1.0.0","environment":"staging"}"#).unwrap();
    // 2026-11-24 is a Tuesday: 11:00 is inside the release window, 17:00 outside.
    let tuesday = |hour: u64| PolicyTime::from_unix(1_795_478_400 + hour * 3600);
    assert_eq!(tuesday(11).weekday, "Tuesday");
    let input = |workload, tool, args, user, hour| PolicyInput {
        method: "tools/call",
        tool: Some(tool),
        arguments: Some(args),
        plan_hash: Some("sha256:00"),
        workload,
        user,
        user_error: user.is_none().then_some("no bearer token"),
        time: tuesday(hour),
        mcp: Default::default(),
    };

    let first = a.decide(&input(&reader, "word_count", &text, None, 11)).unwrap();
    assert!(first.allow && first.cacheable);
    assert_eq!(a.cached_decisions(), 1);
    let later = input(&reader, "word_count", &text, None, 17);
    assert_eq!(a.decide(&later).unwrap(), a.decide_uncached(&later).unwrap());
    assert_eq!(a.cached_decisions(), 1, "the same input, time aside, is one entry");

    let inside = a.decide(&input(&operator, "deploy_release", &release, Some(&alice), 11)).unwrap();
    let outside = a.decide(&input(&operator, "deploy_release", &release, Some(&alice), 17)).unwrap();
    assert!(inside.allow && !inside.cacheable, "{inside:?}");
    assert!(!outside.allow, "a windowed decision must follow the time: {outside:?}");
    assert_eq!(a.cached_decisions(), 1);
}

/// The default bundle names placements for some calls; without `placements` in its data (a
/// policy author's data from before placements), every decision is as before, with no placement.
#[test]
fn placements_come_from_data_and_a_bundle_without_them_still_decides() {
    use portcullis_core::authz::{PolicyInput, PolicyTime, Workload};

    let reader = Workload::from_spiffe_id("spiffe://portcullis.local/ns/agents/sa/reader").unwrap();
    let empty = serde_json::Map::new();
    let input = |tool| PolicyInput {
        method: "tools/call",
        tool: Some(tool),
        arguments: Some(&empty),
        plan_hash: Some("sha256:00"),
        workload: &reader,
        user: None,
        user_error: Some("no bearer token"),
        time: PolicyTime::from_unix(1_790_000_000),
        mcp: Default::default(),
    };
    let shipped = Authorizer::new(&bundle(), &catalog()).unwrap();
    let d = shipped.decide(&input("inspect_sandbox")).unwrap();
    assert!(d.allow, "{d:?}");
    assert_eq!(d.placement, Some(portcullis_core::placement::Placement::default()), "the shipped data keeps it local");

    let mut old = bundle();
    old.data["portcullis"].as_object_mut().unwrap().remove("placements");
    let old = Authorizer::new(&old, &catalog()).unwrap();
    let d = old.decide(&input("inspect_sandbox")).unwrap();
    assert!(d.allow, "{d:?}");
    assert_eq!(d.placement, None, "no placement: the catalog default applies");
}

/// The default bundle names the arguments it reads, and seeing only those decides every case
/// exactly as seeing all of them: the argument rules' names are all there.
#[test]
fn the_default_bundle_decides_every_case_alike_on_the_arguments_it_names() {
    let a = Authorizer::new(&bundle(), &catalog()).unwrap();
    let names: Vec<&str> = a.argument_names().expect("the bundle names its arguments").iter().map(String::as_str).collect();
    assert_eq!(names, ["deployment", "environment", "name", "namespace", "pod", "release"]);
    let full = Authorizer::new(&bundle(), &catalog()).unwrap().showing_every_argument();
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("policies/cases")).unwrap() {
        let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for case in cases {
            let mut input = case["input"].clone();
            // An argument no rule reads must change nothing.
            if let Some(arguments) = input.get_mut("arguments").and_then(|a| a.as_object_mut()) {
                arguments.insert("unread_argument".into(), serde_json::json!({"deep": ["*", "prod-x", "kube-system"]}));
            }
            let shown = a.decide_value(&input).unwrap();
            assert_eq!(shown, full.decide_value(&input).unwrap(), "case {}", case["name"]);
            n += 1;
        }
    }
    assert!(n > 200, "only {n} cases");
}

/// The default bundle's caller facts, evaluated once per caller and handed back to every
/// decision, decide every case exactly as the bundle computing them itself (as OPA does), the
/// first time (memo miss) and again (memo hit).
#[test]
fn the_default_bundle_decides_every_case_alike_with_memoized_caller_facts() {
    let a = Authorizer::new(&bundle(), &catalog()).unwrap();
    let computed = Authorizer::new(&bundle(), &catalog()).unwrap().without_caller_facts();
    assert!(computed.caller_facts().is_none());
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("policies/cases")).unwrap() {
        let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for case in cases {
            let want = computed.decide_value(&case["input"]).unwrap();
            assert_eq!(a.decide_value(&case["input"]).unwrap(), want, "case {}", case["name"]);
            assert_eq!(a.decide_value(&case["input"]).unwrap(), want, "case {}, memoized", case["name"]);
            n += 1;
        }
    }
    assert!(n > 200, "only {n} cases");
    let n = n as u64;
    let (hits, misses) = a.caller_facts().expect("the bundle defines caller_facts").counts();
    assert!(hits >= n && misses > 0 && misses < n, "hits {hits}, misses {misses} of {n} cases");
}

/// The default bundle's first decision branch answers an allowed tools/call from the caller
/// facts after the argument rules alone; every case, and every case's call with arguments that
/// some rule denies, is decided exactly as without that branch (where the general rules decide).
#[test]
fn the_quick_call_branch_decides_every_case_as_the_general_rules_do() {
    const BRANCH: &str = "decision := call if {";
    let quick = Authorizer::new(&bundle(), &catalog()).unwrap();
    let mut general = bundle();
    let authz = general.modules.iter_mut().find(|m| m.name == "authz.rego").unwrap();
    assert_eq!(authz.source.matches(BRANCH).count(), 1, "the quick branch moved");
    authz.source = authz.source.replace(BRANCH, &format!("{BRANCH}\n\tfalse"));
    let general = Authorizer::new(&general, &catalog()).unwrap();
    let mut n = 0;
    let mut quick_allows = 0;
    for entry in std::fs::read_dir(repo().join("policies/cases")).unwrap() {
        let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for case in cases {
            let mut inputs = vec![case["input"].clone()];
            for (name, value) in [("namespace", "kube-system"), ("namespace", "prod-payments"), ("name", "web-*"), ("environment", "production"), ("namespace", "team-a")] {
                let mut input = case["input"].clone();
                if let Some(arguments) = input.get_mut("arguments").and_then(|a| a.as_object_mut()) {
                    arguments.insert(name.into(), value.into());
                    inputs.push(input);
                }
            }
            for input in inputs {
                let want = general.decide_value(&input).unwrap();
                assert_eq!(quick.decide_value(&input).unwrap(), want, "case {}: {input}", case["name"]);
                quick_allows += usize::from(want.allow && input["method"] == "tools/call");
                n += 1;
            }
        }
    }
    assert!(n > 500 && quick_allows > 50, "only {n} inputs, {quick_allows} allowed calls");
}
