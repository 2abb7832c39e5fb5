//! permessage-deflate measurements behind the defaults in
//! src/proto/deflate/mod.rs (bench/PROFILE.md, "Deflate defaults
//! (measured)"):
//!
//!   cargo run --release --example deflate_profile            # everything (~1 min)
//!   cargo run --release --example deflate_profile -- mem     # memory only (1 s)
//!   cargo run --release --example deflate_profile -- levels  # size and time only
//!   cargo run --release --example deflate_profile -- policy  # threshold, no context takeover
//!   cargo run --release --example deflate_profile -- dump DIR  # the message sets, to compare
//!
//! Memory is counted by a global allocator that tracks live heap bytes;
//! times are the best of REPS runs (shared machines are noisy).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use websocket::proto::deflate::{DeflateConfig, DeflateParams, PerMessageDeflate, SendMode};
use websocket::proto::Role;
use zlib_rs::{Deflate, DeflateConfig as ZConfig, DeflateFlush, Inflate, InflateFlush};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_sub(l.size(), Relaxed);
        LIVE.fetch_add(new, Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Relaxed)
}

const REPS: usize = 5;

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// A JSON array of records with random values, about `target` bytes.
fn json(seed: &mut u64, target: usize) -> Vec<u8> {
    let names = ["alice", "bob", "carol", "dave", "eve", "mallory", "trent"];
    let mut s = String::from("[");
    while s.len() < target {
        let r = rng(seed);
        if s.len() > 1 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{},\"user\":\"{}\",\"price\":{}.{:02},\"qty\":{},\"active\":{},\"tags\":[\"t{}\",\"x{}\"]}}",
            r % 100000,
            names[(r >> 20) as usize % 7],
            (r >> 8) % 1000,
            (r >> 30) % 100,
            (r >> 40) % 50,
            (r >> 45) & 1 == 1,
            (r >> 50) % 16,
            (r >> 55) % 8
        ));
    }
    s.push(']');
    s.into_bytes()
}

struct Sets {
    /// Nearly identical small messages (an echo test's).
    echo: Vec<Vec<u8>>,
    /// A market data feed: fixed keys, changing values, ~170 B.
    ticker: Vec<Vec<u8>>,
    /// JSON of 100 B to 1 KiB, random values.
    json: Vec<Vec<u8>>,
    /// One 64 KiB JSON message.
    big: Vec<u8>,
}

fn sets() -> Sets {
    let mut seed = 11u64;
    let echo = (0..2000)
        .map(|i| {
            format!("{{\"type\":\"echo\",\"seq\":{i},\"payload\":\"the quick brown fox jumps over the lazy dog\"}}")
                .into_bytes()
        })
        .collect();
    let syms = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD"];
    let ticker = (0..3000u64)
        .map(|i| {
            let r = rng(&mut seed);
            format!(
                "{{\"type\":\"ticker\",\"sequence\":{},\"product_id\":\"{}\",\"price\":\"{}.{:02}\",\"side\":\"{}\",\"time\":\"2024-05-01T12:{:02}:{:02}.{:06}Z\",\"trade_id\":{},\"last_size\":\"0.{:08}\"}}",
                8_000_000 + i * 3 + r % 3,
                syms[(r >> 10) as usize % 4],
                40000 + (r >> 12) % 500,
                (r >> 22) % 100,
                if (r >> 30) & 1 == 1 { "buy" } else { "sell" },
                (i / 60) % 60,
                i % 60,
                (r >> 32) % 1_000_000,
                500_000 + i,
                (r >> 8) % 100_000_000
            )
            .into_bytes()
        })
        .collect();
    let json_set = (0..2000)
        .map(|_| {
            let t = 100 + (rng(&mut seed) % 925) as usize;
            json(&mut seed, t)
        })
        .collect();
    let big = json(&mut seed, 65536);
    Sets {
        echo,
        ticker,
        json: json_set,
        big,
    }
}

/// Compress one message with a sync flush, as permessage-deflate does;
/// returns its size without the trailer.
fn comp(d: &mut Deflate, msg: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    out.resize(msg.len() + msg.len() / 8 + 64, 0);
    let mut at = 0;
    let mut inp = msg;
    loop {
        let (i0, o0) = (d.total_in(), d.total_out());
        d.compress(inp, &mut out[at..], DeflateFlush::SyncFlush)
            .unwrap();
        inp = &inp[(d.total_in() - i0) as usize..];
        at += (d.total_out() - o0) as usize;
        if inp.is_empty() && at < out.len() {
            break;
        }
        out.resize(out.len() * 2, 0);
    }
    at.saturating_sub(4)
}

fn zcfg(level: i32, bits: i32, mem: i32) -> ZConfig {
    ZConfig {
        level,
        window_bits: -bits,
        mem_level: mem,
        ..ZConfig::default()
    }
}

