//! The event bridge: engine threads hand items to an interpreter's thread.
//!
//! Each interpreter has one `Mailbox`. Producers append to its queue and,
//! when the mailbox goes from idle to having items, put its number on the
//! thread's ready list and wake the thread (`Tcl_ThreadAlert`): one
//! wake-up per burst. The mailboxes' event source turns the ready list into
//! queued Tcl events when Tcl looks at its event sources, as Tcl's own file
//! events are made, and each such event delivers items in order in a run.
//!
//! Fairness: a run ends once the thread has spent `RUN_BUDGET` without Tcl
//! looking at its event sources; the rest waits on
//! the ready list, not in Tcl's event queue. So the queue empties after
//! every run and Tcl looks at its timers, file events and other sources
//! before the mailbox is served again, however deep the backlog. A handler
//! that enters `vwait` or `update` still receives the next items: the
//! nested event loop asks the event source, which puts the mailboxes of the
//! runs in progress with items left on the ready list.
//!
//! When the queue runs dry, the run waits a moment for more (`wait_for_more`)
//! instead of going back to Tcl's event loop to sleep, unless the thread's
//! runs have kept Tcl from looking at its timers and file events for 1 ms,
//! or another mailbox of the thread has items announced.
//!
//! A queued Tcl event owns nothing: it carries only the mailbox's number,
//! looked up in its thread's registry when it runs. Tcl frees the events
//! still queued when a thread exits without running them, and an event can
//! outlive its mailbox, so an event that held a reference would leak it.

use super::ffi;
use super::interp::panic_message;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Items delivered between flushes of what their handlers sent
/// (`Consumer::batch_done`); a run that delivered this many does not wait
/// for more.
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
    /// Starts servicing one queued event; None if there is nothing to do.
    fn start(self: Arc<Self>) -> Option<Box<dyn Run>>;
    /// A nested event loop looks at the event sources while a run of this
    /// mailbox waits for its handler call: items left must be announced.
    fn announce_rest(&self);
}

/// One servicing of a queued event, driven by the C event procedure.
trait Run {
    /// The next script call to evaluate, or None when the run is over.
    fn next(&mut self) -> Option<Call>;
    fn done(&mut self, call: Call, code: c_int);
}

/// Numbers mailboxes; 0 is never used, so it can mean "any" in a filter.
static NEXT_MAILBOX_ID: AtomicUsize = AtomicUsize::new(1);

/// What the mailboxes of one thread share.
#[derive(Default)]
struct ThreadShared {
    ready: Mutex<Ready>,
    /// How many mailboxes are announced (`Queue::announced`). A run that
    /// waits for more items stops as soon as another mailbox is, so that
    /// mailbox (a bridged channel's writes, another interpreter's messages)
    /// is not held back.
    announced: AtomicUsize,
}

#[derive(Default)]
struct Ready {
    /// Mailboxes with items and no Tcl event queued yet, by number, in the
    /// order they became ready; the event source queues their events.
    ids: Vec<usize>,
    /// The thread may be blocked waiting for events: between the event
    /// source's setup and check procedures. Only then does a producer wake
    /// it. An alert to a thread that is not waiting makes its next wait
    /// return at once, before Tcl 8.6's notifier thread has looked at the
    /// thread's file descriptors, so a stream of needless alerts starved
    /// the script's own sockets (an accept answered after ~1 s with 50
    /// busy connections).
    waiting: bool,
}

