//! Per-workload token buckets.
//!
//! Envoy runs one wasm VM per worker thread, so a bucket kept in a VM's memory would give each
//! identity N times its limit. The filter keeps every bucket in proxy-wasm shared data (one
//! key per SPIFFE ID, updated with compare-and-swap); this module is only the arithmetic, with
//! the bucket state as 16 bytes: micro-tokens left, then the time of the last refill in ns.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `rate_limits` in the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    /// The bucket every workload gets unless `identities` names it.
    pub default: RawBucket,
    /// Per-SPIFFE-ID buckets that replace the default.
    #[serde(default)]
    pub identities: BTreeMap<String, RawBucket>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    /// Sustained rate: tokens added per second.
    pub requests_per_second: f64,
    /// Bucket size: how many requests may arrive at once after a quiet period.
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rate_limits: {0}")]
pub struct RateLimitError(String);

const MICRO: f64 = 1_000_000.0;
/// Bytes of one bucket's state in shared data.
pub const STATE_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    /// Micro-tokens added per nanosecond.
    refill_per_ns: f64,
    capacity: u64,
}

/// Validated limits, ready per request.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    default: Bucket,
    identities: BTreeMap<String, Bucket>,
}

/// The result of taking one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Allowed,
    /// Over the limit; a token will be back after this many seconds (at least 1).
    Limited { retry_after_seconds: u64 },
}

impl RateLimits {
    pub fn from_raw(raw: &RawRateLimits) -> Result<Self, RateLimitError> {
        let bucket = |who: &str, b: &RawBucket| {
            if !(b.requests_per_second.is_finite() && b.requests_per_second > 0.0 && b.requests_per_second <= 1e6) {
                return Err(RateLimitError(format!("{who}: requests_per_second must be in (0, 1e6], got {}", b.requests_per_second)));
            }
            if b.burst == 0 {
                return Err(RateLimitError(format!("{who}: burst must be at least 1")));
            }
            Ok(Bucket { refill_per_ns: b.requests_per_second * MICRO / 1e9, capacity: u64::from(b.burst) * MICRO as u64 })
        };
        let identities = raw
            .identities
            .iter()
            .map(|(id, b)| bucket(id, b).map(|b| (id.clone(), b)))
            .collect::<Result<_, _>>()?;
        Ok(Self { default: bucket("default", &raw.default)?, identities })
    }

    /// Takes one token from `identity`'s bucket. `state` is what shared data holds (`None`
    /// for a bucket never used, i.e. full); the second value is the state to store back.
    pub fn take(&self, identity: &str, state: Option<&[u8]>, now_ns: u64) -> (Take, [u8; STATE_LEN]) {
        let bucket = self.identities.get(identity).unwrap_or(&self.default);
        let (tokens, last) = decode(state).unwrap_or((bucket.capacity, now_ns));
        // A clock that went backwards refills nothing rather than underflowing.
        let elapsed = now_ns.saturating_sub(last);
        let refilled = (tokens as f64 + elapsed as f64 * bucket.refill_per_ns).min(bucket.capacity as f64) as u64;
        let one = MICRO as u64;
        if refilled >= one {
            return (Take::Allowed, encode(refilled - one, now_ns));
        }
        let missing_ns = (one - refilled) as f64 / bucket.refill_per_ns;
        let retry_after_seconds = ((missing_ns / 1e9).ceil() as u64).max(1);
        (Take::Limited { retry_after_seconds }, encode(refilled, now_ns))
    }
}

fn decode(state: Option<&[u8]>) -> Option<(u64, u64)> {
    let state = state?;
    let tokens = u64::from_le_bytes(state.get(..8)?.try_into().ok()?);
    let last = u64::from_le_bytes(state.get(8..STATE_LEN)?.try_into().ok()?);
    Some((tokens, last))
}

fn encode(tokens: u64, last_ns: u64) -> [u8; STATE_LEN] {
    let mut out = [0u8; STATE_LEN];
    for (dst, src) in out.iter_mut().zip(tokens.to_le_bytes().into_iter().chain(last_ns.to_le_bytes())) {
        *dst = src;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limits(rps: f64, burst: u32) -> RateLimits {
        RateLimits::from_raw(&RawRateLimits {
            default: RawBucket { requests_per_second: rps, burst },
            identities: [("spiffe://td/vip".to_owned(), RawBucket { requests_per_second: 100.0, burst: 50 })].into(),
        })
        .unwrap()
    }

    fn run(l: &RateLimits, id: &str, times: &[u64]) -> Vec<Take> {
        let mut state: Option<[u8; STATE_LEN]> = None;
        times
            .iter()
            .map(|&t| {
                let (take, next) = l.take(id, state.as_ref().map(|s| &s[..]), t);
                state = Some(next);
                take
            })
            .collect()
    }

    #[test]
    fn burst_then_limited_then_refilled() {
        let l = limits(2.0, 3);
        let t0 = 1_700_000_000 * SEC;
        let takes = run(&l, "spiffe://td/a", &[t0, t0, t0, t0, t0 + SEC / 2, t0 + SEC / 2]);
        assert_eq!(takes[..3], [Take::Allowed; 3]);
        assert_eq!(takes[3], Take::Limited { retry_after_seconds: 1 });
        assert_eq!(takes[4], Take::Allowed, "half a second at 2/s refills one token");
        assert!(matches!(takes[5], Take::Limited { .. }));
    }

    #[test]
    fn retry_after_reflects_a_slow_rate() {
        let l = limits(0.1, 1);
        let takes = run(&l, "spiffe://td/a", &[SEC, SEC]);
        assert_eq!(takes[1], Take::Limited { retry_after_seconds: 10 });
    }

    #[test]
    fn identities_override_the_default() {
        let l = limits(1.0, 1);
        let takes = run(&l, "spiffe://td/vip", &[SEC; 50]);
        assert!(takes.iter().all(|t| *t == Take::Allowed));
    }

    #[test]
    fn clock_going_backwards_does_not_refill() {
        let l = limits(1.0, 1);
        let takes = run(&l, "spiffe://td/a", &[10 * SEC, 10 * SEC, 5 * SEC]);
        assert!(matches!(takes[2], Take::Limited { .. }));
    }

    #[test]
    fn bad_limits_are_refused() {
        for (rps, burst) in [(0.0, 1), (-1.0, 1), (f64::NAN, 1), (1.0, 0)] {
            let raw = RawRateLimits { default: RawBucket { requests_per_second: rps, burst }, identities: BTreeMap::new() };
            assert!(RateLimits::from_raw(&raw).is_err(), "{rps} {burst}");
        }
    }
}
