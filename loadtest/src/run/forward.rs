//! A TCP forwarder with a gate, between the shipper and its object store:
//! open, it copies bytes both ways; closed, it resets every connection it
//! holds and every new one at once (`SO_LINGER` 0: the peer sees a
//! connection reset, as from a store that refuses writes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bench::BenchError;

/// Opens and closes the forwarder; cheap to clone.
#[derive(Clone)]
pub struct Gate {
    open: Arc<watch::Sender<bool>>,
    /// Connections reset by a closed gate.
    resets: Arc<AtomicU64>,
}

impl Gate {
    fn new() -> Gate {
        Gate { open: Arc::new(watch::Sender::new(true)), resets: Arc::default() }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    pub fn close(&self) {
        self.open.send_replace(false);
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
}

/// A forwarder from a free loopback port to `127.0.0.1:to`, until `stop`.
pub struct Forwarder {
    pub port: u16,
    pub gate: Gate,
}

pub async fn start(to: u16, stop: CancellationToken) -> Result<Forwarder, BenchError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").await.map_err(|e| BenchError::Failed(format!("forwarder: bind: {e}")))?;
    let port = listener.local_addr().map_err(|e| BenchError::Failed(format!("forwarder: {e}")))?.port();
    let gate = Gate::new();
    let g = gate.clone();
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop.cancelled() => break,
            };
            let Ok((client, _)) = conn else { continue };
            if !g.is_open() {
                reset(client, &g);
                continue;
            }
            let (g, stop) = (g.clone(), stop.clone());
            tokio::spawn(async move { pipe(client, to, g, stop).await });
        }
    });
    Ok(Forwarder { port, gate })
}

fn reset(s: TcpStream, g: &Gate) {
    let _ = s.set_zero_linger();
    g.resets.fetch_add(1, Ordering::Relaxed);
}

async fn pipe(mut client: TcpStream, to: u16, g: Gate, stop: CancellationToken) {
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", to)).await else {
        reset(client, &g);
        return;
    };
    let mut open = g.open.subscribe();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = open.wait_for(|o| !*o) => {
            reset(client, &g);
            let _ = upstream.set_zero_linger();
        }
        _ = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn echo_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    /// Round trip of one message; false if the connection was refused or reset.
    async fn echoes(s: &mut TcpStream) -> bool {
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await, Ok(Ok(_)))
            && &buf == b"ping"
    }

    #[tokio::test]
    async fn a_closed_gate_resets_open_and_new_connections_until_it_opens() {
        let stop = CancellationToken::new();
        let f = start(echo_server().await, stop.clone()).await.unwrap();
        let mut held = TcpStream::connect(("127.0.0.1", f.port)).await.unwrap();
        assert!(echoes(&mut held).await);

        f.gate.close();
        // The held connection is reset...
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf)).await.unwrap();
        assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");
        // ...and a new one too.
        let mut fresh = TcpStream::connect(("127.0.0.1", f.port)).await.unwrap();
        assert!(!echoes(&mut fresh).await);
        assert!(f.gate.resets() >= 2, "{}", f.gate.resets());

        f.gate.open();
        let mut again = TcpStream::connect(("127.0.0.1", f.port)).await.unwrap();
        assert!(echoes(&mut again).await);
        stop.cancel();
    }
}
