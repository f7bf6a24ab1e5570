//! Routing decision cost against its anchor, protobuf decode alone (shared/design/PERFORMANCE.md).
//!
//! Every case runs over the same pre-encoded `InboundMessage`s. The anchor only decodes them;
//! the measured loops decode them and route them through `Shard::handle` (identify, dedup,
//! context, window, classify, decide), as the gRPC adapter does. Report the ratio
//! `route_* / decode_only` from one run.
//!
//! On a shared machine the cases, run one after the other, can each meet a different spell
//! of the host's noise. `ROUTING_PAIRED=<rounds> cargo bench --bench routing` instead
//! alternates the anchor and a measured loop, each round timing 100,000 decodes, then
//! 100,000 messages routed (known customers' rounds, then new customers'), and prints each
//! round's ratio and their median and spread: both sides of a ratio meet the same noise.
//! `ROUTING_CASES=known` (or `new`) runs one of the two (for a profiler). Either way the bench
//! runs on the service's allocator settings (`switchboard::allocator::tune`).
//!
//! Cases:
//! - `route_known_bot`: known customers in E.164, a mix of simple intents and unclassified
//!   text, no agent online: the bot path (classification + SLA estimate + bot effect).
//! - `route_follow_up_agent`: known customers whose conversations agents hold: follow-ups.
//! - `route_national_format`: the same as `route_known_bot` but numbers in national format,
//!   so every message pays a full `phonenumber` parse.
//! - `route_new_customer`: every message from a customer never seen, in E.164 (as WhatsApp
//!   sends them): the number checked (the E.164 fast path), a conversation opened. Time
//!   moves one second a message and conversations are kept for a day, so about 86,400 are
//!   live (the shard's tick sweeps them every 10,000 messages, in the timed loop) and each
//!   message also pays, on average, for forgetting one.
//! - `classify_only`: the demo tenant's intent classification alone over the same texts in
//!   turn (folding, the keyword automaton, the gated pattern): the part of a known
//!   customer's route that reads the text, with no memory to wait on.
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use prost::Message as _;
use switchboard::clock::Timestamp;
use switchboard::config::Config;
use switchboard::core::classify::Classifier;
use switchboard::core::{Command, Effect, Inbound, Shard};
use switchboard::model::{AgentId, Channel, Presence, TenantId};
use switchboard::proto;

#[path = "support/allocator.rs"]
mod allocator;

/// Distinct customers cycled through. Message ids are unique across a full cycle of the pool,
/// and `dedup_max_ids` is below the pool size, so no message is ever seen as a duplicate.
const CUSTOMERS: usize = 10_000;
const POOL: usize = 100_000;

const TEXTS: [&str; 5] = [
    "Hola, ¿cuál es el horario de la tienda de Gran Vía este sábado?",
    "Hi, how much does the premium plan cost per month?",
    "quiero saber el estado del pedido 48213, gracias",
    "hola buenas tardes, tengo una consulta sobre mi cuenta",
    "thanks! that's all I needed",
];

fn config() -> Config {
    let mut c = Config::from_toml_str(switchboard::config::EMBEDDED_DEFAULT).unwrap();
    c.limits.dedup_max_ids = POOL / 2;
    c
}

/// `POOL` messages with unique ids; message `i` comes from customer `customer(i)` and carries
/// `TEXTS[text(i)]`.
fn encoded(
    national: bool,
    customer: impl Fn(usize) -> usize,
    text: impl Fn(usize) -> usize,
) -> Vec<Bytes> {
    (0..POOL)
        .map(|i| {
            let n = customer(i);
            let number = if national {
                format!(
                    "6{:02} {:03} {:03}",
                    10 + n / 1_000_000,
                    (n / 1000) % 1000,
                    n % 1000
                )
            } else {
                format!(
                    "+346{:02}{:03}{:03}",
                    10 + n / 1_000_000,
                    (n / 1000) % 1000,
                    n % 1000
                )
            };
            let m = proto::InboundMessage {
                tenant: "demo".into(),
                customer: number,
                channel: proto::Channel::Whatsapp as i32,
                provider_message_id: format!("wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQzRUIw{i:010}"),
                text: TEXTS[text(i)].into(),
                business_number: String::new(),
                ..Default::default()
            };
            Bytes::from(m.encode_to_vec())
        })
        .collect()
}

/// Every customer in turn, texts in turn.
fn mixed(national: bool) -> Vec<Bytes> {
    encoded(national, |i| i % CUSTOMERS, |i| i % TEXTS.len())
}

fn decode(bytes: &Bytes) -> Inbound {
    let m = proto::InboundMessage::decode(bytes.clone()).expect("encoded above");
    Inbound {
        tenant: TenantId::new(&m.tenant),
        customer: m.customer,
        channel: match m.channel {
            2 => Channel::WebChat,
            3 => Channel::Voice,
            _ => Channel::WhatsApp,
        },
        provider_message_id: m.provider_message_id,
        text: m.text,
        business_number: None,
        email: None,
        visitor_id: None,
        profile_name: None,
    }
}

