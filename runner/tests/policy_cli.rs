//! `portcullis policy test` and `portcullis policy eval`, run as the real binary against the
//! repository's bundle (policies/, catalog/example.yaml) and its cases (policies/cases/*.json).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portcullis_runner::devstack::{bundle, policy_cli};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_owned()
}

fn policies() -> PathBuf {
    root().join("policies")
}

fn catalog() -> PathBuf {
    root().join("catalog/example.yaml")
}

fn portcullis<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").output().expect("run portcullis")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 stderr")
}

fn policy_test(policies: &Path) -> Output {
    portcullis([OsStr::new("policy"), "test".as_ref(), "--policies".as_ref(), policies.as_os_str(), "--catalog".as_ref(), catalog().as_os_str()])
}

fn policy_eval(input: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<OsString> = ["policy", "eval", "--input"].map(OsString::from).to_vec();
    args.extend([input.into(), "--policies".into(), policies().into(), "--catalog".into(), catalog().into()]);
    args.extend(extra.iter().map(OsString::from));
    portcullis(args)
}

fn write_input(dir: &Path, name: &str, input: &Value) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, serde_json::to_vec(input).expect("serialize input")).expect("write input");
    p
}

fn workload(name: &str) -> Value {
    json!({
        "spiffe_id": format!("spiffe://portcullis.local/ns/agents/sa/{name}"),
        "trust_domain": "portcullis.local",
        "path": format!("/ns/agents/sa/{name}"),
    })
}

fn call(who: &str, tool: &str) -> Value {
    json!({"method": "tools/call", "tool": tool, "arguments": {}, "plan_hash": "sha256:00", "workload": workload(who), "user": null})
}

