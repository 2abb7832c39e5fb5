//! Commands on an existing WebSocket: `takeover`, `close`, `conninfo`,
//! `find`, `configure`, and the package-wide `loglevel`.

use super::{
    glob_match, log::Level, next_id, wrong_args, Conn, ConnState, Kind, State, DEFAULT_MAX_MESSAGE,
};
use crate::engine::bridge as bridge_engine;
use crate::engine::client;
use crate::engine::conn::{self as engine_conn, Cmd, Options, Setup};
use crate::proto::close;
use crate::proto::deflate::{DeflateConfig, DeflateParams};
use crate::proto::Role;
use crate::tcl::{bridge, channel};
use crate::tcl::{CmdResult, Interp, Obj, ObjRef, TclError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn sock_addrs(fd: &std::os::fd::OwnedFd) -> (Option<SocketAddr>, Option<SocketAddr>) {
    match fd.try_clone() {
        Ok(dup) => {
            let s = std::net::TcpStream::from(dup);
            (s.peer_addr().ok(), s.local_addr().ok())
        }
        Err(_) => (None, None),
    }
}

/// Takes channel `sock` into the engine and reports `connect` with `info`.
/// `preamble` is written first (the 101 response of `upgrade`); `deflate`
/// is permessage-deflate as `test` accepted it.
#[allow(clippy::too_many_arguments)]
pub fn attach_socket(
    st: &State,
    interp: Interp,
    sock: &str,
    handler: Obj,
    server: bool,
    preamble: Vec<u8>,
    info: Obj,
    deflate: Option<(DeflateParams, DeflateConfig)>,
) -> Result<(), TclError> {
    let id = next_id();
    let (handle, inbox) = engine_conn::channel(id, DEFAULT_MAX_MESSAGE);
    let mut conn = Conn::new(id, sock, handler, server, ConnState::Connected, handle);
    let role = if server { Role::Server } else { Role::Client };
    let mut opts = Options {
        role,
        keepalive: keepalive_duration(conn.keepalive)?,
        ping_payload: Vec::new(),
        deflate: None,
    };
    if let Some((params, cfg)) = deflate {
        conn.enable_deflate(role, &params, &cfg);
        opts.deflate = Some((params, cfg));
    }
    let (_, kind) = channel::lookup(interp, sock)?;
    match kind {
        channel::ChannelKind::Name => return Err(channel::already_websocket(sock)),
        channel::ChannelKind::Tcp => {
            let taken = channel::take_socket(interp, sock)?;
            (conn.peer, conn.local) = sock_addrs(&taken.fd);
            conn.held = Some(taken.held);
            let owner = Box::new(NameOwner {
                state: st.me.clone(),
                id,
            });
            conn.name_channel = channel::NameChannel::create(interp, sock, owner);
            st.register(conn);
            let setup = Setup {
                buffered: taken.buffered,
                preamble,
                opts,
                id,
                sink: st.sink(),
                inbox,
            };
            client::spawn_taken(taken.fd, setup);
        }
        channel::ChannelKind::Other(_) => {
            (conn.peer, conn.local) = channel_addrs(interp, sock);
            let (feeder, input) = bridge_engine::input();
            let on_input: bridge::OnInput = Box::new(move |data| {
                let _ = feeder.send(data.unwrap_or_default());
            });
            let (tcl_side, writer, buffered) = bridge::start(interp, sock, on_input)?;
            st.bridges.borrow_mut().push(tcl_side);
            st.register(conn);
            let stream = bridge_engine::BridgeStream::new(input, Arc::new(Outlet(writer)));
            let setup = Setup {
                buffered,
                preamble,
                opts,
                id,
                sink: st.sink(),
                inbox,
            };
            client::spawn_bridged(stream, setup);
        }
    }
    st.push(sock, Kind::Connect, info);
    let kind = if server { "server" } else { "client" };
    st.logger.log(
        Level::Debug,
        &format!("{sock} has been registered as a {kind} WebSocket"),
    );
    Ok(())
}

/// Answers for a taken-over socket's name channel.
struct NameOwner {
    state: std::rc::Weak<State>,
    id: u64,
}

impl NameOwner {
    fn name(&self, st: &State) -> Option<std::rc::Rc<str>> {
        st.names.borrow().get(&self.id).cloned()
    }
}

impl channel::NameOwner for NameOwner {
    fn closed(&self) {
        let Some(st) = self.state.upgrade() else {
            return;
        };
        let Some(name) = self.name(&st) else {
            return;
        };
        if let Some(c) = st.conns.borrow_mut().get_mut(&name) {
            // Tcl frees the channel itself once this returns.
            c.name_channel = None;
        }
        if st.shut.get() || st.interp.is_deleted() {
            // The interpreter is going: its teardown closes with 1001.
            return;
        }
        // tcllib's scripts close the socket they upgraded; for a
        // WebSocket that is `::websocket::close $sock`.
        let _ = st.with_handler_calls(|| {
            close_sock(&st, &name, Some(close::NORMAL as i64), String::new())
        });
    }

    fn address(&self, local: bool) -> Option<Obj> {
        let st = self.state.upgrade()?;
        let name = self.name(&st)?;
        let conns = st.conns.borrow();
        let c = conns.get(&name)?;
        let addr = if local { c.local } else { c.peer }?;
        Some(Obj::list(&[
            Obj::string(&addr.ip().to_string()),
            Obj::string(&crate::sys::host_name(&addr)),
            Obj::int(addr.port() as i64),
        ]))
    }
}

/// The engine's writes to a bridged channel, posted to its thread.
struct Outlet(bridge::BridgeWriter);

impl bridge_engine::Outlet for Outlet {
    fn write(&self, data: Vec<u8>) {
        self.0.send(bridge::Outbound::Data(data));
    }
    fn shutdown(&self) {
        self.0.send(bridge::Outbound::Shutdown);
    }
}

/// Peer and local addresses of a channel as `fconfigure -peername/-sockname` give them.
fn channel_addrs(interp: Interp, sock: &str) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let get = |opt: &str| -> Option<SocketAddr> {
        let words = [
            Obj::string("::fconfigure"),
            Obj::string(sock),
            Obj::string(opt),
        ];
        let r = interp.eval_words(&words);
        let out = interp.result();
        interp.reset_result();
        r.ok()?;
        let elems = out.borrow().list_elements(None)?;
        let ip: std::net::IpAddr = elems.first()?.to_string_lossy().parse().ok()?;
        let port: u16 = elems.get(2)?.to_string_lossy().parse().ok()?;
        Some(SocketAddr::new(ip, port))
    };
    (get("-peername"), get("-sockname"))
}

