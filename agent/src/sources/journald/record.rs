//! One line of `journalctl -o json` output, parsed.
//!
//! journalctl writes one JSON object per entry. Field values are strings,
//! except: a value that is not printable UTF-8 is an array of byte values;
//! a field present several times in an entry is an array of its values;
//! a value too large to show (over 4096 bytes unless `--all`) is `null`.
//!
//! [`JournalRecord::fields`] keeps a few useful fields under short names:
//!
//! | journald            | field       |
//! |---------------------|-------------|
//! | `_PID`              | `pid`       |
//! | `_UID`              | `uid`       |
//! | `_HOSTNAME`         | `hostname`  |
//! | `_COMM`             | `comm`      |
//! | `_EXE`              | `exe`       |
//! | `_TRANSPORT`        | `transport` |
//! | `_BOOT_ID`          | `boot_id`   |
//! | `_SYSTEMD_USER_UNIT`| `user_unit` |
//! | `SYSLOG_FACILITY`   | `facility` (its name, e.g. `"auth"`) |
//! | `CODE_FILE`, `CODE_LINE`, `CODE_FUNC` | `code_file`, `code_line`, `code_func` |
//! | `CONTAINER_NAME`    | `container_name` |
//! | `ERRNO`             | `errno`     |
//!
//! `MESSAGE` that journalctl left out as `null` gives an empty message and
//! `fields.message_omitted = true`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use flotilla_core::codec::syslog::{facility_name, severity_level};

