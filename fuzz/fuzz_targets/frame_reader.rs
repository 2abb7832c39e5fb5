//! MessageReader for both roles: whole-buffer decoding must agree with
//! decoding the same bytes split at a point taken from the data, with
//! byte-at-a-time decoding, and with receiving payloads in place
//! (`payload_room` / `payload_appended`, as the engine does for large ones).
//!
//! Input: `[split point][max message size selector][wire bytes...]`; the
//! wire bytes are decoded in both roles.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::proto::close::Violation;
use websocket::proto::reader::{Message, MessageReader};
use websocket::proto::Role;

type Outcome = (Vec<Message>, Option<Violation>);

fn run(role: Role, max: usize, data: &[u8], chunk_len: &dyn Fn(usize) -> usize) -> Outcome {
    let mut r = MessageReader::new(role, max);
    let mut buf = data.to_vec();
    let mut msgs = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let n = chunk_len(off).clamp(1, buf.len() - off);
        let chunk = &mut buf[off..off + n];
        let mut at = 0;
        loop {
            match r.read(&mut chunk[at..]) {
                Ok((0, None)) => break,
                Ok((c, m)) => {
                    at += c;
                    assert!(at <= n);
                    if let Some(m) = m {
                        if let Message::Text(t) = &m {
                            assert!(std::str::from_utf8(t).is_ok());
                        }
                        match &m {
                            Message::Binary(b) | Message::Text(b) => assert!(b.len() <= max),
                            Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
                            Message::Close(_) => {}
                        }
                        msgs.push(m);
                    }
                }
                Err(v) => {
                    // A failed reader keeps reporting the same violation.
                    assert_eq!(r.read(&mut []), Err(v.clone()));
                    return (msgs, Some(v));
                }
            }
        }
        assert_eq!(at, n, "reader must consume all input");
        off += n;
    }
    (msgs, None)
}

/// Like `run` with a fixed chunk length, but payload bytes go straight into
/// the reader's message buffer whenever it offers room for them.
fn run_in_place(role: Role, max: usize, data: &[u8], chunk: usize) -> Outcome {
    let mut r = MessageReader::new(role, max);
    let mut msgs = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let n = chunk.clamp(1, data.len() - off);
        let room = r.payload_room(1);
        if room > 0 {
            let take = n.min(room);
            r.payload_buffer().extend_from_slice(&data[off..off + take]);
            off += take;
            match r.payload_appended(take) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => {}
                Err(v) => return (msgs, Some(v)),
            }
            continue;
        }
        let mut buf = data[off..off + n].to_vec();
        let mut at = 0;
        loop {
            match r.read(&mut buf[at..]) {
                Ok((0, None)) => break,
                Ok((c, m)) => {
                    at += c;
                    if let Some(m) = m {
                        msgs.push(m);
                    }
                }
                Err(v) => return (msgs, Some(v)),
            }
        }
        off += n;
    }
    (msgs, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = data[0] as usize;
    let max = match data[1] % 5 {
        0 => 0,
        1 => 125,
        2 => 4096,
        3 => 1 << 20,
        // "Unlimited": huge declared lengths are accepted, not rejected.
        _ => usize::MAX,
    };
    let data = &data[2..];
    for role in [Role::Client, Role::Server] {
        let whole = run(role, max, data, &|_| usize::MAX);
        let split_at = split.min(data.len());
        let two = run(role, max, data, &|off| {
            if off < split_at {
                split_at - off
            } else {
                usize::MAX
            }
        });
        assert_eq!(whole, two);
        let bytewise = run(role, max, data, &|_| 1);
        assert_eq!(whole, bytewise);
        let in_place = run_in_place(role, max, data, split.max(1));
        assert_eq!(whole, in_place);
    }
});
