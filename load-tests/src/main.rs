//! `switchboard-load`: runs a scenario (or a load model given by flags) against switchboard and
//! reports what happened; see `README.md` here.
//!
//! Without `--target` it starts the service itself, as a child process on free loopback ports
//! (`switchboard-load serve`, the same library and embedded demo config as `switchboard`), so
//! one command runs a scenario end to end and the server's CPU and peak RSS can be measured.
//! The gRPC anchor, a bare tonic echo service with the same API and answer shapes, is started
//! the same way (`serve --kind echo`): same client, same kind of process.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::proto;
use switchboard_load::drive::{self, Call, Ctx, Pool, Shared, Stream, Tenants};
use switchboard_load::kafka::{KafkaTarget, Output};
use switchboard_load::report::{
    AgentsLine, ClientLoad, Cost, DirtyLine, LimitLine, Measured, QueueLine, Report,
};
use switchboard_load::scenario::{InboundLoad, Messages, Outbound, Plan, Priority, Scenario};
use switchboard_load::schedule::Rate;
use switchboard_load::servers::{Child, Kafka, Kind};
use switchboard_load::{kafka, usage};
use tokio::io::AsyncBufReadExt;

#[path = "../../tests/support/tansu.rs"]
mod tansu;

/// mimalloc: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Load switchboard with a scenario or a load model and report against its anchor"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// (Used by the harness) serve switchboard, or the echo anchor, on free loopback ports;
    /// prints the addresses, stops when stdin closes.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "switchboard")]
        kind: Kind,
        #[arg(long)]
        kafka: Option<String>,
        #[arg(long, default_value = "switchboard")]
        topic_prefix: String,
        #[arg(long)]
        pin: Option<usize>,
    },
    /// The webhook endpoint and the egress against their anchors (PERFORMANCE.md), through
    /// Kafka: signed POSTs/s against a bare HMAC handler, Cloud API sends/s against a bare
    /// HTTP client loop on the same mock Graph API.
    Edges(EdgesArgs),
    /// A replica that starts with a backlog (issue 18): the input topic is filled first, then
    /// switchboard starts and reads it; its peak RSS and how fast it caught up.
    Backlog(BacklogArgs),
}

