//! The webhook endpoint without Kafka, black-box: Meta's documented sample payloads, signed
//! with the app secret, posted over HTTP to a real server on 127.0.0.1:0. Messages are routed
//! (the customer's window opens), statuses reach the quotas (a 130429 backs the number off),
//! unsigned or wrongly signed posts are refused with nothing applied, and the verification GET
//! answers the challenge. (Kafka mode is in tests/kafka.rs and the real-broker suite.)
use switchboard::config::Config;
use switchboard::config::cloud_api::Secret;
use switchboard::proto::{self, outbound_client::OutboundClient, quotas_client::QuotasClient};
use switchboard::server::Parts;

mod common;
#[path = "support/meta.rs"]
mod meta;
use common::{Server, guard, http_get};
use meta::{sign, status, text_message};

const SECRET: &str = "app-secret-for-tests";
const VERIFY: &str = "verify-token-for-tests";

async fn server() -> (Server, String) {
    let mut config = Config::load(None).unwrap();
    config.webhook.app_secret = Secret::new(SECRET);
    config.webhook.verify_token = Secret::new(VERIFY);
    config.webhook.max_body_bytes = 64 * 1024;
    config.webhook.resolve().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/webhooks/whatsapp",
        listener.local_addr().unwrap()
    );
    let parts = Parts {
        webhook: Some(listener),
        ..Parts::default()
    };
    (Server::start(config, parts).await, url)
}

async fn post(url: &str, body: &str, signature: Option<String>) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url).body(body.to_owned());
    if let Some(s) = signature {
        request = request.header("X-Hub-Signature-256", s);
    }
    let answer = guard(request.send()).await.expect("the endpoint answers");
    let code = answer.status().as_u16();
    (code, answer.text().await.unwrap())
}

fn session(to: &str, key: &str) -> proto::SendRequest {
    proto::SendRequest {
        tenant: "demo".into(),
        from: "+34910000001".into(),
        to: to.into(),
        category: proto::Category::Session as i32,
        content: "Hola, ¿en qué podemos ayudarle?".into(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn signed_messages_are_routed_and_unsigned_ones_are_not() {
    let (server, url) = server().await;
    let mut outbound = OutboundClient::new(server.channel().await);
    let refused = |r: &proto::SendResponse| r.admission == proto::Admission::Refused as i32;

    // No window yet: a session message is refused.
    let before = outbound
        .send(session("+34612345678", "before"))
        .await
        .unwrap()
        .into_inner();
    assert!(refused(&before), "{before:?}");

    // Unsigned, then signed with another secret: 401, and the window stays closed.
    let body = text_message(
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQ3QUVCNDI",
        "34612345678",
        "Hola",
    );
    let (code, answer) = post(&url, &body, None).await;
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("X-Hub-Signature-256"), "{answer}");
    let (code, _) = post(&url, &body, Some(sign("another-secret", &body))).await;
    assert_eq!(code, 401);
    let (code, _) = post(&url, &body, Some("sha256=not-hex".into())).await;
    assert_eq!(code, 401);
    let still = outbound
        .send(session("+34612345678", "still-before"))
        .await
        .unwrap()
        .into_inner();
    assert!(refused(&still), "nothing was applied: {still:?}");

    // Signed: 200, routed; the customer's window is open.
    let (code, answer) = post(&url, &body, Some(sign(SECRET, &body))).await;
    assert_eq!((code, answer.as_str()), (200, "stored\n"));
    let after = outbound
        .send(session("+34612345678", "after"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.admission,
        proto::Admission::Dispatched as i32,
        "the message opened the window: {after:?}"
    );

    let metrics = http_get(server.metrics, "/metrics").await;
    for result in ["accepted", "missing_signature", "bad_signature"] {
        assert!(
            metrics.contains(&format!(
                "switchboard_webhook_requests_total{{result=\"{result}\""
            )),
            "{result} counted: {metrics}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_failed_status_reaches_the_quotas() {
    let (server, url) = server().await;
    let channel = server.channel().await;
    let mut outbound = OutboundClient::new(channel.clone());
    let template = proto::SendRequest {
        category: proto::Category::Utility as i32,
        content: "order_update".into(),
        ..session("+34699999999", "t-1")
    };
    let sent = outbound.send(template).await.unwrap().into_inner();
    assert_eq!(
        sent.admission,
        proto::Admission::Dispatched as i32,
        "{sent:?}"
    );

    // The provider reports a throughput error for it (130429): the number backs off.
    let callback = format!("sb1:demo:{}", sent.send_id);
    let body = status("wamid.OUT", "failed", &callback, Some(130429));
    let (code, answer) = post(&url, &body, Some(sign(SECRET, &body))).await;
    assert_eq!(code, 200, "{answer}");
    let status = outbound
        .get_status(proto::SendRef {
            tenant: "demo".into(),
            send_id: sent.send_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, proto::SendState::Failed as i32, "{status:?}");
    assert_eq!(status.provider_code, 130429);
    let quota = QuotasClient::new(channel)
        .get(proto::QuotaRef {
            tenant: "demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        quota.numbers[0].backoff_until_ms > 0,
        "the number backs off: {quota:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_posts_get_meta_s_answers() {
    let (server, url) = server().await;
    // Signed but not a webhook: 200 (a retry cannot fix it), counted as unreadable.
    let junk = "this is not json";
    let (code, answer) = post(&url, junk, Some(sign(SECRET, junk))).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("malformed"), "{answer}");
    // A number no tenant has: 200, unreadable.
    let stranger = text_message("wamid.X", "34600000000", "hola")
        .replace("106540352242922", "999")
        .replace("34910000001", "15550000000");
    let (code, answer) = post(&url, &stranger, Some(sign(SECRET, &stranger))).await;
    assert_eq!(code, 200);
    assert!(answer.contains("unknown_business_number"), "{answer}");
    // Too large: 413, before the signature is even looked at.
    let big = "x".repeat(64 * 1024 + 1);
    let (code, answer) = post(&url, &big, Some(sign(SECRET, &big))).await;
    assert_eq!(code, 413, "{answer}");
    assert!(answer.contains("webhook.max_body_bytes"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn the_verification_handshake_answers_the_challenge_only_to_the_token() {
    let (server, url) = server().await;
    let get = |query: String| {
        let url = format!("{url}?{query}");
        async move {
            let answer = guard(reqwest::get(url)).await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    assert_eq!(
        get(format!(
            "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY}"
        ))
        .await,
        (200, "1158201444".to_owned())
    );
    let (code, _) = get("hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong".into()).await;
    assert_eq!(code, 403);
    let (code, _) = get(format!(
        "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token={VERIFY}"
    ))
    .await;
    assert_eq!(code, 403);
    let (code, _) = get("hub.challenge=1".into()).await;
    assert_eq!(code, 403);
    server.stop().await;
}
