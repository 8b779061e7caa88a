//! A private PKI for TLS tests: a CA, a server certificate for 127.0.0.1
//! and localhost, and a client certificate, as PEM files; and nats-server
//! requiring TLS with them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::NatsServer;

pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    /// Certificate and key, for 127.0.0.1 and localhost.
    pub server: (PathBuf, PathBuf),
    /// Certificate and key a client presents.
    pub client: (PathBuf, PathBuf),
}

impl Pki {
    /// A new CA named `ca_name` and the certificates it signs.
    pub fn new(ca_name: &str) -> Pki {
        Pki::for_server(ca_name, &["127.0.0.1", "localhost"])
    }

    /// [`Pki::new`] with a server certificate for `names` only.
    pub fn for_server(ca_name: &str, names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.extended_key_usages = vec![usage];
            params.distinguished_name.push(DnType::CommonName, stem);
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca).expect("leaf certificate");
            let (c, k) = (dir.path().join(format!("{stem}.pem")), dir.path().join(format!("{stem}-key.pem")));
            std::fs::write(&c, cert.pem()).expect("write certificate");
            std::fs::write(&k, key.serialize_pem()).expect("write key");
            (c, k)
        };
        let names = names.iter().map(|n| n.to_string()).collect();
        let server = leaf(names, ExtendedKeyUsagePurpose::ServerAuth, "server");
        let client = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "client");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write CA");
        Pki { _dir: dir, ca: ca_path, server, client }
    }

    /// nats-server's arguments for requiring TLS and client certificates.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls".to_string(),
            "--tlscert".into(),
            display(&self.server.0),
            "--tlskey".into(),
            display(&self.server.1),
            "--tlsverify".into(),
            "--tlscacert".into(),
            display(&self.ca),
        ]
    }

    /// A nats-server config file for TLS as [`Pki::server_args`] has it,
    /// and with `handshake_first`: clients start the handshake before the
    /// server says anything.
    pub fn handshake_first_conf(&self) -> PathBuf {
        let path = self._dir.path().join("handshake-first.conf");
        let conf = format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  handshake_first: true\n}}\n",
            display(&self.server.0),
            display(&self.server.1),
            display(&self.ca),
        );
        std::fs::write(&path, conf).expect("write nats-server config");
        path
    }

    /// `tls_ca`, `tls_cert` and `tls_key` lines for a config section.
    pub fn config_lines(&self) -> String {
        format!(
            "tls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            display(&self.ca),
            display(&self.client.0),
            display(&self.client.1)
        )
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

impl NatsServer {
    /// nats-server with JetStream requiring TLS from every client and a
    /// client certificate signed by `pki`'s CA; `more` arguments after.
    pub fn start_tls(pki: &Pki, more: &[String]) -> NatsServer {
        let mut args = pki.server_args();
        args.extend_from_slice(more);
        NatsServer::start_with(&args)
    }

    /// [`NatsServer::start_tls`] with `handshake_first`.
    pub fn start_tls_first(pki: &Pki, more: &[String]) -> NatsServer {
        let mut args = vec!["-c".to_string(), display(&pki.handshake_first_conf())];
        args.extend_from_slice(more);
        NatsServer::start_with(&args)
    }

    /// `tls://127.0.0.1:<port>`.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }
}
