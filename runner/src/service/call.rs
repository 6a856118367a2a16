//! One admitted tools/call, through the control plane: builtin approval tools, the cited plan
//! of an apply, the approval gate, then the job; a plan tool's artifact is stored.

use std::time::Instant;

use portcullis_core::authz::{PlanRules, PolicyInput, PolicyTime, Workload};
use portcullis_core::userjwt::VerifiedUser;
use portcullis_core::catalog::{Builtin, Kind, Tool};
use portcullis_core::plan::canonical_arguments;
use portcullis_core::ticket::Claims;
use rmcp::model::{CallToolResult, ContentBlock, ErrorCode};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{json, Map, Value};

use sha2::{Digest, Sha256};

use crate::approvals::{Approval, DecideError, Gate, State};
use crate::audit;
use crate::plans::{PlanRecord, PlanRefusal};
use crate::sandbox::{JobMeta, JobOutput, SandboxError};
use crate::service::backends::{self, Entry};
use crate::service::progress::run_reporting_progress;
use crate::service::serve::{unix_now, Runner};
use crate::service::tools::{job_for, render_output};
use crate::store::rfc3339;
use crate::telemetry::{self, metrics};

/// The call needs a person's approval, which is now pending: it was not run.
pub const APPROVAL_PENDING: i32 = -32004;
/// The cited plan cannot be applied (unknown, expired, someone else's, other target, altered).
pub const PLAN_REFUSED: i32 = -32005;
/// The call's approval was denied, has expired, or was used already: it was not run.
pub const APPROVAL_REFUSED: i32 = -32006;
/// Audit events of the control plane beside [`crate::audit`]'s: a call refused before it ran
/// (placement, queue, failing backend, plan or approval), and an approval used by its one
/// execution.
pub const CALL_REFUSED: &str = "call.refused";
pub const APPROVAL_USED: &str = "approval.used";

/// The caller cancelled the call. Never sent: the code marks the call's span.
pub const REQUEST_CANCELLED: i32 = -32800;

/// An approver's decision was refused (not a person, not an approver, their own request, not
/// pending).
pub const DECISION_REFUSED: i32 = -32007;

impl Runner {
    /// Appends one audit record of this call (`decision_id`, tool, workload, user, plan hash,
    /// and `fields`), durable before the answer that it records leaves the runner. A call whose
    /// record cannot be written fails closed: before it runs it does not run.
    pub fn audit(&self, event: &str, claims: Option<&Claims>, fields: Value) -> Result<(), McpError> {
        let mut record = Map::new();
        if let Some(c) = claims {
            record.insert("decision_id".into(), json!(c.decision_id));
            record.insert("tool".into(), json!(c.tool));
            record.insert("workload".into(), json!(c.sub));
            record.insert("user".into(), json!(c.user));
            record.insert("plan_hash".into(), json!(c.plan_hash));
        }
        if let Value::Object(extra) = fields {
            record.extend(extra);
        }
        self.audit.append(event, record).map(drop).map_err(|e| {
            tracing::error!(event, error = %e, "audit record not written");
            McpError::internal_error(format!("the audit trail cannot be written ({e}); nothing more is done for this call"), None)
        })
    }

