//! What tenants share upstream cannot be turned against anyone else:
//! queue groups (nats-server groups queue subscribers by name across
//! subjects), JetStream de-duplication ids and the ledger's origin headers
//! (one stream holds every org), other headers nats-server acts on
//! (refused), and subscriptions spent by an UNSUB limit
//! (gone upstream, and no longer counted against the client), against a
//! real nats-server behind the proxy.

mod common;

use std::time::Duration;

use flotilla_proxy::auth::Role;
use futures::StreamExt;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_queue_group_never_joins_the_platforms_group_of_the_same_name() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut platform = direct.queue_subscribe("logs.>", "workers".into()).await.unwrap();
    direct.flush().await.unwrap();
    let mut tenant = s.raw_as("acme", &s.acme).await;
    tenant.send("SUB logs.> workers 1\r\n").await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut tenant, Some("1")).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), platform.next()).await {}

    for i in 0..50 {
        direct.publish("logs.acme.web.iad.h1", format!("m-{i}").into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    let mut platform_got = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), platform.next()).await {
        platform_got += usize::from(m.payload.starts_with(b"m-"));
    }
    assert_eq!(platform_got, 50, "the platform's group lost messages to a tenant's group of the same name");
    let tenant_got = payloads(&tenant.drain(Duration::from_millis(500)).await);
    assert_eq!(tenant_got.len(), 50, "the tenant's group is a group of its own: {tenant_got:?}");
}

/// Queue group names may have dots (`svc.v1`), as with nats-server: the
/// group's members share the work, each message going to one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_with_dots_share_the_work() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut members = Vec::new();
    for _ in 0..2 {
        let mut m = s.raw_as("acme", &s.acme).await;
        m.send("SUB logs.web.> svc.v1 1\r\n").await;
        assert_eq!(errors(&m.sync().await), Vec::<String>::new());
        members.push(m);
    }
    for i in 0..20 {
        direct.publish("logs.acme.web.iad.h1", format!("m-{i:02}").into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    let mut got = Vec::new();
    for m in &mut members {
        got.extend(payloads(&m.drain(Duration::from_millis(500)).await));
    }
    got.sort();
    assert_eq!(got, (0..20).map(|i| format!("m-{i:02}")).collect::<Vec<_>>(), "each once, to one member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_message_ids_cannot_suppress_another_orgs_events() {
    let s = stack().await;
    let direct = s.direct().await;
    let js = async_nats::jetstream::new(direct.clone());
    let mut stream = logs_stream(&js).await;

    // acme publishes first, under the id globex's agent is about to use.
    let acme = async_nats::jetstream::new(s.client("acme", &s.acme_pub).await);
    let forged = || {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "globex-host/f/00ff/0");
        h
    };
    let first = acme.publish_with_headers("logs.web.iad.h1", forged(), "acme-1".into()).await.unwrap();
    assert!(!first.await.unwrap().duplicate);
    let again = acme.publish_with_headers("logs.web.iad.h1", forged(), "acme-2".into()).await.unwrap();
    assert!(again.await.unwrap().duplicate, "within its own org, an id still de-duplicates");

    let agent = async_nats::jetstream::new(s.client("host-agent", &s.agent).await);
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "globex-host/f/00ff/0");
    h.insert("Flotilla-Seq", "1");
    let ack = agent.publish_with_headers("logs.globex.web.iad.h1", h, "globex-1".into()).await.unwrap();
    assert!(!ack.await.unwrap().duplicate, "globex's event was taken for acme's duplicate");

    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    let stored = stream.get_raw_message(1).await.unwrap();
    assert_eq!(&stored.payload[..], b"acme-1");
    let headers = stored.headers;
    assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("acme:globex-host/f/00ff/0"));
    let globex = stream.get_raw_message(2).await.unwrap();
    assert_eq!(globex.headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("globex-host/f/00ff/0"));
    assert_eq!(globex.headers.get("Flotilla-Seq").map(|v| v.as_str()), Some("1"), "agents' headers go as they are");
}

