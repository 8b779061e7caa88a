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
pub mod barrier;
pub mod cli;
pub mod config;
pub mod conn;
pub mod delivery;
pub mod echo;
pub mod fanout;
pub mod limits;
pub mod metrics;
pub mod outlet;
pub mod protocol;
pub mod queue;
pub mod registry;
pub mod scope;
pub mod socket;
pub mod tls;
pub mod upstream;

use std::collections::HashSet;
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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// State shared by every connection.
pub struct Shared {
    pub config: Config,
    pub ping_interval: Duration,
    pub write_deadline: Duration,
    pub tokens: auth::TokenStore,
    pub upstream: async_nats::Client,
    /// Tells when nats-server has what was published on `upstream`.
    pub barrier: Arc<barrier::Barrier>,
    pub metrics: metrics::ProxyMetrics,
    pub fanout: fanout::Fanout,
    pub registry: registry::Registry,
    pub auth_throttle: limits::AuthThrottle,
    pub org_rates: limits::OrgRates,
    pub org_subs: Arc<limits::OrgSubs>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    next_id: AtomicU64,
}

impl Shared {
    fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The fan-out: deliveries read by the proxy's own delivery connection
/// (`nats://` and `tls://` servers), by async-nats for websocket ones.
fn fanout(
    config: &Config,
    client: async_nats::Client,
    gauge: flotilla_core::metrics::Gauge,
    registry: &Registry,
    tls: tokio_rustls::TlsConnector,
) -> fanout::Fanout {
    let fanout = fanout::Fanout::new(client, gauge);
    let servers = flotilla_core::nats::servers(&config.upstream.url).unwrap_or_default();
    let Some((servers, tls_required)) = flotilla_core::nats::tcp_addrs(&servers) else {
        return fanout;
    };
    let opts = upstream::conn::Options {
        servers,
        user: config.upstream.user.clone(),
        password: config.upstream.password.clone(),
        ping_interval: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_secs(5),
        reconnects: metrics::delivery_reconnects(registry),
        connected: metrics::delivery_connected(registry),
        tls: Some(upstream::conn::TlsOptions {
            connector: tls,
            required: tls_required,
            first: config.upstream.tls_first,
        }),
    };
    fanout.with_direct(|sink| upstream::conn::Upstream::start(opts, sink))
}

/// A started proxy: where it listens, and the task that ends after shutdown.
pub struct Running {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub done: JoinHandle<()>,
}

/// Connect upstream, bind the listeners and start accepting clients.
pub async fn start(config: Config, signals: Signals) -> Result<Running, ProxyError> {
    // TLS (clients, upstream): rustls needs its provider named (the
    // binary's start-up does it too; this covers embedding and tests).
    flotilla_core::daemon::install_crypto_provider();
    let tokens = auth::TokenStore::open(&config.tokens)?;
    let registry = Registry::default();
    let upstream_drops = metrics::upstream_drops(&registry);
    let mut opts = async_nats::ConnectOptions::new().name("flotilla-proxy").retry_on_initial_connect().event_callback(
        move |event| {
            let drops = upstream_drops.clone();
            async move { metrics::on_upstream_event(&drops, event) }
        },
    );
    if let (Some(u), Some(p)) = (&config.upstream.user, &config.upstream.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    // The delivery connection's TLS first: it names a bad file clearly.
    let upstream_tls = tls::connector(&config.upstream)?;
    opts = config.upstream.tls_files().apply(opts);
    let upstream = flotilla_core::nats::connect(opts, &config.upstream.url)
        .await
        .map_err(|message| ProxyError::Upstream { url: config.upstream.url.clone(), message })?;
    let barrier = barrier::Barrier::start(upstream.clone())
        .await
        .map_err(|message| ProxyError::Upstream { url: config.upstream.url.clone(), message })?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ProxyError::Bind { addr: config.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Bind { addr: config.listen.clone(), source })?;

    let http_bind: SocketAddr = config.http_addr.parse().map_err(|_| ProxyError::Bind {
        addr: config.http_addr.clone(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let http_addr =
        flotilla_core::http::serve(http_bind, flotilla_core::http::router(registry.clone()), signals.shutdown.clone())
            .await
            .map_err(|source| ProxyError::Bind { addr: config.http_addr.clone(), source })?;

    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let metrics = metrics::ProxyMetrics::new(registry.clone());
    let fanout = fanout(&config, upstream.clone(), metrics.upstream_subscriptions.clone(), &registry, upstream_tls);
    let limits = &config.limits;
    let shared = Arc::new(Shared {
        ping_interval: parse_duration(&config.ping_interval).unwrap_or(Duration::from_secs(120)),
        write_deadline: parse_duration(&config.write_deadline).unwrap_or(Duration::from_secs(10)),
        fanout,
        registry: registry::Registry::default(),
        auth_throttle: limits::AuthThrottle::new(limits.auth_failures_per_minute),
        org_rates: limits::OrgRates::new(limits.org_publish_msgs_per_sec, limits.org_publish_bytes_per_sec),
        org_subs: limits::OrgSubs::new(limits.max_subscriptions_per_org),
        tls,
        config,
        tokens,
        upstream,
        barrier,
        metrics,
        next_id: AtomicU64::new(0),
    });
    tokio::spawn(housekeeping(shared.clone(), signals.clone()));
    tracing::info!(%addr, %http_addr, "flotilla-proxy listening");
    let shutdown = signals.shutdown.clone();
    let done = tokio::spawn(async move {
        let tracker = TaskTracker::new();
        let limits = &shared.config.limits;
        let caps = registry::Caps { total: limits.max_connections, per_ip: limits.max_connections_per_ip };
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        // Counted from here: a TLS handshake holds a socket too.
                        let admission = shared.registry.admit(peer.ip(), &caps);
                        match (shared.tls.clone(), admission) {
                            (None, Some(admission)) => {
                                tracker.spawn(conn::serve(stream, peer, shared.clone(), shutdown.clone(), None, admission));
                            }
                            (Some(acceptor), Some(admission)) => {
                                tracker.spawn(accept_tls(stream, peer, acceptor, shared.clone(), shutdown.clone(), admission));
                            }
                            (None, None) => refuse(stream, peer, &shared),
                            (Some(_), None) => tracing::debug!(%peer, "maximum connections exceeded: closed before TLS"),
                        }
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

/// Every two seconds and on SIGHUP: re-read the tokens file and close the
/// connections of revoked or expired tokens; refresh the queue-depth gauges.
async fn housekeeping(shared: Arc<Shared>, signals: Signals) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => shared.tokens.refresh(),
            _ = signals.reload.notified() => {
                tracing::info!("SIGHUP: re-reading the tokens file");
                shared.tokens.reload();
            }
            _ = signals.shutdown.cancelled() => return,
        }
        shared.registry.revalidate(&shared.tokens);
        let depths = shared.registry.queue_depths();
        // An org whose last connection closed has nothing queued.
        for gone in reported.iter().filter(|org| !depths.contains_key(*org)) {
            shared.metrics.queue_depth(gone).set(0);
        }
        for (org, depth) in &depths {
            shared.metrics.queue_depth(org).set(*depth);
        }
        reported = depths.into_keys().collect();
    }
}

/// A plaintext socket over a cap: its INFO and the `-ERR`, if the socket
/// takes them at once, and closed, with no task spawned for it (a flood
/// over the cap costs no more than this).
fn refuse(stream: tokio::net::TcpStream, peer: SocketAddr, shared: &Shared) {
    use std::io::Write as _;
    let info = conn::info(shared, shared.next_client_id(), peer);
    // Written by the socket itself (still non-blocking), out of the
    // runtime: a socket just accepted has no readiness yet, so tokio's
    // `try_write` would not even try.
    if let Ok(mut socket) = stream.into_std() {
        let _ = socket.write(format!("INFO {info}\r\n-ERR 'maximum connections exceeded'\r\n").as_bytes());
    }
    tracing::debug!(%peer, "maximum connections exceeded");
}

/// A TLS client: either it starts with the handshake ("handshake first"),
/// or it reads the plaintext INFO and then upgrades; then, as with
/// nats-server, no second INFO comes inside TLS.
async fn accept_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
    admission: registry::Admission,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = stream;
    let mut first = [0u8; 1];
    let handshake_first = matches!(tokio::time::timeout(Duration::from_millis(50), stream.peek(&mut first)).await, Ok(Ok(1)) if first[0] == 0x16);
    let greeted = if handshake_first {
        None
    } else {
        let id = shared.next_client_id();
        let info = conn::info(&shared, id, peer);
        if stream.write_all(format!("INFO {info}\r\n").as_bytes()).await.is_err() {
            return;
        }
        Some(id)
    };
    match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => conn::serve(tls, peer, shared, shutdown, greeted, admission).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Run until SIGTERM/SIGINT, then close connections and exit.
pub async fn run(config: Config, signals: Signals) -> Result<(), ProxyError> {
    let running = start(config, signals).await?;
    let _ = running.done.await;
    Ok(())
}
