//! The real-broker fault suite (Tansu, like `tests/broker.rs`; run by `scripts/broker-suite`):
//! nothing may wedge or crash-loop a replica.
//!
//! - a deployment with fewer tenants than partitions restarts, and scales out and in, with
//!   its tenants' state;
//! - oversized input (a webhook and a protobuf record) and an output the broker refuses are
//!   dead-lettered, and the input, its cuts and its commits go on;
//! - a paused broker turns readiness off (gRPC health and `/ready`), and it comes back on by
//!   itself when the broker runs again, with nothing lost.
//!
//! Every wait is bounded by a guard; the figures a test prints (time to serving) are for the
//! report, never asserted.
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientConfig, Offset};
use switchboard::config::Config;
use switchboard::proto;

mod common;
#[path = "support/suite.rs"]
mod suite;
#[path = "support/tansu.rs"]
mod tansu;
use suite::*;
use tansu::Tansu;

/// `tenants` (see `suite::tenant_toml`) on `brokers`; `kafka` adds settings.
fn config_toml(brokers: &str, tenants: &[&str], kafka: &str) -> String {
    let mut toml = format!(
        r#"
        [runtime]
        tick_interval_ms = 50
        [kafka]
        brokers = "{brokers}"
        replication_factor = 1
        snapshot_interval_ms = 500
        {kafka}
        "#
    );
    for t in tenants {
        toml.push_str(&tenant_toml(t, 1_000));
    }
    toml
}

fn write_config(name: &str, toml: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchboard-faults-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, toml).expect("the config file");
    file
}

