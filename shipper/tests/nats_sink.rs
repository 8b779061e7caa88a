//! The `nats` sink forwards events to another cluster's JetStream, acked
//! there before they are acked here; resends are de-duplicated remotely.

use std::time::Duration;

use async_nats::jetstream;

use flotilla_core::shutdown::Signals;
use flotilla_testsupport::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_forwarded_to_another_cluster_once() {
    let (here, there) = (NatsServer::start(), NatsServer::start());
    let remote = jetstream::new(async_nats::connect(there.url()).await.unwrap());
    remote
        .create_stream(jetstream::stream::Config {
            name: "ARCHIVE".into(),
            subjects: vec!["archive.logs.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let text = format!(
        "http_addr = \"127.0.0.1:0\"\n[nats]\nurl = \"{}\"\n[[sinks]]\nname = \"forward\"\ntype = \"nats\"\nurl = \"{}\"\nsubject_prefix = \"archive\"\nbatch_max_age = \"200ms\"\nfilter = {{ orgs = [\"acme\"] }}\n",
        here.url(),
        there.url()
    );
    let config: flotilla_shipper::Config = match flotilla_core::config::parse(&text, |_| None) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    };
    let signals = Signals::default();
    let shipper = tokio::spawn(flotilla_shipper::run(config, signals.clone()));
    let js = jetstream::new(async_nats::connect(here.url()).await.unwrap());
    for _ in 0..100 {
        if js.get_stream("LOGS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..60 {
        let org = if i % 3 == 0 { "globex" } else { "acme" };
        js.publish(format!("logs.{org}.web.iad.h1"), format!("{{\"message\":\"e{i}\"}}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut stored = 0;
    for _ in 0..100 {
        stored = remote.get_stream("ARCHIVE").await.unwrap().info().await.unwrap().state.messages;
        if stored >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    signals.shutdown.cancel();
    shipper.await.unwrap().unwrap();
    let stream = remote.get_stream("ARCHIVE").await.unwrap();
    let n = stream.clone().info().await.unwrap().state.messages;
    assert_eq!((stored, n), (40, 40), "acme's 40 events, once each, globex's filtered out");
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), "archive.logs.acme.web.iad.h1");
    assert!(first.headers.get("Nats-Msg-Id").is_some_and(|v| v.as_str().starts_with("flotilla/forward/")));
}
