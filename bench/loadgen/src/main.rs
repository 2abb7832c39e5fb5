//! WebSocket echo load generator for bench/run.sh.
//!
//! A minimal RFC 6455 client written directly on tokio (no code shared with
//! the package under test): HTTP/1.1 upgrade with Sec-WebSocket-Accept check,
//! masked client frames, unmasked server frames (continuations reassembled,
//! ping/pong ignored, close = error).  Every echo is checked against what was
//! sent (a sequence number or the whole payload).
//!
//!   loadgen <pipelined|rtt|large|conns|idle> --port P [options]
//!
//! Prints exactly one JSON line on stdout; exit status 0 when "ok":true.
//!
//! permessage-deflate (RFC 7692): with `--deflate 1` the client offers
//! `permessage-deflate; client_max_window_bits` and, if the server accepts,
//! compresses what it sends (raw deflate, level 6, the window the server
//! allows, context takeover unless the server answers
//! client_no_context_takeover; the 00 00 ff ff tail stripped, RSV1 on the
//! first frame) and inflates what it receives.  The `deflate` scenario
//! (on by default there) pipelines JSON-like text messages of `--size` bytes
//! and reports msg/s, the server's CPU per message (utime+stime of
//! /proc/PID/stat, all threads) and the bytes on the wire per message each
//! way; `idle --deflate 1` holds connections that negotiated it, and
//! `--active 1` makes every one of them exchange one compressed 1 KiB message
//! first.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

// ---------------------------------------------------------------- options

#[derive(Clone, Debug)]
struct Opts {
    scenario: String,
    host: String,
    port: u16,
    path: String,
    duration: f64,
    warmup: f64,
    inflight: usize,
    size: usize,
    count: usize,
    conns: usize,
    echoes: usize,
    repeat: usize,
    batch: usize,
    connect_timeout: f64,
    op_timeout: f64,
    max_time: f64,
    hold: f64,
    /// idle: seconds between the last connection and the measurement.
    settle: f64,
    server_pid: Option<u32>,
    label: String,
    protocol: String,
    deflate: bool,
    active: bool,
    /// idle: fail unless every connection negotiated permessage-deflate (when offered).
    require_deflate: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen <pipelined|rtt|large|conns|idle|deflate> --port P [--host 127.0.0.1] [--path /echo]
  [--duration S] [--warmup S] [--inflight N] [--size BYTES] [--count N]
  [--conns N] [--echoes N] [--repeat N] [--batch N] [--connect-timeout S] [--op-timeout S]
  [--max-time S] [--hold S] [--settle S] [--server-pid PID] [--label TEXT] [--protocol NAME|'']
  [--deflate 0|1] [--active 0|1] [--require-deflate 0|1]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| usage());
    let (size, count, duration, conns) = match scenario.as_str() {
        "pipelined" => (32, 0, 5.0, 1),
        "rtt" => (32, 10_000, 0.0, 1),
        "large" => (1 << 20, 0, 5.0, 1),
        "conns" => (32, 0, 0.0, 200),
        "idle" => (32, 0, 0.0, 10_000),
        "deflate" => (1024, 0, 5.0, 1),
        _ => usage(),
    };
    let mut o = Opts {
        scenario,
        host: "127.0.0.1".into(),
        port: 0,
        path: "/echo".into(),
        duration,
        warmup: 0.5,
        inflight: 100,
        size,
        count,
        conns,
        echoes: 50,
        repeat: 1,
        batch: 200,
        connect_timeout: 5.0,
        op_timeout: 10.0,
        max_time: 120.0,
        hold: 0.0,
        settle: 1.0,
        server_pid: None,
        label: String::new(),
        // tcllib 1.4.2's ::websocket::test fails ("key protocols not known in
        // dictionary") on a request without Sec-WebSocket-Protocol, so one is
        // offered by default, to every server alike.  --protocol '' disables.
        protocol: "bench".into(),
        deflate: false,
        active: false,
        require_deflate: true,
    };
    if o.scenario == "deflate" {
        o.deflate = true;
        o.inflight = 50;
    }
    while let Some(k) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        let f = || v.parse::<f64>().unwrap_or_else(|_| usage());
        let n = || v.parse::<usize>().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--host" => o.host = v.clone(),
            "--port" => o.port = v.parse().unwrap_or_else(|_| usage()),
            "--path" => o.path = v.clone(),
            "--duration" => o.duration = f(),
            "--warmup" => o.warmup = f(),
            "--inflight" => o.inflight = n().max(1),
            "--size" => o.size = n().max(8),
            "--count" => o.count = n(),
            "--conns" => o.conns = n(),
            "--echoes" => o.echoes = n(),
            "--repeat" => o.repeat = n().max(1),
            "--batch" => o.batch = n().max(1),
            "--connect-timeout" => o.connect_timeout = f(),
            "--op-timeout" => o.op_timeout = f(),
            "--max-time" => o.max_time = f(),
            "--hold" => o.hold = f(),
            "--settle" => o.settle = f(),
            "--server-pid" => o.server_pid = Some(v.parse().unwrap_or_else(|_| usage())),
            "--label" => o.label = v.clone(),
            "--protocol" => o.protocol = v.clone(),
            "--deflate" => o.deflate = n() != 0,
            "--active" => o.active = n() != 0,
            "--require-deflate" => o.require_deflate = n() != 0,
            _ => usage(),
        }
    }
    if o.port == 0 {
        usage()
    }
    o
}

// ---------------------------------------------------------------- JSON

struct Json(String);

