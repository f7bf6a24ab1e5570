//! Meta in, Meta out in Kafka mode, on librdkafka's mock cluster: `Outbound.Send` → the
//! dispatch topic → the egress → a mock Graph API (with the tenant's own token) → the outcomes
//! topic → `SENT` on the send's status; a signed status webhook posted to the endpoint goes
//! through the webhooks topic to the quotas; a 130429 answer backs the number off; a tenant
//! whose token is refused does not stop another's sends; a signed post that is not a webhook
//! is answered 200 and kept on the dead-letter topic with its reason. (The same on Tansu, with the release
//! binary and a kill -9 of the egress, is in tests/edges.rs.)
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use switchboard::config::Config;
use switchboard::config::cloud_api::Secret;
use switchboard::proto::{self, outbound_client::OutboundClient, quotas_client::QuotasClient};
use switchboard::server::Parts;
use tokio_util::sync::CancellationToken;

mod common;
#[path = "support/graph.rs"]
mod graph;
#[path = "support/meta.rs"]
mod meta;
#[path = "support/sends.rs"]
mod sends;
use common::{Server, guard};
use sends::{send, status_until};

const CONFIG: &str = r#"
    [kafka]
    create_topics = false

    [cloud_api]
    enabled = true
    # The shared token (a test value); beta has its own.
    token = "acme-token"
    max_retries = 1
    backoff_base_ms = 1
    backoff_max_ms = 5

    [[cloud_api.tenants]]
    tenant = "beta"
    token_env = "EGRESS_TEST_BETA_TOKEN"

    [[tenants]]
    id = "acme"
    default_region = "ES"
    default_queue = "q"
    [[tenants.queues]]
    name = "q"
    sla_target_secs = 60
    max_wait_secs = 600
    [[tenants.numbers]]
    id = "106540352242922"

    [[tenants]]
    id = "beta"
    default_region = "ES"
    default_queue = "q"
    [[tenants.queues]]
    name = "q"
    sla_target_secs = 60
    max_wait_secs = 600
    [[tenants.numbers]]
    id = "106540352242999"
"#;

const SECRET: &str = "egress-test-app-secret";

