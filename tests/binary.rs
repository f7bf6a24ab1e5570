//! The `switchboard` binary as an operator runs it: environment overrides, printed addresses,
//! health over gRPC, a clean exit on SIGTERM, and config errors that name the field.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test]
async fn serves_the_embedded_default_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .env("SWITCHBOARD_GRPC_ADDR", "127.0.0.1:0")
        .env("SWITCHBOARD_METRICS_ADDR", "127.0.0.1:0")
        .env_remove("SWITCHBOARD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains("embedded demo config"), "{banner}");
    let grpc_line = lines.next().unwrap().unwrap();
    let grpc = grpc_line.split_whitespace().last().unwrap().to_owned();
    assert!(
        grpc.starts_with("127.0.0.1:") && !grpc.ends_with(":0"),
        "{grpc_line}"
    );

    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "switchboard.v1.Inbound".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    // The container health check: `switchboard health` asks the same thing.
    let health = Command::new(BIN)
        .args(["health", "--addr", &grpc])
        .output()
        .unwrap();
    assert!(health.status.success(), "{health:?}");
    assert!(String::from_utf8_lossy(&health.stdout).contains("serving"));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Bounded wait so a hung shutdown fails the test instead of hanging it.
    let exit = tokio::task::spawn_blocking(move || child.wait());
    let exit = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .expect("exits after SIGTERM")
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clean exit: {exit:?}");
    let health = Command::new(BIN)
        .args(["health", "--addr", &grpc, "--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(health.status.code(), Some(1), "{health:?}");
    assert!(String::from_utf8_lossy(&health.stderr).contains("not serving"));
}

#[test]
fn config_check_names_the_bad_field() {
    let dir = std::env::temp_dir().join(format!("switchboard-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        switchboard::config::EMBEDDED_DEFAULT
            .replace("sla_target_secs = 60", "sla_target_secs = 0"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenants[0].queues[0].sla_target_secs"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["config", "check"])
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration is valid"));
    assert!(stdout.contains("kafka: off"), "{stdout}");

    let out = Command::new(BIN)
        .args(["config", "check"])
        .env_remove("SWITCHBOARD_CONFIG")
        .env("SWITCHBOARD_KAFKA_BROKERS", "127.0.0.1:9092")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kafka: brokers 127.0.0.1:9092, group switchboard"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_documents_subcommands_and_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "serve",
        "config",
        "--config",
        "--grpc-addr",
        "--metrics-addr",
    ] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
}

#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let dir = std::env::temp_dir().join(format!("switchboard-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    let base = switchboard::config::EMBEDDED_DEFAULT;
    std::fs::write(&file, base).unwrap();
    let mut child = Command::new(BIN)
        .env("SWITCHBOARD_CONFIG", &file)
        .env("SWITCHBOARD_GRPC_ADDR", "127.0.0.1:0")
        .env("SWITCHBOARD_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains("switchboard.toml"), "{banner}");
    let grpc = lines
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut quotas = switchboard::proto::quotas_client::QuotasClient::new(channel);
    let limit = |q: &mut switchboard::proto::quotas_client::QuotasClient<_>| {
        let mut q = q.clone();
        async move {
            q.get(switchboard::proto::QuotaRef {
                tenant: "demo".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .messaging_limit
        }
    };
    assert_eq!(limit(&mut quotas).await, 250, "the safe default tier");

    std::fs::write(
        &file,
        base.replace("messaging_limit = 250", "messaging_limit = 10000"),
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloaded = tokio::time::timeout(Duration::from_secs(20), async {
        while limit(&mut quotas).await != 10_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reloaded.is_ok(), "the new limit shows after SIGHUP");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait());
    let exit = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(exit.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
