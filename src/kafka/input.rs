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
//! **Ownership.** A tenant lives on one partition number of every topic (`partition`); the
//! group's range assignor gives partition `p` of all input topics to one replica, which owns
//! the tenants of `p`. A record found on another partition than its tenant's is moved there
//! (produced again, keyed by tenant) and counted; a webhook payload that names several
//! tenants is copied to each tenant's partition with the tenant in a header.
//!
//! **State and offsets.** Records are handed to the shards one at a time, in order, and what
//! they cause is produced without waiting (at most `kafka.max_in_flight` records
//! unacknowledged). Offsets are committed only at a **cut** of a partition (every
//! `kafka.snapshot_interval_ms` if it changed, on revoke, on shutdown): once everything
//! produced so far is acknowledged, the partition's tenants' state is written to the state
//! topic with the input offsets it covers (see `state`), then those offsets are committed.
//! **Taking over** a partition (on assignment) reads its last snapshot, restores its tenants,
//! replays the dispatch topic from the snapshot on (the quota changelog: nothing dispatched
//! is forgotten, counted or sent twice), and only then reads its input, from the snapshot's
//! offsets. After a crash, the input since the last cut is read again: message-id
//! de-duplication absorbs what was routed twice and idempotency keys what was admitted twice.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::sync::CancellationToken;

use super::health::Watchdog;
use super::outbox::{self, Acks, Outbox};
use super::ownership::Ownership;
use super::sink::parse_callback;
use super::state::StateStore;
use crate::config::{Config, KafkaConfig};
use crate::core::{Command, Inbound, Reply, TenantState};
use crate::model::TenantId;
use crate::proto;
use crate::runtime::{CallError, Runtime};
use crate::telemetry;
use crate::webhook::{self, NumberDirectory};

/// The header naming the tenant a copied webhook payload is for.
const TENANT_HEADER: &str = "switchboard.tenant";

/// What handling one record produces.
enum Output {
    Routed {
        tenant: String,
        decision: proto::RoutingDecision,
    },
    Dead(DeadLetter),
    /// The record belongs on the tenant's partition: produce it there.
    Move {
        tenant: String,
    },
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

/// The state behind each lock here is updated in place and never left half-done.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("no panic while holding a Kafka input lock")
}

/// Runs blocking work (Kafka reads and writes, waiting for the shards) from wherever the
/// input is: a rebalance callback on a tokio worker (the consumer polls inside `recv`), or the
/// input loop itself. It needs tokio's multi-thread runtime there.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => {
            panic!("the Kafka input needs tokio's multi-thread runtime")
        }
        Ok(_) => tokio::task::block_in_place(f),
        Err(_) => f(),
    }
}

/// Why taking over or handing over a partition failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(transparent)]
    State(#[from] super::state::StateError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("tenant {tenant:?}: {error}")]
    Tenant { tenant: String, error: String },
    #[error(
        "the outputs produced so far were not all acknowledged by the broker within {} ms",
        .0.as_millis()
    )]
    Unacknowledged(Duration),
    #[error("the service is stopping")]
    Stopping,
}

/// (input topic, next offset to read) of one partition.
type Positions = Vec<(String, i64)>;

/// The last snapshot of an owned partition.
struct LastCut {
    at: Instant,
    inputs: Positions,
    /// Which ownership of the partition this is (a takeover starts a new one).
    epoch: u64,
}

/// A cut taken, to be written.
struct Cut {
    partition: i32,
    epoch: u64,
    inputs: Positions,
    dispatch: i64,
    states: Vec<(String, Box<TenantState>)>,
    started: Instant,
}

/// A cut written to the state topic, its offsets to commit.
struct Written {
    partition: i32,
    epoch: u64,
    inputs: Positions,
    bytes: usize,
    started: Instant,
}

