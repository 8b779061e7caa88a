//! One client connection: a reader that parses and authorises operations,
//! and a writer task that owns the socket's write half, fed through a
//! bounded queue by the reader (control replies, which wait for room) and by
//! the shared upstream subscriptions (deliveries, dropped when it is full).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use flotilla_core::subject::{is_valid_subject, subject_matches};

use crate::auth::store::Credentials;
use crate::fanout::{Key, Receiver, SYNC_WAIT};
use crate::limits::{PublishRate, SubChanges, SubSlot};
use crate::outlet::{lock, Limit, Outlet};
use crate::protocol::{parse, writer, ClientOp, ProtoError};
use crate::queue::Queue;
use crate::registry::Admission;
use crate::scope::{Scope, SubTarget};
use crate::socket::{write_loop, ClientSocket, Stall};
use crate::Shared;

/// Prefix of a tenant connection's upstream reply subjects: requests made
/// with one are its org's, and other clients of the org may answer them.
pub const TENANT_REPLY_PREFIX: &str = "_FLOTILLA.reply.";
/// Everyone else's (agents' JetStream ack inboxes above all): never shown
/// to a tenant, who could otherwise forge an ack to an agent serving many
/// orgs.
const PLATFORM_REPLY_PREFIX: &str = "_FLOTILLA.platform.";

/// How long a control frame may wait for room in the queue of a client
/// that does not read, and a closing connection's last bytes (its `-ERR`
/// and what is queued before it) for the client to take them.
const WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a client's subject and queue group, or subject and reply, may
/// be together once scoped for upstream: their line to nats-server (with
/// `HPUB`, two sizes of at most 8 digits, or `SUB` and a sid) must fit its
/// 4096-byte control line. Over it, nats-server closes the connection that
/// every client's subscriptions (or publishes) share.
const UPSTREAM_ARGS_MAX: usize = crate::protocol::parser::MAX_CONTROL_LINE - 32;

/// Why a slow consumer's connection ends (logged; it is not sent: see
/// [`Conn::close_for`]).
const SLOW_CONSUMER: &str = "Slow Consumer";

/// Denials logged per connection before only one in 1,000 is.
const LOGGED_DENIALS: u64 = 10;

/// What a client whose queue overflowed is told. Stock clients (nats.py,
/// nats.js, async-nats) surface permission errors to the application
/// without closing the connection; other `-ERR` texts close it in some.
pub const SLOW_CONSUMER_TEXT: &str =
    "Permissions Violation for Subscription to \"_FLOTILLA.slow_consumer\": messages were dropped because this client reads too slowly";

