//! A request body through the whole decision (strict parse, JSON-RPC and MCP validation,
//! headers, identity, user token, session, plan hash, argument schema, Rego, ticket), with the
//! header values, caller and user chosen by the input.
//!
//! Input: 8 selector bytes, then the body. Holds: no panic; an allowed tools/call carries a
//! ticket that verifies and binds the caller, the tool and the plan hash of the body's own
//! arguments; nothing else carries a ticket; a refusal is a JSON-RPC error that keeps the id of
//! a valid request.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use portcullis_core::gateway::{McpHeaders, RequestContext};
use portcullis_core::json::{parse_strict, Limits};
use portcullis_core::jsonrpc::{self, Method};
use portcullis_core::session::Owner;
use portcullis_core::ticket::{check_binding, Verifier};
use portcullis_fuzz as fx;
use serde_json::Value;
use std::sync::OnceLock;

const PEERS: [&str; 6] = [
    "spiffe://portcullis.local/ns/agents/sa/reader",
    "spiffe://portcullis.local/ns/agents/sa/operator",
    "spiffe://portcullis.local/ns/agents/sa/intruder",
    "spiffe://portcullis.local/ns/agents/sa/console",
    "spiffe://portcullis.local/ns/ci/sa/build",
    "spiffe://elsewhere.example/ns/agents/sa/operator",
];
const VERSIONS: [&str; 4] = ["2025-06-18", "2025-11-25", "2026-07-28", "2024-11-05"];

struct Fixture {
    verifier: Verifier,
    /// (Authorization value, the user it names).
    users: Vec<(String, Option<(String, String)>)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let user = |sub: &str, groups: &[&str]| (format!("Bearer {}", fx::user_token(sub, groups)), Some((fx::USER_ISSUER.to_owned(), sub.to_owned())));
        let expired = fx::sign_jws(
            fx::user_key(),
            br#"{"alg":"EdDSA","kid":"ed-a"}"#,
            format!(r#"{{"iss":"{}","aud":"{}","sub":"old","exp":{}}}"#, fx::USER_ISSUER, fx::USER_AUDIENCE, fx::NOW - 3600).as_bytes(),
        );
        Fixture {
            verifier: Verifier::from_pem(fx::ticket_public_pem().as_bytes(), fx::ISSUER, fx::TICKET_LEEWAY).expect("verifier"),
            users: vec![
                user("alice", &["sre"]),
                user("bob", &["approvers"]),
                user("carol", &["dev"]),
                (format!("Bearer {expired}"), None),
                ("Bearer not.a.jwt".to_owned(), None),
            ],
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((selectors, body)) = data.split_first_chunk::<8>() else { return };
    let [peer, user, version, method, name, session, hour, flags] = *selectors;
    let gateway = fx::gateway();
    let f = fixture();
    // A fuzzer-chosen string for the "anything" choices: the body's first bytes.
    let any = String::from_utf8_lossy(body.get(..64).unwrap_or(body)).into_owned();

    let peer = match usize::from(peer) % (PEERS.len() + 2) {
        i if i < PEERS.len() => PEERS.get(i).map(|p| (*p).to_owned()),
        i if i == PEERS.len() => Some(any.clone()),
        _ => None,
    };
    let (authorization, user) = match usize::from(user) % (f.users.len() + 2) {
        i if i < f.users.len() => f.users.get(i).map(|(a, u)| (Some(a.clone()), u.clone())).unwrap_or_default(),
        i if i == f.users.len() => (Some(any.clone()), None),
        _ => (None, None),
    };

    // What the body says, when it is a valid message, for headers that restate it.
    let strict = parse_strict(body, Limits::default()).ok();
    let message = strict.as_ref().and_then(|v| jsonrpc::validate(v).ok());
    let body_method = message.as_ref().map(|m| m.method.name().to_owned()).unwrap_or_default();
    let body_name = message.as_ref().and_then(|m| m.method.header_name().map(str::to_owned)).unwrap_or_default();

    let version: Vec<String> = match version % 8 {
        v @ 0..=3 => vec![VERSIONS.get(usize::from(v)).map(|s| (*s).to_owned()).unwrap_or_default()],
        4 => vec![VERSIONS[2].to_owned(), VERSIONS[2].to_owned()],
        5 => vec![any.clone()],
        _ => vec![],
    };
    let method: Vec<String> = match method % 6 {
        0 | 1 => vec![body_method],
        2 => vec!["tools/call".to_owned()],
        3 => vec![any.clone()],
        4 => vec![body_method.clone(), body_method],
        _ => vec![],
    };
    let name: Vec<String> = match name % 6 {
        0 | 1 => vec![body_name],
        2 => vec![format!("=?base64?{}?=", STANDARD.encode(&body_name))],
        3 => vec![any.clone()],
        _ => vec![],
    };
    let params: Vec<String> = if flags & 1 == 1 { vec!["mcp-param-region".to_owned()] } else { vec![] };
    let now = fx::NOW + u64::from(hour) * 3600;

    // A session issued to this caller, another caller's, or a made-up one.
    let owner = peer.as_ref().map(|p| Owner { workload: p.clone(), user: user.clone() });
    let session = match (session % 4, &owner) {
        (0, Some(owner)) => gateway.seal_session(owner, "upstream-session-1").ok(),
        (1, _) => gateway.seal_session(&Owner { workload: PEERS[0].to_owned(), user: None }, "upstream-session-1").ok(),
        (2, _) => Some(any.clone()),
        _ => None,
    };

    // A client response whose id is a server request's sealed for this caller (bit 1).
    let mut body = body.to_vec();
    if flags & 2 == 2 {
        if let (Some(Value::Object(mut obj)), Some(owner)) = (strict.clone(), &owner) {
            let inner = session.as_deref().and_then(|s| s.rsplit_once('.')).map(|(inner, _)| inner.to_owned());
            if let (Some(seal), Some(id)) = (gateway.stream_seal(owner, inner.as_deref(), now), obj.get("id").cloned()) {
                let mut request = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "sampling/createMessage"});
                if seal.seal_message(&mut request).unwrap_or(false) {
                    obj.insert("id".into(), request["id"].clone());
                    body = serde_json::to_vec(&obj).expect("JSON");
                }
            }
        }
    }

