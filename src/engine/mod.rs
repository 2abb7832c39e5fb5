//! The I/O engine: a tokio runtime shared by the process and one task per
//! connection (reader and writer halves, keepalive, close handshake).
//! Everything the script must hear leaves through a `Sink`.

pub mod bridge;
pub mod client;
pub mod conn;
#[cfg(test)]
mod conn_tests;
pub mod queue;
pub mod runtime;
pub mod tls;

use crate::proto::reader::Message;
use std::net::SocketAddr;

/// What the engine tells the owner of a connection.
#[derive(Debug)]
pub enum Event {
    /// A client handshake completed; `protocol` is the server's choice or "".
    Connected {
        protocol: String,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    },
    /// A complete text (valid UTF-8), binary, ping or pong message.
    Message(Message),
    /// The connection is over: the peer's close frame, a protocol violation
    /// we closed for, or an abnormal end (1006). Always the last event.
    Closed { code: u16, reason: String },
    /// Connecting failed; the connection never opened. Last event.
    Error(String),
    /// Connecting did not finish within -timeout. Last event.
    Timeout(String),
}

/// Receives the engine's events, from any engine thread.
pub trait Sink: Send + Sync + 'static {
    fn emit(&self, conn: u64, event: Event);
}
