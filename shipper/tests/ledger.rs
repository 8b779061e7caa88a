//! The completeness ledger against a real nats-server: events published the
//! way the agent publishes them (its msg-id format, `Flotilla-Seq`,
//! `Flotilla-Dropped`), heartbeats on `flotilla.agent.<host>.status`, a
//! `file` sink; `flotilla_sink_missing_events` and `flotilla-shipper audit`
//! report the gaps, late events close them, and a restarted shipper keeps
//! its books.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use tokio::time::Instant;

use flotilla_core::event::LogEvent;
use flotilla_core::origin;
use flotilla_core::{HDR_MSG_ID, HDR_SEQ};
use flotilla_shipper::Config;
use flotilla_testsupport::NatsServer;

mod common;

use common::{wait_for, Shipper};

fn config_text(nats_url: &str, out: &Path) -> String {
    format!(
        r#"http_addr = "127.0.0.1:0"
[nats]
url = "{nats_url}"
[ledger]
save_interval = "1s"
[[sinks]]
name = "copy"
type = "file"
url = "file://{}"
batch_max_events = 50
batch_max_age = "100ms"
# Sees none of the events below: must not call them missing.
[[sinks]]
name = "others"
type = "file"
url = "file://{}"
subjects = ["logs.other.>"]
batch_max_age = "100ms"
"#,
        out.join("copy.ndjson").display(),
        out.join("others.ndjson").display()
    )
}

fn parse(text: &str) -> Config {
    match flotilla_core::config::parse::<Config>(text, |_| None) {
        Ok(c) => c,
        Err(p) => panic!("test config invalid: {p:?}"),
    }
}

/// `flotilla_sink_missing_events{sink,host,source}` as `/metrics` renders it.
fn missing(shipper: &Shipper, sink: &str, host: &str, source: &str) -> Option<i64> {
    let series = format!("flotilla_sink_missing_events{{sink=\"{sink}\",host=\"{host}\",source=\"{source}\"}} ");
    shipper.registry.render().lines().find_map(|l| l.strip_prefix(&series).and_then(|v| v.parse().ok()))
}

