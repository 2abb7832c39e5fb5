//! The `::websocket::*` commands: Tcl arguments in, engine calls out, engine
//! events back in as handler calls. One `State` per interpreter.

mod conn;
mod deflate;
pub mod log;
mod open;
mod send;
mod server;
mod url;

use crate::engine::conn::{Cmd, Handle};
use crate::engine::{self, Event, Sink};
use crate::proto::mask::MaskKeys;
use crate::proto::reader::Message;
use crate::proto::writer::OutgoingState;
use crate::tcl::channel::HeldChannel;
use crate::tcl::{Consumer, Interp, Mailbox, Obj, ObjRef, TclError};
use log::Level;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::os::raw::c_int;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

/// tcllib's limit on a message (16 MiB), which `configure -maxlength` changes.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Seconds of silence before a server connection pings (tcllib's default).
pub const DEFAULT_SERVER_KEEPALIVE: f64 = 30.0;
/// Bytes `send` may leave queued for a peer that does not read, before it
/// refuses more (`configure -maxqueue`).
pub const DEFAULT_MAX_QUEUE: usize = 64 * 1024 * 1024;

/// FxHash-style hasher for maps keyed by our own socket names and ids
/// (nothing a peer chooses), much cheaper than SipHash on every message.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnState {
    Connecting,
    Connected,
    Closed,
}

impl ConnState {
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Connecting => "CONNECTING",
            ConnState::Connected => "CONNECTED",
            ConnState::Closed => "CLOSED",
        }
    }
}

/// The event types a handler hears, as Tcl words made once per interpreter.
#[derive(Clone, Copy)]
pub enum Kind {
    Connect,
    Text,
    Binary,
    Ping,
    Pong,
    Close,
    Disconnect,
    Error,
    Timeout,
}

const KIND_NAMES: [&str; 9] = [
    "connect",
    "text",
    "binary",
    "ping",
    "pong",
    "close",
    "disconnect",
    "error",
    "timeout",
];

/// One WebSocket as the script knows it.
pub struct Conn {
    pub id: u64,
    /// The socket name the script knows it by.
    pub name: Rc<str>,
    pub handler: Obj,
    /// `{*}$handler $sock`: the words every handler call starts with.
    call: Rc<[Obj]>,
    pub server: bool,
    pub state: ConnState,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// Seconds; 0 means no keepalive pings.
    pub keepalive: f64,
    pub ping: Vec<u8>,
    pub max_message: usize,
    pub max_queue: usize,
    /// Frames sent from a handler, written together when the batch of
    /// events is delivered: one write for a burst instead of one each.
    pub cork: Vec<u8>,
    pub outgoing: OutgoingState,
    pub handle: Handle,
    pub held: Option<HeldChannel>,
    /// The channel that keeps the socket's name working for the script.
    pub name_channel: Option<crate::tcl::channel::NameChannel>,
    /// permessage-deflate's compressor, once negotiated.
    pub deflate: Option<crate::proto::deflate::PerMessageDeflate>,
    /// What a client offered, until the server answers.
    pub deflate_offer: Option<crate::proto::deflate::DeflateConfig>,
    /// The extensions negotiated, as `conninfo $sock extensions` gives them.
    pub extensions: String,
    /// When the compressor was last used, while it is held.
    pub compressed_at: Option<std::time::Instant>,
    /// In `State::idle_compressors`.
    pub compressor_watched: bool,
}

impl Conn {
    /// A connection with tcllib's defaults for its side.
    pub fn new(
        id: u64,
        name: &str,
        handler: Obj,
        server: bool,
        state: ConnState,
        handle: Handle,
    ) -> Conn {
        let mut call: Vec<Obj> = match handler.borrow().list_elements(None) {
            Some(words) => words,
            None => vec![handler.clone()],
        };
        call.push(Obj::string(name));
        Conn {
            id,
            name: name.into(),
            call: call.into(),
            handler,
            server,
            state,
            peer: None,
            local: None,
            keepalive: if server {
                DEFAULT_SERVER_KEEPALIVE
            } else {
                0.0
            },
            ping: Vec::new(),
            max_message: DEFAULT_MAX_MESSAGE,
            max_queue: DEFAULT_MAX_QUEUE,
            cork: Vec::new(),
            outgoing: OutgoingState::new(),
            handle,
            held: None,
            name_channel: None,
            deflate: None,
            deflate_offer: None,
            extensions: String::new(),
            compressed_at: None,
            compressor_watched: false,
        }
    }
}

impl Conn {
    /// permessage-deflate as negotiated: the compressor `send` uses, and
    /// what `conninfo $sock extensions` says.
    pub fn enable_deflate(
        &mut self,
        role: crate::proto::Role,
        params: &crate::proto::deflate::DeflateParams,
        cfg: &crate::proto::deflate::DeflateConfig,
    ) {
        self.deflate = Some(crate::proto::deflate::PerMessageDeflate::new(
            role, params, cfg,
        ));
        self.extensions = deflate::describe_params(params);
    }

    /// Hands the connection to another handler (a repeated `takeover`).
    pub fn set_handler(&mut self, handler: Obj) {
        let mut call: Vec<Obj> = match handler.borrow().list_elements(None) {
            Some(words) => words,
            None => vec![handler.clone()],
        };
        call.push(Obj::string(&self.name));
        self.call = call.into();
        self.handler = handler;
    }
}

/// A handler registered with `live`.
pub struct Live {
    pub path: String,
    pub handler: Obj,
    pub protocol: String,
    /// `-deflate`; None: the interpreter's defaults when a request comes.
    pub deflate: Option<deflate::Settings>,
}

