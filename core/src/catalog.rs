//! The tool catalog: one document that feeds tools/list, argument validation, policy data and
//! execution. Raw serde types are validated into [`Catalog`] once, at configuration time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::placement::Placement;
use crate::schema::{CompileError, Schema};

pub mod kubernetes;

pub use kubernetes::KubernetesExecution;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Irreversible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Reads state, changes nothing.
    Query,
    /// Computes a change without making it (dry run).
    Plan,
    /// Makes a change.
    Apply,
    /// Decides another caller's pending approval: run by the runner itself (`builtin`), for
    /// people who hold the approver role, never for a workload alone.
    Approval,
}

/// A tool the runner implements itself instead of running a command in a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// List the pending approvals.
    ApprovalsList,
    /// Show one approval: the call it is for, who asked, its state.
    ApprovalsShow,
    /// Approve or deny one pending approval.
    ApprovalsDecide,
}

/// An apply tool that executes a stored plan: its `argument` cites the plan by the SHA-256 of
/// its artifact, and the runner executes exactly that artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanUse {
    /// The argument that holds the plan's hash (`sha256:<hex>`).
    #[serde(default = "default_plan_argument")]
    pub argument: String,
    /// The plan tools whose plans this tool may apply.
    pub from: Vec<String>,
    /// Arguments that must have the same value in the apply as in the plan's call: the target
    /// the plan was made for (a plan for staging never applies to production).
    #[serde(default)]
    pub target: Vec<String>,
}

fn default_plan_argument() -> String {
    "plan".to_owned()
}

/// How the local (Linux namespaces) backend runs a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalExecution {
    /// argv; the call's arguments arrive as JSON on stdin and in `PORTCULLIS_ARGUMENTS`.
    pub command: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
}

