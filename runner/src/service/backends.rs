//! The runner's backends by placement: one entry per (backend, context) this runner was given,
//! each with its own bounded job queue and circuit breaker, so one slow or failing cluster
//! never holds up jobs placed elsewhere.
//!
//! A call runs at its effective placement: the one in its ticket (the policy's decision,
//! signed by the gateway), else the tool's catalog default. A placement this runner does not
//! have is refused before anything runs, naming the ones it has.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::catalog::Tool;
use portcullis_core::placement::{Placement, KUBERNETES};
use portcullis_core::ticket::Claims;
use rmcp::model::ErrorCode;
use rmcp::ErrorData as McpError;
use serde_json::json;

use crate::sandbox::Backend;
use crate::service::breaker::{Breaker, BreakerSettings, Open};
use crate::service::queue::{JobQueue, QueueFull, MAX_JOBS, MAX_QUEUED};

/// The call's placement is not one this runner has (or not a placement): nothing ran.
pub const PLACEMENT_UNAVAILABLE: i32 = -32008;
/// The job queue of the call's placement is full: nothing ran; `data.retry_after_ms`.
pub const QUEUE_FULL: i32 = -32009;
/// The backend of the call's placement keeps failing (its circuit breaker is open): nothing
/// ran; `data.retry_after_ms`.
pub const BACKEND_FAILING: i32 = -32010;

/// Each entry's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Jobs that run at once.
    pub max_jobs: usize,
    /// Calls that may wait for a job slot.
    pub max_queued: usize,
    pub breaker: BreakerSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_jobs: MAX_JOBS, max_queued: MAX_QUEUED, breaker: BreakerSettings::default() }
    }
}

/// One place jobs run.
pub struct Entry {
    /// The placement's backend name (`local`, `kubernetes`).
    pub name: String,
    /// Kubernetes: the context (cluster) this entry runs in.
    pub context: Option<String>,
    pub backend: Arc<dyn Backend>,
    pub queue: JobQueue,
    pub breaker: Breaker,
}

impl Entry {
    /// `local`, `kubernetes/prod-eu`: for errors, logs, metrics and the audit trail.
    pub fn describe(&self) -> String {
        describe(&self.name, self.context.as_deref())
    }
}

fn describe(name: &str, context: Option<&str>) -> String {
    match context {
        Some(c) => format!("{name}/{c}"),
        None => name.to_owned(),
    }
}

pub struct Backends {
    /// In insertion order: the first entry of a backend is where a placement without a
    /// context goes.
    entries: Vec<Entry>,
    limits: Limits,
}

impl Backends {
    /// No backends yet; each one [`Backends::insert`]ed gets these limits.
    pub fn new(limits: Limits) -> Self {
        Backends { entries: Vec::new(), limits }
    }

    /// Adds the place `name` (`local`, `kubernetes`) with `context` (Kubernetes: the
    /// kubeconfig context a placement names). The first entry of a backend also takes the
    /// placements of that backend that name no context.
    pub fn insert(&mut self, name: &str, context: Option<&str>, backend: Arc<dyn Backend>) -> anyhow::Result<()> {
        let placement = Placement { backend: name.to_owned(), context: context.map(str::to_owned), node_selector: Default::default() };
        placement.validate().map_err(|reason| anyhow::anyhow!("backend {}: {reason}", placement.describe()))?;
        let described = describe(name, context);
        if self.entries.iter().any(|e| e.describe() == described) {
            anyhow::bail!("backend {described} is registered twice");
        }
        self.entries.push(Entry {
            name: name.to_owned(),
            context: context.map(str::to_owned),
            backend,
            queue: JobQueue::new(described.clone(), self.limits.max_jobs, self.limits.max_queued),
            breaker: Breaker::new(described, self.limits.breaker),
        });
        Ok(())
    }

    /// Every place this runner runs jobs, as placements describe them.
    pub fn available(&self) -> Vec<String> {
        self.entries.iter().map(Entry::describe).collect()
    }

    /// The entry for `placement`: same backend and context; no context, the backend's first.
    pub fn get(&self, placement: &Placement) -> Option<&Entry> {
        let mut same_backend = self.entries.iter().filter(|e| e.name == placement.backend);
        match &placement.context {
            Some(c) => same_backend.find(|e| e.context.as_deref() == Some(c.as_str())),
            None => same_backend.next(),
        }
    }

