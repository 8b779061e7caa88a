// The fuzz target's checks, shared: the cargo-fuzz target in parse.rs
// runs them on what libFuzzer makes up, and the property test
// proxy/tests/parser_props.rs on its random input (so CI builds and runs
// them on every change, without libFuzzer). Included with `include!`.

use flotilla_proxy::protocol::parse;

/// Whatever the bytes, `parse` must not panic; what it reports consumed
/// lies within the input and parses the same on its own; and feeding the
/// input in two pieces never yields an operation that the whole input
/// does not.
pub fn check(data: &[u8]) {
    // The first byte picks max_payload, so small limits are explored too.
    let (max, buf) = match data.split_first() {
        Some((m, rest)) => ([0usize, 1, 64, 4096, 1024 * 1024][*m as usize % 5], rest),
        None => (1024 * 1024, data),
    };
    // Parse the whole buffer op by op, as the connection loop does.
    let mut at = 0;
    let mut ops = Vec::new();
    while at < buf.len() {
        match parse(&buf[at..], max) {
            Ok(Some((op, used))) => {
                assert!(used > 0 && at + used <= buf.len(), "consumed {used} at {at} of {}", buf.len());
                assert_eq!(parse(&buf[at..at + used], max), Ok(Some((op.clone(), used))));
                ops.push(op);
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Any prefix yields a prefix of those operations.
    let cut = buf.len() / 2;
    let mut at2 = 0;
    let mut i = 0;
    while at2 < cut {
        match parse(&buf[at2..cut], max) {
            Ok(Some((op, used))) => {
                assert_eq!(Some(&op), ops.get(i), "a prefix parsed differently");
                at2 += used;
                i += 1;
            }
            Ok(None) | Err(_) => break,
        }
    }
}
