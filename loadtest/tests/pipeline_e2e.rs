//! The whole trip: files → agent → proxy → JetStream → shipper → Parquet,
//! read back by DuckDB; and a tenant tailing through the proxy with nats.py
//! sees exactly its own org. Once over plain TCP, and once with TLS on
//! every hop: a private CA, nats-server verifying client certificates,
//! the proxy's `[tls]` for the agent and the tenant.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flotilla_core::shutdown::Signals;
use flotilla_proxy::auth::Role;
use flotilla_testsupport::tls::Pki;
use flotilla_testsupport::{python, repo_root, NatsServer};

/// (org, app, lines): 10,000 lines in all.
const FILES: [(&str, &str, usize); 4] =
    [("acme", "web", 3000), ("acme", "api", 2000), ("globex", "web", 3000), ("globex", "worker", 2000)];

fn parse<T: serde::de::DeserializeOwned + flotilla_core::config::Validate>(text: &str) -> T {
    match flotilla_core::config::parse(text, |_| None) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    }
}

fn write_lines(logs: &Path, org: &str, app: &str, from: usize, to: usize) {
    let path = logs.join(org).join(app).join("app.log");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for i in from..to {
        writeln!(f, r#"{{"level":"info","msg":"{org}-{app}-{i}"}}"#).unwrap();
    }
}

async fn consumer_idle(js: &async_nats::jetstream::Context, total: u64) -> bool {
    let Ok(mut stream) = js.get_stream("LOGS").await else { return false };
    let Ok(info) = stream.info().await else { return false };
    if info.state.messages < total {
        return false;
    }
    let Ok(mut consumer) =
        stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("flotilla-archive").await
    else {
        return false;
    };
    match consumer.info().await {
        Ok(i) => i.num_pending == 0 && i.num_ack_pending == 0,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_lines_travel_end_to_end_exactly_once() {
    trip(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_lines_travel_end_to_end_over_tls_exactly_once() {
    // The test's own TLS clients: ring and aws-lc-rs are both built in.
    flotilla_core::daemon::install_crypto_provider();
    trip(Some(&Pki::new("flotilla e2e CA"))).await;
}

/// The trip; with `pki`, every connection uses TLS with its certificates.
async fn trip(pki: Option<&Pki>) {
    let nats = match pki {
        Some(pki) => NatsServer::start_tls(pki, &[]),
        None => NatsServer::start(),
    };
    let nats_url = if pki.is_some() { nats.tls_url() } else { nats.url() };
    // `tls_ca`, `tls_cert`, `tls_key` for a `[nats]` or `[upstream]` section.
    let tls_lines = pki.map(Pki::config_lines).unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let (logs, data, archive, tokens) =
        (dir.path().join("logs"), dir.path().join("agent"), dir.path().join("archive"), dir.path().join("tokens.toml"));
    // Bound to the agent's host (`host` below): its ids and heartbeats pass.
    let agent_secret = flotilla_proxy::cli::token_new_for_hosts(
        &tokens,
        Role::Agent,
        &["acme".into(), "globex".into()],
        &["e2e-host".into()],
        Some("e2e-agent".into()),
        None,
        false,
    )
    .unwrap();
    let acme_secret =
        flotilla_proxy::cli::token_new(&tokens, Role::Tenant, &["acme".into()], None, None, false).unwrap();

    let shutdown_all = Signals::default();
    let proxy_tls = pki.map_or(String::new(), |p| {
        format!("[tls]\ncert = {:?}\nkey = {:?}\n", p.server.0.display().to_string(), p.server.1.display().to_string())
    });
    let proxy = flotilla_proxy::start(
        parse(&format!(
            "listen = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ntokens = \"{}\"\nclient_queue = 65536\n[upstream]\nurl = \"{}\"\n{tls_lines}{proxy_tls}",
            tokens.display(),
            nats_url
        )),
        shutdown_all.clone(),
    )
    .await
    .unwrap();

    let shipper_signals = Signals::default();
    let shipper = tokio::spawn(flotilla_shipper::run(
        parse(&format!(
            "http_addr = \"127.0.0.1:0\"\n[nats]\nurl = \"{}\"\n{tls_lines}[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file://{}\"\nbatch_max_age = \"1s\"\nroll_max_age = \"2s\"\n",
            nats_url,
            archive.display()
        )),
        shipper_signals.clone(),
    ));

    // Half of every file exists before the agent starts.
    for (org, app, n) in FILES {
        write_lines(&logs, org, app, 0, n / 2);
    }

    // The acme tenant tails through the proxy with nats.py.
    let acme_total: usize = FILES.iter().filter(|f| f.0 == "acme").map(|f| f.2).sum();
    let script = repo_root().join("loadtest/tests/py/tenant_tail.py");
    let scheme = if pki.is_some() { "tls" } else { "nats" };
    let proxy_url = format!("{scheme}://{}", proxy.addr);
    let mut tail = Command::new(python());
    tail.arg(&script).args(["--url", &proxy_url, "--user", "acme", "--password", &acme_secret]).args([
        "--expect",
        &acme_total.to_string(),
        "--idle",
        "15",
    ]);
    if let Some(pki) = pki {
        tail.arg("--ca").arg(&pki.ca);
    }
    let mut tail =
        tail.stdout(Stdio::piped()).spawn().expect("python with nats-py (run ./scripts/test, or set FLOTILLA_PYTHON)");
    let mut tail_out = BufReader::new(tail.stdout.take().unwrap());
    let mut first = String::new();
    tail_out.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "ready", "nats.py tenant subscribed (is nats-py installed?)");

    let agent_signals = Signals::default();
    let agent_cfg: flotilla_agent::Config = parse(&format!(
        r#"
        host = "e2e-host"
        region = "iad"
        data_dir = "{}"
        http_addr = "127.0.0.1:0"
        [nats]
        url = "{proxy_url}"
        user = "e2e-agent"
        password = "{agent_secret}"
        {tls_lines}
        [[sources]]
        type = "file"
        include = ["{}/{{org}}/{{app}}/*.log"]
        codec = "json"
        poll_interval = "100ms"
        "#,
        data.display(),
        logs.display()
    ));
    let agent = tokio::spawn(flotilla_agent::run(agent_cfg, agent_signals.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (org, app, n) in FILES {
        write_lines(&logs, org, app, n / 2, n);
    }

    let mut opts = async_nats::ConnectOptions::new();
    if let Some(pki) = pki {
        opts = opts
            .add_root_certificates(pki.ca.clone())
            .add_client_certificate(pki.client.0.clone(), pki.client.1.clone());
    }
    let js = async_nats::jetstream::new(opts.connect(&nats_url).await.unwrap());
    let mut idle = false;
    for _ in 0..600 {
        if consumer_idle(&js, 10_000).await {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(idle, "all 10,000 events stored and committed by the shipper within a minute");
    agent_signals.shutdown.cancel();
    agent.await.unwrap().unwrap();
    shipper_signals.shutdown.cancel();
    shipper.await.unwrap().unwrap();

    let expected = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut v: Vec<String> = FILES
            .iter()
            .filter(|f| pred(f.0))
            .flat_map(|(org, app, n)| (0..*n).map(move |i| format!("{org}-{app}-{i}")))
            .collect();
        v.sort();
        v
    };

    // The tenant saw every acme line once and nothing of globex.
    let summary = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        tail_out.read_line(&mut line).unwrap();
        let _ = tail.wait();
        line
    })
    .await
    .unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("tenant_tail summary");
    assert_eq!(summary["orgs"], serde_json::json!(["acme"]));
    assert_eq!(summary["subjects"], serde_json::json!(["logs.api.iad.e2e-host", "logs.web.iad.e2e-host"]));
    let mut seen: Vec<String> = serde_json::from_value(summary["messages"].clone()).unwrap();
    seen.sort();
    assert_eq!(seen, expected(&|o| o == "acme"), "the live tail holds exactly acme's lines");

    // DuckDB finds every line exactly once, in the right partitions.
    let out = Command::new(python())
        .arg(repo_root().join("loadtest/tests/py/read_archive.py"))
        .args(["--dir", &archive.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "read_archive.py: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["partition_mismatches"], 0);
    let rows = report["rows"].as_array().unwrap();
    let mut messages: Vec<String> = vec![];
    let mut seqs = BTreeSet::new();
    for r in rows {
        let (org, app, msg) = (r[0].as_str().unwrap(), r[1].as_str().unwrap(), r[2].as_str().unwrap());
        assert!(msg.starts_with(&format!("{org}-{app}-")), "row {r} is in its own org/app");
        assert!(seqs.insert(r[3].as_u64().unwrap()), "stream_seq {} once", r[3]);
        messages.push(msg.to_string());
    }
    messages.sort();
    assert_eq!(messages.len(), 10_000);
    assert_eq!(messages, expected(&|_| true), "every line exactly once");
    shutdown_all.shutdown.cancel();
}
