//! Property tests of the plan hash and the strict parser (proptest).
//!
//! What a tool executes with is the canonical text of its arguments (`canonical_arguments`:
//! the runner hands exactly that to the tool, on stdin and in its environment), and the plan
//! hash digests that text. So: any two spellings of one call (key order, whitespace, escapes,
//! `1` / `1.0` / `1e0`, `-0` / `0`) hash alike, and two calls hash alike only if the tool
//! gets the same text. Numbers that a JSON parser would round to another value
//! (9007199254740993, 9007199254740993.0, 1e19) are refused rather than hashed as a neighbour.

use portcullis_core::json::{parse_strict, Limits};
use portcullis_core::plan::{canonical_arguments, canonicalize, plan_hash, PlanError};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};

const MAX_SAFE: i64 = (1 << 53) - 1;

fn chars() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => Just('"'),
        1 => Just('\\'),
        1 => proptest::char::range('\u{e000}', '\u{ffff}'),
        1 => any::<char>(),
    ]
}

fn strings() -> impl Strategy<Value = String> {
    proptest::collection::vec(chars(), 0..6).prop_map(|c| c.into_iter().collect())
}

fn numbers() -> impl Strategy<Value = Number> {
    prop_oneof![
        (-MAX_SAFE..=MAX_SAFE).prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        prop::sample::select(vec![0.0, -0.0, 1.0, 0.1, 5e-324, 1e21, 1.5e300, 9007199254740991.0, 1e-7])
            .prop_filter_map("finite", Number::from_f64),
    ]
}

fn hashable_numbers() -> impl Strategy<Value = Number> {
    numbers().prop_filter("hashable", |n| canonicalize(&Value::Number(n.clone())).is_ok())
}

fn values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        numbers().prop_map(Value::Number),
        strings().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(strings(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arguments whose plan hash exists (no number past ±(2^53-1)).
fn arguments() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(strings(), values(), 0..5)
        .prop_map(|m| m.into_iter().collect::<Map<String, Value>>())
        .prop_filter("hashable", |m| canonical_arguments(Some(m)).is_ok())
}

/// A tiny deterministic generator for the choices of one spelling.
struct Choices(u64);

impl Choices {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn space(&mut self, out: &mut String) {
        for _ in 0..self.next(3) {
            out.push([' ', '\t', '\n', '\r'][self.next(4) as usize]);
        }
    }
}

/// `value` as JSON text spelt one of many ways: key order, whitespace, string escapes, and
/// number forms that denote the same double.
fn spell(value: &Value, c: &mut Choices, out: &mut String) {
    c.space(out);
    match value {
        Value::Null | Value::Bool(_) => out.push_str(&value.to_string()),
        Value::Number(n) => spell_number(n, c, out),
        Value::String(s) => spell_string(s, c, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                spell(item, c, out);
            }
            c.space(out);
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, c.next(i as u64 + 1) as usize);
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                c.space(out);
                spell_string(k, c, out);
                c.space(out);
                out.push(':');
                spell(v, c, out);
            }
            c.space(out);
            out.push('}');
        }
    }
    c.space(out);
}

fn spell_number(n: &Number, c: &mut Choices, out: &mut String) {
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => match c.next(3) {
            0 => out.push_str(&i.to_string()),
            1 => out.push_str(&format!("{i}.0")),
            _ => out.push_str(&format!("{i}e0")),
        },
        (None, Some(f)) => match c.next(3) {
            0 => out.push_str(&format!("{f:e}")),
            1 => out.push_str(&format!("{f:E}")),
            _ => out.push_str(&format!("{f:?}")),
        },
        (None, None) => out.push_str(&n.to_string()),
    }
}

fn spell_string(s: &str, c: &mut Choices, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        let must = ch == '"' || ch == '\\' || u32::from(ch) < 0x20;
        if must || c.next(4) == 0 {
            match (ch, c.next(2)) {
                ('"', 0) => out.push_str("\\\""),
                ('\\', 0) => out.push_str("\\\\"),
                ('\n', 0) => out.push_str("\\n"),
                ('/', 0) => out.push_str("\\/"),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in ch.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
        } else {
            out.push(ch);
        }
    }
    out.push('"');
}

