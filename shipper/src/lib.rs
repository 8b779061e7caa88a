//! `flotilla-shipper`: JetStream streams fanned out to sinks.
//!
//! At start the shipper connects to NATS (retrying until it is up), creates
//! or updates the configured streams ([`stream`]), and starts one task per
//! sink ([`sinks`]). Each sink reads its own durable pull consumer
//! `flotilla-<sink>`, holds messages until `batch_max_events` or
//! `batch_max_age`, commits them — the Parquet sink
//! ([`sinks::parquet`]) writes one object per Hive partition
//! `org=/app=/date=/hour=` — and only then acks them. A failed commit is
//! retried, never dropped. On shutdown every sink stops fetching, commits
//! and acks what it holds, and [`run`] returns.
//!
//! `/metrics` and `/healthz` are served on `http_addr`.

mod backoff;
pub mod commitlog;
pub mod config;
pub mod ledger;
pub mod replay;
pub mod sinks;
pub mod stream;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use flotilla_core::config::{Problem, Validate, Validator};
use flotilla_core::metrics::Registry;
use flotilla_core::shutdown::Signals;

pub use config::Config;
use config::NatsConfig;
use sinks::{Sink, SinkError, SinkMetrics};

#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("config is not valid:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<Problem>),
    #[error("cannot serve http on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
    #[error("sink {name}: {source}")]
    Sink { name: String, source: SinkError },
    #[error("a sink task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Run the shipper until `signals.shutdown` is cancelled, then drain.
pub async fn run(config: Config, signals: Signals) -> Result<(), ShipperError> {
    run_with_registry(config, signals, Registry::default()).await
}

/// [`run`], with metrics recorded in `registry` (for embedding and tests).
pub async fn run_with_registry(config: Config, signals: Signals, registry: Registry) -> Result<(), ShipperError> {
    validate(&config)?;
    // TLS to NATS and the object stores: rustls needs its provider named
    // (the binary's start-up does it too; this covers embedding).
    flotilla_core::daemon::install_crypto_provider();
    // Metrics stay up while the sinks drain.
    let _http = serve_http(&config, &registry).await?;
    run_generation(config, registry, signals.shutdown).await
}

/// Run until SIGTERM; on SIGHUP re-read `path`: a valid new config replaces
/// the running one (every sink commits, acks and stops, then the new set
/// starts: sinks are added, changed or removed), an invalid one is reported
/// and the running one kept.
pub async fn run_with_reload(path: std::path::PathBuf, config: Config, signals: Signals) -> Result<(), ShipperError> {
    validate(&config)?;
    let registry = Registry::default();
    let _http = serve_http(&config, &registry).await?;
    let mut current = config;
    let mut previous: Option<Config> = None;
    loop {
        let generation = signals.shutdown.child_token();
        let mut task = tokio::spawn(run_generation(current.clone(), registry.clone(), generation.clone()));
        let next = loop {
            tokio::select! {
                r = &mut task => match (r, previous.take()) {
                    // A reloaded config that could not start: back to the one before.
                    (Ok(Err(e)), Some(old)) if !signals.shutdown.is_cancelled() => {
                        tracing::error!(error = %e, "the new config could not start; going back to the previous one");
                        break old;
                    }
                    (Ok(r), _) => return r,
                    (Err(e), _) => return Err(ShipperError::Task(e)),
                },
                _ = signals.reload.notified() => match flotilla_core::config::load::<Config>(&path) {
                    Ok(new) if format!("{new:?}") == format!("{current:?}") => tracing::info!("config unchanged"),
                    Ok(new) => {
                        if new.http_addr != current.http_addr {
                            tracing::warn!("http_addr changes take effect at the next restart");
                        }
                        break new;
                    }
                    Err(e) => tracing::error!("keeping the running config: {e}"),
                },
            }
        };
        tracing::info!("config changed: draining the sinks and starting the new set");
        generation.cancel();
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "the previous sinks stopped with an error");
        }
        previous = Some(std::mem::replace(&mut current, next));
    }
}

fn validate(config: &Config) -> Result<(), ShipperError> {
    let mut v = Validator::default();
    config.validate(&mut v);
    let problems = v.into_problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ShipperError::Config(problems))
    }
}

/// Serve `/metrics` and `/healthz` until the returned guard is dropped.
async fn serve_http(config: &Config, registry: &Registry) -> Result<tokio_util::sync::DropGuard, ShipperError> {
    let http_stop = CancellationToken::new();
    let addr: SocketAddr = config
        .http_addr
        .parse()
        .map_err(|e| ShipperError::Http { addr: config.http_addr.clone(), source: std::io::Error::other(e) })?;
    let bound = flotilla_core::http::serve(addr, flotilla_core::http::router(registry.clone()), http_stop.clone())
        .await
        .map_err(|source| ShipperError::Http { addr: config.http_addr.clone(), source })?;
    tracing::info!(%bound, "serving /metrics and /healthz");
    Ok(http_stop.drop_guard())
}