impl Json {
    fn new() -> Self {
        Json(String::from("{"))
    }
    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{k}\":");
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.0.push('"');
        for c in v.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }
    fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.0, "{}", (v * 1000.0).round() / 1000.0);
        } else {
            self.0.push_str("null");
        }
        self
    }
    fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }
    fn opt_int(&mut self, k: &str, v: Option<u64>) -> &mut Self {
        self.key(k);
        match v {
            Some(v) => {
                let _ = write!(self.0, "{v}");
            }
            None => self.0.push_str("null"),
        }
        self
    }
    fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

// ---------------------------------------------------------------- misc

struct Rng(u64);

impl Rng {
    fn new() -> Self {
        static CTR: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let c = CTR.fetch_add(1, Ordering::Relaxed);
        Rng((t ^ (c.wrapping_mul(0x9E37_79B9_7F4A_7C15))) | 1)
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn raise_nofile() -> u64 {
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            return r.rlim_cur;
        }
    }
    0
}

/// VmRSS of a process in KiB (None if it is gone).
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime+stime of a process (all its threads), in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// Time the process's threads spent runnable but waiting for a CPU, in
/// seconds (sum over /proc/PID/task/*/schedstat, second field): on a shared
/// machine, how much of the wall time the server lost to other processes.
fn runq_wait_secs(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
            ns += s.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(ns as f64 / 1e9)
}

/// This process's own CPU time (user+system), in seconds.
fn self_cpu_secs() -> f64 {
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut r);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(r.ru_utime) + tv(r.ru_stime)
    }
}

/// A JSON-like text message of exactly `size` bytes (ASCII), varied by `rng`:
/// an object with a sequence number and an array of small records.
fn json_message(rng: &mut Rng, size: usize, seq: u64) -> Vec<u8> {
    const NAMES: [&str; 12] =
        ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"];
    const TAGS: [&str; 8] = ["red", "green", "blue", "urgent", "archived", "new", "beta", "vip"];
    const EVENTS: [&str; 5] = ["login", "logout", "purchase", "view", "update"];
    let mut s = format!("{{\"seq\":{seq},\"type\":\"batch\",\"items\":[");
    let tail_min = "],\"pad\":\"\"}".len();
    let mut first = true;
    loop {
        let r = rng.next();
        let name = NAMES[(r % 12) as usize];
        let item = format!(
            "{{\"id\":{},\"user\":\"{}{}\",\"email\":\"{}.{}@example.com\",\"active\":{},\"score\":{}.{:02},\
             \"event\":\"{}\",\"tags\":[\"{}\",\"{}\"],\"ts\":\"2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z\"}}",
            (r >> 8) % 1_000_000,
            name,
            (r >> 28) % 1000,
            name,
            (r >> 38) % 100,
            (r >> 45) & 1 == 1,
            (r >> 46) % 1000,
            (r >> 20) % 100,
            EVENTS[((r >> 12) % 5) as usize],
            TAGS[((r >> 16) % 8) as usize],
            TAGS[((r >> 19) % 8) as usize],
            1 + (r >> 52) % 30,
            (r >> 30) % 24,
            (r >> 33) % 60,
            (r >> 40) % 60,
            (r >> 4) % 1000,
        );
        if s.len() + item.len() + 1 + tail_min > size {
            break;
        }
        if !first {
            s.push(',');
        }
        first = false;
        s.push_str(&item);
    }
    s.push_str("],\"pad\":\"");
    while s.len() + 2 < size {
        s.push('.');
    }
    s.push_str("\"}");
    let mut v = s.into_bytes();
    v.truncate(size.max(1));
    v
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; look at the state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.rfind(')') {
            Some(i) => !matches!(s[i + 1..].trim_start().chars().next(), Some('Z') | Some('X')),
            None => true,
        },
        Err(_) => false,
    }
}

fn err<T>(msg: impl Into<String>) -> io::Result<T> {
    Err(io::Error::new(io::ErrorKind::Other, msg.into()))
}

async fn within<T>(secs: f64, what: &str, fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(Duration::from_secs_f64(secs), fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what}: timed out after {secs}s"))),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------- WebSocket client

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// permessage-deflate as the server accepted it.
#[derive(Clone, Debug)]
struct Pmd {
    /// The window our compressor may use (client_max_window_bits, else 15).
    client_window: u8,
    client_no_context_takeover: bool,
    /// The server's answer, verbatim.
    header: String,
}

/// Parses a Sec-WebSocket-Extensions answer (one extension allowed).
fn parse_pmd(v: &str) -> io::Result<Pmd> {
    if v.contains(',') {
        return err(format!("handshake: more than one extension accepted: {v:?}"));
    }
    let mut parts = v.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return err(format!("handshake: unexpected extension {v:?}"));
    }
    let mut p = Pmd { client_window: 15, client_no_context_takeover: false, header: v.to_string() };
    for kv in parts {
        let (k, val) = match kv.split_once('=') {
            Some((k, val)) => (k.trim(), Some(val.trim().trim_matches('"'))),
            None => (kv, None),
        };
        match (k, val) {
            ("server_no_context_takeover", None) => {}
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(b)) if matches!(b.parse::<u8>(), Ok(8..=15)) => {}
            ("client_max_window_bits", Some(b)) => match b.parse::<u8>() {
                // zlib cannot compress raw deflate with an 8-bit window; 9 fits in 8 bits' worth
                // only in theory, so ask for nothing smaller than 9 (no server here answers 8).
                Ok(n @ 8..=15) => p.client_window = n.max(9),
                _ => return err(format!("handshake: bad client_max_window_bits in {v:?}")),
            },
            _ => return err(format!("handshake: bad permessage-deflate parameter {kv:?} in {v:?}")),
        }
    }
    Ok(p)
}

