//! `flotilla-shipper audit`: the stored books of each sink, as a table of
//! gaps (or JSON). Reads what the running shipper stored (every few
//! seconds), so it agrees with `flotilla_sink_missing_events`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::store;
use crate::config::Config;

/// Missing ranges listed per stream.
pub const MAX_GAPS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("no sink named {0:?} in the config")]
    NoSuchSink(String),
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// One origin stream of one host, as one sink's books have it.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub sink: String,
    pub host: String,
    pub source: String,
    /// `f/<nonce>` (a file incarnation) or the source name.
    pub stream: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub subject: String,
    pub high_water: u64,
    pub missing: u64,
    /// The lowest missing ranges (inclusive), at most [`MAX_GAPS`].
    pub gaps: Vec<(u64, u64)>,
    /// When the shipper stored these books.
    pub saved: DateTime<Utc>,
}

/// Every tracked stream of the configured sinks (or of `sink`).
pub async fn audit(config: &Config, sink: Option<&str>) -> Result<Vec<Line>, AuditError> {
    if let Some(s) = sink {
        if !config.sinks.iter().any(|c| c.name == s) {
            return Err(AuditError::NoSuchSink(s.to_string()));
        }
    }
    let mut opts = async_nats::ConnectOptions::new().name("flotilla-shipper audit");
    if let Some(user) = &config.nats.user {
        opts = opts.user_and_password(user.clone(), config.nats.password.clone().unwrap_or_default());
    }
    opts = config.nats.tls_files().apply(opts);
    let connect = |message: String| AuditError::Connect { url: config.nats.url.clone(), message };
    let client =
        tokio::time::timeout(std::time::Duration::from_secs(10), flotilla_core::nats::connect(opts, &config.nats.url))
            .await
            .map_err(|_| connect("timed out".into()))?
            .map_err(connect)?;
    let js = async_nats::jetstream::new(client);
    // No bucket: the shipper never ran, nothing is known to be missing.
    let Ok(kv) = store::open(&js, false).await else {
        return Ok(Vec::new());
    };
    let mut lines = Vec::new();
    for cfg in config.sinks.iter().filter(|c| sink.is_none_or(|s| s == c.name)) {
        for ((sink, host), record) in store::load(&kv, Some(&cfg.name)).await? {
            for (stream, book) in record.streams.iter().filter(|(_, b)| b.high_water > 0) {
                lines.push(Line {
                    sink: sink.clone(),
                    host: host.clone(),
                    source: book.source.clone(),
                    stream: stream.clone(),
                    path: book.path.clone(),
                    subject: book.subject.clone(),
                    high_water: book.high_water,
                    missing: book.missing(),
                    gaps: book.gaps(MAX_GAPS),
                    saved: record.saved,
                });
            }
        }
    }
    Ok(lines)
}

/// The human form: one row per stream with missing events, then a summary.
pub fn table(lines: &[Line]) -> String {
    let missing: Vec<&Line> = lines.iter().filter(|l| l.missing > 0).collect();
    let mut out = String::new();
    if !missing.is_empty() {
        let rows: Vec<[String; 7]> = missing
            .iter()
            .map(|l| {
                let stream = if l.path.is_empty() { l.stream.clone() } else { format!("{} ({})", l.stream, l.path) };
                [
                    l.sink.clone(),
                    l.host.clone(),
                    l.source.clone(),
                    stream,
                    l.high_water.to_string(),
                    l.missing.to_string(),
                    ranges(&l.gaps, l.missing),
                ]
            })
            .collect();
        let head = ["SINK", "HOST", "SOURCE", "STREAM", "HIGH-WATER", "MISSING", "MISSING SEQS"];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let mut row = |cells: &[&str]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    let _ = write!(s, "{c:<w$}  ", w = widths[i]);
                }
            }
            let _ = writeln!(out, "{}", s.trim_end());
        };
        row(&head);
        for r in &rows {
            row(&r.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    let total: u64 = missing.iter().map(|l| l.missing).sum();
    let sinks = lines.iter().map(|l| &l.sink).collect::<std::collections::BTreeSet<_>>().len();
    let hosts = lines.iter().map(|l| &l.host).collect::<std::collections::BTreeSet<_>>().len();
    let _ = writeln!(
        out,
        "{total} missing events in {} of {} streams ({hosts} hosts, {sinks} sinks checked)",
        missing.len(),
        lines.len()
    );
    out
}

/// `4-5, 8, 11-12` and `…` when more ranges than listed are missing.
fn ranges(gaps: &[(u64, u64)], missing: u64) -> String {
    let mut s: Vec<String> =
        gaps.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    let listed: u64 = gaps.iter().map(|(a, b)| b - a + 1).sum();
    if listed < missing {
        s.push("…".into());
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gaps() {
        let line = |host: &str, missing, gaps: Vec<(u64, u64)>| Line {
            sink: "archive".into(),
            host: host.into(),
            source: "app".into(),
            stream: "f/00ab".into(),
            path: "/var/log/a.log".into(),
            subject: "logs.o.a.r.h".into(),
            high_water: 12,
            missing,
            gaps,
            saved: Utc::now(),
        };
        let t = table(&[line("h1", 3, vec![(4, 5), (8, 8)]), line("h2", 0, vec![])]);
        assert!(t.contains("archive  h1    app     f/00ab (/var/log/a.log)  12          3        4-5, 8\n"), "{t}");
        assert!(t.ends_with("3 missing events in 1 of 2 streams (2 hosts, 1 sinks checked)\n"), "{t}");
        assert_eq!(ranges(&[(1, 2)], 5), "1-2, …");
        assert_eq!(table(&[]), "0 missing events in 0 of 0 streams (0 hosts, 0 sinks checked)\n");
    }
}
