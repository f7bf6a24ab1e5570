//! Telemetry: every metric name is defined here, described once at start-up, and emitted only
//! through the functions below, which also write the matching log line so the two cannot drift.
//!
//! Names follow `switchboard_<name>_<unit>[_total]`. Labels are bounded: tenant and queue come
//! from the config, target and reason from fixed enums. A customer number or message id is
//! never a label (cardinality and privacy), and logs never print a full customer number.
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::quota::{Admission, Quotas};
use crate::core::{CoreError, Decision, Effect, QueueStatsView, Reply};

pub const INBOUND_MESSAGES: &str = "switchboard_inbound_messages_total";
pub const ROUTING_DECISIONS: &str = "switchboard_routing_decisions_total";
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
pub const BATCH_MODE: &str = "switchboard_batch_mode";
pub const SHADOW_REFUSALS: &str = "switchboard_shadow_refusals_total";
pub const NUMBER_TOKENS: &str = "switchboard_number_tokens";
pub const BATCH_QUEUE_DEPTH: &str = "switchboard_batch_queue_depth";
pub const LIMIT_USAGE_RATIO: &str = "switchboard_messaging_limit_usage_ratio";
pub const AUTH_FAILURES: &str = "switchboard_auth_failures_total";
pub const GRPC_SHED: &str = "switchboard_grpc_shed_total";
pub const PROVIDER_ATTEMPTS: &str = "switchboard_provider_attempts_total";
pub const PROVIDER_PROBE: &str = "switchboard_provider_probe_seconds";
pub const PROVIDER_ON_BACKUP: &str = "switchboard_provider_on_backup";

pub const KAFKA_RECORDS_IN: &str = "switchboard_kafka_records_in_total";
pub const KAFKA_RECORDS_OUT: &str = "switchboard_kafka_records_out_total";
pub const KAFKA_PRODUCE_RETRIES: &str = "switchboard_kafka_produce_retries_total";
pub const KAFKA_DEAD_LETTERS: &str = "switchboard_kafka_dead_letters_total";
pub const KAFKA_SNAPSHOT: &str = "switchboard_kafka_snapshot_seconds";
pub const KAFKA_SNAPSHOT_BYTES: &str = "switchboard_kafka_snapshot_bytes";
pub const KAFKA_SNAPSHOT_AGE: &str = "switchboard_kafka_snapshot_age_seconds";
pub const KAFKA_RESTORE: &str = "switchboard_kafka_restore_seconds";
pub const KAFKA_RESTORE_BYTES: &str = "switchboard_kafka_restore_bytes";
pub const KAFKA_HANDOVERS: &str = "switchboard_kafka_handovers_total";
pub const KAFKA_REPLAYED: &str = "switchboard_kafka_replayed_dispatches_total";
pub const KAFKA_MOVED: &str = "switchboard_kafka_records_moved_total";
pub const KAFKA_COMMITS: &str = "switchboard_kafka_commits_total";
pub const KAFKA_REBALANCES: &str = "switchboard_kafka_rebalances_total";
pub const KAFKA_CONSUMER_LAG: &str = "switchboard_kafka_consumer_lag";
pub const KAFKA_STATUSES: &str = "switchboard_kafka_webhook_statuses_total";
pub const KAFKA_PARTITIONS_OWNED: &str = "switchboard_kafka_partitions_owned";
pub const KAFKA_TENANTS_OWNED: &str = "switchboard_kafka_tenants_owned";
pub const KAFKA_OUTPUTS_REFUSED: &str = "switchboard_kafka_outputs_refused_total";
pub const KAFKA_PRODUCERS_RENEWED: &str = "switchboard_kafka_producers_renewed_total";
pub const KAFKA_UNHEALTHY: &str = "switchboard_kafka_unhealthy";
pub const READY: &str = "switchboard_ready";

