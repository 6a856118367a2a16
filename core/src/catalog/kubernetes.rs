//! A tool's `execution.kubernetes` section: how the Kubernetes backend runs it, in a namespace
//! created for one job. Everything the job may do is written here (its Role's rules, its
//! egress, its resources), so a reviewer of the catalog sees a tool's whole reach.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The Kubernetes minimum for a TokenRequest's `expirationSeconds`.
pub const MIN_TOKEN_SECONDS: u64 = 600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesExecution {
    /// The container image; pin it by digest (`...@sha256:`) so the catalog names what runs.
    pub image: String,
    /// argv; absent: `execution.local.command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The job's Role in its own namespace. Empty: no API access, no token mounted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Audience of the job's projected token; absent: the API server's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_audience: Option<String>,
    /// Lifetime of the job's projected token (at least [`MIN_TOKEN_SECONDS`]).
    #[serde(default = "default_token_seconds")]
    pub token_seconds: u64,
    /// Where the job may connect; empty: nowhere (default-deny egress).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Egress>,
    /// Requests and limits of the job's container, and its namespace's quota.
    #[serde(default)]
    pub resources: Resources,
    /// `activeDeadlineSeconds` of the Job, and how long the runner waits for it.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// A RuntimeClass (gVisor, Kata) for the job's pod; absent: the runner's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<String>,
    /// Namespaces kept ready for this tool ahead of time (quota, limits, network policy).
    #[serde(default)]
    pub warm_pool: usize,
}

fn default_token_seconds() -> u64 {
    MIN_TOKEN_SECONDS
}
fn default_timeout() -> u64 {
    60
}

/// One rule of the job's Role (an RBAC PolicyRule, namespaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// One egress allowance: a CIDR, and TCP ports (empty: all ports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpu: default_cpu(), memory: default_memory() }
    }
}

fn default_cpu() -> String {
    "250m".into()
}
fn default_memory() -> String {
    "128Mi".into()
}

impl KubernetesExecution {
    /// Whether the job talks to the API server (and so gets a Role, a binding and a token).
    pub fn needs_api(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Checks what Kubernetes would refuse later, and what would widen a job's reach by
    /// accident (wildcards), at configuration time.
    pub fn validate(&self) -> Result<(), String> {
        if self.image.trim().is_empty() {
            return Err("image must not be empty".into());
        }
        if self.timeout_seconds == 0 {
            return Err("timeout_seconds must be positive".into());
        }
        if self.token_seconds < MIN_TOKEN_SECONDS {
            return Err(format!("token_seconds must be at least {MIN_TOKEN_SECONDS} (the Kubernetes minimum)"));
        }
        for rule in &self.rules {
            if rule.verbs.is_empty() || rule.resources.is_empty() {
                return Err("a rule needs verbs and resources".into());
            }
            let all = rule.verbs.iter().chain(&rule.resources).chain(&rule.api_groups);
            if all.clone().any(|v| v == "*") {
                return Err("rules may not use \"*\": name each verb, resource and API group".into());
            }
            if rule.verbs.iter().any(|v| ["escalate", "bind", "impersonate"].contains(&v.as_str())) {
                return Err("rules may not grant escalate, bind or impersonate".into());
            }
        }
        for e in &self.egress {
            if !cidr(&e.cidr) {
                return Err(format!("egress cidr {:?} is not an IPv4 or IPv6 CIDR", e.cidr));
            }
            if e.ports.contains(&0) {
                return Err("egress port 0".into());
            }
        }
        if let Some(rc) = &self.runtime_class {
            if !crate::placement::label_name(rc) {
                return Err(format!("runtime_class {rc:?} is not a valid name"));
            }
        }
        Ok(())
    }
}

fn cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else { return false };
    let Ok(len) = len.parse::<u8>() else { return false };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

/// The union of every tool's rules, by (API group, resource): what the runner itself must hold
/// to create these Roles without `escalate` (see the chart's README, "Creating Roles").
pub fn grants<'a>(sections: impl Iterator<Item = &'a KubernetesExecution>) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for rule in sections.flat_map(|k| &k.rules) {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let verbs = out.entry((group.clone(), resource.clone())).or_default();
                for v in &rule.verbs {
                    if !verbs.contains(v) {
                        verbs.push(v.clone());
                    }
                }
                verbs.sort();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> KubernetesExecution {
        serde_json::from_value(serde_json::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let k = section(r#"{"image": "tools/kubectl@sha256:00"}"#);
        assert!(!k.needs_api());
        assert_eq!((k.timeout_seconds, k.token_seconds), (60, 600));
        assert!(k.validate().is_ok());
        let star = section(r#"{"image": "x", "rules": [{"api_groups": [""], "resources": ["*"], "verbs": ["get"]}]}"#);
        assert!(star.validate().unwrap_err().contains("*"));
        let esc = section(r#"{"image": "x", "rules": [{"api_groups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}]}"#);
        assert!(esc.validate().is_err());
        assert!(section(r#"{"image": "x", "egress": [{"cidr": "10.0.0.0/33"}]}"#).validate().is_err());
        assert!(section(r#"{"image": "x", "egress": [{"cidr": "fd00::/8", "ports": [443]}]}"#).validate().is_ok());
        assert!(section(r#"{"image": "x", "token_seconds": 60}"#).validate().is_err());
    }

    #[test]
    fn grants_are_the_union_by_resource() {
        let a = section(r#"{"image": "x", "rules": [{"api_groups": [""], "resources": ["pods", "configmaps"], "verbs": ["list", "get"]}]}"#);
        let b = section(r#"{"image": "x", "rules": [{"api_groups": [""], "resources": ["pods"], "verbs": ["watch", "get"]}]}"#);
        let g = grants([&a, &b].into_iter());
        assert_eq!(g[&("".into(), "pods".into())], vec!["get", "list", "watch"]);
        assert_eq!(g[&("".into(), "configmaps".into())], vec!["get", "list"]);
    }
}
