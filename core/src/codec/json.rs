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
