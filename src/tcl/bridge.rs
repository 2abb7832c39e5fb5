//! A transport through a Tcl channel, for channels the engine cannot own
//! an fd of: the `tls` package's sockets, `chan push` stacks, reflected
//! channels. The channel stays in this thread, non-blocking and binary;
//! its readable handler forwards what arrives, and the engine's writes come
//! back through a mailbox and go out with Tcl_Write.

use super::channel::{detach_from_script, lookup, set_option};
use super::event::{Consumer, Mailbox};
use super::ffi::{self, Tcl_Channel};
use super::interp::{Interp, TclError};
use std::cell::{Cell, RefCell};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the engine asks of the channel.
pub enum Outbound {
    Data(Vec<u8>),
    /// Flush and close the channel.
    Shutdown,
}

/// Called on the Tcl thread with input; `None` means end of stream.
pub type OnInput = Box<dyn FnMut(Option<Vec<u8>>)>;

struct Inner {
    chan: Tcl_Channel,
    on_input: RefCell<Option<OnInput>>,
    mailbox: RefCell<Option<Arc<Mailbox<Outbound>>>>,
    closed: Cell<bool>,
    /// `Bridge::finish` is in progress: the engine's shutdown waits for
    /// the output to be written (`shutdown_due`).
    finishing: Cell<bool>,
    shutdown_due: Cell<bool>,
    /// The clientData registered with Tcl_CreateChannelHandler.
    handler_data: Cell<*const Inner>,
}

/// The Tcl-thread handle of a bridged channel.
#[derive(Clone)]
pub struct Bridge(Rc<Inner>);

/// The engine's handle: posts writes to the channel's thread.
#[derive(Clone)]
pub struct BridgeWriter(Arc<Mailbox<Outbound>>);

impl BridgeWriter {
    pub fn send(&self, op: Outbound) {
        self.0.push(op);
    }
}

const READ_CHUNK: usize = 64 * 1024;

/// `Bridge::finish` gives up once the output has not moved for this long
/// (a peer that does not read, or does not answer the close).
const FINISH_STALL: Duration = Duration::from_millis(500);

impl Inner {
    fn input(&self, data: Option<Vec<u8>>) {
        let mut cb = self.on_input.borrow_mut();
        if let Some(f) = cb.as_mut() {
            let end = data.is_none();
            f(data);
            if end {
                *cb = None;
            }
        }
    }

    fn readable(&self) {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if self.closed.get() {
                return;
            }
            // SAFETY: live channel (not yet released); buffer of READ_CHUNK bytes.
            let n =
                unsafe { ffi::ws_read(self.chan, buf.as_mut_ptr() as *mut _, READ_CHUNK as isize) };
            if n > 0 {
                self.input(Some(buf[..n as usize].to_vec()));
                continue;
            }
            // SAFETY: live channel. A read that would block is no end (a
            // stacked channel reports it as an error with EAGAIN).
            if unsafe { ffi::ws_input_blocked(self.chan) } != 0 {
                return;
            }
            // SAFETY: live channel.
            let eof = n < 0 || unsafe { ffi::ws_eof(self.chan) } != 0;
            if eof {
                self.stop_reading();
                self.input(None);
            }
            return;
        }
    }

    fn stop_reading(&self) {
        let data = self.handler_data.replace(std::ptr::null());
        if !data.is_null() {
            // SAFETY: registered in `start` with this proc and data.
            unsafe {
                ffi::ws_delete_channel_handler(self.chan, channel_readable, data as *mut c_void);
                drop(Rc::from_raw(data));
            }
        }
    }

    fn outbound(&self, op: Outbound) {
        if self.closed.get() {
            return;
        }
        match op {
            Outbound::Data(bytes) => {
                // SAFETY: live channel; Tcl copies the bytes.
                let n = unsafe {
                    ffi::ws_write(self.chan, bytes.as_ptr() as *const _, bytes.len() as isize)
                };
                // SAFETY: live channel; a non-blocking flush finishes in the background.
                let flushed = unsafe { ffi::ws_flush(self.chan) };
                if n < 0 || flushed != ffi::TCL_OK {
                    self.stop_reading();
                    self.input(None);
                }
            }
            Outbound::Shutdown if self.finishing.get() => self.shutdown_due.set(true),
            Outbound::Shutdown => self.close(),
        }
    }

    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.stop_reading();
        *self.on_input.borrow_mut() = None;
        if let Some(mb) = self.mailbox.borrow_mut().take() {
            mb.close();
        }
        // SAFETY: drops the NULL-interpreter registration taken in `start`;
        // Tcl flushes a non-blocking channel in the background, then closes it.
        unsafe {
            ffi::ws_unregister_channel(std::ptr::null_mut(), self.chan);
        }
    }
}

