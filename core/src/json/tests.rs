use super::*;

fn parse(s: &str) -> Result<Value, StrictJsonError> {
    parse_strict(s.as_bytes(), Limits::default())
}

#[test]
fn accepts_plain_json() {
    let v = parse(r#"{"a":[1,2,{"b":"c"}],"d":null}"#).unwrap();
    assert_eq!(v["a"][2]["b"], "c");
}

#[test]
fn rejects_duplicate_keys_at_any_depth() {
    assert_eq!(parse(r#"{"a":1,"a":2}"#), Err(StrictJsonError::DuplicateKey { key: "a".into() }));
    assert_eq!(
        parse(r#"{"x":[{"k":{"z":1,"z":1}}]}"#),
        Err(StrictJsonError::DuplicateKey { key: "z".into() })
    );
    // The same key in sibling objects is fine.
    assert!(parse(r#"[{"a":1},{"a":2}]"#).is_ok());
}

#[test]
fn escaped_duplicate_keys_are_duplicates() {
    // "\u0061" is "a": the keys are equal after unescaping.
    assert_eq!(parse(r#"{"a":1,"\u0061":2}"#), Err(StrictJsonError::DuplicateKey { key: "a".into() }));
}

#[test]
fn rejects_deep_nesting() {
    let limits = Limits { max_body_bytes: 1 << 20, max_depth: 3 };
    assert!(parse_strict(b"[[[1]]]", limits).is_ok());
    assert_eq!(parse_strict(b"[[[[1]]]]", limits), Err(StrictJsonError::TooDeep { limit: 3 }));
    assert_eq!(parse_strict(br#"{"a":{"b":{"c":{}}}}"#, limits), Err(StrictJsonError::TooDeep { limit: 3 }));
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert!(matches!(parse(&deep), Err(StrictJsonError::TooDeep { .. })));
}

#[test]
fn rejects_large_bodies_before_parsing() {
    let limits = Limits { max_body_bytes: 8, max_depth: 8 };
    assert_eq!(parse_strict(b"\"123456789\"", limits), Err(StrictJsonError::TooLarge { size: 11, limit: 8 }));
}

#[test]
fn rejects_invalid_utf8() {
    assert_eq!(parse_strict(b"{\"a\":\"\xff\"}", Limits::default()), Err(StrictJsonError::InvalidUtf8 { offset: 6 }));
}

#[test]
fn rejects_syntax_errors_and_trailing_data() {
    assert!(matches!(parse("{"), Err(StrictJsonError::Syntax { .. })));
    assert!(matches!(parse("{} {}"), Err(StrictJsonError::Syntax { .. })));
    assert!(matches!(parse("[1,]"), Err(StrictJsonError::Syntax { .. })));
    assert!(matches!(parse("NaN"), Err(StrictJsonError::Syntax { .. })));
}