    /// Where `tool`'s call runs, or the JSON-RPC error that refuses it (nothing has run).
    pub fn pick(&self, placement: &Placement, tool: &Tool) -> Result<&Entry, McpError> {
        let refuse = |why: String| {
            let data = json!({"tool": tool.name, "placement": placement.describe(), "available": self.available()});
            McpError::new(ErrorCode(PLACEMENT_UNAVAILABLE), format!("{} not run: {why}", tool.name), Some(data))
        };
        // The gateway checked it already; the runner does not run what it cannot vouch for.
        if let Err(reason) = placement.validate() {
            return Err(refuse(format!("placement {} is not valid: {reason}", placement.describe())));
        }
        let Some(entry) = self.get(placement) else {
            return Err(refuse(format!("this runner has no backend for placement {} (it has: {})", placement.describe(), self.available().join(", "))));
        };
        if placement.backend == KUBERNETES && tool.execution.kubernetes.is_none() {
            return Err(refuse(format!("it is placed on {} but its catalog entry has no execution.kubernetes section", placement.describe())));
        }
        Ok(entry)
    }
}

/// The call's placement: the policy's, from the signed ticket, else the tool's catalog
/// default. Never anything the agent sent.
pub fn effective(claims: &Claims, tool: &Tool) -> Placement {
    claims.placement.clone().unwrap_or_else(|| tool.execution.placement.clone())
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// The answer to a call whose placement's queue is full.
pub fn queue_full(entry: &Entry, tool: &str, full: QueueFull) -> McpError {
    retry_later(QUEUE_FULL, entry, tool, &format!("the job queue for placement {} is full", entry.describe()), full.retry_after)
}

/// The answer to a call whose placement's backend is failing (its breaker is open).
pub fn backend_failing(entry: &Entry, tool: &str, open: Open) -> McpError {
    let why = format!("the backend for placement {} is failing, so calls to it are refused for now", entry.describe());
    retry_later(BACKEND_FAILING, entry, tool, &why, open.retry_after)
}

/// A refusal that names the placement and when to try again (`data.retry_after_ms`).
fn retry_later(code: i32, entry: &Entry, tool: &str, why: &str, retry_after: Duration) -> McpError {
    let ms = millis(retry_after);
    McpError::new(
        ErrorCode(code),
        format!("{tool} not run: {why}; retry in {ms} ms"),
        Some(json!({"tool": tool, "placement": entry.describe(), "retry_after_ms": ms})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{CancellationToken, JobOutput, JobSpec, PhaseObserver, SandboxError};

    struct Nothing;

    #[async_trait::async_trait]
    impl Backend for Nothing {
        fn name(&self) -> &'static str {
            "test"
        }
        async fn execute(&self, _: JobSpec, _: &dyn PhaseObserver, _: &CancellationToken) -> Result<JobOutput, SandboxError> {
            Ok(JobOutput::default())
        }
    }

    /// Fails with a sandbox error while `failing`; else runs the job, whose tool exits 1
    /// (a tool that failed: the backend did its part).
    struct Flaky {
        failing: std::sync::atomic::AtomicBool,
        runs: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Backend for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn execute(&self, _: JobSpec, _: &dyn PhaseObserver, _: &CancellationToken) -> Result<JobOutput, SandboxError> {
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(SandboxError::Setup { message: "the API server does not answer".into() });
            }
            Ok(JobOutput { exit_code: Some(1), ..JobOutput::default() })
        }
    }

    /// One call's way through an entry, as the runner's call path takes it: breaker, queue
    /// slot, the job, the breaker told how the backend did.
    async fn call(entry: &Entry) -> Result<JobOutput, McpError> {
        let pass = entry.breaker.admit().map_err(|open| backend_failing(entry, "t", open))?;
        let never = CancellationToken::new();
        let slot = entry.queue.slot(&never).await.map_err(|full| queue_full(entry, "t", full))?.expect("not cancelled");
        let job = JobSpec { job_id: "j".into(), command: vec!["true".into()], timeout: Duration::from_secs(1), ..JobSpec::default() };
        let ran = slot.run(entry.backend.as_ref(), job, &never).await;
        pass.report(&ran);
        ran.map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    #[tokio::test]
    async fn a_failing_backend_is_cut_off_until_a_trial_call_succeeds() {
        use std::sync::atomic::Ordering::SeqCst;
        let flaky = Arc::new(Flaky { failing: true.into(), runs: 0.into() });
        let limits = Limits { breaker: BreakerSettings { failures: 3, cooldown: Duration::from_millis(200) }, ..Limits::default() };
        let mut b = Backends::new(limits);
        b.insert("local", None, flaky.clone()).unwrap();
        let entry = b.get(&Placement::default()).unwrap();
        for _ in 0..3 {
            assert_eq!(call(entry).await.unwrap_err().code, ErrorCode::INTERNAL_ERROR, "the backend's own failure");
        }
        let refused = call(entry).await.unwrap_err();
        assert_eq!(refused.code.0, BACKEND_FAILING);
        assert!(refused.message.contains("the backend for placement local is failing"), "{}", refused.message);
        let retry = refused.data.unwrap()["retry_after_ms"].as_u64().unwrap();
        assert!((1..=200).contains(&retry), "{retry}");
        assert_eq!(flaky.runs.load(SeqCst), 3, "a refused call never reaches the backend");

        // After the cooldown, one trial; it fails, so another cooldown.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(call(entry).await.unwrap_err().code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(call(entry).await.unwrap_err().code.0, BACKEND_FAILING);
        assert_eq!(flaky.runs.load(SeqCst), 4);

        // The backend recovers: the next trial closes the breaker. A tool that exits 1 is the
        // backend working, and never opens it.
        flaky.failing.store(false, SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        for _ in 0..5 {
            assert_eq!(call(entry).await.unwrap().exit_code, Some(1));
        }
        assert_eq!(flaky.runs.load(SeqCst), 9);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_naming_the_placement() {
        let mut b = Backends::new(Limits { max_jobs: 1, max_queued: 0, ..Limits::default() });
        b.insert("local", None, Arc::new(Nothing)).unwrap();
        let entry = b.get(&Placement::default()).unwrap();
        let never = CancellationToken::new();
        let _busy = entry.queue.slot(&never).await.unwrap().unwrap();
        // The slot stays held, so a call that waited for it would never end: answering at all
        // is answering at once (the bound only stops a broken build from hanging).
        let e = tokio::time::timeout(Duration::from_secs(30), call(entry)).await.expect("answered while the slot is held").unwrap_err();
        assert_eq!(e.code.0, QUEUE_FULL);
        assert!(e.message.contains("the job queue for placement local is full; retry in 1000 ms"), "{}", e.message);
        assert_eq!(e.data.unwrap()["retry_after_ms"], 1000);
    }

    fn tool(placement: Placement) -> Tool {
        let catalog = crate::devstack::bundle::load_catalog(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../catalog/example.yaml"))).unwrap();
        let mut tool = catalog.get("word_count").unwrap().clone();
        tool.execution.placement = placement;
        tool
    }

    fn kube(context: Option<&str>) -> Placement {
        Placement { backend: KUBERNETES.into(), context: context.map(str::to_owned), node_selector: Default::default() }
    }

    #[test]
    fn placements_pick_their_entry_and_a_missing_one_is_refused_by_name() {
        let mut b = Backends::new(Limits::default());
        b.insert("local", None, Arc::new(Nothing)).unwrap();
        b.insert("kubernetes", Some("eu"), Arc::new(Nothing)).unwrap();
        b.insert("kubernetes", Some("us"), Arc::new(Nothing)).unwrap();
        assert!(b.insert("kubernetes", Some("us"), Arc::new(Nothing)).is_err(), "twice");
        assert!(b.insert("local", Some("x"), Arc::new(Nothing)).is_err(), "local takes no context");
        assert!(b.insert("mars", None, Arc::new(Nothing)).is_err());
        assert_eq!(b.available(), ["local", "kubernetes/eu", "kubernetes/us"]);

        assert_eq!(b.get(&Placement::default()).unwrap().describe(), "local");
        assert_eq!(b.get(&kube(Some("us"))).unwrap().describe(), "kubernetes/us");
        assert_eq!(b.get(&kube(None)).unwrap().describe(), "kubernetes/eu", "no context: the first");
        assert!(b.get(&kube(Some("mars"))).is_none());

        // The example tool has no kubernetes section: never sent there.
        let local_tool = tool(Placement::default());
        let e = b.pick(&kube(Some("eu")), &local_tool).err().unwrap();
        assert_eq!(e.code.0, PLACEMENT_UNAVAILABLE);
        assert!(e.message.contains("no execution.kubernetes section"), "{}", e.message);

        let mut kube_tool = local_tool.clone();
        kube_tool.execution.kubernetes = Some(serde_json::from_value(json!({"image": "registry.example/t@sha256:00"})).unwrap());
        let e = b.pick(&kube(Some("mars")), &local_tool).err().unwrap();
        assert!(e.message.contains("no backend for placement kubernetes/mars"), "what is missing first: {}", e.message);
        let e = b.pick(&kube(Some("mars")), &kube_tool).err().unwrap();
        assert_eq!(e.code.0, PLACEMENT_UNAVAILABLE);
        assert!(e.message.contains("no backend for placement kubernetes/mars (it has: local, kubernetes/eu, kubernetes/us)"), "{}", e.message);
        assert_eq!(e.data.unwrap()["available"], json!(["local", "kubernetes/eu", "kubernetes/us"]));
        assert_eq!(b.pick(&kube(Some("us")), &kube_tool).unwrap().describe(), "kubernetes/us");
    }
}
