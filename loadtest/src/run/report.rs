//! `report.json`, `report.md` and `summary.md`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::phases::{self, PhaseStats};
use super::scenarios::Load;
use super::stack::ProcStats;
use super::verify::Verdict;
use crate::bench::BenchError;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

impl Percentiles {
    /// Of latencies in µs, reported in ms.
    pub fn of(us: &mut [i64]) -> Percentiles {
        if us.is_empty() {
            return Percentiles::default();
        }
        us.sort_unstable();
        let at = |q: f64| {
            let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
            us[i] as f64 / 1000.0
        };
        Percentiles { p50: at(0.5), p99: at(0.99), p999: at(0.999), max: at(1.0), samples: us.len() as u64 }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Write of the line → the Parquet object holding it complete (its mtime).
    pub archive: Percentiles,
    /// Write of the line → arrival at a core-NATS subscriber on `logs.>`.
    pub live_tail: Percentiles,
}

/// Per-second series over the run (second 0 = start of the load).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    pub written: Vec<u64>,
    pub live_tail: Vec<u64>,
    pub archived: Vec<u64>,
    /// By second of writing: p50 and p99 (ms), `null` for seconds without lines.
    pub archive_p50_ms: Vec<Option<f64>>,
    pub archive_p99_ms: Vec<Option<f64>>,
    pub tail_p50_ms: Vec<Option<f64>>,
    pub tail_p99_ms: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub cpu: String,
}

impl Machine {
    pub fn read() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0.0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| Some(l.strip_prefix("model name")?.split_once(':')?.1.trim().to_string()))
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            memory_gib: mem_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            cpu,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Faults {
    pub injected: u32,
    /// What each did, in order.
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub quick: bool,
    pub started: String,
    pub command: String,
    pub load: Load,
    pub events_sent: u64,
    /// Distinct lines of the load found in the archive.
    pub events_archived: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub verdict: Verdict,
    /// Objects read back, and the ones that could not be read.
    pub archive_objects: usize,
    pub unreadable_objects: Vec<String>,
    /// How `throughput_eps` was measured.
    pub throughput_measure: String,
    pub throughput_eps: f64,
    /// The bare async-nats JetStream publisher of the same lines, same run.
    pub baseline_eps: f64,
    pub ratio: f64,
    /// `latency_ms.p50` etc.: write → archive (see `latency`).
    pub latency_ms: Percentiles,
    pub latency: Latency,
    pub faults: Faults,
    pub processes: BTreeMap<String, ProcStats>,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub wall_s: f64,
    pub series: Series,
    pub ok: bool,
    /// `idle` only: each daemon over the quiet window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<BTreeMap<String, IdleUsage>>,
    /// Latency by phase of the load (bursts, a stalled client, a flood).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseStats>,
    /// Figures only one scenario has (drops, drain times, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdleUsage {
    pub secs: f64,
    pub cpu_ms_per_s: f64,
    /// VmRSS at the end of the window.
    pub rss_mib: f64,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# flotilla-loadtest run {}{} — {}\n\n`{}`\n\n**{}**: {} lines sent, {} archived, {} lost, {} duplicated ({} archive objects{}).\n\n",
            self.scenario,
            if self.quick { " --quick" } else { "" },
            self.started,
            self.command,
            if self.ok { "PASS" } else { "FAIL" },
            self.events_sent,
            self.events_archived,
            self.lost,
            self.duplicated,
            self.archive_objects,
            if self.unreadable_objects.is_empty() {
                String::new()
            } else {
                format!(", {} unreadable", self.unreadable_objects.len())
            },
        );
        let l = &self.load;
        s += &format!(
            "Load: {} files, {} lines/s for {:.0} s{}; faults: {}.\n\n",
            l.files,
            l.rate,
            l.duration.as_secs_f64(),
            if l.capacity_lines > 0 { format!(", then {} lines at once", l.capacity_lines) } else { String::new() },
            self.faults.injected
        );
        s += &format!(
            "| | value |\n|---|---:|\n| throughput (lines/s) | {:.0} |\n| baseline: bare JetStream publisher (lines/s) | {:.0} |\n| ratio | {:.3} |\n",
            self.throughput_eps, self.baseline_eps, self.ratio
        );
        s += &format!("\nThroughput: {}.\n\n", self.throughput_measure);
        s += "| latency (ms) | p50 | p99 | p99.9 | max | samples |\n|---|---:|---:|---:|---:|---:|\n";
        for (what, p) in [
            ("write → archive object complete", &self.latency.archive),
            ("write → live tail (core NATS `logs.>`)", &self.latency.live_tail),
        ] {
            s += &format!("| {what} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n", p.p50, p.p99, p.p999, p.max, p.samples);
        }
        if !self.phases.is_empty() {
            s += "\nLatency by phase of the load (each line counted in the phase it was written in):\n\n";
            s += &phases::markdown(&self.phases);
        }
        if !self.extra.is_empty() {
            s += "\n";
            for (k, v) in &self.extra {
                s += &format!("- {k}: {}\n", serde_json::to_string(v).unwrap_or_default());
            }
        }
        s += "\n| process | CPU s | max RSS MiB | starts |\n|---|---:|---:|---:|\n";
        for (name, p) in &self.processes {
            s += &format!("| {name} | {:.2} | {:.1} | {} |\n", p.cpu_s, p.max_rss_mib, p.starts);
        }
        if let Some(idle) = &self.idle {
            s += "\n| idle daemon | CPU ms/s | RSS MiB | window s |\n|---|---:|---:|---:|\n";
            for (name, u) in idle {
                s += &format!("| {name} | {:.3} | {:.1} | {:.0} |\n", u.cpu_ms_per_s, u.rss_mib, u.secs);
            }
        }
        s += &footer(&self.faults.log, &self.machine, &self.versions, &["throughput.svg", "latency.svg"]);
        s
    }

    pub fn save(&self, out: &Path) -> Result<(), BenchError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| BenchError::Failed(e.to_string()))?;
        let (jp, mp) = (out.join("report.json"), out.join("report.md"));
        std::fs::write(&jp, json + "\n").map_err(|e| BenchError::io(&jp, e))?;
        std::fs::write(&mp, self.markdown()).map_err(|e| BenchError::io(&mp, e))
    }
}

