//! Incremental frame decoder and message assembler (RFC 6455 §5, §6.2).
//!
//! An explicit, sans-I/O state machine: the caller hands in whatever bytes
//! arrived and gets back how many were consumed plus at most one complete
//! message.

use crate::proto::close::{self, Violation};
use crate::proto::deflate::{self, PerMessageDeflate};
use crate::proto::frame::{self, FrameHeader, MAX_HEADER_LEN};
use crate::proto::mask::{apply_mask, extend_masked};
use crate::proto::utf8::Utf8Validator;
use crate::proto::Role;

/// A complete message (or control frame) received from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Validated UTF-8.
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<close::CloseFrame>),
}

/// Never reserve more than this ahead of actually received payload bytes.
const RESERVE_CAP: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
enum State {
    /// Waiting for (the rest of) a frame header; `hdr_buf[..hdr_len]` holds
    /// any bytes of it received so far.
    Header,
    /// Reading a frame payload; `pos` bytes of it have been consumed.
    Payload { hdr: FrameHeader, pos: u64 },
}

/// Incremental frame decoder + message assembler.
#[derive(Debug)]
pub struct MessageReader {
    role: Role,
    max_message_size: usize,
    state: State,
    hdr_buf: [u8; MAX_HEADER_LEN],
    hdr_len: usize,
    /// Opcode (TEXT/BINARY) of the data message in progress, if any.
    msg_opcode: Option<u8>,
    /// Payload of the data message in progress.
    msg: Vec<u8>,
    /// Payload of the control frame in progress.
    ctrl: Vec<u8>,
    utf8: Utf8Validator,
    /// Once a violation has been reported, every further call reports it again.
    failed: Option<Violation>,
    /// permessage-deflate, when negotiated (RFC 7692).
    deflate: Option<PerMessageDeflate>,
    /// The data message in progress is compressed: `msg` then holds only
    /// the compressed bytes not yet inflated, `inflated` the message.
    compressed: bool,
    inflated: Vec<u8>,
    /// Compressed bytes of the message in progress, for its size bound.
    compressed_len: u64,
}

impl MessageReader {
    /// `max_message_size` bounds the total payload of a data message
    /// (sum of its fragments); use `usize::MAX` for "unlimited".
    pub fn new(role: Role, max_message_size: usize) -> Self {
        MessageReader {
            role,
            max_message_size,
            state: State::Header,
            hdr_buf: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            msg_opcode: None,
            msg: Vec::new(),
            ctrl: Vec::new(),
            utf8: Utf8Validator::new(),
            failed: None,
            deflate: None,
            compressed: false,
            inflated: Vec::new(),
            compressed_len: 0,
        }
    }

    /// Messages may come compressed (permessage-deflate was negotiated).
    pub fn set_deflate(&mut self, d: PerMessageDeflate) {
        self.deflate = Some(d);
    }

    pub fn set_max_message_size(&mut self, n: usize) {
        self.max_message_size = n;
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// True while a fragmented data message is in progress (or a frame is
    /// partially read).
    pub fn in_message(&self) -> bool {
        self.msg_opcode.is_some() || self.hdr_len > 0 || matches!(self.state, State::Payload { .. })
    }

    /// Consume bytes from the front of `buf`. Returns how many bytes were
    /// consumed and at most one complete message. Call again with
    /// `buf[consumed..]` while it returns a message or `consumed > 0`; stop
    /// when it returns `(0, None)` (needs more input).
    ///
    /// All consumed bytes are owned by the reader afterwards (partial
    /// headers and payloads are buffered internally), so the caller can
    /// discard them. After an `Err` the connection must be failed; the
    /// reader keeps returning the same error.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<(usize, Option<Message>), Violation> {
        if let Some(v) = &self.failed {
            return Err(v.clone());
        }
        match self.read_inner(buf) {
            Ok(r) => Ok(r),
            Err(v) => {
                self.failed = Some(v.clone());
                Err(v)
            }
        }
    }

