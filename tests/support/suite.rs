//! What the real-broker suite (Tansu, `tests/broker.rs`) and the mock-cluster tests
//! (`tests/kafka.rs`) share: an input producer and readers, the service binary as a child
//! process (so it can be killed with SIGKILL), and the two-replica scenario.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard::config::Config;
use switchboard::kafka::partition::partition_of;
use switchboard::proto;

use super::common;

pub fn inbound(id: &str, tenant: &str, customer: &str) -> Vec<u8> {
    proto::InboundMessage {
        tenant: tenant.into(),
        customer: customer.into(),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: id.into(),
        text: "hola, ¿dónde está mi pedido?".into(),
        business_number: String::new(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The suite's input producer. One record per batch: Tansu 0.6.0 answers a fetch from an
/// offset in the middle of a stored batch with the *next* batch (asked for offset 12,345 of a
/// topic written in default batches, it returned 12,847), so a consumer group resuming at a
/// committed offset inside a batch would skip records. Found by this suite; Apache Kafka
/// returns the containing batch and the client skips to the offset.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        // Keyed by tenant onto the tenant's partition, as switchboard computes it.
        .set("partitioner", "murmur2_random")
        .set("batch.num.messages", "1")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("a producer")
}

/// Produces every record and waits for the broker's acknowledgements.
pub async fn produce_all(producer: &FutureProducer, topic: &str, records: Vec<(String, Vec<u8>)>) {
    let mut pending = Vec::with_capacity(records.len());
    for (key, payload) in &records {
        loop {
            let record = FutureRecord::to(topic).key(key).payload(payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                // The local queue is full: let it drain.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    for delivery in pending {
        common::guard(delivery)
            .await
            .expect("delivery report")
            .expect("the broker acknowledged the input");
    }
}

/// A consumer of `topics` from the start, in a group of its own.
/// librdkafka's in-process mock cluster (one broker) with every topic the service uses, each
/// with `partitions` partitions (the owners topic with one).
pub fn mock_cluster(
    partitions: i32,
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    use switchboard::kafka::TopicKind;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("a mock cluster");
    for (topic, kind) in switchboard::kafka::topics(&switchboard::config::KafkaConfig::default()) {
        let n = if kind == TopicKind::Owners {
            1
        } else {
            partitions
        };
        cluster.create_topic(topic, n, 1).expect("a mock topic");
    }
    cluster
}

pub fn reader(brokers: &str, topics: &[&str]) -> StreamConsumer {
    static READERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("suite-reader-{}-{n}", topics.join("+")))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a reader");
    c.subscribe(topics).expect("subscribed");
    c
}

/// The service as its own process, so it can be killed with SIGKILL.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn start(config_file: &std::path::Path) -> Process {
        Self::start_on(config_file, "127.0.0.1:0", "127.0.0.1:0")
    }

    pub fn start_on(config_file: &std::path::Path, grpc: &str, metrics: &str) -> Process {
        Self::run(
            config_file,
            &["serve", "--grpc-addr", grpc, "--metrics-addr", metrics],
        )
    }

    /// `switchboard <args> --config <config_file>`, e.g. `egress --metrics-addr ...`.
    pub fn run(config_file: &std::path::Path, args: &[&str]) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .arg("--config")
            .arg(config_file)
            .env(
                "RUST_LOG",
                std::env::var("SUITE_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the switchboard binary starts");
        Process { child }
    }

    pub fn kill(self) {
        drop(self); // SIGKILL, see Drop
    }

    pub fn terminate(mut self) {
        // SIGTERM: a clean stop that drains and commits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    /// SIGKILL, also when a failing test unwinds (no orphan keeps running).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A send request of `tenant` from its business number `from`: (key, payload).
pub fn send_request(
    tenant: &str,
    from: &str,
    key: &str,
    to: &str,
    category: proto::Category,
) -> (String, Vec<u8>) {
    let request = proto::SendRequest {
        tenant: tenant.into(),
        from: from.into(),
        to: to.into(),
        category: category as i32,
        content: "promo_black_friday".into(),
        template: None,
        priority: 0,
        idempotency_key: key.into(),
        valid_for_ms: 0,
        ..Default::default()
    };
    (tenant.into(), request.encode_to_vec())
}

/// Reads `reader` until `done` says so; every wait is bounded.
pub async fn read_until(
    reader: &StreamConsumer,
    what: &str,
    mut take: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
    mut done: impl FnMut() -> bool,
) {
    while !done() {
        let next = async {
            loop {
                match reader.recv().await {
                    Ok(m) => return m,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let m = tokio::time::timeout(Duration::from_secs(60), next)
            .await
            .unwrap_or_else(|_| panic!("nothing on the topics for 60 s while waiting for {what}"));
        take(&m);
    }
}

/// A loopback address with a port free right now.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").to_string()
}

/// `GET path` on a replica's metrics listener: (status code, body); None: not answering.
pub async fn http(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: suite\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// One series' value on a replica's metrics listener, e.g. `name{label="v"}` (None: not
/// serving metrics yet, or no such series).
pub async fn series(metrics: &str, series: &str) -> Option<f64> {
    let (_, body) = http(metrics, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// A counter's value on a replica (0 until it is served: counters start at zero).
pub async fn counter(metrics: &str, name: &str) -> f64 {
    series(metrics, name).await.unwrap_or(0.0)
}

/// The replica's `switchboard_kafka_partitions_owned` (None: not serving metrics yet).
pub async fn partitions_owned(metrics: &str) -> Option<usize> {
    series(metrics, "switchboard_kafka_partitions_owned")
        .await
        .map(|v| v as usize)
}

/// Waits (bounded) until `ok` holds for the replicas' owned-partition counts; returns them.
pub async fn wait_owned(
    replicas: &[&str],
    what: &str,
    ok: impl Fn(&[usize]) -> bool,
) -> (Vec<usize>, Duration) {
    let started = std::time::Instant::now();
    let mut last = Vec::new();
    while started.elapsed() < Duration::from_secs(90) {
        last.clear();
        for m in replicas {
            last.push(partitions_owned(m).await.unwrap_or(0));
        }
        if ok(&last) {
            return (last, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: partitions owned still {last:?} after 90 s");
}

/// Tenant ids that land on each of `n` partitions, one per partition.
pub fn one_tenant_per_partition(n: i32) -> Vec<String> {
    let mut tenants: Vec<Option<String>> = vec![None; n as usize];
    for i in 0.. {
        let t = format!("shop{i}");
        let slot = &mut tenants[partition_of(&t, n) as usize];
        if slot.is_none() {
            *slot = Some(t);
        }
        if tenants.iter().all(Option::is_some) {
            break;
        }
    }
    tenants.into_iter().flatten().collect()
}

pub fn replicas_toml(brokers: &str, tenants: &[String], create_topics: bool) -> String {
    let mut toml = format!(
        r#"
        [runtime]
        tick_interval_ms = 50
        [kafka]
        brokers = "{brokers}"
        create_topics = {create_topics}
        replication_factor = 1
        topic_partitions = 4
        snapshot_interval_ms = 500
        # The default session timeout and heartbeat (10 s, 1 s): the takeover after a kill
        # this scenario reports is the failover time a deployment gets.
        "#
    );
    for t in tenants {
        toml.push_str(&tenant_toml(t, 40));
    }
    toml
}

/// A `[[tenants]]` table: a bot, a queue `q` with a "returns" intent for humans, one number
/// `{tenant}-n` at 1,000 mps and the given daily messaging limit (reserve 10%).
pub fn tenant_toml(tenant: &str, messaging_limit: u32) -> String {
    format!(
        r#"
        [[tenants]]
        id = "{tenant}"
        default_region = "ES"
        bot = "bot"
        default_queue = "q"
        [[tenants.queues]]
        name = "q"
        sla_target_secs = 60
        max_wait_secs = 600
        [[tenants.intents]]
        name = "returns"
        mode = "human"
        queue = "q"
        keywords = ["devolver"]
        [[tenants.numbers]]
        id = "{tenant}-n"
        mps = 1000
        [tenants.quotas]
        messaging_limit = {messaging_limit}
        reserve = 0.1
        "#
    )
}

/// How the first replica goes away in [`two_replicas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: no final snapshot, no leaving the group (the broker notices after the
    /// session timeout).
    Kill,
    /// SIGTERM: drains, writes a final snapshot and leaves the group.
    Terminate,
}

/// Two replicas of the binary in one group on `brokers` (topics already there, 4 partitions):
/// they split the tenants; the first goes away (`stop`) mid-stream and the second takes
/// everything over; the first comes back and they split again. Across all of it: every
/// inbound message routed, no send dispatched twice, no tenant over its daily limit, every
/// in-window reply sent.
pub async fn two_replicas(brokers: &str, create_topics: bool, stop: Stop) {
    const ROUND: usize = 1_000; // inbound messages per phase
    const SENDS: usize = 30; // marketing sends per tenant per phase
    let tenants = one_tenant_per_partition(4);
    let toml = replicas_toml(brokers, &tenants, create_topics);
    if create_topics {
        let config = Config::from_toml_str(&toml).expect("valid config");
        switchboard::kafka::create_topics(&config.kafka)
            .await
            .expect("topics created");
    }
    let dir = std::env::temp_dir().join(format!(
        "switchboard-replicas-{}-{stop:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, &toml).unwrap();
    let input = producer(brokers);

    // Phase `phase`: inbound messages over all tenants, marketing sends to new customers, and
    // (after the first) free-form replies to the customers who wrote in the phase before.
    let customer = |phase: usize, i: usize| format!("+34612{phase}{i:05}");
    let produce_phase = |phase: usize| {
        let input = &input;
        let tenants = &tenants;
        async move {
            let messages = (0..ROUND)
                .map(|i| {
                    let t = &tenants[i % tenants.len()];
                    (
                        t.clone(),
                        inbound(&format!("p{phase}-{i}"), t, &customer(phase, i)),
                    )
                })
                .collect();
            produce_all(input, "switchboard.inbound", messages).await;
            let mut sends = Vec::new();
            for t in tenants {
                for i in 0..SENDS {
                    let to = format!("+34622{phase}{i:05}");
                    let key = format!("{t}-promo-{phase}-{i}");
                    let from = format!("{t}-n");
                    sends.push(send_request(
                        t,
                        &from,
                        &key,
                        &to,
                        proto::Category::Marketing,
                    ));
                }
            }
            if phase > 0 {
                // One reply per tenant, to a customer who wrote to it in the phase before.
                for (n, t) in tenants.iter().enumerate() {
                    let (key, from) = (format!("{t}-reply-{phase}"), format!("{t}-n"));
                    let to = customer(phase - 1, n);
                    sends.push(send_request(t, &from, &key, &to, proto::Category::Session));
                }
            }
            produce_all(input, "switchboard.sends", sends).await;
        }
    };

    let (grpc_a, metrics_a) = (free_addr(), free_addr());
    let (grpc_b, metrics_b) = (free_addr(), free_addr());
    let a = Process::start_on(&file, &grpc_a, &metrics_a);
    let b = Process::start_on(&file, &grpc_b, &metrics_b);
    let replicas = [metrics_a.as_str(), metrics_b.as_str()];
    let (split, _) = wait_owned(&replicas, "the tenants split", |o| {
        o.iter().all(|&n| n >= 1) && o.iter().sum::<usize>() == 4
    })
    .await;
    let forwarded = forwarding_checks(&grpc_a, &grpc_b, &tenants[0]).await;
    produce_phase(0).await;

    let routed = reader(brokers, &["switchboard.routed"]);
    let distinct: std::cell::RefCell<HashSet<String>> = Default::default();
    let take_routed = |m: &rdkafka::message::BorrowedMessage<'_>| {
        let d =
            proto::RoutingDecision::decode(m.payload().unwrap_or_default()).expect("a decision");
        distinct.borrow_mut().insert(d.provider_message_id);
    };
    read_until(&routed, "half of phase 0 routed", take_routed, || {
        distinct.borrow().len() >= ROUND / 2
    })
    .await;

    match stop {
        Stop::Kill => a.kill(),
        Stop::Terminate => a.terminate(),
    }
    let (after_kill, takeover) = wait_owned(&replicas[1..], "the survivor takes everything", |o| {
        o[0] == 4
    })
    .await;
    produce_phase(1).await;
    let a = Process::start_on(&file, &grpc_a, &metrics_a); // and comes back
    let (rebalanced, _) = wait_owned(&replicas, "the tenants split again", |o| {
        o.iter().all(|&n| n >= 1) && o.iter().sum::<usize>() == 4
    })
    .await;
    produce_phase(2).await;

    // Everything routed, every send request answered.
    let expected: Vec<String> = (0..3)
        .flat_map(|phase| (0..ROUND).map(move |i| format!("p{phase}-{i}")))
        .collect();
    read_until(&routed, "every inbound message routed", take_routed, || {
        expected.iter().all(|id| distinct.borrow().contains(id))
    })
    .await;
    let statuses = reader(brokers, &["switchboard.status"]);
    let mut answered: HashMap<String, (proto::SendState, proto::RefusalReason)> = HashMap::new();
    let keys: Vec<String> = tenants
        .iter()
        .flat_map(|t| {
            (0..3)
                .flat_map(move |phase| (0..SENDS).map(move |i| format!("{t}-promo-{phase}-{i}")))
                .chain((1..3).map(move |phase| format!("{t}-reply-{phase}")))
        })
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
                    answered
                        .borrow_mut()
                        .insert(s.idempotency_key.clone(), (s.state(), s.reason()));
                }
            },
            || keys.iter().all(|k| answered.borrow().contains_key(k)),
        )
        .await;
    }
    a.terminate();
    b.terminate();

    // Every dispatch of the run, per tenant.
    let mut dispatched: Vec<proto::Dispatch> = Vec::new();
    {
        let mut end = 0;
        let all = reader(brokers, &["switchboard.dispatch"]);
        for p in 0..4 {
            let (_, high) = all
                .fetch_watermarks("switchboard.dispatch", p, Duration::from_secs(10))
                .expect("watermarks");
            end += high;
        }
        let total = std::cell::RefCell::new(&mut dispatched);
        read_until(
            &all,
            "every dispatch",
            |m| {
                total.borrow_mut().push(
                    proto::Dispatch::decode(m.payload().unwrap_or_default()).expect("a Dispatch"),
                )
            },
            || total.borrow().len() as i64 >= end,
        )
        .await;
    }
    let mut keys_seen = HashSet::new();
    let twice: Vec<String> = dispatched
        .iter()
        .filter(|d| !keys_seen.insert(d.idempotency_key.clone()))
        .map(|d| d.idempotency_key.clone())
        .collect();
    let mut reached: HashMap<&str, HashSet<&str>> = HashMap::new();
    for d in dispatched.iter().filter(|d| d.counted) {
        reached
            .entry(d.tenant.as_str())
            .or_default()
            .insert(d.to.as_str());
    }
    let reached: HashMap<&str, usize> = reached.into_iter().map(|(t, c)| (t, c.len())).collect();
    let replies: Vec<(String, Option<&(proto::SendState, proto::RefusalReason)>)> = tenants
        .iter()
        .flat_map(|t| (1..3).map(move |phase| format!("{t}-reply-{phase}")))
        .map(|k| {
            let a = answered.get(&k);
            (k, a)
        })
        .collect();
    eprintln!(
        "two replicas ({stop:?}): split {split:?}; {forwarded}; after it went away {after_kill:?} in {takeover:?}; after the \
         return {rebalanced:?}; {} inbound routed of {}, customers reached per tenant \
         {reached:?} (limit 40), {} sent twice",
        expected
            .iter()
            .filter(|id| distinct.borrow().contains(*id))
            .count(),
        expected.len(),
        twice.len(),
    );
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert!(
        reached.values().all(|&n| n <= 40),
        "over the limit: {reached:?}"
    );
    let refused: Vec<_> = replies
        .iter()
        .filter(|(_, a)| a.is_none_or(|(s, _)| *s != proto::SendState::Dispatched))
        .collect();
    assert!(
        refused.is_empty(),
        "in-window replies not sent (a forgotten window): {refused:?}"
    );
    drop((routed, statuses, input));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Through the replica that does not own `tenant`: a send is admitted against the owner's
/// quota, and an agent registered and subscribed there receives the owner's assignment.
/// Returns what it saw, for the report.
pub async fn forwarding_checks(grpc_a: &str, grpc_b: &str, tenant: &str) -> String {
    use proto::agents_client::AgentsClient;
    use proto::inbound_client::InboundClient;
    use proto::outbound_client::OutboundClient;
    use proto::quotas_client::QuotasClient;
    use switchboard::grpc::SERVED_BY_HEADER;
    use tonic::transport::Channel;

    let connect = |addr: &str| {
        Channel::from_shared(format!("http://{addr}"))
            .expect("an address")
            .connect_lazy()
    };
    let (a, b) = (connect(grpc_a), connect(grpc_b));
    let quota = |ch: Channel| async move {
        QuotasClient::new(ch)
            .get(proto::QuotaRef {
                tenant: tenant.to_owned(),
            })
            .await
    };
    // Which replica owns it: the other one's answer names it (once the owners announced).
    let (far, near, owner) = common::guard(async {
        loop {
            if let (Ok(via_a), Ok(via_b)) = (quota(a.clone()).await, quota(b.clone()).await) {
                let by = |r: &tonic::Response<proto::PortfolioQuota>| {
                    r.metadata()
                        .get(SERVED_BY_HEADER)
                        .map(|v| v.to_str().unwrap().to_owned())
                };
                match (by(&via_a), by(&via_b)) {
                    (Some(owner), None) if owner == grpc_b => break (a.clone(), b.clone(), owner),
                    (None, Some(owner)) if owner == grpc_a => break (b.clone(), a.clone(), owner),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    let before = quota(near.clone()).await.unwrap().into_inner().used;
    let sent = OutboundClient::new(far.clone())
        .send(proto::SendRequest {
            tenant: tenant.to_owned(),
            from: format!("{tenant}-n"),
            to: "+34655000001".into(),
            category: proto::Category::Utility as i32,
            content: "order_shipped".into(),
            template: None,
            priority: 0,
            idempotency_key: format!("{tenant}-grpc-1"),
            valid_for_ms: 0,
            ..Default::default()
        })
        .await
        .expect("a forwarded send");
    assert_eq!(
        sent.metadata()
            .get(SERVED_BY_HEADER)
            .map(|v| v.to_str().unwrap()),
        Some(owner.as_str())
    );
    assert_eq!(sent.get_ref().admission(), proto::Admission::Dispatched);
    let after = quota(near.clone()).await.unwrap().into_inner().used;
    assert_eq!(after, before + 1, "counted in the owner's quota");

    let mut agents = AgentsClient::new(far.clone());
    agents
        .register(proto::RegisterAgentRequest {
            tenant: tenant.to_owned(),
            agent_id: "ana".into(),
            presence: proto::Presence::Online as i32,
            capacity: 1,
            queues: vec!["q".into()],
        })
        .await
        .expect("registered through the other replica");
    let mut events = agents
        .subscribe(proto::AgentRef {
            tenant: tenant.to_owned(),
            agent_id: "ana".into(),
        })
        .await
        .expect("subscribed through the other replica")
        .into_inner();
    let decision = InboundClient::new(near)
        .ingest(proto::InboundMessage {
            tenant: tenant.to_owned(),
            customer: "+34655000002".into(),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: format!("{tenant}-grpc-in-1"),
            text: "quiero devolver el pedido".into(),
            business_number: String::new(),
            ..Default::default()
        })
        .await
        .expect("routed by the owner")
        .into_inner();
    assert_eq!(decision.agent_id, "ana");
    let event = common::guard(events.message())
        .await
        .expect("the stream is open")
        .expect("an event");
    let Some(proto::agent_event::Event::Assigned(assigned)) = event.event else {
        panic!("an assignment, got {event:?}");
    };
    assert_eq!(
        assigned
            .conversation
            .expect("a conversation")
            .conversation_id,
        decision.conversation_id
    );
    format!(
        "through the other replica: a send admitted by {owner} (used {before} → {after}), \
         an assignment relayed to the agent's stream"
    )
}
