//! SIGHUP adds a sink without a restart; an invalid config is refused and
//! the running one kept; SIGTERM drains and exits 0.

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;

use flotilla_testsupport::{free_port, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-shipper");

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

async fn publish(js: &jetstream::Context, from: u64, to: u64) {
    for i in from..to {
        let body = format!(
            r#"{{"ts":"2026-11-22T10:00:00Z","org":"acme","app":"web","region":"iad","host":"h1","source":"s","level":"info","message":"m{i}","seq":{i}}}"#
        );
        js.publish("logs.acme.web.iad.h1", body.into()).await.unwrap().await.unwrap();
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_sink_and_refuses_a_broken_config() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one.ndjson"), dir.path().join("two.ndjson"));
    let base = format!("http_addr = \"127.0.0.1:{}\"\n[nats]\nurl = \"{}\"\n", free_port(), nats.url());
    let sink = |name: &str, path: &std::path::Path| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"file\"\nurl = \"file://{}\"\nbatch_max_age = \"200ms\"\n",
            path.display()
        )
    };
    let config = dir.path().join("shipper.toml");
    std::fs::write(&config, format!("{base}{}", sink("one", &one))).unwrap();
    let mut child = Command::new(BIN).args(["run", "-c"]).arg(&config).spawn().unwrap();

    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    wait_until("the stream", || futures::executor::block_on(js.get_stream("LOGS")).is_ok()).await;
    publish(&js, 0, 10).await;
    wait_until("sink one", || lines(&one) == 10).await;

    // A new sink: it reads the stream from its start.
    std::fs::write(&config, format!("{base}{}{}", sink("one", &one), sink("two", &two))).unwrap();
    signal(&child, libc::SIGHUP);
    wait_until("sink two", || lines(&two) == 10).await;

    // A broken config is refused; both sinks keep going.
    std::fs::write(&config, "[[sinks]]\nname = 'x y'\n").unwrap();
    signal(&child, libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    publish(&js, 10, 20).await;
    wait_until("both sinks", || lines(&one) == 20 && lines(&two) == 20).await;

    signal(&child, libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success());
    assert_eq!((lines(&one), lines(&two)), (20, 20), "nothing twice");
}
