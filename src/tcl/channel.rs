//! Taking a socket away from Tcl's channel system.

use super::ffi::{self, Tcl_Channel};
use super::interp::{Interp, TclError};
use super::obj::Obj;
use std::ffi::{CStr, CString};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Lowest fd number the engine's sockets are moved to. Tcl 8.6 waits with
/// select(), which aborts on fds >= FD_SETSIZE; keeping ours above it leaves
/// the low numbers to Tcl's own channels.
const ENGINE_FD_FLOOR: c_int = 1024;

/// Keeps the name of a taken-over channel from being given to a new channel
/// while a WebSocket still answers to it (see shim.c).
pub enum HeldChannel {
    /// Only the channel's state block, whose address the name is made of.
    Name(*mut std::ffi::c_void),
    /// The whole channel, open but out of every interpreter.
    Channel(Tcl_Channel),
}

impl HeldChannel {
    /// Lets the name go. Must run on the thread that took it.
    pub fn release(self) {
        // SAFETY: each variant holds what take_socket reserved, released once.
        unsafe {
            match self {
                HeldChannel::Name(block) => ffi::ws_free_block(block),
                HeldChannel::Channel(chan) => {
                    ffi::ws_unregister_channel(std::ptr::null_mut(), chan);
                }
            }
        }
    }
}

/// What `take_socket` hands to the engine.
pub struct TakenSocket {
    /// The socket, duplicated to a high, close-on-exec fd.
    pub fd: OwnedFd,
    /// Bytes Tcl had read from the socket but the script had not consumed.
    pub buffered: Vec<u8>,
    pub held: HeldChannel,
}

/// What answers for the connection behind a name channel (see NameChannel).
pub trait NameOwner {
    /// The script closed the channel: close the connection as `close` does,
    /// queueing its handler calls (the C side makes them once this returns),
    /// and forget the NameChannel without releasing it.
    fn closed(&self);
    /// `-sockname` (local) or `-peername`: `{address hostname port}`.
    fn address(&self, local: bool) -> Option<Obj>;
}

type BoxedOwner = Box<dyn NameOwner>;

/// After takeover or upgrade, the socket's name stays a channel of the
/// package's own ("websocket" type) until the package lets the name go:
/// scripts written for tcllib keep using it (`fconfigure $sock -peername`,
/// `fileevent $sock readable ""`, `close $sock`). It holds no fd and no
/// buffers; reads and writes fail (ENOTSUP), file events never fire, and
/// `close` closes the WebSocket with 1000.
pub struct NameChannel(*mut c_void);

impl NameChannel {
    /// Registers the channel `name` in `interp`; None if the interpreter
    /// has a channel of that name.
    pub fn create(interp: Interp, name: &str, owner: Box<dyn NameOwner>) -> Option<NameChannel> {
        let cname = CString::new(name).ok()?;
        let owner = Box::into_raw(Box::new(owner)) as *mut c_void;
        // SAFETY: live interp on its thread; the C side owns `owner` from
        // here and gives it back through websocket_name_drop.
        let chan = unsafe { ffi::ws_name_channel_create(interp.as_ptr(), cname.as_ptr(), owner) };
        if chan.is_null() {
            // SAFETY: not taken by C: ours to free.
            drop(unsafe { Box::from_raw(owner as *mut BoxedOwner) });
            return None;
        }
        Some(NameChannel(chan))
    }

    /// The package lets the name go: the channel leaves the interpreter.
    /// Call on its thread.
    pub fn release(self) {
        // SAFETY: the channel is alive while a NameChannel exists (a script's
        // close reports through NameOwner::closed, whose owner forgets this
        // NameChannel without calling release).
        unsafe { ffi::ws_name_channel_release(self.0) }
    }
}

#[no_mangle]
extern "C" fn websocket_name_closed(owner: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a live BoxedOwner from NameChannel::create.
        let owner = unsafe { &*(owner as *const BoxedOwner) };
        owner.closed();
    }));
}

#[no_mangle]
extern "C" fn websocket_name_address(owner: *mut c_void, local: c_int) -> *mut super::ffi::Tcl_Obj {
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a live BoxedOwner from NameChannel::create.
        let owner = unsafe { &*(owner as *const BoxedOwner) };
        owner.address(local != 0)
    }));
    match r {
        Ok(Some(o)) => o.into_raw(),
        _ => std::ptr::null_mut(),
    }
}

#[no_mangle]
extern "C" fn websocket_name_drop(owner: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: given back once by the C side.
        drop(unsafe { Box::from_raw(owner as *mut BoxedOwner) });
    }));
}

/// How a channel can be handed to the engine.
pub enum ChannelKind {
    /// A plain "tcp" channel with an fd the engine can own.
    Tcp,
    /// The name channel of a socket the package owns already.
    Name,
    /// Anything else (a stacked TLS channel, a reflected channel...).
    Other(String),
}

pub fn lookup(interp: Interp, name: &str) -> Result<(Tcl_Channel, ChannelKind), TclError> {
    let cname = CString::new(name)
        .map_err(|_| TclError::plain(format!("can not find channel named \"{name}\"")))?;
    let mut mode: c_int = 0;
    // SAFETY: live interp; Tcl leaves an error message on failure.
    let chan = unsafe { ffi::ws_get_channel(interp.as_ptr(), cname.as_ptr(), &mut mode) };
    if chan.is_null() {
        return Err(TclError::InInterp);
    }
    // SAFETY: live channel; type names are static strings.
    let (stacked, type_name) = unsafe {
        (
            ffi::ws_channel_is_stacked(chan) != 0,
            CStr::from_ptr(ffi::ws_channel_type_name(chan))
                .to_string_lossy()
                .into_owned(),
        )
    };
    let kind = if !stacked && type_name == "tcp" {
        ChannelKind::Tcp
    } else if !stacked && type_name == "websocket" {
        ChannelKind::Name
    } else {
        ChannelKind::Other(type_name)
    };
    Ok((chan, kind))
}

