//! NATS server lists: `url` keys take one URL or several separated by commas
//! (the nodes of a cluster), e.g. `nats://n1:4222,nats://n2:4222`. The client
//! connects to one of them and learns the rest of the cluster from it.

use std::path::Path;

use async_nats::ServerAddr;

use crate::config::Validator;

pub mod frames;
pub mod tls;

/// The TLS settings of a connection to NATS: a config section's `tls_ca`
/// (CAs that sign the servers' certificates, trusted instead of the
/// system's roots), `tls_cert` and `tls_key` (a client certificate, for
/// servers that verify clients), and `tls_first` (the TLS handshake before
/// the server's INFO, for servers with `handshake_first`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub first: bool,
}

impl TlsFiles<'_> {
    /// Each file readable; cert and key together. `section`: the config
    /// section's name, for the messages.
    pub fn validate(&self, v: &mut Validator, section: &str) {
        v.check(self.cert.is_some() == self.key.is_some(), section, "give both tls_cert and tls_key, or neither");
        for (key, path) in [("tls_ca", self.ca), ("tls_cert", self.cert), ("tls_key", self.key)] {
            if let Some(path) = path {
                v.check(
                    path.is_file(),
                    format!("{section}.{key}"),
                    format!("{} is not a readable file", path.display()),
                );
            }
        }
    }

    /// async-nats options that use these files.
    pub fn apply(&self, mut opts: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if let Some(ca) = self.ca {
            opts = opts.add_root_certificates(ca.to_path_buf());
        }
        if let (Some(cert), Some(key)) = (self.cert, self.key) {
            opts = opts.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
        }
        if self.first {
            opts = opts.tls_first();
        }
        opts
    }
}

/// Every server of a `url` value, or what is wrong with the first bad one.
pub fn servers(value: &str) -> Result<Vec<ServerAddr>, String> {
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{value:?} has an empty entry: separate URLs with single commas"));
    }
    parts
        .iter()
        .map(|p| {
            let scheme_ok = ["nats://", "tls://"].iter().any(|s| p.starts_with(s) && p.len() > s.len());
            if !scheme_ok {
                return Err(format!("{p:?} is not a NATS URL like nats://127.0.0.1:4222"));
            }
            p.parse::<ServerAddr>().map_err(|e| format!("{p:?} is not a NATS URL: {e}"))
        })
        .collect()
}

/// `host:port` of every server when all are plain `nats://` (what a
/// connection without TLS can reach); `None` if any is `tls://` or
/// websocket, or there are none.
pub fn plain_addrs(servers: &[ServerAddr]) -> Option<Vec<String>> {
    if servers.is_empty() || servers.iter().any(|s| s.tls_required() || s.is_websocket()) {
        return None;
    }
    Some(servers.iter().map(|s| format!("{}:{}", s.host(), s.port())).collect())
}

/// `host:port` of every server, and whether any is `tls://` (then every
/// connection must use TLS, as async-nats does); `None` if any is
/// websocket, or there are none.
pub fn tcp_addrs(servers: &[ServerAddr]) -> Option<(Vec<String>, bool)> {
    if servers.is_empty() || servers.iter().any(|s| s.is_websocket()) {
        return None;
    }
    let addrs = servers.iter().map(|s| format!("{}:{}", s.host(), s.port())).collect();
    Some((addrs, servers.iter().any(|s| s.tls_required())))
}

/// The host of a `host:port` entry (an IPv6 host without its brackets).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Most servers a [`ServerList`] holds: what INFO names beyond that is
/// ignored (a server listening on every interface may name many).
const MAX_SERVERS: usize = 64;

/// The servers a connection of our own (not async-nats) tries in turn: the
/// configured ones, and the cluster members the servers name in INFO
/// (`connect_urls`). A connection made through one seed URL can then reach
/// the rest of the cluster when that server goes away, as stock clients do.
#[derive(Debug, Clone)]
pub struct ServerList {
    addrs: Vec<String>,
    next: usize,
    /// The first `configured` addresses are the configured ones.
    configured: usize,
}

