//! `kill -9` the shipper five times while 200,000 events flow: DuckDB then
//! finds every event in the archive exactly once.

use std::collections::VecDeque;
use std::process::{Child, Command};
use std::time::Duration;

use async_nats::jetstream;
use flotilla_testsupport::{free_port, python, repo_root, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-shipper");
const EVENTS: u64 = 200_000;

fn start(config: &std::path::Path) -> Child {
    Command::new(BIN).args(["run", "-c"]).arg(config).env("RUST_LOG", "warn").spawn().unwrap()
}

async fn idle(js: &jetstream::Context) -> bool {
    let Ok(mut stream) = js.get_stream("LOGS").await else { return false };
    let Ok(info) = stream.info().await else { return false };
    if info.state.messages < EVENTS {
        return false;
    }
    let Ok(mut c) = stream.get_consumer::<jetstream::consumer::pull::Config>("flotilla-archive").await else {
        return false;
    };
    c.info().await.map(|i| i.num_pending == 0 && i.num_ack_pending == 0).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_and_every_event_is_archived_exactly_once() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let config = dir.path().join("shipper.toml");
    std::fs::write(
        &config,
        format!(
            "http_addr = \"127.0.0.1:{}\"\n[nats]\nurl = \"{}\"\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file://{}\"\nbatch_max_events = 5000\nbatch_max_age = \"300ms\"\nroll_max_age = \"1s\"\nack_wait = \"3s\"\n",
            free_port(),
            nats.url(),
            archive.display()
        ),
    )
    .unwrap();
    let mut shipper = start(&config);

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    for _ in 0..100 {
        if js.get_stream("LOGS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            let mut window = VecDeque::new();
            for i in 0..EVENTS {
                let org = ["acme", "globex"][(i % 2) as usize];
                let app = ["web", "api"][(i % 3 % 2) as usize];
                let body = format!(
                    r#"{{"ts":"2026-11-22T10:{:02}:00Z","org":"{org}","app":"{app}","region":"iad","host":"h1","source":"file:/x","level":"info","message":"event {i}","seq":{i}}}"#,
                    i % 60
                );
                window.push_back(js.publish(format!("logs.{org}.{app}.iad.h1"), body.into()).await.unwrap());
                if window.len() >= 256 {
                    window.pop_front().unwrap().await.unwrap();
                }
            }
            for ack in window {
                ack.await.unwrap();
            }
        })
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        shipper.kill().unwrap(); // SIGKILL
        shipper.wait().unwrap();
        shipper = start(&config);
    }
    publisher.await.unwrap();
    let mut done = false;
    for _ in 0..600 {
        if idle(&js).await {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the shipper caught up");
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(shipper.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(shipper.wait().unwrap().success());

    let out = Command::new(python())
        .arg(repo_root().join("shipper/tests/py/count_archive.py"))
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["rows"], EVENTS, "no duplicates, nothing missing: {counts}");
    assert_eq!(counts["distinct"], EVENTS, "{counts}");
    assert_eq!((counts["min"].as_u64(), counts["max"].as_u64()), (Some(1), Some(EVENTS)));
}
