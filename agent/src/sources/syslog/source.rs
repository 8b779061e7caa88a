//! The syslog source: UDP datagrams and TCP streams (RFC 6587 framing),
//! RFC 3164 and RFC 5424, into the spill queue. Listeners hand messages to
//! one emitter through a bounded channel: when the queue is full and its
//! policy is `block`, TCP senders are slowed by backpressure.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use flotilla_core::codec::{self, Codec};
use flotilla_core::subject::OrgId;

use super::framing::next_frame;
use crate::config::SyslogSourceConfig;
use crate::pipeline::emit::{Emitter, Origin};
use crate::sources::stdin::flag;

struct Message {
    bytes: Vec<u8>,
    truncated: bool,
    source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("syslog {proto} {addr}: {source}")]
    Bind { proto: &'static str, addr: String, source: std::io::Error },
}

/// The listeners, bound before the source starts so a bad address is an
/// error at start-up, not a silent hole.
pub struct Listeners {
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(cfg: &SyslogSourceConfig) -> Result<Listeners, SyslogError> {
        let udp = match &cfg.udp {
            Some(a) => Some(UdpSocket::bind(a).await.map_err(|source| SyslogError::Bind {
                proto: "udp",
                addr: a.clone(),
                source,
            })?),
            None => None,
        };
        let tcp = match &cfg.tcp {
            Some(a) => Some(TcpListener::bind(a).await.map_err(|source| SyslogError::Bind {
                proto: "tcp",
                addr: a.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Listeners { udp, tcp })
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|s| s.local_addr().ok())
    }
}

pub async fn run(cfg: SyslogSourceConfig, listeners: Listeners, mut emitter: Emitter, shutdown: CancellationToken) {
    let Ok(org) = OrgId::new(&cfg.org) else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Message>(1024);
    let stop = shutdown.child_token();
    if let Some(sock) = listeners.udp {
        tokio::spawn(udp_loop(sock, cfg.max_message_bytes, tx.clone(), stop.clone()));
    }
    if let Some(listener) = listeners.tcp {
        tokio::spawn(tcp_accept(listener, cfg.max_message_bytes, tx.clone(), stop.clone()));
    }
    drop(tx);
    loop {
        let m = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = shutdown.cancelled() => break,
        };
        emitter.stats.bytes_read.add(m.bytes.len() as u64);
        let invalid = std::str::from_utf8(&m.bytes).is_err();
        let text = String::from_utf8_lossy(&m.bytes);
        let text = text.trim_end_matches(['\n', '\r', '\0']);
        let app = codec::parse_syslog(text)
            .and_then(|s| s.appname)
            .filter(|a| !a.is_empty() && a != "-")
            .unwrap_or_else(|| cfg.app.clone());
        let mut decoded = codec::decode(Codec::Syslog, text);
        flag(&mut decoded, m.truncated, invalid);
        if m.truncated {
            emitter.stats.split_lines.inc();
        }
        if invalid {
            emitter.stats.invalid_utf8.inc();
        }
        let origin = Origin { org: &org, app: &app, source: &m.source };
        if let Err(e) = emitter.emit(&origin, decoded, None).await {
            tracing::error!(error = %e, "syslog: cannot queue an event");
        }
    }
    stop.cancel();
}

async fn udp_loop(sock: UdpSocket, max: usize, tx: mpsc::Sender<Message>, stop: CancellationToken) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "syslog udp receive failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let truncated = n > max;
        let m = Message { bytes: buf[..n.min(max)].to_vec(), truncated, source: format!("syslog:udp:{peer}") };
        if tx.send(m).await.is_err() {
            return;
        }
    }
}

async fn tcp_accept(listener: TcpListener, max: usize, tx: mpsc::Sender<Message>, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "syslog tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        tokio::spawn(tcp_conn(stream, peer, max, tx.clone(), stop.clone()));
    }
}

async fn tcp_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    max: usize,
    tx: mpsc::Sender<Message>,
    stop: CancellationToken,
) {
    let source = format!("syslog:tcp:{peer}");
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match next_frame(&buf, max) {
                Ok(Some((frame, used))) => {
                    let _ = buf.split_to(used);
                    if frame.bytes.is_empty() {
                        continue;
                    }
                    let m = Message { bytes: frame.bytes, truncated: frame.truncated, source: source.clone() };
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "syslog tcp framing error; closing the connection");
                    return;
                }
            }
        }
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            _ = stop.cancelled() => return,
        };
        match read {
            Ok(0) => {
                // A last message without a trailing newline.
                if !buf.is_empty() {
                    let bytes = buf.split().to_vec();
                    let _ = tx.send(Message { bytes, truncated: false, source: source.clone() }).await;
                }
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
