//! How little CPU forwarding one subscription can cost on this machine: a
//! bare forwarder that reads `MSG` frames from nats-server in place,
//! rewrites `logs.acme.<rest>` to `logs.<rest>` and the sid, and writes the
//! frames to one client from the same task. No auth, no limits, no queues,
//! no async-nats on the upstream side: a floor for the proxy's CPU per
//! message, not a proxy (see "Proxy fan-out" in `docs/benchmarks.md`).
//!
//! ```sh
//! nats-server -a 127.0.0.1 -p 14222 &
//! forward_floor forward 14222 14333 &
//! forward_floor load 14222 14222 0 1000000                         # direct
//! forward_floor load 14222 14333 "$(pgrep -f 'forward_floor forward')" 1000000   # through it
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const USAGE: &str = "usage: forward_floor forward <nats-port> <listen-port>\n       \
                     forward_floor load <nats-port> <subscribe-port> <forwarder-pid|0> <messages>";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> Result<u64> { Ok(args.get(i).ok_or(USAGE)?.parse()?) };
    match args.first().map(String::as_str) {
        Some("forward") => forward(num(1)? as u16, num(2)? as u16).await,
        Some("load") => load(num(1)? as u16, num(2)? as u16, num(3)? as u32, num(4)?).await,
        _ => Err(USAGE.into()),
    }
}

/// CPU seconds of `pid` (utime + stime from `/proc/<pid>/stat`).
fn cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> { Ok(fields.get(i).ok_or("short /proc stat")?.parse::<f64>()?) };
    Ok((tick(11)? + tick(12)?) / 100.0)
}

/// Publish `n` 200-byte messages to nats-server as fast as possible and
/// receive them on `port` (nats-server itself, or the forwarder).
async fn load(nats: u16, port: u16, pid: u32, n: u64) -> Result<()> {
    let publisher = async_nats::connect(format!("127.0.0.1:{nats}")).await?;
    let client =
        async_nats::ConnectOptions::new().subscription_capacity(1 << 20).connect(format!("127.0.0.1:{port}")).await?;
    let mut sub = client.subscribe(if port == nats { "logs.acme.>" } else { "logs.>" }).await?;
    client.flush().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (forwarder0, me0) = (if pid > 0 { cpu(pid)? } else { 0.0 }, cpu(std::process::id())?);
    let receiver = tokio::spawn(async move {
        let mut first = None;
        for _ in 0..n {
            sub.next().await?;
            first.get_or_insert_with(Instant::now);
        }
        first.map(|t| t.elapsed())
    });
    let payload = Bytes::from(vec![b'x'; 200]);
    for _ in 0..n {
        publisher.publish("logs.acme.web.iad.h1", payload.clone()).await?;
    }
    publisher.flush().await?;
    let secs = receiver.await?.ok_or("nothing received")?.as_secs_f64();
    let per_m = |cpu: f64| cpu * 1e6 / n as f64;
    let forwarder = if pid > 0 { cpu(pid)? - forwarder0 } else { 0.0 };
    println!(
        "{:.0} msgs/s; forwarder {:.2} CPU-s per 1M; publisher + subscriber {:.2} CPU-s per 1M",
        n as f64 / secs,
        per_m(forwarder),
        per_m(cpu(std::process::id())? - me0)
    );
    Ok(())
}

async fn forward(nats: u16, port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(client, nats).await {
                eprintln!("forward_floor: {e}");
            }
        });
    }
}

async fn serve(client: TcpStream, nats: u16) -> Result<()> {
    let (mut crd, mut cwr) = client.into_split();
    cwr.write_all(b"INFO {\"server_id\":\"floor\",\"version\":\"2.10.0\",\"proto\":1,\"headers\":true,\"max_payload\":1048576}\r\n")
        .await?;
    // The client's side: answer its PINGs, learn the sid of its SUB.
    let (sid_tx, mut sid_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<()>(16);
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(4096);
        while crd.read_buf(&mut buf).await.unwrap_or(0) > 0 {
            while let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = buf.split_to(i + 2);
                if line.starts_with(b"PING") && pong_tx.send(()).await.is_err() {
                    return;
                }
                if line.starts_with(b"SUB ") {
                    let sid = line[..i].rsplit(|b| *b == b' ').next().unwrap_or(b"1");
                    let _ = sid_tx.try_send(Bytes::copy_from_slice(sid));
                }
            }
        }
    });
    let sid = loop {
        tokio::select! {
            sid = sid_rx.recv() => break sid.ok_or("the client left before subscribing")?,
            _ = pong_rx.recv() => cwr.write_all(b"PONG\r\n").await?,
        }
    };
    let mut up = TcpStream::connect(("127.0.0.1", nats)).await?;
    up.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nSUB logs.acme.> 1\r\n").await?;
    let (mut rbuf, mut out) = (BytesMut::with_capacity(1 << 16), BytesMut::with_capacity(1 << 16));
    loop {
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(1 << 16);
        }
        tokio::select! {
            n = up.read_buf(&mut rbuf) => if n? == 0 { return Ok(()) },
            _ = pong_rx.recv() => out.extend_from_slice(b"PONG\r\n"),
        }
        while let Some(i) = rbuf.iter().position(|&b| b == b'\n') {
            let line = &rbuf[..i.saturating_sub(1)];
            let Some(rest) = line.strip_prefix(b"MSG logs.acme.") else {
                if line.starts_with(b"PING") {
                    up.write_all(b"PONG\r\n").await?;
                }
                rbuf.advance(i + 1);
                continue;
            };
            // `<rest-of-subject> <sid> <len>` (no reply subjects here).
            let mut fields = rest.split(|b| *b == b' ');
            let subject = fields.next().unwrap_or(b"");
            let len: usize = std::str::from_utf8(fields.next_back().unwrap_or(b""))?.parse()?;
            if rbuf.len() < i + 1 + len + 2 {
                break; // the payload is still on its way
            }
            out.extend_from_slice(b"MSG logs.");
            out.extend_from_slice(subject);
            out.extend_from_slice(b" ");
            out.extend_from_slice(&sid);
            out.extend_from_slice(b" ");
            out.extend_from_slice(flotilla_core::decimal(len as u64, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rbuf[i + 1..i + 1 + len + 2]);
            rbuf.advance(i + 1 + len + 2);
        }
        if !out.is_empty() {
            cwr.write_all(&out).await?;
            out.clear();
        }
    }
}
