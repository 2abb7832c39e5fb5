//! permessage-deflate negotiation (RFC 7692 §5, §7.1) in both roles.
//!
//! * Client: [`client_offer`] is the `Sec-WebSocket-Extensions` value to
//!   send; [`accept_response`] checks the server's answer and gives the
//!   negotiated [`DeflateParams`], `None` (the server declined), or an error
//!   that fails the handshake.
//! * Server: [`negotiate_server`] takes the client's offers (alternatives,
//!   in order of preference) and accepts the first acceptable one, giving
//!   the params and the response header value; `None` declines.
//!
//! Names of extensions and parameters are compared ASCII case-insensitively
//! (RFC 7692 does not say; accepting `Permessage-Deflate` harms nobody).
//! Window bits values are decimal integers 8-15 (leading zeros allowed).

use crate::proto::deflate::{
    DeflateConfig, CLIENT_MAX_WINDOW_BITS, CLIENT_NO_CONTEXT_TAKEOVER, EXTENSION_NAME,
    MAX_WINDOW_BITS, MIN_WINDOW_BITS, SERVER_MAX_WINDOW_BITS, SERVER_NO_CONTEXT_TAKEOVER,
};
use crate::proto::extensions::{self, Extension, Param, ParseError};
use crate::proto::Role;

/// What both ends agreed on. Window bits are 8-15; 15 where the
/// negotiation left them open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: u8,
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

impl DeflateParams {
    /// Whether we, in `role`, must reset our compressor after each message.
    pub fn local_no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Server => self.server_no_context_takeover,
            Role::Client => self.client_no_context_takeover,
        }
    }

    /// Whether the peer resets its compressor after each message (then our
    /// decompressor need not keep its window between messages).
    pub fn remote_no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Server => self.client_no_context_takeover,
            Role::Client => self.server_no_context_takeover,
        }
    }

    /// The largest window our compressor may use.
    pub fn local_max_window_bits(&self, role: Role) -> u8 {
        match role {
            Role::Server => self.server_max_window_bits,
            Role::Client => self.client_max_window_bits,
        }
    }

    /// The largest window the peer's compressor may use.
    pub fn remote_max_window_bits(&self, role: Role) -> u8 {
        match role {
            Role::Server => self.client_max_window_bits,
            Role::Client => self.server_max_window_bits,
        }
    }
}

/// A parameter of a permessage-deflate element that RFC 7692 does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// Not one of the four parameters of §7.1 (or, in a response, the
    /// valueless `client_max_window_bits` that only an offer may carry).
    Unknown(String),
    /// The same parameter twice (§7.1).
    Duplicate(String),
    /// A value where none is allowed, none where one is required, or a
    /// window size that is not an integer 8-15.
    BadValue { name: String, value: Option<String> },
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::Unknown(n) => write!(f, "unknown permessage-deflate parameter '{n}'"),
            ParamError::Duplicate(n) => write!(f, "duplicate permessage-deflate parameter '{n}'"),
            ParamError::BadValue { name, value: None } => {
                write!(f, "permessage-deflate parameter '{name}' needs a value")
            }
            ParamError::BadValue {
                name,
                value: Some(v),
            } => write!(
                f,
                "invalid value '{v}' of permessage-deflate parameter '{name}'"
            ),
        }
    }
}

/// Why a server's response fails the client's handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// The header does not follow RFC 6455 §9.1.
    Syntax(ParseError),
    /// An extension we did not offer (RFC 6455 §4.1: fail the connection).
    NotOffered(String),
    /// permessage-deflate accepted twice.
    Duplicate,
    /// A parameter that is not allowed in a response.
    Param(ParamError),
    /// A parameter our offer asked for and the response lacks
    /// (`server_no_context_takeover` or `server_max_window_bits`): the
    /// response does not accept our offer.
    Missing(&'static str),
    /// A window larger than the limit we offered.
    WindowTooLarge {
        param: &'static str,
        limit: u8,
        got: u8,
    },
}