/// An agent token bound to its host (`token new --host`) speaks for that
/// host only: another host's origin ids (JetStream de-duplicates by them
/// across every org, the ledger counts by them) and heartbeats are refused,
/// and its own go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_bound_to_its_host_cannot_use_another_hosts_ids_or_heartbeat() {
    let s = stack().await;
    let direct = s.direct().await;
    let js = async_nats::jetstream::new(direct.clone());
    let mut stream = logs_stream(&js).await;
    let mut beats = direct.subscribe("flotilla.agent.>").await.unwrap();
    direct.flush().await.unwrap();
    let (orgs, hosts) = (["acme".to_string()], ["h-acme".to_string()]);
    let secret = flotilla_proxy::cli::token_new_for_hosts(
        &s.tokens,
        Role::Agent,
        &orgs,
        &hosts,
        Some("bound".into()),
        None,
        false,
    )
    .expect("token new --host");
    let mut raw = s.raw_as("bound", &secret).await;
    let hpub = |id: &str, payload: &str| {
        let block = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n");
        format!("HPUB logs.acme.web.iad.h-acme {} {}\r\n{block}{payload}\r\n", block.len(), block.len() + payload.len())
    };
    raw.send(&hpub("globex-h1/syslog/5", "forged")).await;
    raw.send(&hpub("h-acme/syslog/5", "own")).await;
    raw.send("PUB flotilla.agent.globex-h1.status 6\r\nforged\r\nPUB flotilla.agent.h-acme.status 3\r\nown\r\n").await;
    assert_eq!(
        errors(&raw.sync().await),
        [
            "'Permissions Violation for Publish to \"logs.acme.web.iad.h-acme\" with header \"Nats-Msg-Id\"'",
            "'Permissions Violation for Publish to \"flotilla.agent.globex-h1.status\"'",
        ]
    );
    let beat = tokio::time::timeout(Duration::from_secs(5), beats.next()).await.unwrap().unwrap();
    assert_eq!((beat.subject.as_str(), &beat.payload[..]), ("flotilla.agent.h-acme.status", &b"own"[..]));
    assert!(tokio::time::timeout(Duration::from_millis(300), beats.next()).await.is_err(), "one heartbeat only");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stream.info().await.unwrap().state.messages == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    assert_eq!(&stream.get_raw_message(1).await.unwrap().payload[..], b"own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_spent_by_its_unsub_limit_is_gone_upstream_too() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut raw = s.raw_as("acme", &s.acme).await;
    raw.send("SUB logs.> 1\r\n").await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut raw, Some("1")).await;
    // Primes delivered so far (one, or more if the first were slow).
    let late = raw.drain(Duration::from_millis(300)).await;
    let primed = 1 + late.iter().filter(|f| matches!(f, Frame::Msg { payload, .. } if payload == "prime")).count();
    assert_eq!(s.metric("flotilla_proxy_upstream_subscriptions").await, Some(1.0));
    // One more than were delivered already.
    raw.send(&format!("UNSUB 1 {}\r\n", primed + 1)).await;
    assert!(errors(&raw.sync().await).is_empty());
    for i in 0..5 {
        direct.publish("logs.acme.web.iad.h1", format!("m-{i}").into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    assert_eq!(payloads(&raw.drain(Duration::from_millis(500)).await), ["m-0"]);
    eventually(Duration::from_secs(5), "the upstream subscription to go", || async {
        s.metric("flotilla_proxy_upstream_subscriptions").await == Some(0.0)
    })
    .await;
    // The sid is free again.
    raw.send("SUB logs.> 1\r\n").await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut raw, Some("1")).await;
}

