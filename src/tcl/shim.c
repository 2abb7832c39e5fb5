/*
 * The C half of the binding layer: thin, typed wrappers over Tcl's stubs
 * table (USE_TCL_STUBS), for the calls that are macros in tcl.h or that need
 * Tcl's own allocator. Sizes cross as ptrdiff_t so the Rust side is the same
 * for Tcl 8.6 (int) and Tcl 9 (Tcl_Size).
 *
 * The same file is compiled against Tcl 8.6's headers (libwebsocket.so) and
 * against Tcl 9's (libtcl9websocket.so): Tcl_InitStubs is a macro that puts
 * in the stubs magic of the headers' Tcl, and every size Tcl reads or writes
 * is a Tcl_Size, which is int in 8.6 and ptrdiff_t in 9.
 */
#include <tcl.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#ifndef TCL_SIZE_MAX
/* Tcl 8.6.13's headers predate Tcl_Size (8.6.14 and 8.7 have it). */
typedef int Tcl_Size;
#endif

/* Implemented in Rust (src/tcl/event.rs). */
typedef struct {
    Tcl_Interp *interp;
    ptrdiff_t objc;
    Tcl_Obj *const *objv;
} WsCallOut;
extern void *websocket_service_start(void *payload);
extern int websocket_service_next(void *run, WsCallOut *out);
extern void websocket_service_done(void *run, int code);
extern void websocket_service_end(void *run);
extern int websocket_sources_setup(int flags);
extern void websocket_sources_check(void);

/* "8.6-": any Tcl from 8.6 on whose stubs table fits these headers (the
 * stub library itself refuses a Tcl of another major version, with a message). */
int ws_init_stubs(Tcl_Interp *interp) {
    return Tcl_InitStubs(interp, "8.6-", 0) != NULL;
}

/* ---- objects ---- */
void ws_incr(Tcl_Obj *o) { Tcl_IncrRefCount(o); }
void ws_decr(Tcl_Obj *o) { Tcl_DecrRefCount(o); }
Tcl_Obj *ws_new_obj(void) { return Tcl_NewObj(); }
/* A string object of n bytes whose contents the caller writes (Tcl's internal UTF-8). */
char *ws_new_string_uninit(ptrdiff_t n, Tcl_Obj **out) {
    Tcl_Obj *o = Tcl_NewObj();
    Tcl_SetObjLength(o, (Tcl_Size)n);
    *out = o;
    return o->bytes;
}
Tcl_Obj *ws_new_bytearray(const unsigned char *b, ptrdiff_t n) { return Tcl_NewByteArrayObj(b, (Tcl_Size)n); }
const char *ws_get_string(Tcl_Obj *o, ptrdiff_t *n) {
    Tcl_Size len = 0;
    const char *s = Tcl_GetStringFromObj(o, &len);
    *n = len;
    return s;
}
/* The value's bytes. Tcl 8.6 takes each character's low 8 bits; Tcl 9
 * refuses a string with a character above U+00FF: NULL then, with Tcl's
 * message ("expected byte sequence but character ...") in `interp` if given. */
unsigned char *ws_get_bytearray(Tcl_Interp *interp, Tcl_Obj *o, ptrdiff_t *n) {
    Tcl_Size len = 0;
#if TCL_MAJOR_VERSION >= 9
    unsigned char *b = Tcl_GetBytesFromObj(interp, o, &len);
#else
    unsigned char *b = Tcl_GetByteArrayFromObj(o, &len);
    (void)interp;
#endif
    *n = b == NULL ? 0 : len;
    return b;
}
Tcl_Obj *ws_new_wide(long long v) { return Tcl_NewWideIntObj((Tcl_WideInt)v); }
/* Reading an argument as a number, boolean or list changes its internal
 * representation, and that frees a byte array that ws_get_bytearray may have
 * handed out from the same object (Tcl shares one literal among arguments:
 * `send $s binary 1 1`). So these conversions never change a byte array's
 * representation: they read a copy of such an object. The byte array is then
 * the only representation anyone borrows, and it stays until the command ends. */
