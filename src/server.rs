//! Wiring: the only module that knows every stage. It starts the shards, the gRPC services
//! (with standard health and reflection) and the metrics endpoint on listeners it is given, and
//! stops them in order when `shutdown` resolves:
//!
//! 1. health reports NOT_SERVING, so load balancers stop sending new calls;
//! 2. live agent and bot streams end (they would otherwise hold the server open forever);
//! 3. the gRPC server stops accepting and finishes in-flight calls, within the grace period;
//! 4. the Kafka input drains what is in flight and commits;
//! 5. the shards stop; the Kafka producer flushes what they produced last.
//!
//! Three named phases: [`start`] sets every stage going, [`Running::serve`] waits for the
//! shutdown, [`Running::stop`] stops them in the order above, one token a stage ([`Stops`]).
//!
//! Taking listeners (not addresses) lets tests bind `127.0.0.1:0` and read the port.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::grpc::Api;
use crate::proto;
use std::path::PathBuf;

use crate::runtime::{Reloader, Runtime};
use crate::sender::{LogSender, Sender};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("metrics server: {0}")]
    Metrics(#[from] std::io::Error),
    #[error("kafka: {0}; check kafka.brokers and kafka.options")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka topics: {0}")]
    Topics(#[from] crate::kafka::TopicError),
    #[error("{0} shard(s) did not stop within runtime.shutdown_grace_ms")]
    ShardsDidNotStop(usize),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the Cloud API sender: {0}")]
    CloudApi(#[from] reqwest::Error),
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
    #[error("switchboard webhook: {0}")]
    WebhookAlone(&'static str),
}

/// The fully qualified names of switchboard's own services (health reports each of them).
pub const SERVICES: &[&str] = &[
    "switchboard.v1.Inbound",
    "switchboard.v1.Agents",
    "switchboard.v1.Bots",
    "switchboard.v1.Conversations",
    "switchboard.v1.Queues",
    "switchboard.v1.Outbound",
    "switchboard.v1.Quotas",
];

/// Binds the configured addresses. Separate from [`run`] so `main` can print the real ports.
/// The gRPC address other replicas forward calls to: `kafka.advertise_addr`, else the address
/// the gRPC server is bound to unless that is a wildcard (then none: a warning says so).
fn advertise_addr(config: &Config, bound: SocketAddr) -> String {
    if !config.kafka.advertise_addr.is_empty() {
        return config.kafka.advertise_addr.clone();
    }
    if bound.ip().is_unspecified() {
        tracing::warn!(
            %bound,
            "gRPC listens on a wildcard address: set kafka.advertise_addr so other replicas can \
             forward calls for this replica's tenants"
        );
        return String::new();
    }
    bound.to_string()
}

pub async fn bind(config: &Config) -> std::io::Result<(TcpListener, TcpListener)> {
    let grpc = bind_one(config.grpc_addr, "gRPC", "SWITCHBOARD_GRPC_ADDR").await?;
    let metrics = bind_one(config.metrics_addr, "metrics", "SWITCHBOARD_METRICS_ADDR").await?;
    Ok((grpc, metrics))
}

/// The metrics listener alone (the egress serves no gRPC).
pub async fn bind_metrics(config: &Config) -> std::io::Result<TcpListener> {
    bind_one(config.metrics_addr, "metrics", "SWITCHBOARD_METRICS_ADDR").await
}

/// The webhook endpoint's listener, on `webhook_addr`.
pub async fn bind_webhook(config: &Config) -> std::io::Result<TcpListener> {
    bind_one(config.webhook_addr, "webhooks", "SWITCHBOARD_WEBHOOK_ADDR").await
}

async fn bind_one(addr: SocketAddr, what: &str, env: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for {what} on {addr} ({e}); set {env} to a free host:port"),
        )
    })
}

/// Serves until `shutdown` resolves, then stops in order (module docs).
pub async fn run(
    config: Config,
    grpc: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let parts = Parts::for_config(&config)?;
    run_with(config, grpc, metrics, shutdown, parts).await
}

