//! Whether nats-server has what the proxy published so far.
//!
//! A client's PING is answered by nats-server only after the publishes
//! before it were processed, so a client that flushed knows the server has
//! its messages. The proxy hands publishes to async-nats, which writes them
//! later; its PONG alone would say nothing. Before it answers a client that
//! published, the proxy publishes a mark on the same upstream connection to
//! a subject only it subscribes to: the mark comes back after the server
//! has processed everything sent before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

/// Where marks go; the proxy's own subject, never a client's (tenants and
/// agents cannot subscribe to `_FLOTILLA.`; an admin tapping `>` sees them).
pub const SUBJECT_PREFIX: &str = "_FLOTILLA.barrier.";

pub struct Barrier {
    client: async_nats::Client,
    subject: String,
    next: AtomicU64,
    /// The highest mark back from the server.
    back: watch::Sender<u64>,
}

impl Barrier {
    /// Subscribe to this proxy's marks on `client`; the task reading them
    /// ends with the client.
    pub async fn start(client: async_nats::Client) -> Result<std::sync::Arc<Barrier>, String> {
        let subject = format!("{SUBJECT_PREFIX}{:016x}", rand::random::<u64>());
        let mut marks = client.subscribe(subject.clone()).await.map_err(|e| format!("subscribe {subject}: {e}"))?;
        let barrier =
            std::sync::Arc::new(Barrier { client, subject, next: AtomicU64::new(0), back: watch::Sender::new(0) });
        let back = barrier.back.clone();
        tokio::spawn(async move {
            while let Some(m) = marks.next().await {
                let Some(n) = std::str::from_utf8(&m.payload).ok().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                back.send_if_modified(|v| std::mem::replace(v, (*v).max(n)) < n);
            }
        });
        Ok(barrier)
    }

    /// Wait (at most `within`) until the server has processed everything
    /// published on the client before this call. False if it could not be
    /// confirmed in time (the upstream is away).
    pub async fn passed(&self, within: Duration) -> bool {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut back = self.back.subscribe();
        if self.client.publish(self.subject.clone(), n.to_string().into()).await.is_err() {
            return false;
        }
        let passed = matches!(tokio::time::timeout(within, back.wait_for(|v| *v >= n)).await, Ok(Ok(_)));
        passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mark_passes_once_the_server_has_it_and_not_while_it_is_away() {
        let mut nats = flotilla_testsupport::NatsServer::start();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let barrier = Barrier::start(client).await.unwrap();
        for _ in 0..3 {
            assert!(barrier.passed(Duration::from_secs(5)).await);
        }
        assert_eq!(*barrier.back.borrow(), 3);
        nats.stop();
        assert!(!barrier.passed(Duration::from_millis(300)).await, "no server, no mark back");
    }
}