/// The gRPC health status of the whole server ("").
async fn grpc_health(addr: &str) -> Option<i32> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status)
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// Waits (bounded by `bound`) until `ok` holds for `/ready`; returns the answer.
async fn wait_ready(
    metrics: &str,
    what: &str,
    bound: Duration,
    ok: impl Fn(u16, &str) -> bool,
) -> String {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < bound {
        last = http(metrics, "/ready").await;
        if let Some((code, body)) = &last
            && ok(*code, body)
        {
            return body.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: /ready answered {last:?} for {bound:?}");
}

/// The quota of `tenant` through `grpc`, once it is served (bounded).
async fn quota(grpc: &str, tenant: &str) -> proto::PortfolioQuota {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .expect("an address")
        .connect_lazy();
    let started = Instant::now();
    loop {
        let answer = proto::quotas_client::QuotasClient::new(channel.clone())
            .get(proto::QuotaRef {
                tenant: tenant.into(),
            })
            .await;
        match answer {
            Ok(q) => return q.into_inner(),
            Err(e) if started.elapsed() < Duration::from_secs(90) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{tenant}'s quota not served by {grpc} within 90 s: {e}"),
        }
    }
}

/// A free-form (session) send from the tenant's number over gRPC: its admission and reason.
async fn session_send(
    grpc: &str,
    tenant: &str,
    to: &str,
    key: &str,
) -> (proto::Admission, proto::RefusalReason) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .expect("an address")
        .connect_lazy();
    let answer = proto::outbound_client::OutboundClient::new(channel)
        .send(proto::SendRequest {
            tenant: tenant.into(),
            from: format!("{tenant}-n"),
            to: to.into(),
            category: proto::Category::Session as i32,
            content: "su pedido sale hoy".into(),
            template: None,
            priority: 0,
            idempotency_key: key.into(),
            valid_for_ms: 0,
            ..Default::default()
        })
        .await
        .expect("a session send is answered")
        .into_inner();
    (answer.admission(), answer.reason())
}

/// The demo deployment's shape: one tenant, the default 12 partitions. A restart (SIGTERM,
/// start again) serves again with the tenant's daily count and open windows; so does a
/// second replica joining and leaving. (Before: 11 partitions without tenants had manifests
/// the reader took for lost snapshots, and the restart exited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn one_tenant_on_twelve_partitions_restarts_and_scales_with_its_state() {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    let toml = config_toml(&brokers, &["acme"], "");
    let config = Config::from_toml_str(&toml).expect("valid config");
    assert_eq!(config.kafka.topic_partitions, 12, "the default");
    let file = write_config("restart", &toml);
    let (grpc_a, metrics_a) = (free_addr(), free_addr());
    let a = Process::start_on(&file, &grpc_a, &metrics_a);
    wait_owned(&[&metrics_a], "the first start owns all 12", |o| o[0] == 12).await;

    // Ten customers write (their windows open); twenty marketing sends go out.
    let input = producer(&brokers);
    let writers: Vec<String> = (0..10).map(|i| format!("+3461100{i:04}")).collect();
    let messages = writers
        .iter()
        .enumerate()
        .map(|(i, c)| ("acme".to_owned(), inbound(&format!("w{i}"), "acme", c)))
        .collect();
    produce_all(&input, "switchboard.inbound", messages).await;
    let sends = (0..20)
        .map(|i| {
            let to = format!("+3462200{i:04}");
            send_request(
                "acme",
                "acme-n",
                &format!("promo-{i}"),
                &to,
                proto::Category::Marketing,
            )
        })
        .collect();
    produce_all(&input, "switchboard.sends", sends).await;
    let routed = reader(&brokers, &["switchboard.routed"]);
    let ids = RefCell::new(HashSet::new());
    read_until(
        &routed,
        "the ten messages routed",
        |m| {
            let d = proto::RoutingDecision::decode(m.payload().unwrap_or_default())
                .expect("a decision");
            ids.borrow_mut().insert(d.provider_message_id);
        },
        || ids.borrow().len() >= 10,
    )
    .await;
    let statuses = reader(&brokers, &["switchboard.status"]);
    let dispatched = RefCell::new(HashSet::new());
    read_until(
        &statuses,
        "the twenty sends dispatched",
        |m| {
            let s = proto::SendStatus::decode(m.payload().unwrap_or_default()).expect("a status");
            if s.state() == proto::SendState::Dispatched {
                dispatched.borrow_mut().insert(s.idempotency_key);
            }
        },
        || dispatched.borrow().len() >= 20,
    )
    .await;
    let before = quota(&grpc_a, "acme").await.used;
    assert_eq!(before, 20, "twenty new customers reached");

    // Restart: SIGTERM (final snapshots of all 12 partitions, 11 of them without tenants),
    // start again.
    a.terminate();
    let restarted = Instant::now();
    let a = Process::start_on(&file, &grpc_a, &metrics_a);
    let after = quota(&grpc_a, "acme").await.used;
    let to_serving = restarted.elapsed();
    wait_ready(
        &metrics_a,
        "ready after the restart",
        Duration::from_secs(60),
        |c, _| c == 200,
    )
    .await;
    assert_eq!(after, before, "the daily count survives the restart");
    assert_eq!(
        session_send(&grpc_a, "acme", &writers[0], "reply-0").await,
        (
            proto::Admission::Dispatched,
            proto::RefusalReason::Unspecified
        ),
        "the customer's window is still open"
    );
    assert_eq!(
        session_send(&grpc_a, "acme", "+34633000001", "cold-0")
            .await
            .1,
        proto::RefusalReason::TemplateRequired,
        "no window for a customer who never wrote"
    );

    // A second replica joins (the group splits the 12 partitions), then leaves.
    let (grpc_b, metrics_b) = (free_addr(), free_addr());
    let b = Process::start_on(&file, &grpc_b, &metrics_b);
    let (split, _) = wait_owned(&[&metrics_a, &metrics_b], "the partitions split", |o| {
        o.iter().all(|&n| n >= 1) && o.iter().sum::<usize>() == 12
    })
    .await;
    wait_ready(
        &metrics_b,
        "the second replica ready",
        Duration::from_secs(60),
        |c, _| c == 200,
    )
    .await;
    assert_eq!(
        quota(&grpc_b, "acme").await.used,
        before,
        "either replica answers the same count"
    );
    assert_eq!(
        session_send(&grpc_b, "acme", &writers[1], "reply-1")
            .await
            .0,
        proto::Admission::Dispatched,
        "the window is open wherever the tenant went"
    );
    b.terminate();
    wait_owned(&[&metrics_a], "the first replica owns all 12 again", |o| {
        o[0] == 12
    })
    .await;
    assert_eq!(quota(&grpc_a, "acme").await.used, before);
    assert_eq!(
        session_send(&grpc_a, "acme", &writers[2], "reply-2")
            .await
            .0,
        proto::Admission::Dispatched
    );
    wait_ready(
        &metrics_a,
        "ready after the scale-in",
        Duration::from_secs(60),
        |c, _| c == 200,
    )
    .await;
    eprintln!(
        "one tenant on 12 partitions: serving {to_serving:?} after the restart (the process \
         start included); split {split:?} with a second replica; daily count {before} kept \
         through restart, scale-out and scale-in"
    );
    a.terminate();
    drop((routed, statuses, input, broker));
}

