//! `portcullis serve`'s backends: the local one, Kubernetes contexts, or both. For each
//! Kubernetes context this connects a backend, starts its reaper (each namespace it deletes is
//! an audit record) and the warm pools the catalog asks for.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use portcullis_core::catalog::Catalog;
use portcullis_core::placement::{KUBERNETES, LOCAL};

use crate::audit::AuditLog;
use crate::service::backends::{Backends, Limits};


#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Where jobs may run: `local` (Linux namespaces on this machine), `kubernetes`, or both.
    #[arg(long, value_delimiter = ',', default_value = LOCAL)]
    pub backends: Vec<String>,
    /// The kubeconfig for the Kubernetes backend; absent: the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context a placement may name (repeatable; the first also takes placements
    /// that name no context). Absent: the kubeconfig's current context (or the in-cluster
    /// account), which placements reach by naming no context.
    #[arg(long = "kube-context")]
    pub kube_contexts: Vec<String>,
    /// RuntimeClass for job pods whose tool names none (e.g. gvisor).
    #[arg(long)]
    pub kube_runtime_class: Option<String>,
    /// Job namespaces are named `<prefix><random>`.
    #[arg(long, default_value = "portcullis-job-")]
    pub kube_namespace_prefix: String,
    /// How often the reaper looks for expired job namespaces (it also runs at start).
    #[arg(long, default_value_t = 60)]
    pub kube_reap_interval_seconds: u64,
}

impl BackendArgs {
    /// The registry, with each configured backend; Kubernetes backends' reapers and pools are
    /// spawned on the current runtime.
    pub async fn backends(&self, exe: PathBuf, limits: Limits, catalog: &Catalog, audit: &Arc<AuditLog>) -> Result<Backends> {
        let mut backends = Backends::new(limits);
        for name in &self.backends {
            match name.as_str() {
                LOCAL => {
                    crate::sandbox::local::host_supports_namespaces().context("the local sandbox backend cannot run here")?;
                    let local = crate::devstack::up::local_backend(exe.clone());
                    // Job dirs of a runner killed mid-job (its jobs died with it).
                    match local.sweep_stale_job_dirs() {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "removed the job dirs of a runner that stopped during its jobs"),
                        Err(e) => tracing::warn!(error = %e, "cannot sweep stale job dirs"),
                    }
                    backends.insert(LOCAL, None, Arc::new(local))?;
                }
                KUBERNETES => self.kubernetes(&mut backends, catalog, audit).await?,
                other => bail!("unknown backend {other:?} (expected {LOCAL} or {KUBERNETES})"),
            }
        }
        Ok(backends)
    }

    #[cfg(not(feature = "kubernetes"))]
    async fn kubernetes(&self, _: &mut Backends, _: &Catalog, _: &Arc<AuditLog>) -> Result<()> {
        bail!("--backends {KUBERNETES}: this runner was built without the Kubernetes backend (cargo feature `kubernetes`)")
    }

    #[cfg(feature = "kubernetes")]
    async fn kubernetes(&self, backends: &mut Backends, catalog: &Catalog, audit: &Arc<AuditLog>) -> Result<()> {
        use crate::audit::SANDBOX_REAPED;
        use crate::sandbox::kube::{reaper, KubeOptions, KubernetesBackend};
        use serde_json::{json, Map};
        use std::time::Duration;

        let opts = KubeOptions {
            namespace_prefix: self.kube_namespace_prefix.clone(),
            runtime_class: self.kube_runtime_class.clone(),
            ..KubeOptions::default()
        };
        let contexts: Vec<Option<&str>> = match self.kube_contexts.is_empty() {
            true => vec![None],
            false => self.kube_contexts.iter().map(|c| Some(c.as_str())).collect(),
        };
        for context in contexts {
            let backend = KubernetesBackend::connect(self.kubeconfig.as_deref(), context, opts.clone())
                .await
                .with_context(|| format!("connecting the Kubernetes backend (context {})", context.unwrap_or("default")))?;
            for tool in catalog.tools() {
                if let Some(k) = tool.execution.kubernetes.as_ref().filter(|k| k.warm_pool > 0) {
                    backend.pool().configure(&tool.name, k, k.warm_pool);
                }
            }
            tokio::spawn(backend.pool().clone().run());
            let log = audit.clone();
            let on_reaped: reaper::OnReaped = Arc::new(move |r: &reaper::Reaped| {
                let mut fields = Map::new();
                fields.insert("namespace".into(), json!(r.namespace));
                fields.insert("job_id".into(), json!(r.job_id));
                fields.insert("expires_at".into(), json!(r.expires_at));
                if let Err(e) = log.append(SANDBOX_REAPED, fields) {
                    tracing::error!(error = %e, namespace = %r.namespace, "audit record of a reaped namespace not written");
                }
            });
            tokio::spawn(reaper::run(backend.client().clone(), Duration::from_secs(self.kube_reap_interval_seconds.max(1)), on_reaped));
            backends.insert(KUBERNETES, context, Arc::new(backend))?;
        }
        Ok(())
    }
}
