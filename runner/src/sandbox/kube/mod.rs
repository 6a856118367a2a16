//! The Kubernetes backend: each job in a namespace created for it alone, deleted after it.
//!
//! A job's namespace holds its quota and default limits, a default-deny network policy plus the
//! tool's egress allowlist, its own ServiceAccount (created before the Job, so its pod can never
//! be admitted before the account exists), the tool's Role and RoleBinding when it needs the
//! API, its stdin as a ConfigMap, and a Job of one unprivileged pod. The runner watches the Job
//! until it completes, fails or passes its deadline, reads the result (the pod's log where a
//! kubelet serves it, else the container's termination message), deletes the namespace with
//! foreground propagation and waits until it is gone.
//!
//! Namespaces carry an expiry: [`reaper`] deletes any that outlive it (a runner killed
//! mid-job). [`pool`] keeps namespaces ready for tools that ask for a warm pool. Every request
//! goes through [`rbac::Declared`], which refuses what the chart's ClusterRole does not grant.

pub mod objects;
pub mod pool;
pub mod rbac;
pub mod reaper;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use portcullis_core::catalog::KubernetesExecution;
use serde_json::json;

use super::{validate, Backend, CancellationToken, JobOutput, JobSpec, Phase, PhaseObserver, SandboxError};
use objects::NAME;
use pool::WarmPool;
use rbac::{Declared, Ledger};

/// How the backend names, labels and bounds what it creates.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Namespaces are `<prefix><random>`.
    pub namespace_prefix: String,
    /// A RuntimeClass for jobs whose tool names none (gVisor, Kata).
    pub runtime_class: Option<String>,
    /// How long past its timeout a job's namespace may live before the reaper takes it.
    pub expiry_grace: Duration,
    /// How long deleting a namespace may take before the job's teardown counts as failed.
    pub destroy_timeout: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            namespace_prefix: "portcullis-job-".into(),
            runtime_class: None,
            expiry_grace: Duration::from_secs(300),
            destroy_timeout: Duration::from_secs(120),
        }
    }
}

pub struct KubernetesBackend {
    client: Client,
    ledger: Arc<Ledger>,
    opts: KubeOptions,
    pool: Arc<WarmPool>,
}

/// An API failure, as the sandbox's error for this step.
fn api_err(step: &str) -> impl FnOnce(kube::Error) -> SandboxError + '_ {
    move |e| SandboxError::Create { context: format!("{step}: {e}"), source: std::io::Error::other(e.to_string()) }
}

