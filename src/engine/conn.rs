//! One WebSocket connection once the opening handshake is done: a reader
//! and a writer driven together by one task, the keepalive timer and the
//! closing handshake (RFC 6455 §5.5.1, §7).

use super::{Event, Sink};
use crate::proto::close::{self, CloseFrame};
use crate::proto::frame;
use crate::proto::mask::MaskKeys;
use crate::proto::reader::{Message, MessageReader};
use crate::proto::Role;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{self, error::TryRecvError, UnboundedReceiver, UnboundedSender, WeakUnboundedSender};

/// How long we wait for the peer's part of the closing handshake.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes gathered into one vectored write.
const WRITE_BATCH: usize = 256 * 1024;
const READ_BUF: usize = 64 * 1024;

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

/// State both the owner and the connection task read.
#[derive(Debug)]
pub struct Shared {
    /// Bytes handed to the writer and not yet written.
    pub queued: AtomicUsize,
    /// Largest message the reader accepts.
    pub max_message: AtomicUsize,
}

/// The owner's end of a connection.
pub struct Handle {
    id: u64,
    tx: UnboundedSender<Cmd>,
    pub shared: Arc<Shared>,
}

/// The task's end, until the connection runs.
pub struct Inbox {
    rx: UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
}

/// Every connection's command sender, so `exit` can say goodbye to all.
/// Weak, so that an owner dropping its Handle still ends the connection.
static LIVE: Mutex<Option<HashMap<u64, WeakUnboundedSender<Cmd>>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<u64, WeakUnboundedSender<Cmd>>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the closing handshake (1001, going away) on every connection of
/// the process; used when the process exits. Returns how many there were.
pub fn close_all() -> usize {
    let mut n = 0;
    if let Some(map) = live().as_ref() {
        for tx in map.values().filter_map(|w| w.upgrade()) {
            n += tx.send(Cmd::Close(Some((close::GOING_AWAY, String::new())))).is_ok() as usize;
        }
    }
    n
}

pub fn channel(id: u64, max_message: usize) -> (Handle, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    live().get_or_insert_with(HashMap::new).insert(id, tx.downgrade());
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        max_message: AtomicUsize::new(max_message),
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

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(map) = live().as_mut() {
            map.remove(&self.id);
        }
    }
}

