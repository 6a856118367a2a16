//! One suite for every sandbox backend, over the behaviour they share: a job's output and exit
//! status, a failing job, a timeout, cancellation before and during a job, invalid jobs, and
//! nothing left behind. `tests/tests/cases/backends.rs` runs it against the local backend and
//! the Kubernetes backend (real API server and controllers; the kubelet is the harness's mock,
//! which plays a pod by the same `PORTCULLIS_TEST_*` variables the script below obeys).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use portcullis_core::catalog::KubernetesExecution;
use portcullis_runner::sandbox::{Backend, CancellationToken, JobMeta, JobSpec, NoPhases, SandboxError};

/// What the suite needs to know of a backend besides the trait.
pub trait Environments: Send + Sync {
    /// How many job environments of this backend exist now (job dirs, job namespaces).
    fn count(&self) -> Pin<Box<dyn Future<Output = usize> + Send + '_>>;
}

/// The job every case runs: it prints `PORTCULLIS_TEST_STDOUT`, hangs if `PORTCULLIS_TEST_HANG`
/// is 1, and exits with `PORTCULLIS_TEST_EXIT`. The mock kubelet reads the same variables.
pub const SCRIPT: &str = r#"printf %s "$PORTCULLIS_TEST_STDOUT"; if [ "$PORTCULLIS_TEST_HANG" = 1 ]; then sleep 600; fi; exit "${PORTCULLIS_TEST_EXIT:-0}""#;

/// A job of the suite: `env` on top of the script's, `timeout` on both backends.
pub fn job(id: &str, env: &[(&str, &str)], timeout: Duration) -> JobSpec {
    let secs = timeout.as_secs().max(1);
    let kubernetes: KubernetesExecution = serde_json::from_value(serde_json::json!({
        "image": "registry.invalid/portcullis/suite@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "timeout_seconds": secs,
    }))
    .expect("kubernetes section");
    JobSpec {
        job_id: id.to_owned(),
        command: vec!["sh".into(), "-c".into(), SCRIPT.into()],
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        stdin: b"{}".to_vec(),
        timeout: Duration::from_secs(secs),
        max_output_bytes: 64 << 10,
        meta: JobMeta { tool: "suite".into(), plan_hash: format!("sha256:{}", "ab".repeat(32)), requester: "spiffe://suite/agent".into() },
        kubernetes: Some(kubernetes),
        node_selector: BTreeMap::new(),
        ..JobSpec::default()
    }
}

/// Runs every case against `backend`; panics with the case's name on the first failure.
pub async fn run(backend: &dyn Backend, envs: &dyn Environments) {
    let before = envs.count().await;
    output_and_exit_status(backend).await;
    a_failing_job_is_a_result(backend).await;
    a_timeout_ends_the_job(backend).await;
    cancelled_before_it_starts_creates_nothing(backend, envs, before).await;
    cancelled_while_it_runs(backend, envs, before).await;
    invalid_jobs_are_refused(backend).await;
    assert_eq!(envs.count().await, before, "[{}] environments left behind by the suite", backend.name());
}

async fn output_and_exit_status(backend: &dyn Backend) {
    let out = backend.run(job("suite-ok", &[("PORTCULLIS_TEST_STDOUT", "hello from the job")], Duration::from_secs(30))).await;
    let out = out.unwrap_or_else(|e| panic!("[{}] a plain job: {}", backend.name(), e.log_text()));
    assert!(out.success(), "[{}] {out:?}", backend.name());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the job", "[{}]", backend.name());
    assert!(!out.timed_out && !out.cancelled && !out.truncated);
}

async fn a_failing_job_is_a_result(backend: &dyn Backend) {
    let env = [("PORTCULLIS_TEST_STDOUT", "no such deployment"), ("PORTCULLIS_TEST_EXIT", "3")];
    let started = Instant::now();
    let out = backend.run(job("suite-fail", &env, Duration::from_secs(30))).await;
    let out = out.unwrap_or_else(|e| panic!("[{}] a failing job is a result, not an error: {}", backend.name(), e.log_text()));
    assert_eq!(out.exit_code, Some(3), "[{}] {out:?}", backend.name());
    assert!(!out.success() && !out.timed_out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no such deployment", "[{}]", backend.name());
    assert!(started.elapsed() < Duration::from_secs(20), "[{}] a failing job took {:?}", backend.name(), started.elapsed());
}

async fn a_timeout_ends_the_job(backend: &dyn Backend) {
    let started = Instant::now();
    let out = backend.run(job("suite-timeout", &[("PORTCULLIS_TEST_HANG", "1")], Duration::from_secs(2))).await;
    let out = out.unwrap_or_else(|e| panic!("[{}] a job past its timeout: {}", backend.name(), e.log_text()));
    assert!(out.timed_out && !out.success(), "[{}] {out:?}", backend.name());
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(40), "[{}] a 2 s timeout took {took:?}", backend.name());
}

async fn cancelled_before_it_starts_creates_nothing(backend: &dyn Backend, envs: &dyn Environments, before: usize) {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = backend.execute(job("suite-precancel", &[], Duration::from_secs(30)), &NoPhases, &cancel).await;
    let out = out.unwrap_or_else(|e| panic!("[{}] {}", backend.name(), e.log_text()));
    assert!(out.cancelled && out.exit_code.is_none(), "[{}] {out:?}", backend.name());
    assert_eq!(envs.count().await, before, "[{}] a job cancelled before it started created an environment", backend.name());
}

async fn cancelled_while_it_runs(backend: &dyn Backend, envs: &dyn Environments, before: usize) {
    let cancel = CancellationToken::new();
    let spec = job("suite-cancel", &[("PORTCULLIS_TEST_HANG", "1")], Duration::from_secs(300));
    let run = backend.execute(spec, &NoPhases, &cancel);
    let watcher = async {
        // Cancel once the job's environment exists, so the cancel meets a running job.
        let deadline = Instant::now() + Duration::from_secs(30);
        while envs.count().await == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
        Instant::now()
    };
    let (out, cancelled_at) = tokio::join!(run, watcher);
    let out = out.unwrap_or_else(|e| panic!("[{}] a cancelled job: {}", backend.name(), e.log_text()));
    assert!(out.cancelled && !out.success(), "[{}] {out:?}", backend.name());
    assert!(cancelled_at.elapsed() < Duration::from_secs(30), "[{}] cancellation took {:?}", backend.name(), cancelled_at.elapsed());
    assert_eq!(envs.count().await, before, "[{}] a cancelled job's environment outlived execute()", backend.name());
}

async fn invalid_jobs_are_refused(backend: &dyn Backend) {
    let mut empty = job("suite-invalid", &[], Duration::from_secs(5));
    empty.command.clear();
    let mut nul = job("suite-invalid", &[], Duration::from_secs(5));
    nul.env.push(("BAD".into(), "a\0b".into()));
    for spec in [empty, nul] {
        match backend.run(spec).await {
            Err(SandboxError::InvalidJob(_)) => {}
            other => panic!("[{}] an invalid job must be refused before anything is created: {other:?}", backend.name()),
        }
    }
}