pub fn already_websocket(name: &str) -> TclError {
    TclError::ws(format!("{name} is a WebSocket already"), &["CHANNEL"])
}

pub(super) fn set_option(
    interp: Interp,
    chan: Tcl_Channel,
    opt: &str,
    val: &str,
) -> Result<(), TclError> {
    let o = CString::new(opt).expect("no NUL");
    let v = CString::new(val).expect("no NUL");
    // SAFETY: live channel and interp.
    if unsafe { ffi::ws_set_channel_option(interp.as_ptr(), chan, o.as_ptr(), v.as_ptr()) }
        != ffi::TCL_OK
    {
        return Err(TclError::InInterp);
    }
    Ok(())
}

/// Removes the script's fileevent handlers from channel `name`.
fn clear_fileevents(interp: Interp, name: &str) -> Result<(), TclError> {
    let words = |dir: &str| {
        [
            Obj::string("::fileevent"),
            Obj::string(name),
            Obj::string(dir),
            Obj::string(""),
        ]
    };
    interp
        .eval_words(&words("readable"))
        .map_err(|_| TclError::InInterp)?;
    interp
        .eval_words(&words("writable"))
        .map_err(|_| TclError::InInterp)?;
    Ok(())
}

/// Ends the script's use of channel `name`: its fileevents go, what it wrote
/// is flushed (blocking, so a 101 answer leaves first), and the bytes Tcl
/// read ahead for it are returned. The channel is left binary.
pub(super) fn detach_from_script(
    interp: Interp,
    name: &str,
    chan: Tcl_Channel,
) -> Result<Vec<u8>, TclError> {
    clear_fileevents(interp, name)?;
    set_option(interp, chan, "-blocking", "1")?;
    // SAFETY: live channel.
    unsafe { ffi::ws_flush(chan) };
    set_option(interp, chan, "-translation", "binary")?;

    // SAFETY: live channel; we read at most what is buffered, so Tcl_Read
    // does not touch the socket.
    let mut buffered = Vec::new();
    unsafe {
        let n = ffi::ws_input_buffered(chan);
        if n > 0 {
            buffered.resize(n as usize, 0);
            let got = ffi::ws_read(chan, buffered.as_mut_ptr() as *mut _, n);
            buffered.truncate(got.max(0) as usize);
        }
    }
    // With -translation auto, a request head split between CR and LF leaves
    // the LF behind; no frame starts with 0x0A.
    if buffered.first() == Some(&b'\n') {
        buffered.remove(0);
    }
    Ok(buffered)
}

/// Takes the socket behind the "tcp" channel `name` out of Tcl: flushes what
/// the script wrote, collects what Tcl read ahead, moves the fd high and
/// detaches the channel from the interpreter (it is kept open, see HeldChannel).
pub fn take_socket(interp: Interp, name: &str) -> Result<TakenSocket, TclError> {
    let (chan, kind) = lookup(interp, name)?;
    match kind {
        ChannelKind::Tcp => {}
        ChannelKind::Name => return Err(already_websocket(name)),
        ChannelKind::Other(t) => {
            return Err(TclError::ws(
                format!("{name} is a \"{t}\" channel, not a plain TCP socket"),
                &["CHANNEL"],
            ))
        }
    }
    let buffered = detach_from_script(interp, name, chan)?;

    let mut fd: c_int = -1;
    // SAFETY: live channel.
    if unsafe { ffi::ws_get_channel_fd(chan, ffi::TCL_READABLE, &mut fd) } == 0 || fd < 0 {
        return Err(TclError::ws(
            format!("cannot get the socket of {name}"),
            &["CHANNEL"],
        ));
    }
    // SAFETY: fd is the channel's open socket.
    let mut high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, ENGINE_FD_FLOOR) };
    if high < 0 {
        // SAFETY: as above; fall back to any free number.
        high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    }
    if high < 0 {
        return Err(TclError::ws(
            format!(
                "cannot duplicate the socket of {name}: {}",
                std::io::Error::last_os_error()
            ),
            &["CHANNEL"],
        ));
    }
    // SAFETY: `high` is a fresh fd we own.
    let owned = unsafe { OwnedFd::from_raw_fd(high) };

    // SAFETY: the channel is live. Best case: Tcl forgets the fd, the state
    // block is kept for the name, and the channel itself is closed (freeing
    // its buffers). Otherwise the channel is kept open outside the
    // interpreter, and Tcl closes its fd when it is released.
    let held = unsafe {
        let offset = ffi::ws_tcp_release_fd(chan, fd);
        if offset != 0 {
            libc::close(fd);
        }
        let block = ffi::ws_tcp_detach_state(chan, offset);
        if block.is_null() {
            ffi::ws_register_channel(std::ptr::null_mut(), chan);
            ffi::ws_unregister_channel(interp.as_ptr(), chan);
            HeldChannel::Channel(chan)
        } else {
            ffi::ws_unregister_channel(interp.as_ptr(), chan);
            HeldChannel::Name(block)
        }
    };
    Ok(TakenSocket {
        fd: owned,
        buffered,
        held,
    })
}
