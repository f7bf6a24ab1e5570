//! The Kafka input: one consumer in group `kafka.group_id` reads
//!
//! - `kafka.inbound_topic`: protobuf `switchboard.v1.InboundMessage`, routed like a gRPC
//!   `Ingest`; the decision goes to `kafka.routed_topic` keyed by tenant;
//! - `kafka.webhooks_topic`: Meta's Cloud API webhook JSON as posted. Its messages are routed
//!   like any inbound message; its statuses are the provider's answers about our dispatches,
//!   found again through `biz_opaque_callback_data` (see `sink`) and fed to the quota reactions;
//! - `kafka.sends_topic`: protobuf `switchboard.v1.SendRequest`, admitted like a gRPC `Send`;
//!   what follows (a dispatch, status changes) leaves through the sink.
//!
//! A record that cannot be handled (undecodable, invalid, unknown tenant or number, oversize)
//! goes to `kafka.dlq_topic` with its original topic, partition, offset and key and the error in
//! headers; one bad message in a webhook payload dead-letters that message only.
//!
//! **At-least-once.** Records are handed to the shards one at a time, in order, and what they
//! cause is produced without waiting. Each handled record remembers the outbox's last sequence
//! number at that moment (its barrier: its own outputs and the sink's records it caused were
//! all handed over by then, because a shard delivers effects before it replies). An offset is
//! stored once the outbox's acknowledgement watermark passes the record's barrier; records
//! leave in consumption order, so offsets are stored in per-partition order while many
//! records are in flight (at most `kafka.max_in_flight`), and committed every
//! `kafka.commit_every` records besides librdkafka's periodic auto-commit. On a partition revoke the records
//! of that partition are drained first (up to `kafka.revoke_drain_ms`) and committed; on
//! shutdown all are (up to the grace period). After a crash, what was handled but not stored
//! is read again, and message-id de-duplication absorbs what was routed twice.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use super::outbox::{Acks, Outbox, Seq};
use super::sink::parse_callback;
use crate::clock::Stopwatch;
use crate::config::{Config, KafkaConfig};
use crate::core::{Command, Inbound, Reply};
use crate::proto;
use crate::runtime::{CallError, Runtime};
use crate::telemetry;
use crate::webhook::{self, NumberDirectory};

/// What handling one record produces.
enum Output {
    Routed {
        tenant: String,
        decision: proto::RoutingDecision,
    },
    Dead(DeadLetter),
}

/// Why a record (or one message of a webhook payload) went to the dead-letter topic.
#[derive(Debug)]
struct DeadLetter {
    reason: &'static str,
    error: String,
    /// The message of a webhook payload this is about (its `wamid`); None: the whole record.
    item: Option<String>,
}

impl DeadLetter {
    fn new(reason: &'static str, error: impl Into<String>) -> Self {
        Self {
            reason,
            error: error.into(),
            item: None,
        }
    }
}

/// The service is stopping: the record is left unhandled (it is read again after restart).
struct Stopping;

/// A record handled, waiting for its outputs to be acknowledged.
struct Pending {
    barrier: Seq,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    received: Stopwatch,
}

impl Pending {
    fn is_in(&self, partitions: &[(String, i32)]) -> bool {
        partitions
            .iter()
            .any(|(t, q)| *q == self.partition && **t == *self.topic)
    }
}

/// The state behind each lock here is updated in place and never left half-done.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("no panic while holding a Kafka input lock")
}

/// Handled records not yet stored, in consumption order. Shared with the rebalance callback.
#[derive(Default)]
struct Inflight {
    records: VecDeque<Pending>,
    /// Records whose offsets were stored since the last commit.
    uncommitted: usize,
}

impl Inflight {
    /// Takes every record whose outputs are acknowledged (barrier ≤ `through`) and calls
    /// `store` with the last offset of each partition among them.
    fn advance(&mut self, through: Seq, mut store: impl FnMut(&str, i32, i64)) {
        let mut last: Vec<(Arc<str>, i32, i64)> = Vec::new();
        while let Some(p) = self.records.front()
            && p.barrier <= through
        {
            let p = self.records.pop_front().expect("front exists");
            self.uncommitted += 1;
            telemetry::kafka_offset_stored(p.received.elapsed());
            match last
                .iter_mut()
                .find(|(t, q, _)| *q == p.partition && *t == p.topic)
            {
                Some(entry) => entry.2 = p.offset,
                None => last.push((p.topic, p.partition, p.offset)),
            }
        }
        for (topic, partition, offset) in last {
            store(&topic, partition, offset);
        }
    }