/// One set of sinks, from start to drain.
async fn run_generation(config: Config, registry: Registry, shutdown: CancellationToken) -> Result<(), ShipperError> {
    // Sinks first: a sink that cannot start (e.g. an unwritable directory)
    // fails the start, before anything is consumed.
    let mut prepared = Vec::new();
    for cfg in &config.sinks {
        let metrics = SinkMetrics::new(&registry, &cfg.name);
        let sink = Sink::from_config(cfg).map_err(|source| ShipperError::Sink { name: cfg.name.clone(), source })?;
        let stream =
            stream::covering_stream(&config.streams, &cfg.subjects).map(|s| s.name.clone()).ok_or_else(|| {
                ShipperError::Config(vec![Problem {
                    path: "sinks".into(),
                    message: format!("no stream covers sink {:?}", cfg.name),
                }])
            })?;
        prepared.push((cfg.clone(), stream, sink, metrics));
    }

    let Some(client) = connect(&config.nats, &shutdown).await else {
        return Ok(());
    };
    let js = async_nats::jetstream::new(client.clone());
    if !ensure_streams(&js, &config, &shutdown).await {
        return Ok(());
    }

    // The ledger outlives the sinks, so their last commits are stored.
    let (ledger, ledger_stop, ledger_task) = start_ledger(&config, &prepared, &client, &js, &registry);
    let mut tasks = JoinSet::new();
    for (cfg, stream, sink, metrics) in prepared {
        tasks.spawn(sinks::run_sink(js.clone(), stream, cfg, sink, metrics, ledger.clone(), shutdown.clone()));
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "sink task failed");
            result = Err(ShipperError::Task(e));
        }
    }
    ledger_stop.cancel();
    if let Some(task) = ledger_task {
        if tokio::time::timeout(Duration::from_secs(10), task).await.is_err() {
            tracing::warn!("storing the ledger timed out");
        }
    }
    // Bounded: NATS may be gone for good at shutdown.
    match tokio::time::timeout(std::time::Duration::from_secs(5), client.flush()).await {
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing the NATS connection"),
        Err(_) => tracing::warn!("flushing the NATS connection timed out"),
        Ok(Ok(())) => {}
    }
    tracing::info!("sinks stopped");
    result
}

/// The completeness ledger of these sinks and, when enabled, its task
/// (heartbeats, gauges, stored books), which runs until the returned token
/// is cancelled.
fn start_ledger(
    config: &Config,
    prepared: &[(config::SinkConfig, String, Sink, SinkMetrics)],
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    registry: &Registry,
) -> (ledger::Ledger, CancellationToken, Option<tokio::task::JoinHandle<()>>) {
    let stop = CancellationToken::new();
    if !config.ledger.enabled {
        return (ledger::Ledger::default(), stop, None);
    }
    let ledger = ledger::Ledger::new(prepared.iter().map(|(cfg, stream, _, _)| ledger::SinkSpec {
        name: cfg.name.clone(),
        stream: stream.clone(),
        consumer: cfg.consumer_name(),
        subjects: cfg.subjects.clone(),
    }));
    let task_cfg = ledger::task::TaskConfig { save_interval: config.ledger.save_interval() };
    let task = tokio::spawn(ledger::task::run(
        client.clone(),
        js.clone(),
        ledger.clone(),
        registry.clone(),
        task_cfg,
        stop.clone(),
    ));
    (ledger, stop, Some(task))
}

/// Connect, retrying with backoff; `None` if shutdown came first.
async fn connect(cfg: &NatsConfig, shutdown: &CancellationToken) -> Option<async_nats::Client> {
    let mut backoff = backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut opts = async_nats::ConnectOptions::new().name("flotilla-shipper");
        if let Some(user) = &cfg.user {
            opts = opts.user_and_password(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        opts = cfg.tls_files().apply(opts);
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = flotilla_core::nats::connect(opts, &cfg.url) => match r {
                Ok(c) => {
                    tracing::info!(url = %cfg.url, "connected to NATS");
                    return Some(c);
                }
                Err(e) => tracing::warn!(url = %cfg.url, error = %e, "cannot connect to NATS; retrying"),
            },
        }
        if !backoff::sleep_or_shutdown(backoff.next_delay(), shutdown).await {
            return None;
        }
    }
}

/// Create or update every stream, retrying; false if shutdown came first.
async fn ensure_streams(js: &async_nats::jetstream::Context, config: &Config, shutdown: &CancellationToken) -> bool {
    let mut backoff = backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            r = stream::ensure_streams(js, &config.streams) => match r {
                Ok(()) => return true,
                Err(e) => tracing::warn!(error = %e, "cannot create or update streams; retrying"),
            },
        }
        if !backoff::sleep_or_shutdown(backoff.next_delay(), shutdown).await {
            return false;
        }
    }
}
