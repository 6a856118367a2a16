//! The operator's tooling: a whole stack on one machine (`up`), its certificates, users, Envoy
//! config and plugin configuration, and the policy CLI. The service does not depend on it.

pub mod bundle;
pub mod certs;
pub mod envoy_config;
pub mod policy_cli;
pub mod reload;
pub mod up;
pub mod users;