impl std::fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NegotiationError::Syntax(e) => e.fmt(f),
            NegotiationError::NotOffered(n) => {
                write!(f, "Server selected an extension that was not offered: '{n}'")
            }
            NegotiationError::Duplicate => f.write_str("Server accepted permessage-deflate twice"),
            NegotiationError::Param(e) => write!(f, "Server's permessage-deflate response: {e}"),
            NegotiationError::Missing(p) => write!(
                f,
                "Server's permessage-deflate response lacks '{p}', which was offered"
            ),
            NegotiationError::WindowTooLarge { param, limit, got } => write!(
                f,
                "Server's permessage-deflate response has {param}={got}, more than the {limit} offered"
            ),
        }
    }
}

impl std::error::Error for NegotiationError {}

impl From<ParseError> for NegotiationError {
    fn from(e: ParseError) -> Self {
        NegotiationError::Syntax(e)
    }
}

/// The parameters of one permessage-deflate element, checked one by one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (offers only).
    client_max_window_bits: Option<Option<u8>>,
}

/// A window bits value: a decimal integer 8-15 (`1*DIGIT`, RFC 7692 §7.1.2).
fn window_value(v: &str) -> Option<u8> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = v.trim_start_matches('0');
    if digits.len() > 2 {
        return None;
    }
    let n: u8 = digits.parse().ok()?;
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS)
        .contains(&n)
        .then_some(n)
}

/// Check the parameters of a permessage-deflate element; `offer` allows
/// the valueless `client_max_window_bits` (§7.1.2.2).
fn parse_params(params: &[Param], offer: bool) -> Result<Parsed, ParamError> {
    let mut p = Parsed::default();
    let mut seen = [false; 4];
    for param in params {
        let name = param.name.as_str();
        let known = [
            SERVER_NO_CONTEXT_TAKEOVER,
            CLIENT_NO_CONTEXT_TAKEOVER,
            SERVER_MAX_WINDOW_BITS,
            CLIENT_MAX_WINDOW_BITS,
        ];
        let i = known
            .iter()
            .position(|k| k.eq_ignore_ascii_case(name))
            .ok_or_else(|| ParamError::Unknown(name.to_owned()))?;
        if std::mem::replace(&mut seen[i], true) {
            return Err(ParamError::Duplicate(name.to_owned()));
        }
        let bad = || ParamError::BadValue {
            name: name.to_owned(),
            value: param.value.clone(),
        };
        let value = param.value.as_deref();
        match i {
            0 | 1 => {
                if value.is_some() {
                    return Err(bad());
                }
                if i == 0 {
                    p.server_no_context_takeover = true;
                } else {
                    p.client_no_context_takeover = true;
                }
            }
            2 => p.server_max_window_bits = Some(value.and_then(window_value).ok_or_else(bad)?),
            _ => {
                p.client_max_window_bits = Some(match value {
                    None if offer => None,
                    None => return Err(bad()),
                    Some(v) => Some(window_value(v).ok_or_else(bad)?),
                })
            }
        }
    }
    Ok(p)
}

fn is_deflate(e: &Extension) -> bool {
    e.name.eq_ignore_ascii_case(EXTENSION_NAME)
}

