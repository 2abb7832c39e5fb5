//! One WebSocket connection after the opening handshake, as a state machine
//! without I/O (in the spirit of wsproto's `Connection` and quinn-proto):
//! bytes in → events out, the owner's orders in → frames out, and time as
//! data (`poll_timeout` / `handle_timeout(now)`). It owns the closing
//! handshake (RFC 6455 §5.5.1, §7), the pongs owed (§5.5.2, §5.5.3) and
//! keepalive pings.
//!
//! Its driver (the engine) moves bytes between it and the transport and
//! calls it back when time passes. The owner's data frames do not pass
//! through it: they are encoded elsewhere and, where the transport allows,
//! written straight to the socket by the owner's thread. The connection
//! only decides what the owner's data must wait for, through `poll_transmit`:
//!
//! - a pong goes out before anything the owner queued after the ping was
//!   reported to it (`Event::ControlDue` comes before the ping itself);
//! - a frame of ours never goes inside an owner's frame that a write left
//!   unfinished: the frame's rest goes first (`Transmit::OwnerFrameRest`);
//! - our close frame goes after all the owner's data accepted before it,
//!   and nothing follows it.
//!
//! Negotiated extensions belong here too: permessage-deflate, once
//! negotiated, comes in through `set_deflate` and gives `MessageReader` its
//! inflater (the compressor is the owner's: messages are compressed where
//! they are sent).

use super::close::{self, CloseFrame, Violation};
use super::frame;
use super::mask::MaskKeys;
use super::reader::{Message, MessageReader};
use super::Role;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long we wait for the peer's part of the closing handshake, and then
/// for the end of its stream.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the close frame we owe the peer waits for the owner to finish
/// handling what arrived before it (its answers must go out first).
pub const CLOSE_REPLY_DELAY: Duration = Duration::from_secs(1);
/// Pongs owed at most. Past this the newest ping's payload replaces the
/// last one owed (§5.5.3 allows answering only the latest), so a peer that
/// pings and never reads cannot grow what we keep for it.
pub const MAX_PONGS_DUE: usize = 16;

/// What a connection starts with.
#[derive(Clone, Debug)]
pub struct Config {
    pub role: Role,
    /// Largest data message accepted (sum of its fragments).
    pub max_message: usize,
    /// Ping after this much silence; None: never.
    pub keepalive: Option<Duration>,
    /// The keepalive ping's payload (an empty ping goes if it is over 125 bytes).
    pub ping_payload: Vec<u8>,
}

/// What reading the peer's bytes yields, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A frame of ours fell due (a pong): the owner's data written from now
    /// on must wait for `poll_transmit`. Comes before the message that
    /// caused it, so that the owner's answers to it (and to anything after
    /// it) queue behind the pong.
    ControlDue,
    /// A complete text, binary, ping or pong message for the owner.
    Message(Message),
    /// The connection is over for the owner: the peer's close frame (1005
    /// when it had no code), a violation we close for, or 1006 when the
    /// stream ended without a closing handshake. At most once; the output
    /// side may still have frames to write.
    Closed { code: u16, reason: String },
}

/// What to do with the peer's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Parse them (`receive`).
    Messages,
    /// Read and drop them until the stream ends: the peer closed, its FIN
    /// is what we wait for.
    Discard,
    /// Read no more: the stream ended or the peer broke the protocol.
    Stop,
}

/// The owner's data waiting in the driver, as `poll_transmit` needs to know it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerOutput {
    /// A write of the owner's ended inside a frame; its rest is the first
    /// of the queued data.
    pub mid_frame: bool,
    /// The owner has data queued (accepted, not yet written).
    pub queued: bool,
}

/// The next thing to put on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Write the rest of the owner's unfinished frame (the first piece of
    /// its queued data), before anything of ours.
    OwnerFrameRest,
    /// Write the owner's queued data.
    OwnerData,
    /// Write this control frame (pong or ping).
    Control(Vec<u8>),
    /// Write this close frame. From now on the owner's data is refused.
    Close(Vec<u8>),
    /// End our direction of the transport (TCP FIN).
    Shutdown,
    /// Nothing until input, an order, or `poll_timeout`.
    Idle,
    /// The connection is over: drop the transport.
    Finished,
}

/// Where the connection stands, in the RFC's terms (§7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Neither side has closed.
    Open,
    /// The peer closed (or broke the protocol); our close frame is owed.
    ClosingByPeer,
    /// We closed (our close frame is out, or waits for the owner's data)
    /// and wait for the peer's.
    ClosingByUs,
    /// The closing handshake is over (or was given up); the transport ends.
    Closed,
}

/// Where the closing handshake stands (RFC 6455 §7.1), with what each
/// state needs.
#[derive(Debug, PartialEq, Eq)]
enum Closing {
    /// Neither side has closed.
    Open,
    /// The peer sent its close frame or broke the protocol: we owe our
    /// close frame, after the owner's data (`due` once the owner is done or
    /// `reply_by` passed).
    ByPeer {
        reply: Vec<u8>,
        reply_by: Instant,
        due: bool,
    },
    /// The owner closed: our close frame goes once the owner's queued data
    /// is out (`sent_at` then), and we wait for the peer's.
    ByUs {
        payload: Vec<u8>,
        sent_at: Option<Instant>,
        /// The peer's close frame came before ours went.
        peer_closed: bool,
    },
    /// The close frames are done (or waiting for them was given up): the
    /// transport ends. A server ends TCP first (§7.1.1); a client waits for
    /// the server's FIN until `deadline`, then ends it too.
    Closed {
        deadline: Instant,
        timed_out: bool,
        shut: bool,
    },
    /// Nothing more to do.
    Finished,
}

