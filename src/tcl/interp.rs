//! The interpreter handle, command registration with panic containment, and
//! the error type every command returns.

use super::ffi::{self, Tcl_Interp, Tcl_Obj};
use super::obj::{Obj, ObjRef};
use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A Tcl error to raise: message and `-errorcode` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TclError {
    /// Our own error: message and error code words.
    Msg { msg: String, code: Vec<String> },
    /// The interpreter already holds the error (a Tcl API call failed).
    InInterp,
}

impl TclError {
    /// An error with `-errorcode {WEBSOCKET ...kinds}`, as tcllib's ThrowError.
    pub fn ws(msg: impl Into<String>, kinds: &[&str]) -> TclError {
        let mut code = vec!["WEBSOCKET".to_string()];
        code.extend(kinds.iter().map(|s| s.to_string()));
        TclError::Msg {
            msg: msg.into(),
            code,
        }
    }

    /// A plain error (errorcode NONE), for argument mistakes Tcl itself would report so.
    pub fn plain(msg: impl Into<String>) -> TclError {
        TclError::Msg {
            msg: msg.into(),
            code: vec!["NONE".to_string()],
        }
    }
}

pub type CmdResult = Result<Option<Obj>, TclError>;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Interp(*mut Tcl_Interp);

impl Interp {
    /// # Safety
    /// `p` must be a live interpreter used on this thread.
    pub unsafe fn from_raw(p: *mut Tcl_Interp) -> Interp {
        Interp(p)
    }

    pub fn as_ptr(&self) -> *mut Tcl_Interp {
        self.0
    }

    pub fn set_result(&self, o: Obj) {
        // SAFETY: live interp; Tcl takes its own reference.
        unsafe { ffi::ws_set_result(self.0, o.as_ptr()) }
    }

    pub fn result(&self) -> Obj {
        // SAFETY: live interp.
        unsafe { Obj::from_raw(ffi::ws_get_result(self.0)) }
    }

    pub fn reset_result(&self) {
        // SAFETY: live interp.
        unsafe { ffi::ws_reset_result(self.0) }
    }

    /// Puts `err` into the interpreter and returns TCL_ERROR.
    pub fn raise(&self, err: TclError) -> c_int {
        if let TclError::Msg { msg, code } = err {
            self.set_result(Obj::string(&msg));
            let code = Obj::list_of_strings(&code);
            // SAFETY: live interp and object.
            unsafe { ffi::ws_set_error_code(self.0, code.as_ptr()) }
        }
        ffi::TCL_ERROR
    }

    /// Evaluates a command given as words, at global level. Err holds the
    /// Tcl return code (error, break, ...).
    pub fn eval_words(&self, words: &[Obj]) -> Result<(), c_int> {
        let ptrs: Vec<*mut Tcl_Obj> = words.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: live interp and objects (held by `words` for the call).
        let r = unsafe { ffi::ws_eval_objv(self.0, ptrs.len() as isize, ptrs.as_ptr(), 1) };
        if r == ffi::TCL_OK {
            Ok(())
        } else {
            Err(r)
        }
    }

    /// Evaluates a script at global level.
    pub fn eval_global(&self, script: &Obj) -> Result<(), c_int> {
        // SAFETY: live interp and object.
        let r = unsafe { ffi::ws_eval_global(self.0, script.as_ptr()) };
        if r == ffi::TCL_OK {
            Ok(())
        } else {
            Err(r)
        }
    }

    pub fn background_exception(&self, code: c_int) {
        // SAFETY: live interp.
        unsafe { ffi::ws_background_exception(self.0, code) }
    }

    pub fn is_deleted(&self) -> bool {
        // SAFETY: live (possibly being deleted) interp.
        unsafe { ffi::ws_interp_deleted(self.0) != 0 }
    }

    /// Keeps the interpreter's memory valid until `release` (Tcl_Preserve).
    pub fn preserve(&self) {
        // SAFETY: live interp.
        unsafe { ffi::ws_preserve(self.0 as *mut c_void) }
    }

    pub fn release(&self) {
        // SAFETY: paired with preserve.
        unsafe { ffi::ws_release(self.0 as *mut c_void) }
    }

    pub fn pkg_provide(&self, name: &str, version: &str) -> bool {
        let n = CString::new(name).expect("no NUL");
        let v = CString::new(version).expect("no NUL");
        // SAFETY: live interp, valid C strings.
        unsafe { ffi::ws_pkg_provide(self.0, n.as_ptr(), v.as_ptr()) == ffi::TCL_OK }
    }

