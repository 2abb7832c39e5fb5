//! websocket: RFC 6455 for Tcl, a drop-in replacement for tcllib's
//! pure-Tcl `websocket` package.
//!
//! Layers, each looking only down:
//! - `proto`: the protocol as sans-I/O code (frames, handshake, close codes, UTF-8).
//! - `engine`: tokio tasks per connection and the transports.
//! - `tcl`: the binding layer (C shim over the stubs table, event bridge).
//! - `commands`: the `::websocket::*` commands.
//! - `sys`: the few OS calls beyond std and tokio.

pub mod commands;
pub mod engine;
pub mod proto;
pub mod sys;
pub mod tcl;

use std::os::raw::{c_int, c_void};

/// The package version: above tcllib's 1.4.2 so `package require websocket`
/// and `package require websocket 1.4` pick this one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entry point for `load`: binds the stubs, registers the commands for this
/// interpreter and provides the package.
// Tcl calls this with its interpreter; the pointer is only handed to the
// binding layer, which is where it is dereferenced.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[no_mangle]
pub extern "C" fn Websocket_Init(interp: *mut c_void) -> c_int {
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: Tcl calls us with the live interpreter doing the `load`.
        if !unsafe { tcl::init_stubs(interp) } {
            return 1;
        }
        // SAFETY: stubs are bound; the interpreter is live on this thread.
        let i = unsafe { tcl::Interp::from_raw(interp as *mut _) };
        match commands::init(i) {
            Ok(()) => 0,
            Err(e) => i.raise(e),
        }
    });
    outcome.unwrap_or(1)
}
