//! The way into one client's outbound queue: deliveries are rewritten for
//! the client's scope, reply subjects are replaced by per-connection aliases,
//! and a full queue means a counted drop (or a disconnection, by policy),
//! never a wait that would slow the bus.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SlowConsumer;
use crate::delivery::Delivery;
use crate::metrics::OrgMetrics;
use crate::protocol::writer;
use crate::queue::{Queue, Refused};
use crate::scope::Scope;

/// Prefix of the reply aliases a client sees instead of upstream reply subjects.
pub const ALIAS_PREFIX: &str = "_R.";
/// Aliases remembered per connection (the oldest are forgotten first).
const MAX_ALIASES: usize = 4096;
/// The most a batch's frames reserve ahead for a client at once (more
/// grows as it is written).
const MAX_RESERVE: usize = 256 * 1024;
/// At most one slow-consumer notice per client per this interval.
const NOTICE_EVERY: Duration = Duration::from_secs(5);

/// A delivery limit set by `UNSUB <sid> <max>`. The delivery that reaches
/// it tells the connection (which then drops the subscription, as
/// nats-server does).
#[derive(Default)]
pub struct Limit {
    pub max: AtomicU64,
    pub delivered: AtomicU64,
    spent: Option<Spent>,
}

/// Where a limit reached is reported: the connection's channel, and the sid.
struct Spent {
    tell: mpsc::UnboundedSender<String>,
    sid: String,
}

impl Limit {
    /// A limit (none yet) that reports the subscription `sid` on `tell` once reached.
    pub fn reporting(tell: &mpsc::UnboundedSender<String>, sid: &str) -> Limit {
        Limit { spent: Some(Spent { tell: tell.clone(), sid: sid.to_string() }), ..Limit::default() }
    }

    /// Allow `max` deliveries in all; false if that many were made
    /// already, or a limit set before was reached (the subscription is
    /// done). `set` and [`Limit::take`] each write one of `max` and
    /// `delivered` and then read the other (sequentially consistent), so
    /// whichever comes second sees the limit reached and reports it.
    pub fn set(&self, max: u64) -> bool {
        if self.exhausted() || max <= self.delivered.load(Ordering::SeqCst) {
            return false;
        }
        self.max.store(max, Ordering::SeqCst);
        // A delivery counted meanwhile may have reached it unseen.
        if self.exhausted() {
            self.report();
        }
        true
    }

    /// Count one delivery; false once the limit is reached.
    pub fn take(&self) -> bool {
        let n = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        let max = self.max.load(Ordering::SeqCst);
        if max != 0 && n == max {
            self.report();
        }
        max == 0 || n <= max
    }

    pub fn exhausted(&self) -> bool {
        let max = self.max.load(Ordering::SeqCst);
        max != 0 && self.delivered.load(Ordering::SeqCst) >= max
    }

    fn report(&self) {
        if let Some(s) = &self.spent {
            let _ = s.tell.send(s.sid.clone());
        }
    }
}

/// Reply subjects handed to this client, by alias number.
#[derive(Default)]
pub struct Aliases {
    next: u64,
    map: HashMap<u64, String>,
    order: VecDeque<u64>,
}

