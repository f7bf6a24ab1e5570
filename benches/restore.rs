//! How long taking over a partition takes for a tenant with 100,000 tracked customers (each
//! with a conversation, an open window, one message of context, a remembered message id, a
//! counted business-initiated send): its snapshot is written through the real state store to
//! a Tansu broker (memory engine; `scripts/broker-suite` installs Tansu), then read back,
//! parsed and restored into a fresh shard. (librdkafka's mock cluster keeps only the last few
//! megabytes of a partition, too little for this snapshot.)
//!
//! Anchor, in the same run: reading the same snapshot records from the same cluster as raw
//! bytes (no parsing, no restore). Reported: the restore time, the anchor, their ratio
//! (median of 3 rounds and the spread), and the snapshot size.
//!
//! Run: `cargo bench --bench restore`.
use std::time::{Duration, Instant};

use switchboard::clock::Timestamp;
use switchboard::config::{Category, Config};
use switchboard::core::{Command, Inbound, Outbound, Reply, Shard, TenantState};
use switchboard::kafka::state::StateStore;
use switchboard::model::{Channel, TenantId};

#[path = "support/allocator.rs"]
mod allocator;

const CUSTOMERS: u64 = 100_000;

fn config(brokers: &str) -> Config {
    let mut config = Config::from_toml_str(
        r#"
        [limits]
        dedup_max_ids = 200000
        [[tenants]]
        id = "big"
        default_region = "ES"
        bot = "bot"
        default_queue = "q"
        [[tenants.queues]]
        name = "q"
        sla_target_secs = 60
        max_wait_secs = 600
        [[tenants.numbers]]
        id = "N"
        mps = 1000
        [tenants.quotas]
        messaging_limit = 10000000
        max_tracked_sends = 100000
        [kafka]
        "#,
    )
    .expect("valid");
    config.kafka.brokers = brokers.to_owned();
    config
}

/// A shard whose tenant tracks `CUSTOMERS` customers.
fn loaded(config: &Config) -> (Shard, Timestamp) {
    let mut shard = Shard::new(config, |_| true);
    let mut effects = Vec::new();
    let mut now = 1_700_000_000_000u64;
    for i in 0..CUSTOMERS {
        now += 1;
        let customer = format!("+34{:09}", 600_000_000 + i);
        let inbound = Inbound {
            tenant: TenantId::new("big"),
            customer: customer.clone(),
            channel: Channel::WhatsApp,
            provider_message_id: format!("wamid.{i}"),
            text: "hola, ¿dónde está mi pedido?".into(),
            business_number: None,
            email: None,
            visitor_id: None,
            profile_name: None,
        };
        shard
            .handle(Timestamp(now), Command::Ingest(inbound), &mut effects)
            .expect("routed");
        let send = Outbound {
            tenant: TenantId::new("big"),
            from: "N".into(),
            to: format!("+34{:09}", 700_000_000 + i),
            category: Category::Utility,
            content: "order_shipped".into(),
            template: None,
            priority: None,
            idempotency_key: format!("k{i}"),
            valid_for_ms: None,
            tag: None,
            send_at: None,
            thread: None,
        };
        shard
            .handle(Timestamp(now), Command::Send(send), &mut effects)
            .expect("admitted");
        effects.clear();
    }
    (shard, Timestamp(now))
}

#[path = "../tests/support/tansu.rs"]
mod tansu;

fn main() {
    let broker = tansu::Tansu::memory();
    let mut config = config(&broker.brokers());
    config.kafka.topic_partitions = 1;
    config.kafka.replication_factor = 1;
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime
        .block_on(switchboard::kafka::create_topics(&config.kafka))
        .expect("topics");
    let store = StateStore::new(&config.kafka).expect("a state store");

    let (mut shard, now) = loaded(&config);
    let mut effects = Vec::new();
    let Ok(Reply::State(state)) = shard.handle(
        now,
        Command::SaveState {
            tenant: TenantId::new("big"),
        },
        &mut effects,
    ) else {
        panic!("a state");
    };
    let json = serde_json::to_vec(&state).expect("serializes");
    println!(
        "snapshot of {CUSTOMERS} customers ({} conversations, {} counted): {} bytes, {} B per customer",
        state.conversations.len(),
        state.quota.counted.len(),
        json.len(),
        json.len() as u64 / CUSTOMERS
    );
    let manifest = runtime
        .block_on(store.write(
            0,
            0,
            Vec::new(),
            0,
            vec![("big".into(), json.clone())],
            None,
            0,
            Vec::new(),
        ))
        .expect("written");

    let mut rounds = Vec::new();
    for round in 0..3 {
        // Anchor: the same records as raw bytes.
        let started = Instant::now();
        let mut raw = 0usize;
        let (_, end) = store
            .end_of(&config.kafka.state_topic, 0)
            .expect("watermarks");
        store
            .scan(
                0,
                manifest.first.expect("a tenant's state has chunks"),
                end,
                |m| {
                    use rdkafka::message::Message;
                    raw += m.payload().map_or(0, <[u8]>::len);
                },
            )
            .expect("read");
        let anchor = started.elapsed();

        let started = Instant::now();
        let snapshot = store.read(0).expect("read").expect("a snapshot");
        let (_, records) = &snapshot.tenants[0];
        let state: TenantState = serde_json::from_slice(&records[0]).expect("parses");
        let mut fresh = Shard::new(&config, |_| true);
        fresh
            .handle(
                now,
                Command::RestoreState {
                    tenant: TenantId::new("big"),
                    state: Some(Box::new(state)),
                },
                &mut effects,
            )
            .expect("restored");
        let restore = started.elapsed();
        println!(
            "round {round}: restore {:.3} s, anchor (raw read of {raw} bytes) {:.3} s, ratio {:.1}",
            restore.as_secs_f64(),
            anchor.as_secs_f64(),
            restore.as_secs_f64() / anchor.as_secs_f64()
        );
        rounds.push((restore, anchor));
    }
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|(r, a)| r.as_secs_f64() / a.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let mut restores: Vec<Duration> = rounds.iter().map(|(r, _)| *r).collect();
    restores.sort();
    println!(
        "restore of {CUSTOMERS} customers: median {:.3} s ({:.3}–{:.3}); ratio to the raw read: median {:.1} ({:.1}–{:.1})",
        restores[1].as_secs_f64(),
        restores[0].as_secs_f64(),
        restores[2].as_secs_f64(),
        ratios[1],
        ratios[0],
        ratios[2]
    );
}
