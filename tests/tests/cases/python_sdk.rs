//! The official MCP Python SDK (PyPI `mcp`, pinned in scripts/requirements.txt) through Envoy
//! and the filter: tests/python/mcp_client.py, run with the repository's .venv, presents an
//! agent certificate and a user JWT from `portcullis token`.

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_e2e::{repo_root, Stack};
use serde_json::Value;

use crate::stack;

/// `.venv/bin/python`, after checking it has the pinned SDK. Never skips: without it, fail.
fn sdk_python() -> PathBuf {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    let setup = "run scripts/setup.sh (it installs the pinned MCP Python SDK into .venv)";
    assert!(python.is_file(), "{} is missing: {setup}", python.display());
    let pins = std::fs::read_to_string(root.join("scripts/requirements.txt")).expect("scripts/requirements.txt");
    let pinned = pins.lines().find_map(|l| l.strip_prefix("mcp==")).expect("an mcp==<version> pin in scripts/requirements.txt");
    let out = Command::new(&python)
        .args(["-c", "import importlib.metadata as m, mcp.client.streamable_http; print(m.version('mcp'))"])
        .output()
        .expect("running .venv/bin/python");
    let have = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && have == pinned.trim(),
        "the MCP Python SDK in .venv is {:?}, want {pinned}: {setup}\n{}",
        have,
        String::from_utf8_lossy(&out.stderr)
    );
    python
}

/// Runs the SDK client as `agent` (or with no client certificate); returns its exit code and
/// JSON summary.
fn run_client(python: &Path, s: &Stack, agent: Option<&str>, token: &str) -> (i32, Value) {
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/python/mcp_client.py"))
        .args(["--url", &s.url(), "--token", token])
        .arg("--ca")
        .arg(s.certs().join("ca.pem"));
    if let Some(agent) = agent {
        let dir = s.certs().join("agents");
        cmd.arg("--cert").arg(dir.join(format!("{agent}.pem")));
        cmd.arg("--key").arg(dir.join(format!("{agent}-key.pem")));
    }
    let out = cmd.output().expect("running tests/python/mcp_client.py");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("mcp_client.py printed no JSON summary ({e}; {}):\n{stdout}\n{stderr}", out.status));
    eprintln!("mcp_client.py ({}):\n{stdout}\nstderr:\n{stderr}", out.status);
    (out.status.code().unwrap_or(-1), summary)
}

#[test]
fn python_sdk_with_client_certificate_and_user_jwt() {
    let python = sdk_python();
    let s = stack();
    let token = s.user("alice", "sre");
    let (code, sum) = run_client(&python, s, Some("reader"), &token);
    assert_eq!(code, 0, "the SDK client's checks failed: {}", sum["failures"]);
    assert_eq!(sum["connected"], true);
    assert_eq!(sum["bearer_on_every_request"], true, "{sum}");
    let tools: Vec<&str> = sum["tools"].as_array().expect("tools").iter().filter_map(Value::as_str).collect();
    assert!(tools.contains(&"word_count"), "{tools:?}");

    // The allowed call ran in the sandbox: "the python sdk went through the gateway" is 7 words.
    assert_eq!(sum["allowed"]["is_error"], false, "{sum}");
    assert_eq!(sum["allowed"]["text"], "7", "{sum}");

    // The denied call: the SDK raised the gateway's JSON-RPC error as its MCPError (not a
    // transport failure), answered with HTTP 200 for this request's id.
    let denied = &sum["denied"];
    assert_eq!(denied["raised"], true, "{sum}");
    assert_eq!(denied["code"], -32001, "{sum}");
    assert_eq!(denied["http_status"], 200, "{sum}");
    assert!(denied["request_id"].is_number(), "{sum}");
    assert_eq!(denied["reply_id"], denied["request_id"], "{sum}");
    let reason = denied["data"]["reasons"][0].as_str().expect("a reason");
    let message = denied["message"].as_str().expect("message");
    assert!(message.contains("apply_config") && message.contains(reason), "{sum}");
    assert!(denied["data"]["reasons"].as_array().is_some_and(|r| !r.is_empty()), "{sum}");
    assert!(denied["data"]["rule_ids"].as_array().is_some_and(|r| !r.is_empty()), "{sum}");
    assert!(denied["data"]["plan_hash"].as_str().is_some_and(|h| h.starts_with("sha256:")), "{sum}");
}

#[test]
fn python_sdk_without_client_certificate_cannot_connect() {
    let python = sdk_python();
    let s = stack();
    // A valid user token does not stand in for the workload's certificate.
    let token = s.user("alice", "sre");
    let (code, sum) = run_client(&python, s, None, &token);
    assert_eq!(code, 3, "want a connection failure: {sum}");
    assert_eq!(sum["connected"], false, "{sum}");
    assert_eq!(sum["http_statuses"], serde_json::json!([]), "an HTTP response came back: {sum}");
    assert!(sum["connect_error"].as_array().is_some_and(|e| !e.is_empty()), "{sum}");
    // TLS 1.3: the handshake completes, then Envoy refuses with a certificate_required alert.
    assert_eq!(sum["tls_probe"]["handshake"], "TLSv1.3", "{sum}");
    let err = sum["tls_probe"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("CERTIFICATE_REQUIRED"), "{sum}");
}
