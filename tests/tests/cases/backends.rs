//! The shared backend suite (`portcullis_e2e::backend_suite`) against both backends: the local
//! one (Linux namespaces, the real `portcullis` binary as the sandbox init) and the Kubernetes
//! one (a real API server and controller manager; pods played by the mock kubelet).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use portcullis_e2e::backend_suite::{self, Environments};
use portcullis_e2e::{kube as harness, portcullis_bin};
use portcullis_runner::sandbox::kube::{KubeOptions, KubernetesBackend};

struct JobDirs(PathBuf);

impl Environments for JobDirs {
    fn count(&self) -> Pin<Box<dyn Future<Output = usize> + Send + '_>> {
        Box::pin(async move { std::fs::read_dir(&self.0).map(|d| d.count()).unwrap_or(0) })
    }
}

/// The namespaces whose names start with this backend's prefix.
pub struct Namespaces {
    pub client: kube::Client,
    pub prefix: String,
}

impl Environments for Namespaces {
    fn count(&self) -> Pin<Box<dyn Future<Output = usize> + Send + '_>> {
        Box::pin(async move {
            let list = Api::<Namespace>::all(self.client.clone()).list(&ListParams::default()).await.expect("listing namespaces");
            list.items.iter().filter(|n| n.metadata.name.as_deref().is_some_and(|name| name.starts_with(&self.prefix))).count()
        })
    }
}

#[tokio::test]
async fn the_local_backend_passes_the_shared_suite() {
    let root = tempfile::tempdir().expect("temp root");
    let backend = portcullis_runner::devstack::up::local_backend(portcullis_bin()).with_temp_root(root.path());
    backend_suite::run(&backend, &JobDirs(root.path().to_owned())).await;
}

/// A Kubernetes backend on the shared cluster, acting as the runner's ServiceAccount with the
/// chart's rules (plus the test tools' grants), its namespaces named `<prefix>...`.
pub async fn kube_backend(prefix: &str) -> (KubernetesBackend, Namespaces) {
    let cluster = harness::shared().await;
    cluster.start_mock_kubelet().await;
    let kubeconfig = crate::cases::kube_backend::runner_kubeconfig(cluster).await;
    let opts = KubeOptions { namespace_prefix: prefix.to_owned(), ..KubeOptions::default() };
    let backend = KubernetesBackend::connect(Some(&kubeconfig), None, opts).await.expect("connecting the backend");
    (backend, Namespaces { client: cluster.client(), prefix: prefix.to_owned() })
}

#[tokio::test]
async fn the_kubernetes_backend_passes_the_shared_suite() {
    let (backend, namespaces) = kube_backend("pc-suite-").await;
    backend_suite::run(&backend, &namespaces).await;
}
