//! Reading back the estimates of the native micro-benchmarks (criterion,
//! `bench/micro/benches/core.rs`, whose names live in `portcullis_bench_micro::names`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

pub use portcullis_bench_micro::names::*;

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub group: String,
    pub id: String,
    pub median_ns: f64,
    pub mean_ns: f64,
    /// 95% confidence interval of the mean.
    pub mean_ci_ns: (f64, f64),
    /// Seconds since the estimate was written (criterion ran before this binary).
    pub age_s: u64,
}

/// Where criterion writes: `$CRITERION_HOME`, else `<target dir>/criterion`.
pub fn criterion_dir(target_dir: &Path) -> PathBuf {
    std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| target_dir.join("criterion"))
}

/// Reads every benchmark's `new/estimates.json`. A missing one is an error: run
/// the criterion benchmarks (`make bench` does) first.
pub fn read_all(dir: &Path) -> Result<Vec<Estimate>> {
    all_benchmarks().into_iter().map(|(group, id)| read_one(dir, group, &id)).collect()
}

fn read_one(dir: &Path, group: &str, id: &str) -> Result<Estimate> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("reading {} (run `make bench`, which runs the criterion benchmarks first)", path.display())
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let num = |p: &str| v.pointer(p).and_then(serde_json::Value::as_f64).with_context(|| format!("{} has no {p}", path.display()));
    let age = std::fs::metadata(&path)?
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or(Duration::ZERO);
    Ok(Estimate {
        group: group.to_owned(),
        id: id.to_owned(),
        median_ns: num("/median/point_estimate")?,
        mean_ns: num("/mean/point_estimate")?,
        mean_ci_ns: (num("/mean/confidence_interval/lower_bound")?, num("/mean/confidence_interval/upper_bound")?),
        age_s: age.as_secs(),
    })
}

pub fn find<'a>(estimates: &'a [Estimate], group: &str, id: &str) -> Option<&'a Estimate> {
    estimates.iter().find(|e| e.group == group && e.id == id)
}
