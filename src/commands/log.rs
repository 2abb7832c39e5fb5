//! `::websocket::loglevel` and log output in the format of tcllib's logger:
//! `[<clock format [clock seconds]>] [websocket] [<level>] '<text>'` on stdout.

use crate::tcl::interp::write_stdout;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warn",
    "error",
    "critical",
    "alert",
    "emergency",
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Debug = 0,
    Info,
    Notice,
    Warn,
    Error,
}

/// The level in force. tcllib keeps it per package (one value for all).
static CURRENT: AtomicUsize = AtomicUsize::new(Level::Error as usize);

pub fn current() -> &'static str {
    LEVELS[CURRENT.load(Ordering::Relaxed)]
}

/// Sets the level if `name` is one of logger's levels; others are ignored,
/// as tcllib's `catch {${log}::setlevel $loglvl}` ignores them.
pub fn set(name: &str) {
    if let Some(i) = LEVELS.iter().position(|l| *l == name) {
        CURRENT.store(i, Ordering::Relaxed);
    }
}

pub fn enabled(level: Level) -> bool {
    level as usize >= CURRENT.load(Ordering::Relaxed)
}

/// Writes one log line if `level` is enabled. Call on an interpreter thread.
pub fn log(level: Level, text: &str) {
    if enabled(level) {
        write_stdout(&format!(
            "[{}] [websocket] [{}] '{}'\n",
            crate::sys::local_time(),
            LEVELS[level as usize],
            text
        ));
    }
}