/// The families exported in Kafka mode only.
pub const KAFKA: &[&str] = &[
    KAFKA_RECORDS_IN,
    KAFKA_RECORDS_OUT,
    KAFKA_PRODUCE_RETRIES,
    KAFKA_DEAD_LETTERS,
    KAFKA_SNAPSHOT,
    KAFKA_SNAPSHOT_BYTES,
    KAFKA_SNAPSHOT_AGE,
    KAFKA_RESTORE,
    KAFKA_RESTORE_BYTES,
    KAFKA_HANDOVERS,
    KAFKA_REPLAYED,
    KAFKA_MOVED,
    KAFKA_COMMITS,
    KAFKA_REBALANCES,
    KAFKA_CONSUMER_LAG,
    KAFKA_STATUSES,
    KAFKA_PARTITIONS_OWNED,
    KAFKA_TENANTS_OWNED,
    KAFKA_UNHEALTHY,
    READY,
];

/// Every metric family the service exports (tests check `/metrics` against this list).
pub const ALL: &[&str] = &[
    INBOUND_MESSAGES,
    ROUTING_DECISIONS,
    DECISION_DURATION,
    QUEUE_DEPTH,
    QUEUE_AVAILABLE_AGENTS,
    QUEUE_ESTIMATED_WAIT,
    QUEUE_SLA_ATTAINMENT,
    SLA_BREACHES,
    ASSIGNMENTS,
    ESCALATIONS,
    STREAM_DISCONNECTS,
    ADMISSIONS,
    SEND_STATUSES,
    PROVIDER_ERRORS,
    SPAM_RATE_ALERTS,
    BATCH_MODE,
    SHADOW_REFUSALS,
    NUMBER_TOKENS,
    BATCH_QUEUE_DEPTH,
    LIMIT_USAGE_RATIO,
];

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

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        PROVIDER_ATTEMPTS,
        "Cloud API send attempts by outcome: sent, retryable (5xx, timeout, 131057: retried with backoff), failed (final)."
    );
    describe_histogram!(
        PROVIDER_PROBE,
        metrics::Unit::Seconds,
        "Latency of the Cloud API endpoints' probes, by endpoint (primary, backup; capped at cloud_api.probe_slow_ms)."
    );
    describe_gauge!(
        PROVIDER_ON_BACKUP,
        "1 while Cloud API sends go through the backup endpoint (the primary failed its probes), else 0."
    );
    describe_counter!(
        GRPC_SHED,
        "gRPC calls refused with RESOURCE_EXHAUSTED because runtime.max_in_flight_calls were in flight, by method."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Protected gRPC calls refused by the token check, by reason (missing, unknown, role) and method."
    );
    describe_counter!(
        INBOUND_MESSAGES,
        "Inbound customer messages by outcome (routed, duplicate, rejected) and error_type."
    );
    describe_counter!(
        ROUTING_DECISIONS,
        "Routing decisions by tenant, target (agent, queue, bot) and reason."
    );
    describe_histogram!(
        DECISION_DURATION,
        metrics::Unit::Seconds,
        "Time the shard took to decide the route of one inbound message."
    );
    describe_gauge!(QUEUE_DEPTH, "Conversations waiting in the queue.");
    describe_gauge!(
        QUEUE_AVAILABLE_AGENTS,
        "Online agents of the queue with free capacity."
    );
    describe_gauge!(
        QUEUE_ESTIMATED_WAIT,
        metrics::Unit::Seconds,
        "Estimated wait of a conversation arriving now (+Inf with no agent online)."
    );
    describe_gauge!(
        QUEUE_SLA_ATTAINMENT,
        "Share of assignments that waited no longer than the SLA target."
    );
    describe_counter!(
        SLA_BREACHES,
        "Waiting conversations that passed their queue's SLA target."
    );
    describe_counter!(ASSIGNMENTS, "Conversations assigned to agents, by queue.");
    describe_counter!(
        ESCALATIONS,
        "Conversations escalated for waiting past their queue's maximum wait."
    );
    describe_counter!(
        ADMISSIONS,
        "Outbound send requests by tenant, outcome (dispatched, queued, refused) and reason."
    );
    describe_counter!(
        SEND_STATUSES,
        "Outbound send state changes by tenant and state (expired, sent, failed, ...)."
    );
    describe_counter!(
        PROVIDER_ERRORS,
        "Errors the provider answered for dispatched sends, by tenant and Cloud API code."
    );
    describe_counter!(
        SPAM_RATE_ALERTS,
        "Spam-rate errors (131048): marketing from the number is paused. Alert on any."
    );
    describe_gauge!(
        BATCH_MODE,
        "1 while the portfolio sends low-priority traffic in batches."
    );
    describe_counter!(
        SHADOW_REFUSALS,
        "Sends a rule in shadow mode would have refused (they were let through), by tenant and rule."
    );
    describe_gauge!(
        NUMBER_TOKENS,
        "Tokens in a business number's throughput bucket (an estimate between checks)."
    );
    describe_gauge!(BATCH_QUEUE_DEPTH, "Sends waiting for a batch wave.");
    describe_gauge!(
        LIMIT_USAGE_RATIO,
        "Unique customers reached by business-initiated sends in the last 24 h over the messaging limit (0 when unlimited)."
    );
    describe_counter!(
        STREAM_DISCONNECTS,
        "Agent or bot streams disconnected because the subscriber fell behind."
    );
    describe_counter!(KAFKA_RECORDS_IN, "Kafka records consumed, by topic.");
    describe_counter!(
        KAFKA_RECORDS_OUT,
        "Kafka records produced and acknowledged by the broker, by topic."
    );
    describe_counter!(
        KAFKA_PRODUCE_RETRIES,
        "Kafka records produced again after a failed delivery, by topic."
    );
    describe_counter!(
        KAFKA_DEAD_LETTERS,
        "Input records (or webhook messages) sent to the dead-letter topic, by reason."
    );
    describe_histogram!(
        KAFKA_SNAPSHOT,
        metrics::Unit::Seconds,
        "One partition's cut: its tenants' state written to the state topic, its offsets committed."
    );
    describe_histogram!(
        KAFKA_SNAPSHOT_BYTES,
        metrics::Unit::Bytes,
        "Size of one partition's snapshot (all its tenants, JSON)."
    );
    describe_gauge!(
        KAFKA_SNAPSHOT_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest snapshot among the partitions this replica owns (what a crash would replay)."
    );
    describe_histogram!(
        KAFKA_RESTORE,
        metrics::Unit::Seconds,
        "Taking over one partition: reading its snapshot, replaying its dispatches, restoring its tenants."
    );
    describe_histogram!(
        KAFKA_RESTORE_BYTES,
        metrics::Unit::Bytes,
        "Snapshot bytes read to take over one partition."
    );
    describe_counter!(
        KAFKA_HANDOVERS,
        "Partitions taken over (kind=in: state restored) and handed over (kind=out: final snapshot written; out_unsaved: it could not be)."
    );
    describe_counter!(
        KAFKA_REPLAYED,
        "Dispatches read back from the dispatch topic on a takeover (made after the snapshot)."
    );
    describe_counter!(
        KAFKA_MOVED,
        "Input records found on another partition than their tenant's and moved there, by topic."
    );
    describe_counter!(KAFKA_COMMITS, "Offset commits by result (ok, error).");
    describe_counter!(
        KAFKA_REBALANCES,
        "Consumer group rebalances seen by this replica, by kind (assign, revoke)."
    );
    describe_gauge!(
        KAFKA_CONSUMER_LAG,
        "Records behind the end of the partition, by topic and partition (librdkafka statistics)."
    );
    describe_gauge!(
        KAFKA_PARTITIONS_OWNED,
        "Input partitions assigned to this replica by the consumer group."
    );
    describe_gauge!(
        KAFKA_TENANTS_OWNED,
        "Configured tenants whose partition this replica owns (state restored)."
    );
    describe_counter!(
        KAFKA_OUTPUTS_REFUSED,
        "Records the broker or the producer refused for good (too large, invalid), by topic and \
         fate: dead_lettered (the DLQ got it in its place), truncated (a dead letter sent again \
         with its headers only), dropped (even that was refused)."
    );
    describe_counter!(
        KAFKA_PRODUCERS_RENEWED,
        "Times the Kafka producer was replaced after the broker fenced it or librdkafka declared \
         it failed (what it held was produced again by the new one)."
    );
    describe_gauge!(
        KAFKA_UNHEALTHY,
        "1 while a readiness condition holds, by condition: input_stalled (records waiting and \
         no progress for kafka.stall_timeout_ms), snapshots_failing (no cut written for \
         kafka.snapshot_failure_timeout_ms), takeover_failed (a partition's state could not be \
         restored)."
    );
    describe_gauge!(
        READY,
        "1 while the replica reports SERVING (gRPC health and /ready), 0 while NOT_SERVING."
    );
    describe_counter!(
        KAFKA_STATUSES,
        "Webhook statuses by outcome: matched (fed back to a send), unmatched (not a send of \
         ours), ignored (a status the quotas do not react to)."
    );
}

