//! One WebSocket connection once the opening handshake is done: a reader
//! and a writer driven together by one task, the keepalive timer and the
//! closing handshake (RFC 6455 §5.5.1, §7).
//!
//! Plain TCP connections also take writes straight from the owner's thread:
//! when the writer has nothing queued, `Handle::send_data` writes to the
//! socket itself, so an echo does not wait for a wake-up of the engine.
//! The `Direct` lock keeps the byte stream whole: whoever writes while the
//! writer is busy queues behind it.

use super::queue::{self, Receiver, Sender, TryRecvError, WeakSender};
use super::{Event, Sink};
use crate::proto::close::{self, CloseFrame};
use crate::proto::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
use crate::proto::frame;
use crate::proto::mask::MaskKeys;
use crate::proto::reader::{Message, MessageReader};
use crate::proto::Role;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long we wait for the peer's part of the closing handshake.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the close frame we owe the peer waits for the script to finish
/// handling what arrived before it (its echo must go out first).
const CLOSE_REPLY_DELAY: Duration = Duration::from_secs(1);
/// Bytes gathered into one vectored write.
const WRITE_BATCH: usize = 256 * 1024;
/// Read size; the buffer is per thread, not per connection.
const READ_CHUNK: usize = 256 * 1024;
/// A data frame with at least this much payload still to come is received
/// straight into the message buffer (one copy fewer than through the
/// read buffer); smaller ones are not worth a system call of their own.
const IN_PLACE_MIN: usize = 64 * 1024;
/// At most this much per in-place receive.
const IN_PLACE_CHUNK: usize = 1 << 20;
/// Read buffer of a connection over a stream transport (TLS, Tcl channel).
const STREAM_READ_BUF: usize = 16 * 1024;

/// Orders from the owner (the Tcl thread) to a connection.
#[derive(Debug)]
pub enum Cmd {
    /// Frames already encoded for the wire.
    Data(Vec<u8>),
    /// Start the closing handshake with this close payload (code, reason).
    Close(Option<(u16, String)>),
    /// Ping after this much silence (None: never), with this payload.
    Keepalive(Option<Duration>, Vec<u8>),
}

/// Who may write to a TCP socket right now.
#[derive(Debug, Default)]
struct Direct {
    /// The socket, while the connection runs over plain TCP.
    stream: Option<Arc<TcpStream>>,
    /// The writer has bytes to put out first: the owner must queue.
    pending: bool,
    /// A close frame went out: nothing may follow it.
    closed: bool,
    /// The owner's direct write ended inside a frame: the frame's rest is
    /// queued for the writer (ahead of any other data), and nothing of the
    /// writer's own (a pong) may go out before it.
    partial: bool,
}

/// State both the owner and the connection task read.
#[derive(Debug)]
pub struct Shared {
    /// Bytes handed to the writer and not yet written.
    queued: AtomicUsize,
    /// Largest message the reader accepts.
    max_message: AtomicUsize,
    /// Time of the last traffic (ms on `clock()`), for keepalive.
    activity: AtomicU64,
    direct: Mutex<Direct>,
    /// Payloads of pings not answered yet. Past MAX_PONGS_DUE the newest
    /// replaces the last (§5.5.3 allows answering only the latest ping), so a
    /// peer that pings and never reads cannot grow this.
    pong_due: Mutex<VecDeque<Vec<u8>>>,
    /// Cost of the events sent to the owner and not yet handled by it; the
    /// reader stops reading above UNDELIVERED_HIGH (backpressure to the peer).
    undelivered: AtomicUsize,
    drained: Notify,
}

const MAX_PONGS_DUE: usize = 16;

/// Events waiting for the owner beyond which the reader pauses.
const UNDELIVERED_HIGH: usize = 1024 * 1024;
/// ... and below which it reads again.
const UNDELIVERED_LOW: usize = 256 * 1024;

/// What an event costs while it waits for the owner: its payload and the
/// bookkeeping around it, so that empty pings count too.
pub fn event_cost(m: &Message) -> usize {
    let payload = match m {
        Message::Text(b) | Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
    };
    payload + 64
}

