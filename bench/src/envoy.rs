//! Envoy for the benchmark: the repository's template rendered exactly as `portcullis up`
//! renders it, then edited structurally in the same way for every variant.
//!
//! - Both variants: the access log is removed (a log line per request costs the same
//!   in both, but adds noise and a pipe to drain), and stats are flushed on admin requests so
//!   that the filter's histogram can be read right after a run (Envoy otherwise merges
//!   histograms every 5 s).
//! - `bare`: the `portcullis` wasm filter entry is removed; listener, mTLS, router, cluster
//!   and timeouts stay identical.
//! - `native`: as bare, with Envoy's own `buffer`, `mcp` and `rbac` filters in its place and a
//!   local reply that restates RBAC's 403 as a JSON-RPC error (see `native`).
//! - `floor`, `floor+sig`: the wasm filter entry runs the benchmark's floor module
//!   (`bench/floor`) instead of Portcullis, with its own plugin configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use portcullis_runner::devstack::certs::DevPki;
use portcullis_runner::devstack::envoy_config::{self, render, EnvoyParams};
use serde_yaml::Value;

use crate::native;
use crate::procs::Proc;
use crate::stats::Bucket;

/// The decision-time histogram the filter defines (proxy-wasm custom metrics get Envoy's
/// `wasmcustom.` prefix).
pub const DECISION_STAT: &str = "wasmcustom.portcullis.decision_us";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Variant {
    /// Envoy without the Portcullis filter.
    #[serde(rename = "bare")]
    Bare,
    /// Envoy with the Portcullis filter.
    #[serde(rename = "filter")]
    Filter,
    /// Envoy's own MCP and RBAC filters with the reader's rules: the native peer.
    #[serde(rename = "native")]
    Native,
    /// The proxy-wasm floor: Portcullis's per-request work without a policy, ticket unsigned.
    #[serde(rename = "floor")]
    Floor,
    /// The floor, signing its ticket.
    #[serde(rename = "floor+sig")]
    FloorSigned,
}

impl Variant {
    /// In table order: the baseline, Portcullis, then its references.
    pub const ALL: [Variant; 5] = [Variant::Bare, Variant::Filter, Variant::Native, Variant::Floor, Variant::FloorSigned];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Filter => "filter",
            Variant::Native => "native",
            Variant::Floor => "floor",
            Variant::FloorSigned => "floor+sig",
        }
    }

    /// A reference that Portcullis is compared with (not the baseline, not Portcullis).
    pub fn is_reference(self) -> bool {
        matches!(self, Variant::Native | Variant::Floor | Variant::FloorSigned)
    }

    /// The log lines of a wasm module that has (first) or has not (second) configured itself.
    fn wasm_markers(self) -> Option<(&'static str, &'static str)> {
        match self {
            Variant::Filter => Some(("portcullis: configured", "portcullis: refusing to start")),
            Variant::Floor | Variant::FloorSigned => Some(("floor: configured", "floor: refusing to start")),
            Variant::Bare | Variant::Native => None,
        }
    }
}

pub struct RenderInput<'a> {
    pub template: &'a str,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub admin: SocketAddr,
    pub wasm: &'a Path,
    pub plugin_config_json: &'a str,
    pub pki: &'a DevPki,
    pub variant: Variant,
    /// The reader's rules, for the native variant.
    pub native: &'a native::ReaderRules,
}

/// The largest body the native chain buffers: the filter's default `max_body_bytes`.
const NATIVE_MAX_BODY: u64 = 1 << 20;

