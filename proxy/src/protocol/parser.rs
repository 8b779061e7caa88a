//! A pure parser for client→server operations.
//!
//! `parse(buf, max_payload)` returns `Ok(Some((op, consumed)))` for one whole
//! operation at the start of `buf`, `Ok(None)` when more bytes are needed, or
//! an error for input no NATS client would send. It never panics, whatever
//! the bytes.

use bytes::Bytes;

/// The longest control line accepted (nats-server's default).
pub const MAX_CONTROL_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    Connect(Bytes),
    Pub { subject: String, reply: Option<String>, payload: Bytes },
    Hpub { subject: String, reply: Option<String>, headers: Bytes, payload: Bytes },
    Sub { subject: String, queue: Option<String>, sid: String },
    Unsub { sid: String, max: Option<u64> },
    Ping,
    Pong,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("Unknown Protocol Operation")]
    UnknownOp,
    #[error("Maximum Control Line Exceeded")]
    ControlLineTooLong,
    #[error("Maximum Payload Violation")]
    MaxPayload,
    #[error("{0}")]
    Invalid(&'static str),
}

pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(ClientOp, usize)>, ProtoError> {
    let Some(nl) = buf.iter().take(MAX_CONTROL_LINE + 2).position(|&b| b == b'\n') else {
        return if buf.len() > MAX_CONTROL_LINE + 1 { Err(ProtoError::ControlLineTooLong) } else { Ok(None) };
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    let line = &buf[..line_end];
    let after = nl + 1;
    let (verb, rest) = split_verb(line);
    let verb = verb.to_ascii_uppercase();
    match verb.as_slice() {
        b"PING" if rest.is_empty() => Ok(Some((ClientOp::Ping, after))),
        b"PONG" if rest.is_empty() => Ok(Some((ClientOp::Pong, after))),
        b"CONNECT" => Ok(Some((ClientOp::Connect(Bytes::copy_from_slice(rest)), after))),
        b"SUB" => {
            let args = args(rest)?;
            let op = match args.as_slice() {
                [subject, sid] => ClientOp::Sub { subject: text(subject)?, queue: None, sid: text(sid)? },
                [subject, queue, sid] => {
                    ClientOp::Sub { subject: text(subject)?, queue: Some(text(queue)?), sid: text(sid)? }
                }
                _ => return Err(ProtoError::Invalid("SUB needs a subject, an optional queue group and a sid")),
            };
            Ok(Some((op, after)))
        }
        b"UNSUB" => {
            let args = args(rest)?;
            let op = match args.as_slice() {
                [sid] => ClientOp::Unsub { sid: text(sid)?, max: None },
                [sid, max] => ClientOp::Unsub { sid: text(sid)?, max: Some(number(max)?) },
                _ => return Err(ProtoError::Invalid("UNSUB needs a sid and an optional count")),
            };
            Ok(Some((op, after)))
        }
        b"PUB" => {
            let args = args(rest)?;
            let (subject, reply, size) = match args.as_slice() {
                [s, n] => (text(s)?, None, number(n)?),
                [s, r, n] => (text(s)?, Some(text(r)?), number(n)?),
                _ => return Err(ProtoError::Invalid("PUB needs a subject, an optional reply and a size")),
            };
            let Some((payload, used)) = body(&buf[after..], size, max_payload)? else { return Ok(None) };
            Ok(Some((ClientOp::Pub { subject, reply, payload }, after + used)))
        }
        b"HPUB" => {
            let args = args(rest)?;
            let (subject, reply, hsize, total) = match args.as_slice() {
                [s, h, n] => (text(s)?, None, number(h)?, number(n)?),
                [s, r, h, n] => (text(s)?, Some(text(r)?), number(h)?, number(n)?),
                _ => return Err(ProtoError::Invalid("HPUB needs a subject, an optional reply and two sizes")),
            };
            if hsize > total {
                return Err(ProtoError::Invalid("HPUB header size exceeds total size"));
            }
            let Some((all, used)) = body(&buf[after..], total, max_payload)? else { return Ok(None) };
            let hsize = hsize as usize;
            if !all.starts_with(b"NATS/1.0") {
                return Err(ProtoError::Invalid("HPUB headers must start with NATS/1.0"));
            }
            let (headers, payload) = (all.slice(..hsize), all.slice(hsize..));
            Ok(Some((ClientOp::Hpub { subject, reply, headers, payload }, after + used)))
        }
        _ => Err(ProtoError::UnknownOp),
    }
}

fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    let start = line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(line.len());
    let line = &line[start..];
    match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => {
            let rest = &line[i..];
            let skip = rest.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(rest.len());
            (&line[..i], &rest[skip..])
        }
        None => (line, &[]),
    }
}

fn args(rest: &[u8]) -> Result<Vec<&[u8]>, ProtoError> {
    let parts: Vec<&[u8]> = rest.split(|b| *b == b' ' || *b == b'\t').filter(|p| !p.is_empty()).collect();
    if parts.len() > 4 {
        return Err(ProtoError::Invalid("too many arguments"));
    }
    Ok(parts)
}

fn text(b: &[u8]) -> Result<String, ProtoError> {
    if b.iter().any(|c| c.is_ascii_control()) {
        return Err(ProtoError::Invalid("control character in argument"));
    }
    std::str::from_utf8(b).map(str::to_string).map_err(|_| ProtoError::Invalid("argument is not UTF-8"))
}

fn number(b: &[u8]) -> Result<u64, ProtoError> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return Err(ProtoError::Invalid("expected a number"));
    }
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(ProtoError::Invalid("expected a number"))
}

