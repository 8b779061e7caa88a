//! One sink's books: per agent host and origin stream, the seqs the sink
//! settled (committed, filtered out or dead-lettered, then acked), the seqs
//! the agent dropped and said so, and the settled high-water: the gaps
//! between them are the missing events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ranges::RangeSet;

/// What one sink knows about one origin stream (a queue-backed source, or
/// one incarnation of a tailed file) of one host. Persisted as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBook {
    /// The agent's source name (from its heartbeat; empty until one named it).
    #[serde(default)]
    pub source: String,
    /// The tailed file, for file streams.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// The subject (pattern) the stream's events go to.
    #[serde(default)]
    pub subject: String,
    /// The agent's acked high-water, once the sink had the chance to
    /// settle everything up to it (see the ledger task). 0: not known.
    #[serde(default)]
    pub high_water: u64,
    /// Seqs the sink settled.
    #[serde(default)]
    pub committed: RangeSet,
    /// Seqs of events the agent dropped under its rate limit (announced on
    /// the next published event): accounted for, not missing.
    #[serde(default, skip_serializing_if = "RangeSet::is_empty")]
    pub dropped: RangeSet,
    /// Missing seqs no longer listed: past [`super::ranges::MAX_RANGES`]
    /// the lowest gaps are counted here instead.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forgotten: u64,
    /// Unix seconds of the last heartbeat that reported the stream.
    #[serde(default)]
    pub seen: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StreamBook {
    /// The sink settled the event `seq`, in front of which the agent dropped
    /// `dropped` events.
    pub fn settle(&mut self, seq: u64, dropped: u64) {
        self.forgotten += self.committed.insert(seq);
        if dropped > 0 && dropped < seq {
            self.forgotten += self.dropped.insert_range(seq - dropped, seq - 1);
        }
    }

    /// Seqs the sink settled or the agent accounted for.
    fn accounted(&self) -> std::borrow::Cow<'_, RangeSet> {
        if self.dropped.is_empty() {
            std::borrow::Cow::Borrowed(&self.committed)
        } else {
            std::borrow::Cow::Owned(self.committed.union(&self.dropped))
        }
    }

    /// Events in `1..=high_water` neither settled nor dropped by the agent.
    pub fn missing(&self) -> u64 {
        if self.high_water == 0 {
            return 0;
        }
        let accounted = self.accounted().count_upto(self.high_water);
        self.high_water - accounted + self.forgotten
    }

    /// The missing ranges, lowest first, at most `max`.
    pub fn gaps(&self, max: usize) -> Vec<(u64, u64)> {
        self.accounted().gaps_upto(self.high_water).take(max).collect()
    }

    /// Fold in a record of the same stream (loaded from the store).
    pub fn merge(&mut self, other: &StreamBook) {
        for &(lo, hi) in other.committed.ranges() {
            self.forgotten += self.committed.insert_range(lo, hi);
        }
        for &(lo, hi) in other.dropped.ranges() {
            self.forgotten += self.dropped.insert_range(lo, hi);
        }
        self.forgotten = self.forgotten.max(other.forgotten);
        self.high_water = self.high_water.max(other.high_water);
        self.seen = self.seen.max(other.seen);
        for (mine, theirs) in
            [(&mut self.source, &other.source), (&mut self.path, &other.path), (&mut self.subject, &other.subject)]
        {
            if mine.is_empty() {
                mine.clone_from(theirs);
            }
        }
    }
}

/// One host's streams, by stream key (`f/<nonce>` or the source name).
pub type HostBook = BTreeMap<String, StreamBook>;

/// Missing events per (host, source name), summed over the source's streams.
pub fn missing_by_source(hosts: &BTreeMap<String, HostBook>) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (host, streams) in hosts {
        for book in streams.values().filter(|b| !b.source.is_empty()) {
            *out.entry((host.clone(), book.source.clone())).or_insert(0) += book.missing();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_what_is_neither_settled_nor_dropped() {
        let mut b = StreamBook::default();
        for seq in [1, 2, 3, 6, 7, 10] {
            b.settle(seq, 0);
        }
        // No high-water yet: nothing can be called missing.
        assert_eq!(b.missing(), 0);
        b.high_water = 12;
        assert_eq!(b.missing(), 6);
        assert_eq!(b.gaps(10), vec![(4, 5), (8, 9), (11, 12)]);
        assert_eq!(b.gaps(1), vec![(4, 5)]);
        // The event 10 said the two before it were dropped by the agent.
        b.settle(10, 2);
        assert_eq!(b.missing(), 4);
        assert_eq!(b.gaps(10), vec![(4, 5), (11, 12)]);
        // Late deliveries close the gaps.
        for seq in [4, 5, 11, 12] {
            b.settle(seq, 0);
        }
        assert_eq!((b.missing(), b.gaps(10)), (0, vec![]));
        // Settled beyond the high-water: not missing, not counted twice.
        b.settle(20, 0);
        assert_eq!(b.missing(), 0);
    }

    #[test]
    fn merging_a_stored_record() {
        let mut live = StreamBook::default();
        live.settle(5, 0);
        let mut stored = StreamBook { source: "app".into(), high_water: 6, ..Default::default() };
        for seq in 1..=4 {
            stored.settle(seq, 0);
        }
        live.merge(&stored);
        assert_eq!((live.source.as_str(), live.high_water, live.missing()), ("app", 6, 1));
        let json = serde_json::to_string(&live).unwrap();
        assert!(json.contains("\"committed\":[[1,5]]"), "{json}");
        assert_eq!(serde_json::from_str::<StreamBook>(&json).unwrap(), live);
    }

    #[test]
    fn sums_per_source() {
        let mut hosts: BTreeMap<String, HostBook> = BTreeMap::new();
        let book = |source: &str, hw: u64, seqs: &[u64]| {
            let mut b = StreamBook { source: source.into(), high_water: hw, ..Default::default() };
            seqs.iter().for_each(|s| b.settle(*s, 0));
            b
        };
        let h1 = hosts.entry("h1".into()).or_default();
        h1.insert("f/aa".into(), book("files", 3, &[1]));
        h1.insert("f/bb".into(), book("files", 2, &[2]));
        h1.insert("syslog".into(), book("syslog", 2, &[1, 2]));
        h1.insert("unnamed".into(), book("", 9, &[]));
        let m = missing_by_source(&hosts);
        assert_eq!(m.get(&("h1".into(), "files".into())), Some(&3));
        assert_eq!(m.get(&("h1".into(), "syslog".into())), Some(&0));
        assert_eq!(m.len(), 2);
    }
}
