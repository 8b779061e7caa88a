//! A source's own publish connection: HPUBs are written straight into one
//! buffer and acks are read in place off the socket, by the source's own
//! task. No client task, no channel hop, no header map per event. Over
//! plain TCP, or TLS ([`super::link`]) to every server when a `tls://` URL
//! is configured, else to a server whose INFO requires it.
//!
//! Cancel-safe: every await is a readiness wait, and every change to the
//! buffers happens between awaits, so a future dropped in a `select!`
//! leaves the connection whole (a frame is never half queued or half
//! consumed).
//!
//! Writes go out when the source has to wait for an ack that has not been
//! read yet, or once 64 KiB are queued: a full window of publishes leaves
//! in a few writes. The server's PINGs are answered whenever the socket is
//! read, including by [`Wire::read_more`] while the source is idle.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::net::TcpStream;

use super::link::Link;

use flotilla_core::metrics::Counter;
use flotilla_core::nats::frames::{self, FrameError, ServerOp};
pub use flotilla_core::nats::tls::TlsOptions;
use flotilla_core::nats::tls::{self, ServerInfo};
use flotilla_core::nats::ServerList;

/// Queued bytes past which a publish writes without waiting for an ack.
const WRITE_AT: usize = 64 * 1024;

/// Where and how a source connects.
pub struct Options {
    /// `host:port` of each server, tried in turn.
    pub servers: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// The connection's name in the server's monitoring.
    pub name: String,
    /// How long the TCP connect, INFO, CONNECT and its PONG may take.
    pub connect_timeout: Duration,
    /// Counts connections made.
    pub connects: Counter,
    /// Counts connections lost (or refused).
    pub disconnects: Counter,
    /// TLS settings; without them a server that requires TLS is left to
    /// async-nats ([`WireError::NeedsTls`]).
    pub tls: Option<TlsOptions>,
}

impl Options {
    /// Options for the servers of a `url` value (`None` if it has none).
    /// `tls`: the settings for TLS servers. Credentials: `user` and
    /// `password`, else the URL's own (`nats://user:pass@...`, or
    /// `nats://token@...`).
    pub fn for_url(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
        name: String,
        connects: Counter,
        disconnects: Counter,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Option<Options> {
        let servers = flotilla_core::nats::servers(url).ok()?;
        let (addrs, required) = flotilla_core::nats::tcp_addrs(&servers)?;
        if required && tls.is_none() {
            return None; // tls:// without TLS settings: async-nats's
        }
        let first = &servers[0];
        let (user, password, token) = match (user, password, first.username(), first.password()) {
            (Some(u), Some(p), _, _) => (Some(u.to_string()), Some(p.to_string()), None),
            (_, _, Some(u), Some(p)) => (Some(u.to_string()), Some(p.to_string()), None),
            (_, _, Some(t), None) => (None, None, Some(t.to_string())),
            _ => (None, None, None),
        };
        Some(Options {
            servers: addrs,
            user,
            password,
            token,
            name,
            connect_timeout: Duration::from_secs(5),
            connects,
            disconnects,
            tls: tls.map(|connector| TlsOptions { connector, required, first: false }),
        })
    }

    /// The TLS handshake first, before the server's INFO (`nats.tls_first`,
    /// for servers with `handshake_first`).
    pub fn tls_first(mut self, first: bool) -> Options {
        if let Some(tls) = &mut self.tls {
            tls.first = first;
        }
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    #[error("the server said: {0}")]
    Refused(String),
    #[error("the server requires TLS")]
    NeedsTls,
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    /// Refused here, nothing written: the connection stays.
    #[error("a message of {size} bytes is over the server's max_payload of {max}")]
    TooLarge { size: usize, max: usize },
}

/// One event's headers, written as the header block of its HPUB.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub pairs: &'a [(&'a str, &'a str)],
}

impl Headers<'_> {
    /// The header block's length in bytes.
    pub fn wire_len(&self) -> usize {
        const VERSION: usize = "NATS/1.0\r\n".len();
        VERSION + self.pairs.iter().map(|(k, v)| k.len() + 2 + v.len() + 2).sum::<usize>() + 2
    }
}

pub struct Wire {
    link: Link,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_payload: usize,
    /// The last INFO the server sent after the first (cluster changes).
    later_info: Option<Vec<u8>>,
}

