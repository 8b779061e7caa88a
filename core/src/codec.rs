//! Codecs: turn one framed line into the parts of a [`crate::event::LogEvent`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a source's lines are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// One JSON object per line; `ts`/`level`/`msg` lifted, the rest kept in `fields`.
    Json,
    /// The line is the message; the level is guessed from its first words.
    #[default]
    Raw,
}

/// What a codec extracted from one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub ts: Option<DateTime<Utc>>,
    pub level: String,
    pub message: String,
    pub fields: Map<String, Value>,
}

pub fn decode(codec: Codec, line: &str) -> Decoded {
    match codec {
        Codec::Raw => raw(line),
        Codec::Json => json(line),
    }
}

fn raw(line: &str) -> Decoded {
    Decoded { ts: None, level: guess_level(line).to_string(), message: line.to_string(), fields: Map::new() }
}

fn json(line: &str) -> Decoded {
    let mut obj = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => obj,
        _ => {
            // Not an object: keep the line whole and say why.
            let mut d = raw(line);
            d.fields.insert("decode_error".into(), Value::String("not a JSON object".into()));
            return d;
        }
    };
    let ts = take_first(&mut obj, &["ts", "time", "timestamp", "@timestamp"])
        .and_then(|v| v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()))
        .map(|t| t.with_timezone(&Utc));
    let level = take_first(&mut obj, &["level", "lvl", "severity"])
        .and_then(|v| v.as_str().map(normalize_level))
        .unwrap_or_else(|| "info".to_string());
    let message = match take_first(&mut obj, &["msg", "message"]) {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Decoded { ts, level, message, fields: obj }
}

fn take_first(obj: &mut Map<String, Value>, keys: &[&str]) -> Option<Value> {
    keys.iter().find_map(|k| obj.remove(*k))
}

fn normalize_level(s: &str) -> String {
    match s.to_ascii_lowercase().as_str() {
        "warning" => "warn".into(),
        "err" => "error".into(),
        "critical" | "crit" | "panic" => "fatal".into(),
        other => other.into(),
    }
}

/// Guess a level from the first few words of a plain-text line.
pub fn guess_level(line: &str) -> &'static str {
    for word in line.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).take(6) {
        match word.to_ascii_lowercase().as_str() {
            "trace" => return "trace",
            "debug" => return "debug",
            "info" => return "info",
            "warn" | "warning" => return "warn",
            "error" | "err" => return "error",
            "fatal" | "critical" | "panic" => return "fatal",
            _ => {}
        }
    }
    "info"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lifts_known_keys() {
        let d = decode(Codec::Json, r#"{"ts":"2026-01-02T03:04:05Z","level":"WARNING","msg":"disk","pct":91}"#);
        assert_eq!(d.level, "warn");
        assert_eq!(d.message, "disk");
        assert_eq!(d.fields["pct"], 91);
        assert_eq!(d.ts.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
    }

    #[test]
    fn json_keeps_non_objects_whole() {
        let d = decode(Codec::Json, "plain ERROR text");
        assert_eq!(d.message, "plain ERROR text");
        assert_eq!(d.level, "error");
        assert!(d.fields.contains_key("decode_error"));
    }

    #[test]
    fn raw_guesses_levels() {
        assert_eq!(decode(Codec::Raw, "2026-01-01 WARN low disk").level, "warn");
        assert_eq!(decode(Codec::Raw, "hello world").level, "info");
    }
}
