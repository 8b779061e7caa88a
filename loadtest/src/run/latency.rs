//! From the archive read back and the live tails' arrivals to per-second
//! series and latency percentiles.

use std::collections::BTreeMap;

use super::report::{Latency, Percentiles, Series};
use super::tail::Tail;
use super::verify::Row;

/// Latency samples `(written µs, latency µs)` of lines written during the load.
#[derive(Debug, Default)]
pub struct Samples {
    pub archive: Vec<(i64, i64)>,
    /// By tail name.
    pub tails: BTreeMap<String, Vec<(i64, i64)>>,
}

/// The run's per-second series (from `t0_us`), its latencies (archive and
/// the `main` tail) and the samples by tail. Lines written after
/// `load_end_us` (a capacity backlog) count in the series, not in latencies.
pub fn analyse(
    rows: &[Row],
    tails: &BTreeMap<String, Tail>,
    main: &str,
    t0_us: i64,
    load_end_us: i64,
    steady_secs: usize,
    written: Vec<u64>,
) -> (Series, Latency, Samples) {
    let mut series = Series { written, ..Series::default() };
    let sec_of = |us: i64| ((us - t0_us).max(0) / 1_000_000) as usize;
    let mut samples = Samples::default();
    let mut arch_by_sec: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut tail_by_sec: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for r in rows {
        bump(&mut series.archived, sec_of(r.archived_us), 1);
        if r.written_us <= load_end_us {
            let lat = r.archived_us - r.written_us;
            samples.archive.push((r.written_us, lat));
            arch_by_sec.entry(sec_of(r.written_us)).or_default().push(lat);
        }
    }
    for (name, tail) in tails {
        let mut s = Vec::new();
        for &(arrival, lat) in &tail.arrivals {
            if name == main {
                bump(&mut series.live_tail, sec_of(arrival), 1);
            }
            if arrival - lat <= load_end_us {
                s.push((arrival - lat, lat));
                if name == main {
                    tail_by_sec.entry(sec_of(arrival - lat)).or_default().push(lat);
                }
            }
        }
        samples.tails.insert(name.clone(), s);
    }
    let secs = series.written.len().max(series.archived.len()).max(series.live_tail.len());
    for v in [&mut series.written, &mut series.archived, &mut series.live_tail] {
        v.resize(secs, 0);
    }
    let per_sec = |m: &mut BTreeMap<usize, Vec<i64>>, n: usize| -> (Vec<Option<f64>>, Vec<Option<f64>>) {
        (0..n)
            .map(|s| match m.get_mut(&s) {
                Some(v) => {
                    let p = Percentiles::of(v);
                    (Some(p.p50), Some(p.p99))
                }
                None => (None, None),
            })
            .unzip()
    };
    (series.archive_p50_ms, series.archive_p99_ms) = per_sec(&mut arch_by_sec, steady_secs);
    (series.tail_p50_ms, series.tail_p99_ms) = per_sec(&mut tail_by_sec, steady_secs);
    let lat = |v: &[(i64, i64)]| Percentiles::of(&mut v.iter().map(|s| s.1).collect::<Vec<_>>());
    let latency = Latency {
        archive: lat(&samples.archive),
        live_tail: samples.tails.get(main).map(|s| lat(s)).unwrap_or_default(),
    };
    (series, latency, samples)
}

pub fn bump(v: &mut Vec<u64>, i: usize, n: u64) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += n;
}
