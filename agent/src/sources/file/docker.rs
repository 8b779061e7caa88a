//! Docker `json-file` log lines, as in
//! `/var/lib/docker/containers/<id>/<id>-json.log`:
//! `{"log":"hello\n","stream":"stdout","time":"2026-01-02T03:04:05.123456789Z"}`.
//!
//! Docker splits a line longer than 16 KiB into several entries; all but the
//! last lack the trailing `\n`, which [`DockerLine::partial`] reports so the
//! caller can join them.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// One json-file entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLine {
    /// The text, without its trailing `\n` (or `\r\n`).
    pub log: String,
    /// The text did not end in `\n`: Docker split a long line and the rest
    /// follows in the next entry.
    pub partial: bool,
    /// `"stdout"` or `"stderr"`; empty if absent.
    pub stream: String,
    /// `None` if absent or not RFC 3339.
    pub ts: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("not a docker json-file line: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Raw {
    log: String,
    stream: Option<String>,
    time: Option<String>,
}

/// Parse one line of a json-file log (a trailing newline is fine).
pub fn parse(line: &str) -> Result<DockerLine, DockerError> {
    let raw: Raw = serde_json::from_str(line)?;
    let (log, partial) = match raw.log.strip_suffix('\n') {
        Some(text) => (text.strip_suffix('\r').unwrap_or(text).to_string(), false),
        None => (raw.log, true),
    };
    let ts = raw.time.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
    Ok(DockerLine { log, partial, stream: raw.stream.unwrap_or_default(), ts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines() {
        let d = parse(r#"{"log":"hello\n","stream":"stdout","time":"2026-01-02T03:04:05.123456789Z"}"#).unwrap();
        assert_eq!(d.log, "hello");
        assert!(!d.partial);
        assert_eq!(d.stream, "stdout");
        let ts = d.ts.unwrap();
        assert_eq!(ts.to_rfc3339(), "2026-01-02T03:04:05.123456789+00:00");

        // nginx error log on stderr, with escapes, multi-byte text and CRLF.
        let d = parse(
            "{\"log\":\"2026/01/02 03:04:05 [error] 29#29: *1 open() \\\"/usr/share/nginx/html/caf\\u00e9 日本\\\" failed\\r\\n\",\
             \"stream\":\"stderr\",\"time\":\"2026-01-02T03:04:05.000000001Z\"}\n",
        )
        .unwrap();
        assert_eq!(d.log, "2026/01/02 03:04:05 [error] 29#29: *1 open() \"/usr/share/nginx/html/café 日本\" failed");
        assert_eq!((d.stream.as_str(), d.partial), ("stderr", false));

        // An empty line, and a JSON app log inside the log field.
        let d = parse(r#"{"log":"\n","stream":"stdout","time":"2026-01-02T03:04:05Z"}"#).unwrap();
        assert_eq!((d.log.as_str(), d.partial), ("", false));
        let d = parse(r#"{"log":"{\"level\":\"info\",\"msg\":\"ok\"}\n","stream":"stdout","time":"2026-01-02T03:04:05Z","attrs":{"tag":"web"}}"#).unwrap();
        assert_eq!(d.log, r#"{"level":"info","msg":"ok"}"#);
    }

    #[test]
    fn split_long_line() {
        let first = format!(r#"{{"log":"{}","stream":"stdout","time":"2026-01-02T03:04:05.1Z"}}"#, "a".repeat(16384));
        let d = parse(&first).unwrap();
        assert!(d.partial);
        assert_eq!(d.log.len(), 16384);
        let d = parse(r#"{"log":"tail\n","stream":"stdout","time":"2026-01-02T03:04:05.1Z"}"#).unwrap();
        assert!(!d.partial);
        // A CR not followed by LF is text.
        let d = parse(r#"{"log":"progress 50%\r","stream":"stdout"}"#).unwrap();
        assert_eq!((d.log.as_str(), d.partial), ("progress 50%\r", true));
    }

    #[test]
    fn odd_and_bad_lines() {
        let d = parse(r#"{"log":"x\n","time":"yesterday"}"#).unwrap();
        assert_eq!((d.stream.as_str(), d.ts), ("", None));
        let d = parse(r#"{"log":"x\n","stream":null,"time":null}"#).unwrap();
        assert_eq!((d.stream.as_str(), d.ts), ("", None));
        for bad in
            ["", "hello", r#"{"stream":"stdout"}"#, r#"{"log":42}"#, r#"{"log":"cut"#, "[]", r#"{"log":"x\n"} junk"#]
        {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("not a docker json-file line: "), "{bad}: {e}");
        }
    }
}
