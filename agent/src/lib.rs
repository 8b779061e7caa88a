//! `flotilla-agent`: runs on every host, collects logs and publishes them
//! into org-scoped NATS subjects with JetStream acks.
//!
//! Sources ([`sources`]): files (with Docker json-file and multi-line
//! joining), stdin, syslog over UDP and TCP, journald. Each line becomes a
//! [`flotilla_core::event::LogEvent`], enriched with host, region, org and
//! app, published with a stable `Nats-Msg-Id`. A file's checkpoint moves only
//! past lines whose acks arrived; other sources go through an on-disk spill
//! queue ([`queue`], [`pipeline`]) whose records are removed only after their
//! ack. So a crash or an outage never loses a line and a resend never
//! duplicates one. Over plain `nats://` each source publishes on a
//! connection of its own ([`pipeline::wire`]); the async-nats client carries
//! the heartbeat, and publishes to `tls://` servers. A heartbeat
//! ([`status`]) reports per-source high-water sequences for the shipper's
//! completeness ledger.

pub mod backoff;
pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod ratelimit;
pub mod sources;
pub mod stats;
pub mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use flotilla_core::config::parse_duration;
use flotilla_core::metrics::Registry;
use flotilla_core::shutdown::Signals;

pub use config::Config;
use config::SourceConfig;
use metrics::AgentMetrics;
use pipeline::emit::Emitter;
use pipeline::publisher::Publisher;
use queue::{DiskQueue, QueueConfig, QueueError};
use sources::file::checkpoint::{self, CheckpointError, Checkpoints};
use sources::syslog::source::SyslogError;
use stats::SourceStats;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Syslog(#[from] SyslogError),
    #[error("cannot serve http on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
    #[error("NATS {url}: {message}")]
    Nats { url: String, message: String },
}

/// Run until SIGTERM (no config reload): start `/metrics`, then the sources.
pub async fn run(config: Config, signals: Signals) -> Result<(), AgentError> {
    let metrics = AgentMetrics::new(Registry::default());
    serve_http(&config, &metrics, &signals).await?;
    run_sources(config, metrics, signals.shutdown).await
}

/// Run until SIGTERM; on SIGHUP re-read `path`: a valid new config replaces
/// the running one (sources drain, checkpoint and restart), an invalid one is
/// reported and the running one kept.
pub async fn run_with_reload(path: PathBuf, config: Config, signals: Signals) -> Result<(), AgentError> {
    let metrics = AgentMetrics::new(Registry::default());
    serve_http(&config, &metrics, &signals).await?;
    let mut current = config;
    loop {
        let generation = signals.shutdown.child_token();
        let mut task = tokio::spawn(run_sources(current.clone(), metrics.clone(), generation.clone()));
        let next = loop {
            tokio::select! {
                r = &mut task => return r.unwrap_or(Ok(())),
                _ = signals.reload.notified() => match reload(&path, &current, &metrics) {
                    Some(new) => break new,
                    None => continue,
                },
            }
        };
        tracing::info!("config changed: restarting the sources");
        generation.cancel();
        if let Ok(Err(e)) = task.await {
            tracing::error!(error = %e, "sources stopped with an error");
        }
        current = next;
    }
}

fn reload(path: &Path, current: &Config, metrics: &AgentMetrics) -> Option<Config> {
    match flotilla_core::config::load::<Config>(path) {
        Ok(new) if &new == current => {
            tracing::info!("config unchanged");
            None
        }
        Ok(new) => {
            if new.http_addr != current.http_addr {
                tracing::warn!("http_addr changes take effect at the next restart");
            }
            metrics.reloads.inc();
            Some(new)
        }
        Err(e) => {
            metrics.reload_failures.inc();
            tracing::error!("keeping the running config: {e}");
            None
        }
    }
}

async fn serve_http(config: &Config, metrics: &AgentMetrics, signals: &Signals) -> Result<SocketAddr, AgentError> {
    let http_err = |source| AgentError::Http { addr: config.http_addr.clone(), source };
    let addr: SocketAddr = config.http_addr.parse().map_err(|_| http_err(std::io::ErrorKind::InvalidInput.into()))?;
    let router = flotilla_core::http::router(metrics.registry.clone());
    flotilla_core::http::serve(addr, router, signals.shutdown.clone()).await.map_err(http_err)
}