thread_local! {
    static THREAD_SHARED: Arc<ThreadShared> = Arc::new(ThreadShared::default());
    /// When the thread's current burst of runs began: runs that follow one
    /// another without Tcl checking its event sources in between. Cleared
    /// by the event source's setup procedure.
    static BURST_START: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    static SOURCE_CREATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// How long each run of the current turn may last: `RUN_BUDGET` shared
    /// among the mailboxes that were ready together (set by the check
    /// procedure), so that one busy interpreter does not leave the others
    /// of its thread one message per turn.
    static SHARE: std::cell::Cell<Duration> = const { std::cell::Cell::new(RUN_BUDGET) };
    /// The mailboxes whose runs are in progress on this thread (handlers
    /// can nest event loops), innermost last.
    static ACTIVE_MAILBOXES: RefCell<Vec<Arc<dyn Service>>> = const { RefCell::new(Vec::new()) };
    /// Since when our idle probe has been pending (`idle_probe`).
    static IDLE_PROBE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    /// The setup procedure held the ready mailboxes back this time round.
    static HELD_BACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Idle callbacks run only when a turn of Tcl's event loop finds no event
/// to serve, which a backlog never allows: after a run leaves items
/// behind, a probe is registered for idle time, and once it has waited
/// this long the ready mailboxes are held back for one turn, so that the
/// script's idle callbacks (registered before the probe) run.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// A loop that never serves idle callbacks (`Tcl_DoOneEvent` without
/// TCL_IDLE_EVENTS, over and over) must not stop the mailboxes: past this
/// the probe no longer holds them back.
const IDLE_HOLD_MAX: Duration = Duration::from_millis(50);

extern "C" fn idle_probe(_cd: *mut c_void) {
    let _ = IDLE_PROBE.try_with(|p| p.set(None));
}

/// Registers the idle probe unless it is pending.
fn ensure_idle_probe() {
    let _ = IDLE_PROBE.try_with(|p| {
        if p.get().is_none() {
            p.set(Some(Instant::now()));
            // SAFETY: a plain function, no client data; Tcl drops it with
            // the thread.
            unsafe { ffi::ws_do_when_idle(idle_probe, std::ptr::null_mut()) };
        }
    });
}

/// True if the ready mailboxes must wait this turn for idle callbacks.
fn hold_for_idle(flags: c_int) -> bool {
    if flags & ffi::TCL_IDLE_EVENTS == 0 {
        return false;
    }
    let waited = IDLE_PROBE
        .try_with(|p| p.get())
        .ok()
        .flatten()
        .map(|since| since.elapsed());
    matches!(waited, Some(w) if w >= IDLE_WAIT && w < IDLE_HOLD_MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tcl is about to look at its event sources (`flags` says which). Returns
/// 1 if Tcl must not block: mailboxes are ready.
#[no_mangle]
extern "C" fn websocket_sources_setup(flags: c_int) -> c_int {
    match catch_unwind(|| {
        // `update idletasks` looks at neither timers nor files: it must not
        // end the burst.
        if flags & (ffi::TCL_TIMER_EVENTS | ffi::TCL_FILE_EVENTS) != 0 {
            let _ = BURST_START.try_with(|b| b.set(None));
        }
        if flags & ffi::TCL_FILE_EVENTS == 0 {
            return 0;
        }
        // Tcl polls (block time 0) while an idle callback is pending.
        let hold = hold_for_idle(flags);
        let _ = HELD_BACK.try_with(|h| h.set(hold));
        // A nested event loop inside a handler: the runs it interrupts
        // leave their items to it.
        let active = ACTIVE_MAILBOXES
            .try_with(|r| r.borrow().clone())
            .unwrap_or_default();
        for mailbox in active {
            mailbox.announce_rest();
        }
        THREAD_SHARED
            .try_with(|t| {
                let mut ready = lock(&t.ready);
                ready.waiting = true;
                (!hold && !ready.ids.is_empty()) as c_int
            })
            .unwrap_or(0)
    }) {
        Ok(block) => block,
        Err(p) => {
            report(p);
            0
        }
    }
}

/// Tcl has looked at its event sources: queue an event for each ready
/// mailbox, behind the file events just queued (and the timer event, once
/// Tcl has made its timer source: it does so at the first `after`).
#[no_mangle]
extern "C" fn websocket_sources_check() {
    if let Err(p) = catch_unwind(|| {
        let hold = HELD_BACK.try_with(|h| h.replace(false)).unwrap_or(false);
        let ready = THREAD_SHARED
            .try_with(|t| {
                let mut ready = lock(&t.ready);
                ready.waiting = false;
                if hold {
                    return Vec::new();
                }
                std::mem::take(&mut ready.ids)
            })
            .unwrap_or_default();
        if !ready.is_empty() {
            let share = RUN_BUDGET / ready.len().min(u32::MAX as usize) as u32;
            let _ = SHARE.try_with(|s| s.set(share));
        }
        for id in ready {
            // SAFETY: the payload is a plain number; the event owns nothing.
            unsafe { ffi::ws_queue_event(id as *mut c_void) };
        }
    }) {
        report(p);
    }
}

fn ensure_event_source() {
    if !SOURCE_CREATED.with(|c| c.replace(true)) {
        // SAFETY: registers the shim's event source for this thread; it is
        // deleted by the thread exit handler below.
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
    static REGISTRY: RefCell<HashMap<usize, Weak<dyn Service>>> = RefCell::new(HashMap::new());
}

fn register(id: usize, mailbox: Weak<dyn Service>) {
    let _ = REGISTRY.try_with(|r| {
        let mut r = r.borrow_mut();
        r.retain(|_, m| m.strong_count() > 0);
        r.insert(id, mailbox);
    });
}

fn unregister(id: usize) {
    let _ = REGISTRY.try_with(|r| r.borrow_mut().remove(&id));
}

fn lookup(id: usize) -> Option<Arc<dyn Service>> {
    REGISTRY
        .try_with(|r| r.borrow().get(&id).and_then(|m| m.upgrade()))
        .ok()
        .flatten()
}

struct Queue<T> {
    items: VecDeque<T>,
    /// The mailbox is on its thread's ready list, or a Tcl event for it is
    /// queued: it will be served without another announcement.
    announced: bool,
    /// The owner waits in a run for the next item (`wait_for_more`): a
    /// push clears this instead of announcing.
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
    /// A run begins; calls queued by its deliveries belong to it until it
    /// ends, so that a nested run (a handler's `vwait`) does not take them.
    fn run_begin(&self) {}
    fn run_end(&self) {}
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
    thread: Arc<ThreadShared>,
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
                announced: false,
                waiting: false,
                skip: 0,
                misses: 0,
                closed: false,
            }),
            consumer: ConsumerCell(RefCell::new(Some(consumer))),
            thread: THREAD_SHARED.with(|q| q.clone()),
            may_wait,
        });
        let weak: Weak<dyn Service> = Arc::downgrade(&(mailbox.clone() as Arc<dyn Service>));
        register(id, weak);
        mailbox
    }

    /// Appends an item from any thread. Items sent after `close` are dropped.
    pub fn push(self: &Arc<Self>, item: T) {
        let alert = {
            let mut q = lock(&self.queue);
            if q.closed {
                return;
            }
            q.items.push_back(item);
            if q.waiting {
                q.waiting = false;
                return;
            }
            self.announce(&mut q)
        };
        // Outside the lock, so the woken thread does not wait for it. Tcl
        // ignores alerts for threads that are gone.
        if alert {
            // SAFETY: a plain Tcl thread id.
            unsafe { ffi::ws_alert(self.owner.0 as *mut c_void) }
        }
    }

    /// Puts the mailbox on its thread's ready list unless it is announced
    /// already; true if the thread must be woken.
    fn announce(&self, q: &mut Queue<T>) -> bool {
        if q.announced {
            return false;
        }
        q.announced = true;
        self.thread.announced.fetch_add(1, Ordering::SeqCst);
        let mut ready = lock(&self.thread.ready);
        ready.ids.push(self.id);
        ready.waiting
    }

    /// Notes that the announcement was served (its Tcl event runs).
    fn clear_announced(&self, q: &mut Queue<T>) {
        if q.announced {
            q.announced = false;
            self.thread.announced.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Takes back an announcement no event was queued for yet, once a run
    /// has emptied the queue: it would only start a run with nothing to do.
    fn retract(&self, q: &mut Queue<T>) {
        if q.announced && q.items.is_empty() {
            let mut ready = lock(&self.thread.ready);
            if let Some(i) = ready.ids.iter().position(|&id| id == self.id) {
                ready.ids.remove(i);
                drop(ready);
                self.clear_announced(q);
            }
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
            let mut q = lock(&self.queue);
            q.closed = true;
            // The event is deleted below (or, queued late, finds no mailbox).
            lock(&self.thread.ready).ids.retain(|&id| id != self.id);
            self.clear_announced(&mut q);
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
        lock(&self.queue).closed
    }

    /// Delivers the items queued now, outside the event loop, for a
    /// teardown that cannot wait for it (calls the consumer queues are not
    /// made). Owner thread only.
    pub fn deliver_now(self: &Arc<Self>) {
        if !self.on_owner_thread() {
            return;
        }
        let Some(consumer) = self.consumer.0.borrow().as_ref().cloned() else {
            return;
        };
        loop {
            let item = {
                let mut q = lock(&self.queue);
                if q.closed {
                    return;
                }
                q.items.pop_front()
            };
            match item {
                Some(item) => consumer.deliver(item),
                None => break,
            }
        }
        consumer.batch_done();
    }
}

impl<T: Send + 'static> Service for Mailbox<T> {
    fn start(self: Arc<Self>) -> Option<Box<dyn Run>> {
        if !self.on_owner_thread() {
            return None;
        }
        let consumer = {
            let mut q = lock(&self.queue);
            self.clear_announced(&mut q);
            if q.closed || q.items.is_empty() {
                return None;
            }
            self.consumer.0.borrow().as_ref()?.clone()
        };
        let now = Instant::now();
        let burst = BURST_START.with(|b| {
            let start = b.get().unwrap_or(now);
            b.set(Some(start));
            start
        });
        consumer.run_begin();
        let _ = ACTIVE_MAILBOXES.try_with(|a| a.borrow_mut().push(self.clone()));
        Some(Box::new(MailboxRun {
            mailbox: self,
            consumer,
            delivered: 0,
            burst,
            started: now,
            share: SHARE.with(|s| s.get()),
            over: false,
        }))
    }

    fn announce_rest(&self) {
        let mut q = lock(&self.queue);
        if !q.closed && !q.items.is_empty() {
            self.announce(&mut q);
        }
    }
}

struct MailboxRun<T: Send + 'static> {
    mailbox: Arc<Mailbox<T>>,
    consumer: Rc<dyn Consumer<T>>,
    delivered: usize,
    /// When the thread's burst of runs began (`BURST_START`).
    burst: Instant,
    /// When this run began, and how long it may last (`SHARE`).
    started: Instant,
    share: Duration,
    over: bool,
}

