//! `switchboard-load`: open-loop load against a running switchboard.
//!
//! Today it runs one load model, the steady state: inbound customer messages (`Inbound.Ingest`)
//! at a constant rate or a ramp, latency measured from each request's scheduled time, the
//! warm-up left out, and prints the summary; with `--anchor`, first against a bare tonic echo
//! service in the same process, then the ratios. Scenarios, anchors, Kafka targets and reports are
//! the rest of the load-test issue (see `README.md` here).
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchboard::proto;
use switchboard_load::latency::Latencies;
use switchboard_load::report::{Measured, Report};
use switchboard_load::scenario::{Messages, Scenario};
use switchboard_load::schedule::Rate;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(
    version,
    about = "Open-loop load against a running switchboard (loopback by default)"
)]
struct Cli {
    /// The switchboard gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    allow_remote: bool,
    /// The tenant the messages are for (it must be configured on the target).
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Requests per second (the start rate with --to).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Ramp to this rate over the run instead of a constant rate.
    #[arg(long)]
    to: Option<f64>,
    /// How long to offer load ("30s", "2m").
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Left out of the results ("2s").
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Requests in flight at most (past it, later ones wait: their latency shows it).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// First run the same schedule against a bare tonic echo service in this process (the
    /// anchor) and print the ratios.
    #[arg(long)]
    anchor: bool,
    /// A scenario file (`load-tests/scenarios/*.toml`): its tenant, rate, duration, warm-up
    /// and messages replace the flags above.
    #[arg(long)]
    scenario: Option<std::path::PathBuf>,
    /// Write the report there as `report.md` and `report.json`.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let host = cli.target.rsplit_once(':').map_or("", |(h, _)| h);
    if !cli.allow_remote && !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        anyhow::bail!(
            "target {} is not on this machine; pass --allow-remote to load it anyway",
            cli.target
        );
    }
    let mut cli = cli;
    let plan = match &cli.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let plan = Scenario::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (cli.tenant, cli.duration, cli.warmup) =
                (plan.tenant.clone(), plan.duration, plan.warmup);
            println!("scenario {}", plan.name);
            Some(plan)
        }
        None => None,
    };
    let rate = match (&plan, cli.to) {
        (Some(plan), _) => plan.rate,
        (None, Some(to)) => Rate::Ramp {
            from: cli.rate,
            to,
            over: cli.duration,
        },
        (None, None) => Rate::Constant { per_sec: cli.rate },
    };
    let messages = plan.as_ref().map(|p| Messages::new(&p.inbound, 1));
    let due = rate.schedule(cli.duration);
    let target = connect(&cli.target).await?;
    let anchor = if cli.anchor {
        // The anchor, in this same process and run: a bare tonic service with the same API,
        // answering each message with a decision of the same shape without routing it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(proto::inbound_server::InboundServer::new(Echo))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let echo = connect(&addr.to_string()).await?;
        let outcome = run(&echo, &due, &cli, messages.as_ref()).await?;
        outcome.print("anchor (tonic echo)", &cli, due.len());
        Some(outcome)
    } else {
        None
    };
    let outcome = run(&target, &due, &cli, messages.as_ref()).await?;
    outcome.print("switchboard", &cli, due.len());
    let offered = due.len() as f64 / cli.duration.as_secs_f64();
    let measured = |name: &str, o: &Outcome| {
        Measured::new(
            name,
            offered,
            o.achieved,
            &o.latencies.summary(),
            o.errors.clone(),
        )
    };
    let mut targets = Vec::new();
    if let Some(anchor) = &anchor {
        targets.push(measured("anchor", anchor));
    }
    targets.push(measured("switchboard", &outcome));
    let name = plan.as_ref().map_or("flags", |p| p.name.as_str());
    let report = Report::new(name, cli.duration, cli.warmup, targets);
    if let Some(r) = report.ratios {
        println!(
            "ratio to the anchor: achieved rate {:.2}, p99 {:.2}, p99.9 {:.2}",
            r.achieved, r.p99, r.p999
        );
    }
    if let Some(dir) = &cli.report {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.md"), report.markdown())?;
        std::fs::write(dir.join("report.json"), report.json())?;
        println!("report written to {}", dir.display());
    }
    Ok(())
}

