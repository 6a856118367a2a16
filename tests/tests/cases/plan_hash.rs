//! The filter inside Envoy (wasm) and the runner compute the same plan hash, byte for byte,
//! for every golden vector of core/tests/data/plan_hash.json.

use portcullis_e2e::mcp::post;
use serde_json::Value;

use crate::stack;

#[tokio::test]
async fn filter_and_runner_agree_on_every_golden_vector() {
    let s = stack();
    let doc: Value = serde_json::from_str(include_str!("../../../core/tests/data/plan_hash.json")).unwrap();
    // The role-less identity is denied every call, and the denial (or, for arguments outside
    // the tool's schema, the -32602 refusal) carries the plan hash the filter computed, so no
    // vector executes anything.
    let http = s.http_client(Some("intruder"));
    for v in doc["vectors"].as_array().unwrap() {
        let (name, request, want) = (v["name"].as_str().unwrap(), v["request"].as_str().unwrap(), v["plan_hash"].as_str().unwrap());
        let r = post(&http, &s.url(), None, &[], request).await.unwrap();
        assert!(r.error_code() == Some(-32001) || (r.status, r.error_code()) == (400, Some(-32602)), "{name}: {}", r.text);
        let in_filter = r.message["error"]["data"]["plan_hash"].as_str().unwrap_or_default();

        let mut child = std::process::Command::new(portcullis_e2e::portcullis_bin())
            .arg("plan-hash")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        let in_runner = String::from_utf8(out.stdout).unwrap();

        assert_eq!(in_filter, want, "{name}: filter (wasm in Envoy)");
        assert_eq!(in_runner.trim(), want, "{name}: runner");
    }
    // Integers past 2^53 cannot be hashed exactly: refused with -32602, never approximated.
    for v in doc["invalid"].as_array().unwrap() {
        let r = post(&http, &s.url(), None, &[], v["request"].as_str().unwrap()).await.unwrap();
        assert_eq!((r.status, r.error_code()), (400, Some(-32602)), "{}", r.text);
    }
}

/// One number, four spellings, one plan hash: the tool must get the same input for each, so
/// it behaves the same (an approval bound to the hash of `2` covers exactly what `2.0` runs).
/// tail_logs feeds `lines` to a shell integer test, which `2.0` used to break.
#[tokio::test]
async fn every_spelling_of_a_number_runs_as_its_canonical_form() {
    let s = stack();
    let http = s.http_client(Some("operator"));
    let session = portcullis_e2e::mcp::open_session(&http, &s.url()).await.unwrap();
    let mut outputs = Vec::new();
    for spelling in ["2", "2.0", "2e0", "20e-1", "0.2e1"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"tail_logs","arguments":{{"namespace":"team-a","pod":"web-0","lines":{spelling}}}}}}}"#
        );
        let r = post(&http, &s.url(), Some(&session), &[], &body).await.unwrap();
        assert_eq!(r.status, 200, "lines {spelling}: {}", r.text);
        let text = r.message["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned();
        outputs.push((spelling, r.message["result"]["isError"].clone(), text));
    }
    let (_, _, want) = &outputs[0];
    assert_eq!(want, "team-a/web-0: log line 1\nteam-a/web-0: log line 2\n");
    for (spelling, is_error, text) in &outputs {
        assert_eq!((is_error, text), (&Value::Bool(false), want), "lines {spelling} ran differently from lines 2");
    }
}
