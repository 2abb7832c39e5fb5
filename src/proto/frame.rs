//! Frame header encoding and decoding (RFC 6455 §5.2).

use crate::proto::close::Violation;
use crate::proto::mask::extend_masked;
use crate::proto::writer::SendError;

pub const OP_CONTINUATION: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// Control frames have the most significant opcode bit set (RFC 6455 §5.5).
pub fn is_control(opcode: u8) -> bool {
    opcode & 0x08 != 0
}

/// The largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// RFC 6455 §5.5: a control frame is never fragmented and carries at most
/// 125 bytes. Data frames pass.
pub fn check_control(fin: bool, opcode: u8, payload_len: u64) -> Result<(), SendError> {
    if is_control(opcode) {
        if !fin {
            return Err(SendError::FragmentedControl);
        }
        if payload_len > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
    }
    Ok(())
}

/// Max header size: 2 + 8 + 4 = 14.
pub const MAX_HEADER_LEN: usize = 14;

/// Header length for a payload length and masking choice.
pub fn header_len(masked: bool, payload_len: u64) -> usize {
    let ext = if payload_len < 126 {
        0
    } else if payload_len <= 0xffff {
        2
    } else {
        8
    };
    2 + ext + if masked { 4 } else { 0 }
}

/// A frame header in a fixed buffer: the bytes and how many are used.
/// Uses the 7/16/64-bit length forms minimally (§5.2); `mask` Some sets the
/// MASK bit and appends the key. A control frame §5.5 forbids (fragmented,
/// or over 125 bytes) is refused, never encoded.
pub fn header(
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> Result<([u8; MAX_HEADER_LEN], usize), SendError> {
    check_control(fin, opcode, payload_len)?;
    let mut h = [0u8; MAX_HEADER_LEN];
    h[0] = if fin { 0x80 } else { 0 } | (opcode & 0x0f);
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = 2;
    if payload_len < 126 {
        h[1] = mbit | payload_len as u8;
    } else if payload_len <= 0xffff {
        h[1] = mbit | 126;
        h[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        n = 4;
    } else {
        h[1] = mbit | 127;
        h[2..10].copy_from_slice(&payload_len.to_be_bytes());
        n = 10;
    }
    if let Some(k) = mask {
        h[n..n + 4].copy_from_slice(&k);
        n += 4;
    }
    Ok((h, n))
}

/// Append a frame header to `out` (see `header`); `out` is unchanged if it
/// is refused.
pub fn encode_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> Result<(), SendError> {
    let (h, n) = header(fin, opcode, mask, payload_len)?;
    out.extend_from_slice(&h[..n]);
    Ok(())
}

/// Append header + payload (masked when `mask` is Some) to `out`; the payload
/// is copied once (masked while copying). A control frame §5.5 forbids is
/// refused and `out` left unchanged.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Result<(), SendError> {
    let (h, n) = header(fin, opcode, mask, payload.len() as u64)?;
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    match mask {
        None => out.extend_from_slice(payload),
        Some(k) => extend_masked(out, payload, k, 0),
    }
    Ok(())
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as a 3-bit value (RSV1 = 0b100).
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// Parse a header from the start of `buf`. `Ok(None)` if more bytes are
/// needed; `Ok(Some((hdr, header_len)))` otherwise.
///
/// Errors if the 64-bit length has its most significant bit set (§5.2).
/// A non-minimal length encoding is accepted.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let total = 2 + ext + if masked { 4 } else { 0 };
    // The 64-bit MSB can be judged as soon as its byte is here.
    if ext == 8 && buf.len() > 2 && buf[2] & 0x80 != 0 {
        return Err(Violation::protocol("64-bit payload length has MSB set"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let payload_len = match ext {
        0 => len7 as u64,
        2 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            u64::from_be_bytes(b)
        }
    };
    let mask = if masked {
        let m = 2 + ext;
        Some([buf[m], buf[m + 1], buf[m + 2], buf[m + 3]])
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0f,
            mask,
            payload_len,
        },
        total,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// RFC 6455 §5.7: single-frame unmasked text "Hello".
    #[test]
    fn rfc_unmasked_hello() {
        let mut v = Vec::new();
        encode_frame(&mut v, true, OP_TEXT, None, b"Hello").unwrap();
        assert_eq!(v, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let (h, n) = parse_header(&v).unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 1,
                mask: None,
                payload_len: 5
            }
        );
    }

    /// RFC 6455 §5.7: single-frame masked text "Hello".
    #[test]
    fn rfc_masked_hello() {
        let mut v = Vec::new();
        encode_frame(&mut v, true, OP_TEXT, Some(KEY), b"Hello").unwrap();
        assert_eq!(
            v,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let (h, n) = parse_header(&v).unwrap().unwrap();
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some(KEY));
        assert_eq!(h.payload_len, 5);
    }

    /// RFC 6455 §5.7: fragmented unmasked text "Hel" + "lo".
    #[test]
    fn rfc_fragmented() {
        let mut v = Vec::new();
        encode_frame(&mut v, false, OP_TEXT, None, b"Hel").unwrap();
        assert_eq!(v, [0x01, 0x03, 0x48, 0x65, 0x6c]);
        v.clear();
        encode_frame(&mut v, true, OP_CONTINUATION, None, b"lo").unwrap();
        assert_eq!(v, [0x80, 0x02, 0x6c, 0x6f]);
        let (h, _) = parse_header(&v).unwrap().unwrap();
        assert!(h.fin);
        assert_eq!(h.opcode, 0);
    }

    /// RFC 6455 §5.7: unmasked ping "Hello" and masked pong "Hello".
    #[test]
    fn rfc_ping_pong() {
        let mut v = Vec::new();
        encode_frame(&mut v, true, OP_PING, None, b"Hello").unwrap();
        assert_eq!(v, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        v.clear();
        encode_frame(&mut v, true, OP_PONG, Some(KEY), b"Hello").unwrap();
        assert_eq!(
            v,
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    /// RFC 6455 §5.7: 256-byte binary uses the 16-bit length form (7E 01 00),
    /// 64 KiB uses the 64-bit form (7F 00..01 00 00).
    #[test]
    fn rfc_length_forms() {
        let mut v = Vec::new();
        encode_header(&mut v, true, OP_BINARY, None, 256).unwrap();
        assert_eq!(v, [0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(parse_header(&v).unwrap().unwrap().0.payload_len, 256);
        v.clear();
        encode_header(&mut v, true, OP_BINARY, None, 65536).unwrap();
        assert_eq!(
            v,
            [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(parse_header(&v).unwrap().unwrap().0.payload_len, 65536);
        // Boundaries of minimal encoding (§5.2).
        for (len, hl) in [
            (0u64, 2usize),
            (125, 2),
            (126, 4),
            (0xffff, 4),
            (0x10000, 10),
            (u64::MAX >> 1, 10),
        ] {
            for mask in [None, Some(KEY)] {
                v.clear();
                encode_header(&mut v, false, OP_BINARY, mask, len).unwrap();
                let extra = if mask.is_some() { 4 } else { 0 };
                assert_eq!(v.len(), hl + extra);
                assert_eq!(header_len(mask.is_some(), len), hl + extra);
                let (h, n) = parse_header(&v).unwrap().unwrap();
                assert_eq!(n, v.len());
                assert_eq!(h.payload_len, len);
                assert_eq!(h.mask, mask);
                assert!(!h.fin);
                // Every strict prefix needs more bytes.
                for i in 0..v.len() {
                    assert_eq!(parse_header(&v[..i]), Ok(None));
                }
            }
        }
    }

    /// RFC 6455 §5.2: "the most significant bit MUST be 0" for the 64-bit length.
    #[test]
    fn msb_length_rejected() {
        let v = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_header(&v).unwrap_err().code, 1002);
        // Detected as soon as that byte arrives.
        assert_eq!(parse_header(&v[..3]).unwrap_err().code, 1002);
    }

    /// RFC 6455 §5.2: non-minimal length encodings are tolerated by the parser.
    #[test]
    fn non_minimal_accepted() {
        let v = [0x82, 0x7e, 0x00, 0x05];
        assert_eq!(parse_header(&v).unwrap().unwrap().0.payload_len, 5);
        let v = [0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0x05];
        assert_eq!(parse_header(&v).unwrap().unwrap().0.payload_len, 5);
    }

    /// RFC 6455 §5.2: RSV bits and opcode are reported verbatim.
    #[test]
    fn rsv_and_opcode_bits() {
        let (h, _) = parse_header(&[0x70 | 0x03, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 7);
        assert_eq!(h.opcode, 3);
        assert!(!h.fin);
        let (h, _) = parse_header(&[0xc2, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 4);
    }

    /// RFC 6455 §5.5: the encoder refuses a control frame over 125 bytes
    /// or fragmented (close, ping, pong and the reserved control opcodes),
    /// leaving the output as it was; 125 bytes and data frames of any size
    /// are encoded.
    #[test]
    fn control_frame_limits_enforced() {
        for op in [OP_CLOSE, OP_PING, OP_PONG, 0x0b, 0x0f] {
            for mask in [None, Some(KEY)] {
                let mut v = b"before".to_vec();
                for len in [126usize, 127, 200, 0xffff, 0x10000] {
                    let big = vec![b'x'; len];
                    assert_eq!(
                        encode_frame(&mut v, true, op, mask, &big),
                        Err(SendError::ControlTooLong),
                        "op {op} len {len}"
                    );
                    assert_eq!(
                        encode_header(&mut v, true, op, mask, len as u64),
                        Err(SendError::ControlTooLong)
                    );
                    assert_eq!(
                        header(true, op, mask, len as u64),
                        Err(SendError::ControlTooLong)
                    );
                }
                assert_eq!(
                    header(true, op, mask, u64::MAX >> 1),
                    Err(SendError::ControlTooLong)
                );
                assert_eq!(
                    encode_frame(&mut v, false, op, mask, b"x"),
                    Err(SendError::FragmentedControl)
                );
                assert_eq!(v, b"before", "refused frames leave the output alone");
                let p = vec![b'y'; 125];
                encode_frame(&mut v, true, op, mask, &p).unwrap();
                let (h, n) = parse_header(&v[6..]).unwrap().unwrap();
                assert_eq!((h.opcode, h.payload_len, h.fin), (op, 125, true));
                assert_eq!(v.len(), 6 + n + 125);
            }
        }
        for op in [OP_CONTINUATION, OP_TEXT, OP_BINARY] {
            let mut v = Vec::new();
            encode_frame(&mut v, false, op, None, &[0u8; 126]).unwrap();
            assert_eq!(v.len(), 4 + 126);
            assert!(header(false, op, Some(KEY), u64::MAX >> 1).is_ok());
        }
    }

    /// RFC 6455 §5.5: opcodes 0x8-0xF are control frames.
    #[test]
    fn control_opcodes() {
        for op in 0..16u8 {
            assert_eq!(is_control(op), op >= 8);
        }
    }
}
