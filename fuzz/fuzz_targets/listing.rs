//! The rewriting of list answers (tools/list, prompts/list, resources/list,
//! resources/templates/list) and of server requests in answers: one JSON body, or an event
//! stream cut into chunks anywhere.
//!
//! Input: a flags byte (list method, sealing), a chunk-size byte, then the answer. Holds: no
//! panic; what comes out is strict JSON (one body, or each event's data) with only visible
//! entries in its list and every server request's id sealed for the caller; a body left
//! unchanged has no list and no server request; an event stream gives the same output however
//! it is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::authz::Decision;
use portcullis_core::json::{parse_strict, Limits};
use portcullis_core::listing::{trim_json, Rewrite, SseTrimmer, Visible};
use portcullis_core::relay::{RequestSealer, StreamSeal};
use portcullis_core::session::Owner;
use serde_json::{json, Value};

/// Small limits, so that the size and depth refusals are reached too.
const LIMITS: Limits = Limits { max_body_bytes: 16 * 1024, max_depth: 16 };
/// (method, list member, entry member).
const LISTS: [(&str, &str, &str); 4] = [
    ("tools/list", "tools", "name"),
    ("prompts/list", "prompts", "name"),
    ("resources/list", "resources", "uri"),
    ("resources/templates/list", "resourceTemplates", "uriTemplate"),
];
const NOW: u64 = 1_790_000_000;

fn visible_entry(list: usize, entry: &Value) -> bool {
    let field = entry.get(LISTS[list].2).and_then(Value::as_str);
    match list {
        0 | 1 => matches!(field, Some("word_count" | "a")),
        _ => field.is_some_and(|f| f.starts_with("file:///public/")),
    }
}

/// Checks one rewritten message (or array of them).
fn check(value: &Value, list: Option<usize>, seal: Option<&StreamSeal>) {
    let messages = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for message in messages {
        if let Some(list) = list {
            if let Some(entries) = message.get("result").and_then(|r| r.get(LISTS[list].1)).and_then(Value::as_array) {
                assert!(entries.iter().all(|e| visible_entry(list, e)), "an invisible entry passed: {message}");
            }
        }
        if let (Some(seal), Some(obj)) = (seal, message.as_object()) {
            if let (Some(method), Some(id)) = (obj.get("method").and_then(Value::as_str), obj.get("id")) {
                if !id.is_null() {
                    let sealed = id.as_str().expect("a sealed id is a string");
                    let answered = seal.sealer.open(&seal.owner, seal.session.as_deref(), sealed, NOW).expect("the sealed id opens");
                    assert_eq!(answered.method, method);
                }
            }
        }
    }
}

/// Whether a message has what the rewrite acts on.
fn acts_on(value: &Value, list: Option<usize>, sealing: bool) -> bool {
    let one = |m: &Value| {
        let listed = list.is_some_and(|l| m.get("result").and_then(|r| r.get(LISTS[l].1)).is_some_and(Value::is_array));
        let request = sealing && m.get("method").is_some_and(Value::is_string) && m.get("id").is_some_and(|id| !id.is_null());
        listed || request
    };
    match value {
        Value::Array(items) => items.iter().any(one),
        other => one(other),
    }
}

fn run_sse(rewrite: &Rewrite, chunks: &mut dyn Iterator<Item = &[u8]>) -> Option<Vec<u8>> {
    let mut trimmer = SseTrimmer::new(rewrite.clone(), LIMITS);
    trimmer.set_now(NOW);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(trimmer.push(chunk).ok()?);
    }
    out.extend(trimmer.finish().ok()?);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some(([flags, chunk], body)) = data.split_first_chunk::<2>().map(|(h, b)| (*h, b)) else { return };
    let list = (flags & 4 == 0).then_some(usize::from(flags & 3));
    let seal = (flags & 8 == 8).then(|| StreamSeal {
        sealer: RequestSealer::new([9; 32]),
        owner: Owner { workload: "spiffe://portcullis.local/ns/agents/sa/reader".into(), user: None },
        session: (flags & 16 == 16).then(|| "upstream-session-1".to_owned()),
        now: NOW,
    });
    let visible = list.and_then(|l| {
        let decision: Decision = serde_json::from_value(json!({
            "allow": true,
            "visible_tools": ["word_count", "a"],
            "visible_prompts": ["word_count", "a"],
            "visible_resources": ["file:///public/"],
        }))
        .expect("decision");
        Visible::for_method(LISTS[l].0, &decision)
    });
    let rewrite = Rewrite { visible, seal: seal.clone() };

    if flags & 32 == 0 {
        match trim_json(body, &rewrite, LIMITS) {
            Ok(Some(out)) => check(&parse_strict(&out, Limits { max_body_bytes: usize::MAX, ..LIMITS }).expect("rewritten JSON"), list, seal.as_ref()),
            Ok(None) => {
                let value = parse_strict(body, LIMITS).expect("an unchanged answer parsed");
                assert!(!acts_on(&value, list, seal.is_some()), "an answer to rewrite passed unchanged");
            }
            Err(_) => {}
        }
        return;
    }

    let whole = run_sse(&rewrite, &mut std::iter::once(body));
    let size = usize::from(chunk).max(1);
    let cut = run_sse(&rewrite, &mut body.chunks(size));
    if let (Some(whole), Some(cut)) = (&whole, &cut) {
        assert_eq!(whole, cut, "the output depends on where the stream was cut");
    }
    for out in whole.iter().chain(cut.iter()) {
        for data in event_data(out) {
            if let Ok(value) = serde_json::from_slice::<Value>(&data) {
                check(&value, list, seal.as_ref());
            }
        }
    }
});

/// The data of each event of a stream, as an EventSource client reads it (lines end in CR, LF
/// or CRLF; a blank line ends an event; `data` lines are joined with LF), the unterminated last
/// event included.
fn event_data(stream: &[u8]) -> Vec<Vec<u8>> {
    let (mut events, mut data, mut line, mut has_data) = (Vec::new(), Vec::new(), Vec::new(), false);
    let mut bytes = stream.iter().copied().peekable();
    let end_line = |line: &mut Vec<u8>, data: &mut Vec<u8>, has_data: &mut bool, events: &mut Vec<Vec<u8>>| {
        if line.is_empty() {
            if *has_data {
                events.push(std::mem::take(data));
            }
            data.clear();
            *has_data = false;
        } else if line.as_slice() == b"data" || line.starts_with(b"data:") {
            let value = line.get(5..).unwrap_or_default();
            if *has_data {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            *has_data = true;
        }
        line.clear();
    };
    while let Some(b) = bytes.next() {
        match b {
            b'\r' | b'\n' => {
                if b == b'\r' && bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                end_line(&mut line, &mut data, &mut has_data, &mut events);
            }
            other => line.push(other),
        }
    }
    if !line.is_empty() {
        end_line(&mut line, &mut data, &mut has_data, &mut events);
    }
    if has_data {
        events.push(data);
    }
    events
}
