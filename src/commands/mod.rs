//! The `::websocket::*` commands: Tcl arguments in, engine calls out, engine
//! events back in as handler calls. One `State` per interpreter.

mod conn;
pub mod log;
mod open;
mod send;
mod server;

use crate::engine::conn::{Cmd, Handle};
use crate::engine::{self, Event, Sink};
use crate::proto::mask::MaskKeys;
use crate::proto::reader::Message;
use crate::proto::writer::OutgoingState;
use crate::tcl::channel::HeldChannel;
use crate::tcl::{Interp, Mailbox, Obj, ObjRef, TclError};
use log::Level;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::raw::c_void;
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

/// One WebSocket as the script knows it.
pub struct Conn {
    pub id: u64,
    pub handler: Obj,
    pub server: bool,
    pub state: ConnState,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// Seconds; 0 means no keepalive pings.
    pub keepalive: f64,
    pub ping: Vec<u8>,
    pub max_message: usize,
    pub max_queue: usize,
    pub outgoing: OutgoingState,
    pub handle: Handle,
    pub held: Option<HeldChannel>,
}

impl Conn {
    /// A connection with tcllib's defaults for its side.
    pub fn new(id: u64, handler: Obj, server: bool, state: ConnState, handle: Handle) -> Conn {
        Conn {
            id,
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
            outgoing: OutgoingState::new(),
            handle,
            held: None,
        }
    }
}

/// A handler registered with `live`.
pub struct Live {
    pub path: String,
    pub handler: Obj,
    pub protocol: String,
}

/// What `test` found, waiting for `upgrade`.
pub struct Pending {
    pub server: String,
    pub accept: String,
    pub path: String,
    pub query: Obj,
    pub handler: Obj,
    pub protocol: String,
}

type Inbox = Mailbox<(u64, Event)>;

pub struct State {
    pub interp: Interp,
    mailbox: Arc<Inbox>,
    pub conns: RefCell<HashMap<String, Conn>>,
    names: RefCell<HashMap<u64, String>>,
    pub servers: RefCell<HashMap<String, Vec<Live>>>,
    pub pending: RefCell<HashMap<String, Pending>>,
    /// Channels served through the Tcl-channel transport, closed with the interpreter.
    pub bridges: RefCell<Vec<crate::tcl::bridge::Bridge>>,
    pub keys: RefCell<MaskKeys>,
    shut: Cell<bool>,
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
    pub fn not_a_websocket(sock: &str) -> TclError {
        log::log(
            Level::Warn,
            &format!("{sock} is not a WebSocket connection anymore"),
        );
        TclError::ws(format!("{sock} is not a WebSocket"), &[])
    }

    pub fn register(&self, name: &str, conn: Conn) {
        self.bridges.borrow_mut().retain(|b| !b.is_closed());
        self.names.borrow_mut().insert(conn.id, name.to_string());
        let old = self.conns.borrow_mut().insert(name.to_string(), conn);
        if let Some(old) = old {
            self.discard(old);
        }
    }

    fn discard(&self, conn: Conn) {
        self.names.borrow_mut().remove(&conn.id);
        if conn.state != ConnState::Closed {
            conn.handle.send(Cmd::Close(Some((1001, String::new()))));
        }
        if let Some(h) = conn.held {
            h.release();
        }
        // Dropping the handle tells the engine nobody listens any more.
    }

    /// Forgets a connection: no more events reach its handler.
    pub fn forget(&self, name: &str) {
        let conn = self.conns.borrow_mut().remove(name);
        if let Some(conn) = conn {
            self.discard(conn);
        }
    }

    /// Calls the connection's handler as `{*}$handler $sock $type $msg`.
    pub fn push(&self, name: &str, kind: &str, msg: Obj) {
        let handler = match self.conns.borrow().get(name) {
            Some(c) => c.handler.clone(),
            None => return,
        };
        self.push_to(&handler, name, kind, msg);
    }

    /// Calls `handler` at global level; its errors are logged as tcllib does.
    pub fn push_to(&self, handler: &Obj, name: &str, kind: &str, msg: Obj) {
        let interp = self.interp;
        let mut words: Vec<Obj> = match handler.borrow().list_elements(interp.as_ptr()) {
            Some(elems) => elems.iter().map(|e| e.to_owned()).collect(),
            None => {
                interp.reset_result();
                vec![handler.clone()]
            }
        };
        words.push(Obj::string(name));
        words.push(Obj::string(kind));
        words.push(msg);
        interp.preserve();
        if interp.eval_words(&words).is_err() {
            let res = interp.result().borrow().to_string_lossy();
            log::log(
                Level::Error,
                &format!("Error when executing WebSocket reception handler: {res}"),
            );
        }
        interp.reset_result();
        interp.release();
    }