/// One inbound message was handled (or refused).
pub fn inbound(result: &Result<Reply, CoreError>, elapsed: Duration) {
    match result {
        Ok(Reply::Decision(d)) if d.duplicate => {
            counter!(INBOUND_MESSAGES, "outcome" => "duplicate").increment(1);
        }
        Ok(Reply::Decision(d)) => {
            counter!(INBOUND_MESSAGES, "outcome" => "routed").increment(1);
            histogram!(DECISION_DURATION).record(elapsed.as_secs_f64());
            tracing::debug!(
                conversation = ?d.conversation,
                target = d.target.as_str(),
                reason = d.reason.as_str(),
                "routed"
            );
        }
        Ok(_) => {}
        Err(e) => {
            counter!(INBOUND_MESSAGES, "outcome" => "rejected", "error_type" => error_type(e))
                .increment(1);
            tracing::debug!(error = %e, "inbound message rejected");
        }
    }
}

/// A routing decision of `tenant`: for inbound messages and escalations alike.
pub fn decision(tenant: &str, d: &Decision) {
    counter!(
        ROUTING_DECISIONS,
        "tenant" => tenant.to_owned(),
        "target" => d.target.as_str(),
        "reason" => d.reason.as_str()
    )
    .increment(1);
}

pub fn error_type(e: &CoreError) -> &'static str {
    match e {
        CoreError::InvalidArgument { .. } => "invalid_argument",
        CoreError::NotFound { .. } => "not_found",
        CoreError::FailedPrecondition(_) => "failed_precondition",
        CoreError::ResourceExhausted(_) => "resource_exhausted",
    }
}

