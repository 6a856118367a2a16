//! Portcullis core: everything the gateway decides, with no I/O.
//!
//! The filter (wasm, inside Envoy) and the runner (native) both link this crate, so that the
//! plan hash, the ticket format and the JSON-RPC model exist exactly once.
// A panic inside Envoy's wasm VM takes the plugin down, so core is panic-free outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))] // use `?` or a typed error instead
#![cfg_attr(not(test), deny(clippy::expect_used))] // same: no panicking accessors
#![cfg_attr(not(test), deny(clippy::panic))] // fail closed with an error, never abort
#![cfg_attr(not(test), deny(clippy::indexing_slicing))] // use get() so bounds are handled
#![forbid(unsafe_code)]

pub mod audit;
pub mod authz;
pub mod caller;
pub mod caller_facts;
pub mod catalog;
pub mod config;
pub mod decision_cache;
pub mod error;
pub mod eval_budget;
pub mod gateway;
pub mod json;
pub mod jsonrpc;
pub mod listing;
pub mod placement;
pub mod plan;
pub mod profile;
pub mod ratelimit;
pub mod record;
pub mod relay;
pub mod schema;
pub mod session;
pub mod ticket;
pub mod userjwt;

/// The HTTP header that carries the gateway's ticket to the runner.
pub const TICKET_HEADER: &str = "x-portcullis-ticket";
