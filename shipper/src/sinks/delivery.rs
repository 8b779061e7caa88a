//! Delivery for the external sinks (`http`, `loki`, `elasticsearch`,
//! `datadog_logs`, `file`, `stdout`):
//!
//! filter → send with a timeout (after any pause the sink's circuit
//! breaker asks for, see [`super::breaker`]) → on failure wait (exponential
//! backoff with full jitter, or the destination's `Retry-After`) and send
//! again, keeping the batch ours with progress acks → after `max_attempts` (or at once for
//! an error that retrying cannot fix) publish every message of the batch to
//! the dead-letter stream `flotilla.dlq.<sink>` with the error in headers,
//! each confirmed by a JetStream ack → only then ack the batch on the
//! source consumer and move on.
//!
//! At shutdown a failing batch is not retried further: it is nak'd and
//! JetStream redelivers it to the next shipper.

use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType, AckKind};
use async_nats::HeaderMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{sleep_or_shutdown, Backoff};
use crate::config::SinkConfig;
use crate::ledger::Ledger;

use super::breaker::Breaker;
use super::filter::Filter;
use super::{ack_all, Delivery, Sink, SinkMetrics};

/// The stream holding every sink's dead letters.
pub const DLQ_STREAM: &str = "FLOTILLA_DLQ";
/// Longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Longest error text put in a `Flotilla-Error` header.
const MAX_ERROR_LEN: usize = 1000;
/// Dead-letter publishes awaiting their JetStream ack at once.
const DLQ_IN_FLIGHT: usize = 512;

pub fn dlq_subject(sink: &str) -> String {
    format!("flotilla.dlq.{sink}")
}

/// Why one send attempt failed.
#[derive(Debug, Clone)]
pub struct SendError {
    pub message: String,
    /// The destination asked to wait this long (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    /// Retrying cannot help (e.g. HTTP 400): dead-letter at once.
    pub permanent: bool,
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> SendError {
        SendError { message: message.into(), retry_after: None, permanent: false }
    }
}

/// Timeouts and retries of one sink.
#[derive(Debug, Clone)]
pub struct Policy {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The consumer's ack_wait: a held batch is progress-acked well within it.
    pub ack_wait: Duration,
}

impl Policy {
    pub fn new(cfg: &SinkConfig) -> Policy {
        Policy {
            timeout: cfg.timeout(),
            max_attempts: cfg.max_attempts.max(1),
            initial_backoff: cfg.retry_initial_backoff(),
            max_backoff: cfg.retry_max_backoff(),
            ack_wait: cfg.ack_wait(),
        }
    }

    /// The ceiling of the wait after failed attempt `attempt` (1-based):
    /// `initial × 2^(attempt-1)`, at most `max_backoff`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// Full jitter: uniformly between 0 and the ceiling.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(rand::random_range(0.0..=1.0))
    }

    /// The wait before the next attempt: what the destination asked for
    /// (capped), else the jittered backoff.
    pub fn wait_after(&self, attempt: u32, err: &SendError) -> Duration {
        match err.retry_after {
            Some(d) => d.min(MAX_RETRY_AFTER),
            None => self.delay(attempt),
        }
    }
}

/// Create the dead-letter stream if missing; false if shutdown came first.
pub async fn ensure_dlq_stream(js: &jetstream::Context, shutdown: &CancellationToken) -> bool {
    let config = jetstream::stream::Config {
        name: DLQ_STREAM.into(),
        subjects: vec!["flotilla.dlq.>".into()],
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => return true,
            Err(e) => tracing::warn!(stream = DLQ_STREAM, error = %e, "cannot create the dead-letter stream; retrying"),
        }
        if !sleep_or_shutdown(backoff.next_delay(), shutdown).await {
            return false;
        }
    }
}

