//! JetStream publishes and their acks, without a future, a oneshot, a timer
//! and a serde parse per message: each source has one inbox subscription;
//! a publish's reply subject is `<inbox>.<id>`; acks are awaited oldest
//! first, so one deadline is live at a time, and an ack only has to say
//! "stored", "duplicate" or "error" (the pub-ack JSON is not parsed into a
//! struct). Acks that arrive out of order wait in a small map.
//!
//! After a failure the caller rewinds and resends; [`Acks::forget`] makes
//! the acks still on their way for the abandoned publishes harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use super::wire::{self, Wire, WireError};
use flotilla_core::nats::ServerList;
use flotilla_core::origin::HDR_DROPPED;
use flotilla_core::{HDR_MSG_ID, HDR_SEQ};

/// How long a publish may wait to be handed to the NATS client (which
/// stops taking them while it is disconnected and its buffer is full).
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// An event's headers: its de-duplication id and its seq (and how many seqs
/// right before it were dropped under a rate limit). Nothing more: every
/// header byte is parsed and stored by JetStream for every event.
#[derive(Debug, Clone, Copy)]
pub struct EventHeaders<'a> {
    pub msg_id: &'a str,
    pub seq: u64,
    pub dropped: u64,
}

impl EventHeaders<'_> {
    /// With the text of `seq` and `dropped` in `digits`.
    fn pairs<'b>(&'b self, digits: &'b mut [[u8; 20]; 2]) -> ([(&'b str, &'b str); 3], usize) {
        let [d0, d1] = digits;
        let seq = flotilla_core::decimal_str(self.seq, d0);
        let mut pairs = [(HDR_MSG_ID, self.msg_id), (HDR_SEQ, seq), ("", "")];
        let mut n = 2;
        if self.dropped > 0 {
            pairs[2] = (HDR_DROPPED, flotilla_core::decimal_str(self.dropped, d1));
            n = 3;
        }
        (pairs, n)
    }

    fn to_map(self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let digits = &mut [[0; 20]; 2];
        let (pairs, n) = self.pairs(digits);
        for (k, v) in &pairs[..n] {
            headers.insert(*k, *v);
        }
        headers
    }
}

/// A publish awaiting its ack.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    id: u64,
    deadline: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("NATS is not taking publishes")]
    Enqueue,
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("no JetStream ack within {0:?}")]
    Timeout(Duration),
    #[error("no stream takes this subject (no responders)")]
    NoResponders,
    #[error("JetStream refused the message: {0}")]
    Rejected(String),
    #[error("the NATS connection is closed")]
    Closed,
    #[error("NATS connection: {0}")]
    Connection(String),
}

/// What an ack said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The stream already had this `Nats-Msg-Id` (a resend).
    pub duplicate: bool,
}

type Outcome = Result<Stored, AckError>;

/// How publishes travel: the source's own connection ([`wire`], plain
/// `nats://` servers) or the agent's async-nats client (TLS).
enum Link {
    Client(async_nats::Subscriber),
    /// `servers`: the configured ones and the cluster members they named.
    Direct {
        opts: Arc<wire::Options>,
        conn: Option<Wire>,
        servers: ServerList,
    },
}

/// Where a source's publishes go: the agent's client, the source's own
/// connection when the servers are plain `nats://`, and how long an ack may
/// take before everything unacked is resent.
#[derive(Clone)]
pub struct Route {
    pub client: async_nats::Client,
    pub direct: Option<Arc<wire::Options>>,
    pub ack_timeout: Duration,
}

pub struct Acks {
    client: async_nats::Client,
    link: Link,
    /// `<inbox>.`
    prefix: String,
    next_id: u64,
    /// Acks for ids below this belong to abandoned publishes.
    floor: u64,
    early: BTreeMap<u64, Outcome>,
    timeout: Duration,
}

