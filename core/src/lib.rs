//! `flotilla-core`: what the Flotilla daemons share.
//!
//! Data flows agent → proxy → NATS/JetStream → shipper. Every hop speaks the
//! same [`event::LogEvent`] (JSON on the wire), addresses it with the subjects
//! built in [`subject`], reads its TOML config through [`config`], drains on
//! SIGTERM via [`shutdown`] and exposes `/metrics` + `/healthz` via [`http`]
//! and [`metrics`]. Nothing here links arrow/parquet/object_store: the agent,
//! which runs on every host, depends on this crate.

pub mod codec;
pub mod config;
pub mod daemon;
pub mod event;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod nats;
pub mod origin;
pub mod shutdown;
pub mod subject;

/// `n` in decimal, without `fmt` (hot paths): the digits at the end of `buf`.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// [`decimal`] as a `&str`.
pub fn decimal_str(n: u64, buf: &mut [u8; 20]) -> &str {
    // ASCII digits: always UTF-8.
    std::str::from_utf8(decimal(n, buf)).unwrap_or_default()
}

/// Header carrying the JetStream de-duplication key (stable origin of an event).
pub const HDR_MSG_ID: &str = "Nats-Msg-Id";
/// Header carrying the per-source sequence of an event.
pub const HDR_SEQ: &str = "Flotilla-Seq";