pub fn render_config(input: &RenderInput<'_>) -> Result<String> {
    let params = EnvoyParams {
        listen_addr: input.listen,
        runner_addr: input.upstream,
        // TCP: the bench's keys are its own throwaways, and its HTTP client speaks TCP.
        admin: envoy_config::AdminAddress::Tcp(input.admin),
        wasm_path: input.wasm.to_owned(),
        plugin_config_json: input.plugin_config_json.to_owned(),
        pki: input.pki.clone(),
        // Removed below: the bench measures the proxy, not its logging.
        access_log: input.pki.dir.join("access.log"),
    };
    let rendered = render(input.template, &params)?;
    let mut root: Value = serde_yaml::from_str(&rendered).context("re-reading the rendered Envoy config")?;
    let Value::Mapping(top) = &mut root else { bail!("rendered Envoy config is not a mapping") };
    top.insert("stats_flush_on_admin".into(), true.into());

    let hcm = hcm_config(&mut root)?;
    hcm.remove("access_log").context("the template's http_connection_manager has no access_log (update the bench)")?;
    let filters = hcm
        .get_mut("http_filters")
        .and_then(Value::as_sequence_mut)
        .context("http_connection_manager has no http_filters list")?;
    let before = filters.len();
    if matches!(input.variant, Variant::Bare | Variant::Native) {
        filters.retain(|f| f.get("name").and_then(Value::as_str) != Some(envoy_config::WASM_FILTER_NAME));
        if filters.len() != before - 1 {
            bail!("expected exactly one http filter named {:?}", envoy_config::WASM_FILTER_NAME);
        }
    }
    if matches!(input.variant, Variant::Floor | Variant::FloorSigned) {
        // Its own names, so that Envoy's log and stats say which module runs.
        let wasm = filters
            .iter_mut()
            .find(|f| f.get("name").and_then(Value::as_str) == Some(envoy_config::WASM_FILTER_NAME))
            .and_then(|f| f.get_mut("typed_config"))
            .and_then(|c| c.get_mut("config"))
            .and_then(Value::as_mapping_mut)
            .context("no wasm filter config to run the floor in")?;
        wasm.insert("name".into(), "floor".into());
        wasm.insert("root_id".into(), "floor".into());
        let vm = wasm.get_mut("vm_config").and_then(Value::as_mapping_mut).context("no vm_config")?;
        vm.insert("vm_id".into(), "floor".into());
    }
    if input.variant == Variant::Native {
        let router = filters.len().checked_sub(1).context("no http filters")?;
        for (i, f) in native::http_filters(input.native, NATIVE_MAX_BODY).into_iter().enumerate() {
            filters.insert(router + i, serde_yaml::to_value(f)?);
        }
        hcm.insert("local_reply_config".into(), serde_yaml::to_value(native::local_reply_config())?);
    }
    Ok(format!(
        "# Rendered by portcullis-bench ({} variant) from envoy/envoy.yaml; do not edit.\n{}",
        input.variant.label(),
        serde_yaml::to_string(&root)?
    ))
}

