//! The agent tailing real files into a real JetStream: every line arrives
//! exactly once across agent restarts and a nats-server restart.

mod common;

use common::{js as connect_js, wait_for, Agent};

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use flotilla_agent::Config;
use flotilla_testsupport::NatsServer;

fn config(logs: &Path, data: &Path, url: &str) -> Config {
    let text = format!(
        r#"
        host = "h1"
        region = "iad"
        data_dir = "{}"
        http_addr = "127.0.0.1:0"
        [nats]
        url = "{url}"
        max_in_flight = 64
        [[sources]]
        type = "file"
        include = ["{}/{{org}}/{{app}}/*.log"]
        codec = "json"
        poll_interval = "50ms"
        "#,
        data.display(),
        logs.display()
    );
    flotilla_core::config::parse(&text, |_| None).unwrap()
}

fn append(path: &Path, from: usize, to: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for i in from..to {
        writeln!(f, r#"{{"level":"info","msg":"line-{i}"}}"#).unwrap();
    }
}

/// Every stored event, in stream order: (subject, message, seq).
async fn events(js: &async_nats::jetstream::Context) -> Vec<(String, String, u64)> {
    common::events(js).await.into_iter().map(|(subject, e)| (subject, e.message, e.seq)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_arrive_exactly_once_across_restarts() {
    let mut nats = NatsServer::start();
    let js = connect_js(&nats.url()).await;
    common::create_stream(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    let web = logs.join("acme/web/app.log");
    append(&web, 0, 100); // written before the agent starts

    let agent = Agent::start(config(&logs, &data, &nats.url()));
    wait_for(&js, 100).await;
    append(&web, 100, 200); // written while it runs
    wait_for(&js, 200).await;
    agent.stop().await;

    // Restart: only new lines are sent.
    append(&web, 200, 250);
    let agent = Agent::start(config(&logs, &data, &nats.url()));
    wait_for(&js, 250).await;

    // nats-server restarts under the agent while lines keep coming.
    nats.restart();
    append(&web, 250, 300);
    wait_for(&js, 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await;

    let got = events(&js).await;
    assert_eq!(got.len(), 300, "no duplicates");
    for (i, (subject, message, seq)) in got.iter().enumerate() {
        assert_eq!(subject, "logs.acme.web.iad.h1");
        assert_eq!(message, &format!("line-{i}"), "in order, exactly once");
        assert_eq!(*seq, i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_stream_and_loses_nothing() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    append(&logs.join("globex/api/x.log"), 0, 20);
    let agent = Agent::start(config(&logs, &data, &nats.url()));
    // No stream yet: publishes get no ack, the agent keeps the lines.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let js = connect_js(&nats.url()).await;
    common::create_stream(&js).await;
    wait_for(&js, 20).await;
    agent.stop().await;
    let got = events(&js).await;
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|(s, _, _)| s == "logs.globex.api.iad.h1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_renamed_out_of_the_pattern_while_the_agent_was_down_is_finished() {
    let nats = NatsServer::start();
    let js = connect_js(&nats.url()).await;
    common::create_stream(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    let web = logs.join("acme/web/app.log");
    append(&web, 0, 100);
    let agent = Agent::start(config(&logs, &data, &nats.url()));
    wait_for(&js, 100).await;
    agent.stop().await;

    // While the agent is down: more lines, then a rotation by rename to a
    // name `*.log` does not match, then a new file.
    append(&web, 100, 150);
    std::fs::rename(&web, logs.join("acme/web/app.log.1")).unwrap();
    append(&web, 150, 170);
    let agent = Agent::start(config(&logs, &data, &nats.url()));
    wait_for(&js, 170).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await;

    // Once more: the finished orphan is not read again.
    append(&web, 170, 180);
    let agent = Agent::start(config(&logs, &data, &nats.url()));
    wait_for(&js, 180).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await;

    let mut got: Vec<String> = events(&js).await.into_iter().map(|(_, m, _)| m).collect();
    assert_eq!(got.len(), 180, "no duplicates");
    got.sort_by_key(|m| m.trim_start_matches("line-").parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(got, (0..180).map(|i| format!("line-{i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_separated_url_list_reaches_the_live_server() {
    let nats = NatsServer::start();
    let js = connect_js(&nats.url()).await;
    common::create_stream(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    append(&logs.join("acme/web/x.log"), 0, 10);
    // A cluster's list with one node down.
    let dead = format!("nats://127.0.0.1:{}", flotilla_testsupport::free_port());
    let urls = format!("{dead}, {}", nats.url());
    let agent = Agent::start(config(&logs, &data, &urls));
    wait_for(&js, 10).await;
    agent.stop().await;
    assert_eq!(events(&js).await.len(), 10);
}

/// A NATS server (or proxy) with a certificate from a private CA that also
/// verifies clients: `tls_ca`, `tls_cert` and `tls_key` in `[nats]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_of_a_private_ca_that_verifies_clients() {
    // As the agent's start-up does: with ring and aws-lc-rs both compiled
    // in (the workspace's object stores), rustls will not pick one itself.
    flotilla_core::daemon::install_crypto_provider();
    let pki = flotilla_testsupport::tls::Pki::new("flotilla test CA");
    let nats = NatsServer::start_tls(&pki, &[]);
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client.0.clone(), pki.client.1.clone())
        .connect(nats.tls_url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    common::create_stream(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let (logs, data) = (dir.path().join("logs"), dir.path().join("data"));
    append(&logs.join("acme/web/app.log"), 0, 50);
    let sources = format!(
        "{}[[sources]]\ntype = \"file\"\ninclude = [\"{}/{{org}}/{{app}}/*.log\"]\ncodec = \"json\"\npoll_interval = \"50ms\"\n",
        pki.config_lines(),
        logs.display()
    );
    let agent = Agent::start(common::config(&data, &nats.tls_url(), &sources));
    wait_for(&js, 50).await;
    agent.stop().await;
    let got = events(&js).await;
    assert_eq!(got.len(), 50);
    assert!(got.iter().enumerate().all(|(i, (_, m, _))| m == &format!("line-{i}")));
}
