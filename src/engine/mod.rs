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
        /// permessage-deflate as the server accepted it, if it did.
        deflate: Option<crate::proto::deflate::DeflateParams>,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    },
    /// A complete text (valid UTF-8), binary, ping or pong message.
    Message(Message),
    /// The connection is over: the peer's close frame, a protocol violation
    /// we closed for, or an abnormal end (1006). Always the last event.
    Closed { code: u16, reason: String },
    /// Connecting failed; the connection never opened. Last event.
    Error(ConnectError),
    /// Connecting did not finish within -timeout. Last event.
    Timeout(String),
}

/// Receives the engine's events, from any engine thread.
pub trait Sink: Send + Sync + 'static {
    fn emit(&self, conn: u64, event: Event);
}

/// Why connecting failed: what kind of failure, for the owner to act on,
/// and the message the script sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError {
    pub failure: ConnectFailure,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Resolving the host, binding -myaddr or connecting over TCP.
    Network,
    /// TLS setup or the TLS handshake.
    Tls,
    /// The server answered the WebSocket handshake with this HTTP status.
    Status(u16),
    /// The server's answer broke the opening handshake; the kind as
    /// `proto::handshake::HandshakeError` names it ("ACCEPT": a wrong
    /// Sec-WebSocket-Accept, "UPGRADE", "PROTOCOL", ...).
    Handshake(&'static str),
    /// Our request could not be built or sent, or the connection failed or
    /// ended before the answer was complete.
    Io,
}

impl ConnectError {
    pub fn new(failure: ConnectFailure, message: impl Into<String>) -> ConnectError {
        ConnectError {
            failure,
            message: message.into(),
        }
    }

    /// A handshake answer that failed a check, as the script is told it.
    pub fn handshake(e: &crate::proto::handshake::HandshakeError, message: String) -> ConnectError {
        let kind = e.kinds.last().copied().unwrap_or("HANDSHAKE");
        ConnectError::new(ConnectFailure::Handshake(kind), message)
    }

    /// The server's answer failed the accept-key check (RFC 6455 §4.1),
    /// which tcllib logs as "Security handshake failed".
    pub fn is_security_failure(&self) -> bool {
        self.failure == ConnectFailure::Handshake("ACCEPT")
    }
}
