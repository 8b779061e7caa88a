//! `/metrics` and `/healthz` for every daemon; components may merge routes.

use std::net::SocketAddr;

use axum::{routing::get, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Registry;

/// The base router: `/metrics` in Prometheus text format and `/healthz`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let r = registry.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], r.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Bind `addr` (port 0 picks one) and serve `app` until `shutdown`.
/// Returns the bound address.
pub async fn serve(addr: SocketAddr, app: Router, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let r = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "http server stopped");
        }
    });
    Ok(local)
}
