//! The decision record: what the gateway decided about one request, as one JSON document.
//!
//! The filter stores it in Envoy's filter state (`wasm.portcullis_decision`), so Envoy's access
//! log carries it on every line: allowed, denied, invalid, rate limited or failed. It names who
//! (workload, user), what (method, tool, plan hash), the outcome and why (rule ids, code), and
//! never a secret: no token, ticket or session id.

use serde::Serialize;

use crate::error::{RejectKind, Rejection};

/// The outcome of one request at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded.
    Allowed,
    /// Forwarded; the runner holds it for a human approval.
    ApprovalRequired,
    Denied,
    Invalid,
    RateLimited,
    /// The gateway failed and refused (fail closed).
    InternalError,
    /// The stream ended (reset) before a decision; nothing was forwarded.
    Incomplete,
}

impl From<RejectKind> for Outcome {
    fn from(kind: RejectKind) -> Self {
        match kind {
            RejectKind::Invalid => Outcome::Invalid,
            RejectKind::Denied => Outcome::Denied,
            RejectKind::RateLimited => Outcome::RateLimited,
            RejectKind::Internal => Outcome::InternalError,
        }
    }
}

/// One request's decision, for the access log.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub decision_id: String,
    pub outcome: Option<Outcome>,
    /// The HTTP status the gateway answered with, or `None` when it forwarded the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The JSON-RPC error code of a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The workload's SPIFFE ID as the proxy verified it.
    pub workload: Option<String>,
    /// The verified user (`sub`) the agent acts for.
    pub user: Option<String>,
    /// The JSON-RPC method, or the HTTP method of a body-less request (GET, DELETE).
    pub method: Option<String>,
    pub tool: Option<String>,
    pub plan_hash: Option<String>,
    pub rule_ids: Vec<String>,
    pub policy_version: String,
    /// Why a request was refused (the JSON-RPC error message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DecisionRecord {
    pub fn new(decision_id: String, policy_version: &str, workload: Option<&str>) -> Self {
        Self { decision_id, policy_version: policy_version.to_owned(), workload: workload.map(str::to_owned), ..Self::default() }
    }

    /// Marks the record refused by `rejection`.
    pub fn refused(mut self, rejection: &Rejection) -> Self {
        self.outcome = Some(rejection.kind.into());
        self.status = Some(rejection.status);
        self.code = Some(rejection.code);
        self.reason = Some(rejection.message.clone());
        self
    }

    /// Marks the record forwarded.
    pub fn allowed(mut self, require_approval: bool) -> Self {
        self.outcome = Some(if require_approval { Outcome::ApprovalRequired } else { Outcome::Allowed });
        self
    }

    pub fn with_method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// The JSON text for the access log.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and enums cannot fail; an empty record is still
        // better than a panic if it ever did.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DENIED;

    #[test]
    fn refusal_names_outcome_status_and_reason() {
        let r = Rejection::new(RejectKind::Denied, 403, DENIED, "denied tools/call x: no", None);
        let rec = DecisionRecord::new("d1".into(), "v1", Some("spiffe://t/ns/a/sa/b")).with_method("tools/call").refused(&r);
        let v: serde_json::Value = serde_json::from_slice(&rec.to_json()).unwrap();
        assert_eq!(v["outcome"], "denied");
        assert_eq!(v["status"], 403);
        assert_eq!(v["code"], DENIED);
        assert_eq!(v["workload"], "spiffe://t/ns/a/sa/b");
        assert_eq!(v["policy_version"], "v1");
    }

    #[test]
    fn allowed_has_no_status() {
        let rec = DecisionRecord::new("d".into(), "v", None).allowed(true);
        let v: serde_json::Value = serde_json::from_slice(&rec.to_json()).unwrap();
        assert_eq!(v["outcome"], "approval_required");
        assert!(v.get("status").is_none());
    }
}