/// What `test` found, waiting for `upgrade`.
pub struct Pending {
    pub accept: String,
    pub path: String,
    pub query: Obj,
    pub handler: Obj,
    pub protocol: String,
    /// permessage-deflate accepted by `test`, with our settings.
    pub deflate: Option<(
        crate::proto::deflate::negotiate::Accepted,
        crate::proto::deflate::DeflateConfig,
    )>,
}

type Inbox = Mailbox<(u64, Event)>;

/// What delivering an engine event leaves to do, in order, for the
/// connection numbered `u64`. Steps of a connection that the script has
/// forgotten meanwhile (`close` in a `timeout` handler) are dropped: its
/// `disconnect` has been reported already.
enum Step {
    /// Evaluate these words (`{*}$handler $sock $type $msg`).
    Call(u64, Vec<Obj>),
    /// The connection is gone once the calls before are made.
    Forget(u64),
}

pub struct State {
    pub interp: Interp,
    mailbox: Arc<Inbox>,
    /// Boxed: a table of 10,000 connections has room for ~16,000, and
    /// empty slots then cost a pointer, not a whole `Conn`.
    pub conns: RefCell<FastMap<Rc<str>, Box<Conn>>>,
    names: RefCell<FastMap<u64, Rc<str>>>,
    pub servers: RefCell<HashMap<String, Vec<Live>>>,
    pub pending: RefCell<HashMap<String, Pending>>,
    kinds: Vec<Obj>,
    /// Depth of handler calls in progress for engine events (handlers may
    /// nest event loops); `send` corks meanwhile.
    delivering: Cell<u32>,
    /// Handler calls (and the forgetting that follows some) queued by the
    /// events being delivered, in order; one queue per run of deliveries in
    /// progress, innermost last. A handler that enters `vwait` or `update`
    /// starts a nested run, which must not take the calls its own event
    /// still owes (the `disconnect` after a `close`).
    steps: RefCell<Vec<VecDeque<Step>>>,
    /// Connections holding frames sent during a delivery, not yet written.
    corked: RefCell<Vec<Rc<str>>>,
    /// The flush registered for idle time, if any.
    idle_flush: RefCell<Option<crate::tcl::callback::Registration>>,
    /// Channels served through the Tcl-channel transport, closed with the interpreter.
    pub bridges: RefCell<Vec<crate::tcl::bridge::Bridge>>,
    pub keys: RefCell<MaskKeys>,
    pub logger: log::Logger,
    /// `::websocket::deflate`: what `open` and `live` use without -deflate.
    pub deflate_defaults: RefCell<deflate::Settings>,
    pub idle_compressors: deflate::IdleCompressors,
    shut: Cell<bool>,
    /// This State, for callbacks that must not keep it alive.
    me: Weak<State>,
}

struct MailboxSink(Arc<Inbox>);

impl Sink for MailboxSink {
    fn emit(&self, conn: u64, event: Event) {
        self.0.push((conn, event));
    }
}

impl State {
    pub fn sink(&self) -> Arc<dyn Sink> {
        Arc::new(MailboxSink(self.mailbox.clone()))
    }

    /// The error tcllib raises for a name that is no WebSocket.
    pub fn not_a_websocket(&self, sock: &str) -> TclError {
        self.logger.log(
            Level::Warn,
            &format!("{sock} is not a WebSocket connection anymore"),
        );
        TclError::ws(format!("{sock} is not a WebSocket"), &[])
    }

    pub fn register(&self, conn: Conn) {
        self.bridges.borrow_mut().retain(|b| !b.is_closed());
        self.names.borrow_mut().insert(conn.id, conn.name.clone());
        let old = self
            .conns
            .borrow_mut()
            .insert(conn.name.clone(), Box::new(conn));
        if let Some(old) = old {
            self.discard(old);
        }
    }

    fn discard(&self, mut conn: Box<Conn>) {
        self.names.borrow_mut().remove(&conn.id);
        Self::uncork(&mut conn);
        if conn.state != ConnState::Closed {
            conn.handle.send(Cmd::Close(Some((1001, String::new()))));
        }
        Self::release_name(&mut conn);
        // Dropping the handle tells the engine nobody listens any more.
    }

    /// Lets the connection's socket name go: its name channel leaves the
    /// interpreter, then the name may be given to a new socket.
    fn release_name(conn: &mut Conn) {
        if let Some(nc) = conn.name_channel.take() {
            nc.release();
        }
        if let Some(h) = conn.held.take() {
            h.release();
        }
    }

    /// Forgets a connection: no more events reach its handler.
    pub fn forget(&self, name: &str) {
        let conn = self.conns.borrow_mut().remove(name);
        if let Some(conn) = conn {
            self.discard(conn);
        }
    }

    /// True while a handler runs for an event: `send` then corks.
    pub fn delivering(&self) -> bool {
        self.delivering.get() > 0
    }

    /// Keeps a frame to write with the rest of this batch.
    pub fn cork(&self, conn: &mut Conn, header: &[u8], payload: &[u8]) {
        if conn.cork.is_empty() {
            self.corked.borrow_mut().push(conn.name.clone());
            let mut idle = self.idle_flush.borrow_mut();
            if !idle.as_ref().is_some_and(|c| c.is_pending()) {
                // A handler that enters a nested event loop (vwait, update)
                // must not hold its replies back: flush when Tcl goes idle.
                let me = self.me.clone();
                *idle = Some(crate::tcl::callback::when_idle(Box::new(move || {
                    if let Some(st) = me.upgrade() {
                        st.flush_corked();
                    }
                })));
            }
        }
        conn.cork.extend_from_slice(header);
        conn.cork.extend_from_slice(payload);
        if conn.cork.len() >= CORK_LIMIT {
            Self::uncork(conn);
        }
    }

