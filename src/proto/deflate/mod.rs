//! permessage-deflate (RFC 7692), sans-I/O: negotiation in both roles
//! ([`negotiate`]) and the per-connection compressor / decompressor
//! ([`codec`]).
//!
//! # Backend
//!
//! Compression is raw DEFLATE from `zlib-rs` (pure Rust), used through its
//! own safe API rather than through `flate2`: `flate2` cannot set zlib's
//! `memLevel`, which sizes a third of the compressor's memory (see below),
//! and its default backend (miniz_oxide) cannot compress with a window
//! below 15 bits, which a peer may ask for.
//!
//! # Window bits 8
//!
//! RFC 7692 allows window bits 8..15, but zlib (and zlib-rs) refuse a raw
//! deflate stream with an 8-bit window. When our compressor is limited to 8
//! bits (`server_max_window_bits=8` offered to our server, or
//! `client_max_window_bits=8` returned to our client) we compress with a
//! 9-bit window, as node's `ws` does (through node's zlib, which maps 8 to
//! 9): zlib's and zlib-rs's match finders never reach further back than
//! `window size - 262` bytes (`MAX_DIST`, `max_dist()` in zlib-rs), 250 for
//! a 9-bit window, so the stream fits an 8-bit (256-byte) window. The unit
//! tests check this on the produced streams with a decoder of their own.
//! Python `websockets` passes 8 to zlib and fails instead.
//!
//! Our decompressor is always created with a 15-bit window: zlib-rs
//! allocates a 32 KiB window whatever it is told, so a smaller one saves
//! nothing, and it does not police the distances the peer uses anyway.
//!
//! # Memory (zlib-rs 0.6, measured: `cargo run --release --example deflate_profile`)
//!
//! * negotiated but unused: only [`codec::PerMessageDeflate`] itself, a few
//!   dozen bytes; nothing is allocated until the first compressed message
//!   is sent or received;
//! * compressor: `4 * 2^window_bits` (window and chain) + 128 KiB (hash
//!   heads, fixed in zlib-rs) + `7 * 2^(memLevel + 6)` (symbol and pending
//!   buffers), plus its state: 161 KiB at our defaults (12 bits, memLevel
//!   5), 371 KiB at zlib's (15, 8);
//! * decompressor: 46.6 KiB whatever the window (32 KiB window + state).
//!
//! So a connection that has compressed and decompressed with context
//! takeover holds ~208 KiB; one that only negotiated, 48 bytes.
//!
//! Both are allocated lazily; without context takeover on a side, that
//! side's state is dropped at the end of each message (freeing it between
//! messages), and the compressor can also be dropped at any message
//! boundary on request ([`codec::PerMessageDeflate::release_compressor`]):
//! a compressor may always start afresh, only a decompressor must keep the
//! peer's context. The Tcl binding does that to a compressor left unused
//! for [`DeflateConfig::idle_release`].

use std::time::Duration;

pub mod codec;
#[cfg(test)]
mod inspect;
pub mod negotiate;

pub use codec::{CompressError, Compressed, DecompressError, PerMessageDeflate, SendMode};
pub use negotiate::{
    accept_response, client_offer, negotiate_server, Accepted, DeflateParams, NegotiationError,
    ParamError,
};

/// The extension's registered name (RFC 7692 §5).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The parameters of RFC 7692 §7.1.
pub const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
pub const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
pub const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
pub const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// RSV1 in a frame's first byte: "Per-Message Compressed" (RFC 7692 §6),
/// set on the first frame of a compressed message only.
pub const RSV1_BIT: u8 = 0x40;

/// Window bits RFC 7692 allows in negotiation.
pub const MIN_WINDOW_BITS: u8 = 8;
pub const MAX_WINDOW_BITS: u8 = 15;

/// Default compression level (zlib scale 0-9). Chosen by measurement, see
/// bench/PROFILE.md "Deflate defaults (measured)": zlib-rs's level 1
/// (static codes) costs 0.3-3 µs per small message against 2.4-19 µs at
/// 2-9 (which build codes for each flush), and with context takeover small
/// messages get most of their gain from the shared window anyway; larger,
/// varied messages come out 40-70% bigger than at level 6.
pub const DEFAULT_LEVEL: u8 = 1;
/// Default zlib memLevel (1-9): sizes the symbol buffer, i.e. how many
/// symbols make one deflate block. Chosen by measurement (PROFILE.md).
pub const DEFAULT_MEM_LEVEL: u8 = 5;
/// Default window of our compressor (it may use less than the peer allows,
/// and never more). Chosen by measurement (PROFILE.md).
pub const DEFAULT_WINDOW_BITS: u8 = 12;
/// Default size below which a message goes uncompressed: without context
/// takeover smaller messages do not shrink (measured), and a connection
/// that only sends small ones never allocates a compressor.
pub const DEFAULT_THRESHOLD: usize = 64;
/// Default time an unused compressor is kept: about 160 KiB that a
/// connection which has gone quiet does not need. Its successor costs one
/// allocation and a first message compressed without the old context
/// (bench/PROFILE.md, "Idle compressors").
pub const DEFAULT_IDLE_RELEASE: Duration = Duration::from_secs(30);

