//! `flotilla-proxy`: the authenticating, org-scoped front door to NATS.
//!
//! Stock NATS clients connect here ([`conn`]) and speak the client protocol
//! ([`protocol`]). CONNECT credentials are checked against a tokens file of
//! hashed secrets ([`auth`]); the token's role decides what the connection may
//! do and how its subjects are rewritten ([`scope`]): a tenant of `acme`
//! subscribing to `logs.>` is subscribed upstream to `logs.acme.>`, and sees
//! deliveries as `logs.<app>.<region>.<host>`. One upstream connection to
//! NATS carries every client's traffic.

pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod protocol;
pub mod scope;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use flotilla_core::config::parse_duration;
use flotilla_core::metrics::Registry;
use flotilla_core::shutdown::Signals;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Tokens(#[from] auth::AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("upstream NATS {url}: {message}")]
    Upstream { url: String, message: String },
}

/// State shared by every connection.
pub struct Shared {
    pub config: Config,
    pub ping_interval: Duration,
    pub tokens: auth::TokenStore,
    pub upstream: async_nats::Client,
    pub metrics: metrics::ProxyMetrics,
    next_id: AtomicU64,
}

impl Shared {
    fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A started proxy: where it listens, and the task that ends after shutdown.
pub struct Running {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub done: JoinHandle<()>,
}

/// Connect upstream, bind the listeners and start accepting clients.
pub async fn start(config: Config, signals: Signals) -> Result<Running, ProxyError> {
    let tokens = auth::TokenStore::open(&config.tokens)?;
    let mut opts = async_nats::ConnectOptions::new().name("flotilla-proxy").retry_on_initial_connect();
    if let (Some(u), Some(p)) = (&config.upstream.user, &config.upstream.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    let upstream = opts
        .connect(config.upstream.url.as_str())
        .await
        .map_err(|e| ProxyError::Upstream { url: config.upstream.url.clone(), message: e.to_string() })?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ProxyError::Bind { addr: config.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Bind { addr: config.listen.clone(), source })?;

    let registry = Registry::default();
    let http_bind: SocketAddr = config.http_addr.parse().map_err(|_| ProxyError::Bind {
        addr: config.http_addr.clone(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let http_addr =
        flotilla_core::http::serve(http_bind, flotilla_core::http::router(registry.clone()), signals.shutdown.clone())
            .await
            .map_err(|source| ProxyError::Bind { addr: config.http_addr.clone(), source })?;

    let shared = Arc::new(Shared {
        ping_interval: parse_duration(&config.ping_interval).unwrap_or(Duration::from_secs(120)),
        config,
        tokens,
        upstream,
        metrics: metrics::ProxyMetrics::new(registry),
        next_id: AtomicU64::new(0),
    });
    tracing::info!(%addr, %http_addr, "flotilla-proxy listening");
    let shutdown = signals.shutdown.clone();
    let done = tokio::spawn(async move {
        let tracker = TaskTracker::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tracker.spawn(conn::serve(stream, peer, shared.clone(), shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.cancelled() => break,
            }
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.upstream.flush()).await;
        tracing::info!("flotilla-proxy stopped");
    });
    Ok(Running { addr, http_addr, done })
}

/// Run until SIGTERM/SIGINT, then close connections and exit.
pub async fn run(config: Config, signals: Signals) -> Result<(), ProxyError> {
    let running = start(config, signals).await?;
    let _ = running.done.await;
    Ok(())
}
