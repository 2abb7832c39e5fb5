//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

/// Why we must fail the connection: the close code to send and a short reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

impl Violation {
    /// 1002: protocol error.
    pub fn protocol(reason: &'static str) -> Self {
        Violation {
            code: PROTOCOL_ERROR,
            reason,
        }
    }
    /// 1007: data inconsistent with the message type (e.g. invalid UTF-8).
    pub fn invalid_data(reason: &'static str) -> Self {
        Violation {
            code: INVALID_DATA,
            reason,
        }
    }
    /// 1009: message too big.
    pub fn too_big(reason: &'static str) -> Self {
        Violation {
            code: TOO_BIG,
            reason,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for Violation {}

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED: u16 = 1003;
pub const NO_STATUS: u16 = 1005;
pub const ABNORMAL: u16 = 1006;
pub const INVALID_DATA: u16 = 1007;
pub const POLICY: u16 = 1008;
pub const TOO_BIG: u16 = 1009;
pub const MISSING_EXTENSION: u16 = 1010;
pub const INTERNAL_ERROR: u16 = 1011;
pub const TLS_FAILURE: u16 = 1015;

/// Codes a peer may legitimately put in a close frame: 1000-1003,
/// 1007-1014, 3000-4999 (RFC 6455 §7.4.1, §7.4.2, IANA registry).
pub fn is_valid_received_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Codes a script may ask us to send: the same set as [`is_valid_received_code`].
pub fn is_sendable_code(code: u16) -> bool {
    is_valid_received_code(code)
}

/// tcllib's default reason texts.
pub fn default_reason(code: u16) -> Option<&'static str> {
    Some(match code {
        1000 => "Normal closure",
        1001 => "Endpoint going away",
        1002 => "Protocol error",
        1003 => "Received incompatible data type",
        1006 => "Abnormal closure",
        1007 => "Received data not consistent with type",
        1008 => "Policy violation",
        1009 => "Received message too big",
        1010 => "Missing extension",
        1011 => "Unexpected condition",
        1015 => "TLS handshake error",
        _ => return None,
    })
}

/// A parsed close frame body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

/// Parse a received close payload (RFC 6455 §5.5.1).
///
/// Empty => `Ok(None)`; 1 byte => protocol error; invalid code => protocol
/// error; reason not valid UTF-8 => invalid data (1007).
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, Violation> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Violation::protocol("close frame payload of 1 byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_received_code(code) {
                return Err(Violation::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| Violation::invalid_data("close reason is not valid UTF-8"))?;
            Ok(Some(CloseFrame {
                code,
                reason: reason.to_owned(),
            }))
        }
    }
}

/// Maximum reason length: 125-byte control payload minus the 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// Build a close payload: 2-byte code + reason truncated to at most 123 bytes
/// at a char boundary.
pub fn build_close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut v = Vec::with_capacity(2 + end);
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&reason.as_bytes()[..end]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §7.4.1 / §7.4.2: table of every code 0..=65535.
    #[test]
    fn received_code_table() {
        for code in 0..=u16::MAX {
            let expect = (1000..=1003).contains(&code)
                || (1007..=1014).contains(&code)
                || (3000..=4999).contains(&code);
            assert_eq!(is_valid_received_code(code), expect, "code {code}");
            assert_eq!(is_sendable_code(code), expect, "code {code}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!is_valid_received_code(bad));
        }
        for good in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(is_valid_received_code(good));
        }
    }

    /// RFC 6455 §7.4.1 codes with tcllib's reason texts.
    #[test]
    fn default_reasons() {
        assert_eq!(default_reason(NORMAL), Some("Normal closure"));
        assert_eq!(default_reason(GOING_AWAY), Some("Endpoint going away"));
        assert_eq!(default_reason(PROTOCOL_ERROR), Some("Protocol error"));
        assert_eq!(
            default_reason(UNSUPPORTED),
            Some("Received incompatible data type")
        );
        assert_eq!(default_reason(ABNORMAL), Some("Abnormal closure"));
        assert_eq!(
            default_reason(INVALID_DATA),
            Some("Received data not consistent with type")
        );
        assert_eq!(default_reason(POLICY), Some("Policy violation"));
        assert_eq!(default_reason(TOO_BIG), Some("Received message too big"));
        assert_eq!(default_reason(MISSING_EXTENSION), Some("Missing extension"));
        assert_eq!(default_reason(INTERNAL_ERROR), Some("Unexpected condition"));
        assert_eq!(default_reason(TLS_FAILURE), Some("TLS handshake error"));
        assert_eq!(default_reason(NO_STATUS), None);
        assert_eq!(default_reason(1004), None);
        assert_eq!(default_reason(3000), None);
    }

    /// RFC 6455 §5.5.1: empty body, 1-byte body, code, reason UTF-8.
    #[test]
    fn parse_close() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(parse_close_payload(&[0x03]).unwrap_err().code, 1002);
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8]),
            Ok(Some(CloseFrame {
                code: 1000,
                reason: String::new()
            }))
        );
        let mut p = vec![0x0f, 0xa0]; // 4000
        p.extend_from_slice("bye ☃".as_bytes());
        assert_eq!(
            parse_close_payload(&p),
            Ok(Some(CloseFrame {
                code: 4000,
                reason: "bye ☃".into()
            }))
        );
        // §7.4.1: 1005/1006/1015 MUST NOT be sent in a close frame.
        for c in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
            let b = c.to_be_bytes();
            assert_eq!(parse_close_payload(&b).unwrap_err().code, 1002, "{c}");
        }
        // §8.1: invalid UTF-8 reason => 1007.
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, 0xff]).unwrap_err().code,
            1007
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, 0xe2, 0x98])
                .unwrap_err()
                .code,
            1007
        );
    }

    /// RFC 6455 §5.5: control payload ≤ 125, so the reason is cut at 123
    /// bytes, on a char boundary (§5.5.1 reason must be UTF-8).
    #[test]
    fn build_close() {
        assert_eq!(build_close_payload(1000, ""), vec![0x03, 0xe8]);
        assert_eq!(build_close_payload(1001, "x"), vec![0x03, 0xe9, b'x']);
        let long = "a".repeat(200);
        let p = build_close_payload(1000, &long);
        assert_eq!(p.len(), 125);
        // 122 ASCII + a 3-byte char: the char would end at 125 > 123 -> dropped.
        let s = format!("{}☃", "a".repeat(122));
        let p = build_close_payload(1000, &s);
        assert_eq!(p.len(), 2 + 122);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        let s = format!("{}☃", "a".repeat(120));
        let p = build_close_payload(1000, &s);
        assert_eq!(p.len(), 125);
        let parsed = parse_close_payload(&p).unwrap().unwrap();
        assert_eq!(parsed.reason, s);
        for n in 0..130 {
            let s = "é".repeat(n);
            let p = build_close_payload(3000, &s);
            assert!(p.len() <= 125);
            assert!(parse_close_payload(&p).is_ok());
        }
    }

    #[test]
    fn violation_ctors() {
        assert_eq!(Violation::protocol("x").code, 1002);
        assert_eq!(Violation::invalid_data("x").code, 1007);
        assert_eq!(Violation::too_big("x").code, 1009);
        assert_eq!(Violation::too_big("big").to_string(), "big (1009)");
    }
}
