//! Placement by policy onto Kubernetes, end to end: an agent's call through real Envoy and the
//! filter, decided by the policy, placed on the Kubernetes backend by the decision (carried in
//! the signed ticket), run by the runner in a namespace of the real API server labelled with
//! that decision's plan hash and requester, and gone before the answer. Pods are played by the
//! mock kubelet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use portcullis_e2e::kube as harness;
use portcullis_e2e::mcp::tools_call;
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use super::placement::{audit_of, call, decision_id, policies_with_placements};

const PREFIX: &str = "pc-gateway-";

/// The example catalog with a Kubernetes section for word_count.
fn catalog_with_kubernetes(dir: &std::path::Path) -> std::path::PathBuf {
    let src = portcullis_e2e::repo_root().join("catalog/example.yaml");
    let mut catalog: Value = serde_yaml::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    let tools = catalog["tools"].as_array_mut().unwrap();
    let wc = tools.iter_mut().find(|t| t["name"] == "word_count").unwrap();
    wc["execution"]["kubernetes"] = json!({"image": "registry.invalid/tools/wc@sha256:00", "timeout_seconds": 30});
    let path = dir.join("catalog.yaml");
    std::fs::write(&path, serde_yaml::to_string(&catalog).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn a_call_the_policy_places_on_kubernetes_runs_in_a_namespace_of_its_own() {
    let cluster = harness::shared().await;
    cluster.start_mock_kubelet().await;
    let kubeconfig = super::kube_backend::runner_kubeconfig(cluster).await;
    let policies = policies_with_placements(json!({"tools": {"word_count": {"backend": "kubernetes"}}}));
    let catalog = catalog_with_kubernetes(policies.path());
    let args: Vec<String> = [
        "--policies", policies.path().to_str().unwrap(),
        "--catalog", catalog.to_str().unwrap(),
        "--backends", "local,kubernetes",
        "--kubeconfig", kubeconfig.to_str().unwrap(),
        "--kube-namespace-prefix", PREFIX,
    ]
    .map(str::to_owned)
    .to_vec();
    let stack = tokio::task::spawn_blocking(move || Stack::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap();

    // Watch the cluster while the call runs: the job's namespace and its labels.
    let seen: Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>> = Arc::default();
    let client = cluster.client();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let list = Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await.unwrap();
                for ns in list.items.into_iter().filter(|n| n.metadata.name.as_deref().is_some_and(|n| n.starts_with(PREFIX))) {
                    seen.lock().unwrap().insert(ns.metadata.name.unwrap(), ns.metadata.labels.unwrap_or_default());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let r = call(&stack, "reader", &[], &tools_call(1, "word_count", json!({"text": "placed by policy"}))).await;
    watcher.abort();
    assert_eq!(r.message["result"]["isError"], false, "{}", r.text);
    let records = audit_of(&stack, &decision_id(&r));
    let started = records.iter().find(|r| r["event"] == "job.started").unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!((&started["backend"], &started["placement"]), (&json!("kubernetes"), &json!("kubernetes")), "{records:#?}");
    let plan_hash = records[0]["plan_hash"].as_str().unwrap().trim_start_matches("sha256:").to_owned();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one namespace for the one call: {seen:?}");
    let (name, labels) = seen.into_iter().next().unwrap();
    assert_eq!(labels.get("portcullis.dev/plan-hash").map(String::as_str), Some(&plan_hash[..63]), "{labels:?}");
    assert_eq!(labels.get("portcullis.dev/tool").map(String::as_str), Some("word_count"));
    assert!(!cluster.namespace_exists(&name).await, "the namespace is gone before the answer");

    // Other tools stay on the local backend.
    let r = call(&stack, "reader", &[], &tools_call(2, "inspect_sandbox", json!({}))).await;
    let records = audit_of(&stack, &decision_id(&r));
    let started = records.iter().find(|r| r["event"] == "job.started").unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(started["backend"], "local");
}