struct Router {
    shard: Shard,
    now: u64,
    effects: Vec<Effect>,
}

impl Router {
    fn new() -> Self {
        Self::with(&config())
    }

    fn with(config: &Config) -> Self {
        Self {
            shard: Shard::new(config, |_| true),
            now: 1_700_000_000_000,
            effects: Vec::with_capacity(8),
        }
    }

    /// For `route_new_customer`: conversations kept for a day (the window), not longer.
    fn for_new_customers() -> Self {
        let mut config = config();
        config.limits.conversation_retention_secs = config.limits.window_secs;
        Self::with(&config)
    }

    fn route(&mut self, bytes: &Bytes) {
        self.now += 1;
        let reply = self.shard.handle(
            Timestamp(self.now),
            Command::Ingest(decode(bytes)),
            &mut self.effects,
        );
        black_box(reply.expect("valid messages route"));
        self.effects.clear();
    }

    fn tick(&mut self) {
        let reply = self
            .shard
            .handle(Timestamp(self.now), Command::Tick, &mut self.effects);
        black_box(reply.expect("a tick"));
        self.effects.clear();
    }

    /// Routes one message per customer first, so the measured loop sees known customers.
    fn warm(&mut self, pool: &[Bytes]) {
        for bytes in &pool[..CUSTOMERS] {
            self.route(bytes);
        }
    }
}

fn decode_only(c: &mut Criterion) {
    let e164 = mixed(false);
    let mut i = 0;
    group(c).bench_function("decode_only", |b| {
        b.iter(|| {
            i = (i + 1) % POOL;
            black_box(decode(&e164[i]))
        })
    });
}

fn route_known_bot(c: &mut Criterion) {
    let e164 = mixed(false);
    let mut bot = Router::new();
    bot.warm(&e164);
    let mut i = CUSTOMERS;
    group(c).bench_function("route_known_bot", |b| {
        b.iter(|| {
            i = (i + 1) % POOL;
            bot.route(&e164[i]);
        })
    });
}

fn route_follow_up_agent(c: &mut Criterion) {
    let e164 = mixed(false);
    // 2,500 agents of capacity 4 hold every conversation that was not routed to the bot.
    let mut desk = Router::new();
    for a in 0..CUSTOMERS / 4 {
        desk.shard
            .handle(
                Timestamp(desk.now),
                Command::RegisterAgent {
                    tenant: TenantId::new("demo"),
                    agent: AgentId::new(format!("agent-{a}")),
                    presence: Presence::Online,
                    capacity: 4,
                    queues: vec!["support".into()],
                },
                &mut desk.effects,
            )
            .unwrap();
    }
    desk.warm(&e164);
    // Customers whose first message was unclassified (index 3) went to agents in the warm-up;
    // their follow-ups, each with a new id.
    let follow_ups = encoded(false, |i| (i * TEXTS.len() + 3) % CUSTOMERS, |_| 3);
    let mut i = 0;
    group(c).bench_function("route_follow_up_agent", |b| {
        b.iter(|| {
            i = (i + 1) % follow_ups.len();
            desk.route(&follow_ups[i]);
        })
    });
}

fn route_national_format(c: &mut Criterion) {
    let national = mixed(true);
    let mut parse = Router::new();
    parse.warm(&national);
    let mut i = CUSTOMERS;
    group(c).bench_function("route_national_format", |b| {
        b.iter(|| {
            i = (i + 1) % POOL;
            parse.route(&national[i]);
        })
    });
}

fn route_new_customer(c: &mut Criterion) {
    let mut new = Router::for_new_customers();
    let mut next = 0usize;
    group(c).bench_function("route_new_customer", |b| {
        b.iter_custom(|iters| {
            // Fresh customers for this sample, encoded before the clock starts.
            let batch = encoded_range(next, iters as usize);
            next += batch.len();
            let start = std::time::Instant::now();
            for bytes in &batch {
                new.now += 999; // `route` adds 1: one second a message
                new.route(bytes);
                // The runtime's tick sweeps expired conversations once a sweep interval
                // (`limits.sweep_interval_secs`). A shard sweeps a minute's messages at
                // once, thousands; time is compressed here (a second a message), so the
                // tick comes every 10,000 messages, not every 60.
                if new.now.is_multiple_of(10_000_000) {
                    new.tick();
                }
            }
            start.elapsed()
        })
    });
}

