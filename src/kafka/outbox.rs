//! The outbox: every record switchboard produces (routed decisions, dispatches, statuses, dead
//! letters, moved input, journaled sends) goes through one idempotent producer and gets a
//! sequence number. The broker's acknowledgements advance a low watermark, "everything up to
//! `n` is acknowledged", which is what the input waits on before it stores an offset (see
//! `input`).
//!
//! Producing never blocks the caller: a record is handed to librdkafka and the delivery report
//! (on librdkafka's own thread) acknowledges it. **No record can hold the watermark for
//! ever**:
//! - a *retriable* failure (the broker unreachable, a leader change, the local queue full, a
//!   timeout) is produced again by a retry task after `retry_backoff`, until it is
//!   acknowledged or the service stops (then the inputs that caused it are read again after a
//!   restart; readiness says so meanwhile, see `health`);
//! - a *permanent* refusal (too large for the producer's or the broker's limit, or rejected
//!   by the broker as invalid: [`permanent`]) is never retried as it was. A broker refuses
//!   a whole batch for one invalid record, so a record refused with its batch is first
//!   produced once more alone (a second producer that sends batches of one). Refused again,
//!   or too large by itself, the record is replaced on the dead-letter topic by a dead letter
//!   ([`Origin`]) under the same sequence number. A dead letter that is itself refused is sent
//!   again cut to [`Settings::dead_letter_payload`], then with its headers only, and if even
//!   that is refused it is dropped with an error log line and
//!   `switchboard_kafka_outputs_refused_total{fate="dropped"}`.
//!
//! Every dead letter (of an input record or of a refused output) is built here, by
//! [`Outbox::dead_letter`]: its origin and the error in headers, and as much of its payload as
//! fits beside them (`switchboard.payload.truncated` names the original size when it was cut).
//! The producer's `message.max.bytes` is `kafka.max_record_bytes` plus [`HEADROOM`].
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// A sequence number of a produced record; 0 is "none".
pub type Seq = u64;

/// The acknowledgement watermark, awaited from async code (`settled`), and the dispatch
/// topic's acknowledged ends.
pub struct Acks {
    state: Mutex<AckState>,
    /// The topic whose acknowledged offsets are kept ([`Acks::delivered_end`]): the dispatch
    /// topic (a cut's lower bound of what it replays; see `handover`).
    tracked: String,
    /// Per partition of `tracked`: one past the highest offset acknowledged so far.
    ends: Mutex<HashMap<i32, i64>>,
}

#[derive(Default)]
struct AckState {
    issued: Seq,
    through: Seq,
    /// Acknowledged above the watermark (out of order: another partition was faster).
    early: BTreeSet<Seq>,
    /// Tasks waiting for a record ([`Acks::settled`]), by the record they wait for: each is
    /// woken once, when the watermark passes it. (A `watch` woke every waiter at every
    /// acknowledgement, and took its locks at each one even with nobody waiting.)
    waiters: BTreeMap<Seq, Vec<oneshot::Sender<()>>>,
}

