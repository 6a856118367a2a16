use serde_json::json;

use super::*;

fn schema(v: Value) -> Schema {
    Schema::compile(v.as_object().unwrap()).unwrap()
}

fn compile_err(v: Value) -> CompileError {
    Schema::compile(v.as_object().unwrap()).unwrap_err()
}

fn fails(s: &Schema, v: Value) -> (String, String) {
    let e = s.validate(&v).unwrap_err();
    (e.path, e.reason)
}

fn apply_config() -> Schema {
    schema(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$"},
            "content": {"type": "string", "maxLength": 5},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3, "uniqueItems": true},
            "mode": {"enum": ["fast", "safe"]},
            "version": {"const": 2},
            "a/b~c": {"type": "boolean"}
        },
        "required": ["name"],
        "additionalProperties": false,
        "description": "annotations are accepted"
    }))
}

#[test]
fn valid_arguments_pass() {
    let s = apply_config();
    s.validate(&json!({"name": "app", "content": "héllo", "replicas": 3.0, "tags": ["a", "b"], "mode": "safe", "version": 2.0})).unwrap();
}

#[test]
fn errors_name_the_json_path() {
    let s = apply_config();
    let cases = [
        (json!({"name": 7}), "/name", "expected string, got number"),
        (json!({"name": "Bad Name"}), "/name", "does not match pattern ^[a-z0-9-]{1,32}$"),
        (json!({}), "/name", "required property is missing"),
        (json!({"name": "a", "extra": 1}), "/extra", "property is not allowed by the schema"),
        (json!({"name": "a", "content": "ünïcödé"}), "/content", "must be at most 5 characters, got 7"),
        (json!({"name": "a", "replicas": 1.5}), "/replicas", "expected integer, got number"),
        (json!({"name": "a", "replicas": 11}), "/replicas", "must be at most 10, got 11"),
        (json!({"name": "a", "replicas": 0}), "/replicas", "must be at least 1, got 0"),
        (json!({"name": "a", "tags": ["x", "y", ""]}), "/tags/2", "must be at least 1 characters, got 0"),
        (json!({"name": "a", "tags": ["x", "x"]}), "/tags/1", "duplicates an earlier item (uniqueItems)"),
        (json!({"name": "a", "tags": ["a", "b", "c", "d"]}), "/tags", "must have at most 3 items, got 4"),
        (json!({"name": "a", "mode": "yolo"}), "/mode", "must be one of \"fast\", \"safe\""),
        (json!({"name": "a", "version": 3}), "/version", "must be 2"),
        (json!({"name": "a", "a/b~c": "no"}), "/a~1b~0c", "expected boolean, got string"),
        (json!([1]), "", "expected object, got array"),
    ];
    for (value, path, reason) in cases {
        assert_eq!(fails(&s, value.clone()), (path.to_owned(), reason.to_owned()), "{value}");
    }
    let e = s.validate(&json!([])).unwrap_err();
    assert_eq!(e.to_string(), "/: expected object, got array");
}

#[test]
fn additional_properties_as_schema_and_default_open() {
    let s = schema(json!({"type": "object", "additionalProperties": {"type": "integer"}}));
    s.validate(&json!({"a": 1, "b": 2})).unwrap();
    assert_eq!(fails(&s, json!({"a": "x"})).0, "/a");
    let open = schema(json!({"type": "object", "properties": {"a": {"type": "string"}}}));
    open.validate(&json!({"a": "x", "anything": [1, {}]})).unwrap();
}

#[test]
fn numbers_types_and_exclusive_bounds() {
    let s = schema(json!({"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1}));
    s.validate(&json!(0.5)).unwrap();
    s.validate(&Value::Null).unwrap();
    assert_eq!(fails(&s, json!(0)).1, "must be greater than 0, got 0");
    assert_eq!(fails(&s, json!(1)).1, "must be less than 1, got 1");
    assert_eq!(fails(&s, json!("0.5")).1, "expected number or null, got string");
    let nested = schema(json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "array", "items": {"type": "integer"}}}}}}));
    assert_eq!(fails(&nested, json!({"a": {"b": [1, 2, "3"]}})).0, "/a/b/2");
}

#[test]
fn unsupported_or_malformed_keywords_refuse_to_compile() {
    let e = compile_err(json!({"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}}));
    assert_eq!((e.keyword.as_str(), e.at.as_str()), ("format", "/properties/when"));
    assert!(e.to_string().contains("not supported"), "{e}");
    for (schema, keyword) in [
        (json!({"oneOf": []}), "oneOf"),
        (json!({"$ref": "#/x"}), "$ref"),
        (json!({"items": [{"type": "string"}]}), "items"),
        (json!({"type": "strng"}), "type"),
        (json!({"pattern": "("}), "pattern"),
        (json!({"minLength": -1}), "minLength"),
        (json!({"maximum": "10"}), "maximum"),
        (json!({"enum": []}), "enum"),
        (json!({"required": "name"}), "required"),
        (json!({"additionalProperties": {"if": {}}}), "if"),
    ] {
        assert_eq!(compile_err(schema.clone()).keyword, keyword, "{schema}");
    }
}
