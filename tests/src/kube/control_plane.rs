//! Starting and stopping the control plane's daemons (etcd, kube-apiserver,
//! kube-controller-manager) on the harness thread, and waiting until they work.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::api::{Api, DeleteParams, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};
use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::{ResourceQuota, ServiceAccount};
use serde_json::json;

use super::from_json;
use crate::{free_port, repo_root};

const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The daemons' processes, shared with the harness thread that spawns them.
#[derive(Clone, Default)]
pub(super) struct Daemons {
    children: Arc<Mutex<Vec<Child>>>,
    /// Set once they are being killed: the mock kubelet's failures are then expected.
    pub(super) stopping: Arc<AtomicBool>,
}

impl Daemons {
    /// Spawns `cmd` with its output in `<dir>/<name>.log`. Called on the harness thread: the
    /// child gets SIGKILL when that thread ends, i.e. when the cluster is dropped or the test
    /// process exits, however it exits.
    fn spawn(&self, dir: &Path, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = fs::File::create(dir.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawning {name} ({:?})", cmd.get_program()))?;
        self.children.lock().expect("daemons").push(child);
        Ok(())
    }

    /// The first daemon that has exited, if any.
    fn exited(&self) -> Option<String> {
        let mut children = self.children.lock().expect("daemons");
        children.iter_mut().find_map(|c| match c.try_wait() {
            Ok(Some(status)) => Some(format!("pid {} exited: {status}", c.id())),
            _ => None,
        })
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.children.lock().expect("daemons").iter().map(Child::id).collect()
    }

    pub(super) fn kill_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut children = self.children.lock().expect("daemons");
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        children.clear();
    }
}

pub(super) struct Booted {
    pub(super) api_url: String,
    pub(super) config: Config,
    pub(super) client: Client,
    pub(super) harness: tokio::runtime::Handle,
}

/// On the harness thread: starts the daemons and waits until the cluster works.
pub(super) async fn boot(dir: &Path, daemons: &Daemons) -> anyhow::Result<Booted> {
    let bin = kube_bin_dir()?;
    let etcd = on_path("etcd").context("etcd is not on PATH: install the etcd-server package (apt-get install etcd-server)")?;
    let (etcd_port, peer_port, api_port) = (free_port().port(), free_port().port(), free_port().port());

    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    daemons.spawn(
        dir,
        "etcd",
        Command::new(etcd)
            .args(["--name", "kube", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            // Without the peer flags etcd 3.4 binds the default ports 2379/2380.
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("kube={peer_url}")]),
    )?;

    let sa_key = dir.join("sa.key");
    run("openssl", Command::new("openssl").args(["genrsa", "-out"]).arg(&sa_key).arg("2048"))?;
    let token = random_hex(16)?;
    // token,user,uid,"groups": the admin is in system:masters, which RBAC always allows.
    fs::write(dir.join("tokens.csv"), format!("{token},admin,admin,system:masters\n"))?;
    daemons.spawn(
        dir,
        "kube-apiserver",
        Command::new(bin.join("kube-apiserver"))
            .args(["--etcd-servers", &etcd_url])
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &api_port.to_string()])
            // Loopback is no valid endpoint for the `kubernetes` Service: do not reconcile it.
            .args(["--endpoint-reconciler-type", "none"])
            .arg("--cert-dir")
            .arg(dir.join("certs"))
            .arg("--token-auth-file")
            .arg(dir.join("tokens.csv"))
            .args(["--authorization-mode", "RBAC"])
            // Default in 1.20 already; named because the tests depend on them (ServiceAccount:
            // a pod whose ServiceAccount does not exist is refused).
            .args(["--enable-admission-plugins", "NamespaceLifecycle,ServiceAccount,LimitRanger,ResourceQuota"])
            // TokenRequest (and projected service account tokens) need an issuer and a key.
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file")
            .arg(&sa_key)
            .arg("--service-account-signing-key-file")
            .arg(&sa_key)
            .args(["--service-cluster-ip-range", "10.0.0.0/24"]),
    )?;

    // The API server writes its self-signed serving certificate before it listens.
    let ca = dir.join("certs/apiserver.crt");
    wait_until(daemons, dir, "kube-apiserver's certificate", || async { ca.is_file() }).await?;
    let api_url = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = dir.join("admin.kubeconfig");
    write_kubeconfig(&kubeconfig, &api_url, &ca, &token, &["admin"])?;
    let config = Config::from_custom_kubeconfig(Kubeconfig::read_from(&kubeconfig)?, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config.clone())?;
    wait_until(daemons, dir, "kube-apiserver /readyz", || async {
        let request = http::Request::get("/readyz").body(Vec::new()).expect("request");
        client.request_text(request).await.is_ok_and(|body| body.trim() == "ok")
    })
    .await?;

    daemons.spawn(
        dir,
        "kube-controller-manager",
        Command::new(bin.join("kube-controller-manager"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            // No leader election, and no listening port: several clusters can run at once.
            .args(["--leader-elect=false", "--port", "0", "--secure-port", "0"])
            // resourcequota: ResourceQuota admission refuses every pod in a namespace whose
            // quota has no computed status yet, and this controller computes it.
            .args(["--controllers", "namespace,serviceaccount,serviceaccount-token,job,garbagecollector,resourcequota"])
            .arg("--service-account-private-key-file")
            .arg(&sa_key)
            .arg("--root-ca-file")
            .arg(&ca),
    )?;
    // The service account controller gives every namespace a `default` ServiceAccount: once
    // `default/default` exists, the controller manager is up and its informers have synced.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_until(daemons, dir, "the controller manager (ServiceAccount default/default)", || async {
        accounts.get_opt("default").await.is_ok_and(|sa| sa.is_some())
    })
    .await?;
    // ResourceQuota admission ignores a quota whose status the quota controller has not yet
    // computed, and that controller starts working a second or two after the others: wait for
    // it, so that quotas are enforced from the first test on.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let probe: ResourceQuota = from_json(json!({"metadata": {"name": "harness-probe"}, "spec": {"hard": {"pods": "1000"}}}));
    quotas.create(&PostParams::default(), &probe).await.context("creating a probe ResourceQuota")?;
    wait_until(daemons, dir, "the resource quota controller", || async {
        quotas.get_opt("harness-probe").await.is_ok_and(|q| q.and_then(|q| q.status).and_then(|s| s.hard).is_some())
    })
    .await?;
    quotas.delete("harness-probe", &DeleteParams::default()).await.context("deleting the probe ResourceQuota")?;
    Ok(Booted { api_url, config, client, harness: tokio::runtime::Handle::current() })
}