impl Acks {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::tracking("")
    }

    /// Acknowledgements that also keep the offsets acknowledged on `topic`.
    pub(crate) fn tracking(topic: &str) -> Self {
        Self {
            state: Mutex::default(),
            tracked: topic.to_owned(),
            ends: Mutex::default(),
        }
    }

    /// A record of `topic` was acknowledged at `partition`, `offset`.
    fn delivered(&self, topic: &str, partition: i32, offset: i64) {
        if topic == self.tracked && !topic.is_empty() {
            let mut ends = self
                .ends
                .lock()
                .expect("no panic while holding the ack lock");
            let end = ends.entry(partition).or_insert(0);
            *end = (*end).max(offset + 1);
        }
    }

    /// One past the highest offset of the tracked topic's `partition` acknowledged so far:
    /// every record below it was produced before now. None: nothing acknowledged there yet.
    pub fn delivered_end(&self, partition: i32) -> Option<i64> {
        self.ends
            .lock()
            .expect("no panic while holding the ack lock")
            .get(&partition)
            .copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state
            .lock()
            .expect("no panic while holding the ack lock")
    }

    pub(crate) fn issue(&self) -> Seq {
        let mut s = self.lock();
        s.issued += 1;
        s.issued
    }

    pub(crate) fn ack(&self, seq: Seq) {
        let ready = {
            let mut s = self.lock();
            if seq != s.through + 1 {
                s.early.insert(seq);
                return;
            }
            s.through = seq;
            while s.early.first() == Some(&(s.through + 1)) {
                s.early.pop_first();
                s.through += 1;
            }
            let next = s.through + 1;
            if s.waiters
                .first_key_value()
                .is_none_or(|(&first, _)| first >= next)
            {
                return;
            }
            let later = s.waiters.split_off(&next);
            std::mem::replace(&mut s.waiters, later)
        };
        for waiter in ready.into_values().flatten() {
            let _ = waiter.send(());
        }
    }

    /// Resolves when `seq` is acknowledged; an error if the acknowledgements stopped (the
    /// outbox was dropped).
    pub fn settled(&self, seq: Seq) -> impl std::future::Future<Output = Result<(), ()>> {
        let waiting = {
            let mut s = self.lock();
            (s.through < seq).then(|| {
                let (tx, rx) = oneshot::channel();
                s.waiters.entry(seq).or_default().push(tx);
                rx
            })
        };
        async move {
            match waiting {
                None => Ok(()),
                Some(rx) => rx.await.map_err(|_| ()),
            }
        }
    }

    /// The last sequence number handed out.
    pub fn issued(&self) -> Seq {
        self.lock().issued
    }

    /// Every record up to this one is acknowledged.
    pub fn through(&self) -> Seq {
        self.lock().through
    }
}

/// Room for headers on top of `kafka.max_record_bytes` in the producer's `message.max.bytes`
/// (a dead letter's headers are its origin and an error line: well under this).
pub const HEADROOM: usize = 16 * 1024;

/// The header a cut payload carries: the original payload's size in bytes.
pub const TRUNCATED_HEADER: &str = "switchboard.payload.truncated";

/// At most `max` bytes of `payload`, and the original size when it had to be cut.
pub fn fit(payload: &[u8], max: usize) -> (&[u8], Option<usize>) {
    if payload.len() <= max {
        (payload, None)
    } else {
        (&payload[..max], Some(payload.len()))
    }
}

/// Refusals that producing the same record again cannot fix: it is too large for the
/// producer's or the broker's limit, or the broker rejects it as invalid. Everything else
/// (unreachable broker, leader changes, timeouts, a full local queue, authorization that an
/// operator can grant) is retried.
pub fn permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | MessageBatchTooLarge
                | InvalidRecord
                | InvalidTopic
                | InvalidTimestamp
                | PolicyViolation
        )
    )
}

/// Where a dead letter comes from and why: its headers.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The topic the record was read from (an input) or meant for (a refused output).
    pub topic: &'a str,
    /// An input record's partition and offset.
    pub at: Option<(i32, i64)>,
    pub key: Option<&'a [u8]>,
    /// A fixed reason (`switchboard.error.reason`) and the error's text.
    pub reason: &'a str,
    pub error: &'a str,
    /// The message of a webhook payload it is about (its `wamid`).
    pub item: Option<&'a str>,
}

impl Origin<'_> {
    fn headers(&self) -> OwnedHeaders {
        let mut headers =
            OwnedHeaders::new().insert(header("switchboard.original.topic", self.topic.as_bytes()));
        if let Some((partition, offset)) = self.at {
            headers = headers
                .insert(header(
                    "switchboard.original.partition",
                    partition.to_string().as_bytes(),
                ))
                .insert(header(
                    "switchboard.original.offset",
                    offset.to_string().as_bytes(),
                ));
        }
        headers = headers
            .insert(header("switchboard.error.reason", self.reason.as_bytes()))
            .insert(header("switchboard.error", self.error.as_bytes()));
        if let Some(key) = self.key {
            headers = headers.insert(header("switchboard.original.key", key));
        }
        if let Some(item) = self.item {
            headers = headers.insert(header("switchboard.error.item", item.as_bytes()));
        }
        headers
    }
}