impl Shared {
    fn direct(&self) -> MutexGuard<'_, Direct> {
        self.direct.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.activity.store(clock(), Ordering::Relaxed);
    }

    fn pong_due(&self) -> MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.pong_due.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The owner's end of a connection.
pub struct Handle {
    id: u64,
    tx: Sender<Cmd>,
    shared: Arc<Shared>,
}

/// The task's end, until the connection runs.
pub struct Inbox {
    rx: Receiver<Cmd>,
    shared: Arc<Shared>,
}

/// Weak, so that an owner dropping its Handle still ends the connection.
type LiveMap = HashMap<u64, WeakSender<Cmd>>;
static LIVE: Mutex<Option<LiveMap>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<LiveMap>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the closing handshake (1001, going away) on every connection of
/// the process; used when the process exits. Returns how many there were.
pub fn close_all() -> usize {
    let mut n = 0;
    if let Some(map) = live().as_ref() {
        for tx in map.values() {
            n += tx.send(Cmd::Close(Some((close::GOING_AWAY, String::new())))) as usize;
        }
    }
    n
}

pub fn channel(id: u64, max_message: usize) -> (Handle, Inbox) {
    let (tx, rx) = queue::queue();
    live()
        .get_or_insert_with(HashMap::new)
        .insert(id, tx.downgrade());
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        max_message: AtomicUsize::new(max_message),
        activity: AtomicU64::new(clock()),
        direct: Mutex::new(Direct::default()),
        pong_due: Mutex::new(VecDeque::new()),
        undelivered: AtomicUsize::new(0),
        drained: Notify::new(),
    });
    (
        Handle {
            id,
            tx,
            shared: shared.clone(),
        },
        Inbox { rx, shared },
    )
}

impl Inbox {
    /// The owner's next order, while the connection is still being made.
    pub async fn recv(&mut self) -> Option<Cmd> {
        self.rx.recv().await
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(map) = live().as_mut() {
            map.remove(&self.id);
        }
        // Nobody will handle what is waiting: let the reader finish the closing handshake.
        self.shared.undelivered.store(0, Ordering::Release);
        self.shared.drained.notify_one();
    }
}

impl Handle {
    /// Sends encoded frames: written at once when the socket takes them and
    /// nothing is queued before them, queued for the writer otherwise.
    /// False if the connection is closing or gone.
    pub fn send_data(&self, mut bytes: Vec<u8>) -> bool {
        let mut d = self.shared.direct();
        if d.closed {
            return false;
        }
        let written = self.try_direct(&mut d, &[IoSlice::new(&bytes)]);
        if written == bytes.len() {
            return true;
        }
        bytes.drain(..written);
        self.enqueue(bytes)
    }

    /// Like `send_data` for a frame given as header and payload: when the
    /// socket takes it at once, nothing is copied.
    pub fn send_frame(&self, header: &[u8], payload: &[u8]) -> bool {
        let mut d = self.shared.direct();
        if d.closed {
            return false;
        }
        let parts = [IoSlice::new(header), IoSlice::new(payload)];
        let written = self.try_direct(&mut d, &parts);
        if written == header.len() + payload.len() {
            return true;
        }
        let mut rest = Vec::with_capacity(header.len() + payload.len() - written);
        if written < header.len() {
            rest.extend_from_slice(&header[written..]);
            rest.extend_from_slice(payload);
        } else {
            rest.extend_from_slice(&payload[written - header.len()..]);
        }
        self.enqueue(rest)
    }

    /// Writes what the socket takes now, if the owner may write directly
    /// (plain TCP, nothing queued). Returns the bytes written; when not all,
    /// the socket now belongs to the writer until it has caught up.
    fn try_direct(&self, d: &mut Direct, parts: &[IoSlice<'_>]) -> usize {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if d.pending {
            return 0;
        }
        let Some(stream) = &d.stream else {
            return 0;
        };
        // An error is left for the writer to meet.
        let written = send_now(stream, parts).unwrap_or(0);
        if written == total {
            self.shared.touch();
        } else {
            d.pending = true;
            d.partial = written > 0;
        }
        written
    }

