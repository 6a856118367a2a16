//! Replay protection: each ticket `jti` is accepted once.
//!
//! Entries are kept until their ticket expires (plus leeway), after which the ticket would be
//! refused as expired anyway. The set lives in memory: a restart forgets it, so a ticket seen
//! just before a restart could be replayed within its short lifetime. The plan store and
//! approvals will bring an embedded database; this set moves there with them.

use std::collections::HashMap;
use std::sync::Mutex;

use portcullis_core::ticket::TicketError;

pub struct ReplayGuard {
    leeway: u64,
    seen: Mutex<HashMap<String, u64>>,
}

impl ReplayGuard {
    pub fn new(leeway_seconds: u64) -> Self {
        Self { leeway: leeway_seconds, seen: Mutex::new(HashMap::new()) }
    }

    /// Records `jti`, or fails if it was seen before.
    pub fn check_and_record(&self, jti: &str, exp: u64, now: u64) -> Result<(), TicketError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, e| e.saturating_add(self.leeway) >= now);
        if seen.contains_key(jti) {
            return Err(TicketError::Replayed(jti.to_owned()));
        }
        seen.insert(jti.to_owned(), exp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_refused_until_expiry_passes() {
        let g = ReplayGuard::new(2);
        g.check_and_record("a", 100, 90).unwrap();
        assert!(matches!(g.check_and_record("a", 100, 95), Err(TicketError::Replayed(_))));
        g.check_and_record("b", 100, 95).unwrap();
        // Long after expiry the entry is pruned (the verifier refuses the ticket as expired).
        g.check_and_record("a", 100, 200).unwrap();
    }
}