/// Counts and logs what an effect means for operators.
pub fn effect(e: &Effect) {
    match e {
        Effect::Assigned {
            tenant,
            agent,
            conversation,
            queue,
            reason,
            waited_ms,
        } => {
            counter!(ASSIGNMENTS, "tenant" => tenant.to_string(), "queue" => queue.to_string())
                .increment(1);
            tracing::debug!(%tenant, %agent, %conversation, %queue, reason = reason.as_str(), waited_ms, "assigned");
        }
        Effect::SlaBreached { tenant, queue } => {
            counter!(SLA_BREACHES, "tenant" => tenant.to_string(), "queue" => queue.to_string())
                .increment(1);
        }
        Effect::Escalated {
            tenant,
            conversation,
            from,
            to,
            priority,
        } => {
            counter!(ESCALATIONS, "tenant" => tenant.to_string(), "from" => from.to_string(), "to" => to.to_string())
                .increment(1);
            tracing::info!(%tenant, %conversation, %from, %to, priority, "waited past max wait: escalated");
        }
        Effect::SendStatus {
            tenant,
            id,
            state,
            reason,
            ..
        } => {
            counter!(SEND_STATUSES, "tenant" => tenant.to_string(), "state" => state.as_str())
                .increment(1);
            tracing::debug!(%tenant, %id, state = state.as_str(), reason = reason.map(|r| r.as_str()), "send status");
        }
        Effect::BatchMode { tenant, on } => {
            gauge!(BATCH_MODE, "tenant" => tenant.to_string()).set(if *on { 1.0 } else { 0.0 });
            tracing::info!(%tenant, on, "batch mode for low-priority sends");
        }
        Effect::SpamRateAlert { tenant, number } => {
            counter!(SPAM_RATE_ALERTS, "tenant" => tenant.to_string(), "number" => number.to_string())
                .increment(1);
            tracing::warn!(%tenant, %number, "spam-rate error (131048): marketing paused on this number");
        }
        Effect::ShadowRefusal { tenant, rule } => {
            counter!(SHADOW_REFUSALS, "tenant" => tenant.to_string(), "rule" => rule.as_str())
                .increment(1);
        }
        Effect::Unassigned { .. }
        | Effect::AgentMessage { .. }
        | Effect::BotMessage { .. }
        | Effect::Queued { .. }
        | Effect::Dispatch { .. } => {}
    }
}