    /// Hands bytes to the writer (called with the direct lock held, so
    /// nothing can be written directly in between).
    fn enqueue(&self, bytes: Vec<u8>) -> bool {
        let n = bytes.len();
        self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(Cmd::Data(bytes)).is_err() {
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).is_ok()
    }

    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The owner handled an event of this cost (see `event_cost`).
    pub fn delivered(&self, cost: usize) {
        let before = self.shared.undelivered.fetch_sub(cost, Ordering::AcqRel);
        if before > UNDELIVERED_LOW && before - cost <= UNDELIVERED_LOW {
            self.shared.drained.notify_one();
        }
    }

    pub fn set_max_message(&self, n: usize) {
        self.shared.max_message.store(n, Ordering::Relaxed);
    }
}

/// Settings a connection starts with.
#[derive(Clone, Debug)]
pub struct Options {
    pub role: Role,
    pub keepalive: Option<Duration>,
    pub ping_payload: Vec<u8>,
    /// permessage-deflate as negotiated, with our settings: the reader
    /// inflates compressed messages.
    pub deflate: Option<(DeflateParams, DeflateConfig)>,
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// From the reader to the writer.
enum FromReader {
    /// A pong is due (its payload is in `Shared::pong_due`).
    Pong,
    /// The peer sent a close frame; answer with this payload.
    PeerClose(Vec<u8>),
    /// We must fail the connection with this close frame.
    Fail(u16, &'static str),
    /// The reader stopped (EOF, error, or after a close or a violation).
    Ended,
}

/// Everything a connection starts with besides its transport.
pub struct Setup {
    /// Bytes already read from the peer (after the handshake).
    pub buffered: Vec<u8>,
    /// Bytes to write before anything else (a 101 answer).
    pub preamble: Vec<u8>,
    pub opts: Options,
    pub id: u64,
    pub sink: Arc<dyn Sink>,
    pub inbox: Inbox,
}

/// Runs a connection over plain TCP (taken from Tcl or opened by `open`).
pub async fn run_tcp(stream: TcpStream, setup: Setup) {
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    {
        let mut d = setup.inbox.shared.direct();
        d.stream = Some(stream.clone());
        // Until the writer releases it: the preamble (a 101 answer) and
        // anything the owner queued before now must leave first.
        d.pending = true;
    }
    let output = Output::<WriteHalf<TcpStream>>::Tcp(stream.clone());
    drive(Input::Tcp(stream), output, setup).await;
}

/// Runs a connection over any byte stream (TLS, a Tcl channel).
pub async fn run_stream<S>(stream: S, setup: Setup)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (r, w) = tokio::io::split(stream);
    let input = Input::Stream(r, vec![0u8; STREAM_READ_BUF]);
    drive(input, Output::Stream(w), setup).await;
}

async fn drive<S>(input: Input<S>, output: Output<WriteHalf<S>>, setup: Setup)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Setup {
        buffered,
        preamble,
        opts,
        id,
        sink,
        inbox,
    } = setup;
    let (to_writer, from_reader) = queue::queue();
    let shared = inbox.shared.clone();
    shared.touch();
    let mut message_reader = MessageReader::new(opts.role, shared.max_message.load(Ordering::Relaxed));
    if let Some((params, cfg)) = &opts.deflate {
        message_reader.set_deflate(PerMessageDeflate::new(opts.role, params, cfg));
    }
    let reader = Reader {
        reader: message_reader,
        id,
        sink: sink.clone(),
        to_writer,
        shared: shared.clone(),
        closing: false,
    }
    .run(input, buffered);
    let writer = Writer {
        out: output,
        role: opts.role,
        keys: None,
        shared: shared.clone(),
        keepalive: opts.keepalive,
        ping: opts.ping_payload,
        close_sent: false,
    }
    .run(preamble, inbox.rx, from_reader, id, sink);
    tokio::pin!(reader);
    tokio::pin!(writer);
    let mut reader_done = false;
    loop {
        tokio::select! {
            _ = &mut reader, if !reader_done => reader_done = true,
            _ = &mut writer => break,
        }
    }
    let mut d = shared.direct();
    d.closed = true;
    d.stream = None;
}

enum Input<S> {
    Tcp(Arc<TcpStream>),
    Stream(ReadHalf<S>, Vec<u8>),
}

/// Writes what the socket takes now; WouldBlock (which clears the socket's
/// write readiness) when it takes nothing.
fn send_now(stream: &TcpStream, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    stream.try_io(tokio::io::Interest::WRITABLE, || {
        crate::sys::send_vectored(stream, parts)
    })
}

