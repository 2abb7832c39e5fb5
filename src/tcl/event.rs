//! The event bridge: engine threads hand items to an interpreter's thread.
//!
//! Each interpreter has one `Mailbox`. Producers append to its queue and post
//! a Tcl event (with `Tcl_ThreadAlert`) only when none is outstanding, so a
//! burst of messages costs one wake-up. The Tcl event drains the queue in
//! order. Before running a handler it makes sure another Tcl event is queued
//! while items remain, so a handler that enters `vwait` or `update` still
//! receives the next items from the nested event loop.
//!
//! When the queue runs dry, the run waits a moment for more (`wait_for_more`)
//! instead of going back to Tcl's event loop to sleep, unless the thread's
//! runs have kept Tcl from looking at its timers and file events for 1 ms,
//! or another mailbox of the thread has a Tcl event queued.
//!
//! A queued Tcl event owns nothing: it carries only the mailbox's number,
//! looked up in its thread's registry when it runs. Tcl frees the events
//! still queued when a thread exits without running them, and an event can
//! be posted just after its mailbox closed (the producer raced the owner),
//! so an event that held a reference would leak it.

use super::ffi;
use super::interp::panic_message;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Items delivered per Tcl event before yielding to the rest of the event loop.
const BATCH: usize = 512;

/// The id of the thread an interpreter runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadId(usize);

impl ThreadId {
    pub fn current() -> ThreadId {
        // SAFETY: plain query of the calling thread's Tcl id.
        ThreadId(unsafe { ffi::ws_current_thread() } as usize)
    }
}

trait Service: Send + Sync {
    /// Starts servicing one posted event; None if there is nothing to do.
    fn start(self: Arc<Self>) -> Option<Box<dyn Run>>;
}

/// One servicing of a posted event, driven by the C event procedure.
trait Run {
    /// The next script call to evaluate, or None when the run is over.
    fn next(&mut self) -> Option<Call>;
    fn done(&mut self, call: Call, code: c_int);
}

/// Numbers mailboxes; 0 is never used, so it can mean "any" in a filter.
static NEXT_MAILBOX_ID: AtomicUsize = AtomicUsize::new(1);

/// How many mailboxes of one thread have a Tcl event queued
/// (`Queue::posted`). A run that waits for more items stops as soon as
/// another mailbox has one, so that event (a bridged channel's write,
/// another interpreter's messages) is not held back.
#[derive(Default)]
struct QueuedEvents(AtomicUsize);

