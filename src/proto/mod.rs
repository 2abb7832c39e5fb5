//! Pure, sans-I/O implementation of the RFC 6455 WebSocket protocol.
//!
//! Nothing in this module performs network I/O, touches Tcl or tokio, or
//! uses `unsafe`; the only OS contact is [`mask::MaskKeys`], which reads
//! random bytes (through the `getrandom` crate) for mask keys and handshake
//! nonces. [`connection::Connection`] is a whole connection after the
//! handshake; the engine only moves bytes and time in and out of it.
#![forbid(unsafe_code)]

pub mod close;
pub mod connection;
pub mod deflate;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod reader;
pub mod utf8;
pub mod writer;

/// Which end of the connection we are. Determines masking rules (RFC 6455 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}