    /// Runs an admitted call (its ticket verified) of a catalog tool.
    pub async fn call(&self, tool: &Tool, plan_rules: &PlanRules, arguments: Option<&Map<String, Value>>, claims: &Claims, context: &RequestContext<RoleServer>) -> Result<CallToolResult, McpError> {
        if let Some(builtin) = tool.builtin {
            return self.builtin(builtin, arguments, claims);
        }
        let placement = backends::effective(claims, tool);
        let refused = |e: McpError| {
            self.audit(CALL_REFUSED, Some(claims), json!({"code": e.code.0, "reason": e.message, "placement": placement.describe()}))?;
            Err(e)
        };
        // Where it runs is decided before anything else: a place this runner does not have
        // refuses the call, and nothing of it runs anywhere else.
        let entry = match self.backends.pick(&placement, tool) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(tool = %tool.name, decision = %claims.decision_id, placement = %placement.describe(), available = ?self.backends.available(), "placement unavailable");
                metrics::call_refused("placement_unavailable", &placement.describe());
                return refused(e);
            }
        };
        let plan = match &tool.plan {
            Some(plan_use) => match self.plans.check_use(plan_use, &tool.name, arguments, claims, unix_now()).and_then(|checked| plan_policy(plan_rules, &checked.0, arguments, claims).map(|()| checked)) {
                Ok(checked) => Some(checked),
                Err(refusal) => {
                    tracing::warn!(tool = %tool.name, decision = %claims.decision_id, %refusal, "plan refused");
                    return refused(McpError::new(ErrorCode(PLAN_REFUSED), format!("{} not run: {refusal}", tool.name), Some(json!({"tool": tool.name}))));
                }
            },
            None => None,
        };
        let mut job = job_for(tool, arguments, &claims.decision_id).map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        job.meta = JobMeta { tool: tool.name.clone(), plan_hash: claims.plan_hash.clone(), requester: claims.user.clone().unwrap_or_else(|| claims.sub.clone()) };
        job.node_selector.clone_from(&placement.node_selector);
        // A backend that keeps failing gets no more jobs for a while: refused at once.
        let pass = match entry.breaker.admit() {
            Ok(pass) => pass,
            Err(open) => {
                metrics::call_refused("backend_failing", &entry.describe());
                return refused(backends::backend_failing(entry, &tool.name, open));
            }
        };
        // The slot comes before the approval gate: a call cancelled while it waits has used up
        // nothing, not even its approval's one execution.
        let waiting = Instant::now();
        let cancel = &context.ct;
        let slot = match entry.queue.slot(cancel).await {
            Ok(Some(slot)) if !cancel.is_cancelled() => slot,
            Ok(_) => return Err(self.cancelled(entry, claims, context, &job.job_id, waiting, None)?),
            Err(full) => {
                tracing::warn!(tool = %tool.name, decision = %claims.decision_id, placement = %entry.describe(), "job queue full: call refused");
                metrics::call_refused("queue_full", &entry.describe());
                return refused(backends::queue_full(entry, &tool.name, full));
            }
        };
        if claims.require_approval {
            if let Err(e) = self.approval_gate(tool, arguments, claims) {
                return refused(e);
            }
        }
        if let Some((record, artifact)) = &plan {
            // The apply executes the stored plan, never text from the agent.
            job.stdin.clone_from(artifact);
            job.env.push(("PORTCULLIS_PLAN".into(), record.artifact.clone()));
        }
        if tool.kind == Kind::Plan {
            job.env.push(("PORTCULLIS_DRY_RUN".into(), "1".into()));
        }
        if cancel.is_cancelled() {
            return Err(self.cancelled(entry, claims, context, &job.job_id, waiting, None)?);
        }
        tracing::info!(tool = %tool.name, workload = %claims.sub, decision = %claims.decision_id, plan = %claims.plan_hash, user = claims.user.as_deref().unwrap_or("-"), approval = claims.require_approval, placement = %placement.describe(), "running");
        let applies = plan.as_ref().map(|(record, _)| record.artifact.clone());
        self.audit(audit::JOB_STARTED, Some(claims), json!({"job_id": job.job_id, "backend": entry.backend.name(), "placement": placement.describe(), "applies_plan": applies}))?;
        let job_id = job.job_id.clone();
        let ran = run_reporting_progress(slot, entry.backend.as_ref(), job, context).await;
        // The breaker hears how the backend did (not how the tool did).
        pass.report(&ran);
        let out = match ran {
            Ok(out) if out.cancelled => return Err(self.cancelled(entry, claims, context, &job_id, waiting, Some(&out))?),
            Ok(out) => out,
            Err(e) => return Err(self.sandbox_failed(entry, tool, claims, &e)?),
        };
        tracing::info!(tool = %tool.name, exit = ?out.exit_code, timed_out = out.timed_out, ms = out.duration.as_millis() as u64, "finished");
        self.audit(
            audit::JOB_FINISHED,
            Some(claims),
            json!({"exit_code": out.exit_code, "signal": out.signal, "timed_out": out.timed_out, "truncated": out.truncated,
                   "stdout_sha256": format!("sha256:{}", hex::encode(Sha256::digest(&out.stdout))), "stdout_bytes": out.stdout.len()}),
        )?;
        // Backend::execute returns only after the environment is gone.
        self.audit(audit::SANDBOX_DESTROYED, Some(claims), json!({"backend": entry.backend.name(), "duration_ms": out.duration.as_millis() as u64}))?;
        let (text, failed) = render_output(&out);
        if tool.kind == Kind::Plan && !failed {
            if out.truncated {
                let text = format!("{text}\n[the plan was not stored: its output exceeded the tool's max_output_bytes]");
                return Ok(CallToolResult::error(vec![ContentBlock::text(text)]));
            }
            let record = self.store_plan(&out.stdout, arguments, claims)?;
            return Ok(plan_result(text, &record));
        }
        let content = vec![ContentBlock::text(text)];
        Ok(if failed { CallToolResult::error(content) } else { CallToolResult::success(content) })
    }

    /// A sandbox that failed (its environment is gone): recorded, and the caller told why.
    fn sandbox_failed(&self, entry: &Entry, tool: &Tool, claims: &Claims, e: &SandboxError) -> Result<McpError, McpError> {
        tracing::error!(tool = %tool.name, placement = %entry.describe(), error = %e.log_text(), "sandbox failed");
        self.audit(audit::JOB_ABORTED, Some(claims), json!({"error": e.agent_message()}))?;
        self.audit(audit::SANDBOX_DESTROYED, Some(claims), json!({"backend": entry.backend.name()}))?;
        Ok(McpError::internal_error(format!("sandbox failed: {}", e.agent_message()), None))
    }

    /// Records a cancelled call: `ran` is the job's output when it had started (it was killed
    /// and its sandbox destroyed before this), `None` when it left the queue without starting.
    /// The error returned is never sent (MCP: a cancelled request gets no response; rmcp drops
    /// it), but it ends the call's span as cancelled.
    fn cancelled(&self, entry: &Entry, claims: &Claims, context: &RequestContext<RoleServer>, job_id: &str, waiting: Instant, ran: Option<&JobOutput>) -> Result<McpError, McpError> {
        let ran_ms = ran.map_or(0, |out| out.duration.as_millis() as u64);
        tracing::info!(tool = %claims.tool, decision = %claims.decision_id, request = %context.id, started = ran.is_some(), ran_ms, "cancelled by the caller");
        // Only the caller that opened a session can send on it (see the session guard), and a
        // 2026-07-28 request is cancelled by its own connection: the requester cancelled.
        self.audit(
            audit::JOB_CANCELLED,
            Some(claims),
            json!({"job_id": job_id, "request_id": context.id, "cancelled_by": "requester", "started": ran.is_some(),
                   "waited_ms": (waiting.elapsed().as_millis() as u64).saturating_sub(ran_ms), "ran_ms": ran_ms}),
        )?;
        if ran.is_some() {
            self.audit(audit::SANDBOX_DESTROYED, Some(claims), json!({"backend": entry.backend.name(), "duration_ms": ran_ms}))?;
        }
        Ok(McpError::new(ErrorCode(REQUEST_CANCELLED), "the request was cancelled", Some(json!({"tool": claims.tool}))))
    }

    fn store_plan(&self, artifact: &[u8], arguments: Option<&Map<String, Value>>, claims: &Claims) -> Result<PlanRecord, McpError> {
        let canonical = canonical_map(arguments);
        let record = self.plans.store(artifact, claims, canonical, unix_now()).map_err(|e| {
            tracing::error!(tool = %claims.tool, error = %e, "plan not stored");
            McpError::internal_error(format!("the plan ran but could not be stored: {e}"), None)
        })?;
        self.audit(audit::PLAN_STORED, Some(claims), json!({"plan": record.artifact, "size": record.size, "expires_at": rfc3339(record.expires_at)}))?;
        Ok(record)
    }

    /// Ok when an approved call may run now (it is then marked executed); otherwise the
    /// JSON-RPC error the agent gets.
    fn approval_gate(&self, tool: &Tool, arguments: Option<&Map<String, Value>>, claims: &Claims) -> Result<(), McpError> {
        let span = telemetry::approval_check();
        let result = self.approval_gate_inner(tool, arguments, claims);
        if let Err(e) = &result {
            span.fail(if e.code.0 == APPROVAL_PENDING { "approval_pending" } else { "approval_refused" }, e.message.to_string());
        }
        result
    }

    fn approval_gate_inner(&self, tool: &Tool, arguments: Option<&Map<String, Value>>, claims: &Claims) -> Result<(), McpError> {
        let canonical = canonical_map(arguments);
        let gate = self.approvals.gate(claims, canonical, unix_now()).map_err(|e| {
            tracing::error!(tool = %tool.name, error = %e, "approval state unavailable");
            McpError::internal_error(format!("approval state unavailable: {e}; the call was not run"), None)
        })?;
        match gate {
            Gate::Run(a) => {
                telemetry::approval_state(State::Executed.as_str());
                self.audit(APPROVAL_USED, Some(claims), json!({"approval": a.id, "approved_by": a.decided_by}))?;
                tracing::info!(approval = %a.id, decision = %claims.decision_id, "approved call executes");
                Ok(())
            }
            Gate::Requested(a) => {
                telemetry::approval_state(State::Pending.as_str());
                self.audit(audit::APPROVAL_REQUESTED, Some(claims), json!({"approval": a.id, "expires_at": rfc3339(a.expires_at), "policy_version": a.policy_version}))?;
                tracing::info!(approval = %a.id, tool = %tool.name, decision = %claims.decision_id, "approval requested");
                if let Some(hook) = &self.webhook {
                    hook.notify(&a, &self.approvals);
                }
                Err(pending(&a))
            }
            Gate::Refused { approval, .. } if approval.state == State::Pending => Err(pending(&approval)),
            Gate::Refused { approval, newly_expired } => {
                if newly_expired {
                    telemetry::approval_state(State::Expired.as_str());
                    self.audit(audit::APPROVAL_EXPIRED, Some(claims), json!({"approval": approval.id, "expired_at": rfc3339(approval.expires_at)}))?;
                }
                Err(refused(&approval))
            }
        }
    }

    fn builtin(&self, builtin: Builtin, arguments: Option<&Map<String, Value>>, claims: &Claims) -> Result<CallToolResult, McpError> {
        let arg = |name: &str| arguments.and_then(|a| a.get(name)).and_then(Value::as_str);
        let store_error = |e: crate::store::StoreError| McpError::internal_error(format!("approval state unavailable: {e}"), None);
        match builtin {
            Builtin::ApprovalsList => {
                let pending = self.approvals.pending(unix_now()).map_err(store_error)?;
                Ok(CallToolResult::structured(json!({"approvals": pending.iter().map(Approval::summary).collect::<Vec<_>>()})))
            }
            Builtin::ApprovalsShow => {
                let id = arg("id").unwrap_or_default();
                match self.approvals.get(id).map_err(store_error)? {
                    Some(a) => Ok(CallToolResult::structured(json!({"approval": a.summary()}))),
                    None => Err(decision_refused(&DecideError::Unknown(id.to_owned()))),
                }
            }
            Builtin::ApprovalsDecide => {
                let (id, approve) = (arg("id").unwrap_or_default(), arg("decision") == Some("approve"));
                let reason = arg("reason").map(str::to_owned);
                let a = self.approvals.decide(id, approve, reason, claims, unix_now()).map_err(|e| {
                    tracing::warn!(approval = %id, approver = claims.user.as_deref().unwrap_or("-"), error = %e, "approval decision refused");
                    decision_refused(&e)
                })?;
                telemetry::approval_state(a.state.as_str());
                let event = if a.state == State::Approved { audit::APPROVAL_GRANTED } else { audit::APPROVAL_DENIED };
                // The approval's own call is another decision: record it under the call it approves.
                let fields = json!({"decision_id": a.decision_id, "tool": a.tool, "plan_hash": a.plan_hash, "approval": a.id,
                                    "approver": a.decided_by, "approver_decision_id": claims.decision_id, "reason": a.reason});
                self.audit(event, None, fields)?;
                tracing::info!(approval = %a.id, state = a.state.as_str(), approver = claims.user.as_deref().unwrap_or("-"), "approval decided");
                let next = if a.state == State::Approved {
                    format!("; the requester may now send the same call again, once, before {}", rfc3339(a.expires_at))
                } else {
                    String::new()
                };
                let mut result = CallToolResult::structured(json!({"approval": a.summary()}));
                result.content = vec![ContentBlock::text(format!("approval {} {}{next}", a.id, a.state.as_str()))];
                Ok(result)
            }
        }
    }
}

