//! Tests only: a small DEFLATE decoder (RFC 1951) of our own, independent
//! of zlib-rs, that also reports the farthest distance a stream reaches
//! back. It checks that what we send fits the window we announced (zlib-rs
//! does not police that on the receiving side), and decodes what zlib-rs
//! produces as a second opinion.

/// What a stream decoded to.
#[derive(Debug, Default)]
pub struct Decoded {
    pub out: Vec<u8>,
    /// The largest back-reference distance used (0 if none).
    pub max_distance: usize,
}

struct Bits<'a> {
    data: &'a [u8],
    /// Bit position.
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, &'static str> {
        let byte = *self.data.get(self.pos / 8).ok_or("unexpected end")?;
        let b = (byte >> (self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Result<u32, &'static str> {
        let mut v = 0;
        for i in 0..n {
            v |= self.bit()? << i;
        }
        Ok(v)
    }
}

/// Canonical Huffman code: counts per length and symbols in code order.
struct Huffman {
    count: [u16; 16],
    symbol: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut count = [0u16; 16];
        for &l in lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut offs = [0u16; 16];
        for len in 1..15 {
            offs[len + 1] = offs[len] + count[len];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[offs[l as usize] as usize] = s as u16;
                offs[l as usize] += 1;
            }
        }
        Huffman { count, symbol }
    }

    fn decode(&self, b: &mut Bits) -> Result<u16, &'static str> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= b.bit()? as i32;
            let count = self.count[len] as i32;
            if code - first < count {
                return Ok(self.symbol[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("bad code")
    }
}

const LBASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEXT: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DBASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DEXT: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

fn codes(b: &mut Bits, lit: &Huffman, dist: &Huffman, d: &mut Decoded) -> Result<(), &'static str> {
    loop {
        let sym = lit.decode(b)? as usize;
        if sym < 256 {
            d.out.push(sym as u8);
        } else if sym == 256 {
            return Ok(());
        } else {
            let i = sym - 257;
            if i >= 29 {
                return Err("bad length symbol");
            }
            let len = LBASE[i] as usize + b.bits(u32::from(LEXT[i]))? as usize;
            let ds = dist.decode(b)? as usize;
            if ds >= 30 {
                return Err("bad distance symbol");
            }
            let distance = DBASE[ds] as usize + b.bits(u32::from(DEXT[ds]))? as usize;
            if distance > d.out.len() {
                return Err("distance too far back");
            }
            d.max_distance = d.max_distance.max(distance);
            for _ in 0..len {
                let c = d.out[d.out.len() - distance];
                d.out.push(c);
            }
        }
    }
}

/// Decode raw DEFLATE blocks until the input ends at a block boundary (as
/// a message with the trailer appended does) or a final block ends.
/// `history` is earlier output the stream may refer back to (context
/// takeover); it is not part of `out`.
pub fn inflate_raw(history: &[u8], data: &[u8]) -> Result<Decoded, &'static str> {
    let mut d = Decoded {
        out: history.to_vec(),
        max_distance: 0,
    };
    let mut b = Bits { data, pos: 0 };
    loop {
        if b.pos == data.len() * 8 {
            break;
        }
        let last = b.bit()? == 1;
        match b.bits(2)? {
            0 => {
                b.pos = b.pos.div_ceil(8) * 8;
                let len = b.bits(16)?;
                let nlen = b.bits(16)?;
                if len != !nlen & 0xffff {
                    return Err("stored length mismatch");
                }
                for _ in 0..len {
                    d.out.push(b.bits(8)? as u8);
                }
            }
            1 => {
                let mut l = [8u8; 288];
                l[144..256].fill(9);
                l[256..280].fill(7);
                codes(&mut b, &Huffman::new(&l), &Huffman::new(&[5; 30]), &mut d)?;
            }
            2 => {
                let nlen = b.bits(5)? as usize + 257;
                let ndist = b.bits(5)? as usize + 1;
                let ncode = b.bits(4)? as usize + 4;
                const ORDER: [usize; 19] = [
                    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                ];
                let mut cl = [0u8; 19];
                for &o in &ORDER[..ncode] {
                    cl[o] = b.bits(3)? as u8;
                }
                let clh = Huffman::new(&cl);
                let mut lengths = Vec::with_capacity(nlen + ndist);
                while lengths.len() < nlen + ndist {
                    let sym = clh.decode(&mut b)?;
                    let (v, n) = match sym {
                        0..=15 => (sym as u8, 1),
                        16 => (
                            *lengths.last().ok_or("repeat with no length")?,
                            3 + b.bits(2)?,
                        ),
                        17 => (0, 3 + b.bits(3)?),
                        _ => (0, 11 + b.bits(7)?),
                    };
                    for _ in 0..n {
                        lengths.push(v);
                    }
                }
                if lengths.len() > nlen + ndist {
                    return Err("too many lengths");
                }
                let lit = Huffman::new(&lengths[..nlen]);
                let dist = Huffman::new(&lengths[nlen..]);
                codes(&mut b, &lit, &dist, &mut d)?;
            }
            _ => return Err("bad block type"),
        }
        if last {
            break;
        }
    }
    d.out.drain(..history.len());
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7692 §7.2.3.1-§7.2.3.3 examples decode to "Hello".
    #[test]
    fn rfc_examples() {
        let mut hello = vec![0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        hello.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        assert_eq!(inflate_raw(&[], &hello).unwrap().out, b"Hello");
        // §7.2.3.2: the second "Hello" refers back to the first.
        let second = [0xf2, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff];
        let d = inflate_raw(b"Hello", &second).unwrap();
        assert_eq!((d.out.as_slice(), d.max_distance), (&b"Hello"[..], 5));
        // §7.2.3.3: a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00, 0x00, 0x00, 0xff,
            0xff,
        ];
        assert_eq!(inflate_raw(&[], &stored).unwrap().out, b"Hello");
        assert_eq!(
            inflate_raw(b"x", &second).unwrap_err(),
            "distance too far back"
        );
    }
}
