//! Opening handshake (RFC 6455 §4) with RFC 7230 header syntax.

use crate::proto::deflate::{negotiate, DeflateConfig, DeflateParams};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::proto::mask::MaskKeys;

/// RFC 6455 §1.3 magic GUID.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// base64(sha1(key + GUID)) (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    STANDARD.encode(h.finalize())
}

/// base64 of 16 random bytes (24 chars) (RFC 6455 §4.1).
pub fn generate_key(keys: &mut MaskKeys) -> String {
    let mut nonce = [0u8; 16];
    keys.fill(&mut nonce);
    STANDARD.encode(nonce)
}

/// A handshake failure: `kinds` become `-errorcode {WEBSOCKET ...kinds}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeError {
    pub kinds: Vec<&'static str>,
    pub message: String,
}

impl HandshakeError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        HandshakeError {
            kinds: vec!["HANDSHAKE", kind],
            message: message.into(),
        }
    }
    fn http(message: impl Into<String>) -> Self {
        Self::new("HTTP", message)
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandshakeError {}

pub const MAX_HEAD_BYTES: usize = 16384;
pub const MAX_HEADERS: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

/// RFC 7230 §3.2.6 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 7230 token (1*tchar) check.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn bytes_to_string(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        // obs-text that is not UTF-8: treat as ISO-8859-1, like Tcl's http.
        Err(_) => b.iter().map(|&c| c as char).collect(),
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_ows(*first) {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if is_ows(*last) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Lines of a head (without terminators) and the head's total length.
type HeadLines<'a> = (Vec<&'a [u8]>, usize);

/// Split the head into lines (without line terminators), up to and
/// excluding the empty line. Returns None if the head is incomplete.
fn split_head(buf: &[u8]) -> Result<Option<HeadLines<'_>>, HandshakeError> {
    let limit = buf.len().min(MAX_HEAD_BYTES);
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        let nl = match buf[pos..limit].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i,
            None => {
                if buf.len() >= MAX_HEAD_BYTES {
                    return Err(HandshakeError::http("HTTP header too large"));
                }
                return Ok(None);
            }
        };
        let mut line = &buf[pos..nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.contains(&b'\r') {
            return Err(HandshakeError::http("Invalid HTTP header: bare CR"));
        }
        pos = nl + 1;
        if line.is_empty() {
            if lines.is_empty() {
                return Err(HandshakeError::http("Invalid HTTP start line"));
            }
            return Ok(Some((lines, pos)));
        }
        if lines.len() > MAX_HEADERS {
            return Err(HandshakeError::http("Too many HTTP headers"));
        }
        lines.push(line);
    }
}

fn parse_header_lines(lines: &[&[u8]]) -> Result<Vec<(String, String)>, HandshakeError> {
    let mut headers = Vec::with_capacity(lines.len());
    for line in lines {
        if is_ows(line[0]) {
            return Err(HandshakeError::http(
                "Invalid HTTP header: obsolete line folding",
            ));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| HandshakeError::http("Invalid HTTP header line"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HandshakeError::http("Invalid HTTP header name"));
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HandshakeError::http("Invalid HTTP header value"));
        }
        headers.push((bytes_to_string(name), bytes_to_string(value)));
    }
    Ok(headers)
}

fn valid_http_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Parse an HTTP/1.1 request head from the start of `buf` (RFC 7230 §3).
/// `Ok(None)` = need more bytes; `Ok(Some((req, head_len)))` where
/// `head_len` includes the blank line. CRLF and bare LF line ends accepted.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
    let (lines, len) = match split_head(buf)? {
        Some(x) => x,
        None => return Ok(None),
    };
    let parts: Vec<&[u8]> = lines[0].split(|&b| b == b' ').collect();
    let bad = || HandshakeError::http("Invalid HTTP request line");
    if parts.len() != 3 {
        return Err(bad());
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad());
    }
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Err(bad());
    }
    if !valid_http_version(version) {
        return Err(bad());
    }
    let headers = parse_header_lines(&lines[1..])?;
    Ok(Some((
        Request {
            method: bytes_to_string(method),
            target: bytes_to_string(target),
            version: bytes_to_string(version),
            headers,
        },
        len,
    )))
}

