//! The syslog source: RFC 3164/5424 messages over UDP and TCP. TCP streams
//! are split into messages by [`framing`] (RFC 6587 octet counting or
//! newline-delimited); each message is decoded by
//! [`flotilla_core::codec::syslog`] and appended to the spill queue by [`source`].

pub mod framing;
pub mod source;
