//! The Kafka input: one consumer in group `kafka.group_id` reads
//!
//! - `kafka.inbound_topic`: protobuf `switchboard.v1.InboundMessage`, routed like a gRPC
//!   `Ingest`; the decision goes to `kafka.routed_topic` keyed by tenant;
//! - `kafka.webhooks_topic`: Meta's Cloud API webhook JSON as posted. Its messages are routed
//!   like any inbound message; its statuses are the provider's answers about our dispatches,
//!   found again through `biz_opaque_callback_data` (see `wire::webhook`) and fed to the quota reactions;
//! - `kafka.sends_topic`: protobuf `switchboard.v1.SendRequest`, admitted like a gRPC `Send`;
//!   what follows (a dispatch, status changes) leaves through the sink;
//! - `kafka.outcomes_topic`: protobuf `switchboard.v1.SendOutcome`, the egress's answers about
//!   dispatches, applied like status webhooks (a second answer for a send changes nothing).
//!
//! A record that cannot be handled (undecodable, invalid, unknown tenant or number, oversize)
//! goes to `kafka.dlq_topic` with its original topic, partition, offset and key and the error in
//! headers; one bad message in a webhook payload dead-letters that message only.
//!
//! **Ownership.** A tenant lives on one partition number of every topic (`partition`); the
//! group's range assignor gives partition `p` of all input topics to one replica, which owns
//! the tenants of `p`. A record found on another partition than its tenant's is moved there
//! (produced again, keyed by tenant) and counted; a webhook payload that names several
//! tenants is copied to each tenant's partition with the tenant in a header.
//!
//! **State and offsets** (the cuts and takeovers are in `handover`). Records are handed to the shards one at a time, in order, and what
//! they cause is produced without waiting (at most `kafka.max_in_flight` records
//! unacknowledged). Offsets are committed only at a **cut** of a partition (every
//! `kafka.snapshot_interval_ms` if it changed, on revoke, on shutdown): once everything
//! produced so far is acknowledged, the partition's tenants' state is written to the state
//! topic with the input offsets it covers (see `state`), then those offsets are committed.
//! **Taking over** a partition (on assignment) reads its last snapshot, restores its tenants,
//! replays the dispatch topic from the snapshot on (the quota changelog: nothing dispatched
//! is forgotten, counted or sent twice), and only then reads its input, from the snapshot's
//! offsets; it serves the partition once what was written to its inputs before the takeover
//! is read (its tenants' time held until then; see `catch_up`). After a crash, the input
//! since the last cut is read again: message-id de-duplication absorbs what was routed twice
//! and idempotency keys what was admitted twice.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::catch_up::Progress;
use super::handover::{Handover, blocking};
use super::health::Watchdog;
use super::outbox::{self, Outbox};
use super::ownership::Ownership;
use super::rebalance::InputContext;
use super::state::StateStore;
use crate::config::{Config, KafkaConfig};
use crate::core::{Command, Inbound, Reply};
use crate::model::TenantId;
use crate::proto;
use crate::runtime::{CallError, Runtime};
use crate::telemetry;
use crate::wire::webhook::{self, Item, NumberDirectory};

use super::TENANT_HEADER;

/// A record the consumer already holds, without waiting (None: none is ready now). The
/// consumer's `recv` is cancellation safe: nothing is lost when it is not ready.
fn ready_now<'a>(
    consumer: &'a StreamConsumer<InputContext>,
) -> Option<rdkafka::error::KafkaResult<BorrowedMessage<'a>>> {
    let mut next = std::pin::pin!(consumer.recv());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::future::Future::poll(next.as_mut(), &mut cx) {
        std::task::Poll::Ready(record) => Some(record),
        std::task::Poll::Pending => None,
    }
}

