//! The Kafka input against librdkafka's in-process mock cluster (the real Kafka wire protocol,
//! nothing installed). Reads are bounded by a guard; nothing asserts how fast.
use std::time::Duration;

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard::config::Config;
use switchboard::proto;
use switchboard::server::Parts;

mod common;
#[path = "support/suite.rs"]
mod suite;
use common::{Server, guard};

const CONFIG: &str = r#"
    [kafka]
    # The mock cluster does not answer the admin API: each test makes its topics itself.
    create_topics = false

    [[tenants]]
    id = "acme"
    default_region = "ES"
    bot = "bot"
    default_queue = "q"
    [[tenants.queues]]
    name = "q"
    sla_target_secs = 60
    max_wait_secs = 600
    [[tenants.numbers]]
    id = "106540352242922"
"#;

const WEBHOOK: &str = r#"{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {
    "metadata": {"display_phone_number": "34910000001", "phone_number_id": "106540352242922"},
    "messages": [
      {"from": "34612345678", "id": "wamid.W1", "timestamp": "1749416383", "type": "text", "text": {"body": "hola"}},
      {"from": "34612345679", "id": "wamid.W2", "timestamp": "1749416384", "type": "sticker", "sticker": {}}
    ]}}]}]}"#;

fn inbound(i: usize, customer: &str) -> Vec<u8> {
    proto::InboundMessage {
        tenant: "acme".into(),
        customer: customer.into(),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: format!("k{i}"),
        text: "hola".into(),
        business_number: String::new(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn reader(brokers: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// A one-broker mock cluster with every topic the service uses (one partition each), and a
/// producer of test input.
fn mock() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    FutureProducer,
) {
    let cluster = MockCluster::new(1).unwrap();
    let topics = switchboard::config::KafkaConfig::default();
    for (topic, _) in switchboard::kafka::topics(&topics) {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let producer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    (cluster, brokers, producer)
}

/// Produces one record keyed by the test tenant and waits for the broker's acknowledgement.
async fn send(producer: &FutureProducer, topic: &str, payload: Vec<u8>) {
    producer
        .send(
            FutureRecord::to(topic).key("acme").payload(&payload),
            Duration::from_secs(5),
        )
        .await
        .expect("the mock broker takes it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_through_topics_and_dead_letters_what_it_cannot_read() {
    let (cluster, brokers, producer) = mock();
    let mut config = Config::from_toml_str(CONFIG).unwrap();
    config.kafka.brokers = brokers.clone();
    let server = Server::start(config, Parts::default()).await;
    let send = |topic: &'static str, payload: Vec<u8>| send(&producer, topic, payload);
    send("switchboard.inbound", inbound(1, "+34612340001")).await;
    send("switchboard.inbound", b"\xff\xff not protobuf".to_vec()).await;
    send("switchboard.inbound", inbound(2, "not a number")).await;
    send("switchboard.inbound", inbound(3, "+34612340003")).await;
    send("switchboard.webhooks", WEBHOOK.as_bytes().to_vec()).await;
    // A retried record (same message id) is absorbed by de-duplication, not routed twice.
    send("switchboard.inbound", inbound(1, "+34612340001")).await;
    // A webhook whose outer shape and number read (the endpoint stores it) but whose message
    // does not (no `from`): the input dead-letters it.
    let unreadable = WEBHOOK.replace(r#""from": "34612345678", "#, "");
    send("switchboard.webhooks", unreadable.into_bytes()).await;

    let routed = reader(&brokers, "switchboard.routed");
    let mut decisions = Vec::new();
    while decisions.len() < 5 {
        let m = guard(routed.recv()).await.unwrap();
        assert_eq!(m.key(), Some(&b"acme"[..]), "keyed by tenant");
        decisions.push(proto::RoutingDecision::decode(m.payload().unwrap()).unwrap());
    }
    assert!(
        decisions[..4]
            .iter()
            .all(|d| !d.duplicate && d.target() == proto::Target::Bot)
    );
    assert_eq!(
        decisions[3].conversation_id,
        decisions[0].conversation_id.replace("c-1", "c-4")
    );
    assert!(decisions[4].duplicate, "the retried record");

    let dlq = reader(&brokers, "switchboard.dlq");
    let mut dead = Vec::new();
    while dead.len() < 3 {
        let m = guard(dlq.recv()).await.unwrap();
        let headers = m.headers().expect("dead letters carry headers");
        let get = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(get("switchboard.original.partition"), "0");
        dead.push((
            get("switchboard.original.topic"),
            get("switchboard.original.offset"),
            get("switchboard.error.reason"),
            get("switchboard.error"),
        ));
    }
    dead.sort();
    let found = |i: usize| (dead[i].0.as_str(), dead[i].1.as_str(), dead[i].2.as_str());
    assert_eq!(found(0), ("switchboard.inbound", "1", "undecodable"));
    assert_eq!(found(1), ("switchboard.inbound", "2", "invalid_argument"));
    assert!(dead[1].3.contains("customer"), "{:?}", dead[1]);
    assert_eq!(found(2), ("switchboard.webhooks", "1", "malformed"));
    assert!(dead[2].3.contains("from"), "{:?}", dead[2]);
    server.stop().await;
    // Clients leave their groups while the broker still runs (else their drop waits out
    // timeouts against a gone broker).
    drop((routed, dlq, producer));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_commit_and_failing_produces_are_retried() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use std::collections::HashSet;

    let (cluster, brokers, producer) = mock();
    let produce = |from: usize, to: usize| {
        let producer = producer.clone();
        async move {
            for i in from..to {
                let payload = inbound(i, &format!("+346123{i:05}"));
                producer
                    .send(
                        FutureRecord::to("switchboard.inbound")
                            .key("acme")
                            .payload(&payload),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    let config = || {
        let mut c = Config::from_toml_str(CONFIG).unwrap();
        c.kafka.brokers = brokers.clone();
        // The mock coordinator hands a stopped member's partitions on only when its session
        // times out (45 s by default), even after it unsubscribed: keep the session short.
        c.kafka
            .options
            .insert("session.timeout.ms".into(), "6000".into());
        c.kafka
            .options
            .insert("heartbeat.interval.ms".into(), "500".into());
        c
    };
    let routed = reader(&brokers, "switchboard.routed");
    let (mut seen, mut total) = (HashSet::new(), 0);

    // The broker fails the service's next produce requests: it must retry, not skip.
    produce(0, 15).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4],
    );
    let first = Server::start(config(), Parts::default()).await;
    read_until(&routed, &mut seen, &mut total, 15).await;
    first.stop().await; // a clean stop commits what it stored

    // More input while nothing runs; a new instance in the same group resumes at the commit.
    produce(15, 30).await;
    let second = Server::start(config(), Parts::default()).await;
    read_until(&routed, &mut seen, &mut total, 30).await;
    second.stop().await;

    let expected: HashSet<String> = (0..30).map(|i| format!("k{i}")).collect();
    assert_eq!(seen, expected, "every input id was routed: 0 lost");
    assert_eq!(total, 30, "after a clean stop nothing is routed twice");
    drop((routed, producer));
    drop(cluster);
}

/// Reads decisions until `target` distinct message ids were seen.
async fn read_until(
    routed: &StreamConsumer,
    seen: &mut std::collections::HashSet<String>,
    total: &mut usize,
    target: usize,
) {
    while seen.len() < target {
        let m = guard(routed.recv()).await.unwrap();
        let d = proto::RoutingDecision::decode(m.payload().unwrap()).unwrap();
        seen.insert(d.provider_message_id);
        *total += 1;
    }
}

/// A webhook payload carrying one status of a send of ours.
fn status_webhook(callback: &str, status: &str, code: Option<u32>) -> Vec<u8> {
    let errors = code.map_or(String::new(), |c| {
        format!(r#", "errors": [{{"code": {c}, "title": "t"}}]"#)
    });
    format!(
        r#"{{"object": "whatsapp_business_account", "entry": [{{"changes": [{{"field": "messages", "value": {{
        "messaging_product": "whatsapp",
        "metadata": {{"display_phone_number": "34910000001", "phone_number_id": "106540352242922"}},
        "statuses": [
          {{"id": "wamid.X", "status": "{status}", "timestamp": "1749416400", "recipient_id": "34612345678",
            "biz_opaque_callback_data": "{callback}"{errors}}},
          {{"id": "wamid.Y", "status": "read", "timestamp": "1749416401", "recipient_id": "34612345678"}}
        ]}}}}]}}]}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_requests_dispatch_through_topics_and_status_webhooks_feed_back() {
    let (cluster, brokers, producer) = mock();
    let mut config = Config::from_toml_str(CONFIG).unwrap();
    config.kafka.brokers = brokers.clone();
    config.kafka.statistics_interval_ms = 200; // the consumer lag gauge, soon
    config.kafka.snapshot_interval_ms = 300; // and the snapshot families
    let server = Server::start(config, Parts::default()).await;
    let send = |topic: &'static str, payload: Vec<u8>| send(&producer, topic, payload);
    let request = |key: &str| proto::SendRequest {
        tenant: "acme".into(),
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
    send("switchboard.sends", request("order-1").encode_to_vec()).await;
    // No idempotency key: a dead letter that names the field, and the partition moves on.
    send("switchboard.sends", request("").encode_to_vec()).await;
    // The second names its template with a language and a body parameter.
    let order_2 = proto::SendRequest {
        content: String::new(),
        template: Some(proto::Template {
            name: "order_shipped".into(),
            language: "en_US".into(),
            components: vec![proto::TemplateComponent {
                r#type: proto::ComponentType::Body as i32,
                parameters: vec![proto::TemplateParameter {
                    value: Some(proto::template_parameter::Value::Text("48213".into())),
                }],
                ..Default::default()
            }],
        }),
        ..request("order-2")
    };
    send("switchboard.sends", order_2.encode_to_vec()).await;

    let dispatch = reader(&brokers, "switchboard.dispatch");
    let mut dispatched = Vec::new();
    while dispatched.len() < 2 {
        let m = guard(dispatch.recv()).await.unwrap();
        assert_eq!(m.key(), Some(&b"acme"[..]), "keyed by tenant");
        dispatched.push(proto::Dispatch::decode(m.payload().unwrap()).unwrap());
    }
    assert_eq!(dispatched[0].to, "+34612345678");
    // What a restore replays from this topic: the key, whether it counted, when.
    assert_eq!(dispatched[0].idempotency_key, "order-1");
    assert!(
        dispatched[0].counted,
        "a template to a customer outside the window counts"
    );
    assert!(dispatched[0].dispatched_at_ms > 1_700_000_000_000);
    assert_eq!(dispatched[0].category(), proto::Category::Utility);
    assert_eq!(
        dispatched[0].callback_data,
        format!("sb1:acme:{}", dispatched[0].send_id)
    );
    // The egress gets the template as it was asked for (the first: by name only).
    assert_eq!(dispatched[0].template, None);
    assert_eq!(
        (dispatched[1].content.as_str(), &dispatched[1].template),
        ("order_shipped", &order_2.template)
    );

    let dlq = reader(&brokers, "switchboard.dlq");
    // Read into owned values: a consumer closes only once its messages are gone.
    let headers: std::collections::HashMap<String, String> = {
        let dead = guard(dlq.recv()).await.unwrap();
        let headers = dead.headers().expect("dead letters carry headers");
        headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                (h.key.to_owned(), value.into_owned())
            })
            .collect()
    };
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    assert_eq!(header("switchboard.original.topic"), "switchboard.sends");
    assert_eq!(header("switchboard.original.offset"), "1");
    assert_eq!(header("switchboard.original.key"), "acme");
    assert!(header("switchboard.error").contains("idempotency_key"));

    // The provider answers through webhooks: the first send failed (re-engagement window
    // closed), the second was delivered. A status of a send not ours is left alone.
    let (first, second) = (&dispatched[0], &dispatched[1]);
    send(
        "switchboard.webhooks",
        status_webhook(&first.callback_data, "failed", Some(131047)),
    )
    .await;
    send(
        "switchboard.webhooks",
        status_webhook(&second.callback_data, "delivered", None),
    )
    .await;

    let status = reader(&brokers, "switchboard.status");
    let mut last = std::collections::HashMap::new();
    let mut events = 0;
    while last
        .get(&first.send_id)
        .map(|s: &proto::SendStatus| s.state())
        != Some(proto::SendState::Failed)
        || last
            .get(&second.send_id)
            .map(|s: &proto::SendStatus| s.state())
            != Some(proto::SendState::Delivered)
    {
        let m = guard(status.recv()).await.unwrap();
        let s = proto::SendStatus::decode(m.payload().unwrap()).unwrap();
        events += 1;
        last.insert(s.send_id.clone(), s);
    }
    let failed = &last[&first.send_id];
    assert_eq!(failed.provider_code, 131047);
    assert_eq!(failed.reason(), proto::RefusalReason::TemplateRequired);
    // accepted + dispatched for each, then failed and delivered.
    assert_eq!(events, 6);

    // The Kafka families are exported (produce retries only once a delivery has failed).
    use switchboard::telemetry as t;
    let families = [
        t::KAFKA_RECORDS_IN,
        t::KAFKA_RECORDS_OUT,
        t::KAFKA_DEAD_LETTERS,
        t::KAFKA_SNAPSHOT,
        t::KAFKA_SNAPSHOT_BYTES,
        t::KAFKA_RESTORE,
        t::KAFKA_RESTORE_BYTES,
        t::KAFKA_HANDOVERS,
        t::KAFKA_COMMITS,
        t::KAFKA_REBALANCES,
        t::KAFKA_CONSUMER_LAG,
        t::KAFKA_STATUSES,
        t::KAFKA_PARTITIONS_OWNED,
        t::KAFKA_TENANTS_OWNED,
    ];
    let body = common::scrape_until(server.metrics, &families).await;
    // At least this test's counts: the recorder is shared with the other tests of this
    // process (the dashboard test feeds a status webhook, the forwarding test journals sends).
    let value = |series: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let matched = value(r#"switchboard_kafka_webhook_statuses_total{outcome="matched"}"#);
    let unmatched = value(r#"switchboard_kafka_webhook_statuses_total{outcome="unmatched"}"#);
    assert!(matched >= 2.0 && unmatched >= 2.0, "{matched} {unmatched}");
    let sends_in = value(r#"switchboard_kafka_records_in_total{topic="switchboard.sends"}"#);
    assert!(sends_in >= 3.0, "{sends_in}");
    // (The owned gauges' values are checked in the real-broker suite, whose tests run one at
    // a time: here other tests' servers in this process set them too.)
    server.stop().await;
    drop((dispatch, dlq, status, producer));
    drop(cluster);
}

/// Two tenants on the two partitions of every topic, for two replicas.
fn split_config(brokers: &str) -> (Config, [String; 2]) {
    let [first, second] = &suite::one_tenant_per_partition(2)[..] else {
        unreachable!("one tenant per partition")
    };
    let tenants = [first.clone(), second.clone()];
    let toml = suite::replicas_toml(brokers, &tenants, false);
    (Config::from_toml_str(&toml).unwrap(), tenants)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_forward_calls_and_agent_streams_to_the_tenants_owner() {
    use proto::agents_client::AgentsClient;
    use proto::inbound_client::InboundClient;
    use proto::outbound_client::OutboundClient;
    use proto::quotas_client::QuotasClient;
    use switchboard::grpc::SERVED_BY_HEADER;

    let cluster = suite::mock_cluster(2);
    let (config, tenants) = split_config(&cluster.bootstrap_servers());
    let a = Server::start(config.clone(), Parts::default()).await;
    let b = Server::start(config, Parts::default()).await;
    let (ch_a, ch_b) = (a.channel().await, b.channel().await);

    // Wait until each replica serves one tenant and forwards the other's calls to the other
    // replica (the group has split the partitions and the owners have announced themselves).
    let served_by = |response: &tonic::Response<proto::PortfolioQuota>| {
        response
            .metadata()
            .get(SERVED_BY_HEADER)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (remote_for_a, local_for_a) = guard(async {
        loop {
            let mut seen = Vec::new();
            for (ch, other) in [(&ch_a, b.grpc), (&ch_b, a.grpc)] {
                for t in &tenants {
                    let get = QuotasClient::new(ch.clone())
                        .get(proto::QuotaRef { tenant: t.clone() })
                        .await;
                    match get {
                        Ok(r) => seen.push((t.clone(), served_by(&r), other.to_string())),
                        Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
                    }
                }
            }
            let forwarded: Vec<_> = seen
                .iter()
                .filter(|(_, by, other)| by.as_deref() == Some(other.as_str()))
                .collect();
            if seen.len() == 4 && forwarded.len() == 2 && forwarded[0].0 != forwarded[1].0 {
                // On replica a: the tenant forwarded to b, and the one a serves itself.
                let remote = forwarded
                    .iter()
                    .find(|(_, _, other)| *other == b.grpc.to_string())
                    .expect("a forwards one tenant")
                    .0
                    .clone();
                let local = tenants.iter().find(|t| **t != remote).unwrap().clone();
                return (remote, local);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // A send through replica a for the tenant b owns is admitted against b's quota.
    let request = proto::SendRequest {
        tenant: remote_for_a.clone(),
        from: format!("{remote_for_a}-n"),
        to: "+34612345678".into(),
        category: proto::Category::Marketing as i32,
        content: "promo".into(),
        template: None,
        priority: 0,
        idempotency_key: "fwd-1".into(),
        valid_for_ms: 0,
        ..Default::default()
    };
    let sent = OutboundClient::new(ch_a.clone())
        .send(request)
        .await
        .unwrap();
    assert_eq!(
        sent.metadata().get(SERVED_BY_HEADER).unwrap(),
        b.grpc.to_string().as_str()
    );
    assert_eq!(sent.get_ref().admission(), proto::Admission::Dispatched);
    let on_b = QuotasClient::new(ch_b.clone())
        .get(proto::QuotaRef {
            tenant: remote_for_a.clone(),
        })
        .await
        .unwrap();
    assert!(served_by(&on_b).is_none(), "b serves it itself");
    assert_eq!(on_b.get_ref().used, 1, "counted in the owner's quota");

    // An agent of that tenant whose desktop is connected to replica a: registered and
    // subscribed through a, it receives the assignment b makes.
    let mut agents = AgentsClient::new(ch_a.clone());
    agents
        .register(proto::RegisterAgentRequest {
            tenant: remote_for_a.clone(),
            agent_id: "ana".into(),
            presence: proto::Presence::Online as i32,
            capacity: 2,
            queues: vec!["q".into()],
        })
        .await
        .unwrap();
    let mut events = agents
        .subscribe(proto::AgentRef {
            tenant: remote_for_a.clone(),
            agent_id: "ana".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let decision = InboundClient::new(ch_b.clone())
        .ingest(proto::InboundMessage {
            tenant: remote_for_a.clone(),
            customer: "+34612345679".into(),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: "wamid.FWD".into(),
            text: "quiero devolver el pedido".into(),
            business_number: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision.agent_id, "ana");
    let event = guard(events.message()).await.unwrap().expect("an event");
    let Some(proto::agent_event::Event::Assigned(assigned)) = event.event else {
        panic!("an assignment, got {event:?}");
    };
    assert_eq!(
        assigned.conversation.unwrap().conversation_id,
        decision.conversation_id,
        "the agent on replica a got replica b's assignment"
    );

    // The tenant a serves itself is not forwarded.
    let local = QuotasClient::new(ch_a.clone())
        .get(proto::QuotaRef {
            tenant: local_for_a.clone(),
        })
        .await
        .unwrap();
    assert!(served_by(&local).is_none());
    drop(events);
    a.stop().await;
    b.stop().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_their_tenants_over_when_one_is_killed_and_comes_back() {
    // The service binary as two child processes on the mock cluster (4 partitions): kill -9
    // one, the other takes its tenants over after the session timeout.
    let cluster = suite::mock_cluster(4);
    suite::two_replicas(&cluster.bootstrap_servers(), false, suite::Stop::Kill).await;
    drop(cluster);
}

/// Partition 0's snapshot as a new owner reads it (another store, as after a restart).
async fn read_back(k: &switchboard::config::KafkaConfig) -> switchboard::kafka::state::Snapshot {
    let reader = switchboard::kafka::state::StateStore::new(k).unwrap();
    tokio::task::spawn_blocking(move || reader.read(0))
        .await
        .unwrap()
        .unwrap()
        .expect("a snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_reads_the_last_complete_snapshot_past_an_unfinished_one() {
    use rdkafka::message::{Header, OwnedHeaders};
    use switchboard::kafka::state::StateStore;
    let cluster = MockCluster::new(1).unwrap();
    let mut k = switchboard::config::KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        ..Default::default()
    };
    k.snapshot_chunk_bytes = 4; // several chunks per tenant
    cluster.create_topic(&k.state_topic, 1, 1).unwrap();
    let store = StateStore::new(&k).unwrap();
    let inputs = vec![("switchboard.inbound".to_owned(), 42)];
    let complete = store
        .write(
            0,
            1_000,
            inputs.clone(),
            7,
            vec![
                ("acme".into(), b"{\"a\":1}".to_vec()),
                ("globex".into(), b"{}".to_vec()),
            ],
            None,
            0,
            Vec::new(),
        )
        .await
        .unwrap();

    // A writer that died in the middle of the next cut: two chunks, no manifest.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    let manifest_offset = complete.first.expect("a cut with tenants has chunks") + 3; // 2 chunks of acme, 1 of globex
    for chunk in [&b"{\"a\""[..], &b":2}"[..]] {
        let previous = manifest_offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "switchboard.state.kind",
                value: Some("chunk"),
            })
            .insert(Header {
                key: "switchboard.state.cut",
                value: Some("999999999999999"),
            })
            .insert(Header {
                key: "switchboard.state.previous",
                value: Some(previous.as_str()),
            });
        let record = FutureRecord::to(&k.state_topic)
            .partition(0)
            .key("acme")
            .payload(chunk)
            .headers(headers);
        producer.send(record, Duration::from_secs(5)).await.unwrap();
    }

    // A new owner (another store, as after a restart) finds the complete one.
    let snapshot = read_back(&k).await;
    assert_eq!(snapshot.offset, manifest_offset);
    assert_eq!(snapshot.manifest, complete);
    assert_eq!(snapshot.manifest.inputs, inputs);
    assert_eq!(snapshot.manifest.dispatch, 7);
    assert_eq!(
        snapshot.tenants,
        vec![
            ("acme".to_owned(), vec![b"{\"a\":1}".to_vec()]),
            ("globex".to_owned(), vec![b"{}".to_vec()])
        ],
        "the chunks put back together, the unfinished cut's left out"
    );
    drop(cluster);
}

/// Incremental cuts: a takeover reads the newest cut and, for each tenant whose record there
/// is a part, the cuts before it, until a whole record or `spread` cuts in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_reads_back_the_cuts_a_tenant_s_parts_need_and_no_more() {
    use switchboard::kafka::state::StateStore;
    let cluster = MockCluster::new(1).unwrap();
    let k = switchboard::config::KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        ..Default::default()
    };
    cluster.create_topic(&k.state_topic, 1, 1).unwrap();
    let store = StateStore::new(&k).unwrap();
    let inputs = |o: i64| vec![("switchboard.inbound".to_owned(), o)];
    let tenants = |round: u8| {
        vec![
            ("acme".to_owned(), vec![b'a', b'0' + round]),
            ("globex".to_owned(), vec![b'g', b'0' + round]),
        ]
    };
    // Round 0: both whole. Round 1: acme a part, globex whole. Rounds 2 and 3: both parts.
    let parts = [
        vec![],
        vec!["acme"],
        vec!["acme", "globex"],
        vec!["acme", "globex"],
    ];
    for (round, parts) in parts.iter().enumerate() {
        let parts = parts.iter().map(|p| p.to_string()).collect();
        store
            .write(
                0,
                1_000 + round as i64,
                inputs(round as i64),
                0,
                tenants(round as u8),
                Some(3),
                round as u64,
                parts,
            )
            .await
            .unwrap();
    }
    let snapshot = read_back(&k).await;
    assert_eq!(snapshot.manifest.round, 3);
    assert_eq!(
        snapshot.manifest.inputs,
        inputs(3),
        "positions of the newest cut"
    );
    assert_eq!(snapshot.cuts, 3, "spread 3: rounds 3, 2 and 1");
    assert_eq!(
        snapshot.tenants,
        vec![
            (
                "acme".to_owned(),
                vec![b"a3".to_vec(), b"a2".to_vec(), b"a1".to_vec()]
            ),
            (
                "globex".to_owned(),
                vec![b"g3".to_vec(), b"g2".to_vec(), b"g1".to_vec()]
            ),
        ],
        "newest first; globex's round-1 record is whole, acme's reaches the spread"
    );
    drop(cluster);
}

/// Every metric the Grafana dashboard and the Prometheus alert rules (`deploy/`) query is one
/// the service exports: a Kafka-mode server with traffic that makes each family appear (a
/// queued friction conversation breaching a 1 s SLA, an agent taking it, a poison record, a
/// marketing send failed by the provider with 131048), then its live `/metrics`. The scrape
/// is written to `$CARGO_TARGET_TMPDIR/switchboard-live-metrics.txt` for
/// `promtool check metrics` (scripts/deploy-check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_query_only_exported_metrics() {
    let (cluster, brokers, producer) = mock();
    let mut config = Config::from_toml_str(&format!(
        "{CONFIG}\n[[tenants.intents]]\nname = \"return\"\nmode = \"human\"\nqueue = \"q\"\n\
         keywords = [\"devolver\"]\n"
    ))
    .unwrap();
    config.tenants[0].queues[0].sla_target_secs = 1;
    config.runtime.tick_interval_ms = 100;
    config.kafka.brokers = brokers.clone();
    config.kafka.statistics_interval_ms = 200;
    config.kafka.snapshot_interval_ms = 300;
    let server = Server::start(config, Parts::default()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A friction conversation waits in the queue past its 1 s SLA, then an agent takes it.
    // (gRPC is served once the replica owns the tenant's partition: retry until then.)
    let mut grpc_inbound = proto::inbound_client::InboundClient::new(channel.clone());
    let message = proto::InboundMessage {
        tenant: "acme".into(),
        customer: "+34612000001".into(),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: "dash-1".into(),
        text: "quiero devolver el pedido".into(),
        business_number: String::new(),
        ..Default::default()
    };
    guard(async {
        while let Err(e) = grpc_inbound.ingest(message.clone()).await {
            assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let body = common::scrape_until(server.metrics, &[switchboard::telemetry::SLA_BREACHES]).await;
    assert!(body.contains("switchboard_sla_breaches_total{"), "{body}");
    proto::agents_client::AgentsClient::new(channel.clone())
        .register(proto::RegisterAgentRequest {
            tenant: "acme".into(),
            agent_id: "ana".into(),
            presence: proto::Presence::Online as i32,
            capacity: 2,
            queues: vec!["q".into()],
        })
        .await
        .unwrap();

    // Kafka: a routed record, a poison one, a marketing send the provider fails with 131048.
    send(&producer, "switchboard.inbound", inbound(0, "+34612000002")).await;
    send(&producer, "switchboard.inbound", b"not protobuf".to_vec()).await;
    let marketing = proto::SendRequest {
        tenant: "acme".into(),
        from: "106540352242922".into(),
        to: "+34612000003".into(),
        category: proto::Category::Marketing as i32,
        content: "promo".into(),
        template: None,
        priority: 0,
        idempotency_key: "dash-send".into(),
        valid_for_ms: 0,
        ..Default::default()
    };
    send(&producer, "switchboard.sends", marketing.encode_to_vec()).await;
    let dispatch = reader(&brokers, "switchboard.dispatch");
    let dispatched = loop {
        let m = guard(dispatch.recv()).await.unwrap();
        let d = proto::Dispatch::decode(m.payload().unwrap()).unwrap();
        if d.idempotency_key == "dash-send" {
            break d;
        }
    };
    send(
        &producer,
        "switchboard.webhooks",
        status_webhook(&dispatched.callback_data, "failed", Some(131048)),
    )
    .await;

    // Every name the dashboard and the rules use (histograms by their base name).
    let root = env!("CARGO_MANIFEST_DIR");
    let queried = [
        "deploy/grafana/dashboards/switchboard.json",
        "deploy/prometheus/alerts.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(format!("{root}/{f}")).unwrap())
    .collect::<String>();
    let names: std::collections::BTreeSet<String> = regex::Regex::new(r"switchboard_[a-z_]+")
        .unwrap()
        .find_iter(&queried)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_owned()
        })
        .collect();
    assert!(names.len() >= 20, "the dashboard queries {names:?}");
    let listed: Vec<&str> = switchboard::telemetry::METRICS
        .iter()
        .map(|m| m.name)
        .collect();
    let unlisted: Vec<&String> = names
        .iter()
        .filter(|n| !listed.contains(&n.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "not in telemetry::METRICS: {unlisted:?}"
    );
    let families: Vec<&str> = names.iter().map(String::as_str).collect();
    let body = common::scrape_until(server.metrics, &families).await;
    let out =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("switchboard-live-metrics.txt");
    // The body only, without the HTTP head.
    let text = body
        .split_once("\r\n\r\n")
        .map_or(body.as_str(), |(_, b)| b);
    std::fs::write(&out, text).unwrap();
    server.stop().await;
    drop((dispatch, producer));
    drop(cluster);
}

/// An output that keeps failing (librdkafka's mock cluster answers every metadata request
/// for the decisions topic with UNKNOWN_TOPIC_OR_PART, so its records are never delivered and
/// are produced again and again): once they have waited `kafka.stall_timeout_ms`, readiness
/// turns off with the reason (`/ready` 503, gRPC health NOT_SERVING, the gauge); the fault
/// ends, and it turns on again by itself with every record routed. (The same with a paused
/// broker on Tansu: `tests/faults.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_keeps_failing_turns_readiness_off_until_it_recovers() {
    use rdkafka::types::RDKafkaRespErr;
    use tonic_health::pb::health_check_response::ServingStatus;
    let (cluster, brokers, producer) = mock();
    cluster
        .topic_error(
            "switchboard.routed",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    let mut config = Config::from_toml_str(CONFIG).unwrap();
    config.kafka.brokers = brokers.clone();
    config.kafka.stall_timeout_ms = 2_000;
    config.kafka.statistics_interval_ms = 500;
    config.kafka.produce_timeout_ms = 1_000;
    let server = Server::start(config, Parts::default()).await;
    let health = |server: &Server| {
        let addr = server.grpc;
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    let ready = |server: &Server| common::http_answer(server.metrics, "/ready");
    for i in 0..20 {
        send(&producer, "switchboard.inbound", inbound(i, "+34612340001")).await;
    }
    let not_ready = guard(async {
        loop {
            let answer = ready(&server).await;
            if answer.contains("503") {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        not_ready.contains("not ready: input_stalled"),
        "{not_ready}"
    );
    assert_eq!(health(&server).await, ServingStatus::NotServing);
    let metrics = common::http_get(server.metrics, "/metrics").await;
    assert!(
        metrics.contains(r#"switchboard_kafka_unhealthy{condition="input_stalled"} 1"#),
        "{metrics}"
    );
    assert!(
        common::http_get(server.metrics, "/live")
            .await
            .contains("200 OK"),
        "liveness is not readiness"
    );

    // The fault ends: the decisions go out and readiness comes back by itself.
    cluster
        .topic_error(
            "switchboard.routed",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
        )
        .unwrap();
    let routed = reader(&brokers, "switchboard.routed");
    let mut ids = std::collections::HashSet::new();
    while ids.len() < 20 {
        let m = guard(routed.recv()).await.unwrap();
        ids.insert(
            proto::RoutingDecision::decode(m.payload().unwrap())
                .unwrap()
                .provider_message_id,
        );
    }
    guard(async {
        while !ready(&server).await.contains("200 OK") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(health(&server).await, ServingStatus::Serving);
    server.stop().await;
    drop((routed, producer));
    drop(cluster);
}

/// A consumer leaves its group (`kafka::leave_group`) before it is dropped: the group's
/// revoke is served then, and the drop's close has nothing left to revoke. (librdkafka issue
/// #4884: a revoke served inside the close can wait forever in `rd_kafka_assign`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_is_unassigned_before_its_close() {
    use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// Counts the revokes of at least one partition.
    struct Revokes(Arc<AtomicUsize>);
    impl rdkafka::ClientContext for Revokes {}
    impl ConsumerContext for Revokes {
        fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
            if let Rebalance::Revoke(list) = rebalance
                && list.count() > 0
            {
                self.0.fetch_add(1, SeqCst);
            }
        }
    }

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("leaving", 2, 1).unwrap();
    let revokes = Arc::new(AtomicUsize::new(0));
    let consumer: StreamConsumer<Revokes> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "leaving")
        .create_with_context(Revokes(revokes.clone()))
        .unwrap();
    consumer.subscribe(&["leaving"]).unwrap();
    guard(async {
        while consumer.assignment().unwrap().count() < 2 {
            let _ = tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await;
        }
    })
    .await;
    assert_eq!(revokes.load(SeqCst), 0);

    switchboard::kafka::leave_group(&consumer, Duration::from_secs(10)).await;
    assert_eq!(consumer.assignment().unwrap().count(), 0);
    assert_eq!(
        revokes.load(SeqCst),
        1,
        "the revoke is served before the drop"
    );
    drop(consumer);
    assert_eq!(revokes.load(SeqCst), 1, "the close had nothing to revoke");
    drop(cluster);
}