/// Reads what the socket holds. A read shorter than the buffer emptied the
/// socket, so its readiness is cleared at once (epoll is edge-triggered: new
/// data raises it again) instead of costing a second read that would only
/// say "would block".
fn read_drained(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let want = buf.len();
    drained(stream, want, || crate::sys::recv(stream, buf))
}

/// `read_drained`, appending at most `max` bytes to `buf`.
fn read_drained_append(stream: &TcpStream, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    drained(stream, max, || crate::sys::recv_append(stream, buf, max))
}

/// One receive of up to `want` bytes; a shorter one clears readiness.
fn drained(
    stream: &TcpStream,
    want: usize,
    mut recv: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut got = 0;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = recv()?;
        got = n;
        if n > 0 && n < want {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; READ_CHUNK]);
}

/// What the reader does after a chunk of input.
enum Flow {
    More,
    Stop,
}

struct Reader {
    reader: MessageReader,
    id: u64,
    sink: Arc<dyn Sink>,
    to_writer: Sender<FromReader>,
    shared: Arc<Shared>,
    /// The peer's close frame arrived: discard input until EOF.
    closing: bool,
}

impl Reader {
    async fn run<S: AsyncRead + Unpin>(mut self, mut input: Input<S>, buffered: Vec<u8>) {
        let mut first = buffered;
        if !first.is_empty() {
            if let Flow::Stop = self.process(&mut first) {
                return;
            }
        }
        drop(first);
        loop {
            self.backpressure().await;
            let got = match &mut input {
                Input::Tcp(stream) => {
                    let room = if self.closing {
                        0
                    } else {
                        self.reader.payload_room(IN_PLACE_MIN)
                    };
                    if stream.readable().await.is_err() {
                        None
                    } else if room > 0 {
                        let buf = self.reader.payload_buffer();
                        match read_drained_append(stream, buf, room.min(IN_PLACE_CHUNK)) {
                            Ok(0) => None,
                            Ok(n) => Some(self.process_in_place(n)),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                            Err(_) => None,
                        }
                    } else {
                        let r = SCRATCH.with(|b| {
                            let mut buf = b.borrow_mut();
                            match read_drained(stream, &mut buf) {
                                Ok(0) => Some(None),
                                Ok(n) => Some(Some(self.process(&mut buf[..n]))),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                                Err(_) => Some(None),
                            }
                        });
                        match r {
                            None => continue,
                            Some(flow) => flow,
                        }
                    }
                }
                Input::Stream(r, buf) => match r.read(buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(self.process(&mut buf[..n])),
                },
            };
            match got {
                Some(Flow::More) => {}
                Some(Flow::Stop) => return,
                None => {
                    self.end_of_input();
                    return;
                }
            }
        }
    }

    fn end_of_input(&self) {
        if !self.closing {
            self.sink.emit(
                self.id,
                Event::Closed {
                    code: close::ABNORMAL,
                    reason: close::default_reason(close::ABNORMAL)
                        .unwrap_or("")
                        .to_string(),
                },
            );
        }
        let _ = self.to_writer.send(FromReader::Ended);
    }

    /// Parses one chunk of input and reports what it completes.
    fn process(&mut self, data: &mut [u8]) -> Flow {
        self.shared.touch();
        if self.closing {
            return Flow::More;
        }
        let limit = self.shared.max_message.load(Ordering::Relaxed);
        if limit != self.reader.max_message_size() {
            self.reader.set_max_message_size(limit);
        }
        let mut pos = 0;
        loop {
            match self.reader.read(&mut data[pos..]) {
                Ok((n, msg)) => {
                    pos += n;
                    match msg {
                        Some(Message::Close(frame)) => {
                            self.peer_closed(frame);
                            return Flow::More;
                        }
                        Some(Message::Ping(p)) => {
                            // The pong goes before anything the owner sends
                            // in answer to what follows the ping: both under
                            // the direct lock, which `release` also takes.
                            let first = {
                                let mut d = self.shared.direct();
                                let mut due = self.shared.pong_due();
                                if due.len() == MAX_PONGS_DUE {
                                    due.pop_back();
                                }
                                due.push_back(p.clone());
                                d.pending = true;
                                due.len() == 1
                            };
                            if first {
                                let _ = self.to_writer.send(FromReader::Pong);
                            }
                            self.emit(Message::Ping(p));
                        }
                        Some(m) => self.emit(m),
                        None if n == 0 || pos == data.len() => return Flow::More,
                        None => {}
                    }
                }
                Err(v) => return self.fail(v),
            }
        }
    }