impl Wire {
    /// Connect to `server`, say who we are and subscribe `inbox` as sid 1;
    /// returns once the server answered the PING after them. The cluster
    /// members its INFO names are added to `servers`.
    pub async fn connect(
        opts: &Options,
        server: &str,
        inbox: &str,
        servers: &mut ServerList,
    ) -> Result<Wire, WireError> {
        let open = async {
            let stream = TcpStream::connect(server).await?;
            let _ = stream.set_nodelay(true);
            let mut wire = Wire {
                link: Link::plain(stream),
                rbuf: BytesMut::with_capacity(16 * 1024),
                wbuf: BytesMut::new(),
                max_payload: 0,
                later_info: None,
            };
            let first =
                tls::first(opts.tls.as_ref(), server, servers).map_err(|e| WireError::Refused(e.to_string()))?;
            let tls_first = first.is_some();
            if let Some((connector, name)) = first {
                wire.link = wire.link.upgrade(connector, name).await.map_err(WireError::Tls)?;
            }
            let (info, json) = wire.read_info().await?;
            wire.max_payload = info.max_payload;
            let after_info = match tls_first {
                true => Ok(None), // TLS already: the INFO came over it
                false => tls::upgrade(opts.tls.as_ref(), &info, wire.rbuf.len(), server, servers),
            };
            match after_info {
                Ok(Some((connector, name))) => {
                    wire.link = wire.link.upgrade(connector, name).await.map_err(WireError::Tls)?;
                    // The plaintext INFO could have been written by anyone
                    // on the path.
                    servers.learn_unverified(&json);
                }
                Ok(None) => servers.learn(&json),
                Err(tls::Refusal::NeedsTls) => return Err(WireError::NeedsTls),
                Err(e) => return Err(WireError::Refused(e.to_string())),
            }
            wire.wbuf.put_slice(connect_line(opts).as_bytes());
            for part in ["SUB ", inbox, " 1\r\nPING\r\n"] {
                wire.wbuf.put_slice(part.as_bytes());
            }
            wire.link.write_all(&mut wire.wbuf).await?;
            wire.await_pong().await?;
            Ok(wire)
        };
        match tokio::time::timeout(opts.connect_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout(server.to_string(), opts.connect_timeout)),
        }
    }

    /// Queue one HPUB; written by [`Wire::read_more`] or once enough is
    /// queued. Over the server's max_payload it is refused, and nothing is
    /// queued.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: [&str; 2],
        headers: Headers<'_>,
        body: &[u8],
    ) -> Result<(), WireError> {
        let hlen = headers.wire_len();
        if hlen + body.len() > self.max_payload {
            return Err(WireError::TooLarge { size: hlen + body.len(), max: self.max_payload });
        }
        let digits = &mut [0u8; 20];
        self.wbuf.reserve(subject.len() + reply[0].len() + reply[1].len() + 64 + hlen + body.len());
        for part in [b"HPUB ".as_slice(), subject.as_bytes(), b" ", reply[0].as_bytes(), reply[1].as_bytes(), b" "] {
            self.wbuf.put_slice(part);
        }
        self.wbuf.put_slice(flotilla_core::decimal(hlen as u64, digits));
        self.wbuf.put_u8(b' ');
        self.wbuf.put_slice(flotilla_core::decimal((hlen + body.len()) as u64, digits));
        self.wbuf.put_slice(b"\r\nNATS/1.0\r\n");
        for (k, v) in headers.pairs {
            for part in [k.as_bytes(), b": ", v.as_bytes(), b"\r\n"] {
                self.wbuf.put_slice(part);
            }
        }
        self.wbuf.put_slice(b"\r\n");
        self.wbuf.put_slice(body);
        self.wbuf.put_slice(b"\r\n");
        if self.wbuf.len() >= WRITE_AT {
            self.write_now()?;
        }
        Ok(())
    }

    /// Take the next message already read (its subject, header block and
    /// payload, given to `f`); PINGs read on the way are answered. `None`
    /// when no whole message has been read: call [`Wire::read_more`].
    pub fn take_msg<T>(&mut self, mut f: impl FnMut(&str, Option<&[u8]>, &[u8]) -> T) -> Result<Option<T>, WireError> {
        loop {
            let Some((op, used)) = frames::parse(&self.rbuf, self.max_payload)? else {
                return Ok(None);
            };
            let got = match op {
                ServerOp::Msg { subject, headers, payload, .. } => Some(f(subject, headers, payload)),
                ServerOp::Ping => {
                    self.wbuf.put_slice(b"PONG\r\n");
                    None
                }
                ServerOp::Err(text) if frames::is_fatal(text) => return Err(WireError::Refused(text.to_string())),
                ServerOp::Err(text) => {
                    // e.g. a permissions violation through the proxy: the
                    // publish is dropped and its ack will time out.
                    tracing::warn!(error = %text, "NATS server error");
                    None
                }
                ServerOp::Info(json) => {
                    self.later_info = Some(json.to_vec());
                    None
                }
                ServerOp::Pong | ServerOp::Ok => None,
            };
            self.rbuf.advance(used);
            if got.is_some() {
                return Ok(got);
            }
        }
    }

    /// The last INFO the server sent since connecting (it names the
    /// cluster's members as they change), if any.
    pub fn later_info(&self) -> Option<&[u8]> {
        self.later_info.as_deref()
    }

    /// Write what is queued and wait until more has been read.
    pub async fn read_more(&mut self) -> Result<(), WireError> {
        loop {
            self.write_now()?;
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(16 * 1024);
            }
            match self.link.try_read(&mut self.rbuf) {
                Ok(0) => return Err(WireError::Closed),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            self.link.ready(&self.wbuf).await?;
        }
    }

    /// Write as much of the queue as the socket takes without waiting.
    fn write_now(&mut self) -> io::Result<()> {
        self.link.try_write(&mut self.wbuf)
    }

    /// The server's INFO: what it says, and its JSON.
    async fn read_info(&mut self) -> Result<(ServerInfo, Vec<u8>), WireError> {
        loop {
            if let Some((op, used)) = frames::parse(&self.rbuf, usize::MAX)? {
                let ServerOp::Info(json) = op else { return Err(WireError::Refused("no INFO first".into())) };
                let info = serde_json::from_slice(json)
                    .map_err(|e| WireError::Refused(format!("INFO that does not parse: {e}")))?;
                let json = json.to_vec();
                self.rbuf.advance(used);
                return Ok((info, json));
            }
            if self.link.read(&mut self.rbuf, &mut self.wbuf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Wait for the PONG that says CONNECT and SUB were taken (an
    /// authorization error comes instead).
    async fn await_pong(&mut self) -> Result<(), WireError> {
        loop {
            while let Some((op, used)) = frames::parse(&self.rbuf, self.max_payload)? {
                let done = match op {
                    ServerOp::Pong => Some(Ok(())),
                    ServerOp::Err(text) => Some(Err(WireError::Refused(text.to_string()))),
                    ServerOp::Ping => {
                        self.wbuf.put_slice(b"PONG\r\n");
                        None
                    }
                    _ => None,
                };
                self.rbuf.advance(used);
                if let Some(done) = done {
                    return done;
                }
            }
            self.link.write_all(&mut self.wbuf).await?;
            if self.link.read(&mut self.rbuf, &mut self.wbuf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }
}

fn connect_line(opts: &Options) -> String {
    let mut c = serde_json::json!({
        "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
        "protocol": 1, "lang": "rust", "version": env!("CARGO_PKG_VERSION"), "name": opts.name,
    });
    if let (Some(u), Some(p)) = (&opts.user, &opts.password) {
        c["user"] = u.as_str().into();
        c["pass"] = p.as_str().into();
    } else if let Some(t) = &opts.token {
        c["auth_token"] = t.as_str().into();
    }
    format!("CONNECT {c}\r\n")
}

/// The status code of a header block (`NATS/1.0 503 ...`), if it has one.
pub fn status(headers: &[u8]) -> Option<u16> {
    let line = headers.strip_prefix(b"NATS/1.0")?;
    let end = line.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(line.len());
    let code = std::str::from_utf8(&line[..end]).ok()?.split_whitespace().next()?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_from_header_blocks() {
        assert_eq!(status(b"NATS/1.0 503\r\n\r\n"), Some(503));
        assert_eq!(status(b"NATS/1.0 408 Request Timeout\r\n\r\n"), Some(408));
        assert_eq!(status(b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n"), None);
        assert_eq!(status(b"garbage"), None);
    }

    fn for_url(url: &str, user: Option<&str>, password: Option<&str>) -> Option<Options> {
        let r = flotilla_core::metrics::Registry::default();
        Options::for_url(url, user, password, "t".into(), r.counter("c", "c", &[]), r.counter("d", "d", &[]), None)
    }

    #[test]
    fn options_take_plain_servers_and_their_credentials() {
        let o = for_url("nats://a:4222, nats://b:4223", None, None).unwrap();
        assert_eq!(o.servers, ["a:4222", "b:4223"]);
        assert_eq!((o.user, o.password, o.token), (None, None, None));
        let o = for_url("nats://u:p@a:4222", None, None).unwrap();
        assert_eq!((o.user.as_deref(), o.password.as_deref(), o.token), (Some("u"), Some("p"), None));
        let o = for_url("nats://s3cret@a:4222", None, None).unwrap();
        assert_eq!((o.user, o.token.as_deref()), (None, Some("s3cret")));
        let o = for_url("nats://u:p@a:4222", Some("cfg"), Some("pw")).unwrap();
        assert_eq!((o.user.as_deref(), o.password.as_deref()), (Some("cfg"), Some("pw")), "the config wins");
        assert!(for_url("nats://a:4222,tls://b:4222", None, None).is_none(), "tls:// needs TLS settings");
        assert!(for_url("not a url", None, None).is_none());
        let r = flotilla_core::metrics::Registry::default();
        let tls = flotilla_core::nats::tls::connector(Default::default(), "nats").unwrap();
        let (c, d) = (r.counter("c", "c", &[]), r.counter("d", "d", &[]));
        let o = Options::for_url("nats://a:1,tls://b:2", None, None, "t".into(), c, d, Some(tls)).unwrap();
        assert!(o.tls.is_some_and(|t| t.required), "one tls:// URL: TLS to every server");
    }

    #[test]
    fn header_length_counts_every_byte() {
        let h = Headers { pairs: &[("Nats-Msg-Id", "h/f/n/0"), ("Flotilla-Seq", "1")] };
        let written = "NATS/1.0\r\nNats-Msg-Id: h/f/n/0\r\nFlotilla-Seq: 1\r\n\r\n";
        assert_eq!(h.wire_len(), written.len());
    }
}