/// The committed offsets of `group` on every partition of `topic` have reached the end.
async fn committed_to_the_end(brokers: &str, group: &str, topic: &str, partitions: i32) -> bool {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("an offsets reader");
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(&topic, p);
        }
        let Ok(committed) = c.committed_offsets(list, Duration::from_secs(10)) else {
            return false;
        };
        (0..partitions).all(|p| {
            let high = c
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map_or(i64::MAX, |(_, h)| h);
            match committed.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o >= high,
                _ => high == 0,
            }
        })
    })
    .await
    .expect("the offsets reader does not panic")
}

/// A Meta webhook of about `bytes` bytes: one text message with a very long body.
fn huge_webhook(bytes: usize) -> Vec<u8> {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"34910000001","phone_number_id":"1-n"}},"messages":[{{"from":"34611111111","id":"wamid.HUGE","timestamp":"1749416383","type":"text","text":{{"body":"{}"}}}}]}}}}]}}]}}"#,
        "a".repeat(bytes)
    )
    .into_bytes()
}

/// A 2 MB webhook, a 2 MB protobuf record and a record whose output the broker refuses,
/// each followed by 1,000 normal records: each bad one is on the dead-letter topic (cut to
/// what fits beside its headers and marked, or whole), all 3,000 normal ones are routed, and
/// cuts and commits go on (the group's committed offsets reach the end of every input
/// partition; readiness stays on).
///
/// The refusal is Tansu's own: a JSON schema on `switchboard.routed` wants every key to be
/// a JSON number, so the routing decision of tenant "x" (key `x`) is refused with
/// INVALID_RECORD while tenants "1", "2" and "3" pass. Before, the two 2 MB dead letters were
/// over the producer's size limit, retried for ever, and held every later commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn oversized_and_refused_records_are_dead_lettered_and_the_input_goes_on() {
    const SCHEMA: &str = r#"{"type": "object", "properties": {"key": {"type": "number"}}}"#;
    let broker = Tansu::with_schemas(&[("switchboard.routed", SCHEMA)]);
    let brokers = broker.brokers();
    let tenants = ["1", "2", "3", "x"];
    let toml = config_toml(
        &brokers,
        &tenants,
        "topic_partitions = 4\nstatistics_interval_ms = 1000",
    );
    let config = Config::from_toml_str(&toml).expect("valid config");
    switchboard::kafka::create_topics(&config.kafka)
        .await
        .expect("topics created");
    let (grpc, metrics) = (free_addr(), free_addr());
    let service = Process::start_on(&write_config("oversize", &toml), &grpc, &metrics);
    wait_owned(&[&metrics], "all 4 partitions owned", |o| o[0] == 4).await;

    let big: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.max.bytes", "8000000")
        .set("batch.num.messages", "1")
        .create()
        .expect("a producer for 2 MB records");
    let input = producer(&brokers);
    let normal = |round: usize| -> Vec<(String, Vec<u8>)> {
        (0..1_000)
            .map(|i| {
                let t = tenants[i % 3]; // not "x"
                let id = format!("r{round}-{i}");
                (
                    t.to_owned(),
                    inbound(&id, t, &format!("+3461{round}{i:06}")),
                )
            })
            .collect()
    };
    let two_mb = 2 * 1024 * 1024;
    produce_all(
        &big,
        "switchboard.webhooks",
        vec![("1".into(), huge_webhook(two_mb))],
    )
    .await;
    produce_all(&input, "switchboard.inbound", normal(0)).await;
    let huge_proto = proto::InboundMessage {
        tenant: "2".into(),
        customer: "+34611111112".into(),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: "huge".into(),
        text: "a".repeat(two_mb),
        business_number: String::new(),
        ..Default::default()
    };
    produce_all(
        &big,
        "switchboard.inbound",
        vec![("2".into(), huge_proto.encode_to_vec())],
    )
    .await;
    produce_all(&input, "switchboard.inbound", normal(1)).await;
    produce_all(
        &input,
        "switchboard.inbound",
        vec![("x".into(), inbound("refused", "x", "+34611111113"))],
    )
    .await;
    produce_all(&input, "switchboard.inbound", normal(2)).await;

    let routed = reader(&brokers, &["switchboard.routed"]);
    let ids = RefCell::new(HashSet::new());
    read_until(
        &routed,
        "all 3,000 normal records routed",
        |m| {
            let d = proto::RoutingDecision::decode(m.payload().unwrap_or_default())
                .expect("a decision");
            ids.borrow_mut().insert(d.provider_message_id);
        },
        || (0..3).all(|r| (0..1_000).all(|i| ids.borrow().contains(&format!("r{r}-{i}")))),
    )
    .await;
    assert!(
        !ids.borrow().contains("refused"),
        "the broker refused that decision"
    );

    let dlq = reader(&brokers, &["switchboard.dlq"]);
    let dead: RefCell<Vec<(HashMap<String, String>, usize)>> = RefCell::default();
    read_until(
        &dlq,
        "the three bad records dead-lettered",
        |m| {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            dead.borrow_mut()
                .push((headers, m.payload().map_or(0, <[u8]>::len)));
        },
        || dead.borrow().len() >= 3,
    )
    .await;
    let dead = dead.into_inner();
    // kafka.max_record_bytes and 8 KiB: what fits in the producer's limit beside the headers.
    let limit =
        switchboard::kafka::outbox::Settings::for_config(&config.kafka).dead_letter_payload();
    assert_eq!(limit, config.kafka.max_record_bytes + 8 * 1024);
    let find = |topic: &str, reason: &str| {
        dead.iter()
            .find(|(h, _)| {
                h.get("switchboard.original.topic").map(String::as_str) == Some(topic)
                    && h.get("switchboard.error.reason").map(String::as_str) == Some(reason)
            })
            .unwrap_or_else(|| panic!("a {reason} dead letter of {topic}: {dead:?}"))
    };
    let (webhook, len) = find("switchboard.webhooks", "oversize");
    assert_eq!(*len, limit, "cut to what fits");
    assert_eq!(
        webhook["switchboard.payload.truncated"],
        huge_webhook(two_mb).len().to_string()
    );
    let (record, len) = find("switchboard.inbound", "oversize");
    assert_eq!(*len, limit);
    assert_eq!(
        record["switchboard.payload.truncated"],
        huge_proto.encode_to_vec().len().to_string()
    );
    let (refused, len) = find("switchboard.routed", "refused");
    assert!(
        refused["switchboard.error"].contains("nvalid"),
        "{refused:?}"
    );
    assert_eq!(
        refused.get("switchboard.original.key").map(String::as_str),
        Some("x")
    );
    assert!(*len > 0, "the refused decision is kept whole");

    // Cuts and commits went on past all three.
    let started = Instant::now();
    while !committed_to_the_end(&brokers, "switchboard", "switchboard.inbound", 4).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "commits did not reach the end within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, body) = http(&metrics, "/ready").await.expect("/ready answers");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let scrape = http(&metrics, "/metrics").await.expect("metrics").1;
    assert!(
        scrape.contains(r#"switchboard_kafka_outputs_refused_total{topic="switchboard.routed",fate="dead_lettered"} 1"#),
        "{}",
        scrape.lines().filter(|l| l.contains("refused")).collect::<Vec<_>>().join("\n")
    );
    service.terminate();
    drop((routed, dlq, input, big, broker));
}

