//! The delivery connection against a real nats-server: subscriptions by sid,
//! queue groups, headers passed through as bytes, unsubscribe, and a server
//! restart after which every subscription is back (and only those that
//! still exist, whatever changed while it was away).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proxy::delivery::Raw;
use flotilla_proxy::upstream::conn::{Options, Sink, Upstream};
use flotilla_testsupport::NatsServer;

/// sid, subject, reply, header bytes, payload.
type Got = (u64, String, Option<String>, Option<Vec<u8>>, Vec<u8>);

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Got>>>);

impl Sink for Collect {
    fn deliver(&mut self, msgs: &[Raw<'_>]) {
        let mut got = self.0.lock().unwrap();
        for m in msgs {
            got.push((
                m.sid,
                m.subject.into(),
                m.reply.map(Into::into),
                m.headers.map(<[u8]>::to_vec),
                m.payload.to_vec(),
            ));
        }
    }
}

impl Collect {
    fn take(&self) -> Vec<Got> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    async fn wait_for(&self, n: usize) -> Vec<Got> {
        for _ in 0..200 {
            if self.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.take()
    }
}

/// Publish "after" on `subject` until what was delivered meets `done`
/// (a restarted server takes a while to be back, and the connection to
/// find it): everything delivered meanwhile.
async fn publish_until(
    publisher: &async_nats::Client,
    subject: &'static str,
    got: &Collect,
    done: impl Fn(&[Got]) -> bool,
) -> Vec<Got> {
    let mut delivered = vec![];
    for _ in 0..100 {
        publisher.publish(subject, "after".into()).await.unwrap();
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        delivered.extend(got.take());
        if done(&delivered) {
            break;
        }
    }
    delivered
}

fn options(nats: &NatsServer) -> Options {
    Options {
        servers: vec![format!("127.0.0.1:{}", nats.port())],
        user: None,
        password: None,
        ping_interval: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(500),
        reconnects: flotilla_core::metrics::Registry::default().counter("reconnects", "test", &[]),
        connected: flotilla_core::metrics::Registry::default().gauge("connected", "test", &[]),
        tls: None,
    }
}

#[tokio::test]
async fn subscriptions_headers_queue_groups_and_a_server_restart() {
    let mut nats = NatsServer::start();
    let got = Collect::default();
    let up = Upstream::start(options(&nats), got.clone());
    up.subscribe(1, "logs.acme.>", None);
    up.subscribe(2, "logs.acme.web.>", Some("q"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let publisher = async_nats::connect(nats.url()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "h1/f/x/0");
    publisher.publish_with_headers("logs.acme.web.iad.h1", headers, "one".into()).await.unwrap();
    publisher.publish_with_reply("logs.acme.db.iad.h1", "_INBOX.r", "two".into()).await.unwrap();
    publisher.publish("logs.globex.web.iad.h1", "not ours".into()).await.unwrap();
    publisher.flush().await.unwrap();

    let mut seen = got.wait_for(3).await;
    seen.sort_by_key(|m| (m.0, m.4.clone()));
    assert_eq!(seen.len(), 3, "{seen:?}");
    let hdr = b"NATS/1.0\r\nNats-Msg-Id: h1/f/x/0\r\n\r\n".to_vec();
    assert_eq!(seen[0], (1, "logs.acme.web.iad.h1".into(), None, Some(hdr.clone()), b"one".to_vec()));
    assert_eq!(seen[1], (1, "logs.acme.db.iad.h1".into(), Some("_INBOX.r".into()), None, b"two".to_vec()));
    assert_eq!(seen[2], (2, "logs.acme.web.iad.h1".into(), None, Some(hdr), b"one".to_vec()));

    up.unsubscribe(2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    publisher.publish("logs.acme.web.iad.h1", "three".into()).await.unwrap();
    publisher.flush().await.unwrap();
    let seen = got.wait_for(1).await;
    assert_eq!(seen.iter().map(|m| m.0).collect::<Vec<_>>(), [1], "sid 2 is gone: {seen:?}");

    // The server goes away and comes back: the subscriptions are restored.
    nats.restart();
    let publisher = async_nats::connect(nats.url()).await.unwrap();
    let delivered = publish_until(&publisher, "logs.acme.api.iad.h1", &got, |d| !d.is_empty()).await;
    assert!(delivered.iter().any(|m| m.0 == 1 && m.4 == b"after"), "resubscribed after the restart: {delivered:?}");
    assert!(delivered.iter().all(|m| m.0 == 1), "only sid 1 was restored: {delivered:?}");
}

/// Subscriptions made and dropped while the server is away: when it is
/// back, the connection has exactly the ones that still exist.
#[tokio::test]
async fn changes_made_during_an_outage_are_what_the_connection_comes_back_with() {
    let mut nats = NatsServer::start();
    let got = Collect::default();
    let up = Upstream::start(options(&nats), got.clone());
    up.subscribe(1, "logs.acme.>", None);
    up.subscribe(2, "logs.acme.web.>", None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    up.unsubscribe(1);
    for sid in 10..20_000 {
        up.subscribe(sid, "logs.acme.>", None);
        up.unsubscribe(sid);
    }
    up.subscribe(3, "logs.acme.db.>", Some("q"));
    nats.restart();

    let publisher = async_nats::connect(nats.url()).await.unwrap();
    let mut delivered = publish_until(&publisher, "logs.acme.db.iad.h1", &got, |d| d.iter().any(|m| m.0 == 3)).await;
    assert!(delivered.iter().any(|m| m.0 == 3), "subscribed during the outage: {delivered:?}");
    publisher.publish("logs.acme.web.iad.h1", "web".into()).await.unwrap();
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    delivered.extend(got.take());
    let mut sids: Vec<u64> = delivered.iter().map(|m| m.0).collect();
    sids.sort();
    sids.dedup();
    assert_eq!(sids, [2, 3], "sid 1 and the churned ones are gone, 2 was kept: {delivered:?}");
}

/// A server that accepts and then says nothing holds the connection only
/// for `connect_timeout`; the next server is tried and delivers.
#[tokio::test]
async fn a_silent_server_is_given_up_after_the_connect_timeout() {
    let nats = NatsServer::start();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut kept = vec![];
        while let Ok((sock, _)) = silent.accept().await {
            kept.push(sock);
        }
    });
    let mut opts = options(&nats);
    opts.servers.insert(0, silent_addr.to_string());
    opts.connect_timeout = Duration::from_millis(300);
    let reconnects = opts.reconnects.clone();
    let got = Collect::default();
    let up = Upstream::start(opts, got.clone());
    up.subscribe(7, "logs.acme.>", None);

    let publisher = async_nats::connect(nats.url()).await.unwrap();
    let mut delivered = vec![];
    for _ in 0..40 {
        publisher.publish("logs.acme.web.iad.h1", "hello".into()).await.unwrap();
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        delivered = got.take();
        if !delivered.is_empty() {
            break;
        }
    }
    assert!(delivered.iter().any(|m| m.0 == 7 && m.4 == b"hello"), "the second server delivers: {delivered:?}");
    assert!(reconnects.get() >= 1, "the silent server's attempt is counted");
    held.abort();
}

#[tokio::test]
async fn given_one_seed_it_fails_over_to_the_cluster_members_info_named() {
    let (ca, cb) = (flotilla_testsupport::free_port(), flotilla_testsupport::free_port());
    let mut a = NatsServer::start_clustered(ca, &[cb]);
    let b = NatsServer::start_clustered(cb, &[ca]);
    let got = Collect::default();
    // Only `a` is configured.
    let up = Upstream::start(options(&a), got.clone());
    up.subscribe(7, "logs.acme.>", None);
    let publisher = async_nats::connect(b.url()).await.unwrap();
    // Through b while the connection is on a: once the route carries the
    // interest, messages arrive.
    assert!(arrives(&publisher, &got, "via a").await, "never delivered through the seed");
    a.stop();
    // Now only b is left; it was never configured.
    assert!(arrives(&publisher, &got, "via b").await, "not delivered after the seed went away");
    drop(up);
}

/// Publish `text` through `publisher` every 100 ms until the sink has it (20 s at most).
async fn arrives(publisher: &async_nats::Client, got: &Collect, text: &str) -> bool {
    for _ in 0..200 {
        let _ = publisher.publish("logs.acme.web.iad.h1", text.to_string().into()).await;
        let _ = publisher.flush().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if got.take().iter().any(|m| m.0 == 7 && m.4 == text.as_bytes()) {
            return true;
        }
    }
    false
}

/// A server that greets, answers the first PING (the connection is up) and
/// then never another: the connection is dropped as stale and made again.
#[tokio::test]
async fn a_server_that_stops_answering_pings_is_left_for_a_new_connection() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = mute.local_addr().unwrap();
    let (accepted, mut accepts) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((sock, _)) = mute.accept().await {
            let _ = accepted.send(());
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                wr.write_all(b"INFO {\"max_payload\":1048576}\r\n").await.unwrap();
                let mut lines = BufReader::new(rd).lines();
                let mut pings = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "PING" {
                        pings += 1;
                        if pings == 1 {
                            let _ = wr.write_all(b"PONG\r\n").await;
                        }
                    }
                }
            });
        }
    });
    let opts = Options {
        servers: vec![addr.to_string()],
        user: None,
        password: None,
        ping_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(100),
        reconnects: flotilla_core::metrics::Registry::default().counter("reconnects", "test", &[]),
        connected: flotilla_core::metrics::Registry::default().gauge("connected", "test", &[]),
        tls: None,
    };
    let reconnects = opts.reconnects.clone();
    let up = Upstream::start(opts, Collect::default());
    for n in 1..=2 {
        let next = tokio::time::timeout(Duration::from_secs(5), accepts.recv()).await;
        assert!(matches!(next, Ok(Some(()))), "connection {n} was made");
    }
    assert!(reconnects.get() >= 1, "the stale connection is counted");
    drop(up);
    server.abort();
}
