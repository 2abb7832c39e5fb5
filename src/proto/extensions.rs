//! `Sec-WebSocket-Extensions` header values (RFC 6455 §9.1), parsed and
//! formatted. What an extension's parameters mean is for the extension
//! (see [`crate::proto::deflate`]); this module knows only the grammar:
//!
//! ```text
//! extension-list  = 1#extension
//! extension       = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! with RFC 7230 list rules: elements separated by commas, empty elements
//! ignored, optional whitespace (SP / HTAB) around the separators, and
//! several header lines read as one list joined with commas. Whitespace is
//! also allowed around `;` and `=` (as servers and clients send it). A
//! quoted-string value is unescaped and must then be a token (§9.1).
//! Extension and parameter names are kept as sent; compare them with
//! [`eq_ignore_ascii_case`](str::eq_ignore_ascii_case).

use crate::proto::handshake::{header_values, is_token};

/// One extension of a list: its name and parameters, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub params: Vec<Param>,
}

/// An extension parameter: `name` or `name=value` (the value unquoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn flag(name: &str) -> Self {
        Param {
            name: name.to_owned(),
            value: None,
        }
    }

    pub fn with_value(name: &str, value: impl Into<String>) -> Self {
        Param {
            name: name.to_owned(),
            value: Some(value.into()),
        }
    }
}

/// What is wrong with a header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// An extension or parameter name (a token) was expected.
    ExpectedName,
    /// A parameter value (a token or a quoted-string) was expected.
    ExpectedValue,
    /// A quoted-string without its closing quote.
    UnterminatedQuote,
    /// A quoted-string that is not a token once unescaped (§9.1), or holds
    /// a character a quoted-string may not.
    BadQuotedValue,
    /// Something other than `;`, `,` or the end after an item.
    UnexpectedChar,
}

/// A header value that does not follow the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// Byte offset in the header value (the line) where the error is.
    pub offset: usize,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            ParseErrorKind::ExpectedName => "expected an extension or parameter name",
            ParseErrorKind::ExpectedValue => "expected a parameter value",
            ParseErrorKind::UnterminatedQuote => "unterminated quoted string",
            ParseErrorKind::BadQuotedValue => "quoted value is not a token",
            ParseErrorKind::UnexpectedChar => "unexpected character",
        };
        write!(
            f,
            "Invalid Sec-WebSocket-Extensions header: {what} at offset {}",
            self.offset
        )
    }
}

impl std::error::Error for ParseError {}

/// RFC 7230 §3.2.6 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn err(&self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            kind,
            offset: self.pos,
        }
    }

    /// A token, or None (nothing consumed) if there is none here.
    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        // tchars are ASCII, so this slice is valid UTF-8 on char bounds.
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()
            .filter(|t| !t.is_empty())
    }

    /// A quoted-string at the cursor (which is on the opening quote),
    /// unescaped.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut v = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ParseError {
                        kind: ParseErrorKind::UnterminatedQuote,
                        offset: open,
                    })
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                        Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                            v.push(c);
                            self.pos += 1;
                        }
                        None => {
                            return Err(ParseError {
                                kind: ParseErrorKind::UnterminatedQuote,
                                offset: open,
                            })
                        }
                        Some(_) => return Err(self.err(ParseErrorKind::BadQuotedValue)),
                    }
                }
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                    v.push(c);
                    self.pos += 1;
                }
                Some(_) => return Err(self.err(ParseErrorKind::BadQuotedValue)),
            }
        }
        match String::from_utf8(v) {
            Ok(s) if is_token(&s) => Ok(s),
            _ => Err(ParseError {
                kind: ParseErrorKind::BadQuotedValue,
                offset: open,
            }),
        }
    }
}

