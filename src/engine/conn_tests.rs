//! Black-box tests of a running connection (`conn::run_tcp`, `conn::run_stream`):
//! a test plays the peer on the other end of a loopback TCP connection or an
//! in-memory duplex stream, and the owner through the `Handle`, and checks
//! the bytes on the wire and the events the owner hears. They pin what the
//! engine promises (ordering of pongs and owner data, the closing handshake
//! in both roles, keepalive, backpressure), whatever runs inside it.

use super::conn::{self, Cmd, Handle, Options, Setup, CLOSE_TIMEOUT};
use super::{Event, Sink};
use crate::proto::close;
use crate::proto::frame::{self, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::proto::mask::apply_mask;
use crate::proto::reader::Message;
use crate::proto::Role;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long a test waits for something that should come at once.
const PROMPT: Duration = Duration::from_secs(5);

struct Recorder(UnboundedSender<Event>);

impl Sink for Recorder {
    fn emit(&self, _: u64, event: Event) {
        let _ = self.0.send(event);
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(u64::MAX / 2);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The owner's side: its handle and the events it hears.
struct Owner {
    handle: Option<Handle>,
    events: UnboundedReceiver<Event>,
    role: Role,
}

impl Owner {
    fn handle(&self) -> &Handle {
        self.handle.as_ref().expect("handle")
    }

    async fn event(&mut self) -> Event {
        tokio::time::timeout(PROMPT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the sink is alive")
    }

    /// The next event, which must be a message; it is marked delivered.
    async fn message(&mut self) -> Message {
        match self.event().await {
            Event::Message(m) => {
                self.handle().delivered(conn::event_cost(&m));
                m
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.event().await {
                Event::Closed { code, reason } => return (code, reason),
                Event::Message(m) => self.handle().delivered(conn::event_cost(&m)),
                other => panic!("expected Closed, got {other:?}"),
            }
        }
    }

    /// A data frame as `send` encodes it (masked when we are the client).
    fn frame(&self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = (self.role == Role::Client).then_some([1, 2, 3, 4]);
        let mut out = Vec::new();
        frame::encode_frame(&mut out, true, opcode, mask, payload).unwrap();
        out
    }

    fn send_text(&self, payload: &[u8]) -> bool {
        self.handle().send_data(self.frame(OP_TEXT, payload))
    }
}

/// The peer's side of the wire.
struct Peer<S> {
    io: S,
    /// The peer's role: a client masks what it sends.
    role: Role,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    fn encode(&self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = (self.role == Role::Client).then_some([9, 8, 7, 6]);
        let mut out = Vec::new();
        frame::encode_frame(&mut out, true, opcode, mask, payload).unwrap();
        out
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let f = self.encode(opcode, payload);
        self.io.write_all(&f).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next whole frame from us: (fin, opcode, unmasked payload).
    /// Frames from a client must be masked, from a server must not.
    async fn frame_within(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((h, n)) = frame::parse_header(&self.buf).unwrap() {
                let end = n + h.payload_len as usize;
                if self.buf.len() >= end {
                    assert!(h.fin, "we never fragment control frames in these tests");
                    assert_eq!(
                        h.mask.is_some(),
                        self.role == Role::Server,
                        "a client masks, a server does not"
                    );
                    let mut payload = self.buf[n..end].to_vec();
                    if let Some(k) = h.mask {
                        apply_mask(&mut payload, k, 0);
                    }
                    self.buf.drain(..end);
                    return Some((h.opcode, payload));
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = match tokio::time::timeout(wait, self.io.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(r) => r.unwrap(),
            };
            assert!(n > 0, "the connection ended; unparsed: {:?}", self.buf);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn frame(&mut self) -> (u8, Vec<u8>) {
        self.frame_within(PROMPT).await.expect("a frame in time")
    }

    /// Our end of the stream (FIN), with nothing before it.
    async fn eof_within(&mut self, wait: Duration) -> bool {
        assert!(self.buf.is_empty(), "bytes before the end: {:?}", self.buf);
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(wait, self.io.read(&mut chunk)).await {
            Err(_) => false,
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!("bytes instead of the end: {:?}", &chunk[..n]),
        }
    }

    async fn eof(&mut self) {
        assert!(self.eof_within(PROMPT).await, "the end in time");
    }
}

fn options(role: Role, keepalive: Option<Duration>) -> Options {
    Options {
        role,
        keepalive,
        ping_payload: b"ka".to_vec(),
        deflate: None,
    }
}

fn setup(opts: Options) -> (Owner, Setup) {
    let id = next_id();
    let (handle, inbox) = conn::channel(id, 1 << 24);
    let (tx, events) = unbounded_channel();
    let role = opts.role;
    let setup = Setup {
        buffered: Vec::new(),
        preamble: Vec::new(),
        opts,
        id,
        sink: Arc::new(Recorder(tx)),
        inbox,
    };
    let owner = Owner {
        handle: Some(handle),
        events,
        role,
    };
    (owner, setup)
}

fn other(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(listener.accept(), TcpStream::connect(addr));
    (a.unwrap().0, b.unwrap())
}

/// A connection of `role` over loopback TCP (the direct-write path).
async fn start_tcp(
    role: Role,
    keepalive: Option<Duration>,
) -> (Owner, Peer<TcpStream>, tokio::task::JoinHandle<()>) {
    let (ours, theirs) = tcp_pair().await;
    let (owner, setup) = setup(options(role, keepalive));
    let task = tokio::spawn(conn::run_tcp(ours, setup));
    let peer = Peer {
        io: theirs,
        role: other(role),
        buf: Vec::new(),
    };
    (owner, peer, task)
}

/// A connection of `role` over an in-memory stream (the queued path).
fn start_stream(
    role: Role,
    keepalive: Option<Duration>,
) -> (
    Owner,
    Peer<tokio::io::DuplexStream>,
    tokio::task::JoinHandle<()>,
) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (owner, setup) = setup(options(role, keepalive));
    let task = tokio::spawn(conn::run_stream(ours, setup));
    let peer = Peer {
        io: theirs,
        role: other(role),
        buf: Vec::new(),
    };
    (owner, peer, task)
}

/// Waits (at most PROMPT) until the engine hands the socket to the owner's
/// direct writes.
async fn until_direct(handle: &std::sync::Mutex<Option<Handle>>) {
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        if let Some(h) = handle.lock().unwrap().as_ref() {
            if h.writes_directly() {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "direct writes within {PROMPT:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn finished(task: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(PROMPT, task)
        .await
        .expect("the connection's task ends")
        .unwrap();
}

#[tokio::test]
async fn echo_both_roles_both_transports() {
    for role in [Role::Server, Role::Client] {
        let (mut owner, mut peer, task) = start_tcp(role, None).await;
        peer.send(OP_TEXT, b"hello").await;
        assert_eq!(owner.message().await, Message::Text(b"hello".to_vec()));
        assert!(owner.send_text(b"hello back"));
        assert_eq!(peer.frame().await, (OP_TEXT, b"hello back".to_vec()));
        peer.send(OP_BINARY, &[0, 1, 2]).await;
        assert_eq!(owner.message().await, Message::Binary(vec![0, 1, 2]));
        task.abort();

        let (mut owner, mut peer, task) = start_stream(role, None);
        peer.send(OP_TEXT, b"hi").await;
        assert_eq!(owner.message().await, Message::Text(b"hi".to_vec()));
        assert!(owner.send_text(b"hi back"));
        assert_eq!(peer.frame().await, (OP_TEXT, b"hi back".to_vec()));
        task.abort();
    }
}

/// §5.5.2/§5.5.3: a ping is answered with a pong carrying its payload, and
/// the pong goes before what the owner sends after it heard the ping.
#[tokio::test]
async fn pong_precedes_owner_data_sent_after_the_ping() {
    for _ in 0..20 {
        let (mut owner, mut peer, task) = start_tcp(Role::Server, None).await;
        let mut burst = peer.encode(OP_PING, b"p1");
        burst.extend(peer.encode(OP_TEXT, b"after the ping"));
        peer.send_raw(&burst).await;
        assert_eq!(owner.message().await, Message::Ping(b"p1".to_vec()));
        assert_eq!(
            owner.message().await,
            Message::Text(b"after the ping".to_vec())
        );
        assert!(owner.send_text(b"answer"));
        assert_eq!(peer.frame().await, (OP_PONG, b"p1".to_vec()));
        assert_eq!(peer.frame().await, (OP_TEXT, b"answer".to_vec()));
        task.abort();
    }
}

/// A peer that pings and never reads cannot grow what we owe it: at most
/// MAX_PONGS_DUE (16) pongs, and the newest ping is among those answered.
#[tokio::test]
async fn pongs_due_are_bounded_and_the_newest_is_answered() {
    let (mut owner, mut peer, task) = start_stream(Role::Server, None);
    let mut burst = Vec::new();
    for i in 0..40 {
        burst.extend(peer.encode(OP_PING, format!("p{i}").as_bytes()));
    }
    peer.send_raw(&burst).await;
    for i in 0..40 {
        assert_eq!(
            owner.message().await,
            Message::Ping(format!("p{i}").into_bytes())
        );
    }
    assert!(owner.send_text(b"marker"));
    let mut pongs = Vec::new();
    loop {
        match peer.frame().await {
            (OP_PONG, p) => pongs.push(String::from_utf8(p).unwrap()),
            (OP_TEXT, p) => {
                assert_eq!(p, b"marker");
                break;
            }
            f => panic!("unexpected {f:?}"),
        }
    }
    assert!(!pongs.is_empty() && pongs.len() <= 16, "{pongs:?}");
    assert_eq!(pongs.last().unwrap(), "p39", "{pongs:?}");
    task.abort();
}

/// The peer closes: the owner hears its code and reason; what the owner
/// sends in answer to the messages before the close goes out before our
/// close frame, which echoes the peer's code; a server then ends TCP.
#[tokio::test]
async fn peer_close_is_answered_after_the_owners_replies() {
    let (mut owner, mut peer, task) = start_tcp(Role::Server, None).await;
    let mut burst = peer.encode(OP_TEXT, b"last words");
    burst.extend(peer.encode(OP_CLOSE, &close::build_close_payload(1000, "bye")));
    peer.send_raw(&burst).await;
    assert_eq!(owner.message().await, Message::Text(b"last words".to_vec()));
    assert!(owner.send_text(b"echo of last words"));
    assert_eq!(owner.closed().await, (1000, "bye".to_string()));
    // What the Tcl side does on Closed: it forgets the connection.
    owner.handle = None;
    assert_eq!(
        peer.frame().await,
        (OP_TEXT, b"echo of last words".to_vec())
    );
    assert_eq!(
        peer.frame().await,
        (OP_CLOSE, close::build_close_payload(1000, ""))
    );
    peer.eof().await;
    finished(task).await;
}

/// A close frame without a code is reported as 1005 and answered with an
/// empty close frame.
#[tokio::test]
async fn peer_close_without_code() {
    let (mut owner, mut peer, task) = start_tcp(Role::Server, None).await;
    peer.send(OP_CLOSE, &[]).await;
    assert_eq!(owner.closed().await.0, close::NO_STATUS);
    owner.handle = None;
    assert_eq!(peer.frame().await, (OP_CLOSE, Vec::new()));
    peer.eof().await;
    finished(task).await;
}

/// The close frame we owe waits for the owner (up to CLOSE_REPLY_DELAY,
/// one second), so that its answers to earlier messages go first.
#[tokio::test(start_paused = true)]
async fn peer_close_reply_waits_for_the_owner_then_goes_anyway() {
    let (mut owner, mut peer, task) = start_stream(Role::Server, None);
    peer.send(OP_CLOSE, &close::build_close_payload(1001, ""))
        .await;
    assert_eq!(owner.closed().await.0, 1001);
    let start = tokio::time::Instant::now();
    assert!(
        peer.frame_within(Duration::from_millis(900))
            .await
            .is_none(),
        "the reply waits for the owner"
    );
    assert!(owner.send_text(b"late answer"));
    assert_eq!(peer.frame().await, (OP_TEXT, b"late answer".to_vec()));
    assert_eq!(
        peer.frame().await,
        (OP_CLOSE, close::build_close_payload(1001, ""))
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(990) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    peer.eof().await;
    finished(task).await;
    drop(owner);
}

/// The owner closes: our close frame goes after everything it sent; the
/// peer's answer completes the handshake; a server then ends TCP at once.
#[tokio::test]
async fn owner_close_server() {
    let (mut owner, mut peer, task) = start_tcp(Role::Server, None).await;
    assert!(owner.send_text(b"before close"));
    assert!(owner
        .handle()
        .send(Cmd::Close(Some((1000, "done".to_string())))));
    assert_eq!(peer.frame().await, (OP_TEXT, b"before close".to_vec()));
    assert_eq!(
        peer.frame().await,
        (OP_CLOSE, close::build_close_payload(1000, "done"))
    );
    // Nothing is accepted once the close frame is out.
    assert!(!owner.send_text(b"too late"));
    peer.send(OP_CLOSE, &close::build_close_payload(1000, ""))
        .await;
    assert_eq!(owner.closed().await.0, 1000);
    peer.eof().await;
    finished(task).await;
}

/// A client waits for the server to end TCP first (§7.1.1), then ends it.
#[tokio::test]
async fn owner_close_client_waits_for_the_servers_fin() {
    let (mut owner, mut peer, task) = start_stream(Role::Client, None);
    assert!(owner.handle().send(Cmd::Close(Some((1000, String::new())))));
    assert_eq!(
        peer.frame().await,
        (OP_CLOSE, close::build_close_payload(1000, ""))
    );
    peer.send(OP_CLOSE, &close::build_close_payload(1000, ""))
        .await;
    assert_eq!(owner.closed().await.0, 1000);
    assert!(
        !peer.eof_within(Duration::from_millis(200)).await,
        "the client does not end TCP before the server"
    );
    peer.io.shutdown().await.unwrap();
    peer.eof().await;
    finished(task).await;
}

/// A peer that never answers our close frame: TCP ends after CLOSE_TIMEOUT.
#[tokio::test(start_paused = true)]
async fn owner_close_unanswered_times_out() {
    for role in [Role::Server, Role::Client] {
        let (mut owner, mut peer, task) = start_stream(role, None);
        assert!(owner.handle().send(Cmd::Close(Some((1000, String::new())))));
        assert_eq!(peer.frame().await.0, OP_CLOSE);
        let start = tokio::time::Instant::now();
        peer.eof_within(CLOSE_TIMEOUT * 2).await;
        let waited = start.elapsed();
        assert!(
            waited >= CLOSE_TIMEOUT - Duration::from_millis(10)
                && waited < CLOSE_TIMEOUT + Duration::from_millis(500),
            "{role:?}: {waited:?}"
        );
        finished(task).await;
        owner.handle = None;
    }
}

/// A client whose close was answered waits at most CLOSE_TIMEOUT for the
/// server's FIN, then ends TCP itself.
#[tokio::test(start_paused = true)]
async fn client_gives_up_waiting_for_the_servers_fin() {
    let (mut owner, mut peer, task) = start_stream(Role::Client, None);
    assert!(owner.handle().send(Cmd::Close(Some((1000, String::new())))));
    assert_eq!(peer.frame().await.0, OP_CLOSE);
    peer.send(OP_CLOSE, &close::build_close_payload(1000, ""))
        .await;
    assert_eq!(owner.closed().await.0, 1000);
    let start = tokio::time::Instant::now();
    assert!(peer.eof_within(CLOSE_TIMEOUT * 2).await);
    let waited = start.elapsed();
    assert!(
        waited >= CLOSE_TIMEOUT - Duration::from_millis(10)
            && waited < CLOSE_TIMEOUT + Duration::from_millis(500),
        "{waited:?}"
    );
    finished(task).await;
}

/// A peer breaking the protocol hears our close frame with the RFC's code,
/// and the owner hears the same code.
#[tokio::test]
async fn violations_close_with_the_rfc_code() {
    // An unmasked frame to a server: 1002.
    let mut unmasked = Vec::new();
    frame::encode_frame(&mut unmasked, true, OP_TEXT, None, b"x").unwrap();
    violation_closes(Role::Server, unmasked, close::PROTOCOL_ERROR).await;
    // Text that is not UTF-8: 1007 (the peer is a client: masked).
    let mut bad_text = Vec::new();
    frame::encode_frame(
        &mut bad_text,
        true,
        OP_TEXT,
        Some([9, 8, 7, 6]),
        &[0xff, 0xfe],
    )
    .unwrap();
    violation_closes(Role::Server, bad_text, close::INVALID_DATA).await;
    // A ping over 125 bytes to a client: 1002.
    let mut big_ping = vec![0x89, 126, 0, 126];
    big_ping.extend([0u8; 126]);
    violation_closes(Role::Client, big_ping, close::PROTOCOL_ERROR).await;
}

/// `bytes` from the peer make a connection in `role` close with `code`:
/// the owner hears it, the peer gets a close frame with it, then the end.
async fn violation_closes(role: Role, bytes: Vec<u8>, code: u16) {
    let (mut owner, mut peer, task) = start_tcp(role, None).await;
    peer.send_raw(&bytes).await;
    assert_eq!(owner.closed().await.0, code);
    owner.handle = None;
    let (op, payload) = peer.frame().await;
    assert_eq!(op, OP_CLOSE);
    assert_eq!(&payload[..2], &code.to_be_bytes());
    if role == Role::Client {
        // A client waits for the server's FIN.
        peer.io.shutdown().await.unwrap();
    }
    peer.eof().await;
    finished(task).await;
}

/// The peer's stream ends without a close frame: 1006, and we end too.
#[tokio::test]
async fn eof_without_close_is_abnormal() {
    for role in [Role::Server, Role::Client] {
        let (mut owner, mut peer, task) = start_tcp(role, None).await;
        peer.send(OP_TEXT, b"x").await;
        assert_eq!(owner.message().await, Message::Text(b"x".to_vec()));
        peer.io.shutdown().await.unwrap();
        assert_eq!(owner.closed().await.0, close::ABNORMAL);
        peer.eof().await;
        finished(task).await;
    }
}

/// Keepalive: a ping after the set silence, none while traffic flows.
#[tokio::test]
async fn keepalive_pings_only_when_idle() {
    let k = Duration::from_millis(300);
    let (mut owner, mut peer, task) = start_tcp(Role::Server, Some(k)).await;
    let start = std::time::Instant::now();
    assert_eq!(peer.frame().await, (OP_PING, b"ka".to_vec()));
    let waited = start.elapsed();
    assert!(waited >= k - Duration::from_millis(20), "{waited:?}");
    // Traffic from the peer every 100 ms: no ping for 900 ms.
    for i in 0..9 {
        peer.send(OP_TEXT, format!("{i}").as_bytes()).await;
        assert!(owner.message().await == Message::Text(format!("{i}").into_bytes()));
        assert!(peer
            .frame_within(Duration::from_millis(100))
            .await
            .is_none());
    }
    // Traffic from the owner (direct writes) counts too.
    for i in 0..9 {
        assert!(owner.send_text(format!("{i}").as_bytes()));
        assert_eq!(peer.frame().await.0, OP_TEXT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer.frame().await, (OP_PING, b"ka".to_vec()));
    // New settings apply: no more pings.
    assert!(owner.handle().send(Cmd::Keepalive(None, Vec::new())));
    assert!(peer.frame_within(k * 3).await.is_none());
    task.abort();
}

/// Backpressure: the reader stops once 1 MiB waits for the owner, and
/// goes on once the owner has handled it.
#[tokio::test]
async fn reader_pauses_while_the_owner_lags() {
    let (mut owner, peer, task) = start_tcp(Role::Server, None).await;
    let msg = vec![b'a'; 64 * 1024];
    let n = 64; // 4 MiB in all
    let Peer { io, role, .. } = peer;
    let frames: Vec<u8> = {
        let p = Peer {
            io: tokio::io::empty(),
            role,
            buf: Vec::new(),
        };
        let mut all = Vec::new();
        for _ in 0..n {
            all.extend(p.encode(OP_BINARY, &msg));
        }
        all
    };
    let (mut rd, mut wr) = io.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&frames).await.unwrap();
        wr
    });
    // Take events without marking them delivered until they stop coming.
    let mut got = Vec::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_millis(300), owner.events.recv()).await
    {
        got.push(e);
    }
    let undelivered: usize = got
        .iter()
        .map(|e| match e {
            Event::Message(m) => conn::event_cost(m),
            _ => 0,
        })
        .sum();
    assert!(!got.is_empty());
    assert!(got.len() < n, "the reader paused ({} of {n})", got.len());
    assert!(
        undelivered <= (1 << 20) + 512 * 1024,
        "{undelivered} bytes waiting"
    );
    for e in &got {
        if let Event::Message(m) = e {
            owner.handle().delivered(conn::event_cost(m));
        }
    }
    for _ in got.len()..n {
        assert_eq!(owner.message().await, Message::Binary(msg.clone()));
    }
    let _wr = writer.await.unwrap();
    let mut none = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(50), rd.read(&mut none))
            .await
            .is_err(),
        "nothing was sent back"
    );
    task.abort();
}

/// The owner going away (its handle dropped) closes with 1001.
#[tokio::test]
async fn dropped_handle_closes_with_going_away() {
    for role in [Role::Server, Role::Client] {
        let (mut owner, mut peer, task) = start_tcp(role, None).await;
        owner.handle = None;
        assert_eq!(
            peer.frame().await,
            (OP_CLOSE, close::build_close_payload(close::GOING_AWAY, ""))
        );
        peer.send(OP_CLOSE, &close::build_close_payload(close::GOING_AWAY, ""))
            .await;
        if role == Role::Client {
            peer.io.shutdown().await.unwrap();
        }
        peer.eof().await;
        finished(task).await;
    }
}

/// The preamble (a 101 answer) and bytes that came with the handshake are
/// handled before anything else.
#[tokio::test]
async fn preamble_and_buffered_input_come_first() {
    let (ours, theirs) = tcp_pair().await;
    let (mut owner, mut s) = setup(options(Role::Server, None));
    let mut peer = Peer {
        io: theirs,
        role: Role::Client,
        buf: Vec::new(),
    };
    s.preamble = b"HTTP/1.1 101 ok\r\n\r\n".to_vec();
    s.buffered = peer.encode(OP_PING, b"early");
    // The owner's first send may come before the task even ran.
    assert!(owner.send_text(b"first"));
    let task = tokio::spawn(conn::run_tcp(ours, s));
    let mut head = [0u8; 19];
    peer.io.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101 ok\r\n\r\n");
    let mut frames = vec![peer.frame().await, peer.frame().await];
    frames.sort();
    assert_eq!(
        frames,
        vec![(OP_TEXT, b"first".to_vec()), (OP_PONG, b"early".to_vec())]
    );
    assert_eq!(owner.message().await, Message::Ping(b"early".to_vec()));
    task.abort();
}

/// Shrinks a socket's send buffer so that a large write is taken in part.
fn small_send_buffer(s: &TcpStream) {
    let sock = socket2_like::SockRef(s);
    sock.set_send_buffer(4096);
}

mod socket2_like {
    use std::os::fd::AsRawFd;
    pub struct SockRef<'a>(pub &'a tokio::net::TcpStream);
    impl SockRef<'_> {
        pub fn set_send_buffer(&self, n: libc::c_int) {
            let fd = self.0.as_raw_fd();
            // SAFETY: a valid fd and a c_int option value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    &n as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0);
        }
    }
}

/// An owner's direct write that the socket takes only in part leaves the
/// rest of its frame to the engine; a pong falling due meanwhile must not
/// go inside that frame (`Direct::partial`). Which of the ping and the rest
/// the engine sees first is up to the scheduler, so this checks only that
/// the stream stays whole, in many rounds; the ordering rule itself is a
/// deterministic unit test of the protocol core.
#[tokio::test(flavor = "current_thread")]
async fn pong_never_inside_a_partly_written_frame() {
    for round in 0..12 {
        let (ours, theirs) = tcp_pair().await;
        small_send_buffer(&ours);
        let (mut owner, s) = setup(options(Role::Server, None));
        let task = tokio::spawn(conn::run_tcp(ours, s));
        let mut peer = Peer {
            io: theirs,
            role: Role::Client,
            buf: Vec::new(),
        };
        // Let the engine hand the socket to the owner's direct writes.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The ping reaches our socket before the engine runs again (a
        // write to a loopback socket with room completes without yielding).
        peer.send(OP_PING, format!("r{round}").as_bytes()).await;
        let big = vec![b'z'; 1 << 20];
        let f = owner.frame(OP_BINARY, &big);
        assert!(owner.handle().send_data(f));
        assert!(owner.send_text(b"after"));
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(peer.frame().await);
        }
        let ops: Vec<u8> = got.iter().map(|f| f.0).collect();
        // Whole frames (the parse above), the owner's in their order; the
        // pong anywhere: the owner sent both before it heard the ping.
        let data: Vec<u8> = ops.iter().copied().filter(|&o| o != OP_PONG).collect();
        assert_eq!(data, [OP_BINARY, OP_TEXT], "round {round}: {ops:?}");
        for (op, p) in &got {
            match *op {
                OP_BINARY => assert_eq!(p.len(), 1 << 20),
                OP_PONG => assert_eq!(p, format!("r{round}").as_bytes()),
                _ => assert_eq!(p, b"after"),
            }
        }
        assert_eq!(
            owner.message().await,
            Message::Ping(format!("r{round}").into_bytes())
        );
        task.abort();
    }
}

/// Over a stream transport (TLS, Tcl channel) every write is queued; many
/// of them keep their order and all arrive.
#[tokio::test]
async fn queued_writes_keep_their_order() {
    let (owner, mut peer, task) = start_stream(Role::Client, None);
    for i in 0..2000 {
        assert!(owner.send_text(format!("m{i}").as_bytes()));
    }
    for i in 0..2000 {
        assert_eq!(peer.frame().await, (OP_TEXT, format!("m{i}").into_bytes()));
    }
    assert_eq!(owner.handle().queued(), 0);
    task.abort();
}

/// An owner that answers a ping while it is being reported (in the sink,
/// on the engine's thread): the writer cannot have written the pong yet, so
/// only the rule "the owner's data waits while a pong is due" puts the pong
/// first. Deterministic, unlike a race between threads.
#[tokio::test]
async fn pong_precedes_an_answer_given_during_the_report() {
    struct Answering {
        handle: std::sync::Mutex<Option<Handle>>,
        answer: Vec<u8>,
    }
    impl Sink for Answering {
        fn emit(&self, _: u64, event: Event) {
            if let Event::Message(Message::Ping(_)) = event {
                if let Some(h) = self.handle.lock().unwrap().as_ref() {
                    assert!(h.send_data(self.answer.clone()));
                }
            }
        }
    }
    let (ours, theirs) = tcp_pair().await;
    let (mut owner, mut s) = setup(options(Role::Server, None));
    let sink = Arc::new(Answering {
        handle: std::sync::Mutex::new(owner.handle.take()),
        answer: owner.frame(OP_TEXT, b"answer"),
    });
    s.sink = sink.clone();
    let task = tokio::spawn(conn::run_tcp(ours, s));
    let mut peer = Peer {
        io: theirs,
        role: Role::Client,
        buf: Vec::new(),
    };
    for i in 0..5 {
        until_direct(&sink.handle).await;
        peer.send(OP_PING, format!("p{i}").as_bytes()).await;
        assert_eq!(peer.frame().await, (OP_PONG, format!("p{i}").into_bytes()));
        assert_eq!(peer.frame().await, (OP_TEXT, b"answer".to_vec()));
    }
    task.abort();
    let _ = task.await;
    sink.handle.lock().unwrap().take();
}

/// The deterministic form of the rule above: the owner answers a text
/// message (in the sink, on the engine's thread) with a frame the socket
/// takes only in part; a ping in the same read follows it. The pong falls
/// due before the writer has run, with the owner's frame unfinished: the
/// frame's rest must go first.
#[tokio::test]
async fn pong_after_the_rest_of_a_frame_begun_during_the_report() {
    struct Answering {
        handle: std::sync::Mutex<Option<Handle>>,
        answer: Vec<u8>,
    }
    impl Sink for Answering {
        fn emit(&self, _: u64, event: Event) {
            if let Event::Message(Message::Text(_)) = event {
                if let Some(h) = self.handle.lock().unwrap().as_ref() {
                    assert!(h.send_data(self.answer.clone()));
                }
            }
        }
    }
    for round in 0..3 {
        let (ours, theirs) = tcp_pair().await;
        small_send_buffer(&ours);
        let (mut owner, mut s) = setup(options(Role::Server, None));
        let big = vec![b'z'; 2 << 20];
        let sink = Arc::new(Answering {
            handle: std::sync::Mutex::new(owner.handle.take()),
            answer: owner.frame(OP_BINARY, &big),
        });
        s.sink = sink.clone();
        let task = tokio::spawn(conn::run_tcp(ours, s));
        let mut peer = Peer {
            io: theirs,
            role: Role::Client,
            buf: Vec::new(),
        };
        until_direct(&sink.handle).await;
        let mut burst = peer.encode(OP_TEXT, b"go");
        burst.extend(peer.encode(OP_PING, format!("r{round}").as_bytes()));
        peer.send_raw(&burst).await;
        let (op, payload) = peer.frame().await;
        assert_eq!((op, payload.len()), (OP_BINARY, big.len()), "round {round}");
        assert_eq!(
            peer.frame().await,
            (OP_PONG, format!("r{round}").into_bytes())
        );
        task.abort();
        let _ = task.await;
        sink.handle.lock().unwrap().take();
    }
}
