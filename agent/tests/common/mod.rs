//! Shared by the agent's integration tests: a JetStream with the LOGS
//! stream, agent configs, the agent run in-process, and reading the stream
//! back.

#![allow(dead_code)]

use std::time::Duration;

use flotilla_core::event::LogEvent;
use flotilla_testsupport::NatsServer;

pub async fn js(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new().retry_on_initial_connect().connect(url).await.unwrap();
    async_nats::jetstream::new(client)
}

pub async fn nats_with_stream() -> (NatsServer, async_nats::jetstream::Context) {
    let nats = NatsServer::start();
    let js = js(&nats.url()).await;
    create_stream(&js).await;
    (nats, js)
}

pub async fn create_stream(js: &async_nats::jetstream::Context) {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "LOGS".into(),
        subjects: vec!["logs.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
}

pub async fn stream_len(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream("LOGS").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

pub async fn wait_for(js: &async_nats::jetstream::Context, n: u64) {
    for _ in 0..400 {
        if stream_len(js).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream has {} messages, expected {n}", stream_len(js).await);
}

/// Every stored event with its subject, in stream order.
pub async fn events(js: &async_nats::jetstream::Context) -> Vec<(String, LogEvent)> {
    let stream = js.get_stream("LOGS").await.unwrap();
    let n = stream_len(js).await;
    let mut out = vec![];
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        out.push((m.subject.to_string(), LogEvent::from_json(&m.payload).unwrap()));
    }
    out
}

/// An agent config: `host = "h1"`, region `iad`, the given sources (TOML).
pub fn config_text(data: &std::path::Path, url: &str, http: &str, sources: &str) -> String {
    format!(
        "host = \"h1\"\nregion = \"iad\"\ndata_dir = \"{}\"\nhttp_addr = \"{http}\"\nstatus_interval = \"200ms\"\n[nats]\nurl = \"{url}\"\nmax_in_flight = 64\nack_timeout = \"2s\"\n{sources}",
        data.display()
    )
}

pub fn config(data: &std::path::Path, url: &str, sources: &str) -> flotilla_agent::Config {
    match flotilla_core::config::parse(&config_text(data, url, "127.0.0.1:0", sources), |_| None) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    }
}

/// The agent running in-process until [`Agent::stop`].
pub struct Agent {
    signals: flotilla_core::shutdown::Signals,
    task: tokio::task::JoinHandle<Result<(), flotilla_agent::AgentError>>,
}

impl Agent {
    pub fn start(config: flotilla_agent::Config) -> Agent {
        let signals = flotilla_core::shutdown::Signals::default();
        let task = tokio::spawn(flotilla_agent::run(config, signals.clone()));
        Agent { signals, task }
    }

    /// SIGTERM's path: drain, checkpoint, return Ok.
    pub async fn stop(self) {
        self.signals.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}
