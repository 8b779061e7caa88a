//! Shared upstream subscriptions: one upstream subscription per distinct
//! (subject, queue group), whatever the number of clients that need it. Each
//! message is handed to every subscribed client (or, for a queue group, to
//! one of its members here, round robin) through their bounded queues.
//! The subscriptions live on the delivery connection ([`crate::upstream`])
//! when there is one, on async-nats otherwise.
//!
//! An entry's receivers are a shared list replaced whole on every change
//! (subscribe, unsubscribe, a limit reached): a delivery takes the current
//! list and writes to the clients without holding any lock, so subscribing
//! to a busy subject with many receivers never waits for a delivery's
//! socket writes. A delivery already under way may still reach a client
//! that has just unsubscribed, as with nats-server (clients ignore
//! messages for a sid they have dropped).

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

type Receivers = Arc<Vec<Arc<Receiver>>>;

struct Entry {
    receivers: Mutex<Receivers>,
    next: AtomicUsize,
    queue: bool,
    /// Its subscription on the delivery connection, if it has one.
    sid: Option<u64>,
    /// That subscription's generation ([`Fanout::synced`]); 0 for none.
    generation: u64,
    /// Its async-nats subscription's task, otherwise.
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Entries by their sid on the delivery connection.
type BySid = Arc<Mutex<HashMap<u64, Arc<Entry>>>>;

/// How long a client waits for its new subscriptions to be confirmed
/// upstream before it goes on regardless (an upstream that is away).
pub const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
        // Grouped by a stable sort (a read may hold thousands of messages
        // of as many subscriptions: no pass over the read per subscription).
        let mut order: Vec<usize> = (0..msgs.len()).collect();
        order.sort_by_key(|&i| msgs[i].sid);
        let mut batch: Vec<&Raw<'_>> = Vec::with_capacity(msgs.len());
        for run in order.chunk_by(|&a, &b| msgs[a].sid == msgs[b].sid) {
            batch.clear();
            batch.extend(run.iter().map(|&i| &msgs[i]));
            self.send(batch[0].sid, &batch);
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
    /// for this key: the generation to wait for ([`Fanout::synced`]) before
    /// the client may count on it.
    pub async fn add(&self, key: Key, receiver: Receiver) -> Result<u64, async_nats::SubscribeError> {
        let mut entries = self.entries.lock().await;
        if let Some(entry) = entries.get(&key) {
            entry.change(|r| r.push(Arc::new(receiver)));
            return Ok(entry.generation);
        }
        let queue = key.queue.is_some();
        if let Some((upstream, by_sid)) = &self.direct {
            let sid = self.next_sid.fetch_add(1, Ordering::Relaxed) + 1;
            // Known before the entry is (the delivery connection may take
            // the change at once); no delivery comes before it is in by_sid.
            let generation = upstream.subscribe(sid, &key.subject, key.queue.as_deref());
            let entry = Arc::new(Entry {
                receivers: Mutex::new(Arc::new(vec![Arc::new(receiver)])),
                next: AtomicUsize::new(0),
                queue,
                sid: Some(sid),
                generation,
                task: Mutex::new(None),
            });
            lock(by_sid).insert(sid, entry.clone());
            entries.insert(key, entry);
            self.gauge.set(entries.len() as i64);
            return Ok(generation);
        }
        let sub = match &key.queue {
            None => self.client.subscribe(key.subject.clone()).await?,
            Some(q) => self.client.queue_subscribe(key.subject.clone(), q.clone()).await?,
        };
        let entry = Arc::new(Entry {
            receivers: Mutex::new(Arc::new(vec![Arc::new(receiver)])),
            next: AtomicUsize::new(0),
            queue,
            sid: None,
            // On the client the proxy publishes with: ordered before them.
            generation: 0,
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
        Ok(0)
    }

    /// Wait until the server has the upstream subscriptions up to
    /// `generation` (at most [`SYNC_WAIT`]): a client's publishes go
    /// upstream on another connection than its subscriptions, and the
    /// server orders nothing between two connections.
    pub async fn synced(&self, generation: u64) {
        if let (Some((upstream, _)), true) = (&self.direct, generation > 0) {
            if !upstream.synced(generation, SYNC_WAIT).await {
                tracing::debug!(generation, "upstream subscription not confirmed in time; going on");
            }
        }
    }

    /// Remove a client subscription; the last one out unsubscribes upstream.
    pub async fn remove(&self, key: &Key, conn: u64, sid: &str) {
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get(key) else { return };
        let empty = entry.change(|r| r.retain(|x| !(x.conn == conn && x.sid == sid)));
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
}

impl Entry {
    /// The receivers now (a delivery's list: no lock is held while it is used).
    fn current(&self) -> Receivers {
        lock(&self.receivers).clone()
    }

    /// Replace the list with `f` applied to a copy; whether it is now empty.
    fn change(&self, f: impl FnOnce(&mut Vec<Arc<Receiver>>)) -> bool {
        let mut list = lock(&self.receivers);
        let mut next = Vec::clone(&list);
        f(&mut next);
        let empty = next.is_empty();
        *list = Arc::new(next);
        empty
    }

    /// Take out the receivers a delivery found done (limit reached, client
    /// gone), whatever changed since.
    fn forget(&self, done: &[Arc<Receiver>]) {
        if !done.is_empty() {
            self.change(|r| r.retain(|x| !done.iter().any(|d| Arc::ptr_eq(d, x))));
        }
    }
}

/// Deliver a batch of upstream messages: each client's frames are gathered
/// over the batch and queued as one chunk (one wake-up and one write per
/// client per batch, not per message).
fn deliver<M: Delivery>(entry: &Entry, batch: &[M], queue: bool) {
    let list = entry.current();
    let mut receivers: Vec<&Arc<Receiver>> = list.iter().collect();
    let mut gone: Vec<Arc<Receiver>> = Vec::new();
    let mut done_with = |receivers: &mut Vec<&Arc<Receiver>>| {
        receivers.retain(|r| {
            let done = r.limit.exhausted() || r.outlet.queue.is_closed();
            if done {
                gone.push(Arc::clone(r));
            }
            !done
        })
    };
    // What each receiver is expected to get from the batch (a sizing hint).
    let share = |n: usize| if queue { batch.len() / n.max(1) + 1 } else { batch.len() };
    let mut pending: Vec<Pending> = Vec::new();
    let expect = share(receivers.len());
    pending.resize_with(receivers.len(), || Pending::expecting(expect));
    // Whether any member asked for no echo (receivers only leave during a
    // batch, so this holds for all of it); most groups have none.
    let any_quiet = queue && receivers.iter().any(|r| r.outlet.echoes.is_some());
    for m in batch {
        if receivers.is_empty() {
            break;
        }
        let mut done = false;
        if queue {
            // A member that published this itself without echo is passed
            // over (as nats-server passes over the publisher), whether or
            // not its turn came; unless no one else here takes it (the
            // group may have members elsewhere, or on another subject, that
            // nats-server passed over for this copy; the others may be done
            // or gone): then it goes to such a member, its own message
            // rather than none.
            let mut own: Vec<usize> = Vec::new();
            if any_quiet {
                own = (0..receivers.len())
                    .filter(|&i| {
                        let r = receivers[i];
                        r.outlet.echoes.as_ref().is_some_and(|e| lock(e).is_echo(&r.sid, m))
                    })
                    .collect();
            }
            // The next member in turn; one that turns out to be done
            // (its limit set meanwhile, its client gone) passes the
            // message on to the one after it.
            let first = entry.next.fetch_add(1, Ordering::Relaxed);
            'offer: for publishers in [false, true] {
                if publishers && own.is_empty() {
                    break;
                }
                for k in 0..receivers.len() {
                    let i = first.wrapping_add(k) % receivers.len();
                    if own.contains(&i) != publishers {
                        continue;
                    }
                    let took = add(receivers[i], &mut pending[i], m);
                    done |= took != Took::Yes;
                    if took != Took::Refused {
                        break 'offer;
                    }
                }
            }
        } else {
            for (r, p) in receivers.iter().zip(pending.iter_mut()) {
                if r.outlet.echoes.as_ref().is_some_and(|e| lock(e).is_echo(&r.sid, m)) {
                    continue; // its own publish, and it asked for no echo
                }
                done |= add(r, p, m) != Took::Yes;
            }
        }
        if done {
            // A receiver reached its limit: queue what it has, and take it
            // out before the next message (a queue group's next member
            // must get that one).
            flush(&receivers, &mut pending);
            done_with(&mut receivers);
            pending.clear();
            let expect = share(receivers.len());
            pending.resize_with(receivers.len(), || Pending::expecting(expect));
        }
    }
    if !flush(&receivers, &mut pending) {
        done_with(&mut receivers);
    }
    entry.forget(&gone);
}

/// What became of a message offered to a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Took {
    /// Taken (or skipped: a status message it did not ask for); more may
    /// follow.
    Yes,
    /// Taken, and that was the last its limit allows.
    Last,
    /// Not taken: the limit was already reached, or the client is gone.
    Refused,
}

/// Offer one message to `r`.
fn add(r: &Receiver, pending: &mut Pending, m: &impl Delivery) -> Took {
    if r.outlet.queue.is_closed() {
        return Took::Refused; // the client is gone
    }
    if !r.outlet.wants(m) {
        return Took::Yes; // a status message it did not ask for
    }
    if !r.limit.take() {
        return Took::Refused;
    }
    let subject = r.outlet.scope.deliver(m.subject());
    r.outlet.add(pending, &subject, &r.sid, m);
    if r.limit.exhausted() {
        Took::Last
    } else {
        Took::Yes
    }
}

/// Queue every receiver's pending frames; false if a client is gone.
fn flush(receivers: &[&Arc<Receiver>], pending: &mut [Pending]) -> bool {
    let mut all = true;
    for (r, p) in receivers.iter().zip(pending.iter_mut()) {
        all &= r.outlet.flush(p);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::sync::mpsc;
    use std::time::Duration;

    use bytes::Buf;
    use tokio_util::sync::CancellationToken;

    use crate::config::SlowConsumer;
    use crate::metrics::ProxyMetrics;
    use crate::queue::{Queue, QueueRx};
    use crate::scope::Scope;

    /// A message that parks the delivery reading it until the test says go
    /// (the first time it is read).
    struct Parked {
        reached: mpsc::Sender<()>,
        go: Mutex<Option<mpsc::Receiver<()>>>,
        payload: &'static [u8],
    }

    impl Parked {
        /// The message, and what the test learns and says by.
        fn new(payload: &'static [u8]) -> (Parked, mpsc::Receiver<()>, mpsc::Sender<()>) {
            let (reached_tx, reached) = mpsc::channel();
            let (go, go_rx) = mpsc::channel();
            (Parked { reached: reached_tx, go: Mutex::new(Some(go_rx)), payload }, reached, go)
        }
    }

    impl Delivery for Parked {
        fn subject(&self) -> &str {
            if let Some(go) = lock(&self.go).take() {
                let _ = self.reached.send(());
                let _ = go.recv();
            }
            "logs.acme.web.iad.h1"
        }
        fn reply(&self) -> Option<&str> {
            None
        }
        fn payload(&self) -> &[u8] {
            self.payload
        }
        fn header_block(&self) -> Option<Cow<'_, [u8]>> {
            None
        }
        fn is_status(&self) -> bool {
            false
        }
        fn is_no_responders(&self) -> bool {
            false
        }
        fn echo_digest(&self) -> u64 {
            crate::echo::digest(None, self.payload)
        }
    }

    fn receiver(conn: u64) -> (Receiver, QueueRx) {
        let (queue, rx) = Queue::new(16, None);
        let org = ProxyMetrics::new(Default::default()).org("acme");
        let outlet = Outlet::new(queue, Scope::Admin, false, org, SlowConsumer::Drop, CancellationToken::new());
        (Receiver { conn, sid: "1".into(), outlet, limit: Arc::default() }, rx)
    }

    #[test]
    fn subscribers_come_and_go_while_a_delivery_is_under_way() {
        let (first, _rx1) = receiver(1);
        let first_queue = first.outlet.queue.clone();
        let entry = Arc::new(Entry {
            receivers: Mutex::new(Arc::new(vec![Arc::new(first)])),
            next: AtomicUsize::new(0),
            queue: false,
            sid: None,
            generation: 0,
            task: Mutex::new(None),
        });
        let (parked, reached, go) = Parked::new(b"x");
        let e = entry.clone();
        let delivery = std::thread::spawn(move || deliver(&e, &[parked], false));
        reached.recv_timeout(Duration::from_secs(10)).expect("the delivery is under way");

        // While it is parked, one client subscribes and the first leaves.
        let (second, _rx2) = receiver(2);
        let (changed_tx, changed) = mpsc::channel();
        let e = entry.clone();
        std::thread::spawn(move || {
            e.change(|r| r.push(Arc::new(second)));
            let _ = changed_tx.send(e.change(|r| r.retain(|x| x.conn != 1)));
        });
        let now_empty = changed.recv_timeout(Duration::from_secs(10)).expect("subscribing waited for a delivery");
        assert!(!now_empty);
        go.send(()).expect("the delivery is waiting");
        delivery.join().expect("the delivery ends");

        // It went to the list it started with; the changes made meanwhile stand.
        assert_eq!(first_queue.depth(), 1);
        assert_eq!(entry.current().iter().map(|r| r.conn).collect::<Vec<_>>(), [2]);
    }

    fn entry_of(receivers: Vec<Receiver>, queue: bool) -> Arc<Entry> {
        Arc::new(Entry {
            receivers: Mutex::new(Arc::new(receivers.into_iter().map(Arc::new).collect())),
            next: AtomicUsize::new(0),
            queue,
            sid: None,
            generation: 0,
            task: Mutex::new(None),
        })
    }

    /// As if `UNSUB <sid> <n>` had been answered while a delivery ran.
    fn exhaust(r: &Receiver) {
        r.limit.max.store(1, Ordering::Relaxed);
        r.limit.delivered.store(1, Ordering::Relaxed);
    }

    #[test]
    fn an_interleaved_read_reaches_each_subscription_once_and_in_order() {
        let by_sid = BySid::default();
        let mut rxs = Vec::new();
        for sid in [7u64, 3, 9] {
            let (r, rx) = receiver(sid);
            lock(&by_sid).insert(sid, entry_of(vec![r], false));
            rxs.push((sid, rx));
        }
        let payloads: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        let msgs: Vec<Raw<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Raw {
                sid: [7, 3, 9][i % 3],
                subject: "logs.acme.web.iad.h1",
                reply: None,
                headers: None,
                payload: p.as_bytes(),
            })
            .collect();
        FanoutSink { by_sid }.deliver(&msgs);
        for (k, (sid, mut rx)) in rxs.into_iter().enumerate() {
            let mut batch = futures::executor::block_on(rx.next_batch(1 << 20)).expect("delivered");
            assert_eq!(batch.msgs(), 4, "sid {sid}");
            let bytes = batch.copy_to_bytes(batch.remaining());
            let text = String::from_utf8_lossy(&bytes);
            let got: Vec<&str> = text.split("\r\n").filter(|l| l.starts_with('m')).collect();
            let want: Vec<&str> = payloads.iter().skip(k).step_by(3).map(String::as_str).collect();
            assert_eq!(got, want, "sid {sid}");
        }
    }

    #[test]
    fn a_queue_member_whose_limit_was_reached_meanwhile_passes_its_turn_on() {
        // Before the delivery: the member in turn is already done.
        let ((a, _rxa), (b, _rxb)) = (receiver(1), receiver(2));
        let (qa, qb) = (a.outlet.queue.clone(), b.outlet.queue.clone());
        exhaust(&a);
        let entry = entry_of(vec![a, b], true);
        let (m, _reached, go) = Parked::new(b"one");
        drop(go);
        deliver(&entry, &[m], true);
        assert_eq!((qa.depth(), qb.depth()), (0, 1), "the message went to the member that could take it");
        assert_eq!(entry.current().iter().map(|r| r.conn).collect::<Vec<_>>(), [2]);

        // During the delivery: the next member in turn ends while the
        // first message is being handed over; the second goes round.
        let ((a, _rxa), (b, _rxb)) = (receiver(1), receiver(2));
        let (qa, qb) = (a.outlet.queue.clone(), b.outlet.queue.clone());
        let entry = entry_of(vec![a, b], true);
        let (first, reached, go) = Parked::new(b"first");
        let (second, _r, g) = Parked::new(b"second");
        drop(g);
        let e = entry.clone();
        let delivery = std::thread::spawn(move || deliver(&e, &[first, second], true));
        reached.recv_timeout(Duration::from_secs(10)).expect("the delivery is under way");
        exhaust(&entry.current()[1]);
        go.send(()).expect("the delivery is waiting");
        delivery.join().expect("the delivery ends");
        assert_eq!((qa.depth(), qb.depth()), (2, 0), "both messages reached the one member left");
        assert_eq!(entry.current().iter().map(|r| r.conn).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_quiet_publisher_gets_its_own_message_when_no_other_member_takes_it() {
        for others_done in [false, true] {
            let ((mut a, _rxa), (b, _rxb)) = (receiver(1), receiver(2));
            a.outlet.echoes = Some(Arc::default());
            let echoes = a.outlet.echoes.clone().unwrap();
            lock(&echoes).published(["1"], "logs.acme.web.iad.h1", None, b"own");
            let (qa, qb) = (a.outlet.queue.clone(), b.outlet.queue.clone());
            if others_done {
                exhaust(&b);
            }
            let entry = entry_of(vec![a, b], true);
            let (m, _reached, go) = Parked::new(b"own");
            drop(go);
            deliver(&entry, &[m], true);
            let want = if others_done { (1, 0) } else { (0, 1) };
            assert_eq!((qa.depth(), qb.depth()), want, "others done: {others_done}");
        }
    }
}