#[derive(clap::Args)]
struct BacklogArgs {
    /// Kafka brokers, or `tansu` to start a Tansu broker here for the run.
    #[arg(long, default_value = "tansu")]
    kafka: String,
    /// Inbound messages waiting when switchboard starts.
    #[arg(long, default_value_t = 600_000)]
    records: u64,
    /// Partitions of the input topic (one tenant on each).
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Distinct customers the messages come from.
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// How long switchboard may take to read the backlog.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    within: Duration,
    /// Rounds (each with its own topics and server); the median and spread printed.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(clap::Args)]
struct EdgesArgs {
    /// Kafka brokers, or `tansu` to start a Tansu broker here for the run.
    #[arg(long, default_value = "tansu")]
    kafka: String,
    /// Webhook clients posting at once (closed loop), for the endpoint and its anchor.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Dispatch records the egress sends per round (its rate is taken between 10% and 90%).
    #[arg(long, default_value_t = 100_000)]
    dispatches: usize,
    /// Partitions of the dispatch topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// `egress.max_in_flight`; the anchor keeps partitions × this many posts in flight.
    #[arg(long, default_value_t = 128)]
    max_in_flight: usize,
    /// Rounds (each: both anchors, then both edges); medians and spreads printed.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A scenario file (`load-tests/scenarios/*.toml`).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// A running switchboard's gRPC address; default: start the embedded server here.
    #[arg(long)]
    target: Option<String>,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    allow_remote: bool,
    /// The config of the server the harness starts (default: the scenario's
    /// `server_config`, else the embedded demo config).
    #[arg(long)]
    server_config: Option<PathBuf>,
    /// Send inbound messages through Kafka (these brokers) instead of gRPC: the harness
    /// produces to the inbound topic and reads the routed and dead-letter topics. `tansu`
    /// starts a Tansu broker here (memory engine) for the run.
    #[arg(long)]
    kafka: Option<String>,
    /// Without a scenario: what to call, `ingest` (Inbound.Ingest) or `send` (Outbound.Send).
    #[arg(long, default_value = "ingest")]
    call: String,
    /// Without a scenario, `--call send`: the sending business numbers, taking turns.
    #[arg(long, default_value = "+34910000001", value_delimiter = ',')]
    from: Vec<String>,
    /// Without a scenario: the tenant (configured on the target).
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Without a scenario: spread the calls over these tenants in turn (each configured on
    /// the target, `--from` numbers in each), and so over as many shards; replaces --tenant.
    #[arg(long, value_delimiter = ',')]
    tenants: Vec<String>,
    /// HTTP/2 connections to the target (and to the anchor); calls take them in turn. One
    /// connection tops out near 26–29k calls/s whatever the machine.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Without a scenario: the distinct customers the calls come from (`ingest`) or go to
    /// (`send`); default 100,000 and 1,000,000. The state a cut copies grows with it.
    #[arg(long)]
    customers: Option<u64>,
    /// The client's worker threads (default: one per core). The report warns when the
    /// client's own CPU was near threads × wall time: then it measured the client.
    #[arg(long)]
    threads: Option<usize>,
    /// Open loop: requests per second (the start rate with --to).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Open loop: ramp to this rate over the run.
    #[arg(long)]
    to: Option<f64>,
    /// Closed loop instead: this many callers, each sending when its last call is answered.
    #[arg(long)]
    workers: Option<usize>,
    /// Open loop at this fraction of the anchor's closed-loop maximum (measured first with
    /// --workers callers, default 64), for both the anchor and switchboard.
    #[arg(long)]
    rate_from_anchor: Option<f64>,
    /// How long to offer load ("30s", "2m").
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Left out of the results.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Requests in flight at most, per stream (open loop).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// First run the same load against the anchor (gRPC: a bare tonic echo service; Kafka: a
    /// raw rdkafka consume→produce pipe) and report the ratios.
    #[arg(long)]
    anchor: bool,
    /// Pin this process to CPU 0 and the servers it starts to CPU 1 (Linux).
    #[arg(long)]
    pin: bool,
    /// Run the whole measurement this many times (each with its own servers); the summary
    /// gives the median and the spread of the ratios to the anchor.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Write report.md, report.json and the plots (SVG) into this directory (with --repeat,
    /// one run-N directory per run, and summary.md).
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // The servers it starts are this binary again: tuned as the service is.
    switchboard::allocator::tune();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let (None, Some(threads)) = (&cli.command, cli.run.threads) {
        anyhow::ensure!(threads > 0, "--threads must be at least 1");
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    match cli.command {
        Some(Cmd::Serve {
            config,
            kind,
            kafka,
            topic_prefix,
            pin,
        }) => {
            if let Some(cpu) = pin {
                pin_to(cpu)?;
            }
            // The served process logs to stderr when RUST_LOG asks for it.
            if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
                tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(std::io::stderr)
                    .init();
            }
            let kafka = kafka.map(|brokers| Kafka {
                brokers,
                prefix: topic_prefix,
            });
            runtime.block_on(serve(config, kind, kafka))
        }
        Some(Cmd::Edges(args)) => runtime.block_on(edges(args)),
        Some(Cmd::Backlog(args)) => runtime.block_on(backlog(args)),
        None => {
            if cli.run.pin {
                pin_to(0)?;
            }
            runtime.block_on(run(cli.run))
        }
    }
}

/// Pins this process (and the threads it starts from now on) to one CPU.
fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    anyhow::ensure!(
        ok,
        "cannot pin to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The servers the harness starts.
// ---------------------------------------------------------------------------------------------

async fn serve(config: Option<PathBuf>, kind: Kind, kafka: Option<Kafka>) -> anyhow::Result<()> {
    let stdin_closed = async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    if kind == Kind::Pipe {
        let k = kafka.context("--pipe needs --kafka")?;
        println!("serving - -");
        return kafka::pipe(
            &k.brokers,
            &k.topic("anchor.in"),
            &k.topic("anchor.out"),
            stdin_closed,
        )
        .await;
    }
    if kind == Kind::HmacAnchor {
        return switchboard_load::edges::serve_hmac_anchor(stdin_closed).await;
    }
    if kind == Kind::Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("serving {} -", listener.local_addr()?);
        tonic::transport::Server::builder()
            .add_service(proto::inbound_server::InboundServer::new(Echo))
            .add_service(proto::outbound_server::OutboundServer::new(Echo))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stdin_closed,
            )
            .await?;
        return Ok(());
    }
    let mut config = switchboard::config::Config::load(config.as_deref())?;
    config.grpc_addr = "127.0.0.1:0".parse()?;
    config.metrics_addr = "127.0.0.1:0".parse()?;
    if let Some(k) = kafka {
        let c = &mut config.kafka;
        c.brokers = k.brokers.clone();
        c.group_id = k.prefix.clone();
        c.replication_factor = 1;
        for (topic, name) in [
            (&mut c.inbound_topic, "inbound"),
            (&mut c.webhooks_topic, "webhooks"),
            (&mut c.routed_topic, "routed"),
            (&mut c.sends_topic, "sends"),
            (&mut c.dispatch_topic, "dispatch"),
            (&mut c.status_topic, "status"),
            (&mut c.outcomes_topic, "outcomes"),
            (&mut c.dlq_topic, "dlq"),
            (&mut c.state_topic, "state"),
            (&mut c.owners_topic, "owners"),
        ] {
            *topic = k.topic(name);
        }
    }
    if kind == Kind::Egress {
        config.egress.group_id = format!("{}.egress", config.kafka.group_id);
        let metrics = switchboard::server::bind_metrics(&config).await?;
        println!("serving - {}", metrics.local_addr()?);
        switchboard::server::run_egress(config, metrics, stdin_closed).await?;
        return Ok(());
    }
    if kind == Kind::Webhook {
        config.webhook_addr = "127.0.0.1:0".parse()?;
        let webhook = switchboard::server::bind_webhook(&config).await?;
        let metrics = switchboard::server::bind_metrics(&config).await?;
        println!(
            "serving - {} {}",
            metrics.local_addr()?,
            webhook.local_addr()?
        );
        switchboard::server::run_webhook(config, webhook, metrics, stdin_closed).await?;
        return Ok(());
    }
    let (grpc, metrics) = switchboard::server::bind(&config).await?;
    let mut parts = switchboard::server::Parts::for_config(&config)?;
    if config.webhook.enabled() {
        config.webhook_addr = "127.0.0.1:0".parse()?;
        let webhook = switchboard::server::bind_webhook(&config).await?;
        println!(
            "serving {} {} {}",
            grpc.local_addr()?,
            metrics.local_addr()?,
            webhook.local_addr()?
        );
        parts.webhook = Some(webhook);
    } else {
        println!("serving {} {}", grpc.local_addr()?, metrics.local_addr()?);
    }
    switchboard::server::run_with(config, grpc, metrics, stdin_closed, parts).await?;
    Ok(())
}

/// `switchboard-load edges` (see `edges`): each round measures the webhook anchor, the
/// endpoint in a replica and alone, the egress anchor and the egress, and prints the ratios.
async fn edges(args: EdgesArgs) -> anyhow::Result<()> {
    use switchboard_load::edges;
    let tansu = (args.kafka == "tansu").then(tansu::Tansu::memory);
    let brokers = tansu
        .as_ref()
        .map_or_else(|| args.kafka.clone(), tansu::Tansu::brokers);
    let (graph, graph_url) = edges::start_graph().await?;
    let in_flight = args.partitions as usize * args.max_in_flight;
    let mut ratios = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.repeat {
        let kafka = Kafka::fresh(brokers.clone(), "edges");
        // The webhook endpoint against a bare handler with the same HMAC, measured before
        // and after each (this machine's speed drifts over a minute; the mean of the two
        // cancels a steady drift): anchor, in a replica, anchor, alone, anchor.
        let webhook_anchor = || async {
            let anchor = Child::start(Kind::HmacAnchor, None, None, false).await?;
            let url = format!("http://{}/webhooks/whatsapp", anchor.grpc);
            let (rate, failed) =
                edges::post_webhooks(&url, args.workers, args.warmup, args.duration).await?;
            anchor.stop().await;
            anyhow::ensure!(
                failed == 0,
                "the webhook anchor answered {failed} posts not 200"
            );
            anyhow::Ok(rate)
        };
        let env = [
            ("SWITCHBOARD_WEBHOOK__APP_SECRET", edges::SECRET),
            ("SWITCHBOARD_WEBHOOK__VERIFY_TOKEN", "load"),
            ("SWITCHBOARD_KAFKA__TOPIC_PARTITIONS", "4"),
        ];
        let mut before = webhook_anchor().await?;
        // In a replica (`serve`, which also routes what it stores, on the same cores), then
        // alone (`switchboard webhook`, a stateless edge: nothing consumes its topic here).
        for (kind, what, kept) in [
            (Kind::Switchboard, "in a replica", &mut ratios.0),
            (Kind::Webhook, "alone", &mut ratios.1),
        ] {
            let service = Child::start_with(kind, None, Some(&kafka), false, &env).await?;
            let url = format!(
                "http://{}/webhooks/whatsapp",
                service
                    .addresses
                    .get(2)
                    .context("the service printed no webhook address")?
            );
            let (rate, failed) =
                edges::post_webhooks(&url, args.workers, args.warmup, args.duration).await?;
            service.stop().await;
            let after = webhook_anchor().await?;
            let anchor = (before + after) / 2.0;
            println!(
                "round {round}: webhook endpoint {what} {rate:.0}/s ({failed} not 200) vs the bare HMAC handler {anchor:.0}/s (before {before:.0}, after {after:.0}): {:.2}x",
                rate / anchor
            );
            kept.push(rate / anchor);
            before = after;
        }

        // The egress against a bare client loop on the same mock, before and after.
        let egress_anchor =
            || edges::post_bodies(&graph, &graph_url, in_flight, args.warmup, args.duration);
        let before = egress_anchor().await?;
        let dispatch = kafka.topic("dispatch");
        switchboard_load::kafka::create_topics(
            &kafka.brokers,
            &[&dispatch, &kafka.topic("outcomes"), &kafka.topic("dlq")],
            args.partitions,
        )
        .await?;
        let producer = switchboard_load::kafka::producer(&kafka.brokers)?;
        let records = (0..args.dispatches).map(|i| edges::dispatch(i, 16));
        switchboard_load::kafka::produce_all(&producer, &dispatch, records).await?;
        let base = graph.posts.load(std::sync::atomic::Ordering::Relaxed);
        let max_in_flight = args.max_in_flight.to_string();
        let env = [
            ("SWITCHBOARD_CLOUD_API__ENABLED", "true"),
            ("SWITCHBOARD_CLOUD_API__BASE_URL", graph_url.as_str()),
            ("SWITCHBOARD_CLOUD_API__TOKEN", "load-test-token"),
            ("SWITCHBOARD_EGRESS__MAX_IN_FLIGHT", max_in_flight.as_str()),
        ];
        let egress = Child::start_with(Kind::Egress, None, Some(&kafka), false, &env).await?;
        let rate = edges::egress_rate(&graph, base, args.dispatches as u64).await?;
        egress.stop().await;
        let after = egress_anchor().await?;
        let anchor = (before + after) / 2.0;
        println!(
            "round {round}: egress {rate:.0} sends/s vs a bare client loop ({in_flight} in flight) {anchor:.0}/s (before {before:.0}, after {after:.0}): {:.2}x",
            rate / anchor
        );
        ratios.2.push(rate / anchor);
    }
    for (what, r) in [
        ("webhook endpoint in a replica", &mut ratios.0),
        ("webhook endpoint alone", &mut ratios.1),
        ("egress", &mut ratios.2),
    ] {
        r.sort_by(f64::total_cmp);
        println!(
            "{what}: median {:.2}x of its anchor (spread {:.2}-{:.2}, {} rounds)",
            r[r.len() / 2],
            r[0],
            r[r.len() - 1],
            r.len()
        );
    }
    drop(tansu);
    Ok(())
}

/// `switchboard-load backlog` (see `switchboard_load::backlog`), `--repeat` times.
async fn backlog(args: BacklogArgs) -> anyhow::Result<()> {
    let tansu = (args.kafka == "tansu").then(tansu::Tansu::memory);
    let brokers = tansu
        .as_ref()
        .map_or_else(|| args.kafka.clone(), tansu::Tansu::brokers);
    let backlog = switchboard_load::backlog::Backlog {
        records: args.records,
        partitions: args.partitions,
        customers: args.customers,
        within: args.within,
    };
    let mut peaks = Vec::new();
    for round in 1..=args.repeat {
        let kafka = Kafka::fresh(brokers.clone(), "backlog");
        println!("== round {round} of {}", args.repeat);
        let caught = switchboard_load::backlog::run(&kafka, &backlog).await?;
        peaks.push(caught.peak_rss_bytes);
    }
    peaks.sort_unstable();
    println!(
        "peak RSS with a backlog of {} records: median {} MB (spread {}-{} MB, {} rounds)",
        args.records,
        peaks[peaks.len() / 2] / 1_000_000,
        peaks[0] / 1_000_000,
        peaks[peaks.len() - 1] / 1_000_000,
        peaks.len()
    );
    drop(tansu);
    Ok(())
}

/// The gRPC anchor: answers with a decision or an admission of the same shape as
/// switchboard's, without routing or admitting anything.
struct Echo;

#[tonic::async_trait]
impl proto::inbound_server::Inbound for Echo {
    async fn ingest(
        &self,
        request: tonic::Request<proto::InboundMessage>,
    ) -> Result<tonic::Response<proto::RoutingDecision>, tonic::Status> {
        let m = request.into_inner();
        Ok(tonic::Response::new(proto::RoutingDecision {
            conversation_id: "c-0000000001".into(),
            target: proto::Target::Bot as i32,
            reason: proto::Reason::SimpleIntent as i32,
            detail: "simple intent: the bot answers".into(),
            intent: "order_status".into(),
            bot: "faq-bot".into(),
            window_open: true,
            window_expires_at_ms: 1_700_000_000_000,
            provider_message_id: m.provider_message_id,
            ..Default::default()
        }))
    }
}

/// The answer of the echo anchor's calls other than Send.
fn echo_only<T>() -> Result<tonic::Response<T>, tonic::Status> {
    Err(tonic::Status::unimplemented(
        "the echo anchor only answers Send",
    ))
}

#[tonic::async_trait]
impl proto::outbound_server::Outbound for Echo {
    async fn send(
        &self,
        _request: tonic::Request<proto::SendRequest>,
    ) -> Result<tonic::Response<proto::SendResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::SendResponse {
            send_id: "s-0000000001".into(),
            admission: proto::Admission::Dispatched as i32,
            ..Default::default()
        }))
    }

    async fn get_status(
        &self,
        _request: tonic::Request<proto::SendRef>,
    ) -> Result<tonic::Response<proto::SendStatus>, tonic::Status> {
        echo_only()
    }

    async fn cancel(
        &self,
        _request: tonic::Request<proto::CancelRequest>,
    ) -> Result<tonic::Response<proto::CancelResponse>, tonic::Status> {
        echo_only()
    }

    async fn pause(
        &self,
        _request: tonic::Request<proto::PauseRequest>,
    ) -> Result<tonic::Response<proto::PauseInfo>, tonic::Status> {
        echo_only()
    }

    async fn resume(
        &self,
        _request: tonic::Request<proto::ResumeRequest>,
    ) -> Result<tonic::Response<proto::ResumeResponse>, tonic::Status> {
        echo_only()
    }

    async fn list_paused(
        &self,
        _request: tonic::Request<proto::ListPausedRequest>,
    ) -> Result<tonic::Response<proto::ListPausedResponse>, tonic::Status> {
        echo_only()
    }

    type StreamStatusStream = tokio_stream::Empty<Result<proto::SendStatus, tonic::Status>>;

    async fn stream_status(
        &self,
        _request: tonic::Request<proto::StatusStreamRequest>,
    ) -> Result<tonic::Response<Self::StreamStatusStream>, tonic::Status> {
        echo_only()
    }
}

