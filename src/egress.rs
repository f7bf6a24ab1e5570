//! The egress (`switchboard egress`): consumes `kafka.dispatch_topic` in its own consumer group
//! (`egress.group_id`), sends each dispatch through the Cloud API sender (retries with jittered
//! backoff, failover to the backup endpoint, each tenant's own token), and puts the answer on
//! `kafka.outcomes_topic`, keyed by tenant, for the tenant's owner to apply.
//!
//! **At-least-once, bounded.** A dispatch's offset is committed only after its outcome is
//! acknowledged by the broker, in partition order. At most `egress.max_in_flight` dispatches
//! of a partition are read and not yet committed; past it the partition waits. A crash can
//! therefore send at most that many dispatches of each partition again — the Cloud API has no
//! idempotency key. Fewer in practice: on taking a partition, the egress reads the outcomes
//! topic's last `egress.dedup_lookback` records of it and skips every dispatch already
//! answered, so what is sent twice is what was on the wire at the crash. (The owner ignores a
//! second outcome for a send either way.)
//!
//! A revoke or a shutdown waits, at most `egress.drain_ms`, for the partition's sends in
//! flight, then commits what finished.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::cloud_api::CloudApiSender;
use crate::config::Config;
use crate::config::egress::EgressConfig;
use crate::kafka::handover::blocking;
use crate::kafka::outbox::{Origin, Outbox};
use crate::kafka::state::StateStore;
use crate::model::TenantId;
use crate::proto;
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("the egress needs Kafka: set kafka.brokers (SWITCHBOARD_KAFKA_BROKERS)")]
    NoKafka,
    #[error(
        "the egress sends through the Cloud API: set cloud_api.enabled = true and its token \
         (SWITCHBOARD_CLOUD_API__TOKEN or [[cloud_api.tenants]])"
    )]
    NoCloudApi,
    #[error("kafka: {0}; check kafka.brokers and kafka.options")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the Cloud API sender: {0}")]
    CloudApi(#[from] reqwest::Error),
}

/// Waiting dispatches (in `max_in_flight`s) at which a partition's fetching pauses. Pausing
/// is dear (measured on Tansu: pausing at 8 windows cost 8× the throughput), so it is kept
/// for a real backlog; a waiting dispatch is a few hundred bytes.
const WAITING_PAUSE: usize = 64;

/// One dispatch partition's bookkeeping.
#[derive(Default)]
struct Track {
    /// Offsets being sent, and those finished behind the first of them (true once their
    /// outcome is acknowledged).
    pending: BTreeMap<i64, bool>,
    /// The entries of `pending` not finished (kept, not counted, at every send's end).
    sending: usize,
    /// Past the last finished offset with nothing pending before it.
    finished_to: Option<i64>,
    /// Finished offsets not committed yet (counted against `max_in_flight` with `pending`).
    uncommitted: usize,
    /// Read, waiting for room under `max_in_flight`.
    waiting: VecDeque<(i64, Vec<u8>)>,
    /// Dispatches already answered before this egress took the partition (skipped).
    answered: HashSet<i64>,
    /// The outcomes topic is not read yet for `answered` (done at the first dispatch).
    fresh: bool,
    /// Paused: too many dispatches waiting.
    paused: bool,
    /// The offset committed last (the next to read after a restart).
    committed: Option<i64>,
}

impl Track {
    /// The offset to commit: the first pending, else past the last finished.
    fn commit_point(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.finished_to)
    }

    fn in_flight(&self) -> usize {
        self.sending
    }

    /// `offset` is being sent.
    fn start(&mut self, offset: i64) {
        if self.pending.insert(offset, false).is_none() {
            self.sending += 1;
        }
    }

    /// Read and not committed: what a crash now could send again.
    fn uncommitted(&self) -> usize {
        self.pending.len() + self.uncommitted
    }

    /// `offset` finished: it and the finished ones behind it leave `pending`.
    fn finish(&mut self, offset: i64) {
        if let Some(done) = self.pending.get_mut(&offset)
            && !*done
        {
            *done = true;
            self.sending -= 1;
        }
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            self.finished_to = Some(entry.key() + 1);
            entry.remove();
            self.uncommitted += 1;
        }
    }
}

/// Every assigned partition's track, shared by the loop, the send tasks and the rebalance
/// callback (which waits on `finished` for a revoked partition's sends).
#[derive(Default)]
struct Tracks {
    by_partition: Mutex<HashMap<i32, Track>>,
    finished: Condvar,
}