fn mem() {
    println!("== memory (live heap bytes)");
    println!(
        "PerMessageDeflate: {} bytes inline, {} on the heap after new() (negotiated, unused)",
        std::mem::size_of::<PerMessageDeflate>(),
        {
            let b = live();
            let p = PerMessageDeflate::new(
                Role::Server,
                &DeflateParams::default(),
                &DeflateConfig::default(),
            );
            let a = live() - b;
            drop(p);
            a
        }
    );
    println!("compressor (zlib-rs Deflate::new_with_config), bytes by window bits x memLevel:");
    print!("{:>6}", "bits");
    for ml in 1..=9 {
        print!(" {:>7}", format!("ml{ml}"));
    }
    println!();
    for bits in 9..=15 {
        print!("{bits:>6}");
        for ml in 1..=9 {
            let b = live();
            let d = Deflate::new_with_config(zcfg(6, bits, ml));
            print!(" {:>7}", live() - b);
            drop(d);
        }
        println!();
    }
    let msg = json(&mut 1, 1000);
    let mut out = Vec::with_capacity(4096);
    let mut d = Deflate::new(6, false, 15);
    let n = comp(&mut d, &msg, &mut out);
    let mut input = out[..n].to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    for bits in [9u8, 12, 15] {
        let b = live();
        let mut i = Inflate::new(false, bits);
        let a = live() - b;
        let mut o = vec![0u8; 4096];
        let b2 = live();
        i.decompress(&input, &mut o, InflateFlush::SyncFlush)
            .unwrap();
        println!(
            "decompressor (zlib-rs Inflate) window {bits}: {a} bytes, +{} after inflating a message",
            live() - b2
        );
    }
    // The whole object at the defaults, as a connection uses it.
    let cfg = DeflateConfig::default();
    for (name, p) in [
        ("context takeover", DeflateParams::default()),
        (
            "no context takeover",
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ),
    ] {
        let mut s = PerMessageDeflate::new(Role::Server, &p, &cfg);
        let mut c = PerMessageDeflate::new(Role::Client, &p, &cfg);
        let b = live();
        let w = s
            .compress(&msg, true, SendMode::Auto)
            .unwrap()
            .payload
            .into_owned();
        let after_tx = live() - b - w.capacity();
        let mut o = Vec::new();
        c.decompress(&w, true, usize::MAX, &mut o).unwrap();
        let after_rx = live() - b - w.capacity() - o.capacity();
        let w2 = c
            .compress(&msg, true, SendMode::Auto)
            .unwrap()
            .payload
            .into_owned();
        s.decompress(&w2, true, usize::MAX, &mut Vec::new())
            .unwrap();
        println!(
            "defaults ({} bits, memLevel {}), {name}: sender {after_tx} bytes after one message, receiver {} bytes; both ways: {} bytes per end",
            cfg.window_bits,
            cfg.mem_level,
            after_rx - after_tx,
            (live() - b - w.capacity() - o.capacity() - w2.capacity()) / 2
        );
    }
}

/// Best-of-REPS time (seconds) and the result of `f`.
fn best<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut t = f64::MAX;
    let mut r = None;
    for _ in 0..REPS {
        let s = Instant::now();
        let v = f();
        t = t.min(s.elapsed().as_secs_f64());
        r = Some(v);
    }
    (t, r.unwrap())
}

fn levels() {
    let s = sets();
    let avg = |v: &Vec<Vec<u8>>| v.iter().map(Vec::len).sum::<usize>() as f64 / v.len() as f64;
    println!(
        "== size and time: echo {} msgs avg {:.0} B, ticker {} msgs avg {:.0} B, json {} msgs avg {:.0} B, big {} B",
        s.echo.len(),
        avg(&s.echo),
        s.ticker.len(),
        avg(&s.ticker),
        s.json.len(),
        avg(&s.json),
        s.big.len()
    );
    println!("B = compressed bytes per message (trailer cut), us = microseconds per message (best of {REPS});");
    println!("ctx: one compressor for the whole sequence; noctx: reset before each message");
    println!(
        "{:>4} {:>2} {:>3} | {:>12} | {:>12} | {:>12} | {:>12} | {:>12} | {:>12}",
        "bits",
        "ml",
        "lvl",
        "echo ctx",
        "ticker ctx",
        "ticker noctx",
        "json ctx",
        "json noctx",
        "64K JSON"
    );
    let mut out = Vec::new();
    for (bits, ml) in [(15, 8), (12, 8), (12, 5), (12, 1)] {
        for lvl in 1..=9 {
            let mut d = Deflate::new_with_config(zcfg(lvl, bits, ml));
            let mut cells = Vec::new();
            for (set, ctx) in [
                (&s.echo, true),
                (&s.ticker, true),
                (&s.ticker, false),
                (&s.json, true),
                (&s.json, false),
            ] {
                let (t, bytes) = best(|| {
                    d.reset();
                    let mut tot = 0;
                    for m in set.iter() {
                        if !ctx {
                            d.reset();
                        }
                        tot += comp(&mut d, m, &mut out);
                    }
                    tot
                });
                cells.push(format!(
                    "{:>5.1} {:>4.1}us",
                    bytes as f64 / set.len() as f64,
                    t * 1e6 / set.len() as f64
                ));
            }
            let (t, n) = best(|| {
                d.reset();
                comp(&mut d, &s.big, &mut out)
            });
            cells.push(format!("{:>6} {:>4.0}us", n, t * 1e6));
            println!("{bits:>4} {ml:>2} {lvl:>3} | {}", cells.join(" | "));
        }
    }
}