// ---------------------------------------------------------------------------------------------
// A run.
// ---------------------------------------------------------------------------------------------

/// The plan given by flags (no scenario file).
fn plan_from_flags(args: &RunArgs, rate: Rate) -> anyhow::Result<Plan> {
    let mut plan = Plan {
        name: format!("{} ({})", args.call, load_model(args, &rate)),
        tenant: args.tenants.first().unwrap_or(&args.tenant).clone(),
        duration: args.duration,
        warmup: args.warmup,
        server_config: None,
        inbound: None,
        agents: None,
        outbound: Vec::new(),
        dirty: None,
    };
    match args.call.as_str() {
        "ingest" => {
            let load = InboundLoad::order_status(args.customers.unwrap_or(100_000));
            plan.inbound = Some((rate, load));
        }
        "send" => plan.outbound.push(Outbound {
            category: "utility".into(),
            priority: Priority::ByCategory,
            rate,
            customers: args.customers.unwrap_or(1_000_000),
            from: args.from.clone(),
            content: "order_update".into(),
        }),
        other => anyhow::bail!("--call {other:?}: use ingest or send"),
    }
    Ok(plan)
}

fn load_model(args: &RunArgs, rate: &Rate) -> String {
    match args.workers {
        Some(w) if args.rate_from_anchor.is_none() => format!("closed loop, {w} callers"),
        _ => match rate {
            Rate::Constant { per_sec } => format!("open loop, {per_sec:.0}/s"),
            Rate::Ramp { from, to, .. } => format!("open loop, {from:.0}/s to {to:.0}/s"),
            other => format!("open loop, {other:?}"),
        },
    }
}