/// Whether two records are of one topic and partition (a run, in offset order). The topic
/// is compared by librdkafka's handle (one a topic in a client), not by name: a name is read
/// with a `strlen` and a UTF-8 check each time.
fn same_run(a: &BorrowedMessage<'_>, b: &BorrowedMessage<'_>) -> bool {
    a.partition() == b.partition() && std::ptr::eq(a.topic_ptr(), b.topic_ptr())
}

/// What handling one record produces.
enum Output {
    Routed {
        tenant: TenantId,
        /// The `RoutingDecision`, encoded.
        decision: Vec<u8>,
    },
    Dead(DeadLetter),
    /// The record belongs on the tenant's partition: produce it there.
    Move {
        tenant: String,
    },
}

/// An inbound-topic record, checked: a message to route, or what becomes of it instead.
enum Checked {
    Route(Inbound),
    Instead(Output),
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

pub struct KafkaInput {
    config: KafkaConfig,
    consumer: StreamConsumer<InputContext>,
    outbox: Arc<Outbox>,
    runtime: Runtime,
    numbers: NumberDirectory,
    handover: Arc<Handover>,
    configured: HashSet<String>,
    grace: Duration,
}

impl KafkaInput {
    /// `watchdog` hears how the input, its cuts and its takeovers are doing (readiness).
    pub fn new(
        config: &Config,
        runtime: Runtime,
        outbox: Arc<Outbox>,
        ownership: Arc<Ownership>,
        watchdog: Arc<Watchdog>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let k = &config.kafka;
        let mut tenants_of: HashMap<i32, Vec<TenantId>> = HashMap::new();
        for t in &config.tenants {
            tenants_of
                .entry(ownership.partition_of(&t.id))
                .or_default()
                .push(TenantId::new(&t.id));
        }
        let handover = Arc::new(Handover::new(
            k,
            runtime.clone(),
            StateStore::new(k)?,
            outbox.acks().clone(),
            ownership,
            tenants_of,
            watchdog,
        ));
        let mut settings = super::consumer_config(k, &k.group_id);
        // Offsets are committed at cuts only (module docs); partition p of every input topic
        // goes to the same replica (they share tenants).
        settings.set("partition.assignment.strategy", "range");
        if k.statistics_interval_ms > 0 {
            settings.set(
                "statistics.interval.ms",
                k.statistics_interval_ms.to_string(),
            );
        }
        let context = InputContext::new(handover.clone());
        let consumer: StreamConsumer<InputContext> = settings.create_with_context(context)?;
        consumer.subscribe(&[
            &k.inbound_topic,
            &k.webhooks_topic,
            &k.sends_topic,
            &k.outcomes_topic,
        ])?;
        Ok(Self {
            config: k.clone(),
            consumer,
            outbox,
            runtime,
            numbers: NumberDirectory::new(config),
            handover,
            configured: config.tenants.iter().map(|t| t.id.clone()).collect(),
            grace: Duration::from_millis(config.runtime.shutdown_grace_ms),
        })
    }