/// Parse an HTTP/1.1 response head ("HTTP/1.1 101 Switching Protocols").
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, HandshakeError> {
    let (lines, len) = match split_head(buf)? {
        Some(x) => x,
        None => return Ok(None),
    };
    let line = lines[0];
    let bad = || HandshakeError::http("Invalid HTTP status line");
    let mut it = line.splitn(3, |&b| b == b' ');
    let version = it.next().unwrap_or(&[]);
    let code = it.next().unwrap_or(&[]);
    let reason = it.next().unwrap_or(&[]);
    if !valid_http_version(version) || code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if reason
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(bad());
    }
    let status = code.iter().fold(0u16, |a, &d| a * 10 + (d - b'0') as u16);
    let headers = parse_header_lines(&lines[1..])?;
    Ok(Some((
        Response {
            status,
            reason: bytes_to_string(reason),
            headers,
        },
        len,
    )))
}

/// First value of header `name` (ASCII case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All values of header `name` (ASCII case-insensitive), in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Strips RFC 7230 optional whitespace (SP and HTAB only, not Unicode
/// spaces such as U+00A0).
fn trim_ows_str(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

#[cfg(test)]
#[test]
fn ows_is_only_space_and_tab() {
    // RFC 7230 §3.2.3: a no-break space around a key is not whitespace.
    assert_eq!(trim_ows_str(" \tabc\t "), "abc");
    assert_eq!(trim_ows_str("\u{a0}abc"), "\u{a0}abc");
}

/// RFC 7230 §7 list split: split on ',', trim SP/HTAB, drop empty elements.
pub fn split_comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|e| e.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

fn has_token(v: &str, token: &str) -> bool {
    split_comma_list(v)
        .iter()
        .any(|e| e.eq_ignore_ascii_case(token))
}

/// Upgrade value names the websocket protocol (a "/version" suffix is ignored).
fn has_websocket(v: &str) -> bool {
    split_comma_list(v).iter().any(|e| {
        let name = e.split('/').next().unwrap_or("");
        name.trim_matches(|c| c == ' ' || c == '\t')
            .eq_ignore_ascii_case("websocket")
    })
}

fn is_base64_key(k: &str) -> bool {
    let b = k.as_bytes();
    let body = b.iter().position(|&c| c == b'=').unwrap_or(b.len());
    let pad = &b[body..];
    b[..body]
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        && pad.len() <= 2
        && pad.iter().all(|&c| c == b'=')
}

/// The checked contents of a client handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRequest {
    pub key: String,
    pub version: String,
    pub protocols: Vec<String>,
}

const NO_UPGRADE: &str = "No 'Upgrade' header with 'websocket' token found";
const NO_CONNECTION: &str = "No 'Connect' header with 'upgrade' token found";

/// tcllib's `::websocket::validate`, but correct (RFC 6455 §4.2.1).
/// Headers are checked in order; the first failing header's error wins.
pub fn validate_request_headers(
    headers: &[(String, String)],
) -> Result<ValidRequest, HandshakeError> {
    let mut connection = false;
    let mut upgrade = false;
    let mut version: Option<String> = None;
    let mut key: Option<String> = None;
    let mut protocols = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n.eq_ignore_ascii_case("Connection") {
            if has_token(value, "upgrade") {
                connection = true;
            }
        } else if n.eq_ignore_ascii_case("Upgrade") {
            if !has_websocket(value) {
                return Err(HandshakeError::new("UPGRADE", NO_UPGRADE));
            }
            upgrade = true;
        } else if n.eq_ignore_ascii_case("Sec-WebSocket-Version") {
            let v = trim_ows_str(value);
            if v != "13" {
                return Err(HandshakeError::new(
                    "VERSION",
                    format!("Invalid WebSocket version '{v}'"),
                ));
            }
            version = Some(v.to_owned());
        } else if n.eq_ignore_ascii_case("Sec-WebSocket-Key") {
            let k = trim_ows_str(value);
            if k.len() != 24 {
                return Err(HandshakeError::new("KEY", "Invalid WebSocket key length"));
            }
            if !is_base64_key(k) {
                return Err(HandshakeError::new(
                    "KEY",
                    "Invalid WebSocket key: not base64",
                ));
            }
            key = Some(k.to_owned());
        } else if n.eq_ignore_ascii_case("Sec-WebSocket-Protocol") {
            for p in split_comma_list(value) {
                if !is_token(&p) {
                    return Err(HandshakeError::new(
                        "PROTOCOL",
                        format!("Invalid protocol name '{p}'"),
                    ));
                }
                protocols.push(p);
            }
        }
    }
    if !connection {
        return Err(HandshakeError::new("CONNECTION", NO_CONNECTION));
    }
    if !upgrade {
        return Err(HandshakeError::new("UPGRADE", NO_UPGRADE));
    }
    let version =
        version.ok_or_else(|| HandshakeError::new("VERSION", "No WebSocket version specified"))?;
    let key = key.ok_or_else(|| HandshakeError::new("KEY", "No WebSocket key specified"))?;
    Ok(ValidRequest {
        key,
        version,
        protocols,
    })
}

