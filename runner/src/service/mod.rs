//! The runner service (`portcullis serve`): what runs in production beside the gateway.

pub mod backends;
pub mod breaker;
pub mod call;
pub mod cluster;
pub mod progress;
pub mod queue;
pub mod serve;
pub mod session_guard;
pub mod tls;
pub mod tools;