/// The arguments as the plan hash covers them (RFC 8785 canonical numbers), as recorded with
/// a plan or an approval. Admission has hashed them already, so they always canonicalize.
fn canonical_map(arguments: Option<&Map<String, Value>>) -> Map<String, Value> {
    canonical_arguments(arguments).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

/// The bundle's plan rules on the cited plan (which tool made it, for whom, when): policy's
/// say on what may be applied, beside the runner's own checks.
fn plan_policy(rules: &PlanRules, plan: &PlanRecord, arguments: Option<&Map<String, Value>>, claims: &Claims) -> Result<(), PlanRefusal> {
    // The call's policy input, as the gateway built it from the verified ticket (the user's
    // other token claims stay with the gateway), plus the plan.
    let workload = Workload::from_spiffe_id(&claims.sub).ok_or_else(|| PlanRefusal::Policy(format!("ticket workload {} is not a SPIFFE ID", claims.sub)))?;
    let user = claims.user.as_ref().map(|sub| VerifiedUser {
        sub: sub.clone(),
        iss: claims.user_iss.clone().unwrap_or_default(),
        groups: claims.groups.clone(),
        claims: Map::new(),
    });
    let call = PolicyInput {
        method: "tools/call",
        tool: Some(&claims.tool),
        arguments,
        plan_hash: Some(&claims.plan_hash),
        workload: &workload,
        user: user.as_ref(),
        user_error: if user.is_some() { None } else { Some("no verified user") },
        time: PolicyTime::from_unix(unix_now()),
        mcp: Default::default(),
    };
    let Ok(Value::Object(mut input)) = serde_json::to_value(&call) else {
        return Err(PlanRefusal::Policy("plan rules input is not an object".into()));
    };
    input.insert("plan".into(), json!({
        "artifact": plan.artifact,
        "tool": plan.tool,
        "requester": plan.requester,
        "created_at": plan.created_at,
        "expires_at": plan.expires_at,
    }));
    let decision = rules.decide(&Value::Object(input)).map_err(|e| PlanRefusal::Policy(format!("plan rules failed: {e}")))?;
    if decision.allow {
        return Ok(());
    }
    Err(PlanRefusal::Policy(format!("policy refuses plan {} ({}): {}", plan.artifact, decision.rule_ids.join(", "), decision.reasons.join("; "))))
}

fn plan_result(text: String, record: &PlanRecord) -> CallToolResult {
    let note = format!("\n[plan stored: {} (expires {}); apply it by citing this hash]", record.artifact, rfc3339(record.expires_at));
    let mut result = CallToolResult::success(vec![ContentBlock::text(format!("{text}{note}"))]);
    result.structured_content = Some(json!({
        "plan": {
            "hash": record.artifact,
            "expires_at": rfc3339(record.expires_at),
            "tool": record.tool,
            "size": record.size,
            "statement": record.statement,
        }
    }));
    result
}

fn pending(a: &Approval) -> McpError {
    McpError::new(
        ErrorCode(APPROVAL_PENDING),
        format!(
            "{} needs human approval and was not run: approval {} is pending until {}. A person in the approver group (not you) approves it with `portcullis approvals approve {}` or the approvals_decide tool; then send the same call again",
            a.tool, a.id, rfc3339(a.expires_at), a.id
        ),
        Some(json!({"approval": a.summary(), "approve_with": format!("portcullis approvals approve {}", a.id)})),
    )
}

fn refused(a: &Approval) -> McpError {
    let why = match a.state {
        State::Denied => format!("approval {} was denied{}; a denial is final for this call", a.id, a.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()),
        State::Expired => format!("approval {} expired at {}; send the call again to ask for a new one", a.id, rfc3339(a.expires_at)),
        _ => format!("approval {} was used already: the approved call executed once", a.id),
    };
    McpError::new(ErrorCode(APPROVAL_REFUSED), format!("{} not run: {why}", a.tool), Some(json!({"approval": a.summary()})))
}

fn decision_refused(e: &DecideError) -> McpError {
    McpError::new(ErrorCode(DECISION_REFUSED), format!("approval decision refused: {e}"), None)
}
