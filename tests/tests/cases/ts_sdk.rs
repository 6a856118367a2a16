//! The official MCP TypeScript SDK (npm `@modelcontextprotocol/sdk`, pinned in
//! tests/node/package.json) through Envoy and the filter: tests/node/sdk_client.mjs runs the
//! SDK's `Client` over its Streamable HTTP transport, presenting an agent's certificate, and
//! reports each step of a JSON script as the calling code saw it.

use std::path::PathBuf;

use portcullis_e2e::mcp::rmcp_client;
use portcullis_e2e::{repo_root, Stack};
use serde_json::{json, Value};

use crate::cases::denial::assert_policy_denial;
use crate::stack;

const SETUP: &str = "run scripts/setup.sh (it installs the locked packages into tests/node), or `cd tests/node && npm install`";

/// The version of `package` that tests/node installed, if any.
fn installed(dir: &std::path::Path, package: &str) -> Option<String> {
    let manifest = std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json")).ok()?;
    serde_json::from_str::<Value>(&manifest).ok()?["version"].as_str().map(str::to_owned)
}

/// tests/node, after checking that Node.js runs and the pinned packages are installed there.
/// Never skips: without them, fail with the fix.
fn node_dir() -> PathBuf {
    let out = std::process::Command::new("node").arg("--version").output();
    let version = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        other => panic!("`node --version` failed ({other:?}): install Node.js 20 or newer, then {SETUP}"),
    };
    let major: u32 = version.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    assert!(major >= 20, "Node.js {version} is too old: tests/node needs 20 or newer");
    let dir = repo_root().join("tests/node");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).expect("tests/node/package.json")).expect("package.json is JSON");
    for package in ["@modelcontextprotocol/sdk", "undici"] {
        let pinned = manifest["dependencies"][package].as_str().unwrap_or_else(|| panic!("tests/node/package.json pins no {package}"));
        let have = installed(&dir, package);
        assert_eq!(have.as_deref(), Some(pinned), "{package} in tests/node/node_modules is {have:?}, want {pinned}: {SETUP}");
    }
    dir
}

/// Runs `script` through the TypeScript SDK as `agent`; returns its one-line JSON summary,
/// after checking that it connected and ran every step.
async fn run_script(s: &Stack, agent: &str, authorization: Option<&str>, script: &Value) -> Value {
    let dir = node_dir();
    let certs = s.certs();
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&dir)
        .arg("sdk_client.mjs")
        .args(["--url", &s.url(), "--script", &script.to_string()])
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("agents/{agent}.pem")))
        .arg("--key")
        .arg(certs.join(format!("agents/{agent}-key.pem")));
    if let Some(authorization) = authorization {
        cmd.args(["--authorization", authorization]);
    }
    let out = cmd.output().await.expect("running node tests/node/sdk_client.mjs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("sdk_client.mjs ({}):\n{stdout}\nstderr:\n{stderr}", out.status);
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("sdk_client.mjs printed no JSON summary ({}):\n{stdout}\n{stderr}", out.status));
    assert!(out.status.success() && summary["connect"]["ok"].is_object(), "the TypeScript SDK did not connect: {summary}");
    let steps = summary["steps"].as_array().map_or(0, Vec::len);
    assert_eq!(Some(steps), script.as_array().map(Vec::len), "not every step ran: {summary}");
    summary
}

fn sorted(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names
}

/// The text of a successful CallToolResult in a step's summary.
fn call_text(step: &Value) -> String {
    assert!(step["ok"].is_object() && step["ok"]["isError"] != true, "the call failed: {step}");
    step["ok"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text result: {step}")).trim().to_owned()
}

#[tokio::test]
async fn ts_sdk_sees_the_trimmed_tool_list_and_runs_an_allowed_call() {
    let s = stack();
    let script = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "word_count", "arguments": {"text": "the typescript sdk went through the gateway"}},
    ]);
    let sum = run_script(s, "reader", None, &script).await;
    let listed = sum["steps"][0]["ok"]["tools"].as_array().unwrap_or_else(|| panic!("no tool list: {sum}"));
    let ts = sorted(listed.iter().filter_map(Value::as_str).map(str::to_owned));

    // The same agent through rmcp sees exactly the same trimmed list.
    let client = rmcp_client(s.http_client(Some("reader")), &s.url()).await.unwrap();
    let rmcp = sorted(client.list_tools(None).await.unwrap().tools.into_iter().map(|t| t.name.to_string()));
    client.cancel().await.ok();
    assert_eq!(ts, rmcp, "the TypeScript SDK and rmcp see different tool lists");
    for tool in ["inspect_sandbox", "word_count"] {
        assert!(ts.iter().any(|t| t == tool), "a reader may call {tool}: {ts:?}");
    }
    for tool in ["apply_config", "delete_namespace", "tail_logs"] {
        assert!(!ts.iter().any(|t| t == tool), "a reader may not call {tool}, yet it is listed: {ts:?}");
    }

    // The allowed call ran in the sandbox: the text is 7 words.
    assert_eq!(call_text(&sum["steps"][1]), "7", "{sum}");
}

#[tokio::test]
async fn ts_sdk_denied_call_is_an_mcp_error_with_the_policy_data() {
    let s = stack();
    let script = json!([
        {"op": "call", "tool": "apply_config", "arguments": {"name": "ts-sdk-denial", "content": "x: 1"}},
        {"op": "call", "tool": "word_count", "arguments": {"text": "typescript after a denial"}},
    ]);
    let sum = run_script(s, "reader", None, &script).await;
    let step = &sum["steps"][0];
    let error = &step["error"];
    assert_eq!(error["kind"], "mcp", "the SDK must raise McpError, not a transport error: {step}");
    let code = error["code"].as_i64().unwrap_or_else(|| panic!("no code: {step}"));
    assert_policy_denial(code, error["message"].as_str().unwrap_or_default(), &error["data"], "apply_config");
    // Answered on the call's own POST, with HTTP 200 (a 403 is what the SDK makes a transport
    // error of).
    assert_eq!(step["http"][0]["method"], "tools/call", "{step}");
    assert_eq!(step["http"][0]["status"], 200, "{step}");

    // The denial ended that request only: the session still runs an allowed call.
    assert_eq!(call_text(&sum["steps"][1]), "4", "{sum}");
}

#[tokio::test]
async fn ts_sdk_acts_for_a_user_with_a_bearer_token() {
    let s = stack();
    // Apply tools need a verified user; the SDK sends the token on every request (the session
    // belongs to the user too, so one request without it would be refused).
    let bearer = format!("Bearer {}", s.user("alice", "sre"));
    let script = json!([{"op": "call", "tool": "apply_config", "arguments": {"name": "ts-sdk", "content": "replicas: 3"}}]);
    let sum = run_script(s, "operator", Some(&bearer), &script).await;
    assert!(call_text(&sum["steps"][0]).contains("wrote /tmp/config/ts-sdk (11 bytes)"), "{sum}");
}