fn clamp_window(v: u8) -> u8 {
    v.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

/// The client's offer as an extension element: always
/// `client_max_window_bits` (with our limit as its value if configured,
/// else bare: the server may then limit our window), plus the requests
/// the configuration makes.
pub fn client_offer_extension(cfg: &DeflateConfig) -> Extension {
    let mut params = Vec::new();
    if cfg.server_no_context_takeover {
        params.push(Param::flag(SERVER_NO_CONTEXT_TAKEOVER));
    }
    if cfg.client_no_context_takeover {
        params.push(Param::flag(CLIENT_NO_CONTEXT_TAKEOVER));
    }
    if let Some(b) = cfg.server_max_window_bits {
        params.push(Param::with_value(
            SERVER_MAX_WINDOW_BITS,
            clamp_window(b).to_string(),
        ));
    }
    params.push(match cfg.client_max_window_bits {
        Some(b) => Param::with_value(CLIENT_MAX_WINDOW_BITS, clamp_window(b).to_string()),
        None => Param::flag(CLIENT_MAX_WINDOW_BITS),
    });
    Extension {
        name: EXTENSION_NAME.to_owned(),
        params,
    }
}

/// The client's `Sec-WebSocket-Extensions` value, e.g. the default
/// `permessage-deflate; client_max_window_bits`.
pub fn client_offer(cfg: &DeflateConfig) -> String {
    client_offer_extension(cfg).to_string()
}

/// Check the server's response (all its `Sec-WebSocket-Extensions`
/// elements) against the offer [`client_offer`] made from `cfg`
/// (RFC 7692 §5, §7.1). `Ok(None)`: the server declined; any extension
/// other than permessage-deflate is an error, since we offer no other.
pub fn accept_response(
    cfg: &DeflateConfig,
    response: &[Extension],
) -> Result<Option<DeflateParams>, NegotiationError> {
    let mut found: Option<&Extension> = None;
    for e in response {
        if !is_deflate(e) {
            return Err(NegotiationError::NotOffered(e.name.clone()));
        }
        if found.replace(e).is_some() {
            return Err(NegotiationError::Duplicate);
        }
    }
    let Some(e) = found else { return Ok(None) };
    let r = parse_params(&e.params, false).map_err(NegotiationError::Param)?;
    // §7.1.1.1: the server accepts server_no_context_takeover by echoing it.
    if cfg.server_no_context_takeover && !r.server_no_context_takeover {
        return Err(NegotiationError::Missing(SERVER_NO_CONTEXT_TAKEOVER));
    }
    // §7.1.2.1: the same or a smaller value than offered; it may limit
    // itself unasked.
    let server_bits = match (
        cfg.server_max_window_bits.map(clamp_window),
        r.server_max_window_bits,
    ) {
        (Some(_), None) => return Err(NegotiationError::Missing(SERVER_MAX_WINDOW_BITS)),
        (Some(limit), Some(got)) if got > limit => {
            return Err(NegotiationError::WindowTooLarge {
                param: SERVER_MAX_WINDOW_BITS,
                limit,
                got,
            })
        }
        (_, got) => got.unwrap_or(MAX_WINDOW_BITS),
    };
    // §7.1.2.2: we always offer client_max_window_bits, so the server may
    // return one; with our own limit it must not exceed it, and without a
    // returned one our limit stands.
    let own = cfg.client_max_window_bits.map(clamp_window);
    let client_bits = match (own, r.client_max_window_bits.flatten()) {
        (Some(limit), Some(got)) if got > limit => {
            return Err(NegotiationError::WindowTooLarge {
                param: CLIENT_MAX_WINDOW_BITS,
                limit,
                got,
            })
        }
        (_, Some(got)) => got,
        (Some(limit), None) => limit,
        (None, None) => MAX_WINDOW_BITS,
    };
    Ok(Some(DeflateParams {
        server_no_context_takeover: r.server_no_context_takeover,
        // §7.1.1.2: our own hint binds us even if the server ignored it.
        client_no_context_takeover: r.client_no_context_takeover || cfg.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    }))
}

/// [`accept_response`] on a response's headers (every
/// `Sec-WebSocket-Extensions` line).
pub fn accept_response_headers(
    cfg: &DeflateConfig,
    headers: &[(String, String)],
) -> Result<Option<DeflateParams>, NegotiationError> {
    accept_response(cfg, &extensions::parse_headers(headers)?)
}

/// A server's acceptance of one offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub params: DeflateParams,
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub response: String,
}

