//! The Kubernetes backend against a real API server and controller manager, acting as the
//! runner's ServiceAccount with exactly the chart's rules: what a job's namespace holds, what
//! its account and token can do, that nothing outlives the job, the reaper, the warm pool, and
//! that the backend uses exactly the rules it declares. Pods are played by the mock kubelet.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use kube::api::{Api, ListParams};
use portcullis_e2e::backend_suite::job;
use portcullis_e2e::kube::{self as harness, KubeCluster};
use portcullis_runner::sandbox::kube::{rbac, reaper, KubeOptions, KubernetesBackend};
use portcullis_runner::sandbox::{Backend, CancellationToken, JobSpec, NoPhases, Phase, PhaseObserver, SandboxError};
use serde_json::json;

use super::backends::{kube_backend, Namespaces};
use portcullis_e2e::backend_suite::Environments;

/// What the test tools' Roles grant; the runner must hold it to create those Roles.
fn tool_grants() -> Vec<PolicyRule> {
    vec![serde_json::from_value(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]})).unwrap()]
}

/// The runner's kubeconfig on the shared cluster, made once for every test of this binary.
pub async fn runner_kubeconfig(cluster: &KubeCluster) -> PathBuf {
    static PATH: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    PATH.get_or_init(|| async { cluster.runner_identity(&tool_grants()).await }).await.clone()
}

