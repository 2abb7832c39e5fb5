//! The event bridge: engine threads hand items to an interpreter's thread.
//!
//! Each interpreter has one `Mailbox`. Producers append to its queue and post
//! a Tcl event (with `Tcl_ThreadAlert`) only when none is outstanding, so a
//! burst of messages costs one wake-up. The Tcl event drains the queue in
//! order. Before running a handler it makes sure another Tcl event is queued
//! while items remain, so a handler that enters `vwait` or `update` still
//! receives the next items from the nested event loop.
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
    fn service(self: Arc<Self>);
}

/// Numbers mailboxes; 0 is never used, so it can mean "any" in a filter.
static NEXT_MAILBOX_ID: AtomicUsize = AtomicUsize::new(1);

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
    closed: bool,
}

/// What a mailbox delivers to, on its owner's thread.
pub trait Consumer<T> {
    fn deliver(&self, item: T);
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
}

impl<T: Send + 'static> Mailbox<T> {
    /// A mailbox owned by the calling thread, delivering to `consumer`.
    pub fn new(consumer: Rc<dyn Consumer<T>>) -> Arc<Self> {
        let id = NEXT_MAILBOX_ID.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox {
            id,
            owner: ThreadId::current(),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                posted: false,
                closed: false,
            }),
            consumer: ConsumerCell(RefCell::new(Some(consumer))),
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
            !std::mem::replace(&mut q.posted, true)
        };
        // Posted outside the lock, so the woken thread does not wait for it.
        // An event that arrives after `close` finds no mailbox under its
        // number and does nothing; Tcl ignores events and alerts for threads
        // that are gone.
        if post {
            self.post(true);
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
    fn service(self: Arc<Self>) {
        if !self.on_owner_thread() {
            return;
        }
        let consumer = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.posted = false;
            if q.closed {
                return;
            }
            match self.consumer.0.borrow().as_ref() {
                Some(c) => c.clone(),
                None => return,
            }
        };
        for _ in 0..BATCH {
            let item = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let item = q.items.pop_front();
                if item.is_some() && !q.items.is_empty() && !q.posted {
                    q.posted = true;
                    self.post(false);
                }
                item
            };
            match item {
                Some(item) => consumer.deliver(item),
                None => {
                    consumer.batch_done();
                    return;
                }
            }
        }
        consumer.batch_done();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if !q.items.is_empty() && !q.posted && !q.closed {
            q.posted = true;
            self.post(false);
        }
    }
}

#[no_mangle]
extern "C" fn websocket_service_event(payload: *mut c_void) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if let Some(mailbox) = lookup(payload as usize) {
            mailbox.service();
        }
    }));
    if let Err(p) = outcome {
        eprintln!(
            "websocket: internal error while delivering events: {}",
            panic_message(&p)
        );
    }
    1
}