/// Queue gauges, refreshed on every shard tick.
pub fn queue_gauges(stats: &[QueueStatsView]) {
    for s in stats {
        let labels = [
            ("tenant", s.tenant.to_string()),
            ("queue", s.queue.to_string()),
        ];
        gauge!(QUEUE_DEPTH, &labels).set(f64::from(s.depth));
        gauge!(QUEUE_AVAILABLE_AGENTS, &labels).set(f64::from(s.available_agents));
        gauge!(QUEUE_ESTIMATED_WAIT, &labels).set(
            s.estimated_wait_ms
                .map_or(f64::INFINITY, |ms| ms as f64 / 1_000.0),
        );
        gauge!(QUEUE_SLA_ATTAINMENT, &labels).set(s.sla_attainment);
    }
}

/// The answer to a send request.
pub fn admission(tenant: &str, admission: &Admission) {
    let (outcome, reason) = match admission {
        Admission::Dispatched => ("dispatched", ""),
        Admission::Queued { .. } => ("queued", ""),
        Admission::Refused { reason, .. } => ("refused", reason.as_str()),
    };
    counter!(ADMISSIONS, "tenant" => tenant.to_owned(), "outcome" => outcome, "reason" => reason)
        .increment(1);
}

/// The provider refused a dispatched send.
pub fn provider_error(tenant: &str, code: u32) {
    counter!(PROVIDER_ERRORS, "tenant" => tenant.to_owned(), "code" => code.to_string())
        .increment(1);
}

/// Quota gauges of one portfolio, refreshed on every tick. Business numbers are few and come
/// from the config, so they may be labels; customers never are.
pub fn quota_gauges(tenant: &str, quotas: &Quotas, now: crate::clock::Timestamp) {
    for n in quotas.snapshot(now).numbers {
        gauge!(NUMBER_TOKENS, "tenant" => tenant.to_owned(), "number" => n.id.to_string())
            .set(f64::from(n.tokens));
    }
    let (used, limit) = quotas.usage();
    let labels = [("tenant", tenant.to_owned())];
    gauge!(LIMIT_USAGE_RATIO, &labels).set(limit.map_or(0.0, |l| used as f64 / l as f64));
    gauge!(BATCH_QUEUE_DEPTH, &labels).set(quotas.queued() as f64);
    gauge!(BATCH_MODE, &labels).set(if quotas.batch_mode() { 1.0 } else { 0.0 });
}

