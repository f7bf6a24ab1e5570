//! The shard's slowest messages (issue 18's steadiness): 2,500,000 inbound messages from
//! 1,000,000 customers chosen at random, each timed; prints the time of each 100,000 and the
//! slowest single messages with where they fell. Time moves a millisecond a message, and the
//! shard is ticked every second of it, as the runtime does (`runtime.tick_interval_ms`): each
//! tick is timed too, and the slowest are printed apart (every `limits.sweep_interval_secs`
//! a tick sweeps the conversations past their retention). A table that rehashed every entry
//! at once showed here as one message taking ~0.7 s at 917,504 customers (three indexes
//! growing at once); growth moved over a few entries at a time shows as none above ~25 ms. Until
//! session 28 the first message took ~100–180 ms (the E.164 fast path's tables, built once a
//! process); a tenant now makes them when it is made (`e164::prepare`).
//! Anchor: the median message of the same run. Not a criterion bench: the figure is the
//! tail, not the mean.
//!
//! Run: `cargo bench --bench stalls` (`STALLS_MESSAGES`, `STALLS_CUSTOMERS` to change the
//! counts).
use switchboard::clock::{Stopwatch, Timestamp};
use switchboard::config::Config;
use switchboard::core::{Command, Effect, Inbound, Shard};
use switchboard::model::{Channel, TenantId};

#[path = "support/allocator.rs"]
mod allocator;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // The allocator's settings as the service sets them at start.
    switchboard::allocator::tune();
    let messages = count("STALLS_MESSAGES", 2_500_000);
    let customers = count("STALLS_CUSTOMERS", 1_000_000).max(1);
    let config = Config::from_toml_str(switchboard::config::EMBEDDED_DEFAULT).expect("embedded");
    let mut shard = Shard::new(&config, |_| true);
    let mut effects: Vec<Effect> = Vec::new();
    let mut now = 1_700_000_000_000u64;
    // xorshift: the same customers every run, no crate needed.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut times = Vec::with_capacity(messages);
    let mut ticks = Vec::new();
    let mut laps = Vec::new();
    let lap = Stopwatch::start();
    let mut lap_start = lap.elapsed();
    for i in 0..messages {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x % customers as u64) as usize;
        let message = Inbound {
            tenant: TenantId::new("demo"),
            customer: format!(
                "+346{:02}{:03}{:03}",
                10 + n / 1_000_000,
                (n / 1000) % 1000,
                n % 1000
            ),
            channel: Channel::WhatsApp,
            provider_message_id: format!("wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQzRUIw{i:010}"),
            text: "hola, ¿dónde está mi pedido?".into(),
            business_number: None,
            email: None,
            visitor_id: None,
            profile_name: None,
        };
        now += 1;
        let one = Stopwatch::start();
        shard
            .handle(Timestamp(now), Command::Ingest(message), &mut effects)
            .expect("valid messages route");
        times.push((one.elapsed(), i));
        effects.clear();
        if now.is_multiple_of(1_000) {
            let one = Stopwatch::start();
            shard
                .handle(Timestamp(now), Command::Tick, &mut effects)
                .expect("a tick");
            ticks.push((one.elapsed(), i));
            effects.clear();
        }
        if (i + 1) % 100_000 == 0 {
            let at = lap.elapsed();
            laps.push((at - lap_start).as_millis());
            lap_start = at;
        }
    }
    println!("{messages} messages from {customers} customers; ms per 100,000: {laps:?}");
    times.sort_unstable();
    let median = times[times.len() / 2].0;
    println!("median message: {median:?}");
    for (took, at) in times.iter().rev().take(10) {
        println!(
            "  {took:?} ({:.0}× the median) at message {at}",
            took.as_secs_f64() / median.as_secs_f64().max(1e-9)
        );
    }
    ticks.sort_unstable();
    let Some((median, _)) = ticks.get(ticks.len() / 2) else {
        return;
    };
    println!(
        "{} ticks (a second apart), the median {median:?}; the slowest:",
        ticks.len()
    );
    for (took, at) in ticks.iter().rev().take(5) {
        println!("  {took:?} after message {at}");
    }
}
