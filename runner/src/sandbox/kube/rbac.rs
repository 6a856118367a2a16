//! The runner's own Kubernetes permissions, as one list shared with the Helm chart
//! (`charts/portcullis/files/runner-rbac.yaml`), enforced on every request the backend sends.
//!
//! [`Declared`] is a layer of the backend's client: it classifies each request the way the API
//! server's RBAC authorizer does (API group, resource, subresource, verb) and refuses, before
//! it leaves the runner, any request the list does not cover. The chart renders the same list
//! as the runner's ClusterRole, so a call added to the code without a line in the list fails
//! in every test, and the ClusterRole never grants what the code does not use (the tests also
//! check that every listed verb is used). It also counts requests, for the per-job figures.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::Deserialize;

/// The list, as the chart ships it.
pub const RUNNER_RBAC_YAML: &str = include_str!("../../../../charts/portcullis/files/runner-rbac.yaml");

/// One RBAC PolicyRule (the fields the list uses).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

/// What RBAC sees of one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    pub group: String,
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub resource: String,
    pub verb: String,
}

impl std::fmt::Display for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{} {} ({group})", self.verb, self.resource)
    }
}

pub fn runner_rules() -> Result<Vec<PolicyRule>, serde_yaml::Error> {
    serde_yaml::from_str(RUNNER_RBAC_YAML)
}

/// Every (group, resource, verb) the list grants, one by one.
pub fn granted(rules: &[PolicyRule]) -> BTreeSet<ApiCall> {
    let mut out = BTreeSet::new();
    for r in rules {
        for group in &r.api_groups {
            for resource in &r.resources {
                for verb in &r.verbs {
                    out.insert(ApiCall { group: group.clone(), resource: resource.clone(), verb: verb.clone() });
                }
            }
        }
    }
    out
}

/// Classifies a request as the API server's RBAC does, for the paths this backend uses
/// (`/api/v1/...`, `/apis/<group>/<version>/...`, namespaced or not). `None`: not a resource
/// request this layer understands, which is refused.
pub fn classify(method: &http::Method, uri: &http::Uri) -> Option<ApiCall> {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    // namespaces/<ns>/<resource>/... is a namespaced resource; namespaces[/<name>] is the
    // namespace resource itself.
    let (resource, name, sub) = match rest {
        ["namespaces", _ns, resource, tail @ ..] => (*resource, tail.first().copied(), tail.get(1).copied()),
        [resource, tail @ ..] => (*resource, tail.first().copied(), tail.get(1).copied()),
        [] => return None,
    };
    let watching = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match (method.as_str(), name) {
        ("GET", _) if watching => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return None,
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    Some(ApiCall { group: group.to_owned(), resource, verb: verb.to_owned() })
}

/// The layer's shared state: the grants, and what was sent.
#[derive(Debug, Default)]
pub struct Ledger {
    granted: BTreeSet<ApiCall>,
    requests: AtomicU64,
    used: Mutex<BTreeSet<ApiCall>>,
}

impl Ledger {
    pub fn new(rules: &[PolicyRule]) -> Arc<Self> {
        Arc::new(Ledger { granted: granted(rules), ..Default::default() })
    }

    /// Requests sent so far (refused ones are not sent, not counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Each distinct kind of request sent so far.
    pub fn used(&self) -> BTreeSet<ApiCall> {
        self.used.lock().map(|u| u.clone()).unwrap_or_default()
    }

    fn admit(&self, method: &http::Method, uri: &http::Uri) -> Result<(), String> {
        let Some(call) = classify(method, uri) else {
            return Err(format!("{method} {} is not a resource request the runner declares", uri.path()));
        };
        if !self.granted.contains(&call) {
            return Err(format!("the runner does not declare {call} (charts/portcullis/files/runner-rbac.yaml)"));
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut used) = self.used.lock() {
            used.insert(call);
        }
        Ok(())
    }
}

/// The tower layer: [`Ledger::admit`] before every request.
#[derive(Clone)]
pub struct Declared(pub Arc<Ledger>);

impl<S> tower::Layer<S> for Declared {
    type Service = DeclaredService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeclaredService { inner, ledger: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct DeclaredService<S> {
    inner: S,
    ledger: Arc<Ledger>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, R> tower::Service<http::Request<B>> for DeclaredService<S>
where
    S: tower::Service<http::Request<B>, Response = R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Err(refusal) = self.ledger.admit(req.method(), req.uri()) {
            return Box::pin(async move { Err(refusal.into()) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, uri: &str) -> Option<ApiCall> {
        classify(&method.parse().unwrap(), &uri.parse().unwrap())
    }

    fn api(group: &str, resource: &str, verb: &str) -> Option<ApiCall> {
        Some(ApiCall { group: group.into(), resource: resource.into(), verb: verb.into() })
    }

    #[test]
    fn requests_are_classified_as_rbac_does() {
        assert_eq!(call("POST", "/api/v1/namespaces?"), api("", "namespaces", "create"));
        assert_eq!(call("GET", "/api/v1/namespaces/pj-1"), api("", "namespaces", "get"));
        assert_eq!(call("DELETE", "/api/v1/namespaces/pj-1"), api("", "namespaces", "delete"));
        assert_eq!(call("GET", "/api/v1/namespaces?labelSelector=a%3Db"), api("", "namespaces", "list"));
        assert_eq!(call("POST", "/api/v1/namespaces/pj-1/serviceaccounts"), api("", "serviceaccounts", "create"));
        assert_eq!(call("GET", "/api/v1/namespaces/pj-1/pods/job-x/log?container=tool"), api("", "pods/log", "get"));
        assert_eq!(call("GET", "/apis/batch/v1/namespaces/pj-1/jobs?fieldSelector=x&watch=true"), api("batch", "jobs", "watch"));
        assert_eq!(call("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/pj-1/roles"), api("rbac.authorization.k8s.io", "roles", "create"));
        assert_eq!(call("GET", "/version"), None);
    }

    /// The chart's list parses, and the layer refuses what it does not grant.
    #[test]
    fn the_shared_list_is_enforced() {
        let ledger = Ledger::new(&runner_rules().unwrap());
        assert!(ledger.admit(&http::Method::POST, &"/api/v1/namespaces".parse().unwrap()).is_ok());
        let err = ledger.admit(&http::Method::GET, &"/api/v1/namespaces/kube-system/secrets/x".parse().unwrap()).unwrap_err();
        assert!(err.contains("get secrets (core)"), "{err}");
        assert_eq!(ledger.requests(), 1);
        assert_eq!(ledger.used().len(), 1);
    }
}
