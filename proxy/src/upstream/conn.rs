//! The delivery connection: one NATS connection upstream that only
//! subscribes and reads, handing each `MSG`/`HMSG` to a [`Sink`] as slices
//! of its read buffer. It answers PINGs, sends its own (a connection that
//! stops answering is dropped), and on any failure reconnects with full
//! jitter backoff and subscribes again to everything it had: to the next
//! configured server, or to a cluster member the servers named in INFO.
//!
//! TLS (rustls) after the server's plaintext INFO, as NATS clients do: to
//! every server when a `tls://` URL is configured, else to a server whose
//! INFO requires it. The certificate is checked against the host the
//! connection was made to, or for a cluster member INFO names by address,
//! the configured host name ([`ServerList::tls_name`]). From the plaintext
//! INFO before the handshake only members named by address are learnt
//! ([`ServerList::learn_unverified`]); INFOs over TLS name the rest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

pub use flotilla_core::nats::tls::TlsOptions;
use flotilla_core::nats::tls::{self, ServerInfo};
use flotilla_core::nats::ServerList;

use super::changes::{self, Changes, Owner};
use super::frames::{self, ServerOp};
use crate::delivery::Raw;

/// Where the delivery connection's messages go.
pub trait Sink: Send + 'static {
    /// The whole messages of one read, in order, as slices of the read
    /// buffer.
    fn deliver(&mut self, msgs: &[Raw<'_>]);
}

#[derive(Clone)]
pub struct Options {
    /// `host:port` of each server, tried in turn.
    pub servers: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ping_interval: Duration,
    /// How long the TCP connect and the server's INFO may take together
    /// before the next server is tried (a black-holed address must not hold
    /// deliveries for the OS connect timeout).
    pub connect_timeout: Duration,
    pub max_backoff: Duration,
    /// Counts connections that ended or could not be made.
    pub reconnects: flotilla_core::metrics::Counter,
    /// 1 while connected (from the server's first PONG), else 0.
    pub connected: flotilla_core::metrics::Gauge,
    /// Without it, a server that requires TLS is not used.
    pub tls: Option<TlsOptions>,
}

type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// The handle: subscribe and unsubscribe; the connection lives in its task.
#[derive(Clone)]
pub struct Upstream {
    owner: Arc<Owner>,
}

impl Upstream {
    /// Start the connection task (it connects, and keeps reconnecting,
    /// until every handle is dropped).
    pub fn start(opts: Options, sink: impl Sink) -> Upstream {
        let changes = Arc::new(Changes::default());
        tokio::spawn(run(opts, sink, changes.clone()));
        Upstream { owner: Arc::new(Owner(changes)) }
    }

    /// Its generation, for [`Upstream::synced`].
    pub fn subscribe(&self, sid: u64, subject: &str, queue: Option<&str>) -> u64 {
        self.owner.0.subscribe(sid, subject, queue)
    }

    /// Wait (at most `within`) until the server has every subscription up
    /// to `generation`; false if it did not come to that.
    pub async fn synced(&self, generation: u64, within: Duration) -> bool {
        self.owner.0.synced(generation, within).await
    }

    pub fn unsubscribe(&self, sid: u64) {
        self.owner.0.unsubscribe(sid);
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("protocol: {0}")]
    Frame(#[from] frames::FrameError),
    #[error("the server stopped answering PINGs")]
    Stale,
    #[error("no INFO from the server within {0:?}")]
    Timeout(Duration),
    #[error("the server said: {0}")]
    Refused(String),
    #[error("every handle is gone")]
    Done,
}

async fn run(opts: Options, mut sink: impl Sink, changes: Arc<Changes>) {
    let mut subs: BTreeMap<u64, changes::Sub> = BTreeMap::new();
    let mut failures: u32 = 0;
    let mut servers = ServerList::new(opts.servers.clone(), 0);
    loop {
        let Some(server) = servers.next_addr() else {
            tracing::error!("upstream delivery connection: no servers to connect to");
            return;
        };
        let ended = session(&server, &opts, &mut sink, &changes, &mut subs, &mut servers, &mut failures).await;
        opts.connected.set(0);
        changes.lost();
        match ended {
            Ended::Done => return,
            e => {
                opts.reconnects.inc();
                tracing::warn!(%server, error = %e, "upstream delivery connection lost; connecting again");
            }
        }
        failures = failures.saturating_add(1);
        let cap = opts.max_backoff.as_millis().min(100u128 << failures.min(16)) as u64;
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..=cap))).await;
    }
}

