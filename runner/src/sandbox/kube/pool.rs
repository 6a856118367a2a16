//! Warm pools: for a tool whose catalog entry asks for one, namespaces with their quota, limits,
//! network policy and (still unused) ServiceAccount made ahead of time, so that a job only adds
//! its Role, stdin and Job. A warm namespace serves one job and is then deleted like any other; a background task
//! refills the pool. Warm namespaces carry an expiry like job namespaces, so the reaper removes
//! those a killed runner leaves behind; the pool retires its own before they expire.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use portcullis_core::catalog::KubernetesExecution;
use tokio::sync::Notify;

use crate::sandbox::SandboxError;

/// How long a warm namespace may wait for a job (its expiry annotation says so too).
pub const WARM_LIFETIME: Duration = Duration::from_secs(3600);
/// A warm namespace this close to its expiry is retired instead of used.
const RETIRE_MARGIN: Duration = Duration::from_secs(900);

pub struct WarmPool {
    client: Client,
    ledger: Arc<super::rbac::Ledger>,
    prefix: String,
    tools: Mutex<BTreeMap<String, Entry>>,
    wake: Notify,
}

struct Entry {
    section: KubernetesExecution,
    target: usize,
    ready: VecDeque<(String, Instant)>,
}

/// A fresh, unguessable namespace name.
pub fn fresh_name(prefix: &str) -> Result<String, SandboxError> {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).map_err(|e| SandboxError::Create { context: "no randomness for a namespace name".into(), source: std::io::Error::other(e.to_string()) })?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

impl WarmPool {
    pub fn new(client: Client, ledger: Arc<super::rbac::Ledger>, prefix: String) -> Arc<Self> {
        Arc::new(WarmPool { client, ledger, prefix, tools: Mutex::new(BTreeMap::new()), wake: Notify::new() })
    }

    /// Keeps `target` namespaces ready for `tool` (0: no pool).
    pub fn configure(&self, tool: &str, section: &KubernetesExecution, target: usize) {
        if let Ok(mut tools) = self.tools.lock() {
            tools.insert(tool.to_owned(), Entry { section: section.clone(), target, ready: VecDeque::new() });
        }
        self.wake.notify_one();
    }

    /// A ready namespace for `tool`, if the pool has one. Its account exists; its labels are
    /// the pool's until the job claims it. Call [`WarmPool::refill_soon`] once the job is set.
    pub fn take(&self, tool: &str) -> Option<String> {
        self.tools.lock().ok()?.get_mut(tool)?.ready.pop_front().map(|(name, _)| name)
    }

    /// Wakes the refill.
    pub fn refill_soon(&self) {
        self.wake.notify_one();
    }

    /// What the pool has sent.
    pub fn ledger(&self) -> &Arc<super::rbac::Ledger> {
        &self.ledger
    }

    /// Namespaces ready now, per tool.
    pub fn ready(&self) -> BTreeMap<String, usize> {
        self.tools.lock().map(|t| t.iter().map(|(k, e)| (k.clone(), e.ready.len())).collect()).unwrap_or_default()
    }

    /// Refills every pool, then waits to be woken (a namespace taken) or for a minute (to
    /// retire old ones). Runs until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.refill_once().await;
            let _ = tokio::time::timeout(Duration::from_secs(60), self.wake.notified()).await;
        }
    }

    /// One pass: retire namespaces near their expiry, create the missing ones.
    pub async fn refill_once(&self) {
        let mut retire = Vec::new();
        let mut wanted = Vec::new();
        if let Ok(mut tools) = self.tools.lock() {
            for (tool, e) in tools.iter_mut() {
                while e.ready.front().is_some_and(|(_, at)| at.elapsed() + RETIRE_MARGIN > WARM_LIFETIME) {
                    if let Some((name, _)) = e.ready.pop_front() {
                        retire.push(name);
                    }
                }
                for _ in e.ready.len()..e.target {
                    wanted.push((tool.clone(), e.section.clone()));
                }
            }
        }
        for name in retire {
            let _ = super::delete_and_wait(&self.client, &name, Duration::from_secs(60)).await;
        }
        for (tool, section) in wanted {
            match self.create(&tool, &section).await {
                Ok(name) => {
                    if let Some(e) = self.tools.lock().ok().as_mut().and_then(|t| t.get_mut(&tool)) {
                        e.ready.push_back((name, Instant::now()));
                    }
                }
                Err(e) => {
                    tracing::warn!(tool, error = %e.log_text(), "warm namespace not created");
                    break;
                }
            }
        }
    }

    async fn create(&self, tool: &str, section: &KubernetesExecution) -> Result<String, SandboxError> {
        let name = fresh_name(&self.prefix)?;
        let expires = super::expiry(WARM_LIFETIME);
        if let Err(e) = super::create_namespace(&self.client, &name, tool, section, &expires, None).await {
            // Half-made: delete what there is, in the background of this pass.
            let _ = super::delete_and_wait(&self.client, &name, Duration::from_secs(60)).await;
            return Err(e);
        }
        Ok(name)
    }
}