    /// In-place receiving, for large payloads (saves a copy): when the
    /// decoder is inside a data frame with at least `min` (> 0) payload
    /// bytes still to come, how many of them the caller may append to
    /// [`payload_buffer`](Self::payload_buffer) before calling
    /// [`payload_appended`](Self::payload_appended); 0 otherwise (then use
    /// [`read`](Self::read)).
    pub fn payload_room(&self, min: usize) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        match self.state {
            State::Payload { hdr, pos } if !frame::is_control(hdr.opcode) => {
                let remaining = hdr.payload_len - pos;
                if remaining >= min.max(1) as u64 {
                    usize::try_from(remaining).unwrap_or(usize::MAX)
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// The buffer the message in progress is assembled in. Only append to
    /// it, at most [`payload_room`](Self::payload_room) bytes, as received
    /// (still masked).
    pub fn payload_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.msg
    }

    /// The last `n` bytes of [`payload_buffer`](Self::payload_buffer) were
    /// appended as received; unmasks and checks them like [`read`](Self::read)
    /// would have, and returns the message they complete, if any.
    ///
    /// # Panics
    /// If `n` exceeds the room given by `payload_room` or the buffer holds
    /// fewer than `n` bytes.
    pub fn payload_appended(&mut self, n: usize) -> Result<Option<Message>, Violation> {
        if let Some(v) = &self.failed {
            return Err(v.clone());
        }
        let (hdr, pos) = match self.state {
            State::Payload { hdr, pos } if !frame::is_control(hdr.opcode) => (hdr, pos),
            _ => panic!("payload_appended outside a data frame payload"),
        };
        assert!(
            n as u64 <= hdr.payload_len - pos,
            "payload_appended beyond the frame"
        );
        let start = self.msg.len() - n;
        let r = self.accept_payload(hdr, pos, start, n);
        if let Err(v) = &r {
            self.failed = Some(v.clone());
        }
        r
    }

    /// `n` payload bytes of frame `hdr`, from payload position `pos`, sit
    /// at `msg[start..]`: unmask, validate, advance, finish the frame.
    fn accept_payload(
        &mut self,
        hdr: FrameHeader,
        pos: u64,
        start: usize,
        n: usize,
    ) -> Result<Option<Message>, Violation> {
        if let Some(k) = hdr.mask {
            apply_mask(&mut self.msg[start..], k, pos as usize);
        }
        if self.compressed {
            self.inflate(start, false)?;
        } else if self.msg_opcode == Some(frame::OP_TEXT) {
            self.utf8
                .feed(&self.msg[start..])
                .map_err(|_| Violation::invalid_data("invalid UTF-8 in text message"))?;
        }
        let pos = pos + n as u64;
        self.state = State::Payload { hdr, pos };
        if pos == hdr.payload_len {
            return self.finish_frame(&hdr);
        }
        Ok(None)
    }

    /// Inflates the compressed bytes at `msg[start..]` (all of the message
    /// when `fin`) into `inflated`, checking the new text as UTF-8; the
    /// compressed bytes are dropped.
    fn inflate(&mut self, start: usize, fin: bool) -> Result<(), Violation> {
        let Some(d) = self.deflate.as_mut() else {
            return Err(Violation::protocol("reserved bits set"));
        };
        let before = self.inflated.len();
        let r = d.decompress(
            &self.msg[start..],
            fin,
            self.max_message_size,
            &mut self.inflated,
        );
        self.msg.truncate(start);
        r?;
        if self.msg_opcode == Some(frame::OP_TEXT) {
            self.utf8
                .feed(&self.inflated[before..])
                .map_err(|_| Violation::invalid_data("invalid UTF-8 in text message"))?;
        }
        Ok(())
    }

    fn read_inner(&mut self, buf: &[u8]) -> Result<(usize, Option<Message>), Violation> {
        let mut consumed = 0;
        loop {
            match self.state {
                State::Header => {
                    let rest = &buf[consumed..];
                    let parsed = if self.hdr_len == 0 {
                        match frame::parse_header(rest)? {
                            Some(p) => Some(p),
                            None => {
                                // Fewer than MAX_HEADER_LEN bytes: stash them.
                                self.hdr_buf[..rest.len()].copy_from_slice(rest);
                                self.hdr_len = rest.len();
                                consumed += rest.len();
                                None
                            }
                        }
                    } else {
                        let before = self.hdr_len;
                        let take = rest.len().min(MAX_HEADER_LEN - before);
                        self.hdr_buf[before..before + take].copy_from_slice(&rest[..take]);
                        match frame::parse_header(&self.hdr_buf[..before + take])? {
                            Some((h, n)) => {
                                self.hdr_len = 0;
                                Some((h, n - before))
                            }
                            None => {
                                self.hdr_len = before + take;
                                consumed += take;
                                None
                            }
                        }
                    };
                    let (hdr, used) = match parsed {
                        Some(p) => p,
                        None => return Ok((consumed, None)),
                    };
                    consumed += used;
                    self.start_frame(&hdr, buf.len() - consumed)?;
                    self.state = State::Payload { hdr, pos: 0 };
                    if hdr.payload_len == 0 {
                        if let Some(m) = self.finish_frame(&hdr)? {
                            return Ok((consumed, Some(m)));
                        }
                    }
                }
                State::Payload { hdr, pos } => {
                    let rest = &buf[consumed..];
                    if rest.is_empty() {
                        return Ok((consumed, None));
                    }
                    let remaining = hdr.payload_len - pos;
                    let n = if (rest.len() as u64) < remaining {
                        rest.len()
                    } else {
                        remaining as usize
                    };
                    let src = &rest[..n];
                    consumed += n;
                    if frame::is_control(hdr.opcode) {
                        match hdr.mask {
                            None => self.ctrl.extend_from_slice(src),
                            Some(k) => extend_masked(&mut self.ctrl, src, k, pos as usize),
                        }
                        let pos = pos + n as u64;
                        self.state = State::Payload { hdr, pos };
                        if pos == hdr.payload_len {
                            if let Some(m) = self.finish_frame(&hdr)? {
                                return Ok((consumed, Some(m)));
                            }
                        }
                    } else {
                        let start = self.msg.len();
                        self.msg.extend_from_slice(src);
                        if let Some(m) = self.accept_payload(hdr, pos, start, n)? {
                            return Ok((consumed, Some(m)));
                        }
                    }
                }
            }
        }
    }

    /// Validate a freshly parsed header against the connection state and
    /// prepare buffers. `available` is how many payload bytes are already
    /// in the caller's buffer (used to bound reservations).
    fn start_frame(&mut self, h: &FrameHeader, available: usize) -> Result<(), Violation> {
        let compressed = match &self.deflate {
            Some(_) => deflate::codec::message_is_compressed(h.opcode, h.rsv)?,
            None if h.rsv != 0 => return Err(Violation::protocol("reserved bits set")),
            None => false,
        };
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(Violation::protocol("unmasked frame from client")),
            (Role::Client, true) => return Err(Violation::protocol("masked frame from server")),
            _ => {}
        }
        match h.opcode {
            frame::OP_CLOSE | frame::OP_PING | frame::OP_PONG => {
                if !h.fin {
                    return Err(Violation::protocol("fragmented control frame"));
                }
                if h.payload_len > 125 {
                    return Err(Violation::protocol("control frame payload too long"));
                }
                self.ctrl.clear();
                self.ctrl.reserve(h.payload_len as usize);
                return Ok(());
            }
            frame::OP_CONTINUATION => {
                if self.msg_opcode.is_none() {
                    return Err(Violation::protocol("continuation frame without a message"));
                }
            }
            frame::OP_TEXT | frame::OP_BINARY => {
                if self.msg_opcode.is_some() {
                    return Err(Violation::protocol(
                        "new data frame inside a fragmented message",
                    ));
                }
            }
            _ => return Err(Violation::protocol("reserved opcode")),
        }
        if h.opcode != frame::OP_CONTINUATION {
            self.msg_opcode = Some(h.opcode);
            self.msg.clear();
            self.inflated.clear();
            self.utf8.reset();
            self.compressed = compressed;
            self.compressed_len = 0;
        }
        if self.compressed {
            // The limit is on the inflated size (checked as it inflates);
            // the compressed bytes may exceed it by what DEFLATE adds to
            // incompressible data (5 bytes per 16 KiB block), and more.
            let bound = compressed_bound(self.max_message_size);
            self.compressed_len = self.compressed_len.saturating_add(h.payload_len);
            if self.compressed_len > bound {
                return Err(Violation::too_big("message too big"));
            }
        } else {
            let room = (self.max_message_size - self.msg.len().min(self.max_message_size)) as u64;
            if h.payload_len > room {
                return Err(Violation::too_big("message too big"));
            }
        }
        // payload_len <= room <= usize::MAX, so the cast is lossless.
        let want = (h.payload_len as usize).min(available.max(RESERVE_CAP));
        self.msg.reserve(want);
        Ok(())
    }

    /// The whole payload of frame `h` has arrived.
    fn finish_frame(&mut self, h: &FrameHeader) -> Result<Option<Message>, Violation> {
        self.state = State::Header;
        match h.opcode {
            frame::OP_PING => Ok(Some(Message::Ping(std::mem::take(&mut self.ctrl)))),
            frame::OP_PONG => Ok(Some(Message::Pong(std::mem::take(&mut self.ctrl)))),
            frame::OP_CLOSE => {
                let c = close::parse_close_payload(&self.ctrl)?;
                self.ctrl.clear();
                Ok(Some(Message::Close(c)))
            }
            _ => {
                if !h.fin {
                    return Ok(None);
                }
                if self.compressed {
                    self.inflate(self.msg.len(), true)?;
                    self.compressed = false;
                    self.msg = std::mem::take(&mut self.inflated);
                }
                let op = self.msg_opcode.take();
                let data = std::mem::take(&mut self.msg);
                if op == Some(frame::OP_TEXT) {
                    if !self.utf8.is_complete() {
                        return Err(Violation::invalid_data("truncated UTF-8 in text message"));
                    }
                    self.utf8.reset();
                    Ok(Some(Message::Text(data)))
                } else {
                    Ok(Some(Message::Binary(data)))
                }
            }
        }
    }
}

/// The most compressed bytes a message of at most `max` inflated bytes
/// may take.
fn compressed_bound(max: usize) -> u64 {
    (max as u64)
        .saturating_add(max as u64 / 64)
        .saturating_add(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::close::CloseFrame;
    use crate::proto::frame::{encode_frame, encode_header};

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const MAX: usize = 1 << 20;

    /// Any frame, also those the encoder refuses to make (fragmented or
    /// over-long control frames): encoded as binary, then given `op`.
    fn fr(fin: bool, op: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(&mut v, fin, frame::OP_BINARY, mask, payload).unwrap();
        v[0] = (v[0] & 0xf0) | op;
        v
    }

    /// Masked (client-to-server) frame with the RFC sample key.
    fn m(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        fr(fin, op, Some(KEY), payload)
    }

    /// Unmasked (server-to-client) frame.
    fn u(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        fr(fin, op, None, payload)
    }

    type Outcome = (Vec<Message>, Option<Violation>);

    /// Feed `data` in the given chunk sizes (cycled), following the
    /// documented calling convention: `decode_in_place` with a threshold no
    /// frame reaches, so every byte goes through `read`.
    fn decode_with(
        r: &mut MessageReader,
        data: &[u8],
        sizes: &mut dyn FnMut() -> usize,
    ) -> Outcome {
        decode_in_place(r, data, usize::MAX, sizes)
    }

    /// Hands `chunk` to `read` as the calling convention says, collecting
    /// the messages; checks that every byte is consumed.
    fn read_chunk(
        r: &mut MessageReader,
        chunk: &[u8],
        msgs: &mut Vec<Message>,
    ) -> Result<(), Violation> {
        let mut chunk = chunk.to_vec();
        let mut at = 0;
        loop {
            match r.read(&mut chunk[at..])? {
                (0, None) => break,
                (c, msg) => {
                    at += c;
                    msgs.extend(msg);
                }
            }
        }
        assert_eq!(
            at,
            chunk.len(),
            "reader must consume every byte it is given"
        );
        Ok(())
    }

    /// Like `decode_with`, but the way the engine receives large payloads:
    /// whenever `payload_room(min)` allows, the next chunk is appended
    /// straight to `payload_buffer()` and reported with `payload_appended`.
    fn decode_in_place(
        r: &mut MessageReader,
        data: &[u8],
        min: usize,
        sizes: &mut dyn FnMut() -> usize,
    ) -> Outcome {
        let mut msgs = Vec::new();
        let mut off = 0;
        while off < data.len() {
            let n = sizes().max(1).min(data.len() - off);
            let room = r.payload_room(min);
            if room > 0 {
                let take = n.min(room);
                r.payload_buffer().extend_from_slice(&data[off..off + take]);
                off += take;
                match r.payload_appended(take) {
                    Ok(Some(m)) => msgs.push(m),
                    Ok(None) => {}
                    Err(v) => return (msgs, Some(v)),
                }
                continue;
            }
            if let Err(v) = read_chunk(r, &data[off..off + n], &mut msgs) {
                return (msgs, Some(v));
            }
            off += n;
        }
        (msgs, None)
    }

    fn decode(role: Role, max: usize, data: &[u8]) -> Outcome {
        let mut r = MessageReader::new(role, max);
        decode_with(&mut r, data, &mut || usize::MAX)
    }

    fn decode_bytewise(role: Role, max: usize, data: &[u8]) -> Outcome {
        let mut r = MessageReader::new(role, max);
        decode_with(&mut r, data, &mut || 1)
    }

    /// Whole-buffer and byte-at-a-time decoding must agree; returns the result.
    fn check(role: Role, max: usize, data: &[u8]) -> Outcome {
        let a = decode(role, max, data);
        let b = decode_bytewise(role, max, data);
        assert_eq!(a, b, "whole vs bytewise");
        a
    }

    fn ok(role: Role, data: &[u8]) -> Vec<Message> {
        let (msgs, err) = check(role, MAX, data);
        assert_eq!(err, None);
        msgs
    }

    fn err_code(role: Role, data: &[u8]) -> u16 {
        check(role, MAX, data).1.expect("expected a violation").code
    }

    /// RFC 6455 §5.7: single-frame unmasked text "Hello" (server to client).
    #[test]
    fn rfc_unmasked_text() {
        let d = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(ok(Role::Client, &d), vec![Message::Text(b"Hello".to_vec())]);
    }

    /// RFC 6455 §5.7: single-frame masked text "Hello" (client to server).
    #[test]
    fn rfc_masked_text() {
        let d = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(ok(Role::Server, &d), vec![Message::Text(b"Hello".to_vec())]);
    }

    /// RFC 6455 §5.7: fragmented unmasked text "Hel" + "lo".
    #[test]
    fn rfc_fragmented_text() {
        let d = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(ok(Role::Client, &d), vec![Message::Text(b"Hello".to_vec())]);
    }

    /// RFC 6455 §5.7: unmasked ping "Hello" and masked pong "Hello".
    #[test]
    fn rfc_ping_pong() {
        let d = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(ok(Role::Client, &d), vec![Message::Ping(b"Hello".to_vec())]);
        let d = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(ok(Role::Server, &d), vec![Message::Pong(b"Hello".to_vec())]);
    }

    /// RFC 6455 §5.7: 256 bytes binary (16-bit length) and 64 KiB binary
    /// (64-bit length), unmasked and masked.
    #[test]
    fn rfc_binary_length_forms() {
        for len in [256usize, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 7) as u8).collect();
            let mut d = Vec::new();
            encode_header(&mut d, true, frame::OP_BINARY, None, len as u64).unwrap();
            assert_eq!(d[1], if len == 256 { 0x7e } else { 0x7f });
            d.extend_from_slice(&payload);
            assert_eq!(ok(Role::Client, &d), vec![Message::Binary(payload.clone())]);
            let d = m(true, frame::OP_BINARY, &payload);
            assert_eq!(ok(Role::Server, &d), vec![Message::Binary(payload.clone())]);
        }
    }

