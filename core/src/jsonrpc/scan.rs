//! Recovers the request id from the first bytes of a body that will never be parsed whole
//! (it is over the size limit), so that even that refusal answers the caller's id.
//!
//! The scan is lenient and only ever used to address an error reply: it walks the top-level
//! object's members, skipping values, until it finds `"id"` with a string or integer value.

use super::Id;

/// The id of the top-level object in `prefix`, if its `"id"` member is complete in it.
pub fn scan_id(prefix: &[u8]) -> Option<Id> {
    let mut s = Scanner { bytes: prefix, pos: 0 };
    s.skip_ws();
    s.eat(b'{')?;
    loop {
        s.skip_ws();
        let key_start = s.pos;
        s.skip_string()?;
        let key = prefix.get(key_start..s.pos)?;
        s.skip_ws();
        s.eat(b':')?;
        s.skip_ws();
        let value_start = s.pos;
        s.skip_value()?;
        if key == b"\"id\"" {
            let value = serde_json::from_slice(prefix.get(value_start..s.pos)?).ok()?;
            return super::parse_id(&value).ok();
        }
        s.skip_ws();
        s.eat(b',')?;
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Past a string, from its opening quote to its closing one.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => self.pos += 2,
                _ => self.pos += 1,
            }
        }
    }

    /// Past one value of any kind; `None` if the prefix ends inside it.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => self.skip_string()?,
                        b'{' | b'[' => {
                            depth += 1;
                            self.pos += 1;
                        }
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            self.pos += 1;
                            if depth == 0 {
                                return Some(());
                            }
                        }
                        _ => self.pos += 1,
                    }
                }
            }
            // A number or literal ends at a delimiter, which must be in the prefix too.
            _ => loop {
                match self.peek()? {
                    b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' => return Some(()),
                    _ => self.pos += 1,
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_before_and_after_big_members() {
        assert_eq!(scan_id(br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"x","argu"#), Some(Id::Number(42)));
        assert_eq!(scan_id(br#" { "params" : {"a":[1,{"b":"}\""}]}, "id" : "r-1" , "x""#), Some(Id::String("r-1".into())));
        assert_eq!(scan_id(br#"{"method":"x","id":-7}"#), Some(Id::Number(-7)));
    }

    #[test]
    fn gives_up_without_a_complete_id() {
        assert_eq!(scan_id(br#"{"params":{"arguments":{"text":"aaaa"#), None);
        assert_eq!(scan_id(br#"{"id":12"#), None);
        assert_eq!(scan_id(br#"{"id":null}"#), None);
        assert_eq!(scan_id(br#"{"id":1.5}"#), None);
        assert_eq!(scan_id(br#"[{"id":1}]"#), None);
        assert_eq!(scan_id(b""), None);
        assert_eq!(scan_id(br#"{"a":"\"#), None);
    }
}
