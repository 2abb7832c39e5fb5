//! permessage-deflate settings (RFC 7692): the interpreter's defaults
//! (`::websocket::deflate`), and the `-deflate` value `open` and `live`
//! take: a boolean (on with the defaults, or off), or option/value pairs
//! over the defaults.

use super::log::Level;
use super::{wrong_args, Conn, State};
use crate::proto::deflate::{DeflateConfig, DeflateParams};
use crate::tcl::callback::{self, Registration};
use crate::tcl::{CmdResult, Interp, Obj, ObjRef, TclError};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

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
        let secs = |d: Option<Duration>| match d {
            None => "0".to_string(),
            Some(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
            Some(d) => d.as_secs_f64().to_string(),
        };
        let pairs: [(&str, String); 10] = [
            ("-enable", (self.enable as u8).to_string()),
            ("-threshold", c.threshold.to_string()),
            ("-level", c.level.to_string()),
            ("-memlevel", c.mem_level.to_string()),
            ("-window", c.window_bits.to_string()),
            ("-idlerelease", secs(c.idle_release)),
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
    "-enable, -threshold, -level, -memlevel, -window, -idlerelease, -server_no_context_takeover, \
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

/// Seconds, fractions allowed; 0 is None (never).
fn seconds_or_never(interp: Interp, v: &Obj, name: &str) -> Result<Option<Duration>, TclError> {
    let secs = v
        .borrow()
        .get_double(Some(interp))
        .ok_or(TclError::InInterp)?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(bad(format!(
            "{name} {secs} is out of range (0-1000000000 seconds)"
        )));
    }
    // At least 1 ms: a positive value is never "at once" (nor 0, "never").
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs).max(Duration::from_millis(1))))
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
            "-idlerelease" => c.idle_release = seconds_or_never(interp, v, &k)?,
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

/// Compressors kept for context takeover, watched so that one left unused
/// for its connection's `-idlerelease` is freed (~160 KiB each): one Tcl
/// timer for the interpreter, set for the earliest release due, and only
/// while some connection holds a compressor.
#[derive(Default)]
pub struct IdleCompressors {
    /// (connection id, socket name) of the connections watched.
    watched: RefCell<Vec<(u64, Rc<str>)>>,
    /// The timer, and when it fires.
    timer: RefCell<Option<(Registration, Instant)>>,
}

impl IdleCompressors {
    /// After a send that used `conn`'s compressor: stamps it, and watches
    /// the connection if its compressor may be released.
    pub fn used(&self, st: &State, conn: &mut Conn, now: Instant) {
        let Some(after) = conn
            .deflate
            .as_ref()
            .filter(|d| d.allocated().0)
            .and_then(|d| d.idle_release())
        else {
            return;
        };
        conn.compressed_at = Some(now);
        if !conn.compressor_watched {
            conn.compressor_watched = true;
            self.watched.borrow_mut().push((conn.id, conn.name.clone()));
            self.wake_at(st, now + after);
        }
    }

    /// Makes sure the timer fires by `due`.
    fn wake_at(&self, st: &State, due: Instant) {
        let mut timer = self.timer.borrow_mut();
        if let Some((t, at)) = timer.as_ref() {
            if t.is_pending() && *at <= due {
                return;
            }
        }
        if let Some((t, _)) = timer.take() {
            t.cancel();
        }
        let ms = due
            .saturating_duration_since(Instant::now())
            .as_millis()
            .saturating_add(1)
            .min(u32::MAX as u128) as u32;
        let me = st.me.clone();
        let reg = callback::after(
            ms,
            Box::new(move || {
                if let Some(st) = me.upgrade() {
                    st.idle_compressors.sweep(&st);
                }
            }),
        );
        *timer = Some((reg, due));
    }

    /// Frees the compressors whose time has come; sets the timer for the
    /// next one.
    fn sweep(&self, st: &State) {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut released = 0usize;
        {
            let Ok(mut conns) = st.conns.try_borrow_mut() else {
                // Not while a command holds the connections (cannot happen
                // today: none runs the event loop meanwhile); soon after.
                self.wake_at(st, now + Duration::from_millis(100));
                return;
            };
            self.watched.borrow_mut().retain(|(id, name)| {
                let Some(conn) = conns.get_mut(name).filter(|c| c.id == *id) else {
                    return false;
                };
                let due = match (&conn.deflate, conn.compressed_at) {
                    (Some(d), Some(at)) if d.allocated().0 => d.idle_release().map(|t| at + t),
                    _ => None,
                };
                let (Some(due), Some(d)) = (due, conn.deflate.as_mut()) else {
                    conn.compressor_watched = false;
                    return false;
                };
                // Due and not inside a fragmented message: freed.
                let due = if now < due {
                    due
                } else if d.release_compressor() {
                    conn.compressor_watched = false;
                    released += 1;
                    return false;
                } else {
                    now + d.idle_release().unwrap_or(Duration::from_secs(1))
                };
                next = Some(next.map_or(due, |n| n.min(due)));
                true
            });
        }
        // The timer that ran this is spent; wake_at sets the next.
        self.timer.borrow_mut().take();
        if released > 0 && st.logger.enabled(Level::Debug) {
            st.logger.log(
                Level::Debug,
                &format!("Freed {released} idle compressor(s)"),
            );
        }
        if let Some(due) = next {
            self.wake_at(st, due);
        }
    }

    /// Stops watching (the interpreter's end).
    pub fn stop(&self) {
        self.watched.borrow_mut().clear();
        if let Some((t, _)) = self.timer.borrow_mut().take() {
            t.cancel();
        }
    }
}