/// Raw-deflates `input` as one message (sync flush, 00 00 ff ff stripped).
fn deflate_msg(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.reserve(input.len() + input.len() / 8 + 64);
    let start_in = c.total_in();
    loop {
        let done = (c.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.len().max(4096));
        }
        c.compress_vec(&input[done..], out, FlushCompress::Sync).map_err(io::Error::other)?;
        if (c.total_in() - start_in) as usize == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    if !out.ends_with(&[0, 0, 0xff, 0xff]) {
        return err("deflate: sync flush without 00 00 ff ff");
    }
    out.truncate(out.len() - 4);
    Ok(())
}

/// Inflates one message (`raw` without its tail) into `out`.
fn inflate_msg(d: &mut Decompress, raw: &[u8], out: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    out.clear();
    const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
    for input in [raw, &TAIL[..]] {
        let start_in = d.total_in();
        loop {
            if out.capacity() - out.len() < 4096 {
                out.reserve(out.len().max(16384));
            }
            let done = (d.total_in() - start_in) as usize;
            d.decompress_vec(&input[done..], out, FlushDecompress::Sync).map_err(io::Error::other)?;
            if out.len() > limit {
                return err("inflate: message too large");
            }
            if (d.total_in() - start_in) as usize == input.len() && out.len() < out.capacity() {
                break;
            }
        }
    }
    Ok(())
}

fn new_compressor(p: &Pmd) -> Compress {
    Compress::new_with_window_bits(Compression::new(6), false, p.client_window)
}

struct Reader {
    rd: BufReader<OwnedReadHalf>,
    pmd: Option<Pmd>,
    inflater: Option<Decompress>,
    raw: Vec<u8>,
    /// Bytes of data frames received (headers included).
    wire_in: u64,
}

struct Writer {
    wr: OwnedWriteHalf,
    rng: Rng,
    buf: Vec<u8>,
}

async fn connect(addr: SocketAddr, host: &str, path: &str, protocol: &str, deflate: bool) -> io::Result<(Reader, Writer)> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (rd, mut wr) = sock.into_split();
    let mut rng = Rng::new();
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&rng.next().to_le_bytes());
    key[8..].copy_from_slice(&rng.next().to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let proto_hdr = if protocol.is_empty() { String::new() } else { format!("Sec-WebSocket-Protocol: {protocol}\r\n") };
    let ext_hdr = if deflate { "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" } else { "" };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{proto_hdr}{ext_hdr}\r\n",
        addr.port()
    );
    wr.write_all(req.as_bytes()).await?;
    let mut rd = BufReader::with_capacity(256 * 1024, rd);
    let mut line = String::new();
    let mut status = String::new();
    let mut accept = None;
    let mut upgrade_ok = false;
    let mut pmd = None;
    for i in 0..200 {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return err(format!("handshake: connection closed by server (status line {status:?})"));
        }
        let l = line.trim_end();
        if i == 0 {
            status = l.to_string();
            continue;
        }
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("sec-websocket-accept") {
                accept = Some(v.to_string());
            } else if k.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket") {
                upgrade_ok = true;
            } else if k.eq_ignore_ascii_case("sec-websocket-extensions") {
                if !deflate || pmd.is_some() {
                    return err(format!("handshake: extension {v:?} not offered"));
                }
                pmd = Some(parse_pmd(v)?);
            } else if k.eq_ignore_ascii_case("sec-websocket-protocol") && v != protocol {
                return err(format!("handshake: server chose subprotocol {v:?}, offered {protocol:?}"));
            }
        }
    }
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "101" {
        return err(format!("handshake: unexpected status {status:?}"));
    }
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let want = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    if accept.as_deref() != Some(want.as_str()) {
        return err(format!("handshake: bad Sec-WebSocket-Accept {accept:?}, want {want}"));
    }
    if !upgrade_ok {
        return err("handshake: no 'Upgrade: websocket' header");
    }
    Ok((Reader { rd, pmd, inflater: None, raw: Vec::new(), wire_in: 0 }, Writer { wr, rng, buf: Vec::new() }))
}

fn mask_in_place(data: &mut [u8], key: [u8; 4]) {
    let k32 = u32::from_ne_bytes(key) as u64;
    let k64 = k32 | (k32 << 32);
    // 32-byte blocks of four words: the compiler vectorises these.
    let mut blocks = data.chunks_exact_mut(32);
    for b in &mut blocks {
        for c in b.chunks_exact_mut(8) {
            let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ k64;
            c.copy_from_slice(&v.to_ne_bytes());
        }
    }
    let rest = blocks.into_remainder();
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ k64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // blocks and chunks are multiples of 4 bytes, so the tail starts at key offset 0
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

impl Writer {
    /// Append one masked, final frame to `out`.
    fn encode(rng: &mut Rng, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        Self::encode_rsv(rng, out, opcode, false, payload)
    }

    /// Append one masked, final frame to `out`, with RSV1 if `rsv1`.
    fn encode_rsv(rng: &mut Rng, out: &mut Vec<u8>, opcode: u8, rsv1: bool, payload: &[u8]) {
        out.push(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
        let n = payload.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let key = (rng.next() as u32).to_ne_bytes();
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        mask_in_place(&mut out[start..], key);
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        Self::encode(&mut self.rng, &mut buf, opcode, payload);
        let r = self.wr.write_all(&buf).await;
        self.buf = buf;
        r
    }

    /// Send several binary messages in one write.
    async fn send_batch(&mut self, payloads: impl Iterator<Item = Vec<u8>>) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for p in payloads {
            Self::encode(&mut self.rng, &mut buf, OP_BINARY, &p);
        }
        let r = self.wr.write_all(&buf).await;
        self.buf = buf;
        r
    }

    /// Send one (possibly compressed) message.
    async fn send_rsv(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        Self::encode_rsv(&mut self.rng, &mut buf, opcode, rsv1, payload);
        let r = self.wr.write_all(&buf).await;
        self.buf = buf;
        r
    }

    /// Send several (opcode, rsv1, payload) frames in one write; returns the bytes written.
    async fn send_frames<'a>(&mut self, frames: impl Iterator<Item = (u8, bool, &'a [u8])>) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for (op, rsv, p) in frames {
            Self::encode_rsv(&mut self.rng, &mut buf, op, rsv, p);
        }
        let r = self.wr.write_all(&buf).await;
        let n = buf.len();
        self.buf = buf;
        r.map(|_| n)
    }

    async fn close(&mut self) {
        let _ = self.send(OP_CLOSE, &1000u16.to_be_bytes()).await;
    }
}

