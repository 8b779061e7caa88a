//! A token's life seen from its connections: an expired token's connection
//! is closed with nats-server's `'User Authentication Expired'`, and SIGHUP
//! re-reads the tokens file even when an edit left its time and length as
//! they were (the regular look would miss it), against a real nats-server
//! behind the proxy.

mod common;

use std::time::Duration;

use flotilla_proxy::auth::Role;

use common::*;

/// Frames until the close (answering PINGs), or panic after `within`.
async fn until_closed(raw: &mut Raw, within: Duration) -> Vec<Frame> {
    let deadline = std::time::Instant::now() + within;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match raw.frame_within(left).await {
            Some(Frame::Ping) => raw.send("PONG\r\n").await,
            Some(Frame::Eof) => return frames,
            Some(f) => frames.push(f),
            None => panic!("still open after {within:?}: {frames:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tokens_connection_is_closed() {
    let s = stack().await;
    let orgs = ["acme".to_string()];
    let soon = flotilla_proxy::cli::token_new(&s.tokens, Role::Tenant, &orgs, Some("short".into()), Some("3s"), false)
        .expect("token new --expires 3s");
    let mut raw = s.raw_as("acme", &soon).await;
    let mut other = s.raw_as("acme", &s.acme).await;
    let started = std::time::Instant::now();
    assert_eq!(
        until_closed(&mut raw, Duration::from_secs(15)).await,
        [Frame::Err("'User Authentication Expired'".into())]
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "closed before it expired");
    assert!(other.sync().await.is_empty(), "another token's connection stays");
    let mut again = Raw::connect(s.addr).await;
    again.send(&connect_json("acme", &soon)).await;
    assert_eq!(
        until_closed(&mut again, Duration::from_secs(5)).await,
        [Frame::Err("'Authorization Violation'".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_an_edit_the_regular_look_misses() {
    let s = stack().await;
    let mut raw = s.raw_as("acme", &s.acme).await;
    // Revoke acme-read by changing one character of its hash, keeping the
    // file's length and modification time.
    let path = &s.tokens;
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let at = text.find("name = \"acme-read\"").expect("acme-read in the file");
    let hash_at = at + text[at..].find("hash = \"").expect("its hash") + "hash = \"".len();
    let mut edited = text.into_bytes();
    edited[hash_at] = if edited[hash_at] == b'0' { b'1' } else { b'0' };
    std::fs::write(path, &edited).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(before).unwrap();
    // Two regular looks (every two seconds) go by: nothing seems changed.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(raw.sync().await.is_empty(), "the regular look should not have seen the edit");
    // What the SIGHUP handler does.
    s.signals.reload.notify_one();
    assert_eq!(
        until_closed(&mut raw, Duration::from_secs(5)).await,
        [Frame::Err("'User Authentication Revoked'".into())]
    );
}