    /// The highest barrier among the records of these partitions (0: none in flight).
    fn barrier_of(&self, partitions: &[(String, i32)]) -> Seq {
        self.records
            .iter()
            .filter(|p| p.is_in(partitions))
            .map(|p| p.barrier)
            .max()
            .unwrap_or(0)
    }

    /// Drops the records of revoked partitions (their new owner reads them again).
    fn forget(&mut self, partitions: &[(String, i32)]) {
        self.records.retain(|p| !p.is_in(partitions));
    }
}

fn store<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    if let Err(e) = consumer.store_offset(topic, partition, offset) {
        // The partition was revoked meanwhile: its new owner reads the record again.
        tracing::debug!(error = %e, topic, partition, offset, "offset not stored");
    }
}

/// The partitions this replica owns and the tenants seen on them (the keys of the inbound and
/// sends topics, which are keyed by tenant).
#[derive(Default)]
struct Owned {
    tenants: HashMap<(String, i32), HashSet<String>>,
}

impl Owned {
    /// Records that `tenant` lives on this partition; true if it was not known yet.
    fn saw(&mut self, topic: &str, partition: i32, tenant: &str) -> bool {
        let tenants = self
            .tenants
            .entry((topic.to_owned(), partition))
            .or_default();
        !tenants.contains(tenant) && tenants.insert(tenant.to_owned())
    }

    fn tenant_count(&self) -> usize {
        self.tenants
            .values()
            .flatten()
            .collect::<HashSet<_>>()
            .len()
    }
}

/// Drains revoked partitions, counts rebalances and commits, reports consumer lag.
struct InputContext {
    owned: Arc<Mutex<Owned>>,
    inflight: Arc<Mutex<Inflight>>,
    acks: Arc<Acks>,
    drain: Duration,
}

impl ClientContext for InputContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 is "not known".
                if partition >= 0 && p.consumer_lag >= 0 {
                    telemetry::kafka_lag(topic, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for InputContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        telemetry::kafka_rebalance("revoke");
        let revoked = partitions(list);
        let barrier = lock(&self.inflight).barrier_of(&revoked);
        // Called on the consumer's polling path, which cannot await: block, bounded. The
        // acknowledgements come from librdkafka's producer thread, not from this one.
        if !self.acks.wait_blocking(barrier, self.drain) {
            tracing::warn!(
                drain_ms = self.drain.as_millis() as u64,
                "revoked partitions not drained in time; their new owner reads the rest again"
            );
        }
        let mut inflight = lock(&self.inflight);
        inflight.advance(self.acks.through(), |t, p, o| store(consumer, t, p, o));
        inflight.forget(&revoked);
        drop(inflight);
        let mut owned = lock(&self.owned);
        for key in &revoked {
            owned.tenants.remove(key);
        }
        telemetry::kafka_tenants_owned(owned.tenant_count());
        drop(owned);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit on revoke (nothing stored)");
        }
        tracing::info!(
            partitions = revoked.len(),
            "partitions revoked after draining"
        );
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            telemetry::kafka_rebalance("assign");
            tracing::info!(partitions = list.count(), "partitions assigned");
        }
        let owned = consumer.assignment().map_or(0, |a| a.count());
        telemetry::kafka_partitions_owned(owned);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        telemetry::kafka_commit(result.is_ok());
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

pub struct KafkaInput {
    owned: Arc<Mutex<Owned>>,
    config: KafkaConfig,
    consumer: StreamConsumer<InputContext>,
    outbox: Arc<Outbox>,
    runtime: Runtime,
    numbers: NumberDirectory,
    inflight: Arc<Mutex<Inflight>>,
    grace: Duration,
}

