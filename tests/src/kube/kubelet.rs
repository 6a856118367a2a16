//! The mock kubelet, the harness's only mock: there is no node, so nothing would ever run a
//! pod. It watches pods labelled [`MANAGED_BY`] in all namespaces, runs nothing, and does what a
//! kubelet would report through the API server (pods/status), driven by the `tool` container's
//! environment:
//!
//! - `PORTCULLIS_TEST_HANG=1`: the pod is Running and never finishes;
//! - else, after `PORTCULLIS_TEST_DELAY_MS` (default 0), Succeeded (`PORTCULLIS_TEST_EXIT` unset
//!   or 0) or Failed, the `tool` container terminated with that exit code, reason `Completed` or
//!   `Error`, and `PORTCULLIS_TEST_STDOUT` as its termination message (cut to the kubelet's
//!   4096 bytes).
//!
//! Before that, like a kubelet, it requests a token for every projected `serviceAccountToken`
//! source of the pod (TokenRequest bound to the pod, with the source's audience and expiry) and
//! keeps them for the tests ([`MockKubelet::tokens`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use ::kube::{Client, ResourceExt};
use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
// kube's watch is a `futures` Stream; tonic (already a dependency here) re-exports tokio-stream,
// whose StreamExt reads it.
use tonic::codegen::tokio_stream::StreamExt;

use super::{is_status, MANAGED_BY};

/// The kubelet's limit on a termination message.
const TERMINATION_MESSAGE_BYTES: usize = 4096;

/// A token the mock kubelet obtained for a pod's projected `serviceAccountToken` volume source.
#[derive(Clone, Debug)]
pub struct PodToken {
    pub pod: String,
    pub pod_uid: String,
    pub service_account: String,
    /// The source's audience; None: the API server's own.
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    /// `status.expirationTimestamp` of the TokenRequest (RFC 3339).
    pub expires_at: String,
    /// Where the `tool` container would read it, if it mounts the volume.
    pub path: Option<String>,
    pub token: String,
}

struct State {
    /// The cluster is being torn down: failures are expected, not errors.
    stopping: Arc<AtomicBool>,
    /// Pods (by uid) already being played.
    seen: Mutex<HashSet<String>>,
    tokens: Mutex<HashMap<String, Vec<PodToken>>>,
    errors: Mutex<Vec<String>>,
}

impl State {
    fn error(&self, e: String) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        eprintln!("mock kubelet: {e}");
        self.errors.lock().expect("errors").push(e);
    }
}

#[derive(Clone)]
pub struct MockKubelet {
    state: Arc<State>,
}

impl MockKubelet {
    /// Spawns the watch on `runtime`; the receiver fires once the first pod list is handled.
    pub(super) fn spawn(
        runtime: &tokio::runtime::Handle,
        client: Client,
        stopping: Arc<AtomicBool>,
    ) -> (MockKubelet, tokio::sync::oneshot::Receiver<()>) {
        let state = Arc::new(State { stopping, seen: Mutex::default(), tokens: Mutex::default(), errors: Mutex::default() });
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        runtime.spawn(watch(state.clone(), client, synced_tx));
        (MockKubelet { state }, synced_rx)
    }

    /// Every token requested for pods in `namespace`, oldest first. Kept after the pod and the
    /// namespace are gone.
    pub fn tokens(&self, namespace: &str) -> Vec<PodToken> {
        self.state.tokens.lock().expect("tokens").get(namespace).cloned().unwrap_or_default()
    }