/// A suite job whose tool reads configmaps in its own namespace and may reach 10.0.0.0/8:443.
fn api_job(id: &str, env: &[(&str, &str)]) -> JobSpec {
    let mut spec = job(id, env, Duration::from_secs(60));
    let k = spec.kubernetes.as_mut().unwrap();
    k.rules = vec![serde_json::from_value(json!({"api_groups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]})).unwrap()];
    k.egress = vec![serde_json::from_value(json!({"cidr": "10.0.0.0/8", "ports": [443]})).unwrap()];
    k.token_audience = Some("portcullis-tools".into());
    k.token_seconds = 900;
    spec
}

async fn wait_for_namespace(envs: &Namespaces) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = Api::<Namespace>::all(envs.client.clone()).list(&ListParams::default()).await.unwrap();
        if let Some(name) = list.items.iter().filter_map(|n| n.metadata.name.clone()).find(|n| n.starts_with(&envs.prefix)) {
            return name;
        }
        assert!(Instant::now() < deadline, "no job namespace appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// While a job runs, its namespace holds exactly what its tool needs: labels and expiry, quota,
/// limits, default-deny plus the egress allowlist, its own account and Role. The account can do
/// what the Role says in its namespace and nothing outside it; its token (projected, bound to
/// the pod) has the tool's audience and lifetime, and dies with the namespace.
#[tokio::test]
async fn a_job_namespace_holds_exactly_what_its_tool_needs() {
    let cluster = harness::shared().await;
    let kubelet = cluster.start_mock_kubelet().await;
    let (backend, envs) = kube_backend("pc-objects-").await;
    let cancel = CancellationToken::new();
    let spec = api_job("objects-job-1", &[("PORTCULLIS_TEST_HANG", "1")]);
    let run = backend.execute(spec, &NoPhases, &cancel);
    let inspect = async {
        let ns = wait_for_namespace(&envs).await;
        let tokens = kubelet.wait_tokens(&ns, Duration::from_secs(30)).await;
        let c = cluster.client();
        let namespace = Api::<Namespace>::all(c.clone()).get(&ns).await.unwrap();
        let labels = namespace.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("portcullis"));
        assert_eq!(labels.get("portcullis.dev/job-id").map(String::as_str), Some("objects-job-1"));
        assert_eq!(labels.get("portcullis.dev/requester").map(String::as_str), Some("spiffe___suite_agent"));
        let annotations = namespace.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get("portcullis.dev/plan-hash"), Some(&format!("sha256:{}", "ab".repeat(32))));
        assert!(annotations.contains_key("portcullis.dev/expires-at"));

        let quota = Api::<ResourceQuota>::namespaced(c.clone(), &ns).get("job").await.unwrap();
        let hard = serde_json::to_value(quota.spec.unwrap().hard.unwrap()).unwrap();
        assert_eq!((hard["pods"].clone(), hard["secrets"].clone(), hard["limits.memory"].clone()), (json!("1"), json!("0"), json!("128Mi")));
        let limits = serde_json::to_value(Api::<LimitRange>::namespaced(c.clone(), &ns).get("job").await.unwrap().spec).unwrap();
        assert_eq!(limits["limits"][0]["max"], json!({"cpu": "250m", "memory": "128Mi"}));
        let policies = Api::<NetworkPolicy>::namespaced(c.clone(), &ns).list(&ListParams::default()).await.unwrap();
        let by_name: BTreeMap<String, serde_json::Value> =
            policies.items.into_iter().map(|p| (p.metadata.name.clone().unwrap(), serde_json::to_value(p.spec).unwrap())).collect();
        assert_eq!(by_name["default-deny"], json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}));
        assert_eq!(by_name["egress"]["egress"], json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 443}]}]));
        let sa = Api::<ServiceAccount>::namespaced(c.clone(), &ns).get("job").await.unwrap();
        assert_eq!(sa.automount_service_account_token, Some(false));
        let role = Api::<Role>::namespaced(c.clone(), &ns).get("job").await.unwrap();
        assert_eq!(serde_json::to_value(role.rules).unwrap(), json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]));

        let job_sa = format!("system:serviceaccount:{ns}:job");
        assert!(cluster.subject_access_review(&job_sa, &ns, "get", "", "configmaps").await, "its Role works in its namespace");
        assert!(!cluster.subject_access_review(&job_sa, &ns, "get", "", "secrets").await, "nothing its Role does not say");
        assert!(!cluster.subject_access_review(&job_sa, &ns, "delete", "", "configmaps").await);
        assert!(!cluster.subject_access_review(&job_sa, "kube-system", "get", "", "configmaps").await, "nothing outside its namespace");
        assert!(!cluster.subject_access_review(&job_sa, "", "list", "", "namespaces").await);

        let token = tokens.first().unwrap().clone();
        assert_eq!((token.audience.as_deref(), token.expiration_seconds), (Some("portcullis-tools"), 900));
        assert_eq!(cluster.token_review_for(&token.token, &["portcullis-tools"]).await, Some(job_sa.clone()), "the token works while the job runs");
        assert_eq!(cluster.token_review(&token.token).await, None, "only for its audience");
        let claims = jwt_claims(&token.token);
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900, "the token expires after the tool's token_seconds");
        cancel.cancel();
        (ns, token.token)
    };
    let (out, (ns, token)) = tokio::join!(run, inspect);
    assert!(out.unwrap().cancelled);
    assert!(!cluster.namespace_exists(&ns).await, "the namespace is gone when execute returns");
    // The authenticator checks the bound pod and account through its caches: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.token_review_for(&token, &["portcullis-tools"]).await.is_some() {
        assert!(Instant::now() < deadline, "the token outlived the pod it was bound to by 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A job without rules gets no Role and no token.
#[tokio::test]
async fn a_job_without_rules_gets_no_role_and_no_token() {
    let cluster = harness::shared().await;
    let (backend, envs) = kube_backend("pc-norole-").await;
    let cancel = CancellationToken::new();
    let run = backend.execute(job("norole-1", &[("PORTCULLIS_TEST_HANG", "1")], Duration::from_secs(60)), &NoPhases, &cancel);
    let inspect = async {
        let ns = wait_for_namespace(&envs).await;
        // The Job exists once populate is done; then the Role would have been created first.
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(cluster.client(), &ns);
        let deadline = Instant::now() + Duration::from_secs(30);
        while jobs.get_opt("job").await.unwrap().is_none() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Api::<Role>::namespaced(cluster.client(), &ns).list(&ListParams::default()).await.unwrap().items.is_empty());
        let pod_spec = jobs.get("job").await.unwrap().spec.unwrap().template.spec.unwrap();
        assert_eq!(pod_spec.automount_service_account_token, Some(false));
        assert!(pod_spec.volumes.unwrap_or_default().iter().all(|v| v.projected.is_none()), "no token volume");
        cancel.cancel();
    };
    let (out, ()) = tokio::join!(run, inspect);
    assert!(out.unwrap().cancelled);
}