/// Every case of policies/cases/*.json, as (file, case).
fn cases() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = fs::read_dir(policies().join("cases"))
        .expect("policies/cases")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no policies/cases/*.json");
    let mut out = Vec::new();
    for f in files {
        let doc: Value = serde_json::from_slice(&fs::read(&f).expect("read cases")).expect("cases parse");
        let name = f.file_name().and_then(|n| n.to_str()).expect("file name").to_owned();
        for case in doc.as_array().expect("a case file is an array") {
            out.push((name.clone(), case.clone()));
        }
    }
    out
}

// --- policy test --------------------------------------------------------------------------

#[test]
fn policy_test_passes_on_the_repository_bundle() {
    let out = policy_test(&policies());
    let text = stdout(&out);
    assert!(out.status.success(), "policy test failed:\n{text}{}", stderr(&out));
    assert!(text.contains("PASS data.portcullis.authz_test.test_reader_may_call_low_query_tool"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    let last = text.lines().last().expect("summary line");
    assert!(last.ends_with(" passed, 0 failed") && !last.starts_with("0 "), "{last}");
}

#[test]
fn policy_test_fails_and_names_a_failing_test() {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in bundle_files() {
        fs::copy(policies().join(&f), dir.path().join(&f)).expect("copy bundle file");
    }
    fs::write(
        dir.path().join("broken_test.rego"),
        r#"package portcullis.broken_test

import rego.v1

import data.portcullis.authz

test_passes if {
	d := authz.decision with input as {}
	not d.allow
}

test_operator_may_delete_namespace if {
	d := authz.decision with input as {"method": "tools/call", "tool": "delete_namespace", "workload": {"spiffe_id": "spiffe://portcullis.local/ns/agents/sa/operator"}}
	d.allow
}
"#,
    )
    .expect("write failing test");
    let out = policy_test(dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("PASS data.portcullis.broken_test.test_passes"), "{text}");
    assert!(text.contains("FAIL data.portcullis.broken_test.test_operator_may_delete_namespace (undefined)"), "{text}");
    assert_eq!(text.lines().last(), Some("1 passed, 1 failed"), "{text}");
}

#[test]
fn policy_test_without_tests_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in bundle_files().into_iter().filter(|f| f.ends_with(".rego")) {
        fs::copy(policies().join(&f), dir.path().join(&f)).expect("copy policy");
    }
    let out = policy_test(dir.path());
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_eq!(stdout(&out).lines().last(), Some("0 passed, 0 failed"));
}

// --- policy eval --------------------------------------------------------------------------

#[test]
fn eval_allowed_exits_0_and_prints_the_decision_and_reasons() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = policy_eval(&write_input(dir.path(), "in.json", &call("reader", "inspect_sandbox")), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    // The pretty-printed document comes first, then the human-readable lines.
    let (document, human) = text.split_once("\n\n").expect("document, blank line, reasons");
    let document: Value = serde_json::from_str(document).expect("decision document");
    assert_eq!(
        document,
        json!({
            "allow": true,
            "require_approval": false,
            "reasons": ["workload spiffe://portcullis.local/ns/agents/sa/reader may call inspect_sandbox as reader"],
            "rule_ids": ["tools.role.reader"],
            "cacheable": true,
            "placement": {"backend": "local"},
        })
    );
    assert!(text.starts_with("{\n  \"allow\": true,"), "not pretty-printed:\n{text}");
    assert_eq!(human, "ALLOWED\n  reason: workload spiffe://portcullis.local/ns/agents/sa/reader may call inspect_sandbox as reader\n  rules:  tools.role.reader\n  placement: local\n");
}

#[test]
fn eval_denied_exits_3_with_every_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = policy_eval(&write_input(dir.path(), "in.json", &call("operator", "delete_namespace")), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    let (_, human) = text.split_once("\n\n").expect("document, blank line, reasons");
    assert_eq!(
        human,
        "DENIED\n  reason: tool delete_namespace is irreversible and no break-glass rule applies\n  \
         reason: tool delete_namespace requires a verified user: no verified user\n  \
         rules:  risk.irreversible, user.required\n"
    );
}

#[test]
fn eval_json_prints_only_the_decision_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = policy_eval(&write_input(dir.path(), "in.json", &call("reader", "apply_config")), &["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let document: Value = serde_json::from_str(&text).expect("stdout is one JSON document");
    assert_eq!(
        document,
        json!({
            "allow": false,
            "require_approval": false,
            "reasons": ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not call apply tool apply_config (risk medium)"],
            "rule_ids": ["tools.not_permitted"],
            "cacheable": true,
        })
    );
}

#[test]
fn eval_prints_the_visible_tools_of_tools_list() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = json!({"method": "tools/list", "tool": null, "arguments": null, "plan_hash": null, "workload": workload("reader"), "user": null});
    let out = policy_eval(&write_input(dir.path(), "in.json", &input), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let (document, human) = text.split_once("\n\n").expect("document, blank line, reasons");
    let document: Value = serde_json::from_str(document).expect("decision document");
    assert_eq!(document["visible_tools"], json!(["inspect_sandbox", "list_pods", "watch_rollout", "word_count"]));
    assert!(human.ends_with("  visible tools: inspect_sandbox, list_pods, watch_rollout, word_count\n"), "{human}");
    // Other methods carry no visible_tools at all.
    let ping = json!({"method": "ping", "tool": null, "arguments": null, "plan_hash": null, "workload": workload("reader"), "user": null});
    let out = policy_eval(&write_input(dir.path(), "ping.json", &ping), &["--json"]);
    let document: Value = serde_json::from_slice(&out.stdout).expect("decision");
    assert!(document.get("visible_tools").is_none(), "{document}");
}

#[test]
fn eval_reads_stdin_and_any_json_document() {
    let mut child = Command::new(BIN)
        .args(["policy", "eval", "--json", "--input", "-"])
        .arg("--policies")
        .arg(policies())
        .arg("--catalog")
        .arg(catalog())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"{}").expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(3));
    let document: Value = serde_json::from_slice(&out.stdout).expect("decision");
    assert_eq!(document["rule_ids"], json!(["identity.no_role"]));
}

#[test]
fn eval_bad_input_exits_64() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = [
        ("not-json.json", &b"{\"method\": "[..], "invalid JSON"),
        ("dup.json", &b"{\"method\": \"ping\", \"method\": \"tools/call\"}"[..], "duplicate object key"),
        ("latin1.json", &b"{\"method\": \"\xe9\"}"[..], "UTF-8"),
    ];
    for (name, bytes, want) in bad {
        let p = dir.path().join(name);
        fs::write(&p, bytes).expect("write input");
        let out = policy_eval(&p, &["--json"]);
        assert_eq!(out.status.code(), Some(64), "{name}: {}", stdout(&out));
        assert!(stdout(&out).is_empty(), "{name}: printed a decision for bad input");
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
    }
    let out = policy_eval(&dir.path().join("missing.json"), &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("missing.json"), "{}", stderr(&out));
}

#[test]
fn eval_help_documents_the_exit_codes() {
    let out = portcullis(["policy", "eval", "--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("0 allowed, 3 denied, 64 bad input"), "{text}");
    assert!(text.contains("--json"), "{text}");
}

// --- the cases, under regorus -------------------------------------------------------------

#[test]
fn every_case_meets_its_want_under_regorus() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    let all = cases();
    for (i, (file, case)) in all.iter().enumerate() {
        let name = case["name"].as_str().expect("case name");
        let input = write_input(dir.path(), &format!("case-{i}.json"), &case["input"]);
        let out = policy_eval(&input, &["--json"]);
        let document: Value = match serde_json::from_slice(&out.stdout) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{file}: {name}: no decision ({e}); stderr: {}", stderr(&out)));
                continue;
            }
        };
        let want_code = if document["allow"] == json!(true) { 0 } else { 3 };
        if out.status.code() != Some(want_code) {
            failures.push(format!("{file}: {name}: exit {:?} for {document}", out.status.code()));
        }
        for (key, want) in case["want"].as_object().expect("want is an object") {
            if &document[key] != want {
                failures.push(format!("{file}: {name}: {key} is {}, want {want}", document[key]));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), all.len(), failures.join("\n"));
}

/// tests/opa/known_divergences.json records what regorus returns for inputs where OPA
/// differs; hold regorus to it here too (tests/opa/cross_check.py checks the OPA side).
#[test]
fn known_divergences_match_regorus() {
    let text = fs::read(root().join("tests/opa/known_divergences.json")).expect("read known divergences");
    let known: Vec<Value> = serde_json::from_slice(&text).expect("parse known divergences");
    let bundle = bundle::load_policy(&policies(), false).expect("load policy");
    let catalog = bundle::load_catalog(&catalog()).expect("load catalog");
    for kd in known {
        let decision = policy_cli::evaluate(&bundle, &catalog, &kd["input"]).expect("evaluate");
        assert_eq!(serde_json::to_value(&decision).expect("decision"), kd["regorus"], "{}", kd["name"]);
    }
}

/// The default bundle's modules (tests excluded) and its data.
fn bundle_files() -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(policies())
        .expect("policies dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".rego") && !n.ends_with("_test.rego")) || n == "data.json")
        .collect();
    files.sort();
    files
}