    fn on_event(&self, id: u64, event: Event) {
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
                peer,
                local,
            } => {
                if let Some(c) = self.conns.borrow_mut().get_mut(&name) {
                    c.state = ConnState::Connected;
                    c.peer = peer;
                    c.local = local;
                }
                log::log(
                    Level::Debug,
                    &format!("{name} has been registered as a client WebSocket"),
                );
                self.push(&name, "connect", Obj::string(&protocol));
            }
            Event::Message(m) => {
                let (kind, obj) = match m {
                    Message::Text(t) => ("text", Obj::from_utf8(&t)),
                    Message::Binary(b) => ("binary", Obj::bytes(&b)),
                    Message::Ping(b) => ("ping", Obj::bytes(&b)),
                    Message::Pong(b) => ("pong", Obj::bytes(&b)),
                    Message::Close(_) => return,
                };
                self.push(&name, kind, obj);
            }
            Event::Closed { code, reason } => {
                if let Some(c) = self.conns.borrow_mut().get_mut(&name) {
                    c.state = ConnState::Closed;
                }
                log::log(
                    Level::Info,
                    &format!("Closing web socket: {code} ({reason})"),
                );
                self.push(
                    &name,
                    "close",
                    Obj::list(&[Obj::int(code as i64), Obj::string(&reason)]),
                );
                self.disconnect(&name);
            }
            Event::Error(msg) => {
                log::log(Level::Error, &msg);
                self.push(&name, "error", Obj::string(&msg));
                self.forget(&name);
            }
            Event::Timeout(msg) => {
                self.push(&name, "timeout", Obj::string(&msg));
                self.disconnect(&name);
            }
        }
    }

    /// tcllib's Disconnect: the `disconnect` event, then the socket is forgotten.
    pub fn disconnect(&self, name: &str) {
        self.push(
            name,
            "disconnect",
            Obj::string("Disconnected from remote end"),
        );
        self.forget(name);
    }

    /// Ends everything this interpreter owns (interpreter deletion, thread exit).
    fn shutdown(&self) {
        if self.shut.replace(true) {
            return;
        }
        self.mailbox.close();
        let conns: Vec<Conn> = self.conns.borrow_mut().drain().map(|(_, c)| c).collect();
        for c in conns {
            c.handle.send(Cmd::Close(Some((1001, String::new()))));
            if let Some(h) = c.held {
                h.release();
            }
        }
        self.names.borrow_mut().clear();
        self.servers.borrow_mut().clear();
        self.pending.borrow_mut().clear();
        for b in self.bridges.borrow_mut().drain(..) {
            b.close();
        }
    }

    /// Keepalive setting for the engine.
    pub fn keepalive_of(secs: f64) -> Option<Duration> {
        (secs > 0.0).then(|| Duration::from_secs_f64(secs))
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

unsafe extern "C" fn interp_deleted(
    data: *mut c_void,
    _interp: *mut crate::tcl::interp::RawInterp,
) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the Rc leaked in init, reclaimed once here.
        let state = Rc::from_raw(data as *const State);
        state.shutdown();
    }));
}

unsafe extern "C" fn process_exit(_: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        if engine::conn::close_all() > 0 {
            // Let the writers put the close frames on the wire.
            std::thread::sleep(Duration::from_millis(100));
        }
        engine::runtime::shutdown();
    });
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Sets up the package in `interp`: state, commands, `package provide`.
pub fn init(interp: Interp) -> Result<(), TclError> {
    static PROCESS: Once = Once::new();
    PROCESS.call_once(|| {
        raise_fd_limit();
        crate::tcl::at_exit(process_exit);
    });

    let state = Rc::new_cyclic(|weak: &Weak<State>| {
        let weak = weak.clone();
        let consumer: Rc<dyn Fn((u64, Event))> = Rc::new(move |(id, ev)| {
            if let Some(st) = weak.upgrade() {
                st.on_event(id, ev);
            }
        });
        State {
            interp,
            mailbox: Mailbox::new(consumer),
            conns: RefCell::new(HashMap::new()),
            names: RefCell::new(HashMap::new()),
            servers: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            bridges: RefCell::new(Vec::new()),
            keys: RefCell::new(MaskKeys::new()),
            shut: Cell::new(false),
        }
    });
    interp.call_when_deleted(interp_deleted, Rc::into_raw(state.clone()) as *mut c_void);

    type F = fn(&State, Interp, &[ObjRef]) -> crate::tcl::CmdResult;
    let commands: &[(&str, F)] = &[
        ("open", open::open),
        ("send", send::send),
        ("close", conn::close),
        ("takeover", conn::takeover),
        ("conninfo", conn::conninfo),
        ("find", conn::find),
        ("configure", conn::configure),
        ("loglevel", conn::loglevel),
        ("server", server::server),
        ("live", server::live),
        ("test", server::test),
        ("upgrade", server::upgrade),
        ("validate", server::validate),
        ("sec-websocket-accept", server::sec_websocket_accept),
    ];
    for (name, f) in commands {
        interp.create_command(&format!("::websocket::{name}"), state.clone(), *f);
    }
    if !interp.pkg_provide("websocket", crate::VERSION) {
        return Err(TclError::InInterp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob_match;

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
