//! The `burst` scenario's load: the base rate all along, and every
//! [`PERIOD`] a burst of [`FACTOR`] times the base rate (on top of it) for
//! [`LENGTH`], the first one [`PERIOD`] / 2 into the load.

use std::collections::BTreeMap;
use std::time::Duration;

use super::report::Series;
use super::scenarios::Load;

pub const FACTOR: u64 = 10;
pub const PERIOD: Duration = Duration::from_secs(10);
pub const LENGTH: Duration = Duration::from_secs(2);

/// Seconds of bursting in `[0, t)`.
fn burst_secs_before(t: f64) -> f64 {
    let (period, len) = (PERIOD.as_secs_f64(), LENGTH.as_secs_f64());
    let first = period / 2.0;
    if t <= first {
        return 0.0;
    }
    let since = t - first;
    let whole = (since / period).floor();
    whole * len + (since - whole * period).min(len)
}

/// Lines due by `t` into the load at a base `rate` (lines/s).
pub fn due(rate: u64, t: Duration) -> u64 {
    let t = t.as_secs_f64();
    (rate as f64 * (t + (FACTOR - 1) as f64 * burst_secs_before(t))) as u64
}

/// The bursts in a load of `duration`: `[from, to)` in seconds.
pub fn windows(duration: Duration) -> Vec<(f64, f64)> {
    let (period, len, end) = (PERIOD.as_secs_f64(), LENGTH.as_secs_f64(), duration.as_secs_f64());
    let mut out = Vec::new();
    let mut from = period / 2.0;
    while from < end {
        out.push((from, (from + len).min(end)));
        from += period;
    }
    out
}

/// The gaps between bursts (and before the first, after the last).
pub fn between(duration: Duration) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut at = 0.0;
    for (from, to) in windows(duration) {
        if from > at {
            out.push((at, from));
        }
        at = to;
    }
    if at < duration.as_secs_f64() {
        out.push((at, duration.as_secs_f64()));
    }
    out
}

/// The burst's rate and the busiest second of writing, archiving and tailing.
pub fn extra(load: &Load, series: &Series) -> BTreeMap<String, serde_json::Value> {
    let peak = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    BTreeMap::from([
        ("burst_lines_per_s".into(), (load.rate * FACTOR).into()),
        ("burst_every_s".into(), PERIOD.as_secs().into()),
        ("burst_length_s".into(), LENGTH.as_secs().into()),
        ("peak_written_lines_per_s".into(), peak(&series.written).into()),
        ("peak_archived_lines_per_s".into(), peak(&series.archived).into()),
        ("peak_live_tail_lines_per_s".into(), peak(&series.live_tail).into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn bursts_add_nine_times_the_base_rate_for_two_seconds_every_ten() {
        assert_eq!(due(100, s(0.0)), 0);
        assert_eq!(due(100, s(5.0)), 500);
        // One second into the first burst: 10x.
        assert_eq!(due(100, s(6.0)), 1_500);
        assert_eq!(due(100, s(7.0)), 2_500);
        assert_eq!(due(100, s(10.0)), 2_800);
        assert_eq!(due(100, s(17.0)), 2 * 1_800 + 1_700);
        // Never goes backwards.
        let mut last = 0;
        for ms in (0..40_000).step_by(7) {
            let d = due(1_000, Duration::from_millis(ms));
            assert!(d >= last);
            last = d;
        }
    }

    #[test]
    fn windows_and_gaps_cover_the_load() {
        let d = s(30.0);
        assert_eq!(windows(d), vec![(5.0, 7.0), (15.0, 17.0), (25.0, 27.0)]);
        assert_eq!(between(d), vec![(0.0, 5.0), (7.0, 15.0), (17.0, 25.0), (27.0, 30.0)]);
        assert_eq!(windows(s(6.0)), vec![(5.0, 6.0)]);
        assert_eq!(between(s(6.0)), vec![(0.0, 5.0)]);
    }
}
