//! The Cloud API sender against a local mock of the Graph API (axum on 127.0.0.1:0) that
//! answers what each test scripts: message ids, Cloud API error bodies, 5xx, slowness. Each
//! answer gets its reaction, retries stop where they must, and sends fail over to the backup
//! endpoint after three slow probes and come back when the primary is healthy. Waits are
//! bounded by the guard; nothing asserts how fast.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::clock::Timestamp;
use switchboard::cloud_api::{CloudApiConfig, CloudApiSender, Secret, TIMEOUT_CODE};
use switchboard::config::{Category, Config};
use switchboard::core::quota::{Dispatch, ProviderOutcome, SendId};
use switchboard::model::TenantId;
use switchboard::proto::{self, outbound_client::OutboundClient};
use switchboard::server::Parts;

mod common;
use common::{Server, guard};

/// One scripted answer to a POST: status, body, delay before answering.
type Answer = (u16, String, Duration);

/// The mock Graph API: scripted answers to `POST /{version}/{number}/messages` (then 200 with
/// a message id), and `GET /{version}/{number}` probes answered after `probe_delay_ms`.
#[derive(Default)]
struct Graph {
    script: Mutex<VecDeque<Answer>>,
    posts: Mutex<Vec<(String, String, serde_json::Value)>>,
    probe_delay_ms: AtomicU64,
    probes: AtomicU64,
}

impl Graph {
    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }
    fn posts(&self) -> usize {
        self.posts.lock().unwrap().len()
    }
}

fn error(status: u16, code: u32) -> Answer {
    (
        status,
        format!(
            r#"{{"error": {{"message": "scripted", "type": "OAuthException", "code": {code}, "error_data": {{"details": "d"}}, "fbtrace_id": "AbC"}}}}"#
        ),
        Duration::ZERO,
    )
}

fn ok() -> Answer {
    (
        200,
        r#"{"messaging_product": "whatsapp", "contacts": [{"input": "34612345678", "wa_id": "34612345678"}], "messages": [{"id": "wamid.HBg"}]}"#.into(),
        Duration::ZERO,
    )
}

