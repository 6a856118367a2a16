//! Builds the filter's plugin configuration from the repository's policy bundle, catalog and
//! ticket signing key. The filter cannot read files inside Envoy, so everything it needs
//! travels in this one JSON document.

use std::path::Path;

use anyhow::{bail, Context, Result};
use portcullis_core::authz::{PolicyBundle, PolicyModule};
use portcullis_core::catalog::Catalog;
use portcullis_core::userjwt::UsersConfig;
use serde_json::{json, Value};

/// Loads a catalog file (YAML or JSON) as a JSON value, validating it.
pub fn load_catalog_value(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading catalog {}", path.display()))?;
    let value: Value = serde_yaml::from_str(&text).with_context(|| format!("parsing catalog {}", path.display()))?;
    Catalog::from_value(value.clone()).with_context(|| format!("validating catalog {}", path.display()))?;
    Ok(value)
}

pub fn load_catalog(path: &Path) -> Result<Catalog> {
    Ok(Catalog::from_value(load_catalog_value(path)?)?)
}

/// Loads the policy bundle in `dir`: every `*.rego` (tests included only when `with_tests`)
/// and `data.json`.
pub fn load_policy(dir: &Path, with_tests: bool) -> Result<PolicyBundle> {
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading policy dir {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if !name.ends_with(".rego") || (!with_tests && name.ends_with("_test.rego")) {
            continue;
        }
        let source = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        modules.push(PolicyModule { name, source });
    }
    if modules.is_empty() {
        bail!("no .rego modules in {}", dir.display());
    }
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    let data_path = dir.join("data.json");
    let data = match std::fs::read_to_string(&data_path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("parsing {}", data_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
        Err(e) => return Err(e).with_context(|| format!("reading {}", data_path.display())),
    };
    Ok(PolicyBundle { modules, data })
}

/// The plugin configuration JSON for `policy` (loaded by the caller, who may need the same read
/// for the runner's plan rules), checked by building a gateway from it exactly as the filter
/// will, so a bad bundle fails here rather than inside Envoy.
pub fn plugin_config(policy: &PolicyBundle, catalog_path: &Path, signing_key: &Path, users: &UsersConfig) -> Result<String> {
    let catalog = load_catalog_value(catalog_path)?;
    let key = std::fs::read_to_string(signing_key).with_context(|| format!("reading {}", signing_key.display()))?;
    let config = json!({
        "policy": policy,
        "catalog": catalog,
        "ticket": { "signing_key_pem": key, "issuer": "portcullis-gateway", "ttl_seconds": 30 },
        "users": users,
    })
    .to_string();
    portcullis_core::gateway::Gateway::from_config_json(config.as_bytes()).context("the plugin configuration does not build a gateway")?;
    Ok(config)
}

/// Plugin-configuration sections an operator may set beside the bundle (`up --gateway-settings`).
const SETTINGS: &[&str] = &["limits", "rate_limits", "denial_status", "profile"];

/// Merges a settings file (YAML or JSON object with keys among [`SETTINGS`]) into a plugin
/// configuration and checks the result builds a gateway.
pub fn with_settings(config: String, settings: Option<&Path>) -> Result<String> {
    let Some(path) = settings else { return Ok(config) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let extra: serde_json::Map<String, Value> =
        serde_yaml::from_str(&text).with_context(|| format!("{}: expected a mapping of settings", path.display()))?;
    let mut config: serde_json::Map<String, Value> = serde_json::from_str(&config)?;
    for (key, value) in extra {
        if !SETTINGS.contains(&key.as_str()) {
            bail!("{}: unknown setting {key:?} (expected one of {SETTINGS:?})", path.display());
        }
        config.insert(key, value);
    }
    let config = Value::Object(config).to_string();
    portcullis_core::gateway::Gateway::from_config_json(config.as_bytes())
        .with_context(|| format!("{}: the settings do not build a gateway", path.display()))?;
    Ok(config)
}
