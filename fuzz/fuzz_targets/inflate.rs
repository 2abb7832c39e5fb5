//! permessage-deflate decompression of arbitrary payloads, split into
//! messages and frames at points taken from the data, with a small size
//! limit: never panics, never gives (or holds room for) more than the
//! limit. Then a compress / decompress round trip of the same bytes.
//!
//! Input: `[flags][limit selector][chunk length][chunks per message][payload...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::proto::deflate::{
    DecompressError, DeflateConfig, DeflateParams, PerMessageDeflate, SendMode,
};
use websocket::proto::Role;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let flags = data[0];
    let max = [0usize, 1, 100, 4096, 65536][data[1] as usize % 5];
    let chunk = (data[2] as usize).max(1);
    let per_msg = (data[3] as usize % 8).max(1);
    let payload = &data[4..];
    let params = DeflateParams {
        server_no_context_takeover: flags & 1 != 0,
        client_no_context_takeover: flags & 2 != 0,
        server_max_window_bits: 8 + (flags >> 4) % 8,
        client_max_window_bits: 15,
    };
    let role = if flags & 4 != 0 { Role::Server } else { Role::Client };
    let cfg = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    let mut rx = PerMessageDeflate::new(role, &params, &cfg);
    let chunks: Vec<&[u8]> = payload.chunks(chunk).collect();
    for msg in chunks.chunks(per_msg) {
        let mut out = Vec::new();
        for (i, c) in msg.iter().enumerate() {
            match rx.decompress(c, i == msg.len() - 1, max, &mut out) {
                Ok(()) => assert!(out.len() <= max),
                Err(DecompressError::TooBig) => {
                    assert!(out.len() <= max + 1);
                    break;
                }
                Err(DecompressError::BadData) => break,
            }
            assert!(out.capacity() <= max + 1, "{} > {}", out.capacity(), max + 1);
        }
        assert!(!rx.receiving());
    }

    // Round trip: compress the payload (in the same chunks, as fragments)
    // and decompress it, both directions of the negotiation.
    let mut tx = PerMessageDeflate::new(Role::Server, &params, &cfg);
    let mut rx = PerMessageDeflate::new(Role::Client, &params, &cfg);
    for _ in 0..2 {
        let mut wire = Vec::new();
        let mut compressed = false;
        for (i, c) in chunks.iter().enumerate() {
            let f = tx.compress(c, i == chunks.len() - 1, SendMode::Auto).unwrap();
            if i == 0 {
                compressed = f.rsv1;
            } else {
                assert!(!f.rsv1);
            }
            wire.extend_from_slice(&f.payload);
        }
        if chunks.is_empty() {
            let f = tx.compress(&[], true, SendMode::Auto).unwrap();
            compressed = f.rsv1;
            wire.extend_from_slice(&f.payload);
        }
        let mut out = Vec::new();
        if compressed {
            rx.decompress(&wire, true, payload.len(), &mut out).unwrap();
        } else {
            out = wire;
        }
        assert_eq!(out, payload);
    }
});