#[derive(Debug, Default, Deserialize)]
struct ConnectInfo {
    #[serde(default)]
    verbose: bool,
    /// Strict checks; the proxy always checks subjects, so this only picks
    /// nats-server's wording for an invalid publish subject.
    #[serde(default)]
    pedantic: bool,
    /// Whether the client receives its own publishes (default true).
    #[serde(default = "yes")]
    echo: bool,
    #[serde(default)]
    headers: bool,
    #[serde(default)]
    no_responders: bool,
    user: Option<String>,
    pass: Option<String>,
    auth_token: Option<String>,
    name: Option<String>,
    /// The client library and its version, for the logs (whatever their
    /// JSON type: an odd one must not fail the CONNECT).
    lang: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

fn yes() -> bool {
    true
}

struct InboxSub {
    sid: String,
    pattern: String,
    limit: Arc<Limit>,
}

/// A client's subscription.
struct SubEntry {
    /// Its share of an upstream subscription; `None` for an inbox one.
    upstream: Option<Key>,
    limit: Arc<Limit>,
    /// A tenant's place in its org's count, given back when it is dropped.
    _slot: Option<SubSlot>,
}

enum Flow {
    Continue,
    Close,
}

/// The INFO a client gets first: as nats-server's, with its id and address.
/// The version is the upstream server's (clients gate features on it), and
/// `max_payload` no more than it takes.
pub fn info(shared: &Shared, id: u64, peer: SocketAddr) -> serde_json::Value {
    let upstream = shared.upstream.server_info();
    let version = if upstream.version.is_empty() { "2.10.0".to_string() } else { upstream.version };
    serde_json::json!({
        "server_id": "FLOTILLA-PROXY",
        "server_name": "flotilla-proxy",
        "version": version,
        "proto": 1,
        "headers": true,
        "auth_required": true,
        "tls_required": shared.tls.is_some(),
        "max_payload": max_payload(shared),
        "client_id": id,
        "client_ip": peer.ip().to_string(),
    })
}

/// What a client may publish: the configured limit, or what the upstream
/// client enforces if that is smaller (the server's, once connected).
fn max_payload(shared: &Shared) -> usize {
    match shared.upstream.max_payload() {
        0 => shared.config.max_payload,
        upstream => shared.config.max_payload.min(upstream),
    }
}

/// Serve one client. `greeted`: the id of the INFO it already got in
/// plaintext before a TLS upgrade (no second INFO then: nats.py reads the
/// line after its CONNECT and PING as the PONG, as nats-server sends it);
/// `None`: send INFO first.
pub async fn serve(
    stream: impl ClientSocket,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    greeted: Option<u64>,
    admission: Admission,
) {
    let id = greeted.unwrap_or_else(|| shared.next_client_id());
    let (mut rd, wr) = stream.split();
    let config = &shared.config;
    let (queue, rx) = Queue::bounded(config.client_queue, config.client_queue_bytes, wr.direct());
    let kill = CancellationToken::new();
    let stall = Stall { deadline: shared.write_deadline, stalled: kill.clone() };
    let writer = tokio::spawn(write_loop(wr, rx, stall));
    // Should this task panic, its writer goes too (it holds the queue's
    // receiver: deliveries would go on being written to the socket).
    let _writer_guard = AbortOnDrop(writer.abort_handle());
    let (close_tx, close_rx) = watch::channel(None);
    let (spent_tx, spent_rx) = mpsc::unbounded_channel();
    // Held until the connection ends: its place under the caps.
    let _admission = admission;
    shared.registry.open(id, close_tx, queue.clone());
    let mut conn = Conn {
        id,
        peer,
        shared: shared.clone(),
        queue,
        outlet: None,
        verbose: false,
        pedantic: false,
        subs: HashMap::new(),
        inbox: Arc::new(Mutex::new(Vec::new())),
        // Set on authentication, by role.
        reply_prefix: String::new(),
        reply_task: None,
        pings_out: 0,
        rate: PublishRate::new(shared.config.limits.publish_msgs_per_sec, shared.config.limits.publish_bytes_per_sec),
        unsynced: 0,
        published: None,
        max_payload: max_payload(&shared),
        sub_changes: SubChanges::new(
            shared.config.limits.subscription_changes_per_sec,
            shared.config.limits.max_subscriptions,
        ),
        kill,
        spent: spent_tx,
        publish_metrics: HashMap::new(),
        denials: Default::default(),
    };
    shared.metrics.connections.add(1);
    // Unregisters even if this task panics; fan-out entries of a gone client
    // are dropped at their next delivery.
    let mut registered = Registered { shared: shared.clone(), id, done: false };
    let greeting = greeted.is_some() || conn.send(writer::info(&info(&shared, id, peer).to_string())).await;
    if greeting {
        conn.run(&mut rd, close_rx, spent_rx, shutdown).await;
    }
    conn.close().await;
    // The registry holds a sender of the client's queue: let it go so the
    // writer sees the queue end.
    registered.finish();
    drop(conn);
    // What is queued goes out, unless the client has stopped reading: then
    // the socket is closed with it unsent.
    let mut writer = writer;
    if tokio::time::timeout(WRITE_DEADLINE, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Why the registry closes a connection (`None` and a gone sender: its
/// token no longer stands).
fn close_reason(
    changed: Result<(), watch::error::RecvError>,
    close: &watch::Receiver<Option<&'static str>>,
) -> &'static str {
    changed.ok().and_then(|_| *close.borrow()).unwrap_or("Authorization Violation")
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Registered {
    shared: Arc<Shared>,
    id: u64,
    done: bool,
}

impl Registered {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.shared.registry.close(self.id);
            self.shared.metrics.connections.add(-1);
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Conn {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    queue: Queue,
    /// Set once authenticated.
    outlet: Option<Outlet>,
    verbose: bool,
    pedantic: bool,
    subs: HashMap<String, SubEntry>,
    inbox: Arc<Mutex<Vec<InboxSub>>>,
    reply_prefix: String,
    reply_task: Option<JoinHandle<()>>,
    pings_out: u32,
    rate: Option<PublishRate>,
    sub_changes: Option<SubChanges>,
    /// What its INFO said it may publish.
    max_payload: usize,
    /// The generation of its latest upstream subscription not yet known
    /// to be live upstream; 0 for none ([`Conn::sync_subscriptions`]).
    unsynced: u64,
    /// Published since its last PONG: how many times the upstream client
    /// had connected at the first such publish ([`publishes_landed`]).
    published: Option<u64>,
    /// Cancelled to disconnect a slow consumer: by policy, or once its
    /// socket took nothing for the write deadline.
    kill: CancellationToken,
    /// Told the sid of a subscription whose UNSUB limit a delivery reached.
    spent: mpsc::UnboundedSender<String>,
    /// An agent's publishes are counted under the org they go to.
    publish_metrics: HashMap<String, crate::metrics::OrgMetrics>,
    /// Operations refused so far.
    denials: std::sync::atomic::AtomicU64,
}

impl Conn {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        mut close: watch::Receiver<Option<&'static str>>,
        mut spent: mpsc::UnboundedReceiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut ping = tokio::time::interval(self.shared.ping_interval);
        // A stalled task must not fire the ticks it missed back to back: a
        // client that answers would look stale.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut last_progress = self.queue.progress();
        // Whether the client sent anything since the last tick.
        let mut heard = false;
        let auth_deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::pin!(auth_deadline);
        loop {
            // As nats-server: before CONNECT, only CONNECT (no PUB's payload
            // is waited for, let alone held, for a client not yet known).
            if self.outlet.is_none() && buf.first().is_some_and(|b| !b.eq_ignore_ascii_case(&b'C')) {
                self.shared.metrics.protocol_errors.inc();
                self.farewell("Authorization Violation").await;
                return;
            }
            loop {
                match parse(&buf, self.max_payload) {
                    Ok(Some((op, used))) => {
                        buf.advance(used);
                        heard = true;
                        // An operation may wait (a publisher over its rate,
                        // an upstream that takes no more): a shutdown, a
                        // revoked token or the slow-consumer policy does not
                        // wait for it. The operation itself goes first, so
                        // one that does not wait costs no more than that.
                        let kill = self.kill.clone();
                        let interrupted = tokio::select! {
                            biased;
                            flow = self.handle(op) => match flow {
                                Flow::Close => return,
                                Flow::Continue => None,
                            },
                            _ = shutdown.cancelled() => return,
                            r = close.changed() => Some(close_reason(r, &close)),
                            _ = kill.cancelled() => Some(SLOW_CONSUMER),
                        };
                        if let Some(reason) = interrupted {
                            self.close_for(reason).await;
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.shared.metrics.protocol_errors.inc();
                        tracing::debug!(client = self.id, peer = %self.peer, error = %e, "protocol error");
                        let text = match e {
                            // As nats-server words it; the why is logged above.
                            ProtoError::Invalid(_) => "Unknown Protocol Operation".to_string(),
                            other => other.to_string(),
                        };
                        self.farewell(&text).await;
                        return;
                    }
                }
            }
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    // Input shows it alive, whole operations or not (a
                    // large PUB may take a while to arrive).
                    Ok(_) => heard = true,
                },
                _ = ping.tick() => {
                    let progress = self.queue.progress();
                    let reading = progress != std::mem::replace(&mut last_progress, progress);
                    if std::mem::take(&mut heard) {
                        // Anything it sent (a PUB held back by its rate, as
                        // well as a PONG) shows it alive, as with
                        // nats-server: no PING needed.
                        self.pings_out = 0;
                        continue;
                    }
                    if self.pings_out >= 2 {
                        // As nats-server: two PINGs out and nothing heard
                        // since. (What reaches its socket is no sign of life:
                        // a dead host's kernel may take bytes for a while.)
                        self.farewell("Stale Connection").await;
                        return;
                    }
                    if self.queue.try_control(Bytes::from_static(writer::PING)) {
                        self.pings_out += 1;
                    } else if self.queue.is_closed() {
                        return;
                    } else if !reading {
                        // No room for the PING, and nothing taken since the
                        // last tick: the client stopped reading, its PING is
                        // as good as unanswered (waiting for room would keep
                        // a dead connection for ever). One that took some
                        // is only slow.
                        self.pings_out += 1;
                    }
                }
                _ = &mut auth_deadline, if self.outlet.is_none() => {
                    self.farewell("Authentication Timeout").await;
                    return;
                }
                r = close.changed() => {
                    self.close_for(close_reason(r, &close)).await;
                    return;
                }
                Some(sid) = spent.recv() => {
                    // Dropped as nats-server drops it (unless the sid was
                    // subscribed anew meanwhile).
                    if self.subs.get(&sid).is_some_and(|s| s.limit.exhausted()) {
                        self.unsubscribe(&sid, None).await;
                    }
                }
                _ = self.kill.cancelled() => {
                    self.close_for(SLOW_CONSUMER).await;
                    return;
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Closed from outside its own operations (a revoked or expired token,
    /// the slow-consumer policy): logged, and the client told why, but a
    /// slow consumer: as nats-server, it is closed without an `-ERR`
    /// (nats.go and nats.py take any text they do not know as fatal and
    /// would not reconnect; and its queue is full).
    async fn close_for(&self, reason: &str) {
        tracing::info!(client = self.id, peer = %self.peer, reason, "closing connection");
        if reason != SLOW_CONSUMER {
            self.farewell(reason).await;
        }
    }

    /// The `-ERR` a connection is closed with (see [`Conn::send`]).
    async fn farewell(&self, text: &str) {
        self.send(writer::err(text)).await;
    }

    /// Queue a control frame (`+OK`, `PONG`, `-ERR`...): these are never
    /// dropped, so they wait for room, but not for ever: false (close the
    /// connection) if a client that stopped reading has left none within
    /// the write deadline, or the writer is gone. Meanwhile nothing else of
    /// the connection runs (its PINGs, a revoked token's close).
    async fn send(&self, frame: Bytes) -> bool {
        tokio::time::timeout(WRITE_DEADLINE, self.queue.control(frame)).await.unwrap_or(false)
    }

    /// Hold a SUB or UNSUB until it is within the connection's rate (the
    /// socket is not read meanwhile); counted when it had to wait.
    async fn admit_sub_change(&self, outlet: &Outlet) {
        if let Some(rate) = &self.sub_changes {
            if rate.admit().await {
                outlet.org.sub_changes_held.inc();
            }
        }
    }

    async fn ok(&self) -> Flow {
        if self.verbose && !self.send(Bytes::from_static(writer::OK)).await {
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn deny(&self, text: String) -> Flow {
        if let Some(o) = &self.outlet {
            o.org.denials.inc();
            // Every denial is counted; a client that repeats them does
            // not get to fill the log: its first few, then one in 1,000.
            let n = self.denials.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n <= LOGGED_DENIALS || n.is_multiple_of(1000) {
                tracing::info!(client = self.id, org = o.scope.label(), peer = %self.peer, denials = n, "{text}");
            }
        }
        if self.send(writer::err(&text)).await {
            Flow::Continue
        } else {
            Flow::Close
        }
    }

    /// A line within the client's limit that is over it once scoped (an
    /// org prefix, a reply prefix added): refused as nats-server refuses
    /// a line over its limit.
    async fn too_long(&self) -> Flow {
        self.shared.metrics.protocol_errors.inc();
        tracing::debug!(client = self.id, peer = %self.peer, "subject too long once scoped for upstream");
        self.farewell("Maximum Control Line Exceeded").await;
        Flow::Close
    }

    async fn handle(&mut self, op: ClientOp) -> Flow {
        let ClientOp::Connect(json) = &op else {
            if self.outlet.is_none() {
                self.farewell("Authorization Violation").await;
                return Flow::Close;
            }
            return self.handle_authed(op).await;
        };
        let ip = self.peer.ip();
        if self.shared.auth_throttle.blocked(ip) {
            self.shared.metrics.auth_failures.inc();
            tracing::warn!(client = self.id, peer = %self.peer, "too many failed authentications from this address");
            self.farewell("Authorization Violation").await;
            return Flow::Close;
        }
        let info: ConnectInfo = serde_json::from_slice(json).unwrap_or_default();
        let creds =
            Credentials { user: info.user.clone(), pass: info.pass.clone(), auth_token: info.auth_token.clone() };
        let entry = self.shared.tokens.authenticate(&creds);
        let scope = entry.as_ref().and_then(|e| Scope::for_token(e, creds.user.as_deref()));
        let same_as_before = match (&self.outlet, &scope) {
            (None, Some(_)) => true,
            (Some(o), Some(s)) => &o.scope == s,
            _ => false,
        };
        let (Some(entry), Some(scope), true) = (entry, scope, same_as_before) else {
            self.shared.auth_throttle.failed(ip);
            self.shared.metrics.auth_failures.inc();
            let user = self.shared.tokens.loggable_user(info.user.as_deref());
            tracing::warn!(client = self.id, peer = %self.peer, user, "authorization violation");
            self.farewell("Authorization Violation").await;
            return Flow::Close;
        };
        if self.outlet.is_some() {
            return self.ok().await; // the same identity again: nothing changes
        }
        // The per-org cap is for tenants: an agent serves many orgs, and a
        // fleet has more hosts than any one org has tenant connections.
        let per_org = if matches!(scope, Scope::Tenant { .. }) {
            self.shared.config.limits.max_connections_per_org
        } else {
            usize::MAX
        };
        if !self.shared.registry.authenticated(self.id, scope.label(), entry, per_org) {
            self.farewell("maximum connections exceeded").await;
            return Flow::Close;
        }
        tracing::debug!(
            client = self.id,
            peer = %self.peer,
            org = scope.label(),
            name = ?info.name,
            lang = ?info.lang,
            version = ?info.version,
            "client connected"
        );
        let root = if matches!(scope, Scope::Tenant { .. }) { TENANT_REPLY_PREFIX } else { PLATFORM_REPLY_PREFIX };
        self.reply_prefix = format!("{root}{}x{:016x}", self.id, rand::random::<u64>());
        self.verbose = info.verbose;
        self.pedantic = info.pedantic;
        let org = self.shared.metrics.org(scope.label());
        let policy = self.shared.config.limits.slow_consumer;
        let mut outlet = Outlet::new(self.queue.clone(), scope, info.headers, org, policy, self.kill.clone());
        if !info.echo {
            outlet.echoes = Some(Arc::default());
        }
        outlet.no_responders = info.no_responders;
        self.outlet = Some(outlet);
        self.ok().await
    }

    async fn handle_authed(&mut self, op: ClientOp) -> Flow {
        let Some(outlet) = self.outlet.clone() else { return Flow::Close };
        match op {
            ClientOp::Connect(_) => Flow::Continue,
            ClientOp::Ping => {
                // Both at once: the PONG waits at most SYNC_WAIT in all.
                let (generation, published) = (std::mem::take(&mut self.unsynced), self.published.take());
                tokio::join!(
                    subscriptions_live(&self.shared, generation),
                    publishes_landed(&self.shared, self.id, published)
                );
                if self.send(Bytes::from_static(writer::PONG)).await {
                    Flow::Continue
                } else {
                    Flow::Close
                }
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                Flow::Continue
            }
            ClientOp::Sub { subject, queue, sid } => self.subscribe(outlet, subject, queue, sid).await,
            ClientOp::Unsub { sid, max } => {
                // Only what goes upstream is held to the rate (a local inbox
                // subscription changes nothing on the server).
                if self.subs.get(&sid).is_some_and(|s| s.upstream.is_some()) {
                    self.admit_sub_change(&outlet).await;
                }
                self.unsubscribe(&sid, max).await;
                self.ok().await
            }
            ClientOp::Pub { subject, reply, payload } => self.publish(outlet, subject, reply, None, payload).await,
            // As nats-server: a client that did not declare headers may
            // not send them (it closes the connection).
            ClientOp::Hpub { .. } if !outlet.headers => {
                self.shared.metrics.protocol_errors.inc();
                self.farewell("Unknown Protocol Operation").await;
                Flow::Close
            }
            ClientOp::Hpub { subject, reply, headers, payload } => {
                self.publish(outlet, subject, reply, Some(headers), payload).await
            }
        }
    }

    async fn subscribe(&mut self, outlet: Outlet, subject: String, queue: Option<String>, sid: String) -> Flow {
        let target = match outlet.scope.subscribe(&subject) {
            Ok(t) => t,
            Err(denied) => return self.deny(denied.0).await,
        };
        if let Some(q) = &queue {
            // As nats-server: any name a subject token could have, dots
            // too (a tenant's is prefixed with its org, which has none).
            if !is_valid_subject(q, false) {
                return self
                    .deny(format!("Permissions Violation for Subscription to \"{subject}\" using queue \"{q}\""))
                    .await;
            }
        }
        // As nats-server: a SUB under a sid in use is ignored, the first
        // subscription stands; one spent by its UNSUB limit is gone there
        // already, so here too (its report may not have come yet).
        match self.subs.get(&sid) {
            Some(existing) if !existing.limit.exhausted() => return self.ok().await,
            Some(_) => self.unsubscribe(&sid, None).await,
            None => {}
        }
        let inbox = target == SubTarget::Inbox;
        let upstream = match target {
            // An admin's inbox subscriptions are the server's too: JetStream
            // push consumers (a KV watch, an object get) deliver to
            // `_INBOX.` subjects directly, not as replies.
            SubTarget::Inbox => matches!(outlet.scope, Scope::Admin).then(|| subject.clone()),
            SubTarget::Upstream(upstream) => Some(upstream),
        };
        // Held to the rate if it changes anything upstream.
        if upstream.is_some() {
            self.admit_sub_change(&outlet).await;
        }
        if self.subs.len() >= self.shared.config.limits.max_subscriptions {
            return self.deny("maximum subscriptions exceeded".into()).await;
        }
        // A tenant's are capped per org too: one org's connections must not
        // load the fan-out every org shares without bound.
        let slot = match &outlet.scope {
            Scope::Tenant { org, .. } => match self.shared.org_subs.take(org.as_str()) {
                Some(slot) => Some(slot),
                None => return self.deny("maximum subscriptions exceeded".into()).await,
            },
            _ => None,
        };
        let key = upstream.map(|subject| Key { subject, queue: queue.map(|q| outlet.scope.queue(&q)) });
        if key.as_ref().is_some_and(|k| k.subject.len() + k.queue.as_ref().map_or(0, String::len) > UPSTREAM_ARGS_MAX) {
            return self.too_long().await;
        }
        let limit = Arc::new(Limit::reporting(&self.spent, &sid));
        if inbox {
            self.ensure_reply_sub(&outlet).await;
            lock(&self.inbox).push(InboxSub { sid: sid.clone(), pattern: subject.clone(), limit: limit.clone() });
        }
        if let Some(key) = &key {
            let receiver = Receiver { conn: self.id, sid: sid.clone(), outlet, limit: limit.clone() };
            match self.shared.fanout.add(key.clone(), receiver).await {
                Ok(generation) => self.unsynced = self.unsynced.max(generation),
                Err(e) => {
                    tracing::warn!(error = %e, "upstream subscribe failed");
                    lock(&self.inbox).retain(|s| s.sid != sid);
                    // Worded as a permissions violation: the one -ERR every
                    // stock client reports without closing.
                    let subject = crate::scope::printable(&subject);
                    let text =
                        format!("Permissions Violation for Subscription to \"{subject}\": the upstream refused it");
                    return self.deny(text).await;
                }
            }
        }
        self.subs.insert(sid, SubEntry { upstream: key, limit, _slot: slot });
        if self.verbose {
            // Its +OK says it is live, as nats-server's does.
            self.sync_subscriptions().await;
        }
        self.ok().await
    }

    /// Wait until the server has this client's new subscriptions: before
    /// its next PUB (which goes upstream on another connection, unordered
    /// with them) and before its PONG, so that subscribe, flush, then
    /// publish from anywhere delivers, as with nats-server.
    async fn sync_subscriptions(&mut self) {
        subscriptions_live(&self.shared, std::mem::take(&mut self.unsynced)).await;
    }

    /// UNSUB: now, or (`max`) once that many messages were delivered in
    /// all; a limit already reached unsubscribes now.
    async fn unsubscribe(&mut self, sid: &str, max: Option<u64>) {
        if let (Some(max), Some(entry)) = (max, self.subs.get(sid)) {
            if entry.limit.set(max) {
                return;
            }
        }
        // Out of the fan-out first, then forgotten here: if the connection
        // closes while this waits, closing still finds it.
        let Some(entry) = self.subs.get(sid) else { return };
        // (An admin's inbox subscription is both.)
        if let Some(key) = entry.upstream.clone() {
            self.shared.fanout.remove(&key, self.id, sid).await;
        }
        lock(&self.inbox).retain(|s| s.sid != sid);
        self.subs.remove(sid);
    }

    async fn publish(
        &mut self,
        outlet: Outlet,
        subject: String,
        reply: Option<String>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) -> Flow {
        self.sync_subscriptions().await;
        // A reply to a request this client received goes where the request
        // came from; only clients that may publish may answer.
        let aliased = lock(&outlet.aliases).resolve(&subject);
        let may_answer = !matches!(outlet.scope, Scope::Tenant { publish: false, .. });
        let upstream = match aliased {
            Some(target) if may_answer => target,
            _ => match outlet.scope.publish(&subject) {
                Ok(s) => s,
                Err(_) if self.pedantic && !is_valid_subject(&subject, false) => {
                    return self.deny("Invalid Publish Subject".into()).await;
                }
                Err(denied) => return self.deny(denied.0).await,
            },
        };
        let reply = match reply {
            None => None,
            Some(r) if is_valid_subject(&r, false) => {
                self.ensure_reply_sub(&outlet).await;
                Some(format!("{}.{r}", self.reply_prefix))
            }
            Some(r) => {
                let text =
                    format!("Permissions Violation for Publish with Reply of \"{}\"", crate::scope::printable(&r));
                return self.deny(text).await;
            }
        };
        if upstream.len() + reply.as_ref().map_or(0, String::len) > UPSTREAM_ARGS_MAX {
            return self.too_long().await;
        }
        let headers = match headers.map(|h| crate::delivery::parse_headers(&h)) {
            None => None,
            Some(Some(h)) => match outlet.scope.publish_headers(&subject, h) {
                Ok(h) => Some(h),
                Err(denied) => return self.deny(denied.0).await,
            },
            // (As a permissions violation: see the subscribe failure.)
            Some(None) => {
                let subject = crate::scope::printable(&subject);
                let text = format!("Permissions Violation for Publish to \"{subject}\" with headers that do not parse");
                return self.deny(text).await;
            }
        };
        // Over a limit, wait: this connection's socket is not read meanwhile.
        if let Some(rate) = &self.rate {
            rate.admit(payload.len()).await;
        }
        let org = outlet.scope.org_of(&upstream);
        let counted = match &outlet.scope {
            // An agent carries many orgs on one connection: it is held to its
            // own rates (this connection's, and the agent's), not to an
            // org's, which that org's tenants could use up for every org the
            // connection carries.
            Scope::Agent { .. } => {
                if !self.publish_metrics.contains_key(org) {
                    self.publish_metrics.insert(org.to_string(), self.shared.metrics.org(org));
                }
                self.publish_metrics.get(org).unwrap_or(&outlet.org)
            }
            _ => {
                self.shared.org_rates.admit(org, payload.len()).await;
                &outlet.org
            }
        };
        counted.msgs_in.inc();
        counted.bytes_in.add(payload.len() as u64);
        if let Some(echoes) = &outlet.echoes {
            // The subscriptions of its own that would bring it back: it is
            // skipped on each (a queue group's member passed over), as
            // nats-server skips the publisher.
            let mut comes_back = self
                .subs
                .iter()
                .filter(|(_, s)| s.upstream.as_ref().is_some_and(|k| subject_matches(&k.subject, &upstream)))
                .map(|(sid, _)| sid.as_str())
                .peekable();
            if comes_back.peek().is_some() {
                lock(echoes).published(comes_back, &upstream, headers.as_ref(), &payload);
            }
        }
        if self.published.is_none() {
            self.published = Some(self.shared.barrier.connects());
        }
        let client = &self.shared.upstream;
        let result = match (reply, headers) {
            (None, None) => client.publish(upstream, payload).await,
            (Some(r), None) => client.publish_with_reply(upstream, r, payload).await,
            (None, Some(h)) => client.publish_with_headers(upstream, h, payload).await,
            (Some(r), Some(h)) => client.publish_with_reply_and_headers(upstream, r, h, payload).await,
        };
        if let Err(e) = result {
            // Within what INFO said, but over the upstream's limit once
            // rewritten (a tenant's org in its message id): refused, not
            // lost quietly, and not with the closing 'Maximum Payload
            // Violation' for a client that kept to the limit.
            if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded {
                let subject = crate::scope::printable(&subject);
                return self
                    .deny(format!(
                        "Permissions Violation for Publish to \"{subject}\": over the upstream max_payload once scoped"
                    ))
                    .await;
            }
            tracing::warn!(error = %e, "upstream publish failed");
        }
        self.ok().await
    }

    /// Subscribe upstream to this connection's private reply prefix once.
    async fn ensure_reply_sub(&mut self, outlet: &Outlet) {
        if self.reply_task.is_some() {
            return;
        }
        let mut sub = match self.shared.upstream.subscribe(format!("{}.>", self.reply_prefix)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "upstream reply subscription failed");
                return;
            }
        };
        let (inbox, outlet, strip) = (self.inbox.clone(), outlet.clone(), self.reply_prefix.len() + 1);
        self.reply_task = Some(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Some(reply) = m.subject.get(strip..) else { continue };
                if !outlet.wants(&m) {
                    continue; // a status message the client did not ask for
                }
                let targets: Vec<String> = lock(&inbox)
                    .iter()
                    .filter(|s| subject_matches(&s.pattern, reply) && s.limit.take())
                    .map(|s| s.sid.clone())
                    .collect();
                for sid in targets {
                    if !outlet.deliver(reply, &sid, &m) {
                        return;
                    }
                }
                lock(&inbox).retain(|s| !s.limit.exhausted());
            }
        }));
    }

    async fn close(&mut self) {
        let subs: Vec<(String, SubEntry)> = self.subs.drain().collect();
        for (sid, s) in subs {
            if let Some(key) = s.upstream {
                self.shared.fanout.remove(&key, self.id, &sid).await;
            }
        }
        if let Some(t) = self.reply_task.take() {
            t.abort();
        }
    }
}

/// Wait (at most [`SYNC_WAIT`]) until the server has the upstream
/// subscriptions up to `generation` (0: none waiting).
async fn subscriptions_live(shared: &Shared, generation: u64) {
    if generation > 0 {
        shared.fanout.synced(generation).await;
    }
}

/// A client that published (`published`: the upstream client's connect
/// count at the first such publish) is answered PONG only once nats-server
/// has its messages (at most [`SYNC_WAIT`]), as nats-server answers a PING
/// after the publishes before it: a flush means they arrived.
async fn publishes_landed(shared: &Shared, conn: u64, published: Option<u64>) {
    let Some(connects) = published else { return };
    let barrier = &shared.barrier;
    if !barrier.passed(SYNC_WAIT).await {
        tracing::debug!(conn, "publishes not confirmed upstream in time; PONG anyway");
    } else if barrier.connects() != connects {
        // What async-nats had not written when it lost the connection is
        // gone (core NATS is at most once); the mark came back anyway.
        tracing::debug!(conn, "the upstream reconnected since this client published; some may be lost");
    }
}
