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
}

impl Parts {
    /// The default parts, with the sender the config asks for (`[cloud_api]`).
    pub fn for_config(config: &Config) -> Result<Self, ServeError> {
        let mut parts = Self::default();
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
        }
    }
}

pub async fn run_with(
    config: Config,
    grpc: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()>,
    Parts {
        clock,
        sender,
        config_path,
        reloads,
    }: Parts,
) -> Result<(), ServeError> {
    let prometheus = telemetry::install();
    // Kafka mode: one outbox for every record produced; sends leave through the dispatch
    // topic, and statuses through the status topic.
    let stop_outbox = CancellationToken::new();
    let (sender, outbox) = if config.kafka.brokers.is_empty() {
        (sender, None)
    } else {
        let k = &config.kafka;
        if k.create_topics {
            crate::kafka::create_topics(k).await?;
        }
        crate::kafka::check_record_limits(k).await?;
        let outbox = crate::kafka::outbox::Outbox::start(
            &crate::kafka::client_config(k),
            crate::kafka::outbox::Settings::for_config(k),
            stop_outbox.clone(),
        )?;
        let sink: Arc<dyn Sender> = Arc::new(crate::kafka::sink::KafkaSink {
            outbox: outbox.clone(),
            dispatch_topic: k.dispatch_topic.clone(),
            status_topic: k.status_topic.clone(),
        });
        (sink, Some(outbox))
    };
    let close_streams = CancellationToken::new();
    let stop_shards = CancellationToken::new();
    let (runtime, shard_tasks) = Runtime::start(
        &config,
        clock,
        sender,
        close_streams.clone(),
        stop_shards.clone(),
    );
    let reloader = Arc::new(Reloader::new(runtime.clone(), config_path));
    // Stopped at shutdown: it holds a runtime handle, and shards stop only when none is left.
    let stop_reloads = CancellationToken::new();
    if let Some(mut requests) = reloads {
        let reloader = reloader.clone();
        let stop = stop_reloads.clone();
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
    // Kafka input, when brokers are configured (else the gRPC API is the only intake).
    let stop_kafka = CancellationToken::new();
    let stop_owners = CancellationToken::new();
    // Readiness: None while serving, else why not (the Kafka watchdog, then shutdown, set
    // it); gRPC health and /ready report it.
    let (ready, readiness) = tokio::sync::watch::channel::<Option<String>>(None);
    let (kafka_task, api) = if let Some(outbox) = &outbox {
        let partitions = crate::kafka::partition_count(&config.kafka).await?;
        let advertise = advertise_addr(&config, grpc.local_addr()?);
        let ownership = crate::kafka::ownership::Ownership::new(partitions, advertise.clone());
        crate::kafka::owners::follow(&config.kafka, ownership.clone(), stop_owners.clone())?;
        let k = &config.kafka;
        let watchdog = Arc::new(crate::kafka::health::Watchdog::new(
            Duration::from_millis(k.stall_timeout_ms),
            Duration::from_millis(k.snapshot_failure_timeout_ms),
        ));
        tokio::spawn(watchdog.clone().run(
            outbox.acks().clone(),
            ready.clone(),
            Duration::from_secs(1),
            stop_owners.clone(),
        ));
        let input = crate::kafka::KafkaInput::new(
            &config,
            runtime.clone(),
            outbox.clone(),
            ownership.clone(),
            watchdog,
        )?;
        tracing::info!(brokers = %config.kafka.brokers, partitions, advertise, "kafka input on");
        let task = tokio::spawn(input.run(stop_kafka.clone()));
        // gRPC serves the tenants of the partitions this replica owns, forwards the rest, and
        // writes admitted sends to the sends topic.
        let forwarder = crate::grpc::forward::Forwarder::new(
            ownership.clone(),
            config.tenants.iter().map(|t| t.id.clone()),
            config.kafka.unavailable_retry_ms,
        );
        let journal = crate::kafka::sink::SendsJournal {
            outbox: outbox.clone(),
            topic: config.kafka.sends_topic.clone(),
            timeout: Duration::from_millis(config.kafka.produce_timeout_ms),
        };
        let api = Api::new(runtime.gated(ownership), reloader)
            .forwarding(Arc::new(forwarder))
            .journaling(Arc::new(journal));
        (Some(task), api)
    } else {
        (None, Api::new(runtime, reloader))
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    telemetry::ready(true);
    // gRPC health follows readiness: every service and the server as a whole.
    let follow_readiness = {
        let (health, mut readiness) = (health.clone(), readiness.clone());
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
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let tls = config.tls.read()?;
    let stop_metrics = CancellationToken::new();
    let metrics_task = match &tls {
        None => tokio::spawn(telemetry::serve(
            metrics,
            prometheus,
            readiness.clone(),
            stop_metrics.clone().cancelled_owned(),
        )),
        Some((cert, key)) => {
            let listener = crate::tls::TlsListener::new(metrics, config.tls.acceptor(cert, key)?)?;
            tokio::spawn(telemetry::serve(
                listener,
                prometheus,
                readiness.clone(),
                stop_metrics.clone().cancelled_owned(),
            ))
        }
    };

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
    let stop_grpc = CancellationToken::new();
    // Outermost: a call past the in-flight limit is refused before anything else is done.
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &tls {
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )?;
        tracing::info!("TLS on for gRPC and /metrics");
    }
    let server = builder
        .layer(crate::gate::GateLayer(crate::overload::InFlightLimit::new(
            config.runtime.max_in_flight_calls,
            config.runtime.overload_retry_ms,
        )))
        .layer(crate::gate::GateLayer(keys))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(proto::inbound_server::InboundServer::new(api.clone()))
        .add_service(proto::agents_server::AgentsServer::new(api.clone()))
        .add_service(proto::bots_server::BotsServer::new(api.clone()))
        .add_service(proto::conversations_server::ConversationsServer::new(
            api.clone(),
        ))
        .add_service(proto::queues_server::QueuesServer::new(api.clone()))
        .add_service(proto::outbound_server::OutboundServer::new(api.clone()))
        .add_service(proto::quotas_server::QuotasServer::new(api))
        // TCP_NODELAY: without it an answer written in two segments waits for the client's
        // delayed ACK (40 ms on Linux); the load-test harness found it at p90 under light load.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
            stop_grpc.clone().cancelled_owned(),
        );
    let mut server = tokio::spawn(server);

    tokio::select! {
        result = &mut server => {
            // The server ended on its own: an error, reported below.
            stop_kafka.cancel();
            stop_outbox.cancel();
            close_streams.cancel();
            stop_metrics.cancel();
            result.expect("the gRPC server task does not panic")?;
            return Ok(());
        }
        () = shutdown => {}
    }

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
    stop_kafka.cancel();
    close_streams.cancel();
    stop_reloads.cancel();
    stop_grpc.cancel();
    let grace = Duration::from_millis(config.runtime.shutdown_grace_ms);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.expect("the gRPC server task does not panic")?,
        Err(_) => {
            tracing::warn!(
                grace_ms = config.runtime.shutdown_grace_ms,
                "grace period ran out with calls in flight; exiting anyway"
            );
            server.abort();
        }
    }
    // No call is served any more: the shards stop. (Waiting for the last handle to drop is
    // not enough: connection tasks of an aborted server may still hold one.) One still running
    // after the grace period is a bug: say so, and fail.
    if let Some(task) = kafka_task
        && tokio::time::timeout(grace, task).await.is_err()
    {
        tracing::warn!("kafka input did not stop within the grace period");
    }
    stop_shards.cancel();
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
    stop_outbox.cancel();
    stop_owners.cancel();
    stop_metrics.cancel();
    let _ = metrics_task.await;
    if stuck > 0 {
        tracing::error!(stuck, "shards did not stop within the grace period");
        return Err(ServeError::ShardsDidNotStop(stuck));
    }
    tracing::info!("stopped");
    Ok(())
}