/// `size` payload bytes followed by CRLF, or `None` if not all here yet.
fn body(buf: &[u8], size: u64, max_payload: usize) -> Result<Option<(Bytes, usize)>, ProtoError> {
    if size > max_payload as u64 {
        return Err(ProtoError::MaxPayload);
    }
    let size = size as usize;
    if buf.len() < size + 2 {
        // A lone LF terminator is accepted too; wait for CRLF unless the LF is here.
        if buf.len() == size + 1 && buf[size] == b'\n' {
            return Ok(Some((Bytes::copy_from_slice(&buf[..size]), size + 1)));
        }
        return Ok(None);
    }
    match &buf[size..size + 2] {
        b"\r\n" => Ok(Some((Bytes::copy_from_slice(&buf[..size]), size + 2))),
        [b'\n', _] => Ok(Some((Bytes::copy_from_slice(&buf[..size]), size + 1))),
        _ => Err(ProtoError::Invalid("payload size does not match")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024 * 1024;

    fn one(input: &[u8]) -> ClientOp {
        let (op, used) = parse(input, MAX).unwrap().unwrap();
        assert_eq!(used, input.len(), "consumed all of {:?}", String::from_utf8_lossy(input));
        op
    }

    #[test]
    fn parses_every_client_op() {
        assert_eq!(one(b"PING\r\n"), ClientOp::Ping);
        assert_eq!(one(b"pong\r\n"), ClientOp::Pong);
        assert_eq!(
            one(b"CONNECT {\"verbose\":false}\r\n"),
            ClientOp::Connect(Bytes::from_static(b"{\"verbose\":false}"))
        );
        assert_eq!(one(b"SUB logs.> 1\r\n"), ClientOp::Sub { subject: "logs.>".into(), queue: None, sid: "1".into() });
        assert_eq!(
            one(b"sub logs.> workers  22\r\n"),
            ClientOp::Sub { subject: "logs.>".into(), queue: Some("workers".into()), sid: "22".into() }
        );
        assert_eq!(one(b"UNSUB 1 5\r\n"), ClientOp::Unsub { sid: "1".into(), max: Some(5) });
        assert_eq!(
            one(b"PUB a.b _INBOX.x 5\r\nhello\r\n"),
            ClientOp::Pub {
                subject: "a.b".into(),
                reply: Some("_INBOX.x".into()),
                payload: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(one(b"PUB a 0\r\n\r\n"), ClientOp::Pub { subject: "a".into(), reply: None, payload: Bytes::new() });
        let h = b"NATS/1.0\r\nA: b\r\n\r\n";
        let mut input = format!("HPUB a.b {} {}\r\n", h.len(), h.len() + 2).into_bytes();
        input.extend_from_slice(h);
        input.extend_from_slice(b"hi\r\n");
        assert_eq!(
            one(&input),
            ClientOp::Hpub {
                subject: "a.b".into(),
                reply: None,
                headers: Bytes::from_static(h),
                payload: Bytes::from_static(b"hi")
            }
        );
    }

    #[test]
    fn split_input_needs_more_then_parses() {
        let stream: &[u8] = b"CONNECT {}\r\nPUB x.y 11\r\nhello world\r\nSUB x.> q 9\r\nPING\r\n";
        let expected = {
            let mut ops = vec![];
            let mut at = 0;
            while at < stream.len() {
                let (op, n) = parse(&stream[at..], MAX).unwrap().unwrap();
                ops.push(op);
                at += n;
            }
            ops
        };
        assert_eq!(expected.len(), 4);
        // Every split point: the prefix yields the ops wholly inside it and
        // then `None`; nothing is mis-parsed.
        for cut in 0..stream.len() {
            let mut at = 0;
            let mut got = vec![];
            while let Some((op, n)) = parse(&stream[at..cut], MAX).unwrap() {
                got.push(op);
                at += n;
            }
            while at < stream.len() {
                let (op, n) = parse(&stream[at..], MAX).unwrap().unwrap();
                got.push(op);
                at += n;
            }
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(parse(b"HELLO\r\n", MAX), Err(ProtoError::UnknownOp));
        assert_eq!(parse(b"PINGX\r\n", MAX), Err(ProtoError::UnknownOp));
        assert!(parse(b"PUB a b c d e\r\n", MAX).is_err());
        assert!(parse(b"PUB a -1\r\n", MAX).is_err());
        assert!(parse(b"PUB a 99999999999999999999999\r\n", MAX).is_err());
        assert!(parse(b"PUB a 3\r\nabcdef\r\n", MAX).is_err());
        assert!(parse(b"SUB\r\n", MAX).is_err());
        assert!(parse(b"UNSUB 1 x\r\n", MAX).is_err());
        assert!(parse(b"HPUB a 10 5\r\n", MAX).is_err());
        assert!(parse(b"HPUB a 2 4\r\nxxyy\r\n", MAX).is_err());
        assert_eq!(parse(b"PUB a 2000000\r\n", MAX), Err(ProtoError::MaxPayload));
        assert_eq!(parse(&[b'A'; 5000], MAX), Err(ProtoError::ControlLineTooLong));
        assert_eq!(parse(&[b'A'; 100], MAX), Ok(None));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap deterministic generator; the fuzz target covers more.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let alphabet = b"PUB SUB HPUB 0123 \r\n.>*abc";
            let bytes: Vec<u8> = (0..len).map(|i| alphabet[((x >> (i % 60)) as usize + i) % alphabet.len()]).collect();
            let _ = parse(&bytes, 64);
        }
    }
}