    /// Writes a connection's corked frames.
    pub fn uncork(conn: &mut Conn) {
        if !conn.cork.is_empty() {
            // Written from the buffer (copied only if the socket is full),
            // which keeps its capacity unless a burst made it large.
            conn.handle.send_frame(&conn.cork, &[]);
            conn.cork.clear();
            if conn.cork.capacity() > CORK_KEEP {
                conn.cork = Vec::new();
            }
        }
    }

    /// Writes every connection's corked frames.
    pub fn flush_corked(&self) {
        let names = std::mem::take(&mut *self.corked.borrow_mut());
        let mut conns = self.conns.borrow_mut();
        for name in names {
            if let Some(c) = conns.get_mut(&name) {
                Self::uncork(c);
            }
        }
    }

    /// Queues a call of the connection's handler as `{*}$handler $sock
    /// $type $msg`, at global level, for the C side to make (the event
    /// procedure for engine events, the command procedure for commands that
    /// call handlers: see `with_handler_calls`); its errors are logged as
    /// tcllib does.
    pub fn push(&self, name: &str, kind: Kind, msg: Obj) {
        if let Some(c) = self.conns.borrow().get(name) {
            self.queue_call(c.id, &c.call, kind, msg);
        }
    }

    fn queue_call(&self, id: u64, call: &[Obj], kind: Kind, msg: Obj) {
        let mut words = Vec::with_capacity(call.len() + 2);
        words.extend(call.iter().cloned());
        words.push(self.kinds[kind as usize].clone());
        words.push(msg);
        self.queue_step(Step::Call(id, words));
    }

    fn queue_step(&self, step: Step) {
        let mut steps = self.steps.borrow_mut();
        // Handler calls are queued only inside a run of deliveries or a
        // command that makes them (`with_handler_calls`).
        debug_assert!(!steps.is_empty(), "handler call queued outside a run");
        if steps.is_empty() {
            steps.push(VecDeque::new());
        }
        if let Some(run) = steps.last_mut() {
            run.push_back(step);
        }
    }

    /// Forgets a connection once the handler calls queued before are made.
    fn forget_after(&self, name: &str) {
        let id = self.conns.borrow().get(name).map(|c| c.id);
        if let Some(id) = id {
            self.queue_step(Step::Forget(id));
        }
    }

    /// Runs `f`, a command that may call handlers (`close`, `takeover`,
    /// `upgrade`), with the handler calls it causes queued in a frame of
    /// their own, in order with the forgetting that follows some; the
    /// command's C procedure makes them once `f` has returned
    /// (`event::after_command`), so that no Rust frame is below a handler.
    pub fn with_handler_calls<R>(&self, f: impl FnOnce() -> R) -> R {
        self.steps.borrow_mut().push(VecDeque::new());
        let r = f();
        let queued = self.steps.borrow().last().is_some_and(|q| !q.is_empty());
        match self.me.upgrade() {
            Some(me) if queued => crate::tcl::event::after_command(CommandCalls(me)),
            _ => {
                self.steps.borrow_mut().pop();
            }
        }
        r
    }

    /// The next handler call queued by the innermost run; forgets what is
    /// due before it.
    fn take_call(&self) -> Option<crate::tcl::event::Call> {
        loop {
            let step = self.steps.borrow_mut().last_mut()?.pop_front()?;
            let (Step::Call(id, _) | Step::Forget(id)) = step;
            let name = self.names.borrow().get(&id).cloned();
            let Some(name) = name else {
                continue;
            };
            match step {
                Step::Forget(_) => self.forget(&name),
                Step::Call(_, words) => {
                    self.delivering.set(self.delivering.get() + 1);
                    return Some(crate::tcl::event::Call {
                        interp: self.interp,
                        words,
                    });
                }
            }
        }
    }

    /// A queued handler call was made; `code` is what it returned.
    fn call_done(&self, code: c_int) {
        self.delivering.set(self.delivering.get().saturating_sub(1));
        let interp = self.interp;
        if code != 0 {
            let res = interp.result().borrow().to_string_lossy();
            self.logger.log(
                Level::Error,
                &format!("Error when executing WebSocket reception handler: {res}"),
            );
        }
        interp.reset_result();
    }

    /// Turns an engine event into state changes and queued handler calls.
    fn deliver(&self, id: u64, event: Event) {
        if self.shut.get() {
            return;
        }
        let name = match self.names.borrow().get(&id) {
            Some(n) => n.clone(),
            None => return,
        };
        match event {
            Event::Connected {
                protocol,
                deflate: negotiated,
                peer,
                local,
            } => {
                if let Some(c) = self.conns.borrow_mut().get_mut(&name) {
                    c.state = ConnState::Connected;
                    c.peer = peer;
                    c.local = local;
                    if let (Some(params), Some(cfg)) = (negotiated, c.deflate_offer.take()) {
                        c.enable_deflate(crate::proto::Role::Client, &params, &cfg);
                    }
                }
                self.logger.log(
                    Level::Debug,
                    &format!("{name} has been registered as a client WebSocket"),
                );
                self.push(&name, Kind::Connect, Obj::string(&protocol));
            }
            Event::Message(m) => {
                let cost = engine::conn::event_cost(&m);
                let (kind, obj) = match m {
                    Message::Text(t) => (Kind::Text, Obj::from_utf8(&t)),
                    Message::Binary(b) => (Kind::Binary, Obj::bytes(&b)),
                    Message::Ping(b) => (Kind::Ping, Obj::bytes(&b)),
                    Message::Pong(b) => (Kind::Pong, Obj::bytes(&b)),
                    Message::Close(_) => return,
                };
                if let Some(c) = self.conns.borrow().get(&name) {
                    c.handle.delivered(cost);
                    self.queue_call(c.id, &c.call, kind, obj);
                }
            }
            Event::Closed { code, reason } => {
                if let Some(c) = self.conns.borrow_mut().get_mut(&name) {
                    c.state = ConnState::Closed;
                }
                self.logger.log(
                    Level::Info,
                    &format!("Closing web socket: {code} ({reason})"),
                );
                self.push(
                    &name,
                    Kind::Close,
                    Obj::list(&[Obj::int(code as i64), Obj::string(&reason)]),
                );
                self.disconnect(&name);
            }
            Event::Error(e) => {
                // tcllib logs (at "error") only a failed accept check; the
                // other failures reach the script as the event alone.
                let security = e.is_security_failure();
                let msg = e.message;
                if security {
                    self.logger.log(Level::Error, "Security handshake failed");
                }
                self.logger.log(Level::Info, &msg);
                self.push(&name, Kind::Error, Obj::string(&msg));
                self.forget_after(&name);
            }
            Event::Timeout(msg) => {
                self.push(&name, Kind::Timeout, Obj::string(&msg));
                self.disconnect(&name);
            }
        }
    }

