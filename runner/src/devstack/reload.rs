//! Hot reload for `portcullis up`. Envoy takes the Portcullis filter's config by ECDS from a
//! file (see [`crate::devstack::envoy_config::split_for_ecds`]); this module watches the policy dir and
//! the catalog, and when they change builds a new plugin configuration, validates it natively
//! (an invalid one is logged and never pushed: the running one stays), and moves a new ECDS
//! file into place. Envoy then builds the new filter config; streams that already started
//! finish on the config they started with, new streams get the new one, and no listener drains.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use portcullis_core::authz::PlanRules;
use portcullis_core::catalog::Catalog;
use portcullis_core::gateway::Gateway;

use crate::devstack::bundle;
use crate::devstack::envoy_config::ecds_response;
use crate::service::serve::SharedCatalog;

/// How often the sources are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long `up` waits for Envoy to report a pushed config before saying so.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the plugin configuration comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub policies: PathBuf,
    pub catalog: PathBuf,
    pub signing_key: PathBuf,
    /// `up --gateway-settings`: extra plugin-configuration sections.
    pub settings: Option<PathBuf>,
    /// Trusted user-token issuers (resolved once by `up`).
    pub users: portcullis_core::userjwt::UsersConfig,
}

/// A plugin configuration that built a gateway natively, exactly as the filter will.
pub struct Built {
    pub json: String,
    pub version: String,
    pub catalog: Catalog,
    /// The bundle's plan rules, for the runner.
    pub plan_rules: PlanRules,
}

/// The policy dir is read once: the filter's configuration and the runner's plan rules come
/// from the same files even when they change while this runs (a second read could pair the
/// gateway's policy version with another version's plan rules).
pub fn build(src: &Sources) -> Result<Built> {
    let policy = bundle::load_policy(&src.policies, false)?;
    let json = bundle::plugin_config(&policy, &src.catalog, &src.signing_key, &src.users)?;
    let json = bundle::with_settings(json, src.settings.as_deref())?;
    let gateway = Gateway::from_config_json(json.as_bytes())
        .context("the plugin configuration does not build a gateway")?;
    let plan_rules = PlanRules::new(&policy, gateway.catalog()).context("the policy's plan rules (plan_decision) do not compile")?;
    Ok(Built { version: gateway.policy_version().to_owned(), catalog: gateway.catalog().clone(), plan_rules, json })
}

/// A hash of everything a plugin configuration is built from: every file directly in the
/// policy dir (what `bundle::load_policy` reads) and the catalog file. Unreadable counts too.
pub fn fingerprint(src: &Sources) -> u64 {
    let mut h = DefaultHasher::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src.policies)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files.push(src.catalog.clone());
    files.extend(src.settings.clone());
    for f in files {
        f.hash(&mut h);
        std::fs::read(&f).map_err(|e| e.kind()).hash(&mut h);
    }
    h.finish()
}

/// Replaces the ECDS file atomically (the rename is the move Envoy's file watch reacts to), as a
/// file only its owner can read: it carries the ticket signing key.
pub fn write_ecds(path: &Path, contents: &str) -> Result<()> {
    crate::devstack::certs::write_file(path, contents, crate::devstack::certs::KEY_MODE).map_err(Into::into)
}

/// Watches the sources and pushes each valid change to Envoy through the ECDS file.
pub struct Reloader {
    pub sources: Sources,
    pub ecds_path: PathBuf,
    /// The filter's Wasm config, without its plugin configuration.
    pub filter: serde_json::Value,
    /// The runner's catalog, kept in step with what the filter is given.
    pub runner_catalog: SharedCatalog,
    pub envoy_log: PathBuf,
    pub active_version: String,
    pub fingerprint: u64,
    /// Envoy's threads that run the filter (main and workers); each logs its configuration.
    pub envoy_threads: usize,
}

impl Reloader {
    pub async fn run(mut self) {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            self.poll().await;
        }
    }

    async fn poll(&mut self) {
        let fingerprint = fingerprint(&self.sources);
        if fingerprint == self.fingerprint {
            return;
        }
        self.fingerprint = fingerprint;
        let built = match build(&self.sources) {
            Ok(built) => built,
            Err(e) => {
                println!("portcullis: policy change refused, not pushed (policy version {} stays): {e:#}", self.active_version);
                return;
            }
        };
        if built.version == self.active_version {
            return;
        }
        if let Err(e) = self.push(&built) {
            println!("portcullis: could not push policy version {}: {e:#}", built.version);
            return;
        }
        println!("portcullis: pushed policy version {}", built.version);
        let from = std::fs::metadata(&self.envoy_log).map_or(0, |m| m.len());
        self.active_version = built.version.clone();
        match wait_applied(&self.envoy_log, from, &built.version, self.envoy_threads).await {
            Ok(()) => println!("portcullis: policy version {} active in Envoy", built.version),
            Err(e) => println!("portcullis: policy version {} not confirmed by Envoy: {e:#}", built.version),
        }
    }

    fn push(&self, built: &Built) -> Result<()> {
        let response = ecds_response(&self.filter, &built.json, &built.version)?;
        // The runner learns the new catalog first: a tool the new config allows is known to the
        // runner before any ticket for it exists. A removed tool is refused by the runner a
        // moment before the filter stops allowing it (fails closed).
        self.runner_catalog.replace(built.catalog.clone(), built.plan_rules.clone());
        write_ecds(&self.ecds_path, &response)
    }
}

/// Waits until the filter logs, after byte `from` of Envoy's log, on each of Envoy's `threads`
/// threads, that it is configured with `version`; or that it refused a configuration. Envoy
/// builds the new filter config (one VM per thread, each configured) before it swaps it in on
/// the workers, in order on each thread, so new streams use it from about this moment on.
async fn wait_applied(log: &Path, from: u64, version: &str, threads: usize) -> Result<()> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    let configured = format!("policy {version}");
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
        if let Some(line) = new.lines().find(|l| l.contains("portcullis: refusing to start")) {
            anyhow::bail!("the filter refused it: {line}");
        }
        let configured_threads: std::collections::BTreeSet<&str> = new
            .lines()
            .filter(|l| l.contains("portcullis: configured") && l.contains(&configured))
            // Envoy's log lines start with "[time][thread id][level]...".
            .filter_map(|l| l.split("][").nth(1))
            .collect();
        if configured_threads.len() >= threads {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("no \"portcullis: configured\" line for it in {} after {APPLY_TIMEOUT:?}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
