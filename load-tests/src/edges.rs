//! The edges with Meta against their anchors, in one run (`switchboard-load edges`; targets in
//! `shared/design/PERFORMANCE.md`):
//!
//! - **Webhook endpoint**: signed POSTs of Meta's text-message payload (each its own `wamid`),
//!   closed loop, answered by switchboard after the broker's ack (Kafka mode); the anchor is a
//!   bare HTTP handler (axum, its own process like switchboard) checking the same HMAC on the
//!   same bodies and answering 200. Measured twice: in a replica (`serve`, whose Kafka input
//!   also reads and routes every payload stored, on the same cores) and alone
//!   (`switchboard webhook`, the endpoint as a stateless edge).
//! - **Egress**: dispatch records already on the dispatch topic, sent by `switchboard egress`
//!   (its own process) to a mock Graph API in this process; the anchor is a bare HTTP client
//!   loop posting the same Cloud API bodies to the same mock with as many requests in flight
//!   as the egress may have (partitions × `egress.max_in_flight`).
//!
//! Both report requests per second and the ratio to the mean of the anchor measured before
//! and after (`edges` in main.rs).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hmac::{Hmac, Mac};

/// The app secret both webhook servers check with.
pub const SECRET: &str = "load-test-app-secret";

/// Meta's text-message webhook to the demo tenant's number, `i`-th customer and `wamid`.
pub fn webhook_body(i: usize) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"34910000001","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Load"}},"wa_id":"3461{i:07}"}}],"messages":[{{"from":"3461{i:07}","id":"wamid.LOAD{i}","timestamp":"1749416383","type":"text","text":{{"body":"hola, ¿dónde está mi pedido?"}}}}]}},"field":"messages"}}]}}]}}"#
    )
}

pub fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The webhook anchor (a child process): checks the signature of the raw body in constant
/// time, as the endpoint does, and answers 200. Prints `serving ADDR -`.
pub async fn serve_hmac_anchor(
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::http::{HeaderMap, StatusCode};
    let key = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    let app = axum::Router::new().route(
        "/webhooks/whatsapp",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let mut mac = key.clone();
            async move {
                let given = headers
                    .get("x-hub-signature-256")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.strip_prefix("sha256="))
                    .and_then(|h| hex::decode(h).ok());
                mac.update(&body);
                match given.map(|g| mac.verify_slice(&g)) {
                    Some(Ok(())) => (StatusCode::OK, "stored\n"),
                    _ => (StatusCode::UNAUTHORIZED, "bad signature\n"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("serving {} -", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

/// Closed loop: `workers` clients post the signed bodies to `url` for `warmup + duration`;
/// answers with 200 per second after the warm-up, and the non-200 answers.
pub async fn post_webhooks(
    url: &str,
    workers: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(f64, u64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()?;
    let counted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (measure_from, end) = (started + warmup, started + warmup + duration);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, url, counted, failed) = (
            client.clone(),
            url.to_owned(),
            counted.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < end {
                let body = webhook_body(i);
                let sig = signature(body.as_bytes());
                i += workers;
                let answer = client
                    .post(&url)
                    .header("X-Hub-Signature-256", sig)
                    .body(body)
                    .send()
                    .await;
                let ok = matches!(&answer, Ok(r) if r.status().is_success());
                if let Ok(r) = answer {
                    let _ = r.bytes().await;
                }
                if Instant::now() >= measure_from && Instant::now() < end {
                    if ok {
                        counted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rate = counted.load(Ordering::Relaxed) as f64 / duration.as_secs_f64();
    Ok((rate, failed.load(Ordering::Relaxed)))
}

/// The mock Graph API: counts posts to `/{version}/{number}/messages` and answers 200 with a
/// message id at once.
pub struct Graph {
    pub posts: AtomicU64,
}

pub async fn start_graph() -> anyhow::Result<(Arc<Graph>, String)> {
    use axum::extract::State;
    let graph = Arc::new(Graph {
        posts: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route(
            "/{version}/{number}/messages",
            axum::routing::post(
                |State(g): State<Arc<Graph>>, _body: axum::body::Bytes| async move {
                    let n = g.posts.fetch_add(1, Ordering::Relaxed);
                    format!(
                        r#"{{"messaging_product":"whatsapp","messages":[{{"id":"wamid.L{n}"}}]}}"#
                    )
                },
            ),
        )
        .route(
            "/{version}/{number}",
            axum::routing::get(|| async { r#"{"id":"1"}"# }),
        )
        .with_state(graph.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((graph, url))
}

/// The dispatch record `i` of a tenant `t{i % tenants}` (so keys spread over partitions).
pub fn dispatch(i: usize, tenants: usize) -> (String, Vec<u8>) {
    let tenant = format!("t{}", i % tenants);
    let record = switchboard::proto::Dispatch {
        tenant: tenant.clone(),
        send_id: format!("s-{i}"),
        from: "106540352242922".into(),
        to: format!("+3461{i:07}"),
        category: switchboard::proto::Category::Utility as i32,
        content: "order_update".into(),
        callback_data: format!("sb1:{tenant}:s-{i}"),
        idempotency_key: format!("k{i}"),
        counted: true,
        dispatched_at_ms: 1_700_000_000_000,
        template: None,
    };
    (tenant, prost::Message::encode_to_vec(&record))
}

/// The egress anchor: `in_flight` clients post the Cloud API body of each dispatch to the
/// mock for `warmup + duration`; posts per second after the warm-up.
pub async fn post_bodies(
    graph: &Arc<Graph>,
    url: &str,
    in_flight: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let endpoint = format!("{url}/v21.0/106540352242922/messages");
    let started = Instant::now();
    let end = started + warmup + duration;
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < end {
                let body = serde_json::json!({
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": format!("3461{i:07}"),
                    "type": "template",
                    "template": {"name": "order_update", "language": {"code": "es"}},
                    "biz_opaque_callback_data": format!("sb1:t0:s-{i}"),
                });
                i += in_flight;
                if let Ok(r) = client
                    .post(&endpoint)
                    .bearer_auth("load-test-token")
                    .json(&body)
                    .send()
                    .await
                {
                    let _ = r.bytes().await;
                }
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    let from = graph.posts.load(Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    let to = graph.posts.load(Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    Ok((to - from) as f64 / duration.as_secs_f64())
}

/// The egress's rate: posts per second at the mock between 10% and 90% of `total` (the
/// steady part: after the consumer joined, before the tail).
pub async fn egress_rate(graph: &Arc<Graph>, base: u64, total: u64) -> anyhow::Result<f64> {
    let at = |share: f64| base + (total as f64 * share) as u64;
    let wait_for = |n: u64| async move {
        tokio::time::timeout(Duration::from_secs(300), async {
            while graph.posts.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Instant::now()
        })
        .await
        .with_context(|| format!("the egress did not reach {n} posts within 300 s"))
    };
    let t10 = wait_for(at(0.1)).await?;
    let t90 = wait_for(at(0.9)).await?;
    Ok((at(0.9) - at(0.1)) as f64 / (t90 - t10).as_secs_f64())
}
