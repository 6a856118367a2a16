//! Section 1b of the table: Portcullis beside its references (the native Envoy peer and the
//! proxy-wasm floor), every path, from the static upstream phase where all run in the same
//! interleaved blocks.

use crate::envoy::Variant;
use crate::results::{E2e, Path, Results, Upstream};
use crate::table::Table;

fn cells(a: impl Into<String>, b: impl Into<String>, c: impl Into<String>, d: impl Into<String>, e: impl Into<String>, f: impl Into<String>) -> [String; 6] {
    [a.into(), b.into(), c.into(), d.into(), e.into(), f.into()]
}

fn role(v: Variant) -> &'static str {
    match v {
        Variant::Bare => "baseline",
        Variant::Filter => "portcullis",
        _ => "reference",
    }
}

pub fn section(t: &mut Table, r: &Results) {
    let get = |path, c, v| r.e2e(Upstream::Static, path, c, v);
    if !Variant::ALL.iter().any(|v| v.is_reference() && get(Path::Allow, 1, *v).is_some()) {
        return;
    }
    t.section(
        "1b. Portcullis beside its references, static upstream, all five stacks in the same interleaved blocks. native = Envoy's \
         own filters: buffer → mcp (REJECT_NO_MCP) → rbac with the reader role's rules generated from policies/ and the catalog \
         (denial: 403, local reply restated as a JSON-RPC error). floor = a proxy-wasm module doing Portcullis's per-request \
         work without a policy (peer URI SAN, headers, body buffered and parsed as JSON, SHA-256 of the arguments, a ~650 B \
         ticket header, clock, 16 random bytes, a counter); floor+sig also signs the ticket (Ed25519). The floor never denies: \
         n/a. Last column: Portcullis (filter) minus this stack.",
    );
    t.header(cells(
        "path · stack",
        "c=1 p50/p99 µs (Δ bare)",
        "c=32 req/s (× bare)",
        "Envoy CPU µs/req c=32 (Δ bare)",
        "filter − this: p50 · rps · CPU",
        "role",
    ));
    for path in Path::ALL {
        let (bare1, bare32) = (get(path, 1, Variant::Bare), get(path, 32, Variant::Bare));
        let (filter1, filter32) = (get(path, 1, Variant::Filter), get(path, 32, Variant::Filter));
        for v in Variant::ALL {
            let (c1, c32) = (get(path, 1, v), get(path, 32, v));
            let name = format!("{} · {}", path.label(), v.label());
            if c1.is_none() && c32.is_none() {
                t.row(cells(name, "n/a", "n/a", "n/a", "n/a", role(v)));
                continue;
            }
            let show = v != Variant::Bare;
            let latency = c1.map_or("—".into(), |e| {
                let delta = bare1.filter(|_| show).map_or(String::new(), |b| format!(" ({:+.0}/{:+.0})", e.latency_us.p50 - b.latency_us.p50, e.latency_us.p99 - b.latency_us.p99));
                format!("{:.0}/{:.0}{delta}", e.latency_us.p50, e.latency_us.p99)
            });
            let rps = c32.map_or("—".into(), |e| {
                let ratio = bare32.filter(|b| show && b.rps > 0.0).map_or(String::new(), |b| format!(" (×{:.2})", e.rps / b.rps));
                format!("{:.0}/s{ratio}", e.rps)
            });
            let cpu = c32.map_or("—".into(), |e| {
                let delta = bare32.filter(|_| show).map_or(String::new(), |b| format!(" ({:+.0})", envoy_cpu(e) - envoy_cpu(b)));
                format!("{:.0}{delta}", envoy_cpu(e))
            });
            let gap = if v.is_reference() { gap(filter1, filter32, c1, c32) } else { String::new() };
            t.row(cells(name, latency, rps, cpu, gap, role(v)));
        }
    }
}

fn envoy_cpu(e: &E2e) -> f64 {
    e.cpu_us_per_request.envoy
}

/// How far Portcullis is from a reference: added p50 µs, throughput ratio, added Envoy CPU µs.
fn gap(filter1: Option<&E2e>, filter32: Option<&E2e>, ref1: Option<&E2e>, ref32: Option<&E2e>) -> String {
    let p50 = match (filter1, ref1) {
        (Some(f), Some(r)) => format!("{:+.0} µs", f.latency_us.p50 - r.latency_us.p50),
        _ => "—".into(),
    };
    let (rps, cpu) = match (filter32, ref32) {
        (Some(f), Some(r)) if r.rps > 0.0 => (format!("×{:.2}", f.rps / r.rps), format!("{:+.0} µs", envoy_cpu(f) - envoy_cpu(r))),
        _ => ("—".into(), "—".into()),
    };
    format!("{p50} · {rps} · {cpu}")
}
