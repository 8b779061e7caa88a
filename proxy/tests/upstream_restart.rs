//! nats-server goes away and comes back: a tenant's subscription through
//! the proxy delivers again, still scoped to its org, without the client
//! doing anything; `/metrics` shows the delivery connection down, then up.

mod common;

use std::time::Duration;

use futures::StreamExt;

#[tokio::test]
async fn a_tenant_keeps_receiving_across_an_upstream_restart() {
    let mut s = common::stack().await;
    let tenant = s.client("acme", &s.acme).await;
    let mut sub = tenant.subscribe("logs.>").await.unwrap();
    tenant.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let direct = s.direct().await;
    direct.publish("logs.acme.web.iad.h1", "before".into()).await.unwrap();
    direct.flush().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("logs.web.iad.h1", &b"before"[..]));

    s.nats.stop();
    common::eventually(Duration::from_secs(10), "the delivery connection to show it is down", || async {
        s.metric("flotilla_proxy_delivery_connected").await == Some(0.0)
    })
    .await;
    s.nats.restart();
    let direct = s.direct().await;
    let mut got = None;
    for _ in 0..100 {
        direct.publish("logs.globex.web.iad.h1", "not acme's".into()).await.unwrap();
        direct.publish("logs.acme.web.iad.h1", "after".into()).await.unwrap();
        direct.flush().await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            got = Some(m);
            break;
        }
    }
    let m = got.expect("deliveries resume after nats-server restarts");
    let lost = s.metric("flotilla_proxy_delivery_reconnects_total").await.unwrap_or(0.0);
    assert!(lost >= 1.0, "the lost delivery connection is counted: {lost}");
    assert_eq!(s.metric("flotilla_proxy_delivery_connected").await, Some(1.0), "and shown up again");
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("logs.web.iad.h1", &b"after"[..]));
    // Whatever else arrives is acme's alone.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        assert_eq!(m.subject.as_str(), "logs.web.iad.h1", "only acme's subjects, rewritten");
    }
}