impl KafkaInput {
    pub fn new(
        config: &Config,
        runtime: Runtime,
        outbox: Arc<Outbox>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let k = &config.kafka;
        let inflight = Arc::new(Mutex::new(Inflight::default()));
        let owned = Arc::new(Mutex::new(Owned::default()));
        let context = InputContext {
            owned: owned.clone(),
            inflight: inflight.clone(),
            acks: outbox.acks().clone(),
            drain: Duration::from_millis(k.revoke_drain_ms),
        };
        let mut settings = super::client_config(k);
        settings
            .set("group.id", &k.group_id)
            .set("enable.auto.commit", "true")
            // Stored only once the outputs are acknowledged (module docs).
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        if k.statistics_interval_ms > 0 {
            settings.set(
                "statistics.interval.ms",
                k.statistics_interval_ms.to_string(),
            );
        }
        let consumer: StreamConsumer<InputContext> = settings.create_with_context(context)?;
        consumer.subscribe(&[&k.inbound_topic, &k.webhooks_topic, &k.sends_topic])?;
        Ok(Self {
            owned,
            config: k.clone(),
            consumer,
            outbox,
            runtime,
            numbers: NumberDirectory::new(config),
            inflight,
            grace: Duration::from_millis(config.runtime.shutdown_grace_ms),
        })
    }

