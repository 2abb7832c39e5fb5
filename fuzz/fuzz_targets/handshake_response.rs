//! parse_response + validate_response on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::proto::handshake::{parse_response, validate_response, MAX_HEAD_BYTES};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    match parse_response(data) {
        Ok(Some((resp, len))) => {
            assert!(len <= data.len() && len <= MAX_HEAD_BYTES);
            let offered = ["chat".to_string(), "superchat".to_string()];
            for offer in [&offered[..], &[][..]] {
                match validate_response(&resp, KEY, offer) {
                    Ok(p) => {
                        assert_eq!(resp.status, 101);
                        assert!(p.is_empty() || offer.contains(&p));
                    }
                    Err(e) => assert_eq!(e.kinds[0], "HANDSHAKE"),
                }
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD_BYTES),
        Err(e) => assert_eq!(e.kinds[0], "HANDSHAKE"),
    }
});