/// Taking partitions over and handing them over: shared by the input loop and the rebalance
/// callbacks.
struct Handover {
    config: KafkaConfig,
    runtime: Runtime,
    store: StateStore,
    acks: Arc<Acks>,
    ownership: Arc<Ownership>,
    /// The configured tenants of each partition.
    tenants_of: HashMap<i32, Vec<TenantId>>,
    handle: Handle,
    /// Per owned partition: its last snapshot.
    cuts: Mutex<HashMap<i32, LastCut>>,
    /// Takeovers so far (each starts an epoch).
    epochs: std::sync::atomic::AtomicU64,
    /// Partitions whose snapshot is being written in the background.
    writing: Mutex<HashSet<i32>>,
    written: std::sync::Condvar,
    /// Partitions taken over whose send requests wait until the inbound messages and webhooks
    /// that were already there are read: (topic, high watermark at the takeover) still ahead.
    catching_up: Mutex<HashMap<i32, Vec<(String, i64)>>>,
    /// Partitions whose takeover failed: their input is paused and the takeover is tried
    /// again at each snapshot interval (never run a tenant without its state).
    failed: Mutex<BTreeSet<i32>>,
    /// Readiness: what the input, the cuts and the takeovers report (see `health`).
    watchdog: Arc<Watchdog>,
}

impl Handover {
    fn inputs(&self) -> [&str; 3] {
        [
            &self.config.inbound_topic,
            &self.config.webhooks_topic,
            &self.config.sends_topic,
        ]
    }

    fn tenants(&self, partition: i32) -> &[TenantId] {
        self.tenants_of.get(&partition).map_or(&[], Vec::as_slice)
    }

    /// A shard call from blocking code.
    fn call(&self, command: Command) -> Result<Reply, HandoverError> {
        let tenant = command.tenant().map(|t| t.to_string()).unwrap_or_default();
        match self.handle.block_on(self.runtime.call(command)) {
            Ok(reply) => Ok(reply),
            Err(CallError::Unavailable) => Err(HandoverError::Stopping),
            Err(e) => Err(HandoverError::Tenant {
                tenant,
                error: e.to_string(),
            }),
        }
    }

