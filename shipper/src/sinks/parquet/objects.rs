//! The objects a Parquet sink has open: one per partition, kept open
//! across batches and rolled by size and age. Their messages are acked
//! only when the object is complete in storage.
//!
//! - An object is named before its first byte is written and the name goes
//!   into the commit record; after its messages are acked it leaves it.
//! - Limits close objects early: `max_open_objects` (the oldest first),
//!   `max_unacked_events` (the one holding most events) and
//!   `max_buffer_bytes` (row groups are cut first, then the largest object
//!   is closed). Memory stays bounded whatever the partition count.
//! - An object that fails while being written is abandoned: it never
//!   appears, and its messages are nak'd with a delay so JetStream
//!   redelivers them. When completing it fails, storage is asked whether
//!   the object exists before deciding between ack and nak.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::subject::Subject;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{sleep_or_shutdown, Backoff};
use crate::commitlog::CommitLog;
use crate::config::SinkConfig;
use crate::ledger::{Ledger, Origin};
use crate::sinks::{Delivery, SinkMetrics, Skip};

use super::schema::{self, Row, TsUnit};
use super::writer::ObjectWriter;
use super::written::Written;
use super::{ParquetSinkError, Partition};

/// A row group in progress is cut (rather than its object closed) to free
/// memory only once it is at least this large.
const MIN_ROW_GROUP_CUT: u64 = 4 << 20;
/// Attempts to learn whether an object exists after its completion failed,
/// once shutdown has begun.
const CHECKS_AFTER_SHUTDOWN: u32 = 3;

/// When objects are closed.
#[derive(Debug, Clone)]
pub struct Limits {
    pub roll_bytes: u64,
    pub roll_age: Duration,
    pub max_open: usize,
    pub max_unacked: usize,
    pub max_buffer: u64,
    pub row_group_rows: usize,
    pub ts_unit: TsUnit,
}

impl Limits {
    pub fn new(cfg: &SinkConfig) -> Limits {
        Limits {
            roll_bytes: cfg.roll_max_bytes(),
            roll_age: cfg.roll_max_age(),
            max_open: cfg.max_open_objects.max(1),
            max_unacked: cfg.max_unacked_events.max(1),
            max_buffer: cfg.max_buffer_bytes(),
            row_group_rows: cfg.row_group_rows,
            ts_unit: TsUnit::parse(&cfg.timestamp_unit).unwrap_or_default(),
        }
    }
}

/// What settling an object needs from its sink.
pub struct Cx<'a> {
    pub client: &'a async_nats::Client,
    pub log: &'a CommitLog,
    pub metrics: &'a SinkMetrics,
    pub ledger: &'a Ledger,
    pub name: &'a str,
    pub shutdown: &'a CancellationToken,
    pub skip: &'a mut Skip,
}

/// One object being written.
struct Open {
    partition: Partition,
    path: Path,
    writer: ObjectWriter,
    opened: Instant,
    /// Reply subjects of every delivery in the object (a redelivered copy
    /// of a row adds its reply, not a row).
    replies: Vec<Subject>,
    seqs: Vec<u64>,
    origins: Vec<Origin>,
    payload_bytes: u64,
}

/// Rows of one batch bound for one partition.
#[derive(Default)]
struct Group {
    rows: Vec<Row>,
    replies: Vec<Subject>,
    seqs: Vec<u64>,
    origins: Vec<Origin>,
    payload_bytes: u64,
}

pub struct Objects {
    store: Arc<dyn ObjectStore>,
    limits: Limits,
    open: HashMap<u64, Open>,
    by_partition: HashMap<Partition, u64>,
    /// Stream sequence → the open object holding it.
    seqs: HashMap<u64, u64>,
    unacked: usize,
    next_id: u64,
    /// Delay of the next nak after a failure; grows while failures repeat.
    nak_backoff: Backoff,
    /// What this run wrote into complete objects.
    written: Written,
}

impl Objects {
    pub fn new(store: Arc<dyn ObjectStore>, limits: Limits) -> Objects {
        Objects {
            store,
            limits,
            open: HashMap::new(),
            by_partition: HashMap::new(),
            seqs: HashMap::new(),
            unacked: 0,
            next_id: 0,
            nak_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            written: Written::default(),
        }
    }

    /// Events that may still be fetched before the unacked limit.
    pub fn room(&self) -> usize {
        self.limits.max_unacked.saturating_sub(self.unacked)
    }

    /// When the oldest open object is due (for the fetch timeout).
    pub fn next_due(&self) -> Option<Instant> {
        self.open.values().map(|o| o.opened + self.limits.roll_age).min()
    }

