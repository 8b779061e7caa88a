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
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use flotilla_core::origin::HDR_DROPPED;
use flotilla_core::{HDR_MSG_ID, HDR_SEQ};

/// How long a publish may wait to be handed to the NATS client (which
/// stops taking them while it is disconnected and its buffer is full).
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// An event's headers: its de-duplication id and its seq (and how many seqs
/// right before it were dropped under a rate limit). Nothing more: every
/// header byte is parsed and stored by JetStream for every event.
pub fn event_headers(msg_id: &str, seq: u64, dropped: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HDR_MSG_ID, msg_id);
    headers.insert(HDR_SEQ, flotilla_core::decimal_str(seq, &mut [0; 20]));
    if dropped > 0 {
        headers.insert(HDR_DROPPED, flotilla_core::decimal_str(dropped, &mut [0; 20]));
    }
    headers
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
}

/// What an ack said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The stream already had this `Nats-Msg-Id` (a resend).
    pub duplicate: bool,
}

type Outcome = Result<Stored, AckError>;

pub struct Acks {
    client: async_nats::Client,
    /// `<inbox>.`
    prefix: String,
    sub: async_nats::Subscriber,
    next_id: u64,
    /// Acks for ids below this belong to abandoned publishes.
    floor: u64,
    early: BTreeMap<u64, Outcome>,
    timeout: Duration,
}

impl Acks {
    /// Subscribe to a fresh inbox; fails only when the client is closed.
    pub async fn new(client: async_nats::Client, timeout: Duration) -> Result<Acks, AckError> {
        let inbox = client.new_inbox();
        let sub = client.subscribe(format!("{inbox}.*")).await.map_err(|_| AckError::Closed)?;
        Ok(Acks { client, prefix: format!("{inbox}."), sub, next_id: 0, floor: 0, early: BTreeMap::new(), timeout })
    }

    /// Hand one message to the client; its ack is awaited with [`Acks::wait`].
    pub async fn publish(
        &mut self,
        subject: impl async_nats::ToSubject,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Sent, AckError> {
        let id = self.next_id;
        self.next_id += 1;
        let digits = &mut [0; 20];
        let id_str = flotilla_core::decimal_str(id, digits);
        let mut reply = String::with_capacity(self.prefix.len() + id_str.len());
        reply.push_str(&self.prefix);
        reply.push_str(id_str);
        let mut publish = std::pin::pin!(self.client.publish_with_reply_and_headers(subject, reply, headers, body));
        // Almost always the client takes it at once: no timer for that.
        let handed = match futures::poll!(publish.as_mut()) {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => tokio::time::timeout(ENQUEUE_TIMEOUT, publish).await,
        };
        match handed {
            Ok(Ok(())) => Ok(Sent { id, deadline: Instant::now() + self.timeout }),
            Ok(Err(e)) => Err(AckError::Publish(e.to_string())),
            Err(_) => Err(AckError::Enqueue),
        }
    }

    /// The ack of `sent` (await publishes in the order they were sent).
    pub async fn wait(&mut self, sent: Sent) -> Outcome {
        if let Some(outcome) = self.early.remove(&sent.id) {
            return outcome;
        }
        loop {
            // An ack already waiting needs no timer.
            let first = futures::poll!(self.sub.next());
            let next = match first {
                std::task::Poll::Ready(m) => Ok(m),
                std::task::Poll::Pending => tokio::time::timeout_at(sent.deadline.into(), self.sub.next()).await,
            };
            let msg = match next {
                Err(_) => return Err(AckError::Timeout(self.timeout)),
                Ok(None) => return Err(AckError::Closed),
                Ok(Some(m)) => m,
            };
            let Some(id) = self.id_of(&msg.subject) else { continue };
            let outcome = outcome(&msg);
            if id == sent.id {
                return outcome;
            }
            if id > sent.id && id < self.next_id {
                self.early.insert(id, outcome);
            }
        }
    }

    /// Abandon everything in flight (the caller resends it): acks still on
    /// their way are dropped when they arrive.
    pub fn forget(&mut self) {
        self.floor = self.next_id;
        self.early.clear();
    }

    fn id_of(&self, subject: &str) -> Option<u64> {
        let id: u64 = subject.strip_prefix(self.prefix.as_str())?.parse().ok()?;
        (id >= self.floor).then_some(id)
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
    Ok(Stored { duplicate: contains(payload, b"\"duplicate\":true") })
}

/// Whether `needle` occurs in `hay`; compares only where its first byte
/// occurs (a `"` in an ack: a handful per ack).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return true };
    hay.iter().enumerate().any(|(i, &b)| b == first && hay[i..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_told_apart() {
        assert_eq!(parse_ack(br#"{"stream":"LOGS","seq":7}"#), Ok(Stored { duplicate: false }));
        assert_eq!(parse_ack(br#"{"stream":"LOGS","seq":7,"duplicate":true}"#), Ok(Stored { duplicate: true }));
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
