//! Human approval, bound to the exact call. When the gateway's decision says
//! `require_approval`, the call's approval key is its plan hash, tool, requester (workload and
//! user) and policy version: any change to the arguments, the caller or the policy needs a new
//! approval. An approval is pending until a person decides it or it expires:
//!
//! ```text
//! (none) --send--> pending --approve--> approved --send--> executed   (exactly once)
//!                     |                     |
//!                     +--deny--> denied     +--(ttl)--> expired        (refused; send again
//!                     +--(ttl)--> expired                              to ask anew)
//! ```
//!
//! A denial is final for that key. Every transition is one durable transaction of the
//! [`Store`], so a restart (SIGKILL included) neither forgets a pending approval nor runs an
//! approved call twice. Approvers are people: [`Approvals::decide`] needs a ticket naming a
//! verified user, in the approver group, who is not the requester's user; a workload alone never
//! approves (the gateway's policy says the same, so this is the second lock).

use std::sync::Arc;

use portcullis_core::plan::canonicalize;
use portcullis_core::ticket::Claims;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::store::{rfc3339, Requester, Store, StoreError, Txn, APPROVALS, APPROVAL_KEYS, PENDING_APPROVALS};

pub mod cli;
pub mod webhook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Executed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Executed => "executed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub key: String,
    pub state: State,
    pub tool: String,
    pub plan_hash: String,
    /// The call's canonical arguments: what the approver approves.
    pub arguments: Map<String, Value>,
    pub requester: Requester,
    pub policy_version: String,
    /// The decision that asked for it.
    pub decision_id: String,
    pub requested_at: u64,
    /// Pending: until when it can be decided. Approved: until when it can be executed.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Requester>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The decision whose call executed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_by_decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<u64>,
    /// When the webhook accepted the notice of it (a 2xx answer); until then it is delivered
    /// again, across restarts, while it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<u64>,
}

impl Approval {
    /// What an agent or approver is told about it.
    pub fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "state": self.state.as_str(),
            "tool": self.tool,
            "plan_hash": self.plan_hash,
            "arguments": self.arguments,
            "requester": self.requester,
            "policy_version": self.policy_version,
            "decision_id": self.decision_id,
            "requested_at": rfc3339(self.requested_at),
            "expires_at": rfc3339(self.expires_at),
            "decided_by": self.decided_by,
            "reason": self.reason,
        })
    }
}