impl Aliases {
    fn alias(&mut self, upstream: &str) -> String {
        self.next += 1;
        let n = self.next;
        self.map.insert(n, upstream.to_string());
        self.order.push_back(n);
        while self.order.len() > MAX_ALIASES {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        format!("{ALIAS_PREFIX}{n}")
    }

    /// The upstream subject behind an alias this client was given.
    pub fn resolve(&self, subject: &str) -> Option<String> {
        let n: u64 = subject.strip_prefix(ALIAS_PREFIX)?.parse().ok()?;
        self.map.get(&n).cloned()
    }
}

#[derive(Clone)]
pub struct Outlet {
    pub queue: Queue,
    pub scope: Scope,
    pub headers: bool,
    /// CONNECT's `no_responders`: a request nobody listens to is answered
    /// with a 503 status message.
    pub no_responders: bool,
    pub org: OrgMetrics,
    pub aliases: Arc<Mutex<Aliases>>,
    pub policy: SlowConsumer,
    /// Cancelled to disconnect a slow consumer (by policy).
    pub kill: CancellationToken,
    /// `echo: false`: the publishes whose echo is awaited (and skipped).
    pub echoes: Option<Arc<Mutex<crate::echo::Echoes>>>,
    slow: Arc<SlowState>,
}

#[derive(Default)]
struct SlowState {
    noticed: Mutex<Option<Instant>>,
    /// A notice is waiting for room (one at a time: a client that reads
    /// nothing must not gather a waiting task every few seconds).
    waiting: AtomicBool,
}

impl Outlet {
    pub fn new(
        queue: Queue,
        scope: Scope,
        headers: bool,
        org: OrgMetrics,
        policy: SlowConsumer,
        kill: CancellationToken,
    ) -> Outlet {
        Outlet {
            queue,
            scope,
            headers,
            no_responders: false,
            org,
            aliases: Arc::default(),
            policy,
            kill,
            echoes: None,
            slow: Arc::default(),
        }
    }

    /// Whether the client takes `m` at all: status messages are for
    /// header-aware clients only, and no responders for those that asked
    /// for it (CONNECT's `no_responders`), as from nats-server. (What it
    /// does not take does not count against an UNSUB limit.)
    pub fn wants(&self, m: &impl Delivery) -> bool {
        match self.headers {
            true => self.no_responders || !m.is_no_responders(),
            false => !m.is_status(),
        }
    }

    /// Queue one message for the client; false if the client is gone.
    pub fn deliver(&self, subject: &str, sid: &str, m: &impl Delivery) -> bool {
        let mut pending = Pending::default();
        self.add(&mut pending, &[subject], sid, m);
        self.flush(&mut pending)
    }

    /// Add one message to what is `pending` for this client, or count it
    /// dropped if the client's queue has no room for it. `subject`: the
    /// parts of the subject the client sees, written one after another.
    pub fn add(&self, pending: &mut Pending, subject: &[&str], sid: &str, m: &impl Delivery) {
        if !self.wants(m) {
            return;
        }
        if pending.msgs >= self.queue.room() {
            return self.dropped();
        }
        // A client that did not declare `headers` gets the payload alone,
        // as nats-server does.
        let headers = if self.headers { m.header_block() } else { None };
        // The frame without its reply, whose alias is not known yet (it is
        // about as long as the reply).
        let bare = writer::MSG_OVERHEAD
            + subject.iter().map(|s| s.len()).sum::<usize>()
            + sid.len()
            + headers.as_ref().map_or(0, |h| h.len())
            + m.payload().len();
        let estimate = bare + m.reply().map_or(0, str::len);
        if !self.queue.fits(pending.frames.len(), estimate) {
            return self.dropped();
        }
        // Aliases only for what is queued (a dropped request's must not
        // push out those of requests the client got). A tenant is shown the
        // requests of its own org's clients only: an agent's ack inbox or a
        // platform service's is not its to answer.
        let reply = m.reply().and_then(|r| match self.scope {
            Scope::Admin => Some(r.to_string()),
            Scope::Tenant { .. } if !r.starts_with(crate::conn::TENANT_REPLY_PREFIX) => None,
            _ => Some(lock(&self.aliases).alias(r)),
        });
        // Room for this frame and, at the first, for the rest of the batch:
        // one allocation per chunk instead of a regrowth every few frames.
        let frame = bare + reply.as_ref().map_or(0, String::len);
        if pending.frames.capacity() - pending.frames.len() < frame {
            // The hint is capped: one large message first in a batch of
            // small ones must not reserve (and, frozen into the chunk,
            // pin) room for the batch as if all were as large.
            let rest = pending.expect.saturating_sub(pending.msgs).clamp(1, self.queue.room().max(1));
            pending.frames.reserve((frame * rest).min(MAX_RESERVE).max(frame));
        }
        writer::put_msg(&mut pending.frames, subject, sid, reply.as_deref(), headers.as_deref(), m.payload());
        pending.msgs += 1;
        pending.payload_bytes += m.payload().len();
    }

    /// One delivery found no room in the client's queue.
    fn dropped(&self) {
        self.org.drops.inc();
        self.on_slow();
    }