    /// RFC 6455 §5.1: a server MUST close on an unmasked frame; a client
    /// MUST close on a masked frame.
    #[test]
    fn masking_rules() {
        assert_eq!(err_code(Role::Server, &u(true, 1, b"hi")), 1002);
        assert_eq!(err_code(Role::Client, &m(true, 1, b"hi")), 1002);
        assert_eq!(err_code(Role::Server, &u(true, 9, b"")), 1002);
        assert_eq!(err_code(Role::Client, &m(true, 10, b"")), 1002);
    }

    /// RFC 6455 §5.2: RSV1-3 MUST be 0 unless an extension is negotiated.
    #[test]
    fn rsv_bits_rejected() {
        for rsv in 1..8u8 {
            let mut d = u(true, 1, b"x");
            d[0] |= rsv << 4;
            assert_eq!(err_code(Role::Client, &d), 1002);
            let mut d = m(true, 9, b"x");
            d[0] |= rsv << 4;
            assert_eq!(err_code(Role::Server, &d), 1002);
        }
    }

    /// RFC 6455 §5.2: reserved opcodes 3-7 and 0xB-0xF fail the connection.
    #[test]
    fn reserved_opcodes_rejected() {
        for op in (3..8).chain(11..16) {
            assert_eq!(err_code(Role::Client, &u(true, op, b"")), 1002, "op {op}");
            assert_eq!(err_code(Role::Server, &m(true, op, b"abc")), 1002);
        }
    }