thread_local! {
    static QUEUED_EVENTS: Arc<QueuedEvents> = Arc::new(QueuedEvents::default());
    /// When the thread's current burst of runs began: runs that follow one
    /// another without Tcl checking its event sources in between (a queued
    /// event is serviced before timers and file events are looked at).
    /// Cleared by the event source's setup procedure.
    static BURST_START: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    static SOURCE_CREATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tcl is about to look at its event sources (timers, files): the burst is
/// over.
#[no_mangle]
extern "C" fn websocket_sources_checked() {
    if let Err(p) = catch_unwind(|| {
        let _ = BURST_START.try_with(|b| b.set(None));
    }) {
        report(p);
    }
}

fn ensure_event_source() {
    if !SOURCE_CREATED.with(|c| c.replace(true)) {
        // SAFETY: registers the shim's setup procedure for this thread; it
        // is deleted by the thread exit handler below.
        unsafe { ffi::ws_create_event_source() };
        super::callback::at_thread_exit(delete_event_source);
    }
}

fn delete_event_source() {
    if SOURCE_CREATED
        .try_with(|c| c.replace(false))
        .unwrap_or(false)
    {
        // SAFETY: created on this thread by ensure_event_source.
        unsafe { ffi::ws_delete_event_source() };
    }
}

thread_local! {
    /// The mailboxes owned by this thread and not yet closed, by number.
    /// Weak: the owner's state holds the mailbox; a thread that exits
    /// without closing one must not drop it here, after Tcl is gone.
    static REGISTRY: RefCell<Vec<(usize, Weak<dyn Service>)>> = const { RefCell::new(Vec::new()) };
}

fn register(id: usize, mailbox: Weak<dyn Service>) {
    let _ = REGISTRY.try_with(|r| {
        let mut r = r.borrow_mut();
        r.retain(|(_, m)| m.strong_count() > 0);
        r.push((id, mailbox));
    });
}

fn unregister(id: usize) {
    let _ = REGISTRY.try_with(|r| r.borrow_mut().retain(|(i, _)| *i != id));
}

fn lookup(id: usize) -> Option<Arc<dyn Service>> {
    REGISTRY
        .try_with(|r| {
            r.borrow()
                .iter()
                .find(|(i, _)| *i == id)
                .and_then(|(_, m)| m.upgrade())
        })
        .ok()
        .flatten()
}

struct Queue<T> {
    items: VecDeque<T>,
    /// A Tcl event for this mailbox sits in the thread's event queue.
    posted: bool,
    /// The owner waits in a run for the next item (`wait_for_more`): a
    /// push clears this instead of posting a Tcl event.
    waiting: bool,
    /// Runs left that do not wait, and how many the last miss skipped.
    skip: u32,
    misses: u32,
    closed: bool,
}

/// A script call to evaluate at global level: `words` in `interp`.
pub struct Call {
    pub interp: super::Interp,
    pub words: Vec<super::Obj>,
}

/// What a mailbox delivers to, on its owner's thread.
///
/// `deliver` updates state and queues the script calls an item causes;
/// `take_call` hands them out one by one and `call_done` hears how each
/// went. The calls are evaluated by the C event procedure itself, so no
/// Rust frame is on the stack while a script runs: a script that ends its
/// thread (`thread::exit` unwinds the stack) does not meet one.
pub trait Consumer<T> {
    fn deliver(&self, item: T);
    fn take_call(&self) -> Option<Call> {
        None
    }
    /// `code` is what the call returned (TCL_OK is 0).
    fn call_done(&self, call: Call, code: c_int) {
        let _ = (call, code);
    }
    /// A run of deliveries is over (a good moment to flush what they wrote).
    fn batch_done(&self);
}

/// The consumer runs on the owner thread only; it is kept apart from the
/// shared part so the mailbox can be Send + Sync.
struct ConsumerCell<T>(RefCell<Option<Rc<dyn Consumer<T>>>>);
// SAFETY: the cell is only touched on `Mailbox::owner`'s thread (checked).
unsafe impl<T> Send for ConsumerCell<T> {}
unsafe impl<T> Sync for ConsumerCell<T> {}

pub struct Mailbox<T: Send + 'static> {
    id: usize,
    owner: ThreadId,
    queue: Mutex<Queue<T>>,
    consumer: ConsumerCell<T>,
    /// Shared with the other mailboxes of the owner thread.
    thread_queued: Arc<QueuedEvents>,
    /// Runs may wait for more items (`wait_for_more`).
    may_wait: bool,
}

