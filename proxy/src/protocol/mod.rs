//! The NATS client protocol, server side: [`parser`] turns client bytes into
//! [`ClientOp`]s (a pure function, fuzzable), [`writer`] encodes what the
//! server sends.

pub mod parser;
pub mod writer;

pub use parser::{parse, ClientOp, ProtoError};