    /// Write `batch` into the open objects (opening those it needs); roll
    /// what is due by size or the limits. Nothing is acked here unless an
    /// object closed.
    pub async fn append(&mut self, batch: Vec<Delivery>, cx: &mut Cx<'_>) {
        let mut batch = self.drop_copies(batch, cx).await;
        batch.sort_by_key(|d| d.stream_seq);
        let mut groups: BTreeMap<Partition, Group> = BTreeMap::new();
        let mut last: Option<(u64, Partition)> = None;
        for d in batch {
            if let Some(id) = self.seqs.get(&d.stream_seq) {
                // A copy of a row already in an open object: ack it with it.
                if let Some(o) = self.open.get_mut(id) {
                    o.replies.push(d.reply);
                    self.unacked += 1;
                }
                continue;
            }
            if let Some((seq, partition)) = &last {
                if *seq == d.stream_seq {
                    if let Some(g) = groups.get_mut(partition) {
                        g.replies.push(d.reply);
                    }
                    continue;
                }
            }
            let row = Row::decode(&d.subject, &d.payload, d.stream_seq, d.stored);
            let partition = Partition::of(&row);
            let g = groups.entry(partition.clone()).or_default();
            g.rows.push(row);
            g.replies.push(d.reply);
            g.seqs.push(d.stream_seq);
            g.origins.extend(d.origin);
            g.payload_bytes += d.payload.len() as u64;
            last = Some((d.stream_seq, partition));
        }
        for (partition, group) in groups {
            self.write_group(partition, group, cx).await;
            // Many partitions in one batch must not add up past the budget.
            self.keep_within_budget(cx).await;
        }
        self.enforce_limits(cx).await;
    }

    /// Ack, without writing them, redeliveries of messages this run already
    /// wrote into objects that are now complete. Copies come when acks are
    /// lost, e.g. when nats-server is killed before it stored the
    /// consumer's acks. (Copies of messages in open objects are acked with
    /// their object; those a previous run wrote are recognised by [`Skip`].)
    ///
    /// [`Skip`]: crate::sinks::Skip
    async fn drop_copies(&mut self, batch: Vec<Delivery>, cx: &mut Cx<'_>) -> Vec<Delivery> {
        let mut keep = Vec::with_capacity(batch.len());
        let mut copies = Vec::new();
        for d in batch {
            if self.written.contains(d.stream_seq) && !self.seqs.contains_key(&d.stream_seq) {
                copies.push(d.reply);
            } else {
                keep.push(d);
            }
        }
        if !copies.is_empty() {
            tracing::info!(sink = cx.name, copies = copies.len(), "redelivered messages already archived; acking them");
            cx.metrics.redeliveries_skipped.add(copies.len() as u64);
            if let Err(e) = ack_replies(cx.client, &copies).await {
                tracing::warn!(sink = cx.name, error = %e, "acking redelivered copies failed; they will come again");
            }
        }
        keep
    }

    /// The stream was replaced (its sequences start again).
    pub fn stream_replaced(&mut self) {
        self.written.clear();
    }

