//! A validating scan of one JSON object's top-level members, without
//! building anything: each member comes back as slices of the line (its
//! key, its value's token, and `"key":value` as written).
//!
//! Whatever the scan accepts is valid JSON, so its slices can be copied
//! into an event as they are. It may refuse valid input that it does not
//! need to handle quickly (nesting deeper than [`MAX_DEPTH`], `\u`
//! surrogate escapes): the caller then takes the full decoder.

/// Deepest nesting the scan follows (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 64;

/// One top-level member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The key's characters between its quotes, escapes as written.
    pub key: &'a str,
    /// The key holds an escape: `key` is not its text.
    pub key_escaped: bool,
    /// The value's token as written (a string keeps its quotes).
    pub value: &'a str,
    /// `"key":value` as written.
    pub text: &'a str,
}

/// Call `each` with every member of the object `line`, in order; `None` if
/// `line` is not one JSON object (optionally surrounded by whitespace), if
/// the scan refuses it, or as soon as `each` returns `None`.
pub fn object_members<'a>(line: &'a str, mut each: impl FnMut(Member<'a>) -> Option<()>) -> Option<()> {
    let mut c = Cursor { b: line.as_bytes(), at: 0 };
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.peek() == Some(b'}') {
        c.at += 1;
    } else {
        loop {
            let start = c.at;
            let key_escaped = c.string()?;
            let key = &line[start + 1..c.at - 1];
            c.ws();
            c.eat(b':')?;
            c.ws();
            let value_start = c.at;
            c.value(1)?;
            each(Member { key, key_escaped, value: &line[value_start..c.at], text: &line[start..c.at] })?;
            c.ws();
            match c.bump()? {
                b',' => c.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.ws();
    (c.at == c.b.len()).then_some(())
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.bump()? == want).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A string token (the cursor at its opening quote); whether it holds
    /// an escape.
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            let rest = &self.b[self.at..];
            let n = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            self.at += n;
            match self.bump()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.bump()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.at..self.at + 4)?;
                            let hex = std::str::from_utf8(hex).ok()?;
                            let unit = u16::from_str_radix(hex, 16).ok()?;
                            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) || (0xD800..=0xDFFF).contains(&unit) {
                                return None;
                            }
                            self.at += 4;
                        }
                        _ => return None,
                    }
                }
                // A raw control character.
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.bump()? {
                b',' => self.ws(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.bump()? {
                b',' => self.ws(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and within
    /// f64's range (serde_json refuses `1e400`, so a reader of the event
    /// would).
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        self.number_token()?;
        let token = &self.b[start..self.at];
        // Only an exponent, or more digits than f64's 309, can overflow.
        let may_overflow = token.len() > 300 || token.iter().any(|c| matches!(c, b'e' | b'E'));
        if may_overflow {
            let f: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
            if !f.is_finite() {
                return None;
            }
        }
        Some(())
    }

    fn number_token(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.bump()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(0)?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits(1)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digits(1)?;
        }
        Some(())
    }

    /// At least `min` digits (`Some` when there were).
    fn digits(&mut self, min: usize) -> Option<()> {
        let n = self.b[self.at..].iter().take_while(|c| c.is_ascii_digit()).count();
        self.at += n;
        (n >= min).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(line: &str) -> Option<Vec<(String, bool, String, String)>> {
        let mut out = vec![];
        object_members(line, |m| {
            out.push((m.key.to_string(), m.key_escaped, m.value.to_string(), m.text.to_string()));
            Some(())
        })?;
        Some(out)
    }

    #[test]
    fn members_come_back_as_written() {
        let got = members(r#" { "a" : 1 ,"b\"c":[true,{"x":null}],"d":"e\u00e9\n"} "#).unwrap();
        assert_eq!(
            got,
            [
                ("a".into(), false, "1".into(), r#""a" : 1"#.into()),
                (r#"b\"c"#.into(), true, r#"[true,{"x":null}]"#.into(), r#""b\"c":[true,{"x":null}]"#.into()),
                ("d".into(), false, r#""e\u00e9\n""#.into(), r#""d":"e\u00e9\n""#.into()),
            ]
        );
        assert_eq!(members("{}").unwrap(), []);
    }

    #[test]
    fn anything_that_is_not_one_json_object_is_refused() {
        for bad in [
            "",
            " ",
            "[1]",
            "\"s\"",
            "1",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "{\"a\":01}",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":True}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"open}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":[1,]}",
            "{\"a\":[,1]}",
            "{\"a\":{\"b\"}}",
            "{\"a\":1 2}",
            "{\"a\":NaN}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":1e400}",
            "{\"a\":-1e000309}",
        ] {
            assert_eq!(members(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_outside_f64_are_refused_whatever_their_form() {
        assert!(members(&format!("{{\"a\":1{}}}", "0".repeat(400))).is_none(), "400 digits");
        assert!(members(&format!("{{\"a\":0.{}1}}", "0".repeat(400))).is_some(), "tiny is fine");
        assert!(members("{\"a\":-1.5e300,\"b\":123456789012345678901234567890}").is_some());
    }

    #[test]
    fn nesting_is_followed_to_the_limit() {
        let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(members(&nested(MAX_DEPTH - 1)).is_some());
        assert!(members(&nested(MAX_DEPTH)).is_none());
    }

    #[test]
    fn each_can_stop_the_scan() {
        let mut seen = 0;
        assert!(object_members(r#"{"a":1,"b":2}"#, |_| {
            seen += 1;
            None
        })
        .is_none());
        assert_eq!(seen, 1);
    }
}