/// The directory with kube-apiserver and kube-controller-manager: the last stdout line of
/// `scripts/kube-apiserver.sh` (which builds them into its cache on first use).
fn kube_bin_dir() -> anyhow::Result<PathBuf> {
    let script = repo_root().join("scripts/kube-apiserver.sh");
    // stderr is inherited: a cold build (about ten minutes) shows its progress.
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({}): see its output above", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    for b in ["kube-apiserver", "kube-controller-manager"] {
        if !bin.join(b).is_file() {
            bail!("{} printed {:?}, which holds no {b}", script.display(), bin);
        }
    }
    Ok(bin)
}

/// Polls `ready` every 100 ms until it holds; fails if a daemon exits or after START_TIMEOUT.
async fn wait_until<F, Fut>(daemons: &Daemons, dir: &Path, what: &str, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if ready().await {
            return Ok(());
        }
        if let Some(exit) = daemons.exited() {
            bail!("a daemon died while waiting for {what}: {exit}\n{}", daemon_logs(dir, 30));
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("{what} not ready after {START_TIMEOUT:?}\n{}", daemon_logs(dir, 30));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str, contexts: &[&str]) -> anyhow::Result<()> {
    // JSON is YAML: kube-rs, client-go and kubectl all read it.
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "portcullis-test", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": contexts.iter()
            .map(|c| json!({"name": c, "context": {"cluster": "portcullis-test", "user": "user"}}))
            .collect::<Vec<_>>(),
        "current-context": contexts.first().copied().unwrap_or("default"),
    });
    fs::write(path, serde_json::to_vec_pretty(&kubeconfig)?)?;
    Ok(())
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what} (is it installed?)"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last `lines` lines of each daemon's log.
pub(super) fn daemon_logs(dir: &Path, lines: usize) -> String {
    ["etcd", "kube-apiserver", "kube-controller-manager"]
        .iter()
        .map(|d| format!("--- {d}.log\n{}", log_tail(&dir.join(format!("{d}.log")), lines)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Kills the shared cluster's daemons and removes its directory when the test process exits
/// (statics are never dropped). The daemons would die anyway (PDEATHSIG); the directory would not.
pub(super) mod at_exit {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::Daemons;

    static CLEANUP: Mutex<Vec<(Daemons, PathBuf)>> = Mutex::new(Vec::new());

    pub(in crate::kube) fn register(daemons: Daemons, dir: PathBuf) {
        let mut cleanup = CLEANUP.lock().expect("cleanup list");
        if cleanup.is_empty() {
            // SAFETY: registers a plain function with no arguments; it runs once, at exit.
            unsafe { nix::libc::atexit(run) };
        }
        cleanup.push((daemons, dir));
    }

    extern "C" fn run() {
        if let Ok(mut cleanup) = CLEANUP.lock() {
            for (daemons, dir) in cleanup.drain(..) {
                daemons.kill_all();
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
