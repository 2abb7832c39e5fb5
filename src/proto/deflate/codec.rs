//! The per-connection permessage-deflate state (RFC 7692 §6, §7.2):
//! compressing outgoing messages and decompressing incoming ones, with
//! the zlib states allocated only when a message first needs them.
//!
//! * Writer: [`PerMessageDeflate::compress`] takes a message (or each
//!   fragment of one, in order) and says whether it went compressed: then
//!   the message's first frame gets RSV1 ([`super::RSV1_BIT`]).
//! * Reader: [`message_is_compressed`] checks a data frame's RSV bits; the
//!   payload of a compressed message, in chunks as it arrives, goes to
//!   [`PerMessageDeflate::decompress`] with the message's size limit.

use std::borrow::Cow;
use std::time::Duration;

use zlib_rs::{Deflate, DeflateConfig as ZConfig, DeflateFlush, Inflate, InflateFlush, Status};

use crate::proto::close::Violation;
use crate::proto::deflate::negotiate::DeflateParams;
use crate::proto::deflate::{DeflateConfig, MAX_WINDOW_BITS};
use crate::proto::frame::{self, OP_BINARY, OP_CONTINUATION, OP_TEXT};
use crate::proto::Role;

/// What a compressed message's payload lacks at its end (RFC 7692 §7.2.1):
/// the empty stored block a sync flush ends with.
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output is produced at most this many bytes per inflate call, so that a
/// small frame that inflates hugely is stopped after bounded work.
const INFLATE_CHUNK: usize = 16 * 1024;

/// Why an incoming compressed message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecompressError {
    /// It inflates to more than the size limit (close 1009).
    TooBig,
    /// Not valid DEFLATE data (close 1007, as Autobahn and the other
    /// implementations do).
    BadData,
}

impl std::fmt::Display for DecompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecompressError::TooBig => "decompressed message too big",
            DecompressError::BadData => "invalid compressed data",
        })
    }
}

impl std::error::Error for DecompressError {}

impl From<DecompressError> for Violation {
    fn from(e: DecompressError) -> Self {
        match e {
            DecompressError::TooBig => Violation::too_big("decompressed message too big"),
            DecompressError::BadData => Violation::invalid_data("invalid compressed data"),
        }
    }
}

/// zlib-rs refused to compress: cannot happen with the parameters we give
/// it, but if it does the message cannot be sent (the peer's context
/// would no longer match ours): fail the connection (1011).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressError;

impl std::fmt::Display for CompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("compression failed")
    }
}

impl std::error::Error for CompressError {}

/// How to send one outgoing message (chosen with its first fragment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendMode {
    /// Compressed unless the first fragment is below the threshold.
    #[default]
    Auto,
    /// Uncompressed, whatever its size.
    Uncompressed,
}

/// One fragment as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compressed<'a> {
    /// Set RSV1: the first frame of a compressed message.
    pub rsv1: bool,
    /// The payload: the caller's bytes, untouched, if uncompressed.
    pub payload: Cow<'a, [u8]>,
}

/// RFC 7692 §6 on a received frame, with permessage-deflate negotiated:
/// whether the message this frame starts is compressed. RSV1 is allowed
/// only on the first frame of a data message; RSV2 and RSV3 never (1002).
/// For continuation and control frames `Ok(false)` means "legal".
/// `rsv` is [`FrameHeader::rsv`](frame::FrameHeader) (RSV1 = 4).
pub fn message_is_compressed(opcode: u8, rsv: u8) -> Result<bool, Violation> {
    if rsv & 0b011 != 0 {
        return Err(Violation::protocol("reserved bits set"));
    }
    let rsv1 = rsv & 0b100 != 0;
    match opcode {
        OP_TEXT | OP_BINARY => Ok(rsv1),
        _ if rsv1 && frame::is_control(opcode) => {
            Err(Violation::protocol("compressed control frame"))
        }
        OP_CONTINUATION if rsv1 => Err(Violation::protocol("RSV1 set on a continuation frame")),
        _ if rsv1 => Err(Violation::protocol("reserved bits set")),
        _ => Ok(false),
    }
}

/// The outgoing message in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tx {
    Idle,
    Plain,
    Compressing,
}

/// permessage-deflate for one connection: the negotiated parameters and,
/// only while needed, the zlib states (boxed, so that an idle object is a
/// few dozen bytes).
pub struct PerMessageDeflate {
    deflater: Option<Box<Deflate>>,
    inflater: Option<Box<Inflate>>,
    threshold: usize,
    /// Decompressed bytes of the incoming message so far.
    rx_len: usize,
    /// An incoming compressed message is in progress.
    rx_active: bool,
    /// Compressed bytes of it have come (an empty payload is an empty
    /// message: nothing to inflate).
    rx_data: bool,
    tx: Tx,
    /// Compressed bytes of the outgoing message have been produced.
    tx_data: bool,
    /// Our compressor's window (9-15).
    tx_window_bits: u8,
    level: u8,
    mem_level: u8,
    tx_no_context: bool,
    rx_no_context: bool,
    idle_release: Option<Duration>,
}

