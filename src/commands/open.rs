//! `::websocket::open url handler ?-option value ...?`

use super::{log::Level, next_id, wrong_args, Conn, ConnState, State, DEFAULT_MAX_MESSAGE};
use crate::engine::client::{self, Request};
use crate::engine::conn::{self as engine_conn, Options};
use crate::engine::tls::TlsSettings;
use crate::proto::Role;
use crate::tcl::{CmdResult, Interp, Obj, ObjRef, TclError};
use std::path::PathBuf;
use std::time::Duration;

/// Without -timeout, connecting (TCP, TLS and the handshake) still ends:
/// a server that never answers must not leave the socket CONNECTING forever.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// tcllib's accepted option prefixes (http::geturl's options), plus -tls.
const ALLOWED: &[&str] = &[
    "bi*", "bl*", "ch*", "he*", "k*", "m*", "prog*", "prot*", "qu*", "s*", "ti*", "ty*", "tls",
    "deflate",
];

/// tcllib hands every allowed option it does not handle itself (all but
/// -headers, -protocol and -timeout) to http::geturl, which takes only these
/// exact names.
const GETURL_OPTIONS: &[&str] = &[
    "-binary",
    "-blocksize",
    "-channel",
    "-command",
    "-handler",
    "-headers",
    "-keepalive",
    "-method",
    "-myaddr",
    "-progress",
    "-protocol",
    "-query",
    "-queryblocksize",
    "-querychannel",
    "-queryprogress",
    "-strict",
    "-timeout",
    "-type",
    "-validate",
];

/// The passed-on options whose values http::geturl checks (its `type`
/// table), with the `string is` class it checks them with.
fn geturl_type(k: &str) -> Option<&'static str> {
    match k {
        "-binary" | "-strict" => Some("boolean"),
        "-blocksize" | "-queryblocksize" => Some("integer"),
        _ => None,
    }
}

/// What http::geturl says of an option tcllib passed on to it, if it
/// refuses it; values are checked by Tcl's own `string is ... -strict`.
fn geturl_option_error(interp: Interp, k: &str, v: ObjRef) -> Option<String> {
    if !GETURL_OPTIONS.contains(&k) {
        return Some(format!(
            "Unknown option {k}, can be: {}",
            GETURL_OPTIONS.join(", ")
        ));
    }
    let class = geturl_type(k)?;
    let words = ["string", "is", class, "-strict"].map(Obj::string);
    let ok = interp
        .eval_words(&[&words[..], &[v.to_owned()]].concat())
        .is_ok()
        && interp.result().borrow().to_string_lossy() == "1";
    interp.reset_result();
    (!ok).then(|| {
        format!(
            "Bad value for {k} ({}), must be {class}",
            v.to_string_lossy()
        )
    })
}

fn pairs(interp: Interp, list: ObjRef) -> Result<Vec<(Obj, Obj)>, TclError> {
    let elems = list.list_elements(Some(interp)).ok_or(TclError::InInterp)?;
    if elems.len() % 2 != 0 {
        // As tcllib's `array set HDR $v` reports it.
        return Err(TclError::Msg {
            msg: "list must have an even number of elements".into(),
            code: vec!["TCL".into(), "ARGUMENT".into(), "FORMAT".into()],
        });
    }
    Ok(elems
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect())
}

fn parse_tls(interp: Interp, v: ObjRef) -> Result<TlsSettings, TclError> {
    let mut s = TlsSettings::default();
    for (k, val) in pairs(interp, v)? {
        let key = k.to_string_lossy();
        let text = val.to_string_lossy();
        match key.as_str() {
            "-cafile" => s.cafile = Some(PathBuf::from(text)),
            "-cadir" => s.cadir = Some(PathBuf::from(text)),
            "-certfile" => s.certfile = Some(PathBuf::from(text)),
            "-keyfile" => s.keyfile = Some(PathBuf::from(text)),
            "-servername" => s.servername = Some(text),
            "-require" => s.require = Some(val.borrow().get_boolean(Some(interp)).ok_or(TclError::InInterp)?),
            // Accepted for scripts written for the tls package; rustls decides these.
            "-request" | "-ssl2" | "-ssl3" | "-tls1" | "-tls1.1" | "-tls1.2" | "-tls1.3" | "-cipher" | "-ciphers" | "-autoservername" => {}
            _ => {
                return Err(TclError::ws(
                    format!("{key} is not a recognised -tls option (use -cafile, -cadir, -certfile, -keyfile, -servername or -require)"),
                    &["OPTION"],
                ))
            }
        }
    }
    Ok(s)
}

