//! `::websocket::send sock type ?msg? ?final? ?-compress boolean?`

use super::{log::Level, wrong_args, ConnState, State};
use crate::proto::deflate::{self, SendMode};
use crate::proto::frame;
use crate::tcl::{CmdResult, Interp, Obj, ObjRef, TclError};

/// Frames at least this big are written at once rather than corked: copying
/// them would cost more than the write saves.
const CORK_MAX_FRAME: usize = 16 * 1024;

const BAD_TYPE: &str =
    "Unrecognised type, should be one of text, binary, ping or a protocol valid integer";

/// The opcode for a `send` type: tcllib's names (case-insensitive prefixes)
/// or an integer opcode that is legal to send (continuation, text, binary,
/// ping, pong).
fn opcode_of(ty: ObjRef) -> Result<u8, TclError> {
    let bytes = ty.tcl_bytes();
    let numeric = bytes
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'+');
    if !numeric {
        return match bytes.first().map(|c| c.to_ascii_lowercase()) {
            Some(b't') => Ok(frame::OP_TEXT),
            Some(b'b') => Ok(frame::OP_BINARY),
            Some(b'p') => Ok(frame::OP_PING),
            _ => Err(TclError::ws(BAD_TYPE, &[])),
        };
    }
    if let Some(n) = ty.get_wide(None) {
        return match n {
            0 | 1 | 2 | 8 | 9 | 10 => Ok(n as u8),
            _ => Err(TclError::ws(BAD_TYPE, &[])),
        };
    }
    Err(TclError::ws(BAD_TYPE, &[]))
}

/// tcllib's names for opcodes in log lines.
fn type_name(opcode: u8) -> String {
    match opcode {
        1 => "text".into(),
        2 => "binary".into(),
        8 => "close".into(),
        9 => "ping".into(),
        10 => "pong".into(),
        n => format!("<opcode-{n}>"),
    }
}

/// `send $sock 8 ?payload?`, which scripts written for tcllib use to send
/// a close frame: `close` with the payload's code and reason (a payload of
/// a 2-byte code, big-endian, then UTF-8 text; empty for no code).
fn send_close(st: &State, interp: Interp, sock: &str, payload: Option<ObjRef>) -> CmdResult {
    let bytes = match payload {
        Some(p) => p
            .byte_array(Some(interp))
            .ok_or(TclError::InInterp)?
            .to_vec(),
        None => Vec::new(),
    };
    let (code, reason) = match bytes.len() {
        0 => (None, String::new()),
        1 => {
            return Err(TclError::ws(
                "A close payload holds a 2-byte code, then the reason",
                &["CLOSE"],
            ))
        }
        _ => {
            let code = u16::from_be_bytes([bytes[0], bytes[1]]) as i64;
            let reason = String::from_utf8(bytes[2..].to_vec())
                .map_err(|_| TclError::ws("The close reason is not valid UTF-8", &["CLOSE"]))?;
            (Some(code), reason)
        }
    };
    st.with_handler_calls(|| super::conn::close_sock(st, sock, code, reason))
}

/// The per-message options after `final`: `-compress bool`.
fn send_mode(interp: Interp, opts: &[ObjRef]) -> Result<SendMode, TclError> {
    let mut mode = SendMode::Auto;
    for pair in opts.chunks(2) {
        let k = pair[0].to_string_lossy();
        if k != "-compress" {
            return Err(TclError::ws(
                format!("{k} is not a recognised option (use -compress)"),
                &["OPTION"],
            ));
        }
        let on = pair[1]
            .get_boolean(Some(interp))
            .ok_or(TclError::InInterp)?;
        mode = if on {
            SendMode::Auto
        } else {
            SendMode::Uncompressed
        };
    }
    Ok(mode)
}

