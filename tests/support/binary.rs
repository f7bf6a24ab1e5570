//! The `switchboard` binary as a black box: started on a config file with its gRPC address
//! read from what it prints, stopped (killed) when dropped; and its CLI run against it.
// Each test binary uses a part of this file.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

pub struct Binary(Child);

/// A config with one tenant, `crm` (business number `N` at 100 mps, queue `q`, a bot), with
/// `quotas` as its `[tenants.quotas]` and `head` before it (a `[runtime]` section, or "").
pub fn crm_config(head: &str, quotas: &str) -> String {
    format!(
        r#"{head}
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
{quotas}
"#
    )
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary on `config` (a file in a temporary directory), a channel to its gRPC address
/// and the address (as it prints it).
pub async fn start(config: &str) -> (Binary, Channel, String, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, config).unwrap();
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
pub mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "switchboard-test-{}-{}",
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

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `switchboard <args>` against the service at `addr`: (succeeded, stdout, stderr).
pub async fn cli(addr: &str, args: &[&str]) -> (bool, String, String) {
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