static int is_bytearray(Tcl_Obj *o) {
    /* "bytearray" in 8.6 and 9; 8.7 also had "proper bytearray". */
    return o->typePtr != NULL && o->typePtr->name != NULL
        && strstr(o->typePtr->name, "bytearray") != NULL;
}
static Tcl_Obj *readable(Tcl_Obj *o) {
    if (!is_bytearray(o)) return o;
    Tcl_Obj *copy = Tcl_DuplicateObj(o);
    Tcl_IncrRefCount(copy);
    return copy;
}
static void done_reading(Tcl_Obj *o, Tcl_Obj *read) {
    if (read != o) Tcl_DecrRefCount(read);
}
int ws_get_wide(Tcl_Interp *interp, Tcl_Obj *o, long long *v) {
    Tcl_WideInt w;
    Tcl_Obj *r_obj = readable(o);
    int r = Tcl_GetWideIntFromObj(interp, r_obj, &w);
    done_reading(o, r_obj);
    if (r == TCL_OK) *v = (long long)w;
    return r;
}
int ws_get_boolean(Tcl_Interp *interp, Tcl_Obj *o, int *v) {
    Tcl_Obj *r_obj = readable(o);
    int r = Tcl_GetBooleanFromObj(interp, r_obj, v);
    done_reading(o, r_obj);
    return r;
}
int ws_get_double(Tcl_Interp *interp, Tcl_Obj *o, double *v) {
    Tcl_Obj *r_obj = readable(o);
    int r = Tcl_GetDoubleFromObj(interp, r_obj, v);
    done_reading(o, r_obj);
    return r;
}
Tcl_Obj *ws_new_list(ptrdiff_t n, Tcl_Obj *const *objv) { return Tcl_NewListObj((Tcl_Size)n, objv); }
/* The list's elements, borrowed from `*holder`, which holds a reference the
 * caller releases (ws_decr) once it has taken its own references to them. */
int ws_list_elements(Tcl_Interp *interp, Tcl_Obj *list, ptrdiff_t *n, Tcl_Obj ***elems,
                     Tcl_Obj **holder) {
    Tcl_Size c = 0;
    Tcl_Obj *r_obj = readable(list);
    if (r_obj == list) Tcl_IncrRefCount(list);
    int r = Tcl_ListObjGetElements(interp, r_obj, &c, elems);
    *holder = r_obj;
    *n = c;
    return r;
}

/* ---- interpreters ---- */
void ws_set_result(Tcl_Interp *interp, Tcl_Obj *o) { Tcl_SetObjResult(interp, o); }
Tcl_Obj *ws_get_result(Tcl_Interp *interp) { return Tcl_GetObjResult(interp); }
void ws_reset_result(Tcl_Interp *interp) { Tcl_ResetResult(interp); }
void ws_set_error_code(Tcl_Interp *interp, Tcl_Obj *code) { Tcl_SetObjErrorCode(interp, code); }
int ws_eval_objv(Tcl_Interp *interp, ptrdiff_t objc, Tcl_Obj *const *objv, int global) {
    return Tcl_EvalObjv(interp, (Tcl_Size)objc, objv, global ? TCL_EVAL_GLOBAL : 0);
}
int ws_eval_global(Tcl_Interp *interp, Tcl_Obj *script) { return Tcl_EvalObjEx(interp, script, TCL_EVAL_GLOBAL); }
void ws_background_exception(Tcl_Interp *interp, int code) { Tcl_BackgroundException(interp, code); }
void ws_preserve(void *p) { Tcl_Preserve(p); }
void ws_release(void *p) { Tcl_Release(p); }
int ws_interp_deleted(Tcl_Interp *interp) { return Tcl_InterpDeleted(interp); }
int ws_pkg_provide(Tcl_Interp *interp, const char *name, const char *version) {
    return Tcl_PkgProvide(interp, name, version);
}
/* A command of the package: its Rust procedure, then the handler calls it
 * queued (see ws_run_calls). */
