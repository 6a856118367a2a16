//! Portcullis runner library: the modules of the `portcullis` binary, also used by its tests.

pub mod certs;
pub mod envoy_config;
pub mod policy_cli;
pub mod reload;
pub mod sandbox;
pub mod bundle;
pub mod replay;
pub mod serve;
pub mod session_guard;
pub mod tls;
pub mod tools;
pub mod up;
pub mod users;