/// `takeover sock handler ?server? ?info?`
pub fn takeover(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() < 3 || objv.len() > 5 {
        return Err(wrong_args(objv, "sock handler ?server? ?info?"));
    }
    let sock = objv[1].to_string_lossy();
    let server = match objv.get(3) {
        Some(s) => s.get_boolean(Some(interp)).ok_or(TclError::InInterp)?,
        None => false,
    };
    let info = objv
        .get(4)
        .map(|o| o.to_owned())
        .unwrap_or_else(|| Obj::string(""));
    // A socket the package owns already (tcllib servers call takeover right
    // after upgrade, or again later): as tcllib, the connection stays and
    // the new handler takes it over, hearing `connect` with the new info.
    let owned = match st.conns.borrow_mut().get_mut(sock.as_str()) {
        Some(c) if c.state != ConnState::Closed => {
            c.set_handler(objv[2].to_owned());
            true
        }
        _ => false,
    };
    if owned {
        st.push(&sock, Kind::Connect, info);
        return Ok(None);
    }
    attach_socket(
        st,
        interp,
        &sock,
        objv[2].to_owned(),
        server,
        Vec::new(),
        info,
        None,
    )?;
    Ok(None)
}

/// `close sock ?code? ?reason?`: sends a close frame (the engine completes
/// the closing handshake), reports `close` and `disconnect`, forgets `sock`.
pub fn close(st: &State, _interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() < 2 || objv.len() > 4 {
        return Err(wrong_args(objv, "sock ?code? ?reason?"));
    }
    let sock = objv[1].to_string_lossy();
    let code = match objv.get(2) {
        None => Some(close::NORMAL as i64),
        Some(c) => c.get_wide(None),
    };
    let reason = objv.get(3).map(|r| r.to_string_lossy()).unwrap_or_default();
    close_sock(st, &sock, code, reason)
}

/// Closes `sock` with `code` (None: a close frame without one) and
/// `reason`: the work of `close`, and of `send $sock 8`.
pub fn close_sock(st: &State, sock: &str, code: Option<i64>, mut reason: String) -> CmdResult {
    let sock = sock.to_string();
    {
        let mut conns = st.conns.borrow_mut();
        let conn = conns
            .get_mut(sock.as_str())
            .ok_or_else(|| st.not_a_websocket(&sock))?;
        if conn.state == ConnState::Closed {
            st.logger.log(Level::Notice, "Connection already closed");
            return Ok(None);
        }
        if let Some(c) = code {
            if !(0..=u16::MAX as i64).contains(&c) || !close::is_sendable_code(c as u16) {
                return Err(TclError::ws(
                    format!("Invalid close code {c}: use 1000-1003, 1007-1014 or 3000-4999"),
                    &["CLOSE"],
                ));
            }
            if reason.is_empty() {
                // tcllib maps the code through its table; other codes stay as they are.
                reason = close::default_reason(c as u16)
                    .map(str::to_string)
                    .unwrap_or_else(|| c.to_string());
            }
        }
        conn.state = ConnState::Closed;
        State::uncork(conn);
        let payload = code.map(|c| (c as u16, reason.clone()));
        conn.handle.send(Cmd::Close(payload));
    }
    let msg = match code {
        Some(c) => {
            st.logger
                .log(Level::Info, &format!("Closing web socket: {c} ({reason})"));
            Obj::list(&[Obj::int(c), Obj::string(&reason)])
        }
        None => {
            st.logger.log(Level::Info, "Closing web socket");
            Obj::string("")
        }
    };
    st.push(&sock, Kind::Close, msg);
    st.disconnect(&sock);
    Ok(None)
}

