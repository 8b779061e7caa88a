//! The agent's Prometheus metrics.

use flotilla_core::metrics::{Counter, Gauge, Registry};

#[derive(Clone)]
pub struct AgentMetrics {
    pub registry: Registry,
    pub events_read: Counter,
    pub events_acked: Counter,
    pub events_duplicate: Counter,
    pub bytes_read: Counter,
    pub publish_errors: Counter,
    pub lines_split: Counter,
    pub invalid_utf8: Counter,
    pub files_skipped: Counter,
    pub files_tracked: Gauge,
    pub in_flight: Gauge,
}

impl AgentMetrics {
    pub fn new(r: Registry) -> Self {
        AgentMetrics {
            events_read: r.counter("flotilla_agent_events_read_total", "Events read from sources.", &[]),
            events_acked: r.counter("flotilla_agent_events_acked_total", "Events acknowledged by JetStream.", &[]),
            events_duplicate: r.counter("flotilla_agent_events_duplicate_total", "Resent events JetStream recognised as duplicates.", &[]),
            bytes_read: r.counter("flotilla_agent_bytes_read_total", "Bytes of lines read.", &[]),
            publish_errors: r.counter("flotilla_agent_publish_errors_total", "Publish rounds that failed and were retried.", &[]),
            lines_split: r.counter("flotilla_agent_lines_split_total", "Pieces of lines longer than max_line_bytes.", &[]),
            invalid_utf8: r.counter("flotilla_agent_invalid_utf8_total", "Lines with invalid UTF-8 (kept lossily, flagged).", &[]),
            files_skipped: r.counter("flotilla_agent_files_skipped_total", "Files whose path names no valid org.", &[]),
            files_tracked: r.gauge("flotilla_agent_files_tracked", "Files being tailed.", &[]),
            in_flight: r.gauge("flotilla_agent_in_flight", "Publishes awaiting their ack.", &[]),
            registry: r,
        }
    }
}
