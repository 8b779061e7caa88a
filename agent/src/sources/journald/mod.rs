//! The journald source: reads `journalctl -o json` output, one entry per
//! line, parsed by [`record`]; the entry's cursor is its checkpoint.

pub mod record;
