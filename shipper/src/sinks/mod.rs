//! Sinks. Each sink reads its own durable pull consumer `flotilla-<name>`,
//! so a slow or failing sink never stalls another:
//!
//! fetch → hold until `batch_max_events`, `batch_max_bytes` or
//! `batch_max_age` → hand the batch on → fetch again.
//!
//! A message is acked only after the sink committed it. The Parquet sink
//! writes batches into objects it keeps open and acks their messages when
//! an object is complete ([`parquet::objects`]); a failed object's
//! messages are redelivered. The external sinks (`http`, `file`, `stdout`,
//! ...) go through [`delivery`]: filters, timeouts, bounded retries, then
//! the dead-letter stream, then the ack. On shutdown a sink stops fetching,
//! commits what it holds and acks it. Any sink may be slowed by a rate
//! limit ([`ratelimit`]), which delays its next pull.

pub mod breaker;
pub mod delivery;
pub mod file;
pub mod filter;
pub mod http;
pub mod nats;
pub mod parquet;
pub mod ratelimit;
pub mod stdout;

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    message::Acker,
};
use async_nats::subject::Subject;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use flotilla_core::metrics::{Counter, Histogram, Registry, LATENCY_BUCKETS, SIZE_BUCKETS};

use crate::backoff::{sleep_or_shutdown, Backoff};
use crate::commitlog::CommitLog;
use crate::config::SinkConfig;
use crate::ledger::{Ledger, Origin};

/// Longest a single pull request waits on the server; idle sinks cost one
/// request per this interval.
const FETCH_EXPIRY: Duration = Duration::from_secs(1);

/// One JetStream message held by a sink until it is committed.
pub struct Delivery {
    pub subject: String,
    pub payload: Bytes,
    /// Sequence of the message in its stream.
    pub stream_seq: u64,
    /// When JetStream stored the message.
    pub stored: DateTime<Utc>,
    /// The agent origin, for the completeness ledger.
    pub origin: Option<Origin>,
    /// Where acks go (`$JS.ACK...`).
    pub reply: Subject,
    acker: Acker,
}

impl Delivery {
    /// `None` for a message that did not come from a JetStream consumer.
    fn from_message(msg: jetstream::Message) -> Option<Delivery> {
        let reply = msg.reply.clone()?;
        let stream_seq = msg.info().ok()?.stream_sequence;
        let stored = stored_at(&reply).unwrap_or_else(Utc::now);
        let (msg, acker) = msg.split();
        let origin = Origin::from_message(&msg.subject, msg.headers.as_ref());
        Some(Delivery {
            subject: msg.subject.to_string(),
            payload: msg.payload,
            stream_seq,
            stored,
            origin,
            reply,
            acker,
        })
    }
}

/// The store timestamp from a `$JS.ACK.` reply subject (ADR-15: the
/// nanoseconds are the second-to-last of the 9 fields after the prefix,
/// possibly followed by a random token; 7 fields on old servers).
fn stored_at(reply: &str) -> Option<DateTime<Utc>> {
    let fields: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
    let nanos = match fields.len() {
        7 => fields[5],
        n if n >= 9 => fields[7],
        _ => return None,
    };
    let nanos: i64 = nanos.parse().ok()?;
    Some(DateTime::from_timestamp_nanos(nanos))
}

