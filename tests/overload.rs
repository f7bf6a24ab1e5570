//! Overload: the service binary with a small in-flight limit (4 calls) under 64 concurrent
//! callers on 8 connections. Every call is answered, either routed or RESOURCE_EXHAUSTED
//! with a retry hint; health checks still answer; memory stays bounded; once the load drops
//! every call goes through again. (Nothing here asserts how fast.)
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchboard::proto;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn message(n: u64) -> proto::InboundMessage {
    proto::InboundMessage {
        tenant: "demo".into(),
        customer: format!("+3461{:07}", n % 50_000),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: format!("overload.{n}"),
        text: "hola, ¿dónde está mi pedido?".into(),
        business_number: String::new(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_capacity_calls_get_resource_exhausted_with_a_retry_hint_and_the_service_recovers() {
    let dir = std::env::temp_dir().join(format!("switchboard-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("overload.toml");
    std::fs::write(
        &config,
        switchboard::config::EMBEDDED_DEFAULT.replace(
            "[runtime]\n",
            "[runtime]\nmax_in_flight_calls = 4\noverload_retry_ms = 250\n",
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SWITCHBOARD_GRPC_ADDR", "127.0.0.1:0")
        .env("SWITCHBOARD_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next();
    let grpc = lines
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let connect = || async {
        tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let baseline_kb = peak_rss_kb(pid);

    // The burst: 8 connections × 8 callers × 250 calls, far past 4 in flight.
    let (ok, exhausted, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..8u64 {
        let channel = connect().await;
        for w in 0..8u64 {
            let (channel, ok, exhausted, other) = (
                channel.clone(),
                ok.clone(),
                exhausted.clone(),
                other.clone(),
            );
            callers.spawn(async move {
                let mut client = proto::inbound_client::InboundClient::new(channel);
                for i in 0..250u64 {
                    match client.ingest(message((c * 8 + w) * 1_000 + i)).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(s) if s.code() == Code::ResourceExhausted => {
                            let hint = s.metadata().get("grpc-retry-pushback-ms");
                            assert_eq!(hint.and_then(|v| v.to_str().ok()), Some("250"), "{s:?}");
                            assert!(s.message().contains("retry after 250 ms"), "{s:?}");
                            exhausted.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(s) => {
                            eprintln!("unexpected: {s:?}");
                            other.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    }
    // Health checks answer during the burst (they are never shed).
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect().await);
    for _ in 0..20 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health answers under overload")
            .into_inner();
        assert_eq!(
            status.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
    while let Some(r) = callers.join_next().await {
        r.unwrap();
    }
    let (ok, exhausted, other) = (
        ok.load(Ordering::Relaxed),
        exhausted.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    assert_eq!(ok + exhausted + other, 16_000, "every call answered");
    assert_eq!(other, 0, "only OK or RESOURCE_EXHAUSTED");
    assert!(
        exhausted > 0,
        "the limit refused some: {ok} ok, {exhausted} shed"
    );
    assert!(ok > 0, "and served others");
    // Bounded memory: the burst cost far less than buffering 16,000 calls would.
    let peak_kb = peak_rss_kb(pid);
    assert!(
        peak_kb < baseline_kb + 100 * 1024,
        "peak RSS {peak_kb} kB from {baseline_kb} kB"
    );

    // Load drops: one caller at a time, every call goes through.
    let mut client = proto::inbound_client::InboundClient::new(connect().await);
    for i in 0..50 {
        client
            .ingest(message(900_000 + i))
            .await
            .expect("served after the burst");
    }

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "burst: {ok} served, {exhausted} shed; peak RSS {peak_kb} kB (from {baseline_kb} kB)"
    );
}
