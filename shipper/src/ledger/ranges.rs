//! A set of sequence numbers kept as sorted, disjoint, non-adjacent
//! inclusive ranges: an in-order stream costs one range however long it is,
//! and a gap that closes merges its neighbours back into one.

use serde::{Deserialize, Serialize};

/// Ranges kept before the lowest ones are merged (see [`RangeSet::insert_range`]).
pub const MAX_RANGES: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The highest member.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }

    pub fn contains(&self, seq: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < seq);
        self.ranges.get(i).is_some_and(|r| r.0 <= seq)
    }

    /// Add `seq`; returns what [`RangeSet::insert_range`] returns.
    pub fn insert(&mut self, seq: u64) -> u64 {
        // Fast path: the next seq of an in-order stream.
        if let Some(last) = self.ranges.last_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                return 0;
            }
        }
        if self.contains(seq) {
            return 0;
        }
        self.insert_range(seq, seq)
    }

    /// Add `lo..=hi`. Returns how many seqs the set lost track of: past
    /// [`MAX_RANGES`] the two lowest ranges are merged, and the seqs
    /// between them (not members) are counted by the caller instead.
    pub fn insert_range(&mut self, lo: u64, hi: u64) -> u64 {
        if lo > hi {
            return 0;
        }
        // Ranges that touch or overlap lo..=hi: from the first ending at
        // lo-1 or later to the last starting at hi+1 or earlier.
        let start = self.ranges.partition_point(|r| r.1.saturating_add(1) < lo);
        let end = self.ranges.partition_point(|r| r.0 <= hi.saturating_add(1));
        if start == end {
            self.ranges.insert(start, (lo, hi));
        } else {
            let merged = (lo.min(self.ranges[start].0), hi.max(self.ranges[end - 1].1));
            self.ranges.splice(start..end, [merged]);
        }
        let mut forgotten = 0;
        while self.ranges.len() > MAX_RANGES {
            let (a, b) = (self.ranges[0], self.ranges[1]);
            forgotten += b.0 - a.1 - 1;
            self.ranges.splice(0..2, [(a.0, b.1)]);
        }
        forgotten
    }

    /// Members in `1..=hi`.
    pub fn count_upto(&self, hi: u64) -> u64 {
        self.ranges.iter().take_while(|r| r.0 <= hi).map(|r| r.1.min(hi) - r.0 + 1).sum()
    }

    /// The union of two sets.
    pub fn union(&self, other: &RangeSet) -> RangeSet {
        let mut out = self.clone();
        for &(lo, hi) in &other.ranges {
            out.insert_range_unbounded(lo, hi);
        }
        out
    }

    fn insert_range_unbounded(&mut self, lo: u64, hi: u64) {
        let start = self.ranges.partition_point(|r| r.1.saturating_add(1) < lo);
        let end = self.ranges.partition_point(|r| r.0 <= hi.saturating_add(1));
        if start == end {
            self.ranges.insert(start, (lo, hi));
        } else {
            let merged = (lo.min(self.ranges[start].0), hi.max(self.ranges[end - 1].1));
            self.ranges.splice(start..end, [merged]);
        }
    }

    /// The ranges of `1..=hi` that are not members, lowest first.
    pub fn gaps_upto(&self, hi: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut next = 1u64;
        let mut it = self.ranges.iter();
        let mut done = hi == 0;
        std::iter::from_fn(move || loop {
            if done {
                return None;
            }
            match it.next() {
                Some(&(lo, rhi)) => {
                    let gap = (lo > next).then(|| (next, (lo - 1).min(hi)));
                    if lo > hi {
                        done = true;
                    }
                    next = next.max(rhi.saturating_add(1));
                    if next > hi {
                        done = true;
                    }
                    if let Some(g) = gap.filter(|g| g.0 <= g.1) {
                        return Some(g);
                    }
                }
                None => {
                    done = true;
                    return (next <= hi).then_some((next, hi));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seqs: &[u64]) -> RangeSet {
        let mut s = RangeSet::new();
        for &q in seqs {
            s.insert(q);
        }
        s
    }

    #[test]
    fn in_order_is_one_range_and_gaps_close() {
        let mut s = set(&[1, 2, 3, 4, 5]);
        assert_eq!(s.ranges(), &[(1, 5)]);
        s.insert(8);
        s.insert(7);
        s.insert(7);
        assert_eq!(s.ranges(), &[(1, 5), (7, 8)]);
        s.insert(6);
        assert_eq!(s.ranges(), &[(1, 8)]);
        assert_eq!(s.count_upto(100), 8);
        assert_eq!(s.count_upto(3), 3);
        assert_eq!(s.count_upto(0), 0);
    }

    #[test]
    fn out_of_order_and_ranges_merge() {
        let mut s = set(&[10, 3, 7, 1, 2]);
        assert_eq!(s.ranges(), &[(1, 3), (7, 7), (10, 10)]);
        s.insert_range(4, 9);
        assert_eq!(s.ranges(), &[(1, 10)]);
        s.insert_range(20, 25);
        s.insert_range(12, 21);
        assert_eq!(s.ranges(), &[(1, 10), (12, 25)]);
        assert!(s.contains(12) && !s.contains(11) && s.contains(25) && !s.contains(26));
    }

    #[test]
    fn gaps_up_to_a_high_water() {
        let s = set(&[2, 3, 6, 9, 10]);
        assert_eq!(s.gaps_upto(12).collect::<Vec<_>>(), vec![(1, 1), (4, 5), (7, 8), (11, 12)]);
        assert_eq!(s.gaps_upto(7).collect::<Vec<_>>(), vec![(1, 1), (4, 5), (7, 7)]);
        assert_eq!(s.gaps_upto(3).collect::<Vec<_>>(), vec![(1, 1)]);
        assert_eq!(s.gaps_upto(0).count(), 0);
        assert_eq!(RangeSet::new().gaps_upto(3).collect::<Vec<_>>(), vec![(1, 3)]);
        assert_eq!(set(&[1, 2, 3]).gaps_upto(3).count(), 0);
        // Members above the high-water are no gaps and no help.
        assert_eq!(set(&[5]).gaps_upto(3).collect::<Vec<_>>(), vec![(1, 3)]);
    }

    #[test]
    fn union_and_bounded_memory() {
        let a = set(&[1, 2, 5]);
        let b = set(&[3, 9]);
        assert_eq!(a.union(&b).ranges(), &[(1, 3), (5, 5), (9, 9)]);
        let mut s = RangeSet::new();
        let mut forgotten = 0;
        for i in 0..(MAX_RANGES as u64 + 10) {
            forgotten += s.insert_range(i * 2 + 1, i * 2 + 1);
        }
        assert_eq!(s.ranges().len(), MAX_RANGES);
        assert_eq!(forgotten, 10);
    }
}