    /// Waits until at least one token exists for `namespace`; panics after `timeout`.
    pub async fn wait_tokens(&self, namespace: &str, timeout: Duration) -> Vec<PodToken> {
        let started = Instant::now();
        loop {
            let tokens = self.tokens(namespace);
            if !tokens.is_empty() {
                return tokens;
            }
            assert!(started.elapsed() < timeout, "no pod token in {namespace} after {timeout:?}; errors: {:?}", self.errors());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What went wrong while playing pods (a pod it could not play, a failed TokenRequest).
    /// A pod deleted while it was being played is not an error.
    pub fn errors(&self) -> Vec<String> {
        self.state.errors.lock().expect("errors").clone()
    }
}

/// List, then watch from the list's version; list again when the watch breaks.
async fn watch(state: Arc<State>, client: Client, synced: tokio::sync::oneshot::Sender<()>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut synced = Some(synced);
    loop {
        let list = match pods.list(&ListParams::default().labels(MANAGED_BY)).await {
            Ok(list) => list,
            Err(e) => {
                state.error(format!("listing pods: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for pod in list.items {
            admit(&state, &client, pod);
        }
        if let Some(tx) = synced.take() {
            let _ = tx.send(());
        }
        let mut version = list.metadata.resource_version.unwrap_or_default();
        'watch: loop {
            let params = WatchParams::default().labels(MANAGED_BY).timeout(290);
            let stream = match pods.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(e) => {
                    state.error(format!("watching pods: {e}"));
                    break 'watch;
                }
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        version = pod.resource_version().unwrap_or(version);
                        admit(&state, &client, pod);
                    }
                    Ok(WatchEvent::Deleted(pod)) => version = pod.resource_version().unwrap_or(version),
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    // 410 Gone: the version is too old; anything else: start over too.
                    Ok(WatchEvent::Error(status)) => {
                        if status.code != 410 {
                            state.error(format!("pod watch: {status:?}"));
                        }
                        break 'watch;
                    }
                    Err(e) => {
                        state.error(format!("pod watch: {e}"));
                        break 'watch;
                    }
                }
            }
            // The watch timed out: carry on from `version`.
        }
    }
}

/// Plays each pod once, in a task of its own.
fn admit(state: &Arc<State>, client: &Client, pod: Pod) {
    let uid = pod.uid().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() || !state.seen.lock().expect("seen").insert(uid) {
        return;
    }
    let (state, client) = (state.clone(), client.clone());
    tokio::spawn(async move {
        let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        if let Err(e) = play(&state, &client, &pod).await {
            let gone = e.downcast_ref::<::kube::Error>().is_some_and(|e| is_status(e, 404));
            if !gone {
                state.error(format!("pod {name}: {e:#}"));
            }
        }
    });
}

async fn play(state: &State, client: &Client, pod: &Pod) -> anyhow::Result<()> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let spec = pod.spec.as_ref().context("pod without a spec")?;
    let tool = spec.containers.iter().find(|c| c.name == "tool").context("no container named `tool`")?;
    request_tokens(state, client, pod, tool).await?;

    let env = |key: &str| tool.env.iter().flatten().find(|e| e.name == key).and_then(|e| e.value.clone());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let image = tool.image.clone().unwrap_or_default();
    let started = now();
    let running = json!({"status": {
        "phase": "Running",
        "startTime": started,
        "containerStatuses": [{
            "name": "tool", "image": image, "imageID": "", "ready": true, "restartCount": 0, "started": true,
            "state": {"running": {"startedAt": started}},
        }],
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&running)).await?;
    if env("PORTCULLIS_TEST_HANG").as_deref() == Some("1") {
        return Ok(());
    }

    let delay_ms: u64 = env("PORTCULLIS_TEST_DELAY_MS").map(|v| v.parse()).transpose().context("PORTCULLIS_TEST_DELAY_MS")?.unwrap_or(0);
    let exit: i32 = env("PORTCULLIS_TEST_EXIT").map(|v| v.parse()).transpose().context("PORTCULLIS_TEST_EXIT")?.unwrap_or(0);
    let message = truncate(env("PORTCULLIS_TEST_STDOUT").unwrap_or_default(), TERMINATION_MESSAGE_BYTES);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let (phase, reason) = if exit == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
    let finished = json!({"status": {
        "phase": phase,
        "startTime": started,
        "containerStatuses": [{
            "name": "tool", "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {
                "exitCode": exit, "reason": reason, "message": message, "startedAt": started, "finishedAt": now(),
            }},
        }],
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&finished)).await?;
    Ok(())
}

/// A TokenRequest bound to the pod for each projected serviceAccountToken source, as the
/// kubelet makes before it starts the containers.
async fn request_tokens(state: &State, client: &Client, pod: &Pod, tool: &Container) -> anyhow::Result<()> {
    let namespace = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().context("pod without a spec")?;
    let account = spec.service_account_name.clone().unwrap_or_else(|| "default".to_owned());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    for volume in spec.volumes.iter().flatten() {
        let Some(projected) = &volume.projected else { continue };
        for source in projected.sources.iter().flatten() {
            let Some(projection) = &source.service_account_token else { continue };
            let audience = projection.audience.clone().filter(|a| !a.is_empty());
            let seconds = projection.expiration_seconds.unwrap_or(3600);
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: audience.iter().cloned().collect(),
                    expiration_seconds: Some(seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".to_owned()),
                        kind: Some("Pod".to_owned()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..Default::default()
            };
            let answer = accounts
                .create_token_request(&account, &PostParams::default(), &request)
                .await
                .with_context(|| format!("TokenRequest for {namespace}/{account} bound to the pod"))?;
            let status = answer.status.context("TokenRequest answered without a status")?;
            let path = tool.volume_mounts.iter().flatten().find(|m| m.name == volume.name).map(|m| {
                format!("{}/{}", m.mount_path.trim_end_matches('/'), projection.path)
            });
            let token = PodToken {
                pod: pod.name_any(),
                pod_uid: pod.uid().unwrap_or_default(),
                service_account: account.clone(),
                audience,
                expiration_seconds: seconds,
                expires_at: serde_json::to_value(&status.expiration_timestamp)?.as_str().unwrap_or_default().to_owned(),
                path,
                token: status.token,
            };
            state.tokens.lock().expect("tokens").entry(namespace.clone()).or_default().push(token);
        }
    }
    Ok(())
}

fn now() -> serde_json::Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).expect("time")
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