    /// RFC 6455 §5.5: control frames MUST NOT be fragmented and their
    /// payload MUST be ≤ 125 bytes.
    #[test]
    fn control_frame_rules() {
        for op in [8u8, 9, 10] {
            assert_eq!(err_code(Role::Client, &u(false, op, b"")), 1002);
            let big = vec![b'a'; 126];
            assert_eq!(err_code(Role::Client, &u(true, op, &big)), 1002);
            // Non-minimal 16-bit encoding of a small length is still > 125 rule-wise fine:
            let mut d = vec![0x80 | op, 126, 0, 126];
            d.extend_from_slice(&big);
            assert_eq!(err_code(Role::Client, &d), 1002);
        }
        let p = vec![b'a'; 125];
        assert_eq!(
            ok(Role::Client, &u(true, 9, &p)),
            vec![Message::Ping(p.clone())]
        );
        assert_eq!(ok(Role::Server, &m(true, 10, &p)), vec![Message::Pong(p)]);
    }

    /// RFC 6455 §5.4: control frames may be injected between fragments and
    /// do not disturb the message in progress.
    #[test]
    fn control_between_fragments() {
        let mut d = m(false, 1, b"Hel");
        d.extend(m(true, 9, b"p1"));
        d.extend(m(false, 0, b"l"));
        d.extend(m(true, 10, b""));
        d.extend(m(true, 0, b"o"));
        assert_eq!(
            ok(Role::Server, &d),
            vec![
                Message::Ping(b"p1".to_vec()),
                Message::Pong(vec![]),
                Message::Text(b"Hello".to_vec())
            ]
        );
        // A close in the middle is returned too (the engine decides what to do).
        let mut d = u(false, 2, b"ab");
        d.extend(u(true, 8, &[0x03, 0xe8]));
        d.extend(u(true, 0, b"cd"));
        assert_eq!(
            ok(Role::Client, &d),
            vec![
                Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: String::new()
                })),
                Message::Binary(b"abcd".to_vec())
            ]
        );
    }

    /// RFC 6455 §5.4: continuation without a started message, and a new
    /// data frame inside a fragmented message, are protocol errors.
    #[test]
    fn fragmentation_errors() {
        assert_eq!(err_code(Role::Client, &u(true, 0, b"x")), 1002);
        assert_eq!(err_code(Role::Client, &u(false, 0, b"x")), 1002);
        let mut d = u(false, 1, b"a");
        d.extend(u(true, 1, b"b"));
        assert_eq!(err_code(Role::Client, &d), 1002);
        let mut d = u(false, 2, b"a");
        d.extend(u(false, 1, b"b"));
        assert_eq!(err_code(Role::Client, &d), 1002);
        // After a completed message, continuation is again invalid.
        let mut d = u(false, 2, b"a");
        d.extend(u(true, 0, b"b"));
        d.extend(u(true, 0, b"c"));
        let (msgs, e) = check(Role::Client, MAX, &d);
        assert_eq!(msgs, vec![Message::Binary(b"ab".to_vec())]);
        assert_eq!(e.unwrap().code, 1002);
    }

    /// RFC 6455 §10.4: message size limits → 1009, decided from the header
    /// before any payload is buffered, including across fragments.
    #[test]
    fn too_big() {
        let mut r = MessageReader::new(Role::Client, 10);
        assert_eq!(r.max_message_size(), 10);
        let mut d = u(true, 2, &[0; 10]);
        assert_eq!(
            r.read(&mut d).unwrap(),
            (12, Some(Message::Binary(vec![0; 10])))
        );
        // One byte over: rejected on the header alone.
        let mut hdr = Vec::new();
        encode_header(&mut hdr, true, 2, None, 11).unwrap();
        assert_eq!(r.read(&mut hdr).unwrap_err().code, 1009);
        // Sum of fragments.
        let mut d = u(false, 1, b"12345");
        d.extend(u(false, 0, b"12345"));
        d.extend(u(true, 0, b"1"));
        let (msgs, e) = check(Role::Client, 10, &d);
        assert!(msgs.is_empty());
        assert_eq!(e.unwrap().code, 1009);
        // Exactly at the limit across fragments is fine.
        let mut d = u(false, 1, b"12345");
        d.extend(u(true, 0, b"12345"));
        assert_eq!(
            check(Role::Client, 10, &d),
            (vec![Message::Text(b"1234512345".to_vec())], None)
        );
        // Huge declared length: rejected without allocating.
        let mut hdr = Vec::new();
        encode_header(&mut hdr, true, 2, None, 1 << 62).unwrap();
        let mut r = MessageReader::new(Role::Client, MAX);
        assert_eq!(r.read(&mut hdr).unwrap_err().code, 1009);
        // Control frames are not subject to the data message limit.
        let mut r = MessageReader::new(Role::Client, 0);
        let mut d = u(true, 9, b"ping");
        assert_eq!(
            r.read(&mut d).unwrap().1,
            Some(Message::Ping(b"ping".to_vec()))
        );
        let mut d = u(true, 2, b"");
        assert_eq!(r.read(&mut d).unwrap().1, Some(Message::Binary(vec![])));
        r.set_max_message_size(4);
        let mut d = u(true, 2, b"abcd");
        assert_eq!(
            r.read(&mut d).unwrap().1,
            Some(Message::Binary(b"abcd".to_vec()))
        );
    }

    /// RFC 6455 §5.2: with no limit, a huge declared length only reserves
    /// a bounded amount and waits for data.
    #[test]
    fn huge_length_unlimited_does_not_allocate() {
        let mut hdr = Vec::new();
        encode_header(&mut hdr, true, 2, None, (1 << 62) + 5).unwrap();
        hdr.extend_from_slice(b"abc");
        let mut r = MessageReader::new(Role::Client, usize::MAX);
        assert_eq!(r.read(&mut hdr).unwrap(), (13, None));
        assert!(r.in_message());
        assert!(r.msg.capacity() <= RESERVE_CAP);
    }

    /// RFC 6455 §5.2: the 64-bit length's most significant bit MUST be 0.
    #[test]
    fn msb_length() {
        let d = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1, 0xaa];
        assert_eq!(err_code(Role::Client, &d), 1002);
    }

    /// RFC 6455 §8.1: invalid UTF-8 fails fast (1007) before FIN, within a
    /// frame, across fragments and across read calls.
    #[test]
    fn utf8_fail_fast() {
        // Bad byte in a non-final fragment: error without waiting for FIN.
        let mut d = u(false, 1, b"ok\xff");
        let mut r = MessageReader::new(Role::Client, MAX);
        assert_eq!(r.read(&mut d).unwrap_err().code, 1007);
        // F4 90 split across fragments fails at the second fragment.
        let mut d = m(false, 1, b"a\xf4");
        d.extend(m(false, 0, b"\x90"));
        let (msgs, e) = check(Role::Server, MAX, &d);
        assert!(msgs.is_empty());
        assert_eq!(e.unwrap().code, 1007);
        // Inside a single frame, split across reads: error as soon as the bad
        // byte arrives, even though the frame is incomplete.
        let d = u(true, 1, b"abc\xed\xa0\x80defgh");
        let mut r = MessageReader::new(Role::Client, MAX);
        let mut first = d[..6].to_vec(); // header + "abc\xed"
        assert_eq!(r.read(&mut first).unwrap(), (6, None));
        let mut second = d[6..7].to_vec(); // "\xa0"
        assert_eq!(r.read(&mut second).unwrap_err().code, 1007);
        // Sticky.
        assert_eq!(r.read(&mut []).unwrap_err().code, 1007);
        // Valid multi-byte char split across fragments is fine.
        let mut d = u(false, 1, b"\xe2");
        d.extend(u(false, 0, b"\x82"));
        d.extend(u(true, 0, b"\xac"));
        assert_eq!(ok(Role::Client, &d), vec![Message::Text("€".into())]);
        // Truncated at FIN => 1007.
        let mut d = u(false, 1, b"\xe2");
        d.extend(u(true, 0, b"\x82"));
        assert_eq!(err_code(Role::Client, &d), 1007);
        assert_eq!(err_code(Role::Client, &u(true, 1, b"\xf0\x9f\x98")), 1007);
        // Binary is not validated.
        assert_eq!(
            ok(Role::Client, &u(true, 2, b"\xff\xfe")),
            vec![Message::Binary(vec![0xff, 0xfe])]
        );
        // Validator state does not leak into the next message.
        let mut d = u(true, 1, b"a");
        d.extend(u(true, 1, b"\xc3\xa9"));
        assert_eq!(
            ok(Role::Client, &d),
            vec![Message::Text(b"a".to_vec()), Message::Text("é".into())]
        );
    }

    /// RFC 6455 §5.5.1 / §7.4: close payload parsing.
    #[test]
    fn close_payloads() {
        assert_eq!(
            ok(Role::Client, &u(true, 8, b"")),
            vec![Message::Close(None)]
        );
        let mut p = 1001u16.to_be_bytes().to_vec();
        p.extend_from_slice("bye ☃".as_bytes());
        assert_eq!(
            ok(Role::Server, &m(true, 8, &p)),
            vec![Message::Close(Some(CloseFrame {
                code: 1001,
                reason: "bye ☃".into()
            }))]
        );
        assert_eq!(err_code(Role::Client, &u(true, 8, &[0x03])), 1002);
        for c in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(err_code(Role::Client, &u(true, 8, &c.to_be_bytes())), 1002);
        }
        assert_eq!(
            err_code(Role::Client, &u(true, 8, &[0x03, 0xe8, 0xc0, 0x80])),
            1007
        );
    }

    /// RFC 6455 §5.6 / §5.4: zero-length messages and fragments are valid.
    #[test]
    fn zero_length() {
        assert_eq!(
            ok(Role::Client, &u(true, 1, b"")),
            vec![Message::Text(vec![])]
        );
        assert_eq!(
            ok(Role::Server, &m(true, 2, b"")),
            vec![Message::Binary(vec![])]
        );
        let mut d = u(false, 1, b"");
        d.extend(u(false, 0, b""));
        d.extend(u(true, 9, b""));
        d.extend(u(true, 0, b""));
        assert_eq!(
            ok(Role::Client, &d),
            vec![Message::Ping(vec![]), Message::Text(vec![])]
        );
        // Several complete messages in one buffer come out one per call.
        let mut d = u(true, 2, b"");
        d.extend(u(true, 2, b"x"));
        let mut r = MessageReader::new(Role::Client, MAX);
        assert_eq!(
            r.read(&mut d[..]).unwrap(),
            (2, Some(Message::Binary(vec![])))
        );
        assert_eq!(
            r.read(&mut d[2..]).unwrap(),
            (3, Some(Message::Binary(b"x".to_vec())))
        );
        assert_eq!(r.read(&mut d[5..]).unwrap(), (0, None));
    }

    /// RFC 6455 §5.4: in_message reflects fragmentation and partial frames.
    #[test]
    fn in_message_tracking() {
        let mut r = MessageReader::new(Role::Client, MAX);
        assert!(!r.in_message());
        assert_eq!(r.read(&mut [0x01]).unwrap(), (1, None)); // partial header
        assert!(r.in_message());
        assert_eq!(r.read(&mut [0x01, b'a']).unwrap(), (2, None));
        assert!(r.in_message()); // fragmented message open
        let mut p = u(true, 9, b"");
        assert_eq!(r.read(&mut p).unwrap(), (2, Some(Message::Ping(vec![]))));
        assert!(r.in_message());
        let mut f = u(true, 0, b"bc");
        assert_eq!(r.read(&mut f[..3]).unwrap(), (3, None)); // partial payload
        assert!(r.in_message());
        assert_eq!(
            r.read(&mut f[3..]).unwrap(),
            (1, Some(Message::Text(b"abc".to_vec())))
        );
        assert!(!r.in_message());
        assert_eq!(r.role(), Role::Client);
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Build a random, valid stream of messages for `role` (the role of the
    /// receiver); returns the wire bytes and expected messages.
    fn random_stream(rng: &mut XorShift, role: Role, count: usize) -> (Vec<u8>, Vec<Message>) {
        const CHARS: [&str; 8] = ["a", "Z", " ", "é", "€", "😀", "\u{10ffff}", "\u{0}"];
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        let mask = |rng: &mut XorShift| match role {
            Role::Server => Some((rng.next() as u32).to_ne_bytes()),
            Role::Client => None,
        };
        let control = |rng: &mut XorShift, wire: &mut Vec<u8>, expect: &mut Vec<Message>| {
            let len = rng.below(126) as usize;
            let p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.below(2) == 0 {
                encode_frame(wire, true, 9, mask(rng), &p).unwrap();
                expect.push(Message::Ping(p));
            } else {
                encode_frame(wire, true, 10, mask(rng), &p).unwrap();
                expect.push(Message::Pong(p));
            }
        };
        for _ in 0..count {
            let kind = rng.below(5);
            if kind == 0 {
                control(rng, &mut wire, &mut expect);
                continue;
            }
            let text = kind <= 2;
            let size = match rng.below(10) {
                0 => 0,
                1..=6 => rng.below(40) as usize,
                7 | 8 => rng.below(400) as usize,
                _ => rng.below(70000) as usize,
            };
            let payload: Vec<u8> = if text {
                let mut s = String::new();
                while s.len() < size {
                    s.push_str(CHARS[rng.below(8) as usize]);
                }
                s.into_bytes()
            } else {
                (0..size).map(|_| rng.next() as u8).collect()
            };
            let nfrag = 1 + rng.below(4) as usize;
            let mut cuts: Vec<usize> = (1..nfrag)
                .map(|_| rng.below(payload.len() as u64 + 1) as usize)
                .collect();
            cuts.sort();
            cuts.insert(0, 0);
            cuts.push(payload.len());
            for i in 0..nfrag {
                let op = if i == 0 {
                    if text {
                        1
                    } else {
                        2
                    }
                } else {
                    0
                };
                encode_frame(
                    &mut wire,
                    i + 1 == nfrag,
                    op,
                    mask(rng),
                    &payload[cuts[i]..cuts[i + 1]],
                )
                .unwrap();
                if i + 1 < nfrag && rng.below(3) == 0 {
                    control(rng, &mut wire, &mut expect);
                }
            }
            expect.push(if text {
                Message::Text(payload)
            } else {
                Message::Binary(payload)
            });
        }
        encode_frame(&mut wire, true, 8, mask(rng), &build_close(rng)).unwrap();
        expect.push(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "done".into(),
        })));
        (wire, expect)
    }

    fn build_close(_rng: &mut XorShift) -> Vec<u8> {
        close::build_close_payload(1000, "done")
    }

    /// RFC 6455 §5.4 ("fragments may be split anywhere" by intermediaries and
    /// TCP): random splitting of random streams gives the same result as
    /// whole-buffer decoding and as the expected messages, also when
    /// payloads are received in place.
    #[test]
    fn random_split_property() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..60 {
            let role = if round % 2 == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let (wire, expect) = random_stream(&mut rng, role, 25);
            let whole = decode(role, MAX, &wire);
            assert_eq!(whole, (expect.clone(), None), "round {round}");
            for _ in 0..4 {
                let mut r = MessageReader::new(role, MAX);
                let maxchunk = [1u64, 3, 17, 200, 5000][rng.below(5) as usize];
                let mut seed = XorShift(rng.next() | 1);
                let split = decode_with(&mut r, &wire, &mut || 1 + seed.below(maxchunk) as usize);
                assert_eq!(split, whole, "round {round}");
                assert!(!r.in_message());
                // The same, receiving payloads in place whenever the reader
                // offers room (`payload_room` / `payload_appended`).
                let mut r = MessageReader::new(role, MAX);
                let min = [1usize, 2, 16, 300][rng.below(4) as usize];
                let in_place = decode_in_place(&mut r, &wire, min, &mut || {
                    1 + seed.below(maxchunk) as usize
                });
                assert_eq!(in_place, whole, "round {round}");
                assert!(!r.in_message());
            }
            if round < 6 {
                assert_eq!(decode_bytewise(role, MAX, &wire), whole);
            }
        }
    }

    /// §5.5: control frames are never received in place, and a ping between
    /// two fragments leaves the message in progress intact.
    #[test]
    fn in_place_room_only_inside_data_payloads() {
        let mut r = MessageReader::new(Role::Server, MAX);
        assert_eq!(r.payload_room(1), 0, "no frame yet");
        let big = vec![0x41u8; 1000];
        let first = m(false, frame::OP_TEXT, &big);
        let (hdr, _) = first.split_at(first.len() - big.len());
        assert_eq!(r.read(&mut hdr.to_vec()).unwrap(), (hdr.len(), None));
        assert_eq!(r.payload_room(1), 1000);
        assert_eq!(r.payload_room(1001), 0, "fewer than min bytes to come");
        r.payload_buffer().extend_from_slice(&first[hdr.len()..]);
        assert_eq!(r.payload_appended(1000).unwrap(), None, "not final");
        assert_eq!(r.payload_room(1), 0, "between frames");
        let mut ping = m(true, frame::OP_PING, b"p");
        assert_eq!(r.read(&mut ping[..3]).unwrap(), (3, None));
        assert_eq!(r.payload_room(1), 0, "inside a control frame");
        assert_eq!(
            r.read(&mut ping[3..]).unwrap(),
            (ping.len() - 3, Some(Message::Ping(b"p".to_vec())))
        );
        let mut last = m(true, frame::OP_CONTINUATION, b"!");
        assert_eq!(
            r.read(&mut last).unwrap().1,
            Some(Message::Text([big, b"!".to_vec()].concat()))
        );
    }

    /// RFC 6455 §5 / §8.1: corrupted streams fail identically (same messages
    /// before the failure, same close code) however the input is split, and
    /// whether payloads are received in place or not.
    #[test]
    fn random_corruption_split_invariance() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for round in 0..300 {
            let role = if round % 2 == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let (mut wire, _) = random_stream(&mut rng, role, 6);
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(wire.len() as u64) as usize;
                wire[i] ^= 1 << rng.below(8);
            }
            let max = if round % 3 == 0 { 300 } else { MAX };
            let whole = decode(role, max, &wire);
            let bytewise = decode_bytewise(role, max, &wire);
            assert_eq!(whole, bytewise, "round {round}");
            let mut r = MessageReader::new(role, max);
            let mut seed = XorShift(rng.next() | 1);
            let split = decode_with(&mut r, &wire, &mut || 1 + seed.below(64) as usize);
            assert_eq!(split, whole, "round {round}");
            // Receiving payloads in place fails the same way (e.g. invalid
            // UTF-8, 1007, arriving in an in-place chunk).
            let mut r = MessageReader::new(role, max);
            let in_place = decode_in_place(&mut r, &wire, 1, &mut || 1 + seed.below(64) as usize);
            assert_eq!(in_place, whole, "round {round}");
        }
    }

    // ---- permessage-deflate (RFC 7692) ----

    use crate::proto::deflate::{DeflateConfig, DeflateParams, SendMode};

    fn pmd(role: Role) -> PerMessageDeflate {
        PerMessageDeflate::new(role, &DeflateParams::default(), &DeflateConfig::default())
    }

    fn deflate_reader(max: usize) -> MessageReader {
        let mut r = MessageReader::new(Role::Client, max);
        r.set_deflate(pmd(Role::Client));
        r
    }

    /// Server frames of one message compressed by a server-side compressor:
    /// RSV1 on the first frame only, the payload cut into `parts` fragments.
    fn compressed_frames(tx: &mut PerMessageDeflate, op: u8, data: &[u8], parts: usize) -> Vec<u8> {
        let chunk = data.len().div_ceil(parts).max(1);
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(chunk).collect()
        };
        let mut wire = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let fin = i + 1 == pieces.len();
            let c = tx.compress(piece, fin, SendMode::Auto).unwrap();
            let mut f = u(
                fin,
                if i == 0 { op } else { frame::OP_CONTINUATION },
                &c.payload,
            );
            if c.rsv1 {
                f[0] |= deflate::RSV1_BIT;
            }
            wire.extend(f);
        }
        wire
    }

    #[test]
    fn compressed_messages_whole_fragmented_and_split() {
        let text =
            "{\"id\": 1, \"name\": \"caf\u{e9}\", \"tags\": [\"a\", \"b\", \"c\"]} ".repeat(50);
        let binary: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut tx = pmd(Role::Server);
        let mut wire = compressed_frames(&mut tx, frame::OP_TEXT, text.as_bytes(), 1);
        wire.extend(compressed_frames(&mut tx, frame::OP_BINARY, &binary, 4));
        wire.extend(u(true, frame::OP_PING, b"p"));
        wire.extend(compressed_frames(
            &mut tx,
            frame::OP_TEXT,
            text.as_bytes(),
            3,
        ));
        wire.extend(compressed_frames(&mut tx, frame::OP_TEXT, b"", 1));
        wire.extend(u(true, frame::OP_TEXT, b"plain"));
        let want = vec![
            Message::Text(text.as_bytes().to_vec()),
            Message::Binary(binary.clone()),
            Message::Ping(b"p".to_vec()),
            Message::Text(text.as_bytes().to_vec()),
            Message::Text(Vec::new()),
            Message::Text(b"plain".to_vec()),
        ];
        assert!(wire.len() < text.len(), "compressed: {} bytes", wire.len());
        for sizes in [usize::MAX, 1, 7, 100] {
            let mut r = deflate_reader(MAX);
            assert_eq!(
                decode_with(&mut r, &wire, &mut || sizes),
                (want.clone(), None),
                "chunks of {sizes}"
            );
            let mut r = deflate_reader(MAX);
            assert_eq!(
                decode_in_place(&mut r, &wire, 1, &mut || sizes),
                (want.clone(), None),
                "in place, {sizes}"
            );
        }
    }

    #[test]
    fn compression_failures_close_with_the_rfc_codes() {
        let code = |r: &mut MessageReader, wire: &[u8]| {
            decode_with(r, wire, &mut || usize::MAX).1.map(|v| v.code)
        };
        // RSV1 without the extension negotiated.
        let mut f = u(true, frame::OP_TEXT, b"x");
        f[0] |= deflate::RSV1_BIT;
        assert_eq!(
            code(&mut MessageReader::new(Role::Client, MAX), &f),
            Some(1002)
        );
        // RSV1 on a control frame, on a continuation frame; RSV2.
        let mut ping = u(true, frame::OP_PING, b"");
        ping[0] |= deflate::RSV1_BIT;
        assert_eq!(code(&mut deflate_reader(MAX), &ping), Some(1002));
        let mut tx = pmd(Role::Server);
        let mut two = compressed_frames(&mut tx, frame::OP_BINARY, &[7u8; 300], 2);
        let first_len = 2 + (two[1] & 0x7f) as usize;
        two[first_len] |= deflate::RSV1_BIT;
        assert_eq!(code(&mut deflate_reader(MAX), &two), Some(1002));
        let mut rsv2 = u(true, frame::OP_TEXT, b"x");
        rsv2[0] |= 0x20;
        assert_eq!(code(&mut deflate_reader(MAX), &rsv2), Some(1002));
        // Data that is not DEFLATE: 1007.
        let mut bad = u(true, frame::OP_BINARY, &[0xff, 0xff, 0xff, 0xff]);
        bad[0] |= deflate::RSV1_BIT;
        assert_eq!(code(&mut deflate_reader(MAX), &bad), Some(1007));
        // Compressed text that inflates to invalid UTF-8: 1007.
        let mut tx = pmd(Role::Server);
        let invalid = compressed_frames(
            &mut tx,
            frame::OP_TEXT,
            &[b'a', 0xc3, 0x28, b'b'].repeat(40),
            1,
        );
        assert_eq!(code(&mut deflate_reader(MAX), &invalid), Some(1007));
    }

    /// A small compressed message that inflates past the limit closes with
    /// 1009 without being inflated whole: the reader holds no more than the
    /// limit (and one step of output) however far the data would inflate.
    #[test]
    fn decompression_bomb_stops_at_the_limit() {
        let mut tx = pmd(Role::Server);
        let zeros = vec![0u8; 8 << 20];
        let wire = compressed_frames(&mut tx, frame::OP_BINARY, &zeros, 1);
        assert!(wire.len() < zeros.len() / 50, "{} bytes", wire.len());
        let max = 1 << 20;
        let mut r = deflate_reader(max);
        let (msgs, v) = decode_with(&mut r, &wire, &mut || 4096);
        assert!(msgs.is_empty());
        assert_eq!(v.map(|v| v.code), Some(1009));
        assert!(
            r.inflated.capacity() <= max + 64 * 1024,
            "{}",
            r.inflated.capacity()
        );
        // At the limit exactly, it passes.
        let mut tx = pmd(Role::Server);
        let wire = compressed_frames(&mut tx, frame::OP_BINARY, &zeros[..max], 3);
        let mut r = deflate_reader(max);
        let (msgs, v) = decode_with(&mut r, &wire, &mut || 4096);
        assert_eq!((msgs.len(), v), (1, None));
    }
}
