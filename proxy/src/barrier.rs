//! Whether nats-server has what the proxy published so far.
//!
//! A client's PING is answered by nats-server only after the publishes
//! before it were processed, so a client that flushed knows the server has
//! its messages. The proxy hands publishes to async-nats, which writes them
//! later; its PONG alone would say nothing. Before it answers a client that
//! published, the proxy publishes a numbered mark on the same upstream
//! connection to a subject only it subscribes to: the mark comes back after
//! the server has processed everything sent before it.
//!
//! What this cannot vouch for: publishes async-nats had taken but not yet
//! written when its connection dropped are gone (core NATS is at most once);
//! a mark sent after the reconnect still comes back. [`Barrier::connects`]
//! lets a caller see that a reconnect happened in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

/// Where marks go; the proxy's own subject, never a client's (tenants and
/// agents cannot subscribe or publish under `_FLOTILLA.`; an admin tapping
/// `>` sees them). The upstream user needs to publish and subscribe there.
pub const SUBJECT_PREFIX: &str = "_FLOTILLA.barrier.";

pub struct Barrier {
    client: async_nats::Client,
    subject: String,
    /// The last mark issued.
    issued: Arc<AtomicU64>,
    /// The highest mark back from the server.
    back: watch::Sender<u64>,
}

impl Barrier {
    /// Subscribe to this proxy's marks on `client`; the task reading them
    /// ends with the client. A first mark that does not come back once the
    /// client is connected (the upstream user may not use
    /// `_FLOTILLA.barrier.>`, or echo is off) is warned about: every flush
    /// after a publish would then wait its limit.
    pub async fn start(client: async_nats::Client) -> Result<Arc<Barrier>, String> {
        let subject = format!("{SUBJECT_PREFIX}{:016x}", rand::random::<u64>());
        let mut marks = client.subscribe(subject.clone()).await.map_err(|e| format!("subscribe {subject}: {e}"))?;
        let issued = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier { client, subject, issued: issued.clone(), back: watch::Sender::new(0) });
        let back = barrier.back.clone();
        tokio::spawn(async move {
            while let Some(m) = marks.next().await {
                // Only a mark this proxy issued, as it sent it: one published
                // by anyone else (a number beyond those issued, a reply or
                // headers) would pass every later wait.
                if m.reply.is_some() || m.headers.is_some() {
                    continue;
                }
                let Some(n) = std::str::from_utf8(&m.payload).ok().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                if n <= issued.load(Ordering::SeqCst) {
                    back.send_if_modified(|v| std::mem::replace(v, (*v).max(n)) < n);
                }
            }
        });
        // In the background: an upstream still away must not hold up start.
        let check = barrier.clone();
        tokio::spawn(async move {
            let connected = || check.client.connection_state() == async_nats::connection::State::Connected;
            for _ in 0..600 {
                if connected() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !check.passed(Duration::from_secs(5)).await && connected() {
                tracing::warn!(
                    subject = %check.subject,
                    "the upstream did not return the proxy's mark: can its user publish and subscribe to \
                     _FLOTILLA.barrier.>? Until it does, a client's PONG after publishing waits up to 2 s"
                );
            }
        });
        Ok(barrier)
    }

    /// Wait (at most `within`, whatever the upstream is doing) until the
    /// server has processed everything published on the client before this
    /// call. False if that could not be confirmed in time.
    pub async fn passed(&self, within: Duration) -> bool {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut back = self.back.subscribe();
        // The publish too: while async-nats reconnects its queue can be full.
        let mark = async {
            self.client.publish(self.subject.clone(), n.to_string().into()).await.is_ok()
                && back.wait_for(|v| *v >= n).await.is_ok()
        };
        matches!(tokio::time::timeout(within, mark).await, Ok(true))
    }

    /// How many times the upstream client has connected: a change between a
    /// publish and a passed mark means the publish may have been lost.
    pub fn connects(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::Relaxed)
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
        let (back, issued) = (*barrier.back.borrow(), barrier.issued.load(Ordering::SeqCst));
        assert!((3..=issued).contains(&back), "its own marks came back: {back} of {issued}");
        nats.stop();
        assert!(!barrier.passed(Duration::from_millis(300)).await, "no server, no mark back");
    }

    #[tokio::test]
    async fn a_mark_it_did_not_issue_passes_nothing() {
        let nats = flotilla_testsupport::NatsServer::start();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let barrier = Barrier::start(client).await.unwrap();
        let other = async_nats::connect(nats.url()).await.unwrap();
        for forged in [u64::MAX.to_string(), "1000".into()] {
            other.publish(barrier.subject.clone(), forged.into()).await.unwrap();
        }
        other.flush().await.unwrap();
        assert!(barrier.passed(Duration::from_secs(5)).await);
        let (back, issued) = (*barrier.back.borrow(), barrier.issued.load(Ordering::SeqCst));
        assert!(back <= issued && issued <= 2, "only its own marks count: {back} of {issued}");
    }

    #[tokio::test]
    async fn a_wait_keeps_its_limit_while_the_upstream_queue_is_full() {
        let mut nats = flotilla_testsupport::NatsServer::start();
        let client = async_nats::ConnectOptions::new().client_capacity(8).connect(nats.url()).await.unwrap();
        let barrier = Barrier::start(client.clone()).await.unwrap();
        nats.stop();
        // Publishes pile up while async-nats reconnects; its queue fills.
        tokio::spawn(async move {
            for _ in 0..10_000 {
                let _ = client.publish("x", "y".into()).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waited = tokio::time::timeout(Duration::from_secs(2), barrier.passed(Duration::from_millis(300))).await;
        assert_eq!(waited, Ok(false), "a wait of 300 ms ended in time, unconfirmed");
    }
}