/// The replaceable parts of a server: where time and sends come from (tests script them),
/// the config file to reload, and the reload requests (SIGHUP, from `main`). In Kafka mode
/// sends go to the dispatch topic and `sender` is not used.
pub struct Parts {
    pub clock: Arc<dyn Clock>,
    pub sender: Arc<dyn Sender>,
    /// The file the config came from; None: the embedded demo (nothing to reload).
    pub config_path: Option<PathBuf>,
    pub reloads: Option<tokio::sync::mpsc::Receiver<()>>,
    /// The webhook endpoint's listener (None: bound on `webhook_addr` when the endpoint is on).
    pub webhook: Option<TcpListener>,
}

impl Parts {
    /// The default parts, with the sender the config asks for (`[cloud_api]`).
    pub fn for_config(config: &Config) -> Result<Self, ServeError> {
        let mut parts = Self::default();
        // In Kafka mode sends go to the dispatch topic; `switchboard egress` sends them.
        if !config.kafka.brokers.is_empty() {
            return Ok(parts);
        }
        if let Some(sender) = crate::cloud_api::CloudApiSender::from_config(config)? {
            tracing::info!(
                base_url = %config.cloud_api.base_url,
                backup_url = config.cloud_api.backup_url.as_deref().unwrap_or("(none)"),
                "sends go to the WhatsApp Cloud API"
            );
            parts.sender = Arc::new(Arc::new(sender));
        }
        Ok(parts)
    }
}

impl Default for Parts {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            sender: Arc::new(LogSender),
            config_path: None,
            reloads: None,
            webhook: None,
        }
    }
}

pub async fn run_with(
    config: Config,
    grpc: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()>,
    parts: Parts,
) -> Result<(), ServeError> {
    start(config, grpc, metrics, parts)
        .await?
        .serve(shutdown)
        .await
}

/// One token a stage, cancelled in the order of [`Running::stop`] (module docs).
#[derive(Default)]
struct Stops {
    /// The Kafka input: finishes its record, writes its final cut, leaves the group.
    kafka: CancellationToken,
    /// Live agent, bot and status streams end (they would hold the server open for ever).
    streams: CancellationToken,
    /// SIGHUP reloads: they hold a runtime handle.
    reloads: CancellationToken,
    /// The gRPC server stops accepting and drains its calls.
    grpc: CancellationToken,
    /// The shard tasks.
    shards: CancellationToken,
    /// The producer's retry task.
    outbox: CancellationToken,
    /// The owners follower and the readiness watchdog.
    owners: CancellationToken,
    /// `/metrics` and `/ready`.
    metrics: CancellationToken,
    /// The webhook endpoint stops accepting and answers the posts in flight.
    webhook: CancellationToken,
}

/// Everything [`start`] set going, for [`Running::serve`] and [`Running::stop`].
struct Running {
    stops: Stops,
    grace: Duration,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    kafka_task: Option<tokio::task::JoinHandle<()>>,
    shard_tasks: Vec<tokio::task::JoinHandle<()>>,
    outbox: Option<Arc<crate::kafka::outbox::Outbox>>,
    metrics_task: tokio::task::JoinHandle<std::io::Result<()>>,
    webhook_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    health: tonic_health::server::HealthReporter,
    ready: tokio::sync::watch::Sender<Option<String>>,
    follow_readiness: tokio::task::JoinHandle<()>,
}

