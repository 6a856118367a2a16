//! The body: method and tool names spelled otherwise, duplicate keys at depth, numbers past
//! exact representation, deep nesting, ids of every JSON type, notifications, and params of
//! the wrong shape.

use serde_json::{json, Value};

use super::{allowed, call, denied, Bench, Case, Expect};

const DENY: i64 = -32001;

fn refused(status: u16, code: i64, id: Value) -> Expect {
    Expect::Refused(status, code, id)
}

/// A call of `tool` (spelled as given) under `method`, with arguments valid for the tool it
/// spells, so that a refusal comes from the decision, not the tool's schema.
fn with_method(id: i64, method: &str, tool: &str) -> String {
    let arguments = if tool.to_lowercase().starts_with("delete") { r#"{"namespace":"p"}"# } else { r#"{"text":"x"}"# };
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{"name":"{tool}","arguments":{arguments}}}}}"#)
}

fn names() -> Vec<Case> {
    let mut cases = vec![
        // An escape is the same string once decoded: the call is the real one, decided as such.
        Case::post("method \\u0074ools/call, allowed tool", with_method(1, r"\u0074ools/call", "word_count"), Expect::Runs("word_count")),
        Case::post("method \\u0074ools/call, denied tool", with_method(2, r"\u0074ools/call", "delete_namespace"), refused(200, DENY, json!(2))),
        Case::post("tool delete\\u005fnamespace", with_method(3, "tools/call", r"delete\u005fnamespace"), refused(200, DENY, json!(3))),
        Case::post("tool word\\u005fcount", with_method(4, "tools/call", r"word\u005fcount"), Expect::Runs("word_count")),
    ];
    for (i, method) in ["Tools/call", "TOOLS/CALL", " tools/call", "tools/call ", r"tools/call\n", r"tools/call\u0000", "tools//call", "tools/call/"].iter().enumerate() {
        let id = 10 + i as i64;
        cases.push(Case::post(format!("method {method:?}"), with_method(id, method, "delete_namespace"), refused(200, DENY, json!(id))));
    }
    // Confusables: none of them is the tool the catalog names, so none runs.
    let confusables = [
        "w\u{043e}rd_count",    // Cyrillic o
        "word_c\u{043e}unt",    // Cyrillic o
        "\u{ff57}ord_count",    // fullwidth w
        "word_count\u{200b}",   // zero-width space
        "word\u{2010}count",    // hyphen for underscore
        "delete_namespac\u{0435}", // Cyrillic e
        "Delete_Namespace",
        "delete_namespace ",
    ];
    for (i, name) in confusables.iter().enumerate() {
        let id = 30 + i as i64;
        cases.push(Case::post(format!("confusable tool {}", readable(name)), with_method(id, "tools/call", name), refused(200, DENY, json!(id))));
    }
    cases
}

fn readable(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii() { c.to_string() } else { format!("\\u{:04x}", c as u32) }).collect()
}

