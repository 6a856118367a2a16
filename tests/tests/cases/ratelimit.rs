//! Per-workload rate limits: one token bucket per SPIFFE ID, shared by all Envoy workers.

use portcullis_e2e::mcp::post;
use portcullis_e2e::Stack;

#[tokio::test]
async fn over_the_limit_gets_429_with_a_json_rpc_error_and_other_workloads_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.yaml");
    // Three requests at once, then one every 50 s: the test never sees a refill.
    std::fs::write(&settings, "rate_limits:\n  default: { requests_per_second: 0.02, burst: 3 }\n").unwrap();
    let s = Stack::start_with(&["--gateway-settings", settings.to_str().unwrap()]);

    // A fresh connection per request, so requests land on different Envoy workers: the
    // bucket must still be one.
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..8 {
        let http = s.http_client(Some("reader"));
        let r = post(&http, &s.url(), None, &[], &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#)).await.unwrap();
        statuses.push(r.status);
        if r.status == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    assert_eq!(statuses.iter().filter(|&&st| st == 429).count(), 5, "burst of 3 out of 8: {statuses:?}");
    assert!(statuses[..3].iter().all(|&st| st != 429), "{statuses:?}");
    let r = limited.unwrap();
    assert_eq!(r.error_code(), Some(-32003), "{}", r.text);
    assert_eq!(r.message["id"], 3, "the error carries the request's id: {}", r.text);
    assert!(r.error_message().contains("rate limit"), "{}", r.text);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=50).contains(&retry), "retry-after {retry}");

    // Another workload has its own bucket.
    let r = post(&s.http_client(Some("operator")), &s.url(), None, &[], r#"{"jsonrpc":"2.0","id":"op","method":"ping"}"#).await.unwrap();
    assert_ne!(r.status, 429, "{}", r.text);

    let stats = s.admin_get("/stats?filter=portcullis.requests.rate_limited");
    assert!(stats.contains("portcullis.requests.rate_limited: 5"), "{stats}");
}

#[test]
fn invalid_rate_limits_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.yaml");
    std::fs::write(&settings, "rate_limits:\n  default: { requests_per_second: 0, burst: 3 }\n").unwrap();
    let out = std::process::Command::new(portcullis_e2e::portcullis_bin())
        .current_dir(portcullis_e2e::repo_root())
        .args(["up", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--gateway-settings")
        .arg(&settings)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requests_per_second"), "{err}");
}
