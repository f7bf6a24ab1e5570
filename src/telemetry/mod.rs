//! Telemetry: every metric name is defined here once, listed with its kind and help in
//! [`METRICS`] (the describe call at start-up, the docs test and the dashboard test read
//! it), and emitted only through one function per event, grouped by area ([`routing`],
//! [`quota`], [`kafka`], [`edge`]), which also writes the event's log line, so the two cannot
//! drift.
//!
//! Names follow `switchboard_<name>_<unit>[_total]`. Labels are bounded: tenant and queue come
//! from the config, target and reason from fixed enums. A customer number or message id is
//! never a label (cardinality and privacy), and logs never print a full customer number.
pub mod edge;
pub mod kafka;
pub mod quota;
pub mod routing;

pub use edge::*;
pub use kafka::*;
pub use quota::*;
pub use routing::*;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::quota::{Admission, Quotas};
use crate::core::{CoreError, Decision, Effect, QueueStatsView, Reply};
use crate::model::Channel;

pub const INBOUND_MESSAGES: &str = "switchboard_inbound_messages_total";
pub const ROUTING_DECISIONS: &str = "switchboard_routing_decisions_total";
pub const BOT_CONVERSATIONS: &str = "switchboard_bot_conversations_total";
pub const DECISION_DURATION: &str = "switchboard_routing_decision_duration_seconds";
pub const QUEUE_DEPTH: &str = "switchboard_queue_depth";
pub const QUEUE_AVAILABLE_AGENTS: &str = "switchboard_queue_available_agents";
pub const QUEUE_ESTIMATED_WAIT: &str = "switchboard_queue_estimated_wait_seconds";
pub const QUEUE_SLA_ATTAINMENT: &str = "switchboard_queue_sla_attainment_ratio";
pub const SLA_BREACHES: &str = "switchboard_sla_breaches_total";
pub const ASSIGNMENTS: &str = "switchboard_assignments_total";
pub const ESCALATIONS: &str = "switchboard_escalations_total";
pub const STREAM_DISCONNECTS: &str = "switchboard_stream_disconnects_total";
pub const ADMISSIONS: &str = "switchboard_admissions_total";
pub const SEND_STATUSES: &str = "switchboard_send_status_total";
pub const PROVIDER_ERRORS: &str = "switchboard_provider_errors_total";
pub const SPAM_RATE_ALERTS: &str = "switchboard_spam_rate_alerts_total";
pub const CUSTOMER_HOLDS: &str = "switchboard_customer_marketing_holds_total";
pub const CONSENT_CHANGES: &str = "switchboard_consent_changes_total";
pub const SCHEDULED_SENDS: &str = "switchboard_scheduled_sends";
pub const BATCH_MODE: &str = "switchboard_batch_mode";
pub const SHADOW_REFUSALS: &str = "switchboard_shadow_refusals_total";
pub const NUMBER_TOKENS: &str = "switchboard_number_tokens";
pub const BATCH_QUEUE_DEPTH: &str = "switchboard_batch_queue_depth";
pub const LIMIT_USAGE_RATIO: &str = "switchboard_messaging_limit_usage_ratio";
pub const LIMIT_FORECAST: &str = "switchboard_messaging_limit_forecast_seconds";
pub const THRESHOLD_FORECAST: &str = "switchboard_batch_threshold_forecast_seconds";
pub const DRAIN_FORECAST: &str = "switchboard_batch_queue_drain_forecast_seconds";
pub const NEW_CUSTOMERS_PACE: &str = "switchboard_new_customers_per_hour";
pub const AUTH_FAILURES: &str = "switchboard_auth_failures_total";
pub const GRPC_SHED: &str = "switchboard_grpc_shed_total";
pub const PROVIDER_ATTEMPTS: &str = "switchboard_provider_attempts_total";
pub const PROVIDER_PROBE: &str = "switchboard_provider_probe_seconds";
pub const PROVIDER_ON_BACKUP: &str = "switchboard_provider_on_backup";
pub const EGRESS_DISPATCHES: &str = "switchboard_egress_dispatches_total";
pub const EGRESS_IN_FLIGHT: &str = "switchboard_egress_in_flight";
pub const WEBHOOK_REQUESTS: &str = "switchboard_webhook_requests_total";
pub const WEBHOOK_DURATION: &str = "switchboard_webhook_request_duration_seconds";

