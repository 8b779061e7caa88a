//! Shared upstream subscriptions: one upstream subscription per distinct
//! (subject, queue group), whatever the number of clients that need it. Each
//! message is handed to every subscribed client (or, for a queue group, to
//! one of its members here, round robin) through their bounded queues.
//! The subscriptions live on the delivery connection ([`crate::upstream`])
//! when there is one, on async-nats otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::task::JoinHandle;

use flotilla_core::metrics::Gauge;

use crate::delivery::{Delivery, Raw};
use crate::outlet::{lock, Limit, Outlet, Pending};
use crate::upstream::conn::{Sink, Upstream};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The upstream subject (already scoped to the org).
    pub subject: String,
    pub queue: Option<String>,
}

pub struct Receiver {
    pub conn: u64,
    pub sid: String,
    pub outlet: Outlet,
    pub limit: Arc<Limit>,
}

struct Entry {
    receivers: Mutex<Vec<Receiver>>,
    next: AtomicUsize,
    queue: bool,
    /// Its subscription on the delivery connection, if it has one.
    sid: Option<u64>,
    /// Its async-nats subscription's task, otherwise.
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Entries by their sid on the delivery connection.
type BySid = Arc<Mutex<HashMap<u64, Arc<Entry>>>>;

pub struct Fanout {
    client: async_nats::Client,
    entries: tokio::sync::Mutex<HashMap<Key, Arc<Entry>>>,
    gauge: Gauge,
    /// The delivery connection (plain `nats://` upstreams), if in use.
    direct: Option<(Upstream, BySid)>,
    next_sid: AtomicU64,
}

/// Reads from the delivery connection go to the entries' clients.
pub struct FanoutSink {
    by_sid: BySid,
}

impl Sink for FanoutSink {
    fn deliver(&mut self, msgs: &[Raw<'_>]) {
        let Some(first) = msgs.first() else { return };
        // Most reads carry one subscription's messages: the read is the batch.
        if msgs.iter().all(|m| m.sid == first.sid) {
            self.send(first.sid, msgs);
            return;
        }
        // Interleaved (e.g. one message per org in turn): each
        // subscription's messages, in order, as one batch, so its clients
        // are woken once per read, not once per message.
        let mut batch: Vec<&Raw<'_>> = Vec::with_capacity(msgs.len());
        let mut done: Vec<u64> = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if done.contains(&m.sid) {
                continue;
            }
            batch.clear();
            batch.extend(msgs[i..].iter().filter(|x| x.sid == m.sid));
            self.send(m.sid, &batch);
            done.push(m.sid);
        }
    }
}

impl FanoutSink {
    fn send<M: Delivery>(&self, sid: u64, batch: &[M]) {
        let entry = lock(&self.by_sid).get(&sid).cloned();
        if let Some(entry) = entry {
            deliver(&entry, batch, entry.queue);
        }
    }
}

impl Fanout {
    pub fn new(client: async_nats::Client, gauge: Gauge) -> Fanout {
        Fanout {
            client,
            entries: tokio::sync::Mutex::new(HashMap::new()),
            gauge,
            direct: None,
            next_sid: AtomicU64::new(0),
        }
    }

    /// Deliveries read by a delivery connection instead of async-nats
    /// (`start` it with the sink this returns).
    pub fn with_direct(mut self, start: impl FnOnce(FanoutSink) -> Upstream) -> Fanout {
        let by_sid = BySid::default();
        let upstream = start(FanoutSink { by_sid: by_sid.clone() });
        self.direct = Some((upstream, by_sid));
        self
    }

    /// Add a client subscription, subscribing upstream if it is the first
    /// for this key.
    pub async fn add(&self, key: Key, receiver: Receiver) -> Result<(), async_nats::SubscribeError> {
        let mut entries = self.entries.lock().await;
        if let Some(entry) = entries.get(&key) {
            lock(&entry.receivers).push(receiver);
            return Ok(());
        }
        let queue = key.queue.is_some();
        if let Some((upstream, by_sid)) = &self.direct {
            let sid = self.next_sid.fetch_add(1, Ordering::Relaxed) + 1;
            let entry = Arc::new(Entry {
                receivers: Mutex::new(vec![receiver]),
                next: AtomicUsize::new(0),
                queue,
                sid: Some(sid),
                task: Mutex::new(None),
            });
            lock(by_sid).insert(sid, entry.clone());
            upstream.subscribe(sid, &key.subject, key.queue.as_deref());
            entries.insert(key, entry);
            self.gauge.set(entries.len() as i64);
            return Ok(());
        }
        let sub = match &key.queue {
            None => self.client.subscribe(key.subject.clone()).await?,
            Some(q) => self.client.queue_subscribe(key.subject.clone(), q.clone()).await?,
        };
        let entry = Arc::new(Entry {
            receivers: Mutex::new(vec![receiver]),
            next: AtomicUsize::new(0),
            queue,
            sid: None,
            task: Mutex::new(None),
        });
        let e = entry.clone();
        let task = tokio::spawn(async move {
            // Whatever is already waiting is delivered under one lock.
            let mut batches = sub.ready_chunks(64);
            while let Some(batch) = batches.next().await {
                deliver(&e, &batch, queue);
            }
        });
        *lock(&entry.task) = Some(task);
        entries.insert(key, entry);
        self.gauge.set(entries.len() as i64);
        Ok(())
    }

