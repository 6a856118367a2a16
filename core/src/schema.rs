//! Tool argument validation: a compiled validator for a documented subset of JSON Schema.
//!
//! Supported keywords: `type` (a name or a list; `integer` is a number without a fractional
//! part), `properties`, `required`, `additionalProperties` (bool or schema), `enum`, `const`,
//! `pattern` (Rust `regex` syntax, unanchored like ECMA-262; no look-around or
//! backreferences), `minLength`/`maxLength` (Unicode scalar values), `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum` (numbers, draft 6+), `items` (one schema for every
//! element), `minItems`, `maxItems`, `uniqueItems`. Annotations are accepted and ignored:
//! `title`, `description`, `default`, `examples`, `$comment`, `$schema`.
//!
//! Anything else (`format`, `oneOf`, `$ref`, ...) makes compilation fail, naming the keyword:
//! a constraint the gateway cannot check must not be silently skipped.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

const ANNOTATIONS: &[&str] = &["title", "description", "default", "examples", "$comment", "$schema"];
/// Compiled size bound for one `pattern` (bytes of regex program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{keyword} at {at}: {reason}")]
pub struct CompileError {
    /// The keyword that cannot be compiled.
    pub keyword: String,
    /// JSON pointer of the (sub)schema inside `input_schema`, `""` for the root.
    pub at: String,
    pub reason: String,
}

/// A failed validation: the JSON pointer of the offending value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", if path.is_empty() { "/" } else { path.as_str() })]
pub struct Invalid {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Null,
    Boolean,
    Object,
    Array,
    Number,
    Integer,
    String,
}

