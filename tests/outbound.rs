//! Outbound sends through gRPC on a real server (127.0.0.1:0), with a scripted provider.
//!
//! Timeouts only stop a broken test from hanging; nothing asserts how fast anything is.
use std::sync::Arc;

use switchboard::config::Config;
use switchboard::core::quota::ProviderOutcome;
use switchboard::proto::{self, inbound_client::InboundClient, outbound_client::OutboundClient};
use switchboard::sender::ScriptedSender;
use switchboard::server::Parts;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

mod common;
use common::{Server, guard};

/// `bulk`: unlimited, 20 mps. `promo`: messaging limit 10 (batch mode at 8, 1 reserved).
/// Number A backs off 60 s after a throughput error; marketing pauses an hour after spam-rate.
const CONFIG: &str = r#"
    [runtime]
    tick_interval_ms = 50
    [[tenants]]
    id = "bulk"
    default_region = "ES"
    default_queue = "q"
    [[tenants.queues]]
    name = "q"
    sla_target_secs = 60
    max_wait_secs = 600
    [[tenants.numbers]]
    id = "A"
    mps = 20
    [[tenants.numbers]]
    id = "B"
    mps = 20
    [[tenants.numbers]]
    id = "S"
    mps = 1
    burst = 5
    [tenants.quotas]
    messaging_limit = "unlimited"
    number_backoff_ms = 60000
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
    messaging_limit = 10
    reserve = 0.1
"#;

async fn start(sender: Arc<ScriptedSender>) -> Server {
    let config = Config::from_toml_str(CONFIG).expect("test config is valid");
    let parts = Parts {
        sender,
        ..Parts::default()
    };
    Server::start(config, parts).await
}

async fn client(server: &Server) -> (OutboundClient<Channel>, Channel) {
    let ch = server.channel().await;
    (OutboundClient::new(ch.clone()), ch)
}

fn send(
    tenant: &str,
    from: &str,
    to: &str,
    category: proto::Category,
    key: &str,
) -> proto::SendRequest {
    proto::SendRequest {
        tenant: tenant.into(),
        from: from.into(),
        to: to.into(),
        category: category as i32,
        content: "order_update".into(),
        template: None,
        priority: 0,
        idempotency_key: key.into(),
        valid_for_ms: 0,
        ..Default::default()
    }
}

/// A template without variables.
fn template(name: &str, language: &str) -> proto::Template {
    proto::Template {
        name: name.into(),
        language: language.into(),
        components: Vec::new(),
    }
}

fn customer(i: usize) -> String {
    format!("+346{i:08}")
}

/// Waits on the status stream for `send_id` to reach `state`.
async fn wait_for(
    stream: &mut Streaming<proto::SendStatus>,
    send_id: &str,
    state: proto::SendState,
) -> proto::SendStatus {
    guard(async {
        loop {
            let s = stream.message().await.unwrap().expect("stream open");
            if s.send_id == send_id && s.state() == state {
                return s;
            }
        }
    })
    .await
}

