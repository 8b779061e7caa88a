//! `flotilla-loadtest demo` (what `./scripts/demo` runs) starts the whole
//! stack, prints a working `nats sub` line, lands Parquet, stops cleanly on
//! Ctrl-C, and can be run again on the same directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_testsupport::prometheus::Prometheus;
use flotilla_testsupport::{free_port, python, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-loadtest");

/// The daemons' `/metrics` ports.
struct HttpPorts {
    proxy: u16,
    agent: u16,
    shipper: u16,
}

/// Start the demo and return it with the (user, password) of the printed
/// `nats sub` line and the proxy URL.
fn start(dir: &Path) -> (Child, String, String) {
    let (child, url, password, _) = start_on_ports(dir);
    (child, url, password)
}

/// [`start`], and the daemons' `/metrics` ports.
fn start_on_ports(dir: &Path) -> (Child, String, String, HttpPorts) {
    let siblings = Path::new(BIN).parent().unwrap();
    for b in ["flotilla-proxy", "flotilla-shipper", "flotilla-agent"] {
        assert!(siblings.join(b).is_file(), "{b} not built next to flotilla-loadtest: run `cargo test --workspace`");
    }
    let ports: Vec<String> = (0..6).map(|_| free_port().to_string()).collect();
    let port = |i: usize| ports[i].parse::<u16>().unwrap();
    let http = HttpPorts { proxy: port(3), agent: port(4), shipper: port(5) };
    let mut child = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(dir)
        .args(["--rate", "200"])
        .args(["--nats-port", &ports[0], "--nats-monitor-port", &ports[1], "--proxy-port", &ports[2]])
        .args(["--proxy-http-port", &ports[3], "--agent-http-port", &ports[4], "--shipper-http-port", &ports[5]])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            give_up(child, "demo exited before printing its banner");
        }
        if line.contains("nats sub") && line.contains("--user acme") {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1].to_string();
            let (url, password) = (at("-s"), at("--password"));
            std::thread::spawn(move || for _ in out.lines() {});
            return (child, url, password, http);
        }
    }
    give_up(child, "no nats sub line printed");
}

/// Stop the demo (a failed test must not leave a stack running) and fail.
fn give_up(mut child: Child, why: &str) -> ! {
    let _ = child.kill();
    let _ = child.wait();
    panic!("{why}");
}

fn interrupt_and_wait(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "demo exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("demo did not stop within a minute of Ctrl-C");
}

fn parquet_files(dir: &Path) -> usize {
    fn walk(d: &Path, n: &mut usize) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

#[test]
fn the_demo_runs_prints_a_working_nats_sub_and_stops_cleanly_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, url, password) = start(dir.path());
    let tail = Command::new(python())
        .arg(repo_root().join("loadtest/tests/py/tenant_tail.py"))
        .args(["--url", &url, "--user", "acme", "--password", &password, "--expect", "20", "--idle", "20"])
        .output()
        .unwrap();
    assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
    let summary = String::from_utf8_lossy(&tail.stdout);
    let summary: serde_json::Value = serde_json::from_str(summary.lines().last().unwrap()).unwrap();
    assert!(summary["count"].as_u64().unwrap() >= 20, "{summary}");
    assert_eq!(summary["orgs"], serde_json::json!(["acme"]));

    let archive = dir.path().join("archive");
    let deadline = Instant::now() + Duration::from_secs(60);
    while parquet_files(&archive) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(parquet_files(&archive) > 0, "Parquet landed in {}", archive.display());
    interrupt_and_wait(demo);

    // Again, on the same directory: fresh tokens, same data.
    let before = parquet_files(&archive);
    let (demo, _, password2) = start(dir.path());
    assert_ne!(password, password2, "tokens are minted fresh on every start");
    interrupt_and_wait(demo);
    assert!(parquet_files(&archive) >= before);
}

/// Metric names a dashboard may reference that a healthy demo does not
/// export: a series per sink, host and source appears only once the
/// ledger finds a gap there.
const ONLY_ON_TROUBLE: &[&str] = &["flotilla_sink_missing_events"];

/// A real Prometheus scrapes all three daemons of the running demo: every
/// scrape parses (a target with a malformed exposition is down), the
/// pipeline's counters carry data, and every query of the Grafana
/// dashboard is valid PromQL over metric names the daemons export.
#[test]
fn prometheus_scrapes_every_daemon_and_every_dashboard_query_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, _, _, http) = start_on_ports(dir.path());
    let prometheus = Prometheus::start(&[("proxy", http.proxy), ("agent", http.agent), ("shipper", http.shipper)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let targets = prometheus.targets();
        let up = targets.iter().filter(|(_, health, err)| health == "up" && err.is_empty()).count();
        if up == 3 && prometheus.value("sum(flotilla_shipper_events_committed_total)") > 0.0 {
            break;
        }
        if Instant::now() > deadline {
            give_up(demo, &format!("targets {targets:?}; shipper committed nothing scraped"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(prometheus.value("sum(flotilla_agent_events_acked_total)") > 0.0);
    assert!(prometheus.value("sum(flotilla_proxy_upstream_subscriptions)") >= 0.0);

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("dashboards/flotilla-pipeline.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard's queries: {exprs:?}");
    let names = prometheus.names();
    for expr in &exprs {
        prometheus.query(expr); // panics if Prometheus refuses it
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if name.starts_with("flotilla_") && !ONLY_ON_TROUBLE.contains(&name) {
                assert!(names.iter().any(|n| n == name), "{name} (in `{expr}`) is not exported; scraped: {names:?}");
            }
        }
    }
    // A rate over the last minute has the demo's flow in it.
    let read = prometheus.value("sum(rate(flotilla_agent_events_read_total[1m]))");
    assert!(read > 0.0, "the agent read nothing, as Prometheus saw it");
    interrupt_and_wait(demo);
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                out.push(e.to_string());
            }
            m.values().for_each(|x| collect_exprs(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}
