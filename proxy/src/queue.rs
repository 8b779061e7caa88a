//! A client's outbound queue, bounded in messages and in bytes: deliveries
//! arrive as chunks of several frames (all a client gets from one batch of
//! upstream messages, written as one buffer), control frames (INFO, PONG,
//! -ERR ...) one by one. The bounds count deliveries, not chunks, so
//! batching never lets a slow client hold more than `client_queue` messages
//! or, as nats-server's `max_pending`, `client_queue_bytes` of them (one
//! delivery larger than that still goes when nothing is queued).
//!
//! A plain TCP client's deliveries skip the queue when nothing is queued or
//! being written ahead of them: they are written to the socket at once, by
//! the task that has them, and only what the socket does not take is
//! queued. Every hand-over (a queued chunk, a direct write) happens under
//! one lock, and the queue's chunks are counted until wholly written, so
//! the bytes reach the socket in the order they were handed over.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::outlet::lock;

/// Frames for the writer, and how many deliveries they hold (0: control).
pub struct Chunk {
    pub bytes: Bytes,
    pub msgs: usize,
    /// Its bytes counted against the byte bound (0: control).
    pub counted: usize,
}

/// The sending side, shared by the connection, its outlets and the registry.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Chunk>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Bytes of deliveries queued, and how many may be.
    queued_bytes: Arc<AtomicUsize>,
    capacity_bytes: usize,
    /// Chunks sent and not yet wholly written (control frames too).
    unwritten: Arc<AtomicUsize>,
    /// Bytes the writer has written, ever: whether the client reads.
    progress: Arc<AtomicU64>,
    /// Held while a chunk is handed over: sent, or written directly.
    order: Arc<Mutex<()>>,
    /// The client's socket, for direct writes (plain TCP only).
    direct: Option<Arc<OwnedWriteHalf>>,
}

/// The writer's side.
pub struct QueueRx {
    rx: mpsc::Receiver<Chunk>,
    queued: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    unwritten: Arc<AtomicUsize>,
    progress: Arc<AtomicU64>,
}

/// Why a chunk of deliveries was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

impl Queue {
    /// A queue holding at most `capacity` deliveries (and as many chunks);
    /// with `direct`, deliveries that find it empty are written to that
    /// socket at once.
    pub fn new(capacity: usize, direct: Option<Arc<OwnedWriteHalf>>) -> (Queue, QueueRx) {
        Queue::bounded(capacity, usize::MAX, direct)
    }