    /// Queue what is pending, in one chunk; false if the client is gone.
    pub fn flush(&self, pending: &mut Pending) -> bool {
        if pending.msgs == 0 {
            return !self.queue.is_closed();
        }
        let (msgs, bytes) = (pending.msgs, pending.payload_bytes);
        pending.msgs = 0;
        pending.payload_bytes = 0;
        match self.queue.deliver(pending.frames.split().freeze(), msgs) {
            Ok(()) => {
                self.org.msgs_out.add(msgs as u64);
                self.org.bytes_out.add(bytes as u64);
                true
            }
            Err(Refused::Full) => {
                self.org.drops.add(msgs as u64);
                self.on_slow();
                true
            }
            Err(Refused::Closed) => false,
        }
    }

    /// The client's queue overflowed: tell it (at most every few seconds) or
    /// disconnect it, by policy.
    fn on_slow(&self) {
        if self.policy == SlowConsumer::Disconnect {
            self.kill.cancel();
            return;
        }
        let mut noticed = lock(&self.slow.noticed);
        if noticed.is_some_and(|t| t.elapsed() < NOTICE_EVERY) || self.slow.waiting.swap(true, Ordering::AcqRel) {
            return;
        }
        *noticed = Some(Instant::now());
        drop(noticed);
        // The queue is full: hand the notice to a task that waits for room.
        let (queue, slow) = (self.queue.clone(), self.slow.clone());
        tokio::spawn(async move {
            queue.control(writer::err(crate::conn::SLOW_CONSUMER_TEXT)).await;
            slow.waiting.store(false, Ordering::Release);
        });
    }
}

/// Frames gathered for one client over a batch of upstream messages.
#[derive(Default)]
pub struct Pending {
    frames: BytesMut,
    msgs: usize,
    payload_bytes: usize,
    /// Messages this client is expected to get from the batch (a sizing hint).
    expect: usize,
}

impl Pending {
    pub fn expecting(expect: usize) -> Pending {
        Pending { expect, ..Pending::default() }
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_reads_nothing_has_one_notice_waiting_at_most() {
        // A queue of one, full, with no writer: a notice waits for room.
        let (queue, mut rx) = Queue::new(1, None);
        assert!(queue.try_control(bytes::Bytes::from_static(b"x")));
        let org = crate::metrics::ProxyMetrics::new(Default::default()).org("acme");
        let outlet = Outlet::new(queue, Scope::Admin, false, org, SlowConsumer::Drop, CancellationToken::new());
        outlet.on_slow();
        assert!(outlet.slow.waiting.load(Ordering::Acquire), "the first notice waits");
        // Later (as if the notice interval had passed): no second one while
        // the first still waits.
        *lock(&outlet.slow.noticed) = None;
        outlet.on_slow();
        assert!(lock(&outlet.slow.noticed).is_none(), "no second notice was started");
        // Room: the first goes out, and a later overflow may notice again.
        let batch = rx.next_batch(1024).await.expect("the frame queued first");
        rx.written(&batch);
        let notice = tokio::time::timeout(std::time::Duration::from_secs(5), rx.next_batch(1024)).await;
        assert_eq!(notice.ok().flatten().map(|b| b.msgs()), Some(0), "the notice, a control frame");
        for _ in 0..100 {
            if !outlet.slow.waiting.load(Ordering::Acquire) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!outlet.slow.waiting.load(Ordering::Acquire), "no notice waiting once it went");
    }

    #[test]
    fn aliases_resolve_only_what_was_handed_out() {
        let mut a = Aliases::default();
        let x = a.alias("_INBOX.abc.1");
        assert_eq!(a.resolve(&x).as_deref(), Some("_INBOX.abc.1"));
        assert_eq!(a.resolve("_R.999"), None);
        assert_eq!(a.resolve("_R.x"), None);
        for i in 0..MAX_ALIASES {
            a.alias(&format!("r{i}"));
        }
        assert_eq!(a.resolve(&x), None, "the oldest are forgotten");
        assert_eq!(a.map.len(), MAX_ALIASES);
    }
}