    /// Registers `f` as Tcl command `name`, sharing `data`. A panic inside
    /// `f` becomes a Tcl error instead of unwinding into Tcl.
    pub fn create_command<T: 'static>(
        &self,
        name: &str,
        data: std::rc::Rc<T>,
        f: fn(&T, Interp, &[ObjRef]) -> CmdResult,
    ) {
        self.create_command_inner(name, data, f, None);
    }

    /// As `create_command`; `deleted` runs with `data` when Tcl deletes the
    /// command (renamed to "", replaced, its namespace or interpreter deleted).
    pub fn create_command_watched<T: 'static>(
        &self,
        name: &str,
        data: std::rc::Rc<T>,
        f: fn(&T, Interp, &[ObjRef]) -> CmdResult,
        deleted: fn(&T),
    ) {
        self.create_command_inner(name, data, f, Some(deleted));
    }

    fn create_command_inner<T: 'static>(
        &self,
        name: &str,
        data: std::rc::Rc<T>,
        f: fn(&T, Interp, &[ObjRef]) -> CmdResult,
        deleted: Option<fn(&T)>,
    ) {
        let boxed = Box::new(CommandData { data, f, deleted });
        let n = CString::new(name).expect("no NUL");
        // SAFETY: the box is freed by delete_command when Tcl deletes the command.
        unsafe {
            ffi::ws_create_command(
                self.0,
                n.as_ptr(),
                run_command::<T>,
                Box::into_raw(boxed) as *mut c_void,
                Some(delete_command::<T>),
            );
        }
    }

    /// Registers `f` as the hidden command `hidden` (`interp invokehidden`):
    /// in no namespace, so `namespace delete` leaves it; deleted with the
    /// interpreter. Fails if it cannot be hidden (say, a hidden command of
    /// that name exists); `data` is then dropped.
    pub fn create_hidden_command<T: 'static>(
        &self,
        hidden: &str,
        data: std::rc::Rc<T>,
        f: fn(&T, Interp, &[ObjRef]) -> CmdResult,
    ) -> Result<(), TclError> {
        let boxed = Box::new(CommandData {
            data,
            f,
            deleted: None,
        });
        let n = CString::new(hidden).expect("no NUL");
        // SAFETY: the box is freed by delete_command when Tcl deletes the
        // command, which the shim does itself if hiding fails.
        let r = unsafe {
            ffi::ws_create_hidden_command(
                self.0,
                n.as_ptr(),
                run_command::<T>,
                Box::into_raw(boxed) as *mut c_void,
                Some(delete_command::<T>),
            )
        };
        if r == ffi::TCL_OK {
            Ok(())
        } else {
            Err(TclError::InInterp)
        }
    }

    /// Evaluates `script` at global level, leaving the interpreter's result
    /// and error state as they were; true if it returned TCL_OK.
    pub fn eval_keep_state(&self, script: &str) -> bool {
        let s = CString::new(script).expect("no NUL");
        // SAFETY: live interp, valid C string.
        unsafe { ffi::ws_eval_keep_state(self.0, s.as_ptr()) == ffi::TCL_OK }
    }

    /// A global variable's value, if set.
    pub fn global_var(&self, name: &str) -> Option<Obj> {
        let n = CString::new(name).ok()?;
        // SAFETY: live interp; result is borrowed and we take a reference.
        unsafe {
            let p = ffi::ws_get_var(self.0, n.as_ptr());
            if p.is_null() {
                None
            } else {
                Some(Obj::from_raw(p))
            }
        }
    }
}

struct CommandData<T> {
    data: std::rc::Rc<T>,
    f: fn(&T, Interp, &[ObjRef]) -> CmdResult,
    deleted: Option<fn(&T)>,
}

unsafe extern "C" fn run_command<T: 'static>(
    cd: *mut c_void,
    interp: *mut Tcl_Interp,
    objc: c_int,
    objv: *const *mut Tcl_Obj,
) -> c_int {
    let interp = Interp(interp);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Tcl passes the clientData we registered and objc live objects.
        let cmd = &*(cd as *const CommandData<T>);
        let args: Vec<ObjRef> = (0..objc as usize)
            .map(|i| ObjRef::from_raw(*objv.add(i)))
            .collect();
        (cmd.f)(&cmd.data, interp, &args)
    }));
    match outcome {
        Ok(Ok(Some(result))) => {
            interp.set_result(result);
            ffi::TCL_OK
        }
        Ok(Ok(None)) => {
            interp.reset_result();
            ffi::TCL_OK
        }
        Ok(Err(e)) => interp.raise(e),
        Err(panic) => interp.raise(TclError::ws(
            format!("internal error in websocket: {}", panic_message(&panic)),
            &["INTERNAL"],
        )),
    }
}

unsafe extern "C" fn delete_command<T: 'static>(cd: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: created by create_command, deleted once by Tcl.
        let cmd = Box::from_raw(cd as *mut CommandData<T>);
        if let Some(deleted) = cmd.deleted {
            deleted(&cmd.data);
        }
    }));
}

pub fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Writes a line to stdout through Tcl's channel, so it interleaves with the
/// script's own `puts` as tcllib's logger output does.
pub fn write_stdout(line: &str) {
    let tcl = super::utf::utf8_to_tcl(line.as_bytes());
    // SAFETY: valid buffer; called on an interpreter thread.
    unsafe { ffi::ws_write_stdout(tcl.as_ptr() as *const _, tcl.len() as isize) }
}
