//! `echo: false` in CONNECT: a client does not receive what it published.
//!
//! Every client's publishes go upstream on the proxy's shared connection,
//! so nats-server cannot tell them apart. Instead, a client without echo
//! remembers, for each of its subscriptions a message it published matches,
//! the subscription's sid, the subject and a digest of payload and headers;
//! the first delivery of an identical message on that subscription is taken
//! as the echo and skipped. For a queue group the client's member is passed
//! over for that message, as nats-server passes over the publisher.
//! An identical message from someone else is indistinguishable from the
//! echo, so which of the two is skipped does not matter. Entries the server
//! never sends back (e.g. the subscription went away) expire.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// Longest an echo is awaited.
const EXPIRY: Duration = Duration::from_secs(5);
/// Most echoes awaited at once (the oldest are forgotten first).
const MAX_PENDING: usize = 4096;

/// When, the subscription's sid, the upstream subject, the digest.
type Awaited = (Instant, String, String, u64);

#[derive(Default)]
pub struct Echoes {
    pending: VecDeque<Awaited>,
}

impl Echoes {
    /// This client published `payload` (with `headers`) to `subject`
    /// upstream, which its subscriptions `sids` will bring back.
    pub fn published<'a>(
        &mut self,
        sids: impl IntoIterator<Item = &'a str>,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        payload: &[u8],
    ) {
        self.expire();
        let d = digest(headers, payload);
        for sid in sids {
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back((Instant::now(), sid.to_string(), subject.to_string(), d));
        }
    }

    /// Whether `m`, on subscription `sid`, is the echo of something this
    /// client published (and is then forgotten).
    pub fn is_echo(&mut self, sid: &str, m: &impl crate::delivery::Delivery) -> bool {
        self.expire();
        if self.pending.is_empty() {
            return false;
        }
        // The digest (a hash of the whole payload) only if some echo is
        // awaited on this subscription and subject.
        let subject = m.subject();
        let mut candidates = self.pending.iter().enumerate().filter(|(_, (_, i, s, _))| i == sid && s == subject);
        let Some(first) = candidates.next() else { return false };
        let d = m.echo_digest();
        let found = std::iter::once(first).chain(candidates).find(|(_, (.., x))| *x == d).map(|(i, _)| i);
        match found {
            Some(i) => {
                self.pending.remove(i);
                true
            }
            None => false,
        }
    }

    fn expire(&mut self) {
        while self.pending.front().is_some_and(|(t, ..)| t.elapsed() > EXPIRY) {
            self.pending.pop_front();
        }
    }
}

/// Payload and headers (in name order: a header map has no order of its own).
/// No headers and an empty header block are the same: async-nats sends an
/// empty map as a plain PUB, so the echo of an empty HPUB has none.
pub fn digest(headers: Option<&async_nats::HeaderMap>, payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    if let Some(headers) = headers.filter(|h| !h.is_empty()) {
        let mut entries: Vec<(String, Vec<String>)> = headers
            .iter()
            .map(|(name, values)| (name.to_string(), values.iter().map(|v| v.as_str().to_string()).collect()))
            .collect();
        entries.sort();
        entries.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &str, payload: &'static str) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: payload.into(),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn each_publish_hides_one_identical_delivery() {
        let mut e = Echoes::default();
        e.published(["1"], "logs.acme.a", None, b"x");
        e.published(["1"], "logs.acme.a", None, b"x");
        assert!(!e.is_echo("1", &msg("logs.acme.a", "y")), "another payload");
        assert!(!e.is_echo("1", &msg("logs.acme.b", "x")), "another subject");
        assert!(!e.is_echo("2", &msg("logs.acme.a", "x")), "another subscription");
        assert!(e.is_echo("1", &msg("logs.acme.a", "x")));
        assert!(e.is_echo("1", &msg("logs.acme.a", "x")));
        assert!(!e.is_echo("1", &msg("logs.acme.a", "x")), "two publishes, two echoes, no more");
    }

    #[test]
    fn an_empty_header_block_is_no_headers() {
        let empty = async_nats::HeaderMap::new();
        assert_eq!(digest(Some(&empty), b"x"), digest(None, b"x"));
        let mut one = async_nats::HeaderMap::new();
        one.insert("a", "1");
        assert_ne!(digest(Some(&one), b"x"), digest(None, b"x"));
    }

    #[test]
    fn headers_count_in_any_order() {
        let mut a = async_nats::HeaderMap::new();
        a.insert("A", "1");
        a.insert("B", "2");
        let mut b = async_nats::HeaderMap::new();
        b.insert("B", "2");
        b.insert("A", "1");
        assert_eq!(digest(Some(&a), b"p"), digest(Some(&b), b"p"));
        assert_ne!(digest(Some(&a), b"p"), digest(None, b"p"));
    }
}