/// A record to produce again: retried as it is, or refused for good.
struct Retry {
    seq: Seq,
    message: OwnedMessage,
    /// Set when the record was refused for good (see [`permanent`]): why.
    refused: Option<String>,
    /// The refusal is the record's own: it was produced alone (a batch of one), or it is too
    /// large by itself.
    its_own: bool,
    /// The producer that failed it can produce no more (fenced or in a fatal state): which
    /// generation of the main producer it was.
    dead_producer: Option<u64>,
}

/// Errors after which an idempotent producer produces nothing more: the broker fenced its
/// producer id, or librdkafka put it in a fatal state. Only a new producer goes on.
fn producer_is_dead(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(ProducerFenced | InvalidProducerEpoch | UnknownProducerId | Fatal)
    )
}

impl Retry {
    fn new(seq: Seq, message: OwnedMessage, e: &KafkaError, alone: bool, generation: u64) -> Self {
        use RDKafkaErrorCode::*;
        let refused = permanent(e).then(|| e.to_string());
        let too_large = matches!(
            e.rdkafka_error_code(),
            Some(MessageSizeTooLarge | InvalidMessageSize)
        );
        Self {
            seq,
            message,
            refused,
            its_own: alone || too_large,
            dead_producer: (!alone && producer_is_dead(e)).then_some(generation),
        }
    }
}

struct AckContext {
    acks: Arc<Acks>,
    retries: mpsc::UnboundedSender<Retry>,
    /// The producer sends batches of one record (see `Outbox::alone`).
    alone: bool,
    /// Which main producer this is (see `Outbox::renew`).
    generation: u64,
    written: Mutex<telemetry::TopicRecords>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(m) => {
                self.written
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .count(m.topic());
                self.acks.delivered(m.topic(), m.partition(), m.offset());
                self.acks.ack(seq as Seq);
            }
            Err((e, m)) => {
                let retry = Retry::new(seq as Seq, m.detach(), e, self.alone, self.generation);
                if retry.refused.is_none() {
                    telemetry::kafka_produce_retry(m.topic(), e);
                }
                // The retry task is gone only when stopping: the record stays unacknowledged.
                let _ = self.retries.send(retry);
            }
        }
    }
}

/// How the outbox produces and where refused records go.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bounds one delivery attempt (librdkafka's `message.timeout.ms`, with its own retries
    /// inside); then the record is produced again after `retry_backoff`.
    pub attempt: Duration,
    pub retry_backoff: Duration,
    /// Where a record that can never be produced goes instead (`kafka.dlq_topic`).
    pub dlq_topic: String,
    /// The largest payload produced (`kafka.max_record_bytes`).
    pub max_payload: usize,
    /// The topic whose acknowledged offsets [`Acks::delivered_end`] keeps
    /// (`kafka.dispatch_topic`).
    pub dispatch_topic: String,
}

impl Settings {
    pub fn for_config(k: &crate::config::KafkaConfig) -> Self {
        Self {
            attempt: Duration::from_millis(k.produce_timeout_ms),
            retry_backoff: Duration::from_millis(200),
            dlq_topic: k.dlq_topic.clone(),
            max_payload: k.max_record_bytes,
            dispatch_topic: k.dispatch_topic.clone(),
        }
    }

    /// The producer's `message.max.bytes`.
    pub fn max_message_bytes(&self) -> usize {
        self.max_payload + HEADROOM
    }

    /// The most of a payload a dead letter keeps: what fits in `message.max.bytes` with half
    /// the headroom left for the dead letter's headers (its origin and an error line).
    pub fn dead_letter_payload(&self) -> usize {
        self.max_payload + HEADROOM / 2
    }
}

/// Most refused sequence numbers remembered for [`Outbox::refusal`] (a journal waiting on one
/// asks within a produce timeout; older ones are forgotten first).
const REFUSALS_KEPT: usize = 4_096;

pub struct Outbox {
    /// The main producer and its generation: replaced by a new one if the broker fences it
    /// or librdkafka declares it dead (see `renew`).
    producer: RwLock<(u64, Arc<ThreadedProducer<AckContext>>)>,
    /// What a new main producer is made of.
    config: ClientConfig,
    /// Batches of one: a broker refuses a whole batch for one invalid record, so a refused
    /// record is produced once more alone before it is dead-lettered (its batch-mates then
    /// go through, and a refusal is its own).
    alone: ThreadedProducer<AckContext>,
    acks: Arc<Acks>,
    retries: mpsc::UnboundedSender<Retry>,
    settings: Settings,
    /// Records refused for good and dead-lettered (or dropped) in their place: why.
    refusals: Mutex<BTreeMap<Seq, String>>,
}

