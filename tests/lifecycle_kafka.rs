//! The send lifecycle (and a customer link and profile) across a kill -9 of the tenant's
//! owner, on librdkafka's mock cluster
//! with the binary as two child processes. Its own test binary: cargo runs test binaries one
//! after another, so its two replicas do not share the 2 cores with `tests/kafka.rs`'s
//! two-replica tests (their sessions time out under that load). Every wait is bounded;
//! nothing asserts how fast.
use std::time::Duration;

use prost::Message as _;
use rdkafka::message::Message;
use switchboard::proto;

mod common;
#[path = "support/suite.rs"]
mod suite;
use common::guard;

/// The send lifecycle across a kill -9 of the tenant's owner (the binary as two child
/// processes on the mock cluster, 4 partitions): reminders scheduled a minute ahead, one of
/// them cancelled by match, a customer opted out by "BAJA" on the inbound topic. The survivor
/// shows the same: the scheduled ones still scheduled, the cancelled one cancelled, the
/// customer opted out, a paused campaign still paused with its held send; at their time only
/// the uncancelled reminders are dispatched, and the held send once resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_cancelled_and_opted_out_state_survive_a_kill_of_the_owner() {
    use proto::customers_client::CustomersClient;
    use proto::outbound_client::OutboundClient;
    let cluster = suite::mock_cluster(4);
    let brokers = cluster.bootstrap_servers();
    let tenants = suite::one_tenant_per_partition(4);
    let tenant = tenants[0].clone();
    let dir = std::env::temp_dir().join(format!("switchboard-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, suite::replicas_toml(&brokers, &tenants, false)).unwrap();
    let addrs = [
        (suite::free_addr(), suite::free_addr()),
        (suite::free_addr(), suite::free_addr()),
    ];
    let a = suite::Process::start_on(&file, &addrs[0].0, &addrs[0].1);
    let b = suite::Process::start_on(&file, &addrs[1].0, &addrs[1].1);
    let metrics = [addrs[0].1.as_str(), addrs[1].1.as_str()];
    suite::wait_owned(&metrics, "the tenants split", |o| {
        o.iter().all(|&n| n >= 1) && o.iter().sum::<usize>() == 4
    })
    .await;
    let channel = |addr: &str| {
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            // A call that gets no answer fails the test instead of hanging it.
            .timeout(Duration::from_secs(30))
            .connect_lazy()
    };

    // Through replica A (forwarded to the owner when that is B): three reminders a minute
    // ahead, tagged; the first customer pays.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let due = now + 60_000;
    let mut out = OutboundClient::new(channel(&addrs[0].0));
    let mut owner = None;
    for i in 0..3 {
        let request = proto::SendRequest {
            tenant: tenant.clone(),
            from: format!("{tenant}-n"),
            to: format!("+3461100000{i}"),
            category: proto::Category::Utility as i32,
            content: "payment_reminder".into(),
            idempotency_key: format!("reminder-{i}"),
            tag: "collections".into(),
            send_at_ms: due,
            ..Default::default()
        };
        // Just after the split the owners may not be announced yet: UNAVAILABLE, retry (as
        // the answer's pushback says).
        let answer = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match out.send(request.clone()).await {
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(500)).await
                    }
                    other => break other,
                }
            }
        })
        .await
        .expect("the owner was announced")
        .expect("scheduled");
        owner = Some(
            answer
                .metadata()
                .get(switchboard::grpc::SERVED_BY_HEADER)
                .map_or(addrs[0].0.clone(), |v| v.to_str().unwrap().to_owned()),
        );
        assert_eq!(answer.into_inner().admission(), proto::Admission::Scheduled);
    }
    let cancelled = out
        .cancel(proto::CancelRequest {
            tenant: tenant.clone(),
            customer: "+34611000000".into(),
            tag: "collections".into(),
            ..Default::default()
        })
        .await
        .expect("cancelled")
        .into_inner()
        .cancelled;
    assert_eq!(cancelled, 1);
    // "BAJA" from a customer, on the inbound topic.
    let input = suite::producer(&brokers);
    let baja = proto::InboundMessage {
        tenant: tenant.clone(),
        customer: "+34611000009".into(),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: "wamid.baja".into(),
        text: "BAJA".into(),
        ..Default::default()
    };
    suite::produce_all(
        &input,
        "switchboard.inbound",
        vec![(tenant.clone(), baja.encode_to_vec())],
    )
    .await;
    // And another customer opted out through the API (a CRM): journaled with its time.
    let set = CustomersClient::new(channel(&addrs[0].0))
        .set_consent(proto::SetConsentRequest {
            tenant: tenant.clone(),
            customer: "+34611000008".into(),
            state: proto::ConsentState::OptedOut as i32,
            source: "crm".into(),
            actor: "ana".into(),
            ..Default::default()
        })
        .await
        .expect("consent set")
        .into_inner();
    // A web-chat visitor linked to a phone, and a name from the CRM: journaled too (issue 17).
    let identity = |kind| Some(proto::Identity { kind: Some(kind) });
    use proto::identity::Kind;
    let linked = CustomersClient::new(channel(&addrs[0].0))
        .link(proto::LinkRequest {
            tenant: tenant.clone(),
            a: identity(Kind::VisitorId("v-kill".into())),
            b: identity(Kind::Phone("+34611000010".into())),
            source: "web-chat form".into(),
            actor: "faq-bot".into(),
            reason: String::new(),
        })
        .await
        .expect("linked")
        .into_inner();
    let named = CustomersClient::new(channel(&addrs[0].0))
        .update_profile(proto::UpdateProfileRequest {
            tenant: tenant.clone(),
            identity: identity(Kind::Phone("+34611000010".into())),
            name: "Lucía Ruiz".into(),
            source: "crm".into(),
            ..Default::default()
        })
        .await
        .expect("profile set")
        .into_inner();
    // A campaign paused (issue 19) and a send it holds: journaled too.
    let paused = out
        .pause(proto::PauseRequest {
            tenant: tenant.clone(),
            tag: "spring-sale".into(),
            expires_in_ms: 3_600_000,
            reason: "complaints".into(),
            actor: "sre-ana".into(),
            ..Default::default()
        })
        .await
        .expect("paused")
        .into_inner();
    let sale = out
        .send(proto::SendRequest {
            tenant: tenant.clone(),
            from: format!("{tenant}-n"),
            to: "+34611000011".into(),
            category: proto::Category::Utility as i32,
            content: "spring_sale".into(),
            idempotency_key: "sale-1".into(),
            tag: "spring-sale".into(),
            ..Default::default()
        })
        .await
        .expect("held")
        .into_inner();
    assert_eq!(sale.admission(), proto::Admission::Queued, "{sale:?}");
    let consent_in = |addr: &str, customer: &'static str| {
        let mut customers = CustomersClient::new(channel(addr));
        let tenant = tenant.clone();
        async move {
            customers
                .get_consent(proto::ConsentRef {
                    tenant,
                    customer: customer.into(),
                })
                .await
                .map(|c| c.into_inner())
        }
    };
    let consent_of = |addr: &str| {
        let read = consent_in(addr, "+34611000009");
        async move { read.await.map(|c| c.state()) }
    };
    // Bounded waits stop a broken test from hanging; nothing asserts how fast.
    tokio::time::timeout(Duration::from_secs(60), async {
        while consent_of(&addrs[0].0).await.ok() != Some(proto::ConsentState::OptedOut) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the opt-out was applied");

    // kill -9 the owner; the other replica takes everything over.
    let owner = owner.expect("three sends answered");
    let (survivor, survivor_metrics, alive) = if owner == addrs[0].0 {
        a.kill();
        (addrs[1].0.clone(), addrs[1].1.clone(), b)
    } else {
        b.kill();
        (addrs[0].0.clone(), addrs[0].1.clone(), a)
    };
    suite::wait_owned(
        &[survivor_metrics.as_str()],
        "the survivor takes everything",
        |o| o[0] == 4,
    )
    .await;
    let mut out = OutboundClient::new(channel(&survivor));
    let state = |out: &mut OutboundClient<tonic::transport::Channel>, key: &str| {
        let request = proto::SendRef {
            tenant: tenant.clone(),
            idempotency_key: key.into(),
            ..Default::default()
        };
        let mut out = out.clone();
        async move {
            out.get_status(request)
                .await
                .map(|s| s.into_inner().state())
        }
    };
    assert_eq!(
        state(&mut out, "reminder-0").await.unwrap(),
        proto::SendState::Cancelled
    );
    for key in ["reminder-1", "reminder-2"] {
        assert_eq!(
            state(&mut out, key).await.unwrap(),
            proto::SendState::Scheduled
        );
    }
    // The pause, with the send it holds, and its end unchanged.
    let pauses = out
        .list_paused(proto::ListPausedRequest {
            tenant: tenant.clone(),
        })
        .await
        .expect("pauses listed")
        .into_inner()
        .pauses;
    assert_eq!(
        pauses,
        [proto::PauseInfo {
            held: 1,
            ..paused.clone()
        }]
    );
    assert_eq!(
        state(&mut out, "sale-1").await.unwrap(),
        proto::SendState::Queued
    );
    let resumed = out
        .resume(proto::ResumeRequest {
            tenant: tenant.clone(),
            tag: "spring-sale".into(),
            reason: "template fixed".into(),
            actor: "sre-ana".into(),
        })
        .await
        .expect("resumed")
        .into_inner();
    assert_eq!((resumed.resumed, resumed.released), (true, 1));
    // From the snapshot, or from the inbound topic read again after it (the input replays
    // what the last snapshot does not hold once it owns the partition).
    tokio::time::timeout(Duration::from_secs(60), async {
        while consent_of(&survivor).await.ok() != Some(proto::ConsentState::OptedOut) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the survivor knows the customer opted out");
    let crm = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let c = consent_in(&survivor, "+34611000008").await.unwrap();
            if c.state() != proto::ConsentState::None {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the survivor knows the consent set through the API");
    assert_eq!(
        (crm.state(), crm.source.as_str(), crm.at_ms),
        (proto::ConsentState::OptedOut, "crm", set.at_ms),
        "the API's consent, at the time it was set"
    );
    // The link and the profile: the visitor finds the phone's customer, with its CRM name at
    // the time it was set.
    let customer = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let got = CustomersClient::new(channel(&survivor))
                .get(proto::CustomerRef {
                    tenant: tenant.clone(),
                    identity: identity(Kind::VisitorId("v-kill".into())),
                })
                .await;
            if let Ok(c) = got {
                let c = c.into_inner();
                if c.profile.as_ref().and_then(|p| p.name.as_ref()).is_some() {
                    break c;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the survivor knows the link and the name");
    let kinds: Vec<Option<Kind>> = customer.identities.iter().map(|i| i.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            Some(Kind::Phone("+34611000010".into())),
            Some(Kind::VisitorId("v-kill".into()))
        ]
    );
    // One customer: the phone finds the same conversation. Its id may differ from the one the
    // link answered: ids made after the last snapshot are given again in replay order, and
    // the journal (sends topic) and the inbound topic are read back in another interleaving
    // than the one the owner saw (the BAJA message and this link both opened one here).
    let by_phone = CustomersClient::new(channel(&survivor))
        .get(proto::CustomerRef {
            tenant: tenant.clone(),
            identity: identity(Kind::Phone("+34611000010".into())),
        })
        .await
        .expect("the phone's customer")
        .into_inner();
    assert_eq!(customer.conversation_id, by_phone.conversation_id);
    assert!(!linked.conversation_id.is_empty());
    let name = customer.profile.unwrap().name.unwrap();
    assert_eq!(
        name,
        named.profile.unwrap().name.unwrap(),
        "the CRM's name, at the time it was set"
    );
    let promo = out
        .send(proto::SendRequest {
            tenant: tenant.clone(),
            from: format!("{tenant}-n"),
            to: "+34611000009".into(),
            category: proto::Category::Marketing as i32,
            content: "promo".into(),
            idempotency_key: "promo-baja".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promo.reason(), proto::RefusalReason::OptedOut);

    // At their time: the two reminders, never the cancelled one.
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let mut dispatched = 0;
            for key in ["reminder-1", "reminder-2", "sale-1"] {
                if state(&mut out, key).await.unwrap() == proto::SendState::Dispatched {
                    dispatched += 1;
                }
            }
            if dispatched == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("the reminders were dispatched at their time, and the resumed send");
    assert_eq!(
        state(&mut out, "reminder-0").await.unwrap(),
        proto::SendState::Cancelled
    );
    let dispatches = suite::reader(&brokers, &["switchboard.dispatch"]);
    let mut keys = Vec::new();
    while keys.len() < 3 {
        let m = guard(dispatches.recv()).await.expect("a dispatch");
        let d = proto::Dispatch::decode(m.payload().unwrap_or_default()).unwrap();
        keys.push(d.idempotency_key);
    }
    keys.sort();
    assert_eq!(keys, ["reminder-1", "reminder-2", "sale-1"]);
    let _ = std::fs::remove_dir_all(&dir);
    drop(alive); // before its broker
    drop(cluster);
}
