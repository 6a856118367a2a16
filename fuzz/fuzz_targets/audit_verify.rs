//! The audit-trail verifier (`portcullis audit verify`, `portcullis_core::audit::verify`) on
//! the bytes of a log and of its checkpoints.
//!
//! Input: a flags byte, then the log, a NUL, and the checkpoints. Flag 1 re-chains the log
//! (each line that is a JSON object gets the right `seq`, `prev` and `hash`); flag 2 signs the
//! checkpoints (each line `N` or `N HEAD` becomes a checkpoint of N records, with the chain's
//! head for N or HEAD, validly signed). Holds: no panic; an intact log's summary adds up; a
//! re-chained log with honestly signed checkpoints verifies, covering what they cover.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey};
use libfuzzer_sys::fuzz_target;
use portcullis_core::audit::{canonical, key_id, record_hash, verify, CheckpointVerifier, GENESIS};
use portcullis_core::json::{parse_strict, Limits};
use portcullis_fuzz as fx;
use serde_json::{Map, Value};

/// What the verifier reads a record with: any size, 64 deep.
const WIDE: Limits = Limits { max_body_bytes: usize::MAX, max_depth: 64 };

fn key() -> &'static (SigningKey, CheckpointVerifier) {
    static K: OnceLock<(SigningKey, CheckpointVerifier)> = OnceLock::new();
    K.get_or_init(|| {
        let key = fx::ticket_key().clone();
        let verifier = CheckpointVerifier::new(key.verifying_key());
        (key, verifier)
    })
}

/// The lines of `log` that are JSON objects, chained; and the hash after each.
fn rechain(log: &[u8]) -> (Vec<u8>, Vec<String>) {
    let (mut out, mut hashes) = (Vec::new(), Vec::new());
    for line in log.split(|&b| b == b'\n') {
        let Ok(Value::Object(mut record)) = parse_strict(line, WIDE) else { continue };
        record.insert("seq".into(), (hashes.len() as u64 + 1).into());
        record.insert("prev".into(), hashes.last().map_or(GENESIS, String::as_str).into());
        record.remove("hash");
        let Ok(hash) = record_hash(&record) else { continue };
        record.insert("hash".into(), hash.clone().into());
        out.extend(serde_json::to_vec(&record).expect("JSON"));
        out.push(b'\n');
        hashes.push(hash);
    }
    (out, hashes)
}

/// Each line `N` or `N HEAD` of `spec`, as a checkpoint signed with the test key; and whether
/// all of them are honest (counts rising, within the log, heads the chain's).
fn sign(spec: &[u8], hashes: &[String]) -> (Vec<u8>, bool) {
    let (key, _) = key();
    let (mut out, mut honest, mut last) = (Vec::new(), true, 0);
    for line in String::from_utf8_lossy(spec).lines() {
        let mut words = line.split(' ');
        let Some(Ok(count)) = words.next().map(str::parse::<u64>) else { continue };
        let chain_head = match count {
            0 => Some(GENESIS.to_owned()),
            n => hashes.get(n as usize - 1).cloned(),
        };
        let head = words.next().map(str::to_owned).or(chain_head.clone()).unwrap_or_else(|| GENESIS.to_owned());
        honest &= count >= last && chain_head.as_ref() == Some(&head);
        last = count;
        let mut object = Map::new();
        object.insert("count".into(), count.into());
        object.insert("head".into(), head.into());
        object.insert("time".into(), "2026-09-21T10:13:20.000Z".into());
        object.insert("key_id".into(), key_id(&key.verifying_key()).into());
        // A count past 2^53 has no canonical form: no signer writes it.
        let Ok(message) = canonical(&object) else { continue };
        let signature = key.sign(message.as_bytes());
        object.insert("signature".into(), STANDARD.encode(signature.to_bytes()).into());
        out.extend(serde_json::to_vec(&object).expect("JSON"));
        out.push(b'\n');
    }
    (out, honest)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (log, checkpoints) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (log, hashes) = if flags & 1 == 1 { rechain(log) } else { (log.to_vec(), Vec::new()) };
    let (checkpoints, honest) = if flags & 2 == 2 { sign(checkpoints, &hashes) } else { (checkpoints.to_vec(), false) };

    let result = verify(&log, &checkpoints, &key().1);
    match &result {
        Ok(summary) => {
            assert!(summary.covered <= summary.records, "{summary:?}");
            assert_eq!(summary.unterminated_tail, !log.is_empty() && !log.ends_with(b"\n"));
            let _ = summary.to_string();
        }
        Err(b) => {
            let _ = (b.to_string(), b.record(), b.checkpoint());
        }
    }
    if flags & 3 == 3 && honest {
        let summary = result.expect("a re-chained log with honest checkpoints verifies");
        assert_eq!(summary.records, hashes.len() as u64);
        assert_eq!(summary.head, hashes.last().map_or(GENESIS, String::as_str));
    }
});