fn parse(text: &str) -> Value {
    parse_strict(text.as_bytes(), Limits { max_body_bytes: usize::MAX, max_depth: 32 }).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn hash(arguments: &Map<String, Value>) -> String {
    plan_hash("tool", Some(arguments)).unwrap()
}

fn config() -> Config {
    Config { cases: 1024, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Key order, whitespace, escapes and number spellings do not change the plan hash.
    #[test]
    fn plan_hash_ignores_spelling(args in arguments(), seed in any::<u64>()) {
        let mut text = String::new();
        spell(&Value::Object(args.clone()), &mut Choices(seed), &mut text);
        let Value::Object(again) = parse(&text) else { panic!("not an object: {text}") };
        prop_assert_eq!(hash(&again), hash(&args), "{}", text);
        prop_assert_eq!(canonical_arguments(Some(&again)), canonical_arguments(Some(&args)));
    }

    /// Two calls hash alike exactly when the tool would be given the same arguments.
    #[test]
    fn plan_hash_differs_exactly_when_the_executed_arguments_differ(a in arguments(), b in arguments()) {
        let executed = |m: &Map<String, Value>| canonical_arguments(Some(m)).unwrap();
        prop_assert_eq!(hash(&a) == hash(&b), executed(&a) == executed(&b));
    }

    /// Changing one number of a call to any other double changes its hash.
    #[test]
    fn a_changed_number_changes_the_hash(args in arguments(), x in hashable_numbers(), y in hashable_numbers()) {
        let (Some(fx), Some(fy)) = (x.as_f64(), y.as_f64()) else { unreachable!() };
        let with = |n: &Number| {
            let mut m = args.clone();
            m.insert("n".into(), Value::Number(n.clone()));
            m
        };
        // -0 and 0 are one number to RFC 8785 (and to every JSON parser a tool uses).
        prop_assert_eq!(hash(&with(&x)) == hash(&with(&y)), fx == fy);
    }

    /// The strict parser reads back what serde_json writes, compact or pretty.
    #[test]
    fn parse_serialize_parse_is_identity(value in values()) {
        for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
            let once = parse(&text);
            prop_assert_eq!(&once, &value);
            prop_assert_eq!(parse(&serde_json::to_string(&once).unwrap()), once);
        }
    }

    /// Canonical text is strict JSON that canonicalizes to itself.
    #[test]
    fn canonicalization_is_idempotent(value in values()) {
        if let Ok(canonical) = canonicalize(&value) {
            prop_assert_eq!(canonicalize(&parse(&canonical)), Ok(canonical));
        }
    }
}

fn number_hash(text: &str) -> Result<String, PlanError> {
    let Value::Object(args) = parse(&format!("{{\"n\":{text}}}")) else { unreachable!() };
    plan_hash("tool", Some(&args))
}

/// Numbers that JSON parsers round alike. Past ±(2^53-1) an integer has no hash however it is
/// written (it would hash as its rounded neighbour); 1e400 is no JSON number the gateway reads;
/// -0 and 0, and 1.0 and 1, are the same argument to the tool (it gets `0` and `1`), so they
/// hash alike.
#[test]
fn numbers_that_parsers_round_alike() {
    for unsafe_integer in ["9007199254740992", "9007199254740993", "-9007199254740993", "9007199254740993.0", "9.007199254740993e15", "1e19", "18446744073709551615"] {
        assert!(matches!(number_hash(unsafe_integer), Err(PlanError::UnsafeInteger(_))), "{unsafe_integer} must be refused");
    }
    assert!(parse_strict(b"{\"n\":1e400}", Limits::default()).is_err(), "1e400 overflows a double");
    assert_ne!(number_hash("9007199254740991").unwrap(), number_hash("9007199254740990").unwrap());
    assert_ne!(number_hash("0.30000000000000004").unwrap(), number_hash("0.3").unwrap());
    assert_ne!(number_hash("5e-324").unwrap(), number_hash("0").unwrap());
    assert_eq!(number_hash("-0").unwrap(), number_hash("0").unwrap());
    assert_eq!(number_hash("-0.0").unwrap(), number_hash("0").unwrap());
    assert_eq!(number_hash("1.0").unwrap(), number_hash("1").unwrap());
    assert_eq!(number_hash("1e0").unwrap(), number_hash("1").unwrap());
    // From 2^64 on, integers are read as doubles by every parser the gateway, runner and
    // tool use, and the tool gets the double's canonical digits: hashed as that double.
    assert_eq!(number_hash("18446744073709551617").unwrap(), number_hash("18446744073709551616").unwrap());
    let Value::Object(args) = parse("{\"n\":18446744073709551617}") else { unreachable!() };
    assert_eq!(canonical_arguments(Some(&args)).unwrap(), "{\"n\":18446744073709552000}");
}

/// Regression (found by `fuzz/` target plan_hash): an integral double past 2^53 written as a
/// fraction was hashed, and its canonical digits then read back as an integer with no hash.
#[test]
fn fuzz_regression_integral_double_past_2_pow_53() {
    let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/plan_hash/integral-float-past-2p53")).unwrap();
    let value = parse_strict(&text, Limits::default()).unwrap();
    match canonicalize(&value) {
        Ok(canonical) => assert_eq!(canonicalize(&parse(&canonical)), Ok(canonical)),
        Err(e) => assert!(matches!(e, PlanError::UnsafeInteger(_)), "{e}"),
    }
}
