//! Latency by phase: the load's seconds split into named phases (bursts and
//! the gaps between them; before and during a stalled client or a flood),
//! and each latency sample assigned by the second its line was written.

use std::collections::BTreeMap;

use super::report::Percentiles;

/// A named set of `[from, to)` windows, seconds from the start of the load.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub windows: Vec<(f64, f64)>,
}

impl Phase {
    pub fn new(name: &str, windows: Vec<(f64, f64)>) -> Phase {
        Phase { name: name.into(), windows }
    }

    fn holds(&self, sec: f64) -> bool {
        self.windows.iter().any(|&(from, to)| sec >= from && sec < to)
    }
}

/// One phase's latencies (ms) to the archive and to each live tail.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseStats {
    pub name: String,
    /// Seconds of the load in this phase.
    pub secs: f64,
    pub archive: Percentiles,
    /// By tail (e.g. `org acme via proxy`).
    pub live_tail: BTreeMap<String, Percentiles>,
}

/// Samples `(written µs, latency µs)` → per phase percentiles. `t0_us` is
/// the start of the load.
pub fn split(
    phases: &[Phase],
    t0_us: i64,
    archive: &[(i64, i64)],
    tails: &BTreeMap<String, Vec<(i64, i64)>>,
) -> Vec<PhaseStats> {
    let pick = |p: &Phase, samples: &[(i64, i64)]| -> Percentiles {
        let mut v: Vec<i64> =
            samples.iter().filter(|(w, _)| p.holds((w - t0_us) as f64 / 1e6)).map(|&(_, lat)| lat).collect();
        Percentiles::of(&mut v)
    };
    phases
        .iter()
        .map(|p| PhaseStats {
            name: p.name.clone(),
            secs: p.windows.iter().map(|(a, b)| b - a).sum(),
            archive: pick(p, archive),
            live_tail: tails.iter().map(|(name, s)| (name.clone(), pick(p, s))).collect(),
        })
        .collect()
}

/// The phases as a Markdown table: one row per phase and destination.
pub fn markdown(stats: &[PhaseStats]) -> String {
    let mut s = String::from(
        "| phase | s | latency from the write to | p50 ms | p99 ms | p99.9 ms | max ms | samples |\n\
         |---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for p in stats {
        let rows = std::iter::once(("archive object complete".to_string(), &p.archive))
            .chain(p.live_tail.iter().map(|(k, v)| (format!("live tail: {k}"), v)));
        for (what, q) in rows {
            s += &format!(
                "| {} | {:.0} | {what} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
                p.name, p.secs, q.p50, q.p99, q.p999, q.max, q.samples
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_go_to_the_phase_of_their_write_second() {
        let t0 = 1_000_000_000;
        let at = |s: f64, lat_ms: i64| (t0 + (s * 1e6) as i64, lat_ms * 1000);
        let archive = vec![at(0.5, 10), at(5.5, 100), at(6.9, 200), at(7.0, 20), at(12.0, 30)];
        let mut tails = BTreeMap::new();
        tails.insert("t".to_string(), vec![at(5.0, 7), at(1.0, 1)]);
        let phases = [Phase::new("burst", vec![(5.0, 7.0)]), Phase::new("between", vec![(0.0, 5.0), (7.0, 15.0)])];
        let got = split(&phases, t0, &archive, &tails);
        assert_eq!(got[0].name, "burst");
        assert_eq!((got[0].secs, got[0].archive.samples, got[0].archive.max), (2.0, 2, 200.0));
        assert_eq!((got[1].secs, got[1].archive.samples, got[1].archive.max), (13.0, 3, 30.0));
        assert_eq!(got[0].live_tail["t"].max, 7.0);
        assert_eq!(got[1].live_tail["t"].max, 1.0);
        assert!(markdown(&got).contains("| burst | 2 | live tail: t | 7.0 |"));
    }
}