/// A WebSocket connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// The reading side: frames to messages (an inflater joins it with
    /// permessage-deflate).
    reader: MessageReader,
    reading: Reading,
    closing: Closing,
    /// Payloads of the pings not answered yet, oldest first.
    pongs: VecDeque<Vec<u8>>,
    keepalive: Option<Duration>,
    ping_payload: Vec<u8>,
    ping_due: bool,
    last_activity: Instant,
    /// `Event::Closed` was given.
    reported: bool,
    /// Mask keys for a client's frames, made on first use.
    keys: Option<MaskKeys>,
}

impl Connection {
    pub fn new(config: Config, now: Instant) -> Connection {
        Connection {
            role: config.role,
            reader: MessageReader::new(config.role, config.max_message),
            reading: Reading::Messages,
            closing: Closing::Open,
            pongs: VecDeque::new(),
            keepalive: config.keepalive,
            ping_payload: config.ping_payload,
            ping_due: false,
            last_activity: now,
            reported: false,
            keys: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// permessage-deflate was negotiated: compressed messages are inflated.
    pub fn set_deflate(&mut self, d: crate::proto::deflate::PerMessageDeflate) {
        self.reader.set_deflate(d);
    }

    pub fn state(&self) -> State {
        match self.closing {
            Closing::Open => State::Open,
            Closing::ByPeer { .. } => State::ClosingByPeer,
            Closing::ByUs { .. } => State::ClosingByUs,
            Closing::Closed { .. } | Closing::Finished => State::Closed,
        }
    }

    // ----------------------------------------------------------- reading

    pub fn reading(&self) -> Reading {
        self.reading
    }

    pub fn set_max_message(&mut self, n: usize) {
        if n != self.reader.max_message_size() {
            self.reader.set_max_message_size(n);
        }
    }

    /// Takes bytes from the peer (unmasked in place); reports what they
    /// complete through `on`, in order.
    pub fn receive(&mut self, data: &mut [u8], now: Instant, on: &mut impl FnMut(Event)) {
        self.traffic(now);
        if self.reading != Reading::Messages {
            return;
        }
        let mut pos = 0;
        loop {
            match self.reader.read(&mut data[pos..]) {
                Ok((n, msg)) => {
                    pos += n;
                    match msg {
                        Some(Message::Close(frame)) => return self.peer_closed(frame, now, on),
                        Some(Message::Ping(p)) => {
                            if self.owe_pong(&p) {
                                on(Event::ControlDue);
                            }
                            on(Event::Message(Message::Ping(p)));
                        }
                        Some(m) => on(Event::Message(m)),
                        None if n == 0 || pos == data.len() => return,
                        None => {}
                    }
                }
                Err(v) => return self.fail(v, now, on),
            }
        }
    }

    /// For receiving a large payload straight into the message buffer: how
    /// many bytes may be appended to `payload_buffer` (0: use `receive`).
    pub fn payload_room(&self, min: usize) -> usize {
        match self.reading {
            Reading::Messages => self.reader.payload_room(min),
            _ => 0,
        }
    }

    pub fn payload_buffer(&mut self) -> &mut Vec<u8> {
        self.reader.payload_buffer()
    }

    /// `n` bytes were appended to `payload_buffer` (at most `payload_room`).
    pub fn payload_appended(&mut self, n: usize, now: Instant, on: &mut impl FnMut(Event)) {
        self.traffic(now);
        match self.reader.payload_appended(n) {
            Ok(Some(m)) => on(Event::Message(m)),
            Ok(None) => {}
            Err(v) => self.fail(v, now, on),
        }
    }

    /// The peer's stream ended (or could not be read).
    pub fn receive_eof(&mut self, now: Instant, on: &mut impl FnMut(Event)) {
        self.reading = Reading::Stop;
        self.report(close::ABNORMAL, abnormal_reason(), on);
        match self.closing {
            Closing::Open
            | Closing::ByUs {
                sent_at: Some(_), ..
            } => self.closed(now, true),
            // The close frame we owe (or the owner's) still goes; then the
            // transport ends at once (see `Closed`).
            Closing::ByPeer { .. } | Closing::ByUs { sent_at: None, .. } => {}
            Closing::Closed { .. } | Closing::Finished => {}
        }
    }

    /// Writing to the transport failed: nothing more can be done.
    pub fn transport_failed(&mut self, on: &mut impl FnMut(Event)) {
        self.report(close::ABNORMAL, abnormal_reason(), on);
        self.reading = Reading::Stop;
        self.closing = Closing::Finished;
    }

    fn owe_pong(&mut self, payload: &[u8]) -> bool {
        if self.close_sent() {
            // Nothing may follow our close frame (§5.5.1).
            return false;
        }
        if self.pongs.len() == MAX_PONGS_DUE {
            self.pongs.pop_back();
        }
        self.pongs.push_back(payload.to_vec());
        true
    }

    fn peer_closed(&mut self, frame: Option<CloseFrame>, now: Instant, on: &mut impl FnMut(Event)) {
        // Keep reading until the stream ends, so that the peer's FIN is seen.
        self.reading = Reading::Discard;
        let (code, reason, reply) = match frame {
            Some(CloseFrame { code, reason }) => {
                (code, reason, close::build_close_payload(code, ""))
            }
            None => (close::NO_STATUS, String::new(), Vec::new()),
        };
        self.report(code, reason, on);
        self.peer_done(reply, now, false);
    }

    /// The peer broke the protocol: the owner hears the code, the peer gets
    /// a close frame with it, and nothing more is read.
    fn fail(&mut self, v: Violation, now: Instant, on: &mut impl FnMut(Event)) {
        self.reading = Reading::Stop;
        let reason = close::default_reason(v.code).unwrap_or(v.reason);
        self.report(v.code, reason.to_string(), on);
        self.peer_done(close::build_close_payload(v.code, v.reason), now, true);
    }

    /// The peer's part of the closing handshake is over (its close frame,
    /// or a violation, `failed`): we answer with `reply` if we have not
    /// closed; if our close frame went out already, the connection is
    /// closed (at once after a violation).
    fn peer_done(&mut self, reply: Vec<u8>, now: Instant, failed: bool) {
        match &mut self.closing {
            Closing::Open => {
                self.closing = Closing::ByPeer {
                    reply,
                    reply_by: now + CLOSE_REPLY_DELAY,
                    due: false,
                }
            }
            Closing::ByUs {
                sent_at: Some(_), ..
            } => self.closed(now, failed),
            // Our close frame still goes (after the owner's data).
            Closing::ByUs { peer_closed, .. } => *peer_closed = true,
            Closing::ByPeer { .. } | Closing::Closed { .. } | Closing::Finished => {}
        }
    }

    fn report(&mut self, code: u16, reason: String, on: &mut impl FnMut(Event)) {
        if !self.reported {
            self.reported = true;
            on(Event::Closed { code, reason });
        }
    }

    // ------------------------------------------------------ owner's orders

    /// The owner closes with this close payload (code and reason, or empty).
    /// After the peer's close it replaces the reply we owe, which goes now.
    pub fn close(&mut self, payload: Vec<u8>) {
        match &mut self.closing {
            Closing::Open => {
                self.closing = Closing::ByUs {
                    payload,
                    sent_at: None,
                    peer_closed: false,
                }
            }
            Closing::ByPeer { reply, due, .. } => {
                *reply = payload;
                *due = true;
            }
            _ => {}
        }
    }

    /// The owner is gone (its handle dropped): a connection still open
    /// closes with 1001 (going away); a reply we owe goes now.
    pub fn owner_gone(&mut self) {
        match &mut self.closing {
            Closing::Open => self.close(close::build_close_payload(close::GOING_AWAY, "")),
            Closing::ByPeer { due, .. } => *due = true,
            _ => {}
        }
    }

    pub fn set_keepalive(&mut self, keepalive: Option<Duration>, ping_payload: Vec<u8>) {
        self.keepalive = keepalive;
        self.ping_payload = ping_payload;
        if keepalive.is_none() {
            self.ping_due = false;
        }
    }

    /// Traffic at `at` (either way): the keepalive ping waits for silence.
    pub fn traffic(&mut self, at: Instant) {
        if at > self.last_activity {
            self.last_activity = at;
        }
    }

    /// Whether the owner's data is still accepted (our close frame has not
    /// gone and the connection has not ended).
    pub fn accepts_data(&self) -> bool {
        matches!(
            self.closing,
            Closing::Open | Closing::ByPeer { .. } | Closing::ByUs { sent_at: None, .. }
        )
    }

    /// Whether the owner may write to the transport itself now: its data is
    /// accepted and nothing of ours is due before it.
    pub fn owner_may_write(&self) -> bool {
        self.accepts_data() && !self.ours_due()
    }

    fn close_sent(&self) -> bool {
        !self.accepts_data()
    }

    fn close_due(&self) -> bool {
        matches!(
            self.closing,
            Closing::ByPeer { due: true, .. } | Closing::ByUs { sent_at: None, .. }
        )
    }

    fn ours_due(&self) -> bool {
        !self.pongs.is_empty() || self.ping_due || self.close_due()
    }

    // ------------------------------------------------------------ output

    /// The next thing to write, given the owner's data waiting in the driver.
    pub fn poll_transmit(&mut self, now: Instant, owner: OwnerOutput) -> Transmit {
        if self.closing == Closing::Finished {
            return Transmit::Finished;
        }
        if self.ours_due() && owner.mid_frame {
            return Transmit::OwnerFrameRest;
        }
        if let Some(p) = self.pongs.pop_front() {
            // The reader takes no ping over 125 bytes: a pong always encodes.
            return Transmit::Control(self.frame(frame::OP_PONG, &p));
        }
        if self.ping_due {
            self.ping_due = false;
            self.last_activity = now;
            // `configure` takes no -ping text over 125 bytes; an empty ping
            // goes instead of one that would not encode.
            let payload = std::mem::take(&mut self.ping_payload);
            let f = if payload.len() as u64 <= frame::MAX_CONTROL_PAYLOAD {
                self.frame(frame::OP_PING, &payload)
            } else {
                self.frame(frame::OP_PING, &[])
            };
            self.ping_payload = payload;
            return Transmit::Control(f);
        }
        if self.close_due() {
            if owner.queued {
                // Everything `send` accepted goes before our close frame.
                return Transmit::OwnerData;
            }
            return self.send_close(now);
        }
        if owner.queued {
            return Transmit::OwnerData;
        }
        if let Closing::Closed {
            timed_out,
            shut,
            deadline: _,
        } = &mut self.closing
        {
            let input_ended = self.reading == Reading::Stop;
            if !*shut {
                if self.role == Role::Server || input_ended || *timed_out {
                    *shut = true;
                    return Transmit::Shutdown;
                }
            } else if input_ended || *timed_out {
                self.closing = Closing::Finished;
                return Transmit::Finished;
            }
        }
        Transmit::Idle
    }

    fn send_close(&mut self, now: Instant) -> Transmit {
        let (payload, waits_for_peer) = match &mut self.closing {
            Closing::ByPeer { reply, .. } => (std::mem::take(reply), false),
            Closing::ByUs {
                payload,
                peer_closed,
                ..
            } => (std::mem::take(payload), !*peer_closed),
            _ => unreachable!("send_close only when a close frame is due"),
        };
        // Close payloads are built to fit (close::build_close_payload); one
        // that did not would go as a close frame without a code.
        let f = if payload.len() as u64 <= frame::MAX_CONTROL_PAYLOAD {
            self.frame(frame::OP_CLOSE, &payload)
        } else {
            self.frame(frame::OP_CLOSE, &[])
        };
        self.pongs.clear();
        self.ping_due = false;
        if waits_for_peer && self.reading == Reading::Messages {
            self.closing = Closing::ByUs {
                payload: Vec::new(),
                sent_at: Some(now),
                peer_closed: false,
            };
        } else {
            self.closed(now, false);
        }
        Transmit::Close(f)
    }

    /// Both close frames are done (or waiting was given up: `given_up`).
    fn closed(&mut self, now: Instant, given_up: bool) {
        self.closing = Closing::Closed {
            deadline: now
                + if given_up {
                    Duration::ZERO
                } else {
                    CLOSE_TIMEOUT
                },
            timed_out: given_up,
            shut: false,
        };
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = match self.role {
            Role::Client => Some(self.keys.get_or_insert_with(MaskKeys::new).next_key()),
            Role::Server => None,
        };
        let mut out = Vec::with_capacity(payload.len() + frame::MAX_HEADER_LEN);
        // Callers pass at most 125 bytes: a control frame always encodes.
        let _ = frame::encode_frame(&mut out, true, opcode, mask, payload);
        out
    }

    // -------------------------------------------------------------- time

    /// When `handle_timeout` must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.closing {
            Closing::Open if !self.ping_due => self.keepalive.map(|k| self.last_activity + k),
            Closing::Open => None,
            Closing::ByPeer {
                due: false,
                reply_by,
                ..
            } => Some(*reply_by),
            Closing::ByUs {
                sent_at: Some(t), ..
            } => Some(*t + CLOSE_TIMEOUT),
            Closing::Closed {
                deadline,
                timed_out: false,
                ..
            } => Some(*deadline),
            _ => None,
        }
    }