#[tokio::test]
async fn sends_past_the_bucket_are_refused_with_a_retry_after() {
    let server = start(Arc::new(ScriptedSender::default())).await;
    let (mut out, _) = client(&server).await;
    // Number S: 1 mps, a burst of 5. Ten quick sends: the burst goes, then refusals (only a
    // five-second stall between the calls could refill the bucket for all of them).
    let mut refused = 0;
    let mut dispatched = 0;
    for i in 0..10 {
        let r = out
            .send(send(
                "bulk",
                "S",
                &customer(i),
                proto::Category::Utility,
                &format!("k{i}"),
            ))
            .await
            .unwrap()
            .into_inner();
        match r.admission() {
            proto::Admission::Dispatched => dispatched += 1,
            proto::Admission::Refused => {
                assert_eq!(r.reason(), proto::RefusalReason::ThroughputLimit);
                assert!((1..=1_000).contains(&r.retry_after_ms), "{r:?}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(dispatched >= 5, "{dispatched}");
    assert!(refused >= 1, "{refused}");
    assert_eq!(dispatched + refused, 10);
    server.stop().await;
}

#[tokio::test]
async fn near_the_limit_marketing_is_queued_and_released_in_waves() {
    let sender = Arc::new(ScriptedSender::default());
    let server = start(sender.clone()).await;
    let (mut out, _) = client(&server).await;
    let mut statuses = out
        .stream_status(proto::StatusStreamRequest {
            tenant: "promo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for i in 0..8 {
        let r = out
            .send(send(
                "promo",
                "P",
                &customer(i),
                proto::Category::Utility,
                &format!("u{i}"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.admission(), proto::Admission::Dispatched);
    }
    // 8 of 10 reached: batch mode. Marketing is queued, then a wave releases what fits
    // (10 - 1 reserved - 8 = 1); the rest waits for slots to free.
    let first = out
        .send(send(
            "promo",
            "P",
            &customer(100),
            proto::Category::Marketing,
            "m1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.admission(), proto::Admission::Queued, "{first:?}");
    assert!(first.estimated_release_at_ms > 0);
    let second = out
        .send(send(
            "promo",
            "P",
            &customer(101),
            proto::Category::Marketing,
            "m2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.admission(), proto::Admission::Queued);
    wait_for(&mut statuses, &first.send_id, proto::SendState::Sent).await;
    let status = out
        .get_status(proto::SendRef {
            tenant: "promo".into(),
            send_id: second.send_id.clone(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.state(),
        proto::SendState::Queued,
        "no slot for it within 24 h"
    );
    // A client that lost the answer finds it by its idempotency key.
    let by_key = out
        .get_status(proto::SendRef {
            tenant: "promo".into(),
            send_id: String::new(),
            idempotency_key: "m2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_key, status);
    // High priority still goes, from the reserve.
    let auth = out
        .send(send(
            "promo",
            "P",
            &customer(200),
            proto::Category::Authentication,
            "a1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(auth.admission(), proto::Admission::Dispatched);
    let over = out
        .send(send(
            "promo",
            "P",
            &customer(201),
            proto::Category::Authentication,
            "a2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        over.reason(),
        proto::RefusalReason::MessagingLimit,
        "never past the limit"
    );
    assert!(
        over.retry_after_ms > 23 * 3_600_000,
        "a slot frees 24 h after its send"
    );
    // The provider got exactly what was dispatched: 8 + 1 + 1.
    assert_eq!(sender.sent().len(), 10);
    server.stop().await;
}

#[tokio::test]
async fn free_form_outside_the_window_is_refused_but_a_reply_inside_goes() {
    let server = start(Arc::new(ScriptedSender::default())).await;
    let (mut out, ch) = client(&server).await;
    let r = out
        .send(send(
            "bulk",
            "A",
            &customer(1),
            proto::Category::Session,
            "s1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.admission(), proto::Admission::Refused);
    assert_eq!(r.reason(), proto::RefusalReason::TemplateRequired);
    assert!(r.detail.contains("template"), "{r:?}");
    // The customer writes: the window opens, a free-form reply goes.
    InboundClient::new(ch)
        .ingest(proto::InboundMessage {
            tenant: "bulk".into(),
            customer: customer(1),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: "wamid.in1".into(),
            text: "hola".into(),
            business_number: "A".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = out
        .send(send(
            "bulk",
            "A",
            &customer(1),
            proto::Category::Session,
            "s2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.admission(), proto::Admission::Dispatched);
    server.stop().await;
}

#[tokio::test]
async fn each_provider_error_gets_its_reaction() {
    let sender = Arc::new(ScriptedSender::new([
        ProviderOutcome::Failed { code: 130429 },
        ProviderOutcome::Failed { code: 131056 },
        ProviderOutcome::Failed { code: 131047 },
        ProviderOutcome::Failed { code: 131048 },
    ]));
    let server = start(sender.clone()).await;
    let (mut out, ch) = client(&server).await;
    let mut statuses = out
        .stream_status(proto::StatusStreamRequest {
            tenant: "bulk".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let go = |from: &'static str, to: String, category, key: &'static str| {
        send("bulk", from, &to, category, key)
    };

    // 130429 on number A: A backs off, B does not.
    let r = out
        .send(go("A", customer(1), proto::Category::Utility, "e1"))
        .await
        .unwrap()
        .into_inner();
    let failed = wait_for(&mut statuses, &r.send_id, proto::SendState::Failed).await;
    assert_eq!(failed.provider_code, 130429);
    let r = out
        .send(go("A", customer(2), proto::Category::Utility, "e1b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reason(), proto::RefusalReason::NumberBackoff);
    assert!(r.retry_after_ms > 0);

    // 131056 on (B, customer 3): that pair backs off, B to others does not.
    let r = out
        .send(go("B", customer(3), proto::Category::Utility, "e2"))
        .await
        .unwrap()
        .into_inner();
    wait_for(&mut statuses, &r.send_id, proto::SendState::Failed).await;
    let r = out
        .send(go("B", customer(3), proto::Category::Utility, "e2b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reason(), proto::RefusalReason::PairLimit);

    // 131047: "template required", and the window counts as closed from then on.
    InboundClient::new(ch)
        .ingest(proto::InboundMessage {
            tenant: "bulk".into(),
            customer: customer(4),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: "wamid.in4".into(),
            text: "hola".into(),
            business_number: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = out
        .send(go("B", customer(4), proto::Category::Session, "e3"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.admission(), proto::Admission::Dispatched);
    let failed = wait_for(&mut statuses, &r.send_id, proto::SendState::Failed).await;
    assert_eq!(failed.reason(), proto::RefusalReason::TemplateRequired);
    let r = out
        .send(go("B", customer(4), proto::Category::Session, "e3b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reason(), proto::RefusalReason::TemplateRequired);

    // 131048: marketing from B pauses; utility from B still goes.
    let mut m = go("B", customer(5), proto::Category::Marketing, "e4");
    m.priority = proto::SendPriority::Normal as i32;
    let r = out.send(m).await.unwrap().into_inner();
    wait_for(&mut statuses, &r.send_id, proto::SendState::Failed).await;
    let r = out
        .send(go("B", customer(6), proto::Category::Marketing, "e4b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reason(), proto::RefusalReason::MarketingPaused);
    let r = out
        .send(go("B", customer(7), proto::Category::Utility, "e4c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.admission(), proto::Admission::Dispatched);
    let sent = wait_for(&mut statuses, &r.send_id, proto::SendState::Sent).await;
    assert_eq!(sent.idempotency_key, "e4c");
    server.stop().await;
}

#[tokio::test]
async fn retries_are_idempotent_and_bad_requests_name_the_field() {
    let sender = Arc::new(ScriptedSender::default());
    let server = start(sender.clone()).await;
    let (mut out, _) = client(&server).await;
    let a = out
        .send(send(
            "bulk",
            "A",
            &customer(1),
            proto::Category::Utility,
            "same",
        ))
        .await
        .unwrap()
        .into_inner();
    let b = out
        .send(send(
            "bulk",
            "A",
            &customer(1),
            proto::Category::Utility,
            "same",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a, b, "the first answer again");
    let c = out
        .send(send(
            "bulk",
            "A",
            &customer(1),
            proto::Category::Utility,
            "other",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.send_id, c.send_id);

    let cases = [
        (
            send("bulk", "Z", &customer(1), proto::Category::Utility, "x1"),
            Code::InvalidArgument,
            "from:",
        ),
        (
            send("bulk", "A", "nope", proto::Category::Utility, "x2"),
            Code::InvalidArgument,
            "to:",
        ),
        (
            send(
                "bulk",
                "A",
                &customer(1),
                proto::Category::Unspecified,
                "x3",
            ),
            Code::InvalidArgument,
            "category:",
        ),
        (
            send("bulk", "A", &customer(1), proto::Category::Utility, ""),
            Code::InvalidArgument,
            "idempotency_key:",
        ),
        (
            send("nobody", "A", &customer(1), proto::Category::Utility, "x4"),
            Code::NotFound,
            "tenant",
        ),
        // Templates: a session message carries text, a template send needs one (or a name in
        // content, the older form), and a template's fields are checked.
        (
            proto::SendRequest {
                template: Some(template("order_update", "es")),
                ..send("bulk", "A", &customer(1), proto::Category::Session, "x5")
            },
            Code::InvalidArgument,
            "template: is set on a session send",
        ),
        (
            proto::SendRequest {
                content: String::new(),
                ..send("bulk", "A", &customer(1), proto::Category::Utility, "x6")
            },
            Code::InvalidArgument,
            "template: is required for a utility send",
        ),
        (
            proto::SendRequest {
                content: String::new(),
                template: Some(template("order_update", "es-ES")),
                ..send("bulk", "A", &customer(1), proto::Category::Utility, "x7")
            },
            Code::InvalidArgument,
            "template.language:",
        ),
    ];
    for (request, code, needle) in cases {
        let status = out.send(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(needle), "{needle} in {status:?}");
    }
    let status = out
        .get_status(proto::SendRef {
            tenant: "bulk".into(),
            send_id: "s-999".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = out
        .get_status(proto::SendRef {
            tenant: "bulk".into(),
            send_id: String::new(),
            idempotency_key: "never-sent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("never-sent"), "{status:?}");
    // Two sends reached the provider: the retry sent nothing.
    guard(async {
        while sender.sent().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(sender.sent().len(), 2);
    server.stop().await;
}