    /// `n` payload bytes were received straight into the reader's message
    /// buffer (see `MessageReader::payload_room`).
    fn process_in_place(&mut self, n: usize) -> Flow {
        self.shared.touch();
        match self.reader.payload_appended(n) {
            Ok(Some(m)) => {
                self.emit(m);
                Flow::More
            }
            Ok(None) => Flow::More,
            Err(v) => self.fail(v),
        }
    }

    /// The peer broke the protocol: report it, close with its code, stop.
    fn fail(&mut self, v: close::Violation) -> Flow {
        let reason = close::default_reason(v.code).unwrap_or(v.reason);
        self.sink.emit(
            self.id,
            Event::Closed {
                code: v.code,
                reason: reason.to_string(),
            },
        );
        let _ = self.to_writer.send(FromReader::Fail(v.code, v.reason));
        let _ = self.to_writer.send(FromReader::Ended);
        Flow::Stop
    }

    fn emit(&self, m: Message) {
        self.shared
            .undelivered
            .fetch_add(event_cost(&m), Ordering::AcqRel);
        self.sink.emit(self.id, Event::Message(m));
    }

    /// Waits while too much input waits for the owner.
    async fn backpressure(&self) {
        while self.shared.undelivered.load(Ordering::Acquire) > UNDELIVERED_HIGH {
            self.shared.drained.notified().await;
        }
    }

    fn peer_closed(&mut self, frame: Option<CloseFrame>) {
        let (code, reason) = match &frame {
            Some(CloseFrame { code, reason }) => (*code, reason.clone()),
            None => (close::NO_STATUS, String::new()),
        };
        self.sink.emit(self.id, Event::Closed { code, reason });
        let reply = match frame {
            Some(f) => close::build_close_payload(f.code, ""),
            None => Vec::new(),
        };
        let _ = self.to_writer.send(FromReader::PeerClose(reply));
        // Keep reading until EOF so the peer's FIN is seen.
        self.closing = true;
    }
}

enum Output<W> {
    Tcp(Arc<TcpStream>),
    Stream(W),
}

struct Writer<W> {
    out: Output<W>,
    role: Role,
    /// Mask keys, made on first use (clients only).
    keys: Option<MaskKeys>,
    shared: Arc<Shared>,
    keepalive: Option<Duration>,
    ping: Vec<u8>,
    close_sent: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A control frame (close, ping, pong) to write; None if the encoder
    /// refuses it (a payload over 125 bytes), which is then never sent.
    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Option<Vec<u8>> {
        let mask = match self.role {
            Role::Client => Some(self.keys.get_or_insert_with(MaskKeys::new).next_key()),
            Role::Server => None,
        };
        let mut out = Vec::with_capacity(payload.len() + frame::MAX_HEADER_LEN);
        frame::encode_frame(&mut out, true, opcode, mask, payload).ok()?;
        Some(out)
    }

    /// Writes the rest of a frame the owner's direct write left unfinished
    /// (`Direct::partial`), so that a frame of the writer's own can follow.
    /// The rest is the first data queued since; settings the owner sent
    /// before it are applied on the way, and a close (which cannot come
    /// first: `send` refuses once the owner has closed) is left in `next`.
    async fn finish_partial(
        &mut self,
        rx: &mut Receiver<Cmd>,
        next: &mut Option<Cmd>,
    ) -> io::Result<()> {
        if !self.shared.direct().partial {
            return Ok(());
        }
        loop {
            match rx.try_recv() {
                Ok(Cmd::Data(rest)) => {
                    self.shared.direct().partial = false;
                    let n = rest.len();
                    let r = self.write_one(rest).await;
                    self.shared.queued.fetch_sub(n, Ordering::Relaxed);
                    return r;
                }
                Ok(Cmd::Keepalive(k, payload)) => {
                    self.keepalive = k;
                    self.ping = payload;
                }
                Ok(close @ Cmd::Close(_)) => {
                    self.shared.direct().partial = false;
                    *next = Some(close);
                    return Ok(());
                }
                Err(_) => {
                    self.shared.direct().partial = false;
                    return Ok(());
                }
            }
        }
    }

