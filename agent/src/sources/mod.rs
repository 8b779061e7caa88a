//! Log sources. Each source runs as one task that reads, publishes with
//! acks, and moves its checkpoint only past acknowledged events.

pub mod file;
pub mod journald;
pub mod multiline;
pub mod syslog;