async fn graph() -> (Arc<Graph>, String) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let graph = Arc::new(Graph::default());
    let app = axum::Router::new()
        .route(
            "/{version}/{number}/messages",
            post(
                |State(g): State<Arc<Graph>>,
                 Path((version, number)): Path<(String, String)>,
                 headers: HeaderMap,
                 body: String| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                    g.posts
                        .lock()
                        .unwrap()
                        .push((format!("/{version}/{number}/messages"), auth, json));
                    let (status, body, delay) = g.script.lock().unwrap().pop_front().unwrap_or_else(ok);
                    tokio::time::sleep(delay).await;
                    // A scripted redirect points back at this very path.
                    let mut answer = HeaderMap::new();
                    if (300..400).contains(&status) {
                        let here = format!("/{version}/{number}/messages");
                        answer.insert("location", here.parse().unwrap());
                    }
                    (StatusCode::from_u16(status).unwrap(), answer, body)
                },
            ),
        )
        .route(
            "/{version}/{number}",
            get(|State(g): State<Arc<Graph>>, Path((_, number)): Path<(String, String)>| async move {
                g.probes.fetch_add(1, Ordering::Relaxed);
                let delay = g.probe_delay_ms.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                (StatusCode::OK, format!(r#"{{"id": "{number}"}}"#))
            }),
        )
        .with_state(graph.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (graph, url)
}

fn config(url: &str) -> CloudApiConfig {
    CloudApiConfig {
        enabled: true,
        base_url: url.to_owned(),
        token: Secret::new("EAAG-test-token"),
        timeout_ms: 300,
        max_retries: 2,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        ..CloudApiConfig::default()
    }
}

fn dispatch(id: u64, category: Category, content: &str) -> Dispatch {
    Dispatch {
        id: SendId(id),
        from: "106540352242922".into(),
        to: switchboard::core::identity::normalize("+34612345678", phonenumber::country::Id::ES)
            .unwrap(),
        category,
        content: content.into(),
        template: None,
        idempotency_key: format!("k{id}").into(),
        counted: true,
        at: Timestamp::from_millis(1_700_000_000_000),
    }
}

#[tokio::test]
async fn each_answer_gets_its_outcome_and_only_what_is_retryable_is_retried() {
    let (graph, url) = graph().await;
    let sender = CloudApiSender::start(config(&url), "106540352242922").unwrap();
    let tenant = TenantId::new("acme");

    // Sent: one request, the token as a bearer, the Graph API body.
    let n = graph.posts();
    let outcome = sender
        .deliver(
            &tenant,
            &dispatch(1, Category::Marketing, "promo_black_friday"),
        )
        .await;
    assert_eq!(outcome, ProviderOutcome::Sent);
    assert_eq!(graph.posts(), n + 1);
    {
        let posts = graph.posts.lock().unwrap();
        let (path, auth, body) = posts.last().unwrap();
        assert_eq!(path, "/v21.0/106540352242922/messages");
        assert_eq!(auth, "Bearer EAAG-test-token");
        assert_eq!(body["to"], "34612345678");
        assert_eq!(body["type"], "template");
        assert_eq!(body["template"]["name"], "promo_black_friday");
        assert_eq!(body["template"]["language"]["code"], "es");
        assert_eq!(body["biz_opaque_callback_data"], "sb1:acme:s-1");
    }
    let outcome = sender
        .deliver(
            &tenant,
            &dispatch(2, Category::Session, "hola, ¿en qué le ayudo?"),
        )
        .await;
    assert_eq!(outcome, ProviderOutcome::Sent);
    assert_eq!(
        graph.posts.lock().unwrap().last().unwrap().2["text"]["body"],
        "hola, ¿en qué le ayudo?"
    );

    // Final answers: the code goes to the quotas, and nothing is retried.
    for code in [130429, 131056, 131047, 131048, 100] {
        graph.script([error(400, code)]);
        let n = graph.posts();
        let outcome = sender
            .deliver(&tenant, &dispatch(10, Category::Utility, "t"))
            .await;
        assert_eq!(outcome, ProviderOutcome::Failed { code }, "{code}");
        assert_eq!(graph.posts(), n + 1, "{code} is not retried");
    }

    // A redirect is an answer, not followed (followed, the post would reach the mock twice
    // and be sent): failed with its HTTP status.
    graph.script([(307, String::new(), Duration::ZERO)]);
    let n = graph.posts();
    let outcome = sender
        .deliver(&tenant, &dispatch(11, Category::Utility, "t"))
        .await;
    assert_eq!(outcome, ProviderOutcome::Failed { code: 307 });
    assert_eq!(graph.posts(), n + 1, "the redirect is not followed");

    // Retryable: 131057 (hold and retry), 5xx, a timeout; retried until sent.
    graph.script([error(400, 131057), ok()]);
    let n = graph.posts();
    let outcome = sender
        .deliver(&tenant, &dispatch(20, Category::Utility, "t"))
        .await;
    assert_eq!((outcome, graph.posts() - n), (ProviderOutcome::Sent, 2));

    graph.script([
        (500, "oops".into(), Duration::ZERO),
        (502, "bad gateway".into(), Duration::ZERO),
        ok(),
    ]);
    let n = graph.posts();
    let outcome = sender
        .deliver(&tenant, &dispatch(21, Category::Utility, "t"))
        .await;
    assert_eq!((outcome, graph.posts() - n), (ProviderOutcome::Sent, 3));

    graph.script([(200, "late".into(), Duration::from_secs(2)), ok()]);
    let n = graph.posts();
    let outcome = sender
        .deliver(&tenant, &dispatch(22, Category::Utility, "t"))
        .await;
    assert_eq!((outcome, graph.posts() - n), (ProviderOutcome::Sent, 2));

    // Retries stop after max_retries (2): three attempts, then the last code.
    graph.script([
        (503, "down".into(), Duration::ZERO),
        (503, "down".into(), Duration::ZERO),
        (503, "down".into(), Duration::ZERO),
        ok(),
    ]);
    let n = graph.posts();
    let outcome = sender
        .deliver(&tenant, &dispatch(23, Category::Utility, "t"))
        .await;
    assert_eq!(outcome, ProviderOutcome::Failed { code: 503 });
    assert_eq!(graph.posts() - n, 3);
    graph.script.lock().unwrap().clear();

    // Nobody answering at all: timeouts, then 408.
    let dead = CloudApiSender::start(config("http://127.0.0.1:9"), "x").unwrap();
    let outcome = dead
        .deliver(&tenant, &dispatch(24, Category::Utility, "t"))
        .await;
    assert_eq!(outcome, ProviderOutcome::Failed { code: TIMEOUT_CODE });
}

#[tokio::test]
async fn sends_fail_over_after_three_slow_probes_and_fail_back_when_the_primary_is_healthy() {
    let (primary, primary_url) = graph().await;
    let (backup, backup_url) = graph().await;
    let mut c = config(&primary_url);
    c.backup_url = Some(backup_url);
    c.probe_interval_ms = 20;
    c.probe_slow_ms = 100;
    primary.probe_delay_ms.store(400, Ordering::Relaxed);
    let sender = CloudApiSender::start(c, "106540352242922").unwrap();
    let tenant = TenantId::new("acme");

    guard(async {
        while !sender.failover.on_backup() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        primary.probes.load(Ordering::Relaxed) >= 3,
        "three slow probes first"
    );
    assert_eq!(sender.failover.failovers.load(Ordering::Relaxed), 1);
    let outcome = sender
        .deliver(&tenant, &dispatch(1, Category::Utility, "t"))
        .await;
    assert_eq!(outcome, ProviderOutcome::Sent);
    assert_eq!(
        (primary.posts(), backup.posts()),
        (0, 1),
        "sent through the backup"
    );

    // The primary recovers: after three healthy probes sends go back to it.
    primary.probe_delay_ms.store(0, Ordering::Relaxed);
    guard(async {
        while sender.failover.on_backup() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(sender.failover.failbacks.load(Ordering::Relaxed), 1);
    let outcome = sender
        .deliver(&tenant, &dispatch(2, Category::Utility, "t"))
        .await;
    assert_eq!(outcome, ProviderOutcome::Sent);
    assert_eq!(
        (primary.posts(), backup.posts()),
        (1, 1),
        "back on the primary"
    );
}

/// The service with tenant "acme" (number 106540352242922) sending through the Graph API
/// at `url`, with the sender the config asks for, as the service builds it.
async fn service(url: &str) -> Server {
    let mut config = Config::from_toml_str(
        r#"
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
        mps = 80
        [tenants.quotas]
        messaging_limit = 1000
        "#,
    )
    .unwrap();
    config.cloud_api = self::config(url);
    let parts = Parts::for_config(&config).unwrap();
    Server::start(config, parts).await
}

/// Through the whole service: a template send with its language and components reaches the
/// Graph API as exactly the JSON the Cloud API documents.
#[tokio::test]
async fn a_template_send_reaches_the_graph_api_as_the_cloud_api_documents_it() {
    use proto::template_parameter::Value;
    let (graph, url) = graph().await;
    let server = service(&url).await;
    let component = |kind: proto::ComponentType, values: Vec<Value>| proto::TemplateComponent {
        r#type: kind as i32,
        parameters: values
            .into_iter()
            .map(|v| proto::TemplateParameter { value: Some(v) })
            .collect(),
        ..Default::default()
    };
    let template = proto::Template {
        name: "order_update".into(),
        language: "en_US".into(),
        components: vec![
            component(
                proto::ComponentType::Header,
                vec![Value::Image(proto::MediaLink {
                    link: "https://cdn.example.com/order.jpg".into(),
                })],
            ),
            component(
                proto::ComponentType::Body,
                vec![
                    Value::Text("Ana".into()),
                    Value::Currency(proto::Currency {
                        fallback_value: "$10.99".into(),
                        code: "USD".into(),
                        amount_1000: 10_990,
                    }),
                    Value::DateTime(proto::DateTime {
                        fallback_value: "May 1".into(),
                    }),
                ],
            ),
            proto::TemplateComponent {
                sub_type: proto::ButtonSubType::QuickReply as i32,
                index: 0,
                ..component(
                    proto::ComponentType::Button,
                    vec![Value::Payload("STOP".into())],
                )
            },
        ],
    };
    let answer = OutboundClient::new(server.channel().await)
        .send(proto::SendRequest {
            tenant: "acme".into(),
            from: "106540352242922".into(),
            to: "+34612345678".into(),
            category: proto::Category::Utility as i32,
            template: Some(template),
            idempotency_key: "order-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.admission(), proto::Admission::Dispatched);
    guard(async {
        while graph.posts() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let body = graph.posts.lock().unwrap()[0].2.clone();
    assert_eq!(
        body,
        serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "34612345678",
            "type": "template",
            "template": {
                "name": "order_update",
                "language": { "code": "en_US" },
                "components": [
                    { "type": "header", "parameters": [
                        { "type": "image", "image": { "link": "https://cdn.example.com/order.jpg" } }
                    ] },
                    { "type": "body", "parameters": [
                        { "type": "text", "text": "Ana" },
                        { "type": "currency", "currency":
                            { "fallback_value": "$10.99", "code": "USD", "amount_1000": 10990 } },
                        { "type": "date_time", "date_time": { "fallback_value": "May 1" } }
                    ] },
                    { "type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [
                        { "type": "payload", "payload": "STOP" }
                    ] }
                ]
            },
            "biz_opaque_callback_data": format!("sb1:acme:{}", answer.send_id),
        })
    );
    server.stop().await;
}

/// Through the whole service: the quotas react to what the Graph API answered.
#[tokio::test]
async fn the_service_reacts_to_the_graph_apis_errors() {
    let (graph, url) = graph().await;
    let server = service(&url).await;
    let mut out = OutboundClient::new(server.channel().await);
    let send = |key: &str, to: &str, category: proto::Category| proto::SendRequest {
        tenant: "acme".into(),
        from: "106540352242922".into(),
        to: to.into(),
        category: category as i32,
        content: "promo".into(),
        template: None,
        priority: 0,
        idempotency_key: key.into(),
        valid_for_ms: 0,
        ..Default::default()
    };
    let status_of = |key: &'static str| proto::SendRef {
        tenant: "acme".into(),
        send_id: String::new(),
        idempotency_key: key.into(),
    };

    // 131048 on a marketing send: it fails with the code and marketing from the number pauses.
    graph.script([error(400, 131048)]);
    out.send(send("m1", "+34612000001", proto::Category::Marketing))
        .await
        .unwrap();
    let failed = guard(async {
        loop {
            let s = out.get_status(status_of("m1")).await.unwrap().into_inner();
            if s.state() == proto::SendState::Failed {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(failed.provider_code, 131048);
    let next = out
        .send(send("m2", "+34612000002", proto::Category::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.reason(), proto::RefusalReason::MarketingPaused);
    // Utility from the same number still goes (only marketing is paused).
    let utility = out
        .send(send("u1", "+34612000003", proto::Category::Utility))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(utility.admission(), proto::Admission::Dispatched);
    server.stop().await;
}