    let headers = McpHeaders { protocol_version: &version, method: &method, name: &name, params: &params };
    let ctx = RequestContext {
        peer_uri_san: peer.as_deref(),
        now_unix: now,
        entropy: *data.first_chunk::<16>().unwrap_or(&[7; 16]),
        authorization: authorization.as_deref(),
        session_id: session.as_deref(),
        headers,
    };
    let decided = gateway.decide_recorded(&body, ctx);
    let record = decided.record.to_json();
    serde_json::from_slice::<Value>(&record).expect("the access-log record is JSON");

    // The body as the gateway read it (strict parsing succeeded whenever it got past parsing).
    let read = parse_strict(&body, Limits::default()).ok();
    let message = read.as_ref().and_then(|v| jsonrpc::validate(v).ok());
    match decided.verdict {
        Ok(allowed) => {
            let message = message.expect("an allowed request is a valid message");
            assert_eq!(allowed.id, message.id);
            assert_eq!(allowed.method, message.method.name());
            match &message.method {
                Method::ToolsCall { name, arguments } => {
                    let hash = portcullis_core::plan::plan_hash(name, arguments.as_ref()).expect("an allowed call has a plan hash");
                    assert_eq!(allowed.plan_hash.as_deref(), Some(hash.as_str()));
                    let ticket = allowed.ticket.as_deref().expect("an allowed tools/call carries a ticket");
                    let claims = f.verifier.verify(ticket).expect("the ticket verifies");
                    check_binding(&claims, name, &hash).expect("the ticket binds the tool and the plan hash");
                    assert_eq!(Some(&claims.sub), peer.as_ref(), "the ticket names the caller");
                    assert_eq!(claims.user, user.as_ref().map(|(_, sub)| sub.clone()));
                    assert_eq!(claims.iat, now);
                }
                _ => {
                    assert!(allowed.ticket.is_none() && allowed.plan_hash.is_none(), "only tools/call gets a ticket");
                    assert!(allowed.forward.caller.is_some(), "every other request carries a caller assertion");
                }
            }
        }
        Err(rejection) => {
            let reply: Value = serde_json::from_slice(&rejection.body()).expect("a rejection body is JSON");
            assert_eq!(reply["jsonrpc"], "2.0");
            assert!(reply["error"]["code"].as_i64().is_some_and(|c| c < 0), "{reply}");
            assert!(reply["error"]["message"].is_string(), "{reply}");
            assert!(matches!(rejection.status, 200 | 400..=599), "status {}", rejection.status);
            if let Some(message) = message {
                assert_eq!(rejection.id, message.id, "a refused message keeps its id: {reply}");
            }
        }
    }
});
