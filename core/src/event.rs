//! The log event as it travels on NATS (JSON, one event per message).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One log line, enriched. Serialised as
/// `{"ts":"2026-11-21T23:01:15.123456789Z","org":"acme","app":"web",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    pub ts: DateTime<Utc>,
    pub org: String,
    pub app: String,
    pub region: String,
    pub host: String,
    pub source: String,
    pub level: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// Per-source sequence number (1-based) assigned by the agent.
    #[serde(default)]
    pub seq: u64,
}

impl LogEvent {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, maps of JSON values and numbers
        // cannot fail; fall back to an empty object rather than panic.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The same event, borrowed: writes exactly the JSON of [`LogEvent`]
/// without copying its strings (the agent's hot path). `raw_fields`, when
/// given, is the fields object as JSON text and replaces `fields`.
#[derive(Debug)]
pub struct LogEventRef<'a> {
    pub ts: DateTime<Utc>,
    pub org: &'a str,
    pub app: &'a str,
    pub region: &'a str,
    pub host: &'a str,
    pub source: &'a str,
    pub level: &'a str,
    pub message: &'a str,
    pub fields: &'a Map<String, Value>,
    pub raw_fields: Option<&'a str>,
    pub seq: u64,
}

impl LogEventRef<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        let raw_len = self.raw_fields.map_or(0, str::len);
        let mut out = Vec::with_capacity(192 + self.message.len() + self.source.len() + raw_len);
        // Writing strings, a timestamp and JSON values into a Vec cannot fail.
        out.extend_from_slice(b"{\"ts\":");
        let _ = serde_json::to_writer(&mut out, &self.ts);
        let parts = [
            ("org", self.org),
            ("app", self.app),
            ("region", self.region),
            ("host", self.host),
            ("source", self.source),
            ("level", self.level),
            ("message", self.message),
        ];
        for (key, value) in parts {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            let _ = serde_json::to_writer(&mut out, value);
        }
        match self.raw_fields {
            Some(raw) if !raw.is_empty() => {
                out.extend_from_slice(b",\"fields\":");
                out.extend_from_slice(raw.as_bytes());
            }
            _ if !self.fields.is_empty() => {
                out.extend_from_slice(b",\"fields\":");
                let _ = serde_json::to_writer(&mut out, self.fields);
            }
            _ => {}
        }
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_form_writes_the_same_json() {
        let json = r#"{"ts":"2026-11-21T23:01:15.123456789Z","org":"acme","app":"web","region":"iad","host":"h1","source":"file:/x","level":"info","message":"a \"quoted\" line","fields":{"n":1},"seq":7}"#;
        let ev = LogEvent::from_json(json.as_bytes()).unwrap();
        let r = LogEventRef {
            ts: ev.ts,
            org: &ev.org,
            app: &ev.app,
            region: &ev.region,
            host: &ev.host,
            source: &ev.source,
            level: &ev.level,
            message: &ev.message,
            fields: &ev.fields,
            raw_fields: None,
            seq: ev.seq,
        };
        assert_eq!(r.to_json(), ev.to_json());
        let empty = Map::new();
        let raw = LogEventRef { fields: &empty, raw_fields: Some(r#"{"n":1}"#), ..r };
        assert_eq!(raw.to_json(), ev.to_json());
        let none = LogEventRef { fields: &empty, raw_fields: Some(""), ..raw };
        let back = LogEvent::from_json(&none.to_json()).unwrap();
        assert!(back.fields.is_empty());
    }

    #[test]
    fn round_trips_as_design_json() {
        let json = r#"{"ts":"2026-11-21T23:01:15.123456789Z","org":"acme","app":"web","region":"iad","host":"h1","source":"file:/var/log/web/app.log","level":"info","message":"hello","fields":{"status":200},"seq":42}"#;
        let ev = LogEvent::from_json(json.as_bytes()).unwrap();
        assert_eq!(ev.seq, 42);
        assert_eq!(ev.fields["status"], 200);
        assert_eq!(String::from_utf8(ev.to_json()).unwrap(), json);
    }
}