/// Where a run's requests go: gRPC only, or inbound messages and bad records through Kafka
/// (everything else still over gRPC).
#[derive(Clone)]
enum Via {
    Grpc(Pool),
    Kafka(Arc<KafkaTarget>, Option<tonic::transport::Channel>),
}

/// The streams of a plan.
fn calls(
    plan: &Plan,
    via: &Via,
    tenants: &Tenants,
    outcomes: &Shared,
) -> anyhow::Result<Vec<(String, Rate, Call)>> {
    let mut calls = Vec::new();
    if let Some((rate, load)) = &plan.inbound {
        let messages = Messages::new(load, 1);
        let call = match via {
            Via::Grpc(pool) => drive::inbound(pool, tenants, messages, outcomes),
            Via::Kafka(target, _) => target.inbound(tenants, messages, outcomes),
        };
        calls.push(("inbound".to_owned(), rate.clone(), call));
    }
    for o in &plan.outbound {
        let requests = drive::SendRequests::new(
            tenants,
            o.clone(),
            plan.inbound
                .as_ref()
                .map(|(_, load)| Messages::new(load, 1)),
            outcomes,
        );
        let call = match via {
            Via::Grpc(pool) => drive::sends(pool, requests, outcomes),
            Via::Kafka(target, Some(_)) => target.sends(requests, outcomes),
            Via::Kafka(_, None) => anyhow::bail!("the Kafka anchor carries inbound messages only"),
        };
        calls.push((format!("send {}", o.category), o.rate.clone(), call));
    }
    if let Some(d) = &plan.dirty {
        let call = match via {
            Via::Grpc(pool) => drive::dirty(pool, &plan.tenant, d.clone(), outcomes),
            Via::Kafka(target, _) => target.dirty(&plan.tenant, d.clone(), outcomes),
        };
        calls.push(("dirty".to_owned(), d.rate.clone(), call));
    }
    Ok(calls)
}

fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {elapsed_precise} [{wide_bar}] {pos}/{len} answered ({per_sec})",
        )
        .expect("a valid template"),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Offers the plan's streams to `channel` (each open loop at its rate, or closed loop with
/// `workers` callers), all at once.
async fn offer(
    plan: &Plan,
    via: &Via,
    outcomes: &Shared,
    args: &RunArgs,
    workers: Option<usize>,
    what: &str,
) -> anyhow::Result<Vec<Stream>> {
    let calls = calls(plan, via, &tenants(args, plan), outcomes)?;
    let total = match workers {
        Some(_) => None,
        None => Some(
            calls
                .iter()
                .map(|(_, rate, _)| rate.schedule(plan.duration).len() as u64)
                .sum(),
        ),
    };
    let ctx = Ctx {
        start: Instant::now(),
        warmup: plan.warmup,
        concurrency: args.concurrency,
        progress: progress(total, what),
    };
    let streams = futures_join(calls.into_iter().map(|(name, rate, call)| {
        let ctx = ctx.clone();
        let duration = plan.duration;
        async move {
            match workers {
                Some(w) => drive::closed_loop(&ctx, &name, w, duration, call).await,
                None => drive::open_loop(&ctx, &name, rate.schedule(duration), call).await,
            }
        }
    }))
    .await;
    ctx.progress.finish_and_clear();
    Ok(streams)
}