    /// Time has come to `now`: a keepalive ping may fall due, the reply we
    /// owe may have waited long enough, the peer may have taken too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.closing {
            Closing::Open => {
                if let Some(k) = self.keepalive {
                    if now >= self.last_activity + k {
                        self.ping_due = true;
                    }
                }
            }
            Closing::ByPeer { reply_by, due, .. } => {
                if now >= *reply_by {
                    *due = true;
                }
            }
            Closing::ByUs {
                sent_at: Some(t), ..
            } => {
                if now >= *t + CLOSE_TIMEOUT {
                    // The peer did not answer: TCP ends now, in both roles.
                    self.closed(now, true);
                }
            }
            Closing::Closed {
                deadline,
                timed_out,
                ..
            } => {
                if now >= *deadline {
                    *timed_out = true;
                }
            }
            Closing::ByUs { sent_at: None, .. } | Closing::Finished => {}
        }
    }
}

fn abnormal_reason() -> String {
    close::default_reason(close::ABNORMAL)
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

    const IDLE: OwnerOutput = OwnerOutput {
        mid_frame: false,
        queued: false,
    };
    const QUEUED: OwnerOutput = OwnerOutput {
        mid_frame: false,
        queued: true,
    };
    const MID_FRAME: OwnerOutput = OwnerOutput {
        mid_frame: true,
        queued: true,
    };

    struct T {
        c: Connection,
        t0: Instant,
        events: Vec<Event>,
    }

    /// A frame as a client peer sends it (masked).
    fn from_client(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_frame(&mut out, true, opcode, Some([1, 2, 3, 4]), payload).unwrap();
        out
    }

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_frame(&mut out, true, opcode, None, payload).unwrap();
        out
    }

    fn close_payload(code: u16) -> Vec<u8> {
        close::build_close_payload(code, "")
    }

    impl T {
        fn new(role: Role, keepalive: Option<Duration>) -> T {
            let t0 = Instant::now();
            let config = Config {
                role,
                max_message: 1 << 20,
                keepalive,
                ping_payload: b"ka".to_vec(),
            };
            T {
                c: Connection::new(config, t0),
                t0,
                events: Vec::new(),
            }
        }

        fn server() -> T {
            T::new(Role::Server, None)
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn input(&mut self, ms: u64, opcode: u8, payload: &[u8]) {
            let mut bytes = match self.c.role() {
                Role::Server => from_client(opcode, payload),
                Role::Client => server_frame(opcode, payload),
            };
            let now = self.at(ms);
            let events = &mut self.events;
            self.c.receive(&mut bytes, now, &mut |e| events.push(e));
        }

        fn raw(&mut self, ms: u64, mut bytes: Vec<u8>) {
            let now = self.at(ms);
            let events = &mut self.events;
            self.c.receive(&mut bytes, now, &mut |e| events.push(e));
        }

        fn eof(&mut self, ms: u64) {
            let now = self.at(ms);
            let events = &mut self.events;
            self.c.receive_eof(now, &mut |e| events.push(e));
        }

        fn events(&mut self) -> Vec<Event> {
            std::mem::take(&mut self.events)
        }

        fn poll(&mut self, ms: u64, owner: OwnerOutput) -> Transmit {
            let now = self.at(ms);
            self.c.poll_transmit(now, owner)
        }

        fn timeout(&mut self, ms: u64) {
            let now = self.at(ms);
            self.c.handle_timeout(now);
        }

        fn deadline_ms(&self) -> Option<u64> {
            self.c
                .poll_timeout()
                .map(|d| d.duration_since(self.t0).as_millis() as u64)
        }
    }

    fn control(opcode: u8, payload: &[u8]) -> Transmit {
        Transmit::Control(server_frame(opcode, payload))
    }

    fn close_frame(payload: &[u8]) -> Transmit {
        Transmit::Close(server_frame(OP_CLOSE, payload))
    }

    fn closed(code: u16, reason: &str) -> Event {
        Event::Closed {
            code,
            reason: reason.to_string(),
        }
    }

    #[test]
    fn messages_pass_through() {
        let mut t = T::server();
        t.input(0, OP_TEXT, b"hi");
        t.input(0, OP_BINARY, b"\x00\x01");
        t.input(0, frame::OP_PONG, b"p");
        assert_eq!(
            t.events(),
            vec![
                Event::Message(Message::Text(b"hi".to_vec())),
                Event::Message(Message::Binary(vec![0, 1])),
                Event::Message(Message::Pong(b"p".to_vec())),
            ]
        );
        assert_eq!(t.poll(0, IDLE), Transmit::Idle);
        assert!(t.c.owner_may_write());
        assert_eq!(t.deadline_ms(), None);
    }

    /// A ping: ControlDue before the ping itself, then the pong before any
    /// owner data queued since; then the owner may write directly again.
    #[test]
    fn pong_goes_before_owner_data_queued_after_the_ping() {
        let mut t = T::server();
        t.input(0, OP_PING, b"abc");
        assert_eq!(
            t.events(),
            vec![
                Event::ControlDue,
                Event::Message(Message::Ping(b"abc".to_vec()))
            ]
        );
        assert!(!t.c.owner_may_write());
        assert_eq!(t.poll(0, QUEUED), control(OP_PONG, b"abc"));
        assert_eq!(t.poll(0, QUEUED), Transmit::OwnerData);
        assert_eq!(t.poll(0, IDLE), Transmit::Idle);
        assert!(t.c.owner_may_write());
    }

    /// A write of the owner's that ended inside a frame is finished before
    /// the pong, whatever else is queued.
    #[test]
    fn pong_never_inside_an_unfinished_owner_frame() {
        let mut t = T::server();
        t.input(0, OP_PING, b"x");
        assert_eq!(t.poll(0, MID_FRAME), Transmit::OwnerFrameRest);
        // The driver wrote the rest; more of the owner's data is queued.
        assert_eq!(t.poll(0, QUEUED), control(OP_PONG, b"x"));
        assert_eq!(t.poll(0, QUEUED), Transmit::OwnerData);
        // Without anything of ours due, an unfinished frame is just data.
        assert_eq!(t.poll(0, MID_FRAME), Transmit::OwnerData);
    }

    #[test]
    fn at_most_sixteen_pongs_due_and_the_newest_answered() {
        let mut t = T::server();
        let mut burst = Vec::new();
        for i in 0..40 {
            burst.extend(from_client(OP_PING, format!("p{i}").as_bytes()));
        }
        t.raw(0, burst);
        assert_eq!(t.events().len(), 80);
        let mut pongs = Vec::new();
        while let Transmit::Control(f) = t.poll(0, IDLE) {
            pongs.push(f);
        }
        assert_eq!(pongs.len(), MAX_PONGS_DUE);
        assert_eq!(pongs[0], server_frame(OP_PONG, b"p0"));
        assert_eq!(pongs[14], server_frame(OP_PONG, b"p14"));
        assert_eq!(pongs[15], server_frame(OP_PONG, b"p39"));
    }

    /// A client masks its control frames.
    #[test]
    fn client_frames_are_masked() {
        let mut t = T::new(Role::Client, None);
        t.input(0, OP_PING, b"m");
        let Transmit::Control(f) = t.poll(0, IDLE) else {
            panic!()
        };
        let (h, n) = frame::parse_header(&f).unwrap().unwrap();
        assert_eq!(h.opcode, OP_PONG);
        let mut p = f[n..].to_vec();
        crate::proto::mask::apply_mask(&mut p, h.mask.expect("masked"), 0);
        assert_eq!(p, b"m");
    }

    /// The peer closes: the owner hears it; the reply waits for the owner's
    /// queued data and for the owner (or CLOSE_REPLY_DELAY), echoes the
    /// code, and the server then ends TCP and waits for the peer's FIN.
    #[test]
    fn close_by_peer_then_our_reply_after_the_owners_data() {
        let mut t = T::server();
        t.input(0, OP_CLOSE, &close::build_close_payload(1000, "bye"));
        assert_eq!(t.events(), vec![closed(1000, "bye")]);
        assert_eq!(t.c.state(), State::ClosingByPeer);
        assert_eq!(t.c.reading(), Reading::Discard);
        // The owner's answers to earlier messages still go, directly too.
        assert!(t.c.owner_may_write());
        assert_eq!(t.poll(0, QUEUED), Transmit::OwnerData);
        assert_eq!(t.poll(0, IDLE), Transmit::Idle);
        assert_eq!(t.deadline_ms(), Some(1000));
        t.timeout(999);
        assert_eq!(t.poll(999, IDLE), Transmit::Idle);
        // The owner is done (it dropped its handle) with data still queued.
        t.c.owner_gone();
        assert!(!t.c.owner_may_write());
        assert_eq!(t.poll(10, QUEUED), Transmit::OwnerData);
        assert_eq!(t.poll(10, IDLE), close_frame(&close_payload(1000)));
        assert_eq!(t.c.state(), State::Closed);
        assert!(!t.c.accepts_data());
        assert_eq!(t.poll(10, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(10, IDLE), Transmit::Idle);
        // Input after the close frame is dropped; then the FIN.
        t.input(20, OP_TEXT, b"ignored");
        assert_eq!(t.events(), vec![]);
        assert_eq!(t.deadline_ms(), Some(10 + 3000));
        t.eof(30);
        assert_eq!(t.events(), vec![], "Closed was reported once");
        assert_eq!(t.poll(30, IDLE), Transmit::Finished);
    }

    #[test]
    fn close_reply_goes_after_the_delay_without_the_owner() {
        let mut t = T::server();
        t.input(5, OP_CLOSE, &[]);
        assert_eq!(t.events(), vec![closed(close::NO_STATUS, "")]);
        assert_eq!(t.deadline_ms(), Some(1005));
        t.timeout(1005);
        assert_eq!(t.poll(1005, IDLE), close_frame(&[]));
    }

    /// The owner closes after the peer did: its payload replaces the echo.
    #[test]
    fn owner_close_after_peer_close_sends_the_owners_code() {
        let mut t = T::server();
        t.input(0, OP_CLOSE, &close_payload(1000));
        t.c.close(close::build_close_payload(4000, "mine"));
        assert_eq!(
            t.poll(0, IDLE),
            close_frame(&close::build_close_payload(4000, "mine"))
        );
    }

    /// The owner closes: its queued data first, then our close frame; we
    /// wait for the peer's; nothing of ours (pong, ping) follows our close.
    #[test]
    fn close_by_us_then_the_peers_reply() {
        let mut t = T::server();
        assert_eq!(t.c.state(), State::Open);
        t.c.close(close_payload(1000));
        assert_eq!(t.c.state(), State::ClosingByUs);
        assert!(t.c.accepts_data(), "until the close frame goes");
        assert_eq!(t.poll(0, QUEUED), Transmit::OwnerData);
        assert_eq!(t.poll(0, IDLE), close_frame(&close_payload(1000)));
        assert!(!t.c.accepts_data());
        assert_eq!(t.poll(0, IDLE), Transmit::Idle);
        assert_eq!(t.deadline_ms(), Some(3000));
        // Data still comes; a ping is not answered after our close frame.
        t.input(10, OP_TEXT, b"late");
        t.input(10, OP_PING, b"p");
        assert_eq!(
            t.events(),
            vec![
                Event::Message(Message::Text(b"late".to_vec())),
                Event::Message(Message::Ping(b"p".to_vec())),
            ]
        );
        assert_eq!(t.poll(10, IDLE), Transmit::Idle);
        t.input(20, OP_CLOSE, &close_payload(1000));
        assert_eq!(t.events(), vec![closed(1000, "")]);
        // The server ends TCP first, then waits for the client's FIN.
        assert_eq!(t.poll(20, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(20, IDLE), Transmit::Idle);
        assert_eq!(t.deadline_ms(), Some(3020));
        t.timeout(3020);
        assert_eq!(t.poll(3020, IDLE), Transmit::Finished);
    }

    /// A client waits for the server's FIN before it ends TCP (§7.1.1).
    #[test]
    fn client_waits_for_the_servers_fin() {
        let mut t = T::new(Role::Client, None);
        t.c.close(close_payload(1000));
        assert!(matches!(t.poll(0, IDLE), Transmit::Close(_)));
        t.input(5, OP_CLOSE, &close_payload(1000));
        assert_eq!(t.events(), vec![closed(1000, "")]);
        assert_eq!(t.poll(5, IDLE), Transmit::Idle);
        t.eof(7);
        assert_eq!(t.events(), vec![]);
        assert_eq!(t.poll(7, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(7, IDLE), Transmit::Finished);
    }

    #[test]
    fn client_gives_up_on_the_fin_after_close_timeout() {
        let mut t = T::new(Role::Client, None);
        t.c.close(close_payload(1000));
        assert!(matches!(t.poll(0, IDLE), Transmit::Close(_)));
        t.input(5, OP_CLOSE, &close_payload(1000));
        assert_eq!(t.deadline_ms(), Some(3005));
        t.timeout(3004);
        assert_eq!(t.poll(3004, IDLE), Transmit::Idle);
        t.timeout(3005);
        assert_eq!(t.poll(3005, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(3005, IDLE), Transmit::Finished);
    }

    /// The peer never answers our close: both roles end TCP after
    /// CLOSE_TIMEOUT. The owner heard nothing yet: 1006 comes with the EOF.
    #[test]
    fn close_timeout() {
        for role in [Role::Server, Role::Client] {
            let mut t = T::new(role, None);
            t.c.close(close_payload(1000));
            assert!(matches!(t.poll(100, IDLE), Transmit::Close(_)));
            assert_eq!(t.deadline_ms(), Some(3100));
            t.timeout(3100);
            assert_eq!(t.poll(3100, IDLE), Transmit::Shutdown);
            assert_eq!(t.poll(3100, IDLE), Transmit::Finished);
            assert_eq!(t.events(), vec![]);
        }
    }

    /// Both sides close at once: the peer's close frame crosses ours.
    #[test]
    fn simultaneous_close() {
        // Ours went first, then theirs arrives: that is the handshake.
        let mut t = T::server();
        t.c.close(close_payload(1000));
        assert!(matches!(t.poll(0, IDLE), Transmit::Close(_)));
        t.input(1, OP_CLOSE, &close_payload(1001));
        assert_eq!(t.events(), vec![closed(1001, "")]);
        assert_eq!(t.poll(1, IDLE), Transmit::Shutdown);

        // Theirs arrives while ours waits behind the owner's data: ours
        // still goes (after the data), and no second one.
        let mut t = T::server();
        t.c.close(close_payload(1000));
        t.input(1, OP_CLOSE, &close_payload(1001));
        assert_eq!(t.events(), vec![closed(1001, "")]);
        assert_eq!(t.poll(1, QUEUED), Transmit::OwnerData);
        assert_eq!(t.poll(1, IDLE), close_frame(&close_payload(1000)));
        assert_eq!(t.poll(1, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(1, IDLE), Transmit::Idle);
        t.eof(2);
        assert_eq!(t.poll(2, IDLE), Transmit::Finished);

        // Theirs arrives, then the owner closes before the reply went.
        let mut t = T::server();
        t.input(1, OP_CLOSE, &close_payload(1001));
        t.c.close(close_payload(1000));
        assert_eq!(t.poll(1, IDLE), close_frame(&close_payload(1000)));
        t.c.close(close_payload(1000));
        assert_eq!(t.poll(1, IDLE), Transmit::Shutdown);
    }

    /// A violation: the owner hears the RFC's code, the peer gets a close
    /// frame with it (after the owner, as for a close), nothing more is read.
    #[test]
    fn violation_closes_with_its_code() {
        let mut t = T::server();
        t.raw(0, server_frame(OP_TEXT, b"unmasked"));
        assert_eq!(
            t.events(),
            vec![closed(close::PROTOCOL_ERROR, "Protocol error")]
        );
        assert_eq!(t.c.reading(), Reading::Stop);
        assert_eq!(t.poll(0, IDLE), Transmit::Idle);
        t.c.owner_gone();
        let Transmit::Close(f) = t.poll(0, IDLE) else {
            panic!()
        };
        assert_eq!(&f[2..4], &close::PROTOCOL_ERROR.to_be_bytes());
        // Nothing more will be read: TCP ends at once, in both roles.
        assert_eq!(t.poll(0, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(0, IDLE), Transmit::Finished);

        let mut t = T::new(Role::Client, None);
        t.input(0, OP_TEXT, &[0xc3, 0x28]);
        assert_eq!(
            t.events()[0],
            closed(
                close::INVALID_DATA,
                "Received data not consistent with type"
            )
        );
        t.timeout(1000);
        assert!(matches!(t.poll(1000, IDLE), Transmit::Close(_)));
        assert_eq!(t.poll(1000, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(1000, IDLE), Transmit::Finished);
    }

    /// A violation while our close frame waits for the peer's: the owner
    /// hears the violation, no second close frame goes, TCP ends.
    #[test]
    fn violation_while_closing() {
        let mut t = T::server();
        t.c.close(close_payload(1000));
        assert!(matches!(t.poll(0, IDLE), Transmit::Close(_)));
        t.raw(1, server_frame(OP_TEXT, b"unmasked"));
        assert_eq!(
            t.events(),
            vec![closed(close::PROTOCOL_ERROR, "Protocol error")]
        );
        assert_eq!(t.poll(1, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(1, IDLE), Transmit::Finished);
    }

    /// The stream ends without a close frame: 1006, and TCP ends.
    #[test]
    fn eof_without_close() {
        for role in [Role::Server, Role::Client] {
            let mut t = T::new(role, Some(Duration::from_secs(1)));
            t.eof(0);
            assert_eq!(
                t.events(),
                vec![closed(close::ABNORMAL, &abnormal_reason())]
            );
            assert_eq!(t.c.reading(), Reading::Stop);
            assert_eq!(t.poll(0, IDLE), Transmit::Shutdown);
            assert_eq!(t.poll(0, IDLE), Transmit::Finished);
            assert_eq!(t.deadline_ms(), None);
        }
    }

    /// The peer closes and ends its stream at once: the reply still goes,
    /// then TCP ends without waiting.
    #[test]
    fn peer_close_then_eof() {
        let mut t = T::server();
        t.input(0, OP_CLOSE, &close_payload(1000));
        t.eof(0);
        assert_eq!(t.events(), vec![closed(1000, "")]);
        t.timeout(1000);
        assert!(matches!(t.poll(1000, IDLE), Transmit::Close(_)));
        assert_eq!(t.poll(1000, IDLE), Transmit::Shutdown);
        assert_eq!(t.poll(1000, IDLE), Transmit::Finished);
    }

    #[test]
    fn owner_gone_closes_with_going_away() {
        let mut t = T::server();
        t.c.owner_gone();
        assert_eq!(
            t.poll(0, IDLE),
            close_frame(&close_payload(close::GOING_AWAY))
        );
    }

    #[test]
    fn transport_failure_ends_with_1006_once() {
        let mut t = T::server();
        t.input(0, OP_CLOSE, &close_payload(1000));
        let mut ev = Vec::new();
        t.c.transport_failed(&mut |e| ev.push(e));
        assert_eq!(ev, vec![]);
        assert_eq!(t.poll(0, QUEUED), Transmit::Finished);
        let mut t = T::server();
        t.c.transport_failed(&mut |e| ev.push(e));
        assert_eq!(ev, vec![closed(close::ABNORMAL, &abnormal_reason())]);
    }

    /// Keepalive: a ping after the set silence; traffic either way moves
    /// the deadline; a ping payload over 125 bytes goes as an empty ping.
    #[test]
    fn keepalive_deadline_moves_with_activity() {
        let mut t = T::new(Role::Server, Some(Duration::from_millis(1000)));
        assert_eq!(t.deadline_ms(), Some(1000));
        t.input(400, OP_TEXT, b"x");
        t.events();
        assert_eq!(t.deadline_ms(), Some(1400));
        t.timeout(1000);
        assert_eq!(t.poll(1000, IDLE), Transmit::Idle, "too early");
        t.c.traffic(t.at(1200)); // the owner wrote
        assert_eq!(t.deadline_ms(), Some(2200));
        t.timeout(2200);
        assert!(!t.c.owner_may_write());
        assert_eq!(t.deadline_ms(), None, "the ping is due already");
        assert_eq!(t.poll(2200, IDLE), control(OP_PING, b"ka"));
        assert_eq!(t.deadline_ms(), Some(3200));
        t.c.set_keepalive(Some(Duration::from_millis(1000)), vec![b'x'; 126]);
        t.timeout(3200);
        assert_eq!(t.poll(3200, IDLE), control(OP_PING, b""));
        t.c.set_keepalive(None, Vec::new());
        assert_eq!(t.deadline_ms(), None);
        // No keepalive ping while closing.
        let mut t = T::new(Role::Server, Some(Duration::from_millis(1000)));
        t.input(0, OP_CLOSE, &[]);
        assert_eq!(t.deadline_ms(), Some(1000), "the reply's deadline");
        t.timeout(1000);
        assert_eq!(t.poll(1000, IDLE), close_frame(&[]));
    }

    /// A pong due when our close frame goes is dropped with it, and the
    /// owner's unfinished frame still comes first.
    #[test]
    fn pong_then_close_order() {
        let mut t = T::server();
        t.input(0, OP_PING, b"1");
        t.c.close(close_payload(1000));
        assert_eq!(t.poll(0, MID_FRAME), Transmit::OwnerFrameRest);
        assert_eq!(t.poll(0, QUEUED), control(OP_PONG, b"1"));
        assert_eq!(t.poll(0, QUEUED), Transmit::OwnerData);
        assert_eq!(t.poll(0, IDLE), close_frame(&close_payload(1000)));
    }

    /// Large payloads received in place are checked like any other.
    #[test]
    fn in_place_payload() {
        let mut t = T::new(Role::Client, None);
        let payload = vec![7u8; 100_000];
        let f = server_frame(OP_BINARY, &payload);
        let (_, n) = frame::parse_header(&f).unwrap().unwrap();
        t.raw(0, f[..n].to_vec());
        let room = t.c.payload_room(64 * 1024);
        assert_eq!(room, payload.len());
        t.c.payload_buffer().extend_from_slice(&payload);
        let mut ev = Vec::new();
        t.c.payload_appended(payload.len(), t.at(1), &mut |e| ev.push(e));
        assert_eq!(ev, vec![Event::Message(Message::Binary(payload))]);
        // No in-place receive once the peer closed.
        t.input(2, OP_CLOSE, &[]);
        assert_eq!(t.c.payload_room(1), 0);
    }

    /// Random bytes and orders in any order (a fixed-seed generator, so
    /// reproducible): never a panic, never a frame of ours after our close
    /// frame, a single Closed, control frames that are valid, no deadline
    /// left in the past by handle_timeout (the engine would spin), and every
    /// connection ends once the owner is gone and the stream ends.
    #[test]
    fn random_operations_keep_the_invariants() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        for case in 0..3000 {
            let role = if rnd(2) == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let keepalive = (rnd(3) == 0).then(|| Duration::from_millis(1 + rnd(2000)));
            let mut t = T::new(role, keepalive);
            let peer_mask = (role == Role::Server).then_some([5, 6, 7, 8]);
            let mut ms = 0u64;
            let mut closed_events = 0;
            let mut close_sent = false;
            let mut finished = false;
            let check = |t: &mut T, tr: &Transmit, close_sent: &mut bool, finished: &mut bool| {
                if *finished {
                    assert_eq!(*tr, Transmit::Finished, "case {case}");
                }
                match tr {
                    Transmit::Control(f) | Transmit::Close(f) => {
                        assert!(!*close_sent, "case {case}: a frame after our close");
                        let (h, n) = frame::parse_header(f).unwrap().unwrap();
                        assert!(
                            h.fin && h.payload_len <= 125 && f.len() == n + h.payload_len as usize
                        );
                        assert_eq!(h.mask.is_some(), role == Role::Client);
                        if matches!(tr, Transmit::Close(_)) {
                            assert_eq!(h.opcode, OP_CLOSE);
                            *close_sent = true;
                        } else {
                            assert!(h.opcode == OP_PING || h.opcode == OP_PONG);
                        }
                    }
                    Transmit::Finished => *finished = true,
                    _ => {}
                }
                if *close_sent {
                    assert!(!t.c.accepts_data(), "case {case}");
                }
            };
            for _ in 0..rnd(40) {
                ms += rnd(1500);
                match rnd(12) {
                    0..=3 => {
                        let mut bytes = Vec::new();
                        for _ in 0..1 + rnd(3) {
                            let op = [OP_TEXT, OP_BINARY, OP_PING, frame::OP_PONG, OP_CLOSE, 3]
                                [rnd(6) as usize];
                            let len = rnd(if op >= 8 { 130 } else { 300 }) as usize;
                            let mut payload: Vec<u8> =
                                (0..len).map(|_| b'a' + rnd(26) as u8).collect();
                            if op == OP_CLOSE && rnd(2) == 0 {
                                payload = close::build_close_payload(
                                    [1000, 1001, 1002, 999, 1005, 3000, 4999][rnd(7) as usize],
                                    "r",
                                );
                            }
                            let mask = if rnd(20) == 0 { None } else { peer_mask };
                            let _ =
                                frame::encode_frame(&mut bytes, rnd(8) != 0, op, mask, &payload);
                            if rnd(10) == 0 {
                                bytes.extend((0..rnd(20)).map(|_| rnd(256) as u8));
                            }
                        }
                        // Split anywhere.
                        let cut = rnd(bytes.len() as u64 + 1) as usize;
                        let (a, b) = bytes.split_at(cut);
                        t.raw(ms, a.to_vec());
                        t.raw(ms, b.to_vec());
                    }
                    4 => t.eof(ms),
                    5 => {
                        let len = rnd(140) as usize;
                        t.c.close(vec![3; len]);
                    }
                    6 => t.c.owner_gone(),
                    7 => t.c.set_keepalive(
                        (rnd(2) == 0).then(|| Duration::from_millis(1 + rnd(3000))),
                        vec![b'k'; rnd(130) as usize],
                    ),
                    8 => {
                        t.timeout(ms);
                        let now = t.at(ms);
                        assert!(t.c.poll_timeout().is_none_or(|d| d > now), "case {case}");
                    }
                    9 if rnd(10) == 0 => {
                        let mut ev = Vec::new();
                        t.c.transport_failed(&mut |e| ev.push(e));
                        t.events.extend(ev);
                    }
                    _ => {
                        let owner = OwnerOutput {
                            mid_frame: rnd(4) == 0,
                            queued: rnd(2) == 0,
                        };
                        let tr = t.poll(ms, owner);
                        check(&mut t, &tr, &mut close_sent, &mut finished);
                    }
                }
                for e in t.events() {
                    if let Event::Closed { .. } = e {
                        closed_events += 1;
                    }
                }
                assert!(closed_events <= 1, "case {case}");
            }
            // The owner goes, the stream ends, time passes: it finishes.
            t.c.owner_gone();
            t.eof(ms);
            let mut steps = 0;
            while !finished {
                steps += 1;
                assert!(steps < 50, "case {case}: never finishes ({:?})", t.c);
                let tr = t.poll(ms, IDLE);
                check(&mut t, &tr, &mut close_sent, &mut finished);
                if tr == Transmit::Idle {
                    ms =
                        t.c.poll_timeout()
                            .map_or(ms + 1, |d| d.duration_since(t.t0).as_millis() as u64);
                    t.timeout(ms);
                }
            }
            let total = closed_events
                + t.events()
                    .iter()
                    .filter(|e| matches!(e, Event::Closed { .. }))
                    .count();
            assert_eq!(total, 1, "case {case}: the owner hears the end once");
        }
    }
}