/// Old-style requests (nats.go's before inboxes were shared, and many
/// small clients still): a SUB and `UNSUB <sid> 1` per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_subscriptions_do_not_count_against_the_limit() {
    let s = stack_with(Extra { tables: "[limits]\nmax_subscriptions = 10", ..Default::default() }).await;
    let direct = s.direct().await;
    serve(&direct, "logs.acme.rpc.>", None).await;
    // Answered: the server has the service's SUB (a flush only says it was
    // written), so the proxy's first request cannot come before it.
    direct.request("logs.acme.rpc.ready", "".into()).await.unwrap();
    let mut raw = s.raw_as("acme", &s.acme_pub).await;
    for i in 0..40 {
        raw.send(&format!("SUB _INBOX.req.{i} {i}\r\nUNSUB {i} 1\r\nPUB logs.rpc.x _INBOX.req.{i} 4\r\nq-{i:02}\r\n"))
            .await;
        let got = raw.frame().await;
        let Frame::Msg { sid, payload, .. } = &got else { panic!("request {i}: {got:?}") };
        assert_eq!((sid.as_str(), payload.as_str()), (i.to_string().as_str(), format!("q-{i:02}").as_str()));
    }
    // And subscriptions spent upstream: one message each.
    for i in 100..140 {
        raw.send(&format!("SUB logs.web.{i} {i}\r\nUNSUB {i} 1\r\n")).await;
        prime_raw(&direct, &format!("logs.acme.web.{i}"), &mut raw, Some(&i.to_string())).await;
    }
    assert!(errors(&raw.sync().await).is_empty());
    eventually(Duration::from_secs(5), "the spent upstream subscriptions to go", || async {
        s.metric("flotilla_proxy_upstream_subscriptions").await == Some(0.0)
    })
    .await;
}

/// Headers that would reach past the org are refused, with nothing
/// published: the ledger's origin headers, and the `Nats-*` headers
/// nats-server acts on other than `Nats-Msg-Id` (an expected last id is
/// answered with the stream's last id, globex's; a trace destination
/// would have the server publish into globex's subjects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_reach_past_the_org_are_refused() {
    let s = stack().await;
    let direct = s.direct().await;
    let js = async_nats::jetstream::new(direct.clone());
    let mut stream = logs_stream(&js).await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "globex-host/f/00ff/9");
    js.publish_with_headers("logs.globex.web.iad.h1", h, "globex".into()).await.unwrap().await.unwrap();
    let mut globex_spy = direct.subscribe("logs.globex.>").await.unwrap();
    direct.flush().await.unwrap();

    let mut tenant = s.raw_as("acme", &s.acme_pub).await;
    let mut agent = s.raw_as("acme-agent", &s.acme_agent).await;
    tenant.send("SUB _INBOX.a 1\r\n").await;
    for (name, value) in [
        ("Flotilla-Seq", "1"),
        ("Nats-Expected-Last-Msg-Id", "guess"),
        ("Nats-Expected-Last-Sequence", "0"),
        ("nats-trace-dest", "logs.globex.web.iad.h1"),
        ("Nats-Rollup", "all"),
    ] {
        let block = format!("NATS/1.0\r\n{name}: {value}\r\n\r\n");
        let hpub = |subject: &str| format!("HPUB {subject} _INBOX.a {} {}\r\n{block}\r\n", block.len(), block.len());
        tenant.send(&hpub("logs.web.iad.h1")).await;
        let want = format!("'Permissions Violation for Publish to \"logs.web.iad.h1\" with header \"{name}\"'");
        assert_eq!(errors(&tenant.sync().await), [want], "tenant, {name}");
        if name.starts_with("Flotilla") {
            continue; // an agent's own
        }
        agent.send(&hpub("logs.acme.web.iad.h1")).await;
        let want = format!("'Permissions Violation for Publish to \"logs.acme.web.iad.h1\" with header \"{name}\"'");
        assert_eq!(errors(&agent.sync().await), [want], "agent, {name}");
    }
    let frames = tenant.drain(Duration::from_millis(300)).await;
    assert!(frames.iter().all(|f| !matches!(f, Frame::Msg { .. })), "no ack, no answer: {frames:?}");
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "nothing of acme's was stored");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), globex_spy.next()).await.is_err(),
        "nothing reached globex"
    );
}

