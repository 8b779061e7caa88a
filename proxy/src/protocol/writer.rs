//! Encoding of server→client operations.

use bytes::{BufMut, Bytes, BytesMut};

pub fn info(json: &str) -> Bytes {
    Bytes::from(format!("INFO {json}\r\n"))
}

pub fn err(text: &str) -> Bytes {
    // Quotes inside the text would end nats-server's quoting early.
    Bytes::from(format!("-ERR '{}'\r\n", text.replace('\'', "\"")))
}

pub const OK: &[u8] = b"+OK\r\n";
pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// `MSG <subject> <sid> [reply] <#bytes>` or, with headers,
/// `HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>`.
pub fn msg(subject: &str, sid: &str, reply: Option<&str>, headers: Option<&[u8]>, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(subject.len() + payload.len() + 64);
    put_msg(&mut b, &[subject], sid, reply, headers, payload);
    b.freeze()
}

/// A `MSG`/`HMSG` frame's bytes beyond its subject, sid, reply, headers and
/// payload, at most: the verb, spaces, two lengths and two CRLFs.
pub const MSG_OVERHEAD: usize = 5 + 4 + 2 * 20 + 4;

/// Append a `MSG` (or `HMSG`) frame to `b`; the subject is `subject`'s
/// parts, one after another.
pub fn put_msg(
    b: &mut BytesMut,
    subject: &[&str],
    sid: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    b.put_slice(if headers.is_some() { b"HMSG " } else { b"MSG " });
    for part in subject {
        b.put_slice(part.as_bytes());
    }
    b.put_u8(b' ');
    b.put_slice(sid.as_bytes());
    if let Some(r) = reply {
        b.put_u8(b' ');
        b.put_slice(r.as_bytes());
    }
    let hlen = headers.map_or(0, <[u8]>::len);
    if headers.is_some() {
        b.put_u8(b' ');
        put_usize(b, hlen);
    }
    b.put_u8(b' ');
    put_usize(b, hlen + payload.len());
    b.put_slice(b"\r\n");
    if let Some(h) = headers {
        b.put_slice(h);
    }
    b.put_slice(payload);
    b.put_slice(b"\r\n");
}

fn put_usize(b: &mut BytesMut, n: usize) {
    b.put_slice(flotilla_core::decimal(n as u64, &mut [0; 20]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fit_in_their_overhead_bound() {
        let (subject, sid, reply, headers, payload) = ("logs.a.b", "12345", "_R.99", b"NATS/1.0\r\n\r\n", [7u8; 300]);
        let mut b = BytesMut::new();
        put_msg(&mut b, &[subject], sid, Some(reply), Some(headers), &payload);
        let parts = subject.len() + sid.len() + reply.len() + headers.len() + payload.len();
        assert!(b.len() <= parts + MSG_OVERHEAD, "{} > {}", b.len(), parts + MSG_OVERHEAD);
    }

    #[test]
    fn encodes_msg_and_hmsg() {
        assert_eq!(&msg("a.b", "1", None, None, b"hi")[..], b"MSG a.b 1 2\r\nhi\r\n");
        assert_eq!(&msg("a", "7", Some("r"), None, b"")[..], b"MSG a 7 r 0\r\n\r\n");
        let h = b"NATS/1.0\r\n\r\n";
        assert_eq!(&msg("a", "1", None, Some(h), b"x")[..], b"HMSG a 1 12 13\r\nNATS/1.0\r\n\r\nx\r\n");
        let mut b = BytesMut::new();
        put_msg(&mut b, &["logs", ".", "web.iad"], "3", None, None, b"y");
        assert_eq!(&b[..], b"MSG logs.web.iad 3 1\r\ny\r\n", "subject parts written as one subject");
        assert_eq!(
            &err("Permissions Violation for Publish to 'x'")[..],
            b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n"
        );
    }
}