    /// tcllib's Disconnect: the `disconnect` event, then the socket is forgotten.
    pub fn disconnect(&self, name: &str) {
        self.push(
            name,
            Kind::Disconnect,
            Obj::string("Disconnected from remote end"),
        );
        self.forget_after(name);
    }

    /// Ends everything this interpreter owns: at interpreter deletion, or
    /// at thread exit (`thread_ending`: this thread's event loop will not
    /// run again).
    fn shutdown(&self, thread_ending: bool) {
        if self.shut.replace(true) {
            return;
        }
        if let Some(call) = self.idle_flush.borrow_mut().take() {
            call.cancel();
        }
        self.idle_compressors.stop();
        self.mailbox.close();
        for run in self.steps.borrow_mut().iter_mut() {
            run.clear();
        }
        // What handlers sent and is still corked goes out before the close.
        let conns: Vec<Box<Conn>> = self.conns.borrow_mut().drain().map(|(_, c)| c).collect();
        for mut c in conns {
            Self::uncork(&mut c);
            c.handle.send(Cmd::Close(Some((1001, String::new()))));
            Self::release_name(&mut c);
        }
        self.corked.borrow_mut().clear();
        self.names.borrow_mut().clear();
        self.servers.borrow_mut().clear();
        self.pending.borrow_mut().clear();
        if thread_ending {
            self.finish_bridges();
        } else {
            let bridges: Vec<_> = self.bridges.borrow_mut().drain(..).collect();
            adopt_orphans(bridges);
        }
    }

    /// Closes the channels of the Tcl-channel transport once their close
    /// frames are out (see `Bridge::finish`).
    fn finish_bridges(&self) {
        let bridges: Vec<_> = self.bridges.borrow_mut().drain(..).collect();
        let deadline = teardown_deadline();
        for b in bridges {
            b.finish(deadline);
        }
    }
}

/// `wrong # args` in the format Tcl uses for procs.
pub fn wrong_args(objv: &[ObjRef], usage: &str) -> TclError {
    let cmd = objv
        .first()
        .map(|o| o.to_string_lossy())
        .unwrap_or_default();
    TclError::Msg {
        msg: format!(
            "wrong # args: should be \"{cmd}{}{usage}\"",
            if usage.is_empty() { "" } else { " " }
        ),
        code: vec!["TCL".into(), "WRONGARGS".into()],
    }
}

