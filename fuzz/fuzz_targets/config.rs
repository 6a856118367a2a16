//! Plugin configuration parsing (`Gateway::from_config_json`) and catalog parsing
//! (`Catalog::from_json`, `Catalog::from_value`).
//!
//! Input: a mode byte, then: 0, a whole plugin configuration; 1, a catalog as JSON text; 2, a
//! JSON object whose members replace the sections of the repository's own configuration
//! (policy, catalog, ticket, limits, rate_limits, users, denial_status); 3, a JSON value whose
//! members replace the example catalog's (`tools`: one tool each). Holds: no panic; what is
//! accepted works: a gateway decides a request, a catalog answers its list and policy data and
//! validates arguments against every schema.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_core::catalog::Catalog;
use portcullis_core::gateway::{Gateway, RequestContext};
use portcullis_fuzz as fx;
use serde_json::{Map, Value};

fn base() -> &'static (Map<String, Value>, Map<String, Value>) {
    static B: OnceLock<(Map<String, Value>, Map<String, Value>)> = OnceLock::new();
    B.get_or_init(|| {
        let Value::Object(config) = fx::plugin_config() else { unreachable!() };
        let Value::Object(catalog) = fx::catalog_value() else { unreachable!() };
        (config, catalog)
    })
}

fn use_gateway(gateway: &Gateway) {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"word_count","arguments":{"text":"a b"}}}"#;
    let ctx = RequestContext {
        peer_uri_san: Some("spiffe://portcullis.local/ns/agents/sa/reader"),
        now_unix: fx::NOW,
        entropy: [1; 16],
        authorization: None,
        session_id: None,
        headers: Default::default(),
    };
    let _ = gateway.decide(body, ctx);
    use_catalog(gateway.catalog());
}

fn use_catalog(catalog: &Catalog) {
    let _ = catalog.tools_list_result();
    let _ = catalog.policy_data();
    let probes: [Value; 3] = [serde_json::json!({}), serde_json::json!({"text": "x", "n": 1}), serde_json::json!({"a": [1, {"b": null}]})];
    for tool in catalog.tools() {
        if let Some(schema) = catalog.schema(&tool.name) {
            for probe in &probes {
                if let Value::Object(args) = probe {
                    let _ = schema.validate_object(args);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            if let Ok(gateway) = Gateway::from_config_json(rest) {
                use_gateway(&gateway);
            }
        }
        1 => {
            if let Ok(catalog) = Catalog::from_json(&String::from_utf8_lossy(rest)) {
                use_catalog(&catalog);
            }
        }
        2 => {
            let Ok(Value::Object(sections)) = serde_json::from_slice::<Value>(rest) else { return };
            let mut config = base().0.clone();
            config.extend(sections);
            let bytes = serde_json::to_vec(&config).expect("JSON");
            if let Ok(gateway) = Gateway::from_config_json(&bytes) {
                use_gateway(&gateway);
            }
        }
        _ => {
            let Ok(Value::Object(members)) = serde_json::from_slice::<Value>(rest) else { return };
            let mut catalog = base().1.clone();
            catalog.extend(members);
            if let Ok(catalog) = Catalog::from_value(Value::Object(catalog)) {
                use_catalog(&catalog);
            }
        }
    }
});
