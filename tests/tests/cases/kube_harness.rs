//! The Kubernetes harness is real: a real API server enforces RBAC, admission and tokens, the
//! real controller manager finishes Jobs and removes namespaces, and the mock kubelet (the only
//! mock) plays pods through the API. These tests share one cluster (`kube::shared()`), except
//! the one that checks a cluster's start and stop.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use portcullis_e2e::kube::{self as harness, client_from_kubeconfig, is_status, job_condition, KubeCluster};
use serde_json::{json, Value};

const RUNNER: &str = "system:serviceaccount:portcullis-system:portcullis-runner";

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object literal")
}

/// A namespace with ServiceAccount `job`, as the runner makes them.
async fn job_namespace(cluster: &KubeCluster, name: &str) {
    let client = cluster.client();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object(json!({"metadata": {"name": name}})))
        .await
        .expect("namespace");
    Api::<ServiceAccount>::namespaced(client, name)
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "job"}})))
        .await
        .expect("service account");
}

/// The pod spec the runner gives its jobs (labels, a `tool` container), with `env` for the mock
/// kubelet and extra `volumes` / `mounts`.
fn pod_template(env: Value, volumes: Value, mounts: Value) -> Value {
    json!({
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "portcullis", "portcullis.dev/job-id": "harness"}},
        "spec": {
            "serviceAccountName": "job",
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "volumes": volumes,
            "containers": [{"name": "tool", "image": "registry.invalid/tool:1", "env": env, "volumeMounts": mounts}],
        },
    })
}

async fn create_job(cluster: &KubeCluster, namespace: &str, env: Value) {
    let job: Job = object(json!({
        "metadata": {"name": "job"},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 120, "template": pod_template(env, json!([]), json!([]))},
    }));
    Api::<Job>::namespaced(cluster.client(), namespace).create(&PostParams::default(), &job).await.expect("job");
}

async fn only_pod(cluster: &KubeCluster, namespace: &str) -> Pod {
    let pods = Api::<Pod>::namespaced(cluster.client(), namespace).list(&ListParams::default()).await.expect("pods");
    assert_eq!(pods.items.len(), 1, "one pod in {namespace}");
    pods.items.into_iter().next().expect("pod")
}

/// Every (group, resource, verb) a rule names.
fn rule_triples(rule: &PolicyRule) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for group in rule.api_groups.iter().flatten() {
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                out.push((group.clone(), resource.clone(), verb.clone()));
            }
        }
    }
    out
}

fn terminated(pod: &Pod) -> (i32, String, String) {
    let status = pod.status.as_ref().expect("pod status");
    let container = &status.container_statuses.as_ref().expect("container statuses")[0];
    let t = container.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("terminated state");
    (t.exit_code, t.reason.clone().unwrap_or_default(), t.message.clone().unwrap_or_default())
}

#[tokio::test]
async fn cluster_starts_ready_and_its_drop_kills_every_daemon() {
    let cluster = KubeCluster::start().await;
    eprintln!("kube cluster (etcd, kube-apiserver, kube-controller-manager) ready in {:?}", cluster.started_in);
    let version = cluster.client().apiserver_version().await.expect("version");
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "20"), "{version:?}");
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3, "etcd, kube-apiserver, kube-controller-manager");
    let dir = cluster.dir().to_owned();
    drop(cluster);
    for pid in pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "pid {pid} still runs after the cluster was dropped");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn runner_identity_has_exactly_the_chart_rules_and_nothing_more() {
    let cluster = harness::shared().await;
    let extra = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["get".into(), "list".into()],
        ..Default::default()
    };
    let kubeconfig = cluster.runner_identity(std::slice::from_ref(&extra)).await;

    // The chart's rules, then the tool grants (other tests of this binary may add theirs).
    let rules = Api::<ClusterRole>::all(cluster.client()).get("portcullis-runner").await.expect("role").rules;
    let chart = harness::chart_runner_rules();
    assert!(!chart.is_empty());
    let rules = rules.unwrap_or_default();
    assert_eq!(rules, cluster.runner_rules().await);
    assert_eq!(rules[..chart.len()], chart[..]);
    assert!(rules[chart.len()..].contains(&extra));

    // Every verb on every resource the chart lists is allowed, anywhere, and the grant too.
    for rule in &chart {
        for (group, resource, verb) in rule_triples(rule) {
            assert!(cluster.subject_access_review(RUNNER, "anywhere", &verb, &group, &resource).await, "{verb} {group}/{resource}");
        }
    }
    assert!(cluster.subject_access_review(RUNNER, "anywhere", "list", "", "configmaps").await);
    assert!(!cluster.subject_access_review(RUNNER, "kube-system", "get", "", "secrets").await);
    assert!(!cluster.subject_access_review(RUNNER, "kube-system", "list", "", "secrets").await);
    assert!(!cluster.subject_access_review(RUNNER, "", "escalate", "rbac.authorization.k8s.io", "clusterroles").await);

    // Real calls with the runner's kubeconfig: the API server enforces the same.
    let runner = client_from_kubeconfig(&kubeconfig).await;
    let namespaces: Api<Namespace> = Api::all(runner.clone());
    namespaces
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "harness-runner-made"}})))
        .await
        .expect("the runner may create a namespace");
    namespaces.delete("harness-runner-made", &DeleteParams::foreground()).await.expect("and delete it");
    let secrets: Api<Secret> = Api::namespaced(runner, "kube-system");
    let err = secrets.list(&ListParams::default()).await.expect_err("the runner must not list secrets");
    assert!(is_status(&err, 403), "{err}");
    let err = secrets.get("anything").await.expect_err("the runner must not read a secret");
    assert!(is_status(&err, 403), "{err}");
}

