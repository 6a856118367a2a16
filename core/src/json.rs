//! Strict JSON parsing of request bodies.
//!
//! serde_json alone accepts duplicate object keys (last one wins) and nests up to 128 levels.
//! A gateway must not: a duplicate key lets the filter and the upstream read different values
//! from one body. Every rejection has its own error so that operators can tell them apart.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Limits applied before and during parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Deepest accepted nesting of arrays and objects (the top level counts as 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 1024 * 1024, max_depth: 32 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("body is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("duplicate object key {key:?}")]
    DuplicateKey { key: String },
    #[error("nesting deeper than the limit of {limit}")]
    TooDeep { limit: usize },
    #[error("invalid JSON: {reason}")]
    Syntax { reason: String },
}

/// Parses `body` as one JSON value, enforcing `limits`, UTF-8, and unique keys at every depth.
pub fn parse_strict(body: &[u8], limits: Limits) -> Result<Value, StrictJsonError> {
    if body.len() > limits.max_body_bytes {
        return Err(StrictJsonError::TooLarge { size: body.len(), limit: limits.max_body_bytes });
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| StrictJsonError::InvalidUtf8 { offset: e.valid_up_to() })?;
    let failure = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    // Our depth limit is far below serde_json's own (128), so its limit never fires first.
    let seed = StrictSeed { depth: 1, limit: limits.max_depth, failure: &failure };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => Err(failure
            .take()
            .unwrap_or_else(|| StrictJsonError::Syntax { reason: e.to_string() })),
    }
}

/// Deserializes one value at `depth`, recording the precise reason of a strictness failure in
/// `failure` (serde's error type can only carry a string).
struct StrictSeed<'a> {
    depth: usize,
    limit: usize,
    failure: &'a Cell<Option<StrictJsonError>>,
}

impl StrictSeed<'_> {
    fn fail<E: de::Error>(&self, err: StrictJsonError) -> E {
        let msg = err.to_string();
        self.failure.set(Some(err));
        E::custom(msg)
    }

    /// Called on entering an array or object at `self.depth`.
    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth > self.limit {
            return Err(self.fail(StrictJsonError::TooDeep { limit: self.limit }));
        }
        Ok(())
    }

    fn child(&self) -> StrictSeed<'_> {
        StrictSeed { depth: self.depth + 1, limit: self.limit, failure: self.failure }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        loop {
            match seq.next_element_seed(self.child())? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(StrictJsonError::DuplicateKey { key }));
            }
            let v = map.next_value_seed(self.child())?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests;
