//! Sec-WebSocket-Extensions parsing and permessage-deflate negotiation in
//! both roles, on arbitrary header lines: never panics; what the server
//! answers is one permessage-deflate element our client accepts; parsed
//! extensions format back to what parses the same.
//!
//! Input: `[config selector][header lines separated by \n...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::proto::deflate::{
    accept_response, client_offer, negotiate_server, DeflateConfig, EXTENSION_NAME,
};
use websocket::proto::extensions::{format_list, parse};

fn config(sel: u8) -> DeflateConfig {
    let bits = |v: u8| match v % 4 {
        0 => None,
        1 => Some(8),
        2 => Some(12),
        _ => Some(15),
    };
    DeflateConfig {
        server_no_context_takeover: sel & 1 != 0,
        client_no_context_takeover: sel & 2 != 0,
        server_max_window_bits: bits(sel >> 2),
        client_max_window_bits: bits(sel >> 4),
        ..DeflateConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // Header values as the handshake parser makes them (Latin-1 if not UTF-8).
    let text = match std::str::from_utf8(rest) {
        Ok(s) => s.to_owned(),
        Err(_) => rest.iter().map(|&b| b as char).collect(),
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let exts = match parse(lines.iter().copied()) {
        Ok(e) => e,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // Formatting round trip (quoted values are tokens once unescaped).
    let again = parse([format_list(&exts).as_str()]).expect("formatted list parses");
    assert_eq!(again, exts);

    for cfg in [config(sel), DeflateConfig::default()] {
        // Server role: the client's offers.
        if let Some(acc) = negotiate_server(&cfg, &exts) {
            let resp = parse([acc.response.as_str()]).expect("response parses");
            assert_eq!(resp.len(), 1);
            assert_eq!(resp[0].name, EXTENSION_NAME);
            let p = accept_response(&DeflateConfig::default(), &resp)
                .expect("our client accepts our server's response")
                .expect("accepted");
            assert_eq!(p.server_no_context_takeover, acc.params.server_no_context_takeover);
            assert_eq!(p.client_no_context_takeover, acc.params.client_no_context_takeover);
            assert_eq!(p.server_max_window_bits, acc.params.server_max_window_bits);
            for b in [acc.params.server_max_window_bits, acc.params.client_max_window_bits] {
                assert!((8..=15).contains(&b));
            }
        }
        // Client role: the same elements as a server's response.
        match accept_response(&cfg, &exts) {
            Ok(Some(p)) => {
                assert!((8..=15).contains(&p.server_max_window_bits));
                assert!((8..=15).contains(&p.client_max_window_bits));
                if let Some(limit) = cfg.client_max_window_bits {
                    assert!(p.client_max_window_bits <= limit);
                }
            }
            Ok(None) => assert!(exts.is_empty()),
            Err(e) => {
                let _ = e.to_string();
            }
        }
        // Our own offer is always one our server accepts.
        let offer = parse([client_offer(&cfg).as_str()]).unwrap();
        assert!(negotiate_server(&cfg, &offer).is_some());
    }
});
