//! The binding layer: the C shim over Tcl's stubs table and the safe Rust
//! wrappers around it. This is the only place with `unsafe` FFI.

pub mod bridge;
pub mod callback;
pub mod channel;
pub mod event;
mod ffi;
pub mod interp;
pub mod obj;
#[cfg(test)]
pub mod testing;
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
