//! Bare NATS protocol clients for the proxy's latency run: a subscriber on
//! a thread of its own that stamps each read's messages with the time of
//! that read, and a paced publisher that writes whole PUB frames. Both
//! cost a fraction of an async-nats client per message. At half the proxy's
//! peak, async-nats clients sharing one runtime on the same 2 cores fell
//! behind themselves: the direct path's own p50 was 25 ms. They also
//! stamped one subscriber's batch only after the other's had been handled.
//! The same clients serve both paths, so the comparison stays even.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flotilla_core::nats::frames::{self, ServerOp};

use super::BenchError;

/// A subscriber stops this long after its last message (30 s before the first).
const IDLE_END: Duration = Duration::from_secs(2);

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(format!("{what}: {e}"))
}

/// `host:port` of a `nats://host:port` URL.
pub fn addr(url: &str) -> &str {
    url.trim_start_matches("nats://")
}

/// A connection that has said CONNECT and had its PING answered.
struct Conn {
    stream: TcpStream,
    /// Read bytes are `buf[..len]`, parsed up to `at`.
    buf: Vec<u8>,
    len: usize,
    at: usize,
}

impl Conn {
    fn open(addr: &str, creds: Option<(&str, &str)>, then: &str) -> Result<Conn, BenchError> {
        let stream = TcpStream::connect(addr).map_err(|e| failed(&format!("connect {addr}"), e))?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| failed("socket", e))?;
        let mut conn = Conn { stream, buf: vec![0; 1 << 20], len: 0, at: 0 };
        let mut connect = serde_json::json!({"verbose": false, "pedantic": false, "protocol": 1, "lang": "rust"});
        if let Some((user, pass)) = creds {
            connect["user"] = user.into();
            connect["pass"] = pass.into();
        }
        let hello = format!("CONNECT {connect}\r\n{then}PING\r\n");
        conn.stream.write_all(hello.as_bytes()).map_err(|e| failed("CONNECT", e))?;
        loop {
            let done = conn.each_op(|op| match op {
                ServerOp::Pong => Some(Ok(())),
                ServerOp::Err(text) => Some(Err(failed(&format!("{addr} refused"), text))),
                _ => None,
            })?;
            if let Some(done) = done {
                return done.map(|()| conn);
            }
            conn.fill()?;
        }
    }

    /// Read more (0 bytes: the connection ended).
    fn fill(&mut self) -> Result<usize, BenchError> {
        if self.at == self.len {
            (self.at, self.len) = (0, 0);
        } else if self.at > self.buf.len() / 2 {
            self.buf.copy_within(self.at..self.len, 0);
            (self.at, self.len) = (0, self.len - self.at);
        }
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.len..]).map_err(|e| failed("read", e))?;
        self.len += n;
        Ok(n)
    }

    /// Each whole operation read so far, until `f` says stop; PINGs are
    /// answered.
    fn each_op<T>(&mut self, mut f: impl FnMut(ServerOp<'_>) -> Option<T>) -> Result<Option<T>, BenchError> {
        while let Some((op, used)) =
            frames::parse(&self.buf[self.at..self.len], usize::MAX).map_err(|e| failed("parse", e))?
        {
            self.at += used;
            if op == ServerOp::Ping {
                self.stream.write_all(b"PONG\r\n").map_err(|e| failed("PONG", e))?;
                continue;
            }
            if let Some(t) = f(op) {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }
}

/// A subscription, ready to record.
pub struct Recorder(Conn);

impl Recorder {
    pub fn open(addr: &str, creds: Option<(&str, &str)>, subject: &str) -> Result<Recorder, BenchError> {
        Conn::open(addr, creds, &format!("SUB {subject} 1\r\n")).map(Recorder)
    }

    /// On a thread of its own: the arrival time (ns after `start`) of each
    /// message by the number in its payload (bytes 8..16), 0 if it never
    /// came; ends after `expected` messages or [`IDLE_END`] without one.
    pub fn spawn(self, start: Instant, expected: u64) -> JoinHandle<Vec<u64>> {
        std::thread::spawn(move || {
            let mut conn = self.0;
            let mut arrivals = vec![0u64; expected as usize];
            let _ = conn.stream.set_read_timeout(Some(Duration::from_secs(30)));
            let mut n = 0u64;
            while n < expected {
                match conn.fill() {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let now = (start.elapsed().as_nanos() as u64).max(1);
                let stamped = conn.each_op(|op| {
                    if let ServerOp::Msg { payload, .. } = op {
                        let i = payload.get(8..16).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                        if let Some(slot) = i.and_then(|i| arrivals.get_mut(i as usize)) {
                            *slot = now;
                        }
                        n += 1;
                    }
                    None::<()>
                });
                if stamped.is_err() {
                    break;
                }
                let _ = conn.stream.set_read_timeout(Some(IDLE_END));
            }
            arrivals
        })
    }
}

/// Publish `total` messages of `size` bytes to `subject` at `rate`/s, what
/// is due written every `step`; each payload holds its send time (ns after
/// `start`) and its number. Returns the send times and the rate achieved.
pub fn pace(
    addr: &str,
    subject: &str,
    size: usize,
    start: Instant,
    rate: u64,
    total: u64,
    step: Duration,
) -> Result<(Vec<u64>, f64), BenchError> {
    let mut conn = Conn::open(addr, None, "")?;
    let head = format!("PUB {subject} {size}\r\n");
    let mut sent_at = Vec::with_capacity(total as usize);
    let mut out = Vec::with_capacity(1 << 20);
    let t0 = Instant::now();
    let mut next = t0;
    while (sent_at.len() as u64) < total {
        next += step;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let now = start.elapsed().as_nanos() as u64;
        out.clear();
        while (sent_at.len() as u64) < due {
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(&now.to_le_bytes());
            out.extend_from_slice(&(sent_at.len() as u64).to_le_bytes());
            out.resize(out.len() + size.saturating_sub(16), b'x');
            out.extend_from_slice(b"\r\n");
            sent_at.push(now);
        }
        conn.stream.write_all(&out).map_err(|e| failed("publish", e))?;
    }
    let achieved = sent_at.len() as f64 / t0.elapsed().as_secs_f64();
    // Flushed when the server answers a PING sent after everything.
    conn.stream.write_all(b"PING\r\n").map_err(|e| failed("PING", e))?;
    loop {
        if conn.each_op(|op| (op == ServerOp::Pong).then_some(()))?.is_some() {
            break;
        }
        if conn.fill()? == 0 {
            return Err(BenchError::Failed("nats-server closed the publisher's connection".into()));
        }
    }
    Ok((sent_at, achieved))
}

/// The cheapest extra hop there is: one thread that reads `MSG` frames
/// from nats-server, rewrites the subject and sid, and writes them to its
/// one client, with no checks, queues or runtime. What it adds to the
/// latency run is what any process between nats-server and a subscriber
/// adds on this machine.
pub struct Hop {
    pub addr: String,
    thread: JoinHandle<Result<(), BenchError>>,
}

impl Hop {
    /// Listen on a free loopback port; the first client that subscribes
    /// gets `upstream`'s messages with `strip` taken off their subjects,
    /// until `total` have been forwarded (or none came for [`IDLE_END`]).
    pub fn start(nats: &str, upstream: &str, strip: &'static str, total: u64) -> Result<Hop, BenchError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| failed("hop: bind", e))?;
        let addr = listener.local_addr().map_err(|e| failed("hop: bind", e))?.to_string();
        let (nats, upstream) = (nats.to_string(), upstream.to_string());
        let thread = std::thread::spawn(move || {
            let (mut client, _) = listener.accept().map_err(|e| failed("hop: accept", e))?;
            let _ = client.set_nodelay(true);
            client.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| failed("hop: socket", e))?;
            client
                .write_all(b"INFO {\"server_id\":\"hop\",\"proto\":1,\"headers\":true,\"max_payload\":1048576}\r\n")
                .map_err(|e| failed("hop: INFO", e))?;
            let sid = client_sid(&mut client)?;
            let mut up = Conn::open(&nats, None, &format!("SUB {upstream} 1\r\n"))?;
            client.write_all(b"PONG\r\n").map_err(|e| failed("hop: PONG", e))?;
            up.stream.set_read_timeout(Some(IDLE_END)).map_err(|e| failed("hop: socket", e))?;
            let mut out = Vec::with_capacity(1 << 20);
            let mut forwarded = 0u64;
            while forwarded < total {
                match up.fill() {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => {}
                }
                out.clear();
                up.each_op(|op| {
                    if let ServerOp::Msg { subject, payload, .. } = op {
                        let subject = subject.strip_prefix(strip).unwrap_or(subject);
                        let _ = write!(out, "MSG {subject} {sid} {}\r\n", payload.len());
                        out.extend_from_slice(payload);
                        out.extend_from_slice(b"\r\n");
                        forwarded += 1;
                    }
                    None::<()>
                })?;
                if client.write_all(&out).is_err() {
                    return Ok(()); // the client is done
                }
            }
            Ok(())
        });
        Ok(Hop { addr, thread })
    }

    /// Wait for the hop to end.
    pub fn join(self) -> Result<(), BenchError> {
        self.thread.join().map_err(|_| BenchError::Failed("the hop panicked".into()))?
    }
}

/// Read a client's CONNECT, SUB and PING; the SUB's sid.
fn client_sid(client: &mut TcpStream) -> Result<String, BenchError> {
    let (mut buf, mut sid) = (Vec::new(), None);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..i + 2).collect();
            let line = String::from_utf8_lossy(&line[..i]).into_owned();
            if line.starts_with("SUB ") {
                sid = line.rsplit(' ').next().map(str::to_string);
            } else if line == "PING" {
                return sid.ok_or_else(|| BenchError::Failed("hop: PING before SUB".into()));
            }
        }
        let n = client.read(&mut chunk).map_err(|e| failed("hop: read", e))?;
        if n == 0 {
            return Err(BenchError::Failed("hop: the client left".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_testsupport::NatsServer;

    #[test]
    fn every_paced_message_arrives_directly_and_through_the_hop() {
        let nats = NatsServer::start();
        let addr = format!("127.0.0.1:{}", nats.port());
        let direct = Recorder::open(&addr, None, "logs.acme.>").unwrap();
        let total = 2_000;
        let hop = Hop::start(&addr, "logs.acme.>", "logs.acme.", total).unwrap();
        // The hop answers the recorder's handshake (INFO, PONG) as a server does.
        let hopped = Recorder::open(&hop.addr, None, "logs.>").unwrap();
        let start = Instant::now();
        let (d, h) = (direct.spawn(start, total), hopped.spawn(start, total));
        let (sent, rate) =
            pace(&addr, "logs.acme.web.iad.h1", 200, start, 20_000, total, Duration::from_micros(100)).unwrap();
        assert_eq!(sent.len(), total as usize);
        assert!(rate > 1_000.0, "paced at {rate}/s");
        for arrivals in [d.join().unwrap(), h.join().unwrap()] {
            assert!(arrivals.iter().all(|&a| a > 0), "every message arrived");
            assert!(arrivals.iter().zip(&sent).all(|(a, s)| a >= s), "none before it was sent");
        }
        hop.join().unwrap();
    }
}
