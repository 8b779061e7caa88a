//! A client's socket, split for its connection: the read half for the
//! reader, and the way bytes go out. A plain TCP client's write half is
//! shared, so that a delivery can be written straight to the socket by
//! whoever has it when nothing is queued ahead of it
//! ([`crate::queue::Queue::deliver`]); a TLS client's belongs to its writer
//! task alone.

use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::queue::QueueRx;

/// Bytes gathered from the queue for one write.
const MAX_WRITE: usize = 256 * 1024;

/// Where a client's bytes go.
pub enum WriteHalf {
    /// Plain TCP: written with `try_write` from any task.
    Tcp(Arc<OwnedWriteHalf>),
    /// Anything else (TLS): written by the writer task only.
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl WriteHalf {
    /// The half that deliveries may write to directly, if there is one.
    pub fn direct(&self) -> Option<Arc<OwnedWriteHalf>> {
        match self {
            WriteHalf::Tcp(w) => Some(w.clone()),
            WriteHalf::Stream(_) => None,
        }
    }
}

/// A client's connection, before it is split.
pub trait ClientSocket: Send + 'static {
    type Read: AsyncRead + Send + Unpin + 'static;
    fn split(self) -> (Self::Read, WriteHalf);
}

impl ClientSocket for TcpStream {
    type Read = OwnedReadHalf;
    fn split(self) -> (OwnedReadHalf, WriteHalf) {
        let (r, w) = self.into_split();
        (r, WriteHalf::Tcp(Arc::new(w)))
    }
}

impl<S> ClientSocket for tokio_rustls::server::TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Read = tokio::io::ReadHalf<Self>;
    fn split(self) -> (Self::Read, WriteHalf) {
        let (r, w) = tokio::io::split(self);
        (r, WriteHalf::Stream(Box::new(w)))
    }
}

/// nats-server's `write_deadline`: a batch (at most [`MAX_WRITE`] bytes)
/// the client's socket does not take within `deadline` means the client
/// has stopped reading (a trickle, or what its kernel takes for it while
/// it reads nothing, does not count). Then `stalled` is cancelled and the
/// connection is closed as a slow consumer, whatever the slow-consumer
/// policy: that is for clients that read, if slowly.
#[derive(Clone)]
pub struct Stall {
    pub deadline: Duration,
    pub stalled: CancellationToken,
}

impl Stall {
    /// `io` if it completes by `until`, `None` if not. Boxed: the timer
    /// must not be carried by every idle connection's writer task (plain
    /// TCP comes here only with a full socket; TLS once per batch).
    async fn wait_until<T>(&self, until: tokio::time::Instant, io: impl Future<Output = T>) -> Option<T> {
        Box::pin(tokio::time::timeout_at(until, io)).await.ok()
    }

    /// Tell the connection, and end the writer with this error.
    fn stalled(&self) -> io::Error {
        self.stalled.cancel();
        io::ErrorKind::TimedOut.into()
    }
}

/// The writer task: whatever is queued goes out in one vectored write,
/// from the chunks' own buffers, until every sender of the queue is gone.
pub async fn write_loop(out: WriteHalf, mut rx: QueueRx, stall: Stall) {
    match out {
        WriteHalf::Tcp(socket) => {
            while let Some(mut batch) = rx.next_batch(MAX_WRITE).await {
                if write_all_tcp(&socket, &mut batch, &rx, &stall).await.is_err() {
                    return;
                }
                rx.written(&batch);
            }
            // The socket's write side shuts when the last holder lets go.
        }
        WriteHalf::Stream(mut out) => {
            while let Some(mut batch) = rx.next_batch(MAX_WRITE).await {
                let until = tokio::time::Instant::now() + stall.deadline;
                match stall.wait_until(until, write_all_stream(&mut out, &mut batch, &rx)).await {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return,
                    None => {
                        stall.stalled();
                        return;
                    }
                }
                rx.written(&batch);
            }
            let _ = out.shutdown().await;
        }
    }
}

/// Write all of `buf` to a TLS (or other) stream and flush it.
async fn write_all_stream(out: &mut (impl AsyncWrite + Unpin), buf: &mut impl Buf, rx: &QueueRx) -> io::Result<()> {
    while buf.has_remaining() {
        match out.write_buf(buf).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => rx.wrote(n),
        }
    }
    out.flush().await
}

