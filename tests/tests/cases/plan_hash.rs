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
        assert!(r.status == 403 || (r.status, r.error_code()) == (400, Some(-32602)), "{name}: {}", r.text);
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
