//! Conversion between real UTF-8 (the wire) and Tcl's internal string form.
//! Both Tcl 8.6 and Tcl 9 write NUL as `C0 80`; a character above U+FFFF is
//! a surrogate pair of two 3-byte sequences in 8.6 and itself (4 bytes, as in
//! UTF-8) in 9. Pure functions, no FFI: the form is a parameter, and the
//! build's own (`NATIVE`) is the one of the Tcl whose headers the C shim was
//! compiled against (build.rs sets `cfg(tcl9)` for Tcl 9).

use std::borrow::Cow;

/// Tcl's internal string form: how characters above U+FFFF are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Tcl 8.6: as a surrogate pair (6 bytes).
    Tcl8,
    /// Tcl 9: as themselves (4 bytes).
    Tcl9,
}

/// The form of the Tcl this library is built for.
#[cfg(not(tcl9))]
pub const NATIVE: Form = Form::Tcl8;
/// The form of the Tcl this library is built for.
#[cfg(tcl9)]
pub const NATIVE: Form = Form::Tcl9;

/// A Tcl string held a lone surrogate, which has no UTF-8 form.
#[derive(Debug, PartialEq, Eq)]
pub struct LoneSurrogate;

fn is_plain_ascii(b: &[u8]) -> bool {
    // NUL never occurs in Tcl's form but is special on the wire side.
    b.iter().all(|&c| c != 0 && c < 0x80)
}

/// Bytes Tcl's internal form needs for the valid UTF-8 in `utf8`.
pub fn tcl_len_of_utf8(utf8: &[u8]) -> usize {
    tcl_len_of_utf8_in(NATIVE, utf8)
}

/// Bytes the internal form `form` needs for the valid UTF-8 in `utf8`.
pub fn tcl_len_of_utf8_in(form: Form, utf8: &[u8]) -> usize {
    let mut extra = 0usize;
    for &c in utf8 {
        if c == 0 {
            extra += 1; // 00 -> C0 80
        } else if c >= 0xF0 && form == Form::Tcl8 {
            extra += 2; // 4 bytes -> 6 bytes
        }
    }
    utf8.len() + extra
}

/// Writes the Tcl form of valid UTF-8 `utf8` into `out`, which must be
/// exactly `tcl_len_of_utf8(utf8)` long.
pub fn utf8_to_tcl_into(utf8: &[u8], out: &mut [u8]) {
    utf8_to_tcl_into_in(NATIVE, utf8, out)
}

/// Writes the internal form `form` of valid UTF-8 `utf8` into `out`, which
/// must be exactly `tcl_len_of_utf8_in(form, utf8)` long.
pub fn utf8_to_tcl_into_in(form: Form, utf8: &[u8], out: &mut [u8]) {
    if utf8.len() == out.len() && is_plain_ascii(utf8) {
        out.copy_from_slice(utf8);
        return;
    }
    let mut i = 0;
    let mut o = 0;
    while i < utf8.len() {
        let c = utf8[i];
        if c == 0 {
            out[o] = 0xC0;
            out[o + 1] = 0x80;
            o += 2;
            i += 1;
        } else if c >= 0xF0 && form == Form::Tcl8 {
            let cp = ((c as u32 & 0x07) << 18)
                | ((utf8[i + 1] as u32 & 0x3F) << 12)
                | ((utf8[i + 2] as u32 & 0x3F) << 6)
                | (utf8[i + 3] as u32 & 0x3F);
            let v = cp - 0x10000;
            let hi = 0xD800 + (v >> 10);
            let lo = 0xDC00 + (v & 0x3FF);
            for (k, s) in [hi, lo].into_iter().enumerate() {
                out[o + 3 * k] = 0xE0 | (s >> 12) as u8;
                out[o + 3 * k + 1] = 0x80 | ((s >> 6) & 0x3F) as u8;
                out[o + 3 * k + 2] = 0x80 | (s & 0x3F) as u8;
            }
            o += 6;
            i += 4;
        } else {
            out[o] = c;
            o += 1;
            i += 1;
        }
    }
    debug_assert_eq!(o, out.len());
}

