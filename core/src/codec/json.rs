//! The JSON codec: one object per line; `ts`/`level`/`msg` are lifted, the
//! other keys stay in `fields` as they are.

use std::borrow::Cow;

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
/// JSON object, or one the scan leaves to [`super::decode`] (see
/// [`super::scan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Lean<'a> {
    pub ts: Option<DateTime<Utc>>,
    pub level: Cow<'static, str>,
    /// The message as a JSON string, ready to be written as it is (the
    /// line's own string token, escapes and all, when it was a string).
    pub message_json: Cow<'a, str>,
    pub fields_json: String,
}

impl Lean<'_> {
    /// The message as text (what [`super::decode`] gives).
    pub fn message(&self) -> String {
        serde_json::from_str(&self.message_json).unwrap_or_default()
    }
}

pub fn decode_lean(line: &str) -> Option<Lean<'_>> {
    let (mut ts, mut level, mut message) = (None, None, None);
    let mut fields = String::new();
    super::scan::object_members(line, |m| {
        let key = if m.key_escaped {
            Cow::Owned(serde_json::from_str::<String>(&m.text[..m.key.len() + 2]).ok()?)
        } else {
            Cow::Borrowed(m.key)
        };
        let key = key.as_ref();
        if ts.is_none() && TS_KEYS.contains(&key) {
            ts = Some(m.value);
        } else if level.is_none() && LEVEL_KEYS.contains(&key) {
            level = Some(m.value);
        } else if message.is_none() && MSG_KEYS.contains(&key) {
            message = Some(m.value);
        } else {
            if fields.is_empty() {
                fields.reserve(line.len());
                fields.push('{');
            } else {
                fields.push(',');
            }
            fields.push_str(m.text);
        }
        Some(())
    })?;
    if !fields.is_empty() {
        fields.push('}');
    }
    let message_json = match message {
        Some(v) if v.starts_with('"') => Cow::Borrowed(v),
        Some(v) => Cow::Owned(serde_json::to_string(v).ok()?),
        None => Cow::Borrowed("\"\""),
    };
    Some(Lean {
        ts: ts.and_then(text).and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|t| t.with_timezone(&Utc)),
        level: match level.and_then(text) {
            Some(s) => super::normalize_level_cow(&s),
            None => Cow::Borrowed("info"),
        },
        message_json,
        fields_json: fields,
    })
}

/// A value token's text if it is a string (borrowed when it has no escapes).
fn text(token: &str) -> Option<Cow<'_, str>> {
    let inner = token.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(token).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
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

    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            // Floats serde_json reads back exactly (its default parser is
            // not correctly rounded for long mantissas), and any f64 as text.
            (any::<i32>(), 0..6i32).prop_map(|(m, e)| Value::from(f64::from(m) / 10f64.powi(e))),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| Value::from(f.to_string())),
            any::<String>().prop_map(Value::from),
            "[a-z\\\\\"\\n\\u{0}-\\u{1f}é😀]{0,12}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z\\\\\"é]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(&["ts", "time", "@timestamp", "level", "severity", "msg", "message", "caller"])
                .prop_map(String::from),
            "[a-z\\\\\"\\u{0}-\\u{1f}é]{0,8}",
        ]
    }

    fn object() -> impl Strategy<Value = serde_json::Map<String, Value>> {
        let ts = prop_oneof![
            Just(Value::from("2026-01-02T03:04:05.123456789Z")),
            Just(Value::from("2026-01-02T03:04:05+01:00")),
            value()
        ];
        (prop::collection::btree_map(key(), value(), 0..8), ts).prop_map(|(m, ts)| {
            let mut m: serde_json::Map<String, Value> = m.into_iter().collect();
            if m.contains_key("ts") {
                m.insert("ts".into(), ts);
            }
            m
        })
    }

    /// A byte to splice into a line: any, or one that JSON's grammar
    /// turns on.
    fn json_byte() -> impl Strategy<Value = u8> {
        prop_oneof![any::<u8>(), prop::sample::select(b"0123{}[],:\\\"eE.-+ tfnux\x01".to_vec())]
    }

    /// At most one key of each lifted kind: with two, the decoders pick
    /// by different rules (line order, key priority), both documented.
    fn one_of_each_kind(m: &serde_json::Map<String, Value>) -> bool {
        [super::super::TS_KEYS, super::super::LEVEL_KEYS, super::super::MSG_KEYS]
            .iter()
            .all(|kind| m.keys().filter(|k| kind.contains(&k.as_str())).count() <= 1)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn lean_and_full_decoders_agree_on_any_object(obj in object(), pretty in any::<bool>()) {
            prop_assume!(one_of_each_kind(&obj));
            let line = if pretty { serde_json::to_string_pretty(&obj) } else { serde_json::to_string(&obj) }.unwrap();
            let lean = decode_lean(&line).expect("a JSON object decodes lean");
            let full = decode(&line);
            prop_assert_eq!((lean.ts, lean.level.as_ref()), (full.ts, full.level.as_str()));
            // A message that is not a string is kept as its JSON text: the
            // lean decoder as written, the full one as serde_json writes it.
            let as_written = |m: &str| serde_json::from_str::<Value>(m).unwrap_or_else(|_| Value::from(m));
            prop_assert_eq!(as_written(&lean.message()), as_written(&full.message));
            let fields: serde_json::Map<String, Value> =
                if lean.fields_json.is_empty() { Default::default() } else { serde_json::from_str(&lean.fields_json).unwrap() };
            prop_assert_eq!(fields, full.fields);
        }

        /// Whatever the lean decoder accepts is valid JSON, and so is what
        /// it hands on (it is copied into events as it is).
        #[test]
        fn lean_accepts_only_json_objects(obj in object(), cut in any::<prop::sample::Index>(), byte in json_byte(), op in 0..3u8) {
            let line = serde_json::to_string(&obj).unwrap();
            let mut bytes = line.into_bytes();
            let at = cut.index(bytes.len() + 1);
            match op {
                0 => bytes.truncate(at),
                1 => bytes.insert(at, byte),
                _ => if at < bytes.len() { bytes.remove(at); },
            }
            let Ok(line) = String::from_utf8(bytes) else { return Ok(()) };
            if let Some(lean) = decode_lean(&line) {
                prop_assert!(matches!(serde_json::from_str::<Value>(&line), Ok(Value::Object(_))), "{:?}", line);
                prop_assert!(serde_json::from_str::<String>(&lean.message_json).is_ok(), "{:?}", line);
                if !lean.fields_json.is_empty() {
                    prop_assert!(serde_json::from_str::<serde_json::Map<String, Value>>(&lean.fields_json).is_ok(), "{:?}", line);
                }
            }
        }
    }
}