pub const KAFKA_RECORDS_IN: &str = "switchboard_kafka_records_in_total";
pub const KAFKA_RECORDS_OUT: &str = "switchboard_kafka_records_out_total";
pub const KAFKA_PRODUCE_RETRIES: &str = "switchboard_kafka_produce_retries_total";
pub const KAFKA_DEAD_LETTERS: &str = "switchboard_kafka_dead_letters_total";
pub const KAFKA_SNAPSHOT: &str = "switchboard_kafka_snapshot_seconds";
pub const KAFKA_SNAPSHOT_BYTES: &str = "switchboard_kafka_snapshot_bytes";
pub const KAFKA_SNAPSHOT_AGE: &str = "switchboard_kafka_snapshot_age_seconds";
pub const KAFKA_CUT_PAUSE: &str = "switchboard_kafka_cut_pause_seconds";
pub const KAFKA_RESTORE: &str = "switchboard_kafka_restore_seconds";
pub const KAFKA_RESTORE_BYTES: &str = "switchboard_kafka_restore_bytes";
pub const KAFKA_HANDOVERS: &str = "switchboard_kafka_handovers_total";
pub const KAFKA_REPLAYED: &str = "switchboard_kafka_replayed_dispatches_total";
pub const KAFKA_MOVED: &str = "switchboard_kafka_records_moved_total";
pub const KAFKA_COMMITS: &str = "switchboard_kafka_commits_total";
pub const KAFKA_REBALANCES: &str = "switchboard_kafka_rebalances_total";
pub const KAFKA_CONSUMER_LAG: &str = "switchboard_kafka_consumer_lag";
pub const KAFKA_STATUSES: &str = "switchboard_kafka_webhook_statuses_total";
pub const KAFKA_OUTCOMES: &str = "switchboard_kafka_outcomes_total";
pub const KAFKA_PARTITIONS_OWNED: &str = "switchboard_kafka_partitions_owned";
pub const KAFKA_TENANTS_OWNED: &str = "switchboard_kafka_tenants_owned";
pub const KAFKA_OUTPUTS_REFUSED: &str = "switchboard_kafka_outputs_refused_total";
pub const KAFKA_PRODUCERS_RENEWED: &str = "switchboard_kafka_producers_renewed_total";
pub const KAFKA_UNHEALTHY: &str = "switchboard_kafka_unhealthy";
pub const READY: &str = "switchboard_ready";

/// Decision latency buckets: a routing decision takes microseconds; the top buckets catch a
/// shard stalled behind a sweep.
const DECISION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 1e-1,
];

/// From a record's arrival to its offset being stored: the broker's acknowledgement of what
/// it caused dominates (milliseconds); the top buckets catch a broker in trouble.
/// Snapshots and restores: from a few milliseconds (small tenants) to a minute.
const SECONDS_BUCKETS: &[f64] = &[
    1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The input's pause for a cut: well under a millisecond to 10 ms (the target's p99) and
/// past it.
const PAUSE_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0,
];

/// Snapshot sizes: 1 KB to 1 GB.
const BYTES_BUCKETS: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for the process (once; later calls return the same
/// handle, so several servers in one test process share it) and describes every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DECISION_DURATION.into()), DECISION_BUCKETS)
                .expect("the bucket list is a non-empty constant")
                .set_buckets_for_metric(Matcher::Full(KAFKA_SNAPSHOT.into()), SECONDS_BUCKETS)
                .expect("the bucket list is a non-empty constant")
                .set_buckets_for_metric(Matcher::Full(KAFKA_RESTORE.into()), SECONDS_BUCKETS)
                .expect("the bucket list is a non-empty constant")
                .set_buckets_for_metric(Matcher::Full(KAFKA_CUT_PAUSE.into()), PAUSE_BUCKETS)
                .expect("the bucket list is a non-empty constant")
                .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS)
                .expect("the bucket list is a non-empty constant")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .expect("no other metrics recorder is installed in this process");
            describe();
            handle
        })
        .clone()
}

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name (once, above), kind, unit and help text. The describe call at
/// start-up, the metrics reference in `docs/metrics.md` (`tests/docs.rs`) and the dashboard test all read this
/// table.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<metrics::Unit>,
    pub help: &'static str,
}