impl Outbox {
    /// Creates the producer (idempotent, acks from all in-sync replicas, `message.max.bytes`
    /// from the settings) and its retry task, which ends with `stop`.
    pub fn start(
        common: &ClientConfig,
        settings: Settings,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, rdkafka::error::KafkaError> {
        let acks = Arc::new(Acks::tracking(&settings.dispatch_topic));
        let (retries, mut pending) = mpsc::unbounded_channel();
        let context = |alone| AckContext {
            acks: acks.clone(),
            retries: retries.clone(),
            alone,
            generation: 0,
            written: Mutex::new(telemetry::TopicRecords::written()),
        };
        let config = common
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Keyed by tenant, onto the tenant's partition (see `partition`).
            .set("partitioner", super::partition::LIBRDKAFKA_PARTITIONER)
            .set(
                "message.timeout.ms",
                settings.attempt.as_millis().max(1).to_string(),
            )
            .set(
                "message.max.bytes",
                settings.max_message_bytes().to_string(),
            )
            .clone();
        let producer = config.create_with_context(context(false))?;
        // Not idempotent: a refusal of an idempotent producer's batch leaves a gap in its
        // sequence numbers that some brokers answer by fencing it; duplicates are absorbed
        // downstream (message ids, idempotency keys) and this producer carries refused
        // records only.
        let alone = config
            .clone()
            .set("enable.idempotence", "false")
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .create_with_context(context(true))?;
        let retry_backoff = settings.retry_backoff;
        let outbox = Arc::new(Self {
            producer: RwLock::new((0, Arc::new(producer))),
            config,
            alone,
            acks,
            retries,
            settings,
            refusals: Mutex::default(),
        });
        let weak = Arc::downgrade(&outbox);
        tokio::spawn(async move {
            loop {
                let first: Retry = tokio::select! {
                    () = stop.cancelled() => break,
                    retry = pending.recv() => match retry {
                        Some(r) => r,
                        None => break,
                    },
                };
                // One back-off for a wave of failures (a broker outage fails thousands at
                // once), then everything that failed meanwhile goes again.
                if first.refused.is_none() {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(retry_backoff) => {}
                    }
                }
                let Some(outbox) = weak.upgrade() else { break };
                let mut wave = vec![first];
                while let Ok(more) = pending.try_recv() {
                    wave.push(more);
                }
                for retry in wave {
                    outbox.retry(retry);
                }
            }
        });
        Ok(outbox)
    }

    /// Produces a failed record again: as it was (on a new producer if the old one is
    /// dead), alone (refused with its batch), or dead-lettered (refused for good).
    fn retry(&self, retry: Retry) {
        if let Some(generation) = retry.dead_producer {
            self.renew(generation);
        }
        let m = &retry.message;
        match retry.refused {
            None => self.send(
                retry.seq,
                m.topic(),
                m.key(),
                m.payload().unwrap_or_default(),
                m.headers().cloned(),
            ),
            // Refused with its batch: once more alone, to see whose refusal it is.
            Some(_) if !retry.its_own => self.send_alone(retry.seq, m),
            Some(error) => self.refused(retry.seq, m, &error),
        }
    }