    fn advance(&self) {
        let through = self.outbox.acks().through();
        let mut inflight = lock(&self.inflight);
        inflight.advance(through, |t, p, o| store(&self.consumer, t, p, o));
        if inflight.uncommitted >= self.config.commit_every {
            inflight.uncommitted = 0;
            if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
                tracing::debug!(error = %e, "commit request refused; auto-commit follows");
            }
        }
    }

    /// Consumes until `stop`, then drains what is in flight, commits and leaves the group.
    pub async fn run(self, stop: CancellationToken) {
        let mut acked = self.outbox.acks().watch();
        loop {
            let full = lock(&self.inflight).records.len() >= self.config.max_in_flight;
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                changed = acked.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.advance();
                }
                record = self.consumer.recv(), if !full => {
                    let message = match record {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka consume error; retrying");
                            tokio::select! {
                                () = stop.cancelled() => break,
                                () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                            }
                        }
                    };
                    let received = Stopwatch::start();
                    telemetry::kafka_record_in(message.topic());
                    self.saw_tenant(&message);
                    if self.handle(&message).await.is_err() {
                        break; // stopping: this record is read again after restart
                    }
                    lock(&self.inflight).records.push_back(Pending {
                        barrier: self.outbox.acks().issued(),
                        topic: message.topic().into(),
                        partition: message.partition(),
                        offset: message.offset(),
                        received,
                    });
                    self.advance();
                }
            }
        }
        let last = lock(&self.inflight).records.back().map(|p| p.barrier);
        if let Some(last) = last
            && tokio::time::timeout(self.grace, acked.wait_for(|&t| t >= last))
                .await
                .is_err()
        {
            tracing::warn!("in-flight records not acknowledged within the grace period");
        }
        self.advance();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit (nothing stored, or the group is gone)");
        }
        // Leave the group now, so its partitions go to another member at once instead of
        // after the session timeout.
        self.consumer.unsubscribe();
        tracing::info!("kafka input stopped");
    }

    /// Notes the tenant of a record of a tenant-keyed topic (for the tenants-owned gauge).
    fn saw_tenant(&self, m: &BorrowedMessage<'_>) {
        if m.topic() == self.config.webhooks_topic {
            return; // keyed by whatever the webhook bridge chose, not by tenant
        }
        let Some(Ok(tenant)) = m.key().map(std::str::from_utf8) else {
            return;
        };
        let mut owned = lock(&self.owned);
        if owned.saw(m.topic(), m.partition(), tenant) {
            telemetry::kafka_tenants_owned(owned.tenant_count());
        }
    }

    /// Hands one record to the shards and produces what it caused (without waiting).
    async fn handle(&self, m: &BorrowedMessage<'_>) -> Result<(), Stopping> {
        let payload = m.payload().unwrap_or_default();
        let outputs = if payload.len() > self.config.max_record_bytes {
            vec![Output::Dead(DeadLetter::new(
                "oversize",
                format!(
                    "record of {} bytes is larger than kafka.max_record_bytes ({})",
                    payload.len(),
                    self.config.max_record_bytes
                ),
            ))]
        } else if m.topic() == self.config.webhooks_topic {
            self.webhook(payload).await?
        } else if m.topic() == self.config.sends_topic {
            self.send_request(payload).await?.into_iter().collect()
        } else {
            vec![self.inbound(payload).await?]
        };
        for output in outputs {
            match output {
                Output::Routed { tenant, decision } => {
                    self.outbox.produce(
                        &self.config.routed_topic,
                        Some(tenant.as_bytes()),
                        &decision.encode_to_vec(),
                        None,
                    );
                }
                Output::Dead(dead) => self.dead_letter(m, payload, dead),
            }
        }
        Ok(())
    }

    fn dead_letter(&self, m: &BorrowedMessage<'_>, payload: &[u8], dead: DeadLetter) {
        tracing::debug!(reason = dead.reason, error = %dead.error, topic = m.topic(), partition = m.partition(), offset = m.offset(), "dead letter");
        telemetry::kafka_dead_letter(dead.reason);
        let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
        let mut headers = OwnedHeaders::new()
            .insert(header("switchboard.original.topic", m.topic().as_bytes()))
            .insert(header(
                "switchboard.original.partition",
                partition.as_bytes(),
            ))
            .insert(header("switchboard.original.offset", offset.as_bytes()))
            .insert(header("switchboard.error.reason", dead.reason.as_bytes()))
            .insert(header("switchboard.error", dead.error.as_bytes()));
        if let Some(key) = m.key() {
            headers = headers.insert(header("switchboard.original.key", key));
        }
        if let Some(item) = &dead.item {
            headers = headers.insert(header("switchboard.error.item", item.as_bytes()));
        }
        self.outbox
            .produce(&self.config.dlq_topic, m.key(), payload, Some(headers));
    }

    async fn inbound(&self, payload: &[u8]) -> Result<Output, Stopping> {
        let message = match proto::InboundMessage::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                return Ok(Output::Dead(DeadLetter::new(
                    "undecodable",
                    format!("not a switchboard.v1.InboundMessage: {e}"),
                )));
            }
        };
        match crate::grpc::inbound_in(message) {
            Ok(inbound) => self.route(inbound).await,
            Err(s) => Ok(Output::Dead(DeadLetter::new("invalid", s.message()))),
        }
    }

    async fn webhook(&self, payload: &[u8]) -> Result<Vec<Output>, Stopping> {
        let batch = match webhook::parse(payload) {
            Ok(b) => b,
            Err(e) => {
                return Ok(vec![Output::Dead(DeadLetter::new(
                    e.reason(),
                    e.to_string(),
                ))]);
            }
        };
        let mut outputs = Vec::with_capacity(batch.messages.len());
        for m in &batch.messages {
            let output = match self.numbers.inbound(m) {
                Ok(inbound) => self.route(inbound).await?,
                Err(e) => Output::Dead(DeadLetter::new(e.reason(), e.to_string())),
            };
            outputs.push(match output {
                Output::Dead(dead) => Output::Dead(DeadLetter {
                    item: Some(m.id.clone()),
                    ..dead
                }),
                routed => routed,
            });
        }
        for s in &batch.statuses {
            let Some(outcome) = s.outcome() else {
                telemetry::kafka_status("ignored");
                continue;
            };
            let tenant = match self.numbers.find(&s.from) {
                Ok((tenant, _)) => tenant.clone(),
                Err(e) => {
                    outputs.push(Output::Dead(DeadLetter {
                        reason: e.reason(),
                        error: e.to_string(),
                        item: Some(s.id.clone()),
                    }));
                    continue;
                }
            };
            // Not one of ours (sent by another system from the same number), or the
            // callback names a send of another tenant.
            let Some((named, id)) = s.callback_data.as_deref().and_then(parse_callback) else {
                telemetry::kafka_status("unmatched");
                continue;
            };
            if named != tenant.as_str() {
                telemetry::kafka_status("unmatched");
                continue;
            }
            let command = Command::ProviderResult {
                tenant,
                id,
                outcome,
            };
            match self.runtime.call(command).await {
                Ok(_) => telemetry::kafka_status("matched"),
                // A send this replica does not know (yet): nothing to react to.
                Err(CallError::Core(_)) => telemetry::kafka_status("unmatched"),
                Err(CallError::Unavailable) => return Err(Stopping),
            }
        }
        Ok(outputs)
    }

    /// Admits a send request; returns a dead letter if it cannot be read or admitted.
    async fn send_request(&self, payload: &[u8]) -> Result<Option<Output>, Stopping> {
        let request = match proto::SendRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Some(Output::Dead(DeadLetter::new(
                    "undecodable",
                    format!("not a switchboard.v1.SendRequest: {e}"),
                ))));
            }
        };
        let send = match crate::grpc::send_in(request) {
            Ok(send) => send,
            Err(s) => return Ok(Some(Output::Dead(DeadLetter::new("invalid", s.message())))),
        };
        match self.runtime.call(Command::Send(send)).await {
            // Dispatched, queued or refused: the status topic says which (through the sink).
            Ok(_) => Ok(None),
            Err(CallError::Core(e)) => Ok(Some(Output::Dead(DeadLetter::new(
                telemetry::error_type(&e),
                e.to_string(),
            )))),
            Err(CallError::Unavailable) => Err(Stopping),
        }
    }

    async fn route(&self, inbound: Inbound) -> Result<Output, Stopping> {
        let tenant = inbound.tenant.to_string();
        let id = inbound.provider_message_id.clone();
        match self.runtime.call(Command::Ingest(inbound)).await {
            Ok(Reply::Decision(d)) => {
                let mut decision = crate::grpc::decision_out(&d);
                decision.provider_message_id = id;
                Ok(Output::Routed { tenant, decision })
            }
            Ok(other) => Ok(Output::Dead(DeadLetter::new(
                "internal",
                format!("unexpected reply {other:?}"),
            ))),
            Err(CallError::Core(e)) => Ok(Output::Dead(DeadLetter::new(
                telemetry::error_type(&e),
                e.to_string(),
            ))),
            Err(CallError::Unavailable) => Err(Stopping),
        }
    }
}

