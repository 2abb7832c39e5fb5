//! Incremental UTF-8 validation for text messages (RFC 6455 §8.1).
//!
//! Messages may be fragmented anywhere, including inside a code point, and
//! the endpoint must fail as soon as the bytes seen so far cannot be a prefix
//! of valid UTF-8 (RFC 3629 §4 syntax: no overlongs, no surrogates, nothing
//! above U+10FFFF).

/// Incremental validator; holds at most one partial code point.
#[derive(Default, Clone, Debug)]
pub struct Utf8Validator {
    /// First byte of the pending sequence (meaningful when `have > 0`).
    lead: u8,
    /// Bytes of the pending sequence seen so far (0 = nothing pending).
    have: u8,
    /// Total length of the pending sequence.
    need: u8,
}

/// Sequence length for a lead byte, or None if it can never start a sequence.
#[inline]
fn seq_len(b: u8) -> Option<u8> {
    match b {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

/// Valid range of the second byte given the lead byte (RFC 3629 §4).
#[inline]
fn second_ok(lead: u8, b: u8) -> bool {
    match lead {
        0xe0 => (0xa0..=0xbf).contains(&b),
        0xed => (0x80..=0x9f).contains(&b),
        0xf0 => (0x90..=0xbf).contains(&b),
        0xf4 => (0x80..=0x8f).contains(&b),
        _ => (0x80..=0xbf).contains(&b),
    }
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Push one byte through the explicit state machine.
    #[inline]
    fn push(&mut self, b: u8) -> Result<(), ()> {
        if self.have == 0 {
            match seq_len(b) {
                Some(1) => Ok(()),
                Some(n) => {
                    self.lead = b;
                    self.have = 1;
                    self.need = n;
                    Ok(())
                }
                None => Err(()),
            }
        } else {
            let ok = if self.have == 1 {
                second_ok(self.lead, b)
            } else {
                (0x80..=0xbf).contains(&b)
            };
            if !ok {
                return Err(());
            }
            self.have += 1;
            if self.have == self.need {
                self.have = 0;
            }
            Ok(())
        }
    }

    /// Feed the next chunk. `Err(())` as soon as the bytes seen so far cannot
    /// be a prefix of valid UTF-8. After an error the state is unspecified;
    /// call [`reset`](Self::reset) before reuse.
    #[allow(clippy::result_unit_err)]
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ()> {
        let mut rest = chunk;
        // Finish a pending code point first.
        while self.have != 0 {
            match rest.split_first() {
                Some((&b, tail)) => {
                    self.push(b)?;
                    rest = tail;
                }
                None => return Ok(()),
            }
        }
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.error_len().is_some() {
                    return Err(());
                }
                // Truncated at the end: keep the tail as pending state,
                // checking it explicitly so impossible prefixes fail now.
                for &b in &rest[e.valid_up_to()..] {
                    self.push(b)?;
                }
                Ok(())
            }
        }
    }

    /// True iff no partial code point is pending.
    pub fn is_complete(&self) -> bool {
        self.have == 0
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Result of feeding `chunks`: Err at the first failing chunk index,
    /// Ok(is_complete) otherwise.
    fn run(chunks: &[&[u8]]) -> Result<bool, usize> {
        let mut v = Utf8Validator::new();
        for (i, c) in chunks.iter().enumerate() {
            if v.feed(c).is_err() {
                return Err(i);
            }
        }
        Ok(v.is_complete())
    }

    /// Longest prefix length that could still be extended to valid UTF-8.
    fn valid_prefix_len(s: &[u8]) -> usize {
        // A prefix p is "extendable" iff from_utf8(p) is Ok or fails with
        // error_len() == None (std checks the first two bytes together).
        let mut best = 0;
        for i in 0..=s.len() {
            match std::str::from_utf8(&s[..i]) {
                Ok(_) => best = i,
                Err(e) if e.error_len().is_none() => best = i,
                Err(_) => break,
            }
        }
        best
    }

    fn cases() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!".to_vec(),
            "κόσμε".as_bytes().to_vec(),
            "\u{0}\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}"
                .as_bytes()
                .to_vec(),
            "\u{d7ff}\u{e000}\u{fffd}".as_bytes().to_vec(),
            // Autobahn 6.x style invalid sequences.
            vec![
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
                0x65, 0x64, 0x69, 0x74, 0x65, 0x64,
            ],
            vec![0xf4, 0x90, 0x80, 0x80], // > U+10FFFF
            vec![0xf4, 0x8f, 0xbf, 0xbf], // U+10FFFF ok
            vec![0xf5, 0x80, 0x80, 0x80],
            vec![0xf8, 0x88, 0x80, 0x80, 0x80],
            vec![0xfc, 0x84, 0x80, 0x80, 0x80, 0x80],
            vec![0xfe],
            vec![0xff],
            vec![0xc0, 0xaf], // overlong '/'
            vec![0xc1, 0xbf],
            vec![0xe0, 0x80, 0xaf],
            vec![0xe0, 0x9f, 0xbf],
            vec![0xf0, 0x80, 0x80, 0xaf],
            vec![0xf0, 0x8f, 0xbf, 0xbf],
            vec![0xed, 0xa0, 0x80],                   // U+D800
            vec![0xed, 0xbf, 0xbf],                   // U+DFFF
            vec![0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80], // surrogate pair
            vec![0xed, 0x9f, 0xbf],                   // U+D7FF ok
            vec![0x80],
            vec![0xbf],
            vec![0x80, 0xbf, 0x80],
            vec![0xc2],             // truncated
            vec![0xe2, 0x82],       // truncated
            vec![0xf0, 0x9f, 0x98], // truncated
            vec![0x41, 0xf0, 0x9f, 0x98, 0x80, 0x42],
            vec![0xc2, 0x41],
            vec![0xe2, 0x41, 0x82],
            vec![0xf0, 0x9f, 0x41, 0x80],
            vec![0xef, 0xbf, 0xbe], // U+FFFE is valid UTF-8
            vec![0xe0, 0xa0, 0x80],
            vec![0xf0, 0x90, 0x80, 0x80],
        ];
        let mut all_pairs = Vec::new();
        for b in [
            0x00u8, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5,
            0xff,
        ] {
            for c in [0x00u8, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0] {
                all_pairs.push(vec![b, c]);
                all_pairs.push(vec![b, c, 0x80]);
                all_pairs.push(vec![b, c, 0x80, 0x80]);
            }
        }
        v.extend(all_pairs);
        v
    }

    /// RFC 6455 §8.1 (+ RFC 3629 §4): every split of every case agrees with
    /// std::str::from_utf8, and failure happens exactly at the chunk holding
    /// the first impossible byte (fail fast).
    #[test]
    fn all_splits_agree_with_std() {
        for s in cases() {
            let whole_ok = std::str::from_utf8(&s).is_ok();
            let fail_at = valid_prefix_len(&s); // index of first bad byte if invalid
            let fails_early = fail_at < s.len();
            // one split point
            for i in 0..=s.len() {
                let r = run(&[&s[..i], &s[i..]]);
                match r {
                    Ok(complete) => {
                        assert!(!fails_early, "{s:x?} split {i}");
                        assert_eq!(complete, whole_ok, "{s:x?} split {i}");
                    }
                    Err(chunk) => {
                        assert!(fails_early, "{s:x?} split {i}");
                        let expect_chunk = if fail_at < i { 0 } else { 1 };
                        assert_eq!(chunk, expect_chunk, "{s:x?} split {i}");
                    }
                }
            }
            // two split points
            for i in 0..=s.len() {
                for j in i..=s.len() {
                    let r = run(&[&s[..i], &s[i..j], &s[j..]]);
                    match r {
                        Ok(c) => assert_eq!(c, whole_ok, "{s:x?} {i} {j}"),
                        Err(_) => assert!(fails_early, "{s:x?} {i} {j}"),
                    }
                }
            }
            // byte at a time: fails exactly at the first bad byte
            let mut v = Utf8Validator::new();
            let mut failed = None;
            for (k, b) in s.iter().enumerate() {
                if v.feed(std::slice::from_ref(b)).is_err() {
                    failed = Some(k);
                    break;
                }
            }
            if fails_early {
                assert_eq!(failed, Some(fail_at), "{s:x?}");
            } else {
                assert_eq!(failed, None);
                assert_eq!(v.is_complete(), whole_ok, "{s:x?}");
            }
        }
    }

    /// RFC 6455 §8.1 fail-fast: impossible 2-byte prefixes fail immediately.
    #[test]
    fn fail_fast_prefixes() {
        for p in [
            &[0xf4u8, 0x90][..],
            &[0xe0, 0x80],
            &[0xed, 0xa0],
            &[0xf0, 0x8f],
            &[0xc0],
            &[0xc1],
            &[0xf5],
            &[0xff],
        ] {
            let mut v = Utf8Validator::new();
            assert!(v.feed(p).is_err(), "{p:x?}");
            let mut v = Utf8Validator::new();
            let r = v.feed(&p[..1]).and_then(|_| v.feed(&p[1..]));
            assert!(r.is_err(), "{p:x?}");
        }
        for p in [
            &[0xf4u8, 0x8f][..],
            &[0xe0, 0xa0],
            &[0xed, 0x9f],
            &[0xf0, 0x90],
        ] {
            let mut v = Utf8Validator::new();
            assert!(v.feed(p).is_ok());
            assert!(!v.is_complete());
        }
    }

    /// RFC 6455 §8.1: reset clears the pending state between messages.
    #[test]
    fn reset_clears() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert!(!v.is_complete());
        v.reset();
        assert!(v.is_complete());
        v.feed(b"abc").unwrap();
        assert!(v.is_complete());
    }

    /// Exhaustive over all 1-3 byte sequences (and 4-byte with a fixed tail):
    /// whole-input validity matches std.
    #[test]
    fn exhaustive_short_sequences() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let s = [a, b];
                let std_ok = std::str::from_utf8(&s).is_ok();
                let mut v = Utf8Validator::new();
                let ours = v.feed(&s).is_ok() && v.is_complete();
                assert_eq!(ours, std_ok, "{s:x?}");
                for c in [0x00u8, 0x80, 0xbf, 0xc0] {
                    let s = [a, b, c];
                    let std_ok = std::str::from_utf8(&s).is_ok();
                    let mut v = Utf8Validator::new();
                    let ours = v.feed(&s[..1]).is_ok()
                        && v.feed(&s[1..2]).is_ok()
                        && v.feed(&s[2..]).is_ok()
                        && v.is_complete();
                    assert_eq!(ours, std_ok, "{s:x?}");
                    let s4 = [a, b, c, 0x80];
                    let std_ok = std::str::from_utf8(&s4).is_ok();
                    let mut v = Utf8Validator::new();
                    let ours = s4.iter().all(|x| v.feed(&[*x]).is_ok()) && v.is_complete();
                    assert_eq!(ours, std_ok, "{s4:x?}");
                }
            }
        }
    }
}