/// Every metric family switchboard exports.
pub const METRICS: &[Metric] = &[
    Metric {
        name: EGRESS_DISPATCHES,
        kind: Kind::Counter,
        unit: None,
        help: "Dispatches the egress handled, by result: sent, failed (a Cloud API error, given to the owner), skipped (answered before a crash: not sent again), undecodable (dead-lettered).",
    },
    Metric {
        name: EGRESS_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: None,
        help: "Dispatches the egress is sending now (all partitions).",
    },
    Metric {
        name: WEBHOOK_REQUESTS,
        kind: Kind::Counter,
        unit: None,
        help: "Requests to the webhook endpoint by result: accepted (stored or handed to the shards, 200), unreadable (signed but not a webhook of a known number: 200 and a dead letter), bad_signature and missing_signature (401), too_large (413), unavailable (not acknowledged in time: 503, Meta retries), verified and verify_refused (the GET handshake), app (the app the signature matched; `none` when it matched none).",
    },
    Metric {
        name: WEBHOOK_DURATION,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Seconds),
        help: "Time to answer a signed webhook POST (in Kafka mode: until the broker acknowledged it).",
    },
    Metric {
        name: PROVIDER_ATTEMPTS,
        kind: Kind::Counter,
        unit: None,
        help: "Cloud API send attempts by outcome: sent, retryable (5xx, timeout, 131057: retried with backoff), failed (final).",
    },
    Metric {
        name: PROVIDER_PROBE,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Seconds),
        help: "Latency of the Cloud API endpoints' probes, by endpoint (primary, backup; capped at cloud_api.probe_slow_ms).",
    },
    Metric {
        name: PROVIDER_ON_BACKUP,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while Cloud API sends go through the backup endpoint (the primary failed its probes), else 0.",
    },
    Metric {
        name: GRPC_SHED,
        kind: Kind::Counter,
        unit: None,
        help: "gRPC calls refused with RESOURCE_EXHAUSTED because runtime.max_in_flight_calls were in flight, by method.",
    },
    Metric {
        name: AUTH_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "Protected gRPC calls refused by the token check, by reason (missing, unknown, role) and method.",
    },
    Metric {
        name: INBOUND_MESSAGES,
        kind: Kind::Counter,
        unit: None,
        help: "Inbound customer messages by channel, outcome (routed, duplicate, rejected) and error_type.",
    },
    Metric {
        name: ROUTING_DECISIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Routing decisions by tenant, target (agent, queue, bot), reason and channel (none: escalations).",
    },
    Metric {
        name: BOT_CONVERSATIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Conversations the bot answered, counted when forgotten after retention, by tenant and outcome: contained (no person took it) or handed_over.",
    },
    Metric {
        name: DECISION_DURATION,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Seconds),
        help: "Time the shard took to decide the route of one inbound message.",
    },
    Metric {
        name: QUEUE_DEPTH,
        kind: Kind::Gauge,
        unit: None,
        help: "Conversations waiting in the queue.",
    },
    Metric {
        name: QUEUE_AVAILABLE_AGENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Online agents of the queue with free capacity.",
    },
    Metric {
        name: QUEUE_ESTIMATED_WAIT,
        kind: Kind::Gauge,
        unit: Some(metrics::Unit::Seconds),
        help: "Estimated wait of a conversation arriving now (+Inf with no agent online).",
    },
    Metric {
        name: QUEUE_SLA_ATTAINMENT,
        kind: Kind::Gauge,
        unit: None,
        help: "Share of assignments that waited no longer than the SLA target.",
    },
    Metric {
        name: SLA_BREACHES,
        kind: Kind::Counter,
        unit: None,
        help: "Waiting conversations that passed their queue's SLA target.",
    },
    Metric {
        name: ASSIGNMENTS,
        kind: Kind::Counter,
        unit: None,
        help: "Conversations assigned to agents, by queue.",
    },
    Metric {
        name: ESCALATIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Conversations escalated for waiting past their queue's maximum wait.",
    },
    Metric {
        name: ADMISSIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Outbound send requests by tenant, outcome (dispatched, queued, scheduled, refused) and reason (a refusal's; for queued, the lifecycle rule that holds it: quiet_hours, customer_hold, frequency_cap).",
    },
    Metric {
        name: SEND_STATUSES,
        kind: Kind::Counter,
        unit: None,
        help: "Outbound send state changes by tenant and state (expired, sent, failed, ...).",
    },
    Metric {
        name: PROVIDER_ERRORS,
        kind: Kind::Counter,
        unit: None,
        help: "Errors the provider answered for dispatched sends, by tenant and Cloud API code.",
    },
    Metric {
        name: SPAM_RATE_ALERTS,
        kind: Kind::Counter,
        unit: None,
        help: "Spam-rate errors (131048): marketing from the number is paused. Alert on any.",
    },
    Metric {
        name: CUSTOMER_HOLDS,
        kind: Kind::Counter,
        unit: None,
        help: "Meta's per-user marketing limit (131049): one customer's low-priority sends held for quotas.customer_hold_secs.",
    },
    Metric {
        name: CONSENT_CHANGES,
        kind: Kind::Counter,
        unit: None,
        help: "Customers' consent set, by state (opted_in, opted_out): keywords and SetConsent.",
    },
    Metric {
        name: SCHEDULED_SENDS,
        kind: Kind::Gauge,
        unit: None,
        help: "Sends waiting for their send_at_ms, per tenant.",
    },
    Metric {
        name: BATCH_MODE,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the portfolio sends low-priority traffic in batches.",
    },
    Metric {
        name: SHADOW_REFUSALS,
        kind: Kind::Counter,
        unit: None,
        help: "Sends a rule in shadow mode would have refused (they were let through), by tenant and rule.",
    },
    Metric {
        name: NUMBER_TOKENS,
        kind: Kind::Gauge,
        unit: None,
        help: "Tokens in a business number's throughput bucket (an estimate between checks).",
    },
    Metric {
        name: BATCH_QUEUE_DEPTH,
        kind: Kind::Gauge,
        unit: None,
        help: "Sends waiting for a batch wave.",
    },
    Metric {
        name: LIMIT_USAGE_RATIO,
        kind: Kind::Gauge,
        unit: None,
        help: "Unique customers reached by business-initiated sends in the last 24 h over the messaging limit (0 when unlimited).",
    },
    Metric {
        name: LIMIT_FORECAST,
        kind: Kind::Gauge,
        unit: Some(metrics::Unit::Seconds),
        help: "Seconds until the messaging limit is reached at the current pace of new customers, counting the 24-hour expiries (0: reached; +Inf: not within 24 h at this pace, or unlimited).",
    },
    Metric {
        name: THRESHOLD_FORECAST,
        kind: Kind::Gauge,
        unit: Some(metrics::Unit::Seconds),
        help: "Seconds until the batch threshold is reached at the current pace (0: reached; +Inf: not within 24 h at this pace, or unlimited).",
    },
    Metric {
        name: DRAIN_FORECAST,
        kind: Kind::Gauge,
        unit: Some(metrics::Unit::Seconds),
        help: "Seconds until the batch queue has drained, by its waves and the slots the 24-hour expiries free (0: empty; +Inf: not known).",
    },
    Metric {
        name: NEW_CUSTOMERS_PACE,
        kind: Kind::Gauge,
        unit: None,
        help: "New customers counted against the messaging limit per hour, over the last quotas.forecast_window_secs.",
    },
    Metric {
        name: STREAM_DISCONNECTS,
        kind: Kind::Counter,
        unit: None,
        help: "Agent or bot streams disconnected because the subscriber fell behind.",
    },
    Metric {
        name: KAFKA_RECORDS_IN,
        kind: Kind::Counter,
        unit: None,
        help: "Kafka records consumed, by topic.",
    },
    Metric {
        name: KAFKA_RECORDS_OUT,
        kind: Kind::Counter,
        unit: None,
        help: "Kafka records produced and acknowledged by the broker, by topic.",
    },
    Metric {
        name: KAFKA_PRODUCE_RETRIES,
        kind: Kind::Counter,
        unit: None,
        help: "Kafka records produced again after a failed delivery, by topic.",
    },
    Metric {
        name: KAFKA_DEAD_LETTERS,
        kind: Kind::Counter,
        unit: None,
        help: "Input records (or webhook messages) sent to the dead-letter topic, by reason.",
    },
    Metric {
        name: KAFKA_SNAPSHOT,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Seconds),
        help: "One partition's cut: its tenants' state written to the state topic, its offsets committed.",
    },
    Metric {
        name: KAFKA_SNAPSHOT_BYTES,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Bytes),
        help: "Size of one partition's snapshot (all its tenants, JSON).",
    },
    Metric {
        name: KAFKA_CUT_PAUSE,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Seconds),
        help: "How long the Kafka input stood still to take a cut (positions and the tenants' state; the snapshot is written in the background).",
    },
    Metric {
        name: KAFKA_SNAPSHOT_AGE,
        kind: Kind::Gauge,
        unit: Some(metrics::Unit::Seconds),
        help: "Age of the oldest snapshot among the partitions this replica owns (what a crash would replay).",
    },
    Metric {
        name: KAFKA_RESTORE,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Seconds),
        help: "Taking over one partition: reading its snapshot, replaying its dispatches, restoring its tenants.",
    },
    Metric {
        name: KAFKA_RESTORE_BYTES,
        kind: Kind::Histogram,
        unit: Some(metrics::Unit::Bytes),
        help: "Snapshot bytes read to take over one partition.",
    },
    Metric {
        name: KAFKA_HANDOVERS,
        kind: Kind::Counter,
        unit: None,
        help: "Partitions taken over (kind=in: state restored) and handed over (kind=out: final snapshot written; out_unsaved: it could not be).",
    },
    Metric {
        name: KAFKA_REPLAYED,
        kind: Kind::Counter,
        unit: None,
        help: "Dispatches read back from the dispatch topic on a takeover (made after the snapshot).",
    },
    Metric {
        name: KAFKA_MOVED,
        kind: Kind::Counter,
        unit: None,
        help: "Input records found on another partition than their tenant's and moved there, by topic.",
    },
    Metric {
        name: KAFKA_COMMITS,
        kind: Kind::Counter,
        unit: None,
        help: "Offset commits by result (ok, error).",
    },
    Metric {
        name: KAFKA_REBALANCES,
        kind: Kind::Counter,
        unit: None,
        help: "Consumer group rebalances seen by this replica, by kind (assign, revoke).",
    },
    Metric {
        name: KAFKA_CONSUMER_LAG,
        kind: Kind::Gauge,
        unit: None,
        help: "Records behind the end of the partition, by topic and partition (librdkafka statistics).",
    },
    Metric {
        name: KAFKA_PARTITIONS_OWNED,
        kind: Kind::Gauge,
        unit: None,
        help: "Input partitions this replica serves: assigned by the consumer group, restored and caught up with what was written before the takeover.",
    },
    Metric {
        name: KAFKA_TENANTS_OWNED,
        kind: Kind::Gauge,
        unit: None,
        help: "Configured tenants whose partition this replica owns (state restored).",
    },
    Metric {
        name: READY,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the replica reports SERVING (gRPC health and /ready), 0 while NOT_SERVING.",
    },
    Metric {
        name: KAFKA_OUTCOMES,
        kind: Kind::Counter,
        unit: None,
        help: "The egress's answers read from the outcomes topic: applied (to a send the owner knows), unknown_send.",
    },
    Metric {
        name: KAFKA_STATUSES,
        kind: Kind::Counter,
        unit: None,
        help: "Webhook statuses by outcome: matched (fed back to a send), unmatched (not a send of \
               ours), ignored (a status the quotas do not react to).",
    },
    Metric {
        name: KAFKA_OUTPUTS_REFUSED,
        kind: Kind::Counter,
        unit: None,
        help: "Records the broker or the producer refused for good (too large, invalid), by topic \
               and fate: dead_lettered (the DLQ got it in its place), truncated (a dead letter \
               sent again cut, or with its headers only), dropped (even that was refused).",
    },
    Metric {
        name: KAFKA_PRODUCERS_RENEWED,
        kind: Kind::Counter,
        unit: None,
        help: "Times the Kafka producer was replaced after the broker fenced it or librdkafka \
               declared it failed (what it held was produced again by the new one).",
    },
    Metric {
        name: KAFKA_UNHEALTHY,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while a readiness condition holds, by condition: input_stalled (outputs or lag \
               waited kafka.stall_timeout_ms without progress), snapshots_failing (no cut \
               written for kafka.snapshot_failure_timeout_ms), takeover_failed (a partition's \
               state could not be restored).",
    },
];

fn describe() {
    for m in METRICS {
        let (name, help) = (m.name, m.help);
        match (m.kind, m.unit) {
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    handle: PrometheusHandle,
    readiness: tokio::sync::watch::Receiver<Option<String>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use axum::http::StatusCode;
    use axum::routing::get;
    let render = handle.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let h = render.clone();
                async move { h.render() }
            }),
        )
        // Readiness for HTTP probes: 200 while serving, 503 with the reason while not (the
        // same answer as gRPC health, see `kafka::health`).
        .route(
            "/ready",
            get(move || {
                let why = readiness.borrow().clone();
                async move {
                    match why {
                        None => (StatusCode::OK, "ready\n".to_owned()),
                        Some(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        )
        // Liveness: the process answers (a stalled input is a readiness matter: restarting
        // does not bring a broker back).
        .route("/live", get(|| async { "live\n" }));
    // Histogram and summary storage is drained by upkeep; without it memory grows with samples.
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep.abort();
    served
}