/// The Tcl form of valid UTF-8, as an owned or borrowed buffer.
pub fn utf8_to_tcl(utf8: &[u8]) -> Cow<'_, [u8]> {
    utf8_to_tcl_in(NATIVE, utf8)
}

/// The internal form `form` of valid UTF-8, as an owned or borrowed buffer.
pub fn utf8_to_tcl_in(form: Form, utf8: &[u8]) -> Cow<'_, [u8]> {
    let n = tcl_len_of_utf8_in(form, utf8);
    if n == utf8.len() && is_plain_ascii(utf8) {
        return Cow::Borrowed(utf8);
    }
    let mut out = vec![0u8; n];
    utf8_to_tcl_into_in(form, utf8, &mut out);
    Cow::Owned(out)
}

/// Decodes one sequence of Tcl's form at `b[i..]`: the code unit (a
/// surrogate stays a surrogate) and its byte length. Bytes that are not a
/// well-formed sequence stand for themselves (Latin-1), as Tcl reads them.
fn decode_tcl_unit(b: &[u8], i: usize) -> (u32, usize) {
    let c = b[i];
    let cont = |k: usize| b.get(i + k).copied().filter(|x| x & 0xC0 == 0x80);
    if c < 0x80 {
        (c as u32, 1)
    } else if c & 0xE0 == 0xC0 {
        match cont(1) {
            Some(c1) => (((c as u32 & 0x1F) << 6) | (c1 as u32 & 0x3F), 2),
            None => (c as u32, 1),
        }
    } else if c & 0xF0 == 0xE0 {
        match (cont(1), cont(2)) {
            (Some(c1), Some(c2)) => (
                ((c as u32 & 0x0F) << 12) | ((c1 as u32 & 0x3F) << 6) | (c2 as u32 & 0x3F),
                3,
            ),
            _ => (c as u32, 1),
        }
    } else if c & 0xF8 == 0xF0 {
        match (cont(1), cont(2), cont(3)) {
            (Some(c1), Some(c2), Some(c3)) => (
                ((c as u32 & 0x07) << 18)
                    | ((c1 as u32 & 0x3F) << 12)
                    | ((c2 as u32 & 0x3F) << 6)
                    | (c3 as u32 & 0x3F),
                4,
            ),
            _ => (c as u32, 1),
        }
    } else {
        (c as u32, 1)
    }
}

