//! Request bodies of known sizes, shared by the criterion micro-benchmarks and the load
//! generator so that both measure the same bytes.

use anyhow::{ensure, Result};
use serde_json::{json, Map, Value};

/// Body sizes of the micro-benchmarks: the whole tools/call body, in bytes.
pub const SIZES: [(&str, usize); 3] = [("200B", 200), ("10KiB", 10 * 1024), ("1MiB", 1024 * 1024)];

/// How the payload travels in `arguments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One long string (`{"text": "lorem ipsum ..."}`): cheap to parse, one big value to copy.
    Str,
    /// An array of short strings (`{"words": ["word-000001", ...]}`): many small values, which
    /// is what makes parsing, hashing and the conversion into Rego values expensive.
    Array,
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::Str, Shape::Array];

    pub fn label(self) -> &'static str {
        match self {
            Shape::Str => "str",
            Shape::Array => "arr",
        }
    }
}

const WORDS: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ";

/// A `tools/call` body for `tool` of exactly `size` bytes (as compact JSON), carrying its
/// payload in `arguments` as `shape`. Fails if `size` is smaller than the empty envelope.
pub fn tools_call(id: i64, tool: &str, shape: Shape, size: usize) -> Result<String> {
    let body = |args: &Map<String, Value>| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string()
    };
    let mut args = Map::new();
    match shape {
        Shape::Str => {
            args.insert("text".into(), Value::String(String::new()));
            let room = size.checked_sub(body(&args).len());
            ensure!(room.is_some(), "{size} bytes is too small for a {tool} call");
            let text: String = WORDS.chars().cycle().take(room.unwrap_or(0)).collect();
            args.insert("text".into(), Value::String(text));
        }
        Shape::Array => {
            args.insert("words".into(), Value::Array(Vec::new()));
            let empty = body(&args).len();
            ensure!(size >= empty + 3, "{size} bytes is too small for a {tool} call");
            // `"word-000001",` is 14 bytes; the first element has no comma.
            let n = ((size - empty + 1) / 14).max(1);
            let mut words: Vec<String> = (0..n).map(|i| format!("word-{i:06}")).collect();
            let used = empty + n * 14 - 1;
            if let Some(last) = words.last_mut() {
                // Pad (or, for a tiny size, shorten) the last element to hit the size exactly.
                if size >= used {
                    last.push_str(&"x".repeat(size - used));
                } else {
                    last.truncate(last.len() - (used - size));
                }
            }
            args.insert("words".into(), Value::Array(words.into_iter().map(Value::String).collect()));
        }
    }
    let out = body(&args);
    ensure!(out.len() == size, "built a {}-byte body for {size} bytes", out.len());
    Ok(out)
}

/// The load generator's allow-path call: `word_count` with a short text (a ~200-byte body).
pub fn word_count_arguments() -> Map<String, Value> {
    let mut args = Map::new();
    args.insert("text".into(), Value::String("the quick brown fox jumps over the lazy dog while the gateway decides".into()));
    args
}

/// The load generator's call whose new arguments policy reads: `list_pods` of a namespace
/// (the load generator appends a number to it on every call).
pub fn list_pods_arguments() -> Map<String, Value> {
    let mut args = Map::new();
    args.insert("namespace".into(), Value::String("team".into()));
    args
}

/// The load generator's deny-path call for the `reader` agent: `apply_config` (an apply tool;
/// readers may only query).
pub fn apply_config_arguments() -> Map<String, Value> {
    let mut args = Map::new();
    args.insert("name".into(), Value::String("app".into()));
    args.insert("content".into(), Value::String("replicas: 3\nimage: registry.local/app:1.2.3\n".into()));
    args
}

pub fn tools_call_with(id: u64, tool: &str, arguments: &Map<String, Value>) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_exactly_the_requested_size_and_are_valid_calls() {
        for shape in Shape::ALL {
            for size in [120, 200, 201, 213, 10 * 1024, 1024 * 1024] {
                let body = tools_call(7, "word_count", shape, size).unwrap();
                assert_eq!(body.len(), size, "{shape:?} {size}");
                let v = portcullis_core::json::parse_strict(body.as_bytes(), portcullis_core::json::Limits::default()).unwrap();
                portcullis_core::jsonrpc::validate(&v).unwrap();
            }
        }
    }
}