/// Deliver what `filter` keeps of `batch` (retrying, then dead-lettering),
/// then ack all of `batch`.
#[allow(clippy::too_many_arguments)]
pub async fn deliver_and_ack(
    sink: &Sink,
    js: &jetstream::Context,
    filter: &Filter,
    policy: &Policy,
    batch: Vec<Delivery>,
    metrics: &SinkMetrics,
    breaker: &Mutex<Breaker>,
    ledger: &Ledger,
    name: &str,
    shutdown: &CancellationToken,
) {
    let kept: Vec<&Delivery> = batch.iter().filter(|d| filter.keeps(&d.subject, &d.payload)).collect();
    let filtered = batch.len() - kept.len();
    let mut dead = 0;
    if !kept.is_empty() {
        let mut attempt = 0;
        let failure = loop {
            let pause = breaker.lock().unwrap_or_else(|p| p.into_inner()).wait_until();
            if let Some(until) = pause {
                if !hold(&batch, until, policy.ack_wait, shutdown).await {
                    tracing::warn!(
                        sink = name,
                        events = batch.len(),
                        "circuit open at shutdown; JetStream will redeliver the batch"
                    );
                    nak_all(&batch).await;
                    return;
                }
            }
            attempt += 1;
            let err = match tokio::time::timeout(policy.timeout, sink.send(&kept)).await {
                Ok(Ok(())) => {
                    breaker.lock().unwrap_or_else(|p| p.into_inner()).answered();
                    break None;
                }
                Ok(Err(e)) => e,
                Err(_) => SendError::retry(format!("timed out after {:?}", policy.timeout)),
            };
            {
                let mut b = breaker.lock().unwrap_or_else(|p| p.into_inner());
                // A refusal retrying cannot fix means the destination is up.
                if err.permanent {
                    b.answered();
                } else {
                    b.failed();
                }
            }
            metrics.commit_errors.inc();
            if err.permanent || attempt >= policy.max_attempts {
                break Some((attempt, err));
            }
            if shutdown.is_cancelled() {
                tracing::warn!(sink = name, events = batch.len(), error = %err.message, "send failed at shutdown; JetStream will redeliver the batch");
                nak_all(&batch).await;
                return;
            }
            let wait = policy.wait_after(attempt, &err);
            tracing::warn!(sink = name, events = kept.len(), attempt, error = %err.message, ?wait, "send failed; retrying");
            metrics.retries.inc();
            // Keep the batch ours while we wait.
            for d in &batch {
                let _ = d.acker.ack_with(AckKind::Progress).await;
            }
            // Shutdown cuts the wait short for one last attempt.
            sleep_or_shutdown(wait, shutdown).await;
        };
        if let Some((attempts, err)) = failure {
            tracing::error!(sink = name, events = kept.len(), attempts, error = %err.message, "giving up; sending the batch to the dead-letter stream");
            let error = format!("after {attempts} attempt(s): {}", err.message);
            if !dead_letter_until_done(js, name, &kept, &batch, &error, shutdown).await {
                nak_all(&batch).await;
                return;
            }
            dead = kept.len();
            metrics.dlq.add(dead as u64);
        }
    }
    match ack_all(&batch).await {
        // Delivered, dead-lettered or filtered out: settled either way.
        Ok(()) => ledger.committed(name, batch.iter().filter_map(|d| d.origin.as_ref())),
        // Redelivered and sent again: at-least-once.
        Err(e) => tracing::error!(sink = name, events = batch.len(), error = %e, "acks not confirmed after delivery"),
    }
    metrics.events_filtered.add(filtered as u64);
    let sent: Vec<&&Delivery> = if dead == 0 { kept.iter().collect() } else { Vec::new() };
    metrics.events_committed.add(sent.len() as u64);
    metrics.bytes_committed.add(sent.iter().map(|d| d.payload.len() as u64).sum());
}

/// Hold `batch` until `until`, progress-acking it so JetStream does not
/// redeliver it meanwhile; false if shutdown came first.
async fn hold(batch: &[Delivery], until: Instant, ack_wait: Duration, shutdown: &CancellationToken) -> bool {
    let step = (ack_wait / 3).max(Duration::from_millis(100));
    loop {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        for d in batch {
            let _ = d.acker.ack_with(AckKind::Progress).await;
        }
        if !sleep_or_shutdown((until - now).min(step), shutdown).await {
            return false;
        }
    }
}

/// Publish to the dead-letter stream, retrying until it is confirmed;
/// false if shutdown came first.
async fn dead_letter_until_done(
    js: &jetstream::Context,
    name: &str,
    kept: &[&Delivery],
    batch: &[Delivery],
    error: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match dead_letter(js, name, kept, error).await {
            Ok(()) => return true,
            Err(e) => tracing::error!(sink = name, error = %e, "cannot publish to the dead-letter stream; retrying"),
        }
        for d in batch {
            let _ = d.acker.ack_with(AckKind::Progress).await;
        }
        if !sleep_or_shutdown(backoff.next_delay(), shutdown).await {
            return false;
        }
    }
}

/// Publish each message to `flotilla.dlq.<sink>` with its original subject,
/// the sink and the error in headers; Ok once JetStream acked every one.
/// `Nats-Msg-Id` makes a repeated publish of the same message a no-op.
pub async fn dead_letter(
    js: &jetstream::Context,
    name: &str,
    kept: &[&Delivery],
    error: &str,
) -> Result<(), async_nats::Error> {
    let subject = dlq_subject(name);
    let error = header_text(error);
    for chunk in kept.chunks(DLQ_IN_FLIGHT) {
        let mut acks = Vec::with_capacity(chunk.len());
        for d in chunk {
            let mut headers = HeaderMap::new();
            headers.insert("Flotilla-Error", error.as_str());
            headers.insert("Flotilla-Sink", name);
            headers.insert("Flotilla-Subject", d.subject.as_str());
            headers.insert("Flotilla-Stream-Seq", d.stream_seq.to_string().as_str());
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{name}.{}", d.stream_seq).as_str());
            acks.push(js.publish_with_headers(subject.clone(), headers, d.payload.clone()).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}

/// One line of printable text, at most `MAX_ERROR_LEN` characters.
fn header_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_ERROR_LEN).collect()
}

async fn nak_all(batch: &[Delivery]) {
    for d in batch {
        let _ = d.acker.ack_with(AckKind::Nak(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            timeout: Duration::from_secs(1),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_with_full_jitter() {
        let p = policy();
        let ceilings: Vec<u128> = (1..=6).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter spreads over the whole range, not ±20%.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)), "{delays:?}");
        assert!(delays.iter().any(|d| *d > Duration::from_millis(300)), "{delays:?}");
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = policy();
        let e = |s| SendError { message: "429".into(), retry_after: Some(Duration::from_secs(s)), permanent: false };
        assert_eq!(p.wait_after(1, &e(3)), Duration::from_secs(3));
        assert_eq!(p.wait_after(1, &e(86_400)), MAX_RETRY_AFTER);
        assert!(p.wait_after(1, &SendError::retry("x")) <= Duration::from_millis(100));
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb\tc"), "a  b c");
        assert_eq!(header_text(&"x".repeat(5000)).len(), MAX_ERROR_LEN);
    }
}
