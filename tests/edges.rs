//! Meta in, Meta out on a real broker (Tansu; run by `scripts/broker-suite`), black-box: the
//! service and `switchboard egress` as their own processes, a local mock of the Graph API,
//! Meta's payloads signed and posted over HTTP.
//!
//! - `Outbound.Send` of a template (name, language, a body parameter) → dispatch topic →
//!   egress → the mock gets exactly the Cloud API's JSON for it, with the tenant's own token → `SENT` on the status stream → a signed `delivered` status webhook →
//!   `DELIVERED`; a 130429 from the mock backs the number off (`Quotas.Get`); a tenant whose
//!   token is refused leaves another tenant's sends flowing.
//! - kill -9 of the egress in the middle of 2,000 dispatches: every dispatch reaches the mock
//!   at least once, and the duplicates stay within the stated bound (`egress.max_in_flight`
//!   per partition per crash).
//!
//! Every wait is bounded; the figures printed (duplicates) are for the report.
use std::collections::HashMap;
use std::time::Duration;

use switchboard::proto::{self, outbound_client::OutboundClient, quotas_client::QuotasClient};
use tonic::transport::Channel;

mod common;
#[path = "support/graph.rs"]
mod graph;
#[path = "support/meta.rs"]
mod meta;
#[path = "support/sends.rs"]
mod sends;
#[path = "support/suite.rs"]
mod suite;
#[path = "support/tansu.rs"]
mod tansu;
use common::guard;
use sends::{send, status_until};
use suite::{Process, free_addr};
use tansu::Tansu;

const SECRET: &str = "edges-app-secret";
const PARTITIONS: usize = 2;
const MAX_IN_FLIGHT: usize = 16;