    /// Consumes until `stop`, then snapshots what it owns, commits and leaves the group.
    pub async fn run(self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.config.snapshot_interval_ms);
        let max_age = Duration::from_millis(self.config.snapshot_max_age_ms);
        // A periodic cut's snapshot waits this long at most, in the background, for the
        // outputs before it to be acknowledged; then it is tried again at the next interval.
        let cut_wait = Duration::from_millis(self.config.revoke_drain_ms);
        let mut cuts = tokio::time::interval(interval);
        cuts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut read = telemetry::TopicRecords::read();
        loop {
            let acks = self.outbox.acks();
            let full = acks.issued() - acks.through() >= self.config.max_in_flight as u64;
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = cuts.tick() => {
                    blocking(|| self.handover.retry_takeovers(&self.consumer));
                    for (partition, progress) in blocking(|| self.handover.check_positions(&self.consumer)) {
                        self.on_progress(partition, progress);
                    }
                    // Taken here, between records; written in the background (the input goes
                    // on), committed here when written.
                    let due = self.handover.due(max_age);
                    match blocking(|| self.handover.take_cut(&self.consumer, &due, true)) {
                        Ok(taken) => {
                            self.handover.writing(&due);
                            for cut in taken {
                                let (handover, done) = (self.handover.clone(), done_tx.clone());
                                tokio::spawn(async move {
                                    let partition = cut.partition;
                                    let result = handover.write_cut(cut, cut_wait).await;
                                    handover.written(partition);
                                    let _ = done.send((partition, result));
                                });
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "snapshot not taken; retrying at the next interval");
                            self.handover.watchdog.cut_failed(&e.to_string());
                            for &p in &due {
                                self.handover.ownership.touch(p);
                                self.handover.lost(p);
                            }
                        }
                    }
                }
                Some((partition, result)) = done_rx.recv() => match result {
                    Ok(written) => self.handover.commit(&self.consumer, written),
                    Err(e) => {
                        tracing::warn!(error = %e, partition, "snapshot not written; retrying at the next interval");
                        self.handover.watchdog.cut_failed(&e.to_string());
                        self.handover.ownership.touch(partition);
                        self.handover.lost(partition);
                    }
                },
                // Full: room comes back with the next acknowledgement. (In an async block:
                // select! evaluates a disabled branch's expression too, and `settled` registers
                // its waiter when called.)
                settled = async { acks.settled(acks.through() + 1).await }, if full => {
                    if settled.is_err() {
                        break;
                    }
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
                    // With it, the records already fetched, up to the in-flight room: handled
                    // together, in order (one hand-off to the shards for a run of messages).
                    let room = (self.config.max_in_flight as u64)
                        .saturating_sub(acks.issued() - acks.through())
                        .clamp(1, self.config.input_batch as u64) as usize;
                    let rebalances = self.handover.rebalances();
                    // Held from the first record of each run of one topic and partition (the
                    // handover keeps a pair's first offset only).
                    let hold = |m: &BorrowedMessage<'_>, last: Option<&BorrowedMessage<'_>>| {
                        if last.is_none_or(|l| !same_run(l, m)) {
                            self.handover.hold(m.topic(), m.partition(), m.offset());
                        }
                    };
                    hold(&message, None);
                    let mut records = vec![message];
                    while records.len() < room {
                        match ready_now(&self.consumer) {
                            Some(Ok(m)) => {
                                hold(&m, records.last());
                                records.push(m);
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "kafka consume error; retrying");
                                break;
                            }
                            None => break,
                        }
                    }
                    if self.handover.rebalances() != rebalances {
                        // A rebalance ran while these were held: its cuts left them to be read
                        // again (by their new owner, or here after the new assignment).
                        self.handover.unhold();
                        tracing::info!(records = records.len(), "records read during a rebalance are left to be read again");
                        continue;
                    }
                    let handled = self.handle_all(&records).await;
                    self.handover.unhold();
                    if handled.is_err() {
                        break; // stopping: these records are read again after restart
                    }
                    self.handover.watchdog.record_read();
                    // Once a run: its last record says how far the partition's topic is read.
                    for run in records.chunk_by(same_run) {
                        let last = &run[run.len() - 1];
                        let (topic, partition) = (last.topic(), last.partition());
                        read.add(topic, run.len() as u64);
                        self.handover.ownership.touch(partition);
                        let progress = self.handover.read_up_to(topic, partition, last.offset());
                        self.on_progress(partition, progress);
                    }
                }
            }
        }
        let taken = self.handover.ownership.taken();
        let last = self.outbox.acks().issued();
        if tokio::time::timeout(self.grace, self.outbox.acks().settled(last))
            .await
            .is_err()
        {
            tracing::warn!("outputs not acknowledged within the grace period");
        }
        let cut = blocking(|| self.handover.cut(&self.consumer, &taken));
        telemetry::kafka_handed_over(&taken, cut.as_ref().err());
        blocking(|| self.handover.release(&taken));
        // Leave the group now, so its partitions go to another member at once instead of
        // after the session timeout (and so that the consumer's close has nothing to revoke).
        super::leave_group(&self.consumer, self.grace).await;
        tracing::info!("kafka input stopped");
    }

    /// Acts on a partition's catch-up progress (see `Handover::read_up_to`): reads its send
    /// requests once the earlier inbound messages are read, serves it once everything
    /// written before its takeover is.
    fn on_progress(&self, partition: i32, progress: Progress) {
        if progress == Progress::Reading {
            return;
        }
        let mut sends = TopicPartitionList::new();
        let _ = sends.add_partition_offset(&self.config.sends_topic, partition, Offset::Invalid);
        if let Err(e) = self.consumer.resume(&sends) {
            tracing::error!(error = %e, partition, "send requests not resumed");
        }
        if progress == Progress::CaughtUp {
            blocking(|| self.handover.caught_up(partition));
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
            let copy_for = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == TENANT_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            self.webhook(payload, m.partition(), copy_for).await?
        } else if m.topic() == self.config.outcomes_topic {
            self.outcome(payload, m.partition())
                .await?
                .into_iter()
                .collect()
        } else if m.topic() == self.config.sends_topic {
            let kind = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == super::KIND_HEADER)
                    .and_then(|h| h.value)
            });
            let output = match kind {
                None => self.send_request(payload, m.partition()).await?,
                Some(kind) => self.journaled(kind, payload, m.partition()).await?,
            };
            output.into_iter().collect()
        } else {
            vec![self.inbound(payload, m.partition()).await?]
        };
        self.emit(m, payload, outputs);
        Ok(())
    }

    /// Handles ready records in order: runs of inbound messages go to the shards together
    /// (one hand-off per shard for the run, `Runtime::call_many`), anything else one by one.
    async fn handle_all(&self, records: &[BorrowedMessage<'_>]) -> Result<(), Stopping> {
        let batched = |m: &BorrowedMessage<'_>| {
            m.topic() == self.config.inbound_topic
                && m.payload().unwrap_or_default().len() <= self.config.max_record_bytes
        };
        let mut at = 0;
        while at < records.len() {
            let run = records[at..].iter().take_while(|m| batched(m)).count();
            if run > 1 {
                self.inbound_run(&records[at..at + run]).await?;
                at += run;
            } else {
                self.handle(&records[at]).await?;
                at += 1;
            }
        }
        Ok(())
    }

    /// A run of inbound-topic records: decoded and checked one by one, routed together,
    /// produced in order.
    async fn inbound_run(&self, records: &[BorrowedMessage<'_>]) -> Result<(), Stopping> {
        let mut outputs: Vec<Option<Output>> = Vec::with_capacity(records.len());
        let (mut commands, mut routed) = (Vec::new(), Vec::new());
        for (at, m) in records.iter().enumerate() {
            match self.inbound_checked(m.payload().unwrap_or_default(), m.partition()) {
                Checked::Route(inbound) => {
                    routed.push((
                        at,
                        inbound.tenant.clone(),
                        inbound.provider_message_id.clone(),
                    ));
                    commands.push(Command::Ingest(inbound));
                    outputs.push(None);
                }
                Checked::Instead(output) => outputs.push(Some(output)),
            }
        }
        let replies = self.runtime.call_many(commands).await;
        for ((at, tenant, id), reply) in routed.into_iter().zip(replies) {
            outputs[at] = Some(routed_output(reply, tenant, id)?);
        }
        for (m, output) in records.iter().zip(outputs) {
            let output = output.expect("every record has its output");
            self.emit(m, m.payload().unwrap_or_default(), vec![output]);
        }
        Ok(())
    }

    /// Produces what handling `m` caused (without waiting).
    fn emit(&self, m: &BorrowedMessage<'_>, payload: &[u8], outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Routed { tenant, decision } => {
                    self.outbox.produce(
                        &self.config.routed_topic,
                        Some(tenant.as_str().as_bytes()),
                        &decision,
                        None,
                    );
                }
                Output::Dead(dead) => self.dead_letter(m, payload, dead),
                Output::Move { tenant } => {
                    telemetry::kafka_moved(m.topic());
                    let mut headers = OwnedHeaders::new();
                    if let Some(h) = m.headers() {
                        for h in h.iter().filter(|h| h.key != TENANT_HEADER) {
                            headers = headers.insert(h);
                        }
                    }
                    if m.topic() == self.config.webhooks_topic {
                        headers = headers.insert(header(TENANT_HEADER, tenant.as_bytes()));
                    }
                    // Keyed by tenant: the partitioner puts it on the tenant's partition.
                    self.outbox
                        .produce(m.topic(), Some(tenant.as_bytes()), payload, Some(headers));
                }
            }
        }
    }

    /// The tenant's partition, if it is configured here and is not `partition` (the record
    /// must move). An unknown tenant stays: it is dead-lettered where it is.
    fn misplaced(&self, tenant: &str, partition: i32) -> bool {
        self.configured.contains(tenant)
            && self.handover.ownership.partition_of(tenant) != partition
    }

    fn dead_letter(&self, m: &BorrowedMessage<'_>, payload: &[u8], dead: DeadLetter) {
        telemetry::kafka_dead_letter(
            dead.reason,
            &dead.error,
            m.topic(),
            m.partition(),
            m.offset(),
        );
        let origin = outbox::Origin {
            topic: m.topic(),
            at: Some((m.partition(), m.offset())),
            key: m.key(),
            reason: dead.reason,
            error: &dead.error,
            item: dead.item.as_deref(),
        };
        self.outbox.dead_letter(&origin, payload);
    }

    async fn inbound(&self, payload: &[u8], partition: i32) -> Result<Output, Stopping> {
        match self.inbound_checked(payload, partition) {
            Checked::Route(inbound) => self.route(inbound).await,
            Checked::Instead(output) => Ok(output),
        }
    }

    /// An inbound-topic record as a message to route, or what becomes of it instead (dead
    /// letter, move to its tenant's partition).
    fn inbound_checked(&self, payload: &[u8], partition: i32) -> Checked {
        let message = match proto::InboundMessage::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                return Checked::Instead(Output::Dead(DeadLetter::new(
                    "undecodable",
                    format!("not a switchboard.v1.InboundMessage: {e}"),
                )));
            }
        };
        match crate::wire::inbound_in(message) {
            Ok(inbound) if self.misplaced(inbound.tenant.as_str(), partition) => {
                Checked::Instead(Output::Move {
                    tenant: inbound.tenant.to_string(),
                })
            }
            Ok(inbound) => Checked::Route(inbound),
            Err(e) => Checked::Instead(Output::Dead(DeadLetter::new("invalid", e.to_string()))),
        }
    }

    /// Handles the messages and statuses of tenants that live on `partition`; a payload that
    /// also names other tenants is copied to their partitions (`copy_for`: this record is such
    /// a copy, for that tenant only).
    async fn webhook(
        &self,
        payload: &[u8],
        partition: i32,
        copy_for: Option<String>,
    ) -> Result<Vec<Output>, Stopping> {
        let batch = match webhook::parse(payload) {
            Ok(b) => b,
            Err(e) => {
                return Ok(vec![Output::Dead(DeadLetter::new(
                    e.reason(),
                    e.to_string(),
                ))]);
            }
        };
        let mut elsewhere = BTreeSet::new();
        // Handled here: the tenant lives on this partition (and is the copy's, for a copy).
        let here = |tenant: &TenantId| {
            if copy_for.as_deref().is_some_and(|c| c != tenant.as_str()) {
                false
            } else if self.misplaced(tenant.as_str(), partition) {
                elsewhere.insert(tenant.to_string());
                false
            } else {
                true
            }
        };
        let items = self.numbers.plan(batch, here);
        let mut outputs = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Route(inbound) => {
                    let wamid = inbound.provider_message_id.clone();
                    outputs.push(match self.route(inbound).await? {
                        Output::Dead(dead) => Output::Dead(DeadLetter {
                            item: Some(wamid),
                            ..dead
                        }),
                        routed => routed,
                    });
                }
                Item::Dead { wamid, error } => outputs.push(Output::Dead(DeadLetter {
                    reason: error.reason(),
                    error: error.to_string(),
                    item: Some(wamid),
                })),
                Item::Skip(why) => telemetry::kafka_status(why),
                Item::Status {
                    tenant,
                    id,
                    outcome,
                } => {
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
                        Err(e) => {
                            tracing::warn!(error = %e, "webhook status not fed back");
                            telemetry::kafka_status("unmatched");
                        }
                    }
                }
            }
        }
        if copy_for.is_none() {
            outputs.extend(elsewhere.into_iter().map(|tenant| Output::Move { tenant }));
        }
        Ok(outputs)
    }

    /// Applies the egress's answer about a dispatch, as a status webhook is applied.
    async fn outcome(&self, payload: &[u8], partition: i32) -> Result<Option<Output>, Stopping> {
        let outcome = proto::SendOutcome::decode(payload)
            .map_err(|e| format!("not a switchboard.v1.SendOutcome: {e}"))
            .and_then(|o| crate::wire::outcome_in(&o).map_err(|e| e.to_string()));
        let (tenant, id, outcome) = match outcome {
            Ok(o) => o,
            Err(e) => return Ok(Some(Output::Dead(DeadLetter::new("undecodable", e)))),
        };
        if self.misplaced(tenant.as_str(), partition) {
            return Ok(Some(Output::Move {
                tenant: tenant.to_string(),
            }));
        }
        let command = Command::ProviderResult {
            tenant,
            id,
            outcome,
        };
        match self.runtime.call(command).await {
            Ok(_) => telemetry::kafka_outcome("applied"),
            // A send this replica does not know (forgotten, or of an unknown tenant).
            Err(CallError::Core(_)) => telemetry::kafka_outcome("unknown_send"),
            Err(CallError::Unavailable) => return Err(Stopping),
            Err(e) => {
                tracing::warn!(error = %e, "send outcome not applied");
                telemetry::kafka_outcome("unknown_send");
            }
        }
        Ok(None)
    }

    /// Admits a send request; returns a dead letter if it cannot be read or admitted.
    async fn send_request(
        &self,
        payload: &[u8],
        partition: i32,
    ) -> Result<Option<Output>, Stopping> {
        let request = match proto::SendRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Some(Output::Dead(DeadLetter::new(
                    "undecodable",
                    format!("not a switchboard.v1.SendRequest: {e}"),
                ))));
            }
        };
        let send = match crate::wire::send_in(request) {
            Ok(send) => send,
            Err(e) => {
                return Ok(Some(Output::Dead(DeadLetter::new(
                    "invalid",
                    e.to_string(),
                ))));
            }
        };
        if self.misplaced(send.tenant.as_str(), partition) {
            return Ok(Some(Output::Move {
                tenant: send.tenant.to_string(),
            }));
        }
        match self.runtime.call(Command::Send(send)).await {
            // Dispatched, queued or refused: the status topic says which (through the sink).
            Ok(_) => Ok(None),
            Err(CallError::Core(e)) => Ok(Some(Output::Dead(DeadLetter::new(
                telemetry::error_type(&e),
                e.to_string(),
            )))),
            Err(CallError::Unavailable) => Err(Stopping),
            Err(e) => Ok(Some(Output::Dead(DeadLetter::new(
                "internal",
                e.to_string(),
            )))),
        }
    }

    /// Applies a cancel or a consent of the sends topic (journaled by the gRPC `Cancel` and
    /// `SetConsent`, or another service's); a dead letter if it cannot be read or done.
    async fn journaled(
        &self,
        kind: &[u8],
        payload: &[u8],
        partition: i32,
    ) -> Result<Option<Output>, Stopping> {
        use crate::wire::customers::{link_in, update_profile_in};
        use crate::wire::lifecycle::{cancel_in, pause_in, resume_in, set_consent_in};
        fn read<M: prost::Message + Default>(
            payload: &[u8],
            name: &str,
            convert: impl FnOnce(M) -> Result<Command, crate::wire::Invalid>,
        ) -> Result<Command, DeadLetter> {
            let message = M::decode(payload).map_err(|e| {
                DeadLetter::new("undecodable", format!("not a switchboard.v1.{name}: {e}"))
            })?;
            convert(message).map_err(|e| DeadLetter::new("invalid", e.to_string()))
        }
        let command = if kind == super::KIND_CANCEL.as_bytes() {
            read(payload, "CancelRequest", cancel_in)
        } else if kind == super::KIND_CONSENT.as_bytes() {
            read(payload, "SetConsentRequest", set_consent_in)
        } else if kind == super::KIND_LINK.as_bytes() {
            read(payload, "LinkRequest", link_in)
        } else if kind == super::KIND_PROFILE.as_bytes() {
            read(payload, "UpdateProfileRequest", update_profile_in)
        } else if kind == super::KIND_PAUSE.as_bytes() {
            read(payload, "PauseRequest", |r: proto::PauseRequest| {
                let actor = r.actor.clone();
                pause_in(r, actor)
            })
        } else if kind == super::KIND_RESUME.as_bytes() {
            read(payload, "ResumeRequest", |r: proto::ResumeRequest| {
                let actor = r.actor.clone();
                resume_in(r, actor)
            })
        } else {
            Err(DeadLetter::new(
                "invalid",
                format!(
                    "unknown {} header {:?}: use {:?}, {:?}, {:?}, {:?}, {:?} or {:?}, or none for a SendRequest",
                    super::KIND_HEADER,
                    String::from_utf8_lossy(kind),
                    super::KIND_CANCEL,
                    super::KIND_CONSENT,
                    super::KIND_LINK,
                    super::KIND_PROFILE,
                    super::KIND_PAUSE,
                    super::KIND_RESUME,
                ),
            ))
        };
        let command = match command {
            Ok(c) => c,
            Err(dead) => return Ok(Some(Output::Dead(dead))),
        };
        let tenant = command.tenant().map(|t| t.to_string()).unwrap_or_default();
        if self.misplaced(&tenant, partition) {
            return Ok(Some(Output::Move { tenant }));
        }
        match self.runtime.call(command).await {
            Ok(_) => Ok(None),
            Err(CallError::Core(e)) => Ok(Some(Output::Dead(DeadLetter::new(
                telemetry::error_type(&e),
                e.to_string(),
            )))),
            Err(CallError::Unavailable) => Err(Stopping),
            Err(e) => Ok(Some(Output::Dead(DeadLetter::new(
                "internal",
                e.to_string(),
            )))),
        }
    }

    async fn route(&self, inbound: Inbound) -> Result<Output, Stopping> {
        let tenant = inbound.tenant.clone();
        let id = inbound.provider_message_id.clone();
        routed_output(
            self.runtime.call(Command::Ingest(inbound)).await,
            tenant,
            id,
        )
    }
}

/// What routing a message answered, as an output: the decision (with the message's id), or
/// a dead letter; `Stopping` when the shards are gone.
fn routed_output(
    reply: Result<Reply, CallError>,
    tenant: TenantId,
    id: String,
) -> Result<Output, Stopping> {
    match reply {
        Ok(Reply::Decision(d)) => {
            let mut decision = Vec::with_capacity(192);
            crate::wire::encode::routing_decision(&d, &id, &mut decision);
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
        Err(e) => Ok(Output::Dead(DeadLetter::new("internal", e.to_string()))),
    }
}

fn header<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value),
    }
}