/// Phase 1: the shards, the Kafka outputs and input (in Kafka mode), health, `/metrics`
/// and the gRPC server, all started.
async fn start(
    config: Config,
    grpc: TcpListener,
    metrics: TcpListener,
    Parts {
        clock,
        sender,
        config_path,
        reloads,
        webhook,
    }: Parts,
) -> Result<Running, ServeError> {
    let prometheus = telemetry::install();
    let stops = Stops::default();
    // Kafka mode: one outbox for every record produced; sends leave through the dispatch
    // topic, and statuses through the status topic.
    let (sender, outbox) = match kafka_outputs(&config, &stops).await? {
        None => (sender, None),
        Some((sink, outbox)) => (sink, Some(outbox)),
    };
    let (runtime, shard_tasks) = Runtime::start(
        &config,
        clock,
        sender,
        stops.streams.clone(),
        stops.shards.clone(),
    );
    let reloader = Arc::new(Reloader::new(runtime.clone(), config_path));
    if let Some(requests) = reloads {
        follow_reloads(reloader.clone(), requests, stops.reloads.clone());
    }
    // The webhook endpoint writes to the webhooks topic in Kafka mode, else to the shards.
    let intake = match &outbox {
        Some(outbox) => crate::webhook::Intake::Kafka {
            outbox: outbox.clone(),
            topic: config.kafka.webhooks_topic.clone(),
            ack_timeout: Duration::from_millis(config.webhook.ack_timeout_ms),
        },
        None => crate::webhook::Intake::Shards(runtime.clone()),
    };
    let endpoint = crate::webhook::Endpoint::new(&config, intake);
    // Readiness: None while serving, else why not (the Kafka watchdog, then shutdown, set
    // it); gRPC health and /ready report it.
    let (ready, readiness) = tokio::sync::watch::channel::<Option<String>>(None);
    // Kafka input, when brokers are configured (else the gRPC API is the only intake).
    let (kafka_task, api) = match &outbox {
        Some(outbox) => {
            let (task, api) =
                kafka_intake(&config, &grpc, runtime, reloader, outbox, &ready, &stops).await?;
            (Some(task), api)
        }
        None => (None, Api::new(runtime, reloader)),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    telemetry::ready(true);
    let follow_readiness = follow_readiness(health.clone(), readiness.clone());
    let tls = config.tls.read()?;
    let metrics_task = spawn_metrics(
        &config,
        tls.as_ref(),
        metrics,
        prometheus,
        readiness.clone(),
        &stops,
    )?;
    let webhook_task = match endpoint {
        None => {
            tracing::info!(
                "webhook endpoint off: no app secret configured (set \
                 SWITCHBOARD_WEBHOOK__APP_SECRET and SWITCHBOARD_WEBHOOK__VERIFY_TOKEN, or \
                 [[webhook.apps]])"
            );
            None
        }
        Some(endpoint) => {
            let listener = match webhook {
                Some(listener) => listener,
                None => bind_webhook(&config).await?,
            };
            Some(spawn_webhook(
                &config,
                tls.as_ref(),
                listener,
                endpoint,
                &stops,
            )?)
        }
    };
    let server = grpc_server(&config, tls.as_ref(), api, health_service, grpc, &stops)?;
    Ok(Running {
        grace: Duration::from_millis(config.runtime.shutdown_grace_ms),
        stops,
        server: tokio::spawn(server),
        kafka_task,
        shard_tasks,
        outbox,
        metrics_task,
        webhook_task,
        health,
        ready,
        follow_readiness,
    })
}

/// Kafka mode's outputs: the topics (created when missing, their size limits checked), the
/// outbox and the sink the shards send through. None without brokers.
async fn kafka_outputs(
    config: &Config,
    stops: &Stops,
) -> Result<Option<(Arc<dyn Sender>, Arc<crate::kafka::outbox::Outbox>)>, ServeError> {
    let k = &config.kafka;
    if k.brokers.is_empty() {
        return Ok(None);
    }
    if k.create_topics {
        crate::kafka::create_topics(k).await?;
    }
    crate::kafka::check_record_limits(k).await?;
    let outbox = crate::kafka::outbox::Outbox::start(
        &crate::kafka::producer_config(k),
        crate::kafka::outbox::Settings::for_config(k),
        stops.outbox.clone(),
    )?;
    let sink: Arc<dyn Sender> = Arc::new(crate::kafka::sink::KafkaSink {
        outbox: outbox.clone(),
        dispatch_topic: k.dispatch_topic.clone(),
        status_topic: k.status_topic.clone(),
    });
    Ok(Some((sink, outbox)))
}

/// `/metrics` and `/ready` on `listener`, under TLS when `[tls]` is on.
fn spawn_metrics(
    config: &Config,
    tls: Option<&crate::tls::Pem>,
    listener: TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    readiness: tokio::sync::watch::Receiver<Option<String>>,
    stops: &Stops,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServeError> {
    let stop = stops.metrics.clone().cancelled_owned();
    Ok(match tls {
        None => tokio::spawn(telemetry::serve(listener, prometheus, readiness, stop)),
        Some((cert, key)) => {
            let listener = crate::tls::TlsListener::new(listener, config.tls.acceptor(cert, key)?)?;
            tokio::spawn(telemetry::serve(listener, prometheus, readiness, stop))
        }
    })
}

/// The webhook endpoint on `listener`, under TLS when `[tls]` is on.
fn spawn_webhook(
    config: &Config,
    tls: Option<&crate::tls::Pem>,
    listener: TcpListener,
    endpoint: crate::webhook::Endpoint,
    stops: &Stops,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServeError> {
    tracing::info!(
        addr = %listener.local_addr()?,
        path = crate::webhook::PATH,
        apps = config.webhook.resolved.len(),
        "webhook endpoint on"
    );
    let (endpoint, stop) = (Arc::new(endpoint), stops.webhook.clone().cancelled_owned());
    Ok(match tls {
        None => tokio::spawn(crate::webhook::serve(listener, endpoint, stop)),
        Some((cert, key)) => {
            let listener = crate::tls::TlsListener::new(listener, config.tls.acceptor(cert, key)?)?;
            tokio::spawn(crate::webhook::serve(listener, endpoint, stop))
        }
    })
}

/// Kafka mode's intake: ownership (and the owners' announcements), the readiness watchdog,
/// the input task, and the API that serves owned tenants, forwards the others and journals
/// admitted sends.
async fn kafka_intake(
    config: &Config,
    grpc: &TcpListener,
    runtime: Runtime,
    reloader: Arc<Reloader>,
    outbox: &Arc<crate::kafka::outbox::Outbox>,
    ready: &tokio::sync::watch::Sender<Option<String>>,
    stops: &Stops,
) -> Result<(tokio::task::JoinHandle<()>, Api), ServeError> {
    let k = &config.kafka;
    let partitions = crate::kafka::partition_count(k).await?;
    let advertise = advertise_addr(config, grpc.local_addr()?);
    let ownership = crate::kafka::ownership::Ownership::new(partitions, advertise.clone());
    crate::kafka::owners::follow(k, ownership.clone(), stops.owners.clone())?;
    let watchdog = Arc::new(crate::kafka::health::Watchdog::new(
        Duration::from_millis(k.stall_timeout_ms),
        Duration::from_millis(k.snapshot_failure_timeout_ms),
    ));
    tokio::spawn(watchdog.clone().run(
        outbox.acks().clone(),
        ready.clone(),
        Duration::from_secs(1),
        stops.owners.clone(),
    ));
    let input = crate::kafka::KafkaInput::new(
        config,
        runtime.clone(),
        outbox.clone(),
        ownership.clone(),
        watchdog,
    )?;
    tracing::info!(brokers = %k.brokers, partitions, advertise, "kafka input on");
    let task = tokio::spawn(input.run(stops.kafka.clone()));
    // gRPC serves the tenants of the partitions this replica owns, forwards the rest, and
    // writes admitted sends to the sends topic.
    let mut forwarder = crate::grpc::forward::Forwarder::new(
        ownership.clone(),
        config.tenants.iter().map(|t| t.id.clone()),
        k.unavailable_retry_ms,
    );
    if let Some(tls) = config.tls.client()? {
        forwarder = forwarder.with_tls(tls);
    }
    let journal = crate::kafka::sink::SendsJournal {
        outbox: outbox.clone(),
        topic: k.sends_topic.clone(),
        timeout: Duration::from_millis(k.produce_timeout_ms),
    };
    let api = Api::new(runtime.gated(ownership), reloader)
        .forwarding(Arc::new(forwarder))
        .journaling(Arc::new(journal));
    Ok((task, api))
}

/// Reloads the config on each request (SIGHUP, from `main`) until `stop`.
fn follow_reloads(
    reloader: Arc<Reloader>,
    mut requests: tokio::sync::mpsc::Receiver<()>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                request = requests.recv() => {
                    if request.is_none() {
                        break;
                    }
                    if let Err(e) = reloader.reload("SIGHUP").await {
                        tracing::error!(error = %e, "reload refused");
                    }
                }
                () = stop.cancelled() => break,
            }
        }
    });
}

