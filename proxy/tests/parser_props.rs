//! Properties of `flotilla_proxy::protocol::parse`, the pure client-protocol
//! parser (`Ok(None)` = need more bytes):
//! - whatever the bytes, it never panics, and what it reports consumed lies
//!   within the input and parses the same on its own;
//! - a random sequence of valid operations, serialized with the latitude the
//!   protocol allows (verb case, runs of spaces and tabs, CRLF or LF) and fed
//!   in random pieces, parses back to exactly those operations, with
//!   `Ok(None)` at every cut and never an error;
//! - a size over max_payload is refused as soon as the control line is in.
//!
//! The cargo-fuzz target in proxy/fuzz/ explores the first property further;
//! its checks run here too, on steered random input.

use bytes::Bytes;
use proptest::prelude::*;

use flotilla_proxy::protocol::{parse, ClientOp, ProtoError};

const MAX: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Never panics.

/// Fragments that steer random input into the parser's deeper states.
const PIECES: &[&[u8]] = &[
    b"PUB ",
    b"HPUB ",
    b"SUB ",
    b"UNSUB ",
    b"PING",
    b"PONG",
    b"CONNECT ",
    b"pub ",
    b"hPuB ",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"0",
    b"1",
    b"5",
    b"12",
    b"4096",
    b"99999999999999999999",
    b"18446744073709551616",
    b"-1",
    b">",
    b"*",
    b".",
    b"a",
    b"logs.x",
    b"_INBOX.a",
    b"NATS/1.0",
    b"NATS/1.0\r\n\r\n",
    b"{}",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xa8",
];

fn steered() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![(0..PIECES.len()).prop_map(|i| PIECES[i].to_vec()), prop::collection::vec(any::<u8>(), 0..8)],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn check_any(buf: &[u8], max: usize) {
    match parse(buf, max) {
        Ok(Some((op, used))) => {
            assert!(used > 0 && used <= buf.len(), "consumed {used} of {}", buf.len());
            // An operation is decided by its own bytes alone.
            assert_eq!(parse(&buf[..used], max), Ok(Some((op, used))), "the consumed bytes on their own");
        }
        Ok(None) => assert!(buf.len() <= 4096 + 1 || buf.contains(&b'\n'), "waits only for a short line or a payload"),
        Err(_) => {}
    }
}

/// The cargo-fuzz target's own checks (proxy/fuzz/fuzz_targets/).
mod fuzz_target {
    include!("../fuzz/fuzz_targets/parse_check.rs");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_fuzz_targets_checks_hold(buf in steered(), max in any::<u8>()) {
        // Its first byte picks max_payload.
        let mut data = vec![max];
        data.extend_from_slice(&buf);
        fuzz_target::check(&data);
    }

    #[test]
    fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..6000), max in prop_oneof![Just(0usize), Just(1), Just(64), Just(MAX)]) {
        check_any(&buf, max);
    }

    #[test]
    fn protocol_like_bytes_never_panic(buf in steered(), max in prop_oneof![Just(0usize), Just(3), Just(64), Just(MAX)]) {
        check_any(&buf, max);
        // And every suffix, as if resynchronising mid-stream.
        for start in 0..buf.len().min(64) {
            check_any(&buf[start..], max);
        }
    }
}

// ---------------------------------------------------------------------------
// Valid operations round-trip, however they are split.

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9_$-]{1,8}",
        1 => Just("ä".to_string()),
        1 => Just("日本".to_string()),
        1 => Just("\u{1F6A2}".to_string()),
    ]
}

fn subject(wildcards: bool) -> impl Strategy<Value = String> {
    let tok = if wildcards { prop_oneof![6 => token(), 1 => Just("*".to_string())].boxed() } else { token().boxed() };
    (prop::collection::vec(tok, 1..6), any::<bool>()).prop_map(move |(mut t, tail)| {
        if wildcards && tail {
            t.push(">".into());
        }
        t.join(".")
    })
}

fn sid() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]{1,6}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..200),
        1 => Just(b"\r\nPING\r\nSUB > 1\r\n".to_vec()),
        1 => Just(Vec::new()),
    ]
    .prop_map(Bytes::from)
}

fn headers() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,9}", "[ -~]{0,20}"), 0..4).prop_map(|kv| {
        let mut h = String::from("NATS/1.0\r\n");
        for (k, v) in kv {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        Bytes::from(h)
    })
}

fn op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        (any::<bool>(), "\\PC{0,20}").prop_map(|(verbose, name)| ClientOp::Connect(Bytes::from(
            serde_json::json!({"verbose": verbose, "name": name, "user": "acme", "pass": "s p a c e s"}).to_string()
        ))),
        (subject(false), prop::option::of(subject(false)), payload())
            .prop_map(|(subject, reply, payload)| ClientOp::Pub { subject, reply, payload }),
        (subject(false), prop::option::of(subject(false)), headers(), payload())
            .prop_map(|(subject, reply, headers, payload)| ClientOp::Hpub { subject, reply, headers, payload }),
        (subject(true), prop::option::of("[a-zA-Z0-9_-]{1,8}"), sid())
            .prop_map(|(subject, queue, sid)| ClientOp::Sub { subject, queue, sid }),
        (sid(), prop::option::of(0u64..10_000_000_000_000_000_000)).prop_map(|(sid, max)| ClientOp::Unsub { sid, max }),
        Just(ClientOp::Ping),
        Just(ClientOp::Pong),
    ]
}

