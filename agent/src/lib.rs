//! `flotilla-agent`: runs on every host, tails logs and publishes them into
//! org-scoped NATS subjects.
//!
//! Sources ([`sources`]) read lines, a codec turns each into a
//! [`flotilla_core::event::LogEvent`], enriched with host, region, org and
//! app, published with JetStream acks and a stable `Nats-Msg-Id`. A file's
//! checkpoint moves only past lines whose acks arrived, so a crash or an
//! outage never loses a line and a resend never duplicates one.

pub mod config;
pub mod metrics;
pub mod queue;
pub mod sources;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use flotilla_core::shutdown::Signals;

pub use config::Config;
use config::SourceConfig;
use sources::file::checkpoint::{CheckpointError, Checkpoints};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot serve http on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
    #[error("NATS {url}: {message}")]
    Nats { url: String, message: String },
}

/// What every source task shares.
#[derive(Clone)]
pub struct SourceContext {
    pub js: async_nats::jetstream::Context,
    pub checkpoints: Arc<Mutex<Checkpoints>>,
    pub metrics: metrics::AgentMetrics,
    pub shutdown: CancellationToken,
    pub host: String,
    pub region: String,
    pub max_in_flight: usize,
}

/// Run the sources until SIGTERM; then wait for in-flight acks, checkpoint
/// and return.
pub async fn run(config: Config, signals: Signals) -> Result<(), AgentError> {
    let registry = flotilla_core::metrics::Registry::default();
    let metrics = metrics::AgentMetrics::new(registry.clone());
    let http_err = |source| AgentError::Http { addr: config.http_addr.clone(), source };
    let http: SocketAddr = config.http_addr.parse().map_err(|_| http_err(std::io::ErrorKind::InvalidInput.into()))?;
    let http = flotilla_core::http::serve(http, flotilla_core::http::router(registry), signals.shutdown.clone())
        .await
        .map_err(http_err)?;
    let checkpoints = Arc::new(Mutex::new(Checkpoints::load(&config.data_dir)?));

    let host = config.host();
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("flotilla-agent {host}"))
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempt| backoff(attempt as u32));
    if let (Some(u), Some(p)) = (&config.nats.user, &config.nats.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    let client = opts
        .connect(config.nats.url.as_str())
        .await
        .map_err(|e| AgentError::Nats { url: config.nats.url.clone(), message: e.to_string() })?;
    tracing::info!(%http, host = %host, nats = %config.nats.url, "flotilla-agent running");

    let ctx = SourceContext {
        js: async_nats::jetstream::new(client.clone()),
        checkpoints,
        metrics,
        shutdown: signals.shutdown.clone(),
        host,
        region: config.region.clone(),
        max_in_flight: config.nats.max_in_flight,
    };
    let tracker = TaskTracker::new();
    for source in &config.sources {
        match source {
            SourceConfig::File(f) => {
                tracker.spawn(sources::file::FileSource::new(f.clone()).run(ctx.clone()));
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    let _ = client.flush().await;
    tracing::info!("flotilla-agent stopped");
    Ok(())
}

/// Exponential backoff with full jitter: 100 ms doubling to 30 s, a random
/// point below that, so many agents that lost NATS together do not return
/// together.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = 100u64.saturating_mul(1u64 << attempt.min(9)).min(30_000);
    Duration::from_millis(rand::random_range(ceiling / 10..=ceiling))
}
