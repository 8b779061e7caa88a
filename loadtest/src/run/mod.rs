//! `flotilla-loadtest run`: scenarios that start a whole stack, drive load,
//! inject faults and prove from the archive that nothing was lost or doubled.
//!
//! - [`scenarios`]: the scenario table and each one's load (full, `--quick`).
//! - [`orchestrate`]: one run from the first process to the report.
//! - [`stack`]: the daemons (start, `kill -9`, restart, SIGTERM) and their
//!   CPU and memory from `/proc`.
//! - [`load`]: lines with a unique id and their write time; rotation.
//! - [`faults`]: when faults happen and what they do.
//! - [`tail`]: a live-tail subscriber timing arrivals.
//! - [`verify`]: the archive read back with the `parquet` crate; loss and
//!   duplicates counted by line id.
//! - [`burst`], [`outage`] (with [`forward`]), [`cluster`], [`tenants`]:
//!   what the `burst`, `object-store-outage`, `cluster-node-loss`,
//!   `slow-subscriber` and `noisy-tenant` scenarios add to the stack.
//! - [`latency`], [`phases`]: latency percentiles, overall and by phase.
//! - [`storm`]: `reconnect-storm`, simulated agents only (no pipeline):
//!   control messages over fleet size after a nats-server restart.
//! - [`report`], [`charts`], [`progress`]: what a run leaves behind and shows.
//! - [`http`]: a minimal HTTP client for loopback requests.

pub mod burst;
pub mod charts;
pub mod cluster;
pub mod faults;
pub mod forward;
pub mod http;
pub mod latency;
pub mod load;
pub mod orchestrate;
pub mod outage;
pub mod phases;
pub mod progress;
pub mod report;
pub mod scenarios;
pub mod stack;
pub mod storm;
pub mod tail;
pub mod tenants;
pub mod verify;

use std::path::Path;
use std::time::Duration;

use crate::bench::BenchError;
pub use orchestrate::RunOptions;
use report::Report;

/// Run one scenario and write `report.json`, `report.md` and the charts to
/// `opts.out`.
pub async fn run_one(opts: &RunOptions) -> Result<Report, BenchError> {
    if storm::handles(opts.scenario.name) {
        // Simulated agents and nothing else: its own report and charts.
        return storm::run(opts).await;
    }
    let report = orchestrate::run(opts).await?;
    report.save(&opts.out)?;
    Ok(report)
}

/// Every implemented scenario, each in `<out>/<name>`, then
/// `<out>/summary.md` and `<out>/summary.json`. Returns whether all passed.
pub async fn run_all(out: &Path, quick: bool, duration: Option<Duration>, command: &str) -> Result<bool, BenchError> {
    std::fs::create_dir_all(out).map_err(|e| BenchError::io(out, e))?;
    let mut names = Vec::new();
    let mut results = Vec::new();
    for sc in scenarios::implemented() {
        let opts = RunOptions {
            scenario: sc,
            quick,
            duration,
            out: out.join(sc.name),
            command: format!("{command}  # scenario {}", sc.name),
        };
        let r = run_one(&opts).await.map_err(|e| e.to_string());
        match &r {
            Ok(rep) => println!("{}: {}", sc.name, if rep.ok { "pass" } else { "FAIL" }),
            Err(e) => println!("{}: error: {e}", sc.name),
        }
        names.push(sc.name);
        results.push(r);
    }
    let all_ok = results.iter().all(|r| r.as_ref().is_ok_and(|r| r.ok));
    let mut md = format!(
        "# flotilla-loadtest run --all{}\n\n`{command}`\n\n{}",
        if quick { " --quick" } else { "" },
        report::summary(&results, &names)
    );
    md += "\nScenarios:\n\n";
    md += &scenarios::table();
    if let Some(Ok(r)) = results.iter().find(|r| r.is_ok()) {
        let m = &r.machine;
        md += &format!("\nMachine: {} cores ({}), {:.1} GiB, Linux {}.\n", m.cores, m.cpu, m.memory_gib, m.kernel);
    }
    let path = out.join("summary.md");
    std::fs::write(&path, md).map_err(|e| BenchError::io(&path, e))?;
    let json: Vec<serde_json::Value> = names
        .iter()
        .zip(&results)
        .map(|(n, r)| match r {
            Ok(r) => serde_json::json!({"scenario": n, "ok": r.ok, "events_sent": r.events_sent,
                "events_archived": r.events_archived, "lost": r.lost, "duplicated": r.duplicated,
                "throughput_eps": r.throughput_eps, "baseline_eps": r.baseline_eps, "ratio": r.ratio,
                "latency_ms": r.latency_ms}),
            Err(e) => serde_json::json!({"scenario": n, "ok": false, "error": e}),
        })
        .collect();
    let path = out.join("summary.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| BenchError::Failed(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| BenchError::io(&path, e))?;
    Ok(all_ok)
}
