//! Server side, the tcllib way: the script runs `socket -server`, reads the
//! request itself, then `server`, `live`, `test` and `upgrade`; plus
//! `validate` and `sec-websocket-accept`.

use super::conn::attach_socket;
use super::{glob_match, log::Level, wrong_args, Live, Pending, State};
use crate::proto::deflate::negotiate;
use crate::proto::handshake;
use crate::tcl::{CmdResult, Interp, Obj, ObjRef, TclError};

/// `server sock`: declares a listening socket as a WebSocket-capable server.
pub fn server(st: &State, _interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() != 2 {
        return Err(wrong_args(objv, "sock"));
    }
    let sock = objv[1].to_string_lossy();
    st.servers.borrow_mut().insert(sock.clone(), Vec::new());
    Ok(Some(Obj::string(&sock)))
}

/// `live sock path cb ?proto? ?-deflate value?`: a handler for paths
/// matching `path` (glob).
pub fn live(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() < 4 || objv.len() == 6 || objv.len() > 7 {
        return Err(wrong_args(objv, "sock path cb ?proto? ?-deflate value?"));
    }
    let deflate = match objv.get(5) {
        None => None,
        Some(k) if k.to_string_lossy() == "-deflate" => {
            Some(super::deflate::parse_value(st, interp, objv[6])?)
        }
        Some(k) => {
            return Err(TclError::ws(
                format!(
                    "{} is not a recognised option (use -deflate)",
                    k.to_string_lossy()
                ),
                &["OPTION"],
            ))
        }
    };
    let sock = objv[1].to_string_lossy();
    let mut servers = st.servers.borrow_mut();
    let lives = servers.get_mut(&sock).ok_or_else(|| {
        st.logger.log(
            Level::Warn,
            &format!("{sock} is not a WebSocket server anymore"),
        );
        TclError::ws(format!("{sock} is not a WebSocket"), &[])
    })?;
    lives.push(Live {
        path: objv[2].to_string_lossy(),
        handler: objv[3].to_owned(),
        protocol: objv
            .get(4)
            .map(|p| p.to_string_lossy())
            .unwrap_or_else(|| "*".into()),
        deflate,
    });
    // tcllib returns what its `lappend` gives: every registration so far.
    let mut all = Vec::with_capacity(lives.len() * 3);
    for l in lives.iter() {
        all.push(Obj::string(&l.path));
        all.push(l.handler.clone());
        all.push(Obj::string(&l.protocol));
    }
    Ok(Some(Obj::list(&all)))
}

/// Header pairs from a Tcl dict-style list, or None if it is no such list.
fn header_pairs(interp: Interp, hdrs: ObjRef) -> Option<Vec<(String, String)>> {
    let elems = hdrs.list_elements(Some(interp));
    let elems = match elems {
        Some(e) => e,
        None => {
            interp.reset_result();
            return None;
        }
    };
    // As tcllib's `foreach {k v} $hdrs`: a last name without value gets "".
    Some(
        elems
            .chunks(2)
            .map(|c| {
                let value = c.get(1).map(|v| v.to_string_lossy()).unwrap_or_default();
                (c[0].to_string_lossy(), value)
            })
            .collect(),
    )
}

/// `test srvSock cliSock path ?hdrs? ?qry?`: 1 if this request is a WebSocket
/// upgrade for a registered path and protocol, 0 otherwise. Never throws for
/// what the client sent.
pub fn test(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() < 4 || objv.len() > 6 {
        return Err(wrong_args(objv, "srvSock cliSock path ?hdrs? ?qry?"));
    }
    let srv = objv[1].to_string_lossy();
    let cli = objv[2].to_string_lossy();
    let path = objv[3].to_string_lossy();
    let headers = match objv.get(4).and_then(|h| header_pairs(interp, *h)) {
        Some(h) if !h.is_empty() => h,
        _ => return Ok(Some(Obj::int(0))),
    };
    let servers = st.servers.borrow();
    let lives = servers.get(&srv).ok_or_else(|| {
        st.logger.log(
            Level::Warn,
            &format!("{srv} is not a WebSocket server anymore"),
        );
        TclError::ws(format!("{srv} is not a WebSocket"), &[])
    })?;
    let valid = match handshake::validate_request_headers(&headers) {
        Ok(v) => v,
        Err(e) => {
            st.logger.log(
                Level::Warn,
                &format!("Invalid WebSocket request on {cli}: {}", e.message),
            );
            return Ok(Some(Obj::int(0)));
        }
    };
    let mut found = None;
    for l in lives {
        let idx = valid
            .protocols
            .iter()
            .position(|p| glob_match(&l.protocol, p, false));
        if glob_match(&l.path, &path, false) && (valid.protocols.is_empty() || idx.is_some()) {
            let protocol = idx.map(|i| valid.protocols[i].clone()).unwrap_or_default();
            let settings = l
                .deflate
                .clone()
                .unwrap_or_else(|| st.deflate_defaults.borrow().clone());
            found = Some((l.handler.clone(), protocol, settings.offered()));
            break;
        }
    }
    let Some((handler, protocol, deflate_config)) = found else {
        st.logger
            .log(Level::Warn, &format!("Cannot find any handler for {path}"));
        return Ok(Some(Obj::int(0)));
    };
    // permessage-deflate: the first acceptable offer; a header that does not
    // parse makes the request invalid, as node's ws and Python's websockets
    // answer it.
    let deflate = match deflate_config {
        None => None,
        Some(cfg) => match negotiate::negotiate_server_headers(&cfg, &headers) {
            Ok(accepted) => accepted.map(|a| (a, cfg)),
            Err(e) => {
                st.logger.log(
                    Level::Warn,
                    &format!("Invalid WebSocket request on {cli}: Sec-WebSocket-Extensions: {e}"),
                );
                return Ok(Some(Obj::int(0)));
            }
        },
    };
    let query = objv
        .get(5)
        .map(|q| q.to_owned())
        .unwrap_or_else(|| Obj::string(""));
    st.pending.borrow_mut().insert(
        cli,
        Pending {
            accept: handshake::accept_key(&valid.key),
            path,
            query,
            handler,
            protocol,
            deflate,
        },
    );
    Ok(Some(Obj::int(1)))
}

