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
    /// org, app, region, host and source, as [`origin_json`] wrote them.
    pub origin: &'a [u8],
    pub level: &'a str,
    pub message: &'a str,
    /// The message as JSON string text, written as it is instead of `message`.
    pub raw_message: Option<&'a str>,
    pub fields: &'a Map<String, Value>,
    pub raw_fields: Option<&'a str>,
    pub seq: u64,
}

/// `,"org":…,"app":…,"region":…,"host":…,"source":…`: the part of an
/// event's JSON that every event from one origin shares, written once per
/// origin and copied into each event by [`LogEventRef::to_json`].
pub fn origin_json(org: &str, app: &str, region: &str, host: &str, source: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + org.len() + app.len() + region.len() + host.len() + source.len());
    for (key, value) in [("org", org), ("app", app), ("region", region), ("host", host), ("source", source)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        let _ = serde_json::to_writer(&mut out, value);
    }
    out
}

impl LogEventRef<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        let raw_len = self.raw_fields.map_or(0, str::len);
        let mut out = Vec::with_capacity(96 + self.origin.len() + self.message.len() + raw_len);
        // Writing strings, a timestamp and JSON values into a Vec cannot fail.
        out.extend_from_slice(b"{\"ts\":");
        write_ts(&mut out, &self.ts);
        out.extend_from_slice(self.origin);
        out.extend_from_slice(b",\"level\":");
        let _ = serde_json::to_writer(&mut out, self.level);
        out.extend_from_slice(b",\"message\":");
        match self.raw_message {
            Some(raw) => out.extend_from_slice(raw.as_bytes()),
            None => {
                let _ = serde_json::to_writer(&mut out, self.message);
            }
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
        write_u64(&mut out, self.seq);
        out.push(b'}');
        out
    }
}

/// `ts` as chrono's serde writes it (RFC 3339, `Z`, 0/3/6/9 fraction
/// digits), without going through `fmt`.
fn write_ts(out: &mut Vec<u8>, ts: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let nanos = ts.nanosecond();
    let year = ts.year();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Leap seconds and far-away years: the general path.
        let _ = serde_json::to_writer(&mut *out, ts);
        return;
    }
    out.push(b'"');
    push_digits(out, year as u32, 4);
    out.push(b'-');
    push_digits(out, ts.month(), 2);
    out.push(b'-');
    push_digits(out, ts.day(), 2);
    out.push(b'T');
    push_digits(out, ts.hour(), 2);
    out.push(b':');
    push_digits(out, ts.minute(), 2);
    out.push(b':');
    push_digits(out, ts.second(), 2);
    if nanos != 0 {
        out.push(b'.');
        if nanos.is_multiple_of(1_000_000) {
            push_digits(out, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            push_digits(out, nanos / 1_000, 6);
        } else {
            push_digits(out, nanos, 9);
        }
    }
    out.extend_from_slice(b"Z\"");
}

/// `n` as exactly `width` (at most 9) decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let mut buf = [b'0'; 9];
    for i in (0..width).rev() {
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(crate::decimal(n, &mut [0; 20]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_form_writes_the_same_json() {
        let json = r#"{"ts":"2026-11-21T23:01:15.123456789Z","org":"acme","app":"web","region":"iad","host":"h1","source":"file:/x","level":"info","message":"a \"quoted\" line","fields":{"n":1},"seq":7}"#;
        let ev = LogEvent::from_json(json.as_bytes()).unwrap();
        let origin = origin_json(&ev.org, &ev.app, &ev.region, &ev.host, &ev.source);
        let r = LogEventRef {
            ts: ev.ts,
            origin: &origin,
            level: &ev.level,
            message: &ev.message,
            raw_message: None,
            fields: &ev.fields,
            raw_fields: None,
            seq: ev.seq,
        };
        assert_eq!(r.to_json(), ev.to_json());
        let quoted = serde_json::to_string(&ev.message).unwrap();
        let raw_msg = LogEventRef { message: "ignored", raw_message: Some(&quoted), ..r };
        assert_eq!(raw_msg.to_json(), ev.to_json());
        let empty = Map::new();
        let raw = LogEventRef { fields: &empty, raw_fields: Some(r#"{"n":1}"#), ..r };
        assert_eq!(raw.to_json(), ev.to_json());
        let none = LogEventRef { fields: &empty, raw_fields: Some(""), ..raw };
        let back = LogEvent::from_json(&none.to_json()).unwrap();
        assert!(back.fields.is_empty());
    }

    #[test]
    fn timestamps_and_numbers_are_written_as_serde_writes_them() {
        use chrono::TimeZone;
        let base = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let nanos = [0, 1, 999, 1_000, 120_000, 123_456_000, 5_000_000, 100_000_000, 123_456_789, 999_999_999];
        let mut stamps: Vec<DateTime<Utc>> = nanos.iter().map(|n| base + chrono::Duration::nanoseconds(*n)).collect();
        stamps.push(Utc.with_ymd_and_hms(1, 12, 31, 23, 59, 59).unwrap());
        stamps.push(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap());
        stamps.push(Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap());
        stamps.push(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap());
        for ts in stamps {
            let mut out = Vec::new();
            write_ts(&mut out, &ts);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&ts).unwrap());
        }
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
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
