//! Latency summaries, from raw samples or from Envoy's histogram buckets.

use serde::Serialize;

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// From samples in nanoseconds (sorted in place).
    pub fn from_nanos(samples: &mut [u64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        // Nearest rank: the smallest sample with at least q of all samples at or below it.
        let pick = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            us(samples[rank - 1])
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Summary {
            count: samples.len() as u64,
            mean: sum as f64 / samples.len() as f64 / 1000.0,
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            max: us(samples[samples.len() - 1]),
        }
    }

    /// "p50/p90/p99" with sensible precision.
    pub fn triple(&self) -> String {
        format!("{}/{}/{}", fmt_us(self.p50), fmt_us(self.p90), fmt_us(self.p99))
    }
}

/// One bucket of an Envoy (circllhist) histogram: `count` samples in `[lower, lower + width)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    pub lower: f64,
    pub width: f64,
    pub count: u64,
}

/// The difference `after - before` of two cumulative snapshots of the same histogram.
pub fn diff_buckets(before: &[Bucket], after: &[Bucket]) -> Vec<Bucket> {
    let key = |b: &Bucket| (b.lower * 1000.0).round() as i64;
    after
        .iter()
        .filter_map(|a| {
            let prev = before.iter().find(|b| key(b) == key(a)).map_or(0, |b| b.count);
            let count = a.count.saturating_sub(prev);
            (count > 0).then_some(Bucket { count, ..*a })
        })
        .collect()
}

/// Percentiles from buckets, interpolating linearly inside a bucket (as Envoy does). The
/// buckets have two significant digits, so values carry that resolution.
pub fn summarize_buckets(buckets: &[Bucket]) -> Summary {
    let mut buckets: Vec<Bucket> = buckets.iter().copied().filter(|b| b.count > 0).collect();
    buckets.sort_by(|a, b| a.lower.total_cmp(&b.lower));
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    if total == 0 {
        return Summary::default();
    }
    let quantile = |q: f64| {
        let rank = q * total as f64;
        let mut seen = 0.0;
        for b in &buckets {
            let next = seen + b.count as f64;
            if next >= rank {
                let within = if b.count == 0 { 0.0 } else { (rank - seen) / b.count as f64 };
                return b.lower + b.width * within.clamp(0.0, 1.0);
            }
            seen = next;
        }
        buckets.last().map_or(0.0, |b| b.lower + b.width)
    };
    let mean = buckets.iter().map(|b| (b.lower + b.width / 2.0) * b.count as f64).sum::<f64>() / total as f64;
    Summary { count: total, mean, p50: quantile(0.5), p90: quantile(0.9), p99: quantile(0.99), max: quantile(1.0) }
}

/// Microseconds for humans: no decimals above 100, one below.
pub fn fmt_us(us: f64) -> String {
    if us >= 100.0 {
        format!("{us:.0}")
    } else if us >= 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

/// A call count for humans: `400`, `20k`, `100k`.
pub fn fmt_count(n: u64) -> String {
    if n >= 10_000 {
        format!("{}k", (n as f64 / 1000.0).round())
    } else {
        n.to_string()
    }
}

/// Nanoseconds for humans, with a unit.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{} µs", fmt_us(ns / 1e3))
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut ns: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let s = Summary::from_nanos(&mut ns);
        assert_eq!((s.count, s.p50, s.p90, s.p99, s.max), (100, 50.0, 90.0, 99.0, 100.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn bucket_diff_and_interpolation() {
        let before = [Bucket { lower: 10.0, width: 1.0, count: 5 }];
        let after = [Bucket { lower: 10.0, width: 1.0, count: 15 }, Bucket { lower: 20.0, width: 1.0, count: 10 }];
        let d = diff_buckets(&before, &after);
        assert_eq!(d.len(), 2);
        let s = summarize_buckets(&d);
        assert_eq!(s.count, 20);
        assert!((s.p50 - 11.0).abs() < 1e-9, "{s:?}");
        assert!((s.p99 - 20.98).abs() < 1e-9, "{s:?}");
    }
}
