//! `switchboard-load`: open-loop load against a running switchboard.
//!
//! Today it runs one load model, the steady state: inbound customer messages (`Inbound.Ingest`)
//! at a constant, step or ramp rate, latency measured from each request's scheduled time, the
//! warm-up left out, and prints the summary. Scenarios, anchors, Kafka targets and reports are
//! the rest of the load-test issue (see `README.md` here).
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchboard::proto;
use switchboard_load::latency::Latencies;
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
    let rate = match cli.to {
        Some(to) => Rate::Ramp {
            from: cli.rate,
            to,
            over: cli.duration,
        },
        None => Rate::Constant { per_sec: cli.rate },
    };
    let due = rate.schedule(cli.duration);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cli.target))?
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach {}: {e}; start it with `cargo run --release`",
                cli.target
            )
        })?;
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
        let message = proto::InboundMessage {
            tenant: cli.tenant.clone(),
            customer: format!("+3461{:07}", n % 100_000),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: format!("load.{n}"),
            text: "hola, ¿dónde está mi pedido?".into(),
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
    let elapsed = start.elapsed();
    let s = latencies.lock().await.summary();
    println!(
        "offered {} requests in {:.1} s ({:.0}/s), {} measured after a {:?} warm-up",
        due.len(),
        cli.duration.as_secs_f64(),
        due.len() as f64 / cli.duration.as_secs_f64(),
        s.count,
        cli.warmup
    );
    println!(
        "achieved {:.0}/s; latency from the scheduled time: p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}",
        due.len() as f64 / elapsed.as_secs_f64(),
        s.p50,
        s.p90,
        s.p99,
        s.p999,
        s.max
    );
    println!("errors by status: {:?}", errors.lock().await);
    Ok(())
}
