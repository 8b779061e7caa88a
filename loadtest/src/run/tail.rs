//! A live tail: a core-NATS subscriber on `logs.>` (what a tenant's
//! `nats sub` gets: directly on nats-server, or through the proxy),
//! timestamping each arrival of a line of the load (a `message` with a load
//! id) against the write time the line carries in `ts`.

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::bench::BenchError;

/// (arrival, latency) per message, µs.
#[derive(Debug, Default)]
pub struct Tail {
    pub arrivals: Vec<(i64, i64)>,
    pub undecodable: u64,
    /// Messages that are not lines of the load (a flood), not timed.
    pub foreign: u64,
}

#[derive(serde::Deserialize)]
struct Ts<'a> {
    #[serde(borrow)]
    ts: &'a str,
    #[serde(borrow, default)]
    message: Option<std::borrow::Cow<'a, str>>,
}

/// Subscribe now; the task collects until `stop`.
pub async fn start(url: &str, stop: CancellationToken) -> Result<tokio::task::JoinHandle<Tail>, BenchError> {
    let client = async_nats::connect(url).await.map_err(|e| BenchError::nats("tail: connect", e))?;
    start_client(client, stop).await
}

/// Subscribe `client` (e.g. a tenant connected through the proxy) to
/// `logs.>` now; the task collects until `stop`.
pub async fn start_client(
    client: async_nats::Client,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<Tail>, BenchError> {
    let mut sub = client.subscribe("logs.>").await.map_err(|e| BenchError::nats("tail: subscribe", e))?;
    client.flush().await.map_err(|e| BenchError::nats("tail: flush", e))?;
    Ok(tokio::spawn(async move {
        let _client = client;
        let mut tail = Tail::default();
        loop {
            let msg = tokio::select! {
                m = sub.next() => match m { Some(m) => m, None => break },
                _ = stop.cancelled() => break,
            };
            let now = chrono::Utc::now().timestamp_micros();
            let Ok(event) = serde_json::from_slice::<Ts>(&msg.payload) else {
                tail.undecodable += 1;
                continue;
            };
            if !event.message.as_deref().is_some_and(|m| m.starts_with("lt:")) {
                tail.foreign += 1;
                continue;
            }
            match chrono::DateTime::parse_from_rfc3339(event.ts) {
                Ok(w) => tail.arrivals.push((now, now - w.timestamp_micros())),
                Err(_) => tail.undecodable += 1,
            }
        }
        tail
    }))
}
