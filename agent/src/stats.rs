//! Per-source counters, shared by the source, the `/metrics` endpoint and
//! the status heartbeat.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use flotilla_core::metrics::{Counter, Gauge, Registry};

pub struct SourceStats {
    pub name: String,
    pub kind: &'static str,
    pub read: Counter,
    pub bytes_read: Counter,
    pub published: Counter,
    pub acked: Counter,
    pub duplicates: Counter,
    pub publish_errors: Counter,
    pub dropped_rate_limit: Counter,
    pub dropped_queue_full: Counter,
    pub split_lines: Counter,
    pub invalid_utf8: Counter,
    pub in_flight: Gauge,
    /// Bytes of tailed files not yet acknowledged, or unacked queue bytes.
    pub lag_bytes: Gauge,
    /// Highest sequence acknowledged (queue-backed sources).
    high_water: AtomicU64,
    /// Per file: the acknowledged sequence (file sources).
    files: Mutex<BTreeMap<String, FileStatus>>,
    /// The subjects the source published to, `*` where they differed
    /// (queue-backed sources).
    subject: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileStatus {
    pub path: String,
    /// The file incarnation's nonce (see the file source).
    pub nonce: String,
    /// The last acknowledged event's seq (dropped events consume seqs).
    pub acked_seq: u64,
    /// The last acknowledged event that was published, not dropped: the
    /// completeness ledger's high-water for this file.
    pub published_seq: u64,
    /// The subject the file's events go to.
    pub subject: String,
}

/// A source's line in the status heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub kind: &'static str,
    pub read: u64,
    pub acked: u64,
    /// Highest acknowledged sequence (queue-backed sources; rate-limited
    /// and queue-full drops consume no sequence number).
    pub high_water: u64,
    /// The subjects of the source's events, `*` for a token that varies
    /// (queue-backed sources; files report their own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub dropped_rate_limit: u64,
    pub dropped_queue_full: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileStatus>,
}

impl SourceStats {
    pub fn new(registry: &Registry, name: &str, kind: &'static str) -> SourceStats {
        let l = [("source", name)];
        let dropped = |reason: &str| {
            registry.counter(
                "flotilla_agent_events_dropped_total",
                "Events dropped, by reason (always counted, never silent).",
                &[("source", name), ("reason", reason)],
            )
        };
        SourceStats {
            name: name.into(),
            kind,
            read: registry.counter("flotilla_agent_events_read_total", "Events read from sources.", &l),
            bytes_read: registry.counter("flotilla_agent_bytes_read_total", "Bytes read from sources.", &l),
            published: registry.counter(
                "flotilla_agent_events_published_total",
                "Events handed to NATS (resends included).",
                &l,
            ),
            acked: registry.counter("flotilla_agent_events_acked_total", "Events acknowledged by JetStream.", &l),
            duplicates: registry.counter(
                "flotilla_agent_events_duplicate_total",
                "Resent events JetStream recognised as duplicates.",
                &l,
            ),
            publish_errors: registry.counter(
                "flotilla_agent_publish_errors_total",
                "Publishes or acks that failed and were retried.",
                &l,
            ),
            dropped_rate_limit: dropped("rate_limit"),
            dropped_queue_full: dropped("queue_full"),
            split_lines: registry.counter(
                "flotilla_agent_lines_split_total",
                "Pieces of lines longer than the limit.",
                &l,
            ),
            invalid_utf8: registry.counter(
                "flotilla_agent_invalid_utf8_total",
                "Lines with invalid UTF-8 (kept lossily, flagged).",
                &l,
            ),
            in_flight: registry.gauge("flotilla_agent_in_flight", "Publishes awaiting their ack.", &l),
            lag_bytes: registry.gauge(
                "flotilla_agent_checkpoint_lag_bytes",
                "Bytes read or queued but not yet acknowledged.",
                &l,
            ),
            high_water: AtomicU64::new(0),
            files: Mutex::new(BTreeMap::new()),
            subject: Mutex::new(None),
        }
    }

    /// An event went to `subject`: widen the reported subject pattern if
    /// it is not covered yet (no allocation when it is).
    pub fn note_subject(&self, subject: &str) {
        let mut cur = self.subject.lock().unwrap_or_else(|p| p.into_inner());
        match cur.as_mut() {
            Some(pattern) if flotilla_core::subject::subject_matches(pattern, subject) => {}
            Some(pattern) => *pattern = widen(pattern, subject),
            None => *cur = Some(subject.to_string()),
        }
    }

    pub fn set_high_water(&self, seq: u64) {
        self.high_water.fetch_max(seq, Ordering::Relaxed);
    }

    pub fn set_file(&self, key: &str, status: FileStatus) {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), status);
    }

    pub fn remove_file(&self, key: &str) {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn report(&self) -> SourceReport {
        SourceReport {
            name: self.name.clone(),
            kind: self.kind,
            read: self.read.get(),
            acked: self.acked.get(),
            high_water: self.high_water.load(Ordering::Relaxed),
            subject: self.subject.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            dropped_rate_limit: self.dropped_rate_limit.get(),
            dropped_queue_full: self.dropped_queue_full.get(),
            files: self.files.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// The narrowest pattern matching both `pattern` and `subject`: tokens that
/// differ become `*`, a differing length ends in `>`.
fn widen(pattern: &str, subject: &str) -> String {
    let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), subject.split('.').collect());
    let open = p.len() != s.len() || p.last() == Some(&">");
    let n = if open { p.len().min(s.len()).saturating_sub(1) } else { p.len() };
    let mut out: Vec<&str> = p.iter().zip(&s).take(n).map(|(a, b)| if a == b { *a } else { "*" }).collect();
    if open {
        out.push(">");
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_patterns_widen() {
        let r = flotilla_core::metrics::Registry::default();
        let s = super::SourceStats::new(&r, "s", "syslog");
        s.note_subject("logs.a.web.r.h");
        s.note_subject("logs.a.web.r.h");
        assert_eq!(s.report().subject.as_deref(), Some("logs.a.web.r.h"));
        s.note_subject("logs.a.db.r.h");
        assert_eq!(s.report().subject.as_deref(), Some("logs.a.*.r.h"));
        s.note_subject("logs.a.x.r.h");
        assert_eq!(s.report().subject.as_deref(), Some("logs.a.*.r.h"));
        assert_eq!(super::widen("a.b", "a.b.c"), "a.>");
        assert_eq!(super::widen("a.b.>", "a.c.d.e"), "a.*.>");
    }
}
