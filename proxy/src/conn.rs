//! One client connection: a reader that parses and authorises operations,
//! a writer task that owns the socket's write half, and one task per upstream
//! subscription feeding the writer through a bounded queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use flotilla_core::subject::{is_valid_subject, subject_matches};

use crate::auth::store::Credentials;
use crate::metrics::OrgMetrics;
use crate::protocol::{parse, writer, ClientOp, ProtoError};
use crate::scope::{Scope, SubTarget};
use crate::Shared;

/// Prefix of the per-connection upstream reply subjects.
const REPLY_PREFIX: &str = "_FLOTILLA.reply";

#[derive(Debug, Default, Deserialize)]
struct ConnectInfo {
    #[serde(default)]
    verbose: bool,
    #[serde(default)]
    headers: bool,
    user: Option<String>,
    pass: Option<String>,
    auth_token: Option<String>,
    name: Option<String>,
}

/// A delivery limit set by `UNSUB <sid> <max>`.
#[derive(Default)]
struct Limit {
    max: AtomicU64,
    delivered: AtomicU64,
}

impl Limit {
    /// Count one delivery; false once the limit is reached.
    fn take(&self) -> bool {
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        let max = self.max.load(Ordering::Relaxed);
        max == 0 || n <= max
    }
    fn exhausted(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        max != 0 && self.delivered.load(Ordering::Relaxed) >= max
    }
}

struct InboxSub {
    sid: String,
    pattern: String,
    limit: Arc<Limit>,
}

enum SubEntry {
    Upstream { task: JoinHandle<()>, limit: Arc<Limit> },
    Inbox,
}

enum Flow {
    Continue,
    Close,
}

/// What every delivery task needs to reach the client.
#[derive(Clone)]
struct Outlet {
    tx: mpsc::Sender<Bytes>,
    scope: Scope,
    headers: bool,
    org: OrgMetrics,
}