impl KubernetesBackend {
    /// Connects with a kubeconfig (and one of its contexts), or in-cluster when none is given.
    pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>, opts: KubeOptions) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                let options = kube::config::KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
                kube::Config::from_custom_kubeconfig(file, &options).await.context("loading the kubeconfig")?
            }
            None => kube::Config::incluster().context("no --kubeconfig and no in-cluster service account")?,
        };
        Self::from_config(config, opts)
    }

    pub fn from_config(config: kube::Config, opts: KubeOptions) -> anyhow::Result<Self> {
        let rules = rbac::runner_rules()?;
        // The pool's requests are its own, so a job's count is the job's alone.
        let ledger = Ledger::new(&rules);
        let pool_ledger = Ledger::new(&rules);
        let client = kube::client::ClientBuilder::try_from(config.clone())?.with_layer(&Declared(ledger.clone())).build();
        let pool_client = kube::client::ClientBuilder::try_from(config)?.with_layer(&Declared(pool_ledger.clone())).build();
        let pool = WarmPool::new(pool_client, pool_ledger, opts.namespace_prefix.clone());
        Ok(KubernetesBackend { client, ledger, opts, pool })
    }

    /// What the backend has sent for jobs (requests, and each kind of request); the warm
    /// pool's are in [`WarmPool::ledger`].
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn pool(&self) -> &Arc<WarmPool> {
        &self.pool
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace of a job: a new one with its quota, limits, network policy and account,
    /// or a warm one from the pool, relabelled for the job (concurrently with [`Self::populate`]).
    async fn namespace_for(&self, job: &JobSpec, k: &KubernetesExecution, expires_at: &str) -> Result<(String, bool), SandboxError> {
        if let Some(name) = self.pool.take(&job.meta.tool) {
            return Ok((name, true));
        }
        let name = pool::fresh_name(&self.opts.namespace_prefix)?;
        create_namespace(&self.client, &name, &job.meta.tool, k, expires_at, Some(job)).await?;
        Ok((name, false))
    }

    /// A warm namespace now serves this job: its labels and expiry say so.
    async fn claim_warm(&self, ns: &str, job: &JobSpec, expires_at: &str) -> Result<(), kube::Error> {
        let (labels, annotations) = objects::job_metadata(job, expires_at);
        let patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
        Api::<Namespace>::all(self.client.clone()).patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
    }

    /// Everything of the job's own inside its namespace (its account exists already), then the
    /// Job: the pod that runs as the account is created only after the account exists.
    async fn populate(&self, ns: &str, job: &JobSpec, k: &KubernetesExecution, warm: bool, expires_at: &str) -> Result<Job, SandboxError> {
        let pp = PostParams::default();
        let c = &self.client;
        let claim = async {
            match warm {
                true => self.claim_warm(ns, job, expires_at).await,
                false => Ok(()),
            }
        };
        let stdin = async { Api::<ConfigMap>::namespaced(c.clone(), ns).create(&pp, &objects::stdin(job)).await.map(drop) };
        let role = async {
            if let Some((role, binding)) = objects::role(k) {
                Api::<Role>::namespaced(c.clone(), ns).create(&pp, &role).await?;
                Api::<RoleBinding>::namespaced(c.clone(), ns).create(&pp, &binding).await?;
            }
            Ok(())
        };
        let (a, b, d) = tokio::join!(claim, stdin, role);
        a.map_err(api_err("labelling the warm namespace for the job"))?;
        b.map_err(api_err("creating the job's stdin"))?;
        d.map_err(api_err("creating the job's role"))?;
        let spec = objects::job(job, k, self.opts.runtime_class.as_deref());
        Api::<Job>::namespaced(c.clone(), ns).create(&pp, &spec).await.map_err(api_err("creating the job"))
    }

    /// Watches the Job from its creation until it is finished or `wait` has passed.
    async fn wait_finished(&self, ns: &str, created: &Job, wait: Duration) -> Result<Option<Finished>, SandboxError> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let mut version = created.metadata.resource_version.clone().unwrap_or_else(|| "0".into());
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // The API server ends a watch at its timeout; a new one resumes where it ended.
            let wp = WatchParams::default().fields(&format!("metadata.name={NAME}")).timeout(left.as_secs().clamp(1, 290) as u32);
            let stream = api.watch(&wp, &version).await.map_err(api_err("watching the job"))?;
            let mut stream = std::pin::pin!(stream);
            let step = tokio::time::timeout(left, async {
                while let Some(event) = stream.try_next().await.map_err(api_err("watching the job"))? {
                    match event {
                        WatchEvent::Added(j) | WatchEvent::Modified(j) => {
                            if let Some(v) = &j.metadata.resource_version {
                                version = v.clone();
                            }
                            if let Some(done) = Finished::of(&j) {
                                return Ok(Some(done));
                            }
                        }
                        WatchEvent::Deleted(_) => return Err(SandboxError::Setup { message: "the job was deleted while it ran".into() }),
                        WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                        WatchEvent::Error(e) => return Err(SandboxError::Setup { message: format!("watching the job: {}", e.message) }),
                    }
                }
                Ok(None)
            })
            .await;
            match step {
                Ok(Ok(Some(done))) => return Ok(Some(done)),
                Ok(Ok(None)) | Err(_) => continue,
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// The job's output: its pod's log if the API server can get it from a kubelet, else the
    /// termination message; and the container's exit code.
    async fn result(&self, ns: &str, max_bytes: usize) -> Result<(Option<i32>, Vec<u8>, bool), SandboxError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let list = pods.list(&ListParams::default().labels(&format!("{}={}", objects::MANAGED_BY, objects::MANAGER))).await.map_err(api_err("listing the job's pod"))?;
        let Some(pod) = list.items.into_iter().next() else { return Ok((None, Vec::new(), false)) };
        let terminated = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().find(|c| c.name == objects::CONTAINER))
            .and_then(|c| c.state)
            .and_then(|s| s.terminated);
        let code = terminated.as_ref().map(|t| t.exit_code);
        let name = pod.metadata.name.unwrap_or_default();
        let lp = LogParams { container: Some(objects::CONTAINER.into()), limit_bytes: Some(max_bytes as i64 + 1), ..Default::default() };
        let message = terminated.and_then(|t| t.message).unwrap_or_default();
        let mut out = match pods.logs(&name, &lp).await {
            Ok(log) if !log.is_empty() => log.into_bytes(),
            // A pod no kubelet ran has no log to serve.
            Ok(_) => message.into_bytes(),
            Err(e) => {
                tracing::debug!(namespace = ns, error = %e, "no pod log; using the termination message");
                message.into_bytes()
            }
        };
        let truncated = out.len() > max_bytes;
        out.truncate(max_bytes);
        Ok((code, out, truncated))
    }

    /// Deletes the namespace (foreground: its objects first) and waits until it is gone.
    pub async fn destroy(&self, ns: &str) -> Result<(), SandboxError> {
        delete_and_wait(&self.client, ns, self.opts.destroy_timeout).await
    }
}

