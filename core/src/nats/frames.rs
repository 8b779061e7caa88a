//! A pure parser for server→client operations, for connections that read
//! in place (the proxy's deliveries, the agent's acks): `MSG`/`HMSG` come
//! back as slices of the read buffer (no allocation, no copy).
//!
//! `parse(buf, max_payload)` returns `Ok(Some((op, consumed)))` for one whole
//! operation at the start of `buf`, `Ok(None)` when more bytes are needed, or
//! an error for input nats-server would not send. It never panics.

/// The longest control line accepted. nats-server caps what its clients
/// send at its `max_control_line` (4096 bytes unless raised), but what it
/// sends back adds a sid (a `MSG` line may be longer than the `PUB` that
/// caused it), and an operator may raise that cap: a line from the server
/// is taken up to 64 KiB, so that no publisher can end a session with
/// one long subject.
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `MSG`, or `HMSG` when `headers` is set (the header block as sent,
    /// `NATS/1.0[ status[ text]]\r\n...\r\n`).
    Msg {
        subject: &'a str,
        sid: u64,
        reply: Option<&'a str>,
        headers: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    Info(&'a [u8]),
    Ping,
    Pong,
    Ok,
    /// The text of `-ERR '...'`, quotes removed.
    Err(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown server operation")]
    UnknownOp,
    #[error("control line longer than {MAX_CONTROL_LINE} bytes")]
    ControlLineTooLong,
    #[error("message of {0} bytes is over max_payload")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(&'static str),
}

pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(ServerOp<'_>, usize)>, FrameError> {
    let window = &buf[..buf.len().min(MAX_CONTROL_LINE + 2)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        return if buf.len() > MAX_CONTROL_LINE + 1 { Err(FrameError::ControlLineTooLong) } else { Ok(None) };
    };
    let line = &buf[..if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl }];
    let after = nl + 1;
    let (verb, rest) = match memchr::memchr2(b' ', b'\t', line) {
        Some(i) => (&line[..i], trim(&line[i + 1..])),
        None => (line, &line[..0]),
    };
    let op = match verb {
        b"MSG" | b"msg" => return msg(buf, after, rest, false, max_payload),
        b"HMSG" | b"hmsg" => return msg(buf, after, rest, true, max_payload),
        b"PING" | b"ping" => ServerOp::Ping,
        b"PONG" | b"pong" => ServerOp::Pong,
        b"+OK" | b"+ok" => ServerOp::Ok,
        b"INFO" | b"info" => ServerOp::Info(rest),
        b"-ERR" | b"-err" => {
            let text = std::str::from_utf8(rest).map_err(|_| FrameError::Invalid("-ERR text is not UTF-8"))?;
            ServerOp::Err(text.trim_matches('\''))
        }
        _ => return Err(FrameError::UnknownOp),
    };
    Ok(Some((op, after)))
}

/// `<subject> <sid> [reply] [<#header bytes>] <#total bytes>`, then the body.
fn msg<'a>(
    buf: &'a [u8],
    after: usize,
    rest: &'a [u8],
    with_headers: bool,
    max_payload: usize,
) -> Result<Option<(ServerOp<'a>, usize)>, FrameError> {
    let mut args = [&rest[..0]; 5];
    let mut n = 0;
    for arg in rest.split(|b| *b == b' ' || *b == b'\t').filter(|a| !a.is_empty()) {
        if n == args.len() {
            return Err(FrameError::Invalid("too many MSG arguments"));
        }
        args[n] = arg;
        n += 1;
    }
    let (subject, sid, reply, hlen, total) = match (with_headers, &args[..n]) {
        (false, [s, i, t]) => (*s, *i, None, 0, number(t)?),
        (false, [s, i, r, t]) => (*s, *i, Some(*r), 0, number(t)?),
        (true, [s, i, h, t]) => (*s, *i, None, number(h)?, number(t)?),
        (true, [s, i, r, h, t]) => (*s, *i, Some(*r), number(h)?, number(t)?),
        _ => return Err(FrameError::Invalid("MSG/HMSG with the wrong number of arguments")),
    };
    if hlen > total {
        return Err(FrameError::Invalid("header length over the total length"));
    }
    if total > max_payload {
        return Err(FrameError::TooLarge(total));
    }
    let end = after + total;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(FrameError::Invalid("message body not followed by CRLF"));
    }
    let body = &buf[after..end];
    let op = ServerOp::Msg {
        subject: text(subject)?,
        sid: number(sid)? as u64,
        reply: reply.map(text).transpose()?,
        headers: with_headers.then(|| &body[..hlen]),
        payload: &body[hlen..],
    };
    Ok(Some((op, end + 2)))
}