/// A new subscription is live upstream by the time its client's next
/// publish goes or its PONG comes back, as with nats-server (the proxy
/// subscribes and publishes upstream on different connections, which the
/// server does not order): subscribe then publish on one connection
/// delivers, and after subscribe and flush a publish from anywhere does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_live_before_its_clients_next_publish_or_pong() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut raw = s.raw_as("acme", &s.acme_pub).await;
    let ops: String = (0..50).map(|i| format!("SUB logs.web.n{i} {i}\r\nPUB logs.web.n{i} 2\r\nhi\r\n")).collect();
    raw.send(&ops).await;
    let mut sids = Vec::new();
    while sids.len() < 50 {
        match raw.frame_within(Duration::from_secs(5)).await {
            Some(Frame::Msg { sid, .. }) => sids.push(sid.parse::<u32>().unwrap()),
            other => panic!("after {} messages: {other:?}", sids.len()),
        }
    }
    sids.sort();
    assert_eq!(sids, (0..50).collect::<Vec<_>>(), "each publish after its own SUB");

    for i in 0..50 {
        raw.send(&format!("SUB logs.rpc.r{i} r{i}\r\n")).await;
        assert_eq!(raw.sync().await, vec![]);
        direct.publish(format!("logs.acme.rpc.r{i}"), "once".into()).await.unwrap();
        match raw.frame_within(Duration::from_secs(5)).await {
            Some(Frame::Msg { sid, payload, .. }) => assert_eq!((sid, payload), (format!("r{i}"), "once".into())),
            other => panic!("r{i}: the one publish after the PONG: {other:?}"),
        }
    }
}

/// A client's PONG means nats-server has its publishes, as with
/// nats-server itself (flush): a subscriber on nats-server that sees its
/// own PONG afterwards has every message. The proxy hands publishes to its
/// upstream client, which writes them later; without a round trip upstream
/// before the PONG, the PONG would overtake them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_pong_comes_after_nats_server_has_its_publishes() {
    let s = stack().await;
    let mut watcher = Raw::connect(format!("127.0.0.1:{}", s.nats.port()).parse().unwrap()).await;
    watcher.send("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB logs.acme.web.> 1\r\n").await;
    assert_eq!(watcher.sync().await, vec![]);
    let mut tenant = s.raw_as("acme", &s.acme_pub).await;
    let body = "x".repeat(200);
    for round in 0..10 {
        let ops: String = (0..2000).map(|i| format!("PUB logs.web.iad.h{i} 200\r\n{body}\r\n")).collect();
        tenant.send(&ops).await;
        assert_eq!(tenant.sync().await, vec![], "round {round}");
        let seen = watcher.sync().await;
        assert_eq!(payloads(&seen).len(), 2000, "round {round}: nats-server had them all by the tenant's PONG");
    }
}

/// A tenant that runs the upstream out of subscriptions (nats-server's
/// `max_subscriptions` for the proxy's connection) gets no more, but
/// takes nobody's deliveries down: nats-server refuses the SUB and keeps
/// the connection, and so does the proxy's delivery connection (it used to
/// take 'maximum subscriptions exceeded' as fatal and reconnect for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_the_upstream_out_of_subscriptions_takes_no_one_s_deliveries_down() {
    let s = stack_with_server_conf("max_subscriptions: 4\n").await;
    let direct = s.direct().await;
    let mut globex = s.raw_as("globex", &s.globex).await;
    globex.send("SUB logs.web.> 1\r\n").await;
    prime_raw(&direct, "logs.globex.web.iad.h1", &mut globex, Some("1")).await;

    let mut acme = s.raw_as("acme", &s.acme).await;
    let subs: String = (0..8).map(|i| format!("SUB logs.s{i}.> {i}\r\n")).collect();
    acme.send(&subs).await;
    let _ = acme.sync().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.metric("flotilla_proxy_delivery_reconnects_total").await, Some(0.0), "the delivery connection stayed");
    assert_eq!(s.metric("flotilla_proxy_delivery_connected").await, Some(1.0));
    direct.publish("logs.globex.web.iad.h1", "still".into()).await.unwrap();
    direct.flush().await.unwrap();
    let got = globex.frame_within(Duration::from_secs(5)).await;
    assert!(
        matches!(&got, Some(Frame::Msg { payload, .. }) if payload == "still"),
        "globex still gets its messages: {got:?}"
    );
}
