//! The journald source: reads `journalctl -o json` output, one entry per
//! line, parsed by [`record`]; [`source`] runs the reader and resumes after
//! the last queued cursor.

pub mod record;
pub mod source;
