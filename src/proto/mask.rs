//! Payload masking (RFC 6455 §5.3) and a strong source of mask keys.

/// The key rotated so that index 0 applies to payload position `offset`.
#[inline]
fn rotated(key: [u8; 4], offset: usize) -> [u8; 4] {
    let r = offset & 3;
    [key[r], key[(r + 1) & 3], key[(r + 2) & 3], key[(r + 3) & 3]]
}

#[inline]
fn word(k: [u8; 4]) -> u64 {
    u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]])
}

/// Bytes handled per step: four words, which the compiler turns into vector
/// instructions (plain 8-byte steps stay scalar, about one instruction a byte).
const BLOCK: usize = 32;

#[inline(always)]
fn xor_block(block: &mut [u8], w: u64) {
    for word in block.chunks_exact_mut(8) {
        let v = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]) ^ w;
        word.copy_from_slice(&v.to_ne_bytes());
    }
}

/// XOR `data` with `key`, where `data[0]` is at position `offset` of the
/// payload (so streaming chunks can be unmasked independently).
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let k = rotated(key, offset);
    let w = word(k);
    let mut blocks = data.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        xor_block(block, w);
    }
    // Full blocks are a multiple of 4 bytes long, so the rotation holds.
    let tail = blocks.into_remainder();
    let mut words = tail.chunks_exact_mut(8);
    for word in &mut words {
        xor_block(word, w);
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// Appends `src`, masked with `key` from payload position `offset`, to `dst`:
/// one copy, then the XOR in place (no zero-filling first).
pub fn extend_masked(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4], offset: usize) {
    let start = dst.len();
    dst.extend_from_slice(src);
    apply_mask(&mut dst[start..], key, offset);
}

/// Like [`apply_mask`] but copies `src` masked into `dst`.
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn mask_into(dst: &mut [u8], src: &[u8], key: [u8; 4], offset: usize) {
    assert_eq!(dst.len(), src.len(), "mask_into: length mismatch");
    dst.copy_from_slice(src);
    apply_mask(dst, key, offset);
}

const POOL: usize = 4096;

/// A cryptographically strong mask-key source (RFC 6455 §5.3 requires the
/// key to be unpredictable). Keeps a 4096-byte buffer filled from the OS and
/// hands out bytes from it, refilling when exhausted.
pub struct MaskKeys {
    buf: Box<[u8; POOL]>,
    pos: usize,
}

impl std::fmt::Debug for MaskKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskKeys").finish_non_exhaustive()
    }
}

impl Default for MaskKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl MaskKeys {
    /// A new, empty pool; it is filled lazily on first use.
    pub fn new() -> Self {
        MaskKeys {
            buf: Box::new([0u8; POOL]),
            pos: POOL,
        }
    }

    /// Four fresh random bytes.
    pub fn next_key(&mut self) -> [u8; 4] {
        let mut k = [0u8; 4];
        self.fill(&mut k);
        k
    }

    /// Fill `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == POOL {
                os_random(&mut self.buf[..]);
                self.pos = 0;
            }
            let n = (out.len() - done).min(POOL - self.pos);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            // Never hand out the same bytes twice.
            self.buf[self.pos..self.pos + n].fill(0);
            self.pos += n;
            done += n;
        }
    }
}

/// Fill `buf` from the OS (the `getrandom` crate: getrandom(2), else
/// /dev/urandom), and as a last resort std's randomly keyed SipHash (itself
/// seeded from the OS).
fn os_random(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_ok() {
        return;
    }
    if urandom_fill(buf) {
        return;
    }
    hash_fill(buf);
}

fn urandom_fill(buf: &mut [u8]) -> bool {
    use std::io::Read;
    match std::fs::File::open("/dev/urandom") {
        Ok(mut f) => f.read_exact(buf).is_ok(),
        Err(_) => false,
    }
}

fn hash_fill(buf: &mut [u8]) {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let state = RandomState::new();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_u128(t);
        h.write_usize(i);
        let v = h.finish().to_ne_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8], key: [u8; 4], offset: usize) -> Vec<u8> {
        data.iter()
            .enumerate()
            .map(|(i, b)| b ^ key[(offset + i) % 4])
            .collect()
    }

    /// RFC 6455 §5.3: octet i of the transformed data is original-octet-i XOR
    /// masking-key-octet-(i MOD 4). Every offset/length 0..40 against a naive loop.
    #[test]
    fn apply_mask_matches_naive_all_offsets_lengths() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for offset in 0..40 {
                let mut d = src.clone();
                apply_mask(&mut d, key, offset);
                assert_eq!(d, naive(&src, key, offset), "len {len} off {offset}");
                let mut dst = vec![0u8; len];
                mask_into(&mut dst, &src, key, offset);
                assert_eq!(dst, naive(&src, key, offset), "into len {len} off {offset}");
            }
        }
    }

    /// RFC 6455 §5.3: masking is an involution; chunked unmasking with running
    /// offsets equals unmasking the whole payload.
    #[test]
    fn chunked_unmask_equals_whole() {
        let key = [1, 2, 3, 0xff];
        let src: Vec<u8> = (0..1000u32).map(|i| (i * 31) as u8).collect();
        let mut whole = src.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = src.clone();
        let mut off = 0;
        for n in [1usize, 3, 8, 13, 64, 100, 811] {
            apply_mask(&mut pieces[off..off + n], key, off);
            off += n;
        }
        assert_eq!(off, 1000);
        assert_eq!(whole, pieces);
        apply_mask(&mut whole, key, 0);
        assert_eq!(whole, src);
    }

    /// RFC 6455 §5.7: masked "Hello" with key 37 fa 21 3d.
    #[test]
    fn rfc_hello_mask() {
        let mut d = b"Hello".to_vec();
        apply_mask(&mut d, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(d, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    /// RFC 6455 §5.3 / §10.3: keys must come from a strong source; sanity
    /// check that keys vary and refilling across the pool boundary works.
    #[test]
    fn mask_keys_vary_and_refill() {
        let mut mk = MaskKeys::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            seen.insert(mk.next_key());
        }
        // 3000 keys * 4 bytes crosses the 4096-byte pool at least twice.
        assert!(seen.len() > 2990);
        let mut big = vec![0u8; 10000];
        mk.fill(&mut big);
        assert!(big.iter().filter(|&&b| b == 0).count() < 200);
        let mut empty: [u8; 0] = [];
        mk.fill(&mut empty);
    }

    #[test]
    fn fallbacks_produce_data() {
        let mut b = [0u8; 64];
        hash_fill(&mut b);
        assert!(b.iter().any(|&x| x != 0));
        let mut c = [0u8; 64];
        if urandom_fill(&mut c) {
            assert!(c.iter().any(|&x| x != 0));
        }
    }
}