    async fn write_group(&mut self, partition: Partition, group: Group, cx: &mut Cx<'_>) {
        let id = match self.by_partition.get(&partition) {
            Some(id) => *id,
            None => match self.open_object(&partition, &group, cx).await {
                Ok(id) => id,
                Err(e) => {
                    cx.metrics.commit_errors.inc();
                    tracing::error!(sink = cx.name, events = group.replies.len(), error = %e, "cannot open an object; the events will be redelivered");
                    self.nak(cx.client, &group.replies).await;
                    return;
                }
            },
        };
        let rows: Vec<&Row> = group.rows.iter().collect();
        let written = match schema::record_batch(&rows, self.limits.ts_unit) {
            Ok(records) => match self.open.get_mut(&id) {
                Some(o) => o.writer.write(&records).await.map_err(|e| e.to_string()),
                None => Err("object vanished".to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        self.unacked += group.replies.len();
        if let Some(o) = self.open.get_mut(&id) {
            o.replies.extend(group.replies);
            o.origins.extend(group.origins);
            o.payload_bytes += group.payload_bytes;
            for seq in &group.seqs {
                self.seqs.insert(*seq, id);
            }
            o.seqs.extend(group.seqs);
        }
        if let Err(e) = written {
            self.fail(id, &e, cx).await;
        }
    }

    /// Open an object for `partition`, named after the first row of `group`.
    async fn open_object(
        &mut self,
        partition: &Partition,
        group: &Group,
        cx: &mut Cx<'_>,
    ) -> Result<u64, ParquetSinkError> {
        while self.open.len() >= self.limits.max_open {
            let Some(oldest) = self.open.iter().min_by_key(|(_, o)| o.opened).map(|(id, _)| *id) else { break };
            self.close(oldest, cx).await;
        }
        let first = group.seqs.first().copied().unwrap_or_default();
        // The random part keeps any two objects apart, even two starting
        // with the same (redelivered) message.
        let path = partition.object_path(first, rand::random::<u64>());
        cx.log.begin(&[path.to_string()]).await?;
        let writer = ObjectWriter::open(
            self.store.clone(),
            path.clone(),
            schema::schema(self.limits.ts_unit),
            self.limits.row_group_rows,
        )
        .map_err(|source| ParquetSinkError::Write { path: path.clone(), source })?;
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(
            id,
            Open {
                partition: partition.clone(),
                path,
                writer,
                opened: Instant::now(),
                replies: Vec::new(),
                seqs: Vec::new(),
                origins: Vec::new(),
                payload_bytes: 0,
            },
        );
        self.by_partition.insert(partition.clone(), id);
        cx.metrics.open_objects.set(self.open.len() as i64);
        Ok(id)
    }

    /// Close objects over the size target, then keep within the unacked
    /// and memory limits.
    async fn enforce_limits(&mut self, cx: &mut Cx<'_>) {
        let full: Vec<u64> =
            self.open.iter().filter(|(_, o)| o.writer.size() >= self.limits.roll_bytes).map(|(id, _)| *id).collect();
        for id in full {
            self.close(id, cx).await;
        }
        self.keep_within_budget(cx).await;
        self.finish_metrics(cx);
    }

    /// Cut row groups, then close objects, until the open objects hold no
    /// more than `max_buffer_bytes`.
    async fn keep_within_budget(&mut self, cx: &mut Cx<'_>) {
        loop {
            if self.memory() <= self.limits.max_buffer {
                break;
            }
            let biggest = self
                .open
                .iter()
                .max_by_key(|(_, o)| o.writer.encoder_memory())
                .map(|(id, o)| (*id, o.writer.encoder_memory() >= MIN_ROW_GROUP_CUT));
            let Some((id, cut_row_group)) = biggest else { break };
            if cut_row_group {
                let cut = match self.open.get_mut(&id) {
                    Some(o) => o.writer.flush_row_group().await.map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                if let Err(e) = cut {
                    self.fail(id, &e, cx).await;
                }
            } else {
                let largest = self.open.iter().max_by_key(|(_, o)| o.writer.memory()).map(|(id, _)| *id);
                if let Some(id) = largest {
                    self.close(id, cx).await;
                }
            }
        }
    }

    /// About how much memory the open objects hold.
    fn memory(&self) -> u64 {
        self.open.values().map(|o| o.writer.memory()).sum()
    }

    /// Close objects until `need` more events fit the unacked limit.
    pub async fn make_room(&mut self, need: usize, cx: &mut Cx<'_>) {
        while self.room() < need {
            let Some(id) = self.open.iter().max_by_key(|(_, o)| o.replies.len()).map(|(id, _)| *id) else { break };
            self.close(id, cx).await;
        }
    }

    /// Close the objects open for `roll_age` or longer.
    pub async fn close_due(&mut self, cx: &mut Cx<'_>) {
        let now = Instant::now();
        let due: Vec<u64> =
            self.open.iter().filter(|(_, o)| o.opened + self.limits.roll_age <= now).map(|(id, _)| *id).collect();
        for id in due {
            self.close(id, cx).await;
        }
    }

    /// Close everything (shutdown).
    pub async fn close_all(&mut self, cx: &mut Cx<'_>) {
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.close(id, cx).await;
        }
    }

    fn take(&mut self, id: u64) -> Option<Open> {
        let o = self.open.remove(&id)?;
        self.by_partition.remove(&o.partition);
        for seq in &o.seqs {
            self.seqs.remove(seq);
        }
        self.unacked = self.unacked.saturating_sub(o.replies.len());
        Some(o)
    }

    /// Complete the object and ack its messages, or nak them if it does
    /// not exist.
    async fn close(&mut self, id: u64, cx: &mut Cx<'_>) {
        let Some(mut o) = self.take(id) else { return };
        let started = std::time::Instant::now();
        let exists = match o.writer.finish().await {
            Ok(size) => {
                tracing::debug!(sink = cx.name, path = %o.path, rows = o.seqs.len(), size, "object written");
                true
            }
            Err(e) => {
                cx.metrics.commit_errors.inc();
                tracing::error!(sink = cx.name, path = %o.path, error = %e, "completing the object failed; checking whether it exists");
                match exists(&self.store, &o.path, cx).await {
                    Some(exists) => exists,
                    None => {
                        // Unknown, and shutting down: leave its messages
                        // unacked and its name in the commit record; the
                        // next run decides from what it finds.
                        tracing::error!(sink = cx.name, path = %o.path, events = o.replies.len(), "giving up at shutdown; JetStream will redeliver these events");
                        self.finish_metrics(cx);
                        return;
                    }
                }
            }
        };
        if !exists {
            o.writer.abort().await;
            self.nak(cx.client, &o.replies).await;
            if let Err(e) = cx.log.end(&[o.path.to_string()]).await {
                tracing::warn!(sink = cx.name, error = %e, "cannot update the commit record");
            }
            self.finish_metrics(cx);
            return;
        }
        self.nak_backoff.reset();
        // Complete in storage: from now on a copy is acked, not written.
        self.written.extend(&o.seqs);
        match ack_replies(cx.client, &o.replies).await {
            Ok(()) => {
                cx.ledger.committed(cx.name, o.origins.iter());
                if let Err(e) = cx.log.end(&[o.path.to_string()]).await {
                    tracing::warn!(sink = cx.name, error = %e, "cannot update the commit record; a restart will re-check this object");
                }
            }
            // The name stays in the commit record: a restart recognises the redelivered messages.
            Err(e) => {
                tracing::error!(sink = cx.name, events = o.replies.len(), error = %e, "acks not confirmed after commit")
            }
        }
        cx.metrics.objects_written.inc();
        cx.metrics.events_committed.add(o.seqs.len() as u64);
        cx.metrics.bytes_committed.add(o.payload_bytes);
        cx.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.finish_metrics(cx);
    }

    fn finish_metrics(&self, cx: &Cx<'_>) {
        cx.metrics.buffered_bytes.set(i64::try_from(self.memory()).unwrap_or(i64::MAX));
        cx.metrics.open_objects.set(self.open.len() as i64);
        cx.metrics.unacked_events.set(self.unacked as i64);
    }

    /// Abandon object `id`: abort its upload and have its messages redelivered.
    async fn fail(&mut self, id: u64, error: &str, cx: &mut Cx<'_>) {
        let Some(o) = self.take(id) else { return };
        cx.metrics.commit_errors.inc();
        tracing::error!(sink = cx.name, path = %o.path, events = o.replies.len(), error, "writing the object failed; its events will be redelivered");
        o.writer.abort().await;
        self.nak(cx.client, &o.replies).await;
        if let Err(e) = cx.log.end(&[o.path.to_string()]).await {
            tracing::warn!(sink = cx.name, error = %e, "cannot update the commit record");
        }
        self.finish_metrics(cx);
    }

    /// Nak with a delay that grows while failures repeat.
    async fn nak(&mut self, client: &async_nats::Client, replies: &[Subject]) {
        let delay = self.nak_backoff.next_delay().max(Duration::from_millis(500));
        for reply in replies {
            // Unsent, the message is redelivered after ack_wait all the same.
            let _ = client.publish(reply.clone(), Bytes::from(AckKind::Nak(Some(delay)))).await;
        }
    }
}

/// Whether `path` exists, asking until storage answers; `None` if it
/// does not answer by shutdown.
async fn exists(store: &Arc<dyn ObjectStore>, path: &Path, cx: &Cx<'_>) -> Option<bool> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut after_shutdown = 0;
    loop {
        match store.head(path).await {
            Ok(_) => return Some(true),
            Err(object_store::Error::NotFound { .. }) => return Some(false),
            Err(e) => tracing::warn!(sink = cx.name, %path, error = %e, "cannot check the object; retrying"),
        }
        if cx.shutdown.is_cancelled() {
            after_shutdown += 1;
            if after_shutdown > CHECKS_AFTER_SHUTDOWN {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            sleep_or_shutdown(backoff.next_delay(), cx.shutdown).await;
        }
    }
}

/// Ack every reply subject, then confirm with a double ack on the last
/// (the server handles a consumer's acks in order).
pub async fn ack_replies(client: &async_nats::Client, replies: &[Subject]) -> Result<(), async_nats::Error> {
    let Some((last, rest)) = replies.split_last() else {
        return Ok(());
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            for reply in rest {
                client.publish(reply.clone(), Bytes::from(AckKind::Ack)).await?;
            }
            client.request(last.clone(), Bytes::from(AckKind::Ack)).await?;
            Ok::<(), async_nats::Error>(())
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
