//! The binding layer: the C shim over Tcl's stubs table and the safe Rust
//! wrappers around it. This is the only place with `unsafe` FFI.

pub mod bridge;
pub mod channel;
pub mod event;
mod ffi;
pub mod interp;
pub mod obj;
pub mod utf;

pub use event::{Consumer, Mailbox, ThreadId};
pub use interp::{CmdResult, Interp, TclError};
pub use obj::{Obj, ObjRef};

/// Binds the stubs table for `interp`; false if this Tcl is not 8.6-compatible.
///
/// # Safety
/// `interp` must be the live interpreter `Websocket_Init` was called with.
pub unsafe fn init_stubs(interp: *mut std::ffi::c_void) -> bool {
    ffi::ws_init_stubs(interp as *mut ffi::Tcl_Interp) != 0
}

/// Runs `f` once when the process exits through Tcl (`exit`).
pub fn at_exit(f: unsafe extern "C" fn(*mut std::ffi::c_void)) {
    // SAFETY: registering a static function.
    unsafe { ffi::ws_create_exit_handler(f, std::ptr::null_mut()) }
}

/// Runs `f(data)` when the calling thread is finalized by Tcl.
pub fn at_thread_exit(f: unsafe extern "C" fn(*mut std::ffi::c_void), data: *mut std::ffi::c_void) {
    // SAFETY: registering a static function with caller-owned data.
    unsafe { ffi::ws_create_thread_exit_handler(f, data) }
}

/// Runs `f(data)` once when the event loop is next idle (Tcl_DoWhenIdle).
pub fn when_idle(f: unsafe extern "C" fn(*mut std::ffi::c_void), data: *mut std::ffi::c_void) {
    // SAFETY: registering a static function with caller-owned data.
    unsafe { ffi::ws_do_when_idle(f, data) }
}

/// Cancels a `when_idle` registration.
pub fn cancel_idle(f: unsafe extern "C" fn(*mut std::ffi::c_void), data: *mut std::ffi::c_void) {
    // SAFETY: as above.
    unsafe { ffi::ws_cancel_idle(f, data) }
}
