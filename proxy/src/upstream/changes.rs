//! Subscription changes on their way to the delivery connection. They
//! wait as a set keyed by sid, not as a queue: a sid subscribed and
//! unsubscribed before the connection took either leaves nothing behind
//! (sids are never reused). What waits is therefore bounded by the
//! subscriptions that exist, however fast clients churn and however long
//! the upstream is away: during an outage the connection takes nothing,
//! and a queue of commands would grow with every SUB and UNSUB.
//!
//! Each subscribe has a generation; the connection reports the highest
//! one nats-server has answered a PING after ([`Changes::acked`]), so a
//! client can be told its subscription is live upstream (its PONG waits for
//! it, as nats-server's PONG follows its SUB), not merely written down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::outlet::lock;

/// A subscription as it goes upstream: subject and queue group.
pub type Sub = (String, Option<String>);

/// Per sid: subscribe (`Some`) or unsubscribe (`None`).
pub type Batch = BTreeMap<u64, Option<Sub>>;

#[derive(Default)]
struct State {
    waiting: Batch,
    /// Every handle is gone.
    closed: bool,
    /// Of the latest subscribe.
    generation: u64,
    /// The generation when the connection was last lost: until a new one
    /// has every subscription again, none counts as live.
    floor: u64,
}

pub struct Changes {
    state: Mutex<State>,
    wake: Notify,
    /// The latest generation the server has.
    acked: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes { state: Mutex::default(), wake: Notify::new(), acked: watch::channel(0).0 }
    }
}

impl Changes {
    /// Its generation: [`Changes::synced`] to that says the server has it.
    pub fn subscribe(&self, sid: u64, subject: &str, queue: Option<&str>) -> u64 {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.waiting.insert(sid, Some((subject.into(), queue.map(Into::into))));
        let generation = state.generation;
        drop(state);
        self.wake.notify_one();
        generation
    }

    pub fn unsubscribe(&self, sid: u64) {
        let mut state = lock(&self.state);
        match state.waiting.get(&sid) {
            // Never sent: nothing to undo upstream.
            Some(Some(_)) => {
                state.waiting.remove(&sid);
            }
            _ => {
                state.waiting.insert(sid, None);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_one();
    }

    /// Everything waiting and the generation it brings the connection to,
    /// or `None` once every handle is gone.
    pub fn take(&self) -> Option<(Batch, u64)> {
        let mut state = lock(&self.state);
        if state.closed {
            return None;
        }
        Some((std::mem::take(&mut state.waiting), state.generation))
    }

    /// The server answered a PING sent after every change up to `generation`.
    pub fn acked(&self, generation: u64) {
        self.acked.send_if_modified(|g| {
            let newer = generation > *g;
            *g = (*g).max(generation);
            newer
        });
    }

    /// The connection was lost: its server's subscriptions with it.
    pub fn lost(&self) {
        let mut state = lock(&self.state);
        // A generation of its own, above every ack so far: the next
        // connection's first PONG acknowledges it.
        state.generation += 1;
        state.floor = state.generation;
        drop(state);
        self.wake.notify_one();
    }

    /// Wait until the server has every change up to `generation` (and,
    /// after a lost connection, every subscription again), for at most
    /// `within` (an upstream that is away must not hold clients for ever);
    /// false if it did not come to that.
    pub async fn synced(&self, generation: u64, within: Duration) -> bool {
        let target = generation.max(lock(&self.state).floor);
        let mut acked = self.acked.subscribe();
        tokio::time::timeout(within, acked.wait_for(|g| *g >= target)).await.is_ok_and(|r| r.is_ok())
    }

    /// Wait for a change (or the close); returns at once if one came
    /// since the last wait.
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }
}

/// Apply a batch to the connection's subscriptions; the changes to send.
pub fn apply(subs: &mut BTreeMap<u64, Sub>, batch: Batch) -> Batch {
    let mut send = Batch::new();
    for (sid, change) in batch {
        match change {
            Some(sub) => {
                subs.insert(sid, sub.clone());
                send.insert(sid, Some(sub));
            }
            // Only what the server was told of needs an UNSUB.
            None => {
                if subs.remove(&sid).is_some() {
                    send.insert(sid, None);
                }
            }
        }
    }
    send
}

/// The handle's share: when the last clone goes, the connection ends.
pub struct Owner(pub Arc<Changes>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_during_an_outage_leaves_at_most_the_live_subscriptions() {
        let changes = Changes::default();
        // Nothing takes the changes, as while the upstream is away.
        for sid in 1..=100_000u64 {
            changes.subscribe(sid, "logs.acme.>", None);
            changes.unsubscribe(sid);
        }
        changes.subscribe(100_001, "logs.acme.web.>", Some("q"));
        assert_eq!(changes.waiting(), 1);
        let (batch, generation) = changes.take().expect("open");
        assert_eq!(generation, 100_001);
        assert_eq!(
            batch.into_iter().collect::<Vec<_>>(),
            vec![(100_001, Some(("logs.acme.web.>".to_string(), Some("q".to_string()))))]
        );
        assert_eq!(changes.waiting(), 0);
    }

    #[test]
    fn an_unsubscribe_after_the_subscribe_was_taken_goes_upstream() {
        let changes = Changes::default();
        let mut subs = BTreeMap::new();
        changes.subscribe(7, "logs.acme.>", None);
        let sent = apply(&mut subs, changes.take().expect("open").0);
        assert_eq!(sent.get(&7), Some(&Some(("logs.acme.>".to_string(), None))));
        changes.unsubscribe(7);
        let sent = apply(&mut subs, changes.take().expect("open").0);
        assert_eq!(sent.get(&7), Some(&None));
        assert!(subs.is_empty());
        // An UNSUB for a sid the connection never had is not sent.
        changes.unsubscribe(8);
        assert!(apply(&mut subs, changes.take().expect("open").0).is_empty());
    }

    #[tokio::test]
    async fn synced_waits_for_the_generation_to_be_acked() {
        let changes = Arc::new(Changes::default());
        let first = changes.subscribe(1, "logs.acme.>", None);
        let second = changes.subscribe(2, "logs.acme.web.>", None);
        assert!(changes.synced(0, Duration::ZERO).await, "nothing to wait for");
        assert!(!changes.synced(first, Duration::from_millis(50)).await, "not acked: gives up");
        changes.acked(first);
        assert!(changes.synced(first, Duration::ZERO).await);
        let waiter = tokio::spawn({
            let changes = changes.clone();
            async move { changes.synced(second, Duration::from_secs(10)).await }
        });
        changes.acked(second);
        assert!(waiter.await.unwrap(), "woken by the ack");
        changes.acked(first);
        assert!(changes.synced(second, Duration::ZERO).await, "an older ack does not go back");
        // A lost connection, with every subscription acked: even an old
        // one is not live until a new connection has them all again.
        changes.lost();
        assert!(!changes.synced(first, Duration::from_millis(50)).await, "first is gone with the connection");
        let (_, generation) = changes.take().expect("open");
        changes.acked(generation);
        assert!(changes.synced(first, Duration::ZERO).await, "the new connection's first PONG");
    }

    #[tokio::test]
    async fn a_change_or_the_last_handle_going_wakes_the_connection() {
        let owner = Owner(Arc::new(Changes::default()));
        let changes = owner.0.clone();
        owner.0.subscribe(1, "logs.acme.>", None);
        tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed()).await.expect("woken");
        assert!(changes.take().is_some());
        drop(owner);
        tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed()).await.expect("woken");
        assert!(changes.take().is_none());
    }
}