fn push_char(out: &mut Vec<u8>, cp: u32) {
    let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

/// Real UTF-8 for the bytes of a Tcl string (its internal form, either
/// Tcl's: a 4-byte sequence is read as itself, a surrogate pair is joined).
pub fn tcl_to_utf8(tcl: &[u8]) -> Result<Cow<'_, [u8]>, LoneSurrogate> {
    let first = match tcl.iter().position(|&c| c >= 0x80) {
        None => return Ok(Cow::Borrowed(tcl)),
        Some(p) => p,
    };
    let mut out = Vec::with_capacity(tcl.len());
    out.extend_from_slice(&tcl[..first]);
    let mut i = first;
    while i < tcl.len() {
        let c = tcl[i];
        if c < 0x80 {
            out.push(c);
            i += 1;
            continue;
        }
        let (cp, n) = decode_tcl_unit(tcl, i);
        i += n;
        match cp {
            0xD800..=0xDBFF => {
                if i < tcl.len() {
                    let (lo, m) = decode_tcl_unit(tcl, i);
                    if (0xDC00..=0xDFFF).contains(&lo) {
                        i += m;
                        push_char(&mut out, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
                        continue;
                    }
                }
                return Err(LoneSurrogate);
            }
            0xDC00..=0xDFFF => return Err(LoneSurrogate),
            _ => push_char(&mut out, cp),
        }
    }
    Ok(Cow::Owned(out))
}

/// Like `tcl_to_utf8`, but a lone surrogate becomes U+FFFD (for names, URLs,
/// log text: places where an error would help nobody).
pub fn tcl_to_string_lossy(tcl: &[u8]) -> String {
    match tcl_to_utf8(tcl) {
        Ok(b) => String::from_utf8(b.into_owned())
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Err(LoneSurrogate) => {
            let mut out = Vec::with_capacity(tcl.len());
            let mut i = 0;
            while i < tcl.len() {
                let (cp, n) = decode_tcl_unit(tcl, i);
                i += n;
                push_char(&mut out, cp);
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) {
        for form in [Form::Tcl8, Form::Tcl9] {
            let tcl = utf8_to_tcl_in(form, s.as_bytes()).into_owned();
            assert_eq!(tcl.len(), tcl_len_of_utf8_in(form, s.as_bytes()));
            assert_eq!(tcl_to_utf8(&tcl).unwrap().as_ref(), s.as_bytes(), "{s:?}");
        }
    }

    #[test]
    fn ascii_is_borrowed_both_ways() {
        assert!(matches!(utf8_to_tcl(b"hello"), Cow::Borrowed(_)));
        assert!(matches!(tcl_to_utf8(b"hello"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn nul_becomes_c0_80() {
        for form in [Form::Tcl8, Form::Tcl9] {
            assert_eq!(utf8_to_tcl_in(form, b"a\0b").as_ref(), b"a\xC0\x80b");
        }
        assert_eq!(tcl_to_utf8(b"a\xC0\x80b").unwrap().as_ref(), b"a\0b");
    }

    #[test]
    fn astral_becomes_surrogate_pair_in_tcl8() {
        // U+1F600 -> D83D DE00
        assert_eq!(
            utf8_to_tcl_in(Form::Tcl8, "\u{1F600}".as_bytes()).as_ref(),
            b"\xED\xA0\xBD\xED\xB8\x80"
        );
        assert_eq!(
            tcl_to_utf8(b"\xED\xA0\xBD\xED\xB8\x80").unwrap().as_ref(),
            "\u{1F600}".as_bytes()
        );
    }

    #[test]
    fn astral_stays_itself_in_tcl9() {
        let s = "x\u{1F600}\0\u{10FFFF}";
        assert_eq!(
            utf8_to_tcl_in(Form::Tcl9, s.as_bytes()).as_ref(),
            b"x\xF0\x9F\x98\x80\xC0\x80\xF4\x8F\xBF\xBF"
        );
        assert_eq!(tcl_len_of_utf8_in(Form::Tcl9, s.as_bytes()), s.len() + 1);
    }

    #[test]
    fn raw_four_byte_sequences_pass_through() {
        assert_eq!(
            tcl_to_utf8("x\u{10FFFF}".as_bytes()).unwrap().as_ref(),
            "x\u{10FFFF}".as_bytes()
        );
    }

    #[test]
    fn lone_surrogates_are_refused() {
        assert_eq!(tcl_to_utf8(b"\xED\xA0\xBD"), Err(LoneSurrogate));
        assert_eq!(tcl_to_utf8(b"\xED\xB8\x80x"), Err(LoneSurrogate));
        assert_eq!(tcl_to_string_lossy(b"a\xED\xA0\xBD"), "a\u{FFFD}");
    }

    #[test]
    fn stray_bytes_read_as_latin1() {
        assert_eq!(
            tcl_to_utf8(b"\xE9t\xE9").unwrap().as_ref(),
            "été".as_bytes()
        );
    }

    #[test]
    fn roundtrips() {
        for s in [
            "",
            "a",
            "é",
            "€uro",
            "\u{FFFF}",
            "\u{10000}",
            "\0\0",
            "мир 🌍 \0 x",
            "🎉🎉",
        ] {
            roundtrip(s);
        }
    }
}