/// Creates a namespace with what every job of `k`'s tool gets before it starts: quota, limits,
/// default-deny network policy and the egress allowlist, then the job's ServiceAccount.
pub(crate) async fn create_namespace(client: &Client, name: &str, tool: &str, k: &KubernetesExecution, expires_at: &str, job: Option<&JobSpec>) -> Result<(), SandboxError> {
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone()).create(&pp, &objects::namespace(name, tool, expires_at, job)).await.map_err(api_err("creating the namespace"))?;
    let quota = async { Api::<ResourceQuota>::namespaced(client.clone(), name).create(&pp, &objects::quota(k)).await.map(drop) };
    let limits = async { Api::<LimitRange>::namespaced(client.clone(), name).create(&pp, &objects::limits(k)).await.map(drop) };
    let network = async {
        let api = Api::<NetworkPolicy>::namespaced(client.clone(), name);
        api.create(&pp, &objects::default_deny()).await?;
        if let Some(egress) = objects::egress(k) {
            api.create(&pp, &egress).await?;
        }
        Ok(())
    };
    let (a, b, c) = tokio::join!(quota, limits, network);
    a.map_err(api_err("creating the quota"))?;
    b.map_err(api_err("creating the limits"))?;
    c.map_err(api_err("creating the network policy"))?;
    // The job's account, once its namespace is bounded; before any Job, which runs as it.
    Api::<ServiceAccount>::namespaced(client.clone(), name).create(&pp, &objects::service_account()).await.map_err(api_err("creating the job's service account"))?;
    Ok(())
}

/// Deletes a namespace in the foreground and waits, on one watch, until the API server no
/// longer has it.
pub(crate) async fn delete_and_wait(client: &Client, ns: &str, timeout: Duration) -> Result<(), SandboxError> {
    let teardown = |context: String| SandboxError::Teardown { context, source: std::io::Error::other("namespace still exists") };
    let api: Api<Namespace> = Api::all(client.clone());
    let version = match api.delete(ns, &DeleteParams::foreground()).await {
        Ok(either::Either::Left(deleting)) => deleting.metadata.resource_version.unwrap_or_else(|| "0".into()),
        // Deleted at once: nothing was left to finalize.
        Ok(either::Either::Right(_)) => return Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
        Err(e) => return Err(SandboxError::Teardown { context: format!("deleting namespace {ns}: {e}"), source: std::io::Error::other(e.to_string()) }),
    };
    // From the deletion's own version on, so the event that ends it cannot be missed.
    let wp = WatchParams::default().fields(&format!("metadata.name={ns}")).timeout(timeout.as_secs().clamp(1, 290) as u32);
    let gone = async {
        let stream = api.watch(&wp, &version).await.map_err(|e| teardown(format!("watching namespace {ns}: {e}")))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.try_next().await.map_err(|e| teardown(format!("watching namespace {ns}: {e}")))? {
            match event {
                WatchEvent::Deleted(_) => return Ok(()),
                WatchEvent::Error(e) => return Err(teardown(format!("watching namespace {ns}: {}", e.message))),
                _ => {}
            }
        }
        Err(teardown(format!("namespace {ns} not gone after {timeout:?}")))
    };
    tokio::time::timeout(timeout, gone).await.unwrap_or_else(|_| Err(teardown(format!("namespace {ns} not gone after {timeout:?}"))))
}

/// How a Job ended, from its conditions.
#[derive(Debug)]
struct Finished {
    failed: bool,
    deadline: bool,
}

impl Finished {
    fn of(job: &Job) -> Option<Finished> {
        let conditions = job.status.as_ref()?.conditions.as_ref()?;
        let done = conditions.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
        let failed = done.type_ == "Failed";
        Some(Finished { failed, deadline: failed && done.reason.as_deref() == Some("DeadlineExceeded") })
    }
}

/// Deletes the namespace of a job whose `execute` future was dropped mid-way.
struct Cleanup {
    client: Client,
    ns: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let (Some(ns), Ok(handle)) = (self.ns.take(), tokio::runtime::Handle::try_current()) {
            let client = self.client.clone();
            handle.spawn(async move {
                if let Err(e) = delete_and_wait(&client, &ns, Duration::from_secs(120)).await {
                    tracing::warn!(namespace = %ns, error = %e.log_text(), "namespace of a dropped job not deleted; the reaper will");
                }
            });
        }
    }
}