    /// As [`Queue::new`], holding also at most `capacity_bytes` of
    /// deliveries.
    pub fn bounded(capacity: usize, capacity_bytes: usize, direct: Option<Arc<OwnedWriteHalf>>) -> (Queue, QueueRx) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (queued, unwritten) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(AtomicU64::new(0));
        let queue = Queue {
            tx,
            queued: queued.clone(),
            capacity,
            queued_bytes: queued_bytes.clone(),
            capacity_bytes: capacity_bytes.max(1),
            unwritten: unwritten.clone(),
            progress: progress.clone(),
            order: Arc::default(),
            direct,
        };
        (queue, QueueRx { rx, queued, queued_bytes, unwritten, progress })
    }

    /// Queue a control frame, waiting for room (never dropped); false once
    /// the writer is gone.
    pub async fn control(&self, frame: Bytes) -> bool {
        let Ok(permit) = self.tx.reserve().await else { return false };
        self.send_control(permit, frame);
        true
    }

    /// Queue a control frame if there is room now; false if not (or the
    /// writer is gone).
    pub fn try_control(&self, frame: Bytes) -> bool {
        let Ok(permit) = self.tx.try_reserve() else { return false };
        self.send_control(permit, frame);
        true
    }

    fn send_control(&self, permit: mpsc::Permit<'_, Chunk>, frame: Bytes) {
        let _order = lock(&self.order);
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        permit.send(Chunk { bytes: frame, msgs: 0, counted: 0 });
    }

    /// Bytes the writer has written so far (it moves while the client reads).
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Deliveries that still fit.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.queued.load(Ordering::Relaxed))
    }

    /// Whether `len` more bytes of deliveries fit, after `pending` bytes not
    /// yet handed over: always when nothing is queued or pending (one
    /// delivery larger than the bound still goes, alone).
    pub fn fits(&self, pending: usize, len: usize) -> bool {
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        queued + pending == 0 || queued.saturating_add(pending).saturating_add(len) <= self.capacity_bytes
    }

    /// Hand over `msgs` deliveries encoded in `bytes`, without waiting:
    /// written to the socket if nothing is ahead of them and it takes them,
    /// queued otherwise (what a partial write left, too).
    pub fn deliver(&self, mut bytes: Bytes, msgs: usize) -> Result<(), Refused> {
        let _order = lock(&self.order);
        // Room first: once part of a frame is on the socket, the rest must
        // be able to follow it.
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        if !self.fits(0, bytes.len()) {
            return Err(Refused::Full);
        }
        let permit = self.tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => Refused::Full,
            mpsc::error::TrySendError::Closed(()) => Refused::Closed,
        })?;
        if let Some(socket) = &self.direct {
            // Nothing sent is still unwritten, and nothing can be sent
            // while `order` is held: these bytes are next on the socket.
            if self.unwritten.load(Ordering::Acquire) == 0 {
                match socket.try_write(&bytes) {
                    Ok(n) if n == bytes.len() => return Ok(()),
                    // The rest is queued below, ahead of anything else.
                    Ok(n) => bytes.advance(n),
                    // Full, or broken: the writer task takes it from here
                    // (and meets the same error, ending the queue).
                    Err(_) => {}
                }
            }
        }
        self.queued.fetch_add(msgs, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes.len(), Ordering::Relaxed);
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        let counted = bytes.len();
        permit.send(Chunk { bytes, msgs, counted });
        Ok(())
    }

    /// Deliveries waiting.
    pub fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl QueueRx {
    /// The next chunk and whatever else is already queued behind it, up to
    /// about `max_bytes`, as one batch for one (vectored) write; `None` once
    /// every sender is gone.
    pub async fn next_batch(&mut self, max_bytes: usize) -> Option<Batch> {
        let mut batch = Batch::default();
        batch.push(self.rx.recv().await?);
        while batch.remaining < max_bytes {
            match self.rx.try_recv() {
                Ok(chunk) => batch.push(chunk),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// `batch` was wholly written to the socket: its deliveries leave the
    /// queue, and direct writes may go ahead once nothing else is unwritten.
    pub fn written(&self, batch: &Batch) {
        self.queued.fetch_sub(batch.msgs, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(batch.counted, Ordering::Relaxed);
        self.unwritten.fetch_sub(batch.chunks, Ordering::AcqRel);
    }

    /// Count `n` bytes written (as they are, not only whole batches: a slow
    /// reader may take a while over one).
    pub fn wrote(&self, n: usize) {
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Chunks written together, straight from their buffers (no copy into a
/// write buffer first).
#[derive(Default)]
pub struct Batch {
    bufs: VecDeque<Bytes>,
    remaining: usize,
    msgs: usize,
    /// Bytes counted against the byte bound.
    counted: usize,
    /// Chunks taken from the queue, empty ones included.
    chunks: usize,
}

impl Batch {
    fn push(&mut self, chunk: Chunk) {
        self.msgs += chunk.msgs;
        self.counted += chunk.counted;
        self.chunks += 1;
        if !chunk.bytes.is_empty() {
            self.remaining += chunk.bytes.len();
            self.bufs.push_back(chunk.bytes);
        }
    }

    /// Deliveries in the batch.
    pub fn msgs(&self) -> usize {
        self.msgs
    }
}

impl Buf for Batch {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.bufs.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.bufs.front_mut() else { break };
            let n = cnt.min(front.len());
            front.advance(n);
            (cnt, self.remaining) = (cnt - n, self.remaining - n);
            if front.is_empty() {
                self.bufs.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in dst.iter_mut().zip(&self.bufs) {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bound_counts_deliveries_not_chunks() {
        let (q, mut rx) = Queue::new(10, None);
        assert_eq!(q.room(), 10);
        q.deliver(Bytes::from_static(b"abc"), 7).unwrap();
        assert_eq!((q.room(), q.depth()), (3, 7));
        assert!(q.control(Bytes::from_static(b"PONG\r\n")).await);
        assert_eq!(q.depth(), 7, "control frames are not deliveries");
        let batch = rx.next_batch(1 << 20).await.unwrap();
        assert_eq!((batch.remaining(), batch.msgs()), (9, 7), "the chunk and the PONG queued behind it");
        assert_eq!(q.depth(), 7, "not written yet");
        rx.written(&batch);
        assert_eq!(q.room(), 10);
        drop(rx);
        assert_eq!(q.deliver(Bytes::new(), 1), Err(Refused::Closed));
        assert_eq!(q.depth(), 0, "a refused chunk is not counted");
        assert!(!q.control(Bytes::new()).await);
    }

    #[tokio::test]
    async fn a_batch_is_its_chunks_in_order_however_it_is_consumed() {
        let (q, mut rx) = Queue::new(100, None);
        for part in ["MSG a 1 1\r\nx\r\n", "", "PONG\r\n", "MSG b 2 2\r\nyz\r\n"] {
            q.deliver(Bytes::from(part), 1).unwrap();
        }
        let whole: Vec<u8> = b"MSG a 1 1\r\nx\r\nPONG\r\nMSG b 2 2\r\nyz\r\n".to_vec();
        let mut batch = rx.next_batch(1 << 20).await.unwrap();
        assert_eq!((batch.remaining(), batch.msgs()), (whole.len(), 4));
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(batch.chunks_vectored(&mut slices), 3, "empty chunks are left out");
        // Consumed in odd steps, across chunk boundaries, as partial writes do.
        let mut out = vec![];
        while batch.has_remaining() {
            let n = batch.chunk().len().min(5);
            out.extend_from_slice(&batch.chunk()[..n]);
            batch.advance(n);
        }
        assert_eq!(out, whole);
        assert_eq!(batch.remaining(), 0);
    }

    #[tokio::test]
    async fn no_part_of_a_delivery_is_written_without_room_for_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (_r, w) = ours.into_split();
        let (q, _rx) = Queue::new(1, Some(Arc::new(w)));
        // The one slot is taken (as by a control frame about to be sent),
        // though nothing is unwritten yet.
        let permit = q.tx.try_reserve().unwrap();
        let big = Bytes::from(vec![b'x'; 16 << 20]);
        assert_eq!(q.deliver(big, 1), Err(Refused::Full));
        drop(permit);
        q.deliver(Bytes::from_static(b"ok"), 1).unwrap();
        let mut first = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut first).await.unwrap();
        assert_eq!(&first, b"ok", "nothing of the refused delivery reached the socket");
    }

    #[tokio::test]
    async fn the_byte_bound_holds_but_one_large_delivery_alone_still_goes() {
        let (q, mut rx) = Queue::bounded(100, 250, None);
        for _ in 0..2 {
            q.deliver(Bytes::from(vec![b'x'; 100]), 1).unwrap();
        }
        assert!(q.fits(0, 50) && !q.fits(0, 51) && !q.fits(40, 11), "200 of 250 queued");
        assert_eq!(q.deliver(Bytes::from(vec![b'x'; 100]), 1), Err(Refused::Full));
        assert!(q.control(Bytes::from(vec![b'c'; 1000])).await, "control frames are not held to it");
        let batch = rx.next_batch(1 << 20).await.unwrap();
        rx.written(&batch);
        assert_eq!(q.depth(), 0);
        q.deliver(Bytes::from(vec![b'x'; 1000]), 1).expect("alone, over the bound");
        assert_eq!(q.deliver(Bytes::from_static(b"y"), 1), Err(Refused::Full), "nothing more behind it");
    }

    #[tokio::test]
    async fn a_batch_stops_near_its_byte_budget() {
        let (q, mut rx) = Queue::new(100, None);
        for _ in 0..10 {
            q.deliver(Bytes::from(vec![b'x'; 100]), 1).unwrap();
        }
        let first = rx.next_batch(250).await.unwrap();
        assert_eq!(first.msgs(), 3, "chunks are added until the budget is reached");
        let rest = rx.next_batch(1 << 20).await.unwrap();
        assert_eq!(rest.msgs(), 7);
    }
}
