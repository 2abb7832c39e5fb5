//! Safe registration of Rust closures as Tcl callbacks: interpreter
//! deletion, process and thread exit, idle time. Panics stop here.

use super::ffi::{self, Tcl_Interp};
use super::interp::Interp;
use std::cell::Cell;
use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

type Once = Box<dyn FnOnce()>;

unsafe extern "C" fn run_once_deleted(cd: *mut c_void, _interp: *mut Tcl_Interp) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: boxed by on_delete, called once by Tcl.
        let f = Box::from_raw(cd as *mut Once);
        f();
    }));
}

/// Runs `f` when `interp` is deleted.
pub fn on_delete(interp: Interp, f: Once) {
    let cd = Box::into_raw(Box::new(f)) as *mut c_void;
    // SAFETY: live interp; the box is reclaimed by run_once_deleted.
    unsafe { ffi::ws_call_when_deleted(interp.as_ptr(), run_once_deleted, cd) }
}

unsafe extern "C" fn run_exit(cd: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: cd is the fn pointer given to at_exit.
        let f: fn() = std::mem::transmute::<*mut c_void, fn()>(cd);
        f();
    }));
}

/// Runs `f` when the process exits through Tcl (`exit`).
pub fn at_exit(f: fn()) {
    // SAFETY: a plain fn pointer travels as the clientData.
    unsafe { ffi::ws_create_exit_handler(run_exit, f as *mut c_void) }
}

unsafe extern "C" fn run_thread_exit_fn(cd: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: cd is the fn pointer given to at_thread_exit.
        let f: fn() = std::mem::transmute::<*mut c_void, fn()>(cd);
        f();
    }));
}

/// Runs `f` when the calling thread ends through Tcl, for good (no handle,
/// nothing allocated).
pub fn at_thread_exit(f: fn()) {
    // SAFETY: a plain fn pointer travels as the clientData.
    unsafe { ffi::ws_create_thread_exit_handler(run_thread_exit_fn, f as *mut c_void) }
}

struct ThreadExit {
    f: Option<Once>,
    pending: Rc<Cell<bool>>,
}

unsafe extern "C" fn run_thread_exit(cd: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: boxed by on_thread_exit; Tcl calls it once unless
        // ThreadExitCall::cancel removed it first.
        let mut te = Box::from_raw(cd as *mut ThreadExit);
        te.pending.set(false);
        if let Some(f) = te.f.take() {
            f();
        }
    }));
}

/// A registration made by `on_thread_exit`.
pub struct ThreadExitCall {
    cd: *mut c_void,
    pending: Rc<Cell<bool>>,
}

impl ThreadExitCall {
    /// Removes the handler unless it already ran. Call on its thread.
    pub fn cancel(self) {
        if self.pending.replace(false) {
            // SAFETY: still registered, so Tcl has neither run nor freed it.
            unsafe {
                ffi::ws_delete_thread_exit_handler(run_thread_exit, self.cd);
                drop(Box::from_raw(self.cd as *mut ThreadExit));
            }
        }
    }
}

/// Runs `f` when the calling thread ends through Tcl (`Tcl_FinalizeThread`:
/// `thread::exit`, or the last step of `exit`).
pub fn on_thread_exit(f: Once) -> ThreadExitCall {
    let pending = Rc::new(Cell::new(true));
    let cd = Box::into_raw(Box::new(ThreadExit {
        f: Some(f),
        pending: pending.clone(),
    })) as *mut c_void;
    // SAFETY: the box is reclaimed by run_thread_exit or ThreadExitCall::cancel.
    unsafe { ffi::ws_create_thread_exit_handler(run_thread_exit, cd) }
    ThreadExitCall { cd, pending }
}

struct Idle {
    f: Box<dyn Fn()>,
    pending: Rc<Cell<bool>>,
}

unsafe extern "C" fn run_idle(cd: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: boxed by when_idle; Tcl calls it once unless cancelled
        // (and IdleCall::cancel frees it only while still pending).
        let idle = Box::from_raw(cd as *mut Idle);
        idle.pending.set(false);
        (idle.f)();
    }));
}

/// A registration made by `when_idle`.
pub struct IdleCall {
    cd: *mut c_void,
    pending: Rc<Cell<bool>>,
}

impl IdleCall {
    /// True until the callback ran or was cancelled.
    pub fn is_pending(&self) -> bool {
        self.pending.get()
    }

    pub fn cancel(self) {
        if self.pending.replace(false) {
            // SAFETY: still registered, so Tcl has not freed nor run it.
            unsafe {
                ffi::ws_cancel_idle(run_idle, self.cd);
                drop(Box::from_raw(self.cd as *mut Idle));
            }
        }
    }
}

/// Runs `f` once, when the event loop is next idle (Tcl_DoWhenIdle).
pub fn when_idle(f: Box<dyn Fn()>) -> IdleCall {
    let pending = Rc::new(Cell::new(true));
    let cd = Box::into_raw(Box::new(Idle {
        f,
        pending: pending.clone(),
    })) as *mut c_void;
    // SAFETY: the box is reclaimed by run_idle or IdleCall::cancel.
    unsafe { ffi::ws_do_when_idle(run_idle, cd) }
    IdleCall { cd, pending }
}