/// Start every source and the heartbeat; return when `shutdown` is
/// cancelled and everything drained.
async fn run_sources(config: Config, metrics: AgentMetrics, shutdown: CancellationToken) -> Result<(), AgentError> {
    let host = config.host();
    let client = connect(&config, &host, &metrics).await?;
    // The sources' own connections' TLS, from the same files as async-nats's.
    let tls = flotilla_core::nats::tls::connector(config.nats.tls_files(), "nats")
        .map_err(|e| AgentError::Nats { url: config.nats.url.clone(), message: e.to_string() })?;
    let ack_timeout = parse_duration(&config.nats.ack_timeout).unwrap_or(Duration::from_secs(5));
    let direct = pipeline::wire::Options::for_url(
        &config.nats.url,
        config.nats.user.as_deref(),
        config.nats.password.as_deref(),
        format!("flotilla-agent {host}"),
        metrics.reconnects.clone(),
        metrics.disconnects.clone(),
        Some(tls),
    )
    .map(|o| Arc::new(o.tls_first(config.nats.tls_first)));
    let route = pipeline::acks::Route { client: client.clone(), direct, ack_timeout };
    let tracker = TaskTracker::new();
    let mut all_stats = Vec::new();
    for (i, source) in config.sources.iter().enumerate() {
        let name = source.name(i);
        let kind = match source {
            SourceConfig::File(_) => "file",
            SourceConfig::Docker(_) => "docker",
            SourceConfig::Stdin(_) => "stdin",
            SourceConfig::Syslog(_) => "syslog",
            SourceConfig::Journald(_) => "journald",
        };
        let stats = Arc::new(SourceStats::new(&metrics.registry, &name, kind));
        all_stats.push(stats.clone());
        let file_ctx = |stats: Arc<SourceStats>| -> Result<sources::file::FileContext, AgentError> {
            Ok(sources::file::FileContext {
                route: route.clone(),
                stats,
                checkpoints: Checkpoints::load(checkpoint::path_for(&config.data_dir, &name))?,
                host: host.clone(),
                region: config.region.clone(),
                max_in_flight: config.nats.max_in_flight,
            })
        };
        // Sources that cannot be read again write to a spill queue first.
        let spill = |settings, rate_limit| {
            queued(&config, &name, settings, rate_limit, stats.clone(), &metrics, &route, &host, &tracker, &shutdown)
        };
        match source {
            SourceConfig::File(f) | SourceConfig::Docker(f) => {
                let docker = matches!(source, SourceConfig::Docker(_));
                let src = sources::file::FileSource::new(f.clone(), docker, file_ctx(stats)?);
                tracker.spawn(src.run(shutdown.clone()));
            }
            SourceConfig::Stdin(c) => {
                let emitter = spill(&c.queue, c.rate_limit)?;
                tracker.spawn(sources::stdin::run(c.clone(), emitter, shutdown.clone()));
            }
            SourceConfig::Syslog(c) => {
                let listeners = bind_syslog(c).await?;
                let emitter = spill(&c.queue, c.rate_limit)?;
                tracker.spawn(sources::syslog::source::run(c.clone(), listeners, emitter, shutdown.clone()));
            }
            SourceConfig::Journald(c) => {
                let emitter = spill(&c.queue, c.rate_limit)?;
                let cursor = config.data_dir.join("journald").join(format!("{name}.cursor"));
                if let Some(dir) = cursor.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                tracker.spawn(sources::journald::source::run(c.clone(), cursor, emitter, shutdown.clone()));
            }
        }
    }
    let every = parse_duration(&config.status_interval).unwrap_or(Duration::from_secs(30));
    tracker.spawn(status::run(client.clone(), host.clone(), config.region.clone(), all_stats, every, shutdown.clone()));
    tracing::info!(host = %host, nats = %config.nats.url, sources = config.sources.len(), "flotilla-agent running");
    tracker.close();
    tracker.wait().await;
    // Bounded: a client that never connected would wait forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    tracing::info!("sources stopped");
    Ok(())
}

/// The spill queue of a source that cannot be read again, its publisher
/// task, and the emitter the source writes to.
#[allow(clippy::too_many_arguments)]
fn queued(
    config: &Config,
    name: &str,
    settings: &config::QueueSettings,
    rate_limit: Option<config::RateLimitConfig>,
    stats: Arc<SourceStats>,
    metrics: &AgentMetrics,
    route: &pipeline::acks::Route,
    host: &str,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Emitter, AgentError> {
    let (queue, report) = DiskQueue::open(QueueConfig {
        dir: config.data_dir.join("queue").join(name),
        max_bytes: settings.max_bytes,
        segment_bytes: (settings.max_bytes / 8).clamp(64 * 1024, 16 * 1024 * 1024),
        when_full: settings.when_full,
    })?;
    if report.corrupted_records > 0 || report.corrupted_bytes > 0 {
        tracing::warn!(
            source = name,
            records = report.corrupted_records,
            bytes = report.corrupted_bytes,
            "skipped corrupted spill-queue records"
        );
        metrics.queue_corrupted(name).add(report.corrupted_records.max(1));
    }
    if report.records > 0 {
        tracing::info!(source = name, records = report.records, "resuming the spill queue");
    }
    let publisher = Publisher {
        route: route.clone(),
        queue: queue.clone(),
        stats: stats.clone(),
        host: host.to_string(),
        max_in_flight: config.nats.max_in_flight,
    };
    tracker.spawn(publisher.run(shutdown.clone()));
    Ok(Emitter {
        queue,
        gate: rate_limit.and_then(ratelimit::RateGate::new),
        stats,
        host: host.to_string(),
        region: config.region.clone(),
    })
}

/// Bind the syslog listeners, retrying briefly: after a reload the previous
/// generation may still be letting go of the ports.
async fn bind_syslog(c: &config::SyslogSourceConfig) -> Result<sources::syslog::source::Listeners, AgentError> {
    let mut attempt = 0;
    loop {
        match sources::syslog::source::Listeners::bind(c).await {
            Ok(l) => return Ok(l),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::debug!(error = %e, "syslog bind failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn connect(config: &Config, host: &str, metrics: &AgentMetrics) -> Result<async_nats::Client, AgentError> {
    // TLS: rustls needs its provider named (the binary's start-up does it
    // too; this covers embedding and tests).
    flotilla_core::daemon::install_crypto_provider();
    let (connects, disconnects) = (metrics.reconnects.clone(), metrics.disconnects.clone());
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("flotilla-agent {host}"))
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempt| backoff::delay(attempt as u32))
        .event_callback(move |event| {
            let (connects, disconnects) = (connects.clone(), disconnects.clone());
            async move {
                match event {
                    async_nats::Event::Connected => connects.inc(),
                    async_nats::Event::Disconnected => disconnects.inc(),
                    other => tracing::debug!(event = %other, "nats"),
                }
            }
        });
    if let (Some(u), Some(p)) = (&config.nats.user, &config.nats.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    opts = config.nats.tls_files().apply(opts);
    flotilla_core::nats::connect(opts, &config.nats.url)
        .await
        .map_err(|message| AgentError::Nats { url: config.nats.url.clone(), message })
}
