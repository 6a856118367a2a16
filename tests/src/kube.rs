//! A real Kubernetes control plane for the Kubernetes tests: etcd (apt `etcd-server`, on PATH),
//! and kube-apiserver and kube-controller-manager from `scripts/kube-apiserver.sh`, each on free
//! loopback ports in a temp dir. RBAC, admission (ServiceAccount, quota, limits), TokenRequest,
//! TokenReview and the namespace, service account, job, resource quota and garbage-collector
//! controllers are the real ones. There is no kubelet: [`MockKubelet`] plays it for job pods only.
//!
//! A missing piece (etcd, the script, a daemon that dies) panics with the reason: never a skip.
//!
//! The daemons and the mock kubelet live on a thread of their own (with its own tokio runtime),
//! not on the test's runtime: a cluster shared by many `#[tokio::test]`s (each with its own
//! runtime) keeps working when the test that started it ends. That thread also spawns the
//! daemons, which die with it (PR_SET_PDEATHSIG), so none outlives the test process.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ::kube::api::{Api, DeleteParams, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use serde_json::json;

use crate::repo_root;

mod control_plane;
mod kubelet;
use control_plane::{at_exit, boot, daemon_logs, write_kubeconfig, Daemons};
pub use kubelet::{MockKubelet, PodToken};

/// The label every pod the runner creates carries; the mock kubelet plays only these.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=portcullis";
/// Where the runner's identity lives (as the chart installs it).
pub const RUNNER_NAMESPACE: &str = "portcullis-system";
pub const RUNNER_SERVICE_ACCOUNT: &str = "portcullis-runner";
/// The chart's list of the runner's RBAC rules, relative to the repository root.
pub const RUNNER_RBAC: &str = "charts/portcullis/files/runner-rbac.yaml";

/// A running control plane. Dropping it kills the daemons and deletes its directory.
pub struct KubeCluster {
    dir: tempfile::TempDir,
    api_url: String,
    config: Config,
    /// The harness thread's runtime: the mock kubelet runs there.
    harness: tokio::runtime::Handle,
    harness_client: Client,
    daemons: Daemons,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    kubelet: tokio::sync::OnceCell<MockKubelet>,
    runner: tokio::sync::Mutex<RunnerIdentity>,
    /// From `start()` to a ready API server and a working controller manager.
    pub started_in: Duration,
}

/// What [`KubeCluster::runner_identity`] has set up so far.
#[derive(Default)]
struct RunnerIdentity {
    extra_rules: Vec<PolicyRule>,
    kubeconfig: Option<PathBuf>,
}

/// One cluster for the whole test binary, started by the first test that asks. Its daemons die
/// with the test process; its directory is removed at exit.
pub async fn shared() -> &'static KubeCluster {
    static SHARED: tokio::sync::OnceCell<KubeCluster> = tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let cluster = KubeCluster::start().await;
            eprintln!("shared kube cluster ready in {:?} at {}", cluster.started_in, cluster.api_url);
            at_exit::register(cluster.daemons.clone(), cluster.dir().to_owned());
            cluster
        })
        .await
}