impl ServerList {
    /// `host:port` entries, the first try at `start` (mod the count).
    pub fn new(configured: Vec<String>, start: usize) -> ServerList {
        let next = start % configured.len().max(1);
        ServerList { next, configured: configured.len(), addrs: configured }
    }

    /// The name `addr`'s TLS certificate is checked against: its host, but
    /// for a member learnt from INFO by IP address, the first configured
    /// host name, as nats.go does (a cluster's certificates name the
    /// cluster, INFO names its members by address).
    pub fn tls_name<'a>(&'a self, addr: &'a str) -> &'a str {
        let host = host_of(addr);
        let configured = &self.addrs[..self.configured.min(self.addrs.len())];
        let is_ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok();
        if is_ip(host) && !configured.iter().any(|a| a == addr) {
            if let Some(name) = configured.iter().map(|a| host_of(a)).find(|h| !is_ip(h)) {
                return name;
            }
        }
        host
    }

    /// The server to try next (`None` if there are none).
    pub fn next_addr(&mut self) -> Option<String> {
        let addr = self.addrs.get(self.next % self.addrs.len().max(1))?.clone();
        self.next = (self.next + 1) % self.addrs.len();
        Some(addr)
    }

    /// Add the `connect_urls` of a server's INFO (its JSON) not known yet.
    pub fn learn(&mut self, info_json: &[u8]) {
        self.learn_where(info_json, |_| true);
    }

    /// [`ServerList::learn`] for the plaintext INFO before a TLS handshake,
    /// which anyone on the path could have written: only members named by
    /// address, whose certificates are checked against a configured name
    /// ([`ServerList::tls_name`]). Members named by host name are learnt
    /// from INFOs that come over TLS.
    pub fn learn_unverified(&mut self, info_json: &[u8]) {
        self.learn_where(info_json, |addr| host_of(addr).parse::<std::net::IpAddr>().is_ok());
    }

    fn learn_where(&mut self, info_json: &[u8], keep: impl Fn(&str) -> bool) {
        #[derive(serde::Deserialize)]
        struct Info {
            #[serde(default)]
            connect_urls: Vec<String>,
        }
        let Ok(info) = serde_json::from_slice::<Info>(info_json) else { return };
        for url in info.connect_urls {
            let addr = url.trim_start_matches("nats://").to_string();
            if self.addrs.len() < MAX_SERVERS && !addr.is_empty() && !self.addrs.contains(&addr) && keep(&addr) {
                self.addrs.push(addr);
            }
        }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }
}

