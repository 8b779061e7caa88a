//! Limits that are per org: the connection cap holds tenants (agents
//! serve many orgs and are capped per address only), an org's publish
//! rate is shared by all its tenants' connections (agents are held to
//! their own rates), an agent's publishes counting in the org they go to;
//! bytes/s slows a publisher as msgs/s does; and an org's counters of
//! messages and bytes in and out; and, per connection, the rate of
//! subscription changes. Against a real nats-server behind the proxy.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;

use common::*;

fn connect_refused(frames: &[Frame]) -> bool {
    frames.first() == Some(&Frame::Err("'maximum connections exceeded'".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_org_cap_holds_tenants_not_agents() {
    let s = stack_with(Extra { tables: "[limits]\nmax_connections_per_org = 1", ..Default::default() }).await;
    let _first = s.raw_as("acme", &s.acme).await;
    let mut second = Raw::connect(s.addr).await;
    second.send(&connect_json("acme", &s.acme)).await;
    assert!(connect_refused(&second.drain(Duration::from_millis(500)).await), "a second acme tenant");
    let _globex = s.raw_as("globex", &s.globex).await;
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(s.raw_as("host-agent", &s.agent).await);
        agents.push(s.raw_as("acme-agent", &s.acme_agent).await);
    }
    assert_eq!(s.metric("flotilla_proxy_connections").await, Some(8.0));
}

/// An agent carries many orgs on one connection: the org rate holds that
/// org's tenants, not the agent (one org's tenants would otherwise stall
/// every org the agent carries), whose publishes still count in the org's
/// counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_publishes_count_in_the_org_they_go_to_but_its_rate_holds_tenants_only() {
    let s = stack_with(Extra { tables: "[limits]\norg_publish_msgs_per_sec = 1", ..Default::default() }).await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.>").await.unwrap();
    direct.flush().await.unwrap();
    let mut tenant = s.raw_as("acme", &s.acme_pub).await;
    let mut agent = s.raw_as("host-agent", &s.agent).await;
    // acme's budget is one a second: the tenant's first goes now, the rest
    // a second apart.
    tenant.send("PUB logs.web.iad.h1 2\r\nt1\r\nPUB logs.web.iad.h1 2\r\nt2\r\nPUB logs.web.iad.h1 2\r\nt3\r\n").await;
    let first = tokio::time::timeout(Duration::from_secs(5), spy.next()).await.unwrap().unwrap();
    assert_eq!(&first.payload[..], b"t1");
    // The agent, into acme and globex, while acme's budget is spent.
    agent.send("PUB logs.acme.web.iad.h1 2\r\na1\r\nPUB logs.globex.web.iad.h1 7\r\nglobex1\r\nPUB logs.acme.web.iad.h1 2\r\na2\r\n").await;
    let mut order = Vec::new();
    while order.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(5), spy.next()).await.expect("all arrive").unwrap();
        order.push(String::from_utf8_lossy(&m.payload).to_string());
    }
    assert_eq!(order, ["a1", "globex1", "a2", "t2", "t3"], "the agent waited for acme's tenants' budget");
    assert!(errors(&tenant.sync().await).is_empty() && errors(&agent.sync().await).is_empty());
    let counted = (
        s.metric("flotilla_proxy_messages_in_total{org=\"acme\"}").await,
        s.metric("flotilla_proxy_messages_in_total{org=\"globex\"}").await,
        s.metric("flotilla_proxy_bytes_in_total{org=\"globex\"}").await,
    );
    assert_eq!(counted, (Some(5.0), Some(1.0), Some(7.0)));
    assert_eq!(s.metric("flotilla_proxy_messages_in_total{org=\"_agent\"}").await.unwrap_or(0.0), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orgs_rate_is_shared_by_its_connections() {
    let s = stack_with(Extra { tables: "[limits]\norg_publish_msgs_per_sec = 20", ..Default::default() }).await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.acme.>").await.unwrap();
    direct.flush().await.unwrap();
    let (a, b) = (s.client("acme", &s.acme_pub).await, s.client("acme", &s.acme_pub).await);
    let start = Instant::now();
    for i in 0..30 {
        a.publish("logs.web.iad.h1", format!("a{i}").into()).await.unwrap();
        b.publish("logs.web.iad.h2", format!("b{i}").into()).await.unwrap();
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    for _ in 0..60 {
        tokio::time::timeout(Duration::from_secs(10), spy.next()).await.expect("none lost").unwrap();
    }
    // 20 at once (the burst), 40 more at 20/s: about two seconds, which
    // each connection alone (30 messages) would not need.
    assert!(start.elapsed() >= Duration::from_millis(1800), "slowed together: {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_over_its_bytes_rate_is_slowed_not_dropped() {
    let s = stack_with(Extra { tables: "[limits]\npublish_bytes_per_sec = 10000", ..Default::default() }).await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.acme.>").await.unwrap();
    direct.flush().await.unwrap();
    let c = s.client("acme", &s.acme_pub).await;
    let start = Instant::now();
    for _ in 0..4 {
        c.publish("logs.web.iad.h1", vec![b'x'; 5000].into()).await.unwrap();
    }
    c.flush().await.unwrap();
    for _ in 0..4 {
        let m = tokio::time::timeout(Duration::from_secs(10), spy.next()).await.expect("none lost").unwrap();
        assert_eq!(m.payload.len(), 5000);
    }
    // 10 KB at once (a second's budget), 10 KB more at 10 KB/s.
    assert!(start.elapsed() >= Duration::from_millis(900), "slowed: {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orgs_counters_count_its_messages_and_bytes_both_ways() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.acme.>").await.unwrap();
    direct.flush().await.unwrap();
    let mut reader = s.raw_as("acme", &s.acme).await;
    reader.send("SUB logs.web.> 1\r\n").await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut reader, Some("1")).await;
    reader.drain(Duration::from_millis(300)).await; // a late prime
    let sample = |name: &str, org: &str| format!("flotilla_proxy_{name}_total{{org=\"{org}\"}}");
    let mut before = Vec::new();
    for (name, org) in [("messages_out", "acme"), ("bytes_out", "acme"), ("messages_in", "acme"), ("bytes_in", "acme")]
    {
        before.push(s.metric(&sample(name, org)).await.unwrap_or(0.0));
    }
    // In: 3 publishes of 10 bytes. Out: those 3 (on logs.web.>) and 2 of 4
    // bytes from the platform.
    let mut publisher = s.raw_as("acme", &s.acme_pub).await;
    for _ in 0..3 {
        publisher.send("PUB logs.web.iad.h1 10\r\n0123456789\r\n").await;
    }
    assert!(publisher.sync().await.is_empty());
    let mut stored = 0;
    while stored < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), spy.next()).await.unwrap().unwrap();
        stored += usize::from(&m.payload[..] == b"0123456789");
    }
    for _ in 0..2 {
        direct.publish("logs.acme.web.iad.h2", "four".into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    assert_eq!(payloads(&reader.drain(Duration::from_millis(500)).await).len(), 5);
    let mut delta = Vec::new();
    for (i, (name, org)) in
        [("messages_out", "acme"), ("bytes_out", "acme"), ("messages_in", "acme"), ("bytes_in", "acme")]
            .into_iter()
            .enumerate()
    {
        delta.push(s.metric(&sample(name, org)).await.unwrap_or(0.0) - before[i]);
    }
    assert_eq!(delta, [5.0, 38.0, 3.0, 30.0], "messages out, bytes out, messages in, bytes in");
    assert_eq!(s.metric(&sample("messages_out", "globex")).await.unwrap_or(0.0), 0.0);
}

/// A connection held back by its rate (its PUBs waiting their turn) is
/// still closed at once when its token is revoked, and does not hold up
/// the proxy's shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_back_by_its_rate_still_closes_when_told() {
    let mut s = stack_with(Extra { tables: "[limits]\npublish_msgs_per_sec = 1", ..Default::default() }).await;
    let backlog = "PUB logs.web.iad.h1 2\r\nhi\r\n".repeat(30); // half a minute at 1/s
    let mut revoked = s.raw_as("acme", &s.acme_pub).await;
    revoked.send(&backlog).await;
    let mut other = s.raw_as("globex", &s.globex_pub).await;
    other.send(&backlog).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    flotilla_proxy::cli::token_revoke(&s.tokens, "acme-pub").expect("token revoke");
    let frames = revoked.drain(Duration::from_secs(8)).await;
    assert_eq!(frames, [Frame::Err("'User Authentication Revoked'".into()), Frame::Eof]);
    let done = s.done.take().expect("the proxy's task");
    s.signals.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), done).await.expect("shutdown waited for the backlog").unwrap();
    assert_eq!(other.drain(Duration::from_secs(5)).await.last(), Some(&Frame::Eof));
}