impl Reader {
    /// Read one data message into `msg`; returns its opcode.
    async fn recv(&mut self, msg: &mut Vec<u8>) -> io::Result<u8> {
        msg.clear();
        let mut first_op = None;
        let mut compressed = false;
        loop {
            let mut h = [0u8; 2];
            self.rd.read_exact(&mut h).await?;
            let fin = h[0] & 0x80 != 0;
            let op = h[0] & 0x0F;
            if h[0] & 0x70 != 0 {
                if h[0] & 0x70 != 0x40 || self.pmd.is_none() || first_op.is_some() || op & 0x8 != 0 {
                    return err(format!("server frame with RSV bits set: {:#04x}", h[0]));
                }
                compressed = true;
                self.raw.clear();
            }
            let masked = h[1] & 0x80 != 0;
            let mut len = (h[1] & 0x7F) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                self.rd.read_exact(&mut b).await?;
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.rd.read_exact(&mut b).await?;
                len = u64::from_be_bytes(b);
            }
            if masked {
                return err("server sent a masked frame");
            }
            if len > 1 << 30 {
                return err(format!("server frame too large: {len}"));
            }
            let len = len as usize;
            if op & 0x8 == 0 {
                self.wire_in += 2 + len as u64 + if len < 126 { 0 } else if len <= 0xFFFF { 2 } else { 8 };
            }
            match op {
                OP_CLOSE | OP_PING | OP_PONG => {
                    let mut body = vec![0u8; len];
                    self.rd.read_exact(&mut body).await?;
                    if op == OP_CLOSE {
                        let code = if len >= 2 { u16::from_be_bytes([body[0], body[1]]) } else { 1005 };
                        let reason = String::from_utf8_lossy(body.get(2..).unwrap_or(&[]));
                        return err(format!("server closed the connection: {code} {reason}"));
                    }
                    continue; // pings/pongs are ignored
                }
                OP_TEXT | OP_BINARY => {
                    if first_op.is_some() {
                        return err("new data frame inside a fragmented message");
                    }
                    first_op = Some(op);
                }
                OP_CONT => {
                    if first_op.is_none() {
                        return err("continuation frame without a start");
                    }
                }
                _ => return err(format!("server frame with reserved opcode {op:#x}")),
            }
            let buf = if compressed { &mut self.raw } else { &mut *msg };
            let start = buf.len();
            buf.resize(start + len, 0);
            self.rd.read_exact(&mut buf[start..]).await?;
            if fin {
                if compressed {
                    // Kept across messages (harmless under server_no_context_takeover).
                    let d = self.inflater.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
                    inflate_msg(d, &self.raw, msg, 1 << 30)?;
                }
                return Ok(first_op.unwrap());
            }
        }
    }
}

async fn resolve(o: &Opts) -> io::Result<SocketAddr> {
    let mut it = tokio::net::lookup_host((o.host.as_str(), o.port)).await?;
    it.next().map_or_else(|| err("cannot resolve host"), Ok)
}

async fn connect_t(o: &Opts, addr: SocketAddr) -> io::Result<(Reader, Writer)> {
    within(o.connect_timeout, "connect+handshake", connect(addr, &o.host, &o.path, &o.protocol, o.deflate)).await
}

/// Waits for one in-flight permit, then takes as many more as are free, up
/// to `max`: how many messages the writer may send now.
async fn take_permits(sem: &Semaphore, max: usize) -> io::Result<usize> {
    sem.acquire()
        .await
        .map_err(|_| io::Error::other("closed"))?
        .forget();
    let mut n = 1;
    while n < max {
        match sem.try_acquire() {
            Ok(p) => {
                p.forget();
                n += 1
            }
            Err(_) => break,
        }
    }
    Ok(n)
}

fn seq_payload(size: usize, seq: u64, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; size];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p
}

