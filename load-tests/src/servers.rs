//! The servers a run starts: switchboard (or the echo anchor) as a child process of the
//! harness, `switchboard-load serve`, on free loopback ports.
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncBufReadExt;

/// What a child serves (`switchboard-load serve --kind`).
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Kind {
    /// switchboard.
    Switchboard,
    /// The gRPC anchor: a bare tonic echo service.
    Echo,
    /// The Kafka anchor: a raw consume→produce pipe.
    Pipe,
    /// The webhook anchor: a bare HTTP handler checking the same HMAC.
    HmacAnchor,
    /// `switchboard egress` (the dispatch topic to the Cloud API).
    Egress,
    /// `switchboard webhook` (the webhook endpoint alone, onto the webhooks topic).
    Webhook,
}

/// The broker and the run's topic prefix (each run gets its own topics).
#[derive(Debug, Clone)]
pub struct Kafka {
    pub brokers: String,
    pub prefix: String,
}

impl Kafka {
    /// `brokers` with topics of their own for a run: prefixed `<name><milliseconds>`.
    pub fn fresh(brokers: String, name: &str) -> Self {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Self {
            brokers,
            prefix: format!("{name}{stamp}"),
        }
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
}

/// A server the harness started: stops when dropped (stdin closed, then killed).
pub struct Child {
    process: tokio::process::Child,
    pub pid: u32,
    pub grpc: String,
    /// Every address the child printed (gRPC or `-`, metrics, then the webhook endpoint if
    /// on).
    pub addresses: Vec<String>,
}

impl Child {
    pub async fn start(
        kind: Kind,
        config: Option<&Path>,
        kafka: Option<&Kafka>,
        pin: bool,
    ) -> anyhow::Result<Child> {
        Self::start_with(kind, config, kafka, pin, &[]).await
    }

    /// [`Child::start`] with environment variables for the child (config overrides).
    pub async fn start_with(
        kind: Kind,
        config: Option<&Path>,
        kafka: Option<&Kafka>,
        pin: bool,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Child> {
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.arg("serve");
        cmd.envs(env.iter().copied());
        let name = clap::ValueEnum::to_possible_value(&kind).context("every kind has a name")?;
        cmd.args(["--kind", name.get_name()]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        if let Some(k) = kafka {
            cmd.args(["--kafka", &k.brokers, "--topic-prefix", &k.prefix]);
        }
        if pin {
            cmd.args(["--pin", "1"]);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut process = cmd.spawn().context("cannot start the server")?;
        let pid = process.id().context("the server exited at once")?;
        let stdout = process.stdout.take().context("piped")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("the server did not start within 120 s")??
            .context("the server exited before serving (its error is above)")?;
        let addresses: Vec<String> = line
            .strip_prefix("serving ")
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .with_context(|| format!("unexpected first line from the server: {line:?}"))?;
        let grpc = addresses
            .first()
            .with_context(|| format!("no address in the server's first line: {line:?}"))?
            .clone();
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Child {
            process,
            pid,
            grpc,
            addresses,
        })
    }

    pub async fn stop(mut self) {
        drop(self.process.stdin.take());
        if tokio::time::timeout(Duration::from_secs(15), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}