fn check_value(name: &str, value: &str) -> Result<(), HandshakeError> {
    if value.contains(['\r', '\n']) {
        return Err(HandshakeError::new(
            "HEADER",
            format!("Invalid header value for '{name}'"),
        ));
    }
    Ok(())
}

/// tcllib's AddToken: append `token` to a comma list unless already present.
fn add_token(value: &str, token: &str) -> String {
    if has_token(value, token) {
        value.to_owned()
    } else if trim_ows_str(value).is_empty() {
        token.to_owned()
    } else {
        format!("{value}, {token}")
    }
}

/// Build the client's opening handshake request (RFC 6455 §4.1).
pub fn build_client_request(
    host_header: &str,
    target: &str,
    key: &str,
    protocols: &[String],
    extra_headers: &[(String, String)],
) -> Result<Vec<u8>, HandshakeError> {
    let target = if target.is_empty() { "/" } else { target };
    if target.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return Err(HandshakeError::new("HEADER", "Invalid request target"));
    }
    check_value("Host", host_header)?;
    check_value("Sec-WebSocket-Key", key)?;
    let mut connection = String::new();
    let mut upgrade = String::new();
    let mut others: Vec<(&str, &str)> = Vec::new();
    for (name, value) in extra_headers {
        if !is_token(name) {
            return Err(HandshakeError::new(
                "HEADER",
                format!("Invalid header name '{name}'"),
            ));
        }
        check_value(name, value)?;
        let merge = |acc: &mut String| {
            let v = value.trim_matches(|c| c == ' ' || c == '\t');
            if !v.is_empty() {
                if !acc.is_empty() {
                    acc.push_str(", ");
                }
                acc.push_str(v);
            }
        };
        if name.eq_ignore_ascii_case("Connection") {
            merge(&mut connection);
        } else if name.eq_ignore_ascii_case("Upgrade") {
            merge(&mut upgrade);
        } else if [
            "Host",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Protocol",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        } else {
            others.push((name, value));
        }
    }
    let mut s = String::with_capacity(256);
    s.push_str(&format!("GET {target} HTTP/1.1\r\n"));
    s.push_str(&format!("Host: {host_header}\r\n"));
    s.push_str(&format!(
        "Upgrade: {}\r\n",
        add_token(&upgrade, "websocket")
    ));
    s.push_str(&format!(
        "Connection: {}\r\n",
        add_token(&connection, "Upgrade")
    ));
    s.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    s.push_str("Sec-WebSocket-Version: 13\r\n");
    if !protocols.is_empty() {
        for p in protocols {
            check_value("Sec-WebSocket-Protocol", p)?;
        }
        s.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    for (n, v) in others {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    Ok(s.into_bytes())
}

/// Validate the server's response to our request (RFC 6455 §4.1, client
/// steps 1-6). Returns the selected subprotocol, or "" if none.
pub fn validate_response(
    resp: &Response,
    key: &str,
    offered: &[String],
) -> Result<String, HandshakeError> {
    validate_response_with(resp, key, offered, None).map(|(protocol, _)| protocol)
}

/// [`validate_response`] for a request that offered permessage-deflate as
/// `deflate` says (None: no extension offered): also returns what the
/// server accepted of it (None: it declined).
pub fn validate_response_with(
    resp: &Response,
    key: &str,
    offered: &[String],
    deflate: Option<&DeflateConfig>,
) -> Result<(String, Option<DeflateParams>), HandshakeError> {
    if resp.status != 101 {
        return Err(HandshakeError::new(
            "STATUS",
            format!("HTTP error code {}", resp.status),
        ));
    }
    let h = &resp.headers;
    let expected = accept_key(trim_ows_str(key));
    let accept_ok = header_values(h, "Sec-WebSocket-Accept")
        .first()
        .is_some_and(|a| trim_ows_str(a) == expected)
        && header_values(h, "Sec-WebSocket-Accept").len() == 1;
    if !accept_ok {
        return Err(HandshakeError::new(
            "ACCEPT",
            "Security handshake failed: wrong Sec-WebSocket-Accept",
        ));
    }
    if !header_values(h, "Upgrade").iter().any(|v| has_websocket(v)) {
        return Err(HandshakeError::new("UPGRADE", NO_UPGRADE));
    }
    if !header_values(h, "Connection")
        .iter()
        .any(|v| has_token(v, "upgrade"))
    {
        return Err(HandshakeError::new("CONNECTION", NO_CONNECTION));
    }
    let protos = header_values(h, "Sec-WebSocket-Protocol");
    let selected = match protos.as_slice() {
        [] => String::new(),
        [p] => trim_ows_str(p).to_owned(),
        many => many.join(", "),
    };
    if !selected.is_empty() && !offered.contains(&selected) {
        return Err(HandshakeError::new(
            "PROTOCOL",
            format!("Server selected a subprotocol that was not offered: '{selected}'"),
        ));
    }
    if let Some(cfg) = deflate {
        let params = negotiate::accept_response_headers(cfg, h).map_err(|e| {
            HandshakeError::new(
                "EXTENSION",
                format!("Server's extension answer refused: {e}"),
            )
        })?;
        return Ok((selected, params));
    }
    let ext: Vec<&str> = header_values(h, "Sec-WebSocket-Extensions")
        .into_iter()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if !ext.is_empty() {
        return Err(HandshakeError::new(
            "EXTENSION",
            format!(
                "Server selected an extension that was not offered: '{}'",
                ext.join(", ")
            ),
        ));
    }
    Ok((selected, None))
}

/// Server 101 response (RFC 6455 §4.2.2).
pub fn build_accept_response(accept: &str, protocol: &str) -> Vec<u8> {
    build_accept_response_with(accept, protocol, "")
}

/// [`build_accept_response`] with the extensions accepted (a
/// `Sec-WebSocket-Extensions` value; "" for none).
pub fn build_accept_response_with(accept: &str, protocol: &str, extensions: &str) -> Vec<u8> {
    let mut s = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if !protocol.is_empty() {
        s.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    if !extensions.is_empty() {
        s.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A plain error response for refused handshakes (RFC 6455 §4.2.2, §4.4).
pub fn build_error_response(status: u16, reason: &str) -> Vec<u8> {
    let reason: String = reason
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let mut s = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n");
    if status == 426 {
        s.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn good_headers() -> Vec<(String, String)> {
        hv(&[
            ("Host", "server.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", SAMPLE_KEY),
            ("Origin", "http://example.com"),
            ("Sec-WebSocket-Protocol", "chat, superchat"),
            ("Sec-WebSocket-Version", "13"),
        ])
    }

    fn err(kind: &'static str, msg: &str) -> HandshakeError {
        HandshakeError {
            kinds: vec!["HANDSHAKE", kind],
            message: msg.to_owned(),
        }
    }

    /// RFC 6455 §1.3 / §4.2.2: the sample key's accept value.
    #[test]
    fn accept_key_sample() {
        assert_eq!(accept_key(SAMPLE_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    /// RFC 6455 §4.1: the key is a base64-encoded 16-byte random nonce.
    #[test]
    fn generated_key() {
        let mut mk = MaskKeys::new();
        let a = generate_key(&mut mk);
        let b = generate_key(&mut mk);
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 16);
        let v = validate_request_headers(&hv(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", &a),
        ]))
        .unwrap();
        assert_eq!(v.key, a);
    }

    const REQ: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// RFC 6455 §4.1 sample request; RFC 7230 §3: every strict prefix
    /// needs more input, the full head parses, trailing bytes are left.
    #[test]
    fn parse_request_partial_every_length() {
        for i in 0..REQ.len() {
            assert_eq!(parse_request(&REQ[..i]), Ok(None), "prefix {i}");
        }
        let (req, n) = parse_request(REQ).unwrap().unwrap();
        assert_eq!(n, REQ.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/chat?x=1");
        assert_eq!(req.version, "HTTP/1.1");
        assert_eq!(req.headers, good_headers());
        let mut more = REQ.to_vec();
        more.extend_from_slice(b"\x81\x85frame");
        assert_eq!(parse_request(&more).unwrap().unwrap().1, REQ.len());
        let v = validate_request_headers(&req.headers).unwrap();
        assert_eq!(
            v,
            ValidRequest {
                key: SAMPLE_KEY.into(),
                version: "13".into(),
                protocols: vec!["chat".into(), "superchat".into()]
            }
        );
    }

    /// RFC 7230 §3.5: bare LF line terminators are accepted; OWS trimmed.
    #[test]
    fn parse_bare_lf_and_ows() {
        let r = b"GET / HTTP/1.1\nHost:  a \t\nX-Empty:\n\n";
        let (req, n) = parse_request(r).unwrap().unwrap();
        assert_eq!(n, r.len());
        assert_eq!(req.headers, hv(&[("Host", "a"), ("X-Empty", "")]));
        for i in 0..r.len() {
            assert_eq!(parse_request(&r[..i]), Ok(None));
        }
    }

    /// RFC 7230 §3.2.4 (obs-fold, whitespace before colon), §3.5 (bare CR),
    /// §3.1.1 (request line) violations are rejected.
    #[test]
    fn parse_request_malformed() {
        let bad: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            b"GET / HTTP/11\r\n\r\n",
        ];
        for b in bad {
            let e = parse_request(b).unwrap_err();
            assert_eq!(
                e.kinds,
                vec!["HANDSHAKE", "HTTP"],
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    /// RFC 7230 §3.2.5: limits on head size and header count.
    #[test]
    fn parse_limits() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES - 1, b'a');
        assert_eq!(parse_request(&big), Ok(None));
        big.push(b'a');
        assert_eq!(
            parse_request(&big).unwrap_err().message,
            "HTTP header too large"
        );
        // Exactly MAX_HEAD_BYTES including the blank line is fine.
        let mut ok = b"GET / HTTP/1.1\r\nX: ".to_vec();
        ok.resize(MAX_HEAD_BYTES - 4, b'a');
        ok.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&ok).unwrap().unwrap().1, MAX_HEAD_BYTES);
        let mut h = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            h.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut ok = h.clone();
        ok.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&ok).unwrap().unwrap().0.headers.len(),
            MAX_HEADERS
        );
        h.extend_from_slice(b"X-last: v\r\n\r\n");
        assert_eq!(
            parse_request(&h).unwrap_err().message,
            "Too many HTTP headers"
        );
    }

    const RESP: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n";

    /// RFC 6455 §4.2.2 sample response; partial input at every length.
    #[test]
    fn parse_response_partial_every_length() {
        for i in 0..RESP.len() {
            assert_eq!(parse_response(&RESP[..i]), Ok(None), "prefix {i}");
        }
        let (resp, n) = parse_response(RESP).unwrap().unwrap();
        assert_eq!(n, RESP.len());
        assert_eq!(resp.status, 101);
        assert_eq!(resp.reason, "Switching Protocols");
        let offered = vec!["chat".to_string(), "superchat".to_string()];
        assert_eq!(
            validate_response(&resp, SAMPLE_KEY, &offered),
            Ok("chat".into())
        );
        // Status line variants (RFC 7230 §3.1.2: reason may be empty).
        let (r, _) = parse_response(b"HTTP/1.1 404 \r\n\r\n").unwrap().unwrap();
        assert_eq!((r.status, r.reason.as_str()), (404, ""));
        let (r, _) = parse_response(b"HTTP/1.0 200\n\n").unwrap().unwrap();
        assert_eq!(r.status, 200);
        for b in [
            &b"HTTP/1.1 1010 X\r\n\r\n"[..],
            b"HTTP/1.1 10 X\r\n\r\n",
            b"HTTP 101 X\r\n\r\n",
            b"HTTP/1.1 1a1 X\r\n\r\n",
        ] {
            assert!(parse_response(b).is_err());
        }
    }

    /// RFC 6455 §4.1 client requirements on the server response.
    #[test]
    fn validate_response_errors() {
        let base = |extra: &[(&str, &str)], drop: &str| Response {
            status: 101,
            reason: "Switching Protocols".into(),
            headers: hv(&[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ])
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(drop))
            .chain(hv(extra))
            .collect(),
        };
        let none: Vec<String> = vec![];
        assert_eq!(
            validate_response(&base(&[], ""), SAMPLE_KEY, &none),
            Ok(String::new())
        );
        let mut r = base(&[], "");
        r.status = 403;
        assert_eq!(
            validate_response(&r, SAMPLE_KEY, &none),
            Err(err("STATUS", "HTTP error code 403"))
        );
        let acc = err(
            "ACCEPT",
            "Security handshake failed: wrong Sec-WebSocket-Accept",
        );
        assert_eq!(
            validate_response(&base(&[], "Sec-WebSocket-Accept"), SAMPLE_KEY, &none),
            Err(acc.clone())
        );
        assert_eq!(
            validate_response(&base(&[], ""), "AAAAAAAAAAAAAAAAAAAAAA==", &none),
            Err(acc)
        );
        assert_eq!(
            validate_response(&base(&[("Upgrade", "h2c")], "Upgrade"), SAMPLE_KEY, &none)
                .unwrap_err()
                .kinds,
            vec!["HANDSHAKE", "UPGRADE"]
        );
        assert_eq!(
            validate_response(&base(&[], "Upgrade"), SAMPLE_KEY, &none)
                .unwrap_err()
                .kinds,
            vec!["HANDSHAKE", "UPGRADE"]
        );
        assert_eq!(
            validate_response(
                &base(&[("Connection", "keep-alive")], "Connection"),
                SAMPLE_KEY,
                &none
            )
            .unwrap_err()
            .kinds,
            vec!["HANDSHAKE", "CONNECTION"]
        );
        // Case-insensitive tokens are fine.
        assert!(validate_response(
            &base(
                &[
                    ("connection", "keep-alive, UPGRADE"),
                    ("upgrade", "WebSocket")
                ],
                "Connection"
            ),
            SAMPLE_KEY,
            &none
        )
        .is_ok());
        assert_eq!(
            validate_response(
                &base(&[("Sec-WebSocket-Protocol", "chat")], ""),
                SAMPLE_KEY,
                &none
            ),
            Err(err(
                "PROTOCOL",
                "Server selected a subprotocol that was not offered: 'chat'"
            ))
        );
        let offered = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            validate_response(
                &base(&[("Sec-WebSocket-Protocol", "c")], ""),
                SAMPLE_KEY,
                &offered
            )
            .unwrap_err()
            .kinds,
            vec!["HANDSHAKE", "PROTOCOL"]
        );
        assert_eq!(
            validate_response(
                &base(&[("Sec-WebSocket-Protocol", "a, b")], ""),
                SAMPLE_KEY,
                &offered
            )
            .unwrap_err()
            .kinds,
            vec!["HANDSHAKE", "PROTOCOL"]
        );
        assert_eq!(
            validate_response(
                &base(&[("Sec-WebSocket-Protocol", " b ")], ""),
                SAMPLE_KEY,
                &offered
            ),
            Ok("b".into())
        );
        assert_eq!(
            validate_response(
                &base(&[("Sec-WebSocket-Extensions", "permessage-deflate")], ""),
                SAMPLE_KEY,
                &none
            )
            .unwrap_err()
            .kinds,
            vec!["HANDSHAKE", "EXTENSION"]
        );
    }

    /// RFC 6455 §4.2.1 server requirements, with tcllib's error texts.
    #[test]
    fn validate_request_texts() {
        let v = |pairs: &[(&str, &str)]| validate_request_headers(&hv(pairs));
        let up = ("Upgrade", "websocket");
        let conn = ("Connection", "keep-alive, Upgrade");
        let ver = ("Sec-WebSocket-Version", "13");
        let key = ("Sec-WebSocket-Key", SAMPLE_KEY);
        assert!(v(&[up, conn, ver, key]).is_ok());
        assert!(v(&[
            ("upgrade", "WebSocket/13"),
            ("CONNECTION", "upgrade"),
            ("sec-websocket-version", " 13 "),
            ("SEC-WEBSOCKET-KEY", " dGhlIHNhbXBsZSBub25jZQ== ")
        ])
        .is_ok());
        let no_up = err(
            "UPGRADE",
            "No 'Upgrade' header with 'websocket' token found",
        );
        assert_eq!(v(&[("Upgrade", "h2c"), conn, ver, key]), Err(no_up.clone()));
        assert_eq!(v(&[conn, ver, key]), Err(no_up.clone()));
        let no_conn = err(
            "CONNECTION",
            "No 'Connect' header with 'upgrade' token found",
        );
        assert_eq!(v(&[up, ver, key]), Err(no_conn.clone()));
        assert_eq!(
            v(&[up, ("Connection", "keep-alive"), ver, key]),
            Err(no_conn.clone())
        );
        // Connection is checked before the missing-Upgrade error.
        assert_eq!(v(&[ver, key]), Err(no_conn));
        // Upgrade header seen with a bad value fails at once, before later headers.
        assert_eq!(
            v(&[("Upgrade", "h2c"), ("Sec-WebSocket-Version", "8")]),
            Err(no_up)
        );
        assert_eq!(
            v(&[up, conn, ("Sec-WebSocket-Version", " 8 "), key]),
            Err(err("VERSION", "Invalid WebSocket version '8'"))
        );
        assert_eq!(
            v(&[up, conn, key]),
            Err(err("VERSION", "No WebSocket version specified"))
        );
        assert_eq!(
            v(&[up, conn, ver, ("Sec-WebSocket-Key", "abc")]),
            Err(err("KEY", "Invalid WebSocket key length"))
        );
        assert_eq!(
            v(&[
                up,
                conn,
                ver,
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25j!Q==")
            ]),
            Err(err("KEY", "Invalid WebSocket key: not base64"))
        );
        assert_eq!(
            v(&[
                up,
                conn,
                ver,
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25j===")
            ])
            .unwrap_err()
            .message,
            "Invalid WebSocket key length"
        );
        assert_eq!(
            v(&[
                up,
                conn,
                ver,
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25=jQ==")
            ]),
            Err(err("KEY", "Invalid WebSocket key: not base64"))
        );
        assert_eq!(
            v(&[
                up,
                conn,
                ver,
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25j===A")
            ]),
            Err(err("KEY", "Invalid WebSocket key: not base64"))
        );
        assert_eq!(
            v(&[up, conn, ver]),
            Err(err("KEY", "No WebSocket key specified"))
        );
        // Protocols: repeated headers accumulate; elements must be tokens.
        let r = v(&[
            up,
            conn,
            ver,
            key,
            ("Sec-WebSocket-Protocol", "a, ,b"),
            ("sec-websocket-protocol", "c"),
        ])
        .unwrap();
        assert_eq!(r.protocols, vec!["a", "b", "c"]);
        assert_eq!(
            v(&[up, conn, ("Sec-WebSocket-Protocol", "a, b c"), ver, key]),
            Err(err("PROTOCOL", "Invalid protocol name 'b c'"))
        );
        // First failing header wins (protocol before version here).
        assert_eq!(
            v(&[
                up,
                conn,
                ("Sec-WebSocket-Protocol", "x/y"),
                ("Sec-WebSocket-Version", "7")
            ])
            .unwrap_err()
            .kinds,
            vec!["HANDSHAKE", "PROTOCOL"]
        );
    }

    /// RFC 7230 §7 list syntax and §3.2.6 tokens.
    #[test]
    fn lists_and_tokens() {
        assert_eq!(split_comma_list(" a ,\tb,, ,c "), vec!["a", "b", "c"]);
        assert!(split_comma_list(" , ,").is_empty());
        assert!(is_token("chat.v1+json"));
        assert!(is_token("!#$%&'*+-.^_`|~09azAZ"));
        for t in ["", "a b", "a/b", "a,b", "\"a\"", "a;b", "é", "a=b"] {
            assert!(!is_token(t), "{t}");
        }
        let h = hv(&[("A", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(header(&h, "a"), Some("1"));
        assert_eq!(header(&h, "B"), Some("2"));
        assert_eq!(header(&h, "c"), None);
        assert_eq!(header_values(&h, "A"), vec!["1", "3"]);
    }

    /// RFC 6455 §4.1: client request format; merging of Connection/Upgrade.
    #[test]
    fn client_request() {
        let r =
            build_client_request("example.com:8080", "/chat?x=1", SAMPLE_KEY, &[], &[]).unwrap();
        assert_eq!(
            String::from_utf8(r.clone()).unwrap(),
            "GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        // Round trip through our own parser and validator.
        let (req, n) = parse_request(&r).unwrap().unwrap();
        assert_eq!(n, r.len());
        assert!(validate_request_headers(&req.headers).is_ok());

        let protos = vec!["a".to_string(), "b".to_string()];
        let extra = hv(&[
            ("Origin", "http://x"),
            ("connection", "keep-alive"),
            ("Upgrade", "foo"),
            ("Host", "evil"),
            ("sec-websocket-key", "x"),
            ("Sec-WebSocket-Version", "8"),
            ("Sec-WebSocket-Protocol", "z"),
        ]);
        let r = build_client_request("h", "", SAMPLE_KEY, &protos, &extra).unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: foo, websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\nOrigin: http://x\r\n\r\n"
        );
        // Token already present: not duplicated.
        let r = build_client_request("h", "/", SAMPLE_KEY, &[], &hv(&[("Connection", "upgrade")]))
            .unwrap();
        assert!(String::from_utf8(r)
            .unwrap()
            .contains("\r\nConnection: upgrade\r\n"));
        // Header injection refused.
        let e = build_client_request("h", "/", SAMPLE_KEY, &[], &hv(&[("X-A", "1\r\nEvil: 2")]))
            .unwrap_err();
        assert_eq!(e, err("HEADER", "Invalid header value for 'X-A'"));
        assert_eq!(
            build_client_request("h\n", "/", SAMPLE_KEY, &[], &[])
                .unwrap_err()
                .kinds,
            vec!["HANDSHAKE", "HEADER"]
        );
        assert!(build_client_request("h", "/a b", SAMPLE_KEY, &[], &[]).is_err());
        assert!(
            build_client_request("h", "/", SAMPLE_KEY, &[], &hv(&[("Bad Name", "v")])).is_err()
        );
    }

    /// RFC 6455 §4.2.2: server accept response and §4.4 version refusal.
    #[test]
    fn server_responses() {
        let r = build_accept_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "");
        assert_eq!(
            String::from_utf8(r.clone()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let (resp, _) = parse_response(&r).unwrap().unwrap();
        assert_eq!(validate_response(&resp, SAMPLE_KEY, &[]), Ok(String::new()));
        let r = build_accept_response(&accept_key(SAMPLE_KEY), "chat");
        assert!(String::from_utf8(r.clone())
            .unwrap()
            .ends_with("Sec-WebSocket-Protocol: chat\r\n\r\n"));
        let (resp, _) = parse_response(&r).unwrap().unwrap();
        assert_eq!(
            validate_response(&resp, SAMPLE_KEY, &["chat".into()]),
            Ok("chat".into())
        );

        assert_eq!(
            String::from_utf8(build_error_response(400, "Bad Request")).unwrap(),
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8(build_error_response(426, "Upgrade Required")).unwrap(),
            "HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nContent-Length: 0\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let (resp, _) = parse_response(&build_error_response(404, "Not Found"))
            .unwrap()
            .unwrap();
        assert_eq!(
            validate_response(&resp, SAMPLE_KEY, &[])
                .unwrap_err()
                .message,
            "HTTP error code 404"
        );
    }
}
