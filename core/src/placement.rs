//! Where a job runs: a backend, and on Kubernetes a cluster context and node selector. A tool's
//! catalog entry names its default; a policy decision may name another, which then travels in
//! the signed ticket so the runner executes the call exactly where it was decided. The runner
//! refuses a placement it does not have (see the runner's backend registry).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The local backend (fresh Linux namespaces on the runner's machine).
pub const LOCAL: &str = "local";
/// The Kubernetes backend (a namespace per job).
pub const KUBERNETES: &str = "kubernetes";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// [`LOCAL`] or [`KUBERNETES`].
    pub backend: String,
    /// Kubernetes only: the kubeconfig context (cluster) the runner knows by this name.
    /// Absent: the runner's default context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Kubernetes only: the job's pod runs only on nodes with these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement { backend: LOCAL.into(), context: None, node_selector: BTreeMap::new() }
    }
}

impl Placement {
    /// Checks the names against what the backends accept, so a malformed placement (from a
    /// catalog or a policy) is refused where it is written, not when a job starts.
    pub fn validate(&self) -> Result<(), String> {
        match self.backend.as_str() {
            LOCAL if self.context.is_some() || !self.node_selector.is_empty() => {
                Err("the local backend takes no context or node_selector".into())
            }
            LOCAL => Ok(()),
            KUBERNETES => {
                if let Some(c) = &self.context {
                    if c.is_empty() || c.len() > 253 || c.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                        return Err(format!("context {c:?} is not a context name"));
                    }
                }
                for (k, v) in &self.node_selector {
                    if !label_key(k) {
                        return Err(format!("node_selector key {k:?} is not a Kubernetes label key"));
                    }
                    if !(v.is_empty() || label_name(v)) {
                        return Err(format!("node_selector value {v:?} is not a Kubernetes label value"));
                    }
                }
                Ok(())
            }
            other => Err(format!("unknown backend {other:?} (expected {LOCAL:?} or {KUBERNETES:?})")),
        }
    }

    /// Human-readable, for errors and audit: `kubernetes/prod-eu {region=eu}`.
    pub fn describe(&self) -> String {
        let mut s = self.backend.clone();
        if let Some(c) = &self.context {
            s.push('/');
            s.push_str(c);
        }
        if !self.node_selector.is_empty() {
            let sel: Vec<String> = self.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" {{{}}}", sel.join(",")));
        }
        s
    }
}

/// A label name (or value): 1-63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=63).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a label name.
pub fn label_key(s: &str) -> bool {
    match s.split_once('/') {
        None => label_name(s),
        Some((prefix, name)) => {
            label_name(name)
                && (1..=253).contains(&prefix.len())
                && prefix.split('.').all(|p| label_name(p) && !p.contains('_') && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_are_checked_where_they_are_written() {
        assert!(Placement::default().validate().is_ok());
        let k = |ctx: Option<&str>, sel: &[(&str, &str)]| Placement {
            backend: KUBERNETES.into(),
            context: ctx.map(str::to_owned),
            node_selector: sel.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        };
        assert!(k(Some("prod-eu"), &[("topology.kubernetes.io/region", "eu-west-1")]).validate().is_ok());
        assert!(k(None, &[("bad key!", "x")]).validate().is_err());
        assert!(k(None, &[("region", "-x")]).validate().is_err());
        assert!(k(Some("with space"), &[]).validate().is_err());
        let local_with_ctx = Placement { context: Some("x".into()), ..Placement::default() };
        assert!(local_with_ctx.validate().is_err());
        assert!(Placement { backend: "mars".into(), ..Placement::default() }.validate().is_err());
        assert_eq!(k(Some("eu"), &[("r", "1")]).describe(), "kubernetes/eu {r=1}");
    }
}
