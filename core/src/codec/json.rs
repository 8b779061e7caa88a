//! The JSON codec: one object per line; `ts`/`level`/`msg` are lifted, the
//! other keys stay in `fields` as they are.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{normalize_level, take_first, undecoded, Decoded, LEVEL_KEYS, MSG_KEYS, TS_KEYS};

pub(super) fn decode(line: &str) -> Decoded {
    let mut obj = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => obj,
        // Not an object: keep the line whole and say why.
        _ => return undecoded(line, "not a JSON object"),
    };
    let ts = take_first(&mut obj, TS_KEYS)
        .and_then(|v| v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()))
        .map(|t| t.with_timezone(&Utc));
    let level = take_first(&mut obj, LEVEL_KEYS)
        .and_then(|v| v.as_str().map(normalize_level))
        .unwrap_or_else(|| "info".to_string());
    let message = match take_first(&mut obj, MSG_KEYS) {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Decoded { ts, level, message, fields: obj }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_world_lines() {
        // zap (Go)
        let d = decode(
            r#"{"level":"error","ts":"2026-01-02T03:04:05.123Z","caller":"srv/main.go:42","msg":"dial failed","addr":"10.0.0.1:443"}"#,
        );
        assert_eq!((d.level.as_str(), d.message.as_str()), ("error", "dial failed"));
        assert_eq!(d.fields["caller"], "srv/main.go:42");
        assert!(d.ts.is_some());
        // bunyan-ish / Logstash
        let d = decode(r#"{"@timestamp":"2026-01-02T03:04:05+01:00","message":{"nested":true},"severity":"CRITICAL"}"#);
        assert_eq!(d.level, "fatal");
        assert_eq!(d.message, r#"{"nested":true}"#);
        assert_eq!(d.ts.unwrap().to_rfc3339(), "2026-01-02T02:04:05+00:00");
        // no known keys
        let d = decode(r#"{"a":1}"#);
        assert_eq!((d.level.as_str(), d.message.as_str()), ("info", ""));
    }

    #[test]
    fn malformed_lines_stay_whole() {
        for line in [r#"{"level":"warn","msg":"cut"#, "[1,2,3]", "\"str\"", "", "{\"a\":1} trailing"] {
            let d = decode(line);
            assert_eq!(d.message, line);
            assert_eq!(d.fields["decode_error"], "not a JSON object");
        }
    }
}

/// A JSON line decoded without building a tree: the lifted parts, and the
/// other keys kept as their original JSON text (`{"k":v,...}`, or empty when
/// there are none). For the agent's hot path; `None` if the line is not a
/// JSON object (use [`super::decode`] then).
#[derive(Debug, Clone, PartialEq)]
pub struct Lean {
    pub ts: Option<DateTime<Utc>>,
    pub level: std::borrow::Cow<'static, str>,
    /// The message as a JSON string, ready to be written as it is (the
    /// line's own string token, escapes and all, when it was a string).
    pub message_json: String,
    pub fields_json: String,
}

impl Lean {
    /// The message as text (what [`super::decode`] gives).
    pub fn message(&self) -> String {
        serde_json::from_str(&self.message_json).unwrap_or_default()
    }
}

pub fn decode_lean(line: &str) -> Option<Lean> {
    use serde_json::value::RawValue;
    let pairs: Pairs<'_> = serde_json::from_str(line).ok()?;
    let (mut ts, mut level, mut message) = (None, None, None);
    let mut fields = String::new();
    for (key, raw) in &pairs.0 {
        let k: &str = key;
        if ts.is_none() && TS_KEYS.contains(&k) {
            ts = Some(raw);
            continue;
        }
        if level.is_none() && LEVEL_KEYS.contains(&k) {
            level = Some(raw);
            continue;
        }
        if message.is_none() && MSG_KEYS.contains(&k) {
            message = Some(raw);
            continue;
        }
        if fields.is_empty() {
            fields.reserve(line.len());
            fields.push('{');
        } else {
            fields.push(',');
        }
        match key {
            // Unescaped in the line: no quote, backslash or control
            // character, so it is its own JSON string.
            std::borrow::Cow::Borrowed(k) => {
                fields.push('"');
                fields.push_str(k);
                fields.push('"');
            }
            std::borrow::Cow::Owned(k) => fields.push_str(&serde_json::to_string(k).ok()?),
        }
        fields.push(':');
        fields.push_str(raw.get());
    }
    if !fields.is_empty() {
        fields.push('}');
    }
    fn as_str<'a>(raw: &&'a RawValue) -> Option<std::borrow::Cow<'a, str>> {
        serde_json::from_str::<Text<'a>>(raw.get()).ok().map(|t| t.0)
    }
    let message_json = match message {
        Some(raw) if raw.get().starts_with('"') => raw.get().to_string(),
        Some(raw) => serde_json::to_string(raw.get()).ok()?,
        None => "\"\"".to_string(),
    };
    Some(Lean {
        ts: ts.and_then(as_str).and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|t| t.with_timezone(&Utc)),
        level: match level.and_then(as_str) {
            Some(s) => super::normalize_level_cow(&s),
            None => std::borrow::Cow::Borrowed("info"),
        },
        message_json,
        fields_json: fields,
    })
}

/// An object's entries in order, keys borrowed where they have no escapes.
struct Pairs<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Pairs<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some((k, raw)) = m.next_entry::<Text<'de>, &'de serde_json::value::RawValue>()? {
                    v.push((k.0, raw));
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON string, borrowed when it has no escapes.
struct Text<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod lean_tests {
    use super::*;

    #[test]
    fn lean_decoding_agrees_with_the_full_decoder() {
        for line in [
            r#"{"level":"error","ts":"2026-01-02T03:04:05.123Z","caller":"srv/main.go:42","msg":"dial \"failed\"","addr":"10.0.0.1:443"}"#,
            r#"{"@timestamp":"2026-01-02T03:04:05+01:00","message":"x","severity":"CRITICAL","n":{"deep":[1,2,{"a":null}]}}"#,
            r#"{"a":1}"#,
            r#"{"msg":"only"}"#,
            r#"{"msg":42,"level":"Warning","k\u00e9y":"v","plain":"x"}"#,
            r#"{"we\"ird":"k\u00e9y","msg":"caf\u00e9"}"#,
        ] {
            let lean = decode_lean(line).unwrap();
            let full = decode(line);
            assert_eq!(
                (lean.ts, lean.level.as_ref(), lean.message()),
                (full.ts, full.level.as_str(), full.message),
                "{line}"
            );
            let fields: serde_json::Map<String, Value> = if lean.fields_json.is_empty() {
                Default::default()
            } else {
                serde_json::from_str(&lean.fields_json).unwrap()
            };
            assert_eq!(fields, full.fields, "{line}");
        }
        for not_object in ["[1]", "\"s\"", "{\"a\":", "plain"] {
            assert!(decode_lean(not_object).is_none());
        }
    }
}