    /// Takes `partition` over: restores its tenants from the last snapshot and the dispatches
    /// since, and returns the input offsets to read from. Blocking.
    fn take_over(&self, partition: i32) -> Result<Positions, HandoverError> {
        let started = Instant::now();
        let snapshot = self.store.read(partition)?;
        let mut states: HashMap<String, Vec<u8>> = HashMap::new();
        let (mut inputs, mut from, mut bytes) = (Vec::new(), None, 0);
        if let Some(s) = snapshot {
            bytes = s.bytes;
            inputs = s.manifest.inputs;
            from = Some(s.manifest.dispatch);
            states.extend(s.tenants);
        }
        for tenant in self.tenants(partition) {
            let state = match states.remove(tenant.as_str()) {
                Some(json) => Some(Box::new(
                    serde_json::from_slice::<TenantState>(&json).map_err(|e| {
                        HandoverError::Tenant {
                            tenant: tenant.to_string(),
                            error: format!("saved state unreadable: {e}"),
                        }
                    })?,
                )),
                None => None,
            };
            self.call(Command::RestoreState {
                tenant: tenant.clone(),
                state,
            })?;
        }
        for tenant in states.keys() {
            tracing::warn!(
                tenant,
                partition,
                "saved state of a tenant no longer configured here; skipped"
            );
        }
        // The dispatch topic since the snapshot (all of it without one): what was dispatched
        // after the state was taken.
        let topic = &self.config.dispatch_topic;
        let (low, high) = self.store.end_of(topic, partition)?;
        let mut dispatches = Vec::new();
        self.store
            .scan_topic(topic, partition, from.unwrap_or(low).max(low), high, |m| {
                match proto::Dispatch::decode(m.payload().unwrap_or_default()) {
                    Ok(d) => dispatches.push(d),
                    Err(e) => tracing::warn!(error = %e, offset = m.offset(), "undecodable dispatch record skipped"),
                }
            })?;
        let replayed = dispatches.len() as u64;
        for d in dispatches {
            let Some(tenant) = self
                .tenants(partition)
                .iter()
                .find(|t| t.as_str() == d.tenant)
            else {
                continue;
            };
            let tenant = tenant.clone();
            let dispatch = super::sink::dispatch_in(&d).map_err(|error| HandoverError::Tenant {
                tenant: tenant.to_string(),
                error,
            })?;
            self.call(Command::ReplayDispatch {
                tenant,
                dispatch: Box::new(dispatch),
            })?;
        }
        // Windows opened and provider answers given before the takeover come first: send
        // requests wait until the inbound and webhook records already there are read (the
        // topics are read independently, and a replay can be long).
        let mut ahead = Vec::new();
        for topic in [&self.config.inbound_topic, &self.config.webhooks_topic] {
            let (low, high) = self.store.end_of(topic, partition)?;
            let from = inputs
                .iter()
                .find(|(t, _)| t == topic)
                .map_or(low, |&(_, o)| o.max(low));
            if from < high {
                ahead.push((topic.clone(), high));
            }
        }
        if !ahead.is_empty() {
            lock(&self.catching_up).insert(partition, ahead);
        }
        let epoch = self
            .epochs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.cuts).insert(
            partition,
            LastCut {
                at: Instant::now(),
                inputs: inputs.clone(),
                epoch,
            },
        );
        self.ownership.ready(partition);
        lock(&self.failed).remove(&partition);
        self.watchdog.takeover_cleared(partition);
        let me = self.ownership.me();
        if !me.is_empty()
            && let Err(e) = self.handle.block_on(self.store.announce(
                &self.config.owners_topic,
                partition,
                me,
            ))
        {
            // Calls forwarded here wait for the next takeover's announcement; ours still work.
            tracing::warn!(error = %e, partition, "ownership not announced");
        }
        telemetry::kafka_restore(started.elapsed(), bytes, replayed);
        telemetry::kafka_handover("in");
        tracing::info!(
            partition,
            tenants = self.tenants(partition).len(),
            bytes,
            replayed,
            ms = started.elapsed().as_millis() as u64,
            "partition taken over"
        );
        Ok(inputs)
    }

    /// Takes a cut of `partitions` (blocking, short): once everything produced so far is
    /// acknowledged (waiting at most `wait`), the input positions, the dispatch topic's end
    /// and each tenant's state.
    fn take_cut<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
        wait: Duration,
    ) -> Result<Vec<Cut>, HandoverError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        if !self.acks.wait_blocking(self.acks.issued(), wait) {
            return Err(HandoverError::Unacknowledged(wait));
        }
        let positions = consumer.position()?;
        let mut cuts = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let started = Instant::now();
            let (_, dispatch) = self.store.end_of(&self.config.dispatch_topic, partition)?;
            let (mut inputs, epoch) = lock(&self.cuts)
                .get(&partition)
                .map(|c| (c.inputs.clone(), c.epoch))
                .unwrap_or_default();
            for topic in self.inputs() {
                let read =
                    positions
                        .find_partition(topic, partition)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                if let Some(o) = read {
                    inputs.retain(|(t, _)| t != topic);
                    inputs.push((topic.to_owned(), o));
                }
            }
            let mut states = Vec::new();
            for tenant in self.tenants(partition) {
                let Reply::State(state) = self.call(Command::SaveState {
                    tenant: tenant.clone(),
                })?
                else {
                    unreachable!("SaveState answers with a state");
                };
                states.push((tenant.to_string(), state));
            }
            cuts.push(Cut {
                partition,
                epoch,
                inputs,
                dispatch,
                states,
                started,
            });
        }
        Ok(cuts)
    }

    /// Writes a cut's snapshot to the state topic (serializing off the async threads).
    async fn write_cut(&self, cut: Cut) -> Result<Written, HandoverError> {
        let Cut {
            partition,
            epoch,
            inputs,
            dispatch,
            states,
            started,
        } = cut;
        let tenants = tokio::task::spawn_blocking(move || {
            states
                .into_iter()
                .map(|(t, state)| {
                    let json = serde_json::to_vec(&state).expect("a tenant state serializes");
                    (t, json)
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("serializing does not panic");
        let bytes = tenants.iter().map(|(_, json)| json.len()).sum();
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.store
            .write(partition, at, inputs.clone(), dispatch, tenants)
            .await?;
        Ok(Written {
            partition,
            epoch,
            inputs,
            bytes,
            started,
        })
    }

    /// Commits the offsets a written snapshot covers, unless the partition changed hands
    /// since the cut was taken (then a later cut covers it).
    fn commit<C: ConsumerContext>(&self, consumer: &impl Consumer<C>, written: Written) {
        let partition = written.partition;
        {
            let mut cuts = lock(&self.cuts);
            match cuts.get_mut(&partition) {
                Some(c) if c.epoch == written.epoch => {
                    c.at = Instant::now();
                    c.inputs = written.inputs.clone();
                }
                _ => return,
            }
        }
        let mut list = TopicPartitionList::new();
        for (topic, offset) in &written.inputs {
            let _ = list.add_partition_offset(topic, partition, Offset::Offset(*offset));
        }
        if list.count() > 0 {
            // The snapshot holds the offsets; the group's are for lag and a fallback.
            let committed = consumer.commit(&list, CommitMode::Sync);
            if let Err(e) = &committed {
                tracing::debug!(error = %e, partition, "offset commit after the snapshot refused");
            }
            telemetry::kafka_commit(committed.is_ok());
        }
        self.watchdog.cut_written();
        tracing::debug!(partition, inputs = ?written.inputs, bytes = written.bytes, "snapshot written");
        telemetry::kafka_snapshot(written.started.elapsed(), written.bytes);
    }

    /// Snapshots `partitions` and commits their offsets, all before it returns (a revoke or
    /// a shutdown), after any snapshot of theirs still being written in the background.
    /// Blocking.
    fn cut<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
    ) -> Result<(), HandoverError> {
        self.wait_written(partitions);
        let drain = Duration::from_millis(self.config.revoke_drain_ms);
        for cut in self.take_cut(consumer, partitions, drain)? {
            let written = self.handle.block_on(self.write_cut(cut))?;
            self.commit(consumer, written);
        }
        Ok(())
    }

    /// Marks partitions as having a snapshot written in the background.
    fn writing(&self, partitions: &[i32]) {
        lock(&self.writing).extend(partitions);
    }

    /// A background snapshot of `partition` is done (written or not).
    fn written(&self, partition: i32) {
        lock(&self.writing).remove(&partition);
        self.written.notify_all();
    }

    /// Waits (bounded by `kafka.revoke_drain_ms`) until no snapshot of `partitions` is being
    /// written in the background, so the next one lands after it.
    fn wait_written(&self, partitions: &[i32]) {
        let drain = Duration::from_millis(self.config.revoke_drain_ms);
        let writing = lock(&self.writing);
        let (writing, timeout) = self
            .written
            .wait_timeout_while(writing, drain, |w| partitions.iter().any(|p| w.contains(p)))
            .expect("no panic while holding the snapshot lock");
        drop(writing);
        if timeout.timed_out() {
            tracing::warn!(
                "a background snapshot did not finish in time; writing the next one anyway"
            );
        }
    }

    /// The send requests of `partition` that wait for its catch-up (see `take_over`).
    fn held_sends(&self, partition: i32) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        if lock(&self.catching_up).contains_key(&partition) {
            let _ = list.add_partition_offset(&self.config.sends_topic, partition, Offset::Invalid);
        }
        list
    }

    /// Notes that a record of `topic` at `offset` was read; true when that completes the
    /// partition's catch-up (its send requests may be read now).
    fn read_up_to(&self, topic: &str, partition: i32, offset: i64) -> bool {
        let mut catching_up = lock(&self.catching_up);
        let Some(ahead) = catching_up.get_mut(&partition) else {
            return false;
        };
        ahead.retain(|(t, high)| !(t == topic && offset + 1 >= *high));
        if ahead.is_empty() {
            catching_up.remove(&partition);
            return true;
        }
        false
    }

    /// Empties the tenants of partitions this replica no longer owns.
    fn release(&self, partitions: &[i32]) {
        for &partition in partitions {
            self.ownership.released(partition);
            lock(&self.cuts).remove(&partition);
            lock(&self.catching_up).remove(&partition);
            for tenant in self.tenants(partition) {
                let command = Command::RestoreState {
                    tenant: tenant.clone(),
                    state: None,
                };
                if let Err(e) = self.call(command) {
                    tracing::debug!(error = %e, "tenant not emptied (stopping)");
                }
            }
        }
        self.gauges();
    }

    /// A takeover failed: the partition's input stays paused, readiness says why, and the
    /// takeover is tried again at each snapshot interval (`retry_takeovers`).
    fn takeover_failed(&self, partition: i32, e: &HandoverError) {
        tracing::error!(partition, error = %e, "cannot take the partition over; its input waits and the takeover is tried again at each snapshot interval");
        self.ownership.failed(partition);
        lock(&self.failed).insert(partition);
        self.watchdog.takeover_failed(partition, &e.to_string());
    }

    /// The partition is no longer this replica's: nothing to retry.
    fn forget_failed(&self, partition: i32) {
        if lock(&self.failed).remove(&partition) {
            self.watchdog.takeover_cleared(partition);
        }
    }

    /// Tries the failed takeovers again; a partition taken over now reads its input from the
    /// snapshot's offsets (it was paused where the group's committed offsets are). Blocking.
    fn retry_takeovers<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) {
        let failed: Vec<i32> = lock(&self.failed).iter().copied().collect();
        for partition in failed {
            let inputs = match self.take_over(partition) {
                Ok(inputs) => inputs,
                Err(e) => {
                    self.takeover_failed(partition, &e);
                    continue;
                }
            };
            let timeout = Duration::from_millis(self.config.produce_timeout_ms);
            let mut resume = TopicPartitionList::new();
            for topic in self.inputs() {
                if let Some(&(_, offset)) = inputs.iter().find(|(t, _)| t == topic)
                    && let Err(e) = consumer.seek(topic, partition, Offset::Offset(offset), timeout)
                {
                    tracing::error!(partition, topic, error = %e, "seek after a late takeover failed; trying again");
                    self.takeover_failed(partition, &HandoverError::Kafka(e));
                    resume = TopicPartitionList::new();
                    break;
                }
                let _ = resume.add_partition_offset(topic, partition, Offset::Invalid);
            }
            if resume.count() == 0 {
                continue;
            }
            if let Err(e) = consumer.resume(&resume) {
                tracing::error!(partition, error = %e, "input not resumed after a late takeover");
            }
            let held = self.held_sends(partition);
            if held.count() > 0 {
                let _ = consumer.pause(&held);
            }
            tracing::info!(
                partition,
                "partition taken over on a later try; its input resumes"
            );
            self.gauges();
        }
    }

    fn gauges(&self) {
        let owned = self.ownership.owned();
        telemetry::kafka_partitions_owned(owned.len());
        let tenants: usize = owned.iter().map(|&p| self.tenants(p).len()).sum();
        telemetry::kafka_tenants_owned(tenants);
    }

    /// The owned partitions due for a snapshot: changed since the last one, or too old.
    fn due(&self, max_age: Duration) -> Vec<i32> {
        let cuts = lock(&self.cuts);
        let oldest = cuts.values().map(|c| c.at.elapsed()).max();
        telemetry::kafka_snapshot_age(oldest.unwrap_or_default());
        let writing = lock(&self.writing);
        self.ownership
            .owned()
            .into_iter()
            .filter(|p| !writing.contains(p))
            .filter(|p| {
                let old = cuts.get(p).is_none_or(|c| c.at.elapsed() >= max_age);
                self.ownership.take_dirty(*p) || old
            })
            .collect()
    }
}