/// Tcl's `string match`, for the glob patterns tcllib's API takes.
pub fn glob_match(pattern: &str, text: &str, nocase: bool) -> bool {
    fn lower(c: char, nocase: bool) -> char {
        if nocase {
            c.to_lowercase().next().unwrap_or(c)
        } else {
            c
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    fn go(p: &[char], t: &[char], nocase: bool) -> bool {
        let (mut pi, mut ti) = (0, 0);
        let (mut star_p, mut star_t) = (None::<usize>, 0);
        while ti < t.len() {
            let mut advanced = false;
            if pi < p.len() {
                match p[pi] {
                    '*' => {
                        star_p = Some(pi);
                        star_t = ti;
                        pi += 1;
                        continue;
                    }
                    '?' => {
                        pi += 1;
                        ti += 1;
                        advanced = true;
                    }
                    '[' => {
                        let mut k = pi + 1;
                        let mut matched = false;
                        let c = lower(t[ti], nocase);
                        while k < p.len() && p[k] != ']' {
                            let lo = lower(p[k], nocase);
                            if k + 2 < p.len() && p[k + 1] == '-' && p[k + 2] != ']' {
                                let hi = lower(p[k + 2], nocase);
                                let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                                if a <= c && c <= b {
                                    matched = true;
                                }
                                k += 3;
                            } else {
                                if lo == c {
                                    matched = true;
                                }
                                k += 1;
                            }
                        }
                        if matched && k < p.len() {
                            pi = k + 1;
                            ti += 1;
                            advanced = true;
                        }
                    }
                    '\\' if pi + 1 < p.len() => {
                        if lower(p[pi + 1], nocase) == lower(t[ti], nocase) {
                            pi += 2;
                            ti += 1;
                            advanced = true;
                        }
                    }
                    c => {
                        if lower(c, nocase) == lower(t[ti], nocase) {
                            pi += 1;
                            ti += 1;
                            advanced = true;
                        }
                    }
                }
            }
            if !advanced {
                match star_p {
                    Some(sp) => {
                        star_t += 1;
                        ti = star_t;
                        pi = sp + 1;
                    }
                    None => return false,
                }
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
    go(&p, &t, nocase)
}

/// A cork buffer larger than this is freed after its flush (10,000 idle
/// connections must stay small).
const CORK_KEEP: usize = 4096;

/// Past this many corked bytes a connection is written at once.
const CORK_LIMIT: usize = 64 * 1024;

/// The handler calls a command queued (`State::with_handler_calls`).
struct CommandCalls(Rc<State>);

impl crate::tcl::event::CommandCalls for CommandCalls {
    fn next_call(&mut self) -> Option<crate::tcl::event::Call> {
        self.0.take_call()
    }
    fn call_done(&mut self, call: crate::tcl::event::Call, code: c_int) {
        self.0.call_done(code);
        drop(call);
    }
}

impl Drop for CommandCalls {
    fn drop(&mut self) {
        self.0.steps.borrow_mut().pop();
        self.0.flush_corked();
    }
}

/// Delivers engine events to a State (weakly: the interpreter may be gone).
struct Delivery(Weak<State>);

impl Consumer<(u64, Event)> for Delivery {
    fn deliver(&self, (id, event): (u64, Event)) {
        if let Some(st) = self.0.upgrade() {
            st.deliver(id, event);
        }
    }
    fn take_call(&self) -> Option<crate::tcl::event::Call> {
        self.0.upgrade()?.take_call()
    }
    fn call_done(&self, call: crate::tcl::event::Call, code: c_int) {
        if let Some(st) = self.0.upgrade() {
            st.call_done(code);
        }
        drop(call);
    }
    fn run_begin(&self) {
        if let Some(st) = self.0.upgrade() {
            st.steps.borrow_mut().push(VecDeque::new());
        }
    }
    fn run_end(&self) {
        if let Some(st) = self.0.upgrade() {
            st.steps.borrow_mut().pop();
        }
    }
    fn batch_done(&self) {
        if let Some(st) = self.0.upgrade() {
            st.flush_corked();
            // The idle-time flush stays registered though it has nothing
            // left to do. Cancelling it saved a round trip through Tcl
            // 8.6's notifier thread per batch (-25% context switches at
            // window 1) but measured worse: round trip p50 +12% (A/B, 8
            // interleaved runs of 10,000 each), no change with 200
            // connections. The extra work keeps the core from idling
            // between a reply and the next request.
        }
    }
}

/// How long a thread's (or the process's) end waits, at most, for the
/// connections carried through Tcl channels to write what they owe and
/// finish their close handshakes (its event loop no longer runs to carry
/// them), all of them together. Each gives up sooner once its output stops
/// moving (`Bridge::finish`).
const BRIDGE_CLOSE_WAIT: Duration = Duration::from_secs(5);

thread_local! {
    static TEARDOWN_DEADLINE: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
    /// Channels of the Tcl-channel transport whose interpreter was deleted
    /// while the thread lives on: its event loop carries their closing
    /// handshakes; if the thread or the process ends first, they are
    /// finished then.
    static ORPHANS: RefCell<Vec<crate::tcl::bridge::Bridge>> = const { RefCell::new(Vec::new()) };
    static ORPHAN_REAPER: Cell<bool> = const { Cell::new(false) };
}

/// The one deadline of this thread's teardown waits.
fn teardown_deadline() -> std::time::Instant {
    TEARDOWN_DEADLINE
        .try_with(|d| {
            let at = d
                .get()
                .unwrap_or_else(|| std::time::Instant::now() + BRIDGE_CLOSE_WAIT);
            d.set(Some(at));
            at
        })
        .unwrap_or_else(|_| std::time::Instant::now())
}

fn adopt_orphans(bridges: Vec<crate::tcl::bridge::Bridge>) {
    if bridges.is_empty() {
        return;
    }
    let _ = ORPHANS.try_with(|o| {
        let mut o = o.borrow_mut();
        o.retain(|b| !b.is_closed());
        o.extend(bridges);
    });
    if !ORPHAN_REAPER.with(|r| r.replace(true)) {
        crate::tcl::callback::at_thread_exit(finish_orphans);
    }
}

fn finish_orphans() {
    let orphans = ORPHANS
        .try_with(|o| std::mem::take(&mut *o.borrow_mut()))
        .unwrap_or_default();
    if orphans.iter().any(|b| !b.is_closed()) {
        let deadline = teardown_deadline();
        for b in orphans {
            b.finish(deadline);
        }
    }
}

/// Set once `exit` has begun: the process exit handler has closed every
/// connection, and the thread exit handlers that run after it have nothing
/// left to do.
static PROCESS_EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn process_exit() {
    PROCESS_EXITING.store(true, std::sync::atomic::Ordering::SeqCst);
    // `exit` runs in one thread; what its handlers sent and is still
    // corked goes out before the close frames. (Other threads' handlers may
    // be running: their state is theirs to touch.)
    let states: Vec<Rc<State>> = LOADED
        .try_with(|l| l.borrow().iter().filter_map(|(_, w)| w.upgrade()).collect())
        .unwrap_or_default();
    for st in &states {
        st.flush_corked();
    }
    let closing = engine::conn::close_all();
    for st in &states {
        st.finish_bridges();
    }
    finish_orphans();
    if closing > 0 {
        // Let the writers put the close frames on the wire.
        std::thread::sleep(Duration::from_millis(100));
    }
    engine::runtime::shutdown();
}

/// Sets up the package in `interp`: state, commands, `package provide`.
///
/// Reloading. Tcl's `load` of a library already loaded into the interpreter
/// returns without calling `Websocket_Init`, so after `package forget
/// websocket` (or `namespace delete ::websocket`) the ifneeded script's `load`
/// alone would provide nothing. Init therefore also creates the hidden
/// command [`REINIT`], which pkgIndex.tcl's ifneeded script runs when `load`
/// left the package unprovided: it re-creates the `::websocket::*` commands,
/// bound to the interpreter's one `State`, and provides the package again.
/// Connections of that interpreter live on through a reload: `namespace
/// delete ::websocket` drops only the commands (handlers keep being called),
/// and `package require websocket` gives them back, working on the same
/// sockets. The State, its interpreter-deletion cleanup (run once) and the
/// hidden command are made once per interpreter, never per reload.
pub fn init(interp: Interp) -> Result<(), TclError> {
    static PROCESS: Once = Once::new();
    PROCESS.call_once(|| {
        crate::sys::raise_fd_limit();
        crate::tcl::callback::at_exit(process_exit);
    });

    // Init again for an interpreter that has a State (Tcl calls it once per
    // interpreter and library file; the same library under another path
    // would call it twice): that State, never a second one.
    if let Some(state) = loaded_state(interp) {
        return bind(&state);
    }

    let state = Rc::new_cyclic(|weak: &Weak<State>| {
        let weak = weak.clone();
        let consumer: Rc<dyn Consumer<(u64, Event)>> = Rc::new(Delivery(weak.clone()));
        State {
            interp,
            mailbox: Mailbox::new(consumer),
            conns: RefCell::new(FastMap::default()),
            names: RefCell::new(FastMap::default()),
            kinds: KIND_NAMES.iter().map(|k| Obj::string(k)).collect(),
            delivering: Cell::new(0),
            steps: RefCell::new(Vec::new()),
            corked: RefCell::new(Vec::new()),
            idle_flush: RefCell::new(None),
            servers: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            bridges: RefCell::new(Vec::new()),
            keys: RefCell::new(MaskKeys::new()),
            logger: log::Logger::default(),
            deflate_defaults: RefCell::new(deflate::Settings::default()),
            idle_compressors: deflate::IdleCompressors::default(),
            shut: Cell::new(false),
            me: weak,
        }
    });
    // First, as the one step that may fail: nothing else is registered yet.
    interp.create_hidden_command(REINIT, state.clone(), reinit)?;
    LOADED.with(|l| l.borrow_mut().push((interp, Rc::downgrade(&state))));
    // A thread can end without deleting its interpreters (`thread::exit`
    // calls Tcl_ExitThread): its connections are closed (1001) then, as on
    // interpreter deletion, instead of living on with nobody to hear them.
    let weak = Rc::downgrade(&state);
    let thread_exit = crate::tcl::callback::on_thread_exit(Box::new(move || {
        if !PROCESS_EXITING.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(s) = weak.upgrade() {
                s.shutdown(true);
            }
        }
    }));
    let owned = state.clone();
    crate::tcl::callback::on_delete(
        interp,
        Box::new(move || {
            let _ = LOADED.try_with(|l| l.borrow_mut().retain(|(i, _)| *i != interp));
            owned.shutdown(false);
            thread_exit.cancel();
        }),
    );
    bind(&state)
}

/// The hidden command (`interp invokehidden {} websocket_reinit`) that
/// re-creates the commands and provides the package in an interpreter that
/// loaded the library before (see [`init`]).
pub const REINIT: &str = "websocket_reinit";

thread_local! {
    /// The State of each interpreter of this thread that loaded the package,
    /// until the interpreter is deleted.
    static LOADED: RefCell<Vec<(Interp, Weak<State>)>> = const { RefCell::new(Vec::new()) };
}

fn loaded_state(interp: Interp) -> Option<Rc<State>> {
    LOADED.with(|l| {
        l.borrow()
            .iter()
            .find(|(i, _)| *i == interp)
            .and_then(|(_, w)| w.upgrade())
    })
}

type CommandFn = fn(&State, Interp, &[ObjRef]) -> crate::tcl::CmdResult;

const COMMANDS: &[(&str, CommandFn)] = &[
    ("open", open::open),
    ("send", send::send),
    ("close", |st, i, o| {
        st.with_handler_calls(|| conn::close(st, i, o))
    }),
    ("takeover", |st, i, o| {
        st.with_handler_calls(|| conn::takeover(st, i, o))
    }),
    ("conninfo", conn::conninfo),
    ("find", conn::find),
    ("configure", conn::configure),
    ("loglevel", conn::loglevel),
    ("deflate", deflate::deflate),
    ("server", server::server),
    ("live", server::live),
    ("test", server::test),
    ("upgrade", |st, i, o| {
        st.with_handler_calls(|| server::upgrade(st, i, o))
    }),
    ("validate", server::validate),
    ("sec-websocket-accept", server::sec_websocket_accept),
];

/// Creates the `::websocket::*` commands (replacing any of those names, as
/// re-sourcing a Tcl package redefines its procs) bound to `state`, makes
/// them reachable as `websocket open ...` (the ensemble tcllib 1.5+ makes),
/// and provides the package.
fn bind(state: &Rc<State>) -> Result<(), TclError> {
    let interp = state.interp;
    for (name, f) in COMMANDS {
        interp.create_command_watched(
            &format!("::websocket::{name}"),
            state.clone(),
            *f,
            command_deleted,
        );
    }
    if !interp.eval_keep_state(ENSEMBLE) {
        return Err(TclError::plain(
            "websocket: cannot create the ::websocket ensemble",
        ));
    }
    if !interp.pkg_provide("websocket", crate::VERSION) {
        return Err(TclError::InInterp);
    }
    Ok(())
}

/// tcllib 1.5 and later: `namespace export {[a-z]*}` and `namespace ensemble
/// create` in `::websocket`, so every command is also `websocket NAME ...`.
/// An ensemble already there (a reload that kept the namespace) is kept.
const ENSEMBLE: &str = r#"
    ::namespace eval ::websocket {
        ::namespace export {[a-z]*}
        if {![::namespace ensemble exists ::websocket]} {
            ::namespace ensemble create
        }
    }
"#;

/// `websocket_reinit`, hidden: see [`init`].
fn reinit(state: &State, _interp: Interp, args: &[ObjRef]) -> crate::tcl::CmdResult {
    if args.len() != 1 {
        return Err(TclError::plain(format!(
            "wrong # args: should be \"{REINIT}\""
        )));
    }
    // The hidden command holds the State, so it is alive.
    let Some(state) = state.me.upgrade() else {
        return Err(TclError::plain("websocket: the package's state is gone"));
    };
    bind(&state)?;
    Ok(None)
}

/// A `::websocket::*` command was deleted. If that is `namespace delete
/// ::websocket` (the interpreter stays), the package goes with its commands:
/// it is no longer provided (its ifneeded scripts stay known), so that a
/// later `package require websocket` loads it again (through [`REINIT`])
/// instead of answering with the version of a package whose commands are
/// gone. `namespace exists` is false from the moment the namespace starts
/// dying, which is when its commands are deleted.
fn command_deleted(state: &State) {
    let interp = state.interp;
    if !interp.is_deleted() {
        interp.eval_keep_state(UNPROVIDE_IF_NAMESPACE_GONE);
    }
}

/// `package forget websocket` keeping the ifneeded scripts, once the
/// namespace is gone.
const UNPROVIDE_IF_NAMESPACE_GONE: &str = r#"
    if {![::namespace exists ::websocket] && [::package provide websocket] ne ""} {
        ::apply {{} {
            set known {}
            foreach v [::package versions websocket] {
                lappend known $v [::package ifneeded websocket $v]
            }
            ::package forget websocket
            foreach {v script} $known {::package ifneeded websocket $v $script}
        }}
    }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conn as engine_conn;
    use crate::tcl::testing::TestInterp;
    use std::time::Duration;

    /// An interpreter with the package, a handler recording its calls in
    /// ::ev, and `n` connections registered as if taken over (their engine
    /// side is only the queue their Handle writes to).
    fn setup(n: usize) -> (TestInterp, Rc<State>, Vec<(u64, String)>) {
        let t = TestInterp::new();
        t.ok("set ::ev {}; proc rec {sock type msg} {lappend ::ev [list $sock $type $msg]}");
        let st = loaded_state(t.interp()).expect("the package's State");
        let conns = (0..n)
            .map(|i| {
                let id = next_id();
                let name = format!("socktest{i}");
                let (handle, _inbox) = engine_conn::channel(id, DEFAULT_MAX_MESSAGE);
                let conn = Conn::new(
                    id,
                    &name,
                    Obj::string("rec"),
                    true,
                    ConnState::Connected,
                    handle,
                );
                st.register(conn);
                (id, name)
            })
            .collect();
        (t, st, conns)
    }

    fn events(t: &TestInterp) -> String {
        t.ok("set ::ev")
    }

    fn wait_events(t: &TestInterp, n: usize) -> bool {
        t.run_until(Duration::from_secs(5), || {
            t.ok("llength $::ev").parse::<usize>().unwrap() >= n
        })
    }

    fn text(s: &str) -> Event {
        Event::Message(Message::Text(s.as_bytes().to_vec()))
    }

    /// Engine events become handler calls, in order, with tcllib's event
    /// names and messages; after `Closed` the socket is forgotten and what
    /// the engine still reports for it is dropped.
    #[test]
    fn events_become_handler_calls_in_order() {
        let (t, st, c) = setup(1);
        let (id, name) = &c[0];
        let sink = st.sink();
        sink.emit(*id, text("one"));
        sink.emit(*id, Event::Message(Message::Binary(vec![1, 255])));
        sink.emit(*id, Event::Message(Message::Ping(b"p".to_vec())));
        sink.emit(*id, Event::Message(Message::Pong(Vec::new())));
        sink.emit(
            *id,
            Event::Closed {
                code: 1001,
                reason: "Going away".into(),
            },
        );
        sink.emit(*id, text("late"));
        assert!(wait_events(&t, 6));
        assert!(!t.run_until(Duration::from_millis(50), || t.ok("llength $::ev") != "6"));
        assert_eq!(
            events(&t),
            format!(
                "{{{name} text one}} {{{name} binary \u{1}\u{ff}}} {{{name} ping p}} {{{name} pong {{}}}} \
                 {{{name} close {{1001 {{Going away}}}}}} {{{name} disconnect {{Disconnected from remote end}}}}"
            )
        );
        assert!(st.conns.borrow().get(name.as_str()).is_none());
    }

    /// A connection that could not open hears `error`, then is forgotten
    /// without `disconnect`; one that timed out hears `timeout` then
    /// `disconnect` (as tcllib's handlers do).
    #[test]
    fn error_and_timeout() {
        let (t, st, c) = setup(2);
        let sink = st.sink();
        sink.emit(
            c[0].0,
            Event::Error(crate::engine::ConnectError::new(
                crate::engine::ConnectFailure::Network,
                "refused",
            )),
        );
        sink.emit(c[1].0, Event::Timeout("too slow".into()));
        assert!(wait_events(&t, 3));
        assert!(!t.run_until(Duration::from_millis(50), || t.ok("llength $::ev") != "3"));
        assert_eq!(
            events(&t),
            format!(
                "{{{a} error refused}} {{{b} timeout {{too slow}}}} {{{b} disconnect {{Disconnected from remote end}}}}",
                a = c[0].1,
                b = c[1].1
            )
        );
        assert!(st.conns.borrow().is_empty());
    }

    /// `close` from a handler while more messages for that socket wait:
    /// one close and one disconnect, and nothing after them.
    #[test]
    fn close_in_a_handler_drops_what_waits_for_the_socket() {
        let (t, st, c) = setup(2);
        let (id, name) = &c[0];
        t.ok(
            "proc rec {sock type msg} {lappend ::ev [list $sock $type $msg]; \
               if {$type eq {text} && $msg eq {stop}} {::websocket::close $sock}}",
        );
        let sink = st.sink();
        sink.emit(*id, text("stop"));
        sink.emit(*id, text("after"));
        sink.emit(c[1].0, text("other"));
        sink.emit(
            *id,
            Event::Closed {
                code: 1000,
                reason: String::new(),
            },
        );
        assert!(wait_events(&t, 4));
        assert!(!t.run_until(Duration::from_millis(50), || t.ok("llength $::ev") != "4"));
        let ev = events(&t);
        assert_eq!(
            ev,
            format!(
                "{{{name} text stop}} {{{name} close {{1000 {{Normal closure}}}}}} \
                 {{{name} disconnect {{Disconnected from remote end}}}} {{{other} text other}}",
                other = c[1].1
            )
        );
    }

    /// A handler error is logged as tcllib does and the next events still
    /// come.
    #[test]
    fn handler_errors_do_not_stop_delivery() {
        let (t, st, c) = setup(1);
        let (id, name) = &c[0];
        t.ok("proc rec {sock type msg} {lappend ::ev [list $sock $type $msg]; if {$msg eq {bad}} {error oops}}");
        let sink = st.sink();
        sink.emit(*id, text("bad"));
        sink.emit(*id, text("good"));
        assert!(wait_events(&t, 2));
        assert_eq!(
            events(&t),
            format!("{{{name} text bad}} {{{name} text good}}")
        );
    }

    /// A close handler that waits in `vwait`: the socket's disconnect comes
    /// only after the handler returns, and the socket is known meanwhile.
    #[test]
    fn disconnect_waits_for_a_nested_event_loop() {
        let (t, st, c) = setup(2);
        let (id, name) = &c[0];
        t.ok("proc rec {sock type msg} {
                lappend ::ev [list $sock $type]
                if {$type eq {close}} {
                    after 20 {set ::woke 1}
                    vwait ::woke
                    lappend ::ev [list $sock known [catch {::websocket::conninfo $sock state}]]
                }
            }");
        let sink = st.sink();
        sink.emit(
            *id,
            Event::Closed {
                code: 1000,
                reason: String::new(),
            },
        );
        sink.emit(c[1].0, text("meanwhile"));
        assert!(wait_events(&t, 4));
        assert_eq!(
            events(&t),
            format!(
                "{{{name} close}} {{{other} text}} {{{name} known 0}} {{{name} disconnect}}",
                other = c[1].1
            )
        );
    }

    /// `configure` checks every pair before it applies any: a refused one
    /// leaves the connection's settings as they were (commands/conn.rs).
    #[test]
    fn configure_is_all_or_nothing() {
        let (t, st, c) = setup(1);
        let name = &c[0].1;
        let settings = |st: &State| {
            let conns = st.conns.borrow();
            let c = conns.get(name.as_str()).unwrap();
            (c.keepalive, c.ping.clone(), c.max_message, c.max_queue)
        };
        let before = settings(&st);
        assert_eq!(
            before,
            (30.0, Vec::new(), DEFAULT_MAX_MESSAGE, DEFAULT_MAX_QUEUE)
        );
        for bad in [
            "-keepalive 5 -ping [string repeat x 126]",
            "-maxlength 100 -keepalive abc",
            "-maxqueue 100 -maxlength 0",
            "-ping ok -keepalive 1e300",
            "-keepalive 5 -nosuch 1",
        ] {
            assert!(
                t.eval(&format!("::websocket::configure {name} {bad}"))
                    .is_err(),
                "{bad}"
            );
            assert_eq!(settings(&st), before, "{bad}");
        }
        t.ok(&format!(
            "::websocket::configure {name} -keepalive 5 -ping ok -maxlength 100 -maxqueue 200"
        ));
        assert_eq!(settings(&st), (5.0, b"ok".to_vec(), 100, 200));
    }

    /// `close` with a code that may not be sent is an error and leaves the
    /// connection open; a valid one closes it, calling close and disconnect
    /// before the command returns (commands/conn.rs).
    #[test]
    fn close_codes() {
        let (t, st, c) = setup(1);
        let name = &c[0].1;
        for code in [999, 1004, 1005, 1006, 1015, 2999, 5000, 70000, -1] {
            let e = t
                .eval(&format!("::websocket::close {name} {code}"))
                .unwrap_err();
            assert!(e.starts_with(&format!("Invalid close code {code}")), "{e}");
            assert_eq!(
                st.conns.borrow().get(name.as_str()).unwrap().state,
                ConnState::Connected
            );
        }
        t.ok(&format!("::websocket::close {name} 4000 bye"));
        assert_eq!(
            events(&t),
            format!("{{{name} close {{4000 bye}}}} {{{name} disconnect {{Disconnected from remote end}}}}")
        );
        assert!(st.conns.borrow().is_empty());
    }

    /// Each interpreter of a thread has its own State and log level.
    #[test]
    fn interpreters_have_their_own_state() {
        let (t1, st1, _c) = setup(1);
        let t2 = TestInterp::new();
        let st2 = loaded_state(t2.interp()).unwrap();
        assert!(!Rc::ptr_eq(&st1, &st2));
        t2.ok("::websocket::loglevel debug");
        assert_eq!(t1.ok("::websocket::loglevel"), "error");
        assert_eq!(st2.conns.borrow().len(), 0);
        assert_eq!(t2.ok("::websocket::find"), "");
        assert_eq!(t1.ok("::websocket::find"), "socktest0");
    }

    #[test]
    fn glob() {
        assert!(glob_match("*", "", false));
        assert!(glob_match("/chat*", "/chat/room", false));
        assert!(!glob_match("/chat*", "/Chat", false));
        assert!(glob_match("t*", "TEXT", true));
        assert!(glob_match("a?c", "abc", false));
        assert!(glob_match("[a-c]x", "bx", false));
        assert!(!glob_match("[a-c]x", "dx", false));
        assert!(glob_match("a\\*", "a*", false));
        assert!(glob_match("*.*.*", "1.2.3", false));
    }
}