#[tokio::test]
async fn mock_kubelet_finishes_a_job_that_the_job_controller_completes() {
    let cluster = harness::shared().await;
    let kubelet = cluster.start_mock_kubelet().await;
    job_namespace(cluster, "harness-job-ok").await;
    let started = Instant::now();
    create_job(cluster, "harness-job-ok", json!([{"name": "PORTCULLIS_TEST_STDOUT", "value": "hello from the tool"}])).await;
    let job = cluster.wait_job_finished("harness-job-ok", "job", Duration::from_secs(60)).await;
    eprintln!("job created -> Complete in {:?}", started.elapsed());
    assert_eq!(job_condition(&job), Some("Complete"), "{:?}", job.status);
    assert_eq!(job.status.as_ref().and_then(|s| s.succeeded), Some(1));
    let pod = only_pod(cluster, "harness-job-ok").await;
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded"));
    assert_eq!(terminated(&pod), (0, "Completed".into(), "hello from the tool".into()));
    // No node serves logs here. For a pod bound to no node, Kubernetes 1.20 answers 200 with an
    // empty log: a reader must not take that for the tool's output.
    let log = Api::<Pod>::namespaced(cluster.client(), "harness-job-ok")
        .logs(&pod.metadata.name.clone().unwrap_or_default(), &Default::default())
        .await
        .expect("pods/log");
    assert_eq!(log, "");
    assert!(kubelet.errors().is_empty(), "{:?}", kubelet.errors());
}

#[tokio::test]
async fn mock_kubelet_fails_a_job_that_the_job_controller_marks_failed() {
    let cluster = harness::shared().await;
    cluster.start_mock_kubelet().await;
    job_namespace(cluster, "harness-job-fail").await;
    let env = json!([
        {"name": "PORTCULLIS_TEST_STDOUT", "value": "boom"},
        {"name": "PORTCULLIS_TEST_EXIT", "value": "3"},
        {"name": "PORTCULLIS_TEST_DELAY_MS", "value": "200"},
    ]);
    create_job(cluster, "harness-job-fail", env).await;
    let job = cluster.wait_job_finished("harness-job-fail", "job", Duration::from_secs(60)).await;
    assert_eq!(job_condition(&job), Some("Failed"), "{:?}", job.status);
    assert_eq!(job.status.as_ref().and_then(|s| s.failed), Some(1));
    let pod = only_pod(cluster, "harness-job-fail").await;
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed"));
    assert_eq!(terminated(&pod), (3, "Error".into(), "boom".into()));
}

#[tokio::test]
async fn a_job_runs_under_a_resource_quota_and_limit_range() {
    let cluster = harness::shared().await;
    cluster.start_mock_kubelet().await;
    let ns = "harness-quota";
    job_namespace(cluster, ns).await;
    let client = cluster.client();
    let limits = json!({"cpu": "500m", "memory": "256Mi"});
    let quota: ResourceQuota = object(json!({"metadata": {"name": "job"}, "spec": {"hard": {
        "pods": "1", "requests.cpu": "500m", "limits.cpu": "500m", "requests.memory": "256Mi", "limits.memory": "256Mi",
    }}}));
    Api::<ResourceQuota>::namespaced(client.clone(), ns).create(&PostParams::default(), &quota).await.expect("quota");
    let range: LimitRange = object(json!({"metadata": {"name": "job"}, "spec": {"limits": [
        {"type": "Container", "default": limits, "defaultRequest": limits},
    ]}}));
    Api::<LimitRange>::namespaced(client.clone(), ns).create(&PostParams::default(), &range).await.expect("limit range");
    // Pods without requests get the LimitRange's defaults, and the quota admits them once the
    // quota controller has computed its status.
    create_job(cluster, ns, json!([{"name": "PORTCULLIS_TEST_STDOUT", "value": "within quota"}])).await;
    let job = cluster.wait_job_finished(ns, "job", Duration::from_secs(60)).await;
    assert_eq!(job_condition(&job), Some("Complete"), "{:?}", job.status);
    let pod = only_pod(cluster, ns).await;
    let resources = pod.spec.as_ref().and_then(|s| s.containers[0].resources.clone()).expect("resources");
    assert_eq!(serde_json::to_value(&resources.limits).expect("json"), json!({"cpu": "500m", "memory": "256Mi"}));
    // The quota controller computes the quota's status (until then admission ignores it).
    let quotas: Api<ResourceQuota> = Api::namespaced(client, ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let quota = quotas.get("job").await.expect("quota");
        if quota.status.as_ref().and_then(|s| s.hard.as_ref()).is_some_and(|h| h.contains_key("pods")) {
            break;
        }
        assert!(Instant::now() < deadline, "quota status not computed: {:?}\n{}", quota.status, cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_pod_whose_service_account_does_not_exist_is_refused() {
    let cluster = harness::shared().await;
    let client = cluster.client();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "harness-no-sa"}})))
        .await
        .expect("namespace");
    let mut pod = pod_template(json!([]), json!([]), json!([]));
    pod["metadata"]["name"] = json!("orphan");
    pod["spec"]["serviceAccountName"] = json!("missing");
    let err = Api::<Pod>::namespaced(client, "harness-no-sa")
        .create(&PostParams::default(), &object(pod))
        .await
        .expect_err("admission must refuse a pod whose ServiceAccount does not exist");
    assert!(is_status(&err, 403), "{err}");
    assert!(err.to_string().contains("service account"), "{err}");
}

