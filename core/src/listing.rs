//! List trimming: a caller sees exactly the tools, prompts and resources policy lets it use;
//! and server requests in a response stream get sealed ids ([`crate::relay`]).
//!
//! The filter rewrites the upstream's answer to an allowed tools/list (prompts/list,
//! resources/list, resources/templates/list), keeping only the entries the decision's
//! `visible_tools` (`visible_prompts`, `visible_resources`) allow. Answers come as one JSON
//! body or as a Server-Sent Events stream that may arrive split anywhere across body chunks
//! ([`SseTrimmer`]). Anything the trimmer cannot read is refused rather than passed on: an
//! unfiltered list would show a caller what it may not use.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::authz::Decision;
use crate::json::{parse_strict, Limits};
use crate::relay::StreamSeal;

/// Which entries of which list a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    /// The member of `result` that holds the list, and the member of an entry that is matched.
    list: &'static str,
    field: &'static str,
    rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// Entries whose field is one of these names (`"*"` among them: all).
    Names(BTreeSet<String>),
    /// Entries whose field starts with one of these prefixes (`""` among them: all).
    Prefixes(Vec<String>),
}

impl Visible {
    /// The tool names a caller may see.
    pub fn tools(names: impl IntoIterator<Item = String>) -> Self {
        Self { list: "tools", field: "name", rule: Rule::Names(names.into_iter().collect()) }
    }

    /// What an allowed list request may show, from its decision; `None` for other methods. A
    /// decision without the matching `visible_*` member shows nothing: fail closed.
    pub fn for_method(method: &str, decision: &Decision) -> Option<Self> {
        let names = |v: &Option<Vec<String>>| Rule::Names(v.iter().flatten().cloned().collect());
        let prefixes = || Rule::Prefixes(decision.visible_resources.clone().unwrap_or_default());
        let (list, field, rule) = match method {
            "tools/list" => ("tools", "name", names(&decision.visible_tools)),
            "prompts/list" => ("prompts", "name", names(&decision.visible_prompts)),
            "resources/list" => ("resources", "uri", prefixes()),
            "resources/templates/list" => ("resourceTemplates", "uriTemplate", prefixes()),
            _ => return None,
        };
        Some(Self { list, field, rule })
    }

    fn keeps(&self, entry: &Value) -> bool {
        let Some(value) = entry.get(self.field).and_then(Value::as_str) else { return false };
        match &self.rule {
            Rule::Names(names) => names.contains("*") || names.contains(value),
            Rule::Prefixes(prefixes) => prefixes.iter().any(|p| value.starts_with(p.as_str())),
        }
    }
}

/// What is done to each message of an answer: its list trimmed, server requests sealed.
#[derive(Clone, Default)]
pub struct Rewrite {
    pub visible: Option<Visible>,
    pub seal: Option<StreamSeal>,
}

impl Rewrite {
    pub fn trim(visible: Visible) -> Self {
        Self { visible: Some(visible), seal: None }
    }

