//! The official MCP conformance suite, three ways: against the project's reference server
//! directly, against the same server through Envoy with the filter (a bundle that allows
//! everything, so only the gateway's transparency is tested), and against the runner through
//! the gateway with the default policy (reported, not asserted: that policy denies most of
//! what the suite calls). The pass set through the gateway must equal the direct one, except
//! for the scenarios listed with a reason in tests/node/conformance/gateway-exceptions.json.

use std::collections::{BTreeMap, BTreeSet};

use portcullis_e2e::conformance::{run_suite, FrontProxy, ReferenceServer};
use portcullis_e2e::{repo_root, Stack};

use crate::stack;

fn passing(results: &BTreeMap<String, (bool, String)>) -> BTreeSet<String> {
    results.iter().filter(|(_, (pass, _))| *pass).map(|(name, _)| name.clone()).collect()
}

#[test]
fn the_conformance_suite_passes_the_same_through_the_gateway_as_directly() {
    let out = repo_root().join("target/conformance");
    std::fs::create_dir_all(&out).unwrap();
    let server = ReferenceServer::start();
    let direct = run_suite(&server.url, &out.join("direct.json"));
    let failing: Vec<_> = direct.iter().filter(|(_, (pass, _))| !pass).collect();
    assert!(failing.is_empty(), "the reference server must pass every scenario directly: {failing:?}");

    let gateway = Stack::start_with(&["--upstream", &server.url, "--policies", "tests/policies/allow-all"]);
    let front = FrontProxy::start(&gateway, "reader");
    let through = run_suite(&front.url, &out.join("gateway.json"));

    let exceptions: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(repo_root().join("tests/node/conformance/gateway-exceptions.json")).unwrap()).unwrap();
    let expected: BTreeSet<String> = passing(&direct).into_iter().filter(|s| !exceptions.contains_key(s)).collect();
    let got: BTreeSet<String> = passing(&through).into_iter().filter(|s| !exceptions.contains_key(s)).collect();
    let lost: Vec<_> = expected.difference(&got).map(|s| (s, &through[s].1)).collect();
    assert!(lost.is_empty(), "scenarios that pass directly but not through the gateway: {lost:?}\n{}", gateway.logs());
    assert_eq!(expected, got);

    // The runner behind the gateway, default policy, as the operator agent: reported only.
    let s = stack();
    let front = FrontProxy::start(s, "operator");
    let runner = run_suite(&front.url, &out.join("runner.json"));
    eprintln!("{:<34} {:>7} {:>8} {:>7}", "scenario", "direct", "gateway", "runner");
    for (name, (pass, _)) in &direct {
        let mark = |r: &BTreeMap<String, (bool, String)>| if r.get(name).is_some_and(|(p, _)| *p) { "pass" } else { "FAIL" };
        eprintln!("{name:<34} {:>7} {:>8} {:>7}", if *pass { "pass" } else { "FAIL" }, mark(&through), mark(&runner));
    }
    eprintln!("direct {}/{} · gateway {}/{} · runner (default policy) {}/{}", passing(&direct).len(), direct.len(), passing(&through).len(), through.len(), passing(&runner).len(), runner.len());
}