#[tokio::test]
async fn a_deleted_namespace_is_emptied_and_disappears() {
    let cluster = harness::shared().await;
    job_namespace(cluster, "harness-delete-me").await;
    Api::<ConfigMap>::namespaced(cluster.client(), "harness-delete-me")
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "stdin"}, "data": {"stdin": "{}"}})))
        .await
        .expect("configmap");
    assert!(cluster.namespace_exists("harness-delete-me").await);
    cluster.delete_namespace("harness-delete-me").await;
    let gone = cluster.wait_namespace_gone("harness-delete-me", Duration::from_secs(60)).await;
    eprintln!("namespace delete -> gone in {gone:?}");
    assert!(gone.is_some(), "namespace still there after 60 s\n{}", cluster.logs());
}

#[tokio::test]
async fn a_service_account_token_stops_working_when_its_account_is_deleted() {
    let cluster = harness::shared().await;
    job_namespace(cluster, "harness-sa-token").await;
    let token = cluster.service_account_token("harness-sa-token", "job", 600, &[]).await;
    assert_eq!(cluster.token_review(&token).await.as_deref(), Some("system:serviceaccount:harness-sa-token:job"));
    assert_eq!(cluster.token_review("not-a-token").await, None);
    Api::<ServiceAccount>::namespaced(cluster.client(), "harness-sa-token")
        .delete("job", &DeleteParams::default())
        .await
        .expect("delete service account");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.token_review(&token).await.is_some() {
        assert!(Instant::now() < deadline, "token still accepted 30 s after its ServiceAccount was deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_pod_bound_token_from_the_mock_kubelet_stops_working_when_the_pod_is_deleted() {
    let cluster = harness::shared().await;
    let kubelet = cluster.start_mock_kubelet().await;
    job_namespace(cluster, "harness-pod-token").await;
    let volumes = json!([{"name": "token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "portcullis-test", "expirationSeconds": 600, "path": "token"}},
    ]}}]);
    let mounts = json!([{"name": "token", "mountPath": "/var/run/secrets/portcullis", "readOnly": true}]);
    let mut pod = pod_template(json!([{"name": "PORTCULLIS_TEST_HANG", "value": "1"}]), volumes, mounts);
    pod["metadata"]["name"] = json!("tool");
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "harness-pod-token");
    pods.create(&PostParams::default(), &object(pod)).await.expect("pod");

    let tokens = kubelet.wait_tokens("harness-pod-token", Duration::from_secs(30)).await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let t = &tokens[0];
    assert_eq!((t.pod.as_str(), t.service_account.as_str()), ("tool", "job"));
    assert_eq!((t.audience.as_deref(), t.expiration_seconds), (Some("portcullis-test"), 600));
    assert_eq!(t.path.as_deref(), Some("/var/run/secrets/portcullis/token"));
    let user = Some("system:serviceaccount:harness-pod-token:job".to_owned());
    assert_eq!(cluster.token_review_for(&t.token, &["portcullis-test"]).await, user);
    // Meant for `portcullis-test` only: the API server itself does not take it.
    assert_eq!(cluster.token_review(&t.token).await, None);

    // HANG: the pod runs and never finishes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let phase = pods.get("tool").await.expect("pod").status.and_then(|s| s.phase);
        if phase.as_deref() == Some("Running") {
            break;
        }
        assert!(Instant::now() < deadline, "pod not Running: {phase:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods.get("tool").await.expect("pod").status.and_then(|s| s.phase).as_deref(), Some("Running"));

    pods.delete("tool", &DeleteParams::default()).await.expect("delete pod");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.token_review_for(&t.token, &["portcullis-test"]).await.is_some() {
        assert!(Instant::now() < deadline, "pod-bound token still accepted 30 s after its pod was deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kubelet.errors().is_empty(), "{:?}", kubelet.errors());
}
