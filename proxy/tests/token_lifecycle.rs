//! A token's life seen from its connections: an expired token's connection
//! is closed with nats-server's `'User Authentication Expired'`, and SIGHUP
//! to the proxy binary re-reads the tokens file even when an edit left its
//! time and length as they were (the regular look would miss it), against
//! a real nats-server behind the proxy; a changed grant (an agent taken
//! off an org) closes the connections made under the old one.

mod common;

use std::time::Duration;

use flotilla_proxy::auth::Role;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tokens_connection_is_closed() {
    let s = stack().await;
    let orgs = ["acme".to_string()];
    let soon = flotilla_proxy::cli::token_new(&s.tokens, Role::Tenant, &orgs, Some("short".into()), Some("3s"), false)
        .expect("token new --expires 3s");
    let mut raw = s.raw_as("acme", &soon).await;
    let mut other = s.raw_as("acme", &s.acme).await;
    let started = std::time::Instant::now();
    assert_eq!(raw.until_closed(Duration::from_secs(15)).await, [Frame::Err("'User Authentication Expired'".into())]);
    assert!(started.elapsed() >= Duration::from_secs(1), "closed before it expired");
    assert!(other.sync().await.is_empty(), "another token's connection stays");
    let mut again = Raw::connect(s.addr).await;
    again.send(&connect_json("acme", &soon)).await;
    assert_eq!(again.until_closed(Duration::from_secs(5)).await, [Frame::Err("'Authorization Violation'".into())]);
}

/// The proxy binary, its config pointing at `tokens` and `nats`; killed
/// when dropped.
struct Binary {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Binary {
    fn start(dir: &std::path::Path, tokens: &std::path::Path, nats: &str) -> Binary {
        let port = flotilla_testsupport::free_port();
        let http = flotilla_testsupport::free_port();
        let config = dir.join("proxy.toml");
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\nhttp_addr = \"127.0.0.1:{http}\"\ntokens = {:?}\n[upstream]\nurl = \"{nats}\"\n",
            tokens.display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-proxy"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start flotilla-proxy");
        // Killed and waited for when dropped, also if it never listens.
        let binary = Binary { child, addr: format!("127.0.0.1:{port}").parse().unwrap() };
        for _ in 0..200 {
            if std::net::TcpStream::connect(binary.addr).is_ok() {
                return binary;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("flotilla-proxy never listened on {}", binary.addr);
    }

    fn sighup(&self) {
        // SAFETY: kill(2) on our own child's pid, with a valid signal.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(r, 0, "SIGHUP delivered");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary: SIGHUP re-reads the tokens file even when an edit left its
/// modification time and length as they were (the look every two seconds
/// misses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_an_edit_the_regular_look_misses() {
    let nats = flotilla_testsupport::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    let orgs = ["acme".to_string()];
    let secret = flotilla_proxy::cli::token_new(&path, Role::Tenant, &orgs, Some("acme-read".into()), None, false)
        .expect("token new");
    let proxy = Binary::start(dir.path(), &path, &nats.url());
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&connect_json("acme", &secret)).await;
    assert!(raw.sync().await.is_empty(), "connected");
    // Revoke acme-read by changing one character of its hash, keeping the
    // file's length and modification time.
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("name = \"acme-read\"").expect("acme-read in the file");
    let hash_at = at + text[at..].find("hash = \"sha256:").expect("its hash") + "hash = \"sha256:".len();
    let mut edited = text.into_bytes();
    edited[hash_at] = if edited[hash_at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &edited).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(before).unwrap();
    // Two regular looks (every two seconds) go by: nothing seems changed.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(raw.sync().await.is_empty(), "the regular look should not have seen the edit");
    proxy.sighup();
    assert_eq!(raw.until_closed(Duration::from_secs(5)).await, [Frame::Err("'User Authentication Revoked'".into())]);
}

/// A tenant token that names no org (a hand-edited file) is refused at
/// CONNECT, not given some other role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_that_names_no_org_is_refused() {
    let s = stack().await;
    let secret = flotilla_proxy::auth::new_secret();
    let entry = format!(
        "\n[[tokens]]\nname = \"no-org\"\nrole = \"tenant\"\npublish = true\nhash = \"{}\"\ncreated = \"2026-01-01T00:00:00Z\"\n",
        flotilla_proxy::auth::hash_secret(&secret)
    );
    let mut text = std::fs::read_to_string(&s.tokens).unwrap();
    text.push_str(&entry);
    std::fs::write(&s.tokens, text).unwrap();
    s.signals.reload.notify_one();
    // The file is read (another new token in it works) ...
    let orgs = ["acme".to_string()];
    let later = flotilla_proxy::cli::token_new(&s.tokens, Role::Tenant, &orgs, Some("later".into()), None, false)
        .expect("token new");
    s.raw_as("acme", &later).await;
    // ... and the one without an org is refused, with or without a user.
    for connect in [
        format!("CONNECT {}\r\n", serde_json::json!({"auth_token": secret})),
        connect_json("no-org", &secret),
        connect_json("acme", &secret),
    ] {
        let mut raw = Raw::connect(s.addr).await;
        raw.send(&connect).await;
        raw.send("PUB flotilla.agent.h1.status 2\r\nhi\r\nPING\r\n").await;
        assert_eq!(
            raw.until_closed(Duration::from_secs(5)).await,
            [Frame::Err("'Authorization Violation'".into())],
            "{connect}"
        );
    }
}

/// An agent taken off an org in the tokens file loses the connections it
/// made under the old grant; its reconnect gets the new one. Others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_grant_closes_the_connections_made_under_the_old_one() {
    let s = stack().await;
    let mut agent = s.raw_as("host-agent", &s.agent).await;
    let mut other = s.raw_as("acme", &s.acme).await;
    let text = std::fs::read_to_string(&s.tokens).unwrap();
    let at = text.find("name = \"host-agent\"").expect("host-agent in the file");
    let orgs = at + text[at..].find("orgs = [\"acme\", \"globex\"]").expect("its orgs");
    let edited = format!("{}orgs = [\"acme\"]{}", &text[..orgs], &text[orgs + "orgs = [\"acme\", \"globex\"]".len()..]);
    std::fs::write(&s.tokens, edited).unwrap();
    s.signals.reload.notify_one();
    assert_eq!(agent.until_closed(Duration::from_secs(5)).await, [Frame::Err("'User Authentication Revoked'".into())]);
    assert!(other.sync().await.is_empty(), "another token's connection stays");
    let mut again = s.raw_as("host-agent", &s.agent).await;
    again.send("PUB logs.globex.web.iad.h1 1\r\ng\r\nPUB logs.acme.web.iad.h1 1\r\na\r\n").await;
    assert_eq!(
        errors(&again.sync().await),
        ["'Permissions Violation for Publish to \"logs.globex.web.iad.h1\"'"],
        "globex is no longer the agent's"
    );
}
