//! Subscription changes on their way to the delivery connection. They
//! wait as a set keyed by sid, not as a queue: a sid subscribed and
//! unsubscribed before the connection took either leaves nothing behind
//! (sids are never reused). What waits is therefore bounded by the
//! subscriptions that exist, however fast clients churn and however long
//! the upstream is away: during an outage the connection takes nothing,
//! and a queue of commands would grow with every SUB and UNSUB.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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
}

#[derive(Default)]
pub struct Changes {
    state: Mutex<State>,
    wake: Notify,
}

impl Changes {
    pub fn subscribe(&self, sid: u64, subject: &str, queue: Option<&str>) {
        lock(&self.state).waiting.insert(sid, Some((subject.into(), queue.map(Into::into))));
        self.wake.notify_one();
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

    /// Everything waiting, or `None` once every handle is gone.
    pub fn take(&self) -> Option<Batch> {
        let mut state = lock(&self.state);
        if state.closed {
            return None;
        }
        Some(std::mem::take(&mut state.waiting))
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
        let batch = changes.take().expect("open");
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
        let sent = apply(&mut subs, changes.take().expect("open"));
        assert_eq!(sent.get(&7), Some(&Some(("logs.acme.>".to_string(), None))));
        changes.unsubscribe(7);
        let sent = apply(&mut subs, changes.take().expect("open"));
        assert_eq!(sent.get(&7), Some(&None));
        assert!(subs.is_empty());
        // An UNSUB for a sid the connection never had is not sent.
        changes.unsubscribe(8);
        assert!(apply(&mut subs, changes.take().expect("open")).is_empty());
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