/// Whether nats-server closes the connection after this `-ERR` text.
pub fn is_fatal(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    // A refused SUB leaves the connection open, as a permissions violation
    // does; the other `Maximum ...` errors close it.
    if t.contains("maximum subscriptions exceeded") {
        return false;
    }
    ["authorization violation", "stale connection", "slow consumer", "maximum", "unknown protocol", "parser error"]
        .iter()
        .any(|f| t.contains(f))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

fn text(b: &[u8]) -> Result<&str, FrameError> {
    std::str::from_utf8(b).map_err(|_| FrameError::Invalid("subject is not UTF-8"))
}

fn number(b: &[u8]) -> Result<usize, FrameError> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::Invalid("not a number"));
    }
    Ok(b.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fatal_errors_are_told_from_warnings() {
        for fatal in ["Authorization Violation", "Stale Connection", "Slow Consumer", "Maximum Payload Violation"] {
            assert!(is_fatal(fatal), "{fatal}");
        }
        assert!(!is_fatal("Permissions Violation for Publish to \"logs.x\""));
        assert!(!is_fatal("maximum subscriptions exceeded"), "nats-server keeps the connection");
    }

    const MAX: usize = 1 << 20;

    fn one(buf: &[u8]) -> ServerOp<'_> {
        let (op, used) = parse(buf, MAX).unwrap().unwrap();
        assert_eq!(used, buf.len(), "consumed the whole frame");
        op
    }

    #[test]
    fn messages_with_and_without_reply_and_headers() {
        assert_eq!(
            one(b"MSG logs.acme.web 7 5\r\nhello\r\n"),
            ServerOp::Msg { subject: "logs.acme.web", sid: 7, reply: None, headers: None, payload: b"hello" }
        );
        assert_eq!(
            one(b"MSG a 1 _INBOX.x 0\r\n\r\n"),
            ServerOp::Msg { subject: "a", sid: 1, reply: Some("_INBOX.x"), headers: None, payload: b"" }
        );
        assert_eq!(
            one(b"HMSG a 2 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
            ServerOp::Msg {
                subject: "a",
                sid: 2,
                reply: Some("r"),
                headers: Some(b"NATS/1.0\r\n\r\n"),
                payload: b"hi"
            }
        );
        assert_eq!(
            one(b"HMSG a 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"),
            ServerOp::Msg { subject: "a", sid: 3, reply: None, headers: Some(b"NATS/1.0 503\r\n\r\n"), payload: b"" }
        );
    }

    #[test]
    fn control_operations() {
        assert_eq!(one(b"PING\r\n"), ServerOp::Ping);
        assert_eq!(one(b"PONG\r\n"), ServerOp::Pong);
        assert_eq!(one(b"+OK\r\n"), ServerOp::Ok);
        assert_eq!(one(b"INFO {\"a\":1}\r\n"), ServerOp::Info(b"{\"a\":1}"));
        assert_eq!(one(b"-ERR 'Slow Consumer'\r\n"), ServerOp::Err("Slow Consumer"));
    }

    #[test]
    fn incomplete_frames_ask_for_more() {
        for partial in [&b"MSG a 1 5\r\nhel"[..], b"MSG a 1 5\r\nhello", b"MSG a 1 5\r\nhello\r", b"PIN", b""] {
            assert_eq!(parse(partial, MAX), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(parse(b"HELLO\r\n", MAX), Err(FrameError::UnknownOp));
        assert!(parse(b"MSG a 1 x\r\n", MAX).is_err());
        assert!(parse(b"MSG a 1\r\n", MAX).is_err());
        assert!(parse(b"HMSG a 1 9 3\r\nabc\r\n", MAX).is_err(), "header length over the total");
        assert!(parse(b"MSG a 1 3\r\nabcXY", MAX).is_err(), "a length that lies");
        assert_eq!(parse(b"MSG a 1 99\r\n", 10), Err(FrameError::TooLarge(99)));
        assert_eq!(parse(&[b'x'; MAX_CONTROL_LINE + 10], MAX), Err(FrameError::ControlLineTooLong));
    }

    #[test]
    fn a_msg_line_longer_than_a_client_may_send_is_taken() {
        // A 4090-byte subject (a PUB line of 4096 bytes), sent back with a
        // sid and a reply.
        let subject = format!("logs.{}", "a".repeat(4085));
        let frame = format!("MSG {subject} 123456 _INBOX.abcdefgh 2\r\nhi\r\n");
        let Ok(Some((ServerOp::Msg { subject: s, sid, payload, .. }, used))) = parse(frame.as_bytes(), MAX) else {
            panic!("not parsed");
        };
        assert_eq!((s, sid, payload, used), (subject.as_str(), 123456, &b"hi"[..], frame.len()));
    }

    /// A stream of frames, and the ops they are.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        let frame = prop_oneof![
            (
                "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}",
                1u64..1000,
                proptest::option::of("[A-Z_.a-z0-9]{1,12}"),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(s, sid, r, p)| {
                    let mut f =
                        format!("MSG {s} {sid} {}{}\r\n", r.map(|r| r + " ").unwrap_or_default(), p.len()).into_bytes();
                    f.extend_from_slice(&p);
                    f.extend_from_slice(b"\r\n");
                    f
                }),
            Just(b"PING\r\n".to_vec()),
            Just(b"INFO {}\r\n".to_vec()),
        ];
        proptest::collection::vec(frame, 1..20).prop_map(|v| v.concat())
    }

    fn parse_all(buf: &[u8]) -> Vec<String> {
        let mut out = vec![];
        let mut at = 0;
        while let Ok(Some((op, used))) = parse(&buf[at..], MAX) {
            out.push(format!("{op:?}"));
            at += used;
        }
        out
    }

    proptest! {
        #[test]
        fn split_anywhere_the_same_ops_come_out(stream in frames(), cut in any::<prop::sample::Index>()) {
            let whole = parse_all(&stream);
            // Feed the stream in two reads, as a socket may deliver it.
            let cut = cut.index(stream.len() + 1);
            let mut buf = stream[..cut].to_vec();
            let mut out = vec![];
            let mut rest = &stream[cut..];
            loop {
                match parse(&buf, MAX) {
                    Ok(Some((op, used))) => {
                        out.push(format!("{op:?}"));
                        buf.drain(..used);
                    }
                    Ok(None) if !rest.is_empty() => {
                        buf.extend_from_slice(rest);
                        rest = &[];
                    }
                    _ => break,
                }
            }
            prop_assert_eq!(out, whole);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, 64);
        }
    }
}
