//! Delivery under trouble: NATS away while syslog keeps coming (the spill
//! queue holds it), a corrupted queue file at start-up, rate limits with a
//! notice, and the status heartbeat.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use common::*;
use flotilla_testsupport::free_port;

fn syslog_source(tcp: u16) -> String {
    format!("[[sources]]\ntype = \"syslog\"\ntcp = \"127.0.0.1:{tcp}\"\norg = \"acme\"\n")
}

async fn send_syslog(port: u16, from: usize, to: usize) {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = Vec::new();
    for i in from..to {
        buf.extend_from_slice(format!("<14>Nov 22 10:00:00 web01 app[1]: message {i}\n").as_bytes());
    }
    conn.write_all(&buf).await.unwrap();
    conn.shutdown().await.unwrap();
}

fn messages(evs: &[(String, flotilla_core::event::LogEvent)]) -> BTreeSet<String> {
    evs.iter().map(|(_, e)| e.message.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_under_load_then_back_loses_nothing() {
    let (mut nats, js) = nats_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let tcp = free_port();
    let agent = Agent::start(config(dir.path(), &nats.url(), &syslog_source(tcp)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_syslog(tcp, 0, 500).await;
    wait_for(&js, 500).await;

    nats.stop();
    // 3,000 messages while NATS is away: the agent keeps accepting them.
    tokio::time::timeout(Duration::from_secs(20), send_syslog(tcp, 500, 3500))
        .await
        .expect("syslog accepted while NATS is down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart();
    let js = js_at(&nats.url()).await;
    wait_for(&js, 3500).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await;
    let got = events(&js).await;
    assert_eq!(got.len(), 3500, "exactly once");
    let want: BTreeSet<String> = (0..3500).map(|i| format!("message {i}")).collect();
    assert_eq!(messages(&got), want);
    let seqs: BTreeSet<u64> = got.iter().map(|(_, e)| e.seq).collect();
    assert_eq!(seqs.len(), 3500, "queue sequences are unique");
}

async fn js_at(url: &str) -> async_nats::jetstream::Context {
    common::js(url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_queue_is_skipped_counted_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = free_port();
    // No NATS at all: everything stays in the queue.
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let agent = Agent::start(config(dir.path(), &nowhere, &syslog_source(tcp)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_syslog(tcp, 0, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await;

    // Flip bytes in the middle of the queue's segment.
    let qdir = dir.path().join("queue/syslog-0");
    let seg = std::fs::read_dir(&qdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xff;
    }
    std::fs::write(&seg, &bytes).unwrap();

    let (nats, js) = nats_with_stream().await;
    let http = free_port();
    let cfg: flotilla_agent::Config = flotilla_core::config::parse(
        &config_text(dir.path(), &nats.url(), &format!("127.0.0.1:{http}"), &syslog_source(tcp)),
        |_| None,
    )
    .unwrap();
    let agent = Agent::start(cfg);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = http_get(http, "/metrics").await;
    let corrupted = metric(&metrics, "flotilla_agent_queue_corrupted_records_total{source=\"syslog-0\"}");
    assert!(corrupted >= 1, "{metrics}");
    wait_for(&js, 100 - corrupted).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.stop().await;
    let got = events(&js).await;
    assert_eq!(got.len() as u64, 100 - corrupted, "every intact record, once");
}

pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse::<f64>().unwrap_or(0.0) as u64))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_events_are_dropped_counted_and_noticed() {
    let (nats, js) = nats_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let lines: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(logs.join("a.log"), lines).unwrap();
    let http = free_port();
    let sources = format!(
        "[[sources]]\ntype = \"file\"\ninclude = [\"{}/*.log\"]\norg = \"acme\"\napp = \"noisy\"\nrate_limit = {{ events_per_sec = 50, burst = 100 }}\n",
        logs.display()
    );
    let cfg: flotilla_agent::Config = flotilla_core::config::parse(
        &config_text(&dir.path().join("data"), &nats.url(), &format!("127.0.0.1:{http}"), &sources),
        |_| None,
    )
    .unwrap();
    let agent = Agent::start(cfg);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A later line passes and carries the notice of what was dropped.
    let mut f = std::fs::OpenOptions::new().append(true).open(logs.join("a.log")).unwrap();
    std::io::Write::write_all(&mut f, b"line 1000\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = http_get(http, "/metrics").await;
    agent.stop().await;
    let got = events(&js).await;
    let dropped = metric(&metrics, "flotilla_agent_events_dropped_total{source=\"file-0\",reason=\"rate_limit\"}");
    let notices: u64 = got.iter().filter_map(|(_, e)| e.fields.get("dropped").and_then(|d| d.as_u64())).sum();
    let passed = got.iter().filter(|(_, e)| e.fields.get("flotilla_notice").is_none()).count() as u64;
    assert!(dropped > 800, "most of the burst was dropped: {dropped}\n{metrics}");
    assert!(notices >= 1, "a notice says how many");
    assert_eq!(
        passed + dropped,
        1001,
        "every line either passed or was counted as dropped: passed {passed}, notices {notices}\n{metrics}"
    );
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_reports_high_water_sequences() {
    let (nats, js) = nats_with_stream().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut beats = client.subscribe("flotilla.agent.h1.status").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("a.log"), "one\ntwo\nthree\n").unwrap();
    let sources = format!(
        "[[sources]]\ntype = \"file\"\ninclude = [\"{}/*.log\"]\norg = \"acme\"\napp = \"web\"\n",
        logs.display()
    );
    let agent = Agent::start(config(&dir.path().join("data"), &nats.url(), &sources));
    wait_for(&js, 3).await;
    let mut last = serde_json::Value::Null;
    for _ in 0..20 {
        let m = tokio::time::timeout(Duration::from_secs(3), beats.next()).await.expect("a heartbeat").unwrap();
        last = serde_json::from_slice(&m.payload).unwrap();
        let files = &last["sources"][0]["files"];
        if files.as_object().is_some_and(|f| f.values().any(|v| v["acked_seq"] == 3)) {
            break;
        }
    }
    agent.stop().await;
    assert_eq!(last["host"], "h1");
    assert_eq!(last["sources"][0]["name"], "file-0");
    assert_eq!(last["sources"][0]["acked"], 3);
    let file = last["sources"][0]["files"].as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(file["acked_seq"], 3, "{last}");
}