/// What a call that needs approval may do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Approved and now marked executed: run it (once).
    Run(Approval),
    /// A new pending approval was recorded: not run.
    Requested(Approval),
    /// Not run: pending, denied, expired (`newly_expired` when this call found it so) or
    /// already executed; `approval.state` says which.
    Refused { approval: Approval, newly_expired: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval {0}")]
    Unknown(String),
    #[error("approvals are decided by people: the request names no verified user")]
    NoUser,
    #[error("user {0} is not in the approver group {1:?}")]
    NotApprover(String, String),
    #[error("user {0} asked for approval {1}: nobody approves their own request")]
    OwnRequest(String, String),
    #[error("approval {id} is {state}, not pending: it cannot be decided again")]
    NotPending { id: String, state: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Approvals {
    store: Arc<Store>,
    /// How long a pending approval waits for a decision, and an approved one for its execution.
    pub ttl_seconds: u64,
    /// The user group whose members may approve.
    pub approver_group: String,
}

/// The approval key of a call: SHA-256 over the canonical JSON of everything it is bound to.
pub fn approval_key(claims: &Claims) -> String {
    let bound = json!({
        "plan_hash": claims.plan_hash,
        "tool": claims.tool,
        "requester": Requester::of(claims),
        "policy_version": claims.policy_version,
    });
    let text = canonicalize(&bound).unwrap_or_else(|_| bound.to_string());
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Db(redb::Error::Corrupted(format!("no randomness for an approval id: {e}"))))?;
    Ok(format!("apr_{}", hex::encode(bytes)))
}

/// Writes `a` and keeps the pending index in step with it, in the same transaction.
fn put(t: &mut Txn, a: &Approval) -> Result<(), StoreError> {
    t.put(APPROVALS, &a.id, a)?;
    if a.state == State::Pending {
        t.put(PENDING_APPROVALS, &a.id, &a.expires_at)
    } else {
        t.remove(PENDING_APPROVALS, &a.id)
    }
}

impl Approvals {
    pub fn new(store: Arc<Store>, ttl_seconds: u64, approver_group: String) -> Self {
        Self { store, ttl_seconds, approver_group }
    }

    /// [`Self::new`], with the pending index built anew from every approval (once per start: a
    /// store written by a runner that kept no index, or a lost index, is indexed again).
    pub fn open(store: Arc<Store>, ttl_seconds: u64, approver_group: String, now: u64) -> Result<Self, StoreError> {
        store.write(|t| {
            t.clear(PENDING_APPROVALS)?;
            for (id, a) in t.entries::<Approval>(APPROVALS)? {
                if a.state == State::Pending && now < a.expires_at {
                    t.put(PENDING_APPROVALS, &id, &a.expires_at)?;
                }
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(Self::new(store, ttl_seconds, approver_group))
    }

    /// The one durable step for a call that needs approval (see the module's state diagram).
    pub fn gate(&self, claims: &Claims, arguments: Map<String, Value>, now: u64) -> Result<Gate, StoreError> {
        let key = approval_key(claims);
        self.store.write(|t| {
            let latest: Option<Approval> = match t.get::<String>(APPROVAL_KEYS, &key)? {
                Some(id) => t.get(APPROVALS, &id)?,
                None => None,
            };
            let gate = match latest {
                Some(mut a) if matches!(a.state, State::Pending | State::Approved) && now >= a.expires_at => {
                    a.state = State::Expired;
                    put(t, &a)?;
                    Gate::Refused { approval: a, newly_expired: true }
                }
                Some(mut a) if a.state == State::Approved => {
                    a.state = State::Executed;
                    a.executed_at = Some(now);
                    a.executed_by_decision = Some(claims.decision_id.clone());
                    put(t, &a)?;
                    Gate::Run(a)
                }
                Some(a) if a.state != State::Expired => Gate::Refused { approval: a, newly_expired: false },
                _ => {
                    let a = Approval {
                        id: new_id()?,
                        key: key.clone(),
                        state: State::Pending,
                        tool: claims.tool.clone(),
                        plan_hash: claims.plan_hash.clone(),
                        arguments,
                        requester: Requester::of(claims),
                        policy_version: claims.policy_version.clone(),
                        decision_id: claims.decision_id.clone(),
                        requested_at: now,
                        expires_at: now.saturating_add(self.ttl_seconds),
                        decided_by: None,
                        decided_at: None,
                        reason: None,
                        executed_by_decision: None,
                        executed_at: None,
                        notified_at: None,
                    };
                    put(t, &a)?;
                    t.put(APPROVAL_KEYS, &key, &a.id)?;
                    Gate::Requested(a)
                }
            };
            Ok(gate)
        })
    }

    /// An approver's decision. `approver` is the ticket of the approver's own call.
    pub fn decide(&self, id: &str, approve: bool, reason: Option<String>, approver: &Claims, now: u64) -> Result<Approval, DecideError> {
        let who = Requester::of(approver);
        let user = approver.user.clone().ok_or(DecideError::NoUser)?;
        if !approver.groups.contains(&self.approver_group) {
            return Err(DecideError::NotApprover(user, self.approver_group.clone()));
        }
        self.store.write(|t| {
            let mut a: Approval = t.get(APPROVALS, id)?.ok_or_else(|| DecideError::Unknown(id.to_owned()))?;
            if a.state == State::Pending && now >= a.expires_at {
                a.state = State::Expired;
                put(t, &a)?;
            }
            if a.state != State::Pending {
                return Err(DecideError::NotPending { id: a.id.clone(), state: a.state.as_str() });
            }
            if a.requester.same_user(&who) {
                return Err(DecideError::OwnRequest(user.clone(), a.id.clone()));
            }
            a.state = if approve { State::Approved } else { State::Denied };
            a.decided_by = Some(who.clone());
            a.decided_at = Some(now);
            a.reason = reason;
            if approve {
                // The requester gets the full window to send the call again.
                a.expires_at = now.saturating_add(self.ttl_seconds);
            }
            put(t, &a)?;
            Ok(a)
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        self.store.get(APPROVALS, id)
    }

    /// Pending approvals that can still be decided, oldest first.
    /// Reads the pending index; entries past their expiry leave it (the approval itself is
    /// marked expired, and its expiry audited, when its call comes again or someone decides it).
    pub fn pending(&self, now: u64) -> Result<Vec<Approval>, StoreError> {
        let (live, stale): (Vec<(String, u64)>, _) = self.store.entries(PENDING_APPROVALS)?.into_iter().partition(|(_, expires_at)| now < *expires_at);
        if !stale.is_empty() {
            self.store.write(|t| {
                for (id, _) in &stale {
                    t.remove(PENDING_APPROVALS, id)?;
                }
                Ok::<_, StoreError>(())
            })?;
        }
        let mut pending = Vec::with_capacity(live.len());
        for (id, _) in live {
            pending.extend(self.get(&id)?.filter(|a| a.state == State::Pending && now < a.expires_at));
        }
        pending.sort_by_key(|a| a.requested_at);
        Ok(pending)
    }

    /// Pending approvals whose notice no webhook has accepted yet, oldest first.
    pub fn unnotified(&self, now: u64) -> Result<Vec<Approval>, StoreError> {
        let mut pending = self.pending(now)?;
        pending.retain(|a| a.notified_at.is_none());
        Ok(pending)
    }

    /// The webhook accepted the notice of approval `id` at `now`.
    pub fn mark_notified(&self, id: &str, now: u64) -> Result<(), StoreError> {
        self.store.write(|t| {
            if let Some(mut a) = t.get::<Approval>(APPROVALS, id)? {
                if a.notified_at.is_none() {
                    a.notified_at = Some(now);
                    put(t, &a)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