fn default_timeout() -> u64 {
    30
}
fn default_max_output() -> usize {
    256 * 1024
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Execution {
    pub local: LocalExecution,
    /// How the Kubernetes backend runs the tool; absent: it runs only on the local backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesExecution>,
    /// Where the tool runs unless the policy decision says otherwise.
    #[serde(default)]
    pub placement: Placement,
}

impl Default for LocalExecution {
    fn default() -> Self {
        Self { command: Vec::new(), timeout_seconds: default_timeout(), max_output_bytes: default_max_output() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub kind: Kind,
    pub risk: Risk,
    pub owner: String,
    pub input_schema: Map<String, Value>,
    /// How a command tool runs; absent for a `builtin` tool.
    #[serde(default)]
    pub execution: Execution,
    /// Set for a tool the runner implements itself (the approval tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Builtin>,
    /// Set for an apply tool that executes a stored plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanUse>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    version: u32,
    tools: Vec<Tool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid: {0}")]
    Parse(String),
    #[error("catalog version {0} is not supported (expected 1)")]
    Version(u32),
    #[error("tool {0:?} appears more than once")]
    Duplicate(String),
    #[error("tool name {0:?} must be 1-64 characters of [A-Za-z0-9_.-]")]
    BadName(String),
    #[error("tool {0:?}: input_schema must have \"type\": \"object\"")]
    BadSchema(String),
    #[error("tool {0:?}: execution.local.command must not be empty")]
    EmptyCommand(String),
    #[error("tool {0:?}: a builtin tool has no execution section")]
    BuiltinWithCommand(String),
    #[error("tool {0:?}: kind approval and builtin go together (one without the other)")]
    BuiltinKind(String),
    #[error("tool {tool:?}: plan: {reason}")]
    PlanUse { tool: String, reason: String },
    #[error("tool {tool:?}: execution: {reason}")]
    Execution { tool: String, reason: String },
    #[error("tool {tool:?}: input_schema: {error}")]
    Schema { tool: String, error: CompileError },
}

/// A validated catalog, indexed by tool name, with each tool's input schema compiled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalog {
    tools: BTreeMap<String, Tool>,
    schemas: BTreeMap<String, Schema>,
}

impl Catalog {
    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = serde_json::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        Self::from_raw(raw)
    }

    pub fn from_value(value: Value) -> Result<Self, CatalogError> {
        let raw: RawCatalog = serde_json::from_value(value).map_err(|e| CatalogError::Parse(e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawCatalog) -> Result<Self, CatalogError> {
        if raw.version != 1 {
            return Err(CatalogError::Version(raw.version));
        }
        let mut tools = BTreeMap::new();
        let mut schemas = BTreeMap::new();
        for tool in raw.tools {
            let name_ok = (1..=64).contains(&tool.name.len())
                && tool.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !name_ok {
                return Err(CatalogError::BadName(tool.name));
            }
            if tool.input_schema.get("type") != Some(&Value::from("object")) {
                return Err(CatalogError::BadSchema(tool.name));
            }
            match (tool.builtin, tool.kind) {
                (Some(_), Kind::Approval) if tool.execution != Execution::default() => {
                    return Err(CatalogError::BuiltinWithCommand(tool.name));
                }
                (Some(_), Kind::Approval) => {}
                (Some(_), _) | (None, Kind::Approval) => return Err(CatalogError::BuiltinKind(tool.name)),
                // A tool may run only on Kubernetes, with its command there.
                (None, _) if tool.execution.local.command.is_empty() && tool.execution.kubernetes.as_ref().is_none_or(|k| k.command.is_empty()) => {
                    return Err(CatalogError::EmptyCommand(tool.name))
                }
                (None, _) => {}
            }
            check_execution(&tool)?;
            let schema = Schema::compile(&tool.input_schema).map_err(|error| CatalogError::Schema { tool: tool.name.clone(), error })?;
            schemas.insert(tool.name.clone(), schema);
            if let Some(dup) = tools.insert(tool.name.clone(), tool) {
                return Err(CatalogError::Duplicate(dup.name));
            }
        }
        for tool in tools.values() {
            if let Some(plan) = &tool.plan {
                check_plan_use(tool, plan, &tools)?;
            }
        }
        Ok(Self { tools, schemas })
    }

    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// The compiled input schema of a catalog tool.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.schemas.get(name)
    }

    pub fn tools(&self) -> impl Iterator<Item = &Tool> {
        self.tools.values()
    }

    /// What policy sees under `data.portcullis.catalog`.
    pub fn policy_data(&self) -> Value {
        let tools: Map<String, Value> = self
            .tools
            .values()
            .map(|t| (t.name.clone(), json!({"kind": t.kind, "risk": t.risk, "owner": t.owner})))
            .collect();
        json!({ "tools": tools })
    }

    /// The MCP `tools/list` result for the whole catalog.
    pub fn tools_list_result(&self) -> Value {
        let tools: Vec<Value> = self
            .tools
            .values()
            .map(|t| json!({"name": t.name, "description": t.description, "inputSchema": t.input_schema}))
            .collect();
        json!({ "tools": tools })
    }
}

/// The tool's Kubernetes section and default placement are well-formed, and a tool placed on
/// Kubernetes by default says how to run there.
fn check_execution(tool: &Tool) -> Result<(), CatalogError> {
    let fail = |reason: String| Err(CatalogError::Execution { tool: tool.name.clone(), reason });
    let exec = &tool.execution;
    if let Err(reason) = exec.placement.validate() {
        return fail(format!("placement: {reason}"));
    }
    if let Some(k) = &exec.kubernetes {
        if let Err(reason) = k.validate() {
            return fail(format!("kubernetes: {reason}"));
        }
    } else if exec.placement.backend == crate::placement::KUBERNETES {
        return fail("placed on kubernetes without a kubernetes section".into());
    }
    Ok(())
}

/// An apply tool's `plan` section must name plan tools of this catalog, and arguments its
/// input schema declares: the plan argument required, the targets declared.
fn check_plan_use(tool: &Tool, plan: &PlanUse, tools: &BTreeMap<String, Tool>) -> Result<(), CatalogError> {
    let fail = |reason: String| Err(CatalogError::PlanUse { tool: tool.name.clone(), reason });
    if tool.kind != Kind::Apply {
        return fail("only an apply tool applies plans".into());
    }
    if plan.from.is_empty() {
        return fail("from names no plan tool".into());
    }
    for from in &plan.from {
        if tools.get(from).map(|t| t.kind) != Some(Kind::Plan) {
            return fail(format!("{from:?} is not a plan tool of this catalog"));
        }
    }
    let declared = |name: &str| tool.input_schema.get("properties").and_then(|p| p.get(name)).is_some();
    let required = tool.input_schema.get("required").and_then(Value::as_array).is_some_and(|r| r.iter().any(|n| n.as_str() == Some(&plan.argument)));
    if !declared(&plan.argument) || !required {
        return fail(format!("the plan argument {:?} must be a required property", plan.argument));
    }
    if let Some(target) = plan.target.iter().find(|t| !declared(t) || **t == plan.argument) {
        return fail(format!("target argument {target:?} is not a property of the tool (or is the plan argument)"));
    }
    Ok(())
}

