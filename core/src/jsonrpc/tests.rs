use serde_json::json;

use super::*;

#[test]
fn tools_call_is_parsed() {
    let m = validate(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"a":1}}})).unwrap();
    assert_eq!(m.id, Some(Id::Number(7)));
    assert!(matches!(m.method, Method::ToolsCall { ref name, .. } if name == "t"));
}

#[test]
fn known_methods() {
    let init = json!({"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}});
    assert_eq!(validate(&init).unwrap().method, Method::Initialize);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap().method, Method::Initialized);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap().method, Method::Ping);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"x"}})).unwrap().method, Method::ToolsList);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"resources/list"})).unwrap().method, Method::Other("resources/list".into()));
}

#[test]
fn envelope_errors() {
    let cases = [
        (json!([]), RpcError::Batch),
        (json!("x"), invalid("the message must be a JSON object")),
        (json!({"id":1,"method":"ping"}), invalid("missing \"jsonrpc\": \"2.0\"")),
        (json!({"jsonrpc":"1.0","id":1,"method":"ping"}), invalid("\"jsonrpc\" must be exactly \"2.0\"")),
        (json!({"jsonrpc":"2.0","id":null,"method":"ping"}), invalid("\"id\" must not be null")),
        (json!({"jsonrpc":"2.0","id":1.5,"method":"ping"}), invalid("\"id\" must be a string or an integer")),
        (json!({"jsonrpc":"2.0","id":[1],"method":"ping"}), invalid("\"id\" must be a string or an integer")),
        (json!({"jsonrpc":"2.0","id":1}), invalid("missing \"method\"")),
        (json!({"jsonrpc":"2.0","id":1,"method":""}), invalid("\"method\" must be a non-empty string")),
        (json!({"jsonrpc":"2.0","id":1,"method":"ping","extra":1}), invalid("unexpected member \"extra\"")),
        (json!({"jsonrpc":"2.0","id":1,"result":{}}), invalid("responses to server requests are not accepted by this gateway")),
        (json!({"jsonrpc":"2.0","method":"ping"}), invalid("a request must have an \"id\"")),
        (json!({"jsonrpc":"2.0","id":1,"method":"notifications/initialized"}), invalid("a notification must not have an \"id\"")),
    ];
    for (msg, want) in cases {
        assert_eq!(validate(&msg), Err(want), "{msg}");
    }
}

#[test]
fn params_errors() {
    let cases = [
        json!({"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call"}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":1}}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[]}}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","smuggled":{}}}),
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"x"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":3}}),
    ];
    for msg in cases {
        assert!(matches!(validate(&msg), Err(RpcError::InvalidParams(_))), "{msg}");
    }
}

#[test]
fn recovers_ids_for_error_replies() {
    assert_eq!(recover_id(&json!({"id":"x","jsonrpc":"1"})), Some(Id::String("x".into())));
    assert_eq!(recover_id(&json!({"id":null})), None);
    assert_eq!(recover_id(&json!([1])), None);
}

#[test]
fn meta_must_be_an_object_with_a_valid_progress_token() {
    let with_meta = |meta: serde_json::Value| json!({"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":meta}});
    assert!(validate(&with_meta(json!({"progressToken": "p"}))).is_ok());
    assert!(validate(&with_meta(json!({"progressToken": 7}))).is_ok());
    assert_eq!(validate(&with_meta(json!("x"))), Err(bad_params("\"_meta\" must be an object")));
    assert_eq!(validate(&with_meta(json!([]))), Err(bad_params("\"_meta\" must be an object")));
    assert!(validate(&with_meta(json!({"progressToken": 1.5}))).is_err());
    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t","_meta":5}});
    assert_eq!(validate(&call), Err(bad_params("\"_meta\" must be an object")));
}