impl Acks {
    /// Publish over a connection of the source's own when the route has one
    /// (it connects at the first publish), else over its client; fails only
    /// when the client is closed.
    pub async fn new(route: Route) -> Result<Acks, AckError> {
        let Route { client, direct, ack_timeout: timeout } = route;
        let (link, inbox) = match direct {
            Some(opts) => {
                // The first server at random, so agents spread over a cluster.
                let servers = ServerList::new(opts.servers.clone(), rand::random_range(0..opts.servers.len().max(1)));
                (Link::Direct { opts, conn: None, servers }, format!("_INBOX.{}", random_token()))
            }
            None => {
                let inbox = client.new_inbox();
                (Link::Client(subscribe(&client, &inbox).await?), inbox)
            }
        };
        Ok(Acks { client, link, prefix: format!("{inbox}."), next_id: 0, floor: 0, early: BTreeMap::new(), timeout })
    }

    /// Hand one message to NATS; its ack is awaited with [`Acks::wait`].
    pub async fn publish(
        &mut self,
        subject: &async_nats::Subject,
        headers: EventHeaders<'_>,
        body: Bytes,
    ) -> Result<Sent, AckError> {
        let id = self.next_id;
        let digits = &mut [0; 20];
        let id_str = flotilla_core::decimal_str(id, digits);
        if let Link::Direct { .. } = self.link {
            self.connect().await?;
        }
        if let Link::Direct { conn: Some(wire), .. } = &mut self.link {
            let digits = &mut [[0; 20]; 2];
            let (pairs, n) = headers.pairs(digits);
            let headers = wire::Headers { pairs: &pairs[..n] };
            match wire.publish(subject.as_str(), [&self.prefix, id_str], headers, &body) {
                Ok(()) => {}
                Err(e @ WireError::TooLarge { .. }) => return Err(AckError::Publish(e.to_string())),
                Err(e) => return Err(self.lost(e)),
            }
        } else {
            let mut reply = String::with_capacity(self.prefix.len() + id_str.len());
            reply.push_str(&self.prefix);
            reply.push_str(id_str);
            let publish = self.client.publish_with_reply_and_headers(subject.clone(), reply, headers.to_map(), body);
            let mut publish = std::pin::pin!(publish);
            // Almost always the client takes it at once: no timer for that.
            let handed = match futures::poll!(publish.as_mut()) {
                std::task::Poll::Ready(r) => Ok(r),
                std::task::Poll::Pending => tokio::time::timeout(ENQUEUE_TIMEOUT, publish).await,
            };
            match handed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(AckError::Publish(e.to_string())),
                Err(_) => return Err(AckError::Enqueue),
            }
        }
        self.next_id += 1;
        Ok(Sent { id, deadline: Instant::now() + self.timeout })
    }

    /// The ack of `sent` (await publishes in the order they were sent).
    /// Cancel-safe: dropped, it can be called again for the same `sent`.
    pub async fn wait(&mut self, sent: Sent) -> Outcome {
        if let Some(outcome) = self.early.remove(&sent.id) {
            return outcome;
        }
        loop {
            let (id, outcome) = match &mut self.link {
                Link::Client(sub) => {
                    // An ack already waiting needs no timer.
                    let next = match futures::poll!(sub.next()) {
                        std::task::Poll::Ready(m) => Ok(m),
                        std::task::Poll::Pending => tokio::time::timeout_at(sent.deadline.into(), sub.next()).await,
                    };
                    match next {
                        Err(_) => return Err(AckError::Timeout(self.timeout)),
                        Ok(None) => return Err(AckError::Closed),
                        Ok(Some(m)) => (id_of(&self.prefix, self.floor, &m.subject), outcome(&m)),
                    }
                }
                Link::Direct { conn, .. } => {
                    let Some(wire) = conn.as_mut() else { return Err(AckError::Closed) };
                    let (prefix, floor) = (&self.prefix, self.floor);
                    match wire.take_msg(|subject, headers, payload| {
                        (id_of(prefix, floor, subject), wire_outcome(headers, payload))
                    }) {
                        Ok(Some(got)) => got,
                        Ok(None) => match tokio::time::timeout_at(sent.deadline.into(), wire.read_more()).await {
                            Err(_) => return Err(AckError::Timeout(self.timeout)),
                            Ok(Ok(())) => continue,
                            Ok(Err(e)) => return Err(self.lost(e)),
                        },
                        Err(e) => return Err(self.lost(e)),
                    }
                }
            };
            let Some(id) = id else { continue };
            if id == sent.id {
                return outcome;
            }
            if id > sent.id && id < self.next_id {
                self.early.insert(id, outcome);
            }
        }
    }

    /// While nothing is in flight: keep the source's connection answering
    /// the server's PINGs. Returns only when that connection was lost (the
    /// next publish connects again); pending when there is none.
    pub async fn idle(&mut self) {
        let Link::Direct { conn: Some(wire), .. } = &mut self.link else {
            return std::future::pending().await;
        };
        let (prefix, floor, next_id) = (&self.prefix, self.floor, self.next_id);
        let early = &mut self.early;
        let result = loop {
            match wire
                .take_msg(|subject, headers, payload| (id_of(prefix, floor, subject), wire_outcome(headers, payload)))
            {
                Ok(Some((Some(id), outcome))) if id < next_id => {
                    early.insert(id, outcome);
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    if let Err(e) = wire.read_more().await {
                        break e;
                    }
                }
                Err(e) => break e,
            }
        };
        self.lost(result);
    }

    /// Abandon everything in flight (the caller resends it): acks still on
    /// their way are dropped when they arrive.
    pub fn forget(&mut self) {
        self.floor = self.next_id;
        self.early.clear();
    }

    /// Make the source's connection if there is none.
    async fn connect(&mut self) -> Result<(), AckError> {
        let Link::Direct { opts, conn, servers } = &mut self.link else {
            return Err(AckError::Closed);
        };
        if conn.is_none() {
            let Some(server) = servers.next_addr() else {
                return Err(AckError::Connection("no NATS servers to connect to".into()));
            };
            let inbox = format!("{}*", self.prefix);
            match Wire::connect(opts, &server, &inbox, servers).await {
                Ok(w) => {
                    opts.connects.inc();
                    *conn = Some(w);
                }
                Err(WireError::NeedsTls) => {
                    // A nats:// URL whose server asks for TLS: async-nats
                    // knows how; from now on publishes go through it.
                    tracing::info!(%server, "the NATS server requires TLS; publishing through the TLS client");
                    let inbox = self.client.new_inbox();
                    self.link = Link::Client(subscribe(&self.client, &inbox).await?);
                    self.prefix = format!("{inbox}.");
                    return Err(AckError::Connection("the server requires TLS; switched to the TLS client".into()));
                }
                Err(e) => {
                    opts.disconnects.inc();
                    return Err(AckError::Connection(format!("{server}: {e}")));
                }
            }
        }
        Ok(())
    }

    /// The connection failed: drop it (the next publish connects again).
    fn lost(&mut self, e: WireError) -> AckError {
        if let Link::Direct { opts, conn, servers } = &mut self.link {
            if let Some(lost) = conn.take() {
                opts.disconnects.inc();
                // Members that joined while it was up are tried too.
                if let Some(info) = lost.later_info() {
                    servers.learn(info);
                }
            }
        }
        AckError::Connection(e.to_string())
    }
}

