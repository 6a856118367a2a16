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
    assert_eq!(validate(&init).unwrap().method, Method::Initialize { protocol_version: "2025-06-18".into() });
    assert_eq!(validate(&init).unwrap().protocol_version.as_deref(), Some("2025-06-18"));
    assert_eq!(validate(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap().method, Method::Initialized);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap().method, Method::Ping);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"x"}})).unwrap().method, Method::ToolsList);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"resources/list"})).unwrap().method, Method::ResourcesList);
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"server/discover"})).unwrap().method, Method::Discover);
    let read = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}});
    assert_eq!(validate(&read).unwrap().method, Method::Resource { method: "resources/read", uri: "file:///a".into() });
    let cancel = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3,"reason":"timeout"}});
    assert_eq!(validate(&cancel).unwrap().method, Method::Notification("notifications/cancelled"));
    assert_eq!(validate(&json!({"jsonrpc":"2.0","id":1,"method":"tasks/get"})).unwrap().method, Method::Other("tasks/get".into()));
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
        (json!({"jsonrpc":"2.0","id":1,"result":{},"method":"x"}), invalid("unexpected member \"method\" in a response")),
        (json!({"jsonrpc":"2.0","result":{}}), invalid("a response must have the \"id\" of the request it answers")),
        (json!({"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}), invalid("a response has either \"result\" or \"error\", not both")),
        (json!({"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}), invalid("a response's \"error\" needs an integer \"code\" and a string \"message\"")),
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

#[test]
fn responses_and_the_2026_meta() {
    let r = validate(&json!({"jsonrpc":"2.0","id":"pcr1.x","result":{"action":"accept"}})).unwrap();
    assert_eq!((r.id, r.method), (Some(Id::String("pcr1.x".into())), Method::Response { is_error: false }));
    let meta = |v: Value| json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion": v}}});
    assert_eq!(validate(&meta(json!("2026-07-28"))).unwrap().protocol_version.as_deref(), Some("2026-07-28"));
    assert!(matches!(validate(&meta(json!("2099-01-01"))), Err(RpcError::InvalidParams(_))));
    assert!(matches!(validate(&meta(json!(1))), Err(RpcError::InvalidParams(_))));
    let retry = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","inputResponses":{},"requestState":"s"}});
    assert!(validate(&retry).is_ok());
    let level = json!({"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}});
    assert!(matches!(validate(&level), Err(RpcError::InvalidParams(_))));
}