typedef struct {
    Tcl_ObjCmdProc *proc;
    void *cd;
    Tcl_CmdDeleteProc *del;
} WsCmd;
static void ws_run_calls(void *run);
extern void *websocket_command_calls(void);

static int ws_cmd_proc(ClientData cd, Tcl_Interp *interp, int objc, Tcl_Obj *const objv[]) {
    WsCmd *c = (WsCmd *)cd;
    int code = c->proc(c->cd, interp, objc, objv);
    void *run = websocket_command_calls();
    if (run != NULL) {
        /* The handlers run after the Rust procedure has returned; the
         * command's own result (or error) is what it returns. */
        Tcl_InterpState saved;
        Tcl_Preserve(interp);
        saved = Tcl_SaveInterpState(interp, code);
        ws_run_calls(run);
        code = Tcl_RestoreInterpState(interp, saved);
        Tcl_Release(interp);
    }
    return code;
}
static void ws_cmd_delete(ClientData cd) {
    WsCmd *c = (WsCmd *)cd;
    if (c->del != NULL) c->del(c->cd);
    ckfree((char *)c);
}
void *ws_create_command(Tcl_Interp *interp, const char *name, Tcl_ObjCmdProc *proc, void *cd,
                        Tcl_CmdDeleteProc *del) {
    WsCmd *c = (WsCmd *)ckalloc(sizeof(WsCmd));
    c->proc = proc;
    c->cd = cd;
    c->del = del;
    return (void *)Tcl_CreateObjCommand(interp, name, ws_cmd_proc, c, ws_cmd_delete);
}
void ws_call_when_deleted(Tcl_Interp *interp, Tcl_InterpDeleteProc *proc, void *cd) {
    Tcl_CallWhenDeleted(interp, proc, cd);
}
void ws_create_exit_handler(Tcl_ExitProc *proc, void *cd) { Tcl_CreateExitHandler(proc, cd); }
void ws_create_thread_exit_handler(Tcl_ExitProc *proc, void *cd) { Tcl_CreateThreadExitHandler(proc, cd); }
void ws_delete_thread_exit_handler(Tcl_ExitProc *proc, void *cd) { Tcl_DeleteThreadExitHandler(proc, cd); }
Tcl_Obj *ws_get_var(Tcl_Interp *interp, const char *name) {
    return Tcl_GetVar2Ex(interp, name, NULL, TCL_GLOBAL_ONLY);
}
/* Writes to the interpreter's stdout channel, as tcllib's logger does with puts. */
void ws_write_stdout(const char *s, ptrdiff_t n) {
    Tcl_Channel c = Tcl_GetStdChannel(TCL_STDOUT);
    if (c != NULL) {
        Tcl_WriteChars(c, s, (Tcl_Size)n);
        Tcl_Flush(c);
    }
}

/* ---- events: engine threads -> the interpreter's thread ---- */
typedef struct {
    Tcl_Event header;
    void *payload;
} WsEvent;

/* Services one posted event. The script calls (handlers) are evaluated
 * here, in C, with no Rust frame below them: a handler that ends its thread
 * (thread::exit unwinds the stack) must not unwind through Rust. */
static void ws_run_calls(void *run) {
    WsCallOut call;
    while (websocket_service_next(run, &call)) {
        int code;
        Tcl_Preserve(call.interp);
        code = Tcl_EvalObjv(call.interp, (Tcl_Size)call.objc, call.objv, TCL_EVAL_GLOBAL);
        websocket_service_done(run, code);
        Tcl_Release(call.interp);
    }
    websocket_service_end(run);
}

static int ws_event_proc(Tcl_Event *ev, int flags) {
    void *run;
    if (!(flags & TCL_FILE_EVENTS)) return 0;
    run = websocket_service_start(((WsEvent *)ev)->payload);
    if (run != NULL) ws_run_calls(run);
    return 1;
}

void *ws_current_thread(void) { return (void *)Tcl_GetCurrentThread(); }

