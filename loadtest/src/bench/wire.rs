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
