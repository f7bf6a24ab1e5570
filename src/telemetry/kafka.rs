//! Kafka events: records in and out, retries, refusals, dead letters, cuts, takeovers,
//! rebalances, lag, readiness. Each function writes its log line (if any) and its metric
//! together.
use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::*;

/// Records read or written, per topic: handles looked up once per topic (see
/// `RoutingSeries`: a labelled `counter!` allocates and searches the registry each time).
/// Made at first use, after the recorder is installed.
pub struct TopicRecords {
    name: &'static str,
    topics: Vec<(Box<str>, metrics::Counter)>,
}

impl TopicRecords {
    /// Records the Kafka input read.
    pub fn read() -> Self {
        Self {
            name: KAFKA_RECORDS_IN,
            topics: Vec::new(),
        }
    }

    /// Records the broker acknowledged.
    pub fn written() -> Self {
        Self {
            name: KAFKA_RECORDS_OUT,
            topics: Vec::new(),
        }
    }

    /// One more record of `topic` (a handful of topics: a scan).
    pub fn count(&mut self, topic: &str) {
        self.add(topic, 1);
    }

    /// `n` more records of `topic`.
    pub fn add(&mut self, topic: &str, n: u64) {
        if let Some((_, c)) = self.topics.iter().find(|(t, _)| &**t == topic) {
            c.increment(n);
            return;
        }
        let c = counter!(self.name, "topic" => topic.to_owned());
        c.increment(n);
        self.topics.push((topic.into(), c));
    }
}

/// A record's delivery failed in a way another try can fix; it is produced again.
pub fn kafka_produce_retry(topic: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(%error, topic, "produce failed; retrying");
    counter!(KAFKA_PRODUCE_RETRIES, "topic" => topic.to_owned()).increment(1);
}

/// An input record (or one message of a webhook) goes to the dead-letter topic.
pub fn kafka_dead_letter(
    reason: &'static str,
    error: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    tracing::debug!(reason, error, topic, partition, offset, "dead letter");
    counter!(KAFKA_DEAD_LETTERS, "reason" => reason).increment(1);
}

/// A cut of `partition` is written and its offsets committed, `elapsed` after it was taken;
/// `phases`: when the shards had copied it, its outputs were acknowledged, its state was
/// written (encoded and produced, chunk by chunk).
pub fn kafka_snapshot(partition: i32, elapsed: Duration, phases: [Duration; 3], bytes: usize) {
    let ms = |d: Duration| d.as_millis() as u64;
    tracing::debug!(
        partition,
        bytes,
        ms = ms(elapsed),
        copied_ms = ms(phases[0]),
        acknowledged_ms = ms(phases[1]),
        written_ms = ms(phases[2]),
        "snapshot written"
    );
    histogram!(KAFKA_SNAPSHOT).record(elapsed.as_secs_f64());
    histogram!(KAFKA_SNAPSHOT_BYTES).record(bytes as f64);
}

/// The input stood still this long to take a cut.
pub fn kafka_cut_pause(elapsed: Duration) {
    histogram!(KAFKA_CUT_PAUSE).record(elapsed.as_secs_f64());
}

pub fn kafka_snapshot_age(age: Duration) {
    gauge!(KAFKA_SNAPSHOT_AGE).set(age.as_secs_f64());
}

/// A partition was taken over: its snapshot read, its dispatches replayed, its tenants
/// restored.
pub fn kafka_taken_over(
    partition: i32,
    tenants: usize,
    bytes: usize,
    replayed: u64,
    elapsed: Duration,
) {
    tracing::info!(
        partition,
        tenants,
        bytes,
        replayed,
        ms = elapsed.as_millis() as u64,
        "partition taken over"
    );
    histogram!(KAFKA_RESTORE).record(elapsed.as_secs_f64());
    histogram!(KAFKA_RESTORE_BYTES).record(bytes as f64);
    counter!(KAFKA_REPLAYED).increment(replayed);
    counter!(KAFKA_HANDOVERS, "kind" => "in").increment(1);
}

/// Partitions handed over (a revoke or a shutdown): with their final snapshot, or without
/// it (`error`: the next owner replays from the previous one).
pub fn kafka_handed_over(partitions: &[i32], error: Option<&impl std::fmt::Display>) {
    let kind = match error {
        None => "out",
        Some(error) => {
            tracing::warn!(%error, ?partitions, "final snapshot not written; the next owner replays from the previous one");
            "out_unsaved"
        }
    };
    counter!(KAFKA_HANDOVERS, "kind" => kind).increment(partitions.len() as u64);
}

pub fn kafka_moved(topic: &str) {
    counter!(KAFKA_MOVED, "topic" => topic.to_owned()).increment(1);
}

/// The offsets a written snapshot covers were committed (or the group refused them: the
/// snapshot holds them anyway; the group's are for lag and a fallback).
pub fn kafka_commit(partition: i32, error: Option<&impl std::fmt::Display>) {
    let result = match error {
        None => "ok",
        Some(error) => {
            tracing::debug!(%error, partition, "offset commit after the snapshot refused");
            "error"
        }
    };
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

/// An answer of the egress read from the outcomes topic: applied or unknown_send.
pub fn kafka_outcome(result: &'static str) {
    counter!(KAFKA_OUTCOMES, "result" => result).increment(1);
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

/// The producer was fenced or failed for good; `generation` produces from now on.
pub fn kafka_producer_renewed(generation: u64) {
    tracing::warn!(
        generation,
        "the Kafka producer was fenced or failed fatally; producing through a new one"
    );
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