/// gRPC health follows readiness: every service and the server as a whole.
fn follow_readiness(
    health: tonic_health::server::HealthReporter,
    mut readiness: tokio::sync::watch::Receiver<Option<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while readiness.changed().await.is_ok() {
            let serving = readiness.borrow_and_update().is_none();
            telemetry::ready(serving);
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            for name in SERVICES {
                health.set_service_status(*name, status).await;
            }
        }
    })
}

/// The gRPC server: the call gates, health, reflection and the seven services.
fn grpc_server<H: tonic_health::pb::health_server::Health>(
    config: &Config,
    tls: Option<&crate::tls::Pem>,
    api: Api,
    health_service: tonic_health::pb::health_server::HealthServer<H>,
    grpc: TcpListener,
    stops: &Stops,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + use<H>, ServeError> {
    // Reflection in both versions: grpcurl speaks v1, Python's grpcio-reflection (and other
    // older clients) only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection, reflection_alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
    let keys = Arc::new(crate::auth::Keys::new(&config.auth));
    if keys.enabled() {
        tracing::info!(
            tokens = config.auth.tokens.len(),
            "auth on: overrides, reload, conversation overrides and agent administration need a bearer token"
        );
    } else {
        tracing::warn!(
            "auth off: no [[auth.tokens]] configured, so overrides, reload, conversation overrides and agent administration are open to any caller"
        );
    }
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )?;
        tracing::info!("TLS on for gRPC and /metrics");
    }
    Ok(builder
        // Outermost: a call past the in-flight limit is refused before anything else is done.
        .layer(crate::gate::GateLayer(crate::overload::InFlightLimit::new(
            config.runtime.max_in_flight_calls,
            config.runtime.overload_retry_ms,
        )))
        .layer(crate::gate::GateLayer(keys))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(proto::inbound_server::InboundServer::new(api.clone()))
        .add_service(proto::agents_server::AgentsServer::new(api.clone()))
        .add_service(proto::bots_server::BotsServer::new(api.clone()))
        .add_service(proto::conversations_server::ConversationsServer::new(
            api.clone(),
        ))
        .add_service(proto::queues_server::QueuesServer::new(api.clone()))
        .add_service(proto::outbound_server::OutboundServer::new(api.clone()))
        .add_service(proto::customers_server::CustomersServer::new(api.clone()))
        .add_service(proto::quotas_server::QuotasServer::new(api))
        // TCP_NODELAY: without it an answer written in two segments waits for the client's
        // delayed ACK (40 ms on Linux); the load-test harness found it at p90 under light load.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
            stops.grpc.clone().cancelled_owned(),
        ))
}

