//! The socket under a publish connection ([`super::wire`]): plain TCP, or
//! TLS (rustls) driven by hand over the same non-blocking socket. Every
//! operation is synchronous work between readiness waits, so the
//! connection stays cancel-safe either way.

use std::io::{self, Read as _, Write as _};

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::Interest;
use tokio::net::TcpStream;

pub struct Link {
    tcp: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Link {
    pub fn plain(tcp: TcpStream) -> Link {
        Link { tcp, tls: None }
    }

    /// The TLS handshake: after the server's plaintext INFO, or before it
    /// (`tls_first`).
    pub async fn upgrade(self, connector: &tokio_rustls::TlsConnector, name: ServerName<'static>) -> io::Result<Link> {
        let stream = connector.connect(name, self.tcp).await?;
        let (tcp, conn) = stream.into_inner();
        Ok(Link { tcp, tls: Some(Box::new(conn)) })
    }

    /// Append what has arrived to `buf`: `Ok(0)` once the server closed,
    /// `WouldBlock` if nothing has yet.
    pub fn try_read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let Some(conn) = self.tls.as_mut() else { return self.tcp.try_read_buf(buf) };
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match conn.reader().read(&mut chunk) {
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(n); // 0: the server's close_notify
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if conn.read_tls(&mut TryIo(&self.tcp))? == 0 {
                return Ok(0);
            }
            conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Write as much of `buf` as the socket takes without waiting.
    pub fn try_write(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        let Some(conn) = self.tls.as_mut() else {
            while !buf.is_empty() {
                match self.tcp.try_write(buf) {
                    Ok(n) => buf.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        };
        loop {
            let mut progress = false;
            if !buf.is_empty() {
                // rustls takes what its bounded buffer has room for.
                let n = conn.writer().write(buf)?;
                buf.advance(n);
                progress |= n > 0;
            }
            if conn.wants_write() {
                match conn.write_tls(&mut TryIo(&self.tcp)) {
                    Ok(n) => progress |= n > 0,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Whether bytes wait to go out: `buf`'s, or records TLS holds.
    pub fn wants_write(&self, buf: &BytesMut) -> bool {
        !buf.is_empty() || self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Wait until the socket is readable, or writable while `buf` or TLS
    /// holds something to write.
    pub async fn ready(&self, buf: &BytesMut) -> io::Result<()> {
        let interest = if self.wants_write(buf) { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        self.tcp.ready(interest).await.map(drop)
    }

    /// Read at least one byte into `buf` (writing what waits meanwhile);
    /// `Ok(0)` once the server closed.
    pub async fn read(&mut self, buf: &mut BytesMut, out: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.try_write(out)?;
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready(out).await?,
                r => return r,
            }
        }
    }

    /// Write all of `buf`.
    pub async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        loop {
            self.try_write(buf)?;
            if !self.wants_write(buf) {
                return Ok(());
            }
            self.tcp.ready(Interest::WRITABLE).await?;
        }
    }
}

/// A non-blocking socket as `Read`/`Write` for rustls.
struct TryIo<'a>(&'a TcpStream);

impl io::Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    /// rustls hands over every record it holds at once: one system call
    /// for all of them, not one per record.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