fn hcm_config(root: &mut Value) -> Result<&mut serde_yaml::Mapping> {
    let listeners = root
        .get_mut("static_resources")
        .and_then(|s| s.get_mut("listeners"))
        .and_then(Value::as_sequence_mut)
        .context("no static_resources.listeners")?;
    let listener = listeners
        .iter_mut()
        .find(|l| l.get("name").and_then(Value::as_str) == Some(envoy_config::LISTENER_NAME))
        .context("no listener portcullis_mtls")?;
    let chain = listener
        .get_mut("filter_chains")
        .and_then(Value::as_sequence_mut)
        .and_then(|c| c.first_mut())
        .context("listener has no filter chain")?;
    let hcm = chain
        .get_mut("filters")
        .and_then(Value::as_sequence_mut)
        .and_then(|f| f.iter_mut().find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.network.http_connection_manager")))
        .and_then(|f| f.get_mut("typed_config"))
        .and_then(Value::as_mapping_mut)
        .context("no http_connection_manager in the listener")?;
    Ok(hcm)
}

/// A running Envoy and how to reach its admin API.
pub struct Envoy {
    pub proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub variant: Variant,
}

impl Envoy {
    /// Starts Envoy the way `portcullis up` does (`--concurrency 2 --disable-hot-restart`),
    /// and waits until it is LIVE and (with the filter) the plugin reported its configuration.
    pub async fn start(bin: &Path, config: &Path, log: &Path, listen: SocketAddr, admin: SocketAddr, variant: Variant) -> Result<Envoy> {
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(config)
            .args(["--disable-hot-restart", "--concurrency", "2", "-l", "warning", "--component-log-level", "wasm:info"]);
        let proc = Proc::spawn(&format!("envoy ({})", variant.label()), cmd, log)?;
        let mut envoy = Envoy { proc, listen, admin, variant };
        envoy.wait_ready(Duration::from_secs(90)).await?;
        Ok(envoy)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.proc.check_alive()?;
            let log = self.proc.log_text();
            let markers = self.variant.wasm_markers();
            if let Some(line) = markers.and_then(|(_, refused)| log.lines().find(|l| l.contains(refused))) {
                bail!("the {} wasm module refused its configuration: {line}", self.variant.label());
            }
            let configured = markers.is_none_or(|(configured, _)| log.contains(configured));
            if configured && self.admin_get("/ready").await.is_ok_and(|t| t.contains("LIVE")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("envoy ({}) not ready after {limit:?}; log:\n{}", self.variant.label(), self.proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn admin_get(&self, path: &str) -> Result<String> {
        let r = tokio::time::timeout(Duration::from_secs(10), crate::http::get_plain(self.admin, path))
            .await
            .with_context(|| format!("admin {path} timed out"))??;
        ensure!(r.status == 200, "admin {path}: HTTP {}", r.status);
        Ok(r.text())
    }

    /// Cumulative buckets of the filter's decision histogram. Envoy merges the workers'
    /// histograms asynchronously when the admin asks, so the first read triggers the merge
    /// and a second one, shortly after, sees it.
    pub async fn decision_buckets(&self) -> Result<Vec<Bucket>> {
        let path = "/stats?filter=portcullis.decision_us&format=json&histogram_buckets=detailed";
        self.admin_get(path).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = self.admin_get(path).await?;
        parse_detailed(&text)
    }

    /// `P0..P100` as Envoy's admin prints them for the decision histogram (cumulative since
    /// start; shown as-is in the JSON results).
    pub async fn decision_text(&self) -> Result<String> {
        self.admin_get("/stats?filter=portcullis.decision_us").await
    }
}

/// Parses `/stats?format=json&histogram_buckets=detailed` for [`DECISION_STAT`].
fn parse_detailed(text: &str) -> Result<Vec<Bucket>> {
    let v: serde_json::Value = serde_json::from_str(text).context("admin stats are not JSON")?;
    let details = v["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["histograms"]["details"].as_array())
        .flatten()
        .find(|d| d["name"] == DECISION_STAT)
        .with_context(|| format!("no histogram {DECISION_STAT} in the admin stats: {text}"))?;
    let buckets = details["totals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| Bucket {
            lower: b["lower_bound"].as_f64().unwrap_or(0.0),
            width: b["width"].as_f64().unwrap_or(0.0),
            count: b["count"].as_u64().unwrap_or(0),
        })
        .collect();
    Ok(buckets)
}

/// The Envoy binary, found the way `portcullis up` finds it; a missing Envoy is an error.
pub fn find_envoy(root: &Path) -> Result<PathBuf> {
    envoy_config::find_envoy(root, &envoy_config::process_env).context("Envoy is required for the benchmark (run `make setup`)")
}

pub fn envoy_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .and_then(|s| s.split("version: ").nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_detailed_histogram_json() {
        let text = r#"{"stats":[{"histograms":{"supported_percentiles":[0,50],"details":[{"name":"wasmcustom.portcullis.decision_us","totals":[{"lower_bound":440.00000000000006,"width":10,"count":1},{"lower_bound":450,"width":10,"count":2}],"intervals":[],"percentiles":[]}]}}]}"#;
        let b = parse_detailed(text).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1], Bucket { lower: 450.0, width: 10.0, count: 2 });
    }

    /// The chains built here (rather than taken from envoy/envoy.yaml) pass Envoy's own
    /// validation: the native peer's buffer/mcp/rbac filters and local reply, and bare.
    #[test]
    fn native_and_bare_configs_pass_envoy_validate() {
        use portcullis_runner::devstack::up::{DEV_AGENTS, TRUST_DOMAIN};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
        let envoy = find_envoy(&root).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = portcullis_runner::devstack::certs::ensure(&dir.path().join("certs"), TRUST_DOMAIN, DEV_AGENTS).unwrap();
        let rules = native::reader_rules(&root).unwrap();
        let template = std::fs::read_to_string(root.join("envoy/envoy.yaml")).unwrap();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        for variant in [Variant::Bare, Variant::Native] {
            let config = render_config(&RenderInput {
                template: &template,
                listen: addr(18443),
                upstream: addr(19443),
                admin: addr(19901),
                wasm: &dir.path().join("unused.wasm"),
                plugin_config_json: "{}",
                pki: &pki,
                variant,
                native: &rules,
            })
            .unwrap();
            let path = dir.path().join(format!("{}.yaml", variant.label()));
            std::fs::write(&path, &config).unwrap();
            let out = Command::new(&envoy).args(["--mode", "validate", "-c"]).arg(&path).output().unwrap();
            assert!(out.status.success(), "{} config: {}\n{config}", variant.label(), String::from_utf8_lossy(&out.stderr));
        }
    }
}
