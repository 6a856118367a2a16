//! Plan-hash golden vectors (`tests/data/plan_hash.json`) through the production path:
//! strict parse → JSON-RPC validation → plan hash.

use portcullis_core::json::{parse_strict, Limits};
use portcullis_core::jsonrpc::{validate, Method};
use portcullis_core::plan::{canonical_plan, plan_hash};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/plan_hash.json")).unwrap()
}

fn call(request: &str) -> (String, Option<serde_json::Map<String, Value>>) {
    let v = parse_strict(request.as_bytes(), Limits::default()).unwrap();
    match validate(&v).unwrap().method {
        Method::ToolsCall { name, arguments } => (name, arguments),
        other => panic!("not a tools/call: {other:?}"),
    }
}

#[test]
fn golden_vectors() {
    let doc = vectors();
    let list = doc["vectors"].as_array().unwrap();
    assert!(list.len() >= 10);
    for v in list {
        let (name, args) = call(v["request"].as_str().unwrap());
        assert_eq!(canonical_plan(&name, args.as_ref()).unwrap(), v["canonical"].as_str().unwrap(), "{}", v["name"]);
        assert_eq!(plan_hash(&name, args.as_ref()).unwrap(), v["plan_hash"].as_str().unwrap(), "{}", v["name"]);
    }
}

#[test]
fn invalid_vectors_are_refused() {
    for v in vectors()["invalid"].as_array().unwrap() {
        let (name, args) = call(v["request"].as_str().unwrap());
        assert!(plan_hash(&name, args.as_ref()).is_err(), "{}", v["name"]);
    }
}
