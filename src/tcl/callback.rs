//! Safe registration of Rust closures as Tcl callbacks: interpreter
//! deletion, process and thread exit, idle time, timers. Panics stop here.

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

unsafe extern "C" fn run_fn(cd: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: cd is the fn pointer given to at_exit or at_thread_exit.
        let f: fn() = std::mem::transmute::<*mut c_void, fn()>(cd);
        f();
    }));
}

/// Runs `f` when the process exits through Tcl (`exit`).
pub fn at_exit(f: fn()) {
    // SAFETY: a plain fn pointer travels as the clientData.
    unsafe { ffi::ws_create_exit_handler(run_fn, f as *mut c_void) }
}

/// Runs `f` when the calling thread ends through Tcl, for good (no handle,
/// nothing allocated).
pub fn at_thread_exit(f: fn()) {
    // SAFETY: a plain fn pointer travels as the clientData.
    unsafe { ffi::ws_create_thread_exit_handler(run_fn, f as *mut c_void) }
}

/// A closure Tcl holds until it runs it once or it is cancelled.
struct OneShot {
    f: Option<Once>,
    pending: Rc<Cell<bool>>,
}

unsafe extern "C" fn run_one_shot(cd: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: boxed by register; Tcl calls it once unless
        // Registration::cancel removed it first.
        let mut shot = Box::from_raw(cd as *mut OneShot);
        shot.pending.set(false);
        if let Some(f) = shot.f.take() {
            f();
        }
    }));
}

type Hook = unsafe extern "C" fn(ffi::ExitProc, *mut c_void);

/// How a registration is taken back.
enum Unregister {
    Hook(Hook),
    Timer(*mut c_void),
}

/// A callback registered with `when_idle`, `on_thread_exit` or `after`.
pub struct Registration {
    cd: *mut c_void,
    pending: Rc<Cell<bool>>,
    unregister: Unregister,
}

impl Registration {
    /// True until the callback ran or was cancelled.
    pub fn is_pending(&self) -> bool {
        self.pending.get()
    }

    /// Removes the callback unless it already ran. Call on its thread.
    pub fn cancel(self) {
        if self.pending.replace(false) {
            // SAFETY: still registered, so Tcl has neither run nor freed it.
            unsafe {
                match self.unregister {
                    Unregister::Hook(unregister) => unregister(run_one_shot, self.cd),
                    Unregister::Timer(token) => ffi::ws_delete_timer(token),
                }
                drop(Box::from_raw(self.cd as *mut OneShot));
            }
        }
    }
}

fn one_shot(f: Once) -> (*mut c_void, Rc<Cell<bool>>) {
    let pending = Rc::new(Cell::new(true));
    let cd = Box::into_raw(Box::new(OneShot {
        f: Some(f),
        pending: pending.clone(),
    })) as *mut c_void;
    (cd, pending)
}

fn register(f: Once, hook: Hook, unregister: Hook) -> Registration {
    let (cd, pending) = one_shot(f);
    // SAFETY: the box is reclaimed by run_one_shot or Registration::cancel.
    unsafe { hook(run_one_shot, cd) }
    Registration {
        cd,
        pending,
        unregister: Unregister::Hook(unregister),
    }
}

/// Runs `f` once, after `ms` milliseconds (Tcl_CreateTimerHandler).
pub fn after(ms: u32, f: Once) -> Registration {
    let (cd, pending) = one_shot(f);
    let ms = ms.min(i32::MAX as u32) as std::os::raw::c_int;
    // SAFETY: the box is reclaimed by run_one_shot or Registration::cancel.
    let token = unsafe { ffi::ws_create_timer(ms, run_one_shot, cd) };
    Registration {
        cd,
        pending,
        unregister: Unregister::Timer(token),
    }
}

/// Runs `f` when the calling thread ends through Tcl (`Tcl_FinalizeThread`:
/// `thread::exit`, or the last step of `exit`).
pub fn on_thread_exit(f: Once) -> Registration {
    register(
        f,
        ffi::ws_create_thread_exit_handler,
        ffi::ws_delete_thread_exit_handler,
    )
}

/// Runs `f` once, when the event loop is next idle (Tcl_DoWhenIdle).
pub fn when_idle(f: Once) -> Registration {
    register(f, ffi::ws_do_when_idle, ffi::ws_cancel_idle)
}
