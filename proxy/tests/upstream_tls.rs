//! `tls://` upstreams against a real nats-server that requires TLS and
//! verifies client certificates: the delivery connection speaks TLS, trusts
//! only `upstream.tls_ca`, presents `upstream.tls_cert`, and carries the
//! tenants' deliveries itself (nats-server's `/connz` shows it did), also
//! to a server with `handshake_first` (`upstream.tls_first`).

mod common;

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

use common::*;
use flotilla_core::metrics::Counter;
use flotilla_proxy::config::Upstream as UpstreamConfig;
use flotilla_proxy::delivery::Raw as RawMsg;
use flotilla_proxy::upstream::conn::{Options, Sink, TlsOptions, Upstream};
use flotilla_testsupport::tls::Pki;
use flotilla_testsupport::{free_port, NatsServer};

/// A platform-side client straight to the TLS nats-server.
async fn direct(pki: &Pki, nats: &NatsServer, first: bool) -> async_nats::Client {
    // As the proxy's start-up does: with ring and aws-lc-rs both compiled
    // in (the workspace's object stores), rustls will not pick one itself.
    flotilla_core::daemon::install_crypto_provider();
    let opts = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client.0.clone(), pki.client.1.clone());
    let opts = if first { opts.tls_first() } else { opts };
    opts.connect(nats.tls_url()).await.expect("a TLS client straight to nats-server")
}

#[tokio::test]
async fn tenants_get_their_deliveries_over_a_verified_tls_delivery_connection() {
    deliveries_over_tls(false).await;
}

#[tokio::test]
async fn with_tls_first_a_handshake_first_server_delivers_too() {
    deliveries_over_tls(true).await;
}

/// `first`: the server has `handshake_first`, the proxy `tls_first`.
async fn deliveries_over_tls(first: bool) {
    let pki = Pki::new("flotilla test CA");
    let monitor = free_port();
    let more = ["-m".into(), monitor.to_string()];
    let nats = if first { NatsServer::start_tls_first(&pki, &more) } else { NatsServer::start_tls(&pki, &more) };
    let url = nats.tls_url();
    let tables = format!("{}tls_first = {first}\n", pki.config_lines());
    let s = stack_over(nats, &url, Extra { top: "", tables: &tables }).await;
    let platform = direct(&pki, &s.nats, first).await;

    let tenant = s.client("acme", &s.acme).await;
    let mut sub = tenant.subscribe("logs.>").await.unwrap();
    tenant.flush().await.unwrap();
    // Published until the first arrives: the proxy's upstream subscription
    // is live once one does.
    let mut first = None;
    for _ in 0..100 {
        platform.publish("logs.acme.web.iad.h1", "prime".into()).await.unwrap();
        platform.flush().await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            first = Some(m);
            break;
        }
    }
    let first = first.expect("a delivery through the proxy from a TLS upstream");
    assert_eq!(first.subject.as_str(), "logs.web.iad.h1", "rewritten into the tenant's view");
    platform.publish("logs.globex.web.iad.h1", "globex only".into()).await.unwrap();
    platform.publish("logs.acme.db.iad.h2", "after".into()).await.unwrap();
    platform.flush().await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("in time").expect("open");
        assert_ne!(&m.payload[..], b"globex only", "another org's message leaked");
        if &m.payload[..] == b"after" {
            assert_eq!(m.subject.as_str(), "logs.db.iad.h2");
            break;
        }
    }

    // nats-server's view: the proxy's delivery connection, over TLS, is
    // what delivered them (not its async-nats connection).
    let addr = format!("127.0.0.1:{monitor}").parse().unwrap();
    let connz: serde_json::Value = serde_json::from_str(&http_get(addr, "/connz").await).unwrap();
    let conns = connz["connections"].as_array().expect("connections");
    let delivery = conns
        .iter()
        .find(|c| c["name"] == "flotilla-proxy deliveries")
        .unwrap_or_else(|| panic!("no delivery connection in {conns:?}"));
    assert!(delivery["tls_version"].as_str().is_some_and(|v| !v.is_empty()), "{delivery}");
    assert!(delivery["out_msgs"].as_u64() >= Some(2), "{delivery}");
    let other = conns.iter().find(|c| c["name"] == "flotilla-proxy").expect("the async-nats connection");
    // (At most the proxy's own mark at start, `barrier`: two deliveries
    // the slow way would be two more.)
    let slow_way = other["out_msgs"].as_u64().unwrap_or_else(|| panic!("out_msgs in {other}"));
    assert!(slow_way <= 1, "deliveries went the slow way: {other}");
}