/// A configured sink. A `match` is all the dispatch there is.
pub enum Sink {
    Parquet(parquet::ParquetSink),
    Http(http::HttpSink),
    File(file::FileSink),
    Stdout(stdout::StdoutSink),
    Nats(nats::NatsSink),
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Parquet(#[from] parquet::ParquetSinkError),
    #[error(transparent)]
    Http(#[from] http::HttpSinkError),
    #[error(transparent)]
    File(#[from] file::FileSinkError),
    #[error("unknown sink type {0:?}")]
    Kind(String),
    #[error("commit: {0}")]
    Send(String),
}

impl Sink {
    pub fn from_config(cfg: &SinkConfig) -> Result<Sink, SinkError> {
        Ok(match cfg.kind.as_str() {
            "parquet" => Sink::Parquet(parquet::ParquetSink::new(cfg)?),
            "http" | "loki" | "elasticsearch" | "datadog_logs" => Sink::Http(http::HttpSink::new(cfg)?),
            "file" => Sink::File(file::FileSink::new(cfg)?),
            "stdout" => Sink::Stdout(stdout::StdoutSink::new()),
            "nats" => Sink::Nats(nats::NatsSink::new(cfg)),
            other => return Err(SinkError::Kind(other.to_string())),
        })
    }

    /// Delivers through [`delivery`] (bounded retries, dead letters)
    /// rather than [`commit_and_ack`] (retried forever).
    pub fn is_external(&self) -> bool {
        !matches!(self, Sink::Parquet(_))
    }

    /// One attempt to send `batch` to an external destination.
    async fn send(&self, batch: &[&Delivery]) -> Result<(), delivery::SendError> {
        match self {
            Sink::Http(s) => s.send(batch).await,
            Sink::File(s) => s.send(batch).await,
            Sink::Stdout(s) => s.send(batch).await,
            Sink::Nats(s) => s.send(batch).await,
            Sink::Parquet(_) => Err(delivery::SendError {
                message: "the parquet sink commits, it does not send".into(),
                retry_after: None,
                permanent: true,
            }),
        }
    }

    /// Stream sequences already written by a run that did not get to ack them.
    async fn recover(&self, pending: &[String]) -> Result<HashSet<u64>, SinkError> {
        match self {
            Sink::Parquet(s) => Ok(s.recover(pending).await?),
            _ => Ok(HashSet::new()),
        }
    }
}

/// `flotilla_shipper_*{sink}` counters.
#[derive(Clone)]
pub struct SinkMetrics {
    pub events_committed: Counter,
    pub bytes_committed: Counter,
    pub objects_written: Counter,
    pub commit_errors: Counter,
    /// External sinks: failed attempts followed by another.
    pub retries: Counter,
    /// External sinks: events sent to the dead-letter stream.
    pub dlq: Counter,
    /// External sinks: events acked without being sent (filters).
    pub events_filtered: Counter,
    /// Messages written before a crash, awaiting their redelivery to be acked.
    pub recovering: flotilla_core::metrics::Gauge,
    /// Consumer lag: messages not yet delivered plus delivered but unacked.
    pub consumer_pending: flotilla_core::metrics::Gauge,
    /// Commit latency: external sinks from the start of a delivery to the
    /// last ack; Parquet from the start of an object's completion to its
    /// last ack.
    pub commit_seconds: Histogram,
    /// Events per batch handed to the sink.
    pub batch_events: Histogram,
    /// External sinks: 1 while the circuit breaker is open.
    pub circuit_open: flotilla_core::metrics::Gauge,
    /// External sinks: times the circuit breaker opened.
    pub circuit_opened: Counter,
    /// Parquet: redeliveries of messages already written, acked not rewritten.
    pub redeliveries_skipped: Counter,
    /// Parquet: objects open.
    pub open_objects: flotilla_core::metrics::Gauge,
    /// Parquet: events written to open objects, acked when they close.
    pub unacked_events: flotilla_core::metrics::Gauge,
    /// Parquet: memory held by open objects (encoders and upload buffers).
    pub buffered_bytes: flotilla_core::metrics::Gauge,
}

impl SinkMetrics {
    pub fn new(registry: &Registry, sink: &str) -> Self {
        let l = [("sink", sink)];
        SinkMetrics {
            events_committed: registry.counter(
                "flotilla_shipper_events_committed_total",
                "Events committed by a sink and acked.",
                &l,
            ),
            bytes_committed: registry.counter(
                "flotilla_shipper_bytes_committed_total",
                "Message payload bytes committed by a sink and acked.",
                &l,
            ),
            objects_written: registry.counter(
                "flotilla_shipper_objects_written_total",
                "Objects written to storage by a sink.",
                &l,
            ),
            recovering: registry.gauge(
                "flotilla_shipper_recovering_events",
                "Messages written before a crash whose redelivery is awaited (they are acked, not rewritten).",
                &l,
            ),
            commit_errors: registry.counter(
                "flotilla_shipper_commit_errors_total",
                "Failed commit attempts (the batch is retried, never dropped).",
                &l,
            ),
            retries: registry.counter(
                "flotilla_shipper_retries_total",
                "Failed sends of an external sink that were retried.",
                &l,
            ),
            dlq: registry.counter(
                "flotilla_shipper_dlq_total",
                "Events an external sink gave up on and published to the dead-letter stream.",
                &l,
            ),
            consumer_pending: registry.gauge(
                "flotilla_shipper_consumer_pending",
                "Messages of the sink's consumer not yet acked (num_pending + num_ack_pending), refreshed every few seconds.",
                &l,
            ),
            commit_seconds: registry.histogram(
                "flotilla_shipper_commit_seconds",
                "Time to commit and ack: a delivery (external sinks) or an object's completion (Parquet).",
                &l,
                LATENCY_BUCKETS,
            ),
            batch_events: registry.histogram(
                "flotilla_shipper_batch_events",
                "Events per batch handed to a sink.",
                &l,
                SIZE_BUCKETS,
            ),
            circuit_open: registry.gauge(
                "flotilla_shipper_circuit_open",
                "1 while the sink's circuit breaker pauses its sends.",
                &l,
            ),
            circuit_opened: registry.counter(
                "flotilla_shipper_circuit_opened_total",
                "Times the sink's circuit breaker opened.",
                &l,
            ),
            redeliveries_skipped: registry.counter(
                "flotilla_shipper_redeliveries_skipped_total",
                "Redelivered messages already in the archive, acked without being written again.",
                &l,
            ),
            open_objects: registry.gauge(
                "flotilla_shipper_open_objects",
                "Parquet objects being written (acked when complete).",
                &l,
            ),
            buffered_bytes: registry.gauge(
                "flotilla_shipper_buffered_bytes",
                "About how much memory open Parquet objects hold (bounded by max_buffer_bytes).",
                &l,
            ),
            unacked_events: registry.gauge(
                "flotilla_shipper_unacked_events",
                "Events written to open Parquet objects, not yet acked.",
                &l,
            ),
            events_filtered: registry.counter(
                "flotilla_shipper_events_filtered_total",
                "Events an external sink's filters left out (acked without being sent).",
                &l,
            ),
        }
    }
}

/// The durable consumer of a sink.
pub fn consumer_config(cfg: &SinkConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(cfg.consumer_name()),
        filter_subjects: cfg.subjects.clone(),
        ack_policy: AckPolicy::Explicit,
        // Held messages are in flight for up to batch_max_age before the
        // commit starts (Parquet: until their object closes).
        ack_wait: cfg.ack_wait(),
        max_ack_pending: i64::try_from(max_ack_pending(cfg)).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// Messages a sink's consumer may have delivered and unacked: Parquet
/// sinks hold theirs in open objects.
fn max_ack_pending(cfg: &SinkConfig) -> usize {
    match cfg.kind.as_str() {
        "parquet" => cfg.max_unacked_events.saturating_add(cfg.batch_max_events),
        _ => cfg.batch_max_events.saturating_mul(4),
    }
}

/// Run one sink until `shutdown`, then commit and ack what it holds.
pub async fn run_sink(
    js: jetstream::Context,
    stream: String,
    cfg: SinkConfig,
    sink: Sink,
    metrics: SinkMetrics,
    ledger: Ledger,
    shutdown: CancellationToken,
) {
    let Some(mut consumer) = create_consumer(&js, &stream, &cfg, &shutdown).await else {
        return;
    };
    let Some((log, mut skip)) = recover(&js, &cfg, &sink, &shutdown).await else {
        return;
    };
    if sink.is_external() && !delivery::ensure_dlq_stream(&js, &shutdown).await {
        return;
    }
    let out = Outlet {
        sink: &sink,
        client: js.client(),
        js: &js,
        log: &log,
        filter: filter::Filter::new(&cfg.filter),
        policy: delivery::Policy::new(&cfg),
        breaker: std::sync::Mutex::new(breaker::Breaker::new(
            &cfg.circuit_breaker,
            metrics.circuit_opened.clone(),
            metrics.circuit_open.clone(),
        )),
        metrics: &metrics,
        ledger: &ledger,
        name: &cfg.name,
        shutdown: &shutdown,
    };
    let limiter = ratelimit::Limiter::new(&cfg.rate_limit);
    let mut created = stream_created(&js, &stream).await;
    // Lag is read beside the loop, never in its way; it stops with the sink.
    let lag_stop = CancellationToken::new();
    let _stop_lag = lag_stop.clone().drop_guard();
    tokio::spawn(report_lag(
        js.clone(),
        stream.clone(),
        cfg.consumer_name(),
        metrics.consumer_pending.clone(),
        lag_stop,
    ));
    tracing::info!(sink = %cfg.name, stream = %stream, consumer = %cfg.consumer_name(), "sink running");
    let max_age = cfg.batch_max_age();
    let max_bytes = cfg.batch_max_bytes();
    let mut held: Vec<Delivery> = Vec::new();
    let mut held_bytes = 0u64;
    let mut first_held_at = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    while !shutdown.is_cancelled() {
        let due = first_held_at + max_age;
        if held.len() >= cfg.batch_max_events || held_bytes >= max_bytes || (!held.is_empty() && Instant::now() >= due)
        {
            held_bytes = 0;
            out.flush(std::mem::take(&mut held), &mut skip).await;
            continue;
        }
        let capacity = out.capacity().await.saturating_sub(held.len());
        if capacity == 0 {
            out.make_room(held.len() + 1, &mut skip).await;
            continue;
        }
        let mut expires = if held.is_empty() { FETCH_EXPIRY } else { due.saturating_duration_since(Instant::now()) };
        if let Some(roll) = out.next_roll().await {
            expires = expires.min(roll.saturating_duration_since(Instant::now()));
        }
        let expires = expires.clamp(Duration::from_millis(10), FETCH_EXPIRY);
        let room = limiter.room((cfg.batch_max_events - held.len()).min(capacity));
        let before = held.len();
        // A fetch is not interrupted by shutdown: it ends within `expires`,
        // and everything it delivered is then committed and acked.
        let fetched = fetch(&consumer, room, expires, &mut held, &mut first_held_at, &mut skip).await;
        let new = held.get(before..).unwrap_or_default();
        let new_bytes: u64 = new.iter().map(|d| d.payload.len() as u64).sum();
        held_bytes += new_bytes;
        limiter.consume(new.len() as u64, new_bytes).await;
        out.roll_due(&mut skip).await;
        match fetched {
            Ok(()) => {
                backoff.reset();
                skip.finish_if_drained(&log, &metrics).await;
            }
            Err(e) => {
                tracing::warn!(sink = %cfg.name, error = %e, "fetch failed");
                if !sleep_or_shutdown(backoff.next_delay(), &shutdown).await {
                    break;
                }
                // The consumer may be gone (deleted, or lost with the
                // server's store): make sure it exists again.
                match create_consumer(&js, &stream, &cfg, &shutdown).await {
                    Some(c) => consumer = c,
                    None => break,
                }
                let now = stream_created(&js, &stream).await;
                if now.is_some() && now != created {
                    tracing::warn!(sink = %cfg.name, stream = %stream, "the stream was replaced; its sequences start again");
                    out.stream_replaced().await;
                    created = now;
                }
            }
        }
    }
    if !held.is_empty() {
        tracing::info!(sink = %cfg.name, events = held.len(), "draining");
        out.flush(held, &mut skip).await;
    }
    out.close_all(&mut skip).await;
    tracing::info!(sink = %cfg.name, "sink stopped");
}

/// Where a sink's batches go: into open objects (Parquet) or delivered
/// (external).
struct Outlet<'a> {
    sink: &'a Sink,
    client: async_nats::Client,
    js: &'a jetstream::Context,
    log: &'a CommitLog,
    filter: filter::Filter,
    policy: delivery::Policy,
    breaker: std::sync::Mutex<breaker::Breaker>,
    metrics: &'a SinkMetrics,
    ledger: &'a Ledger,
    name: &'a str,
    shutdown: &'a CancellationToken,
}

impl Outlet<'_> {
    fn cx<'b>(&'b self, skip: &'b mut Skip) -> parquet::objects::Cx<'b> {
        parquet::objects::Cx {
            client: &self.client,
            log: self.log,
            metrics: self.metrics,
            ledger: self.ledger,
            name: self.name,
            shutdown: self.shutdown,
            skip,
        }
    }

    /// Hand `batch` on. External sinks deliver and ack it now, and its
    /// time goes to the commit latency summary; Parquet sinks write it
    /// into open objects (timed and acked when those close).
    async fn flush(&self, batch: Vec<Delivery>, skip: &mut Skip) {
        self.metrics.batch_events.observe(batch.len() as f64);
        match self.sink {
            Sink::Parquet(p) => p.objects.lock().await.append(batch, &mut self.cx(skip)).await,
            _ => {
                let started = std::time::Instant::now();
                delivery::deliver_and_ack(
                    self.sink,
                    self.js,
                    &self.filter,
                    &self.policy,
                    batch,
                    self.metrics,
                    &self.breaker,
                    self.ledger,
                    self.name,
                    self.shutdown,
                )
                .await;
                self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            }
        }
    }

    /// Events that may be fetched before the sink must close objects.
    async fn capacity(&self) -> usize {
        match self.sink {
            Sink::Parquet(p) => p.objects.lock().await.room(),
            _ => usize::MAX,
        }
    }

    async fn make_room(&self, need: usize, skip: &mut Skip) {
        if let Sink::Parquet(p) = self.sink {
            p.objects.lock().await.make_room(need, &mut self.cx(skip)).await;
        }
    }

    /// When the next open object is due to close by age.
    async fn next_roll(&self) -> Option<Instant> {
        match self.sink {
            Sink::Parquet(p) => p.objects.lock().await.next_due(),
            _ => None,
        }
    }

    async fn roll_due(&self, skip: &mut Skip) {
        if let Sink::Parquet(p) = self.sink {
            p.objects.lock().await.close_due(&mut self.cx(skip)).await;
        }
    }

    async fn stream_replaced(&self) {
        if let Sink::Parquet(p) = self.sink {
            p.objects.lock().await.stream_replaced();
        }
    }

    async fn close_all(&self, skip: &mut Skip) {
        if let Sink::Parquet(p) = self.sink {
            p.objects.lock().await.close_all(&mut self.cx(skip)).await;
        }
    }
}

/// Messages a previous run wrote but may not have acked: recognised by their
/// stream sequence and acked without being written again.
pub struct Skip {
    seqs: HashSet<u64>,
    objects: Vec<String>,
}

impl Skip {
    /// Whether a delivery of `seq` is a copy of a message already written.
    fn takes(&mut self, seq: u64) -> bool {
        self.seqs.remove(&seq)
    }

    async fn finish_if_drained(&mut self, log: &CommitLog, metrics: &SinkMetrics) {
        if self.seqs.is_empty() && !self.objects.is_empty() {
            if let Err(e) = log.end(&self.objects).await {
                tracing::warn!(error = %e, "cannot update the commit record");
                return;
            }
            tracing::info!(objects = self.objects.len(), "recovered objects settled");
            self.objects.clear();
        }
        metrics.recovering.set(self.seqs.len() as i64);
    }
}

/// Open the commit record and read what a previous run left pending.
async fn recover(
    js: &jetstream::Context,
    cfg: &SinkConfig,
    sink: &Sink,
    shutdown: &CancellationToken,
) -> Option<(CommitLog, Skip)> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let attempt = async {
            let log = CommitLog::open(js, &cfg.name).await.map_err(|e| e.to_string())?;
            let objects = log.pending().await;
            let seqs = sink.recover(&objects).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((log, Skip { seqs, objects }))
        };
        match attempt.await {
            Ok((log, skip)) => {
                if !skip.objects.is_empty() {
                    tracing::info!(sink = %cfg.name, objects = skip.objects.len(), events = skip.seqs.len(), "recovering objects written before a crash");
                }
                return Some((log, skip));
            }
            Err(e) => tracing::warn!(sink = %cfg.name, error = %e, "cannot read the commit record; retrying"),
        }
        if !sleep_or_shutdown(backoff.next_delay(), shutdown).await {
            return None;
        }
    }
}

