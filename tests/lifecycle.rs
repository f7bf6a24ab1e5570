//! The send lifecycle through gRPC against the `switchboard` binary (issue 16): cancel by
//! match, scheduled sends, consent (API and keyword) and the frequency cap, as a CRM would
//! drive them. Timeouts only stop a broken test from hanging; nothing asserts how fast
//! anything is (the exact times are the core tests').
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard::proto::{
    self, customers_client::CustomersClient, inbound_client::InboundClient,
    outbound_client::OutboundClient,
};
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

const CONFIG: &str = r#"
[runtime]
tick_interval_ms = 50
[[tenants]]
id = "crm"
default_region = "ES"
default_queue = "q"
bot = "bot"
[[tenants.queues]]
name = "q"
sla_target_secs = 60
max_wait_secs = 600
[[tenants.numbers]]
id = "N"
mps = 100
[tenants.quotas]
messaging_limit = "unlimited"
"#;

struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary on a config file, and a channel to its gRPC address (as it prints it).
async fn start() -> (Binary, Channel, tempdir::Dir) {
    let (binary, channel, _, dir) = start_at().await;
    (binary, channel, dir)
}

/// The same, and the gRPC address.
async fn start_at() -> (Binary, Channel, String, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("SWITCHBOARD_GRPC_ADDR", "127.0.0.1:0")
        .env("SWITCHBOARD_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    // Read to the end in the background: a closed pipe would kill the binary at its next line.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim_start().starts_with("gRPC:")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line.split_whitespace().last().map(str::to_owned));
            }
        }
    });
    let grpc = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("the binary printed its address in time")
        .expect("the binary is running")
        .expect("a gRPC line");
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (Binary(child), channel, grpc, dir)
}

/// A tiny temporary directory (no dependency for it).
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "switchboard-lifecycle-{}-{}",
                std::process::id(),
                super::now_ms()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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

/// `switchboard <args>` against the service at `addr`: (succeeded, stdout, stderr).
async fn cli(addr: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("SWITCHBOARD_GRPC_ADDR", addr);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_operators_commands_cancel_by_match_and_set_consent() {
    let (_binary, channel, addr, _dir) = start_at().await;
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
