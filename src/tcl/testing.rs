//! A real Tcl interpreter for the unit tests, with this package loaded. The
//! extension never links Tcl (it binds the stubs table at `load`); the tests
//! load the shared library of the Tcl the crate was built for (build.rs
//! passes its path as WS_TEST_TCL_LIB) with dlopen, make an interpreter on
//! the test's thread and call `Websocket_Init` on it, as `load` would.

use super::interp::Interp;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Tcl_Size: int in Tcl 8.6, ptrdiff_t in Tcl 9.
#[cfg(tcl9)]
type Size = isize;
#[cfg(not(tcl9))]
type Size = c_int;

struct TclLib {
    create_interp: unsafe extern "C" fn() -> *mut c_void,
    delete_interp: unsafe extern "C" fn(*mut c_void),
    eval_ex: unsafe extern "C" fn(*mut c_void, *const c_char, Size, c_int) -> c_int,
    do_one_event: unsafe extern "C" fn(c_int) -> c_int,
    init: unsafe extern "C" fn(*mut c_void) -> c_int,
}

// SAFETY: plain function pointers into a library that stays loaded.
unsafe impl Send for TclLib {}
unsafe impl Sync for TclLib {}

const TCL_ALL_EVENTS: c_int = !(1 << 1); // ~TCL_DONT_WAIT
const TCL_DONT_WAIT: c_int = 1 << 1;

// The field types say what each symbol is.
#[allow(clippy::missing_transmute_annotations)]
fn lib() -> &'static TclLib {
    static LIB: OnceLock<TclLib> = OnceLock::new();
    LIB.get_or_init(|| {
        let path = CString::new(env!("WS_TEST_TCL_LIB")).unwrap();
        // SAFETY: dlopen/dlsym with valid C strings; the symbols are Tcl's
        // public API with these C signatures.
        unsafe {
            let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            assert!(
                !h.is_null(),
                "cannot load {}: {}",
                env!("WS_TEST_TCL_LIB"),
                CStr::from_ptr(libc::dlerror()).to_string_lossy()
            );
            let sym = |name: &str| {
                let n = CString::new(name).unwrap();
                let p = libc::dlsym(h, n.as_ptr());
                assert!(!p.is_null(), "{name} not found");
                p
            };
            let find_executable: unsafe extern "C" fn(*const c_char) =
                std::mem::transmute(sym("Tcl_FindExecutable"));
            find_executable(std::ptr::null());
            TclLib {
                create_interp: std::mem::transmute(sym("Tcl_CreateInterp")),
                delete_interp: std::mem::transmute(sym("Tcl_DeleteInterp")),
                eval_ex: std::mem::transmute(sym("Tcl_EvalEx")),
                do_one_event: std::mem::transmute(sym("Tcl_DoOneEvent")),
                init: std::mem::transmute(sym("Tcl_Init")),
            }
        }
    })
}

/// An interpreter of the calling thread with the package loaded; deleted
/// when dropped.
pub struct TestInterp {
    raw: *mut c_void,
}

impl TestInterp {
    pub fn new() -> TestInterp {
        let l = lib();
        // SAFETY: Tcl is initialised (Tcl_FindExecutable); the interpreter
        // is used on this thread only.
        let raw = unsafe {
            let raw = (l.create_interp)();
            // The script library (clock, auto_path): not needed by every
            // test, so a failure here is not fatal.
            let _ = (l.init)(raw);
            raw
        };
        assert_eq!(crate::Websocket_Init(raw), 0, "Websocket_Init failed");
        TestInterp { raw }
    }

    pub fn interp(&self) -> Interp {
        // SAFETY: live interpreter of this thread.
        unsafe { Interp::from_raw(self.raw as *mut _) }
    }

    /// Evaluates `script` at global level: its result, or its error message.
    pub fn eval(&self, script: &str) -> Result<String, String> {
        let c = CString::new(script).unwrap();
        let l = lib();
        // SAFETY: live interpreter of this thread.
        let code = unsafe {
            (l.eval_ex)(self.raw, c.as_ptr(), -1, 0x20000 /* TCL_EVAL_GLOBAL */)
        };
        let res = self.interp().result().to_string_lossy();
        if code == 0 {
            Ok(res)
        } else {
            Err(res)
        }
    }

    /// `eval`, which must succeed.
    pub fn ok(&self, script: &str) -> String {
        self.eval(script)
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Runs the event loop until `done` holds, at most `timeout`; whether it did.
    pub fn run_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            // SAFETY: Tcl's event loop on the interpreter's thread.
            let worked = unsafe { (lib().do_one_event)(TCL_ALL_EVENTS | TCL_DONT_WAIT) };
            if worked == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Default for TestInterp {
    fn default() -> TestInterp {
        TestInterp::new()
    }
}

impl Drop for TestInterp {
    fn drop(&mut self) {
        // SAFETY: our interpreter, not used after this.
        unsafe { (lib().delete_interp)(self.raw) }
    }
}
