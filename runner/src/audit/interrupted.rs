//! Jobs a previous runner started and never ended: it was killed during them (SIGKILL, a
//! crash, the host going down). Their sandboxes went with it (a local job dies with its
//! runner's lifeline; its dir is swept at start), but the trail still shows them running. At
//! start the runner records each one aborted, with its sandbox gone, so that every started job
//! has an end in the trail.

use std::collections::BTreeMap;
use std::io;

use serde_json::{json, Map, Value};

use portcullis_core::placement::LOCAL;

use super::{AuditLog, JOB_ABORTED, JOB_CANCELLED, JOB_FINISHED, JOB_STARTED, SANDBOX_DESTROYED};

/// What the abort record says happened.
pub const RUNNER_RESTARTED: &str = "the runner stopped during the job (killed or crashed); no result was returned, and the job's sandbox did not outlive the runner";

/// What the abort record says of a job on another backend than the runner's own host.
pub const RUNNER_RESTARTED_ELSEWHERE: &str = "the runner stopped during the job (killed or crashed); no result was returned; the job's sandbox is on another backend and was not verified destroyed";

/// The `job.started` records (by decision id) with no `job.finished`, `job.aborted` or
/// `job.cancelled` after them, in the log's order.
pub fn unended_jobs(log_text: &str) -> Vec<Map<String, Value>> {
    let mut open: BTreeMap<String, (usize, Map<String, Value>)> = BTreeMap::new();
    for (n, line) in log_text.lines().enumerate() {
        let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else { continue };
        let Some(decision) = record.get("decision_id").and_then(Value::as_str).map(str::to_owned) else { continue };
        match record.get("event").and_then(Value::as_str) {
            Some(JOB_STARTED) => {
                open.insert(decision, (n, record));
            }
            Some(JOB_FINISHED | JOB_ABORTED | JOB_CANCELLED) => {
                open.remove(&decision);
            }
            _ => {}
        }
    }
    let mut jobs: Vec<_> = open.into_values().collect();
    jobs.sort_by_key(|(n, _)| *n);
    jobs.into_iter().map(|(_, r)| r).collect()
}

/// Records every unended job of the log aborted, its sandbox destroyed. Returns how many.
pub fn record_interrupted_jobs(log: &AuditLog) -> io::Result<usize> {
    let text = std::fs::read_to_string(log.path())?;
    let jobs = unended_jobs(&text);
    for started in &jobs {
        let mut fields = Map::new();
        for key in ["decision_id", "tool", "workload", "user", "plan_hash", "job_id"] {
            if let Some(v) = started.get(key) {
                fields.insert(key.to_owned(), v.clone());
            }
        }
        let backend = started.get("backend").cloned().unwrap_or(Value::Null);
        let mut aborted = fields.clone();
        // Only a local job is known to have died with its runner. A Kubernetes job's namespace
        // is not reaped at start, so its sandbox is not recorded destroyed.
        if backend == json!(LOCAL) {
            aborted.insert("error".into(), json!(RUNNER_RESTARTED));
            let mut destroyed = fields;
            destroyed.insert("backend".into(), backend);
            log.append_many(&[(JOB_ABORTED, aborted), (SANDBOX_DESTROYED, destroyed)])?;
        } else {
            aborted.insert("error".into(), json!(RUNNER_RESTARTED_ELSEWHERE));
            aborted.insert("backend".into(), backend);
            log.append_many(&[(JOB_ABORTED, aborted)])?;
        }
    }
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_job_without_an_end_is_unended() {
        let log = [
            json!({"event": JOB_STARTED, "decision_id": "a"}),
            json!({"event": JOB_STARTED, "decision_id": "b"}),
            json!({"event": JOB_FINISHED, "decision_id": "a"}),
            json!({"event": JOB_STARTED, "decision_id": "c"}),
            json!({"event": JOB_CANCELLED, "decision_id": "c"}),
            json!({"event": "ticket.accepted", "decision_id": "d"}),
        ]
        .map(|r| r.to_string())
        .join("\n");
        let unended: Vec<_> = unended_jobs(&log).into_iter().map(|r| r["decision_id"].clone()).collect();
        assert_eq!(unended, vec![json!("b")]);
    }
}
