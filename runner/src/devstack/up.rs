//! `portcullis up`: the whole local stack in one command. Generates dev certificates when
//! missing, builds the plugin configuration, starts the runner (in this process) and Envoy
//! with the filter, waits until both are ready, and stops both on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::devstack::certs::{self, DevPki};
use crate::devstack::envoy_config::{ecds_response, find_envoy, process_env, render, split_for_ecds, with_otlp_tracing, AdminAddress, EnvoyParams};
use crate::sandbox::local::LocalNamespaces;
use crate::service::serve::{serve, ControlArgs, ServeOptions, SharedCatalog};
use crate::devstack::reload;
use crate::service::tls;

pub const TRUST_DOMAIN: &str = "portcullis.local";
/// Envoy's worker threads.
const ENVOY_WORKERS: usize = 2;
/// The ECDS file in the state dir that carries the filter's config to Envoy.
pub const ECDS_FILE: &str = "portcullis-filter.ecds.json";
/// Envoy's admin API: a Unix socket in the state dir, mode 0600 (see [`AdminAddress`]).
pub const ADMIN_SOCKET: &str = "envoy-admin.sock";
/// The dev agent identities `up` creates: one per default role, and one with no role.
pub const DEV_AGENTS: &[&str] = &["reader", "operator", "intruder", "console"];

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub runner_listen: SocketAddr,
    pub catalog: PathBuf,
    pub policies: PathBuf,
    pub wasm: PathBuf,
    pub stop_on_stdin_eof: bool,
    /// Extra plugin-configuration sections (rate limits, body limits).
    pub gateway_settings: Option<PathBuf>,
    /// The runner answers with JSON bodies instead of event streams.
    pub json_response: bool,
    /// The plugin configuration's `users` section (JSON); `None`: trust the dev issuer.
    pub users: Option<PathBuf>,
    /// Plan and approval limits; the runner's state goes to `<state-dir>/runner`.
    pub control: ControlArgs,
    /// OTLP/gRPC collector (`HOST:PORT`) for Envoy's tracer. The in-process runner exports
    /// there too: the caller passes the same endpoint to [`crate::telemetry::init`].
    pub otlp_endpoint: Option<String>,
    /// Where the signed audit checkpoints go; `None`: `<state-dir>/audit/checkpoints.jsonl`.
    pub audit_checkpoints: Option<PathBuf>,
    /// Front this MCP server instead of the runner (the runner still starts, unreached).
    pub upstream: Option<crate::devstack::envoy_config::Upstream>,
    /// CA bundle that an https upstream's certificate must chain to.
    pub upstream_ca: Option<PathBuf>,
    /// The runner's backends (local by default).
    pub backend: crate::service::cluster::BackendArgs,
}