async fn session(
    server: &str,
    opts: &Options,
    sink: &mut impl Sink,
    changes: &Changes,
    subs: &mut BTreeMap<u64, changes::Sub>,
    servers: &mut ServerList,
    failures: &mut u32,
) -> Ended {
    // What changed while there was no connection; later changes wake the
    // loop below.
    let Some((batch, mut sent)) = changes.take() else { return Ended::Done };
    changes::apply(subs, batch);
    // Per PING in flight, in order: the generation its PONG acknowledges
    // (none for a keep-alive).
    let mut pings = std::collections::VecDeque::from([Some(sent)]);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    // INFO first; then CONNECT, every subscription, and a PING whose PONG
    // says the server took them.
    let opened = tokio::time::timeout(opts.connect_timeout, open(server, opts.tls.as_ref(), &mut rbuf, servers)).await;
    let (mut stream, max_payload) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => return e,
        Err(_) => return Ended::Timeout(opts.connect_timeout),
    };
    let mut out = connect_line(opts).into_bytes();
    for (sid, (subject, queue)) in subs.iter() {
        out.extend_from_slice(sub_line(*sid, subject, queue.as_deref()).as_bytes());
    }
    out.extend_from_slice(b"PING\r\n");
    if let Err(e) = write(&mut stream, &out).await {
        return e.into();
    }
    let mut ping = tokio::time::interval(opts.ping_interval);
    ping.tick().await;
    let mut pings_out = 1u32;
    let mut out = BytesMut::new();
    loop {
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }
        tokio::select! {
            read = stream.read_buf(&mut rbuf) => match read {
                Ok(0) => return std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into(),
                Ok(_) => {}
                Err(e) => return e.into(),
            },
            _ = changes.changed() => {
                let Some((batch, generation)) = changes.take() else { return Ended::Done };
                for (sid, change) in changes::apply(subs, batch) {
                    match change {
                        Some((subject, queue)) => out.extend_from_slice(sub_line(sid, &subject, queue.as_deref()).as_bytes()),
                        None => out.extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes()),
                    }
                }
                // New subscriptions: the PONG to this PING says the server
                // has them (even ones undone before they were sent).
                if generation > sent {
                    sent = generation;
                    out.extend_from_slice(b"PING\r\n");
                    pings.push_back(Some(generation));
                }
            }
            _ = ping.tick() => {
                if pings_out >= 2 {
                    return Ended::Stale;
                }
                pings_out += 1;
                out.extend_from_slice(b"PING\r\n");
                pings.push_back(None);
            }
        }
        // Every whole operation read so far; messages go to the sink
        // together, then the buffer moves past them.
        let mut at = 0;
        {
            let mut msgs = Vec::new();
            loop {
                match frames::parse(&rbuf[at..], max_payload) {
                    Ok(Some((op, used))) => {
                        match op {
                            ServerOp::Msg { subject, sid, reply, headers, payload } => {
                                msgs.push(Raw { sid, subject, reply, headers, payload })
                            }
                            ServerOp::Ping => out.extend_from_slice(b"PONG\r\n"),
                            ServerOp::Pong => {
                                pings_out = 0;
                                *failures = 0;
                                opts.connected.set(1);
                                if let Some(Some(generation)) = pings.pop_front() {
                                    changes.acked(generation);
                                }
                            }
                            ServerOp::Err(text) => {
                                if frames::is_fatal(text) {
                                    return Ended::Refused(text.to_string());
                                }
                                tracing::warn!(error = %text, "upstream delivery connection: server error");
                            }
                            // Cluster members that joined since.
                            ServerOp::Info(json) => servers.learn(json),
                            ServerOp::Ok => {}
                        }
                        at += used;
                    }
                    Ok(None) => break,
                    Err(e) => return e.into(),
                }
            }
            if !msgs.is_empty() {
                sink.deliver(&msgs);
            }
        }
        rbuf.advance(at);
        if !out.is_empty() {
            if let Err(e) = write(&mut stream, &out).await {
                return e.into();
            }
            out.clear();
        }
    }
}

/// Write and flush (TLS holds what it encrypts until flushed).
async fn write(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Connect, read the server's INFO (learning the cluster it names) and
/// start TLS if it is due (or first, before the INFO, if configured so);
/// the stream and the server's `max_payload`.
async fn open(
    server: &str,
    tls: Option<&TlsOptions>,
    rbuf: &mut BytesMut,
    servers: &mut ServerList,
) -> Result<(Stream, usize), Ended> {
    let mut tcp = TcpStream::connect(server).await?;
    let _ = tcp.set_nodelay(true);
    if let Some((connector, name)) = tls::first(tls, server, servers).map_err(|e| Ended::Refused(e.to_string()))? {
        let mut stream = connector.connect(name, tcp).await.map_err(Ended::Tls)?;
        let (info, json) = read_info(&mut stream, rbuf).await?;
        servers.learn(&json);
        return Ok((Either::Right(stream), info.max_payload));
    }
    let (info, json) = read_info(&mut tcp, rbuf).await?;
    let Some((connector, name)) =
        tls::upgrade(tls, &info, rbuf.len(), server, servers).map_err(|e| Ended::Refused(e.to_string()))?
    else {
        servers.learn(&json);
        return Ok((Either::Left(tcp), info.max_payload));
    };
    let stream = connector.connect(name, tcp).await.map_err(Ended::Tls)?;
    // The plaintext INFO could have been written by anyone on the path.
    servers.learn_unverified(&json);
    Ok((Either::Right(stream), info.max_payload))
}

/// Read the server's INFO: what it says, and its JSON.
async fn read_info<S: AsyncRead + Unpin>(stream: &mut S, rbuf: &mut BytesMut) -> Result<(ServerInfo, Vec<u8>), Ended> {
    loop {
        if let Some((op, used)) = frames::parse(rbuf, usize::MAX)? {
            let ServerOp::Info(json) = op else { return Err(Ended::Refused("no INFO first".into())) };
            let info =
                serde_json::from_slice(json).map_err(|e| Ended::Refused(format!("INFO that does not parse: {e}")))?;
            let json = json.to_vec();
            rbuf.advance(used);
            return Ok((info, json));
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

fn connect_line(opts: &Options) -> String {
    let mut c = serde_json::json!({
        "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
        "protocol": 1, "lang": "rust", "version": env!("CARGO_PKG_VERSION"),
        "name": "flotilla-proxy deliveries",
    });
    if let (Some(u), Some(p)) = (&opts.user, &opts.password) {
        c["user"] = u.as_str().into();
        c["pass"] = p.as_str().into();
    }
    format!("CONNECT {c}\r\n")
}

fn sub_line(sid: u64, subject: &str, queue: Option<&str>) -> String {
    match queue {
        Some(q) => format!("SUB {subject} {q} {sid}\r\n"),
        None => format!("SUB {subject} {sid}\r\n"),
    }
}