/// The costs that decide the threshold and the no-context-takeover
/// policy, through PerMessageDeflate at the defaults.
fn policy() {
    let s = sets();
    let cfg = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    println!("== per-message cost through PerMessageDeflate (defaults, threshold 0)");
    for (name, nct) in [
        ("context takeover", false),
        (
            "no context takeover (state dropped after each message)",
            true,
        ),
    ] {
        let p = DeflateParams {
            server_no_context_takeover: nct,
            client_no_context_takeover: nct,
            ..DeflateParams::default()
        };
        for (set_name, set) in [("ticker", &s.ticker), ("json", &s.json)] {
            let mut wire = Vec::new();
            let (tc, bytes) = best(|| {
                let mut tx = PerMessageDeflate::new(Role::Server, &p, &cfg);
                wire.clear();
                let mut tot = 0;
                for m in set.iter() {
                    let c = tx.compress(m, true, SendMode::Auto).unwrap();
                    tot += c.payload.len();
                    wire.push((c.rsv1, c.payload.into_owned()));
                }
                tot
            });
            // Decompress what one run sent (a fresh receiver each time).
            let (td, _) = best(|| {
                let mut rx = PerMessageDeflate::new(Role::Client, &p, &cfg);
                let mut o = Vec::new();
                for (rsv1, w) in &wire {
                    o.clear();
                    if *rsv1 {
                        rx.decompress(w, true, usize::MAX, &mut o).unwrap();
                    }
                }
            });
            println!(
                "{name}, {set_name}: {:.1} B/msg, compress {:.1} us/msg, decompress {:.1} us/msg",
                bytes as f64 / set.len() as f64,
                tc * 1e6 / set.len() as f64,
                td * 1e6 / set.len() as f64
            );
        }
    }
    println!("== small messages: size after compression (defaults), no context / context takeover (2nd of 2 alike)");
    for len in [8usize, 16, 32, 48, 64, 96, 128, 256] {
        let m: Vec<u8> = s.ticker[7].iter().copied().cycle().take(len).collect();
        let m2: Vec<u8> = s.ticker[8].iter().copied().cycle().take(len).collect();
        let nctx = {
            let mut d = Deflate::new_with_config(zcfg(
                cfg.level.into(),
                cfg.window_bits.into(),
                cfg.mem_level.into(),
            ));
            comp(&mut d, &m, &mut Vec::new())
        };
        let ctx = {
            let mut d = Deflate::new_with_config(zcfg(
                cfg.level.into(),
                cfg.window_bits.into(),
                cfg.mem_level.into(),
            ));
            comp(&mut d, &m, &mut Vec::new());
            comp(&mut d, &m2, &mut Vec::new())
        };
        println!("{len:>4} B -> {nctx:>4} B / {ctx:>4} B");
    }
}

/// Write the message sets to `dir` (each message: 4-byte little-endian
/// length, then its bytes) for comparisons with other zlibs.
fn dump(dir: &str) {
    let s = sets();
    for (name, set) in [
        ("echo", &s.echo),
        ("ticker", &s.ticker),
        ("json", &s.json),
        ("big", &vec![s.big.clone()]),
    ] {
        let mut v = Vec::new();
        for m in set.iter() {
            v.extend_from_slice(&(m.len() as u32).to_le_bytes());
            v.extend_from_slice(m);
        }
        let path = format!("{dir}/{name}.bin");
        std::fs::write(&path, v).unwrap();
        println!("wrote {path}");
    }
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if what == "dump" {
        dump(&std::env::args().nth(2).unwrap_or_else(|| ".".into()));
        return;
    }
    if what == "mem" || what == "all" {
        mem();
    }
    if what == "levels" || what == "all" {
        levels();
    }
    if what == "policy" || what == "all" {
        policy();
    }
}