/// A template send to a customer of its own (the pair limit stays out of the way).
fn template(tenant: &str, from: &str, key: &str) -> proto::SendRequest {
    let customer = 600_000 + key.bytes().map(u32::from).sum::<u32>();
    proto::SendRequest {
        tenant: tenant.into(),
        from: from.into(),
        to: format!("+34612{customer}"),
        category: proto::Category::Utility as i32,
        content: "order_update".into(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_reach_the_graph_api_and_answers_come_back() {
    // SAFETY: set before any thread of this test reads the environment (the config load).
    unsafe { std::env::set_var("EGRESS_TEST_BETA_TOKEN", "beta-token") };
    let cluster = MockCluster::new(1).unwrap();
    let mut config = Config::from_toml_str(CONFIG).unwrap();
    for (topic, _) in switchboard::kafka::topics(&config.kafka) {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let (graph, url) = graph::start().await;
    config.kafka.brokers = cluster.bootstrap_servers();
    config.cloud_api.base_url = url;
    config.webhook.app_secret = Secret::new(SECRET);
    config.webhook.verify_token = Secret::new("v");
    config.webhook.resolve().unwrap();
    config.validate().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "http://{}/webhooks/whatsapp",
        listener.local_addr().unwrap()
    );
    let parts = Parts {
        webhook: Some(listener),
        ..Parts::default()
    };
    let server = Server::start(config.clone(), parts).await;
    let stop = CancellationToken::new();
    let egress = std::sync::Arc::new(
        switchboard::egress::Egress::new(&config, stop.clone()).expect("the egress starts"),
    );
    let egress_task = tokio::spawn(egress.run(stop.clone()));
    let channel = server.channel().await;
    let mut outbound = OutboundClient::new(channel.clone());

    // A template send of acme (once the replica owns the partition): to the Graph API with
    // acme's token, then SENT.
    let sent = send(&mut outbound, template("acme", "106540352242922", "a-1")).await;
    assert_eq!(
        sent.admission,
        proto::Admission::Dispatched as i32,
        "{sent:?}"
    );
    let s = status_until(&mut outbound, "acme", &sent.send_id, |s| {
        s.state != proto::SendState::Dispatched as i32
    })
    .await;
    assert_eq!(s.state, proto::SendState::Sent as i32, "{s:?}");
    let callback = format!("sb1:acme:{}", sent.send_id);
    let posts = graph.posts_for(&callback);
    assert_eq!(posts.len(), 1, "sent once: {posts:?}");
    assert_eq!(posts[0].path, "/v21.0/106540352242922/messages");
    assert_eq!(posts[0].authorization, "Bearer acme-token");
    assert_eq!(posts[0].body["type"], "template");
    assert_eq!(posts[0].body["template"]["name"], "order_update");
    assert!(posts[0].body["to"].as_str().unwrap().starts_with("34612"));

    // A signed status webhook through the endpoint and the webhooks topic: a failure after
    // sent (131026, undeliverable) reaches the send.
    let body = meta::status("wamid.M1", "failed", &callback, Some(131026));
    let answer = guard(
        reqwest::Client::new()
            .post(&endpoint)
            .header("X-Hub-Signature-256", meta::sign(SECRET, &body))
            .body(body)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.status().as_u16(),
        200,
        "stored after the broker's ack"
    );
    let s = status_until(&mut outbound, "acme", &sent.send_id, |s| {
        s.state == proto::SendState::Failed as i32
    })
    .await;
    assert_eq!(s.provider_code, 131026);

    // The Graph API answers 130429 to the egress: the outcome backs the number off.
    graph.script([graph::error(400, 130429)]);
    let limited = outbound
        .send(template("acme", "106540352242922", "a-2"))
        .await
        .unwrap()
        .into_inner();
    let s = status_until(&mut outbound, "acme", &limited.send_id, |s| {
        s.state == proto::SendState::Failed as i32
    })
    .await;
    assert_eq!(s.provider_code, 130429, "{s:?}");
    let quota = QuotasClient::new(channel.clone())
        .get(proto::QuotaRef {
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(quota.numbers[0].backoff_until_ms > 0, "{quota:?}");

    // beta's own token is refused (401, code 190): beta's send fails, acme's still go.
    graph.refuse_token("beta-token");
    let beta = outbound
        .send(template("beta", "106540352242999", "b-1"))
        .await
        .unwrap()
        .into_inner();
    let s = status_until(&mut outbound, "beta", &beta.send_id, |s| {
        s.state != proto::SendState::Dispatched as i32
    })
    .await;
    assert_eq!(
        (s.state, s.provider_code),
        (proto::SendState::Failed as i32, 190)
    );
    let beta_post = graph.posts_for(&format!("sb1:beta:{}", beta.send_id));
    assert_eq!(beta_post[0].authorization, "Bearer beta-token");
    tokio::time::sleep(Duration::from_millis(1_100)).await; // acme's number backs off 1 s
    let acme = outbound
        .send(template("acme", "106540352242922", "a-3"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        acme.admission,
        proto::Admission::Dispatched as i32,
        "{acme:?}"
    );
    let s = status_until(&mut outbound, "acme", &acme.send_id, |s| {
        s.state != proto::SendState::Dispatched as i32
    })
    .await;
    assert_eq!(s.state, proto::SendState::Sent as i32, "{s:?}");

    // A signed post that is not a webhook: 200 (a retry cannot fix it), and the payload on
    // the dead-letter topic with the reason, once the broker has it.
    let junk = "not json at all";
    let answer = guard(
        reqwest::Client::new()
            .post(&endpoint)
            .header("X-Hub-Signature-256", meta::sign(SECRET, junk))
            .body(junk)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let dlq: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "egress-test-dlq")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&dlq, &["switchboard.dlq"]).unwrap();
    let dead = guard(async {
        use rdkafka::message::{Headers, Message};
        loop {
            let m = dlq.recv().await.expect("a dead letter");
            if m.payload() == Some(junk.as_bytes()) {
                let headers = m.headers().expect("headers");
                return headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect::<std::collections::HashMap<_, _>>();
            }
        }
    })
    .await;
    assert_eq!(dead["switchboard.error.reason"], "malformed", "{dead:?}");
    assert_eq!(dead["switchboard.original.topic"], "switchboard.webhooks");

    stop.cancel();
    guard(egress_task).await.unwrap();
    server.stop().await;
}

/// `switchboard webhook`: the endpoint alone stores a signed post on the webhooks topic,
/// keyed by its tenant, before it answers 200; an unsigned post gets 401 and stores nothing.
/// Without brokers or without an app secret it refuses to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_runs_alone_as_switchboard_webhook() {
    let cluster = MockCluster::new(1).unwrap();
    // acme alone: the endpoint needs no Cloud API settings.
    let acme = &CONFIG[CONFIG.find("[[tenants]]").unwrap()..CONFIG.rfind("[[tenants]]").unwrap()];
    let mut config =
        Config::from_toml_str(&format!("[kafka]\ncreate_topics = false\n{acme}")).unwrap();
    for (topic, _) in switchboard::kafka::topics(&config.kafka) {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let refusal = |config: Config| async {
        let (webhook, metrics) = (bind().await.unwrap(), bind().await.unwrap());
        switchboard::server::run_webhook(config, webhook, metrics, std::future::pending())
            .await
            .expect_err("refused")
            .to_string()
    };
    assert!(
        refusal(config.clone())
            .await
            .contains("kafka.brokers is empty"),
        "needs Kafka"
    );
    config.kafka.brokers = cluster.bootstrap_servers();
    assert!(
        refusal(config.clone())
            .await
            .contains("no app secret configured"),
        "needs a secret"
    );
    config.webhook.app_secret = Secret::new(SECRET);
    config.webhook.verify_token = Secret::new("v");
    config.webhook.resolve().unwrap();
    config.validate().unwrap();

    let (webhook, metrics) = (bind().await.unwrap(), bind().await.unwrap());
    let url = format!("http://{}/webhooks/whatsapp", webhook.local_addr().unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(switchboard::server::run_webhook(
        config,
        webhook,
        metrics,
        stop.clone().cancelled_owned(),
    ));
    let post = |body: String, signature: Option<String>| {
        let mut request = reqwest::Client::new().post(&url).body(body);
        if let Some(s) = signature {
            request = request.header("X-Hub-Signature-256", s);
        }
        async move { guard(request.send()).await.unwrap().status().as_u16() }
    };
    let unsigned = meta::text_message("wamid.ALONE0", "34612000111", "nadie firma");
    assert_eq!(post(unsigned, None).await, 401);
    let body = meta::text_message("wamid.ALONE1", "34612000111", "hola");
    assert_eq!(
        post(body.clone(), Some(meta::sign(SECRET, &body))).await,
        200,
        "stored after the broker's ack"
    );

    let reader: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "webhook-alone-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&reader, &["switchboard.webhooks"]).unwrap();
    let stored = guard(reader.recv()).await.expect("the stored webhook");
    use rdkafka::message::Message;
    assert_eq!(stored.key(), Some(&b"acme"[..]), "keyed by its tenant");
    assert_eq!(
        stored.payload(),
        Some(body.as_bytes()),
        "the raw body, only the signed one"
    );

    stop.cancel();
    guard(task).await.unwrap().unwrap();
}
