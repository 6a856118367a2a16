//! The record format shared by the writer ([`super::AuditLog`]) and [`super::verify()`].

use serde_json::{Map, Value};

pub use portcullis_core::audit::{canonical, record_hash, GENESIS};

/// Members every record has, which event fields may not use.
pub(crate) const RESERVED: [&str; 5] = ["seq", "time", "event", "prev", "hash"];

/// One record's line (with its `\n`) and its hash. The line lists `seq`, `time`, `event`
/// first and `prev`, `hash` last, for people reading it; the hash does not depend on order.
pub(crate) fn build_line(seq: u64, time: &str, event: &str, fields: &Map<String, Value>, prev: &str) -> std::io::Result<(String, String)> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if let Some(k) = RESERVED.iter().find(|k| fields.contains_key(**k)) {
        return Err(invalid(format!("audit event {event}: field {k:?} is reserved")));
    }
    let mut object = fields.clone();
    object.insert("seq".into(), seq.into());
    object.insert("time".into(), time.into());
    object.insert("event".into(), event.into());
    object.insert("prev".into(), prev.into());
    let hash = record_hash(&object).map_err(|e| invalid(format!("audit event {event}: {e}")))?;
    let mut line = String::with_capacity(256);
    line.push_str(&format!("{{\"seq\":{seq},\"time\":{},\"event\":{}", Value::from(time), Value::from(event)));
    for (k, v) in fields {
        line.push(',');
        line.push_str(&Value::from(k.as_str()).to_string());
        line.push(':');
        line.push_str(&v.to_string());
    }
    line.push_str(&format!(",\"prev\":{},\"hash\":{}}}\n", Value::from(prev), Value::from(hash.as_str())));
    Ok((line, hash))
}

/// Now as RFC 3339 UTC with milliseconds, e.g. `2025-01-01T12:00:00.123Z`.
pub(crate) fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_the_hash_of_nothing() {
        assert_eq!(portcullis_core::audit::sha256_tagged(b""), GENESIS);
    }

    #[test]
    fn a_line_hashes_to_its_canonical_content_and_reads_in_order() {
        let mut fields = Map::new();
        fields.insert("decision_id".into(), "d1".into());
        fields.insert("b".into(), serde_json::json!({"z": 1, "a": [1.0, "x"]}));
        let (line, hash) = build_line(1, "2025-01-01T00:00:00.000Z", "job.started", &fields, GENESIS).unwrap();
        assert!(line.starts_with(r#"{"seq":1,"time":"2025-01-01T00:00:00.000Z","event":"job.started","#), "{line}");
        assert!(line.ends_with(&format!(",\"prev\":\"{GENESIS}\",\"hash\":\"{hash}\"}}\n")), "{line}");
        let mut parsed: Map<String, Value> = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed.remove("hash"), Some(Value::from(hash.as_str())));
        assert_eq!(record_hash(&parsed).unwrap(), hash);
    }

    #[test]
    fn reserved_fields_are_refused() {
        let mut fields = Map::new();
        fields.insert("hash".into(), "x".into());
        assert!(build_line(1, "t", "e", &fields, GENESIS).is_err());
    }

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.', "{t}");
    }
}
