//! The reaper: deletes Portcullis namespaces past their expiry, whoever made them. A runner
//! killed mid-job leaves its job's namespace behind; the namespace's expiry (the job's timeout
//! plus a grace) says when it can no longer be in use. Runs at start, then periodically.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;

use super::objects::{EXPIRES_AT, JOB_ID, MANAGED_BY, MANAGER, STATE};

/// One namespace the reaper deleted.
#[derive(Debug, Clone)]
pub struct Reaped {
    pub namespace: String,
    /// The job it served (absent for a warm namespace).
    pub job_id: Option<String>,
    /// Its expiry annotation as found (absent or unreadable ones are reaped too).
    pub expires_at: Option<String>,
}

/// Told of each namespace reaped (the runner writes an audit record).
pub type OnReaped = Arc<dyn Fn(&Reaped) + Send + Sync>;

/// One pass. Namespaces already being deleted are left alone.
pub async fn reap_once(client: &Client, now: SystemTime) -> Result<Vec<Reaped>, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = format!("{MANAGED_BY}={MANAGER},{STATE}");
    let list = api.list(&ListParams::default().labels(&selector)).await?;
    let mut reaped = Vec::new();
    for ns in list.items {
        let meta = ns.metadata;
        let Some(name) = meta.name else { continue };
        if meta.deletion_timestamp.is_some() {
            continue;
        }
        let annotations = meta.annotations.unwrap_or_default();
        let expires_at = annotations.get(EXPIRES_AT).cloned();
        let expired = match expires_at.as_deref().and_then(parse_rfc3339) {
            Some(at) => at <= now,
            // Ours by its labels, with no readable expiry: nothing says it is in use.
            None => true,
        };
        if !expired {
            continue;
        }
        match api.delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => continue,
            Err(e) => {
                tracing::warn!(namespace = %name, error = %e, "reaper: delete failed");
                continue;
            }
        }
        reaped.push(Reaped { namespace: name, job_id: annotations.get(JOB_ID).cloned(), expires_at });
    }
    Ok(reaped)
}

/// Reaps now and then every `interval`, until the task is aborted.
pub async fn run(client: Client, interval: Duration, on_reaped: OnReaped) {
    loop {
        match reap_once(&client, SystemTime::now()).await {
            Ok(reaped) => {
                for r in &reaped {
                    tracing::info!(namespace = %r.namespace, job_id = ?r.job_id, "reaped an expired job namespace");
                    on_reaped(r);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper: listing namespaces failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiry_is_read_back() {
        let at = super::parse_rfc3339(&crate::store::rfc3339(1_800_000_000)).unwrap();
        assert_eq!(at.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_800_000_000);
        assert!(super::parse_rfc3339("soon").is_none());
    }
}