/// A job whose tool has no Kubernetes section is refused before anything is created.
#[tokio::test]
async fn a_tool_without_a_kubernetes_section_is_refused() {
    let (backend, envs) = kube_backend("pc-nosection-").await;
    let mut spec = job("nosection", &[], Duration::from_secs(5));
    spec.kubernetes = None;
    assert!(matches!(backend.run(spec).await, Err(SandboxError::InvalidJob(m)) if m.contains("execution.kubernetes")));
    assert_eq!(envs.count().await, 0);
}

/// Set in the child process that plays a runner killed mid-job (see below).
const ORPHAN_ENV: &str = "PORTCULLIS_TEST_ORPHAN_KUBECONFIG";

/// Not a test of its own: the body of the runner process that
/// `the_reaper_removes_the_namespace_of_a_killed_runner` starts and SIGKILLs. Without the
/// variable it does nothing.
#[tokio::test]
async fn orphan_runner_process() {
    let Ok(kubeconfig) = std::env::var(ORPHAN_ENV) else { return };
    let opts = KubeOptions { namespace_prefix: "pc-orphan-".into(), expiry_grace: Duration::from_secs(1), ..KubeOptions::default() };
    let backend = KubernetesBackend::connect(Some(kubeconfig.as_ref()), None, opts).await.unwrap();
    let _ = backend.run(job("orphan-1", &[("PORTCULLIS_TEST_HANG", "1")], Duration::from_secs(2))).await;
    unreachable!("the parent kills this process while the job runs");
}