    /// Rewrites one message; true if it changed.
    fn message(&self, message: &mut Value) -> Result<bool, TrimError> {
        let trimmed = self.visible.as_ref().is_some_and(|v| trim_message(message, v));
        let sealed = match &self.seal {
            Some(seal) => seal.seal_message(message).map_err(|e| TrimError::NotJson(e.to_string()))?,
            None => false,
        };
        Ok(trimmed || sealed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrimError {
    #[error("the upstream answer is not valid JSON: {0}")]
    NotJson(String),
    #[error("the upstream answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Rewrites one JSON body (a JSON-RPC message, or an array of them). Returns `None` when
/// nothing in it changed, so it can be forwarded byte for byte.
pub fn trim_json(body: &[u8], rewrite: &Rewrite, limits: Limits) -> Result<Option<Vec<u8>>, TrimError> {
    if body.len() > limits.max_body_bytes {
        return Err(TrimError::TooLarge { limit: limits.max_body_bytes });
    }
    // Strict: with duplicate keys, we could trim one `tools` and the client read the other.
    let mut value = parse_strict(body, limits).map_err(|e| TrimError::NotJson(e.to_string()))?;
    let changed = match &mut value {
        // Every element is rewritten (no short-circuit), then: did any change?
        Value::Array(items) => {
            let mut changed = false;
            for item in items.iter_mut() {
                changed |= rewrite.message(item)?;
            }
            changed
        }
        other => rewrite.message(other)?,
    };
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&value).map(Some).map_err(|e| TrimError::NotJson(e.to_string()))
}

/// Drops every entry `visible` does not keep from a response's list; true if it had one.
fn trim_message(message: &mut Value, visible: &Visible) -> bool {
    let Some(entries) = message.get_mut("result").and_then(|r| r.get_mut(visible.list)).and_then(Value::as_array_mut) else {
        return false;
    };
    entries.retain(|entry| visible.keeps(entry));
    true
}

/// Trims a `text/event-stream` body chunk by chunk. Complete events are rewritten and
/// released as soon as they are whole; a partial event waits for the next chunk.
pub struct SseTrimmer {
    rewrite: Rewrite,
    limits: Limits,
    pending: Vec<u8>,
}

impl SseTrimmer {
    pub fn new(rewrite: Rewrite, limits: Limits) -> Self {
        Self { rewrite, limits, pending: Vec::new() }
    }

    /// The clock for what follows: a server request is sealed with the time it passes, not
    /// the time its stream opened (a GET stream lives for hours).
    pub fn set_now(&mut self, now: u64) {
        if let Some(seal) = self.rewrite.seal.as_mut() {
            seal.now = now;
        }
    }

    /// Takes the next chunk; returns the bytes to send on in its place.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TrimError> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            out.extend(self.rewrite_event(&event)?);
        }
        if self.pending.len() > self.limits.max_body_bytes {
            return Err(TrimError::TooLarge { limit: self.limits.max_body_bytes });
        }
        Ok(out)
    }

    /// The stream ended: whatever is left is treated as a last event (clients drop an
    /// unterminated event, but one that did not would still see a trimmed list).
    pub fn finish(&mut self) -> Result<Vec<u8>, TrimError> {
        let rest = std::mem::take(&mut self.pending);
        if rest.is_empty() {
            return Ok(rest);
        }
        self.rewrite_event(&rest)
    }

    fn rewrite_event(&self, event: &[u8]) -> Result<Vec<u8>, TrimError> {
        let lines = split_lines(event);
        let data: Vec<&[u8]> = lines.iter().filter_map(|(line, _)| data_value(line)).collect();
        if data.is_empty() {
            return Ok(event.to_vec());
        }
        let joined = data.join(&b'\n');
        if joined.iter().all(u8::is_ascii_whitespace) {
            // An empty event (e.g. the priming event before a resumable stream) is no message.
            return Ok(event.to_vec());
        }
        let Some(trimmed) = trim_json(&joined, &self.rewrite, self.limits)? else {
            return Ok(event.to_vec());
        };
        let mut out = Vec::with_capacity(event.len());
        let mut data_written = false;
        for (line, terminator) in &lines {
            if data_value(line).is_none() {
                out.extend_from_slice(line);
                out.extend_from_slice(terminator);
            } else if !data_written {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&trimmed);
                out.push(b'\n');
                data_written = true;
            }
        }
        Ok(out)
    }
}

/// The value of a `data` field line, per the SSE spec: `data` alone, or `data:` with one
/// optional space after the colon.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    if line == b"data" {
        return Some(&[]);
    }
    let value = line.strip_prefix(b"data:")?;
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// Index just past the blank line that ends the first complete event, if there is one.
/// A trailing CR is not yet a line end: the next chunk may start with its LF.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut i = 0;
    while let Some(&b) = buf.get(i) {
        let terminator = match b {
            b'\n' => 1,
            b'\r' => match buf.get(i + 1) {
                Some(b'\n') => 2,
                Some(_) => 1,
                None => return None,
            },
            _ => {
                i += 1;
                continue;
            }
        };
        let blank = i == line_start;
        i += terminator;
        if blank {
            return Some(i);
        }
        line_start = i;
    }
    None
}

