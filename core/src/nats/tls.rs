//! TLS for our own NATS connections (the proxy's delivery connection, the
//! agent's publish connections): rustls client settings from a config
//! section's TLS files (trust `tls_ca`, or the system's roots without it,
//! and present `tls_cert` if given, as async-nats does with the same
//! files), and whether a connection upgrades after the server's INFO.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsConnector;

use rustls::pki_types::ServerName;

use super::{ServerList, TlsFiles};

/// What our own connections need of a server's INFO.
#[derive(Debug, serde::Deserialize)]
pub struct ServerInfo {
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    #[serde(default)]
    pub tls_required: bool,
    #[serde(default)]
    pub tls_available: bool,
}

fn default_max_payload() -> usize {
    1 << 20
}

/// A connection's TLS settings.
#[derive(Clone)]
pub struct TlsOptions {
    pub connector: TlsConnector,
    /// Every server must use TLS (a `tls://` URL was configured);
    /// otherwise only those whose INFO requires it.
    pub required: bool,
    /// The handshake comes first, before the server's INFO (servers with
    /// `handshake_first`): every server uses TLS.
    pub first: bool,
}

/// Why a connection cannot go on after the server's INFO.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the server requires TLS")]
    NeedsTls,
    #[error("a tls:// server URL is configured, but the server does not offer TLS")]
    NotOffered,
    #[error("the server sent more than INFO before the TLS handshake")]
    BeforeHandshake,
    #[error("{0} is no name to check a certificate against")]
    NoName(String),
}

/// Before anything is read from `server`: the connector and the name to
/// check its certificate against if the handshake comes first (then the
/// INFO, read over TLS, is learnt with [`ServerList::learn`]).
pub fn first<'a>(
    tls: Option<&'a TlsOptions>,
    server: &str,
    servers: &ServerList,
) -> Result<Option<(&'a TlsConnector, ServerName<'static>)>, Refusal> {
    match tls {
        Some(t) if t.first => Ok(Some((&t.connector, name(server, servers)?))),
        _ => Ok(None),
    }
}

fn name(server: &str, servers: &ServerList) -> Result<ServerName<'static>, Refusal> {
    ServerName::try_from(servers.tls_name(server).to_string()).map_err(|_| Refusal::NoName(server.to_string()))
}

/// After `info` from `server` (with `pending` bytes read past it): the
/// connector and the name to check the certificate against if TLS is due,
/// `None` to go on in plaintext. Learn the INFO's members afterwards with
/// [`ServerList::learn`] in plaintext, [`ServerList::learn_unverified`]
/// after a handshake.
pub fn upgrade<'a>(
    tls: Option<&'a TlsOptions>,
    info: &ServerInfo,
    pending: usize,
    server: &str,
    servers: &ServerList,
) -> Result<Option<(&'a TlsConnector, ServerName<'static>)>, Refusal> {
    let tls = match tls {
        Some(t) if t.required || info.tls_required => t,
        None if info.tls_required => return Err(Refusal::NeedsTls),
        _ => return Ok(None),
    };
    if !(info.tls_required || info.tls_available) {
        return Err(Refusal::NotOffered);
    }
    if pending > 0 {
        return Err(Refusal::BeforeHandshake);
    }
    Ok(Some((&tls.connector, name(server, servers)?)))
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// `key` is the config key (`upstream.tls_ca`, `nats.tls_cert`...).
    #[error("{key} {path}: {message}")]
    File { key: String, path: String, message: String },
    #[error("tls: {0}")]
    Config(String),
}

/// The connector for `files`, read from the config section `section`.
pub fn connector(files: TlsFiles<'_>, section: &str) -> Result<TlsConnector, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match files.ca {
        Some(ca) => {
            let key = format!("{section}.tls_ca");
            for cert in load_certs(&key, ca)? {
                roots.add(cert).map_err(|e| file_error(&key, ca, e))?;
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
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (files.cert, files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                load_certs(&format!("{section}.tls_cert"), cert)?,
                load_key(&format!("{section}.tls_key"), key)?,
            )
            .map_err(|e| TlsSetupError::Config(format!("{section}.tls_cert and tls_key: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn file_error(key: &str, path: &Path, e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::File { key: key.to_string(), path: path.display().to_string(), message: e.to_string() }
}

/// The private key in a PEM file; `key` names it in errors.
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(key, path, e))
}

/// The certificates in a PEM file (at least one); `key` names it in errors.
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no certificate in the file"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let files = TlsFiles { ca: Some(&ca), ..Default::default() };
        let err = connector(files, "upstream").err().unwrap().to_string();
        assert!(err.starts_with("upstream.tls_ca ") && err.contains("no certificate"), "{err}");
    }

    #[test]
    fn without_a_ca_the_system_roots_are_used() {
        assert!(connector(TlsFiles::default(), "nats").is_ok());
    }
}