fn check_seq(msg: &[u8], op: u8, size: usize, want: u64) -> io::Result<()> {
    if op != OP_BINARY {
        return err(format!("echo #{want}: opcode {op}, expected binary"));
    }
    if msg.len() != size {
        return err(format!("echo #{want}: {} bytes, expected {size}", msg.len()));
    }
    let got = u64::from_le_bytes(msg[..8].try_into().unwrap());
    if got != want {
        return err(format!("echo out of order or corrupt: got #{got}, expected #{want}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- scenarios

async fn pipelined(o: &Opts, j: &mut Json) -> io::Result<()> {
    let addr = resolve(o).await?;
    let (mut rd, mut wr) = connect_t(o, addr).await?;
    let sem = Arc::new(Semaphore::new(o.inflight));
    let stop = Arc::new(AtomicBool::new(false));
    let size = o.size;
    let writer = {
        let (sem, stop) = (sem.clone(), stop.clone());
        let max = o.inflight;
        tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = take_permits(&sem, max).await?;
                let first = seq;
                seq += n as u64;
                wr.send_batch((first..seq).map(|s| seq_payload(size, s, 0xA5))).await?;
            }
            Ok::<_, io::Error>(wr)
        })
    };
    let t0 = Instant::now();
    let warm_end = t0 + Duration::from_secs_f64(o.warmup);
    let end = warm_end + Duration::from_secs_f64(o.duration);
    let mut msg = Vec::new();
    let mut want = 0u64;
    let mut counted = 0u64;
    let mut t_start = None;
    let res: io::Result<()> = async {
        loop {
            let op = within(o.op_timeout, "waiting for echo", rd.recv(&mut msg)).await?;
            check_seq(&msg, op, size, want)?;
            want += 1;
            sem.add_permits(1);
            let now = Instant::now();
            if now >= warm_end {
                if t_start.is_none() {
                    t_start = Some(now);
                } else {
                    counted += 1;
                }
            }
            if now >= end {
                return Ok(());
            }
        }
    }
    .await;
    let secs = t_start.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    stop.store(true, Ordering::Relaxed);
    sem.close();
    if let Ok(Ok(mut wr)) = writer.await {
        wr.close().await;
    }
    j.int("inflight", o.inflight as u64)
        .int("size", size as u64)
        .int("msgs", counted)
        .int("msgs_total", want)
        .num("secs", secs)
        .num("msgs_per_s", if secs > 0.0 { counted as f64 / secs } else { 0.0 });
    res
}

/// Pipelined echo of JSON-like text messages, compressed when the server
/// accepts permessage-deflate.  The messages are a cycle of `m` distinct
/// ones, compressed once before the run as one stream (the first from an
/// empty window, so the cycle can repeat: every back-reference stays inside
/// the cycle); so the load generator's CPU goes to inflating and checking
/// the echoes, not to deflating.
async fn deflate(o: &Opts, j: &mut Json) -> io::Result<()> {
    let addr = resolve(o).await?;
    let (mut rd, mut wr) = connect_t(o, addr).await?;
    let size = o.size.max(128);
    let m = (4 << 20) / size;
    let m = m.clamp(16, 1024);
    let mut rng = Rng::new();
    let plain: Vec<Vec<u8>> = (0..m as u64).map(|i| json_message(&mut rng, size, i)).collect();
    let pmd = rd.pmd.clone();
    let frames: Vec<(bool, Vec<u8>)> = match &pmd {
        Some(p) => {
            let mut c = new_compressor(p);
            let mut out = Vec::new();
            let mut v = Vec::with_capacity(m);
            for (i, msg) in plain.iter().enumerate() {
                if i > 0 && p.client_no_context_takeover {
                    c.reset();
                }
                deflate_msg(&mut c, msg, &mut out)?;
                v.push((true, out.clone()));
            }
            v
        }
        None => plain.iter().map(|p| (false, p.clone())).collect(),
    };
    let frame_len = |n: usize| (n + 6 + if n < 126 { 0 } else if n <= 0xFFFF { 2 } else { 8 }) as f64;
    let wire_out_per_msg = frames.iter().map(|(_, f)| frame_len(f.len())).sum::<f64>() / m as f64;
    let frames = Arc::new(frames);
    let sem = Arc::new(Semaphore::new(o.inflight));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sem, stop, frames) = (sem.clone(), stop.clone(), frames.clone());
        let max = o.inflight;
        tokio::spawn(async move {
            let mut seq = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let n = take_permits(&sem, max).await?;
                let first = seq;
                seq += n;
                wr.send_frames((first..seq).map(|s| {
                    let (rsv, f) = &frames[s % m];
                    (OP_TEXT, *rsv, f.as_slice())
                }))
                .await?;
            }
            Ok::<_, io::Error>(wr)
        })
    };
    let t0 = Instant::now();
    let warm_end = t0 + Duration::from_secs_f64(o.warmup);
    let end = warm_end + Duration::from_secs_f64(o.duration);
    let mut msg = Vec::new();
    let mut want = 0usize;
    let mut counted = 0u64;
    let mut start: Option<(Instant, Option<f64>, f64, u64, Option<f64>)> = None;
    let mut compressed_echoes = 0u64;
    let res: io::Result<()> = async {
        loop {
            let op = within(o.op_timeout, "waiting for echo", rd.recv(&mut msg)).await?;
            if op != OP_TEXT || msg != plain[want % m] {
                return err(format!("echo #{want}: corrupt ({} bytes, opcode {op})", msg.len()));
            }
            want += 1;
            sem.add_permits(1);
            let now = Instant::now();
            if now >= warm_end {
                if start.is_none() {
                    start = Some((
                        now,
                        o.server_pid.and_then(cpu_secs),
                        self_cpu_secs(),
                        rd.wire_in,
                        o.server_pid.and_then(runq_wait_secs),
                    ));
                } else {
                    counted += 1;
                }
            }
            if now >= end {
                return Ok(());
            }
        }
    }
    .await;
    let (secs, srv_cpu, own_cpu, wire_in, runq) = match start {
        Some((t, c0, own0, w0, q0)) => (
            t.elapsed().as_secs_f64(),
            match (c0, o.server_pid.and_then(cpu_secs)) {
                (Some(a), Some(b)) => b - a,
                _ => f64::NAN,
            },
            self_cpu_secs() - own0,
            rd.wire_in - w0,
            match (q0, o.server_pid.and_then(runq_wait_secs)) {
                (Some(a), Some(b)) => b - a,
                _ => f64::NAN,
            },
        ),
        None => (0.0, f64::NAN, f64::NAN, 0, f64::NAN),
    };
    if rd.inflater.is_some() {
        compressed_echoes = 1;
    }
    stop.store(true, Ordering::Relaxed);
    sem.close();
    if let Ok(Ok(mut wr)) = writer.await {
        wr.close().await;
    }
    let per = |x: f64| if counted > 0 { x / counted as f64 } else { f64::NAN };
    j.bool("negotiated", pmd.is_some())
        .str("extension", pmd.as_ref().map(|p| p.header.as_str()).unwrap_or(""))
        .bool("server_compressed", compressed_echoes > 0)
        .int("inflight", o.inflight as u64)
        .int("size", size as u64)
        .int("distinct_msgs", m as u64)
        .int("msgs", counted)
        .num("secs", secs)
        .num("msgs_per_s", if secs > 0.0 { counted as f64 / secs } else { 0.0 })
        .num("server_cpu_secs", srv_cpu)
        .num("server_cpu_us_per_msg", per(srv_cpu * 1e6))
        .num("server_cpu_frac", if secs > 0.0 { srv_cpu / secs } else { f64::NAN })
        .num("server_runq_wait_frac", if secs > 0.0 { runq / secs } else { f64::NAN })
        .num("loadgen_cpu_frac", if secs > 0.0 { own_cpu / secs } else { f64::NAN })
        .num("wire_out_per_msg", wire_out_per_msg)
        .num("wire_in_per_msg", per(wire_in as f64));
    res
}