/// Connect with `opts` to the servers of a `url` value; the error says what
/// was wrong with the list or the connection.
pub async fn connect(opts: async_nats::ConnectOptions, url: &str) -> Result<async_nats::Client, String> {
    opts.connect(servers(url)?).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_comma_separated_cluster() {
        assert_eq!(servers("nats://127.0.0.1:4222").unwrap().len(), 1);
        let three = servers("nats://a:4222, nats://b:4223,tls://c:4224").unwrap();
        assert_eq!(three.iter().map(|s| s.port()).collect::<Vec<_>>(), [4222, 4223, 4224]);
        assert_eq!(plain_addrs(&servers("nats://a:4222, nats://b:4223").unwrap()).unwrap(), ["a:4222", "b:4223"]);
        assert_eq!(plain_addrs(&three), None, "one is tls://");
        assert_eq!(plain_addrs(&[]), None);
        assert_eq!(tcp_addrs(&three), Some((vec!["a:4222".into(), "b:4223".into(), "c:4224".into()], true)));
        assert_eq!(tcp_addrs(&servers("nats://a:4222").unwrap()), Some((vec!["a:4222".into()], false)));
        assert_eq!(tcp_addrs(&[]), None);
        for bad in ["", "nats://a:1,", "nats://a:1,,nats://b:2", "http://a:1", "nats://a:1,b:2", "nats://a:99999"] {
            assert!(servers(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_files_must_exist_and_come_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "").unwrap();
        let missing = dir.path().join("missing.pem");
        let problems = |files: TlsFiles| {
            let mut v = Validator::default();
            files.validate(&mut v, "nats");
            v.into_problems().into_iter().map(|p| p.path).collect::<Vec<_>>()
        };
        assert!(problems(TlsFiles { ca: Some(&ca), ..Default::default() }).is_empty());
        assert!(problems(TlsFiles::default()).is_empty());
        assert_eq!(problems(TlsFiles { ca: Some(&missing), ..Default::default() }), ["nats.tls_ca"]);
        assert_eq!(problems(TlsFiles { cert: Some(&ca), ..Default::default() }), ["nats"]);
        assert_eq!(problems(TlsFiles { cert: Some(&ca), key: Some(&missing), ..Default::default() }), ["nats.tls_key"]);
    }

    #[test]
    fn learnt_members_named_by_address_are_checked_against_the_configured_name() {
        let mut list = ServerList::new(vec!["10.0.0.9:4222".into(), "nats.example.com:4222".into()], 0);
        list.learn(br#"{"connect_urls":["10.0.0.2:4222","n3.example.com:4222","[fd00::3]:4222"]}"#);
        assert_eq!(list.tls_name("10.0.0.9:4222"), "10.0.0.9", "configured by address: as given");
        assert_eq!(list.tls_name("nats.example.com:4222"), "nats.example.com");
        assert_eq!(list.tls_name("10.0.0.2:4222"), "nats.example.com");
        assert_eq!(list.tls_name("[fd00::3]:4222"), "nats.example.com");
        assert_eq!(list.tls_name("n3.example.com:4222"), "n3.example.com", "learnt by name: its own");
        let mut plaintext = ServerList::new(vec!["nats.example.com:4222".into()], 0);
        plaintext.learn_unverified(br#"{"connect_urls":["10.0.0.2:4222","evil.example.net:4222"]}"#);
        assert_eq!(plaintext.addrs(), ["nats.example.com:4222", "10.0.0.2:4222"], "no names from plaintext INFO");
        let mut by_ip = ServerList::new(vec!["10.0.0.9:4222".into()], 0);
        by_ip.learn(br#"{"connect_urls":["10.0.0.2:4222"]}"#);
        assert_eq!(by_ip.tls_name("10.0.0.2:4222"), "10.0.0.2", "no configured name to use");
    }

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("nats.example.com:4222"), "nats.example.com");
        assert_eq!(host_of("10.0.0.1:4222"), "10.0.0.1");
        assert_eq!(host_of("[::1]:4222"), "::1");
        assert_eq!(host_of("bare"), "bare");
    }

    #[test]
    fn a_server_list_learns_cluster_members_from_info() {
        let mut list = ServerList::new(vec!["a:1".into(), "b:2".into()], 1);
        assert_eq!(list.next_addr().as_deref(), Some("b:2"), "starts where asked");
        assert_eq!(list.next_addr().as_deref(), Some("a:1"));
        list.learn(br#"{"server_id":"x","connect_urls":["b:2","c:3","[::1]:4"]}"#);
        assert_eq!(list.addrs(), ["a:1", "b:2", "c:3", "[::1]:4"], "new members added once, in order");
        list.learn(b"{}");
        list.learn(b"not json");
        assert_eq!(list.addrs().len(), 4, "nothing learnt from INFO without members");
        let order: Vec<String> = (0..4).filter_map(|_| list.next_addr()).collect();
        assert_eq!(order, ["b:2", "c:3", "[::1]:4", "a:1"], "every server in turn");
        let many: Vec<String> = (0..100).map(|i| format!("\"h{i}:1\"")).collect();
        list.learn(format!("{{\"connect_urls\":[{}]}}", many.join(",")).as_bytes());
        assert_eq!(list.addrs().len(), MAX_SERVERS);
        assert_eq!(ServerList::new(vec![], 3).next_addr(), None);
    }
}
