//! `portcullis-bench compare OLD.json NEW.json`: the headline figures of two runs side by side.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::table::Table;

fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(v["schema"] == crate::results::SCHEMA, "{} has schema {}, this build reads {}", path.display(), v["schema"], crate::results::SCHEMA);
    Ok(v)
}

fn f(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

fn row(t: &mut Table, name: String, old: Option<f64>, new: Option<f64>, unit: &str, lower_is_better: bool) {
    let show = |x: Option<f64>| x.map_or("—".to_owned(), |x| format!("{x:.1} {unit}"));
    let change = match (old, new) {
        (Some(o), Some(n)) if o != 0.0 => {
            let pct = 100.0 * (n - o) / o;
            let better = if lower_is_better { pct < 0.0 } else { pct > 0.0 };
            format!("{pct:+.1}%{}", if pct.abs() >= 10.0 { if better { " better" } else { " WORSE" } } else { "" })
        }
        _ => String::new(),
    };
    t.row([name, show(new), show(old), change, String::new(), String::new()]);
}

pub fn run(old_path: &Path, new_path: &Path) -> Result<()> {
    let (old, new) = (load(old_path)?, load(new_path)?);
    let mut t = Table::default();
    t.section(format!(
        "new = {} ({}), baseline = old = {} ({})",
        new_path.display(),
        new["git_commit"].as_str().unwrap_or("?"),
        old_path.display(),
        old["git_commit"].as_str().unwrap_or("?")
    ));
    let empty = Vec::new();
    for tg in new["targets"].as_array().unwrap_or(&empty) {
        let o = old["targets"].as_array().unwrap_or(&empty).iter().find(|o| o["name"] == tg["name"]);
        let met = |v: &Value| if v["met"].as_bool() == Some(true) { "MET" } else { "NOT MET" };
        let unit = tg["unit"].as_str().unwrap_or("");
        let show = |v: &Value| v["value"].as_f64().map_or("—".to_owned(), |x| format!("{x:.2} {unit} ({})", met(v)));
        t.row([
            format!("target: {}", tg["name"].as_str().unwrap_or("")),
            show(tg),
            o.map_or("—".to_owned(), show),
            String::new(),
            format!("{} {unit}", tg["limit"]),
            met(tg).to_owned(),
        ]);
    }
    let key = |e: &Value| format!("{} {} c={} {}", e["upstream"].as_str().unwrap_or(""), e["path"].as_str().unwrap_or(""), e["concurrency"], e["variant"].as_str().unwrap_or(""));
    let olds = old["e2e"].as_array().unwrap_or(&empty);
    for e in new["e2e"].as_array().unwrap_or(&empty) {
        let o = olds.iter().find(|o| key(o) == key(e));
        let name = key(e);
        row(&mut t, format!("{name} p50"), o.and_then(|o| f(o, "/latency_us/p50")), f(e, "/latency_us/p50"), "µs", true);
        row(&mut t, format!("{name} p99"), o.and_then(|o| f(o, "/latency_us/p99")), f(e, "/latency_us/p99"), "µs", true);
        row(&mut t, format!("{name} rps"), o.and_then(|o| f(o, "/rps")), f(e, "/rps"), "/s", false);
    }
    for d in new["decisions"].as_array().unwrap_or(&empty) {
        let k = |d: &Value| format!("{} {} c={}", d["upstream"].as_str().unwrap_or(""), d["path"].as_str().unwrap_or(""), d["concurrency"]);
        let o = old["decisions"].as_array().unwrap_or(&empty).iter().find(|o| k(o) == k(d));
        for q in ["p50", "p99"] {
            let p = format!("/summary_us/{q}");
            row(&mut t, format!("decision {} {q}", k(d)), o.and_then(|o| f(o, &p)), f(d, &p), "µs", true);
        }
    }
    for s in new["sandbox"].as_array().unwrap_or(&empty) {
        let o = old["sandbox"].as_array().unwrap_or(&empty).iter().find(|o| o["name"] == s["name"]);
        for side in ["sandbox_us", "bare_us"] {
            let p = format!("/{side}/p50");
            row(&mut t, format!("sandbox {} {side} p50", s["name"].as_str().unwrap_or("")), o.and_then(|o| f(o, &p)), f(s, &p), "µs", true);
        }
    }
    for m in new["micro"].as_array().unwrap_or(&empty) {
        let o = old["micro"].as_array().unwrap_or(&empty).iter().find(|o| o["group"] == m["group"] && o["id"] == m["id"]);
        let to_us = |x: Option<f64>| x.map(|x| x / 1000.0);
        row(
            &mut t,
            format!("micro {}/{}", m["group"].as_str().unwrap_or(""), m["id"].as_str().unwrap_or("")),
            to_us(o.and_then(|o| f(o, "/median_ns"))),
            to_us(f(m, "/median_ns")),
            "µs",
            true,
        );
    }
    for m in new["memory"].as_array().unwrap_or(&empty) {
        let k = |m: &Value| format!("{} {} {}", m["process"].as_str().unwrap_or(""), m["variant"].as_str().unwrap_or(""), m["upstream"].as_str().unwrap_or(""));
        let o = old["memory"].as_array().unwrap_or(&empty).iter().find(|o| k(o) == k(m));
        let last = |m: &Value| m["checkpoints"].as_array().and_then(|c| c.last()).and_then(|c| c[1].as_f64()).map(|kib| kib / 1024.0);
        row(&mut t, format!("RSS at end, {}", k(m)), o.and_then(last), last(m), "MiB", true);
    }
    println!("{}", t.render());
    Ok(())
}