impl Handle {
    /// Queues encoded frames. False if the connection is gone.
    pub fn send_data(&self, bytes: Vec<u8>) -> bool {
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
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// From the reader to the writer.
enum FromReader {
    Pong(Vec<u8>),
    /// The peer sent a close frame; answer with this payload.
    PeerClose(Vec<u8>),
    /// We must fail the connection with this close frame.
    Fail(u16, &'static str),
    /// The reader stopped (EOF, error, or after a close or a violation).
    Ended,
}

/// Runs a connection to its end. `buffered` holds bytes already read from
/// the peer; `preamble` is written before anything else (a 101 response).
#[allow(clippy::too_many_arguments)]
pub async fn run<S>(
    stream: S,
    buffered: Vec<u8>,
    preamble: Vec<u8>,
    opts: Options,
    id: u64,
    sink: Arc<dyn Sink>,
    inbox: Inbox,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (r, w) = tokio::io::split(stream);
    let activity = Arc::new(AtomicU64::new(clock()));
    let (to_writer, from_reader) = mpsc::unbounded_channel();
    let reader = read_loop(
        r,
        buffered,
        opts.role,
        id,
        sink.clone(),
        to_writer,
        inbox.shared.clone(),
        activity.clone(),
    );
    let writer = Writer {
        w,
        role: opts.role,
        keys: MaskKeys::new(),
        shared: inbox.shared.clone(),
        activity,
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
}

#[allow(clippy::too_many_arguments)]
async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    buffered: Vec<u8>,
    role: Role,
    id: u64,
    sink: Arc<dyn Sink>,
    to_writer: UnboundedSender<FromReader>,
    shared: Arc<Shared>,
    activity: Arc<AtomicU64>,
) {
    let mut reader = MessageReader::new(role, shared.max_message.load(Ordering::Relaxed));
    let mut buf = buffered;
    let mut len = buf.len();
    buf.resize(len.max(READ_BUF), 0);
    let mut closing = false;
    loop {
        let limit = shared.max_message.load(Ordering::Relaxed);
        if limit != reader.max_message_size() {
            reader.set_max_message_size(limit);
        }
        let mut pos = 0;
        while !closing {
            match reader.read(&mut buf[pos..len]) {
                Ok((n, msg)) => {
                    pos += n;
                    match msg {
                        Some(Message::Close(frame)) => {
                            let (code, reason) = match &frame {
                                Some(CloseFrame { code, reason }) => (*code, reason.clone()),
                                None => (close::NO_STATUS, String::new()),
                            };
                            sink.emit(id, Event::Closed { code, reason });
                            let reply = match frame {
                                Some(f) => close::build_close_payload(f.code, ""),
                                None => Vec::new(),
                            };
                            let _ = to_writer.send(FromReader::PeerClose(reply));
                            // Keep reading until EOF so the peer's FIN is seen.
                            closing = true;
                        }
                        Some(Message::Ping(p)) => {
                            let _ = to_writer.send(FromReader::Pong(p.clone()));
                            sink.emit(id, Event::Message(Message::Ping(p)));
                        }
                        Some(m) => sink.emit(id, Event::Message(m)),
                        None if n == 0 => break,
                        None => {}
                    }
                }
                Err(v) => {
                    let reason = close::default_reason(v.code)
                        .unwrap_or(v.reason)
                        .to_string();
                    sink.emit(
                        id,
                        Event::Closed {
                            code: v.code,
                            reason,
                        },
                    );
                    let _ = to_writer.send(FromReader::Fail(v.code, v.reason));
                    let _ = to_writer.send(FromReader::Ended);
                    return;
                }
            }
        }
        if closing {
            len = 0;
        } else {
            buf.copy_within(pos..len, 0);
            len -= pos;
        }
        match r.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => {
                if !closing {
                    sink.emit(
                        id,
                        Event::Closed {
                            code: close::ABNORMAL,
                            reason: close::default_reason(close::ABNORMAL)
                                .unwrap_or("")
                                .to_string(),
                        },
                    );
                }
                let _ = to_writer.send(FromReader::Ended);
                return;
            }
            Ok(n) => {
                len += n;
                activity.store(clock(), Ordering::Relaxed);
            }
        }
    }
}

struct Writer<W> {
    w: W,
    role: Role,
    keys: MaskKeys,
    shared: Arc<Shared>,
    activity: Arc<AtomicU64>,
    keepalive: Option<Duration>,
    ping: Vec<u8>,
    close_sent: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = (self.role == Role::Client).then(|| self.keys.next_key());
        let mut out = Vec::with_capacity(payload.len() + frame::MAX_HEADER_LEN);
        frame::encode_frame(&mut out, true, opcode, mask, payload);
        out
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
                self.w.write_vectored(&slices).await?
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
        self.w.flush().await?;
        self.activity.store(clock(), Ordering::Relaxed);
        Ok(())
    }

    async fn write_one(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.write_bufs(std::slice::from_ref(&bytes)).await
    }

    async fn send_close(&mut self, payload: &[u8]) -> io::Result<()> {
        self.close_sent = true;
        let f = self.frame(frame::OP_CLOSE, payload);
        self.write_one(f).await
    }

    /// After the close frames: the server closes TCP first (§7.1.1); a client
    /// waits for that, then closes anyway. Both wait at most CLOSE_TIMEOUT.
    async fn finish(
        &mut self,
        from_reader: &mut UnboundedReceiver<FromReader>,
        reader_ended: bool,
    ) {
        if self.role == Role::Server {
            let _ = self.w.shutdown().await;
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
            let _ = self.w.shutdown().await;
        }
    }

    async fn run(
        mut self,
        preamble: Vec<u8>,
        mut rx: UnboundedReceiver<Cmd>,
        mut from_reader: UnboundedReceiver<FromReader>,
        id: u64,
        sink: Arc<dyn Sink>,
    ) {
        let io_failed = |sink: &Arc<dyn Sink>| {
            sink.emit(
                id,
                Event::Closed {
                    code: close::ABNORMAL,
                    reason: close::default_reason(close::ABNORMAL)
                        .unwrap_or("")
                        .to_string(),
                },
            )
        };
        if !preamble.is_empty() && self.write_one(preamble).await.is_err() {
            io_failed(&sink);
            return;
        }
        let mut pending: Option<Cmd> = None;
        loop {
            let deadline = self.keepalive.map(|k| {
                let last = self.activity.load(Ordering::Relaxed);
                let due = last + k.as_millis() as u64;
                tokio::time::Instant::now() + Duration::from_millis(due.saturating_sub(clock()))
            });
            let cmd = match pending.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    biased;
                    m = from_reader.recv() => {
                        match m {
                            Some(FromReader::Pong(p)) => {
                                let f = self.frame(frame::OP_PONG, &p);
                                if self.write_one(f).await.is_err() {
                                    io_failed(&sink);
                                    return;
                                }
                                continue;
                            }
                            Some(FromReader::PeerClose(reply)) => {
                                if !self.close_sent {
                                    let _ = self.send_close(&reply).await;
                                }
                                self.finish(&mut from_reader, false).await;
                                return;
                            }
                            Some(FromReader::Fail(code, reason)) => {
                                if !self.close_sent {
                                    let payload = close::build_close_payload(code, reason);
                                    let _ = self.send_close(&payload).await;
                                }
                                self.finish(&mut from_reader, false).await;
                                return;
                            }
                            Some(FromReader::Ended) | None => {
                                let _ = self.w.shutdown().await;
                                return;
                            }
                        }
                    }
                    c = rx.recv() => c,
                    _ = sleep_until(deadline) => {
                        let now = clock();
                        let last = self.activity.load(Ordering::Relaxed);
                        if let Some(k) = self.keepalive {
                            if now.saturating_sub(last) >= k.as_millis() as u64 {
                                let ping = self.ping.clone();
                                let f = self.frame(frame::OP_PING, &ping);
                                if self.write_one(f).await.is_err() {
                                    io_failed(&sink);
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
                    while total < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(Cmd::Data(b)) => {
                                total += b.len();
                                bufs.push_back(b);
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                        }
                    }
                    let bufs: Vec<Vec<u8>> = bufs.into();
                    let r = self.write_bufs(&bufs).await;
                    self.shared.queued.fetch_sub(total, Ordering::Relaxed);
                    if r.is_err() {
                        io_failed(&sink);
                        return;
                    }
                }
                Some(Cmd::Close(code)) => {
                    let payload = match code {
                        Some((c, reason)) => close::build_close_payload(c, &reason),
                        None => Vec::new(),
                    };
                    let mut reader_ended = false;
                    if self.send_close(&payload).await.is_ok() {
                        // Wait for the peer's close frame (or the end of its stream).
                        reader_ended = tokio::time::timeout(CLOSE_TIMEOUT, async {
                            while let Some(m) = from_reader.recv().await {
                                match m {
                                    FromReader::PeerClose(_) | FromReader::Fail(..) => {
                                        return false
                                    }
                                    FromReader::Ended => return true,
                                    FromReader::Pong(_) => {}
                                }
                            }
                            true
                        })
                        .await
                        .unwrap_or(false);
                    }
                    self.finish(&mut from_reader, reader_ended).await;
                    return;
                }
                Some(Cmd::Keepalive(k, payload)) => {
                    self.keepalive = k;
                    self.ping = payload;
                }
                None => {
                    // The owner is gone (its interpreter was deleted).
                    let payload = close::build_close_payload(close::GOING_AWAY, "");
                    let _ = self.send_close(&payload).await;
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
