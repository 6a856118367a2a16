//! Portcullis runner library: the modules of the `portcullis` binary, also used by its tests.
//!
//! - [`service`]: the runner itself, `portcullis serve`: the MCP server for approved calls,
//!   the admission of gateway credentials (tickets, caller assertions, sessions), turning a
//!   call into a job, and its TLS.
//! - The control plane beside it: [`store`] (durable state in one embedded database),
//!   [`plans`] (plan / apply: content-addressed artifacts with signed statements) and
//!   [`approvals`] (human approval bound to the exact call).
//! - [`sandbox`]: the execution backends behind one trait (local Linux namespaces today).
//! - [`telemetry`]: OpenTelemetry traces and metrics over OTLP (off unless `--otlp-endpoint`).
//! - [`audit`]: the tamper-evident audit trail: a hash-chained log of gateway decisions
//!   (ingested from Envoy's access log) and runner events, with signed checkpoints.
//! - [`devstack`]: the operator's tooling around it: `up` (Envoy + filter + runner on one
//!   machine, with hot reload), dev certificates and users, the rendered Envoy config, the
//!   plugin configuration bundle, and `policy test`/`policy eval`.

pub mod approvals;
pub mod audit;
pub mod devstack;
pub mod keys;
pub mod plans;
pub mod sandbox;
pub mod service;
pub mod store;
pub mod telemetry;