impl Tracks {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Track>> {
        self.by_partition
            .lock()
            .expect("no panic while holding the egress lock")
    }

    /// A send finished (its outcome acknowledged).
    fn finish(&self, partition: i32, offset: i64) {
        if let Some(track) = self.lock().get_mut(&partition) {
            track.finish(offset);
        }
        self.finished.notify_all();
    }

    /// Waits, at most `timeout`, until `partitions` have no send in flight.
    fn drain(&self, partitions: &[i32], timeout: Duration) -> bool {
        let guard = self.lock();
        let (_guard, waited) = self
            .finished
            .wait_timeout_while(guard, timeout, |tracks| {
                partitions
                    .iter()
                    .any(|p| tracks.get(p).is_some_and(|t| t.in_flight() > 0))
            })
            .expect("no panic while holding the egress lock");
        !waited.timed_out()
    }

    /// What to commit for `partitions` (all when None): the offsets past the last commit.
    fn to_commit(&self, topic: &str, partitions: Option<&[i32]>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        let mut tracks = self.lock();
        for (&partition, track) in tracks.iter_mut() {
            if partitions.is_some_and(|p| !p.contains(&partition)) {
                continue;
            }
            let Some(point) = track.commit_point() else {
                continue;
            };
            if track.committed != Some(point) {
                let _ = list.add_partition_offset(topic, partition, Offset::Offset(point));
                track.committed = Some(point);
                track.uncommitted = 0;
            }
        }
        list
    }
}

/// The consumer group's callbacks: a revoked partition's sends drain and its offsets are
/// committed; an assigned one starts fresh.
struct EgressContext {
    tracks: Arc<Tracks>,
    topic: String,
    drain: Duration,
}

impl ClientContext for EgressContext {}

impl ConsumerContext for EgressContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            telemetry::kafka_rebalance("revoke");
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            if !blocking(|| self.tracks.drain(&partitions, self.drain)) {
                tracing::warn!(
                    ?partitions,
                    drain_ms = self.drain.as_millis() as u64,
                    "egress: sends still in flight at a revoke; the next owner sends them again"
                );
            }
            let commit = self.tracks.to_commit(&self.topic, Some(&partitions));
            if commit.count() > 0
                && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
            {
                tracing::warn!(error = %e, "egress: commit at a revoke failed");
            }
            let mut tracks = self.tracks.lock();
            for p in &partitions {
                tracks.remove(p);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            telemetry::kafka_rebalance("assign");
            let mut tracks = self.tracks.lock();
            for e in list.elements() {
                tracks.insert(
                    e.partition(),
                    Track {
                        fresh: true,
                        ..Track::default()
                    },
                );
            }
        }
    }
}

/// The egress (module docs).
pub struct Egress {
    consumer: StreamConsumer<EgressContext>,
    tracks: Arc<Tracks>,
    outbox: Arc<Outbox>,
    sender: Arc<CloudApiSender>,
    state: StateStore,
    settings: EgressConfig,
    dispatch_topic: String,
    outcomes_topic: String,
    ack_timeout: Duration,
}

impl Egress {
    /// Connects the consumer, the producer and the sender `config` names.
    pub fn new(config: &Config, stop: CancellationToken) -> Result<Self, EgressError> {
        let k = &config.kafka;
        if k.brokers.is_empty() {
            return Err(EgressError::NoKafka);
        }
        let sender = Arc::new(CloudApiSender::from_config(config)?.ok_or(EgressError::NoCloudApi)?);
        let outbox = Outbox::start(
            &crate::kafka::producer_config(k),
            crate::kafka::outbox::Settings::for_config(k),
            stop,
        )?;
        let tracks = Arc::new(Tracks::default());
        let e = &config.egress;
        let mut settings = crate::kafka::consumer_config(k, &e.group_id);
        // A paused partition's prefetched records wait in `Track::waiting`: keep it small.
        settings.set("queued.max.messages.kbytes", "4096");
        let context = EgressContext {
            tracks: tracks.clone(),
            topic: k.dispatch_topic.clone(),
            drain: Duration::from_millis(e.drain_ms),
        };
        let consumer: StreamConsumer<EgressContext> = settings.create_with_context(context)?;
        consumer.subscribe(&[&k.dispatch_topic])?;
        Ok(Self {
            consumer,
            tracks,
            outbox,
            sender,
            state: StateStore::new(k)?,
            settings: e.clone(),
            dispatch_topic: k.dispatch_topic.clone(),
            outcomes_topic: k.outcomes_topic.clone(),
            ack_timeout: Duration::from_millis(k.produce_timeout_ms),
        })
    }