/// Restores assigned partitions before their input is read, snapshots revoked ones, counts
/// rebalances and commits, reports consumer lag.
struct InputContext {
    handover: Arc<Handover>,
}

impl ClientContext for InputContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 is "not known".
                if partition >= 0 && p.consumer_lag >= 0 {
                    telemetry::kafka_lag(topic, partition, p.consumer_lag);
                    if self.handover.ownership.is_owned(partition) {
                        total += p.consumer_lag;
                    }
                }
            }
        }
        self.handover.watchdog.lag(total);
    }
}

impl ConsumerContext for InputContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let h = &self.handover;
        let numbers: BTreeSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                telemetry::kafka_rebalance("assign");
                let mut failed = TopicPartitionList::new();
                for &p in &numbers {
                    match blocking(|| h.take_over(p)) {
                        Ok(inputs) => {
                            for (topic, offset) in inputs {
                                if let Some(mut e) = list.find_partition(&topic, p) {
                                    let _ = e.set_offset(Offset::Offset(offset));
                                }
                            }
                        }
                        Err(e) => {
                            h.takeover_failed(p, &e);
                            for topic in h.inputs() {
                                let _ = failed.add_partition_offset(topic, p, Offset::Invalid);
                            }
                        }
                    }
                }
                if let Err(e) = consumer.assign(list) {
                    tracing::error!(error = %e, "assign failed");
                }
                if failed.count() > 0 {
                    let _ = consumer.pause(&failed);
                }
                for &p in &numbers {
                    let held = h.held_sends(p);
                    if held.count() > 0 && consumer.pause(&held).is_ok() {
                        tracing::info!(
                            partition = p,
                            "send requests wait until the earlier inbound messages are read"
                        );
                    }
                }
                h.gauges();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                telemetry::kafka_rebalance("revoke");
                let owned: Vec<i32> = numbers
                    .iter()
                    .copied()
                    .filter(|&p| h.ownership.is_owned(p))
                    .collect();
                match blocking(|| h.cut(consumer, &owned)) {
                    Ok(()) => (0..owned.len()).for_each(|_| telemetry::kafka_handover("out")),
                    Err(e) => {
                        tracing::warn!(error = %e, "final snapshot not written; the next owner replays from the previous one");
                        (0..owned.len()).for_each(|_| telemetry::kafka_handover("out_unsaved"));
                    }
                }
                blocking(|| h.release(&owned));
                for p in &numbers {
                    h.forget_failed(*p);
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
                tracing::info!(partitions = ?owned, "partitions handed over");
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let owned = h.ownership.owned();
                blocking(|| h.release(&owned));
                for p in &numbers {
                    h.forget_failed(*p);
                }
                let _ = consumer.unassign();
            }
        }
    }
}

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
        let handover = Arc::new(Handover {
            config: k.clone(),
            runtime: runtime.clone(),
            store: StateStore::new(k)?,
            acks: outbox.acks().clone(),
            ownership,
            tenants_of,
            handle: Handle::current(),
            cuts: Mutex::default(),
            epochs: Default::default(),
            writing: Mutex::default(),
            written: Default::default(),
            catching_up: Mutex::default(),
            failed: Mutex::default(),
            watchdog,
        });
        let mut settings = super::client_config(k);
        settings
            .set("group.id", &k.group_id)
            // Offsets are committed at cuts only (module docs).
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Partition p of every input topic to the same replica (they share tenants).
            .set("partition.assignment.strategy", "range");
        // Failover speed (see `KafkaConfig::session_timeout_ms`); the operator's raw options win.
        for (key, value) in [
            ("session.timeout.ms", k.session_timeout_ms),
            ("heartbeat.interval.ms", k.heartbeat_interval_ms),
        ] {
            if !k.options.contains_key(key) {
                settings.set(key, value.to_string());
            }
        }
        if k.statistics_interval_ms > 0 {
            settings.set(
                "statistics.interval.ms",
                k.statistics_interval_ms.to_string(),
            );
        }
        let context = InputContext {
            handover: handover.clone(),
        };
        let consumer: StreamConsumer<InputContext> = settings.create_with_context(context)?;
        consumer.subscribe(&[&k.inbound_topic, &k.webhooks_topic, &k.sends_topic])?;
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
        let mut acked = self.outbox.acks().watch();
        let interval = Duration::from_millis(self.config.snapshot_interval_ms);
        let max_age = Duration::from_millis(self.config.snapshot_max_age_ms);
        // A periodic cut waits this long at most for the outputs so far to be acknowledged
        // (milliseconds when the broker is well), then gives way to the input and is tried
        // at the next interval: a failing output must not starve the input.
        let cut_wait = interval
            .min(Duration::from_millis(self.config.revoke_drain_ms))
            .div_f64(4.0);
        let mut cuts = tokio::time::interval(interval);
        cuts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        loop {
            let acks = self.outbox.acks();
            let full = acks.issued() - acks.through() >= self.config.max_in_flight as u64;
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = cuts.tick() => {
                    blocking(|| self.handover.retry_takeovers(&self.consumer));
                    // Taken here, between records; written in the background (the input goes
                    // on), committed here when written.
                    let due = self.handover.due(max_age);
                    match blocking(|| self.handover.take_cut(&self.consumer, &due, cut_wait)) {
                        Ok(taken) => {
                            self.handover.writing(&due);
                            for cut in taken {
                                let (handover, done) = (self.handover.clone(), done_tx.clone());
                                tokio::spawn(async move {
                                    let partition = cut.partition;
                                    let result = handover.write_cut(cut).await;
                                    handover.written(partition);
                                    let _ = done.send((partition, result));
                                });
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "snapshot not taken; retrying at the next interval");
                            self.handover.watchdog.cut_failed(&e.to_string());
                            due.iter().for_each(|&p| self.handover.ownership.touch(p));
                        }
                    }
                }
                Some((partition, result)) = done_rx.recv() => match result {
                    Ok(written) => self.handover.commit(&self.consumer, written),
                    Err(e) => {
                        tracing::warn!(error = %e, partition, "snapshot not written; retrying at the next interval");
                        self.handover.watchdog.cut_failed(&e.to_string());
                        self.handover.ownership.touch(partition);
                    }
                },
                changed = acked.changed(), if full => {
                    if changed.is_err() {
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
                    telemetry::kafka_record_in(message.topic());
                    if self.handle(&message).await.is_err() {
                        break; // stopping: this record is read again after restart
                    }
                    self.handover.watchdog.record_read();
                    let partition = message.partition();
                    self.handover.ownership.touch(partition);
                    if self.handover.read_up_to(message.topic(), partition, message.offset()) {
                        let mut sends = TopicPartitionList::new();
                        let _ = sends.add_partition_offset(&self.config.sends_topic, partition, Offset::Invalid);
                        if let Err(e) = self.consumer.resume(&sends) {
                            tracing::error!(error = %e, partition, "send requests not resumed");
                        }
                    }
                }
            }
        }
        let owned = self.handover.ownership.owned();
        let last = self.outbox.acks().issued();
        if tokio::time::timeout(self.grace, acked.wait_for(|&t| t >= last))
            .await
            .is_err()
        {
            tracing::warn!("outputs not acknowledged within the grace period");
        }
        match blocking(|| self.handover.cut(&self.consumer, &owned)) {
            Ok(()) => owned.iter().for_each(|_| telemetry::kafka_handover("out")),
            Err(e) => {
                tracing::warn!(error = %e, "final snapshot not written; the next owner replays from the previous one")
            }
        }
        blocking(|| self.handover.release(&owned));
        // Leave the group now, so its partitions go to another member at once instead of
        // after the session timeout.
        self.consumer.unsubscribe();
        tracing::info!("kafka input stopped");
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
        } else if m.topic() == self.config.sends_topic {
            self.send_request(payload, m.partition())
                .await?
                .into_iter()
                .collect()
        } else {
            vec![self.inbound(payload, m.partition()).await?]
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
        Ok(())
    }

    /// The tenant's partition, if it is configured here and is not `partition` (the record
    /// must move). An unknown tenant stays: it is dead-lettered where it is.
    fn misplaced(&self, tenant: &str, partition: i32) -> bool {
        self.configured.contains(tenant)
            && self.handover.ownership.partition_of(tenant) != partition
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
        // As much of the payload as the producer takes with the headers (see
        // `outbox::Settings::dead_letter_payload`); the header names the original size.
        let (payload, cut) = outbox::fit(payload, self.outbox.settings().dead_letter_payload());
        if let Some(size) = cut {
            headers = headers.insert(header(
                outbox::TRUNCATED_HEADER,
                size.to_string().as_bytes(),
            ));
        }
        self.outbox
            .produce(&self.config.dlq_topic, m.key(), payload, Some(headers));
    }

    async fn inbound(&self, payload: &[u8], partition: i32) -> Result<Output, Stopping> {
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
            Ok(inbound) if self.misplaced(inbound.tenant.as_str(), partition) => Ok(Output::Move {
                tenant: inbound.tenant.to_string(),
            }),
            Ok(inbound) => self.route(inbound).await,
            Err(s) => Ok(Output::Dead(DeadLetter::new("invalid", s.message()))),
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
        let mut outputs = Vec::with_capacity(batch.messages.len());
        let mut elsewhere = BTreeSet::new();
        // Handled here: the tenant lives on this partition (and is the copy's, for a copy).
        let mut here = |tenant: &str| {
            if copy_for.as_deref().is_some_and(|c| c != tenant) {
                false
            } else if self.misplaced(tenant, partition) {
                elsewhere.insert(tenant.to_owned());
                false
            } else {
                true
            }
        };
        for m in &batch.messages {
            let output = match self.numbers.inbound(m) {
                Ok(inbound) if !here(inbound.tenant.as_str()) => continue,
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
                Ok((tenant, _)) if !here(tenant.as_str()) => continue,
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
                Err(e) => {
                    tracing::warn!(error = %e, "webhook status not fed back");
                    telemetry::kafka_status("unmatched");
                }
            }
        }
        if copy_for.is_none() {
            outputs.extend(elsewhere.into_iter().map(|tenant| Output::Move { tenant }));
        }
        Ok(outputs)
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
        let send = match crate::grpc::send_in(request) {
            Ok(send) => send,
            Err(s) => return Ok(Some(Output::Dead(DeadLetter::new("invalid", s.message())))),
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
            Err(e) => Ok(Output::Dead(DeadLetter::new("internal", e.to_string()))),
        }
    }
}

fn header<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value),
    }
}