impl<T: Send + 'static> Mailbox<T> {
    /// A mailbox owned by the calling thread, delivering to `consumer`.
    pub fn new(consumer: Rc<dyn Consumer<T>>) -> Arc<Self> {
        Self::build(consumer, true)
    }

    /// A mailbox whose runs never wait for more items: what it carries
    /// depends on the Tcl event loop running (a bridged channel's writes).
    pub fn new_no_wait(consumer: Rc<dyn Consumer<T>>) -> Arc<Self> {
        Self::build(consumer, false)
    }

    fn build(consumer: Rc<dyn Consumer<T>>, may_wait: bool) -> Arc<Self> {
        ensure_event_source();
        let id = NEXT_MAILBOX_ID.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox {
            id,
            owner: ThreadId::current(),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                posted: false,
                waiting: false,
                skip: 0,
                misses: 0,
                closed: false,
            }),
            consumer: ConsumerCell(RefCell::new(Some(consumer))),
            thread_queued: QUEUED_EVENTS.with(|q| q.clone()),
            may_wait,
        });
        let weak: Weak<dyn Service> = Arc::downgrade(&(mailbox.clone() as Arc<dyn Service>));
        register(id, weak);
        mailbox
    }

    /// Appends an item from any thread. Items sent after `close` are dropped.
    pub fn push(self: &Arc<Self>, item: T) {
        let post = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.closed {
                return;
            }
            q.items.push_back(item);
            if q.waiting {
                q.waiting = false;
                return;
            }
            self.mark_posted(&mut q)
        };
        // Posted outside the lock, so the woken thread does not wait for it.
        // An event that arrives after `close` finds no mailbox under its
        // number and does nothing; Tcl ignores events and alerts for threads
        // that are gone.
        if post {
            self.post(true);
        }
    }

    /// Notes that a Tcl event is (about to be) queued; false if one was.
    fn mark_posted(&self, q: &mut Queue<T>) -> bool {
        if q.posted {
            return false;
        }
        q.posted = true;
        self.thread_queued.0.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Notes that the queued Tcl event ran or was deleted.
    fn clear_posted(&self, q: &mut Queue<T>) {
        if q.posted {
            q.posted = false;
            self.thread_queued.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn post(&self, alert: bool) {
        // SAFETY: the payload is a plain number; the event owns nothing.
        unsafe {
            ffi::ws_post_event(
                self.owner.0 as *mut c_void,
                self.id as *mut c_void,
                alert as c_int,
            )
        }
    }

    fn on_owner_thread(&self) -> bool {
        ThreadId::current() == self.owner
    }

    /// Stops delivery: drops queued items, the consumer, and the Tcl events
    /// still queued for this mailbox. Call on the owner thread.
    pub fn close(self: &Arc<Self>) {
        assert!(self.on_owner_thread(), "Mailbox::close off its thread");
        let items = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.closed = true;
            // The event is deleted below (or, queued late by a producer,
            // finds no mailbox).
            self.clear_posted(&mut q);
            std::mem::take(&mut q.items)
        };
        drop(items);
        let consumer = self.consumer.0.borrow_mut().take();
        drop(consumer);
        unregister(self.id);
        // SAFETY: matches our own events by mailbox number on this thread.
        unsafe { ffi::ws_delete_events(self.id as *mut c_void) }
    }

    pub fn is_closed(&self) -> bool {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).closed
    }
}

impl<T: Send + 'static> Service for Mailbox<T> {
    fn start(self: Arc<Self>) -> Option<Box<dyn Run>> {
        if !self.on_owner_thread() {
            return None;
        }
        let consumer = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            self.clear_posted(&mut q);
            if q.closed {
                return None;
            }
            self.consumer.0.borrow().as_ref()?.clone()
        };
        Some(Box::new(MailboxRun {
            mailbox: self,
            consumer,
            delivered: 0,
            over: false,
        }))
    }
}

struct MailboxRun<T: Send + 'static> {
    mailbox: Arc<Mailbox<T>>,
    consumer: Rc<dyn Consumer<T>>,
    delivered: usize,
    over: bool,
}

/// How long a run waits for the next item once the mailbox is empty
/// (`WEBSOCKET_SPIN_US`, 0 turns it off).
///
/// Going back to Tcl's event loop to sleep costs more than the work of a
/// message: Tcl 8.6's threaded notifier has a thread with any file handler
/// (a listening socket) tell its notifier thread each time it starts and
/// stops waiting, and the engine's alert wakes it through a condition
/// variable. At window 1 that was ~5 context switches per round trip on the
/// server's core. Waiting here instead, yielding the CPU to the engine and
/// the peer meanwhile, halved the round trip with the peer on the same core
/// (47 -> 30 µs, node ws 30) and on another core (133 -> 59 µs, node 130),
/// and 200 connections gained ~10%. A wait that finds nothing costs up to
/// this much CPU; after one, the next runs skip waiting (1, 3, 7, ... 63),
/// so sparse traffic pays about 1/64 of it per message. A timed sleep on a
/// condition variable instead of yielding measured slower than Tcl's own
/// wait (same core 47 -> 56 µs).
fn spin_time() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("WEBSOCKET_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_SPIN_US)
            .min(MAX_SPIN_US);
        Duration::from_micros(us)
    })
}