impl std::fmt::Debug for PerMessageDeflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerMessageDeflate")
            .field("compressor", &self.deflater.is_some())
            .field("decompressor", &self.inflater.is_some())
            .field("tx_window_bits", &self.tx_window_bits)
            .field("level", &self.level)
            .field("mem_level", &self.mem_level)
            .field("threshold", &self.threshold)
            .field("tx_no_context", &self.tx_no_context)
            .field("rx_no_context", &self.rx_no_context)
            .field("idle_release", &self.idle_release)
            .finish()
    }
}

impl PerMessageDeflate {
    /// The state for a connection that negotiated `params`, in `role`,
    /// compressing as `cfg` says (level, memLevel, window, threshold).
    /// Allocates nothing.
    pub fn new(role: Role, params: &DeflateParams, cfg: &DeflateConfig) -> Self {
        // zlib cannot compress raw deflate with an 8-bit window; 9 keeps
        // every distance within 250 bytes (see the module notes).
        let tx_window_bits = cfg
            .window_bits
            .min(params.local_max_window_bits(role))
            .clamp(9, MAX_WINDOW_BITS);
        PerMessageDeflate {
            deflater: None,
            inflater: None,
            threshold: cfg.threshold,
            rx_len: 0,
            rx_active: false,
            rx_data: false,
            tx: Tx::Idle,
            tx_data: false,
            tx_window_bits,
            level: cfg.level.min(9),
            mem_level: cfg.mem_level.clamp(1, 9),
            tx_no_context: params.local_no_context_takeover(role),
            rx_no_context: params.remote_no_context_takeover(role),
            idle_release: cfg.idle_release,
        }
    }

    /// How long the compressor may go unused before the owner frees it
    /// (`release_compressor`); None: never.
    pub fn idle_release(&self) -> Option<Duration> {
        self.idle_release
    }