    /// Sends until `stop`, then drains what is in flight and commits it.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let mut commit =
            tokio::time::interval(Duration::from_millis(self.settings.commit_interval_ms));
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            topic = %self.dispatch_topic,
            group = %self.settings.group_id,
            max_in_flight = self.settings.max_in_flight,
            "egress on: dispatches go to the Cloud API"
        );
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = commit.tick() => self.commit(CommitMode::Async),
                // A send finished: a waiting dispatch may start.
                () = wake.notified() => self.start_waiting(&wake),
                message = self.consumer.recv() => match message {
                    Ok(m) => self.read(&m, &wake),
                    Err(e) => {
                        tracing::warn!(error = %e, "egress: consume error; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        let partitions: Vec<i32> = self.tracks.lock().keys().copied().collect();
        let drain = Duration::from_millis(self.settings.drain_ms);
        let tracks = self.tracks.clone();
        let drained = tokio::task::spawn_blocking(move || tracks.drain(&partitions, drain))
            .await
            .unwrap_or(false);
        if !drained {
            tracing::warn!(
                "egress stopping with sends in flight; they are sent again after a restart"
            );
        }
        self.commit(CommitMode::Sync);
        crate::kafka::leave_group(&self.consumer, drain).await;
        self.outbox.flush(drain);
        tracing::info!("egress stopped");
    }

    fn commit(&self, mode: CommitMode) {
        let list = self.tracks.to_commit(&self.dispatch_topic, None);
        if list.count() > 0
            && let Err(e) = self.consumer.commit(&list, mode)
        {
            // The points were taken as committed: a crash before the next commit sends
            // these again (within the bound, and the read-back skips them).
            tracing::warn!(error = %e, "egress: commit failed");
        }
    }

    /// A dispatch read: started now, or queued behind the partition's sends in flight.
    fn read(self: &Arc<Self>, m: &BorrowedMessage<'_>, wake: &Arc<tokio::sync::Notify>) {
        let (partition, offset) = (m.partition(), m.offset());
        tracing::debug!(partition, offset, "egress: dispatch read");
        let payload = m.payload().unwrap_or_default().to_vec();
        let fresh = self.tracks.lock().get(&partition).is_some_and(|t| t.fresh);
        if fresh {
            let answered = blocking(|| self.answered(partition, offset));
            if let Some(track) = self.tracks.lock().get_mut(&partition) {
                track.answered = answered;
                track.fresh = false;
            }
        }
        let mut tracks = self.tracks.lock();
        let Some(track) = tracks.get_mut(&partition) else {
            return; // revoked meanwhile: the next owner reads it
        };
        track.waiting.push_back((offset, payload));
        drop(tracks);
        self.start_waiting(wake);
    }

    /// Starts every waiting dispatch that fits under `max_in_flight`. A partition whose
    /// waiting dispatches reach `WAITING_PAUSE` × `max_in_flight` is paused, and resumed when
    /// they are down to half (pausing at every full window would cost a fetch round trip per
    /// window).
    fn start_waiting(self: &Arc<Self>, wake: &Arc<tokio::sync::Notify>) {
        // Finished but uncommitted dispatches hold room under the bound: once they are half
        // of it, commit them now rather than at the next tick (one commit per half window,
        // not one per send).
        let max = self.settings.max_in_flight;
        let full = self.tracks.lock().values().any(|t| {
            !t.waiting.is_empty() && t.uncommitted() >= max && t.uncommitted >= max.div_ceil(2)
        });
        if full {
            self.commit(CommitMode::Async);
        }
        let mut starts = Vec::new();
        // Lists only when a partition is paused or resumed (each is a librdkafka allocation).
        let (mut pause, mut resume) = (None, None);
        let in_flight = {
            let mut tracks = self.tracks.lock();
            for (&partition, track) in tracks.iter_mut() {
                while track.uncommitted() < max {
                    let Some((offset, payload)) = track.waiting.pop_front() else {
                        break;
                    };
                    if track.answered.remove(&offset) {
                        telemetry::egress_dispatch("skipped");
                        track.start(offset);
                        track.finish(offset);
                        continue;
                    }
                    track.start(offset);
                    starts.push((partition, offset, payload));
                }
                let waiting = track.waiting.len();
                let list = if !track.paused && waiting >= WAITING_PAUSE * max {
                    track.paused = true;
                    &mut pause
                } else if track.paused && waiting <= WAITING_PAUSE * max / 2 {
                    track.paused = false;
                    &mut resume
                } else {
                    continue;
                };
                let _ = list
                    .get_or_insert_with(TopicPartitionList::new)
                    .add_partition(&self.dispatch_topic, partition);
            }
            tracks.values().map(Track::in_flight).sum()
        };
        for (list, what) in [(pause, "pause"), (resume, "resume")] {
            let Some(list) = list else { continue };
            let done = match what {
                "pause" => self.consumer.pause(&list),
                _ => self.consumer.resume(&list),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, what, "egress: cannot {what} partitions");
            }
        }
        for (partition, offset, payload) in starts {
            let (egress, wake) = (self.clone(), wake.clone());
            tokio::spawn(async move {
                egress.send(partition, offset, &payload).await;
                egress.tracks.finish(partition, offset);
                wake.notify_one();
            });
        }
        telemetry::egress_in_flight(in_flight);
    }

    /// One dispatch: sent, its outcome produced and acknowledged (or the record dead-lettered
    /// when it cannot be read).
    async fn send(&self, partition: i32, offset: i64, payload: &[u8]) {
        let decoded = proto::Dispatch::decode(payload)
            .map_err(|e| format!("not a switchboard.v1.Dispatch: {e}"))
            .and_then(|d| crate::wire::dispatch_in(&d).map(|m| (d, m)));
        let (record, dispatch) = match decoded {
            Ok(both) => both,
            Err(error) => {
                telemetry::egress_dispatch("undecodable");
                let origin = Origin {
                    topic: &self.dispatch_topic,
                    at: Some((partition, offset)),
                    key: None,
                    reason: "undecodable",
                    error: &error,
                    item: None,
                };
                let seq = self.outbox.dead_letter(&origin, payload);
                self.acknowledged(seq).await;
                return;
            }
        };
        let tenant = TenantId::new(&record.tenant);
        let started = crate::clock::Stopwatch::start();
        let delivery = self.sender.deliver_all(&tenant, &dispatch).await;
        let http = started.elapsed();
        telemetry::egress_dispatch(match delivery.outcome {
            crate::core::quota::ProviderOutcome::Failed { .. } => "failed",
            _ => "sent",
        });
        let outcome = crate::wire::outcome_out(
            &record,
            delivery.outcome,
            delivery.message_id,
            (partition, offset),
            delivery.attempts,
        );
        let seq = self.outbox.produce(
            &self.outcomes_topic,
            Some(record.tenant.as_bytes()),
            &outcome.encode_to_vec(),
            None,
        );
        self.acknowledged(seq).await;
        tracing::trace!(
            partition,
            offset,
            http_ms = http.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "egress: sent"
        );
    }

    /// Waits until `seq` is acknowledged (the outbox retries it meanwhile), or refused for
    /// good and dead-lettered in its place.
    async fn acknowledged(&self, seq: crate::kafka::outbox::Seq) {
        while let Err(why) = self.outbox.settled(seq, self.ack_timeout).await {
            if self.outbox.refusal(seq).is_some() || why.contains("stopped") {
                tracing::warn!(why, "egress: outcome not stored");
                return;
            }
            tracing::warn!(why, "egress: outcome not acknowledged yet; waiting");
        }
    }

    /// The dispatches of `partition` from `from` on that the outcomes topic already answers
    /// (its last `dedup_lookback` records). Blocking. An error is logged: nothing is skipped.
    fn answered(&self, partition: i32, from: i64) -> HashSet<i64> {
        let mut answered = HashSet::new();
        if self.settings.dedup_lookback == 0 {
            return answered;
        }
        let read = self
            .state
            .end_of(&self.outcomes_topic, partition)
            .and_then(|(low, high)| {
                let start = (high - self.settings.dedup_lookback).max(low);
                self.state
                    .scan_topic(&self.outcomes_topic, partition, start, high, |m| {
                        if let Some(o) =
                            m.payload().and_then(|p| proto::SendOutcome::decode(p).ok())
                            && o.dispatch_partition == partition
                            && o.dispatch_offset >= from
                        {
                            answered.insert(o.dispatch_offset);
                        }
                    })
            });
        if let Err(e) = read {
            tracing::warn!(partition, error = %e, "egress: outcomes not read back; nothing skipped");
        }
        if !answered.is_empty() {
            tracing::info!(
                partition,
                skipped = answered.len(),
                "egress: dispatches answered before the last stop are not sent again"
            );
        }
        answered
    }
}
