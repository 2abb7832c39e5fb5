//! Utf8Validator across splits must agree with std::str::from_utf8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::proto::utf8::Utf8Validator;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = (data[0] as usize % 7) + 1;
    let input = &data[1..];
    let expect = std::str::from_utf8(input).is_ok();

    // Whole input.
    let mut v = Utf8Validator::new();
    let whole = v.feed(input).is_ok() && v.is_complete();
    assert_eq!(whole, expect);

    // Fixed-size chunks.
    let mut v = Utf8Validator::new();
    let mut ok = true;
    for c in input.chunks(step) {
        if v.feed(c).is_err() {
            ok = false;
            break;
        }
    }
    assert_eq!(ok && v.is_complete(), expect);

    // Byte at a time: the first failure is exactly where the input stops
    // being a prefix of valid UTF-8.
    let mut v = Utf8Validator::new();
    let mut failed_at = None;
    for (i, b) in input.iter().enumerate() {
        if v.feed(std::slice::from_ref(b)).is_err() {
            failed_at = Some(i);
            break;
        }
    }
    match std::str::from_utf8(input) {
        Ok(_) => assert!(failed_at.is_none() && v.is_complete()),
        Err(e) => match e.error_len() {
            Some(n) => {
                // std reports an invalid sequence of n bytes at valid_up_to();
                // we must fail on one of those bytes or the one right after.
                let at = failed_at.expect("must fail");
                assert!(at >= e.valid_up_to() && at <= e.valid_up_to() + n);
            }
            None => assert!(failed_at.is_none() && !v.is_complete()),
        },
    }
});