/// Delivers the engine's writes to the channel.
struct Writes(std::rc::Weak<Inner>);

impl Consumer<Outbound> for Writes {
    fn deliver(&self, op: Outbound) {
        if let Some(i) = self.0.upgrade() {
            i.outbound(op);
        }
    }
    fn batch_done(&self) {}
}

unsafe extern "C" fn channel_readable(cd: *mut c_void, _mask: c_int) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: cd is the Rc<Inner> leaked for the handler; keep it alive
        // for the call even if the handler is removed meanwhile.
        let inner = Rc::from_raw(cd as *const Inner);
        let keep = inner.clone();
        std::mem::forget(inner);
        keep.readable();
    }));
}

impl Bridge {
    /// Closes the channel (idempotent). Tcl thread only.
    pub fn close(&self) {
        self.0.close();
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.get()
    }

    /// Closes the channel once the engine has put out what it owes the
    /// peer (the close frame included), the peer has answered and Tcl has
    /// written it all; or once nothing has moved for `FINISH_STALL`, or at
    /// `deadline`. For teardowns (exit, thread end) after which this
    /// thread's event loop will not run again: the writes, Tcl's background
    /// flush and the peer's answer are moved here instead.
    pub fn finish(&self, deadline: Instant) {
        let inner = &self.0;
        inner.finishing.set(true);
        let mut moved = Instant::now();
        let mut last_left = isize::MAX;
        loop {
            if inner.closed.get() {
                return;
            }
            inner.readable();
            let mailbox = inner.mailbox.borrow().clone();
            if let Some(mb) = mailbox {
                mb.deliver_now();
            }
            if inner.closed.get() {
                return;
            }
            // SAFETY: live channel (not closed); each write waits at most
            // FINISH_STALL for the peer to take more.
            let left =
                unsafe { ffi::ws_push_output(inner.chan, FINISH_STALL.as_millis() as c_int) };
            let now = Instant::now();
            if left != last_left {
                last_left = left;
                moved = now;
            }
            if (inner.shutdown_due.get() && left == 0)
                || now >= deadline
                || now.duration_since(moved) >= FINISH_STALL
            {
                break;
            }
            if left == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.close();
    }
}

/// Puts channel `name` under the bridge. Returns the Tcl-side handle, the
/// engine's writer, and the bytes Tcl had already buffered.
pub fn start(
    interp: Interp,
    name: &str,
    on_input: OnInput,
) -> Result<(Bridge, BridgeWriter, Vec<u8>), TclError> {
    let (chan, _) = lookup(interp, name)?;
    let buffered = detach_from_script(interp, name, chan)?;
    set_option(interp, chan, "-blocking", "0")?;
    set_option(interp, chan, "-buffering", "full")?;

    let inner = Rc::new(Inner {
        chan,
        on_input: RefCell::new(Some(on_input)),
        mailbox: RefCell::new(None),
        closed: Cell::new(false),
        finishing: Cell::new(false),
        shutdown_due: Cell::new(false),
        handler_data: Cell::new(std::ptr::null()),
    });
    let mailbox = Mailbox::new_no_wait(Rc::new(Writes(Rc::downgrade(&inner))));
    *inner.mailbox.borrow_mut() = Some(mailbox.clone());
    let data = Rc::into_raw(inner.clone());
    inner.handler_data.set(data);
    // SAFETY: keep the channel alive outside the interpreter (its name stays
    // reserved), then watch it; the handler data is released in stop_reading.
    unsafe {
        ffi::ws_register_channel(std::ptr::null_mut(), chan);
        ffi::ws_unregister_channel(interp.as_ptr(), chan);
        ffi::ws_create_channel_handler(
            chan,
            ffi::TCL_READABLE,
            channel_readable,
            data as *mut c_void,
        );
    }
    Ok((Bridge(inner), BridgeWriter(mailbox), buffered))
}
