//! `portcullis-bench`: the benchmark behind `make bench`. See `run` for the topology and
//! `report` for the table and targets; the criterion micro-benchmarks are the
//! `portcullis-bench-micro` crate (`bench/micro`).

pub mod audit_latency;
pub mod blocks;
pub mod compare;
pub mod cpu;
pub mod envoy;
pub mod http;
pub mod load;
pub mod micro;
pub mod native;
pub mod phases;
pub use portcullis_bench_micro::payload;
pub mod procs;
pub mod references;
pub mod report;
pub mod responder;
pub mod results;
pub mod run;
pub mod sandbox_bench;
pub mod stats;
pub mod table;