    pub fn set_threshold(&mut self, threshold: usize) {
        self.threshold = threshold;
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Whether the compressor / decompressor state is allocated now.
    pub fn allocated(&self) -> (bool, bool) {
        (self.deflater.is_some(), self.inflater.is_some())
    }

    /// Free the compressor now if no outgoing compressed message is in
    /// progress (e.g. on an idle connection). Always allowed: the next
    /// message is compressed without reference to earlier ones, which any
    /// decompressor accepts. Returns whether it was freed.
    pub fn release_compressor(&mut self) -> bool {
        if self.tx == Tx::Compressing {
            return false;
        }
        self.deflater.take().is_some()
    }

    /// Whether an outgoing message is in progress (fragments sent, not the
    /// last).
    pub fn sending(&self) -> bool {
        self.tx != Tx::Idle
    }

    fn new_deflater(&self) -> Box<Deflate> {
        Box::new(Deflate::new_with_config(ZConfig {
            level: i32::from(self.level),
            window_bits: -i32::from(self.tx_window_bits),
            mem_level: i32::from(self.mem_level),
            ..ZConfig::default()
        }))
    }

    /// Compress one fragment of an outgoing data message (all of it when
    /// `fin` on the first call). The first fragment decides: compressed if
    /// `mode` is `Auto` and its payload is at least the threshold; later
    /// fragments follow (their `mode` is ignored). Only the first frame of
    /// a compressed message gets `rsv1`. Never call it for control frames.
    ///
    /// A whole message (`fin` on the first call) that would not shrink is
    /// sent uncompressed when our side uses no context takeover (otherwise
    /// the compressor has already taken it into its window).
    pub fn compress<'a>(
        &mut self,
        data: &'a [u8],
        fin: bool,
        mode: SendMode,
    ) -> Result<Compressed<'a>, CompressError> {
        let first = self.tx == Tx::Idle;
        if first {
            self.tx_data = false;
            self.tx = if mode == SendMode::Auto && data.len() >= self.threshold {
                Tx::Compressing
            } else {
                Tx::Plain
            };
        }
        if self.tx == Tx::Plain {
            if fin {
                self.tx = Tx::Idle;
            }
            return Ok(Compressed {
                rsv1: false,
                payload: Cow::Borrowed(data),
            });
        }
        let mut out = Vec::new();
        let r = self.deflate(data, fin, &mut out);
        if fin || r.is_err() {
            self.tx = Tx::Idle;
            if self.tx_no_context || r.is_err() {
                // No context to keep: free the state between messages.
                self.deflater = None;
            }
        }
        r?;
        if first && fin && self.tx_no_context && out.len() >= data.len() {
            return Ok(Compressed {
                rsv1: false,
                payload: Cow::Borrowed(data),
            });
        }
        Ok(Compressed {
            rsv1: first,
            payload: Cow::Owned(out),
        })
    }

    /// Run `data` through the compressor into `out`: a sync flush with the
    /// trailer cut (RFC 7692 §7.2.1) at the end of the message, no flush
    /// before it.
    fn deflate(
        &mut self,
        mut data: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        if self.deflater.is_none() {
            self.deflater = Some(self.new_deflater());
        }
        let d = self.deflater.as_mut().ok_or(CompressError)?;
        let flush = if fin {
            DeflateFlush::SyncFlush
        } else {
            DeflateFlush::NoFlush
        };
        out.reserve(data.len() / 2 + 64);
        loop {
            let start = out.len();
            out.resize(out.capacity().max(start + 64), 0);
            let room = out.len() - start;
            let (in0, out0) = (d.total_in(), d.total_out());
            let r = d.compress(data, &mut out[start..], flush);
            let used = (d.total_in() - in0) as usize;
            let made = (d.total_out() - out0) as usize;
            out.truncate(start + made);
            data = &data[used..];
            match r {
                Ok(Status::Ok | Status::StreamEnd) => {}
                // No progress possible: nothing (more) to flush.
                Ok(Status::BufError) => break,
                Err(_) => return Err(CompressError),
            }
            // zlib's rule: done once the input is in and output space is
            // left over.
            if data.is_empty() && made < room {
                break;
            }
            out.reserve(out.len().max(256));
        }
        if fin && out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        self.tx_data |= !out.is_empty();
        if fin && !self.tx_data {
            // Nothing to flush since the last message (zlib's BufError):
            // an empty payload would leave a zlib receiver waiting inside
            // the stored block it reads the trailer as. The §7.2.3.6 form
            // (the header of an empty stored block) is what it expects.
            out.push(0x00);
        }
        Ok(())
    }

    /// Decompress the next payload bytes of an incoming compressed message
    /// (the first frame had RSV1), appending to `out`; `fin` with the last
    /// bytes of the message (an empty `data` is fine). `max` limits the
    /// message's decompressed size: output stops, with `TooBig`, as soon as
    /// it would pass it, after at most [`INFLATE_CHUNK`]-sized steps, so
    /// neither time nor memory grow beyond the limit whatever the ratio.
    ///
    /// Empty messages may come as an empty payload (nothing is inflated
    /// then), a single `00` byte (§7.2.3.6) or any DEFLATE data that
    /// inflates to nothing. A block
    /// with BFINAL set (§7.2.3.4) ends one DEFLATE stream; what follows
    /// starts another (the context before it is lost, as with zlib).
    ///
    /// After an error the message is abandoned and the state freed; the
    /// connection should be failed (`Violation::from`).
    pub fn decompress(
        &mut self,
        data: &[u8],
        fin: bool,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        self.rx_active = true;
        let mut r = Ok(());
        if !data.is_empty() {
            self.rx_data = true;
            r = self.inflate(data, max, out);
        }
        // An empty payload is an empty message: the inflater is where the
        // last message left it, and the trailer alone is not a block.
        if r.is_ok() && fin && self.rx_data {
            r = self.inflate(&TRAILER, max, out);
        }
        if fin || r.is_err() {
            self.rx_len = 0;
            self.rx_active = false;
            self.rx_data = false;
            if self.rx_no_context || r.is_err() {
                self.inflater = None;
            }
        }
        r
    }

    /// Whether an incoming compressed message is in progress.
    pub fn receiving(&self) -> bool {
        self.rx_active
    }

    fn inflate(
        &mut self,
        mut data: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        let inf = self
            .inflater
            .get_or_insert_with(|| Box::new(Inflate::new(false, MAX_WINDOW_BITS)));
        // Output room per call: a guess from the input, doubled while it
        // fills up, at most INFLATE_CHUNK (small messages stay cheap).
        let mut step = data.len().saturating_mul(4).clamp(256, INFLATE_CHUNK);
        loop {
            // One byte beyond the limit tells "too big" without producing more.
            let allowed = max.saturating_sub(self.rx_len).saturating_add(1);
            let want = allowed.min(step);
            let start = out.len();
            if out.capacity() - start < want {
                // Grow geometrically, but never past the limit.
                let grow = start.max(want).min(allowed).max(want);
                out.reserve_exact(grow);
            }
            out.resize(start + want, 0);
            let (in0, out0) = (inf.total_in(), inf.total_out());
            let r = inf.decompress(data, &mut out[start..], InflateFlush::SyncFlush);
            let used = (inf.total_in() - in0) as usize;
            let made = (inf.total_out() - out0) as usize;
            out.truncate(start + made);
            data = &data[used..];
            self.rx_len += made;
            if self.rx_len > max {
                return Err(DecompressError::TooBig);
            }
            if made == want {
                step = (step * 2).min(INFLATE_CHUNK);
            }
            match r {
                Err(_) => return Err(DecompressError::BadData),
                Ok(Status::StreamEnd) => {
                    // BFINAL: a new stream may follow (RFC 7692 §7.2.3.4).
                    inf.reset(false);
                    if data.is_empty() {
                        return Ok(());
                    }
                }
                Ok(Status::Ok) => {
                    if data.is_empty() && made < want {
                        return Ok(());
                    }
                }
                // No progress: all input taken, nothing more to give.
                Ok(Status::BufError) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::deflate::inspect::inflate_raw;
    use crate::proto::deflate::negotiate::DeflateParams;

    const UNLIMITED: usize = usize::MAX;

    fn rng(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// JSON-like text of about `len` bytes: compressible, with repeats at
    /// all distances.
    fn text(seed: &mut u64, len: usize) -> Vec<u8> {
        let words = [
            "alpha", "beta", "gamma", "delta", "\"id\":", "{\"x\":", "},", "42", "7",
        ];
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            let r = rng(seed);
            v.extend_from_slice(words[(r % words.len() as u64) as usize].as_bytes());
            if r & 0x100 != 0 {
                v.push(b'0' + (r >> 20) as u8 % 10);
            }
        }
        v.truncate(len);
        v
    }

    fn params(snct: bool, cnct: bool, sb: u8, cb: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: sb,
            client_max_window_bits: cb,
        }
    }

    /// A sender and a receiver of the same negotiation (server to client).
    fn pair(p: &DeflateParams, cfg: &DeflateConfig) -> (PerMessageDeflate, PerMessageDeflate) {
        (
            PerMessageDeflate::new(Role::Server, p, cfg),
            PerMessageDeflate::new(Role::Client, p, cfg),
        )
    }

    fn cfg_all() -> DeflateConfig {
        DeflateConfig {
            threshold: 0,
            ..DeflateConfig::default()
        }
    }

    fn inflate_all(
        r: &mut PerMessageDeflate,
        payload: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, DecompressError> {
        let mut out = Vec::new();
        r.decompress(payload, true, max, &mut out)?;
        Ok(out)
    }

    /// What the receiver makes of a whole message.
    fn deliver(
        rx: &mut PerMessageDeflate,
        c: &Compressed,
        max: usize,
    ) -> Result<Vec<u8>, DecompressError> {
        if c.rsv1 {
            inflate_all(rx, &c.payload, max)
        } else {
            Ok(c.payload.to_vec())
        }
    }

    /// Whole messages both ways through every window, level and context
    /// mode; each stream also decodes with our own decoder, reaching back
    /// no further than the negotiated window (8 bits: 256 bytes).
    #[test]
    fn round_trip_and_window_limits() {
        let mut seed = 0x1234_5678_9abc_def0;
        for bits in 8..=15u8 {
            for (level, ctx) in [(0u8, true), (1, true), (6, false), (6, true), (9, true)] {
                let p = params(!ctx, false, bits, 15);
                let cfg = DeflateConfig {
                    level,
                    window_bits: 15,
                    ..cfg_all()
                };
                let (mut tx, mut rx) = pair(&p, &cfg);
                let mut history = Vec::new();
                for i in 0..12 {
                    let len = [0usize, 1, 5, 100, 300, 1000, 5000, 40_000][i % 8];
                    let mut msg = text(&mut seed, len);
                    if i == 7 {
                        // Repeats just past 256 and 512 bytes back.
                        let block = text(&mut seed, 300);
                        msg = [block.clone(), block.clone(), text(&mut seed, 220), block].concat();
                    }
                    let c = tx.compress(&msg, true, SendMode::Auto).unwrap();
                    if !c.rsv1 {
                        // Would not shrink: sent as it is (no context only).
                        assert!(!ctx && c.payload == msg);
                        continue;
                    }
                    let mut wire = c.payload.to_vec();
                    assert!(!wire.ends_with(&TRAILER) || wire.len() < 4 || level == 0);
                    assert_eq!(inflate_all(&mut rx, &wire, UNLIMITED).unwrap(), msg);
                    wire.extend_from_slice(&TRAILER);
                    let hist: &[u8] = if ctx { &history } else { &[] };
                    let d = inflate_raw(hist, &wire).unwrap();
                    assert_eq!(d.out, msg);
                    assert!(
                        d.max_distance <= 1 << bits,
                        "bits {bits} level {level}: distance {}",
                        d.max_distance
                    );
                    if i == 7 && bits >= 10 && level > 0 {
                        // The check above would catch a wider reach.
                        assert!(d.max_distance > 256, "bits {bits} level {level}");
                    }
                    history.extend_from_slice(&msg);
                }
            }
        }
    }

    /// RFC 7692 §7.2.3: the examples' payloads decompress to "Hello".
    #[test]
    fn rfc_examples() {
        let ctx = params(false, false, 15, 15);
        let cfg = DeflateConfig::default();
        let mut r = PerMessageDeflate::new(Role::Client, &ctx, &cfg);
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        // §7.2.3.1, also fragmented as in its second example.
        assert_eq!(inflate_all(&mut r, &hello, UNLIMITED).unwrap(), b"Hello");
        // §7.2.3.2: with context takeover the second "Hello" refers back.
        let again = [0xf2, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(inflate_all(&mut r, &again, UNLIMITED).unwrap(), b"Hello");
        let mut r = PerMessageDeflate::new(Role::Client, &ctx, &cfg);
        let mut out = Vec::new();
        r.decompress(&hello[..3], false, UNLIMITED, &mut out)
            .unwrap();
        assert!(r.receiving());
        r.decompress(&hello[3..], true, UNLIMITED, &mut out)
            .unwrap();
        assert!(!r.receiving());
        assert_eq!(out, b"Hello");
        // Without the first message, the reference is bad data.
        let mut fresh = PerMessageDeflate::new(Role::Client, &ctx, &cfg);
        assert_eq!(
            inflate_all(&mut fresh, &again, UNLIMITED),
            Err(DecompressError::BadData)
        );
        // §7.2.3.3: a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_all(&mut r, &stored, UNLIMITED).unwrap(), b"Hello");
        // §7.2.3.4: BFINAL set, then a byte that starts the next stream.
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate_all(&mut r, &bfinal, UNLIMITED).unwrap(), b"Hello");
        assert_eq!(inflate_all(&mut r, &hello, UNLIMITED).unwrap(), b"Hello");
        // §7.2.3.5: two blocks in one message.
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate_all(&mut r, &two, UNLIMITED).unwrap(), b"Hello");
    }

    /// Interop vectors: pywebsocket's "tora" sent three times with context
    /// takeover (as captured in Jetty's permessage-deflate tests).
    #[test]
    fn pywebsocket_vectors() {
        let mut r = PerMessageDeflate::new(Role::Client, &params(false, false, 15, 15), &cfg_all());
        for p in [
            &[0x2a, 0xc9, 0x2f, 0x4a, 0x04, 0x00][..],
            &[0x2a, 0x01, 0x62, 0x00, 0x00],
            &[0x02, 0x61, 0x00, 0x00],
        ] {
            assert_eq!(inflate_all(&mut r, p, 4).unwrap(), b"tora");
        }
    }

    /// An empty message: no payload, a single 00 (§7.2.3.6), an empty
    /// fixed block, or whatever our compressor makes of nothing.
    #[test]
    fn empty_messages() {
        for ctx in [false, true] {
            let p = params(!ctx, !ctx, 15, 15);
            let (mut tx, mut rx) = pair(&p, &cfg_all());
            for payload in [&[][..], &[0x00], &[0x02, 0x00]] {
                assert_eq!(inflate_all(&mut rx, payload, 0).unwrap(), b"");
            }
            for _ in 0..3 {
                let c = tx.compress(b"", true, SendMode::Auto).unwrap();
                assert_eq!(c.rsv1, ctx);
                assert_eq!(deliver(&mut rx, &c, 0).unwrap(), b"");
                let c = tx.compress(b"abc", true, SendMode::Auto).unwrap();
                assert_eq!(deliver(&mut rx, &c, 3).unwrap(), b"abc");
                // Our empty compressed message is the §7.2.3.6 form.
                let mut t =
                    PerMessageDeflate::new(Role::Server, &params(false, false, 15, 15), &cfg_all());
                assert_eq!(
                    t.compress(b"", true, SendMode::Auto).unwrap().payload,
                    &[0x00][..]
                );
                t.compress(b"abc", true, SendMode::Auto).unwrap();
                assert_eq!(
                    t.compress(b"", true, SendMode::Auto).unwrap().payload,
                    &[0x00][..]
                );
            }
        }
    }

    /// RFC 7692 §6.1: fragments of one compressed message; RSV1 on the
    /// first only; any split of the payload decompresses alike.
    #[test]
    fn fragmented_messages() {
        let mut seed = 99;
        for ctx in [true, false] {
            let p = params(!ctx, !ctx, 15, 15);
            let (mut tx, mut rx) = pair(&p, &cfg_all());
            for round in 0..4 {
                let parts: Vec<Vec<u8>> = (0..5)
                    .map(|i| text(&mut seed, [0, 10, 3000, 1, 70_000][(i + round) % 5]))
                    .collect();
                let whole = parts.concat();
                let mut wire = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    let c = tx
                        .compress(part, i == parts.len() - 1, SendMode::Auto)
                        .unwrap();
                    assert_eq!(c.rsv1, i == 0, "fragment {i}");
                    assert_eq!(tx.sending(), i < parts.len() - 1);
                    wire.extend_from_slice(&c.payload);
                }
                for step in [1usize, 7, 4096, usize::MAX] {
                    let mut out = Vec::new();
                    let mut rx2 = PerMessageDeflate::new(Role::Client, &p, &cfg_all());
                    if ctx {
                        // Same history as rx.
                        rx2 = std::mem::replace(&mut rx, rx2);
                    }
                    let chunks: Vec<&[u8]> = if step == usize::MAX {
                        vec![&wire[..]]
                    } else {
                        wire.chunks(step).collect()
                    };
                    for (i, ch) in chunks.iter().enumerate() {
                        rx2.decompress(ch, i == chunks.len() - 1, whole.len(), &mut out)
                            .unwrap();
                    }
                    if chunks.is_empty() {
                        rx2.decompress(&[], true, whole.len(), &mut out).unwrap();
                    }
                    assert_eq!(out, whole, "step {step}");
                    if ctx {
                        // Only the first decoding continues the context.
                        rx = rx2;
                        break;
                    }
                }
            }
        }
    }

    /// A message may also end with an empty last fragment.
    #[test]
    fn empty_last_fragment() {
        for ctx in [true, false] {
            let p = params(!ctx, !ctx, 15, 15);
            let (mut tx, mut rx) = pair(&p, &cfg_all());
            for _ in 0..3 {
                let a = tx
                    .compress(b"Hello, Hello, Hello", false, SendMode::Auto)
                    .unwrap();
                let b = tx.compress(b"", true, SendMode::Auto).unwrap();
                let mut out = Vec::new();
                rx.decompress(&a.payload, false, 100, &mut out).unwrap();
                rx.decompress(&b.payload, true, 100, &mut out).unwrap();
                assert_eq!(out, b"Hello, Hello, Hello");
            }
        }
    }

    /// Decompression bombs: output stops at the limit, after bounded work
    /// and memory, whatever the split of the input.
    #[test]
    fn size_limit() {
        let p = params(false, false, 15, 15);
        let big = vec![b'a'; 10 << 20];
        let strong = DeflateConfig {
            level: 9,
            ..cfg_all()
        };
        let (mut tx, _) = pair(&p, &strong);
        let bomb = tx
            .compress(&big, true, SendMode::Auto)
            .unwrap()
            .payload
            .into_owned();
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        for max in [0usize, 1, 1000, 1 << 20] {
            for step in [bomb.len(), 100, 1] {
                let mut rx = PerMessageDeflate::new(Role::Client, &p, &cfg_all());
                let mut out = Vec::new();
                let mut err = None;
                let chunks: Vec<&[u8]> = bomb.chunks(step).collect();
                for (i, ch) in chunks.iter().enumerate() {
                    if let Err(e) = rx.decompress(ch, i == chunks.len() - 1, max, &mut out) {
                        err = Some(e);
                        break;
                    }
                }
                assert_eq!(err, Some(DecompressError::TooBig), "max {max} step {step}");
                assert!(out.len() <= max + 1, "max {max}: {}", out.len());
                assert!(
                    out.capacity() <= max + 1,
                    "max {max}: cap {}",
                    out.capacity()
                );
                // The state is dropped with the failed message.
                assert_eq!(rx.allocated(), (false, false));
                assert!(!rx.receiving());
            }
        }
        // Exactly at the limit is fine, one below is not.
        let msg = text(&mut 5, 100_000);
        let c = tx
            .compress(&msg, true, SendMode::Auto)
            .unwrap()
            .payload
            .into_owned();
        let mut rx = PerMessageDeflate::new(Role::Client, &params(true, false, 15, 15), &cfg_all());
        assert_eq!(inflate_all(&mut rx, &c, msg.len()).unwrap(), msg);
        let c = {
            let (mut t, _) = pair(&params(true, false, 15, 15), &cfg_all());
            t.compress(&msg, true, SendMode::Auto)
                .unwrap()
                .payload
                .into_owned()
        };
        assert_eq!(inflate_all(&mut rx, &c, msg.len()).unwrap(), msg);
        assert_eq!(
            inflate_all(&mut rx, &c, msg.len() - 1),
            Err(DecompressError::TooBig)
        );
        // The limit counts the whole message, across fragments and calls.
        let mut out = Vec::new();
        rx.decompress(&c[..c.len() / 2], false, msg.len() - 1, &mut out)
            .unwrap();
        assert_eq!(
            rx.decompress(&c[c.len() / 2..], true, msg.len() - 1, &mut out),
            Err(DecompressError::TooBig)
        );
        assert_eq!(Violation::from(DecompressError::TooBig).code, 1009);
    }

    #[test]
    fn bad_data() {
        let p = params(false, false, 15, 15);
        let mut rx = PerMessageDeflate::new(Role::Server, &p, &cfg_all());
        for bad in [
            &[0xff, 0xff, 0xff][..],
            &[0x06],
            &[0x00, 0x01, 0x00, 0x00, 0x00, 0x41],
        ] {
            assert_eq!(
                inflate_all(&mut rx, bad, UNLIMITED),
                Err(DecompressError::BadData),
                "{bad:02x?}"
            );
            assert_eq!(rx.allocated(), (false, false));
            // The next message starts afresh.
            assert_eq!(
                inflate_all(
                    &mut rx,
                    &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
                    UNLIMITED
                )
                .unwrap(),
                b"Hello"
            );
        }
        // A reference before the start of the data.
        let mut fresh = PerMessageDeflate::new(Role::Server, &p, &cfg_all());
        assert_eq!(
            inflate_all(&mut fresh, &[0xf2, 0x00, 0x11, 0x00, 0x00], UNLIMITED),
            Err(DecompressError::BadData)
        );
        assert_eq!(Violation::from(DecompressError::BadData).code, 1007);
        assert_eq!(
            DecompressError::BadData.to_string(),
            "invalid compressed data"
        );
    }

    /// Memory: nothing until a message needs it; without context takeover
    /// the state goes again after each message.
    #[test]
    fn lazy_state() {
        assert!(std::mem::size_of::<PerMessageDeflate>() <= 64);
        let msg = text(&mut 3, 2000);
        for (snct, cnct) in [(false, false), (true, false), (false, true), (true, true)] {
            let p = params(snct, cnct, 15, 15);
            let mut s = PerMessageDeflate::new(Role::Server, &p, &cfg_all());
            let mut c = PerMessageDeflate::new(Role::Client, &p, &cfg_all());
            assert_eq!(
                (s.allocated(), c.allocated()),
                ((false, false), (false, false))
            );
            let w = s
                .compress(&msg, true, SendMode::Auto)
                .unwrap()
                .payload
                .into_owned();
            assert_eq!(s.allocated(), (!snct, false));
            assert_eq!(inflate_all(&mut c, &w, UNLIMITED).unwrap(), msg);
            assert_eq!(c.allocated(), (false, !snct));
            let w = c
                .compress(&msg, true, SendMode::Auto)
                .unwrap()
                .payload
                .into_owned();
            assert_eq!(c.allocated(), (!cnct, !snct));
            assert_eq!(inflate_all(&mut s, &w, UNLIMITED).unwrap(), msg);
            assert_eq!(s.allocated(), (!snct, !cnct));
            // Uncompressed messages allocate nothing.
            let mut idle = PerMessageDeflate::new(Role::Server, &p, &cfg_all());
            idle.compress(&msg, true, SendMode::Uncompressed).unwrap();
            assert_eq!(idle.allocated(), (false, false));
        }
    }

    /// The compressor may be dropped between messages even with context
    /// takeover: the peer's decompressor keeps working.
    #[test]
    fn release_compressor() {
        let p = params(false, false, 15, 15);
        let (mut tx, mut rx) = pair(&p, &cfg_all());
        let msg = text(&mut 8, 3000);
        for i in 0..4 {
            let c = tx.compress(&msg, true, SendMode::Auto).unwrap();
            assert_eq!(inflate_all(&mut rx, &c.payload, UNLIMITED).unwrap(), msg);
            assert!(tx.release_compressor(), "{i}");
            assert!(!tx.release_compressor());
        }
        let a = tx.compress(&msg, false, SendMode::Auto).unwrap();
        assert!(!tx.release_compressor());
        let b = tx.compress(&msg, true, SendMode::Auto).unwrap();
        let mut out = Vec::new();
        rx.decompress(&a.payload, false, UNLIMITED, &mut out)
            .unwrap();
        rx.decompress(&b.payload, true, UNLIMITED, &mut out)
            .unwrap();
        assert_eq!(out, [&msg[..], &msg[..]].concat());
    }

    /// Threshold and per-message choice; uncompressed messages between
    /// compressed ones do not disturb the shared context.
    #[test]
    fn threshold_and_uncompressed() {
        let p = params(false, false, 15, 15);
        let cfg = DeflateConfig {
            threshold: 10,
            ..DeflateConfig::default()
        };
        let (mut tx, mut rx) = pair(&p, &cfg);
        assert_eq!(tx.threshold(), 10);
        let c = tx.compress(b"short", true, SendMode::Auto).unwrap();
        assert_eq!(
            c,
            Compressed {
                rsv1: false,
                payload: Cow::Borrowed(&b"short"[..])
            }
        );
        assert!(matches!(c.payload, Cow::Borrowed(_)));
        let long = b"a longer message, a longer message".to_vec();
        let c = tx.compress(&long, true, SendMode::Uncompressed).unwrap();
        assert!(!c.rsv1 && c.payload == long);
        for _ in 0..3 {
            let c = tx.compress(&long, true, SendMode::Auto).unwrap();
            assert!(c.rsv1 && c.payload.len() < long.len());
            assert_eq!(inflate_all(&mut rx, &c.payload, UNLIMITED).unwrap(), long);
            assert!(!tx.compress(b"tiny", true, SendMode::Auto).unwrap().rsv1);
        }
        // The first fragment decides for the whole message.
        let a = tx.compress(b"tiny", false, SendMode::Auto).unwrap();
        let b = tx.compress(&long, true, SendMode::Auto).unwrap();
        assert!(!a.rsv1 && !b.rsv1 && b.payload == long);
        tx.set_threshold(0);
        assert!(tx.compress(b"", true, SendMode::Auto).unwrap().rsv1);
    }

    /// Without context takeover a whole message that would not shrink
    /// goes as it is.
    #[test]
    fn incompressible() {
        let mut seed = 77;
        let noise: Vec<u8> = (0..5000).map(|_| rng(&mut seed) as u8).collect();
        let (mut tx, _) = pair(&params(true, false, 15, 15), &cfg_all());
        let c = tx.compress(&noise, true, SendMode::Auto).unwrap();
        assert!(!c.rsv1 && c.payload == noise);
        assert_eq!(tx.allocated(), (false, false));
        // With context takeover it must go compressed.
        let (mut tx, mut rx) = pair(&params(false, false, 15, 15), &cfg_all());
        let c = tx.compress(&noise, true, SendMode::Auto).unwrap();
        assert!(c.rsv1);
        assert_eq!(inflate_all(&mut rx, &c.payload, UNLIMITED).unwrap(), noise);
    }

    /// RFC 7692 §6: RSV1 only on the first frame of a data message.
    #[test]
    fn rsv_rules() {
        use crate::proto::frame::{OP_CLOSE, OP_PING, OP_PONG};
        assert_eq!(message_is_compressed(OP_TEXT, 0b100), Ok(true));
        assert_eq!(message_is_compressed(OP_BINARY, 0b100), Ok(true));
        assert_eq!(message_is_compressed(OP_TEXT, 0), Ok(false));
        assert_eq!(message_is_compressed(OP_CONTINUATION, 0), Ok(false));
        assert_eq!(message_is_compressed(OP_PING, 0), Ok(false));
        for op in [OP_CONTINUATION, OP_CLOSE, OP_PING, OP_PONG, 3, 11] {
            assert_eq!(
                message_is_compressed(op, 0b100).unwrap_err().code,
                1002,
                "op {op}"
            );
        }
        for op in [OP_TEXT, OP_BINARY, OP_CONTINUATION, OP_PING] {
            for rsv in [0b010, 0b001, 0b110, 0b111] {
                assert_eq!(message_is_compressed(op, rsv).unwrap_err().code, 1002);
            }
        }
    }

    /// The window our compressor uses: the smaller of ours and the
    /// negotiated one, 8 becoming 9.
    #[test]
    fn compressor_window() {
        let w = |role, p: &DeflateParams, bits| {
            let cfg = DeflateConfig {
                window_bits: bits,
                ..DeflateConfig::default()
            };
            PerMessageDeflate::new(role, p, &cfg).tx_window_bits
        };
        let p = params(false, false, 8, 13);
        assert_eq!(w(Role::Server, &p, 15), 9);
        assert_eq!(w(Role::Client, &p, 15), 13);
        assert_eq!(w(Role::Client, &p, 10), 10);
        assert_eq!(w(Role::Client, &p, 8), 9);
        assert!(format!(
            "{:?}",
            PerMessageDeflate::new(Role::Client, &p, &DeflateConfig::default())
        )
        .contains("tx_window_bits: 12"));
    }
}
