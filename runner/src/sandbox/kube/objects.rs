//! The objects of one job's namespace, built from the job and its tool's
//! `execution.kubernetes` section. Pure functions: what a job gets is readable (and tested)
//! here, apart from the API calls that create it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use portcullis_core::catalog::KubernetesExecution;
use serde_json::{json, Value};

use crate::sandbox::JobSpec;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "portcullis";
pub const JOB_ID: &str = "portcullis.dev/job-id";
pub const PLAN_HASH: &str = "portcullis.dev/plan-hash";
pub const REQUESTER: &str = "portcullis.dev/requester";
pub const TOOL: &str = "portcullis.dev/tool";
/// `warm` while a pool namespace waits for a job, `job` once it serves one.
pub const STATE: &str = "portcullis.dev/state";
/// RFC 3339; past it, the reaper deletes the namespace whoever created it.
pub const EXPIRES_AT: &str = "portcullis.dev/expires-at";

/// The one container of a job's pod.
pub const CONTAINER: &str = "tool";
/// The ServiceAccount, Role, RoleBinding, quota, limits and Job of a namespace: one job each.
pub const NAME: &str = "job";
/// Where the job's stdin (its canonical arguments, or a stored plan) is mounted.
pub const STDIN_DIR: &str = "/var/run/portcullis";
pub const STDIN_KEY: &str = "stdin";
/// Where the job's projected token is mounted, when its tool needs the API.
pub const TOKEN_DIR: &str = "/var/run/secrets/portcullis";
/// The unprivileged uid/gid a job runs as unless its image says otherwise.
pub const JOB_UID: i64 = 65532;

/// A label value from any text: the characters labels allow, at most 63, alphanumeric ends.
/// Labels are for selecting; the exact values are in annotations beside them.
pub fn label_value(text: &str) -> String {
    let mapped: String = text.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).take(63).collect();
    mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    // The JSON below is written against the Kubernetes types; a mismatch is a bug caught by
    // the unit tests, so falling back to the empty object is never reached in practice.
    serde_json::from_value(value).unwrap_or_else(|e| panic!("object literal does not match its type: {e}"))
}

/// The namespace, labelled as Portcullis's and (for a job, not yet for a warm one) with the
/// job it serves.
pub fn namespace(name: &str, tool: &str, expires_at: &str, job: Option<&JobSpec>) -> Namespace {
    let mut labels = BTreeMap::from([(MANAGED_BY.to_owned(), MANAGER.to_owned()), (TOOL.to_owned(), label_value(tool))]);
    let mut annotations = BTreeMap::from([(EXPIRES_AT.to_owned(), expires_at.to_owned())]);
    match job {
        Some(job) => {
            let (l, a) = job_metadata(job, expires_at);
            labels.extend(l);
            annotations.extend(a);
        }
        None => {
            labels.insert(STATE.into(), "warm".into());
        }
    }
    typed(json!({"metadata": {"name": name, "labels": labels, "annotations": annotations}}))
}

/// What says which job a namespace serves, and until when: labels (for selecting) and the
/// same values unabridged in annotations, with the expiry. A new job namespace is made with
/// them; a warm one is patched with them when a job claims it.
pub fn job_metadata(job: &JobSpec, expires_at: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let hash = job.meta.plan_hash.trim_start_matches("sha256:");
    let labels = BTreeMap::from([
        (JOB_ID.to_owned(), label_value(&job.job_id)),
        (PLAN_HASH.to_owned(), label_value(hash)),
        (REQUESTER.to_owned(), label_value(&job.meta.requester)),
        (STATE.to_owned(), "job".to_owned()),
    ]);
    let annotations = BTreeMap::from([
        (JOB_ID.to_owned(), job.job_id.clone()),
        (PLAN_HASH.to_owned(), job.meta.plan_hash.clone()),
        (REQUESTER.to_owned(), job.meta.requester.clone()),
        (EXPIRES_AT.to_owned(), expires_at.to_owned()),
    ]);
    (labels, annotations)
}

/// At most one job, its pod, its stdin and the cluster's CA bundle; the tool's resources.
pub fn quota(k: &KubernetesExecution) -> ResourceQuota {
    let r = &k.resources;
    typed(json!({"metadata": {"name": NAME}, "spec": {"hard": {
        "pods": "1", "count/jobs.batch": "1", "configmaps": "2", "secrets": "0", "services": "0",
        "persistentvolumeclaims": "0", "services.loadbalancers": "0", "services.nodeports": "0",
        "requests.cpu": r.cpu, "limits.cpu": r.cpu, "requests.memory": r.memory, "limits.memory": r.memory,
    }}}))
}