/// Write all of `buf` to a shared TCP write half, waiting for the socket
/// to take more when it is full; `rx` counts the bytes as they go.
async fn write_all_tcp(w: &OwnedWriteHalf, buf: &mut impl Buf, rx: &QueueRx, stall: &Stall) -> io::Result<()> {
    // Set at the first wait: a batch the socket takes at once needs no timer.
    let mut until = None;
    while buf.has_remaining() {
        // The slices live only for the call, not across the await below:
        // every idle connection's writer task would carry them.
        let written = {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = buf.chunks_vectored(&mut slices);
            w.try_write_vectored(&slices[..n])
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                buf.advance(k);
                rx.wrote(k);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let until = *until.get_or_insert_with(|| tokio::time::Instant::now() + stall.deadline);
                if stall.wait_until(until, w.writable()).await.transpose()?.is_none() {
                    return Err(stall.stalled());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Queue;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    /// A connected pair: the proxy's side split as a client connection is,
    /// and the peer.
    async fn pair() -> (OwnedReadHalf, WriteHalf, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (r, w) = ours.split();
        (r, w, peer)
    }

    fn stall() -> Stall {
        Stall { deadline: Duration::from_secs(60), stalled: CancellationToken::new() }
    }

    #[tokio::test]
    async fn a_client_that_takes_no_batch_within_the_deadline_is_stalled_and_a_slow_one_is_not() {
        let (_r, w, _peer) = pair().await;
        let (queue, rx) = Queue::new(100, w.direct());
        let stall = Stall { deadline: Duration::from_millis(300), stalled: CancellationToken::new() };
        let writer = tokio::spawn(write_loop(w, rx, stall.clone()));
        // More than the socket buffers hold, and the peer reads nothing.
        queue.deliver(Bytes::from(vec![b'x'; 16 << 20]), 1).unwrap();
        tokio::time::timeout(Duration::from_secs(10), stall.stalled.cancelled()).await.expect("found stalled");
        writer.await.unwrap();
        drop(queue);

        // 128 KiB every 50 ms: readiness (half the socket's buffer free)
        // comes seldom, but each batch goes within the deadline.
        let (_r, w, mut peer) = pair().await;
        let (queue, rx) = Queue::new(100, w.direct());
        let stall = Stall { deadline: Duration::from_secs(2), stalled: CancellationToken::new() };
        let writer = tokio::spawn(write_loop(w, rx, stall.clone()));
        queue.deliver(Bytes::from(vec![b'y'; 8 << 20]), 1).unwrap();
        drop(queue);
        let mut buf = vec![0u8; 128 * 1024];
        let mut got = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match peer.read(&mut buf).await.unwrap() {
                0 => break,
                n => got += n,
            }
        }
        writer.await.unwrap();
        assert_eq!(got, 8 << 20, "every byte reached the slow reader");
        assert!(!stall.stalled.is_cancelled(), "a slow reader is not stalled");
    }

    #[tokio::test]
    async fn an_idle_writer_task_is_small() {
        let (_r, w, _peer) = pair().await;
        let (_queue, rx) = Queue::new(10, w.direct());
        // Every connection's writer task is this future; most wait idle.
        // (About 570 bytes in a debug build; 1.6 KB when the write's slice
        // array was held across an await.)
        let task = write_loop(w, rx, stall());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 768, "the writer task's future is {size} bytes");
    }

    #[tokio::test]
    async fn a_delivery_waits_behind_what_is_queued() {
        let (_r, w, mut peer) = pair().await;
        let (queue, rx) = Queue::new(100, w.direct());
        // No writer task yet: the control frame stays queued.
        assert!(queue.control(Bytes::from_static(b"INFO ")).await);
        queue.deliver(Bytes::from_static(b"first"), 1).unwrap();
        assert_eq!(queue.depth(), 1, "queued behind the control frame, though the socket has room");
        let writer = tokio::spawn(write_loop(w, rx, stall()));
        drop(queue);
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        writer.await.unwrap();
        assert_eq!(all, b"INFO first");
    }

    #[tokio::test]
    async fn the_rest_of_a_partial_write_goes_out_before_anything_else() {
        let (_r, w, mut peer) = pair().await;
        let (queue, rx) = Queue::new(100, w.direct());
        // Nothing ahead: written at once, no writer task needed.
        queue.deliver(Bytes::from_static(b"first "), 1).unwrap();
        let mut got = vec![0u8; 6];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first ");
        assert_eq!(queue.depth(), 0, "a direct write is never queued");
        // More than the socket takes: the rest is queued.
        let big = Bytes::from(vec![b'x'; 16 << 20]);
        queue.deliver(big.clone(), 1).unwrap();
        assert_eq!(queue.depth(), 1, "the rest of the big chunk is queued");
        // The peer makes room; what comes next must still wait its turn.
        let mut head = vec![0u8; 1 << 20];
        peer.read_exact(&mut head).await.unwrap();
        queue.deliver(Bytes::from_static(b" after"), 1).unwrap();
        assert!(queue.control(Bytes::from_static(b" PONG")).await);
        queue.deliver(Bytes::from_static(b" last"), 1).unwrap();
        assert_eq!(queue.depth(), 3);
        let writer = tokio::spawn(write_loop(w, rx, stall()));
        drop(queue);
        let mut all = head;
        peer.read_to_end(&mut all).await.unwrap();
        writer.await.unwrap();
        let mut want = big.to_vec();
        want.extend_from_slice(b" after PONG last");
        assert_eq!(all.len(), want.len());
        assert!(all == want, "every byte in hand-over order");
    }

    #[tokio::test]
    async fn once_the_queue_drains_deliveries_go_direct_again() {
        let (_r, w, mut peer) = pair().await;
        let (queue, rx) = Queue::new(100, w.direct());
        let writer = tokio::spawn(write_loop(w, rx, stall()));
        assert!(queue.control(Bytes::from_static(b"INFO\r\n")).await);
        let mut got = vec![0u8; 6];
        // On this one-thread runtime the writer counted it written in the
        // same turn that wrote it, before the peer could read it.
        peer.read_exact(&mut got).await.unwrap();
        for _ in 0..100 {
            queue.deliver(Bytes::from_static(b"m"), 1).unwrap();
            assert_eq!(queue.depth(), 0, "written directly, not queued");
        }
        drop(queue);
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, vec![b'm'; 100]);
        writer.await.unwrap();
    }
}