/* Queues one event for the calling thread, at the tail. */
void ws_queue_event(void *payload) {
    WsEvent *ev = (WsEvent *)ckalloc(sizeof(WsEvent));
    ev->header.proc = ws_event_proc;
    ev->header.nextPtr = NULL;
    ev->payload = payload;
    Tcl_QueueEvent(&ev->header, TCL_QUEUE_TAIL);
}

/* Wakes `thread` out of its wait for events (or keeps its next wait short). */
void ws_alert(void *thread) { Tcl_ThreadAlert((Tcl_ThreadId)thread); }

static int ws_delete_filter(Tcl_Event *ev, ClientData cd) {
    if (ev->proc != ws_event_proc) return 0;
    return ((WsEvent *)ev)->payload == cd;
}

/* Drops this thread's queued events aimed at `target` (see event.rs). */
void ws_delete_events(void *target) { Tcl_DeleteEvents(ws_delete_filter, target); }

/* The mailboxes' event source (see event.rs). Mailboxes with items are
 * turned into queued events only here, when Tcl looks at its event sources,
 * as Tcl's own file events are: each time the queue has been worked through,
 * timers and file events get their turn before mailboxes are served again. */
static void ws_source_setup(ClientData cd, int flags) {
    (void)cd;
    if (websocket_sources_setup(flags)) {
        Tcl_Time now = {0, 0};
        Tcl_SetMaxBlockTime(&now);
    }
}
static void ws_source_check(ClientData cd, int flags) {
    (void)cd;
    if (flags & TCL_FILE_EVENTS) websocket_sources_check();
}
void ws_create_event_source(void) { Tcl_CreateEventSource(ws_source_setup, ws_source_check, NULL); }
void ws_delete_event_source(void) { Tcl_DeleteEventSource(ws_source_setup, ws_source_check, NULL); }

/* ---- channels ---- */
Tcl_Channel ws_get_channel(Tcl_Interp *interp, const char *name, int *mode) {
    return Tcl_GetChannel(interp, name, mode);
}
int ws_get_channel_fd(Tcl_Channel chan, int direction, int *fd) {
    ClientData h = NULL;
    if (Tcl_GetChannelHandle(chan, direction, &h) != TCL_OK) return 0;
    *fd = (int)(ptrdiff_t)h;
    return 1;
}
/* Tcl_GetChannel hands out the bottom of a stack; these look at the top. */
const char *ws_channel_type_name(Tcl_Channel chan) {
    const Tcl_ChannelType *t = Tcl_GetChannelType(Tcl_GetTopChannel(chan));
    return t ? t->typeName : "";
}
int ws_channel_is_stacked(Tcl_Channel chan) { return Tcl_GetTopChannel(chan) != chan; }
int ws_set_channel_option(Tcl_Interp *interp, Tcl_Channel chan, const char *opt, const char *val) {
    return Tcl_SetChannelOption(interp, chan, opt, val);
}
int ws_flush(Tcl_Channel chan) { return Tcl_Flush(chan); }
ptrdiff_t ws_input_buffered(Tcl_Channel chan) { return Tcl_InputBuffered(chan); }
ptrdiff_t ws_read(Tcl_Channel chan, char *buf, ptrdiff_t n) { return Tcl_Read(chan, buf, (Tcl_Size)n); }
ptrdiff_t ws_write(Tcl_Channel chan, const char *buf, ptrdiff_t n) { return Tcl_Write(chan, buf, (Tcl_Size)n); }
int ws_eof(Tcl_Channel chan) { return Tcl_Eof(chan); }
int ws_input_blocked(Tcl_Channel chan) { return Tcl_InputBlocked(chan); }
/* Output Tcl still holds for a non-blocking channel is written by its
 * background flush, which the event loop drives. For teardowns after which
 * the loop will not run: flush in blocking mode, each write bounded by a
 * send timeout of `ms` on the socket (`chan` is the bottom of its stack),
 * then back to non-blocking. (Polling for writable and notifying the
 * channel stalled under the tls package with megabytes held.) Returns the
 * bytes still held. */