/// Parse one header value (one line) and append its extensions to `out`.
fn parse_into(value: &str, out: &mut Vec<Extension>) -> Result<(), ParseError> {
    let mut c = Cursor {
        s: value.as_bytes(),
        pos: 0,
    };
    loop {
        c.skip_ows();
        match c.peek() {
            None => return Ok(()),
            // Empty list element (RFC 7230 §7).
            Some(b',') => {
                c.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = c
            .token()
            .ok_or_else(|| c.err(ParseErrorKind::ExpectedName))?;
        let mut ext = Extension {
            name: name.to_owned(),
            params: Vec::new(),
        };
        loop {
            c.skip_ows();
            match c.peek() {
                None => break,
                Some(b',') => {
                    c.pos += 1;
                    break;
                }
                Some(b';') => {
                    c.pos += 1;
                    c.skip_ows();
                }
                Some(_) => return Err(c.err(ParseErrorKind::UnexpectedChar)),
            }
            let pname = c
                .token()
                .ok_or_else(|| c.err(ParseErrorKind::ExpectedName))?;
            let save = c.pos;
            c.skip_ows();
            let value = if c.peek() == Some(b'=') {
                c.pos += 1;
                c.skip_ows();
                Some(match c.peek() {
                    Some(b'"') => c.quoted()?,
                    _ => c
                        .token()
                        .ok_or_else(|| c.err(ParseErrorKind::ExpectedValue))?
                        .to_owned(),
                })
            } else {
                c.pos = save;
                None
            };
            ext.params.push(Param {
                name: pname.to_owned(),
                value,
            });
        }
        out.push(ext);
    }
}

/// Parse header values (each one line of `Sec-WebSocket-Extensions`, in
/// order) into one list of extensions. An empty list (no lines, or only
/// empty elements) is `Ok(vec![])`.
pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Extension>, ParseError> {
    let mut out = Vec::new();
    for v in values {
        parse_into(v, &mut out)?;
    }
    Ok(out)
}

/// Parse every `Sec-WebSocket-Extensions` line of a request or response.
pub fn parse_headers(headers: &[(String, String)]) -> Result<Vec<Extension>, ParseError> {
    parse(header_values(headers, "Sec-WebSocket-Extensions"))
}

impl std::fmt::Display for Extension {
    /// The header form: `name; p1; p2=v`. Values that are not tokens are
    /// written as quoted-strings (never produced by this crate's own
    /// negotiation, which only uses token values).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        for p in &self.params {
            write!(f, "; {}", p.name)?;
            if let Some(v) = &p.value {
                if is_token(v) {
                    write!(f, "={v}")?;
                } else {
                    f.write_str("=\"")?;
                    for ch in v.chars() {
                        if ch == '"' || ch == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{ch}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// A list of extensions as one header value (`a; x=1, b`).
pub fn format_list(exts: &[Extension]) -> String {
    exts.iter()
        .map(Extension::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> Extension {
        Extension {
            name: name.into(),
            params: params
                .iter()
                .map(|(n, v)| Param {
                    name: (*n).into(),
                    value: v.map(str::to_owned),
                })
                .collect(),
        }
    }

    fn p1(v: &str) -> Result<Vec<Extension>, ParseError> {
        parse([v])
    }

    fn kind(v: &str) -> ParseErrorKind {
        p1(v).unwrap_err().kind
    }

    /// RFC 6455 §9.1: token, `;` parameters with and without values.
    #[test]
    fn basic_forms() {
        assert_eq!(p1("foo").unwrap(), vec![ext("foo", &[])]);
        assert_eq!(
            p1("permessage-deflate; client_max_window_bits").unwrap(),
            vec![ext(
                "permessage-deflate",
                &[("client_max_window_bits", None)]
            )]
        );
        assert_eq!(
            p1("permessage-deflate;server_max_window_bits=10;client_no_context_takeover").unwrap(),
            vec![ext(
                "permessage-deflate",
                &[
                    ("server_max_window_bits", Some("10")),
                    ("client_no_context_takeover", None)
                ]
            )]
        );
    }

    /// RFC 7692 §5 example: several offers (alternatives) in one line.
    #[test]
    fn several_offers() {
        let v = "permessage-deflate; client_max_window_bits=10, permessage-deflate, x-webkit-deflate-frame";
        assert_eq!(
            p1(v).unwrap(),
            vec![
                ext(
                    "permessage-deflate",
                    &[("client_max_window_bits", Some("10"))]
                ),
                ext("permessage-deflate", &[]),
                ext("x-webkit-deflate-frame", &[]),
            ]
        );
    }

    /// RFC 7230 §3.2.2: several header lines are one comma list; §7: empty
    /// elements and OWS are tolerated.
    #[test]
    fn lines_empty_elements_and_whitespace() {
        assert_eq!(
            parse([" a ;\tx = 1 ,, ", "", ",b;y", " , "]).unwrap(),
            vec![ext("a", &[("x", Some("1"))]), ext("b", &[("y", None)])]
        );
        assert_eq!(parse([] as [&str; 0]).unwrap(), vec![]);
        assert_eq!(p1(" , ,\t").unwrap(), vec![]);
        let h = vec![
            ("Sec-WebSocket-Extensions".to_string(), "a".to_string()),
            ("Host".to_string(), "b".to_string()),
            ("sec-websocket-extensions".to_string(), "c; d=e".to_string()),
        ];
        assert_eq!(
            parse_headers(&h).unwrap(),
            vec![ext("a", &[]), ext("c", &[("d", Some("e"))])]
        );
    }

    /// RFC 6455 §9.1: a quoted-string value must be a token once unescaped;
    /// commas and semicolons inside quotes do not split.
    #[test]
    fn quoted_values() {
        assert_eq!(
            p1("a; x=\"10\"; y=\"a\\bc\"").unwrap(),
            vec![ext("a", &[("x", Some("10")), ("y", Some("abc"))])]
        );
        assert_eq!(kind("a; x=\"1,0\""), ParseErrorKind::BadQuotedValue);
        assert_eq!(kind("a; x=\"1;0\""), ParseErrorKind::BadQuotedValue);
        assert_eq!(kind("a; x=\"\""), ParseErrorKind::BadQuotedValue);
        assert_eq!(kind("a; x=\"a b\""), ParseErrorKind::BadQuotedValue);
        assert_eq!(kind("a; x=\"é\""), ParseErrorKind::BadQuotedValue);
        assert_eq!(kind("a; x=\"\x01\""), ParseErrorKind::BadQuotedValue);
        assert_eq!(kind("a; x=\"abc"), ParseErrorKind::UnterminatedQuote);
        assert_eq!(kind("a; x=\"abc\\"), ParseErrorKind::UnterminatedQuote);
        assert_eq!(
            p1("a; x=\"abc"),
            Err(ParseError {
                kind: ParseErrorKind::UnterminatedQuote,
                offset: 5
            })
        );
    }

    #[test]
    fn syntax_errors() {
        for (v, k) in [
            (";a", ParseErrorKind::ExpectedName),
            ("a;", ParseErrorKind::ExpectedName),
            ("a; ;b", ParseErrorKind::ExpectedName),
            ("a;=1", ParseErrorKind::ExpectedName),
            ("a; x=", ParseErrorKind::ExpectedValue),
            ("a; x=,", ParseErrorKind::ExpectedValue),
            ("a; x==1", ParseErrorKind::ExpectedValue),
            ("a b", ParseErrorKind::UnexpectedChar),
            ("a; x=1 2", ParseErrorKind::UnexpectedChar),
            ("a; x=1\"", ParseErrorKind::UnexpectedChar),
            ("a/b", ParseErrorKind::UnexpectedChar),
            ("\"a\"", ParseErrorKind::ExpectedName),
            ("é", ParseErrorKind::ExpectedName),
        ] {
            assert_eq!(kind(v), k, "{v:?}");
        }
        assert_eq!(
            p1("a; x=1 2").unwrap_err().to_string(),
            "Invalid Sec-WebSocket-Extensions header: unexpected character at offset 7"
        );
        // An error in a later line fails the whole list.
        assert!(parse(["a", "b c"]).is_err());
    }

    #[test]
    fn format_round_trip() {
        let list = vec![
            ext("permessage-deflate", &[("client_max_window_bits", None)]),
            ext(
                "x",
                &[
                    ("a", Some("1")),
                    ("b", Some("two words")),
                    ("c", Some("q\"\\")),
                ],
            ),
        ];
        let s = format_list(&list);
        assert_eq!(
            s,
            "permessage-deflate; client_max_window_bits, x; a=1; b=\"two words\"; c=\"q\\\"\\\\\""
        );
        // Non-token values cannot come back (§9.1), tokens do.
        assert_eq!(p1(&format_list(&list[..1])).unwrap(), list[..1].to_vec());
        assert_eq!(
            Param::flag("a"),
            Param {
                name: "a".into(),
                value: None
            }
        );
        assert_eq!(Param::with_value("a", "1").value.as_deref(), Some("1"));
    }
}