/// Accept one offer if it is valid (RFC 7692 §5: an offer with an unknown
/// parameter, an invalid value or a duplicate parameter is declined).
/// Every valid offer is acceptable to us.
fn accept_offer(cfg: &DeflateConfig, offer: &Extension) -> Option<Accepted> {
    let o = parse_params(&offer.params, true).ok()?;
    let mut params = DeflateParams::default();
    let mut resp = Vec::new();

    // §7.1.1.1: accepting the request means echoing it.
    params.server_no_context_takeover =
        o.server_no_context_takeover || cfg.server_no_context_takeover;
    if params.server_no_context_takeover {
        resp.push(Param::flag(SERVER_NO_CONTEXT_TAKEOVER));
    }
    // §7.1.1.2: the client's hint, echoed so that our decompressor may
    // drop its state between messages; or our own requirement.
    params.client_no_context_takeover =
        o.client_no_context_takeover || cfg.client_no_context_takeover;
    if params.client_no_context_takeover {
        resp.push(Param::flag(CLIENT_NO_CONTEXT_TAKEOVER));
    }
    // §7.1.2.1: answer a requested limit with the same or a smaller one;
    // we may limit ourselves unasked. 8 is fine (compressed with 9, see
    // the module notes).
    let own = cfg.server_max_window_bits.map(clamp_window);
    let server_bits = match (o.server_max_window_bits, own) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(b) = server_bits {
        params.server_max_window_bits = b;
        resp.push(Param::with_value(SERVER_MAX_WINDOW_BITS, b.to_string()));
    }
    // §7.1.2.2: we may limit the client's window only if it offered the
    // parameter; without it (or without our limit) it uses what it
    // offered, or 15. A limit of ours the client does not support is no
    // reason to decline: our decompressor handles any window.
    params.client_max_window_bits = match (
        o.client_max_window_bits,
        cfg.client_max_window_bits.map(clamp_window),
    ) {
        (Some(offered), Some(limit)) => {
            let b = offered.map_or(limit, |v| v.min(limit));
            resp.push(Param::with_value(CLIENT_MAX_WINDOW_BITS, b.to_string()));
            b
        }
        (Some(Some(v)), None) => v,
        _ => MAX_WINDOW_BITS,
    };
    Some(Accepted {
        params,
        response: Extension {
            name: EXTENSION_NAME.to_owned(),
            params: resp,
        }
        .to_string(),
    })
}

/// The server's choice among the client's offers: the first acceptable
/// permessage-deflate offer, or `None` (no extension in the response).
/// Invalid offers are declined one by one, never failing the handshake
/// (RFC 7692 §5); other extensions are ignored.
pub fn negotiate_server(cfg: &DeflateConfig, offers: &[Extension]) -> Option<Accepted> {
    offers
        .iter()
        .filter(|e| is_deflate(e))
        .find_map(|e| accept_offer(cfg, e))
}

