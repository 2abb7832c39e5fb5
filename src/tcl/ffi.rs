//! Raw declarations of the C shim (`shim.c`). Nothing outside `src/tcl/` uses these.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_uchar, c_void};

#[repr(C)]
pub struct Tcl_Interp {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Tcl_Obj {
    _private: [u8; 0],
}
/// Tcl_Channel is an opaque pointer.
pub type Tcl_Channel = *mut c_void;

pub const TCL_OK: c_int = 0;
pub const TCL_ERROR: c_int = 1;
pub const TCL_FILE_EVENTS: c_int = 1 << 3;
pub const TCL_TIMER_EVENTS: c_int = 1 << 4;
pub const TCL_IDLE_EVENTS: c_int = 1 << 5;
pub const TCL_READABLE: c_int = 1 << 1;

pub type ObjCmdProc = unsafe extern "C" fn(
    cd: *mut c_void,
    interp: *mut Tcl_Interp,
    objc: c_int,
    objv: *const *mut Tcl_Obj,
) -> c_int;
pub type CmdDeleteProc = unsafe extern "C" fn(cd: *mut c_void);
pub type InterpDeleteProc = unsafe extern "C" fn(cd: *mut c_void, interp: *mut Tcl_Interp);
pub type ExitProc = unsafe extern "C" fn(cd: *mut c_void);
pub type ChannelProc = unsafe extern "C" fn(cd: *mut c_void, mask: c_int);

extern "C" {
    pub fn ws_init_stubs(interp: *mut Tcl_Interp) -> c_int;

    pub fn ws_incr(o: *mut Tcl_Obj);
    pub fn ws_decr(o: *mut Tcl_Obj);
    pub fn ws_new_obj() -> *mut Tcl_Obj;
    pub fn ws_new_string_uninit(n: isize, out: *mut *mut Tcl_Obj) -> *mut c_char;
    pub fn ws_new_bytearray(b: *const c_uchar, n: isize) -> *mut Tcl_Obj;
    pub fn ws_get_string(o: *mut Tcl_Obj, n: *mut isize) -> *const c_char;
    pub fn ws_get_bytearray(
        interp: *mut Tcl_Interp,
        o: *mut Tcl_Obj,
        n: *mut isize,
    ) -> *mut c_uchar;
    pub fn ws_new_wide(v: i64) -> *mut Tcl_Obj;
    pub fn ws_get_wide(interp: *mut Tcl_Interp, o: *mut Tcl_Obj, v: *mut i64) -> c_int;
    pub fn ws_get_boolean(interp: *mut Tcl_Interp, o: *mut Tcl_Obj, v: *mut c_int) -> c_int;
    pub fn ws_get_double(interp: *mut Tcl_Interp, o: *mut Tcl_Obj, v: *mut f64) -> c_int;
    pub fn ws_new_list(n: isize, objv: *const *mut Tcl_Obj) -> *mut Tcl_Obj;
    pub fn ws_list_elements(
        interp: *mut Tcl_Interp,
        list: *mut Tcl_Obj,
        n: *mut isize,
        elems: *mut *mut *mut Tcl_Obj,
        holder: *mut *mut Tcl_Obj,
    ) -> c_int;

    pub fn ws_set_result(interp: *mut Tcl_Interp, o: *mut Tcl_Obj);
    pub fn ws_get_result(interp: *mut Tcl_Interp) -> *mut Tcl_Obj;
    pub fn ws_reset_result(interp: *mut Tcl_Interp);
    pub fn ws_set_error_code(interp: *mut Tcl_Interp, code: *mut Tcl_Obj);
    pub fn ws_eval_objv(
        interp: *mut Tcl_Interp,
        objc: isize,
        objv: *const *mut Tcl_Obj,
        global: c_int,
    ) -> c_int;
    pub fn ws_eval_global(interp: *mut Tcl_Interp, script: *mut Tcl_Obj) -> c_int;
    pub fn ws_background_exception(interp: *mut Tcl_Interp, code: c_int);
    pub fn ws_preserve(p: *mut c_void);
    pub fn ws_release(p: *mut c_void);
    pub fn ws_interp_deleted(interp: *mut Tcl_Interp) -> c_int;
    pub fn ws_pkg_provide(
        interp: *mut Tcl_Interp,
        name: *const c_char,
        version: *const c_char,
    ) -> c_int;
    pub fn ws_create_command(
        interp: *mut Tcl_Interp,
        name: *const c_char,
        proc_: ObjCmdProc,
        cd: *mut c_void,
        del: Option<CmdDeleteProc>,
    ) -> *mut c_void;
    pub fn ws_call_when_deleted(interp: *mut Tcl_Interp, proc_: InterpDeleteProc, cd: *mut c_void);
    pub fn ws_create_exit_handler(proc_: ExitProc, cd: *mut c_void);
    pub fn ws_create_thread_exit_handler(proc_: ExitProc, cd: *mut c_void);
    pub fn ws_delete_thread_exit_handler(proc_: ExitProc, cd: *mut c_void);
    pub fn ws_get_var(interp: *mut Tcl_Interp, name: *const c_char) -> *mut Tcl_Obj;
    pub fn ws_write_stdout(s: *const c_char, n: isize);

    pub fn ws_current_thread() -> *mut c_void;
    pub fn ws_queue_event(payload: *mut c_void);
    pub fn ws_alert(thread: *mut c_void);
    pub fn ws_delete_events(payload: *mut c_void);
    pub fn ws_create_event_source();
    pub fn ws_delete_event_source();

    pub fn ws_get_channel(
        interp: *mut Tcl_Interp,
        name: *const c_char,
        mode: *mut c_int,
    ) -> Tcl_Channel;
    pub fn ws_name_channel_create(
        interp: *mut Tcl_Interp,
        name: *const c_char,
        owner: *mut c_void,
    ) -> *mut c_void;
    pub fn ws_name_channel_release(chan: *mut c_void);
    pub fn ws_get_channel_fd(chan: Tcl_Channel, direction: c_int, fd: *mut c_int) -> c_int;
    pub fn ws_channel_type_name(chan: Tcl_Channel) -> *const c_char;
    pub fn ws_channel_is_stacked(chan: Tcl_Channel) -> c_int;
    pub fn ws_set_channel_option(
        interp: *mut Tcl_Interp,
        chan: Tcl_Channel,
        opt: *const c_char,
        val: *const c_char,
    ) -> c_int;
    pub fn ws_flush(chan: Tcl_Channel) -> c_int;
    pub fn ws_input_buffered(chan: Tcl_Channel) -> isize;
    pub fn ws_read(chan: Tcl_Channel, buf: *mut c_char, n: isize) -> isize;
    pub fn ws_write(chan: Tcl_Channel, buf: *const c_char, n: isize) -> isize;
    pub fn ws_eof(chan: Tcl_Channel) -> c_int;
    pub fn ws_input_blocked(chan: Tcl_Channel) -> c_int;
    pub fn ws_push_output(chan: Tcl_Channel, ms: c_int) -> isize;
    pub fn ws_register_channel(interp: *mut Tcl_Interp, chan: Tcl_Channel);
    pub fn ws_unregister_channel(interp: *mut Tcl_Interp, chan: Tcl_Channel) -> c_int;
    pub fn ws_create_channel_handler(
        chan: Tcl_Channel,
        mask: c_int,
        proc_: ChannelProc,
        cd: *mut c_void,
    );
    pub fn ws_delete_channel_handler(chan: Tcl_Channel, proc_: ChannelProc, cd: *mut c_void);
    pub fn ws_tcp_release_fd(chan: Tcl_Channel, fd: c_int) -> usize;
    pub fn ws_tcp_detach_state(chan: Tcl_Channel, fd_offset: usize) -> *mut c_void;
    pub fn ws_free_block(block: *mut c_void);
    pub fn ws_do_when_idle(proc_: ExitProc, cd: *mut c_void);
    pub fn ws_cancel_idle(proc_: ExitProc, cd: *mut c_void);
    pub fn ws_create_timer(ms: c_int, proc_: ExitProc, cd: *mut c_void) -> *mut c_void;
    pub fn ws_delete_timer(token: *mut c_void);

    pub fn ws_create_hidden_command(
        interp: *mut Tcl_Interp,
        hidden: *const c_char,
        proc_: ObjCmdProc,
        cd: *mut c_void,
        del: Option<CmdDeleteProc>,
    ) -> c_int;
    pub fn ws_eval_keep_state(interp: *mut Tcl_Interp, script: *const c_char) -> c_int;
}