/// Everything `up` writes goes under `opts.state_dir`, which it creates (or tightens) to 0700;
/// each file holding a secret (keys, the ECDS file with the signing key) is created 0600.
pub async fn up(opts: UpOptions) -> Result<()> {
    let started = Instant::now();
    certs::prepare_dir(&opts.state_dir)?;
    let pki = certs::ensure(&opts.state_dir.join("certs"), TRUST_DOMAIN, DEV_AGENTS).context("dev certificates")?;
    if !opts.wasm.is_file() {
        bail!("the filter is not built: {} is missing (run `make build`)", opts.wasm.display());
    }
    let envoy_bin = find_envoy(&opts.root, &process_env)?;
    let users = crate::devstack::users::users_config(opts.users.as_deref(), &pki.user_issuer)?;
    let sources = reload::Sources {
        policies: opts.policies.clone(),
        catalog: opts.catalog.clone(),
        signing_key: pki.ticket_signing_key.clone(),
        settings: opts.gateway_settings.clone(),
        users,
    };
    // The audit trail: Envoy's access log (created 0600 before Envoy opens it) is ingested
    // into it, and it is checkpointed, from now until `up` stops.
    let access_log = std::path::absolute(crate::audit::default_access_log(&opts.state_dir))?;
    crate::audit::ingest::create_access_log(&access_log)?;
    let audit_config = crate::audit::AuditConfig::in_state_dir(&opts.state_dir, opts.audit_checkpoints.clone(), std::fs::read(&pki.runner_signing_key)?);
    let audit = crate::audit::AuditLog::open(audit_config)?;
    crate::audit::start_tasks(&audit, Some(access_log.clone()));
    let fingerprint = reload::fingerprint(&sources);
    let built = reload::build(&sources)?;
    let template = std::fs::read_to_string(opts.root.join("envoy/envoy.yaml")).context("reading envoy/envoy.yaml")?;
    let admin = std::path::absolute(opts.state_dir.join(ADMIN_SOCKET))?;
    remove_stale_socket(&admin)?;
    let params = EnvoyParams {
        listen_addr: opts.listen,
        runner_addr: opts.runner_listen,
        admin: AdminAddress::Unix(admin.clone()),
        wasm_path: std::path::absolute(&opts.wasm)?,
        plugin_config_json: built.json.clone(),
        pki: pki.clone(),
        access_log,
    };
    // The filter's config goes to Envoy by ECDS from this file, which exists (with the first
    // config) before Envoy starts; later configs are moved onto it (crate::devstack::reload).
    let ecds_path = std::path::absolute(opts.state_dir.join(ECDS_FILE))?;
    let mut rendered = render(&template, &params)?;
    if let Some(upstream) = &opts.upstream {
        let ca = opts.upstream_ca.as_deref().map(std::path::absolute).transpose()?;
        rendered = crate::devstack::envoy_config::with_upstream(&rendered, upstream, ca.as_deref())?;
    }
    if let Some(endpoint) = &opts.otlp_endpoint {
        rendered = with_otlp_tracing(&rendered, &crate::telemetry::endpoint_authority(endpoint)?)?;
    }
    let split = split_for_ecds(&rendered, &ecds_path)?;
    reload::write_ecds(&ecds_path, &ecds_response(&split.filter, &built.json, &built.version)?)?;
    // No secret in it (the plugin configuration went to the ECDS file), but it is nobody else's.
    let rendered = opts.state_dir.join("envoy.yaml");
    certs::write_file(&rendered, &split.bootstrap, certs::KEY_MODE).context("writing the rendered Envoy config")?;
    let runner_catalog = SharedCatalog::new(built.catalog.clone(), built.plan_rules.clone());

    // The runner, in this process.
    let (stop_runner, runner_stopped) = oneshot::channel::<()>();
    let serve_opts = runner_options(&opts, &pki, runner_catalog.clone(), &built.catalog, audit.clone()).await?;
    let runner = tokio::spawn(serve(serve_opts, async move {
        let _ = runner_stopped.await;
    }));

    let envoy_log = opts.state_dir.join("envoy.log");
    let mut envoy = start_envoy(&envoy_bin, &rendered, &envoy_log)?;
    let ready = wait_ready(&mut envoy, &admin, &envoy_log, Duration::from_secs(60)).await;
    if let Err(e) = ready {
        stop_envoy(&mut envoy).await;
        let _ = stop_runner.send(());
        return Err(e);
    }
    print_ready(&opts, &pki, started.elapsed(), &envoy_log, &admin);
    println!("  audit:      {} (checkpoints {})", audit.path().display(), audit.checkpoints_path().display());
    println!("portcullis: policy version {} active; watching {} and {}", built.version, opts.policies.display(), opts.catalog.display());
    let reloader = reload::Reloader {
        sources,
        ecds_path,
        filter: split.filter,
        runner_catalog,
        envoy_log: envoy_log.clone(),
        active_version: built.version,
        fingerprint,
        envoy_threads: ENVOY_WORKERS + 1,
    };
    let watcher = tokio::spawn(reloader.run());

    let result = tokio::select! {
        _ = shutdown_signal(opts.stop_on_stdin_eof) => Ok(()),
        status = envoy.wait() => Err(anyhow::anyhow!("envoy exited unexpectedly: {status:?}; see {}", envoy_log.display())),
        r = runner => Err(anyhow::anyhow!("runner stopped unexpectedly: {r:?}")),
    };
    watcher.abort();
    eprintln!("portcullis: stopping");
    stop_envoy(&mut envoy).await;
    let _ = stop_runner.send(());
    // Records since the last checkpoint get one now; lines Envoy wrote while stopping are
    // ingested at the next start.
    if let Err(e) = audit.checkpoint_if_new() {
        eprintln!("portcullis: writing the last audit checkpoint failed: {e}");
    }
    result
}

