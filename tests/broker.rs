//! The real-broker suite: the Kafka path against Tansu, a Kafka-compatible broker process,
//! started per test on a free loopback port. Needs the `tansu` binary, so these tests are
//! ignored by the plain `cargo test`; `scripts/broker-suite` installs Tansu when missing and
//! runs them (`.ci/run` calls it). Each test stops by itself: every wait is bounded by a guard.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use switchboard::config::Config;
use switchboard::kafka::partition::partition_of;
use switchboard::proto;
use switchboard::server::Parts;

mod common;
#[path = "support/sends.rs"]
mod sends;
#[path = "support/suite.rs"]
mod suite;
#[path = "support/tansu.rs"]
mod tansu;
use common::Server;
use suite::*;
use tansu::Tansu;

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];

/// Four tenants (so the input spreads over partitions), a bot each; t0 has a business number.
fn config_toml(brokers: &str) -> String {
    let mut toml = format!(
        r#"
        [kafka]
        brokers = "{brokers}"
        replication_factor = 1
        topic_partitions = 4
        max_in_flight = 2000
        snapshot_interval_ms = 500
        max_record_bytes = 4096
        options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
        "#
    );
    for t in TENANTS {
        toml.push_str(&format!(
            r#"
            [[tenants]]
            id = "{t}"
            default_region = "ES"
            bot = "bot"
            default_queue = "q"
            [[tenants.queues]]
            name = "q"
            sla_target_secs = 60
            max_wait_secs = 600
            [[tenants.numbers]]
            id = "{t}-number"
            [[tenants.intents]]
            name = "returns"
            mode = "human"
            queue = "q"
            keywords = ["devolver"]
            "#
        ));
    }
    toml.replace(r#"id = "t0-number""#, r#"id = "106540352242922""#)
}

/// The suite's config, with its topics created on the broker (by the service's own code).
async fn with_topics(brokers: &str) -> Config {
    let config = Config::from_toml_str(&config_toml(brokers)).expect("the suite's config is valid");
    switchboard::kafka::create_topics(&config.kafka)
        .await
        .expect("topics created on Tansu");
    config
}

/// The i-th valid inbound message: (key, payload, id).
fn valid(i: usize) -> (String, Vec<u8>, String) {
    let tenant = TENANTS[i % TENANTS.len()];
    let id = format!("m{i}");
    let payload = inbound(&id, tenant, &format!("+3461{:07}", i % 50_000));
    (tenant.to_owned(), payload, id)
}

/// What the service wrote: routed ids (with repeats) and dead letters.
#[derive(Default)]
struct Outputs {
    /// Valid inputs m0..m{expected} (for the report when output stops).
    expected: usize,
    /// Routed records, repeats included.
    routed: usize,
    distinct: HashSet<String>,
    /// (original payload, headers)
    dead: Vec<(Vec<u8>, HashMap<String, String>)>,
}

impl Outputs {
    /// Distinct ids routed plus dead letters.
    fn accounted(&self) -> usize {
        self.distinct.len() + self.dead.len()
    }

    /// Reads one record of routed or dlq into `self`.
    async fn read_one(&mut self, reader: &StreamConsumer) {
        let next = async {
            loop {
                match reader.recv().await {
                    Ok(m) => return m,
                    // The broker is down for a while (the restart test): keep reading.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let Ok(m) = tokio::time::timeout(Duration::from_secs(60), next).await else {
            // Which inputs are missing, by tenant (one tenant, one partition): first, last, count.
            let missing: Vec<(&str, usize, usize, usize)> = TENANTS
                .iter()
                .enumerate()
                .filter_map(|(t, name)| {
                    let ids: Vec<usize> = (t..self.expected)
                        .step_by(TENANTS.len())
                        .filter(|n| !self.distinct.contains(&format!("m{n}")))
                        .collect();
                    Some((*name, *ids.first()?, *ids.last()?, ids.len()))
                })
                .collect();
            panic!(
                "the service produced nothing for 60 s; {} routed ({} distinct), {} dead; \
                 missing (tenant, first, last, count): {missing:?}",
                self.routed,
                self.distinct.len(),
                self.dead.len(),
            );
        };
        if m.topic() == "switchboard.dlq" {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_owned(), v.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.dead
                .push((m.payload().unwrap_or_default().to_vec(), headers));
        } else {
            let d = proto::RoutingDecision::decode(m.payload().expect("a payload"))
                .expect("routed records are RoutingDecisions");
            self.routed += 1;
            self.distinct.insert(d.provider_message_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn kill_9_mid_stream_loses_nothing_and_resumes_from_the_last_snapshot() {
    const N: usize = 100_000;
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    with_topics(&brokers).await;
    let dir = std::env::temp_dir().join(format!("switchboard-kill9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, config_toml(&brokers)).unwrap();

    let input = producer(&brokers);
    let records = (0..N).map(|i| {
        let (key, payload, _) = valid(i);
        (key, payload)
    });
    produce_all(&input, "switchboard.inbound", records.collect()).await;

    let reader = reader(&brokers, &["switchboard.routed", "switchboard.dlq"]);
    let mut out = Outputs {
        expected: N,
        ..Outputs::default()
    };
    let first_metrics = free_addr();
    let first = Process::start_on(&file, "127.0.0.1:0", &first_metrics);
    while out.routed < N / 3 {
        out.read_one(&reader).await;
    }
    // Kill only once a snapshot is known to be written (its offsets committed after it): the
    // reader's count says nothing about how far the process has got, its output is in flight.
    let mut waited = 0;
    while counter(
        &first_metrics,
        r#"switchboard_kafka_commits_total{result="ok"}"#,
    )
    .await
        < 1.0
    {
        waited += 1;
        assert!(
            waited < 600,
            "no snapshot written within 60 s of the stream's start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill(); // mid-stream, most likely: a third routed, the rest in flight or unread
    let killed_at = out.routed;
    let second_metrics = free_addr();
    let second = Process::start_on(&file, "127.0.0.1:0", &second_metrics);
    while out.accounted() < N {
        out.read_one(&reader).await;
    }
    // Read from a listener that answers (a failed scrape must not pass for "read nothing").
    assert!(
        http(&second_metrics, "/metrics").await.is_some(),
        "the restarted process serves its metrics"
    );
    let reread = counter(
        &second_metrics,
        r#"switchboard_kafka_records_in_total{topic="switchboard.inbound"}"#,
    )
    .await;
    second.terminate();

    let lost: Vec<usize> = (0..N)
        .filter(|i| !out.distinct.contains(&format!("m{i}")))
        .collect();
    assert!(
        lost.is_empty(),
        "lost {} ids, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(out.dead.is_empty(), "valid input is never dead-lettered");
    let duplicates = out.routed - out.distinct.len();
    // The restart resumed from the snapshot, not from the start: the second process read
    // fewer than all the records, and every duplicate is a record it read again (one the
    // first process had handled after its last snapshot).
    eprintln!(
        "kill -9 after {killed_at} routed records seen: the restart read {reread} of {N}, \
         {duplicates} duplicates (records since the last snapshot), 0 lost"
    );
    assert!(
        reread < N as f64,
        "the restart read all {N} records again: it did not resume from the snapshot"
    );
    assert!(
        duplicates as f64 <= reread,
        "{duplicates} duplicates but only {reread} records read after the restart"
    );
    drop((reader, input));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn the_service_rides_out_a_broker_restart() {
    const N: usize = 20_000;
    let mut broker = Tansu::sqlite();
    let brokers = broker.brokers();
    let config = with_topics(&brokers).await;
    let input = producer(&brokers);
    let all: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            let (key, payload, _) = valid(i);
            (key, payload)
        })
        .collect();
    produce_all(&input, "switchboard.inbound", all[..N / 2].to_vec()).await;

    let server = Server::start(config, Parts::default()).await;
    let reader = reader(&brokers, &["switchboard.routed", "switchboard.dlq"]);
    let mut out = Outputs::default();
    while out.routed < N / 4 {
        out.read_one(&reader).await;
    }
    broker.kill(); // SIGKILL mid-stream; the data is in SQLite
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart();
    produce_all(&input, "switchboard.inbound", all[N / 2..].to_vec()).await;
    while out.accounted() < N {
        out.read_one(&reader).await;
    }
    server.stop().await;
    let lost = (0..N)
        .filter(|i| !out.distinct.contains(&format!("m{i}")))
        .count();
    assert_eq!(lost, 0, "every input id routed across the broker restart");
    assert!(out.dead.is_empty(), "{:?}", out.dead.first().map(|d| &d.1));
    eprintln!(
        "broker restart: {N} ids routed, {} duplicates, 0 lost",
        out.routed - out.distinct.len()
    );
    drop((reader, input));
}

/// The i-th poison record (one in a hundred of the stream) and the reason it must carry.
fn poison(i: usize) -> (Vec<u8>, &'static str) {
    let id = format!("p{i}");
    match (i / 100) % 4 {
        0 => (
            format!("\u{ff}\u{fe} poison {i}").into_bytes(),
            "undecodable",
        ),
        1 => (inbound(&id, "t1", "12ab"), "invalid_argument"),
        2 => (inbound(&id, "nobody", "+34612345678"), "not_found"),
        _ => {
            let mut m = proto::InboundMessage::decode(&inbound(&id, "t2", "+34612345678")[..])
                .expect("decodes");
            m.text = "x".repeat(5_000);
            (m.encode_to_vec(), "oversize")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn one_percent_poison_is_dead_lettered_with_its_headers_and_the_rest_routed() {
    const N: usize = 10_000;
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    let config = with_topics(&brokers).await;
    let mut expected_dead: HashMap<Vec<u8>, &'static str> = HashMap::new();
    let mut expected_routed = HashSet::new();
    let records: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            if i % 100 == 99 {
                let (payload, reason) = poison(i);
                expected_dead.insert(payload.clone(), reason);
                (TENANTS[i % 4].to_owned(), payload)
            } else {
                let (key, payload, id) = valid(i);
                expected_routed.insert(id);
                (key, payload)
            }
        })
        .collect();
    let input = producer(&brokers);
    produce_all(&input, "switchboard.inbound", records).await;

    let server = Server::start(config, Parts::default()).await;
    let reader = reader(&brokers, &["switchboard.routed", "switchboard.dlq"]);
    let mut out = Outputs::default();
    while out.accounted() < N {
        out.read_one(&reader).await;
    }
    server.stop().await;

    assert_eq!(out.dead.len(), N / 100, "every poison record, once");
    for (payload, headers) in &out.dead {
        let reason = expected_dead
            .get(payload)
            .unwrap_or_else(|| panic!("a dead letter that is not poison: {headers:?}"));
        assert_eq!(headers["switchboard.error.reason"], *reason, "{headers:?}");
        assert_eq!(headers["switchboard.original.topic"], "switchboard.inbound");
        assert!(
            headers["switchboard.original.partition"]
                .parse::<i32>()
                .is_ok()
        );
        assert!(
            headers["switchboard.original.offset"]
                .parse::<i64>()
                .is_ok()
        );
        assert!(TENANTS.contains(&headers["switchboard.original.key"].as_str()));
        assert!(!headers["switchboard.error"].is_empty());
    }
    assert_eq!(out.distinct, expected_routed, "every other record routed");
    drop((reader, input));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn cloud_api_webhooks_route_messages_and_feed_statuses_back() {
    let broker = Tansu::memory();
    let brokers = broker.brokers();
    let config = with_topics(&brokers).await;
    let server = Server::start(config, Parts::default()).await;
    let input = producer(&brokers);

    // Two sends from t0's number to the same customer: dispatched to the egress topic.
    let request = |key: &str| proto::SendRequest {
        tenant: "t0".into(),
        from: "106540352242922".into(),
        to: "+34612345678".into(),
        category: proto::Category::Utility as i32,
        content: "order_shipped".into(),
        template: None,
        priority: 0,
        idempotency_key: key.into(),
        valid_for_ms: 0,
        ..Default::default()
    };
    let sends = ["a", "b"]
        .map(|k| ("t0".to_owned(), request(k).encode_to_vec()))
        .to_vec();
    produce_all(&input, "switchboard.sends", sends).await;
    let dispatch = reader(&brokers, &["switchboard.dispatch"]);
    let mut dispatched = Vec::new();
    while dispatched.len() < 2 {
        let m = common::guard(dispatch.recv()).await.unwrap();
        dispatched.push(proto::Dispatch::decode(m.payload().unwrap()).unwrap());
    }

    // One payload, as Meta posts it: three customer messages (text, image with caption,
    // an unknown type) and three statuses (a pair-limit failure, a read, a status of a
    // message another system sent).
    let payload = format!(
        r#"{{"object": "whatsapp_business_account", "entry": [{{"id": "102290129340398", "changes": [{{"field": "messages", "value": {{
        "messaging_product": "whatsapp",
        "metadata": {{"display_phone_number": "34910000001", "phone_number_id": "106540352242922"}},
        "contacts": [{{"profile": {{"name": "Ana"}}, "wa_id": "34611111111"}}],
        "messages": [
          {{"from": "34611111111", "id": "wamid.IN1", "timestamp": "1749416383", "type": "text", "text": {{"body": "Quiero devolver el pedido"}}}},
          {{"from": "34611111112", "id": "wamid.IN2", "timestamp": "1749416384", "type": "image", "image": {{"caption": "la caja llegó rota", "mime_type": "image/jpeg", "id": "1"}}}},
          {{"from": "34611111113", "id": "wamid.IN3", "timestamp": "1749416385", "type": "hologram", "hologram": {{}}}}
        ],
        "statuses": [
          {{"id": "wamid.OUT1", "status": "failed", "timestamp": "1749416400", "recipient_id": "34612345678",
            "biz_opaque_callback_data": "{a}",
            "errors": [{{"code": 131056, "title": "(Business Account, Consumer Account) pair rate limit hit"}}]}},
          {{"id": "wamid.OUT2", "status": "read", "timestamp": "1749416401", "recipient_id": "34612345678",
            "biz_opaque_callback_data": "{b}"}},
          {{"id": "wamid.OTHER", "status": "delivered", "timestamp": "1749416402", "recipient_id": "34699999999"}}
        ]}}}}]}}]}}"#,
        a = dispatched[0].callback_data,
        b = dispatched[1].callback_data,
    );
    produce_all(
        &input,
        "switchboard.webhooks",
        vec![("106540352242922".into(), payload.into_bytes())],
    )
    .await;

    let routed = reader(&brokers, &["switchboard.routed"]);
    let mut decisions = HashMap::new();
    while decisions.len() < 3 {
        let m = common::guard(routed.recv()).await.unwrap();
        let d = proto::RoutingDecision::decode(m.payload().unwrap()).unwrap();
        decisions.insert(d.provider_message_id.clone(), d);
    }
    // A return is friction: a person (the queue), with the reason; the others route too.
    assert_eq!(decisions["wamid.IN1"].target(), proto::Target::Queue);
    assert_eq!(decisions["wamid.IN1"].reason(), proto::Reason::Friction);
    assert!(decisions.contains_key("wamid.IN2") && decisions.contains_key("wamid.IN3"));

    let status = reader(&brokers, &["switchboard.status"]);
    let mut last: HashMap<String, proto::SendStatus> = HashMap::new();
    while last.get(&dispatched[0].send_id).map(|s| s.state()) != Some(proto::SendState::Failed)
        || last.get(&dispatched[1].send_id).map(|s| s.state()) != Some(proto::SendState::Read)
    {
        let m = common::guard(status.recv()).await.unwrap();
        let s = proto::SendStatus::decode(m.payload().unwrap()).unwrap();
        last.insert(s.send_id.clone(), s);
    }
    assert_eq!(last[&dispatched[0].send_id].provider_code, 131056);
    assert_eq!(
        last[&dispatched[0].send_id].reason(),
        proto::RefusalReason::PairLimit
    );

    // The reaction: the pair backs off, so the next send to that customer is refused.
    produce_all(
        &input,
        "switchboard.sends",
        vec![("t0".into(), request("c").encode_to_vec())],
    )
    .await;
    let refused = loop {
        let m = common::guard(status.recv()).await.unwrap();
        let s = proto::SendStatus::decode(m.payload().unwrap()).unwrap();
        if s.idempotency_key == "c" && s.state() != proto::SendState::Accepted {
            break s;
        }
    };
    assert_eq!(refused.state(), proto::SendState::Refused);
    assert_eq!(refused.reason(), proto::RefusalReason::PairLimit);

    // One replica owns every partition (4) and so every configured tenant (4).
    let families = [
        switchboard::telemetry::KAFKA_PARTITIONS_OWNED,
        switchboard::telemetry::KAFKA_TENANTS_OWNED,
    ];
    let body = common::scrape_until(server.metrics, &families).await;
    assert!(
        body.contains("switchboard_kafka_partitions_owned 4"),
        "{body}"
    );
    assert!(body.contains("switchboard_kafka_tenants_owned 4"), "{body}");
    server.stop().await;
    drop((dispatch, routed, status, input));
}

/// One tenant on a promotion: a messaging limit of 40 customers a day, batch mode at 80%.
fn promotion_toml(brokers: &str) -> String {
    format!(
        r#"
        [runtime]
        tick_interval_ms = 50
        [kafka]
        brokers = "{brokers}"
        replication_factor = 1
        topic_partitions = 4
        snapshot_interval_ms = 500
        options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
        [[tenants]]
        id = "promo"
        default_region = "ES"
        default_queue = "q"
        [[tenants.queues]]
        name = "q"
        sla_target_secs = 60
        max_wait_secs = 600
        [[tenants.numbers]]
        id = "P"
        mps = 1000
        [tenants.quotas]
        messaging_limit = 40
        reserve = 0.1
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn kill_9_mid_promotion_keeps_the_daily_count_the_windows_and_sends_once() {
    const FIRST: usize = 120;
    const SECOND: usize = 120;
    const WINDOWS: usize = 10;
    let broker = Tansu::sqlite();
    let brokers = broker.brokers();
    let config = Config::from_toml_str(&promotion_toml(&brokers)).expect("valid config");
    switchboard::kafka::create_topics(&config.kafka)
        .await
        .expect("topics created on Tansu");
    let dir = std::env::temp_dir().join(format!("switchboard-promo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, promotion_toml(&brokers)).unwrap();
    let input = producer(&brokers);

    // Ten customers write in (their 24-hour windows open), then the promotion starts.
    let messages = (0..WINDOWS)
        .map(|i| {
            let payload = inbound(&format!("w{i}"), "promo", &format!("+3461200{i:04}"));
            ("promo".to_owned(), payload)
        })
        .collect();
    produce_all(&input, "switchboard.inbound", messages).await;
    let promo = |range: std::ops::Range<usize>| {
        range
            .map(|i| {
                let to = format!("+3460000{i:04}");
                send_request(
                    "promo",
                    "P",
                    &format!("promo-{i}"),
                    &to,
                    proto::Category::Marketing,
                )
            })
            .collect::<Vec<_>>()
    };
    produce_all(&input, "switchboard.sends", promo(0..FIRST)).await;

    let dispatches = reader(&brokers, &["switchboard.dispatch"]);
    let mut dispatched: Vec<proto::Dispatch> = Vec::new();
    let grpc = free_addr();
    let first = Process::start_on(&file, &grpc, &free_addr());
    let take = |m: &rdkafka::message::BorrowedMessage<'_>, into: &mut Vec<proto::Dispatch>| {
        into.push(proto::Dispatch::decode(m.payload().unwrap_or_default()).expect("a Dispatch"));
    };
    {
        let seen = std::cell::RefCell::new(Vec::new());
        read_until(
            &dispatches,
            "the first 20 dispatches",
            |m| take(m, &mut seen.borrow_mut()),
            || seen.borrow().len() >= 20,
        )
        .await;
        dispatched.extend(seen.into_inner());
    }
    // Sends through gRPC right before the kill (after the last snapshot, most likely): each
    // is written to the sends topic before it is answered, so none is forgotten.
    let connect = |addr: &str| {
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("an address")
            .connect_lazy()
    };
    // The replica may still be reading what was written before it took the partition over
    // (`UNAVAILABLE`, retry shortly): `sends::send` retries that, bounded.
    let mut grpc_sends = Vec::new();
    let mut outbound = proto::outbound_client::OutboundClient::new(connect(&grpc));
    for i in 0..5 {
        let key = format!("grpc-{i}");
        let request = proto::SendRequest {
            tenant: "promo".into(),
            from: "P".into(),
            to: format!("+3465100{i:04}"),
            category: proto::Category::Marketing as i32,
            content: "promo_black_friday".into(),
            template: None,
            priority: 0,
            idempotency_key: key.clone(),
            valid_for_ms: 0,
            ..Default::default()
        };
        let answer = sends::send(&mut outbound, request).await;
        grpc_sends.push((key, answer.admission()));
    }
    first.kill(); // mid-promotion
    let before_kill: HashSet<String> = dispatched.iter().map(|d| d.to.clone()).collect();

    let grpc = free_addr();
    let second = Process::start_on(&file, &grpc, &free_addr());
    // The rest of the promotion, and free-form replies to the customers who wrote in: their
    // windows must still be open after the restart.
    produce_all(&input, "switchboard.sends", promo(FIRST..FIRST + SECOND)).await;
    let replies = (0..WINDOWS)
        .map(|i| {
            let to = format!("+3461200{i:04}");
            send_request(
                "promo",
                "P",
                &format!("reply-{i}"),
                &to,
                proto::Category::Session,
            )
        })
        .collect();
    produce_all(&input, "switchboard.sends", replies).await;

    // Every request answered (queued, dispatched or refused) by the second process.
    let statuses = reader(&brokers, &["switchboard.status"]);
    let mut answered: HashMap<String, (proto::SendState, proto::RefusalReason)> = HashMap::new();
    let keys: Vec<String> = (0..FIRST + SECOND)
        .map(|i| format!("promo-{i}"))
        .chain((0..WINDOWS).map(|i| format!("reply-{i}")))
        .collect();
    {
        let answered = std::cell::RefCell::new(&mut answered);
        read_until(
            &statuses,
            "an answer to every send request",
            |m| {
                let s = proto::SendStatus::decode(m.payload().unwrap_or_default())
                    .expect("a SendStatus");
                use proto::SendState as S;
                if matches!(s.state(), S::Queued | S::Dispatched | S::Refused) {
                    let answer = (s.state(), s.reason());
                    answered
                        .borrow_mut()
                        .insert(s.idempotency_key.clone(), answer);
                }
            },
            || keys.iter().all(|k| answered.borrow().contains_key(k)),
        )
        .await;
    }
    // The gRPC sends made before the kill are known to the restarted replica.
    let mut outbound = proto::outbound_client::OutboundClient::new(connect(&grpc));
    let mut known = Vec::new();
    for (key, admission) in &grpc_sends {
        let status = common::guard(async {
            loop {
                let found = outbound
                    .get_status(proto::SendRef {
                        tenant: "promo".into(),
                        send_id: String::new(),
                        idempotency_key: key.clone(),
                    })
                    .await;
                match found {
                    Ok(s) => break s.into_inner(),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(s) => panic!("gRPC send {key} ({admission:?}) forgotten: {s:?}"),
                }
            }
        })
        .await;
        known.push((key.clone(), *admission, status.state()));
    }
    eprintln!("gRPC sends before the kill, after the restart: {known:?}");
    second.terminate(); // a clean stop: everything dispatched is in the topic

    // Everything dispatched over the whole run.
    {
        let (_, end) = dispatches
            .fetch_watermarks(
                "switchboard.dispatch",
                partition_of("promo", 4),
                Duration::from_secs(10),
            )
            .expect("watermarks");
        let total = std::cell::RefCell::new(Vec::new());
        let all = reader(&brokers, &["switchboard.dispatch"]);
        read_until(
            &all,
            "every dispatch",
            |m| take(m, &mut total.borrow_mut()),
            || total.borrow().len() as i64 >= end,
        )
        .await;
        dispatched = total.into_inner();
    }
    let mut keys_seen = HashSet::new();
    let twice: Vec<&str> = dispatched
        .iter()
        .filter(|d| !keys_seen.insert(d.idempotency_key.clone()))
        .map(|d| d.idempotency_key.as_str())
        .collect();
    let counted: HashSet<&str> = dispatched
        .iter()
        .filter(|d| d.counted)
        .map(|d| d.to.as_str())
        .collect();
    let replies_sent = (0..WINDOWS)
        .filter(|i| keys_seen.contains(&format!("reply-{i}")))
        .count();
    eprintln!(
        "promotion across a kill -9: {} customers reached before the kill, {} over the run \
         (limit 40), {} dispatches, {} sent twice, {replies_sent}/{WINDOWS} in-window replies \
         sent",
        before_kill.len(),
        counted.len(),
        dispatched.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert!(
        counted.len() <= 40,
        "{} customers reached: the daily count restarted",
        counted.len()
    );
    assert!(
        counted.len() > before_kill.len(),
        "the promotion went on after the restart"
    );
    let replies: Vec<_> = (0..WINDOWS)
        .map(|i| answered.get(&format!("reply-{i}")))
        .collect();
    assert_eq!(
        replies_sent, WINDOWS,
        "every window was still open: {replies:?}"
    );
    let queued = answered
        .values()
        .filter(|(s, _)| *s == proto::SendState::Queued)
        .count();
    assert!(queued > 0, "batch mode held the rest of the promotion back");
    drop((dispatches, statuses, input));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: run scripts/broker-suite"]
async fn two_replicas_split_the_tenants_and_hand_them_over_on_a_clean_stop_and_a_return() {
    let broker = Tansu::sqlite();
    two_replicas(&broker.brokers(), true, Stop::Terminate).await;
}