/// The broker stops answering (SIGSTOP) mid-stream: once outputs have waited
/// `kafka.stall_timeout_ms` without an acknowledgement, readiness turns off, with the reason
/// in `/ready`, gRPC health NOT_SERVING and `switchboard_kafka_unhealthy{condition=
/// "input_stalled"} 1`; SIGCONT, and it turns on again by itself, and every record is routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn a_paused_broker_turns_readiness_off_and_back_on_with_nothing_lost() {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    let tenants = ["t0", "t1", "t2", "t3"];
    let toml = config_toml(
        &brokers,
        &tenants,
        "topic_partitions = 4\nstall_timeout_ms = 3000\nstatistics_interval_ms = 1000",
    );
    let config = Config::from_toml_str(&toml).expect("valid config");
    switchboard::kafka::create_topics(&config.kafka)
        .await
        .expect("topics created");
    let (grpc, metrics) = (free_addr(), free_addr());
    let service = Process::start_on(&write_config("pause", &toml), &grpc, &metrics);
    wait_owned(&[&metrics], "all 4 partitions owned", |o| o[0] == 4).await;
    wait_ready(
        &metrics,
        "ready at start",
        Duration::from_secs(60),
        |c, _| c == 200,
    )
    .await;
    assert_eq!(grpc_health(&grpc).await, Some(SERVING));

    // Enough records that the service is still reading and routing them when the producer
    // has them all acknowledged, and the broker is paused at that moment: with outputs in
    // flight and lag, the stall shows. (Pausing after a reader saw the first decision let
    // the service finish all 5,000 first on a fast machine: nothing was left to stall.)
    const N: usize = 20_000;
    let records = (0..N)
        .map(|i| {
            let t = tenants[i % 4];
            (
                t.to_owned(),
                inbound(&format!("m{i}"), t, &format!("+3461{i:07}")),
            )
        })
        .collect();
    produce_all(&producer(&brokers), "switchboard.inbound", records).await;
    broker.pause();
    let paused = Instant::now();
    let why = wait_ready(
        &metrics,
        "readiness off while the broker is paused",
        Duration::from_secs(60),
        |c, _| c == 503,
    )
    .await;
    let noticed = paused.elapsed();
    assert!(why.contains("input_stalled"), "{why}");
    assert_eq!(grpc_health(&grpc).await, Some(NOT_SERVING));
    let scrape = http(&metrics, "/metrics").await.expect("metrics").1;
    assert!(
        scrape.contains(r#"switchboard_kafka_unhealthy{condition="input_stalled"} 1"#),
        "{scrape}"
    );
    assert!(scrape.contains("switchboard_ready 0"), "{scrape}");

    broker.resume();
    wait_ready(
        &metrics,
        "readiness on again after SIGCONT",
        Duration::from_secs(90),
        |c, _| c == 200,
    )
    .await;
    assert_eq!(grpc_health(&grpc).await, Some(SERVING));
    let routed = reader(&brokers, &["switchboard.routed"]);
    let ids = RefCell::new(HashSet::new());
    let take = |m: &rdkafka::message::BorrowedMessage<'_>| {
        let d =
            proto::RoutingDecision::decode(m.payload().unwrap_or_default()).expect("a decision");
        ids.borrow_mut().insert(d.provider_message_id);
    };
    read_until(&routed, "every record routed", take, || {
        (0..N).all(|i| ids.borrow().contains(&format!("m{i}")))
    })
    .await;
    let scrape = http(&metrics, "/metrics").await.expect("metrics").1;
    assert!(
        scrape.contains(r#"switchboard_kafka_unhealthy{condition="input_stalled"} 0"#),
        "{scrape}"
    );
    eprintln!(
        "paused broker: readiness off {noticed:?} after SIGSTOP (kafka.stall_timeout_ms 3000, \
         checked every second): {why}"
    );
    service.terminate();
    drop((routed, broker));
}

