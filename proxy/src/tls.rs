//! TLS with rustls. For clients: the certificate chain and key from config;
//! clients either upgrade after the plaintext INFO (the classic NATS way) or
//! start with the TLS handshake ("handshake first"); both are accepted.
//! Upstream: the delivery connection's TLS, trusting `upstream.tls_ca` (or
//! the system's roots without it) and presenting `upstream.tls_cert` if
//! given, as async-nats does for the proxy's other connection.

use std::sync::Arc;

use flotilla_core::nats::tls;
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{Tls, Upstream};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Files(#[from] tls::TlsSetupError),
    #[error("tls: {0}")]
    Config(String),
}

pub fn acceptor(cfg: &Tls) -> Result<TlsAcceptor, TlsError> {
    let certs = tls::load_certs("tls.cert", &cfg.cert)?;
    let key = tls::load_key("tls.key", &cfg.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The delivery connection's TLS settings.
pub fn connector(cfg: &Upstream) -> Result<TlsConnector, TlsError> {
    Ok(tls::connector(cfg.tls_files(), "upstream")?)
}
