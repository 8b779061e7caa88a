//! Shared by the shipper's integration tests (`mod common;` in each): the
//! shipper run in-process with its own metrics registry, a JetStream
//! context on the test nats-server, waiting, publishing and consumer lag.
#![allow(dead_code)]

use std::time::Duration;

use async_nats::jetstream;
use tokio::time::Instant;

use flotilla_core::metrics::Registry;
use flotilla_core::shutdown::Signals;
use flotilla_shipper::{run_with_registry, Config};

/// A config of `http_addr` on a free port, `nats_url`, then `rest` (sinks
/// and anything else).
pub fn config(nats_url: &str, rest: &str) -> Config {
    let text = format!("http_addr = \"127.0.0.1:0\"\n[nats]\nurl = \"{nats_url}\"\n{rest}");
    match flotilla_core::config::parse::<Config>(&text, |_| None) {
        Ok(c) => c,
        Err(p) => panic!("test config invalid: {p:?}"),
    }
}

pub struct Shipper {
    pub signals: Signals,
    pub registry: Registry,
    pub task: tokio::task::JoinHandle<Result<(), flotilla_shipper::ShipperError>>,
}

impl Shipper {
    pub fn start(config: Config) -> Shipper {
        let signals = Signals::default();
        let registry = Registry::default();
        let task = tokio::spawn(run_with_registry(config, signals.clone(), registry.clone()));
        Shipper { signals, registry, task }
    }

    pub fn counter(&self, name: &str, sink: &str) -> u64 {
        self.registry.counter(name, "", &[("sink", sink)]).get()
    }

    pub fn gauge(&self, name: &str, sink: &str) -> i64 {
        self.registry.gauge(name, "", &[("sink", sink)]).get()
    }

    pub async fn stop(self) {
        self.signals.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("shipper did not stop cleanly: {other:?}"),
        }
    }
}

/// JetStream on `url`, once the shipper has created the stream `LOGS`.
pub async fn jetstream(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to the test nats-server");
    let js = jetstream::new(client);
    wait_for("stream LOGS", Duration::from_secs(30), || async { js.get_stream("LOGS").await.is_ok() }).await;
    js
}

/// Poll `check` until it holds; panics naming `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pending and ack-pending of sink `sink`'s consumer.
pub async fn backlog(js: &jetstream::Context, sink: &str) -> Option<(u64, usize)> {
    let stream = js.get_stream("LOGS").await.ok()?;
    let info = stream.consumer_info(format!("flotilla-{sink}")).await.ok()?;
    Some((info.num_pending, info.num_ack_pending))
}