/// [`negotiate_server`] on a request's headers. A header that does not
/// follow RFC 6455 §9.1 is an error: ws and Python websockets then refuse
/// the handshake (400); ignoring the header (no extension) is the
/// lenient alternative. The caller chooses.
pub fn negotiate_server_headers(
    cfg: &DeflateConfig,
    headers: &[(String, String)],
) -> Result<Option<Accepted>, ParseError> {
    Ok(negotiate_server(cfg, &extensions::parse_headers(headers)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::extensions::parse;

    fn exts(v: &str) -> Vec<Extension> {
        parse([v]).unwrap()
    }

    fn client(cfg: &DeflateConfig, resp: &str) -> Result<Option<DeflateParams>, NegotiationError> {
        accept_response(cfg, &exts(resp))
    }

    fn server(cfg: &DeflateConfig, offers: &str) -> Option<(String, DeflateParams)> {
        negotiate_server(cfg, &exts(offers)).map(|a| (a.response, a.params))
    }

    fn params(snct: bool, cnct: bool, sb: u8, cb: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: sb,
            client_max_window_bits: cb,
        }
    }

    #[test]
    fn window_values() {
        for (v, r) in [
            ("8", Some(8)),
            ("15", Some(15)),
            ("09", Some(9)),
            ("0000000000012", Some(12)),
            ("7", None),
            ("16", None),
            ("0", None),
            ("", None),
            ("+9", None),
            ("9.0", None),
            ("255", None),
            ("264", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(window_value(v), r, "{v:?}");
        }
    }

    /// RFC 7692 §7.1: the parameters, with and without values.
    #[test]
    fn param_rules() {
        let p = |s: &str, offer| {
            parse_params(&exts(&format!("permessage-deflate{s}"))[0].params, offer)
        };
        assert_eq!(
            p("; server_no_context_takeover; CLIENT_NO_CONTEXT_TAKEOVER; server_max_window_bits=10; client_max_window_bits", true),
            Ok(Parsed {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(10),
                client_max_window_bits: Some(None),
            })
        );
        assert_eq!(
            p("; client_max_window_bits=\"9\"", false)
                .unwrap()
                .client_max_window_bits,
            Some(Some(9))
        );
        assert_eq!(
            p("; client_max_window_bits", false),
            Err(ParamError::BadValue {
                name: "client_max_window_bits".into(),
                value: None
            })
        );
        assert_eq!(
            p("; server_max_window_bits", true),
            Err(ParamError::BadValue {
                name: "server_max_window_bits".into(),
                value: None
            })
        );
        assert_eq!(
            p("; server_no_context_takeover=1", true),
            Err(ParamError::BadValue {
                name: "server_no_context_takeover".into(),
                value: Some("1".into())
            })
        );
        assert_eq!(
            p("; client_no_context_takeover=\"x\"", true),
            Err(ParamError::BadValue {
                name: "client_no_context_takeover".into(),
                value: Some("x".into())
            })
        );
        assert_eq!(
            p("; server_max_window_bits=7", true),
            Err(ParamError::BadValue {
                name: "server_max_window_bits".into(),
                value: Some("7".into())
            })
        );
        assert_eq!(
            p("; client_max_window_bits=16", true),
            Err(ParamError::BadValue {
                name: "client_max_window_bits".into(),
                value: Some("16".into())
            })
        );
        assert_eq!(p("; x=1", true), Err(ParamError::Unknown("x".into())));
        assert_eq!(
            p(
                "; server_no_context_takeover; Server_No_Context_Takeover",
                true
            ),
            Err(ParamError::Duplicate("Server_No_Context_Takeover".into()))
        );
        assert_eq!(
            p("; server_max_window_bits=9; server_max_window_bits=9", true),
            Err(ParamError::Duplicate("server_max_window_bits".into()))
        );
        assert_eq!(
            ParamError::BadValue {
                name: "a".into(),
                value: None
            }
            .to_string(),
            "permessage-deflate parameter 'a' needs a value"
        );
        assert_eq!(
            ParamError::BadValue {
                name: "a".into(),
                value: Some("b".into())
            }
            .to_string(),
            "invalid value 'b' of permessage-deflate parameter 'a'"
        );
    }

    #[test]
    fn offers() {
        let mut c = DeflateConfig::default();
        assert_eq!(
            client_offer(&c),
            "permessage-deflate; client_max_window_bits"
        );
        c.server_no_context_takeover = true;
        c.client_no_context_takeover = true;
        c.server_max_window_bits = Some(10);
        c.client_max_window_bits = Some(12);
        assert_eq!(
            client_offer(&c),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        );
        // Out-of-range settings are clamped (check() reports them).
        c.server_max_window_bits = Some(3);
        c.client_max_window_bits = Some(200);
        assert!(client_offer(&c).ends_with("server_max_window_bits=8; client_max_window_bits=15"));
        // Our own offer is a valid offer, which our server accepts.
        for cfg in [DeflateConfig::default(), c.clone()] {
            let offer = client_offer(&cfg);
            let a = server(&DeflateConfig::default(), &offer).expect("accepted");
            assert_eq!(client(&cfg, &a.0).unwrap(), Some(a.1));
        }
    }

    /// RFC 7692 §5, §7.1: what a client accepts in a response.
    #[test]
    fn client_accepts() {
        let d = DeflateConfig::default();
        assert_eq!(client(&d, ""), Ok(None));
        assert_eq!(
            client(&d, "permessage-deflate"),
            Ok(Some(params(false, false, 15, 15)))
        );
        assert_eq!(
            client(&d, "Permessage-Deflate"),
            Ok(Some(params(false, false, 15, 15)))
        );
        assert_eq!(
            client(&d, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8; client_max_window_bits=9"),
            Ok(Some(params(true, true, 8, 9)))
        );
        // Our own limits: echoed or lowered, or (client's) left out.
        let c = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(12),
            ..DeflateConfig::default()
        };
        assert_eq!(
            client(
                &c,
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
            ),
            Ok(Some(params(true, true, 10, 12)))
        );
        assert_eq!(
            client(&c, "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; client_max_window_bits=11"),
            Ok(Some(params(true, true, 9, 11)))
        );
        // Several header lines, empty elements.
        let h = vec![
            ("Sec-WebSocket-Extensions".to_string(), " , ".to_string()),
            (
                "sec-websocket-extensions".to_string(),
                "permessage-deflate;client_max_window_bits=10".to_string(),
            ),
        ];
        assert_eq!(
            accept_response_headers(&d, &h),
            Ok(Some(params(false, false, 15, 10)))
        );
    }

    /// RFC 7692 §5, §7.1 and RFC 6455 §4.1: responses that fail the handshake.
    #[test]
    fn client_refuses() {
        let d = DeflateConfig::default();
        assert_eq!(
            client(&d, "x-foo"),
            Err(NegotiationError::NotOffered("x-foo".into()))
        );
        assert_eq!(
            client(&d, "permessage-deflate, x-foo"),
            Err(NegotiationError::NotOffered("x-foo".into()))
        );
        assert_eq!(
            client(&d, "permessage-deflate, permessage-deflate"),
            Err(NegotiationError::Duplicate)
        );
        assert_eq!(
            client(&d, "permessage-deflate; client_max_window_bits"),
            Err(NegotiationError::Param(ParamError::BadValue {
                name: "client_max_window_bits".into(),
                value: None
            }))
        );
        for bad in [
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=true",
            "permessage-deflate; foo",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert!(
                matches!(client(&d, bad), Err(NegotiationError::Param(_))),
                "{bad}"
            );
        }
        let c = DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert_eq!(
            client(&c, "permessage-deflate"),
            Err(NegotiationError::Missing(SERVER_NO_CONTEXT_TAKEOVER))
        );
        let c = DeflateConfig {
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(12),
            ..DeflateConfig::default()
        };
        assert_eq!(
            client(&c, "permessage-deflate"),
            Err(NegotiationError::Missing(SERVER_MAX_WINDOW_BITS))
        );
        assert_eq!(
            client(&c, "permessage-deflate; server_max_window_bits=11"),
            Err(NegotiationError::WindowTooLarge {
                param: SERVER_MAX_WINDOW_BITS,
                limit: 10,
                got: 11
            })
        );
        assert_eq!(
            client(
                &c,
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=13"
            ),
            Err(NegotiationError::WindowTooLarge {
                param: CLIENT_MAX_WINDOW_BITS,
                limit: 12,
                got: 13
            })
        );
        assert!(matches!(
            accept_response_headers(&d, &[("Sec-WebSocket-Extensions".into(), "a b".into())]),
            Err(NegotiationError::Syntax(_))
        ));
        // Error texts (the handshake's -errorcode WEBSOCKET HANDSHAKE EXTENSION message).
        assert_eq!(
            NegotiationError::NotOffered("x".into()).to_string(),
            "Server selected an extension that was not offered: 'x'"
        );
        assert_eq!(
            NegotiationError::Missing(SERVER_NO_CONTEXT_TAKEOVER).to_string(),
            "Server's permessage-deflate response lacks 'server_no_context_takeover', which was offered"
        );
        assert_eq!(
            NegotiationError::WindowTooLarge { param: SERVER_MAX_WINDOW_BITS, limit: 10, got: 11 }.to_string(),
            "Server's permessage-deflate response has server_max_window_bits=11, more than the 10 offered"
        );
        assert_eq!(
            NegotiationError::Param(ParamError::Unknown("x".into())).to_string(),
            "Server's permessage-deflate response: unknown permessage-deflate parameter 'x'"
        );
    }

    /// RFC 7692 §5, §7.1: what the server answers.
    #[test]
    fn server_accepts() {
        let d = DeflateConfig::default();
        assert_eq!(server(&d, ""), None);
        assert_eq!(server(&d, "x-webkit-deflate-frame"), None);
        assert_eq!(
            server(&d, "permessage-deflate"),
            Some(("permessage-deflate".into(), params(false, false, 15, 15)))
        );
        assert_eq!(
            server(&d, "permessage-deflate; client_max_window_bits"),
            Some(("permessage-deflate".into(), params(false, false, 15, 15)))
        );
        // The client limits itself: nothing to answer.
        assert_eq!(
            server(&d, "permessage-deflate; client_max_window_bits=10"),
            Some(("permessage-deflate".into(), params(false, false, 15, 10)))
        );
        // Requests are echoed; the client's hint is taken up.
        assert_eq!(
            server(&d, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8"),
            Some((
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8".into(),
                params(true, true, 8, 15)
            ))
        );
        // Our own settings.
        let c = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(12),
            client_max_window_bits: Some(11),
            ..DeflateConfig::default()
        };
        assert_eq!(
            server(&c, "permessage-deflate; client_max_window_bits"),
            Some((
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11".into(),
                params(true, true, 12, 11)
            ))
        );
        assert_eq!(
            server(
                &c,
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"
            )
            .unwrap()
            .1,
            params(true, true, 10, 9)
        );
        assert_eq!(
            server(&c, "permessage-deflate; server_max_window_bits=14; client_max_window_bits=13").unwrap().0,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11"
        );
        // A client that cannot be limited is still accepted.
        assert_eq!(
            server(&c, "permessage-deflate").unwrap().0,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"
        );
        // Every response is one our client accepts for the matching offer.
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=15",
        ] {
            let (resp, p) = server(&c, offer).unwrap();
            let o = parse_params(&exts(offer)[0].params, true).unwrap();
            let cc = DeflateConfig {
                server_no_context_takeover: o.server_no_context_takeover,
                server_max_window_bits: o.server_max_window_bits,
                client_max_window_bits: o.client_max_window_bits.flatten(),
                ..DeflateConfig::default()
            };
            assert_eq!(client(&cc, &resp), Ok(Some(p)), "{offer}");
        }
    }

    /// RFC 7692 §5: invalid offers are declined, the next alternative is
    /// considered.
    #[test]
    fn server_declines_invalid_offers() {
        let d = DeflateConfig::default();
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert_eq!(server(&d, bad), None, "{bad}");
            let (resp, p) = server(
                &d,
                &format!("{bad}, x-other, permessage-deflate; client_max_window_bits=11"),
            )
            .unwrap();
            assert_eq!(
                (resp.as_str(), p),
                ("permessage-deflate", params(false, false, 15, 11)),
                "{bad}"
            );
        }
        // The first acceptable alternative wins.
        assert_eq!(
            server(
                &d,
                "permessage-deflate; server_max_window_bits=10, permessage-deflate"
            )
            .unwrap()
            .0,
            "permessage-deflate; server_max_window_bits=10"
        );
        assert!(
            negotiate_server_headers(&d, &[("Sec-WebSocket-Extensions".into(), "a;".into())])
                .is_err()
        );
        assert_eq!(
            negotiate_server_headers(
                &d,
                &[(
                    "Sec-WebSocket-Extensions".into(),
                    "permessage-deflate".into()
                )]
            )
            .unwrap()
            .map(|a| a.response),
            Some("permessage-deflate".into())
        );
        assert_eq!(negotiate_server_headers(&d, &[]), Ok(None));
    }

    #[test]
    fn params_by_role() {
        let p = params(true, false, 9, 12);
        assert!(p.local_no_context_takeover(Role::Server));
        assert!(!p.remote_no_context_takeover(Role::Server));
        assert!(!p.local_no_context_takeover(Role::Client));
        assert!(p.remote_no_context_takeover(Role::Client));
        assert_eq!(p.local_max_window_bits(Role::Server), 9);
        assert_eq!(p.remote_max_window_bits(Role::Server), 12);
        assert_eq!(p.local_max_window_bits(Role::Client), 12);
        assert_eq!(p.remote_max_window_bits(Role::Client), 9);
    }
}
