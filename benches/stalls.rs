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
//! `STALLS_CALL=send` times sends instead (`Outbound.Send` as the harness's `--call send`
//! makes them, with its server config, `load-tests/configs/throughput.toml`): customers in
//! turn, a key per send. Until session 30 the log of sends and its index of keys doubled and
//! rehashed whole: single sends of 13–119 ms at 131,072 … 917,504 sends, the harness's p99
//! tail at half the echo's rate.
//!
//! Run: `cargo bench --bench stalls` (`STALLS_MESSAGES`, `STALLS_CUSTOMERS` to change the
//! counts).
use switchboard::clock::{Stopwatch, Timestamp};
use switchboard::config::{Category, Config};
use switchboard::core::{Command, Effect, Inbound, Outbound, Shard};
use switchboard::model::{Channel, TenantId};

/// The server config of the harness's throughput runs of `Outbound.Send`.
const THROUGHPUT: &str = include_str!("../load-tests/configs/throughput.toml");

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
    let sends = std::env::var("STALLS_CALL").is_ok_and(|c| c == "send");
    let config = match sends {
        true => Config::from_toml_str(THROUGHPUT).expect("the throughput config"),
        false => Config::from_toml_str(switchboard::config::EMBEDDED_DEFAULT).expect("embedded"),
    };
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
        let command = match sends {
            // As the harness's `--call send` runs: customers in turn, a key per send, the
            // business numbers taking turns.
            true => Command::Send(Outbound {
                tenant: TenantId::new("demo"),
                from: format!("+3491000000{}", 1 + i % 4),
                to: format!("+3462{:07}", i % customers),
                category: Category::Utility,
                content: "order_shipped".into(),
                template: None,
                priority: None,
                idempotency_key: format!("load.utility.{i}"),
                valid_for_ms: None,
                tag: None,
                send_at: None,
                thread: None,
            }),
            false => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = (x % customers as u64) as usize;
                Command::Ingest(Inbound {
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
                })
            }
        };
        now += 1;
        let one = Stopwatch::start();
        shard
            .handle(Timestamp(now), command, &mut effects)
            .expect("valid messages route, valid sends are admitted");
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
    let what = if sends { "sends to" } else { "messages from" };
    println!("{messages} {what} {customers} customers; ms per 100,000: {laps:?}");
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
