//! A bounded on-disk spill queue for sources that cannot be re-read
//! (syslog, stdin, journald).
//!
//! A source [`push`](DiskQueue::push)es each event; the publisher takes
//! them with [`next`](DiskQueue::next), publishes to JetStream and, once
//! the acks arrived, calls [`ack`](DiskQueue::ack). After a failed publish
//! it calls [`rewind`](DiskQueue::rewind) and gets the unacked records
//! again, in order. The owner calls [`sync`](DiskQueue::sync) periodically:
//! it fsyncs, persists the ack point and deletes fully acked segments.
//!
//! Durability: each record is written with `write(2)` before `push`
//! returns, so it survives `kill -9` of the agent; it survives a power loss
//! once `sync` ran. Sequence numbers are never reused (the high-water is
//! kept in `<dir>/acked`), so they can serve as `Nats-Msg-Id`s — except
//! after a power loss between two syncs, when records written since the
//! last sync, and their seqs, may be gone.
//!
//! On disk (see [`segment`]): segment files `<dir>/<first_seq:020>.seg` of
//! checksummed records, a new one started when the active one reached
//! `segment_bytes`; `<dir>/acked` with the ack point and the next seq.
//!
//! Damage never stops the queue from opening: a record that fails its
//! checksum (or is out of sequence) is skipped, the reader scanning forward
//! byte by byte to the next valid record; a damaged tail of the last
//! segment is truncated so appends continue cleanly; a damaged ack file
//! counts as nothing acked. Everything skipped is counted in
//! [`OpenReport`]. Only an unusable directory or an IO error is an error.
//!
//! Size: `push` finds the queue full when its unacked bytes reach
//! `max_bytes`. Disk use can exceed that by one record, by one segment
//! (acked records are deleted a segment at a time) and by what was acked
//! since the last `sync`. One process per directory: the queue does not
//! lock it.

mod ackfile;
pub mod segment;
mod state;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use state::State;

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub dir: PathBuf,
    /// Unacked bytes (headers included) at which the queue is full.
    pub max_bytes: u64,
    /// Size at which the active segment is sealed and a new one started.
    pub segment_bytes: u64,
    pub when_full: WhenFull,
}

/// What `push` does on a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait until acks free room: backpressure on the source.
    #[default]
    Block,
    /// Drop the new record and count it ([`DiskQueue::dropped`]).
    DropNewest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What `open` found: unacked records and their bytes (headers included),
/// and the damage skipped (acked or not).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub records: u64,
    pub bytes: u64,
    pub corrupted_records: u64,
    pub corrupted_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored(u64),
    Dropped,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("spill queue {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spill queue: a record of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("spill queue {dir}: {message}")]
    Config { dir: PathBuf, message: String },
}

#[derive(Clone)]
pub struct DiskQueue {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    max_bytes: u64,
    when_full: WhenFull,
    /// Woken by `push`: a record to read.
    data: Notify,
    /// Woken by `ack`: room to push.
    space: Notify,
}

impl DiskQueue {
    /// Open (creating dir), scanning existing segments: records with a bad
    /// checksum or a torn tail are skipped and counted, never an error (an
    /// unreadable dir IS an error).
    pub fn open(cfg: QueueConfig) -> Result<(DiskQueue, OpenReport), QueueError> {
        if cfg.max_bytes == 0 || cfg.segment_bytes == 0 {
            let message = "max_bytes and segment_bytes must be above 0".to_string();
            return Err(QueueError::Config { dir: cfg.dir, message });
        }
        let (state, report) = State::open(&cfg.dir, cfg.segment_bytes)?;
        if report.corrupted_records > 0 {
            tracing::warn!(
                dir = %cfg.dir.display(),
                records = report.corrupted_records,
                bytes = report.corrupted_bytes,
                "spill queue: skipped damaged records"
            );
        }
        let inner = Inner {
            state: Mutex::new(state),
            max_bytes: cfg.max_bytes,
            when_full: cfg.when_full,
            data: Notify::new(),
            space: Notify::new(),
        };
        Ok((DiskQueue { inner: Arc::new(inner) }, report))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-updated in a way
        // that matters more than stopping the pipeline would.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append one record; its seq is strictly increasing forever. On a full
    /// queue, `Block` waits until acks free room; `DropNewest` returns
    /// [`Pushed::Dropped`] and counts it. Cancel-safe: a cancelled push
    /// stored nothing.
    pub async fn push(&self, payload: &[u8]) -> Result<Pushed, QueueError> {
        loop {
            let space = self.inner.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut st = self.state();
                if st.unacked().1 < self.inner.max_bytes {
                    let seq = st.push(payload)?;
                    drop(st);
                    self.inner.data.notify_waiters();
                    return Ok(Pushed::Stored(seq));
                }
                if self.inner.when_full == WhenFull::DropNewest {
                    st.dropped += 1;
                    return Ok(Pushed::Dropped);
                }
            }
            space.await;
        }
    }

    /// The next record not yet handed out (waits until one exists). Reads
    /// from the segment files through a small buffer. Cancel-safe: a record
    /// is taken only in the same step that returns it.
    pub async fn next(&self) -> Result<Record, QueueError> {
        loop {
            let data = self.inner.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            if let Some(record) = self.state().read_next()? {
                return Ok(record);
            }
            data.await;
        }
    }

    /// Every record with seq <= `seq` was acked downstream (called in
    /// increasing order).
    pub fn ack(&self, seq: u64) {
        self.state().ack(seq);
        self.inner.space.notify_waiters();
    }

    /// Hand out again from the first unacked record (after a failed publish).
    pub fn rewind(&self) {
        self.state().rewind();
        self.inner.data.notify_waiters();
    }

    /// fsync what was written, persist the ack point and seq high-water
    /// atomically, delete segments whose records are all acked.
    pub fn sync(&self) -> Result<(), QueueError> {
        self.state().sync()
    }

    /// Unacked bytes on disk, headers included (approximate while a segment
    /// is partly acked and has damage in it).
    pub fn bytes(&self) -> u64 {
        self.state().unacked().1
    }

    /// Unacked records (exact unless a partly acked segment has damage).
    pub fn pending(&self) -> u64 {
        self.state().unacked().0
    }

    /// Records dropped by `DropNewest` since open.
    pub fn dropped(&self) -> u64 {
        self.state().dropped
    }
}
