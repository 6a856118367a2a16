//! Jobs a previous runner started and never ended: it was killed during them (SIGKILL, a
//! crash, the host going down). Their sandboxes went with it (a local job dies with its
//! runner's lifeline; its dir is swept at start), but the trail still shows them running. At
//! start the runner records each one aborted, with its sandbox gone, so that every started job
//! has an end in the trail. Then it records its own start ([`RUNNER_STARTED`]): every job
//! before that record has its end, so the next start reads the trail back to there, not
//! from its beginning.

use std::collections::BTreeSet;
use std::io;

use serde_json::{json, Map, Value};

use portcullis_core::placement::LOCAL;

use super::{AuditLog, JOB_ABORTED, JOB_CANCELLED, JOB_FINISHED, JOB_STARTED, SANDBOX_DESTROYED};

/// Audit event: a runner started, every job before this record has its end in the trail.
pub const RUNNER_STARTED: &str = "runner.started";

/// What the abort record says happened.
pub const RUNNER_RESTARTED: &str = "the runner stopped during the job (killed or crashed); no result was returned, and the job's sandbox did not outlive the runner";

/// What the abort record says of a job on another backend than the runner's own host.
pub const RUNNER_RESTARTED_ELSEWHERE: &str = "the runner stopped during the job (killed or crashed); no result was returned; the job's sandbox is on another backend and was not verified destroyed";

/// Of `records`, newest first, the `job.started` records with no `job.finished`,
/// `job.aborted` or `job.cancelled` of their decision after them, in the log's order.
pub fn unended_jobs(records: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
    let mut ended = BTreeSet::new();
    let mut jobs = Vec::new();
    for record in records {
        let Some(decision) = record.get("decision_id").and_then(Value::as_str).map(str::to_owned) else { continue };
        match record.get("event").and_then(Value::as_str) {
            Some(JOB_STARTED) if !ended.contains(&decision) => jobs.push(record),
            Some(JOB_FINISHED | JOB_ABORTED | JOB_CANCELLED) => {
                ended.insert(decision);
            }
            _ => {}
        }
    }
    jobs.reverse();
    jobs
}

/// Records every unended job since the last runner start aborted, its sandbox destroyed, then
/// this start. Returns how many jobs. A start that cannot be recorded (a full audit disk: the
/// runner then refuses calls, see [`super::log::CLOSING_HEADROOM`]) does not stop the runner;
/// the next start reads back to the one before.
pub fn record_interrupted_jobs(log: &AuditLog) -> io::Result<usize> {
    let since = log.records_since_last(|r| r.get("event").and_then(Value::as_str) == Some(RUNNER_STARTED))?;
    let jobs = unended_jobs(since);
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
    if let Err(e) = log.append(RUNNER_STARTED, Map::new()) {
        tracing::error!(error = %e, "audit: the runner's start was not recorded");
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
            json!({"event": JOB_STARTED, "decision_id": "e"}),
        ];
        let newest_first = log.into_iter().rev().map(|r| r.as_object().unwrap().clone()).collect();
        let unended: Vec<_> = unended_jobs(newest_first).into_iter().map(|r| r["decision_id"].clone()).collect();
        assert_eq!(unended, vec![json!("b"), json!("e")]);
    }
}
