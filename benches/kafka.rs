//! The Kafka path's throughput as a ratio to its anchor, a raw rdkafka consume→produce pipe,
//! on the same Tansu broker, topics shape (4 partitions), payloads and reader, in the same run
//! (`../shared/design/PERFORMANCE.md`). Needs Tansu (`scripts/broker-suite` installs it).
//!
//!   cargo bench --bench kafka            # 3 interleaved rounds of 200,000 records each
//!
//! Each side starts with its input already in the topic; the rate is measured by one reader
//! of the output topic, from the first output record to the last (so group joins and start-up
//! are not counted, for either side).
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use switchboard::config::Config;
use switchboard::proto;
use tokio_util::sync::CancellationToken;

#[path = "support/allocator.rs"]
mod allocator;

#[path = "../tests/support/tansu.rs"]
mod tansu;

const N: usize = 200_000;
const ROUNDS: usize = 3;
const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];

fn config(brokers: &str, round: usize) -> Config {
    let mut toml = format!(
        r#"
        [kafka]
        brokers = "{brokers}"
        group_id = "switchboard-{round}"
        replication_factor = 1
        topic_partitions = 4
        inbound_topic = "sb{round}.inbound"
        webhooks_topic = "sb{round}.webhooks"
        sends_topic = "sb{round}.sends"
        routed_topic = "sb{round}.routed"
        dispatch_topic = "sb{round}.dispatch"
        status_topic = "sb{round}.status"
        dlq_topic = "sb{round}.dlq"
        state_topic = "sb{round}.state"
        "#
    );
    for t in TENANTS {
        toml.push_str(&format!(
            "[[tenants]]\nid = \"{t}\"\ndefault_region = \"ES\"\nbot = \"bot\"\ndefault_queue = \"q\"\n\
             [[tenants.queues]]\nname = \"q\"\nsla_target_secs = 60\nmax_wait_secs = 600\n"
        ));
    }
    Config::from_toml_str(&toml).expect("the bench config is valid")
}

fn payload(i: usize) -> (&'static str, Vec<u8>) {
    let tenant = TENANTS[i % TENANTS.len()];
    let m = proto::InboundMessage {
        tenant: tenant.into(),
        customer: format!("+3461{:07}", i % 20_000),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: format!("m{i}"),
        // About 200 bytes encoded, the message size PERFORMANCE.md names.
        text: "hola, ¿dónde está mi pedido? lo compré la semana pasada y el seguimiento no \
               se actualiza desde el martes; ¿me podéis decir cuándo llega, por favor?"
            .into(),
        business_number: String::new(),
        ..Default::default()
    };
    let bytes = m.encode_to_vec();
    debug_assert!((180..=260).contains(&bytes.len()), "{} bytes", bytes.len());
    (tenant, bytes)
}

async fn fill(brokers: &str, topic: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Keyed by tenant onto the tenant's partition, as producers to switchboard should
        // (with librdkafka's default partitioner every record is moved once: half the rate).
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        let (key, bytes) = payload(i);
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(&bytes)) {
                Ok(d) => {
                    pending.push(d);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for d in pending {
        d.await.expect("delivery").expect("acknowledged");
    }
}

/// A reader of `topic` that has joined its group and holds every partition (so the rate it
/// sees is the producer's, not a backlog read at fetch speed).
async fn join_reader(brokers: &str, topic: &str) -> StreamConsumer {
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a reader");
    reader.subscribe(&[topic]).expect("subscribed");
    while reader.assignment().map_or(0, |a| a.count()) < 4 {
        // The topic is empty: polling only drives the group join.
        let _ = tokio::time::timeout(Duration::from_millis(100), reader.recv()).await;
    }
    reader
}

/// Records per second seen by `reader`, first record to the N-th.
async fn output_rate(reader: StreamConsumer) -> f64 {
    let mut first = None;
    for _ in 0..N {
        tokio::time::timeout(Duration::from_secs(120), reader.recv())
            .await
            .expect("output within 120 s")
            .expect("a record");
        first.get_or_insert_with(Instant::now);
    }
    let elapsed = first.expect("N > 0").elapsed();
    (N - 1) as f64 / elapsed.as_secs_f64()
}

/// The anchor: consume, produce the same bytes to the output topic, no waiting per record.
async fn anchor(brokers: &str, round: usize) -> f64 {
    let (input, output) = (format!("anchor{round}.in"), format!("anchor{round}.out"));
    create(brokers, &[&input, &output]).await;
    fill(brokers, &input).await;
    let reader = join_reader(brokers, &output).await;
    let stop = CancellationToken::new();
    let pipe = {
        let (brokers, input, output, stop) = (
            brokers.to_owned(),
            input.clone(),
            output.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("anchor-{round}"))
                .set("auto.offset.reset", "earliest")
                .create()
                .expect("a consumer");
            consumer.subscribe(&[&input]).expect("subscribed");
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("enable.idempotence", "true")
                .create()
                .expect("a producer");
            loop {
                let m = tokio::select! {
                    () = stop.cancelled() => break,
                    m = consumer.recv() => m.expect("a record"),
                };
                let (key, payload) = (m.key().unwrap_or_default(), m.payload().unwrap_or_default());
                while producer
                    .send_result(FutureRecord::to(&output).key(key).payload(payload))
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let _ = producer.flush(Duration::from_secs(10));
        })
    };
    let rate = output_rate(reader).await;
    stop.cancel();
    pipe.await.expect("the pipe ends");
    rate
}

async fn switchboard(brokers: &str, round: usize) -> f64 {
    let config = config(brokers, round);
    switchboard::kafka::create_topics(&config.kafka)
        .await
        .expect("topics");
    fill(brokers, &config.kafka.inbound_topic).await;
    let reader = join_reader(brokers, &config.kafka.routed_topic).await;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchboard::server::run(config, grpc, metrics, async {
        let _ = stopped.await;
    }));
    let rate = output_rate(reader).await;
    let _ = stop.send(());
    server.await.expect("joins").expect("stops cleanly");
    rate
}

async fn create(brokers: &str, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let new: Vec<_> = topics
        .iter()
        .map(|t| NewTopic::new(t, 4, TopicReplication::Fixed(1)))
        .collect();
    admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("topics created");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs with no flag: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let broker = tansu::Tansu::memory();
        let brokers = broker.brokers();
        let mut ratios = Vec::new();
        for round in 0..ROUNDS {
            let a = anchor(&brokers, round).await;
            let s = switchboard(&brokers, round).await;
            println!(
                "round {round}: anchor pipe {a:.0} records/s, switchboard {s:.0} records/s, ratio {:.2}",
                s / a
            );
            ratios.push(s / a);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "kafka path / raw pipe: median {:.2} (min {:.2}, max {:.2}) over {ROUNDS} rounds of {N}",
            ratios[ROUNDS / 2],
            ratios[0],
            ratios[ROUNDS - 1]
        );
    });
}