/// An org's subscriptions are capped over all its tenants' connections;
/// another org counts apart, and a dropped subscription (unsubscribed, or
/// its connection gone) gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orgs_subscriptions_are_capped_over_its_connections() {
    let s = stack_with(Extra { tables: "[limits]\nmax_subscriptions_per_org = 3", ..Default::default() }).await;
    let mut a = s.raw_as("acme", &s.acme).await;
    a.send("SUB logs.> 1\r\nSUB _INBOX.x.* 2\r\n").await;
    assert_eq!(errors(&a.sync().await), Vec::<String>::new());
    let mut b = s.raw_as("acme", &s.acme).await;
    b.send("SUB logs.web.> 1\r\n").await;
    assert_eq!(errors(&b.sync().await), Vec::<String>::new());
    b.send("SUB telemetry.> 2\r\n").await;
    assert_eq!(errors(&b.sync().await), ["'maximum subscriptions exceeded'"], "the org's fourth");
    let mut g = s.raw_as("globex", &s.globex).await;
    g.send("SUB logs.> 1\r\nSUB logs.a.> 2\r\nSUB logs.b.> 3\r\n").await;
    assert_eq!(errors(&g.sync().await), Vec::<String>::new(), "globex counts apart");
    // A SUB under a sid in use is ignored (as nats-server): no place taken twice.
    b.send("SUB logs.api.> 1\r\n").await;
    assert_eq!(errors(&b.sync().await), Vec::<String>::new());
    a.send("UNSUB 2\r\n").await;
    a.sync().await;
    b.send("SUB telemetry.> 2\r\n").await;
    assert_eq!(errors(&b.sync().await), Vec::<String>::new(), "an UNSUB gives its place back");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        b.send("SUB logs.db.> 3\r\n").await;
        if errors(&b.sync().await).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection's places were not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the subscriptions work.
    let direct = s.direct().await;
    prime_raw(&direct, "logs.acme.db.iad.h1", &mut b, Some("3")).await;
}

