//! The HTTP envelope: paths, content types and encodings, bodies on GET and DELETE, and a body
//! cut into pieces at every byte boundary or trickled slowly.

use std::time::Duration;

use serde_json::{json, Value};

use super::{allowed, denied, Bench, Case, Expect, Framing, Transport, BOTH};

fn paths() -> Vec<Case> {
    let mut cases = Vec::new();
    for path in ["/mcp/", "/MCP", "/mcp%2f", "/mcp%2F", "/%6dcp", "/./mcp", "//mcp", "/mcp/.", "/x/../mcp", "/mcp?x", "/mcp#", "/mcp#x", "/mcp;x", "/mcp%00"] {
        let mut c = Case::post(format!("path {path}"), denied("20"), Expect::Refused(404, -32600, json!(20)));
        c.path = path.into();
        cases.push(c);
    }
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
            let mut c = Case::post(format!("content-encoding {enc}, {name} call (gzip)"), gzip(body.as_bytes()), Expect::Refused(415, -32600, Value::Null));
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
            let mut c = Case::post(format!("{method} with a body ({name})"), body, Expect::Refused(400, -32600, json!(23)));
            c.method = method;
            cases.push(c);
        }
    }
    cases
}

#[tokio::test]
async fn adversarial_http_envelopes() {
    let mut b = Bench::start(&["reader"]).await;
    for table in [paths(), content_types(), encodings(), bodies_on_get_and_delete()] {
        b.run(&table).await;
    }
    b.finish().await;
}

/// A short call split in two at every byte boundary (two DATA frames; two chunks), then sent
/// one byte per frame or chunk, then trickled: decided on the whole body every time.
#[tokio::test]
async fn adversarial_split_and_slow_bodies() {
    let mut b = Bench::start(&["reader"]).await;
    let body = denied(r#""split""#).into_bytes();
    for t in BOTH {
        for k in 1..body.len() {
            let mut c = Case::post(format!("denied call split at byte {k}"), body.clone(), Expect::Refused(200, -32001, json!("split")));
            c.framing = Framing::Parts(vec![body[..k].to_vec(), body[k..].to_vec()], Duration::ZERO);
            let a = b.check(&c, t).await;
            assert!(a.message["error"]["data"]["rule_ids"].as_array().is_some_and(|r| !r.is_empty()), "{}", a.body);
        }
    }
    let bytes = |b: &[u8]| b.iter().map(|x| vec![*x]).collect::<Vec<_>>();
    let ok = allowed(r#""bytes""#).into_bytes();
    let mut one_by_one = Case::post("allowed call, one byte per piece", ok.clone(), Expect::Runs("word_count"));
    one_by_one.framing = Framing::Parts(bytes(&ok), Duration::ZERO);
    let mut denied_bytes = Case::post("denied call, one byte per piece", body.clone(), Expect::Refused(200, -32001, json!("split")));
    denied_bytes.framing = Framing::Parts(bytes(&body), Duration::ZERO);
    // Slow: about 3 s for the whole body.
    let mut slow = Case::post("allowed call trickled (8 bytes / 250 ms)", ok.clone(), Expect::Runs("word_count"));
    slow.framing = Framing::Parts(ok.chunks(8).map(<[u8]>::to_vec).collect(), Duration::from_millis(250));
    let mut slow_denied = Case::post("denied call trickled (8 bytes / 250 ms)", body.clone(), Expect::Refused(200, -32001, json!("split")));
    slow_denied.framing = Framing::Parts(body.chunks(8).map(<[u8]>::to_vec).collect(), Duration::from_millis(250));
    for c in [one_by_one, denied_bytes, slow, slow_denied] {
        for t in [Transport::H1, Transport::H2] {
            b.check(&c, t).await;
        }
    }
    b.finish().await;
}