/// The permessage-deflate settings of one endpoint. The four negotiation
/// fields are RFC 7692's parameters; what they do depends on the role:
///
/// | field | client (offer) | server (response) |
/// | --- | --- | --- |
/// | `server_no_context_takeover` | ask the server not to keep context between messages | never keep our context (always in the response) |
/// | `client_no_context_takeover` | promise not to keep ours (and don't) | require the client not to keep its context |
/// | `server_max_window_bits` | ask the server to limit its window (8-15) | limit our window, announced |
/// | `client_max_window_bits` | `None`: offered without a value (the server may limit us); `Some(n)`: we limit ours to n | limit the client's window, when its offer allows it |
///
/// `level`, `mem_level`, `window_bits`, `threshold` and `idle_release`
/// tune our own compressor and are never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
    /// zlib compression level 0-9 (0: stored blocks only).
    pub level: u8,
    /// zlib memLevel 1-9.
    pub mem_level: u8,
    /// Our compressor's window, 8-15 (8 compresses with 9, see the module
    /// notes), further limited by what is negotiated.
    pub window_bits: u8,
    /// Messages whose first frame's payload is shorter than this go
    /// uncompressed.
    pub threshold: usize,
    /// How long a compressor kept for context takeover may go unused
    /// before it is freed (the next message then starts afresh); `None`:
    /// kept for the connection's life.
    pub idle_release: Option<Duration>,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            level: DEFAULT_LEVEL,
            mem_level: DEFAULT_MEM_LEVEL,
            window_bits: DEFAULT_WINDOW_BITS,
            threshold: DEFAULT_THRESHOLD,
            idle_release: Some(DEFAULT_IDLE_RELEASE),
        }
    }
}

/// A setting out of its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A window bits setting (named) outside 8-15.
    WindowBits(&'static str, u8),
    Level(u8),
    MemLevel(u8),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::WindowBits(what, v) => {
                write!(f, "bad {what} \"{v}\": must be between 8 and 15")
            }
            ConfigError::Level(v) => {
                write!(f, "bad compression level \"{v}\": must be between 0 and 9")
            }
            ConfigError::MemLevel(v) => {
                write!(f, "bad memory level \"{v}\": must be between 1 and 9")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn window_ok(v: u8) -> bool {
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&v)
}

impl DeflateConfig {
    /// Check every setting's range (the negotiation and codec clamp
    /// silently; commands should report bad options with this).
    pub fn check(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            (SERVER_MAX_WINDOW_BITS, self.server_max_window_bits),
            (CLIENT_MAX_WINDOW_BITS, self.client_max_window_bits),
            ("window bits", Some(self.window_bits)),
        ] {
            if let Some(v) = v {
                if !window_ok(v) {
                    return Err(ConfigError::WindowBits(name, v));
                }
            }
        }
        if self.level > 9 {
            return Err(ConfigError::Level(self.level));
        }
        if !(1..=9).contains(&self.mem_level) {
            return Err(ConfigError::MemLevel(self.mem_level));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check() {
        assert_eq!(DeflateConfig::default().check(), Ok(()));
        let c = |f: &dyn Fn(&mut DeflateConfig)| {
            let mut c = DeflateConfig::default();
            f(&mut c);
            c.check()
        };
        assert_eq!(
            c(&|c| c.server_max_window_bits = Some(7)),
            Err(ConfigError::WindowBits(SERVER_MAX_WINDOW_BITS, 7))
        );
        assert_eq!(
            c(&|c| c.client_max_window_bits = Some(16)),
            Err(ConfigError::WindowBits(CLIENT_MAX_WINDOW_BITS, 16))
        );
        assert_eq!(
            c(&|c| c.window_bits = 0),
            Err(ConfigError::WindowBits("window bits", 0))
        );
        assert_eq!(c(&|c| c.level = 10), Err(ConfigError::Level(10)));
        assert_eq!(c(&|c| c.mem_level = 0), Err(ConfigError::MemLevel(0)));
        assert_eq!(c(&|c| c.mem_level = 10), Err(ConfigError::MemLevel(10)));
        assert_eq!(
            c(&|c| {
                c.server_max_window_bits = Some(8);
                c.client_max_window_bits = Some(15);
                c.window_bits = 8;
                c.level = 0;
                c.mem_level = 9;
            }),
            Ok(())
        );
        assert_eq!(
            ConfigError::WindowBits(SERVER_MAX_WINDOW_BITS, 7).to_string(),
            "bad server_max_window_bits \"7\": must be between 8 and 15"
        );
    }
}