pub fn send(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() < 3 || objv.len().is_multiple_of(2) && objv.len() > 5 {
        return Err(wrong_args(
            objv,
            "sock type ?msg? ?final? ?-compress boolean?",
        ));
    }
    let sock = objv[1].to_string_lossy();
    let mut conns = st.conns.borrow_mut();
    let conn = conns
        .get_mut::<str>(&sock)
        .ok_or_else(|| st.not_a_websocket(&sock))?;
    if conn.state != ConnState::Connected {
        st.logger.log(
            Level::Warn,
            &format!("Cannot send along WS {sock}, not connected"),
        );
        return Ok(Some(Obj::int(-1)));
    }
    let opcode = opcode_of(objv[2])?;
    if opcode == frame::OP_CLOSE {
        drop(conns);
        return send_close(st, interp, &sock, objv.get(3).copied());
    }
    let fin = match objv.get(4) {
        Some(f) => f.get_boolean(Some(interp)).ok_or(TclError::InInterp)?,
        None => true,
    };
    let mode = send_mode(interp, objv.get(5..).unwrap_or(&[]))?;
    // The message's type decides how `msg` is read: text as UTF-8, the rest as bytes.
    let data_opcode = if opcode == frame::OP_CONTINUATION {
        conn.outgoing.current_opcode().unwrap_or(frame::OP_BINARY)
    } else {
        opcode
    };
    let text_storage;
    let payload: &[u8] = match objv.get(3) {
        None => &[],
        Some(m) if data_opcode == frame::OP_TEXT => {
            text_storage = m.to_utf8().map_err(|_| {
                TclError::ws(
                    "Cannot send text: the string holds a lone surrogate, which has no UTF-8 form",
                    &["UTF8"],
                )
            })?;
            &text_storage
        }
        Some(m) => m.byte_array(Some(interp)).ok_or(TclError::InInterp)?,
    };
    if opcode == frame::OP_CONTINUATION && !conn.outgoing.in_message() {
        return Err(TclError::ws("No message in progress to continue", &[]));
    }
    // Worked out on a copy: a send refused below (-maxqueue) must not leave
    // a message begun or ended that the peer never saw.
    let mut outgoing = conn.outgoing.clone();
    let wire_opcode = outgoing
        .frame_opcode(opcode, fin, payload.len())
        .map_err(|e| TclError::ws(e.to_string(), &[]))?;
    let queued = conn.handle.queued();
    if queued > 0 && queued + payload.len() > conn.max_queue {
        return Err(TclError::ws(
            format!(
                "Cannot send on {sock}: {queued} bytes are still queued for a peer that does not read (-maxqueue {})",
                conn.max_queue
            ),
            &["QUEUE"],
        ));
    }
    let refused = |e: crate::proto::writer::SendError| TclError::ws(e.to_string(), &[]);
    // Compressed last, once nothing can refuse the send: the compressor's
    // context must hold only what the peer gets.
    let compressed;
    let (payload, rsv1): (&[u8], bool) = match conn.deflate.as_mut() {
        Some(d) if !frame::is_control(wire_opcode) => {
            compressed = d
                .compress(payload, fin, mode)
                .map_err(|e| TclError::ws(format!("Cannot send on {sock}: {e}"), &["DEFLATE"]))?;
            if matches!(compressed.payload, std::borrow::Cow::Owned(_)) {
                st.idle_compressors
                    .used(st, conn, std::time::Instant::now());
            }
            (&compressed.payload, compressed.rsv1)
        }
        _ => (payload, false),
    };
    let n = if conn.server {
        let (mut header, hlen) =
            frame::header(fin, wire_opcode, None, payload.len() as u64).map_err(refused)?;
        if rsv1 {
            header[0] |= deflate::RSV1_BIT;
        }
        conn.outgoing = outgoing;
        if st.delivering() && payload.len() < CORK_MAX_FRAME {
            st.cork(conn, &header[..hlen], payload);
        } else {
            State::uncork(conn);
            if !conn.handle.send_frame(&header[..hlen], payload) {
                return Ok(Some(Obj::int(-1)));
            }
        }
        hlen + payload.len()
    } else {
        // A client masks (§5.3): the frame is a masked copy anyway.
        let mask = st.keys.borrow_mut().next_key();
        let mut out = Vec::with_capacity(payload.len() + frame::MAX_HEADER_LEN);
        frame::encode_frame(&mut out, fin, wire_opcode, Some(mask), payload).map_err(refused)?;
        if rsv1 {
            out[0] |= deflate::RSV1_BIT;
        }
        conn.outgoing = outgoing;
        let n = out.len();
        if st.delivering() && payload.len() < CORK_MAX_FRAME {
            st.cork(conn, &out, &[]);
        } else {
            State::uncork(conn);
            if !conn.handle.send_data(out) {
                return Ok(Some(Obj::int(-1)));
            }
        }
        n
    };
    if st.logger.enabled(Level::Debug) {
        let dst = if conn.server { "client" } else { "server" };
        let what = if fin { "final fragment" } else { "fragment" };
        st.logger.log(
            Level::Debug,
            &format!(
                "Sent {} bytes long {} {what} to {dst}",
                payload.len(),
                type_name(data_opcode)
            ),
        );
    }
    Ok(Some(Obj::int(n as i64)))
}