/// Runs the futures concurrently (each on its own task) and returns their outputs in order.
async fn futures_join<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a stream task does not panic"));
    }
    out
}

/// `connections` HTTP/2 connections to `addr`.
async fn connect(addr: &str, connections: usize) -> anyhow::Result<Pool> {
    Pool::connect(addr, connections).await.with_context(|| {
        format!(
            "cannot reach {addr}; start switchboard (`cargo run --release`) or leave out --target"
        )
    })
}

/// The cores the client's work could use: its worker threads (`--threads`, else tokio's
/// default, one per core), at most the cores it may run on (one with `--pin`).
fn client_threads(args: &RunArgs) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    args.threads.unwrap_or(cores).min(cores)
}

/// The tenants calls go to: `--tenants`, else the plan's one.
fn tenants(args: &RunArgs, plan: &Plan) -> Tenants {
    match args.tenants.is_empty() {
        true => Tenants::new(std::slice::from_ref(&plan.tenant)),
        false => Tenants::new(&args.tenants),
    }
}

fn answered(streams: &[Stream]) -> u64 {
    streams
        .iter()
        .map(|s| s.answers.values().sum::<u64>())
        .sum()
}

fn per_msg(before: Option<usage::Usage>, after: Option<usage::Usage>, n: u64) -> Option<f64> {
    Some((after?.cpu_s - before?.cpu_s) / n.max(1) as f64)
}

fn measured(plan: &Plan, s: &Stream, name: &str) -> Measured {
    let offered = s.offered as f64 / plan.duration.as_secs_f64();
    Measured::new(
        name,
        offered,
        s.achieved(),
        &s.latencies.summary(),
        s.errors(),
    )
}

/// The anchor's run: the same plan against the echo service (gRPC) or the raw pipe (Kafka),
/// in its own process. Returns its streams and its CPU seconds per answer.
async fn anchor(
    plan: &Plan,
    args: &RunArgs,
    kafka: Option<&Kafka>,
    workers: Option<usize>,
) -> anyhow::Result<(Vec<Stream>, Option<f64>)> {
    let (child, via) = match kafka {
        None => {
            let echo = Child::start(Kind::Echo, None, None, args.pin).await?;
            let pool = connect(&echo.grpc, args.connections).await?;
            (echo, Via::Grpc(pool))
        }
        Some(k) => {
            let (input, output) = (k.topic("anchor.in"), k.topic("anchor.out"));
            kafka::create_topics(&k.brokers, &[&input, &output], PARTITIONS).await?;
            let pipe = Child::start(Kind::Pipe, None, Some(k), args.pin).await?;
            let target = KafkaTarget::start(
                &k.brokers,
                &input,
                &[(output, Output::Copies)],
                &k.topic("anchor.reader"),
            )?;
            (pipe, Via::Kafka(Arc::new(target), None))
        }
    };
    let before = usage::of(Some(child.pid));
    let streams = offer(plan, &via, &Shared::default(), args, workers, "anchor").await?;
    let cpu = per_msg(before, usage::of(Some(child.pid)), answered(&streams));
    child.stop().await;
    Ok((streams, cpu))
}

/// Partitions of the anchor's topics: switchboard's default `kafka.topic_partitions`.
const PARTITIONS: i32 = 12;

/// Runs the measurement `--repeat` times; with more than one, prints the median and the
/// spread of the ratios to the anchor.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.repeat <= 1 {
        run_once(&args, args.report.as_deref()).await?;
        return Ok(());
    }
    let mut runs = Vec::new();
    for n in 1..=args.repeat {
        println!("== run {n} of {}", args.repeat);
        let dir = args.report.as_ref().map(|d| d.join(format!("run-{n}")));
        runs.push(run_once(&args, dir.as_deref()).await?);
    }
    let summary = switchboard_load::report::Repeated::new(&runs);
    println!("{}", summary.markdown());
    if let Some(dir) = &args.report {
        std::fs::write(dir.join("summary.md"), summary.markdown())?;
    }
    Ok(())
}