    /// A record refused for good: its dead letter goes out under the same sequence number
    /// (module docs), or, for a dead letter, its headers alone, or nothing.
    fn refused(&self, seq: Seq, m: &OwnedMessage, error: &str) {
        let topic = m.topic();
        let payload = m.payload().unwrap_or_default();
        let mut refusals = lock(&self.refusals);
        refusals.insert(seq, format!("{topic}: {error}"));
        while refusals.len() > REFUSALS_KEPT {
            refusals.pop_first();
        }
        drop(refusals);
        if topic != self.settings.dlq_topic {
            telemetry::kafka_output_refused(topic, "dead_lettered", error);
            let origin = Origin {
                topic,
                at: None,
                key: m.key(),
                reason: "refused",
                error,
                item: None,
            };
            self.send_dead_letter(seq, &origin, payload);
        } else if !payload.is_empty() {
            // As much as fits (the limit), or, if that was refused too, the headers alone.
            let keep = if payload.len() > self.settings.dead_letter_payload() {
                self.settings.dead_letter_payload()
            } else {
                0
            };
            telemetry::kafka_output_refused(topic, "truncated", error);
            let mut headers = OwnedHeaders::new();
            for h in m.headers().into_iter().flat_map(|h| h.iter()) {
                if h.key != TRUNCATED_HEADER {
                    headers = headers.insert(h);
                }
            }
            let original = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == TRUNCATED_HEADER))
                .and_then(|h| h.value)
                .map_or_else(|| payload.len().to_string().into_bytes(), <[u8]>::to_vec);
            headers = headers.insert(header(TRUNCATED_HEADER, &original));
            self.send(seq, topic, m.key(), &payload[..keep], Some(headers));
        } else {
            // Nothing smaller to try: the input goes on without this dead letter.
            telemetry::kafka_output_refused(topic, "dropped", error);
            self.acks.ack(seq);
        }
    }

    /// Produces a dead letter of `payload` (an input record that cannot be handled) and
    /// returns its sequence number, like [`Outbox::produce`].
    pub fn dead_letter(&self, origin: &Origin<'_>, payload: &[u8]) -> Seq {
        let seq = self.acks.issue();
        self.send_dead_letter(seq, origin, payload);
        seq
    }

    fn send_dead_letter(&self, seq: Seq, origin: &Origin<'_>, payload: &[u8]) {
        let mut headers = origin.headers();
        let (payload, cut) = fit(payload, self.settings.dead_letter_payload());
        if let Some(size) = cut {
            headers = headers.insert(header(TRUNCATED_HEADER, size.to_string().as_bytes()));
        }
        self.send(
            seq,
            &self.settings.dlq_topic,
            origin.key,
            payload,
            Some(headers),
        );
    }

    fn producer(&self) -> Arc<ThreadedProducer<AckContext>> {
        self.producer
            .read()
            .expect("no panic while holding the producer lock")
            .1
            .clone()
    }

    /// Replaces main producer `generation` (unless that happened already): what it still
    /// holds is purged, comes back as failed deliveries and is produced again by the new one.
    fn renew(&self, generation: u64) {
        let mut current = self
            .producer
            .write()
            .expect("no panic while holding the producer lock");
        if current.0 != generation {
            return;
        }
        let context = AckContext {
            acks: self.acks.clone(),
            retries: self.retries.clone(),
            alone: false,
            generation: generation + 1,
            written: Mutex::new(telemetry::TopicRecords::written()),
        };
        let fresh = match self.config.create_with_context(context) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!(error = %e, "a new Kafka producer could not be created; the old one is kept");
                return;
            }
        };
        let old = std::mem::replace(&mut *current, (generation + 1, fresh)).1;
        drop(current);
        telemetry::kafka_producer_renewed(generation + 1);
        // Off the retry task: purging and flushing the old producer wait for librdkafka.
        std::thread::spawn(move || {
            old.purge(PurgeConfig::default().queue().inflight());
            let _ = old.flush(Duration::from_secs(5));
        });
    }

    /// Produces a refused record once more in a batch of its own.
    fn send_alone(&self, seq: Seq, m: &OwnedMessage) {
        let payload = m.payload().unwrap_or_default();
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(m.topic(), seq as usize).payload(payload);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(h) = m.headers() {
            record = record.headers(h.clone());
        }
        if let Err((e, _)) = self.alone.send(record) {
            // Not even queued: it is refused as it stands.
            self.refused(seq, m, &e.to_string());
        }
    }

    /// Why the record `seq` was refused for good (it was dead-lettered or dropped in its
    /// place), if it was and that is recent (the last few thousand refusals are kept).
    /// Waits, at most `timeout`, until every record up to `seq` is acknowledged; an error
    /// says why not (refused for good — then dead-lettered in its place —, the producer
    /// stopped, or no acknowledgement in time).
    pub async fn settled(&self, seq: Seq, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.acks.settled(seq)).await {
            Ok(Ok(())) => match self.refusal(seq) {
                None => Ok(()),
                Some(why) => Err(format!("refused by the broker: {why}")),
            },
            Ok(Err(_)) => Err("the producer stopped".into()),
            Err(_) => Err(format!(
                "not acknowledged within {} ms",
                timeout.as_millis()
            )),
        }
    }

    pub fn refusal(&self, seq: Seq) -> Option<String> {
        lock(&self.refusals).get(&seq).cloned()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Hands a record to the producer and returns its sequence number; never blocks.
    pub fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Seq {
        let seq = self.acks.issue();
        self.send(seq, topic, key, payload, headers);
        seq
    }

    fn send(
        &self,
        seq: Seq,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, seq as usize).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let producer = self.producer();
        if let Err((e, record)) = producer.send(record) {
            // The local queue is full: produce it again after the back-off. Or the record is
            // refused before it is queued (too large): dead-letter it (see `refused`).
            let message = OwnedMessage::new(
                Some(payload.to_vec()),
                key.map(<[u8]>::to_vec),
                topic.to_owned(),
                rdkafka::Timestamp::NotAvailable,
                rdkafka::producer::PARTITION_UA,
                0,
                record.headers,
            );
            // Its own refusal (nothing was batched yet), by the current main producer.
            let generation = self
                .producer
                .read()
                .expect("no panic while holding the producer lock")
                .0;
            let retry = Retry::new(seq, message, &e, false, generation);
            if retry.refused.is_none() {
                tracing::debug!(error = %e, topic, "produce deferred");
            }
            let _ = self.retries.send(retry);
        }
    }

    pub fn acks(&self) -> &Arc<Acks> {
        &self.acks
    }

    /// Waits up to `timeout` for everything handed over so far to be acknowledged.
    pub fn flush(&self, timeout: Duration) {
        for result in [self.producer().flush(timeout), self.alone.flush(timeout)] {
            if let Err(e) = result {
                tracing::warn!(error = %e, "producer flush: records left unacknowledged");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("no panic while holding an outbox lock")
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

    #[test]
    fn the_watermark_moves_only_over_a_gapless_prefix_of_acknowledgements() {
        let acks = Acks::new();
        let seqs: Vec<Seq> = (0..5).map(|_| acks.issue()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(acks.issued(), 5);

        // Another partition was faster: 2 and 3 are acknowledged before 1.
        acks.ack(2);
        acks.ack(3);
        assert_eq!(acks.through(), 0);
        acks.ack(1);
        assert_eq!(acks.through(), 3);

        acks.ack(5);
        assert_eq!(acks.through(), 3, "4 is still out");
        acks.ack(4);
        assert_eq!(acks.through(), 5);
    }

    /// A waiter is woken when the watermark passes its record, not before, whatever the
    /// order of the acknowledgements; one already passed resolves at once.
    #[tokio::test]
    async fn a_waiter_resolves_exactly_when_the_watermark_passes_its_record() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        let acks = Acks::new();
        (0..3).for_each(|_| {
            acks.issue();
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut two = pin!(acks.settled(2));
        let mut three = pin!(acks.settled(3));
        assert!(two.as_mut().poll(&mut cx).is_pending());
        acks.ack(2);
        assert!(two.as_mut().poll(&mut cx).is_pending(), "1 is still out");
        acks.ack(1);
        assert_eq!(two.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        assert!(three.as_mut().poll(&mut cx).is_pending());
        acks.ack(3);
        assert_eq!(three.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        assert_eq!(acks.settled(1).await, Ok(()), "already passed");
        assert!(acks.lock().waiters.is_empty(), "no waiter left behind");
    }

    /// Every kind of output, each refused for good in both ways a broker or producer can
    /// refuse (too large; invalid, with its batch): none holds the watermark, each is on the
    /// dead-letter topic in its place (cut to size and marked, or whole), and a dead letter
    /// that is itself too large goes out cut.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_output_kind_can_hold_the_watermark_for_ever() {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

        const KINDS: [&str; 6] = ["routed", "dispatch", "status", "sends", "inbound", "dlq"];
        let cluster = MockCluster::new(1).expect("a mock cluster");
        for topic in KINDS {
            cluster.create_topic(topic, 1, 1).expect("a topic");
        }
        let mut common = ClientConfig::new();
        common.set("bootstrap.servers", cluster.bootstrap_servers());
        let stop = CancellationToken::new();
        let settings = Settings {
            attempt: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(50),
            dlq_topic: "dlq".into(),
            max_payload: 2_000,
            dispatch_topic: "dispatch".into(),
        };
        let outbox = Outbox::start(&common, settings, stop.clone()).expect("an outbox");
        let wait = |seq: Seq| {
            let settled = outbox.acks().settled(seq);
            async move {
                tokio::time::timeout(Duration::from_secs(30), settled)
                    .await
                    .expect("the watermark passes every record (test guard)")
                    .expect("the outbox runs");
            }
        };

        // Too large: 50 KB over a 2 KB limit plus headroom (the producer refuses it before it
        // is queued).
        let big = vec![b'x'; 50_000];
        let mut too_large = Vec::new();
        for topic in KINDS {
            too_large.push((topic, outbox.produce(topic, Some(b"acme"), &big, None)));
        }
        wait(outbox.acks().issued()).await;

        // Invalid: the broker refuses the next produce requests (whole batches); a good
        // record follows and is not held behind them.
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 3],
        );
        let invalid = outbox.produce("routed", Some(b"acme"), b"decision", None);
        wait(invalid).await;
        let good = outbox.produce("status", Some(b"acme"), b"status", None);
        wait(good).await;
        assert_eq!(outbox.acks().through(), outbox.acks().issued());
        // The dispatch topic's acknowledged end is kept (a cut's replay starts below it); the
        // refused dispatch never landed, so this one is its first record.
        assert_eq!(
            outbox.acks().delivered_end(0),
            None,
            "no dispatch acknowledged yet"
        );
        let dispatched = outbox.produce("dispatch", Some(b"acme"), b"dispatch", None);
        wait(dispatched).await;
        assert_eq!(outbox.acks().delivered_end(0), Some(1));

        for (topic, seq) in &too_large {
            let why = outbox
                .refusal(*seq)
                .unwrap_or_else(|| panic!("{topic}: refused"));
            assert!(why.starts_with(topic), "{why}");
        }
        assert_eq!(outbox.refusal(good), None, "acknowledged as it was");

        // What the dead-letter topic holds: one per refused output, each marked.
        let reader: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "outbox-test")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("a reader");
        reader.subscribe(&["dlq"]).expect("subscribed");
        let mut seen: Vec<(String, usize, Option<String>)> = Vec::new();
        // Refused with its batch, then alone: dead-lettered.
        let why = outbox
            .refusal(invalid)
            .expect("the invalid record was refused for good");
        assert!(why.contains("routed") && why.contains("nvalid"), "{why}");
        let expected = too_large.len() + 1;
        while seen.len() < expected {
            let m = tokio::time::timeout(Duration::from_secs(30), reader.recv())
                .await
                .expect("a dead letter (test guard)")
                .expect("a record");
            let get = |key: &str| {
                m.headers()?
                    .iter()
                    .find(|h| h.key == key)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let origin = get("switchboard.original.topic").unwrap_or_else(|| "dlq".into());
            let payload = m.payload().map_or(0, <[u8]>::len);
            seen.push((origin, payload, get(TRUNCATED_HEADER)));
        }
        for topic in &KINDS[..5] {
            assert!(
                seen.iter().any(|(o, len, cut)| o == topic
                    && *len == 10_192
                    && cut.as_deref() == Some("50000")),
                "{topic}: dead-lettered, cut to kafka.max_record_bytes and marked: {seen:?}"
            );
        }
        assert!(
            seen.iter().any(|(o, len, cut)| o == "routed"
                && (*len == 8 || (*len == 0 && cut.as_deref() == Some("8")))),
            "the invalid decision is dead-lettered (whole, or with its headers only if the \
             dead letter drew the third error): {seen:?}"
        );
        assert!(
            seen.iter().any(|(o, len, cut)| o == "dlq"
                && *len == 10_192
                && cut.as_deref() == Some("50000")),
            "a too-large dead letter goes out cut to the limit: {seen:?}"
        );
        stop.cancel();
        drop(reader);
        drop(outbox);
        drop(cluster);
    }
}
