//! Meta's webhook JSON as it arrives on the webhooks topic: any bytes parse or are refused
//! with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = switchboard::wire::webhook::parse(data);
});
