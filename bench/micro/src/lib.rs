//! Shared by the criterion micro-benchmarks (`benches/core.rs`) and `portcullis-bench`,
//! which reads their estimates back: the request bodies and the benchmarks' names.

pub mod names;
pub mod payload;