#[derive(Clone, Default)]
struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Sink for Count {
    fn deliver(&mut self, msgs: &[RawMsg<'_>]) {
        self.0.fetch_add(msgs.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

fn options(nats: &NatsServer, pki: &Pki, trust: &Path, reconnects: &Counter) -> Options {
    let cfg = UpstreamConfig {
        url: String::new(),
        user: None,
        password: None,
        tls_ca: Some(trust.to_path_buf()),
        tls_cert: Some(pki.client.0.clone()),
        tls_key: Some(pki.client.1.clone()),
        tls_first: false,
    };
    Options {
        servers: vec![format!("127.0.0.1:{}", nats.port())],
        user: None,
        password: None,
        ping_interval: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(200),
        reconnects: reconnects.clone(),
        connected: flotilla_core::metrics::Registry::default().gauge("connected", "test", &[]),
        // Not required by the URL (`nats://`): the server's INFO asks for it.
        tls: Some(TlsOptions {
            connector: flotilla_proxy::tls::connector(&cfg).unwrap(),
            required: false,
            first: false,
        }),
    }
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("flotilla test CA");
    let stranger = Pki::new("someone else's CA");
    let nats = NatsServer::start_tls(&pki, &[]);
    let platform = direct(&pki, &nats, false).await;
    let registry = flotilla_core::metrics::Registry::default();
    let (failed, ok_failed) = (registry.counter("wrong", "test", &[]), registry.counter("right", "test", &[]));

    // Trusting the wrong CA: every handshake fails, nothing is delivered.
    let (wrong, right) = (Count::default(), Count::default());
    let up = Upstream::start(options(&nats, &pki, &stranger.ca, &failed), wrong.clone());
    up.subscribe(1, "logs.acme.>", None);
    // Trusting the right one (and upgrading because INFO requires it).
    let ok = Upstream::start(options(&nats, &pki, &pki.ca, &ok_failed), right.clone());
    ok.subscribe(1, "logs.acme.>", None);
    let mut n = 0;
    while right.0.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(n < 100, "the connection trusting the right CA got nothing");
        platform.publish("logs.acme.web.iad.h1", "x".into()).await.unwrap();
        platform.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        n += 1;
    }
    assert_eq!(wrong.0.load(std::sync::atomic::Ordering::Relaxed), 0, "a server nobody vouched for was used");
    eventually(Duration::from_secs(10), "a failed handshake counted", || async { failed.get() >= 1 }).await;
    assert_eq!(ok_failed.get(), 0, "the right CA's connection never failed");
    drop(up);
    drop(ok);
}

/// A TLS cluster whose certificates name the cluster (`localhost`), not
/// its members' addresses, as INFO does: with only one seed configured by
/// name, the delivery connection fails over to the member INFO named by
/// address, checking that member's certificate against the seed's name.
#[tokio::test]
async fn it_fails_over_to_a_tls_member_learnt_by_address() {
    flotilla_core::daemon::install_crypto_provider();
    let pki = Pki::for_server("flotilla test CA", &["localhost"]);
    let (ca, cb) = (free_port(), free_port());
    let node = |own: u16, other: u16| {
        NatsServer::start_with(&[pki.server_args(), flotilla_testsupport::cluster_args(own, &[other])].concat())
    };
    let (mut a, b) = (node(ca, cb), node(cb, ca));
    let platform = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client.0.clone(), pki.client.1.clone())
        .connect(format!("tls://localhost:{}", b.port()))
        .await
        .expect("a TLS client of b");
    let failed = flotilla_core::metrics::Registry::default().counter("failed", "test", &[]);
    let mut opts = options(&a, &pki, &pki.ca, &failed);
    opts.servers = vec![format!("localhost:{}", a.port())];
    opts.tls = opts.tls.map(|t| TlsOptions { required: true, ..t });
    let got = Count::default();
    let up = Upstream::start(opts, got.clone());
    up.subscribe(1, "logs.acme.>", None);

    let arrives = |what: &'static str| {
        let (got, platform) = (got.clone(), platform.clone());
        async move {
            let before = got.0.load(std::sync::atomic::Ordering::Relaxed);
            for _ in 0..200 {
                let _ = platform.publish("logs.acme.web.iad.h1", what.into()).await;
                let _ = platform.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                if got.0.load(std::sync::atomic::Ordering::Relaxed) > before {
                    return true;
                }
            }
            false
        }
    };
    assert!(arrives("via a").await, "never delivered through the seed");
    a.stop();
    // Only b is left, known by the address INFO gave, 127.0.0.1, which its
    // certificate does not name.
    assert!(arrives("via b").await, "not delivered after the seed went away");
    drop(up);
}