/// One event as the agent publishes it.
enum From<'a> {
    File { nonce: &'a str },
    Queue { source: &'a str },
}

async fn publish(js: &jetstream::Context, host: &str, app: &str, from: &From<'_>, seq: u64, dropped: u64) {
    let subject = format!("logs.acme.{app}.iad.{host}");
    let ev = LogEvent {
        ts: Utc::now(),
        org: "acme".into(),
        app: app.into(),
        region: "iad".into(),
        host: host.into(),
        source: "test".into(),
        level: "info".into(),
        message: format!("{host} {app} {seq}"),
        fields: Default::default(),
        seq,
    };
    let id = match from {
        From::File { nonce } => origin::file_msg_id(host, nonce, seq * 100),
        From::Queue { source } => origin::queue_msg_id(host, source, seq),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HDR_MSG_ID, id.as_str());
    headers.insert(HDR_SEQ, seq.to_string().as_str());
    if dropped > 0 {
        headers.insert(origin::HDR_DROPPED, dropped.to_string().as_str());
    }
    let ack = js.publish_with_headers(subject, headers, ev.to_json().into()).await.expect("publish");
    ack.await.expect("publish ack");
}

/// The agents' heartbeats, sent every 300 ms (as agent/src/status.rs
/// shapes them) until dropped.
struct Beats {
    syslog_high_water: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Beats {
    fn start(client: async_nats::Client) -> Beats {
        let hw = Arc::new(Mutex::new(12));
        let shared = hw.clone();
        let task = tokio::spawn(async move {
            loop {
                let syslog = *shared.lock().unwrap();
                for (host, body) in [("h1", h1_status()), ("h2", h2_status(syslog))] {
                    let _ = client.publish(format!("flotilla.agent.{host}.status"), body.into()).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Beats { syslog_high_water: hw, task }
    }

    fn set_syslog(&self, hw: u64) {
        *self.syslog_high_water.lock().unwrap() = hw;
    }
}

impl Drop for Beats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn h1_status() -> Vec<u8> {
    serde_json::json!({
        "host": "h1", "region": "iad", "ts": Utc::now(), "version": "test",
        "sources": [{
            "name": "app", "kind": "file", "read": 10, "acked": 10, "high_water": 0,
            "dropped_rate_limit": 0, "dropped_queue_full": 0,
            "files": {"1:1": {"path": "/var/log/app.log", "nonce": "00aa", "acked_seq": 10,
                              "published_seq": 10, "subject": "logs.acme.web.iad.h1"}}
        }]
    })
    .to_string()
    .into_bytes()
}

fn h2_status(syslog: u64) -> Vec<u8> {
    serde_json::json!({
        "host": "h2", "region": "iad", "ts": Utc::now(), "version": "test",
        "sources": [
            {"name": "syslog", "kind": "syslog", "read": syslog, "acked": syslog, "high_water": syslog,
             "subject": "logs.acme.sys.iad.h2", "dropped_rate_limit": 0, "dropped_queue_full": 0},
            {"name": "app", "kind": "file", "read": 5, "acked": 3, "high_water": 0,
             "dropped_rate_limit": 2, "dropped_queue_full": 0,
             "files": {"1:2": {"path": "/var/log/app.log", "nonce": "00bb", "acked_seq": 5,
                               "published_seq": 5, "subject": "logs.acme.web.iad.h2"}}}
        ]
    })
    .to_string()
    .into_bytes()
}

/// `flotilla-shipper audit -c FILE [args]`: exit code and stdout.
async fn audit(config: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-shipper"));
    cmd.arg("audit").arg("-c").arg(config).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run flotilla-shipper audit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() != Some(2), "audit failed: {stderr}");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_counted_closed_by_late_events_and_kept_across_restarts() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text(&nats.url(), dir.path());
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, &text).unwrap();

    let shipper = Shipper::start(parse(&text));
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    wait_for("stream LOGS", Duration::from_secs(30), || async { js.get_stream("LOGS").await.is_ok() }).await;

    // h1: a file, complete. h2: a syslog queue missing 4, 5, 8 (and 11, 12
    // by its heartbeat), and a file whose 3 and 4 the agent dropped.
    let (file_a, file_b, syslog) =
        (From::File { nonce: "00aa" }, From::File { nonce: "00bb" }, From::Queue { source: "syslog" });
    for seq in 1..=10 {
        publish(&js, "h1", "web", &file_a, seq, 0).await;
    }
    for seq in [1, 2, 3, 6, 7, 9, 10] {
        publish(&js, "h2", "sys", &syslog, seq, 0).await;
    }
    for (seq, dropped) in [(1, 0), (2, 0), (5, 2)] {
        publish(&js, "h2", "web", &file_b, seq, dropped).await;
    }
    let beats = Beats::start(client.clone());

    wait_for("5 missing syslog events of h2", Duration::from_secs(30), || async {
        missing(&shipper, "copy", "h2", "syslog") == Some(5)
    })
    .await;
    assert_eq!(missing(&shipper, "copy", "h1", "app"), Some(0));
    assert_eq!(missing(&shipper, "copy", "h2", "app"), Some(0), "events the agent dropped are not missing");
    assert_eq!(missing(&shipper, "others", "h2", "syslog"), None, "a sink that cannot see a source tracks none of it");
    let render = shipper.registry.render();
    assert!(!render.contains("flotilla_sink_missing_events{sink=\"others\""), "{render}");

    // The books are stored every second; audit reads them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let last = audit(&config_path, &[]).await;
        if last.0 == 1 && last.1.contains("4-5, 8, 11-12") {
            break last;
        }
        assert!(Instant::now() < deadline, "audit did not report the gaps: {last:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (code, table) = last;
    assert_eq!(code, 1);
    let row = table.lines().find(|l| l.contains("h2") && l.contains("syslog")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["copy", "h2", "syslog", "syslog", "12", "5", "4-5,", "8,", "11-12"]
    );
    assert!(!table.contains("h1"), "h1 is complete:\n{table}");
    assert!(table.ends_with("5 missing events in 1 of 3 streams (2 hosts, 1 sinks checked)\n"), "{table}");
    let (code, json) = audit(&config_path, &["--json", "--sink", "copy"]).await;
    assert_eq!((code, json.lines().count()), (1, 3), "{json}");
    let syslog_line: serde_json::Value =
        serde_json::from_str(json.lines().find(|l| l.contains("\"syslog\"")).unwrap()).unwrap();
    assert_eq!(syslog_line["missing"], 5);
    assert_eq!(syslog_line["gaps"], serde_json::json!([[4, 5], [8, 8], [11, 12]]));
    assert_eq!(audit(&config_path, &["--sink", "others"]).await.0, 0);

    // Late delivery: not a loss.
    for seq in [4, 5, 8, 11, 12] {
        publish(&js, "h2", "sys", &syslog, seq, 0).await;
    }
    wait_for("the gaps to close", Duration::from_secs(30), || async {
        missing(&shipper, "copy", "h2", "syslog") == Some(0)
    })
    .await;
    wait_for("audit to report nothing missing", Duration::from_secs(20), || {
        let path = config_path.clone();
        async move { audit(&path, &[]).await.0 == 0 }
    })
    .await;
    shipper.stop().await;

    // A new shipper starts from the stored books: nothing before is missing.
    let shipper = Shipper::start(parse(&text));
    wait_for("the stored books to load", Duration::from_secs(30), || async {
        missing(&shipper, "copy", "h2", "syslog").is_some()
    })
    .await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for (host, source) in [("h1", "app"), ("h2", "syslog"), ("h2", "app")] {
            assert_eq!(missing(&shipper, "copy", host, source), Some(0), "{host}/{source} after the restart");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and it keeps counting: 13 never comes.
    publish(&js, "h2", "sys", &syslog, 14, 0).await;
    beats.set_syslog(14);
    wait_for("the new gap", Duration::from_secs(30), || async { missing(&shipper, "copy", "h2", "syslog") == Some(1) })
        .await;
    shipper.stop().await;
}
