//! TLS with rustls. For clients: the certificate chain and key from config;
//! clients either upgrade after the plaintext INFO (the classic NATS way) or
//! start with the TLS handshake ("handshake first"); both are accepted.
//! Upstream: the delivery connection's TLS, trusting `upstream.tls_ca` (or
//! the system's roots without it) and presenting `upstream.tls_cert` if
//! given, as async-nats does for the proxy's other connection.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{Tls, Upstream};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path}: {message}")]
    Cert { key: &'static str, path: String, message: String },
    #[error("{key} {path}: {message}")]
    Key { key: &'static str, path: String, message: String },
    #[error("tls: {0}")]
    Config(String),
}

pub fn acceptor(cfg: &Tls) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs("tls.cert", &cfg.cert)?;
    let key = load_key("tls.key", &cfg.key)?;
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
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca {
        Some(ca) => {
            for cert in load_certs("upstream.tls_ca", ca)? {
                roots.add(cert).map_err(|e| TlsError::Cert {
                    key: "upstream.tls_ca",
                    path: ca.display().to_string(),
                    message: e.to_string(),
                })?;
            }
        }
        None => {
            // What can be read of them; a server they do not vouch for
            // fails its handshake, saying so.
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!(error = %e, "a system root certificate could not be read");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs("upstream.tls_cert", cert)?, load_key("upstream.tls_key", key)?)
            .map_err(|e| TlsError::Config(format!("upstream.tls_cert and tls_key: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        key,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert { key, path: path.display().to_string(), message };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(ca: Option<&Path>) -> Upstream {
        Upstream {
            url: "tls://127.0.0.1:4222".into(),
            user: None,
            password: None,
            tls_ca: ca.map(Path::to_path_buf),
            tls_cert: None,
            tls_key: None,
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = connector(&upstream(Some(&ca))).err().unwrap().to_string();
        assert!(err.starts_with("upstream.tls_ca ") && err.contains("no certificate"), "{err}");
    }

    #[test]
    fn without_a_ca_the_system_roots_are_used() {
        assert!(connector(&upstream(None)).is_ok());
    }
}
