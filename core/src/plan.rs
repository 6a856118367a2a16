//! The plan hash: `sha256:` + hex SHA-256 of the RFC 8785 (JCS) canonical JSON of
//! `{"arguments": <arguments>, "tool": <name>}`.
//!
//! Filter and runner both call [`plan_hash`]; it is the only place the hash is defined.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Prefix of every plan hash, naming the digest.
pub const PREFIX: &str = "sha256:";

/// Largest integer magnitude that an IEEE-754 double holds exactly (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// 2^64: integers past it do not fit a u64, so a JSON parser reads their digits as a double.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// RFC 8785 hashes every number as an IEEE-754 double. A larger integer would hash equal
    /// to its rounded neighbour while the tool receives the exact value, so it is refused,
    /// however it is written (`9007199254740993`, `9007199254740993.0`, `1e19`), up to 2^64.
    #[error("integer {0} is outside the exactly representable range ±(2^53-1)")]
    UnsafeInteger(String),
    #[error("number {0} is not finite")]
    NonFinite(String),
}

/// Computes the plan hash of a call of `tool` with `arguments` (an absent `arguments` is `{}`).
pub fn plan_hash(tool: &str, arguments: Option<&Map<String, Value>>) -> Result<String, PlanError> {
    let canonical = canonical_plan(tool, arguments)?;
    Ok(format!("{PREFIX}{}", hex::encode(Sha256::digest(canonical.as_bytes()))))
}

/// The canonical (JCS) text that [`plan_hash`] digests.
pub fn canonical_plan(tool: &str, arguments: Option<&Map<String, Value>>) -> Result<String, PlanError> {
    let mut out = String::with_capacity(64);
    // Keys in JCS order: "arguments" < "tool".
    out.push_str("{\"arguments\":");
    write_arguments(&mut out, arguments)?;
    out.push_str(",\"tool\":");
    write_string(&mut out, tool);
    out.push('}');
    Ok(out)
}

/// The canonical (JCS) text of a call's arguments (an absent `arguments` is `{}`): the very
/// bytes [`canonical_plan`] hashes under `"arguments"`. This, and nothing else, is what a tool
/// is given, so two calls with one plan hash cannot run differently.
pub fn canonical_arguments(arguments: Option<&Map<String, Value>>) -> Result<String, PlanError> {
    let mut out = String::with_capacity(32);
    write_arguments(&mut out, arguments)?;
    Ok(out)
}

fn write_arguments(out: &mut String, arguments: Option<&Map<String, Value>>) -> Result<(), PlanError> {
    match arguments {
        Some(args) => write_object(out, args),
        None => {
            out.push_str("{}");
            Ok(())
        }
    }
}

/// Writes `value` in RFC 8785 canonical form.
pub fn canonicalize(value: &Value) -> Result<String, PlanError> {
    let mut out = String::new();
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value) -> Result<(), PlanError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map)?,
    }
    Ok(())
}

fn write_object(out: &mut String, map: &Map<String, Value>) -> Result<(), PlanError> {
    // JCS sorts member names by their UTF-16 code units, which differs from UTF-8 byte order
    // for characters above U+FFFF versus U+E000..U+FFFF.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value)?;
    }
    out.push('}');
    Ok(())
}

fn write_number(out: &mut String, n: &serde_json::Number) -> Result<(), PlanError> {
    let f = if let Some(u) = n.as_u64() {
        if u > MAX_SAFE_INTEGER {
            return Err(PlanError::UnsafeInteger(n.to_string()));
        }
        u as f64
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(PlanError::UnsafeInteger(n.to_string()));
        }
        i as f64
    } else {
        n.as_f64().ok_or_else(|| PlanError::NonFinite(n.to_string()))?
    };
    if !f.is_finite() {
        return Err(PlanError::NonFinite(n.to_string()));
    }
    // Such an integer written as a fraction or with an exponent (9007199254740993.0, 1e19) is
    // refused too: its canonical form is plain digits (ECMAScript prints doubles below 1e21
    // so), which read back as an integer refused above, so canonical arguments (stored with a
    // plan or an approval, or audited) could not be hashed again. From 2^64 on, the digits
    // read back as a double again.
    if f.abs() > MAX_SAFE_INTEGER as f64 && f.abs() < TWO_POW_64 {
        return Err(PlanError::UnsafeInteger(n.to_string()));
    }
    if f == 0.0 {
        // ECMAScript prints -0 as "0".
        out.push('0');
        return Ok(());
    }
    // ryu-js implements ECMAScript's Number.prototype.toString, which RFC 8785 adopts.
    out.push_str(ryu_js::Buffer::new().format_finite(f));
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(hex_digit((c as u32) >> 4));
                out.push(hex_digit((c as u32) & 0xf));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex_digit(n: u32) -> char {
    char::from_digit(n, 16).unwrap_or('0')
}