fn duplicates() -> Vec<Case> {
    let dup = |name: &str, body: &str, id: Value| Case::post(format!("duplicate {name}"), body.to_owned(), refused(400, -32700, id));
    vec![
        dup("name, escaped n\\u0061me", r#"{"jsonrpc":"2.0","id":40,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"x"},"n\u0061me":"delete_namespace"}}"#, json!(40)),
        dup("method, escaped", r#"{"jsonrpc":"2.0","id":41,"method":"ping","m\u0065thod":"tools/call","params":{"name":"delete_namespace","arguments":{"namespace":"p"}}}"#, json!(41)),
        dup("params", r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"x"}},"params":{"name":"delete_namespace","arguments":{"namespace":"p"}}}"#, json!(42)),
        dup("arguments, escaped", r#"{"jsonrpc":"2.0","id":43,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"x"},"\u0061rguments":{"text":"y"}}}"#, json!(43)),
        dup("text at depth 3, escaped", r#"{"jsonrpc":"2.0","id":44,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"x","t\u0065xt":"y"}}}"#, json!(44)),
        dup("key at depth 6 in _meta", r#"{"jsonrpc":"2.0","id":45,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"x"},"_meta":{"a":{"b":{"c":1,"\u0063":2}}}}}"#, json!(45)),
        dup("jsonrpc", r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":46,"method":"ping"}"#, json!(46)),
    ]
}

fn numbers_and_ids() -> Vec<Case> {
    // Ids of every JSON type. Strings and integers are ids; the rest are not.
    let mut cases = vec![
        Case::post("id string", allowed(r#""s-1""#), Expect::Runs("word_count")),
        Case::post("id string with escapes", allowed(r#""\u0041\n\"""#), Expect::Runs("word_count")),
        Case::post("id 0", allowed("0"), Expect::Runs("word_count")),
        Case::post("id -1", denied("-1"), refused(200, DENY, json!(-1))),
    ];
    for (name, id) in [("null", "null"), ("true", "true"), ("object", r#"{"a":1}"#), ("array", "[1]"), ("fractional", "1.5")] {
        cases.push(Case::post(format!("id {name}, allowed call"), allowed(id), refused(400, -32600, Value::Null)));
        cases.push(Case::post(format!("id {name}, denied call"), denied(id), refused(400, -32600, Value::Null)));
    }
    // Past exact representation: echoed as sent, or refused, never rounded onto another id.
    cases.push(Case::post("id 2^53+1 (echoed exactly), denied call", denied("9007199254740993"), refused(200, DENY, json!(9_007_199_254_740_993u64))));
    cases.push(Case::post("id 1e400, denied call", denied("1e400"), refused(400, -32700, Value::Null)));
    for (name, id) in [("2^64", "18446744073709551616"), ("-0", "-0"), ("1.0", "1.0"), ("1e2", "1e2")] {
        cases.push(Case::post(format!("id {name}, denied call"), denied(id), refused(400, -32600, Value::Null)));
    }
    // Numbers inside the call.
    // 2^53+1 is refused before the schema (no exact hash for it); 1e400 is no number a parser
    // reads (the id before it is still recovered); -0 reaches the schema (text is a string).
    for (name, text, code) in [("2^53+1", "9007199254740993", -32602), ("1e400", "1e400", -32700), ("-0", "-0", -32602)] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":60,"method":"tools/call","params":{{"name":"word_count","arguments":{{"text":{text}}}}}}}"#);
        cases.push(Case::post(format!("number {name} as an argument"), body, refused(400, code, json!(60))));
    }
    cases
}

fn shapes() -> Vec<Case> {
    let body = |id: &str, method: &str, params: Option<&str>| match params {
        Some(p) => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{p}}}"#),
        None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#),
    };
    let mut cases = Vec::new();
    for (name, params) in [("missing", None), ("null", Some("null")), ("an array", Some(r#"["delete_namespace",{"namespace":"p"}]"#)), ("a string", Some(r#""delete_namespace""#))] {
        cases.push(Case::post(format!("tools/call params {name}"), body("70", "tools/call", params), refused(400, -32602, json!(70))));
    }
    cases.push(Case::post("tools/list params null", body("71", "tools/list", Some("null")), refused(400, -32602, json!(71))));
    cases.push(Case::post("ping params an array", body("72", "ping", Some("[]")), refused(400, -32602, json!(72))));
    cases.push(Case::post("tools/call arguments null", r#"{"jsonrpc":"2.0","id":73,"method":"tools/call","params":{"name":"word_count","arguments":null}}"#, refused(400, -32602, json!(73))));
    cases.push(Case::post("tools/call name a number", r#"{"jsonrpc":"2.0","id":74,"method":"tools/call","params":{"name":1,"arguments":{}}}"#, refused(400, -32602, json!(74))));
    // Notifications: no id, so no answer; a call sent as one must not run.
    let note = |name: &str, b: &str, e: Expect| Case::post(format!("notification {name}"), b.to_owned(), e);
    cases.push(note("tools/call (allowed tool)", r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"word_count","arguments":{"text":"x"}}}"#, refused(400, -32600, Value::Null)));
    cases.push(note("tools/call (denied tool)", r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_namespace","arguments":{"namespace":"p"}}}"#, refused(400, -32600, Value::Null)));
    cases.push(note("notifications/cancelled", r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":999}}"#, Expect::Answered(202)));
    cases.push(note("notifications/unknown", r#"{"jsonrpc":"2.0","method":"notifications/x"}"#, refused(403, DENY, Value::Null)));
    cases.push(Case::post("a response, not a request", r#"{"jsonrpc":"2.0","id":75,"result":{}}"#, refused(403, DENY, json!(75))));
    cases
}

fn sizes() -> Vec<Case> {
    // Deep enough to exhaust any recursive parser's stack (not just past the depth limit).
    let depth = 300_000;
    let deep_arrays = format!(r#"{{"jsonrpc":"2.0","id":80,"method":"tools/call","params":{{"name":"word_count","arguments":{{"text":{}1{}}}}}}}"#, "[".repeat(depth), "]".repeat(depth));
    let deep_objects = format!(r#"{{"jsonrpc":"2.0","id":81,"method":"tools/call","params":{{"name":"word_count","arguments":{{"text":{}1{}}}}}}}"#, r#"{"a":"#.repeat(depth / 4), "}".repeat(depth / 4));
    let unclosed = format!(r#"{{"jsonrpc":"2.0","id":82,"method":"tools/call","params":{}"#, "[".repeat(depth));
    let ten_mb = 10 * 1024 * 1024;
    let big_string = call("83", "word_count", &"a".repeat(ten_mb));
    let mut padded = allowed("84");
    padded.push_str(&" ".repeat(ten_mb));
    vec![
        Case::post("nested arrays, depth 300000", deep_arrays, refused(400, -32700, json!(80))),
        Case::post("nested objects, depth 75000", deep_objects, refused(400, -32700, json!(81))),
        Case::post("unclosed nesting, depth 300000", unclosed, refused(400, -32700, json!(82))),
        // Over HTTP/1.1 Envoy may refuse the oversized body itself (its own 413, before the
        // filter reads an id; seen in some runs, not others), which the filter restates as a
        // JSON-RPC error with id null.
        Case::post("10 MB string argument", big_string, refused(413, -32600, json!(83))).on_h1(Expect::RefusedIdOrNull(413, -32600, json!(83))),
        Case::post("allowed call + 10 MB of whitespace", padded, refused(413, -32600, json!(84))).on_h1(Expect::RefusedIdOrNull(413, -32600, json!(84))),
        // The stack still serves after all of that.
        Case::post("an allowed call after the above", allowed("85"), Expect::Runs("word_count")),
    ]
}

pub async fn run(b: &mut Bench) {
    for table in [names(), duplicates(), numbers_and_ids(), shapes(), sizes()] {
        b.run(&table).await;
    }
}