async fn rtt(o: &Opts, j: &mut Json) -> io::Result<()> {
    let addr = resolve(o).await?;
    let (mut rd, mut wr) = connect_t(o, addr).await?;
    let warm = 200.min(o.count / 10 + 1);
    let mut lat = Vec::with_capacity(o.count);
    let mut msg = Vec::new();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.max_time * 0.8);
    let res: io::Result<()> = async {
        for i in 0..(warm + o.count) as u64 {
            let p = seq_payload(o.size, i, 0x5A);
            let t = Instant::now();
            wr.send(OP_BINARY, &p).await?;
            let op = within(o.op_timeout, "waiting for echo", rd.recv(&mut msg)).await?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            check_seq(&msg, op, o.size, i)?;
            if i >= warm as u64 {
                lat.push(us);
            }
            if Instant::now() > deadline {
                return err(format!("time budget exhausted after {} messages", lat.len()));
            }
        }
        Ok(())
    }
    .await;
    wr.close().await;
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = if lat.is_empty() { f64::NAN } else { lat.iter().sum::<f64>() / lat.len() as f64 };
    j.int("size", o.size as u64)
        .int("msgs", lat.len() as u64)
        .num("secs", secs)
        .num("p50_us", percentile(&lat, 50.0))
        .num("p90_us", percentile(&lat, 90.0))
        .num("p99_us", percentile(&lat, 99.0))
        .num("max_us", lat.last().copied().unwrap_or(f64::NAN))
        .num("mean_us", mean);
    res
}

async fn large(o: &Opts, j: &mut Json) -> io::Result<()> {
    let addr = resolve(o).await?;
    let (mut rd, mut wr) = connect_t(o, addr).await?;
    let mut rng = Rng::new();
    let mut payload = vec![0u8; o.size];
    for c in payload.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        c.copy_from_slice(&r[..c.len()]);
    }
    let mut msg = Vec::with_capacity(o.size);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(o.duration);
    let mut n = 0u64;
    let res: io::Result<()> = async {
        loop {
            payload[..8].copy_from_slice(&n.to_le_bytes());
            within(o.op_timeout, "sending", wr.send(OP_BINARY, &payload)).await?;
            let op = within(o.op_timeout, "waiting for echo", rd.recv(&mut msg)).await?;
            if op != OP_BINARY || msg != payload {
                return err(format!("echo #{n}: corrupt ({} bytes, opcode {op})", msg.len()));
            }
            n += 1;
            if Instant::now() >= end {
                return Ok(());
            }
        }
    }
    .await;
    let secs = t0.elapsed().as_secs_f64();
    wr.close().await;
    let mib = (n as f64) * (o.size as f64) / (1024.0 * 1024.0);
    j.int("size", o.size as u64)
        .int("msgs", n)
        .num("secs", secs)
        .num("mib_per_s", if secs > 0.0 { mib / secs } else { 0.0 })
        .num("msgs_per_s", if secs > 0.0 { n as f64 / secs } else { 0.0 });
    res
}

/// One pass of the conns scenario: open `conns` connections, then every one
/// echoes `echoes` messages at window 1, all at once.
struct ConnsPass {
    opened: u64,
    connect_errors: u64,
    echo_errors: u64,
    msgs: u64,
    connect_secs: f64,
    echo_secs: f64,
    all_secs: f64,
    first_err: Option<String>,
}

