//! Plan-hash canonicalization (RFC 8785) of any JSON value the strict parser accepts.
//!
//! Holds: canonicalization is idempotent (its output parses, strictly, and canonicalizes to
//! itself); it does not depend on key order or whitespace; the plan hash of an object is the
//! hash of the very text a tool is given (`canonical_arguments`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::json::{parse_strict, Limits};
use portcullis_core::plan::{canonical_arguments, canonical_plan, canonicalize, plan_hash};
use serde_json::Value;

/// Canonical text may be longer than its source (`1e5` is `100000`), never deeper.
const WIDE: Limits = Limits { max_body_bytes: usize::MAX, max_depth: 32 };

fuzz_target!(|data: &[u8]| {
    let Ok(value) = parse_strict(data, Limits::default()) else { return };
    let Ok(canonical) = canonicalize(&value) else { return };

    let again = parse_strict(canonical.as_bytes(), WIDE).expect("canonical text is strict JSON");
    assert_eq!(canonicalize(&again).as_deref(), Ok(canonical.as_str()), "canonicalization is idempotent");

    // Another spelling of the same value: serde_json's own order and layout.
    let pretty = serde_json::to_string_pretty(&value).expect("serializes");
    let respelled = parse_strict(pretty.as_bytes(), WIDE).expect("serde_json output is strict JSON");
    assert_eq!(canonicalize(&respelled).as_deref(), Ok(canonical.as_str()), "layout does not matter");

    if let (Value::Object(args), Value::Object(args_again)) = (&value, &again) {
        assert_eq!(canonical_arguments(Some(args)).as_deref(), Ok(canonical.as_str()), "the tool gets what is hashed");
        let plan = canonical_plan("word_count", Some(args)).expect("canonical plan");
        assert_eq!(plan, format!("{{\"arguments\":{canonical},\"tool\":\"word_count\"}}"));
        assert_eq!(plan_hash("word_count", Some(args)), plan_hash("word_count", Some(args_again)));
    }
});