/// Every container gets the tool's resources by default and may not ask for more.
pub fn limits(k: &KubernetesExecution) -> LimitRange {
    let r = &k.resources;
    let both = json!({"cpu": r.cpu, "memory": r.memory});
    typed(json!({"metadata": {"name": NAME}, "spec": {"limits": [{
        "type": "Container", "default": both, "defaultRequest": both, "max": both,
    }]}}))
}

/// Nothing in or out, for every pod of the namespace.
pub fn default_deny() -> NetworkPolicy {
    typed(json!({"metadata": {"name": "default-deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}))
}

/// The tool's egress allowlist, if it has one.
pub fn egress(k: &KubernetesExecution) -> Option<NetworkPolicy> {
    if k.egress.is_empty() {
        return None;
    }
    let rules: Vec<Value> = k
        .egress
        .iter()
        .map(|e| {
            let ports: Vec<Value> = e.ports.iter().map(|p| json!({"protocol": "TCP", "port": p})).collect();
            let mut rule = json!({"to": [{"ipBlock": {"cidr": e.cidr}}]});
            if !ports.is_empty() {
                rule["ports"] = Value::Array(ports);
            }
            rule
        })
        .collect();
    Some(typed(json!({"metadata": {"name": "egress"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": rules}})))
}

pub fn service_account() -> ServiceAccount {
    typed(json!({"metadata": {"name": NAME}, "automountServiceAccountToken": false}))
}

/// The tool's rules, exactly, in this namespace only; `None` when it needs no API access.
pub fn role(k: &KubernetesExecution) -> Option<(Role, RoleBinding)> {
    if !k.needs_api() {
        return None;
    }
    let rules: Vec<Value> = k
        .rules
        .iter()
        .map(|r| {
            let mut rule = json!({"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs});
            if !r.resource_names.is_empty() {
                rule["resourceNames"] = json!(r.resource_names);
            }
            rule
        })
        .collect();
    let role = typed(json!({"metadata": {"name": NAME}, "rules": rules}));
    let binding = typed(json!({"metadata": {"name": NAME},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME}]}));
    Some((role, binding))
}

pub fn stdin(job: &JobSpec) -> ConfigMap {
    match std::str::from_utf8(&job.stdin) {
        Ok(text) => typed(json!({"metadata": {"name": STDIN_KEY}, "data": {STDIN_KEY: text}, "immutable": true})),
        Err(_) => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&job.stdin);
            typed(json!({"metadata": {"name": STDIN_KEY}, "binaryData": {STDIN_KEY: b64}, "immutable": true}))
        }
    }
}

/// The Job: one pod, never retried, unprivileged, read-only, no capabilities, RuntimeDefault
/// seccomp, no service links, the token only if the tool needs the API (projected, bound to
/// the pod, with the tool's audience and lifetime; never a Secret), killed at its deadline.
pub fn job(job: &JobSpec, k: &KubernetesExecution, runtime_class: Option<&str>) -> Job {
    let command = if k.command.is_empty() { &job.command } else { &k.command };
    let mut env: Vec<Value> = vec![
        json!({"name": "HOME", "value": "/tmp"}),
        json!({"name": "TMPDIR", "value": "/tmp"}),
        json!({"name": "PORTCULLIS_STDIN", "value": format!("{STDIN_DIR}/{STDIN_KEY}")}),
    ];
    for (name, value) in &job.env {
        env.retain(|e| e["name"] != json!(name));
        env.push(json!({"name": name, "value": value}));
    }
    let mut mounts = vec![json!({"name": "tmp", "mountPath": "/tmp"}), json!({"name": "stdin", "mountPath": STDIN_DIR, "readOnly": true})];
    let mut volumes = vec![
        json!({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}),
        json!({"name": "stdin", "configMap": {"name": STDIN_KEY}}),
    ];
    if k.needs_api() {
        env.push(json!({"name": "PORTCULLIS_TOKEN", "value": format!("{TOKEN_DIR}/token")}));
        mounts.push(json!({"name": "token", "mountPath": TOKEN_DIR, "readOnly": true}));
        let mut token = json!({"path": "token", "expirationSeconds": k.token_seconds});
        if let Some(aud) = &k.token_audience {
            token["audience"] = json!(aud);
        }
        volumes.push(json!({"name": "token", "projected": {"sources": [
            {"serviceAccountToken": token},
            {"configMap": {"name": "kube-root-ca.crt", "optional": true, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}}));
    }
    let labels = json!({MANAGED_BY: MANAGER, JOB_ID: label_value(&job.job_id)});
    let mut pod = json!({
        "serviceAccountName": NAME,
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": true, "runAsUser": JOB_UID, "runAsGroup": JOB_UID, "fsGroup": JOB_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER, "image": k.image, "command": command, "env": env, "volumeMounts": mounts,
            "resources": {"requests": {"cpu": k.resources.cpu, "memory": k.resources.memory},
                          "limits": {"cpu": k.resources.cpu, "memory": k.resources.memory}},
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                "privileged": false, "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}},
        }],
        "volumes": volumes,
    });
    if !job.node_selector.is_empty() {
        pod["nodeSelector"] = json!(job.node_selector);
    }
    if let Some(rc) = k.runtime_class.as_deref().or(runtime_class) {
        pod["runtimeClassName"] = json!(rc);
    }
    typed(json!({"metadata": {"name": NAME, "labels": labels}, "spec": {
        "backoffLimit": 0,
        "activeDeadlineSeconds": k.timeout_seconds,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: Value) -> KubernetesExecution {
        let mut v = json!({"image": "tools/kubectl@sha256:ab"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    fn spec() -> JobSpec {
        JobSpec {
            job_id: "job-0123".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("HOME".into(), "/work".into()), ("ARG_X".into(), "1".into())],
            stdin: b"{}".to_vec(),
            meta: crate::sandbox::JobMeta { tool: "t".into(), plan_hash: format!("sha256:{}", "a".repeat(64)), requester: "spiffe://x/ns/a/sa/b".into() },
            ..JobSpec::default()
        }
    }

    #[test]
    fn a_job_without_api_access_has_no_token_and_no_role() {
        let k = section(json!({}));
        assert!(role(&k).is_none());
        let j = serde_json::to_value(job(&spec(), &k, None)).unwrap();
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], json!(false));
        assert!(pod["volumes"].as_array().unwrap().iter().all(|v| v["name"] != "token"));
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], json!(true));
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["command"], json!(["sh", "-c", "echo hi"]));
        // The job's env replaces a default of the same name, once.
        let homes: Vec<&Value> = c["env"].as_array().unwrap().iter().filter(|e| e["name"] == "HOME").collect();
        assert_eq!(homes, vec![&json!({"name": "HOME", "value": "/work"})]);
        assert_eq!(j["spec"]["backoffLimit"], json!(0));
        assert_eq!(j["spec"]["activeDeadlineSeconds"], json!(60));
    }

    #[test]
    fn a_job_with_api_access_gets_exactly_its_rules_and_a_projected_token() {
        let k = section(json!({"rules": [{"api_groups": [""], "resources": ["configmaps"], "verbs": ["get"], "resource_names": ["cfg"]}],
                               "token_audience": "tools", "token_seconds": 900, "runtime_class": "gvisor"}));
        let (r, b) = role(&k).unwrap();
        let r = serde_json::to_value(r).unwrap();
        assert_eq!(r["rules"], json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["cfg"]}]));
        assert_eq!(serde_json::to_value(b).unwrap()["subjects"], json!([{"kind": "ServiceAccount", "name": "job"}]));
        let j = serde_json::to_value(job(&spec(), &k, Some("kata"))).unwrap();
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(pod["runtimeClassName"], json!("gvisor"), "the catalog's runtime class wins");
        let token = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "token").unwrap();
        assert_eq!(token["projected"]["sources"][0]["serviceAccountToken"], json!({"path": "token", "expirationSeconds": 900, "audience": "tools"}));
    }

    #[test]
    fn labels_are_valid_and_annotations_exact() {
        let ns = serde_json::to_value(namespace("pj-1", "t", "2026-01-01T00:00:00Z", Some(&spec()))).unwrap();
        let labels = ns["metadata"]["labels"].as_object().unwrap();
        for (k, v) in labels {
            assert!(portcullis_core::placement::label_key(k) && portcullis_core::placement::label_name(v.as_str().unwrap()), "{k}={v}");
        }
        assert_eq!(labels[REQUESTER], json!("spiffe___x_ns_a_sa_b"));
        assert_eq!(ns["metadata"]["annotations"][PLAN_HASH], json!(format!("sha256:{}", "a".repeat(64))));
        let egress = serde_json::to_value(egress(&section(json!({"egress": [{"cidr": "10.0.0.0/8", "ports": [443]}]}))).unwrap()).unwrap();
        assert_eq!(egress["spec"]["egress"], json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 443}]}]));
    }
}