/// A runner killed mid-job (SIGKILL: no cleanup) leaves its job's namespace; once the
/// namespace's expiry has passed, the reaper deletes it and says which job it served.
#[tokio::test]
async fn the_reaper_removes_the_namespace_of_a_killed_runner() {
    let cluster = harness::shared().await;
    cluster.start_mock_kubelet().await;
    let kubeconfig = runner_kubeconfig(cluster).await;
    let envs = Namespaces { client: cluster.client(), prefix: "pc-orphan-".into() };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cases::kube_backend::orphan_runner_process", "--include-ignored", "--nocapture"])
        .env(ORPHAN_ENV, &kubeconfig)
        .spawn()
        .unwrap();
    let ns = wait_for_namespace(&envs).await;
    // Let the job start, then kill the runner the hard way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(cluster.namespace_exists(&ns).await, "a killed runner cannot clean up");
    // Its expiry is the job's timeout (2 s) plus the grace (1 s).
    let backend = KubernetesBackend::connect(Some(&kubeconfig), None, KubeOptions::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reaped = reaper::reap_once(backend.client(), SystemTime::now()).await.unwrap();
        if let Some(r) = reaped.into_iter().find(|r| r.namespace == ns) {
            assert_eq!(r.job_id.as_deref(), Some("orphan-1"));
            break;
        }
        // Another test's reaper pass (they share the cluster) may have taken it first.
        let taken = Api::<Namespace>::all(cluster.client()).get_opt(&ns).await.unwrap().is_none_or(|n| n.metadata.deletion_timestamp.is_some());
        if taken {
            break;
        }
        assert!(Instant::now() < deadline, "the reaper never took {ns}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(cluster.wait_namespace_gone(&ns, Duration::from_secs(60)).await.is_some(), "reaped namespace gone");
}

/// Records how long each phase took.
#[derive(Default)]
struct Phases(Mutex<Vec<(Phase, Duration)>>);

impl PhaseObserver for Phases {
    fn phase(&self, phase: Phase, start: SystemTime, end: SystemTime, _: Option<&SandboxError>) {
        self.0.lock().unwrap().push((phase, end.duration_since(start).unwrap_or_default()));
    }
}

impl Phases {
    fn of(&self, phase: Phase) -> Duration {
        self.0.lock().unwrap().iter().find(|(p, _)| *p == phase).map(|(_, d)| *d).unwrap()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    ready: Vec<Duration>,
    gone: Vec<Duration>,
    calls: Vec<u64>,
}

/// `n` jobs one after another; for each, submission → namespace ready (the create phase: the
/// namespace with all its objects and the Job submitted), job end → namespace gone (the
/// destroy phase), and the API requests it took.
async fn measure(backend: &KubernetesBackend, n: usize, warm: bool) -> Figures {
    let mut f = Figures { ready: vec![], gone: vec![], calls: vec![] };
    for i in 0..n {
        if warm {
            let deadline = Instant::now() + Duration::from_secs(60);
            while backend.pool().ready().get("suite").copied().unwrap_or(0) == 0 {
                assert!(Instant::now() < deadline, "the warm pool never refilled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let phases = Phases::default();
        let before = backend.ledger().requests();
        let out = backend.run_observed(api_job(&format!("timing-{warm}-{i}"), &[("PORTCULLIS_TEST_STDOUT", "ok")]), &phases).await.unwrap();
        assert!(out.success(), "{out:?}");
        f.calls.push(backend.ledger().requests() - before);
        f.ready.push(phases.of(Phase::Create));
        f.gone.push(phases.of(Phase::Destroy));
    }
    f.ready.sort();
    f.gone.sort();
    f
}

fn report(label: &str, f: &Figures) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "kube timings [{label}, n={}]: submission -> namespace ready p50 {:.0} ms p99 {:.0} ms; job end -> namespace gone p50 {:.0} ms p99 {:.0} ms; API requests per job {:?}",
        f.ready.len(), ms(percentile(&f.ready, 0.5)), ms(percentile(&f.ready, 0.99)), ms(percentile(&f.gone, 0.5)), ms(percentile(&f.gone, 0.99)),
        f.calls.iter().min().zip(f.calls.iter().max()).map(|(a, b)| if a == b { format!("{a}") } else { format!("{a}-{b}") }).unwrap_or_default()
    );
}

/// Jobs from a warm pool skip making the namespace, its quota, limits and network policy: each
/// takes fewer API requests than any cold job. Prints the timings for cold and warm jobs
/// (`PORTCULLIS_KUBE_TIMING_JOBS`, default 20 each) as figures, and asserts nothing about them:
/// this test shares two cores with the rest of the suite, so which p50 is lower says more about
/// what else ran than about the pool. Then checks that, over everything this
/// backend did (cold, warm, a reaper pass), it used exactly the requests the chart's rules
/// grant: no rule is there for nothing.
#[tokio::test]
async fn warm_pool_jobs_skip_the_namespace_setup_and_every_declared_rule_is_used() {
    let (backend, envs) = kube_backend("pc-timing-").await;
    let n: usize = std::env::var("PORTCULLIS_KUBE_TIMING_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let cold = measure(&backend, n, false).await;
    report("cold", &cold);
    let section = api_job("x", &[]).kubernetes.unwrap();
    backend.pool().configure("suite", &section, 1);
    let pool = backend.pool().clone();
    let refill = tokio::spawn(pool.run());
    let warm = measure(&backend, n, true).await;
    report("warm pool", &warm);
    refill.abort();
    assert!(warm.calls.iter().max() < cold.calls.iter().min(), "warm {:?} vs cold {:?} requests", warm.calls, cold.calls);
    // Leave nothing: the pool's last namespace is deleted like any other (the reaper would).
    while let Some(ns) = backend.pool().take("suite") {
        backend.destroy(&ns).await.unwrap();
    }
    reaper::reap_once(backend.client(), SystemTime::now()).await.unwrap();
    assert_eq!(envs.count().await, 0, "nothing left behind");
    let granted = rbac::granted(&rbac::runner_rules().unwrap());
    let mut used = backend.ledger().used();
    used.extend(backend.pool().ledger().used());
    let unused: Vec<String> = granted.difference(&used).map(|c| c.to_string()).collect();
    assert!(unused.is_empty(), "declared but never used (remove them from the chart's rules): {unused:?}");
}