impl<T: Send + 'static> Drop for MailboxRun<T> {
    fn drop(&mut self) {
        let _ = ACTIVE_MAILBOXES.try_with(|a| {
            let mut a = a.borrow_mut();
            let me = Arc::as_ptr(&self.mailbox) as *const ();
            if let Some(i) = a.iter().rposition(|m| Arc::as_ptr(m) as *const () == me) {
                a.remove(i);
            }
        });
        self.consumer.run_end();
    }
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

/// A run with items left ends once the thread's burst is this old, so that
/// a backlog leaves Tcl's timers and file events late by about this much
/// at most. Each end costs a poll of the event sources (with Tcl 8.6's
/// threaded notifier, a round trip through its notifier thread), so runs
/// are bounded by time, not by a count of cheap messages.
const RUN_BUDGET: Duration = Duration::from_millis(2);

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
        if now.duration_since(self.burst) > BURST_BUDGET {
            return false;
        }
        let mb = &self.mailbox;
        {
            let mut q = lock(&mb.queue);
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
            let mut q = lock(&mb.queue);
            if !q.waiting {
                q.misses = 0;
                return !q.items.is_empty();
            }
            // Another mailbox of this thread has items announced.
            if mb.thread.announced.load(Ordering::SeqCst) > q.announced as usize {
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

    /// The run has had its share of the turn, or the turn is long over.
    fn out_of_time(&self) -> bool {
        let now = Instant::now();
        now.duration_since(self.started) > self.share
            || now.duration_since(self.burst) > 2 * RUN_BUDGET
    }

    /// Ends the run; items left are announced, to be served after Tcl has
    /// looked at its other event sources.
    fn end(&mut self) {
        self.over = true;
        let mb = &self.mailbox;
        let mut q = lock(&mb.queue);
        if q.closed {
            return;
        }
        if q.items.is_empty() {
            mb.retract(&mut q);
        } else {
            mb.announce(&mut q);
            drop(q);
            ensure_idle_probe();
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
            if self.delivered > 0 && self.delivered.is_multiple_of(BATCH) {
                self.consumer.batch_done();
            }
            if self.delivered > 0 && self.out_of_time() {
                self.consumer.batch_done();
                self.end();
                continue;
            }
            let item = lock(&self.mailbox.queue).items.pop_front();
            match item {
                Some(item) => {
                    self.delivered += 1;
                    self.consumer.deliver(item);
                }
                None => {
                    self.consumer.batch_done();
                    if !self.wait_for_more() {
                        self.end();
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
        Ok(Some(run)) => into_handle(run),
        Ok(None) => std::ptr::null_mut(),
        Err(p) => {
            report(p);
            std::ptr::null_mut()
        }
    }
}

/// A run for the C side to drive (websocket_service_next ... _end).
fn into_handle(run: Box<dyn Run>) -> *mut c_void {
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

/// Handler calls a command queued (`after_command`).
pub trait CommandCalls {
    fn next_call(&mut self) -> Option<Call>;
    fn call_done(&mut self, call: Call, code: c_int);
}

struct CommandRun<C: CommandCalls>(C);

impl<C: CommandCalls> Run for CommandRun<C> {
    fn next(&mut self) -> Option<Call> {
        self.0.next_call()
    }
    fn done(&mut self, call: Call, code: c_int) {
        self.0.call_done(call, code);
    }
}

thread_local! {
    static AFTER_COMMAND: RefCell<Option<Box<dyn Run>>> = const { RefCell::new(None) };
}

/// Has the C procedure of the command being run make these handler calls
/// once the command's Rust code has returned: no Rust frame is then below
/// a handler (one that ends its thread with `thread::exit` unwinds the
/// stack), as for the calls events cause.
pub fn after_command<C: CommandCalls + 'static>(calls: C) {
    let _ = AFTER_COMMAND.try_with(|a| *a.borrow_mut() = Some(Box::new(CommandRun(calls))));
}

/// The handler calls the command that just returned left (`after_command`);
/// null if none.
#[no_mangle]
extern "C" fn websocket_command_calls() -> *mut c_void {
    match catch_unwind(|| {
        AFTER_COMMAND
            .try_with(|a| a.borrow_mut().take())
            .ok()
            .flatten()
    }) {
        Ok(Some(run)) => into_handle(run),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcl::testing::TestInterp;
    use crate::tcl::{Interp, Obj};
    use std::cell::Cell;

    /// Records the items it gets; each item may also queue a script call
    /// (`lappend ::got <item>`) that the C event procedure makes.
    struct Recorder {
        interp: Interp,
        got: RefCell<Vec<u64>>,
        calls: RefCell<VecDeque<Call>>,
        with_calls: bool,
        /// How many items had come when the Tcl variable ::fired appeared.
        before_fired: Cell<Option<usize>>,
        batches: Cell<usize>,
    }

    impl Recorder {
        fn new(interp: Interp, with_calls: bool) -> Rc<Recorder> {
            Rc::new(Recorder {
                interp,
                got: RefCell::new(Vec::new()),
                calls: RefCell::new(VecDeque::new()),
                with_calls,
                before_fired: Cell::new(None),
                batches: Cell::new(0),
            })
        }
    }

    impl Consumer<u64> for Recorder {
        fn deliver(&self, item: u64) {
            if self.before_fired.get().is_none() && self.interp.global_var("fired").is_some() {
                self.before_fired.set(Some(self.got.borrow().len()));
            }
            self.got.borrow_mut().push(item);
            if self.with_calls {
                self.calls.borrow_mut().push_back(Call {
                    interp: self.interp,
                    words: vec![
                        Obj::string("lappend"),
                        Obj::string("::got"),
                        Obj::int(item as i64),
                    ],
                });
            }
        }
        fn take_call(&self) -> Option<Call> {
            self.calls.borrow_mut().pop_front()
        }
        fn batch_done(&self) {
            self.batches.set(self.batches.get() + 1);
        }
    }

    /// Items pushed from other threads reach the consumer on the owner's
    /// thread, all of them and each producer's in order; the calls they
    /// queue are made in the same order.
    #[test]
    fn delivers_in_order_from_other_threads() {
        let t = TestInterp::new();
        let rec = Recorder::new(t.interp(), true);
        let mb = Mailbox::new(rec.clone());
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let mb = mb.clone();
                std::thread::spawn(move || {
                    for i in 0..5000u64 {
                        mb.push(p << 32 | i);
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        assert!(t.run_until(Duration::from_secs(10), || rec.got.borrow().len() == 10_000));
        for p in 0..2u64 {
            let mine: Vec<u64> = rec
                .got
                .borrow()
                .iter()
                .copied()
                .filter(|x| x >> 32 == p)
                .collect();
            assert_eq!(mine, (0..5000).map(|i| p << 32 | i).collect::<Vec<_>>());
        }
        assert!(t.run_until(Duration::from_secs(10), || {
            t.ok("llength [set ::got]") == "10000"
        }));
        let scripted = t.ok("set ::got");
        let delivered: Vec<String> = rec.got.borrow().iter().map(|x| x.to_string()).collect();
        assert_eq!(scripted, delivered.join(" "));
        assert!(rec.batches.get() >= 1);
        mb.close();
    }

    /// A backlog does not hold Tcl's timers back: a timer due at once fires
    /// while most of a large backlog is still to come.
    #[test]
    fn timers_fire_during_a_backlog() {
        let t = TestInterp::new();
        let rec = Recorder::new(t.interp(), false);
        let mb = Mailbox::new(rec.clone());
        const N: u64 = 1_000_000;
        for i in 0..N {
            mb.push(i);
        }
        t.ok("after 0 {set ::fired 1}");
        assert!(
            t.run_until(Duration::from_secs(30), || rec.got.borrow().len()
                == N as usize)
        );
        let before = rec.before_fired.get().expect("the timer fired");
        assert!(
            before < N as usize / 2,
            "the timer fired after {before} of {N} items"
        );
        mb.close();
    }

    /// After `close`, what was queued and what comes later is dropped, and
    /// the consumer is let go.
    #[test]
    fn close_drops_queued_and_later_items() {
        let t = TestInterp::new();
        let rec = Recorder::new(t.interp(), false);
        let mb = Mailbox::new(rec.clone());
        mb.push(1);
        mb.push(2);
        mb.close();
        mb.push(3);
        assert!(mb.is_closed());
        assert!(!t.run_until(Duration::from_millis(50), || !rec.got.borrow().is_empty()));
        assert_eq!(Rc::strong_count(&rec), 1);
    }

    /// `deliver_now` hands over what is queued without the event loop.
    #[test]
    fn deliver_now_without_the_event_loop() {
        let t = TestInterp::new();
        let rec = Recorder::new(t.interp(), false);
        let mb = Mailbox::new(rec.clone());
        for i in 0..3 {
            mb.push(i);
        }
        mb.deliver_now();
        assert_eq!(*rec.got.borrow(), [0, 1, 2]);
        assert_eq!(rec.batches.get(), 1);
        mb.close();
    }

    /// Two mailboxes of one thread with backlogs take turns: neither waits
    /// for the other to run dry.
    #[test]
    fn mailboxes_of_one_thread_take_turns() {
        let t = TestInterp::new();
        let a = Recorder::new(t.interp(), false);
        let b = Recorder::new(t.interp(), false);
        let ma = Mailbox::new(a.clone());
        let mb = Mailbox::new(b.clone());
        const N: u64 = 300_000;
        for i in 0..N {
            ma.push(i);
            mb.push(i);
        }
        assert!(t.run_until(Duration::from_secs(30), || {
            a.got.borrow().len() as u64 == N || b.got.borrow().len() as u64 == N
        }));
        let (na, nb) = (a.got.borrow().len(), b.got.borrow().len());
        let (lo, hi) = (na.min(nb), na.max(nb));
        assert!(lo * 2 >= hi, "one mailbox ran dry first: {na} vs {nb}");
        ma.close();
        mb.close();
    }
}
