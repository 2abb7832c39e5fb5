//! `::websocket::loglevel` and log output in the format of tcllib's logger:
//! `[<clock format [clock seconds]>] [websocket] [<level>] '<text>'` on stdout.

use crate::tcl::interp::write_stdout;
use std::cell::Cell;

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

/// The log level of one interpreter: tcllib's logger is per interpreter,
/// so each interpreter's `loglevel` is its own.
pub struct Logger {
    level: Cell<usize>,
}

impl Default for Logger {
    fn default() -> Logger {
        Logger {
            level: Cell::new(Level::Error as usize),
        }
    }
}

impl Logger {
    pub fn current(&self) -> &'static str {
        LEVELS[self.level.get()]
    }

    /// Sets the level if `name` is one of logger's levels; others are ignored,
    /// as tcllib's `catch {${log}::setlevel $loglvl}` ignores them.
    pub fn set(&self, name: &str) {
        if let Some(i) = LEVELS.iter().position(|l| *l == name) {
            self.level.set(i);
        }
    }

    pub fn enabled(&self, level: Level) -> bool {
        level as usize >= self.level.get()
    }

    /// Writes one log line if `level` is enabled.
    pub fn log(&self, level: Level, text: &str) {
        if self.enabled(level) {
            write_stdout(&format!(
                "[{}] [websocket] [{}] '{}'\n",
                crate::sys::local_time(),
                LEVELS[level as usize],
                text
            ));
        }
    }
}