pub fn open(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() < 3 {
        return Err(wrong_args(objv, "url handler ?arg ...?"));
    }
    let url = objv[1].to_string_lossy();
    let handler = objv[2].to_owned();
    let mut protocols: Vec<String> = Vec::new();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut timeout = None;
    let mut myaddr = None;
    let mut tls = TlsSettings::default();
    let mut strict = true;
    let mut deflate = st.deflate_defaults.borrow().clone();
    // http::geturl's verdict on the options tcllib would have passed on:
    // given after tcllib's own option loop, as tcllib's open does.
    let mut geturl_error: Option<String> = None;
    let (mut query_given, mut querychannel_given) = (false, false);
    let args = &objv[3..];
    let empty = Obj::string("");
    let mut i = 0;
    while i < args.len() {
        let k = args[i].to_string_lossy();
        let v = args.get(i + 1).copied().unwrap_or_else(|| empty.borrow());
        i += 2;
        let bare = k.trim_start_matches('-').to_string();
        if !ALLOWED.iter().any(|p| super::glob_match(p, &bare, true)) {
            return Err(TclError::ws(format!("{k} is not a recognised option"), &[]));
        }
        let lower = bare.to_ascii_lowercase();
        if lower == "tls" {
            tls = parse_tls(interp, v)?;
        } else if lower == "deflate" {
            deflate = super::deflate::parse_value(st, interp, v)?;
        } else if lower.starts_with("he") {
            // tcllib does `array set HDR $v`: the last value of a name wins.
            for (name, value) in pairs(interp, v)? {
                let name = name.to_string_lossy();
                let value = value.to_string_lossy();
                match headers.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => headers.push((name, value)),
                }
            }
        } else if lower.starts_with("prot") {
            let elems = v.list_elements(Some(interp)).ok_or(TclError::InInterp)?;
            protocols = elems.iter().map(|e| e.to_string_lossy()).collect();
            if let Some(bad) = protocols
                .iter()
                .find(|p| !crate::proto::handshake::is_token(p))
            {
                return Err(TclError::ws(
                    format!("Invalid protocol name '{bad}'"),
                    &["HANDSHAKE", "PROTOCOL"],
                ));
            }
        } else if lower.starts_with("ti") {
            // tcllib uses only positive integers and ignores anything else.
            if let Some(ms) = v.get_wide(None) {
                if ms > 0 {
                    timeout = Some(Duration::from_millis(ms as u64));
                }
            }
        } else {
            if geturl_error.is_none() {
                geturl_error = geturl_option_error(interp, &k, v);
            }
            match k.as_str() {
                "-myaddr" => myaddr = Some(v.to_string_lossy()),
                "-strict" => strict = v.get_boolean(None).unwrap_or(true),
                "-query" => query_given = true,
                "-querychannel" => querychannel_given = true,
                // The other http::geturl options (-method, -query, -type,
                // -keepalive, ...) have no meaning for a WebSocket.
                _ => {}
            }
        }
    }
    let opening_error = |detail: &str| {
        TclError::ws(
            format!("Error while opening WebSocket connection to {url}: {detail}"),
            &[],
        )
    };
    if geturl_error.is_none() && query_given && querychannel_given {
        geturl_error = Some("Can't combine -query and -querychannel options!".into());
    }
    if let Some(e) = geturl_error {
        return Err(opening_error(&e));
    }
    super::url::check_like_geturl(&url, strict).map_err(|e| opening_error(&e))?;

    let target = client::parse_url(&url).map_err(|e| opening_error(&e))?;
    let id = next_id();
    let name = format!("sockws{id}");
    let (handle, inbox) = engine_conn::channel(id, DEFAULT_MAX_MESSAGE);
    let mut conn = Conn::new(id, &name, handler, false, ConnState::Connecting, handle);
    conn.deflate_offer = deflate.offered();
    st.register(conn);
    let request = Request {
        target,
        protocols,
        headers,
        timeout: Some(timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)),
        myaddr,
        tls,
        deflate: deflate.offered(),
    };
    let opts = Options {
        role: Role::Client,
        keepalive: None,
        ping_payload: Vec::new(),
        deflate: None,
    };
    st.logger.log(
        Level::Debug,
        &format!("Opening WebSocket connection to {url} as {name}"),
    );
    client::spawn(request, opts, id, st.sink(), inbox);
    Ok(Some(Obj::string(&name)))
}
