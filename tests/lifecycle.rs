//! The send lifecycle through gRPC against the `switchboard` binary (issue 16): cancel by
//! match, scheduled sends, consent (API and keyword) and the frequency cap, as a CRM would
//! drive them. Timeouts only stop a broken test from hanging; nothing asserts how fast
//! anything is (the exact times are the core tests').
#[path = "support/binary.rs"]
mod binary;

use std::time::Duration;

use binary::{Binary, cli, now_ms, tempdir};
use switchboard::proto::{
    self, customers_client::CustomersClient, inbound_client::InboundClient,
    outbound_client::OutboundClient,
};
use tonic::Code;
use tonic::transport::Channel;

fn config() -> String {
    binary::crm_config(
        "[runtime]\ntick_interval_ms = 50",
        "messaging_limit = \"unlimited\"",
    )
}

/// The binary on the config above, and a channel to it.
async fn start() -> (Binary, Channel, tempdir::Dir) {
    let (binary, channel, _, dir) = binary::start(&config()).await;
    (binary, channel, dir)
}

fn customer(i: usize) -> String {
    format!("+3461234{i:04}")
}

fn request(to: &str, category: proto::Category, key: &str) -> proto::SendRequest {
    proto::SendRequest {
        tenant: "crm".into(),
        from: "N".into(),
        to: to.into(),
        category: category as i32,
        content: "payment_reminder".into(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

async fn state(out: &mut OutboundClient<Channel>, send_id: &str) -> proto::SendState {
    out.get_status(proto::SendRef {
        tenant: "crm".into(),
        send_id: send_id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .state()
}

#[tokio::test]
async fn a_crm_schedules_cancels_by_match_sets_consent_and_meets_the_cap() {
    let (_binary, channel, _dir) = start().await;
    let mut out = OutboundClient::new(channel.clone());

    // Five reminders tagged "collections", due in two seconds.
    let due = now_ms() + 2_000;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = request(&customer(i), proto::Category::Utility, &format!("rem-{i}"));
        r.tag = "collections".into();
        r.send_at_ms = due;
        let answer = out.send(r).await.unwrap().into_inner();
        assert_eq!(answer.admission(), proto::Admission::Scheduled);
        assert_eq!(answer.estimated_release_at_ms, due);
        ids.push(answer.send_id);
    }
    // Two customers paid.
    for i in 0..2 {
        let cancelled = out
            .cancel(proto::CancelRequest {
                tenant: "crm".into(),
                customer: customer(i),
                tag: "collections".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .cancelled;
        assert_eq!(cancelled, 1);
    }
    // The three others go at their time (the binary's log sender answers SENT at once); the
    // two cancelled never do.
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut dispatched = 0;
            for id in &ids[2..] {
                if state(&mut out, id).await == proto::SendState::Sent {
                    dispatched += 1;
                }
            }
            if dispatched == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the three reminders were dispatched");
    for id in &ids[..2] {
        assert_eq!(state(&mut out, id).await, proto::SendState::Cancelled);
    }
    // A dispatched one cannot be cancelled.
    let refused = out
        .cancel(proto::CancelRequest {
            tenant: "crm".into(),
            send_id: ids[4].clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // A cancel naming nothing, or two things, says what to name.
    let bad = out
        .cancel(proto::CancelRequest {
            tenant: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("exactly one"), "{}", bad.message());
    // A schedule in the past names the field.
    let mut past = request(&customer(7), proto::Category::Utility, "past");
    past.send_at_ms = now_ms() - 60_000;
    let bad = out.send(past).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("send_at_ms"), "{}", bad.message());

    // Consent through the API.
    let mut customers = CustomersClient::new(channel.clone());
    let set = customers
        .set_consent(proto::SetConsentRequest {
            tenant: "crm".into(),
            customer: customer(9),
            state: proto::ConsentState::OptedOut as i32,
            source: "crm".into(),
            actor: "ana".into(),
            reason: "asked by phone".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.state(), proto::ConsentState::OptedOut);
    assert!(set.at_ms > 0);
    let promo = out
        .send(request(&customer(9), proto::Category::Marketing, "promo-9"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promo.admission(), proto::Admission::Refused);
    assert_eq!(promo.reason(), proto::RefusalReason::OptedOut);

    // Consent by keyword: "BAJA" from a customer.
    InboundClient::new(channel.clone())
        .ingest(proto::InboundMessage {
            tenant: "crm".into(),
            customer: customer(10),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: "wamid.baja".into(),
            text: "BAJA".into(),
            ..Default::default()
        })
        .await
        .expect("the opt-out message is still routed");
    let read = customers
        .get_consent(proto::ConsentRef {
            tenant: "crm".into(),
            customer: customer(10),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.state(), proto::ConsentState::OptedOut);
    assert_eq!(read.source, "keyword:baja");

    // The cap: one push per customer per 24 hours; a second that cannot wait is refused with
    // when it would fit (just under 24 hours from now).
    let first = out
        .send(request(&customer(20), proto::Category::Marketing, "push-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.admission(), proto::Admission::Dispatched);
    let mut second = request(&customer(20), proto::Category::Marketing, "push-2");
    second.valid_for_ms = 60_000;
    let second = out.send(second).await.unwrap().into_inner();
    assert_eq!(second.admission(), proto::Admission::Refused);
    assert_eq!(second.reason(), proto::RefusalReason::FrequencyCap);
    assert!(
        (86_400_000 - 60_000..=86_400_000).contains(&second.retry_after_ms),
        "{}",
        second.retry_after_ms
    );
}

#[tokio::test]
async fn the_operators_commands_cancel_by_match_and_set_consent() {
    let (_binary, channel, addr, _dir) = binary::start(&config()).await;
    let mut out = OutboundClient::new(channel);
    let who = customer(900);
    let due = now_ms() + 3_600_000;
    let mut ids = Vec::new();
    for (key, tag) in [
        ("r1", "collections"),
        ("r2", "collections"),
        ("news", "campaign-nov"),
    ] {
        let mut r = request(&who, proto::Category::Utility, key);
        r.tag = tag.into();
        r.send_at_ms = due;
        let answer = out.send(r).await.unwrap().into_inner();
        assert_eq!(
            answer.admission(),
            proto::Admission::Scheduled,
            "{answer:?}"
        );
        ids.push(answer.send_id);
    }

    // Nothing named: a clear error, nothing cancelled.
    let (ok, _, err) = cli(&addr, &["sends", "cancel", "crm"]).await;
    assert!(!ok);
    assert!(err.contains("--customer with --tag"), "{err}");
    let (ok, stdout, err) = cli(
        &addr,
        &[
            "sends",
            "cancel",
            "crm",
            "--customer",
            &who,
            "--tag",
            "collections",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(stdout.trim(), "2 cancelled");
    let (ok, stdout, err) = cli(&addr, &["sends", "status", "crm", "--key", "r1"]).await;
    assert!(ok, "{err}");
    assert!(stdout.contains("SEND_STATE_CANCELLED"), "{stdout}");
    assert_eq!(state(&mut out, &ids[1]).await, proto::SendState::Cancelled);
    assert_eq!(state(&mut out, &ids[2]).await, proto::SendState::Scheduled);
    // One by id: the other tag's send.
    let (ok, stdout, err) = cli(&addr, &["sends", "cancel", "crm", "--id", &ids[2]]).await;
    assert!(ok, "{err}");
    assert_eq!(stdout.trim(), "1 cancelled");

    let (ok, stdout, err) = cli(&addr, &["consent", "get", "crm", &who]).await;
    assert!(ok, "{err}");
    assert_eq!(stdout.trim(), "CONSENT_STATE_NONE");
    let (ok, stdout, err) = cli(
        &addr,
        &[
            "consent",
            "set",
            "crm",
            &who,
            "opted-out",
            "--source",
            "phone-call",
            "--actor",
            "ops-ana",
            "--reason",
            "asked by phone",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        stdout.starts_with("CONSENT_STATE_OPTED_OUT since "),
        "{stdout}"
    );
    assert!(
        stdout.contains("source phone-call, set by ops-ana"),
        "{stdout}"
    );
    let (ok, stdout, err) = cli(&addr, &["consent", "get", "crm", &who]).await;
    assert!(ok, "{err}");
    assert!(stdout.contains("CONSENT_STATE_OPTED_OUT"), "{stdout}");
    let refused = out
        .send(request(&who, proto::Category::Marketing, "promo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused.reason(),
        proto::RefusalReason::OptedOut,
        "{refused:?}"
    );
}

/// Issue 19: a campaign paused by tag through the CLI holds its new sends (answered QUEUED)
/// while other tags flow, and resumes them; the gRPC API refuses a pause without a reason.
#[tokio::test]
async fn a_campaign_paused_by_tag_is_held_and_resumed_by_the_operators_commands() {
    let (_binary, channel, addr, _dir) = binary::start(&config()).await;
    let mut out = OutboundClient::new(channel);
    let (ok, stdout, err) = cli(
        &addr,
        &[
            "sends",
            "pause",
            "crm",
            "--tag",
            "promo",
            "--for",
            "1h",
            "--reason",
            "wrong template",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(stdout.starts_with("tag promo paused until "), "{stdout}");
    assert!(stdout.contains("(0 sends held)"), "{stdout}");

    let mut held = request(&customer(950), proto::Category::Utility, "promo-1");
    held.tag = "promo".into();
    let answer = out.send(held).await.unwrap().into_inner();
    assert_eq!(answer.admission(), proto::Admission::Queued, "{answer:?}");
    assert!(answer.detail.contains("tag is paused"), "{answer:?}");
    let mut other = request(&customer(951), proto::Category::Utility, "welcome-1");
    other.tag = "welcome".into();
    let flows = out.send(other).await.unwrap().into_inner();
    assert_eq!(flows.admission(), proto::Admission::Dispatched, "{flows:?}");

    let (ok, stdout, err) = cli(&addr, &["sends", "list-paused", "crm"]).await;
    assert!(ok, "{err}");
    assert!(stdout.starts_with("promo: paused since "), "{stdout}");
    assert!(stdout.contains("1 sends held"), "{stdout}");
    assert!(stdout.contains("wrong template"), "{stdout}");
    assert_eq!(
        state(&mut out, &answer.send_id).await,
        proto::SendState::Queued
    );

    let (ok, stdout, err) = cli(&addr, &["sends", "resume", "crm", "--tag", "promo"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        stdout.trim(),
        "tag promo resumed: 1 held sends back in the queue"
    );
    // Released by the next batch wave (a tick); the wait only bounds a broken run.
    let released = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match state(&mut out, &answer.send_id).await {
                proto::SendState::Queued => tokio::time::sleep(Duration::from_millis(50)).await,
                other => break other,
            }
        }
    })
    .await
    .expect("the resumed send leaves the queue");
    // The embedded sender acknowledges at once: SENT (DISPATCHED if read in between).
    assert!(
        matches!(
            released,
            proto::SendState::Dispatched | proto::SendState::Sent
        ),
        "{released:?}"
    );
    let (ok, stdout, _) = cli(&addr, &["sends", "resume", "crm", "--tag", "promo"]).await;
    assert!(ok);
    assert_eq!(stdout.trim(), "tag promo was not paused: nothing changed");

    let no_reason = out
        .pause(proto::PauseRequest {
            tenant: "crm".into(),
            tag: "promo".into(),
            expires_in_ms: 60_000,
            actor: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    assert!(no_reason.message().contains("reason"), "{no_reason:?}");
}
