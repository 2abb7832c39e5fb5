//! permessage-deflate settings (RFC 7692): the interpreter's defaults
//! (`::websocket::deflate`), and the `-deflate` value `open` and `live`
//! take: a boolean (on with the defaults, or off), or option/value pairs
//! over the defaults.

use super::{wrong_args, State};
use crate::proto::deflate::{DeflateConfig, DeflateParams};
use crate::tcl::{CmdResult, Interp, Obj, ObjRef, TclError};

/// Whether to negotiate permessage-deflate, and with what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub enable: bool,
    pub config: DeflateConfig,
}

impl Default for Settings {
    /// On, as browsers, node's ws and Python's websockets have it.
    fn default() -> Settings {
        Settings {
            enable: true,
            config: DeflateConfig::default(),
        }
    }
}

impl Settings {
    /// The configuration to negotiate with, if enabled.
    pub fn offered(&self) -> Option<DeflateConfig> {
        self.enable.then(|| self.config.clone())
    }

    /// The settings as `::websocket::deflate` reports them.
    fn describe(&self) -> Obj {
        let c = &self.config;
        let bits = |b: Option<u8>| b.map(|b| b.to_string()).unwrap_or_default();
        let pairs: [(&str, String); 9] = [
            ("-enable", (self.enable as u8).to_string()),
            ("-threshold", c.threshold.to_string()),
            ("-level", c.level.to_string()),
            ("-memlevel", c.mem_level.to_string()),
            ("-window", c.window_bits.to_string()),
            (
                "-server_no_context_takeover",
                (c.server_no_context_takeover as u8).to_string(),
            ),
            (
                "-client_no_context_takeover",
                (c.client_no_context_takeover as u8).to_string(),
            ),
            ("-server_max_window_bits", bits(c.server_max_window_bits)),
            ("-client_max_window_bits", bits(c.client_max_window_bits)),
        ];
        let mut words = Vec::with_capacity(pairs.len() * 2);
        for (k, v) in pairs {
            words.push(Obj::string(k));
            words.push(Obj::string(&v));
        }
        Obj::list(&words)
    }
}

const OPTIONS: &str =
    "-enable, -threshold, -level, -memlevel, -window, -server_no_context_takeover, \
    -client_no_context_takeover, -server_max_window_bits or -client_max_window_bits";

fn bad(msg: String) -> TclError {
    TclError::ws(msg, &["DEFLATE"])
}

fn int_in(interp: Interp, v: &Obj, name: &str, lo: i64, hi: i64) -> Result<i64, TclError> {
    match v.borrow().get_wide(Some(interp)) {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(bad(format!("{name} {n} is out of range ({lo}-{hi})"))),
        None => Err(TclError::InInterp),
    }
}

fn bits_or_none(interp: Interp, v: &Obj, name: &str) -> Result<Option<u8>, TclError> {
    if v.to_string_lossy().trim().is_empty() {
        return Ok(None);
    }
    int_in(interp, v, name, 8, 15).map(|n| Some(n as u8))
}

fn boolean(interp: Interp, v: &Obj) -> Result<bool, TclError> {
    v.borrow()
        .get_boolean(Some(interp))
        .ok_or(TclError::InInterp)
}

/// `base` with the option/value pairs of `words` applied: all of them or,
/// at the first bad one, none (the error).
fn apply(interp: Interp, base: &Settings, words: &[Obj]) -> Result<Settings, TclError> {
    if !words.len().is_multiple_of(2) {
        return Err(bad(format!(
            "missing value for {}",
            words
                .last()
                .map(|w| w.to_string_lossy())
                .unwrap_or_default()
        )));
    }
    let mut s = base.clone();
    for pair in words.chunks(2) {
        let (k, v) = (pair[0].to_string_lossy(), &pair[1]);
        let c = &mut s.config;
        match k.as_str() {
            "-enable" => s.enable = boolean(interp, v)?,
            "-threshold" => c.threshold = int_in(interp, v, &k, 0, i64::MAX)? as usize,
            "-level" => c.level = int_in(interp, v, &k, 0, 9)? as u8,
            "-memlevel" => c.mem_level = int_in(interp, v, &k, 1, 9)? as u8,
            "-window" => c.window_bits = int_in(interp, v, &k, 8, 15)? as u8,
            "-server_no_context_takeover" => c.server_no_context_takeover = boolean(interp, v)?,
            "-client_no_context_takeover" => c.client_no_context_takeover = boolean(interp, v)?,
            "-server_max_window_bits" => c.server_max_window_bits = bits_or_none(interp, v, &k)?,
            "-client_max_window_bits" => c.client_max_window_bits = bits_or_none(interp, v, &k)?,
            _ => {
                return Err(bad(format!(
                    "unknown deflate option \"{k}\": use {OPTIONS}"
                )))
            }
        }
    }
    s.config.check().map_err(|e| bad(e.to_string()))?;
    Ok(s)
}

/// A `-deflate` value: a boolean, or option/value pairs over the
/// interpreter's defaults (on unless they say `-enable 0`).
pub fn parse_value(st: &State, interp: Interp, v: ObjRef) -> Result<Settings, TclError> {
    let defaults = st.deflate_defaults.borrow().clone();
    if let Some(on) = v.get_boolean(None) {
        return Ok(Settings {
            enable: on,
            ..defaults
        });
    }
    let words = v.list_elements(Some(interp)).ok_or(TclError::InInterp)?;
    apply(
        interp,
        &Settings {
            enable: true,
            ..defaults
        },
        &words,
    )
}

/// `deflate ?option value ...?`: sets the interpreter's defaults for
/// permessage-deflate (what `open` and `live` use without `-deflate`) and
/// returns them all.
pub fn deflate(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len().is_multiple_of(2) {
        return Err(wrong_args(objv, "?option value ...?"));
    }
    let words: Vec<Obj> = objv[1..].iter().map(|o| o.to_owned()).collect();
    let new = apply(interp, &st.deflate_defaults.borrow(), &words)?;
    let out = new.describe();
    *st.deflate_defaults.borrow_mut() = new;
    Ok(Some(out))
}

/// What was negotiated, as a `Sec-WebSocket-Extensions` value (for
/// `conninfo $sock extensions`).
pub fn describe_params(p: &DeflateParams) -> String {
    let mut s = String::from("permessage-deflate");
    if p.server_no_context_takeover {
        s.push_str("; server_no_context_takeover");
    }
    if p.client_no_context_takeover {
        s.push_str("; client_no_context_takeover");
    }
    s.push_str(&format!(
        "; server_max_window_bits={}; client_max_window_bits={}",
        p.server_max_window_bits, p.client_max_window_bits
    ));
    s
}