/// `upgrade sock`: answers 101 and turns the socket into a server WebSocket;
/// the handler gets `connect` with `[list path query]`.
pub fn upgrade(st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() != 2 {
        return Err(wrong_args(objv, "sock"));
    }
    let sock = objv[1].to_string_lossy();
    let pending = st.pending.borrow_mut().remove(&sock).ok_or_else(|| {
        st.logger.log(
            Level::Warn,
            &format!("{sock} does not point to a client WebSocket"),
        );
        TclError::ws(format!("{sock} is not a WebSocket client"), &[])
    })?;
    let extensions = pending
        .deflate
        .as_ref()
        .map(|(a, _)| a.response.as_str())
        .unwrap_or("");
    let response =
        handshake::build_accept_response_with(&pending.accept, &pending.protocol, extensions);
    let info = Obj::list(&[Obj::string(&pending.path), pending.query.clone()]);
    let deflate = pending.deflate.map(|(a, cfg)| (a.params, cfg));
    attach_socket(
        st,
        interp,
        &sock,
        pending.handler,
        true,
        response,
        info,
        deflate,
    )?;
    Ok(None)
}

/// `validate hdrs`: tcllib's check of an opening handshake's headers. Returns
/// a dict with `key`, `version` and `protocols` (an empty list when none is
/// offered, as tcllib 1.6 answers).
pub fn validate(_st: &State, interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() != 2 {
        return Err(wrong_args(objv, "hdrs"));
    }
    // A malformed list is Tcl's own error, as tcllib's foreach gives.
    objv[1]
        .list_elements(Some(interp))
        .ok_or(TclError::InInterp)?;
    let headers = header_pairs(interp, objv[1]).ok_or(TclError::InInterp)?;
    let v = handshake::validate_request_headers(&headers).map_err(|e| {
        let kinds: Vec<&str> = e.kinds.to_vec();
        TclError::ws(e.message, &kinds)
    })?;
    // The dict's keys come in the order their headers came, as in tcllib.
    let mut out: Vec<Obj> = Vec::new();
    let mut seen = [false; 3];
    for (k, _) in &headers {
        let slot = match k.to_ascii_lowercase().as_str() {
            "sec-websocket-version" => 0,
            "sec-websocket-key" => 1,
            "sec-websocket-protocol" => 2,
            _ => continue,
        };
        if seen[slot] {
            continue;
        }
        seen[slot] = true;
        match slot {
            0 => out.extend([Obj::string("version"), Obj::string(&v.version)]),
            1 => out.extend([Obj::string("key"), Obj::string(&v.key)]),
            _ => out.extend([Obj::string("protocols"), Obj::list_of_strings(&v.protocols)]),
        }
    }
    if !seen[2] {
        out.extend([Obj::string("protocols"), Obj::list(&[])]);
    }
    Ok(Some(Obj::list(&out)))
}

/// `sec-websocket-accept key`
pub fn sec_websocket_accept(_st: &State, _interp: Interp, objv: &[ObjRef]) -> CmdResult {
    if objv.len() != 2 {
        return Err(wrong_args(objv, "key"));
    }
    Ok(Some(Obj::string(&handshake::accept_key(
        &objv[1].to_string_lossy(),
    ))))
}