/// Two tenants, acme (the shared token) and beta (its own token, in a file).
fn config(brokers: &str, graph: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let beta_token = dir.join("beta-token");
    std::fs::write(&beta_token, "beta-token\n").unwrap();
    let mut toml = format!(
        r#"
        [runtime]
        tick_interval_ms = 50
        [kafka]
        brokers = "{brokers}"
        replication_factor = 1
        topic_partitions = {PARTITIONS}
        snapshot_interval_ms = 500
        # One record per batch: Tansu 0.6.0 answers a fetch from inside a stored batch with
        # the next batch (see suite::producer), so the restarted egress would skip the rest
        # of the batch its commit points into. Apache Kafka does not need this.
        [kafka.options]
        "batch.num.messages" = "1"
        [egress]
        max_in_flight = {MAX_IN_FLIGHT}
        commit_interval_ms = 200
        [cloud_api]
        enabled = true
        base_url = "{graph}"
        token = "acme-token"
        max_retries = 1
        backoff_base_ms = 1
        backoff_max_ms = 5
        [[cloud_api.tenants]]
        tenant = "beta"
        token_file = "{}"
        [webhook]
        app_secret = "{SECRET}"
        verify_token = "edges-verify"
        "#,
        beta_token.display()
    );
    for (tenant, number) in [("acme", "106540352242922"), ("beta", "106540352242999")] {
        toml.push_str(&format!(
            r#"
            [[tenants]]
            id = "{tenant}"
            default_region = "ES"
            default_queue = "q"
            [[tenants.queues]]
            name = "q"
            sla_target_secs = 60
            max_wait_secs = 600
            [[tenants.numbers]]
            id = "{number}"
            mps = 10000
            [tenants.quotas]
            messaging_limit = 100000
            "#
        ));
    }
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

fn dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-edges-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The service (gRPC, metrics, webhooks) and the egress, each its own process.
struct Deployment {
    _service: Process,
    egress: Option<Process>,
    grpc: String,
    webhooks: String,
    config: std::path::PathBuf,
}

impl Deployment {
    fn start(config: std::path::PathBuf) -> Self {
        let (grpc, metrics, webhooks) = (free_addr(), free_addr(), free_addr());
        let _service = Process::run(
            &config,
            &[
                "serve",
                "--grpc-addr",
                &grpc,
                "--metrics-addr",
                &metrics,
                "--webhook-addr",
                &webhooks,
            ],
        );
        let mut d = Self {
            _service,
            egress: None,
            grpc,
            webhooks,
            config,
        };
        d.start_egress();
        d
    }

    fn start_egress(&mut self) {
        let metrics = free_addr();
        self.egress = Some(Process::run(
            &self.config,
            &["egress", "--metrics-addr", &metrics],
        ));
    }

    async fn channel(&self) -> Channel {
        guard(async {
            loop {
                if let Ok(c) = Channel::from_shared(format!("http://{}", self.grpc))
                    .unwrap()
                    .connect()
                    .await
                {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    async fn post_webhook(&self, body: &str) -> u16 {
        let url = format!("http://{}/webhooks/whatsapp", self.webhooks);
        let answer = reqwest::Client::new()
            .post(url)
            .header("X-Hub-Signature-256", meta::sign(SECRET, body))
            .body(body.to_owned())
            .send();
        guard(answer)
            .await
            .expect("the endpoint answers")
            .status()
            .as_u16()
    }
}

/// A utility template with its language and a body parameter (the customer's name).
fn template(tenant: &str, from: &str, key: &str, to: &str) -> proto::SendRequest {
    let body = proto::TemplateComponent {
        r#type: proto::ComponentType::Body as i32,
        parameters: vec![proto::TemplateParameter {
            value: Some(proto::template_parameter::Value::Text("Ana".into())),
        }],
        ..Default::default()
    };
    proto::SendRequest {
        tenant: tenant.into(),
        from: from.into(),
        to: to.into(),
        category: proto::Category::Utility as i32,
        template: Some(proto::Template {
            name: "order_update".into(),
            language: "pt_BR".into(),
            components: vec![body],
        }),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: scripts/broker-suite"]
async fn meta_in_meta_out_through_the_webhook_endpoint_and_the_egress() {
    let broker = Tansu::memory();
    let (graph, url) = graph::start().await;
    let d = Deployment::start(config(&broker.brokers(), &url, &dir("e2e")));
    let channel = d.channel().await;
    let mut outbound = OutboundClient::new(channel.clone());

    // Sent through the egress with acme's token; SENT on the status stream.
    let sent = send(
        &mut outbound,
        template("acme", "106540352242922", "e-1", "+34611000001"),
    )
    .await;
    assert_eq!(
        sent.admission,
        proto::Admission::Dispatched as i32,
        "{sent:?}"
    );
    let mut stream = outbound
        .stream_status(proto::StatusStreamRequest {
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let s = status_until(&mut outbound, "acme", &sent.send_id, |s| {
        s.state != proto::SendState::Dispatched as i32
    })
    .await;
    assert_eq!(s.state, proto::SendState::Sent as i32, "{s:?}");
    let callback = format!("sb1:acme:{}", sent.send_id);
    let posts = graph.posts_for(&callback);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].path, "/v21.0/106540352242922/messages");
    assert_eq!(posts[0].authorization, "Bearer acme-token");
    assert_eq!(
        posts[0].body,
        serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "34611000001",
            "type": "template",
            "template": {
                "name": "order_update",
                "language": {"code": "pt_BR"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
            },
            "biz_opaque_callback_data": callback,
        })
    );

    // A signed `delivered` status webhook: DELIVERED, on the status stream too.
    let body = meta::status("wamid.M1", "delivered", &callback, None);
    assert_eq!(d.post_webhook(&body).await, 200);
    let s = status_until(&mut outbound, "acme", &sent.send_id, |s| {
        s.state == proto::SendState::Delivered as i32
    })
    .await;
    assert_eq!(s.state, proto::SendState::Delivered as i32, "{s:?}");
    let streamed = guard(async {
        let mut states = Vec::new();
        while let Some(Ok(e)) = stream.message().await.transpose() {
            if e.send_id == sent.send_id {
                states.push(e.state);
                if e.state == proto::SendState::Delivered as i32 {
                    return states;
                }
            }
        }
        states
    })
    .await;
    assert!(
        streamed.contains(&(proto::SendState::Delivered as i32)),
        "the stream shows DELIVERED: {streamed:?}"
    );

    // 130429 from the Graph API: the number backs off.
    graph.script([graph::error(400, 130429)]);
    let limited = send(
        &mut outbound,
        template("acme", "106540352242922", "e-2", "+34611000002"),
    )
    .await;
    let s = status_until(&mut outbound, "acme", &limited.send_id, |s| {
        s.state == proto::SendState::Failed as i32
    })
    .await;
    assert_eq!(s.provider_code, 130429, "{s:?}");
    let quota = QuotasClient::new(channel)
        .get(proto::QuotaRef {
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(quota.numbers[0].backoff_until_ms > 0, "{quota:?}");

    // beta's token is refused: beta's send fails (190), acme's go on.
    graph.refuse_token("beta-token");
    let beta = send(
        &mut outbound,
        template("beta", "106540352242999", "e-3", "+34611000003"),
    )
    .await;
    let s = status_until(&mut outbound, "beta", &beta.send_id, |s| {
        s.state != proto::SendState::Dispatched as i32
    })
    .await;
    assert_eq!(
        (s.state, s.provider_code),
        (proto::SendState::Failed as i32, 190)
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await; // acme's number backs off 1 s
    let acme = send(
        &mut outbound,
        template("acme", "106540352242922", "e-4", "+34611000004"),
    )
    .await;
    let s = status_until(&mut outbound, "acme", &acme.send_id, |s| {
        s.state != proto::SendState::Dispatched as i32
    })
    .await;
    assert_eq!(s.state, proto::SendState::Sent as i32, "{s:?}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: scripts/broker-suite"]
async fn a_killed_egress_sends_every_dispatch_and_resends_within_its_bound() {
    const SENDS: usize = 2_000;
    let broker = Tansu::memory();
    let (graph, url) = graph::start().await;
    // A provider slow enough that sends are in flight when the egress dies.
    graph.slow_down(Duration::from_millis(5));
    let mut d = Deployment::start(config(&broker.brokers(), &url, &dir("kill")));
    let mut outbound = OutboundClient::new(d.channel().await);
    // The service serves both tenants before the burst goes in through the sends topic.
    for (tenant, number) in [("acme", "106540352242922"), ("beta", "106540352242999")] {
        let r = send(
            &mut outbound,
            template(tenant, number, &format!("warm-{tenant}"), "+34611999999"),
        )
        .await;
        assert_eq!(r.admission, proto::Admission::Dispatched as i32, "{r:?}");
    }
    let records: Vec<(String, Vec<u8>)> = (0..SENDS)
        .map(|i| {
            let (tenant, number) = if i % 2 == 0 {
                ("acme", "106540352242922")
            } else {
                ("beta", "106540352242999")
            };
            let request = template(tenant, number, &format!("k-{i}"), &format!("+3462{i:07}"));
            (tenant.to_owned(), prost::Message::encode_to_vec(&request))
        })
        .collect();
    let producer = suite::producer(&broker.brokers());
    suite::produce_all(&producer, "switchboard.sends", records).await;

    // Kill -9 the egress a quarter of the way in, then start it again.
    let distinct = |graph: &graph::Graph| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for p in graph.posts() {
            let key = p.body["biz_opaque_callback_data"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            *seen.entry(key).or_default() += 1;
        }
        seen
    };
    guard_long(async {
        while graph.posts().len() < SENDS / 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    d.egress.take().expect("the egress runs").kill();
    let at_kill = graph.posts().len();
    d.start_egress();
    let seen = guard_long(async {
        let mut last = 0;
        loop {
            let seen = distinct(&graph);
            if seen.len() >= SENDS + 2 {
                return seen;
            }
            if seen.len() / 500 != last / 500 {
                println!("{} of {} dispatches at the mock", seen.len(), SENDS + 2);
            }
            last = seen.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let posts = graph.posts().len();
    let duplicates = posts - seen.len();
    let bound = PARTITIONS * MAX_IN_FLIGHT;
    println!(
        "egress kill -9 after {at_kill} posts: {} dispatches, {posts} posts, {duplicates} sent twice (bound {bound})",
        seen.len()
    );
    assert_eq!(
        seen.len(),
        SENDS + 2,
        "every dispatch (and the two warm-up sends), nothing else"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, above the bound of {bound} (max_in_flight × partitions)"
    );
}

/// A longer guard for the 2,000-dispatch run (2 cores, a real broker).
async fn guard_long<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(180), f)
        .await
        .expect("step did not finish within 180 s")
}
