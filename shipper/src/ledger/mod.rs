//! The completeness ledger: what each sink settled, per event origin,
//! compared with the agents' status heartbeats.
//!
//! Every delivered message carries its [`Origin`]: the agent host, the
//! origin stream (a queue-backed source, or one incarnation of a tailed
//! file: see [`flotilla_core::origin`]) and its seq in that stream. After a
//! sink committed and acked a batch, [`Ledger::committed`] adds the seqs to
//! the sink's [`book`] — events a sink filtered out or dead-lettered count
//! too: the sink had them. The [`task`] reads the heartbeats on
//! `flotilla.agent.*.status`, takes a reported high-water as due for a sink
//! only once the sink's consumer has settled everything JetStream held when
//! the heartbeat came (so batching and backlog are not "missing"), exports
//! `flotilla_sink_missing_events{sink,host,source}` and stores the books in
//! the `FLOTILLA_SHIPPER` bucket ([`store`]) for restarts and for
//! `flotilla-shipper audit` ([`audit`]).
//!
//! A sink tracks an origin stream only when its `subjects` cover every
//! subject the stream's events go to (as the heartbeat says); a late event
//! closes its gap and the gauge goes down again.

pub mod audit;
pub mod book;
pub mod ranges;
pub mod store;
pub mod task;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::HeaderMap;

use flotilla_core::{origin, HDR_MSG_ID, HDR_SEQ};

use book::HostBook;

/// Where an event came from: the agent host, the origin stream within it
/// (a source, or one incarnation of a tailed file) and the event's
/// sequence in that stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub host: String,
    /// `f/<nonce>` for a file incarnation, else the source name.
    pub stream: String,
    pub seq: u64,
    /// Seqs right before `seq` consumed by events the agent dropped (and
    /// counted) under its rate limit.
    pub dropped: u64,
}

impl Origin {
    /// The origin of a message, from its `Nats-Msg-Id` and `Flotilla-Seq`
    /// headers; `None` for messages that did not come from an agent, and
    /// for events outside a sequence (seq 0: rate-limit notices of files).
    pub fn from_message(_subject: &str, headers: Option<&HeaderMap>) -> Option<Origin> {
        let headers = headers?;
        let seq: u64 = headers.get(HDR_SEQ)?.as_str().parse().ok()?;
        if seq == 0 {
            return None;
        }
        let id = origin::parse(headers.get(HDR_MSG_ID)?.as_str())?;
        let dropped = headers.get(origin::HDR_DROPPED).and_then(|v| v.as_str().parse().ok()).unwrap_or(0);
        Some(Origin { host: id.host.to_string(), stream: id.stream.key(), seq, dropped })
    }
}

/// A sink as the ledger sees it.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub name: String,
    /// The JetStream stream it reads.
    pub stream: String,
    /// Its durable consumer.
    pub consumer: String,
    /// Its consumer's filter subjects.
    pub subjects: Vec<String>,
}

impl SinkSpec {
    /// Does the sink receive every event of a stream going to `subject`
    /// (a pattern)?
    pub fn covers(&self, subject: &str) -> bool {
        self.subjects.iter().any(|s| crate::stream::covers(s, subject))
    }
}

#[derive(Debug, Default)]
pub(crate) struct SinkState {
    pub spec: Option<SinkSpec>,
    pub hosts: BTreeMap<String, HostBook>,
    /// Hosts changed since they were last stored.
    pub dirty: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub sinks: BTreeMap<String, SinkState>,
}

/// The ledger shared by every sink of a shipper. Cheap to clone; the
/// default one keeps no books (the ledger is off).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    state: Option<Arc<Mutex<State>>>,
}

impl Ledger {
    /// Books for these sinks.
    pub fn new(sinks: impl IntoIterator<Item = SinkSpec>) -> Ledger {
        let sinks = sinks
            .into_iter()
            .map(|spec| (spec.name.clone(), SinkState { spec: Some(spec), ..Default::default() }))
            .collect();
        Ledger { state: Some(Arc::new(Mutex::new(State { sinks }))) }
    }

    /// `sink` committed (and acked) events of these origins.
    pub fn committed<'a>(&self, sink: &str, origins: impl IntoIterator<Item = &'a Origin>) {
        let Some(mut state) = self.lock() else {
            return;
        };
        let Some(s) = state.sinks.get_mut(sink) else {
            return;
        };
        for o in origins {
            let host = match s.hosts.get_mut(&o.host) {
                Some(h) => h,
                None => s.hosts.entry(o.host.clone()).or_default(),
            };
            let book = match host.get_mut(&o.stream) {
                Some(b) => b,
                None => host.entry(o.stream.clone()).or_default(),
            };
            book.settle(o.seq, o.dropped);
            if !s.dirty.contains(&o.host) {
                s.dirty.insert(o.host.clone());
            }
        }
    }

    /// Missing events of one sink per (host, source).
    pub fn missing(&self, sink: &str) -> BTreeMap<(String, String), u64> {
        self.lock()
            .and_then(|state| state.sinks.get(sink).map(|s| book::missing_by_source(&s.hosts)))
            .unwrap_or_default()
    }

    pub(crate) fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.as_ref().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, seq: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HDR_MSG_ID, id);
        h.insert(HDR_SEQ, seq);
        h
    }

    #[test]
    fn origins_from_agent_headers() {
        let id = origin::file_msg_id("h1", "00ff", 120);
        let o = Origin::from_message("logs.a.b.r.h1", Some(&headers(&id, "7"))).unwrap();
        assert_eq!(o, Origin { host: "h1".into(), stream: "f/00ff".into(), seq: 7, dropped: 0 });
        let mut h = headers(&origin::queue_msg_id("h2", "syslog", 3), "3");
        h.insert(origin::HDR_DROPPED, "2");
        let o = Origin::from_message("logs.a.b.r.h2", Some(&h)).unwrap();
        assert_eq!((o.host.as_str(), o.stream.as_str(), o.seq, o.dropped), ("h2", "syslog", 3, 2));
        // A file's rate-limit notice is outside the sequence.
        assert!(Origin::from_message("s", Some(&headers(&origin::notice_msg_id(&id), "0"))).is_none());
        assert!(Origin::from_message("s", Some(&headers("flotilla/x", "1"))).is_none());
        assert!(Origin::from_message("s", Some(&headers(&id, "x"))).is_none());
        assert!(Origin::from_message("s", None).is_none());
    }

    #[test]
    fn books_per_sink() {
        let spec = |name: &str| SinkSpec {
            name: name.into(),
            stream: "LOGS".into(),
            consumer: format!("flotilla-{name}"),
            subjects: vec!["logs.acme.>".into()],
        };
        let ledger = Ledger::new([spec("a"), spec("b")]);
        let o = |seq| Origin { host: "h".into(), stream: "src".into(), seq, dropped: 0 };
        ledger.committed("a", [&o(1), &o(2), &o(4)]);
        ledger.committed("nope", [&o(1)]);
        {
            let mut st = ledger.lock().unwrap();
            let b = st.sinks.get_mut("a").unwrap().hosts.get_mut("h").unwrap().get_mut("src").unwrap();
            (b.source, b.high_water) = ("src".into(), 5);
        }
        assert_eq!(ledger.missing("a").get(&("h".into(), "src".into())), Some(&2));
        assert!(ledger.missing("b").is_empty());
        assert!(spec("a").covers("logs.acme.*.r.h") && !spec("a").covers("logs.*.web.r.h"));
        Ledger::default().committed("a", [&o(1)]);
    }
}