/// How one operation is written: the latitude a client has.
#[derive(Debug, Clone)]
struct Style {
    /// Per verb letter: upper case?
    upper: Vec<bool>,
    /// Separators between arguments (each a run of spaces and tabs).
    seps: Vec<String>,
    /// `\r\n` or `\n` after the control line and after the payload.
    crlf_line: bool,
    crlf_payload: bool,
    /// Spaces or tabs before the line end (not for CONNECT, whose argument
    /// runs to the end of the line).
    trailing: String,
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop::collection::vec(prop::bool::weighted(0.8), 7),
        prop::collection::vec("[ \t]{1,3}", 5),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop_oneof![4 => Just(String::new()), 1 => "[ \t]{1,2}"],
    )
        .prop_map(|(upper, seps, crlf_line, crlf_payload, trailing)| Style {
            upper,
            seps,
            crlf_line,
            crlf_payload,
            trailing,
        })
}

fn write_op(op: &ClientOp, st: &Style, out: &mut Vec<u8>) {
    let verb = |v: &str| -> String {
        v.chars().zip(st.upper.iter().cycle()).map(|(c, up)| if *up { c } else { c.to_ascii_lowercase() }).collect()
    };
    let line_end = if st.crlf_line { "\r\n" } else { "\n" };
    let pay_end: &[u8] = if st.crlf_payload { b"\r\n" } else { b"\n" };
    let line = |parts: Vec<String>, trailing: bool| -> String {
        let mut s = String::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                s.push_str(&st.seps[(i - 1) % st.seps.len()]);
            }
            s.push_str(p);
        }
        if trailing {
            s.push_str(&st.trailing);
        }
        s.push_str(line_end);
        s
    };
    match op {
        ClientOp::Connect(json) => {
            let mut l = verb("CONNECT");
            l.push_str(&st.seps[0]);
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(json);
            out.extend_from_slice(line_end.as_bytes());
        }
        ClientOp::Ping => out.extend_from_slice(line(vec![verb("PING")], true).as_bytes()),
        ClientOp::Pong => out.extend_from_slice(line(vec![verb("PONG")], true).as_bytes()),
        ClientOp::Sub { subject, queue, sid } => {
            let mut parts = vec![verb("SUB"), subject.clone()];
            parts.extend(queue.clone());
            parts.push(sid.clone());
            out.extend_from_slice(line(parts, true).as_bytes());
        }
        ClientOp::Unsub { sid, max } => {
            let mut parts = vec![verb("UNSUB"), sid.clone()];
            parts.extend(max.map(|m| m.to_string()));
            out.extend_from_slice(line(parts, true).as_bytes());
        }
        ClientOp::Pub { subject, reply, payload } => {
            let mut parts = vec![verb("PUB"), subject.clone()];
            parts.extend(reply.clone());
            parts.push(payload.len().to_string());
            out.extend_from_slice(line(parts, true).as_bytes());
            out.extend_from_slice(payload);
            out.extend_from_slice(pay_end);
        }
        ClientOp::Hpub { subject, reply, headers, payload } => {
            let mut parts = vec![verb("HPUB"), subject.clone()];
            parts.extend(reply.clone());
            parts.push(headers.len().to_string());
            parts.push((headers.len() + payload.len()).to_string());
            out.extend_from_slice(line(parts, true).as_bytes());
            out.extend_from_slice(headers);
            out.extend_from_slice(payload);
            out.extend_from_slice(pay_end);
        }
    }
}

/// Feed `stream` in pieces ending at `cuts`; every parse of a partial
/// buffer yields whole operations and then `Ok(None)`, never an error.
fn feed(stream: &[u8], cuts: &[usize]) -> Result<Vec<ClientOp>, String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut ops = vec![];
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        if cut < at {
            continue;
        }
        buf.extend_from_slice(&stream[at..cut]);
        at = cut;
        loop {
            match parse(&buf, MAX) {
                Ok(Some((op, used))) => {
                    ops.push(op);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return Err(format!("{e:?} at byte {at} with {:?} buffered", String::from_utf8_lossy(&buf))),
            }
        }
    }
    if !buf.is_empty() {
        return Err(format!("left over: {:?}", String::from_utf8_lossy(&buf)));
    }
    Ok(ops)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn valid_operations_split_anywhere_parse_back(
        ops in prop::collection::vec((op(), style()), 1..20),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let mut stream = vec![];
        for (op, st) in &ops {
            write_op(op, st, &mut stream);
        }
        let want: Vec<ClientOp> = ops.iter().map(|(op, _)| op.clone()).collect();
        prop_assert_eq!(feed(&stream, &[]), Ok(want.clone()), "whole stream");
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(feed(&stream, &cuts), Ok(want.clone()), "split at {:?}", cuts);
        // One byte at a time, for short streams.
        if stream.len() < 600 {
            let every: Vec<usize> = (1..stream.len()).collect();
            prop_assert_eq!(feed(&stream, &every), Ok(want), "byte by byte");
        }
    }

    #[test]
    fn sizes_over_max_payload_are_refused_before_the_payload(
        subject in subject(false),
        max in 0usize..4096,
        over in 1usize..1_000_000,
        hpub in any::<bool>(),
    ) {
        let size = max + over;
        let line = if hpub { format!("HPUB {subject} 0 {size}\r\n") } else { format!("PUB {subject} {size}\r\n") };
        prop_assert_eq!(parse(line.as_bytes(), max), Err(ProtoError::MaxPayload));
        // Before the line is complete it is only "need more".
        prop_assert_eq!(parse(&line.as_bytes()[..line.len() - 2], max), Ok(None));
    }
}
