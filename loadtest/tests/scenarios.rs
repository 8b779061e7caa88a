//! `flotilla-loadtest run --scenario S --quick` (what CI runs): each quick
//! scenario starts nats-server, the shipper and the agent, drives its load
//! and faults, and its report, read back from the Parquet archive, shows
//! every line exactly once. Correctness only: no speed is asserted.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-loadtest");

/// One scenario at a time: they share two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn quick(scenario: &str) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let siblings = Path::new(BIN).parent().unwrap();
    for b in ["flotilla-shipper", "flotilla-agent"] {
        assert!(siblings.join(b).is_file(), "{b} not built next to flotilla-loadtest: run `cargo test --workspace`");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(scenario);
    let started = Instant::now();
    let run = Command::new(BIN).args(["run", "--scenario", scenario, "--quick", "--out"]).arg(&out).output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let report = std::fs::read_to_string(out.join("report.json"))
        .unwrap_or_else(|e| panic!("{scenario}: no report.json ({e}); status {}; stderr:\n{stderr}", run.status));
    let r: serde_json::Value = serde_json::from_str(&report).unwrap();
    eprintln!(
        "{scenario} --quick: {:.0} s, sent {}, archived {}, lost {}, duplicated {}",
        took.as_secs_f64(),
        r["events_sent"],
        r["events_archived"],
        r["lost"],
        r["duplicated"]
    );
    let keep = |what: &str| {
        // Keep the evidence where a developer can look at it.
        let kept = std::env::temp_dir().join(format!("flotilla-scenario-{scenario}"));
        let _ = std::fs::remove_dir_all(&kept);
        let _ = Command::new("cp").arg("-r").arg(&out).arg(&kept).status();
        format!(
            "{scenario}: {what}; run kept in {}; stderr:\n{stderr}\nreport.md:\n{}",
            kept.display(),
            std::fs::read_to_string(out.join("report.md")).unwrap_or_default()
        )
    };
    assert_eq!(r["scenario"], scenario);
    assert_eq!(r["quick"], true);
    let sent = r["events_sent"].as_u64().unwrap();
    assert!(sent > 0, "{}", keep("nothing was sent"));
    assert_eq!(r["lost"], 0, "{}", keep("lines lost"));
    assert_eq!(r["duplicated"], 0, "{}", keep("lines duplicated"));
    assert_eq!(r["verdict"]["unexpected"], 0, "{}", keep("rows the load never wrote"));
    assert_eq!(r["events_archived"].as_u64(), Some(sent), "{}", keep("archived != sent"));
    assert_eq!(r["unreadable_objects"], serde_json::json!([]), "{}", keep("unreadable objects"));
    assert!(run.status.success(), "{}", keep(&format!("exit status {}", run.status)));
    for f in ["report.json", "report.md", "throughput.svg", "latency.svg"] {
        assert!(out.join(f).is_file(), "{scenario}: {f} missing");
    }
    for key in ["throughput_eps", "baseline_eps", "ratio"] {
        assert!(r[key].is_number(), "{scenario}: {key}");
    }
    for key in ["p50", "p99", "p999"] {
        assert!(r["latency_ms"][key].is_number(), "{scenario}: latency_ms.{key}");
    }
    for p in ["agent", "shipper", "nats-server"] {
        assert!(r["processes"][p]["cpu_s"].is_number() && r["processes"][p]["max_rss_mib"].is_number(), "{p}");
    }
    assert!(r["machine"]["cores"].as_u64().unwrap_or(0) > 0);
    if scenario == "idle" {
        for p in ["agent", "shipper", "nats-server"] {
            assert!(r["idle"][p]["cpu_ms_per_s"].is_number() && r["idle"][p]["rss_mib"].is_number(), "idle {p}");
        }
    }
}

#[test]
fn steady_quick_archives_every_line_once() {
    quick("steady");
}

#[test]
fn shipper_crash_quick_archives_every_line_once() {
    quick("shipper-crash");
}

#[test]
fn idle_quick_archives_its_lines_and_measures_the_daemons_at_rest() {
    quick("idle");
}

#[test]
fn agent_crash_quick_archives_every_line_once() {
    quick("agent-crash");
}

#[test]
fn unknown_scenarios_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run =
        Command::new(BIN).args(["run", "--scenario", "no-such-scenario", "--out"]).arg(dir.path()).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("no scenario no-such-scenario") && stderr.contains("| `steady` |"), "{stderr}");
}