/// A stream subscriber fell behind and was disconnected.
pub fn stream_disconnected(kind: &'static str) {
    counter!(STREAM_DISCONNECTS, "kind" => kind).increment(1);
    tracing::warn!(
        kind,
        "stream subscriber fell behind and was disconnected; it must resubscribe"
    );
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

pub fn kafka_record_in(topic: &str) {
    counter!(KAFKA_RECORDS_IN, "topic" => topic.to_owned()).increment(1);
}

pub fn kafka_record_out(topic: &str) {
    counter!(KAFKA_RECORDS_OUT, "topic" => topic.to_owned()).increment(1);
}

pub fn kafka_produce_retry(topic: &str) {
    counter!(KAFKA_PRODUCE_RETRIES, "topic" => topic.to_owned()).increment(1);
}

pub fn kafka_dead_letter(reason: &'static str) {
    counter!(KAFKA_DEAD_LETTERS, "reason" => reason).increment(1);
}

pub fn kafka_snapshot(elapsed: Duration, bytes: usize) {
    histogram!(KAFKA_SNAPSHOT).record(elapsed.as_secs_f64());
    histogram!(KAFKA_SNAPSHOT_BYTES).record(bytes as f64);
}

pub fn kafka_snapshot_age(age: Duration) {
    gauge!(KAFKA_SNAPSHOT_AGE).set(age.as_secs_f64());
}

pub fn kafka_restore(elapsed: Duration, bytes: usize, replayed: u64) {
    histogram!(KAFKA_RESTORE).record(elapsed.as_secs_f64());
    histogram!(KAFKA_RESTORE_BYTES).record(bytes as f64);
    counter!(KAFKA_REPLAYED).increment(replayed);
}

pub fn kafka_handover(kind: &'static str) {
    counter!(KAFKA_HANDOVERS, "kind" => kind).increment(1);
}

pub fn kafka_moved(topic: &str) {
    counter!(KAFKA_MOVED, "topic" => topic.to_owned()).increment(1);
}

pub fn kafka_commit(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!(KAFKA_COMMITS, "result" => result).increment(1);
}

pub fn kafka_rebalance(kind: &'static str) {
    tracing::info!(kind, "kafka rebalance");
    counter!(KAFKA_REBALANCES, "kind" => kind).increment(1);
}

pub fn kafka_lag(topic: &str, partition: i32, lag: i64) {
    gauge!(KAFKA_CONSUMER_LAG, "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(lag as f64);
}

pub fn kafka_status(outcome: &'static str) {
    counter!(KAFKA_STATUSES, "outcome" => outcome).increment(1);
}

/// A record refused for good (see `kafka::outbox`): `fate` is what became of it.
pub fn kafka_output_refused(topic: &str, fate: &'static str, error: &str) {
    if fate == "dropped" {
        tracing::error!(
            topic,
            error,
            "a dead letter was refused even without its payload; dropped"
        );
    } else {
        tracing::warn!(
            topic,
            fate,
            error,
            "record refused by the broker or the producer for good"
        );
    }
    counter!(KAFKA_OUTPUTS_REFUSED, "topic" => topic.to_owned(), "fate" => fate).increment(1);
}

pub fn kafka_producer_renewed() {
    counter!(KAFKA_PRODUCERS_RENEWED).increment(1);
}

/// A readiness condition began (`why` says what is wrong) or ended (`why` is None).
pub fn kafka_unhealthy(condition: &'static str, why: Option<&str>) {
    match why {
        Some(why) => tracing::error!(condition, why, "readiness: NOT_SERVING"),
        None => tracing::info!(condition, "readiness condition cleared"),
    }
    kafka_condition(condition, why.is_some());
}

/// The gauge of one readiness condition (see `kafka_unhealthy`, which also logs).
pub fn kafka_condition(condition: &'static str, holds: bool) {
    gauge!(KAFKA_UNHEALTHY, "condition" => condition).set(if holds { 1.0 } else { 0.0 });
}

/// The replica's overall serving status.
pub fn ready(serving: bool) {
    gauge!(READY).set(if serving { 1.0 } else { 0.0 });
}

pub fn kafka_partitions_owned(n: usize) {
    gauge!(KAFKA_PARTITIONS_OWNED).set(n as f64);
}

pub fn kafka_tenants_owned(n: usize) {
    gauge!(KAFKA_TENANTS_OWNED).set(n as f64);
}

/// A protected call refused: `reason` is missing (no token), unknown (not a configured
/// token) or role (a token without the role); `path` is the gRPC method (a fixed set). The
/// token itself is never logged.
pub fn auth_failure(reason: &'static str, path: &str) {
    let method = path.rsplit('/').next().unwrap_or(path).to_owned();
    tracing::warn!(reason, method = %method, "protected call refused");
    counter!(AUTH_FAILURES, "reason" => reason, "method" => method).increment(1);
}

/// A gRPC call shed at capacity (`method` is the gRPC method name: a fixed set).
pub fn shed(method: &str) {
    tracing::debug!(method, "call shed at capacity");
    counter!(GRPC_SHED, "method" => method.to_owned()).increment(1);
}

/// One Cloud API send attempt: sent, retryable or failed.
pub fn provider_attempt(outcome: &'static str) {
    counter!(PROVIDER_ATTEMPTS, "outcome" => outcome).increment(1);
}

/// One probe of a Cloud API endpoint (`primary` or `backup`).
pub fn provider_probe(endpoint: &'static str, took: Duration, healthy: bool) {
    tracing::debug!(
        endpoint,
        took_ms = took.as_millis() as u64,
        healthy,
        "Cloud API probe"
    );
    histogram!(PROVIDER_PROBE, "endpoint" => endpoint).record(took.as_secs_f64());
}

/// Which Cloud API endpoint sends go to.
pub fn provider_endpoint(on_backup: bool) {
    gauge!(PROVIDER_ON_BACKUP).set(if on_backup { 1.0 } else { 0.0 });
}