const DEFAULT_SPIN_US: u64 = 100;
const MAX_SPIN_US: u64 = 10_000;

/// Runs stop waiting for more items once the thread's burst (see
/// `BURST_START`) is this old, so that a steady stream leaves gaps in which
/// Tcl looks at its timers and file events. Measured with a 5 ms `after`
/// chain behind a stream of echoes (1 to 64 in flight): timers late by
/// 1.7-1.9 ms at the median and 2.9 ms at most with 1 ms (0.8-1.2 and
/// 1.9 ms with 0.5 ms, 3.5 and 4.2 ms with 2 ms; 0.1 and 0.5 ms without
/// waiting). Round trips and throughput did not measurably differ between
/// 0.5 and 2 ms.
const BURST_BUDGET: Duration = Duration::from_millis(1);

/// Most runs skipped after waits that found nothing (a power of two).
const MAX_SKIP: u32 = 64;

impl<T: Send + 'static> MailboxRun<T> {
    /// Waits up to `spin_time` for the next item, yielding the CPU; true if
    /// one came.
    fn wait_for_more(&mut self) -> bool {
        let spin = spin_time();
        // A run started by an event whose items an earlier run took has
        // nothing to wait for.
        if spin.is_zero()
            || !self.mailbox.may_wait
            || self.delivered == 0
            || self.delivered >= BATCH
        {
            return false;
        }
        let now = Instant::now();
        let burst = BURST_START.with(|b| {
            let start = b.get().unwrap_or(now);
            b.set(Some(start));
            start
        });
        if now.duration_since(burst) > BURST_BUDGET {
            return false;
        }
        let mb = &self.mailbox;
        {
            let mut q = mb.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.closed {
                return false;
            }
            if !q.items.is_empty() {
                return true;
            }
            if q.skip > 0 {
                q.skip -= 1;
                return false;
            }
            q.waiting = true;
        }
        let deadline = now + spin;
        loop {
            crate::sys::yield_cpu();
            let mut q = mb.queue.lock().unwrap_or_else(|e| e.into_inner());
            if !q.waiting {
                q.misses = 0;
                return !q.items.is_empty();
            }
            // Another mailbox of this thread has an event queued.
            if mb.thread_queued.0.load(Ordering::SeqCst) > q.posted as usize {
                q.waiting = false;
                return false;
            }
            if q.closed || Instant::now() >= deadline {
                q.waiting = false;
                q.misses = (q.misses * 2 + 1).min(MAX_SKIP - 1);
                q.skip = q.misses;
                return false;
            }
        }
    }
}

impl<T: Send + 'static> Run for MailboxRun<T> {
    fn next(&mut self) -> Option<Call> {
        loop {
            if let Some(call) = self.consumer.take_call() {
                return Some(call);
            }
            if self.over {
                return None;
            }
            if self.delivered == BATCH {
                self.over = true;
                self.consumer.batch_done();
                let mb = &self.mailbox;
                let mut q = mb.queue.lock().unwrap_or_else(|e| e.into_inner());
                if !q.items.is_empty() && !q.closed && mb.mark_posted(&mut q) {
                    mb.post(false);
                }
                continue;
            }
            let item = {
                let mb = &self.mailbox;
                let mut q = mb.queue.lock().unwrap_or_else(|e| e.into_inner());
                let item = q.items.pop_front();
                // Before running the calls this item causes, make sure an
                // event is queued for the rest: a script that enters `vwait`
                // or `update` still receives them from the nested loop.
                if item.is_some() && !q.items.is_empty() && mb.mark_posted(&mut q) {
                    mb.post(false);
                }
                item
            };
            match item {
                Some(item) => {
                    self.delivered += 1;
                    self.consumer.deliver(item);
                }
                None => {
                    self.consumer.batch_done();
                    if !self.wait_for_more() {
                        self.over = true;
                    }
                }
            }
        }
    }

    fn done(&mut self, call: Call, code: c_int) {
        self.consumer.call_done(call, code);
    }
}

