//! Fuzz the client-protocol parser: whatever the bytes, `parse` must not
//! panic; what it reports consumed lies within the input and parses the
//! same on its own; and feeding the input in two pieces never yields an
//! operation that the whole input does not.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("parse_check.rs");

fuzz_target!(|data: &[u8]| check(data));
