//! A client's outbound queue, bounded in messages: deliveries arrive as
//! chunks of several frames (all a client gets from one batch of upstream
//! messages, written as one buffer), control frames (INFO, PONG, -ERR ...)
//! one by one. The bound counts deliveries, not chunks, so batching never
//! lets a slow client hold more than `client_queue` messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Frames for the writer, and how many deliveries they hold (0: control).
pub struct Chunk {
    pub bytes: Bytes,
    pub msgs: usize,
}

/// The sending side, shared by the connection, its outlets and the registry.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Chunk>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// The writer's side.
pub struct QueueRx {
    rx: mpsc::Receiver<Chunk>,
    queued: Arc<AtomicUsize>,
}

/// Why a chunk of deliveries was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

impl Queue {
    /// A queue holding at most `capacity` deliveries (and as many chunks).
    pub fn new(capacity: usize) -> (Queue, QueueRx) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        (Queue { tx, queued: queued.clone(), capacity }, QueueRx { rx, queued })
    }

    /// Queue a control frame, waiting for room (never dropped); false once
    /// the writer is gone.
    pub async fn control(&self, frame: Bytes) -> bool {
        self.tx.send(Chunk { bytes: frame, msgs: 0 }).await.is_ok()
    }

    /// Deliveries that still fit.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.queued.load(Ordering::Relaxed))
    }

    /// Queue `msgs` deliveries encoded in `bytes`, without waiting.
    pub fn deliver(&self, bytes: Bytes, msgs: usize) -> Result<(), Refused> {
        self.queued.fetch_add(msgs, Ordering::Relaxed);
        self.tx.try_send(Chunk { bytes, msgs }).map_err(|e| {
            self.queued.fetch_sub(msgs, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
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
    pub async fn recv(&mut self) -> Option<Chunk> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Chunk> {
        self.rx.try_recv().ok()
    }

    /// A chunk was handed to the socket's buffer: its deliveries leave the queue.
    pub fn written(&self, chunk: &Chunk) {
        self.queued.fetch_sub(chunk.msgs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bound_counts_deliveries_not_chunks() {
        let (q, mut rx) = Queue::new(10);
        assert_eq!(q.room(), 10);
        q.deliver(Bytes::from_static(b"abc"), 7).unwrap();
        assert_eq!((q.room(), q.depth()), (3, 7));
        assert!(q.control(Bytes::from_static(b"PONG\r\n")).await);
        assert_eq!(q.depth(), 7, "control frames are not deliveries");
        let chunk = rx.recv().await.unwrap();
        assert_eq!((&chunk.bytes[..], chunk.msgs), (&b"abc"[..], 7));
        rx.written(&chunk);
        assert_eq!(q.room(), 10);
        let pong = rx.try_recv().unwrap();
        assert_eq!(pong.msgs, 0);
        drop(rx);
        assert_eq!(q.deliver(Bytes::new(), 1), Err(Refused::Closed));
        assert_eq!(q.depth(), 0, "a refused chunk is not counted");
        assert!(!q.control(Bytes::new()).await);
    }
}