/// A phase's timing, reported when it ends.
struct Timer<'a> {
    phases: &'a dyn PhaseObserver,
    phase: Phase,
    start: SystemTime,
}

impl<'a> Timer<'a> {
    fn start(phases: &'a dyn PhaseObserver, phase: Phase) -> Self {
        Timer { phases, phase, start: SystemTime::now() }
    }
    fn end(self, error: Option<&SandboxError>) {
        self.phases.phase(self.phase, self.start, SystemTime::now(), error);
    }
}

fn expiry(after: Duration) -> String {
    crate::store::rfc3339(crate::service::serve::unix_now().saturating_add(after.as_secs()))
}

#[async_trait::async_trait]
impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn execute(&self, mut job: JobSpec, phases: &dyn PhaseObserver, cancel: &CancellationToken) -> Result<JobOutput, SandboxError> {
        let Some(k) = job.kubernetes.clone() else {
            return Err(SandboxError::InvalidJob(format!("tool {:?} has no execution.kubernetes section", job.meta.tool)));
        };
        k.validate().map_err(SandboxError::InvalidJob)?;
        if !k.command.is_empty() {
            job.command = k.command.clone();
        }
        validate(&job)?;
        let started = Instant::now();
        if cancel.is_cancelled() {
            return Ok(JobOutput { cancelled: true, ..JobOutput::default() });
        }
        let timeout = Duration::from_secs(k.timeout_seconds);
        let expires_at = expiry(timeout + self.opts.expiry_grace);

        let create = Timer::start(phases, Phase::Create);
        let mut cleanup = Cleanup { client: self.client.clone(), ns: None };
        let made = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            made = async {
                let (ns, warm) = self.namespace_for(&job, &k, &expires_at).await?;
                cleanup.ns = Some(ns.clone());
                let created = self.populate(&ns, &job, &k, warm, &expires_at).await;
                // Refill only now, so the pool's requests do not slow the job it served.
                if warm {
                    self.pool.refill_soon();
                }
                Ok::<_, SandboxError>((ns, warm, created))
            } => Some(made),
        };
        let (ns, created) = match made {
            None => {
                create.end(None);
                return self.finish(cleanup, phases, started, JobOutput { cancelled: true, ..JobOutput::default() }).await;
            }
            Some(Err(e)) => {
                create.end(Some(&e));
                self.finish(cleanup, phases, started, JobOutput::default()).await?;
                return Err(e);
            }
            Some(Ok((ns, warm, created))) => {
                tracing::debug!(namespace = %ns, warm, "job namespace ready");
                (ns, created)
            }
        };
        let created = match created {
            Ok(created) => {
                create.end(None);
                created
            }
            Err(e) => {
                create.end(Some(&e));
                self.finish(cleanup, phases, started, JobOutput::default()).await?;
                return Err(e);
            }
        };

        let run = Timer::start(phases, Phase::Run);
        // The Job's own deadline ends it; the runner waits a little longer for the controller
        // to say so, and gives up after that.
        let waited = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(None),
            r = self.wait_finished(&ns, &created, timeout + Duration::from_secs(15)) => r.map_err(Some),
        };
        let mut out = JobOutput::default();
        let outcome = match waited {
            Err(None) => {
                out.cancelled = true;
                Ok(())
            }
            Err(Some(e)) => Err(e),
            Ok(None) => {
                out.timed_out = true;
                Ok(())
            }
            Ok(Some(done)) => match self.result(&ns, job.max_output_bytes.max(1)).await {
                Ok((code, stdout, truncated)) => {
                    out.timed_out = done.deadline;
                    out.exit_code = code.or(if done.failed { None } else { Some(0) });
                    out.stdout = stdout;
                    out.truncated = truncated;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        run.end(outcome.as_ref().err());
        let out = self.finish(cleanup, phases, started, out).await?;
        outcome.map(|()| out)
    }
}

impl KubernetesBackend {
    /// Destroys the job's namespace (if it got one) and stamps the output's duration.
    async fn finish(&self, mut cleanup: Cleanup, phases: &dyn PhaseObserver, started: Instant, mut out: JobOutput) -> Result<JobOutput, SandboxError> {
        if let Some(ns) = cleanup.ns.take() {
            let destroy = Timer::start(phases, Phase::Destroy);
            let gone = self.destroy(&ns).await;
            destroy.end(gone.as_ref().err());
            gone?;
        }
        out.duration = started.elapsed();
        Ok(out)
    }
}