/// The one-row-per-scenario table of `run --all`.
pub fn summary(reports: &[Result<Report, String>], names: &[&str]) -> String {
    let mut s = String::from(
        "| scenario | result | sent | archived | lost | dup | lines/s | baseline | ratio | archive p50 / p99 ms | tail p50 / p99 ms |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, r) in names.iter().zip(reports) {
        match r {
            Ok(r) => {
                s += &format!(
                    "| `{}` | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} / {:.0} | {:.1} / {:.1} |\n",
                    r.scenario,
                    if r.ok { "pass" } else { "**FAIL**" },
                    r.events_sent,
                    r.events_archived,
                    r.lost,
                    r.duplicated,
                    r.throughput_eps,
                    r.baseline_eps,
                    r.ratio,
                    r.latency.archive.p50,
                    r.latency.archive.p99,
                    r.latency.live_tail.p50,
                    r.latency.live_tail.p99,
                )
            }
            Err(e) => s += &format!("| `{name}` | **error**: {} | | | | | | | | | |\n", e.replace('|', "/")),
        }
    }
    s
}

/// The end of a scenario's report.md: faults (if any), machine, versions,
/// links to the charts.
pub fn footer(faults: &[String], m: &Machine, versions: &BTreeMap<String, String>, charts: &[&str]) -> String {
    let mut s = String::new();
    if !faults.is_empty() {
        s += "\nFaults:\n\n";
        for f in faults {
            s += &format!("- {f}\n");
        }
    }
    s += &format!(
        "\nMachine: {} cores ({}), {:.1} GiB, Linux {}.\n\nVersions:\n\n",
        m.cores, m.cpu, m.memory_gib, m.kernel
    );
    for (k, v) in versions {
        s += &format!("- {k}: {v}\n");
    }
    let links: Vec<String> = charts.iter().map(|c| format!("[{c}]({c})")).collect();
    s += &format!("\nCharts: {}.\n", links.join(", "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        let mut v: Vec<i64> = (1..=1000).map(|x| x * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p99, p.p999, p.max, p.samples), (500.0, 990.0, 999.0, 1000.0, 1000));
        assert_eq!(Percentiles::of(&mut []).samples, 0);
    }
}