/// One journal entry.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRecord {
    /// `__CURSOR`: where to resume (`journalctl --after-cursor`).
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`: when journald received the entry.
    pub ts: DateTime<Utc>,
    /// `MESSAGE`, empty when absent or omitted; invalid UTF-8 replaced by U+FFFD.
    pub message: String,
    /// `MESSAGE` was bytes that are not valid UTF-8.
    pub invalid_utf8: bool,
    /// From `PRIORITY` (a syslog severity); `"info"` when absent or invalid.
    pub level: &'static str,
    /// `_SYSTEMD_UNIT`.
    pub unit: Option<String>,
    /// `SYSLOG_IDENTIFIER`.
    pub identifier: Option<String>,
    /// A few useful fields; see the module docs.
    pub fields: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid __REALTIME_TIMESTAMP {0:?}: expected microseconds since the epoch")]
    Timestamp(String),
}

/// Kept fields: journald name → name in `fields`.
const KEPT: &[(&str, &str)] = &[
    ("_PID", "pid"),
    ("_UID", "uid"),
    ("_HOSTNAME", "hostname"),
    ("_COMM", "comm"),
    ("_EXE", "exe"),
    ("_TRANSPORT", "transport"),
    ("_BOOT_ID", "boot_id"),
    ("_SYSTEMD_USER_UNIT", "user_unit"),
    ("CODE_FILE", "code_file"),
    ("CODE_LINE", "code_line"),
    ("CODE_FUNC", "code_func"),
    ("CONTAINER_NAME", "container_name"),
    ("ERRNO", "errno"),
];

/// Parse one line (a trailing newline is fine).
pub fn parse(line: &[u8]) -> Result<JournalRecord, JournalError> {
    let Value::Object(mut obj) = serde_json::from_slice::<Value>(line)? else {
        return Err(JournalError::NotAnObject);
    };
    let cursor = obj.remove("__CURSOR").and_then(|v| text(&v)).ok_or(JournalError::Missing("__CURSOR"))?.0;
    let ts = match obj.remove("__REALTIME_TIMESTAMP") {
        None | Some(Value::Null) => return Err(JournalError::Missing("__REALTIME_TIMESTAMP")),
        Some(v) => realtime(&v)
            .ok_or_else(|| JournalError::Timestamp(v.as_str().map_or_else(|| v.to_string(), String::from)))?,
    };
    let mut fields = Map::new();
    let (message, invalid_utf8) = match obj.remove("MESSAGE") {
        None => (String::new(), false),
        Some(Value::Null) => {
            fields.insert("message_omitted".into(), Value::Bool(true));
            (String::new(), false)
        }
        Some(v) => text(&v).map(|(s, valid)| (s, !valid)).unwrap_or_default(),
    };
    let level = obj
        .get("PRIORITY")
        .and_then(text)
        .and_then(|(p, _)| p.parse::<u8>().ok())
        .filter(|p| *p <= 7)
        .map_or("info", severity_level);
    let unit = obj.remove("_SYSTEMD_UNIT").and_then(|v| text(&v)).map(|t| t.0);
    let identifier = obj.remove("SYSLOG_IDENTIFIER").and_then(|v| text(&v)).map(|t| t.0);
    for (from, to) in KEPT {
        if let Some((s, _)) = obj.get(*from).and_then(text) {
            fields.insert((*to).into(), Value::String(s));
        }
    }
    if let Some(f) = obj.get("SYSLOG_FACILITY").and_then(text).and_then(|(f, _)| f.parse::<u8>().ok()) {
        fields.insert("facility".into(), Value::String(facility_name(f).into()));
    }
    Ok(JournalRecord { cursor, ts, message, invalid_utf8, level, unit, identifier, fields })
}

/// A journald value as text and whether it was valid UTF-8: a string, an
/// array of byte values, or (a field repeated in the entry) the first of
/// an array of those.
fn text(v: &Value) -> Option<(String, bool)> {
    match v {
        Value::String(s) => Some((s.clone(), true)),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> =
                items.iter().filter_map(Value::as_u64).map(|b| u8::try_from(b).ok()).collect::<Option<_>>()?;
            match String::from_utf8(bytes) {
                Ok(s) => Some((s, true)),
                Err(e) => Some((String::from_utf8_lossy(e.as_bytes()).into_owned(), false)),
            }
        }
        Value::Array(items) => items.first().and_then(text),
        Value::Number(n) => Some((n.to_string(), true)),
        _ => None,
    }
}

/// Microseconds since the epoch, as journalctl writes them (a string).
fn realtime(v: &Value) -> Option<DateTime<Utc>> {
    let micros = match v {
        Value::String(s) => s.parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    DateTime::from_timestamp_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like `journalctl -o json` on Debian 12 (systemd 252).
    const SSHD: &str = r#"{"_SYSTEMD_SLICE":"system.slice","__MONOTONIC_TIMESTAMP":"5328193221","_CAP_EFFECTIVE":"1ffffffffff","PRIORITY":"6","_SOURCE_REALTIME_TIMESTAMP":"1767323045123400","_PID":"20571","_EXE":"/usr/sbin/sshd","SYSLOG_TIMESTAMP":"Jan  2 03:04:05 ","_SYSTEMD_INVOCATION_ID":"4b4b5c2c2a7f4d7f8f1c0f8a0d6e9b11","_MACHINE_ID":"2f0f3e2c9b7a4c1e8d6b5a4f3e2d1c0b","_SYSTEMD_CGROUP":"/system.slice/ssh.service","_TRANSPORT":"syslog","_UID":"0","_GID":"0","SYSLOG_PID":"20571","MESSAGE":"Accepted publickey for deploy from 10.0.4.7 port 51122 ssh2: ED25519 SHA256:Ck3b…","__REALTIME_TIMESTAMP":"1767323045123456","_COMM":"sshd","SYSLOG_FACILITY":"4","_CMDLINE":"sshd: deploy [priv]","_HOSTNAME":"web-1","_BOOT_ID":"9d1b7c3e6f0a4b2c8e5d7f1a3b6c9e0d","SYSLOG_IDENTIFIER":"sshd","_SYSTEMD_UNIT":"ssh.service","__CURSOR":"s=8c3e0e1b5f2a4d6c9b7e1f3a5c7d9e0b;i=1a2f3;b=9d1b7c3e6f0a4b2c8e5d7f1a3b6c9e0d;m=13d9b4a85;t=64737e1c0b2c0;x=7f8e9d0c1b2a3948"}"#;

    #[test]
    fn a_syslog_entry() {
        let r = parse(format!("{SSHD}\n").as_bytes()).unwrap();
        assert!(r.cursor.starts_with("s=8c3e0e1b"));
        assert_eq!(r.ts.to_rfc3339(), "2026-01-02T03:04:05.123456+00:00");
        assert!(r.message.starts_with("Accepted publickey for deploy"));
        assert!(!r.invalid_utf8);
        assert_eq!(r.level, "info");
        assert_eq!(r.unit.as_deref(), Some("ssh.service"));
        assert_eq!(r.identifier.as_deref(), Some("sshd"));
        assert_eq!(r.fields["pid"], "20571");
        assert_eq!(r.fields["hostname"], "web-1");
        assert_eq!(r.fields["comm"], "sshd");
        assert_eq!(r.fields["transport"], "syslog");
        assert_eq!(r.fields["facility"], "auth");
        assert_eq!(r.fields["exe"], "/usr/sbin/sshd");
        assert!(!r.fields.contains_key("_CMDLINE"));
    }

    #[test]
    fn binary_message_from_stdout() {
        // A service printing ANSI colours: journald stores bytes, one invalid (0xff).
        let line = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1767323045000000","PRIORITY":"3","_TRANSPORT":"stdout","_SYSTEMD_UNIT":"worker.service","SYSLOG_IDENTIFIER":"worker","MESSAGE":[27,91,51,49,109,69,82,82,27,91,48,109,32,255,98,97,100],"_PID":"812"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert!(r.invalid_utf8);
        assert_eq!(r.message, "\u{1b}[31mERR\u{1b}[0m \u{fffd}bad");
        assert_eq!(r.level, "error");
        assert_eq!(r.fields["transport"], "stdout");
        // Bytes that are valid UTF-8 (journald arrays control characters too).
        let line = r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"0","MESSAGE":[104,105,9,226,130,172]}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!((r.message.as_str(), r.invalid_utf8), ("hi\t€", false));
    }

    #[test]
    fn missing_null_and_repeated_message() {
        // The kernel's audit entries carry no MESSAGE.
        let line = r#"{"__CURSOR":"s=a;i=9","__REALTIME_TIMESTAMP":"1767323045000001","_TRANSPORT":"audit","_AUDIT_TYPE":"1400","_HOSTNAME":"h","SYSLOG_IDENTIFIER":"audit"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!((r.message.as_str(), r.invalid_utf8, r.level), ("", false, "info"));
        assert_eq!(r.unit, None);
        assert!(!r.fields.contains_key("message_omitted"));
        // Too large for journalctl without --all.
        let line = r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1767323045000001","MESSAGE":null,"PRIORITY":"4"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!((r.message.as_str(), r.level), ("", "warn"));
        assert_eq!(r.fields["message_omitted"], true);
        // A field repeated in one entry.
        let line = r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","MESSAGE":["first",[115,101,99]],"PRIORITY":"9"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!((r.message.as_str(), r.level), ("first", "info"));
    }

    #[test]
    fn kernel_entry() {
        let line = r#"{"__CURSOR":"s=k;i=1","__REALTIME_TIMESTAMP":"1767323045999999","_TRANSPORT":"kernel","PRIORITY":"2","SYSLOG_FACILITY":"0","SYSLOG_IDENTIFIER":"kernel","MESSAGE":"Out of memory: Killed process 4242 (java)","_BOOT_ID":"b"}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.level, "fatal");
        assert_eq!(r.fields["facility"], "kern");
        assert_eq!(r.fields["boot_id"], "b");
        assert_eq!(r.ts.timestamp_subsec_micros(), 999_999);
    }

    #[test]
    fn malformed_lines() {
        assert!(matches!(parse(b"not json"), Err(JournalError::Json(_))));
        assert!(matches!(parse(b"{\"__CURSOR\":\"c\""), Err(JournalError::Json(_))));
        assert!(matches!(parse(b"[1,2]"), Err(JournalError::NotAnObject)));
        assert!(matches!(parse(b"{}"), Err(JournalError::Missing("__CURSOR"))));
        assert!(matches!(
            parse(br#"{"__CURSOR":"c","MESSAGE":"x"}"#),
            Err(JournalError::Missing("__REALTIME_TIMESTAMP"))
        ));
        let e = parse(br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"soon"}"#).unwrap_err();
        assert_eq!(e.to_string(), "invalid __REALTIME_TIMESTAMP \"soon\": expected microseconds since the epoch");
        assert!(matches!(
            parse(br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"99999999999999999999"}"#),
            Err(JournalError::Timestamp(_))
        ));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(JournalError::Json(_))));
        // Bytes out of range are not a message; the entry still parses.
        let r = parse(br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","MESSAGE":[300]}"#).unwrap();
        assert_eq!(r.message, "");
    }
}