/// SUBs and UNSUBs over a connection's rate are held (its socket not
/// read), not refused, and counted; the org's other connections are not
/// held with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_churn_is_slowed_per_connection() {
    let tables = "[limits]\nmax_subscriptions = 10\nsubscription_changes_per_sec = 50";
    let s = stack_with(Extra { tables, ..Default::default() }).await;
    let mut churn = s.raw_as("acme", &s.acme).await;
    let mut other = s.raw_as("acme", &s.acme).await;
    // 150 changes: 50 at once (the burst), then 100 at 50/s.
    let ops: String = (0..75).map(|i| format!("SUB logs.web.c{i} {i}\r\nUNSUB {i}\r\n")).collect();
    let start = Instant::now();
    churn.send(&(ops + "PING\r\n")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(other.sync().await, vec![], "the other connection is answered at once");
    other.send("SUB logs.web.x 1\r\n").await;
    assert_eq!(other.sync().await, vec![]);
    let answered_other = start.elapsed();
    assert_eq!(churn.frame_within(Duration::from_secs(20)).await, Some(Frame::Pong), "held, not refused");
    let answered_churn = start.elapsed();
    assert!(answered_churn >= Duration::from_millis(1800), "held about two seconds: {answered_churn:?}");
    assert!(answered_other < answered_churn, "{answered_other:?} before {answered_churn:?}");
    let held = s.metric("flotilla_proxy_subscription_changes_held_total{org=\"acme\"}").await;
    assert!(held.is_some_and(|n| n >= 90.0), "counted: {held:?}");
    eventually(Duration::from_secs(5), "only the other's subscription to stay upstream", || async {
        s.metric("flotilla_proxy_upstream_subscriptions").await == Some(1.0)
    })
    .await;
    // Inbox subscriptions stay in the proxy, so they are not held (old-style
    // requests subscribe and unsubscribe an inbox each): 400 changes, which
    // at 50 a second would take seven.
    let inbox: String = (0..200).map(|i| format!("SUB _INBOX.r{i} {i}\r\nUNSUB {i}\r\n")).collect();
    churn.send(&(inbox + "PING\r\n")).await;
    assert_eq!(churn.frame_within(Duration::from_secs(3)).await, Some(Frame::Pong), "not held");
}