impl KubeCluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager; returns once the API server is
    /// ready and the controller manager has done its first work. Panics if anything is missing.
    pub async fn start() -> KubeCluster {
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("portcullis-kube-").tempdir().expect("temp dir for the cluster");
        let daemons = Daemons::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (path, boot_daemons) = (dir.path().to_owned(), daemons.clone());
        let thread = std::thread::Builder::new()
            .name("kube-harness".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("harness runtime");
                rt.block_on(async move {
                    match boot(&path, &boot_daemons).await {
                        Ok(booted) => {
                            let _ = ready_tx.send(Ok(booted));
                            // Serve the mock kubelet until the cluster is dropped.
                            let _ = stop_rx.await;
                        }
                        Err(e) => {
                            boot_daemons.kill_all();
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
            })
            .expect("spawning the kube harness thread");
        let booted = match ready_rx.await {
            Ok(Ok(booted)) => booted,
            Ok(Err(e)) => panic!("the Kubernetes control plane did not start: {e}"),
            Err(_) => panic!("the kube harness thread died while starting the control plane (see its panic above)"),
        };
        KubeCluster {
            dir,
            api_url: booted.api_url,
            config: booted.config,
            harness: booted.harness,
            harness_client: booted.client,
            daemons,
            stop: Some(stop_tx),
            thread: Some(thread),
            kubelet: tokio::sync::OnceCell::new(),
            runner: tokio::sync::Mutex::default(),
            started_in: started.elapsed(),
        }
    }

    /// A client acting as the cluster admin (group system:masters), bound to the caller's tokio
    /// runtime: call it from the test that uses it.
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("admin kube client")
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The API server's CA bundle (its serving certificate and the self-signed CA behind it).
    pub fn ca_path(&self) -> PathBuf {
        self.dir().join("certs/apiserver.crt")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir().join("admin.kubeconfig")
    }

    /// The cluster's directory: daemon logs (`*.log`), keys, kubeconfigs, etcd data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of each daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        daemon_logs(self.dir(), 40)
    }

    /// Process ids of etcd, kube-apiserver and kube-controller-manager.
    pub fn pids(&self) -> Vec<u32> {
        self.daemons.pids()
    }

    /// Writes a kubeconfig for this cluster that authenticates with `token`, with one context per
    /// name in `contexts` (all the same cluster and user; the first is current).
    pub fn write_kubeconfig(&self, file: &str, token: &str, contexts: &[&str]) -> PathBuf {
        let path = self.dir().join(file);
        write_kubeconfig(&path, &self.api_url, &self.ca_path(), token, contexts).expect("writing a kubeconfig");
        path
    }

    /// The runner's identity as the chart installs it: namespace `portcullis-system`,
    /// ServiceAccount `portcullis-runner`, a ClusterRole holding exactly the chart's rules
    /// ([`RUNNER_RBAC`]) plus `extra_rules` (the tools' grants, which the runner must hold to
    /// put them into a job's Role), bound to it. Returns a kubeconfig (context `default`) with a
    /// one-hour token of that ServiceAccount, so the real API server enforces the chart's rules.
    ///
    /// Calling it again (tests sharing a cluster) adds its `extra_rules` to the ClusterRole, so
    /// the role holds the union of the tools' grants, as the chart's does with the catalog's,
    /// and returns the same kubeconfig.
    pub async fn runner_identity(&self, extra_rules: &[PolicyRule]) -> PathBuf {
        let mut identity = self.runner.lock().await;
        for rule in extra_rules {
            if !identity.extra_rules.contains(rule) {
                identity.extra_rules.push(rule.clone());
            }
        }
        let client = self.client();
        let mut rules = chart_runner_rules();
        rules.extend(identity.extra_rules.iter().cloned());
        let ns: Namespace = from_json(json!({"metadata": {"name": RUNNER_NAMESPACE}}));
        create_or_keep(&Api::all(client.clone()), &ns).await;
        let sa: ServiceAccount = from_json(json!({"metadata": {"name": RUNNER_SERVICE_ACCOUNT}}));
        create_or_keep(&Api::namespaced(client.clone(), RUNNER_NAMESPACE), &sa).await;
        let role = ClusterRole {
            metadata: from_json(json!({"name": RUNNER_SERVICE_ACCOUNT})),
            rules: Some(rules.clone()),
            ..Default::default()
        };
        create_or_replace(&Api::all(client.clone()), &role).await;
        let binding: ClusterRoleBinding = from_json(json!({
            "metadata": {"name": RUNNER_SERVICE_ACCOUNT},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RUNNER_SERVICE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": RUNNER_SERVICE_ACCOUNT, "namespace": RUNNER_NAMESPACE}],
        }));
        create_or_replace(&Api::all(client.clone()), &binding).await;
        // The authorizer reads RBAC objects from an informer cache: wait until it sees these.
        let user = format!("system:serviceaccount:{RUNNER_NAMESPACE}:{RUNNER_SERVICE_ACCOUNT}");
        for rule in rules.iter().filter(|r| r.resource_names.as_ref().is_none_or(|n| n.is_empty())) {
            let (Some(verb), Some(group), Some(resource)) = (
                rule.verbs.first(),
                rule.api_groups.as_ref().and_then(|g| g.first()),
                rule.resources.as_ref().and_then(|r| r.first()),
            ) else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.subject_access_review(&user, "", verb, group, resource).await {
                assert!(Instant::now() < deadline, "RBAC never allowed {user} to {verb} {group}/{resource}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(path) = &identity.kubeconfig {
            return path.clone();
        }
        let token = self.service_account_token(RUNNER_NAMESPACE, RUNNER_SERVICE_ACCOUNT, 3600, &[]).await;
        let path = self.write_kubeconfig("runner.kubeconfig", &token, &["default"]);
        identity.kubeconfig = Some(path.clone());
        path
    }

    /// The rules of the runner's ClusterRole: the chart's, then every tool grant passed to
    /// [`KubeCluster::runner_identity`] so far.
    pub async fn runner_rules(&self) -> Vec<PolicyRule> {
        let mut rules = chart_runner_rules();
        rules.extend(self.runner.lock().await.extra_rules.iter().cloned());
        rules
    }

    /// A token for ServiceAccount `namespace/name` (TokenRequest as admin, not bound to any
    /// object). Empty `audiences`: the API server's own.
    pub async fn service_account_token(&self, namespace: &str, name: &str, seconds: i64, audiences: &[&str]) -> String {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
                expiration_seconds: Some(seconds),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
        answer.status.expect("TokenRequest answered without a status").token
    }

    /// Would the API server let `user` (a user name, or `system:serviceaccount:<ns>:<name>`,
    /// whose groups are then added as the authenticator would) do `verb` on `group`/`resource`
    /// (`pods/log` names a subresource) in `namespace` ("" = cluster-wide)? SubjectAccessReview.
    pub async fn subject_access_review(&self, user: &str, namespace: &str, verb: &str, group: &str, resource: &str) -> bool {
        let mut groups = vec!["system:authenticated".to_owned()];
        if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
            let sa_namespace = rest.split(':').next().unwrap_or_default();
            groups.push("system:serviceaccounts".to_owned());
            groups.push(format!("system:serviceaccounts:{sa_namespace}"));
        }
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_owned())),
            None => (resource, None),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_owned()),
                groups: Some(groups),
                resource_attributes: Some(ResourceAttributes {
                    namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                    verb: Some(verb.to_owned()),
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client())
            .create(&PostParams::default(), &review)
            .await
            .unwrap_or_else(|e| panic!("SubjectAccessReview: {e}"));
        answer.status.is_some_and(|s| s.allowed)
    }

    /// The user name the API server gives `token` (for its own audiences), or None if it does
    /// not accept the token. TokenReview.
    pub async fn token_review(&self, token: &str) -> Option<String> {
        self.token_review_for(token, &[]).await
    }

    /// Like [`KubeCluster::token_review`], for a token meant for `audiences`.
    pub async fn token_review_for(&self, token: &str, audiences: &[&str]) -> Option<String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!audiences.is_empty()).then(|| audiences.iter().map(|a| (*a).to_owned()).collect()),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client())
            .create(&PostParams::default(), &review)
            .await
            .unwrap_or_else(|e| panic!("TokenReview: {e}"));
        let status = answer.status?;
        if status.authenticated != Some(true) {
            return None;
        }
        status.user.and_then(|u| u.username)
    }

    pub async fn namespace_exists(&self, name: &str) -> bool {
        Api::<Namespace>::all(self.client())
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("GET namespace {name}: {e}"))
            .is_some()
    }

    /// Waits until namespace `name` is gone (the namespace controller has emptied and removed
    /// it). Some(how long it took), or None if it is still there after `timeout`. Expect at least
    /// 5 s: the namespace controller waits that long (a constant) before it acts on a deletion.
    pub async fn wait_namespace_gone(&self, name: &str, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if !self.namespace_exists(name).await {
                return Some(started.elapsed());
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes namespace `name` (foreground, as the runner does); a missing one is fine.
    pub async fn delete_namespace(&self, name: &str) {
        match Api::<Namespace>::all(self.client()).delete(name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => panic!("DELETE namespace {name}: {e}"),
        }
    }

    /// Waits for Job `namespace/name` to get a true `Complete` or `Failed` condition (from the
    /// job controller) and returns it; panics after `timeout` with the Job's status.
    pub async fn wait_job_finished(&self, namespace: &str, name: &str, timeout: Duration) -> Job {
        let api: Api<Job> = Api::namespaced(self.client(), namespace);
        let started = Instant::now();
        loop {
            let job = api.get(name).await.unwrap_or_else(|e| panic!("GET job {namespace}/{name}: {e}"));
            if job_condition(&job).is_some() {
                return job;
            }
            assert!(started.elapsed() < timeout, "job {namespace}/{name} did not finish in {timeout:?}: {:?}", job.status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the mock kubelet (once per cluster; later calls return the same one). Returns once
    /// it watches, so pods created afterwards are sure to be played.
    pub async fn start_mock_kubelet(&self) -> MockKubelet {
        self.kubelet
            .get_or_init(|| async {
                let (kubelet, synced) = MockKubelet::spawn(&self.harness, self.harness_client.clone(), self.daemons.stopping.clone());
                synced.await.expect("the mock kubelet stopped before its first pod list");
                kubelet
            })
            .await
            .clone()
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        self.daemons.kill_all();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// "Complete" or "Failed", if the Job has that condition set to True.
pub fn job_condition(job: &Job) -> Option<&str> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find_map(|c| {
        (c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed")).then_some(c.type_.as_str())
    })
}

/// The runner's rules exactly as the chart has them ([`RUNNER_RBAC`]).
pub fn chart_runner_rules() -> Vec<PolicyRule> {
    let path = repo_root().join(RUNNER_RBAC);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not a list of PolicyRules: {e}", path.display()))
}

/// A client authenticating as the kubeconfig at `path` says (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    Client::try_from(config).expect("kube client")
}

/// Is `e` an API answer with HTTP status `code`?
pub fn is_status(e: &::kube::Error, code: u16) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == code)
}

fn from_json<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("object literal")
}

async fn create_or_keep<K>(api: &Api<K>, object: &K)
where
    K: ::kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + k8s_openapi::serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 409) => {}
        Err(e) => panic!("creating {:?}: {e}", object.meta().name),
    }
}

async fn create_or_replace<K>(api: &Api<K>, object: &K)
where
    K: ::kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + k8s_openapi::serde::Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), object).await {
        Ok(_) => return,
        Err(e) if is_status(&e, 409) => {}
        Err(e) => panic!("creating {name}: {e}"),
    }
    let current = api.get(&name).await.unwrap_or_else(|e| panic!("GET {name}: {e}"));
    let mut object = object.clone();
    object.meta_mut().resource_version = current.meta().resource_version.clone();
    api.replace(&name, &PostParams::default(), &object).await.unwrap_or_else(|e| panic!("replacing {name}: {e}"));
}