/// What the C event procedure gets for one call; `words` stays alive (in
/// the run) until `websocket_service_done`.
#[repr(C)]
pub struct CallOut {
    interp: *mut super::ffi::Tcl_Interp,
    objc: isize,
    objv: *const *mut super::ffi::Tcl_Obj,
}

thread_local! {
    /// The runs in progress on this thread, innermost last (handlers can
    /// nest event loops). A thread that ends inside a handler
    /// (`thread::exit`) never returns to end them: its exit handler does.
    static ACTIVE_RUNS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static RUN_REAPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Frees the runs a thread left when it ended inside a handler (called
/// while Tcl still runs, from the thread's exit handlers).
fn reap_runs() {
    let runs = ACTIVE_RUNS
        .try_with(|r| std::mem::take(&mut *r.borrow_mut()))
        .unwrap_or_default();
    for h in runs.into_iter().rev() {
        // SAFETY: each was made by websocket_service_start and not ended;
        // the frames that held it will never run again.
        drop(unsafe { Box::from_raw(h as *mut RunHandle) });
    }
}

/// A run in progress, as the C side holds it.
struct RunHandle {
    run: Box<dyn Run>,
    current: Option<Call>,
    ptrs: Vec<*mut super::ffi::Tcl_Obj>,
}

fn report(p: Box<dyn std::any::Any + Send>) {
    eprintln!(
        "websocket: internal error while delivering events: {}",
        panic_message(&p)
    );
}

/// Starts servicing the posted event `payload` (a mailbox number); null
/// when there is nothing to do. The C side then calls
/// `websocket_service_next` until it returns 0, evaluating each call and
/// reporting it with `websocket_service_done`, and ends with
/// `websocket_service_end`.
#[no_mangle]
extern "C" fn websocket_service_start(payload: *mut c_void) -> *mut c_void {
    match catch_unwind(AssertUnwindSafe(|| {
        lookup(payload as usize).and_then(|m| m.start())
    })) {
        Ok(Some(run)) => {
            let h = Box::into_raw(Box::new(RunHandle {
                run,
                current: None,
                ptrs: Vec::new(),
            }));
            let _ = ACTIVE_RUNS.try_with(|r| r.borrow_mut().push(h as usize));
            if !RUN_REAPER.with(|f| f.replace(true)) {
                super::callback::at_thread_exit(reap_runs);
            }
            h as *mut c_void
        }
        Ok(None) => std::ptr::null_mut(),
        Err(p) => {
            report(p);
            std::ptr::null_mut()
        }
    }
}

#[no_mangle]
extern "C" fn websocket_service_next(handle: *mut c_void, out: *mut CallOut) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by websocket_service_start, not yet ended; the C side
        // uses it on this thread only, one call at a time.
        let h = unsafe { &mut *(handle as *mut RunHandle) };
        let call = h.run.next()?;
        h.ptrs.clear();
        h.ptrs.extend(call.words.iter().map(|w| w.as_ptr()));
        let c = CallOut {
            interp: call.interp.as_ptr(),
            objc: h.ptrs.len() as isize,
            objv: h.ptrs.as_ptr(),
        };
        h.current = Some(call);
        Some(c)
    }));
    match outcome {
        Ok(Some(c)) => {
            // SAFETY: out points at the C side's CallOut.
            unsafe { out.write(c) };
            1
        }
        Ok(None) => 0,
        Err(p) => {
            report(p);
            0
        }
    }
}

#[no_mangle]
extern "C" fn websocket_service_done(handle: *mut c_void, code: c_int) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in websocket_service_next.
        let h = unsafe { &mut *(handle as *mut RunHandle) };
        if let Some(call) = h.current.take() {
            h.run.done(call, code);
        }
    }));
    if let Err(p) = outcome {
        report(p);
    }
}

#[no_mangle]
extern "C" fn websocket_service_end(handle: *mut c_void) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _ = ACTIVE_RUNS.try_with(|r| r.borrow_mut().retain(|&h| h != handle as usize));
        // SAFETY: made by websocket_service_start; ended once.
        drop(unsafe { Box::from_raw(handle as *mut RunHandle) });
    }));
    if let Err(p) = outcome {
        report(p);
    }
}
