//! A config file: any text loads or is refused with an error naming the field, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchboard::config::Config::from_toml_str(text);
    }
});