#[derive(Debug, Clone)]
struct Pattern(Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A compiled schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schema {
    types: Option<Vec<Type>>,
    properties: BTreeMap<String, Schema>,
    required: Vec<String>,
    /// `None`: any extra property; `Some(None)`: none allowed; `Some(Some(s))`: must match `s`.
    additional: Option<Option<Box<Schema>>>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    pattern: Option<Pattern>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    items: Option<Box<Schema>>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
}

impl Schema {
    pub fn compile(schema: &Map<String, Value>) -> Result<Self, CompileError> {
        compile_at(schema, "")
    }

    /// Validates `value`; the first failure (in a stable order) is reported.
    pub fn validate(&self, value: &Value) -> Result<(), Invalid> {
        self.check(value, &mut String::new())
    }

    /// Validates an object (tool arguments) without copying it.
    pub fn validate_object(&self, object: &Map<String, Value>) -> Result<(), Invalid> {
        let root_only_object = self.types.as_ref().is_none_or(|t| t.contains(&Type::Object));
        if self.constant.is_some() || self.enumeration.is_some() || !root_only_object {
            return self.validate(&Value::Object(object.clone()));
        }
        self.check_object(object, &mut String::new())
    }

    fn check(&self, value: &Value, path: &mut String) -> Result<(), Invalid> {
        let fail = |path: &str, reason: String| Err(Invalid { path: path.to_owned(), reason });
        if let Some(types) = &self.types {
            if !types.iter().any(|t| has_type(value, *t)) {
                let want: Vec<&str> = types.iter().map(|t| type_name(*t)).collect();
                return fail(path, format!("expected {}, got {}", want.join(" or "), value_type(value)));
            }
        }
        if let Some(c) = &self.constant {
            if !json_eq(c, value) {
                return fail(path, format!("must be {c}"));
            }
        }
        if let Some(options) = &self.enumeration {
            if !options.iter().any(|o| json_eq(o, value)) {
                let list: Vec<String> = options.iter().map(Value::to_string).collect();
                return fail(path, format!("must be one of {}", list.join(", ")));
            }
        }
        match value {
            Value::String(s) => self.check_string(s, path),
            Value::Number(n) => self.check_number(n.as_f64().unwrap_or(f64::NAN), path),
            Value::Array(a) => self.check_array(a, path),
            Value::Object(o) => self.check_object(o, path),
            Value::Null | Value::Bool(_) => Ok(()),
        }
    }

    fn check_string(&self, s: &str, path: &str) -> Result<(), Invalid> {
        let len = s.chars().count() as u64;
        let err = |reason: String| Err(Invalid { path: path.to_owned(), reason });
        if let Some(min) = self.min_length.filter(|m| len < *m) {
            return err(format!("must be at least {min} characters, got {len}"));
        }
        if let Some(max) = self.max_length.filter(|m| len > *m) {
            return err(format!("must be at most {max} characters, got {len}"));
        }
        if let Some(Pattern(re)) = &self.pattern {
            if !re.is_match(s) {
                return err(format!("does not match pattern {}", re.as_str()));
            }
        }
        Ok(())
    }

    fn check_number(&self, n: f64, path: &str) -> Result<(), Invalid> {
        let checks = [
            (self.minimum, n >= self.minimum.unwrap_or(f64::NEG_INFINITY), "at least"),
            (self.maximum, n <= self.maximum.unwrap_or(f64::INFINITY), "at most"),
            (self.exclusive_minimum, n > self.exclusive_minimum.unwrap_or(f64::NEG_INFINITY), "greater than"),
            (self.exclusive_maximum, n < self.exclusive_maximum.unwrap_or(f64::INFINITY), "less than"),
        ];
        for (bound, ok, what) in checks {
            if let (Some(bound), false) = (bound, ok) {
                return Err(Invalid { path: path.to_owned(), reason: format!("must be {what} {bound}, got {n}") });
            }
        }
        Ok(())
    }

    fn check_array(&self, a: &[Value], path: &mut String) -> Result<(), Invalid> {
        let len = a.len() as u64;
        let err = |path: &str, reason: String| Err(Invalid { path: path.to_owned(), reason });
        if let Some(min) = self.min_items.filter(|m| len < *m) {
            return err(path, format!("must have at least {min} items, got {len}"));
        }
        if let Some(max) = self.max_items.filter(|m| len > *m) {
            return err(path, format!("must have at most {max} items, got {len}"));
        }
        if self.unique_items {
            for (i, item) in a.iter().enumerate() {
                if a.iter().take(i).any(|earlier| json_eq(earlier, item)) {
                    return err(&format!("{path}/{i}"), "duplicates an earlier item (uniqueItems)".into());
                }
            }
        }
        if let Some(items) = &self.items {
            for (i, item) in a.iter().enumerate() {
                with_segment(path, &i.to_string(), |p| items.check(item, p))?;
            }
        }
        Ok(())
    }

    fn check_object(&self, o: &Map<String, Value>, path: &mut String) -> Result<(), Invalid> {
        for name in &self.required {
            if !o.contains_key(name) {
                return Err(Invalid { path: format!("{path}/{}", escape(name)), reason: "required property is missing".into() });
            }
        }
        for (name, value) in o {
            match (self.properties.get(name), &self.additional) {
                (Some(schema), _) => with_segment(path, name, |p| schema.check(value, p))?,
                (None, None) => {}
                (None, Some(None)) => {
                    return Err(Invalid { path: format!("{path}/{}", escape(name)), reason: "property is not allowed by the schema".into() });
                }
                (None, Some(Some(schema))) => with_segment(path, name, |p| schema.check(value, p))?,
            }
        }
        Ok(())
    }
}

fn with_segment<T>(path: &mut String, segment: &str, f: impl FnOnce(&mut String) -> T) -> T {
    let len = path.len();
    path.push('/');
    path.push_str(&escape(segment));
    let out = f(path);
    path.truncate(len);
    out
}

/// JSON pointer escaping (RFC 6901).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn compile_at(schema: &Map<String, Value>, at: &str) -> Result<Schema, CompileError> {
    let mut out = Schema::default();
    for (keyword, v) in schema {
        let bad = |reason: &str| CompileError { keyword: keyword.clone(), at: at.to_owned(), reason: reason.to_owned() };
        let count = || v.as_u64().ok_or_else(|| bad("must be a non-negative integer"));
        let number = || v.as_f64().filter(|_| v.is_number()).ok_or_else(|| bad("must be a number"));
        match keyword.as_str() {
            "type" => out.types = Some(compile_types(v).ok_or_else(|| bad("must be a type name or a non-empty list of type names"))?),
            "properties" => {
                let props = v.as_object().ok_or_else(|| bad("must be an object"))?;
                for (name, sub) in props {
                    let sub_at = format!("{at}/properties/{}", escape(name));
                    let sub = sub.as_object().ok_or_else(|| bad(&format!("{name:?} must be a schema object")))?;
                    out.properties.insert(name.clone(), compile_at(sub, &sub_at)?);
                }
            }
            "required" => {
                let names = v.as_array().and_then(|a| a.iter().map(|n| n.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>());
                out.required = names.ok_or_else(|| bad("must be a list of property names"))?;
            }
            "additionalProperties" => {
                out.additional = match v {
                    Value::Bool(true) => None,
                    Value::Bool(false) => Some(None),
                    Value::Object(sub) => Some(Some(Box::new(compile_at(sub, &format!("{at}/additionalProperties"))?))),
                    _ => return Err(bad("must be a boolean or a schema object")),
                }
            }
            "enum" => out.enumeration = Some(v.as_array().filter(|a| !a.is_empty()).cloned().ok_or_else(|| bad("must be a non-empty list"))?),
            "const" => out.constant = Some(v.clone()),
            "pattern" => {
                let text = v.as_str().ok_or_else(|| bad("must be a string"))?;
                let re = regex::RegexBuilder::new(text).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| bad(&format!("not a supported regular expression: {e}")))?;
                out.pattern = Some(Pattern(re));
            }
            "minLength" => out.min_length = Some(count()?),
            "maxLength" => out.max_length = Some(count()?),
            "minItems" => out.min_items = Some(count()?),
            "maxItems" => out.max_items = Some(count()?),
            "minimum" => out.minimum = Some(number()?),
            "maximum" => out.maximum = Some(number()?),
            "exclusiveMinimum" => out.exclusive_minimum = Some(number()?),
            "exclusiveMaximum" => out.exclusive_maximum = Some(number()?),
            "uniqueItems" => out.unique_items = v.as_bool().ok_or_else(|| bad("must be a boolean"))?,
            "items" => {
                let sub = v.as_object().ok_or_else(|| bad("must be one schema object (tuple form is not supported)"))?;
                out.items = Some(Box::new(compile_at(sub, &format!("{at}/items"))?));
            }
            k if ANNOTATIONS.contains(&k) => {}
            _ => return Err(bad("keyword is not supported by the gateway's validator")),
        }
    }
    Ok(out)
}

fn compile_types(v: &Value) -> Option<Vec<Type>> {
    let names: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) if !a.is_empty() => a.iter().collect(),
        _ => return None,
    };
    names
        .into_iter()
        .map(|n| match n.as_str()? {
            "null" => Some(Type::Null),
            "boolean" => Some(Type::Boolean),
            "object" => Some(Type::Object),
            "array" => Some(Type::Array),
            "number" => Some(Type::Number),
            "integer" => Some(Type::Integer),
            "string" => Some(Type::String),
            _ => None,
        })
        .collect()
}

fn has_type(v: &Value, t: Type) -> bool {
    match (t, v) {
        (Type::Null, Value::Null) | (Type::Boolean, Value::Bool(_)) | (Type::Object, Value::Object(_)) => true,
        (Type::Array, Value::Array(_)) | (Type::Number, Value::Number(_)) | (Type::String, Value::String(_)) => true,
        (Type::Integer, Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Null => "null",
        Type::Boolean => "boolean",
        Type::Object => "object",
        Type::Array => "array",
        Type::Number => "number",
        Type::Integer => "integer",
        Type::String => "string",
    }
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Number(_) => "number",
        Value::String(_) => "string",
    }
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w))),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests;