async fn subscribe(client: &async_nats::Client, inbox: &str) -> Result<async_nats::Subscriber, AckError> {
    client.subscribe(format!("{inbox}.*")).await.map_err(|_| AckError::Closed)
}

/// The id of an ack's subject (`<inbox>.<id>`), unless it is below `floor`.
fn id_of(prefix: &str, floor: u64, subject: &str) -> Option<u64> {
    let id: u64 = subject.strip_prefix(prefix)?.parse().ok()?;
    (id >= floor).then_some(id)
}

/// 22 random alphanumerics, like a NUID.
fn random_token() -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..22).map(|_| char::from(CHARS[rand::random_range(0..CHARS.len())])).collect()
}

/// An ack read off the source's own connection.
fn wire_outcome(headers: Option<&[u8]>, payload: &[u8]) -> Outcome {
    match headers.and_then(wire::status) {
        Some(503) => Err(AckError::NoResponders),
        Some(code) => Err(AckError::Rejected(format!("status {code}"))),
        None => parse_ack(payload),
    }
}

/// A pub ack (`{"stream":"LOGS","seq":7}`, `..."duplicate":true}`), an
/// error (`{"error":{"code":503,"description":"..."}}`) or a status.
fn outcome(msg: &async_nats::Message) -> Outcome {
    if msg.status == Some(StatusCode::NO_RESPONDERS) {
        return Err(AckError::NoResponders);
    }
    if let Some(status) = msg.status {
        return Err(AckError::Rejected(format!("status {status}")));
    }
    parse_ack(&msg.payload)
}