async fn connect(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot reach {addr}: {e}; start it with `cargo run --release`")
        })
}

/// What one run measured.
struct Outcome {
    latencies: Latencies,
    errors: std::collections::BTreeMap<String, u64>,
    achieved: f64,
}

impl Outcome {
    fn print(&self, what: &str, cli: &Cli, offered: usize) {
        let s = self.latencies.summary();
        println!(
            "{what}: offered {offered} requests over {:?} ({:.0}/s), achieved {:.0}/s, {} measured \
             after a {:?} warm-up",
            cli.duration,
            offered as f64 / cli.duration.as_secs_f64(),
            self.achieved,
            s.count,
            cli.warmup
        );
        println!(
            "  latency from the scheduled time: p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}; \
             errors by status: {:?}",
            s.p50, s.p90, s.p99, s.p999, s.max, self.errors
        );
    }
}

/// Offers `due` (open loop) to `channel`.
async fn run(
    channel: &tonic::transport::Channel,
    due: &[Duration],
    cli: &Cli,
    messages: Option<&Messages<'_>>,
) -> anyhow::Result<Outcome> {
    let latencies = Arc::new(Mutex::new(Latencies::new(
        cli.warmup,
        Duration::from_secs(60),
    )));
    let errors = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let slots = Arc::new(tokio::sync::Semaphore::new(cli.concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(due.len());
    for (n, at) in due.iter().copied().enumerate() {
        tokio::time::sleep_until((start + at).into()).await;
        let permit = slots.clone().acquire_owned().await?;
        let mut client = proto::inbound_client::InboundClient::new(channel.clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        let (customer, web_chat, text) = match messages {
            Some(m) => {
                let m = m.nth(n as u64);
                (m.customer, m.web_chat, m.text)
            }
            None => (
                format!("+3461{:07}", n % 100_000),
                false,
                "hola, ¿dónde está mi pedido?".to_owned(),
            ),
        };
        let channel = if web_chat {
            proto::Channel::Webchat
        } else {
            proto::Channel::Whatsapp
        };
        let message = proto::InboundMessage {
            tenant: cli.tenant.clone(),
            customer,
            channel: channel as i32,
            provider_message_id: format!("load.{n}"),
            text,
            business_number: String::new(),
        };
        tasks.push(tokio::spawn(async move {
            let result = client.ingest(message).await;
            let done = start.elapsed();
            drop(permit);
            latencies.lock().await.record(at, done);
            if let Err(status) = result {
                *errors
                    .lock()
                    .await
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let achieved = due.len() as f64 / start.elapsed().as_secs_f64();
    let latencies = Arc::try_unwrap(latencies)
        .map_err(|_| anyhow::anyhow!("a request task outlived the run"))?
        .into_inner();
    let errors = errors.lock().await.clone();
    Ok(Outcome {
        latencies,
        errors,
        achieved,
    })
}

/// The anchor: answers every message with a decision of the same shape, without routing it.
struct Echo;

#[tonic::async_trait]
impl proto::inbound_server::Inbound for Echo {
    async fn ingest(
        &self,
        request: tonic::Request<proto::InboundMessage>,
    ) -> Result<tonic::Response<proto::RoutingDecision>, tonic::Status> {
        let m = request.into_inner();
        Ok(tonic::Response::new(proto::RoutingDecision {
            conversation_id: "c-1".into(),
            target: proto::Target::Bot as i32,
            reason: proto::Reason::SimpleIntent as i32,
            detail: "simple intent: the bot answers".into(),
            intent: "order_status".into(),
            bot: "bot".into(),
            window_open: true,
            window_expires_at_ms: 1_700_000_000_000,
            provider_message_id: m.provider_message_id,
            ..Default::default()
        }))
    }
}