fn header<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(barrier: Seq, topic: &str, partition: i32, offset: i64) -> Pending {
        Pending {
            barrier,
            topic: topic.into(),
            partition,
            offset,
            received: Stopwatch::start(),
        }
    }

    #[test]
    fn offsets_are_stored_in_order_once_the_outputs_are_acknowledged() {
        let mut inflight = Inflight::default();
        inflight.records.extend([
            pending(3, "in", 0, 10),
            pending(3, "in", 1, 5),
            pending(5, "in", 0, 11),
            pending(9, "in", 1, 6),
        ]);
        let mut stored = Vec::new();
        inflight.advance(2, |t, p, o| stored.push((t.to_owned(), p, o)));
        assert!(stored.is_empty(), "nothing acknowledged through 3 yet");

        // Through 5: the first three leave; partition 0 stores its last (11), partition 1 its 5.
        inflight.advance(5, |t, p, o| stored.push((t.to_owned(), p, o)));
        assert_eq!(
            stored,
            vec![("in".to_owned(), 0, 11), ("in".to_owned(), 1, 5)]
        );
        assert_eq!(inflight.records.len(), 1);
    }

    #[test]
    fn a_revoke_waits_for_its_own_partitions_and_forgets_them() {
        let mut inflight = Inflight::default();
        inflight.records.extend([
            pending(3, "in", 0, 10),
            pending(7, "in", 1, 5),
            pending(8, "in", 0, 11),
        ]);
        let revoked = vec![("in".to_owned(), 1)];
        assert_eq!(inflight.barrier_of(&revoked), 7);
        assert_eq!(inflight.barrier_of(&[("other".to_owned(), 1)]), 0);
        inflight.forget(&revoked);
        let left: Vec<i64> = inflight.records.iter().map(|p| p.offset).collect();
        assert_eq!(left, vec![10, 11]);
    }
}