fn parse_ack(payload: &[u8]) -> Outcome {
    if contains(payload, b"\"error\"") {
        let text = String::from_utf8_lossy(payload);
        let description = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["error"]["description"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.into_owned());
        return Err(AckError::Rejected(description));
    }
    if !contains(payload, b"\"seq\"") {
        return Err(AckError::Rejected(format!("not a JetStream ack: {}", String::from_utf8_lossy(payload))));
    }
    Ok(Stored { duplicate: is_duplicate(payload) })
}

/// `"duplicate":true`, with or without spaces (nats-server writes
/// `"duplicate": true`).
fn is_duplicate(payload: &[u8]) -> bool {
    const KEY: &[u8] = b"\"duplicate\"";
    let Some(at) = find(payload, KEY) else { return false };
    let rest = payload[at + KEY.len()..].trim_ascii_start();
    rest.strip_prefix(b":").is_some_and(|v| v.trim_ascii_start().starts_with(b"true"))
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Where `needle` first occurs in `hay`; compares only where its first
/// byte occurs (a `"` in an ack: a handful per ack).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let Some(&first) = needle.first() else { return Some(0) };
    (0..hay.len()).find(|&i| hay[i] == first && hay[i..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_told_apart() {
        assert_eq!(parse_ack(br#"{"stream":"LOGS","seq":7}"#), Ok(Stored { duplicate: false }));
        assert_eq!(parse_ack(br#"{"stream":"LOGS","seq":7,"duplicate":true}"#), Ok(Stored { duplicate: true }));
        // As nats-server writes it.
        assert_eq!(parse_ack(br#"{"stream":"LOGS","seq":1,"duplicate": true}"#), Ok(Stored { duplicate: true }));
        assert_eq!(parse_ack(br#"{"stream":"LOGS","seq":1,"duplicate": false}"#), Ok(Stored { duplicate: false }));
        assert_eq!(
            parse_ack(br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#),
            Err(AckError::Rejected("maximum messages exceeded".into()))
        );
        assert!(matches!(parse_ack(b"garbage"), Err(AckError::Rejected(_))));
        assert!(matches!(parse_ack(br#"{"stream":"LOGS","se"#), Err(AckError::Rejected(_))), "cut short");
    }

    #[test]
    fn contains_finds_needles_anywhere_and_only_whole() {
        assert!(contains(b"abc\"seq\"", b"\"seq\""), "at the end");
        assert!(contains(b"\"seq\":1", b"\"seq\""), "at the start");
        assert!(!contains(b"\"se\"q\"", b"\"seq\""));
        assert!(!contains(b"\"seq", b"\"seq\""), "cut short");
        assert!(!contains(b"", b"\"seq\""));
    }
}
