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