/// A tenant's owner is killed (SIGKILL): a call for that tenant through the other replica is
/// answered `UNAVAILABLE` naming the tenant, its partition and what is awaited, with a retry
/// hint, not a bare transport error. (Tansu 0.6.0 does not give a killed member's partitions
/// to the survivor, so the survivor keeps pointing at the dead owner: the case this answer is
/// for. Failover itself is tested on librdkafka's mock cluster, `tests/kafka.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn unavailable_names_the_tenant_its_partition_and_what_is_awaited_when_the_owner_is_gone() {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    let tenants = one_tenant_per_partition(4);
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let toml = config_toml(&brokers, &names, "topic_partitions = 4");
    let config = Config::from_toml_str(&toml).expect("valid config");
    switchboard::kafka::create_topics(&config.kafka)
        .await
        .expect("topics created");
    let file = write_config("unavailable", &toml);
    let (grpc_a, metrics_a) = (free_addr(), free_addr());
    let (grpc_b, metrics_b) = (free_addr(), free_addr());
    let a = Process::start_on(&file, &grpc_a, &metrics_a);
    let b = Process::start_on(&file, &grpc_b, &metrics_b);
    wait_owned(&[&metrics_a, &metrics_b], "the tenants split", |o| {
        o.iter().all(|&n| n >= 1) && o.iter().sum::<usize>() == 4
    })
    .await;
    // A tenant of A's, as B knows it (B forwards its calls to A).
    let channel = |addr: &str| {
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("an address")
            .connect_lazy()
    };
    let get = |addr: String, tenant: String| {
        let channel = channel(&addr);
        async move {
            proto::quotas_client::QuotasClient::new(channel)
                .get(proto::QuotaRef { tenant })
                .await
        }
    };
    let mut of_a = None;
    let started = Instant::now();
    while of_a.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no tenant of A's forwarded by B"
        );
        for t in &tenants {
            if let Ok(r) = get(grpc_b.clone(), t.clone()).await
                && r.metadata()
                    .get(switchboard::grpc::SERVED_BY_HEADER)
                    .map(|v| v.to_str().unwrap_or_default())
                    == Some(grpc_a.as_str())
            {
                of_a = Some(t.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tenant = of_a.expect("found");
    let partition = switchboard::kafka::partition::partition_of(&tenant, 4);

    a.kill();
    let status = get(grpc_b.clone(), tenant.clone())
        .await
        .expect_err("the owner is gone");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let message = status.message();
    assert!(
        message.contains(&format!("{tenant:?}")),
        "names the tenant: {message}"
    );
    assert!(
        message.contains(&format!("partition {partition}")),
        "names the partition: {message}"
    );
    assert!(
        message.contains(&grpc_a),
        "names the owner it tried: {message}"
    );
    assert!(
        message.contains("session_timeout_ms"),
        "says what is awaited: {message}"
    );
    assert_eq!(
        status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok()),
        Some("1000"),
        "a retry hint (kafka.unavailable_retry_ms)"
    );
    eprintln!("owner gone: UNAVAILABLE {message:?}");
    b.terminate();
    drop(broker);
}