    /// Remove a client subscription; the last one out unsubscribes upstream.
    pub async fn remove(&self, key: &Key, conn: u64, sid: &str) {
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get(key) else { return };
        let empty = {
            let mut r = lock(&entry.receivers);
            r.retain(|x| !(x.conn == conn && x.sid == sid));
            r.is_empty()
        };
        if empty {
            if let Some(entry) = entries.remove(key) {
                if let Some(t) = lock(&entry.task).take() {
                    t.abort(); // drops the subscriber: UNSUB upstream
                }
                if let (Some(sid), Some((upstream, by_sid))) = (entry.sid, &self.direct) {
                    lock(by_sid).remove(&sid);
                    upstream.unsubscribe(sid);
                }
            }
            self.gauge.set(entries.len() as i64);
        }
    }

    /// Set a delivery limit (UNSUB with a count) on a client subscription.
    pub async fn limit(&self, key: &Key, conn: u64, sid: &str, max: u64) -> bool {
        let entries = self.entries.lock().await;
        let Some(entry) = entries.get(key) else { return false };
        let r = lock(&entry.receivers);
        match r.iter().find(|x| x.conn == conn && x.sid == sid) {
            Some(x) if max > x.limit.delivered.load(Ordering::Relaxed) => {
                x.limit.max.store(max, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

/// Deliver a batch of upstream messages: each client's frames are gathered
/// over the batch and queued as one chunk (one wake-up and one write per
/// client per batch, not per message).
fn deliver<M: Delivery>(entry: &Entry, batch: &[M], queue: bool) {
    let mut receivers = lock(&entry.receivers);
    // What each receiver is expected to get from the batch (a sizing hint).
    let share = |n: usize| if queue { batch.len() / n.max(1) + 1 } else { batch.len() };
    let mut pending: Vec<Pending> = Vec::new();
    let expect = share(receivers.len());
    pending.resize_with(receivers.len(), || Pending::expecting(expect));
    for m in batch {
        if receivers.is_empty() {
            return;
        }
        let mut done = false;
        if queue {
            let i = entry.next.fetch_add(1, Ordering::Relaxed) % receivers.len();
            done |= !add(&receivers[i], &mut pending[i], m);
        } else {
            for (r, p) in receivers.iter().zip(pending.iter_mut()) {
                done |= !add(r, p, m);
            }
        }
        if done {
            // A receiver reached its limit: queue what it has, and take it
            // out before the next message (a queue group's next member
            // must get that one).
            flush(&receivers, &mut pending);
            receivers.retain(|r| !r.limit.exhausted() && !r.outlet.queue.is_closed());
            pending.clear();
            let expect = share(receivers.len());
            pending.resize_with(receivers.len(), || Pending::expecting(expect));
        }
    }
    if !flush(&receivers, &mut pending) {
        receivers.retain(|r| !r.limit.exhausted() && !r.outlet.queue.is_closed());
    }
}

/// Add one message for `r`; false when `r` is done (limit reached, client gone).
fn add(r: &Receiver, pending: &mut Pending, m: &impl Delivery) -> bool {
    if r.outlet.queue.is_closed() {
        return false; // the client is gone
    }
    if r.outlet.echoes.as_ref().is_some_and(|e| lock(e).is_echo(m)) {
        return true; // its own publish, and it asked for no echo
    }
    if !r.limit.take() {
        return false;
    }
    let subject = r.outlet.scope.deliver(m.subject());
    r.outlet.add(pending, &subject, &r.sid, m);
    !r.limit.exhausted()
}

/// Queue every receiver's pending frames; false if a client is gone.
fn flush(receivers: &[Receiver], pending: &mut [Pending]) -> bool {
    let mut all = true;
    for (r, p) in receivers.iter().zip(pending.iter_mut()) {
        all &= r.outlet.flush(p);
    }
    all
}