async fn conns_pass(o: &Opts, addr: SocketAddr) -> ConnsPass {
    let t0 = Instant::now();
    // Connect in batches (bounded concurrency), all connections held open.
    let mut held = Vec::with_capacity(o.conns);
    let mut connect_errors = 0u64;
    let mut first_err = None;
    let mut left = o.conns;
    while left > 0 {
        let b = left.min(o.batch);
        left -= b;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..b {
            let o2 = o.clone();
            set.spawn(async move { connect_t(&o2, addr).await });
        }
        while let Some(r) = set.join_next().await {
            match r.map_err(io::Error::other).and_then(|x| x) {
                Ok(c) => held.push(c),
                Err(e) => {
                    connect_errors += 1;
                    first_err.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let opened = held.len() as u64;
    // All echo loops start together.
    let go = Arc::new(tokio::sync::Notify::new());
    let mut set = tokio::task::JoinSet::new();
    for (ci, (mut rd, mut wr)) in held.into_iter().enumerate() {
        let (o2, go) = (o.clone(), go.clone());
        let fut = go.notified_owned();
        set.spawn(async move {
            fut.await;
            let mut msg = Vec::new();
            let mut done = 0u64;
            let r: io::Result<()> = async {
                for i in 0..o2.echoes as u64 {
                    let s = ((ci as u64) << 32) | i;
                    wr.send(OP_BINARY, &seq_payload(o2.size, s, 0x3C)).await?;
                    let op = within(o2.op_timeout, "waiting for echo", rd.recv(&mut msg)).await?;
                    check_seq(&msg, op, o2.size, s)?;
                    done += 1;
                }
                Ok(())
            }
            .await;
            wr.close().await;
            (done, r.err().map(|e| e.to_string()))
        });
    }
    tokio::task::yield_now().await;
    let t1 = Instant::now();
    go.notify_waiters();
    let mut msgs = 0u64;
    let mut echo_errors = 0u64;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((d, e)) => {
                msgs += d;
                if let Some(e) = e {
                    echo_errors += 1;
                    first_err.get_or_insert(e);
                }
            }
            Err(e) => {
                echo_errors += 1;
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    ConnsPass {
        opened,
        connect_errors,
        echo_errors,
        msgs,
        connect_secs,
        echo_secs: t1.elapsed().as_secs_f64(),
        all_secs: t0.elapsed().as_secs_f64(),
        first_err,
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `--repeat` passes against the same server; the figure is the median pass
/// (one pass of 10,000 echoes lasts ~0.2 s, too short to stand alone).
async fn conns(o: &Opts, j: &mut Json) -> io::Result<()> {
    let addr = resolve(o).await?;
    let mut rates = Vec::new();
    let mut rates_incl = Vec::new();
    let (mut opened, mut connect_errors, mut echo_errors, mut msgs) = (0u64, 0u64, 0u64, 0u64);
    let (mut connect_secs, mut secs) = (0.0, 0.0);
    let mut first_err = None;
    for _ in 0..o.repeat {
        let p = conns_pass(o, addr).await;
        opened += p.opened;
        connect_errors += p.connect_errors;
        echo_errors += p.echo_errors;
        msgs += p.msgs;
        connect_secs += p.connect_secs;
        secs += p.echo_secs;
        if p.echo_secs > 0.0 {
            rates.push(p.msgs as f64 / p.echo_secs);
        }
        if p.all_secs > 0.0 {
            rates_incl.push(p.msgs as f64 / p.all_secs);
        }
        if p.first_err.is_some() {
            first_err = p.first_err;
            break;
        }
    }
    let (lo, hi) = rates.iter().fold((f64::MAX, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)));
    j.int("conns", o.conns as u64)
        .int("echoes", o.echoes as u64)
        .int("size", o.size as u64)
        .int("repeat", o.repeat as u64)
        .int("opened", opened)
        .int("connect_errors", connect_errors)
        .int("echo_errors", echo_errors)
        .int("msgs", msgs)
        .num("connect_secs", connect_secs)
        .num("secs", secs)
        .num("msgs_per_s", median(&mut rates))
        .num("msgs_per_s_min", if rates.is_empty() { 0.0 } else { lo })
        .num("msgs_per_s_max", hi)
        .num("msgs_per_s_incl_connect", median(&mut rates_incl));
    match first_err {
        Some(e) => err(e),
        None => Ok(()),
    }
}

/// `idle --active 1`: one JSON-like 1 KiB text message each way, compressed
/// when negotiated (from a fresh compressor: a valid first message).
async fn activate(o: &Opts, rd: &mut Reader, wr: &mut Writer) -> io::Result<()> {
    let mut rng = Rng::new();
    let plain = json_message(&mut rng, 1024, 0);
    match rd.pmd.clone() {
        Some(p) => {
            let mut out = Vec::new();
            deflate_msg(&mut new_compressor(&p), &plain, &mut out)?;
            wr.send_rsv(OP_TEXT, true, &out).await?;
        }
        None => wr.send_rsv(OP_TEXT, false, &plain).await?,
    }
    let mut msg = Vec::new();
    let op = within(o.op_timeout, "waiting for the activation echo", rd.recv(&mut msg)).await?;
    if op != OP_TEXT || msg != plain {
        return err(format!("activation echo corrupt ({} bytes, opcode {op})", msg.len()));
    }
    Ok(())
}

async fn idle(o: &Opts, j: &mut Json) -> io::Result<()> {
    let addr = resolve(o).await?;
    let rss_before = o.server_pid.and_then(vm_rss_kib);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(o.max_time * 0.7);
    let mut held: Vec<(Reader, Writer)> = Vec::with_capacity(o.conns);
    let mut failed = 0u64;
    let mut first_err: Option<String> = None;
    let mut stop_reason = String::new();
    let mut rss_last: Option<(u64, u64)> = None;
    while held.len() < o.conns {
        if Instant::now() > deadline {
            stop_reason = "time budget exhausted".into();
            break;
        }
        if let Some(pid) = o.server_pid {
            if !pid_alive(pid) {
                stop_reason = "server process died".into();
                break;
            }
        }
        let b = (o.conns - held.len()).min(o.batch);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..b {
            let o2 = o.clone();
            set.spawn(async move {
                let (mut rd, mut wr) = connect_t(&o2, addr).await?;
                if o2.active {
                    activate(&o2, &mut rd, &mut wr).await?;
                }
                Ok((rd, wr))
            });
        }
        let mut batch_ok = 0;
        while let Some(r) = set.join_next().await {
            match r.map_err(io::Error::other).and_then(|x| x) {
                Ok(c) => {
                    held.push(c);
                    batch_ok += 1;
                }
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert_with(|| format!("connection #{}: {e}", held.len() + failed as usize));
                }
            }
        }
        // RSS after every batch: if the server dies later, the last sample
        // still gives a per-connection figure for what it did hold.
        if let Some(r) = o.server_pid.and_then(vm_rss_kib) {
            rss_last = Some((r, held.len() as u64));
        }
        if batch_ok == 0 {
            stop_reason = "a whole batch failed".into();
            break;
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let opened = held.len() as u64;
    let negotiated = held.iter().filter(|(r, _)| r.pmd.is_some()).count() as u64;
    let extension = held.first().and_then(|(r, _)| r.pmd.as_ref()).map(|p| p.header.clone()).unwrap_or_default();
    // Let the server settle, then measure.
    tokio::time::sleep(Duration::from_secs_f64(o.settle)).await;
    let rss_after = o.server_pid.and_then(vm_rss_kib);
    // Are the held connections still served?  Echo on a sample (~100).
    let step = (held.len() / 100).max(1);
    let mut sampled = 0u64;
    let mut alive = 0u64;
    let mut msg = Vec::new();
    let sample_deadline = Instant::now() + Duration::from_secs_f64((o.max_time * 0.1).max(5.0));
    for (i, (rd, wr)) in held.iter_mut().enumerate().step_by(step) {
        if Instant::now() > sample_deadline {
            break;
        }
        sampled += 1;
        let p = seq_payload(o.size, i as u64, 0x11);
        let r = async {
            wr.send(OP_BINARY, &p).await?;
            let op = within(2.0, "idle sample echo", rd.recv(&mut msg)).await?;
            check_seq(&msg, op, o.size, i as u64)
        }
        .await;
        match r {
            Ok(()) => alive += 1,
            Err(e) => {
                first_err.get_or_insert_with(|| format!("sample echo on connection #{i}: {e}"));
            }
        }
    }
    if o.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(o.hold)).await;
    }
    let server_alive = o.server_pid.map(pid_alive);
    // Close everything (close frame, then drop) and see what the server gives back.
    for (_, wr) in held.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_millis(50), wr.close()).await;
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_after_close = o.server_pid.and_then(vm_rss_kib);
    let (per_conn, per_conn_from) = match (rss_before, rss_after, rss_last) {
        (Some(b), Some(a), _) if opened > 0 => ((a as f64 - b as f64) / opened as f64, "settled"),
        (Some(b), None, Some((a, n))) if n > 0 => ((a as f64 - b as f64) / n as f64, "last_batch"),
        _ => (f64::NAN, ""),
    };
    j.int("conns", o.conns as u64)
        .int("opened", opened)
        .int("failed", failed)
        .num("connect_secs", connect_secs)
        .int("sampled", sampled)
        .int("sample_alive", alive)
        .opt_int("rss_before_kib", rss_before)
        .opt_int("rss_after_kib", rss_after)
        .opt_int("rss_after_close_kib", rss_after_close)
        .opt_int("rss_last_batch_kib", rss_last.map(|x| x.0))
        .opt_int("opened_at_last_batch", rss_last.map(|x| x.1))
        .num("kib_per_conn", per_conn)
        .str("kib_per_conn_from", per_conn_from)
        .str("stop_reason", &stop_reason)
        .bool("deflate_offered", o.deflate)
        .bool("active", o.active)
        .int("negotiated", negotiated)
        .str("extension", &extension);
    if let Some(a) = server_alive {
        j.bool("server_alive", a);
    }
    let deflate_missing = o.deflate && o.require_deflate && negotiated < opened;
    if deflate_missing {
        first_err.get_or_insert_with(|| format!("only {negotiated} of {opened} connections negotiated permessage-deflate"));
    }
    if opened < o.conns as u64 || alive < sampled || server_alive == Some(false) || deflate_missing {
        return err(first_err.unwrap_or_else(|| {
            if stop_reason.is_empty() {
                "not all connections served".into()
            } else {
                stop_reason.clone()
            }
        }));
    }
    Ok(())
}

// ---------------------------------------------------------------- main

fn main() {
    let o = parse_opts();
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut j = Json::new();
    j.str("scenario", &o.scenario).str("label", &o.label).str("protocol", &o.protocol);
    let t0 = Instant::now();
    let res = rt.block_on(async {
        let fut = async {
            match o.scenario.as_str() {
                "pipelined" => pipelined(&o, &mut j).await,
                "rtt" => rtt(&o, &mut j).await,
                "large" => large(&o, &mut j).await,
                "conns" => conns(&o, &mut j).await,
                "idle" => idle(&o, &mut j).await,
                "deflate" => deflate(&o, &mut j).await,
                _ => unreachable!(),
            }
        };
        match tokio::time::timeout(Duration::from_secs_f64(o.max_time), fut).await {
            Ok(r) => r,
            Err(_) => err(format!("scenario exceeded --max-time {}s", o.max_time)),
        }
    });
    if let Some(pid) = o.server_pid {
        j.bool("server_alive_at_end", pid_alive(pid));
    }
    j.num("wall_secs", t0.elapsed().as_secs_f64()).int("nofile_limit", nofile);
    match &res {
        Ok(()) => {
            j.bool("ok", true);
        }
        Err(e) => {
            j.bool("ok", false).str("error", &e.to_string());
        }
    }
    println!("{}", j.finish());
    // Don't wait for stray tasks.
    rt.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(if res.is_ok() { 0 } else { 1 });
}