    /// Takes the socket from the owner's direct writes before we write.
    fn claim(&self) {
        self.shared.direct().pending = true;
    }

    /// Hands the socket back to the owner's direct writes, unless a command
    /// arrived meanwhile (which is then returned, to be handled first) or a
    /// pong is due: the owner's bytes queued since the ping answer what came
    /// after it, so they wait until the pong is out.
    fn release(&self, rx: &mut Receiver<Cmd>) -> Option<Cmd> {
        let mut d = self.shared.direct();
        if !self.shared.pong_due().is_empty() {
            return None;
        }
        match rx.try_recv() {
            Ok(cmd) => Some(cmd),
            Err(_) => {
                d.pending = false;
                None
            }
        }
    }

    async fn write_bufs(&mut self, bufs: &[Vec<u8>]) -> io::Result<()> {
        let (mut idx, mut off) = (0usize, 0usize);
        while idx < bufs.len() {
            if bufs[idx].len() == off {
                idx += 1;
                off = 0;
                continue;
            }
            let n = {
                let mut slices = Vec::with_capacity(16);
                slices.push(IoSlice::new(&bufs[idx][off..]));
                slices.extend(bufs[idx + 1..].iter().take(15).map(|b| IoSlice::new(b)));
                match &mut self.out {
                    Output::Tcp(s) => match send_now(s, &slices) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            s.writable().await?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                    Output::Stream(w) => w.write_vectored(&slices).await?,
                }
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut n = n;
            while n > 0 {
                let rem = bufs[idx].len() - off;
                if n >= rem {
                    n -= rem;
                    idx += 1;
                    off = 0;
                } else {
                    off += n;
                    n = 0;
                }
            }
        }
        if let Output::Stream(w) = &mut self.out {
            w.flush().await?;
        }
        self.shared.touch();
        Ok(())
    }

    async fn write_one(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.write_bufs(std::slice::from_ref(&bytes)).await
    }

    async fn send_close(&mut self, payload: &[u8]) -> io::Result<()> {
        {
            let mut d = self.shared.direct();
            d.closed = true;
            d.pending = true;
        }
        self.close_sent = true;
        // Close payloads are built to fit (close::build_close_payload); one
        // that did not would go as a close frame without a code.
        let f = match self.frame(frame::OP_CLOSE, payload) {
            Some(f) => f,
            None => self.frame(frame::OP_CLOSE, &[]).unwrap_or_default(),
        };
        self.write_one(f).await
    }

    async fn shutdown(&mut self) {
        match &mut self.out {
            Output::Tcp(s) => {
                // A duplicate of the fd, to reach std's shutdown (FIN only).
                use std::os::fd::AsFd;
                if let Ok(fd) = s.as_fd().try_clone_to_owned() {
                    let _ = std::net::TcpStream::from(fd).shutdown(std::net::Shutdown::Write);
                }
            }
            Output::Stream(w) => {
                let _ = w.shutdown().await;
            }
        }
    }

    /// After the close frames: the server closes TCP first (§7.1.1); a client
    /// waits for that, then closes anyway. Both wait at most CLOSE_TIMEOUT.
    async fn finish(&mut self, from_reader: &mut Receiver<FromReader>, reader_ended: bool) {
        if self.role == Role::Server {
            self.shutdown().await;
        }
        if !reader_ended {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(m) = from_reader.recv().await {
                    if matches!(m, FromReader::Ended) {
                        break;
                    }
                }
            })
            .await;
        }
        if self.role == Role::Client {
            self.shutdown().await;
        }
    }

    fn abnormal(sink: &Arc<dyn Sink>, id: u64) {
        sink.emit(
            id,
            Event::Closed {
                code: close::ABNORMAL,
                reason: close::default_reason(close::ABNORMAL)
                    .unwrap_or("")
                    .to_string(),
            },
        )
    }

    async fn run(
        mut self,
        preamble: Vec<u8>,
        mut rx: Receiver<Cmd>,
        mut from_reader: Receiver<FromReader>,
        id: u64,
        sink: Arc<dyn Sink>,
    ) {
        if !preamble.is_empty() && self.write_one(preamble).await.is_err() {
            Self::abnormal(&sink, id);
            return;
        }
        let mut next: Option<Cmd> = None;
        // A close frame we owe the peer (it closed, or broke the protocol),
        // sent once the owner has handled the messages before it.
        let mut owed: Option<(Vec<u8>, tokio::time::Instant)> = None;
        loop {
            if next.is_none() {
                next = self.release(&mut rx);
            }
            let deadline = match &owed {
                Some((_, at)) => Some(*at),
                None => self.keepalive.map(|k| {
                    let last = self.shared.activity.load(Ordering::Relaxed);
                    let due = last + k.as_millis() as u64;
                    tokio::time::Instant::now() + Duration::from_millis(due.saturating_sub(clock()))
                }),
            };
            let cmd = match next.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    biased;
                    m = from_reader.recv(), if owed.is_none() => {
                        let reply_by = tokio::time::Instant::now() + CLOSE_REPLY_DELAY;
                        match m {
                            Some(FromReader::Pong) => {
                                // A pong inside a frame the owner began
                                // writing would corrupt the stream: the
                                // frame's rest goes first (seen in
                                // hostile-7.4 when the task woke late).
                                if self.finish_partial(&mut rx, &mut next).await.is_err() {
                                    Self::abnormal(&sink, id);
                                    return;
                                }
                                let due = std::mem::take(&mut *self.shared.pong_due());
                                if !due.is_empty() && !self.close_sent {
                                    self.claim();
                                    // The reader takes no ping over 125 bytes.
                                    let frames: Vec<Vec<u8>> = due
                                        .iter()
                                        .filter_map(|p| self.frame(frame::OP_PONG, p))
                                        .collect();
                                    if self.write_bufs(&frames).await.is_err() {
                                        Self::abnormal(&sink, id);
                                        return;
                                    }
                                }
                                continue;
                            }
                            Some(FromReader::PeerClose(reply)) => {
                                if self.close_sent {
                                    // The answer to our own close frame.
                                    self.finish(&mut from_reader, false).await;
                                    return;
                                }
                                owed = Some((reply, reply_by));
                                continue;
                            }
                            Some(FromReader::Fail(code, reason)) => {
                                owed = Some((close::build_close_payload(code, reason), reply_by));
                                continue;
                            }
                            Some(FromReader::Ended) | None => {
                                self.shutdown().await;
                                return;
                            }
                        }
                    }
                    c = rx.recv() => c,
                    _ = sleep_until(deadline) => {
                        if let Some((payload, _)) = owed.take() {
                            if !self.close_sent {
                                let _ = self.send_close(&payload).await;
                            }
                            self.finish(&mut from_reader, false).await;
                            return;
                        }
                        let idle = clock().saturating_sub(self.shared.activity.load(Ordering::Relaxed));
                        if let Some(k) = self.keepalive {
                            if idle >= k.as_millis() as u64 && !self.close_sent {
                                // `configure` takes no -ping text over 125
                                // bytes, and the encoder refuses one: an
                                // empty ping would go instead (never none,
                                // or this timer would fire again at once).
                                let ping = std::mem::take(&mut self.ping);
                                let f = self
                                    .frame(frame::OP_PING, &ping)
                                    .or_else(|| self.frame(frame::OP_PING, &[]))
                                    .unwrap_or_default();
                                self.ping = ping;
                                self.claim();
                                if self.write_one(f).await.is_err() {
                                    Self::abnormal(&sink, id);
                                    return;
                                }
                            }
                        }
                        continue;
                    }
                },
            };
            match cmd {
                Some(Cmd::Data(first)) => {
                    let mut total = first.len();
                    let mut bufs = VecDeque::from([first]);
                    // A pong that fell due meanwhile goes before the rest.
                    while total < WRITE_BATCH && self.shared.pong_due().is_empty() {
                        match rx.try_recv() {
                            Ok(Cmd::Data(b)) => {
                                total += b.len();
                                bufs.push_back(b);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    let bufs: Vec<Vec<u8>> = bufs.into();
                    let r = self.write_bufs(&bufs).await;
                    self.shared.queued.fetch_sub(total, Ordering::Relaxed);
                    if r.is_err() {
                        Self::abnormal(&sink, id);
                        return;
                    }
                }
                Some(Cmd::Close(code)) => {
                    let payload = match code {
                        Some((c, reason)) => close::build_close_payload(c, &reason),
                        None => Vec::new(),
                    };
                    let mut reader_ended = false;
                    let peer_closed = owed.take().is_some();
                    if self.send_close(&payload).await.is_ok() && !peer_closed {
                        // Wait for the peer's close frame (or the end of its
                        // stream). A peer that does not answer within
                        // CLOSE_TIMEOUT is not waited for again: the TCP
                        // connection closes then, in both roles.
                        reader_ended = tokio::time::timeout(CLOSE_TIMEOUT, async {
                            while let Some(m) = from_reader.recv().await {
                                match m {
                                    FromReader::PeerClose(_) | FromReader::Fail(..) => {
                                        return false
                                    }
                                    FromReader::Ended => return true,
                                    FromReader::Pong => {}
                                }
                            }
                            true
                        })
                        .await
                        .unwrap_or(true);
                    }
                    self.finish(&mut from_reader, reader_ended).await;
                    return;
                }
                Some(Cmd::Keepalive(k, payload)) => {
                    self.keepalive = k;
                    self.ping = payload;
                }
                None => {
                    // The owner is gone: it handled the peer's close (or the
                    // failure) we owe an answer to, or its interpreter was deleted.
                    let payload = match owed.take() {
                        Some((p, _)) => p,
                        None => close::build_close_payload(close::GOING_AWAY, ""),
                    };
                    if !self.close_sent {
                        let _ = self.send_close(&payload).await;
                    }
                    self.finish(&mut from_reader, false).await;
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSink;
    impl Sink for NoSink {
        fn emit(&self, _: u64, _: Event) {}
    }

    /// Reads from `peer` until `buf` holds a whole frame; returns its
    /// opcode and payload (the writer is a server: nothing is masked).
    async fn next_frame(peer: &mut tokio::io::DuplexStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
        loop {
            if let Some((h, n)) = frame::parse_header(buf).unwrap() {
                let end = n + h.payload_len as usize;
                if buf.len() >= end {
                    let payload = buf[n..end].to_vec();
                    buf.drain(..end);
                    return (h.opcode, payload);
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut chunk));
            let n = read.await.expect("a frame within 5 s").unwrap();
            assert!(n > 0, "the connection ended");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// RFC 6455 §5.5: a keepalive ping never goes out over 125 bytes, even
    /// with a longer ping text (from the start or set later): an empty ping
    /// goes instead, and the keepalive goes on. A valid text is sent as is.
    #[tokio::test]
    async fn keepalive_ping_never_over_125_bytes() {
        let id = u64::MAX - 4242;
        let (handle, inbox) = channel(id, 1 << 20);
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let setup = Setup {
            buffered: Vec::new(),
            preamble: Vec::new(),
            opts: Options {
                role: Role::Server,
                keepalive: Some(Duration::from_millis(20)),
                ping_payload: vec![b'p'; 126],
            },
            id,
            sink: Arc::new(NoSink),
            inbox,
        };
        let task = tokio::spawn(run_stream(ours, setup));
        let mut buf = Vec::new();
        assert_eq!(
            next_frame(&mut peer, &mut buf).await,
            (frame::OP_PING, Vec::new())
        );
        let keepalive = Some(Duration::from_millis(20));
        assert!(handle.send(Cmd::Keepalive(keepalive, vec![b'q'; 200])));
        assert!(handle.send(Cmd::Keepalive(keepalive, b"ok".to_vec())));
        // Pings already on their way may be empty; then the new text.
        loop {
            let (op, payload) = next_frame(&mut peer, &mut buf).await;
            assert_eq!(op, frame::OP_PING);
            assert!(payload.len() <= 125);
            if payload == b"ok" {
                break;
            }
            assert!(payload.is_empty(), "{payload:?}");
        }
        task.abort();
        drop(handle);
    }
}
