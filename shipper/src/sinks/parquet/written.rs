//! The stream sequences this run wrote into complete objects, as merged
//! ranges: how a redelivered copy is recognised. Gaps come only from
//! events still in open objects, so the set stays about as small as the
//! unacked limit and shrinks back to one range as objects close.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Written {
    /// start → end (inclusive), non-overlapping, non-adjacent.
    ranges: BTreeMap<u64, u64>,
}

impl Written {
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges.range(..=seq).next_back().is_some_and(|(_, end)| seq <= *end)
    }

    /// Add `seqs` (in any order).
    pub fn extend(&mut self, seqs: &[u64]) {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        let mut run: Option<(u64, u64)> = None;
        for s in sorted {
            run = match run {
                Some((a, b)) if s <= b.saturating_add(1) => Some((a, b.max(s))),
                Some((a, b)) => {
                    self.insert(a, b);
                    Some((s, s))
                }
                None => Some((s, s)),
            };
        }
        if let Some((a, b)) = run {
            self.insert(a, b);
        }
    }

    fn insert(&mut self, mut start: u64, mut end: u64) {
        // Merge with a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e.saturating_add(1) >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Swallow ranges that start inside (or right after) the new one.
        while let Some((&s, &e)) = self.ranges.range(start..).next() {
            if s > end.saturating_add(1) {
                break;
            }
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_objects_merge_into_one_range() {
        let mut w = Written::default();
        let odd: Vec<u64> = (1..=999).step_by(2).collect();
        let even: Vec<u64> = (2..=1000).step_by(2).collect();
        w.extend(&odd);
        assert_eq!(w.ranges(), 500);
        assert!(w.contains(1) && w.contains(999) && !w.contains(2) && !w.contains(1000) && !w.contains(0));
        w.extend(&even);
        assert_eq!(w.ranges(), 1);
        assert!((1..=1000).all(|s| w.contains(s)) && !w.contains(1001));
        w.extend(&[1005, 1003, 1004]);
        assert_eq!(w.ranges(), 2);
        assert!(!w.contains(1002) && w.contains(1004));
        w.extend(&[1002, 1001]);
        assert_eq!(w.ranges(), 1);
        w.extend(&[500, 7]);
        assert_eq!(w.ranges(), 1);
    }
}
