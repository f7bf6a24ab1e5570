//! A shard on the embedded demo config, kept across inputs (state builds up as in a real
//! run), with time moving forward a second per input.
use std::sync::Mutex;

use switchboard::clock::Timestamp;
use switchboard::config::{Config, EMBEDDED_DEFAULT};
use switchboard::core::{Command, Shard};

static SHARD: Mutex<Option<(Shard, u64)>> = Mutex::new(None);

pub fn handle(command: Command) {
    let mut guard = SHARD.lock().unwrap_or_else(|p| p.into_inner());
    let (shard, now) = guard.get_or_insert_with(|| {
        let config = Config::from_toml_str(EMBEDDED_DEFAULT).expect("the demo config is valid");
        (Shard::new(&config, |_| true), 1_700_000_000_000)
    });
    *now += 1_000;
    let mut effects = Vec::new();
    let _ = shard.handle(Timestamp(*now), command, &mut effects);
}