/// Splits an event into (line, terminator) pairs; the last line may have no terminator.
fn split_lines(event: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut lines = Vec::new();
    let mut rest = event;
    while !rest.is_empty() {
        let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
            lines.push((rest, &[][..]));
            break;
        };
        let len = if rest.get(pos..pos + 2) == Some(b"\r\n") { 2 } else { 1 };
        let (line, tail) = rest.split_at(pos);
        let (terminator, tail) = tail.split_at(len);
        lines.push((line, terminator));
        rest = tail;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(names: &[&str]) -> Rewrite {
        Rewrite::trim(Visible::tools(names.iter().map(|s| (*s).to_owned())))
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a"},{"name":"b"},{"name":"c"},{"nameless":true}]}}"#;

    fn names(json: &[u8]) -> Vec<String> {
        let v: Value = serde_json::from_slice(json).unwrap();
        v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn json_keeps_only_visible_tools() {
        let out = trim_json(LIST.as_bytes(), &visible(&["a", "c", "z"]), Limits::default()).unwrap().unwrap();
        assert_eq!(names(&out), ["a", "c"]);
    }

    #[test]
    fn json_without_a_tool_list_passes_unchanged() {
        let body = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x"}}"#;
        assert_eq!(trim_json(body, &visible(&["a"]), Limits::default()).unwrap(), None);
    }

    #[test]
    fn unreadable_or_ambiguous_json_is_refused() {
        assert!(trim_json(b"{nope", &visible(&[]), Limits::default()).is_err());
        let dup = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"secret"}]}}"#;
        assert!(trim_json(dup, &visible(&[]), Limits::default()).is_err());
    }

    fn sse(data: &str, eol: &str) -> String {
        format!("id: 1{eol}event: message{eol}data: {data}{eol}{eol}")
    }

    #[test]
    fn sse_split_at_every_byte_with_every_line_ending() {
        for eol in ["\n", "\r\n", "\r"] {
            let stream = format!(": comment{eol}{eol}id: 0{eol}retry: 3000{eol}data:{eol}{eol}{}{}", sse(r#"{"jsonrpc":"2.0","method":"notifications/x"}"#, eol), sse(LIST, eol));
            for split in 0..stream.len() {
                let (a, b) = stream.as_bytes().split_at(split);
                let mut t = SseTrimmer::new(visible(&["b"]), Limits::default());
                let mut out = t.push(a).unwrap();
                out.extend(t.push(b).unwrap());
                out.extend(t.finish().unwrap());
                let text = String::from_utf8(out).unwrap();
                assert!(text.contains(r#""tools":[{"name":"b"}]"#), "eol {eol:?} split {split}: {text}");
                assert!(!text.contains(r#""name":"a""#), "eol {eol:?} split {split}");
                assert!(text.contains("notifications/x") && text.contains(": comment"));
            }
        }
    }

    #[test]
    fn sse_multi_line_data_is_joined_then_trimmed() {
        let stream = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: \"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}\n\n";
        let mut t = SseTrimmer::new(visible(&["a"]), Limits::default());
        let out = String::from_utf8(t.push(stream.as_bytes()).unwrap()).unwrap();
        assert_eq!(out, "data: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"a\"}]}}\n\n");
    }

    #[test]
    fn sse_unterminated_last_event_is_still_trimmed() {
        let mut t = SseTrimmer::new(visible(&[]), Limits::default());
        let mut out = t.push(format!("data: {LIST}").as_bytes()).unwrap();
        assert!(out.is_empty());
        out.extend(t.finish().unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), "data: {\"id\":7,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[]}}\n");
    }

    #[test]
    fn sse_pending_data_is_bounded() {
        let limits = Limits { max_body_bytes: 64, ..Limits::default() };
        let mut t = SseTrimmer::new(visible(&[]), limits);
        assert!(matches!(t.push(&[b'x'; 100]), Err(TrimError::TooLarge { .. })));
    }

    #[test]
    fn server_requests_are_sealed_with_the_time_they_pass() {
        use crate::relay::{RequestSealer, StreamSeal, ANSWER_WITHIN_SECONDS};
        use crate::session::Owner;
        let owner = Owner { workload: "spiffe://td/w".into(), user: None };
        let seal = StreamSeal { sealer: RequestSealer::new([3; 32]), owner: owner.clone(), session: Some("S".into()), now: 0 };
        let mut t = SseTrimmer::new(Rewrite { visible: None, seal: Some(seal.clone()) }, Limits::default());
        // The stream opened at 0; the request passes at 5000.
        t.set_now(5000);
        let out = t.push(b"id: 4\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"roots/list\"}\n\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: 4\n"), "the event id stays: {text}");
        let data: Value = serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
        let sealed = data["id"].as_str().unwrap();
        assert!(seal.sealer.open(&owner, Some("S"), sealed, 5000 + ANSWER_WITHIN_SECONDS).is_ok());
        assert!(seal.sealer.open(&owner, Some("S"), sealed, 5001 + ANSWER_WITHIN_SECONDS).is_err());
    }
}
