//! Log sources. File sources are their own buffer: they read, publish with
//! acks and checkpoint past acknowledged lines. Sources that cannot be read
//! again (stdin, syslog, journald) append to a spill queue that
//! [`crate::pipeline`] publishes from.

pub mod file;
pub mod journald;
pub mod lines;
pub mod multiline;
pub mod stdin;
pub mod syslog;

use std::time::Duration;

use crate::config::MultilineConfig;
use multiline::{Joiner, MultilineMode};

/// The joiner a source's `multiline` settings ask for, if any.
pub fn joiner_for<T: Clone>(cfg: Option<&MultilineConfig>) -> Option<Joiner<T>> {
    let cfg = cfg?;
    let mode = match &cfg.start_pattern {
        Some(p) => MultilineMode::StartPattern(regex::Regex::new(p).ok()?),
        None => MultilineMode::Indented,
    };
    let timeout = flotilla_core::config::parse_duration(&cfg.timeout).unwrap_or(Duration::from_secs(1));
    Some(Joiner::new(mode, cfg.max_bytes, timeout))
}