impl Outlet {
    fn deliver(&self, subject: &str, sid: &str, m: &async_nats::Message) -> bool {
        let headers = encode_headers(m);
        if headers.is_some() && !self.headers {
            return true; // A status-only or headers message the client cannot read.
        }
        let frame = writer::msg(subject, sid, m.reply.as_deref(), headers.as_deref(), &m.payload);
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.org.msgs_out.inc();
                self.org.bytes_out.add(m.payload.len() as u64);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.org.drops.inc();
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let id = shared.next_client_id();
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Bytes>(shared.config.client_queue);
    let writer = tokio::spawn(write_loop(wr, rx));
    shared.metrics.connections.add(1);
    let info = serde_json::json!({
        "server_id": "FLOTILLA-PROXY",
        "server_name": "flotilla-proxy",
        "version": "2.10.0",
        "proto": 1,
        "headers": true,
        "auth_required": true,
        "max_payload": shared.config.max_payload,
        "client_id": id,
        "client_ip": peer.ip().to_string(),
    });
    let mut conn = Conn {
        id,
        peer,
        shared: shared.clone(),
        tx,
        outlet: None,
        verbose: false,
        creds_user: None,
        subs: HashMap::new(),
        inbox: Arc::new(Mutex::new(Vec::new())),
        reply_prefix: format!("{REPLY_PREFIX}.{id}x{}", rand_suffix()),
        reply_task: None,
        pings_out: 0,
    };
    if conn.send(writer::info(&info.to_string())).await {
        conn.run(&mut rd, shutdown).await;
    }
    conn.close();
    drop(conn);
    let _ = writer.await;
    shared.metrics.connections.add(-1);
}

fn rand_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, &mut wr);
    while let Some(frame) = rx.recv().await {
        if out.write_all(&frame).await.is_err() {
            return;
        }
        // Coalesce whatever else is queued into the same flush.
        while let Ok(more) = rx.try_recv() {
            if out.write_all(&more).await.is_err() {
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
    let _ = wr.shutdown().await;
}

struct Conn {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Bytes>,
    /// Set once authenticated.
    outlet: Option<Outlet>,
    verbose: bool,
    creds_user: Option<String>,
    subs: HashMap<String, SubEntry>,
    inbox: Arc<Mutex<Vec<InboxSub>>>,
    reply_prefix: String,
    reply_task: Option<JoinHandle<()>>,
    pings_out: u32,
}

impl Conn {
    async fn run(&mut self, rd: &mut tokio::net::tcp::OwnedReadHalf, shutdown: CancellationToken) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut ping = tokio::time::interval(self.shared.ping_interval);
        ping.tick().await;
        let auth_deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::pin!(auth_deadline);
        loop {
            loop {
                match parse(&buf, self.shared.config.max_payload) {
                    Ok(Some((op, used))) => {
                        buf.advance(used);
                        if let Flow::Close = self.handle(op).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.shared.metrics.protocol_errors.inc();
                        tracing::debug!(client = self.id, peer = %self.peer, error = %e, "protocol error");
                        let text = match e {
                            ProtoError::Invalid(why) => format!("Unknown Protocol Operation: {why}"),
                            other => other.to_string(),
                        };
                        self.send(writer::err(&text)).await;
                        return;
                    }
                }
            }
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = ping.tick() => {
                    if self.pings_out >= 2 {
                        self.send(writer::err("Stale Connection")).await;
                        return;
                    }
                    self.pings_out += 1;
                    if !self.send(Bytes::from_static(writer::PING)).await {
                        return;
                    }
                }
                _ = &mut auth_deadline, if self.outlet.is_none() => {
                    self.send(writer::err("Authentication Timeout")).await;
                    return;
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Queue a control frame; waits for room (these are never dropped).
    async fn send(&self, frame: Bytes) -> bool {
        self.tx.send(frame).await.is_ok()
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
            tracing::info!(client = self.id, org = o.scope.label(), peer = %self.peer, "{text}");
        }
        if self.send(writer::err(&text)).await {
            Flow::Continue
        } else {
            Flow::Close
        }
    }

    async fn handle(&mut self, op: ClientOp) -> Flow {
        let ClientOp::Connect(json) = &op else {
            if self.outlet.is_none() {
                self.send(writer::err("Authorization Violation")).await;
                return Flow::Close;
            }
            return self.handle_authed(op).await;
        };
        let info: ConnectInfo = serde_json::from_slice(json).unwrap_or_default();
        let creds =
            Credentials { user: info.user.clone(), pass: info.pass.clone(), auth_token: info.auth_token.clone() };
        let entry = self.shared.tokens.authenticate(&creds);
        let scope = entry.as_ref().map(|e| Scope::for_token(e, creds.user.as_deref()));
        let same_as_before = match (&self.outlet, &scope) {
            (None, Some(_)) => true,
            (Some(o), Some(s)) => &o.scope == s,
            _ => false,
        };
        let (Some(scope), true) = (scope, same_as_before) else {
            self.shared.metrics.auth_failures.inc();
            tracing::warn!(client = self.id, peer = %self.peer, user = ?info.user, "authorization violation");
            self.send(writer::err("Authorization Violation")).await;
            return Flow::Close;
        };
        tracing::debug!(client = self.id, peer = %self.peer, org = scope.label(), name = ?info.name, "client connected");
        self.verbose = info.verbose;
        self.creds_user = info.user;
        let org = self.shared.metrics.org(scope.label());
        self.outlet = Some(Outlet { tx: self.tx.clone(), scope, headers: info.headers, org });
        self.ok().await
    }

    async fn handle_authed(&mut self, op: ClientOp) -> Flow {
        let Some(outlet) = self.outlet.clone() else { return Flow::Close };
        match op {
            ClientOp::Connect(_) => Flow::Continue,
            ClientOp::Ping => {
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
                self.unsubscribe(&sid, max);
                self.ok().await
            }
            ClientOp::Pub { subject, reply, payload } => self.publish(outlet, subject, reply, None, payload).await,
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
            if !is_valid_subject(q, false) || q.contains('.') {
                return self
                    .deny(format!("Permissions Violation for Subscription to \"{subject}\" using queue \"{q}\""))
                    .await;
            }
        }
        self.unsubscribe(&sid, None);
        match target {
            SubTarget::Inbox => {
                self.ensure_reply_sub(&outlet).await;
                let limit = Arc::new(Limit::default());
                lock(&self.inbox).push(InboxSub { sid: sid.clone(), pattern: subject, limit });
                self.subs.insert(sid, SubEntry::Inbox);
            }
            SubTarget::Upstream(upstream) => {
                let sub = match &queue {
                    None => self.shared.upstream.subscribe(upstream).await,
                    Some(q) => self.shared.upstream.queue_subscribe(upstream, q.clone()).await,
                };
                let mut sub = match sub {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream subscribe failed");
                        return self.deny("Upstream Subscription Failed".into()).await;
                    }
                };
                let limit = Arc::new(Limit::default());
                let (l, sid2) = (limit.clone(), sid.clone());
                let task = tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        if !l.take() {
                            break;
                        }
                        let subject = outlet.scope.deliver(&m.subject);
                        if !outlet.deliver(&subject, &sid2, &m) || l.exhausted() {
                            break;
                        }
                    }
                });
                self.subs.insert(sid, SubEntry::Upstream { task, limit });
            }
        }
        self.ok().await
    }

    fn unsubscribe(&mut self, sid: &str, max: Option<u64>) {
        let limit = match self.subs.get(sid) {
            None => return,
            Some(SubEntry::Upstream { limit, .. }) => limit.clone(),
            Some(SubEntry::Inbox) => match lock(&self.inbox).iter().find(|s| s.sid == sid) {
                Some(s) => s.limit.clone(),
                None => Arc::new(Limit::default()),
            },
        };
        if let Some(max) = max.filter(|m| *m > limit.delivered.load(Ordering::Relaxed)) {
            limit.max.store(max, Ordering::Relaxed);
            return;
        }
        if let Some(SubEntry::Upstream { task, .. }) = self.subs.remove(sid) {
            task.abort();
        }
        lock(&self.inbox).retain(|s| s.sid != sid);
    }

    async fn publish(
        &mut self,
        outlet: Outlet,
        subject: String,
        reply: Option<String>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) -> Flow {
        let upstream = match outlet.scope.publish(&subject) {
            Ok(s) => s,
            Err(denied) => return self.deny(denied.0).await,
        };
        let reply = match reply {
            None => None,
            Some(r) if is_valid_subject(&r, false) => {
                self.ensure_reply_sub(&outlet).await;
                Some(format!("{}.{r}", self.reply_prefix))
            }
            Some(_) => return self.deny(format!("Permissions Violation for Publish to \"{subject}\"")).await,
        };
        outlet.org.msgs_in.inc();
        outlet.org.bytes_in.add(payload.len() as u64);
        let client = &self.shared.upstream;
        let result = match (reply, headers) {
            (None, None) => client.publish(upstream, payload).await,
            (Some(r), None) => client.publish_with_reply(upstream, r, payload).await,
            (None, Some(h)) => client.publish_with_headers(upstream, parse_headers(&h), payload).await,
            (Some(r), Some(h)) => client.publish_with_reply_and_headers(upstream, r, parse_headers(&h), payload).await,
        };
        if let Err(e) = result {
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

    fn close(&mut self) {
        for (_, s) in self.subs.drain() {
            if let SubEntry::Upstream { task, .. } = s {
                task.abort();
            }
        }
        if let Some(t) = self.reply_task.take() {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `NATS/1.0[ status[ description]]\r\n(Name: value\r\n)*\r\n`, or `None`
/// for a plain message.
fn encode_headers(m: &async_nats::Message) -> Option<Vec<u8>> {
    if m.headers.is_none() && m.status.is_none() {
        return None;
    }
    let mut h = String::from("NATS/1.0");
    if let Some(status) = m.status {
        h.push_str(&format!(" {}", status.as_u16()));
        if let Some(d) = &m.description {
            h.push(' ');
            h.push_str(d);
        }
    }
    h.push_str("\r\n");
    if let Some(headers) = &m.headers {
        for (name, values) in headers.iter() {
            for v in values {
                h.push_str(name.as_ref());
                h.push_str(": ");
                h.push_str(v.as_str());
                h.push_str("\r\n");
            }
        }
    }
    h.push_str("\r\n");
    Some(h.into_bytes())
}

/// Header lines of an HPUB block into a map (the status line is ignored).
fn parse_headers(block: &[u8]) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    let text = String::from_utf8_lossy(block);
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != ':') {
                map.append(name, value.trim());
            }
        }
    }
    map
}
