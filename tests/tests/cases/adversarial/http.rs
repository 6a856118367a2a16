//! The HTTP envelope: paths, content types and encodings, bodies on GET and DELETE, and a body
//! cut into pieces at every byte boundary or trickled slowly.

use std::time::Duration;

use serde_json::{json, Value};

use super::{allowed, denied, Bench, Case, Expect, Framing, BOTH};

fn paths() -> Vec<Case> {
    let at = |path: &str, expect: Expect| {
        let mut c = Case::post(format!("path {path}"), denied("20"), expect);
        c.path = path.into();
        c
    };
    // Refused on the request's head; the refusal waits for the body and answers its id.
    let not_found = || Expect::Refused(404, -32600, json!(20));
    // Envoy normalizes these to /mcp before routing: the call is decided as any other.
    let decided = || Expect::Refused(200, -32001, json!(20));
    // Envoy refuses an escaped slash or NUL in the path itself, before the filter sees the
    // request: its own 400, restated as a JSON-RPC error by the gateway's local_reply_config
    // (no body was read, so id null).
    let envoy = || Expect::Refused(400, -32600, Value::Null);
    let mut cases: Vec<Case> = ["/mcp/", "/MCP", "/mcp/.", "/mcp?x", "/mcp;x"].iter().map(|p| at(p, not_found())).collect();
    cases.extend(["/%6dcp", "/./mcp", "//mcp", "/x/../mcp"].iter().map(|p| at(p, decided())));
    cases.extend(["/mcp%2f", "/mcp%2F", "/mcp%00"].iter().map(|p| at(p, envoy())));
    // A fragment: HTTP/1.1 cannot carry one (Envoy's own 400); HTTP/2's :path drops it.
    cases.extend(["/mcp#", "/mcp#x"].iter().map(|p| at(p, decided()).on_h1(envoy())));
    cases
}

fn content_types() -> Vec<Case> {
    let ct = |name: &str, values: &[&str], expect: Expect| {
        let mut c = Case::post(format!("content-type {name}"), denied("21"), expect).without_header("content-type");
        for v in values {
            c = c.header("content-type", v);
        }
        c
    };
    // Refused on the request's head; the refusal waits for the body and answers its id.
    let refused = || Expect::Refused(415, -32600, json!(21));
    vec![
        ct("missing", &[], refused()),
        ct("text/plain", &["text/plain"], refused()),
        ct("application/jsonx", &["application/jsonx"], refused()),
        ct("application/x-www-form-urlencoded", &["application/x-www-form-urlencoded"], refused()),
        ct("repeated json, json", &["application/json", "application/json"], refused()),
        ct("repeated json, text/plain", &["application/json", "text/plain"], refused()),
        ct("list json, text/plain", &["application/json, text/plain"], refused()),
        // Allowed spellings of JSON reach the decision (and the denial).
        ct("APPLICATION/JSON", &["APPLICATION/JSON"], Expect::Refused(200, -32001, json!(21))),
        ct("json; charset=utf-8", &["application/json; charset=utf-8"], Expect::Refused(200, -32001, json!(21))),
    ]
}

/// `data` in a gzip member of one stored (uncompressed) deflate block.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    let len = data.len() as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn encodings() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, body) in [("allowed", allowed("22")), ("denied", denied("22"))] {
        for enc in ["gzip", "deflate", "br", "identity, gzip"] {
            let mut c = Case::post(format!("content-encoding {enc}, {name} call (gzip)"), gzip(body.as_bytes()), Expect::Refused(400, -32700, Value::Null));
            c = c.header("content-encoding", enc);
            cases.push(c);
        }
    }
    cases
}

fn bodies_on_get_and_delete() -> Vec<Case> {
    let mut cases = Vec::new();
    for method in ["GET", "DELETE"] {
        for (name, body) in [("allowed call", allowed("23")), ("denied call", denied("23"))] {
            // GET and DELETE carry no body: refused once it has come, with the id it names.
            let mut c = Case::post(format!("{method} with a body ({name})"), body, Expect::Refused(400, -32600, json!(23)));
            c.method = method;
            cases.push(c);
        }
    }
    cases
}

pub async fn run(b: &mut Bench) {
    for table in [paths(), content_types(), encodings(), bodies_on_get_and_delete()] {
        b.run(&table).await;
    }
    split_and_slow(b).await;
}

/// A short call cut at every byte boundary (one byte per DATA frame over HTTP/2, one byte per
/// chunk of a chunked HTTP/1.1 body, no pause between them), then trickled for a few seconds:
/// decided on the whole body every time.
async fn split_and_slow(b: &mut Bench) {
    let bytes = |b: &[u8]| b.iter().map(|x| vec![*x]).collect::<Vec<_>>();
    let ok = allowed(r#""bytes""#).into_bytes();
    let no = denied(r#""split""#).into_bytes();
    let framed = |name: &str, body: &[u8], parts: Vec<Vec<u8>>, pause: u64, expect: Expect| {
        let mut c = Case::post(name, body.to_vec(), expect);
        c.framing = Framing::Parts(parts, Duration::from_millis(pause));
        c
    };
    let cases = [
        framed("allowed call, one byte per piece", &ok, bytes(&ok), 0, Expect::Runs("word_count")),
        framed("denied call, one byte per piece", &no, bytes(&no), 0, Expect::Refused(200, -32001, json!("split"))),
        // Slow: the body in 16-byte pieces 150 ms apart (about a second each).
        framed("allowed call trickled (16 bytes / 150 ms)", &ok, ok.chunks(16).map(<[u8]>::to_vec).collect(), 150, Expect::Runs("word_count")),
        framed("denied call trickled (16 bytes / 150 ms)", &no, no.chunks(16).map(<[u8]>::to_vec).collect(), 150, Expect::Refused(200, -32001, json!("split"))),
    ];
    for c in &cases {
        for t in BOTH {
            let a = b.check(c, t).await;
            if c.name.starts_with("denied") && std::env::var_os("ADVERSARIAL_OBSERVE").is_none() {
                // Denied by the policy's rule on the whole call, not refused as a fragment.
                assert!(a.message["error"]["data"]["rule_ids"].as_array().is_some_and(|r| !r.is_empty()), "{}", a.body);
            }
        }
    }
}