impl Running {
    /// Phase 2: serves until `shutdown` resolves (then phase 3), or until the gRPC server
    /// ends on its own (an error, returned after the other stages are told to stop).
    async fn serve(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        tokio::select! {
            result = &mut self.server => {
                let s = &self.stops;
                for stop in [&s.kafka, &s.webhook, &s.outbox, &s.streams, &s.metrics] {
                    stop.cancel();
                }
                result.expect("the gRPC server task does not panic")?;
                Ok(())
            }
            () = shutdown => self.stop().await,
        }
    }

    /// Phase 3: the ordered stop (module docs), each wait bounded by the grace period.
    async fn stop(self) -> Result<(), ServeError> {
        let Running {
            stops,
            grace,
            mut server,
            kafka_task,
            shard_tasks,
            outbox,
            metrics_task,
            webhook_task,
            health,
            ready,
            follow_readiness,
        } = self;
        tracing::info!("shutting down: reporting NOT_SERVING, closing streams, draining calls");
        // Readiness no longer follows the watchdog: the replica is going away.
        follow_readiness.abort();
        ready.send_replace(Some("shutting down".into()));
        telemetry::ready(false);
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in SERVICES {
            health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        // Stop intake: the Kafka input finishes its record and commits.
        for stop in [
            &stops.kafka,
            &stops.webhook,
            &stops.streams,
            &stops.reloads,
            &stops.grpc,
        ] {
            stop.cancel();
        }
        match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result.expect("the gRPC server task does not panic")?,
            Err(_) => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "grace period ran out with calls in flight; exiting anyway"
                );
                server.abort();
            }
        }
        // Posts in flight are answered (in Kafka mode after their acknowledgement).
        if let Some(task) = webhook_task
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!("webhook endpoint did not stop within the grace period");
        }
        // No call is served any more: the shards stop. (Waiting for the last handle to drop is
        // not enough: connection tasks of an aborted server may still hold one.) One still
        // running after the grace period is a bug: say so, and fail.
        if let Some(task) = kafka_task
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!("kafka input did not stop within the grace period");
        }
        stops.shards.cancel();
        let mut stuck = 0;
        for task in shard_tasks {
            if tokio::time::timeout(grace, task).await.is_err() {
                stuck += 1;
            }
        }
        // What the shards dispatched last is handed to the broker before the process ends.
        if let Some(outbox) = outbox {
            outbox.flush(grace);
        }
        for stop in [&stops.outbox, &stops.owners, &stops.metrics] {
            stop.cancel();
        }
        let _ = metrics_task.await;
        if stuck > 0 {
            tracing::error!(stuck, "shards did not stop within the grace period");
            return Err(ServeError::ShardsDidNotStop(stuck));
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `switchboard egress`: the dispatch topic to the Cloud API (see `egress`), with `/metrics`,
/// `/ready` and `/live` on `metrics`, until `shutdown`; then it drains and commits.
pub async fn run_egress(
    config: Config,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let prometheus = telemetry::install();
    let (outbox_stop, stop) = (CancellationToken::new(), CancellationToken::new());
    let egress = Arc::new(crate::egress::Egress::new(&config, outbox_stop.clone())?);
    let (_ready, readiness) = tokio::sync::watch::channel::<Option<String>>(None);
    let metrics_stop = CancellationToken::new();
    let metrics_task = tokio::spawn(telemetry::serve(
        metrics,
        prometheus,
        readiness,
        metrics_stop.clone().cancelled_owned(),
    ));
    let task = tokio::spawn(egress.run(stop.clone()));
    shutdown.await;
    tracing::info!("egress shutting down: draining the sends in flight");
    stop.cancel();
    let _ = task.await;
    outbox_stop.cancel();
    metrics_stop.cancel();
    let _ = metrics_task.await;
    Ok(())
}

/// `switchboard webhook`: the webhook endpoint alone (Kafka mode). It stores Meta's signed
/// posts on the webhooks topic and answers once the broker acknowledged them, exactly as the
/// endpoint inside `serve` does; the replicas' Kafka inputs route them. No shards and no gRPC:
/// a stateless edge that can be exposed and scaled apart from the replicas.
pub async fn run_webhook(
    config: Config,
    webhook: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if config.kafka.brokers.is_empty() {
        return Err(ServeError::WebhookAlone(
            "kafka.brokers is empty: without Kafka the endpoint applies webhooks to the shards, \
             so it runs inside `switchboard serve`",
        ));
    }
    let prometheus = telemetry::install();
    let stops = Stops::default();
    let Some((_, outbox)) = kafka_outputs(&config, &stops).await? else {
        unreachable!("brokers are configured");
    };
    let intake = crate::webhook::Intake::Kafka {
        outbox: outbox.clone(),
        topic: config.kafka.webhooks_topic.clone(),
        ack_timeout: Duration::from_millis(config.webhook.ack_timeout_ms),
    };
    let Some(endpoint) = crate::webhook::Endpoint::new(&config, intake) else {
        return Err(ServeError::WebhookAlone(
            "no app secret configured: set SWITCHBOARD_WEBHOOK__APP_SECRET and \
             SWITCHBOARD_WEBHOOK__VERIFY_TOKEN, or [[webhook.apps]]",
        ));
    };
    let tls = config.tls.read()?;
    let (_ready, readiness) = tokio::sync::watch::channel::<Option<String>>(None);
    let metrics_task = spawn_metrics(
        &config,
        tls.as_ref(),
        metrics,
        prometheus,
        readiness,
        &stops,
    )?;
    let webhook_task = spawn_webhook(&config, tls.as_ref(), webhook, endpoint, &stops)?;
    shutdown.await;
    tracing::info!("webhook endpoint shutting down: answering the posts in flight");
    stops.webhook.cancel();
    let _ = webhook_task.await;
    outbox.flush(Duration::from_millis(config.runtime.shutdown_grace_ms));
    stops.outbox.cancel();
    stops.metrics.cancel();
    let _ = metrics_task.await;
    Ok(())
}
