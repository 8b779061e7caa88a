//! `flotilla-shipper replay` reads one org's events in a time range back from
//! the archive and publishes them onto NATS.

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

use flotilla_core::event::LogEvent;
use flotilla_core::shutdown::Signals;
use flotilla_testsupport::NatsServer;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-shipper");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_publishes_one_orgs_time_range_from_the_archive() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let text = format!(
        "http_addr = \"127.0.0.1:0\"\n[nats]\nurl = \"{}\"\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file://{}\"\nbatch_max_age = \"300ms\"\nroll_max_age = \"1s\"\n",
        nats.url(),
        archive.display()
    );
    let config: flotilla_shipper::Config = flotilla_core::config::parse(&text, |_| None).unwrap();
    let signals = Signals::default();
    let shipper = tokio::spawn(flotilla_shipper::run(config, signals.clone()));
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    for _ in 0..100 {
        if js.get_stream("LOGS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut n = 0;
    for (org, hour, count) in [("acme", 9, 10), ("acme", 10, 10), ("acme", 11, 10), ("globex", 10, 5)] {
        for i in 0..count {
            let body = format!(
                r#"{{"ts":"2026-11-22T{hour:02}:10:{i:02}Z","org":"{org}","app":"web","region":"iad","host":"h1","source":"s","level":"info","message":"{org} {hour} {i}","fields":{{"i":{i}}},"seq":{n}}}"#
            );
            js.publish(format!("logs.{org}.web.iad.h1"), body.into()).await.unwrap().await.unwrap();
            n += 1;
        }
    }
    for _ in 0..200 {
        let s = js.get_stream("LOGS").await.unwrap();
        let mut c = s.get_consumer::<jetstream::consumer::pull::Config>("flotilla-archive").await.unwrap();
        let i = c.info().await.unwrap();
        if i.num_pending == 0 && i.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signals.shutdown.cancel();
    shipper.await.unwrap().unwrap();

    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("replay.logs.>").await.unwrap();
    client.flush().await.unwrap();
    let out = Command::new(BIN)
        .args(["replay", "--from", &format!("file://{}", archive.display()), "--org", "acme"])
        .args(["--since", "2026-11-22T10:00:00Z", "--until", "2026-11-22T11:00:00Z", "--to", &nats.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "replayed 10 events");
    let mut got = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        assert_eq!(m.subject.as_str(), "replay.logs.acme.web.iad.h1");
        got.push(LogEvent::from_json(&m.payload).unwrap());
    }
    let messages: Vec<String> = got.iter().map(|e| e.message.clone()).collect();
    let want: Vec<String> = (0..10).map(|i| format!("acme 10 {i}")).collect();
    assert_eq!(messages, want, "exactly acme's hour 10, in order");
    assert_eq!(got[3].fields["i"], 3, "fields survive the round trip");
}
