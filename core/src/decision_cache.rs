//! A bounded cache of policy decisions, for decisions the policy itself declares cacheable.
//!
//! The key is the SHA-256 of the whole policy input except `time`: method, tool, arguments,
//! plan hash, workload, the verified user's claims (or why there is none). A decision may be
//! kept only when the policy says it did not read `input.time` (`cacheable: true`), so a hit
//! returns exactly what evaluation would return. The cache belongs to one compiled policy and
//! is dropped with it, so a new bundle, catalog or data never sees old decisions.
//!
//! Bounded by two generations: lookups read the current one, then the previous one (and move a
//! hit forward); when the current one is full it becomes the previous one. At most
//! `2 × GENERATION` entries are held, and recently used keys survive a rotation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::authz::{Decision, PolicyInput};

/// Entries per generation.
pub const GENERATION: usize = 512;
/// Inputs whose key material exceeds this are not cached: hashing them would cost more than
/// it could save, and they are rarely repeated.
pub const MAX_KEY_BYTES: usize = 16 * 1024;

pub type Key = [u8; 32];

struct Generations<V> {
    current: HashMap<Key, V>,
    previous: HashMap<Key, V>,
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Self { current: HashMap::new(), previous: HashMap::new() }
    }
}

/// Bounded as the module says; `V` is a decision, or anything else kept per input (a bundle's
/// caller facts, [`crate::caller_facts`]).
pub struct DecisionCache<V = Decision> {
    inner: Mutex<Generations<V>>,
    /// Entries per generation ([`GENERATION`] unless made [`DecisionCache::with_generation`]).
    generation: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V> Default for DecisionCache<V> {
    fn default() -> Self {
        Self::with_generation(GENERATION)
    }
}

impl<V> DecisionCache<V> {
    /// A cache of at most two generations of `generation` entries each.
    pub fn with_generation(generation: usize) -> Self {
        Self { inner: Mutex::new(Generations::default()), generation, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }
}

/// The input without `time`: everything a cacheable decision may depend on.
#[derive(Serialize)]
struct KeyView<'a> {
    method: &'a str,
    tool: Option<&'a str>,
    arguments: Option<&'a serde_json::Map<String, serde_json::Value>>,
    plan_hash: Option<&'a str>,
    workload: &'a crate::authz::Workload,
    user: Option<&'a crate::userjwt::VerifiedUser>,
    user_error: Option<&'a str>,
    mcp: &'a crate::authz::McpInput,
}

/// The cache key for `input`, or `None` when it should not be cached (too large).
pub fn key(input: &PolicyInput<'_>) -> Option<Key> {
    // Destructured without `..`: a field added to the policy input fails to compile here until
    // it is in the key too (or, like time, deliberately left out).
    let PolicyInput { method, tool, arguments, plan_hash, workload, user, user_error, time: _, ref mcp } = *input;
    let view = KeyView { method, tool, arguments, plan_hash, workload, user, user_error, mcp };
    // serde_json's Map is ordered by key, so equal inputs give equal bytes.
    let bytes = serde_json::to_vec(&view).ok()?;
    (bytes.len() <= MAX_KEY_BYTES).then(|| Sha256::digest(&bytes).into())
}

impl<V: Clone> DecisionCache<V> {
    pub fn get(&self, key: &Key) -> Option<V> {
        let found = self.lookup(key);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Lookups answered from the cache, and lookups that were not, since it was created.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    fn lookup(&self, key: &Key) -> Option<V> {
        // A poisoned lock only means a panic elsewhere; the cache then just misses.
        let mut g = self.inner.lock().ok()?;
        if let Some(d) = g.current.get(key) {
            return Some(d.clone());
        }
        let d = g.previous.remove(key)?;
        self.put(&mut g, *key, d.clone());
        Some(d)
    }

    pub fn insert(&self, key: Key, decision: V) {
        if let Ok(mut g) = self.inner.lock() {
            self.put(&mut g, key, decision);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.current.len() + g.previous.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, g: &mut Generations<V>, key: Key, decision: V) {
        if g.current.len() >= self.generation && !g.current.contains_key(&key) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(key, decision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(reason: &str) -> Decision {
        Decision { allow: true, reasons: vec![reason.into()], cacheable: true, ..Decision::default() }
    }

    fn k(n: usize) -> Key {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(n as u64).to_be_bytes());
        key
    }

    #[test]
    fn bounded_and_keeps_recently_used_keys() {
        let cache = DecisionCache::default();
        cache.insert(k(0), decision("zero"));
        for n in 1..(3 * GENERATION) {
            cache.insert(k(n), decision("n"));
            // Touch key 0 now and then: it must survive every rotation.
            if n % (GENERATION / 2) == 0 {
                assert_eq!(cache.get(&k(0)).unwrap().reasons, ["zero"]);
            }
            assert!(cache.len() <= 2 * GENERATION);
        }
        assert!(cache.get(&k(1)).is_none(), "old, unused keys are evicted");
        assert!(cache.get(&k(3 * GENERATION - 1)).is_some());
        let touches = (1..3 * GENERATION).filter(|n| n % (GENERATION / 2) == 0).count() as u64;
        assert_eq!(cache.counts(), (touches + 1, 1));
    }

    #[test]
    fn key_ignores_time_only() {
        use crate::authz::{PolicyTime, Workload};
        let w = Workload::from_spiffe_id("spiffe://td/ns/a/sa/b").unwrap();
        let args: serde_json::Map<_, _> = serde_json::from_str(r#"{"text":"a"}"#).unwrap();
        let other: serde_json::Map<_, _> = serde_json::from_str(r#"{"text":"b"}"#).unwrap();
        let input = |args, unix, user_error| PolicyInput {
            method: "tools/call",
            tool: Some("word_count"),
            arguments: Some(args),
            plan_hash: Some("sha256:00"),
            workload: &w,
            user: None,
            user_error,
            time: PolicyTime::from_unix(unix),
            mcp: Default::default(),
        };
        let base = key(&input(&args, 0, None)).unwrap();
        assert_eq!(base, key(&input(&args, 86_400 * 3 + 3_600, None)).unwrap());
        assert_ne!(base, key(&input(&other, 0, None)).unwrap());
        assert_ne!(base, key(&input(&args, 0, Some("bearer token expired"))).unwrap());
        let big: serde_json::Map<_, _> =
            serde_json::from_value(serde_json::json!({"text": "x".repeat(MAX_KEY_BYTES)})).unwrap();
        assert!(key(&input(&big, 0, None)).is_none());
    }
}