ptrdiff_t ws_push_output(Tcl_Channel chan, int ms) {
    ClientData h = NULL;
    struct timeval tv;
    if (Tcl_OutputBuffered(chan) == 0) return 0;
    if (Tcl_GetChannelHandle(chan, TCL_WRITABLE, &h) != TCL_OK) return Tcl_OutputBuffered(chan);
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    setsockopt((int)(intptr_t)h, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (Tcl_SetChannelOption(NULL, chan, "-blocking", "1") == TCL_OK) {
        Tcl_Flush(chan);
        Tcl_SetChannelOption(NULL, chan, "-blocking", "0");
    }
    return Tcl_OutputBuffered(chan);
}
void ws_register_channel(Tcl_Interp *interp, Tcl_Channel chan) { Tcl_RegisterChannel(interp, chan); }
int ws_unregister_channel(Tcl_Interp *interp, Tcl_Channel chan) { return Tcl_UnregisterChannel(interp, chan); }
void ws_create_channel_handler(Tcl_Channel chan, int mask, Tcl_ChannelProc *proc, void *cd) {
    Tcl_CreateChannelHandler(chan, mask, proc, cd);
}
void ws_delete_channel_handler(Tcl_Channel chan, Tcl_ChannelProc *proc, void *cd) {
    Tcl_DeleteChannelHandler(chan, proc, cd);
}
void ws_do_when_idle(Tcl_IdleProc *proc, void *cd) { Tcl_DoWhenIdle(proc, cd); }
void ws_cancel_idle(Tcl_IdleProc *proc, void *cd) { Tcl_CancelIdleCall(proc, cd); }
void *ws_create_timer(int ms, Tcl_TimerProc *proc, void *cd) {
    return (void *)Tcl_CreateTimerHandler(ms, proc, cd);
}
void ws_delete_timer(void *token) { Tcl_DeleteTimerHandler((Tcl_TimerToken)token); }

/*
 * Taking a "tcp" channel's socket away from Tcl. Tcl names a socket after its
 * state block (sock<address>), so while a WebSocket answers to that name the
 * block must stay allocated, or the next accepted socket could get the name.
 * Keeping the whole channel would also keep its 8 KiB input buffer and its
 * low fd (Tcl 8.6's select() cannot watch fds >= FD_SETSIZE). So:
 *
 * ws_tcp_release_fd finds the fd in the private TcpState (its fd list comes
 * right after the channel pointer in 8.6, after the flags in 9.0; the list's
 * back pointer is the state or NULL, its `next` NULL) and marks it -1, which
 * TcpCloseProc skips. It returns the field's offset, or 0 if the layout was
 * not recognised (Tcl then keeps the fd).
 *
 * ws_tcp_detach_state then gives the channel a zeroed stand-in state (fd -1,
 * no address lists) to close and free, and returns the real state block,
 * which the caller frees with ws_free_block when the name may be reused.
 * NULL if the Channel layout (state, instanceData, ...) was not recognised.
 */
size_t ws_tcp_release_fd(Tcl_Channel chan, int fd) {
    char *state = (char *)Tcl_GetChannelInstanceData(chan);
    static const size_t offsets[] = {sizeof(void *), 2 * sizeof(void *)};
    size_t i;
    if (state == NULL || *(Tcl_Channel *)state != chan) return 0;
    for (i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        char *list = state + offsets[i];
        void *back = *(void **)list;
        int *fdp = (int *)(list + sizeof(void *));
        void *next = *(void **)(list + 2 * sizeof(void *));
        if ((back == NULL || back == (void *)state) && *fdp == fd && next == NULL) {
            *fdp = -1;
            return offsets[i] + sizeof(void *);
        }
    }
    return 0;
}

#define WS_STANDIN_SIZE 512

void *ws_tcp_detach_state(Tcl_Channel chan, size_t fd_offset) {
    void **slot = (void **)((char *)chan + sizeof(void *));
    void *state = Tcl_GetChannelInstanceData(chan);
    char *standin;
    if (fd_offset == 0 || fd_offset + sizeof(int) > WS_STANDIN_SIZE || *slot != state) return NULL;
    standin = (char *)ckalloc(WS_STANDIN_SIZE);
    memset(standin, 0, WS_STANDIN_SIZE);
    *(Tcl_Channel *)standin = chan;
    *(int *)(standin + fd_offset) = -1;
    *slot = standin;
    return state;
}

void ws_free_block(void *block) { ckfree((char *)block); }

/* ---- interpreters: reloading the package (see commands::init) ---- */

/* Creates `hidden` as a hidden command of `interp` (run by `interp
 * invokehidden`, listed by `interp hidden`, in no namespace, so `namespace
 * delete` leaves it). Tcl hides only global commands, so the command is made
 * under a free global name first. TCL_ERROR (message in the interpreter, the
 * command and `cd` deleted through `del`) if it cannot be hidden, as when a
 * hidden command of that name exists. */
int ws_create_hidden_command(Tcl_Interp *interp, const char *hidden, Tcl_ObjCmdProc *proc, void *cd,
                             Tcl_CmdDeleteProc *del) {
    Tcl_CmdInfo info;
    Tcl_Obj *obj = NULL;
    const char *name;
    int n = 0, code;
    do {
        if (obj != NULL) Tcl_DecrRefCount(obj);
        obj = Tcl_ObjPrintf("::websocket_hide_%d", n++);
        Tcl_IncrRefCount(obj);
        name = Tcl_GetString(obj);
    } while (Tcl_GetCommandInfo(interp, name, &info));
    Tcl_CreateObjCommand(interp, name, proc, cd, del);
    code = Tcl_HideCommand(interp, name + 2, hidden);
    if (code != TCL_OK) Tcl_DeleteCommand(interp, name);
    Tcl_DecrRefCount(obj);
    return code;
}

/* Evaluates `script` at global level, leaving the interpreter's result and
 * error state as they were (for scripts run while Tcl deletes a command).
 * Returns the script's completion code. */
int ws_eval_keep_state(Tcl_Interp *interp, const char *script) {
    Tcl_InterpState saved = Tcl_SaveInterpState(interp, TCL_OK);
    Tcl_Obj *obj = Tcl_NewStringObj(script, -1);
    int code;
    Tcl_IncrRefCount(obj);
    code = Tcl_EvalObjEx(interp, obj, TCL_EVAL_GLOBAL);
    Tcl_DecrRefCount(obj);
    (void)Tcl_RestoreInterpState(interp, saved);
    return code;
}

/*
 * The name channel: after takeover or upgrade, the socket's name stays a
 * channel of the package's own, for the habits of scripts written for
 * tcllib (fconfigure -peername, fileevent ... "", close) until the package
 * lets the name go. It holds no fd and no buffers: reads and writes fail,
 * file events never fire, and closing it closes the WebSocket (1000).
 */
typedef struct {
    Tcl_Channel chan;
    Tcl_Interp *interp;
    void *owner; /* Rust's (NameOwner); NULL once the package let the name go */
} WsNameChan;

extern void websocket_name_closed(void *owner);
extern Tcl_Obj *websocket_name_address(void *owner, int local);
extern void websocket_name_drop(void *owner);

static int ws_name_input(ClientData cd, char *buf, int n, int *err) {
    (void)cd; (void)buf; (void)n;
    *err = ENOTSUP;
    return -1;
}
static int ws_name_output(ClientData cd, const char *buf, int n, int *err) {
    (void)cd; (void)buf; (void)n;
    *err = ENOTSUP;
    return -1;
}
static void ws_name_watch(ClientData cd, int mask) { (void)cd; (void)mask; }
static int ws_name_block_mode(ClientData cd, int mode) { (void)cd; (void)mode; return 0; }
static int ws_name_get_handle(ClientData cd, int dir, ClientData *h) {
    (void)cd; (void)dir; (void)h;
    return TCL_ERROR;
}

static void ws_name_append_address(WsNameChan *c, int local, Tcl_DString *ds) {
    Tcl_Obj *addr = c->owner != NULL ? websocket_name_address(c->owner, local) : NULL;
    Tcl_Size n = 0, i;
    Tcl_Obj **items = NULL;
    if (addr == NULL) return;
    if (Tcl_ListObjGetElements(NULL, addr, &n, &items) == TCL_OK) {
        for (i = 0; i < n; i++) Tcl_DStringAppendElement(ds, Tcl_GetString(items[i]));
    }
    Tcl_DecrRefCount(addr);
}

static int ws_name_get_option(ClientData cd, Tcl_Interp *interp, const char *name, Tcl_DString *ds) {
    WsNameChan *c = (WsNameChan *)cd;
    static const char *const names[] = {"-peername", "-sockname"};
    int i;
    if (name != NULL && strcmp(name, "-error") == 0) return TCL_OK;
    for (i = 0; i < 2; i++) {
        if (name == NULL) {
            Tcl_DStringAppendElement(ds, names[i]);
            Tcl_DStringStartSublist(ds);
            ws_name_append_address(c, i, ds);
            Tcl_DStringEndSublist(ds);
        } else if (strcmp(name, names[i]) == 0) {
            ws_name_append_address(c, i, ds);
            return TCL_OK;
        }
    }
    if (name == NULL) {
        Tcl_DStringAppendElement(ds, "-error");
        Tcl_DStringAppendElement(ds, "");
        return TCL_OK;
    }
    return Tcl_BadChannelOption(interp, name, "error peername sockname");
}

static int ws_name_close2(ClientData cd, Tcl_Interp *interp, int flags) {
    WsNameChan *c = (WsNameChan *)cd;
    (void)interp;
    if ((flags & (TCL_CLOSE_READ | TCL_CLOSE_WRITE)) != 0) return EINVAL;
    if (c->owner != NULL) {
        /* The script closed the name: the WebSocket closes as with
         * ::websocket::close, and its handler hears close and disconnect
         * here, once Rust has returned (as after a command). */
        void *owner = c->owner;
        void *run;
        c->owner = NULL;
        websocket_name_closed(owner);
        websocket_name_drop(owner);
        run = websocket_command_calls();
        if (run != NULL) {
            Tcl_Interp *ip = c->interp;
            Tcl_InterpState saved;
            Tcl_Preserve(ip);
            saved = Tcl_SaveInterpState(ip, TCL_OK);
            ws_run_calls(run);
            (void)Tcl_RestoreInterpState(ip, saved);
            Tcl_Release(ip);
        }
    }
    ckfree((char *)c);
    return 0;
}

static const Tcl_ChannelType ws_name_type = {
    "websocket",
    TCL_CHANNEL_VERSION_5,
#if TCL_MAJOR_VERSION >= 9
    NULL,
#else
    TCL_CLOSE2PROC,
#endif
    ws_name_input,
    ws_name_output,
    NULL,                /* seek */
    NULL,                /* set option */
    ws_name_get_option,
    ws_name_watch,
    ws_name_get_handle,
    ws_name_close2,
    ws_name_block_mode,
    NULL, NULL, NULL, NULL, NULL
};

/* Registers a name channel called `name` in `interp`, owned by `owner`.
 * NULL if the name is taken in the interpreter. */
void *ws_name_channel_create(Tcl_Interp *interp, const char *name, void *owner) {
    WsNameChan *c;
    if (Tcl_GetChannel(interp, name, NULL) != NULL) {
        Tcl_ResetResult(interp);
        return NULL;
    }
    Tcl_ResetResult(interp);
    c = (WsNameChan *)ckalloc(sizeof(WsNameChan));
    c->interp = interp;
    c->owner = owner;
    c->chan = Tcl_CreateChannel(&ws_name_type, name, c, TCL_READABLE | TCL_WRITABLE);
    Tcl_RegisterChannel(interp, c->chan);
    return c;
}

/* The package lets the name go: the channel leaves the interpreter, and Tcl
 * closes it (freeing it) unless the script shared it elsewhere. */
void ws_name_channel_release(void *p) {
    WsNameChan *c = (WsNameChan *)p;
    void *owner = c->owner;
    c->owner = NULL;
    if (owner != NULL) websocket_name_drop(owner);
    (void)Tcl_UnregisterChannel(c->interp, c->chan);
}
