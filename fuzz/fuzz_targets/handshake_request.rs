//! parse_request + validate_request_headers on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::proto::handshake::{
    accept_key, build_accept_response, parse_request, parse_response, validate_request_headers,
    validate_response, MAX_HEAD_BYTES,
};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Some((req, len))) => {
            assert!(len <= data.len() && len <= MAX_HEAD_BYTES);
            // A strict prefix of a complete head is always incomplete.
            assert_eq!(parse_request(&data[..len - 1]), Ok(None));
            assert_eq!(parse_request(&data[..len / 2]), Ok(None));
            if let Ok(valid) = validate_request_headers(&req.headers) {
                assert_eq!(valid.key.len(), 24);
                assert_eq!(valid.version, "13");
                let proto = valid.protocols.first().cloned().unwrap_or_default();
                let resp = build_accept_response(&accept_key(&valid.key), &proto);
                let (r, n) = parse_response(&resp).unwrap().unwrap();
                assert_eq!(n, resp.len());
                assert_eq!(
                    validate_response(&r, &valid.key, &valid.protocols),
                    Ok(proto)
                );
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD_BYTES),
        Err(e) => assert_eq!(e.kinds[0], "HANDSHAKE"),
    }
});
