//! The logfmt codec: `ts=2026-01-02T03:04:05Z level=warn msg="disk full" pct=91 flag`.
//!
//! `ts`/`level`/`msg` (and their usual aliases) are lifted as in the JSON
//! codec; every other key goes to `fields` with its value as a string, a bare
//! key as `true`. Quoted values understand `\"`, `\\`, `\n`, `\r`, `\t`; any
//! other escape is kept as written. Garbage between pairs (a stray `=value`,
//! an unkeyed `"quoted text"`) is skipped. A line without a single
//! `key=value` pair is not logfmt: it is kept whole with `fields.decode_error`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{normalize_level, take_first, undecoded, Decoded, LEVEL_KEYS, MSG_KEYS, TS_KEYS};

pub(super) fn decode(line: &str) -> Decoded {
    let parsed = parse(line);
    if parsed.pairs == 0 {
        return undecoded(line, "no logfmt key=value pairs");
    }
    let mut obj = parsed.fields;
    // An unreadable time stays in `fields` rather than being lost.
    let ts = match take_first(&mut obj, TS_KEYS) {
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                obj.insert("ts".into(), Value::String(s));
                None
            }
        },
        Some(other) => {
            obj.insert("ts".into(), other);
            None
        }
        None => None,
    };
    let level = match take_first(&mut obj, LEVEL_KEYS) {
        Some(Value::String(s)) if !s.is_empty() => normalize_level(&s),
        _ => "info".to_string(),
    };
    let message = match take_first(&mut obj, MSG_KEYS) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    if let Some(key) = parsed.unterminated {
        obj.insert("decode_error".into(), Value::String(format!("unterminated quoted value for key {key:?}")));
    }
    Decoded { ts, level, message, fields: obj }
}

struct Parsed {
    fields: Map<String, Value>,
    /// How many `key=value` pairs were found (bare keys not counted).
    pairs: usize,
    /// The key whose quoted value ran to the end of the line, if any.
    unterminated: Option<String>,
}

fn parse(line: &str) -> Parsed {
    let mut out = Parsed { fields: Map::new(), pairs: 0, unterminated: None };
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        let Some(first) = rest.chars().next() else { break };
        match first {
            // A quoted string with no key: skip it.
            '"' => rest = quoted(&rest[1..]).1,
            // A value with no key: skip it.
            '=' => rest = bare(&rest[1..]).1,
            _ => {
                let end = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '"').unwrap_or(rest.len());
                let key = &rest[..end];
                rest = &rest[end..];
                if let Some(after_eq) = rest.strip_prefix('=') {
                    let value;
                    if let Some(q) = after_eq.strip_prefix('"') {
                        let (v, r, closed) = quoted(q);
                        if !closed {
                            out.unterminated = Some(key.to_string());
                        }
                        value = v;
                        rest = r;
                    } else {
                        let (v, r) = bare(after_eq);
                        value = v.to_string();
                        rest = r;
                    }
                    out.fields.insert(key.to_string(), Value::String(value));
                    out.pairs += 1;
                } else {
                    // A bare key (in `key"…` the quote is skipped next round).
                    out.fields.insert(key.to_string(), Value::Bool(true));
                }
            }
        }
    }
    out
}

/// An unquoted value: up to the next whitespace.
fn bare(s: &str) -> (&str, &str) {
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// A quoted value starting just after its opening quote: the unescaped
/// value, the rest after the closing quote, and whether it was closed.
fn quoted(s: &str) -> (String, &str, bool) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &s[i + 1..], true),
            '\\' => match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, 't')) => value.push('\t'),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => value.push('\\'),
            },
            c => value.push(c),
        }
    }
    (value, "", false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example() {
        let d = decode(r#"ts=2026-01-02T03:04:05Z level=warn msg="disk \"almost\" full" pct=91 flag"#);
        assert_eq!(d.ts.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(d.level, "warn");
        assert_eq!(d.message, r#"disk "almost" full"#);
        assert_eq!(d.fields["pct"], "91");
        assert_eq!(d.fields["flag"], true);
        assert_eq!(d.fields.len(), 2);
    }

    #[test]
    fn real_world_lines() {
        // Heroku router
        let d = decode(
            r#"at=info method=GET path="/" host=example.herokuapp.com request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd="204.204.204.204" dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=https"#,
        );
        assert_eq!(d.level, "info");
        assert_eq!(d.message, "");
        assert_eq!(d.fields["path"], "/");
        assert_eq!(d.fields["status"], "200");
        assert_eq!(d.fields["at"], "info");
        // Grafana / go-kit
        let d = decode(
            r#"logger=sqlstore t=2026-01-02T03:04:05.123456789Z level=error msg="Database locked" error="database is locked" retry=3"#,
        );
        assert_eq!(d.level, "error");
        assert_eq!(d.message, "Database locked");
        assert_eq!(d.fields["t"], "2026-01-02T03:04:05.123456789Z");
        assert_eq!(d.fields["error"], "database is locked");
        // Prometheus / logrus with time= and an escaped path
        let d = decode(
            r#"time="2026-01-02T03:04:05+02:00" level=WARNING msg="tab\there \\ \x" component=tsdb empty="" e="#,
        );
        assert_eq!(d.ts.unwrap().to_rfc3339(), "2026-01-02T01:04:05+00:00");
        assert_eq!(d.level, "warn");
        assert_eq!(d.message, "tab\there \\ \\x");
        assert_eq!(d.fields["empty"], "");
        assert_eq!(d.fields["e"], "");
        // multi-byte text
        let d = decode("msg=héllo utilisateur=日本 ok");
        assert_eq!(d.message, "héllo");
        assert_eq!(d.fields["utilisateur"], "日本");
        assert_eq!(d.fields["ok"], true);
    }

    #[test]
    fn garbage_is_tolerated() {
        // A bad time stays in fields.
        let d = decode("ts=yesterday msg=hi");
        assert!(d.ts.is_none());
        assert_eq!(d.fields["ts"], "yesterday");
        // Stray values and unkeyed quotes are skipped.
        let d = decode(r#"=oops "lonely quote" a=1 ==b k"v" b=2"#);
        assert_eq!(d.fields["a"], "1");
        assert_eq!(d.fields["b"], "2");
        assert_eq!(d.fields["k"], true);
        assert!(!d.fields.contains_key("decode_error"));
        // An unterminated quote runs to the end and is reported.
        let d = decode(r#"level=info msg="never closed \"#);
        assert_eq!(d.message, "never closed \\");
        assert_eq!(d.fields["decode_error"], "unterminated quoted value for key \"msg\"");
    }

    #[test]
    fn not_logfmt_is_kept_whole() {
        for line in ["just some ERROR text", "", "   ", r#""quoted only""#, "=x ="] {
            let d = decode(line);
            assert_eq!(d.message, line);
            assert_eq!(d.fields.len(), 1, "{line:?}");
            assert_eq!(d.fields["decode_error"], "no logfmt key=value pairs");
        }
        assert_eq!(decode("just some ERROR text").level, "error");
    }
}