/// `conninfo sock what`
pub fn conninfo(st: &State, _interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() != 3 {
        return Err(wrong_args(objv, "sock what"));
    }
    let sock = objv[1].to_string_lossy();
    let what = objv[2].to_string_lossy();
    let conns = st.conns.borrow();
    let c = conns
        .get(sock.as_str())
        .ok_or_else(|| st.not_a_websocket(&sock))?;
    let w = what.to_ascii_lowercase();
    let value = if glob_match("peer*", &w, false) {
        Obj::string(
            &c.peer
                .map(|a| crate::sys::host_name(&a))
                .unwrap_or_else(|| "0.0.0.0".into()),
        )
    } else if w == "sockname" || w == "name" {
        Obj::string(
            &c.local
                .map(|a| crate::sys::host_name(&a))
                .unwrap_or_else(|| "127.0.0.1".into()),
        )
    } else if glob_match("close*", &w, false) {
        Obj::int((c.state == ConnState::Closed) as i64)
    } else if w == "client" {
        Obj::int(!c.server as i64)
    } else if w == "server" {
        Obj::int(c.server as i64)
    } else if w == "type" {
        Obj::string(if c.server { "server" } else { "client" })
    } else if w == "handler" {
        c.handler.clone()
    } else if w == "state" {
        Obj::string(c.state.name())
    } else if w == "queued" {
        Obj::int(c.handle.queued() as i64)
    } else if w == "extensions" {
        Obj::string(&c.extensions)
    } else {
        return Err(TclError::ws(
            format!("{what} is not a known information piece for a websocket"),
            &[],
        ));
    };
    Ok(Some(value))
}

/// `find ?host? ?port?`: sockets whose peer address or name matches `host`
/// and whose peer port matches `port` (glob patterns).
pub fn find(st: &State, _interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() > 3 {
        return Err(wrong_args(objv, "?host? ?port?"));
    }
    let host = objv
        .get(1)
        .map(|o| o.to_string_lossy())
        .unwrap_or_else(|| "*".into());
    let port = objv
        .get(2)
        .map(|o| o.to_string_lossy())
        .unwrap_or_else(|| "*".into());
    let conns = st.conns.borrow();
    let mut found: Vec<(u64, String)> = Vec::new();
    for (name, c) in conns.iter() {
        let (ip, prt) = match c.peer {
            Some(a) => (a.ip().to_string(), a.port().to_string()),
            None => ("0.0.0.0".to_string(), String::new()),
        };
        // The name lookup only when the address does not already match.
        let host_ok = host == "*"
            || glob_match(&host, &ip, false)
            || c.peer
                .is_some_and(|a| glob_match(&host, &crate::sys::host_name(&a), false));
        if host_ok && glob_match(&port, &prt, false) {
            found.push((c.id, name.to_string()));
        }
    }
    found.sort();
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    Ok(Some(Obj::list_of_strings(&names)))
}

/// A positive byte count for `option`.
fn byte_count(interp: Interp, v: ObjRef, option: &str) -> Result<usize, TclError> {
    match v.get_wide(Some(interp)) {
        Some(n) if n > 0 => usize::try_from(n).map_err(|_| {
            TclError::ws(
                format!("{option} {n} is more bytes than this system can hold"),
                &[],
            )
        }),
        Some(_) => Err(TclError::ws(
            format!("{option} must be a positive number of bytes"),
            &[],
        )),
        None => Err(TclError::InInterp),
    }
}

/// The largest `-keepalive`, in seconds: tcllib schedules its pings with
/// `after [expr {$keepalive*1000}]`, and `after` takes at most a Tcl wide
/// integer (2^63-1) of milliseconds, so tcllib never accepted more. It is
/// also far inside what the engine's millisecond timer can count.
pub const MAX_KEEPALIVE_SECS: u64 = i64::MAX as u64 / 1000;