async fn run_once(args: &RunArgs, report_dir: Option<&Path>) -> anyhow::Result<Report> {
    if let Some(target) = &args.target {
        let host = target.rsplit_once(':').map_or("", |(h, _)| h);
        if !args.allow_remote && !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            anyhow::bail!(
                "target {target} is not on this machine; pass --allow-remote to load it anyway"
            );
        }
    }
    let base_rate = match args.to {
        Some(to) => Rate::Ramp {
            from: args.rate,
            to,
            over: args.duration,
        },
        None => Rate::Constant { per_sec: args.rate },
    };
    let (mut plan, scenario_dir) = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let plan = Scenario::from_toml(&text)
                .with_context(|| format!("scenario {}", path.display()))?;
            (plan, path.parent().map(Path::to_path_buf))
        }
        None => (plan_from_flags(args, base_rate)?, None),
    };
    anyhow::ensure!(
        args.tenants.is_empty() || args.scenario.is_none(),
        "--tenants spreads a flags run; a scenario names its own tenant"
    );
    // The broker: one named, or Tansu started here (kept until the run ends); each run gets
    // its own topics.
    let tansu = (args.kafka.as_deref() == Some("tansu")).then(tansu::Tansu::memory);
    let kafka = args.kafka.as_deref().map(|brokers| {
        Kafka::fresh(
            tansu
                .as_ref()
                .map_or_else(|| brokers.to_owned(), tansu::Tansu::brokers),
            "load",
        )
    });
    let server_config = args.server_config.clone().or_else(|| {
        let c = plan.server_config.as_ref()?;
        Some(scenario_dir.as_deref().unwrap_or(Path::new(".")).join(c))
    });
    // The anchor first (flags only: a scenario's agents, quotas and bad input have no echo).
    let mut workers = args.workers;
    let anchor_run = if args.anchor || args.rate_from_anchor.is_some() {
        anyhow::ensure!(
            args.scenario.is_none(),
            "--anchor compares one call (--call) with its echo; a scenario has no echo"
        );
        if let Some(fraction) = args.rate_from_anchor {
            // gRPC: the maximum with closed-loop callers. Kafka: the rate the pipe achieves
            // under the open-loop --rate (set it above what the pipe can do).
            let callers = match kafka {
                None => Some(args.workers.unwrap_or(64)),
                Some(_) => None,
            };
            let (max, _) = anchor(&plan, args, kafka.as_ref(), callers).await?;
            let rate = max[0].achieved() * fraction;
            println!(
                "anchor maximum ({}): {:.0}/s; open loop at {fraction} of it: {rate:.0}/s",
                callers.map_or("open loop".to_owned(), |c| format!("{c} callers")),
                max[0].achieved()
            );
            plan = plan_from_flags(args, Rate::Constant { per_sec: rate })?;
            workers = None;
        }
        Some(anchor(&plan, args, kafka.as_ref(), workers).await?)
    } else {
        None
    };
    let child = match &args.target {
        Some(_) => None,
        None => Some(
            Child::start(
                Kind::Switchboard,
                server_config.as_deref(),
                kafka.as_ref(),
                args.pin,
            )
            .await?,
        ),
    };
    let address = match (&args.target, &child) {
        (Some(t), _) => t.clone(),
        (None, Some(c)) => c.grpc.clone(),
        (None, None) => unreachable!("a child is started without a target"),
    };
    let pool = connect(&address, args.connections).await?;
    let channel = pool.first().clone();
    let via = match &kafka {
        None => Via::Grpc(pool.clone()),
        Some(k) => Via::Kafka(
            Arc::new(
                KafkaTarget::start(
                    &k.brokers,
                    &k.topic("inbound"),
                    &[
                        (k.topic("routed"), Output::Decisions),
                        (k.topic("dlq"), Output::DeadLetters),
                        (k.topic("status"), Output::Statuses),
                    ],
                    &k.topic("reader"),
                )?
                .with_sends(&k.topic("sends")),
            ),
            Some(channel.clone()),
        ),
    };
    for tenant in tenants(args, &plan).all() {
        drive::wait_until_served(&channel, tenant, Duration::from_secs(120))
            .await
            .with_context(|| format!("tenant {tenant} is not served by {address}"))?;
    }
    let outcomes = Shared::default();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut observers = tokio::task::JoinSet::new();
    observers.spawn(drive::sample_quota(
        channel.clone(),
        plan.tenant.clone(),
        start,
        Duration::from_millis(250),
        samples.clone(),
    ));
    // A scenario's sends are followed on the status stream (the limit check); a flags run
    // measures the call alone, like its anchor.
    if !plan.outbound.is_empty() && args.scenario.is_some() {
        observers.spawn(drive::follow_statuses(
            channel.clone(),
            plan.tenant.clone(),
            outcomes.clone(),
        ));
    }
    if let Some(agents) = &plan.agents {
        let registered = drive::register_agents(&channel, &plan.tenant, agents).await?;
        observers.spawn(drive::agents(
            channel.clone(),
            plan.tenant.clone(),
            agents.clone(),
            registered,
            outcomes.clone(),
        ));
    }
    let server_pid = child.as_ref().map(|c| c.pid);
    let (client_before, server_before) =
        (usage::of(None), server_pid.and_then(|p| usage::of(Some(p))));
    let offered_from = Instant::now();
    let streams = offer(&plan, &via, &outcomes, args, workers, "switchboard").await?;
    let wall_s = offered_from.elapsed().as_secs_f64();
    let n = answered(&streams);
    let (client_after, server_after) =
        (usage::of(None), server_pid.and_then(|p| usage::of(Some(p))));
    // Late status events and the last quota samples, then the server's queue figures.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queues = drive::queue_stats(channel.clone(), &plan.tenant).await;
    observers.abort_all();
    let samples = samples.lock().expect("not poisoned").clone();
    let o = std::mem::take(&mut *outcomes.lock().expect("not poisoned"));
    let cost = Cost {
        client_cpu_s_per_msg: per_msg(client_before, client_after, n),
        server_cpu_s_per_msg: per_msg(server_before, server_after, n),
        server_peak_rss_mb: server_after.map(|u| u.peak_rss_bytes as f64 / 1_048_576.0),
        anchor_server_cpu_s_per_msg: anchor_run.as_ref().and_then(|(_, cpu)| *cpu),
        client: client_before.zip(client_after).map(|(b, a)| ClientLoad {
            cpu_s: a.cpu_s - b.cpu_s,
            wall_s,
            threads: client_threads(args),
            connections: pool.len(),
        }),
    };
    // The server's cut pauses (Kafka mode; the histogram is empty otherwise).
    let (mut cut_pause, mut cuts_written) = (None, None);
    if let Some(metrics) = child.as_ref().and_then(|c| c.addresses.get(1)) {
        match usage::scrape(metrics).await {
            Ok(text) => {
                cut_pause = usage::Buckets::parse(&text, "switchboard_kafka_cut_pause_seconds");
                cuts_written = usage::Buckets::parse(&text, "switchboard_kafka_snapshot_seconds");
            }
            Err(e) => eprintln!("could not read the server's metrics at {metrics}: {e:#}"),
        }
    }
    if let Some(c) = child {
        c.stop().await;
    }

    let mut targets = Vec::new();
    if let Some((anchor_streams, _)) = &anchor_run {
        targets.push(measured(&plan, &anchor_streams[0], "anchor"));
    }
    for s in &streams {
        targets.push(measured(&plan, s, &s.name));
    }
    let mut report =
        Report::new(&plan.name, plan.duration, plan.warmup, targets).with_routing(o.routing);
    let server = match &args.target {
        Some(t) => format!("a running switchboard at {t}"),
        None => format!(
            "the embedded server started by the harness ({})",
            server_config
                .as_ref()
                .map_or("embedded demo config".to_owned(), |p| p
                    .display()
                    .to_string())
        ),
    };
    report.target = match &kafka {
        None => format!("gRPC, {server}"),
        Some(k) => format!(
            "Kafka {} (inbound and bad records produced to {} and send requests to {}, answered \
             from {}, {} and {}), {server}",
            k.brokers,
            k.topic("inbound"),
            k.topic("sends"),
            k.topic("routed"),
            k.topic("dlq"),
            k.topic("status")
        ),
    };
    report.cost = cost;
    report.queues = queues
        .iter()
        .map(|q| QueueLine {
            queue: q.queue.clone(),
            assignments: q.assignments_total,
            sla_attainment: q.sla_attainment,
            sla_breaches: q.sla_breaches_total,
            depth_at_end: q.depth,
            oldest_wait_s: q.oldest_wait_ms as f64 / 1_000.0,
        })
        .collect();
    report.agents = plan.agents.as_ref().map(|a| AgentsLine {
        agents: a.count,
        assignments: o.assignments,
        completed: o.completed,
    });
    report.sends = o.sends;
    report.statuses = o.statuses;
    report.limit = LimitLine::from_samples(&samples, o.dispatched_customers.len() as u64)
        .filter(|_| !plan.outbound.is_empty());
    report.limit_samples = samples;
    if let Some(dirty) = streams.iter().find(|s| s.name == "dirty") {
        report.dirty = Some(DirtyLine::new(dirty.offered, o.dirty));
    }
    if let Some((anchor_streams, _)) = &anchor_run {
        report.add_timeline("anchor", anchor_streams[0].latencies.timeline());
    }
    for s in &streams {
        report.add_timeline(&s.name, s.latencies.timeline());
    }
    report.cut_pause = cut_pause;
    report.cuts_written = cuts_written;
    report.finish(report_dir)?;
    drop(via);
    drop(tansu);
    Ok(report)
}