/// `count` messages from customers `first..`, each customer once (numbers +34 6xx xxx xxx,
/// then +34 7xx, all valid Spanish mobiles), with unique ids.
fn encoded_range(first: usize, count: usize) -> Vec<Bytes> {
    (first..first + count)
        .map(|n| {
            let m = proto::InboundMessage {
                tenant: "demo".into(),
                customer: format!("+34{}{:08}", 6 + n / 100_000_000, n % 100_000_000),
                channel: proto::Channel::Whatsapp as i32,
                provider_message_id: format!("wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQzRUIw{n:010}"),
                text: TEXTS[n % TEXTS.len()].into(),
                ..Default::default()
            };
            Bytes::from(m.encode_to_vec())
        })
        .collect()
}

fn group(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    g
}

fn classify_only(c: &mut Criterion) {
    let config = config();
    let tenant = &config.tenants[0];
    let classifier = Classifier::new(&tenant.intents, tenant.default_priority).unwrap();
    let mut i = 0;
    group(c).bench_function("classify_only", |b| {
        b.iter(|| {
            i = (i + 1) % TEXTS.len();
            black_box(classifier.classify(black_box(TEXTS[i])))
        })
    });
}

criterion_group!(
    benches,
    decode_only,
    classify_only,
    route_known_bot,
    route_follow_up_agent,
    route_national_format,
    route_new_customer
);
/// `ROUTING_PAIRED=<rounds>`: the ratios measured in alternating stretches (module docs).
/// Known customers first, then new ones: a new customer's stretch walks through tens of
/// megabytes and would leave the known customers' state out of cache at every round.
fn paired(rounds: usize, cases: &str) {
    let e164 = mixed(false);
    let mut results = Vec::new();
    if cases != "new" {
        results.push(("known", paired_known(rounds, &e164)));
    }
    if cases != "known" {
        results.push(("new", paired_new(rounds, &e164)));
    }
    for (name, mut ratios) in results {
        ratios.sort_by(f64::total_cmp);
        println!(
            "route_{name} / decode: median {:.2}x ({:.2}-{:.2}) over {rounds} rounds",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}

fn paired_known(rounds: usize, e164: &[Bytes]) -> Vec<f64> {
    let mut known = Router::new();
    known.warm(e164);
    let mut j = CUSTOMERS;
    stretches("known", rounds, e164, || {
        for _ in 0..STRETCH {
            j = (j + 1) % POOL;
            known.route(&e164[j]);
        }
        None
    })
}

fn paired_new(rounds: usize, e164: &[Bytes]) -> Vec<f64> {
    let mut new = Router::for_new_customers();
    let mut next = 0;
    stretches("new", rounds, e164, || {
        let fresh = encoded_range(next, STRETCH);
        next += STRETCH;
        let start = std::time::Instant::now();
        for bytes in &fresh {
            new.now += 999; // one second a message, as in `route_new_customer`
            new.route(bytes);
            if new.now.is_multiple_of(10_000_000) {
                new.tick();
            }
        }
        Some(start.elapsed())
    })
}

/// Messages a stretch of [`paired`] times.
const STRETCH: usize = 100_000;

/// `rounds` rounds of a stretch of decoding alone, then one of `route` (which routes
/// `STRETCH` messages, and returns the time they took when it times itself, after a set-up):
/// each round's ratio. The first rounds, not counted, bring the loop to its steady state, as
/// criterion's warm-up and long runs do: every context full (20 messages a customer), the id
/// window full, about a day's new customers live.
fn stretches(
    name: &str,
    rounds: usize,
    pool: &[Bytes],
    mut route: impl FnMut() -> Option<std::time::Duration>,
) -> Vec<f64> {
    let warm = 2 * POOL / STRETCH;
    let mut i = 0;
    let mut ratios = Vec::new();
    for round in 0..warm + rounds {
        let start = std::time::Instant::now();
        for _ in 0..STRETCH {
            i = (i + 1) % POOL;
            black_box(decode(&pool[i]));
        }
        let decode_ns = start.elapsed().as_nanos() as f64 / STRETCH as f64;
        let start = std::time::Instant::now();
        let timed = route().unwrap_or_else(|| start.elapsed());
        let route_ns = timed.as_nanos() as f64 / STRETCH as f64;
        if round >= warm {
            let ratio = route_ns / decode_ns;
            println!(
                "{name} round {}: decode {decode_ns:.0} ns, route {route_ns:.0} ns, {ratio:.2}x",
                round - warm + 1
            );
            ratios.push(ratio);
        }
    }
    ratios
}

fn main() {
    // The service's allocator settings (no transparent huge pages, freed memory returned
    // within ~10 ms): the figures are the shipped binary's.
    switchboard::allocator::tune();
    if let Ok(rounds) = std::env::var("ROUTING_PAIRED") {
        let rounds = rounds
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .expect("ROUTING_PAIRED is a number of rounds (at least 1)");
        let cases = std::env::var("ROUTING_CASES").unwrap_or_default();
        assert!(
            matches!(cases.as_str(), "" | "known" | "new"),
            "ROUTING_CASES is known or new (unset: both)"
        );
        return paired(rounds, &cases);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