/// What a `-keepalive` of `secs` seconds asks the engine for: None (no
/// pings) for 0 or less, as tcllib sends none then (so a negative value,
/// even -Inf, is 0); an error, rather than the panic of
/// `Duration::from_secs_f64`, for NaN and for more than
/// MAX_KEEPALIVE_SECS (Inf included).
pub fn keepalive_duration(secs: f64) -> Result<Option<Duration>, TclError> {
    let bad = || {
        TclError::ws(
            format!("-keepalive must be a number of seconds up to {MAX_KEEPALIVE_SECS}"),
            &[],
        )
    };
    if secs.is_nan() {
        return Err(bad());
    }
    if secs <= 0.0 {
        return Ok(None);
    }
    if secs > MAX_KEEPALIVE_SECS as f64 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| bad())
}

/// The longest `-ping` text: a ping is a control frame (RFC 6455 §5.5).
const MAX_PING: usize = 125;

/// What one `configure` call changes, every value already checked.
#[derive(Default)]
struct Changes {
    /// Seconds as the script gave them (negative is 0) and what they mean.
    keepalive: Option<(f64, Option<Duration>)>,
    ping: Option<Vec<u8>>,
    max_queue: Option<usize>,
    max_message: Option<usize>,
}

/// Reads and checks every `-option value` pair of `configure`; the first
/// bad one is the error. Nothing is applied here.
fn parse_changes(interp: Interp, args: &[ObjRef]) -> Result<Changes, TclError> {
    let mut ch = Changes::default();
    let empty = Obj::string("");
    // As tcllib's `foreach {k v} $args`: a last option without a value gets "".
    for pair in args.chunks(2) {
        let k = pair[0].to_string_lossy();
        let v = pair.get(1).copied().unwrap_or_else(|| empty.borrow());
        let bare = k.trim_start_matches('-').to_ascii_lowercase();
        if bare.starts_with('k') {
            let secs = v.get_double(Some(interp)).ok_or(TclError::InInterp)?;
            let duration = keepalive_duration(secs)?;
            ch.keepalive = Some((secs.max(0.0), duration));
        } else if bare.starts_with('p') {
            let text = v
                .to_utf8()
                .map(|b| b.into_owned())
                .unwrap_or_else(|_| v.to_string_lossy().into_bytes());
            if text.len() > MAX_PING {
                return Err(TclError::ws("The -ping text cannot exceed 125 bytes", &[]));
            }
            ch.ping = Some(text);
        } else if bare.starts_with("maxq") {
            ch.max_queue = Some(byte_count(interp, v, "-maxqueue")?);
        } else if bare.starts_with("maxl") {
            ch.max_message = Some(byte_count(interp, v, "-maxlength")?);
        } else {
            return Err(TclError::ws(format!("{k} is not a recognised option"), &[]));
        }
    }
    Ok(ch)
}

/// `configure sock ?-keepalive secs? ?-ping text? ?-maxlength bytes? ?-maxqueue bytes?`:
/// every value is checked before any is applied, so an error changes nothing.
pub fn configure(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() < 2 {
        return Err(wrong_args(objv, "sock ?arg ...?"));
    }
    let sock = objv[1].to_string_lossy();
    let mut conns = st.conns.borrow_mut();
    let c = conns
        .get_mut(sock.as_str())
        .ok_or_else(|| st.not_a_websocket(&sock))?;
    let ch = parse_changes(interp, &objv[2..])?;
    // What the engine is told, worked out before anything changes.
    let keepalive = match (&ch.keepalive, &ch.ping) {
        (Some((_, duration)), _) => Some(*duration),
        // The current value was checked when it was set (or is a default).
        (None, Some(_)) => Some(keepalive_duration(c.keepalive)?),
        (None, None) => None,
    };
    if let Some((secs, _)) = ch.keepalive {
        c.keepalive = secs;
    }
    if let Some(text) = ch.ping {
        c.ping = text;
    }
    if let Some(duration) = keepalive {
        // One command for the pair, however many times they were given.
        c.handle.send(Cmd::Keepalive(duration, c.ping.clone()));
    }
    if let Some(n) = ch.max_queue {
        c.max_queue = n;
    }
    if let Some(n) = ch.max_message {
        c.max_message = n;
        c.handle.set_max_message(n);
    }
    Ok(None)
}

/// `loglevel ?level?`
pub fn loglevel(st: &State, _interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() > 2 {
        return Err(wrong_args(objv, "?loglvl?"));
    }
    if let Some(l) = objv.get(1) {
        let l = l.to_string_lossy();
        if !l.is_empty() {
            st.logger.set(&l);
        }
    }
    Ok(Some(Obj::string(st.logger.current())))
}