async fn runner_options(opts: &UpOptions, pki: &DevPki, catalog: SharedCatalog, tools: &portcullis_core::catalog::Catalog, audit: Arc<crate::audit::AuditLog>) -> Result<ServeOptions> {
    let gateway_id = certs::spiffe_id(TRUST_DOMAIN, "portcullis", "gateway");
    let exe = std::env::current_exe().context("locating the portcullis binary")?;
    Ok(ServeOptions {
        listen: opts.runner_listen,
        catalog,
        ticket_public_key_pem: std::fs::read(&pki.ticket_public_key)?,
        ticket_issuer: "portcullis-gateway".into(),
        tls: tls::server_config(&pki.runner.cert, &pki.runner.key, &pki.ca_cert, vec![gateway_id])?,
        backends: opts.backend.backends(exe, opts.control.limits(), tools, &audit).await?,
        json_response: opts.json_response,
        control: opts.control.options(opts.state_dir.join("runner"), std::fs::read(&pki.runner_signing_key)?),
        audit,
    })
}

/// Host uid/gid that jobs run as when the runner runs as root: one no other process uses, so
/// no host process owns the jobs' user namespaces, and the per-uid process limit applies.
pub const JOB_HOST_ID: u32 = 2_000_000_000;

/// The local namespace backend; as root, jobs run as [`JOB_HOST_ID`] instead of host root.
pub fn local_backend(exe: PathBuf) -> LocalNamespaces {
    let backend = LocalNamespaces::new(exe);
    if nix::unistd::geteuid().is_root() {
        backend.with_host_user(JOB_HOST_ID, JOB_HOST_ID)
    } else {
        backend
    }
}

/// Removes an admin socket a previous `up` left behind (Envoy cannot bind over it). Anything
/// else at that path is not ours to delete.
fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).with_context(|| format!("removing the stale {}", path.display())),
        Ok(_) => bail!("{} exists and is not a socket; remove it", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("checking {}", path.display())),
    }
}

/// Envoy's log, created afresh with mode 0600: it is only for the operator.
fn create_log(log: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Err(e) = std::fs::remove_file(log).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }) {
        return Err(e).with_context(|| format!("removing the old {}", log.display()));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(certs::KEY_MODE)
        .open(log)
        .with_context(|| format!("creating {}", log.display()))
}

fn start_envoy(bin: &Path, config: &Path, log: &Path) -> Result<Child> {
    let log_file = create_log(log)?;
    // Access-log lines (with the filter's decision records) reach the log within 250 ms
    // instead of Envoy's default 10 s.
    Command::new(bin)
        .arg("-c")
        .arg(config)
        .args(["--disable-hot-restart", "--concurrency", &ENVOY_WORKERS.to_string(), "-l", "warning", "--component-log-level", "wasm:info", "--file-flush-interval-msec", "250"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Ready means: Envoy's admin says LIVE and the filter logged that it is configured. A filter
/// that refused its configuration fails `up` with the filter's own log line.
async fn wait_ready(envoy: &mut Child, admin: &Path, log: &Path, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = envoy.try_wait()? {
            bail!("envoy exited during start-up ({status}); see {}:\n{}", log.display(), tail(log));
        }
        let log_text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = log_text.lines().find(|l| l.contains("portcullis: refusing to start")) {
            bail!("the Portcullis filter refused its configuration: {line}");
        }
        let configured = log_text.contains("portcullis: configured");
        if configured && admin_ready(admin).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("envoy not ready after {limit:?}; see {}:\n{}", log.display(), tail(log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_ready(admin: &Path) -> bool {
    let Ok(mut s) = tokio::net::UnixStream::connect(admin).await else { return false };
    let request = "GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    if s.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).contains("LIVE")
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn stop_envoy(envoy: &mut Child) {
    if let Some(pid) = envoy.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(5), envoy.wait()).await.is_err() {
        let _ = envoy.kill().await;
    }
}

async fn shutdown_signal(stop_on_stdin_eof: bool) {
    let stdin_eof = async {
        if !stop_on_stdin_eof {
            return std::future::pending().await;
        }
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = stdin_eof => {}
    }
}

fn print_ready(opts: &UpOptions, pki: &DevPki, elapsed: Duration, envoy_log: &Path, admin: &Path) {
    println!("portcullis ready in {:.2}s", elapsed.as_secs_f64());
    println!("  endpoint:   https://{}/mcp", opts.listen);
    println!("  CA:         {}", pki.ca_cert.display());
    for a in &pki.agents {
        println!("  agent {:<9} {}  cert {}  key {}", a.name, a.spiffe_id, a.cert.display(), a.key.display());
    }
    println!("  envoy log:  {}", envoy_log.display());
    println!("  admin:      curl --unix-socket {} http://admin/stats", admin.display());
    println!("  stop with Ctrl-C");
}
