//! The Parquet sink on an S3-compatible server (moto), read back by pyarrow;
//! the server frozen for 30 s under load: nothing lost, the shipper resumes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use flotilla_core::shutdown::Signals;
use flotilla_testsupport::{free_port, python, repo_root, NatsServer};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto(port: u16) -> Moto {
    let py = python();
    let bin =
        py.parent().map(|d| d.join("moto_server")).filter(|p| p.is_file()).unwrap_or_else(|| "moto_server".into());
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run ./scripts/test, which installs moto[server])", bin.display()));
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto(child)
}

async fn create_bucket(port: u16, bucket: &str) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        format!("PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

async fn publish(js: &jetstream::Context, from: u64, to: u64) {
    let mut acks = Vec::new();
    for i in from..to {
        let org = ["acme", "globex"][(i % 2) as usize];
        let body = format!(
            r#"{{"ts":"2026-11-22T10:00:00Z","org":"{org}","app":"web","region":"iad","host":"h1","source":"s","level":"info","message":"event {i}","seq":{i}}}"#
        );
        acks.push(js.publish(format!("logs.{org}.web.iad.h1"), body.into()).await.unwrap());
        if acks.len() >= 256 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn drained(js: &jetstream::Context, total: u64) -> bool {
    let Ok(mut stream) = js.get_stream("LOGS").await else { return false };
    if stream.info().await.map(|i| i.state.messages).unwrap_or(0) < total {
        return false;
    }
    let Ok(mut c) = stream.get_consumer::<jetstream::consumer::pull::Config>("flotilla-archive").await else {
        return false;
    };
    c.info().await.map(|i| i.num_pending == 0 && i.num_ack_pending == 0).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_on_s3_survives_a_30_second_outage() {
    let nats = NatsServer::start();
    let port = free_port();
    let server = moto(port);
    create_bucket(port, "flotilla").await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let text = format!(
        "http_addr = \"127.0.0.1:0\"\n[nats]\nurl = \"{}\"\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"s3://flotilla/archive\"\nbatch_max_age = \"500ms\"\nroll_max_age = \"2s\"\nack_wait = \"90s\"\n[sinks.storage]\naws_endpoint = \"{endpoint}\"\naws_region = \"us-east-1\"\naws_access_key_id = \"testing\"\naws_secret_access_key = \"testing\"\naws_allow_http = \"true\"\ntimeout = \"5s\"\n",
        nats.url()
    );
    let config: flotilla_shipper::Config = match flotilla_core::config::parse(&text, |_| None) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    };
    let signals = Signals::default();
    let registry = flotilla_core::metrics::Registry::default();
    let shipper = tokio::spawn(flotilla_shipper::run_with_registry(config, signals.clone(), registry.clone()));
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    for _ in 0..100 {
        if js.get_stream("LOGS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish(&js, 0, 5_000).await;

    // The object store freezes (connections hang) for 30 s while events keep coming.
    signal(&server.0, libc::SIGSTOP);
    publish(&js, 5_000, 10_000).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!drained(&js, 10_000).await, "the outage was felt: nothing could be committed (so nothing was acked)");
    let committed = registry.counter("flotilla_shipper_events_committed_total", "", &[("sink", "archive")]).get();
    assert!(committed < 10_000, "{committed}");
    signal(&server.0, libc::SIGCONT);

    let start = Instant::now();
    while !drained(&js, 10_000).await {
        assert!(start.elapsed() < Duration::from_secs(120), "the shipper resumed and caught up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    signals.shutdown.cancel();
    shipper.await.unwrap().unwrap();

    let out = Command::new(python())
        .arg(repo_root().join("shipper/tests/py/read_s3.py"))
        .args([&endpoint, "flotilla/archive"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["rows"], 10_000, "{got}");
    assert_eq!(got["distinct"], 10_000, "{got}");
    assert_eq!(got["orgs"], serde_json::json!(["acme", "globex"]));
    let types = &got["types"];
    assert_eq!(types["ts"], "timestamp[us, tz=UTC]", "{got}");
    for dict in ["org", "app", "region", "host", "level"] {
        assert_eq!(types[dict], "dictionary<values=string, indices=int32, ordered=0>", "{dict}: {got}");
    }
    for (col, ty) in [("message", "string"), ("fields", "string"), ("seq", "uint64"), ("stream_seq", "uint64")] {
        assert_eq!(types[col], ty, "{col}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_up_in_parts() {
    let nats = NatsServer::start();
    let port = free_port();
    let _server = moto(port);
    create_bucket(port, "flotilla").await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let text = format!(
        "http_addr = \"127.0.0.1:0\"\n[nats]\nurl = \"{}\"\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"s3://flotilla/big\"\nbatch_max_age = \"200ms\"\nroll_max_age = \"1h\"\nrow_group_rows = 1000\n[sinks.storage]\naws_endpoint = \"{endpoint}\"\naws_region = \"us-east-1\"\naws_access_key_id = \"testing\"\naws_secret_access_key = \"testing\"\naws_allow_http = \"true\"\n",
        nats.url()
    );
    let config: flotilla_shipper::Config = match flotilla_core::config::parse(&text, |_| None) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    };
    let signals = Signals::default();
    let registry = flotilla_core::metrics::Registry::default();
    let shipper = tokio::spawn(flotilla_shipper::run_with_registry(config, signals.clone(), registry.clone()));
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    for _ in 0..100 {
        if js.get_stream("LOGS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 6,000 events of 1.5 KB of random letters: about 9 MB, one partition,
    // one object (an hour-long roll), so the upload outgrows its 5 MiB
    // buffer and becomes a multipart upload.
    let mut acks = Vec::new();
    for i in 0..6_000u64 {
        let noise: String =
            rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric).take(1500).map(char::from).collect();
        let body = format!(
            r#"{{"ts":"2026-11-22T10:00:00Z","org":"acme","app":"web","region":"iad","host":"h1","source":"s","level":"info","message":"{noise}","seq":{i}}}"#
        );
        acks.push(js.publish("logs.acme.web.iad.h1", body.into()).await.unwrap());
        if acks.len() >= 256 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let unacked = registry.gauge("flotilla_shipper_unacked_events", "", &[("sink", "archive")]);
    let start = Instant::now();
    while unacked.get() < 6_000 {
        assert!(start.elapsed() < Duration::from_secs(60), "events not written: {}", unacked.get());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Shutdown completes the open object.
    signals.shutdown.cancel();
    shipper.await.unwrap().unwrap();
    assert!(drained(&js, 6_000).await, "events left unacked after shutdown");

    let out = Command::new(python())
        .arg(repo_root().join("shipper/tests/py/read_s3.py"))
        .args([&endpoint, "flotilla/big"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["rows"], 6_000, "{got}");
    assert_eq!(got["distinct"], 6_000, "{got}");
    assert_eq!(got["objects"], 1, "{got}");
    assert!(got["max_object_bytes"].as_u64().unwrap_or(0) > 5 << 20, "not past one part: {got}");
}