async fn create_consumer(
    js: &jetstream::Context,
    stream: &str,
    cfg: &SinkConfig,
    shutdown: &CancellationToken,
) -> Option<PullConsumer> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match js.create_consumer_on_stream(consumer_config(cfg), stream).await {
            Ok(c) => return Some(c),
            Err(e) => tracing::warn!(sink = %cfg.name, stream, error = %e, "cannot create consumer; retrying"),
        }
        if !sleep_or_shutdown(backoff.next_delay(), shutdown).await {
            return None;
        }
    }
}

/// When the stream was created: a different time means a new stream whose
/// sequences start again.
async fn stream_created(js: &jetstream::Context, stream: &str) -> Option<DateTime<Utc>> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    Some(DateTime::from_timestamp(info.created.unix_timestamp(), info.created.nanosecond()).unwrap_or_default())
}

/// How often a sink's consumer lag is read.
const LAG_INTERVAL: Duration = Duration::from_secs(2);

/// Set `gauge` to the consumer's `num_pending + num_ack_pending` every
/// [`LAG_INTERVAL`] until `stop`. A failed read keeps the last value.
async fn report_lag(
    js: jetstream::Context,
    stream: String,
    consumer: String,
    gauge: flotilla_core::metrics::Gauge,
    stop: CancellationToken,
) {
    let mut handle: Option<jetstream::stream::Stream> = None;
    loop {
        if handle.is_none() {
            handle = js.get_stream(&stream).await.ok();
        }
        if let Some(s) = &handle {
            match s.consumer_info(&consumer).await {
                Ok(info) => {
                    let lag = info.num_pending.saturating_add(info.num_ack_pending as u64);
                    gauge.set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
                Err(e) => {
                    tracing::debug!(consumer, error = %e, "cannot read consumer lag");
                    handle = None;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LAG_INTERVAL) => {}
        }
    }
}

/// One pull request for up to `room` messages, waiting at most `expires`.
async fn fetch(
    consumer: &PullConsumer,
    room: usize,
    expires: Duration,
    held: &mut Vec<Delivery>,
    first_held_at: &mut Instant,
    skip: &mut Skip,
) -> Result<(), async_nats::Error> {
    let mut batch = consumer.batch().max_messages(room).expires(expires).messages().await?;
    while let Some(msg) = batch.next().await {
        match Delivery::from_message(msg?) {
            Some(d) if skip.takes(d.stream_seq) => {
                // Already written: ack, don't write again.
                d.acker.double_ack().await?;
            }
            Some(d) => {
                if held.is_empty() {
                    *first_held_at = Instant::now();
                }
                held.push(d);
            }
            None => tracing::warn!("ignoring a message without JetStream metadata"),
        }
    }
    Ok(())
}

/// Ack every message, then confirm with a double ack on the last: the
/// server handles a consumer's acks in order, so its answer means every
/// ack before it was processed too (not merely buffered by the client).
async fn ack_all(batch: &[Delivery]) -> Result<(), async_nats::Error> {
    let Some((last, rest)) = batch.split_last() else {
        return Ok(());
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            for d in rest {
                d.acker.ack().await?;
            }
            last.acker.double_ack().await
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "ack failed; acking again");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_time_from_reply_subjects() {
        let v2 = "$JS.ACK._.ACCHASH.LOGS.flotilla-a.1.42.40.1700000000123456789.7.tok";
        let want = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789);
        assert_eq!(stored_at(v2), Some(want));
        assert_eq!(stored_at("$JS.ACK._.ACCHASH.LOGS.c.1.42.40.1700000000123456789.7"), Some(want));
        assert_eq!(stored_at("$JS.ACK.LOGS.c.1.42.40.1700000000123456789.7"), Some(want));
        assert_eq!(stored_at("_INBOX.x"), None);
        assert_eq!(stored_at("$JS.ACK.LOGS.c.1"), None);
    }

    #[test]
    fn consumer_acks_explicitly_and_filters_sink_subjects() {
        let cfg: crate::Config = flotilla_core::config::parse(
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file:///tmp/x\"\nsubjects = [\"logs.acme.>\"]\nbatch_max_events = 100\nroll_max_age = \"2m\"\nmax_unacked_events = 1000\n",
            |_| None,
        )
        .unwrap();
        let cfg = &cfg.sinks[0];
        let c = consumer_config(cfg);
        assert_eq!(c.durable_name.as_deref(), Some("flotilla-archive"));
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert_eq!(c.filter_subjects, ["logs.acme.>"]);
        // Open objects hold their events unacked until they close.
        assert_eq!(c.max_ack_pending, 1100);
        assert_eq!(c.ack_wait, Duration::from_secs(5 + 120 + 60));
    }
}
