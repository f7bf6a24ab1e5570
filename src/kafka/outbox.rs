//! The outbox: every record switchboard produces (routed decisions, dispatches, statuses, dead
//! letters) goes through one idempotent producer and gets a sequence number. The broker's
//! acknowledgements advance a low watermark, "everything up to `n` is acknowledged", which is
//! what the input waits on before it stores an offset (see `input`).
//!
//! Producing never blocks the caller: a record is handed to librdkafka and the delivery report
//! (on librdkafka's own thread) acknowledges it. A record the broker refused after librdkafka's
//! own retries, or that found the local queue full, is produced again by a retry task until it
//! is acknowledged or the service stops; then the watermark stays below it, and the inputs that
//! caused it are read again after a restart.
use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// A sequence number of a produced record; 0 is "none".
pub type Seq = u64;

/// The acknowledgement watermark, readable from async code (`watch`) and from librdkafka's
/// callbacks (`wait_blocking`).
pub struct Acks {
    state: Mutex<AckState>,
    changed: Condvar,
    through: watch::Sender<Seq>,
}

#[derive(Default)]
struct AckState {
    issued: Seq,
    through: Seq,
    /// Acknowledged above the watermark (out of order: another partition was faster).
    early: BTreeSet<Seq>,
}

impl Acks {
    fn new() -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            through: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state
            .lock()
            .expect("no panic while holding the ack lock")
    }

    fn issue(&self) -> Seq {
        let mut s = self.lock();
        s.issued += 1;
        s.issued
    }

    fn ack(&self, seq: Seq) {
        let through = {
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
            s.through
        };
        self.changed.notify_all();
        self.through.send_replace(through);
    }

    /// The last sequence number handed out.
    pub fn issued(&self) -> Seq {
        self.lock().issued
    }

    /// Every record up to this one is acknowledged.
    pub fn through(&self) -> Seq {
        self.lock().through
    }

    pub fn watch(&self) -> watch::Receiver<Seq> {
        self.through.subscribe()
    }

    /// Waits (blocking the thread) until `seq` is acknowledged or `timeout` passes; for
    /// librdkafka's rebalance callback, which cannot await. True if acknowledged.
    pub fn wait_blocking(&self, seq: Seq, timeout: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| s.through < seq)
            .expect("no panic while holding the ack lock");
        guard.through >= seq
    }
}

/// A record to produce again.
struct Retry {
    seq: Seq,
    message: OwnedMessage,
}

struct AckContext {
    acks: Arc<Acks>,
    retries: mpsc::UnboundedSender<Retry>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(m) => {
                telemetry::kafka_record_out(m.topic());
                self.acks.ack(seq as Seq);
            }
            Err((e, m)) => {
                tracing::warn!(error = %e, topic = m.topic(), "produce failed; retrying");
                telemetry::kafka_produce_retry(m.topic());
                let retry = Retry {
                    seq: seq as Seq,
                    message: m.detach(),
                };
                // The retry task is gone only when stopping: the record stays unacknowledged.
                let _ = self.retries.send(retry);
            }
        }
    }
}

pub struct Outbox {
    producer: ThreadedProducer<AckContext>,
    acks: Arc<Acks>,
    retries: mpsc::UnboundedSender<Retry>,
}

impl Outbox {
    /// Creates the producer (idempotent, acks from all in-sync replicas) and its retry task,
    /// which ends with `stop`.
    /// `attempt` bounds one delivery attempt (librdkafka's `message.timeout.ms`, with its
    /// own retries inside); then the record is produced again after `retry_backoff`.
    pub fn start(
        common: &ClientConfig,
        attempt: Duration,
        retry_backoff: Duration,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, rdkafka::error::KafkaError> {
        let acks = Arc::new(Acks::new());
        let (retries, mut pending) = mpsc::unbounded_channel();
        let context = AckContext {
            acks: acks.clone(),
            retries: retries.clone(),
        };
        let producer = common
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Keyed by tenant, onto the tenant's partition (see `partition`).
            .set("partitioner", super::partition::LIBRDKAFKA_PARTITIONER)
            .set("message.timeout.ms", attempt.as_millis().max(1).to_string())
            .create_with_context(context)?;
        let outbox = Arc::new(Self {
            producer,
            acks,
            retries,
        });
        let weak = Arc::downgrade(&outbox);
        tokio::spawn(async move {
            loop {
                let retry: Retry = tokio::select! {
                    () = stop.cancelled() => break,
                    retry = pending.recv() => match retry {
                        Some(r) => r,
                        None => break,
                    },
                };
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(retry_backoff) => {}
                }
                let Some(outbox) = weak.upgrade() else { break };
                let m = &retry.message;
                outbox.send(
                    retry.seq,
                    m.topic(),
                    m.key(),
                    m.payload().unwrap_or_default(),
                    m.headers().cloned(),
                );
            }
        });
        Ok(outbox)
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
        if let Err((e, record)) = self.producer.send(record) {
            // The local queue is full (or the record is refused before it is queued):
            // produce it again after the back-off.
            tracing::debug!(error = %e, topic, "produce deferred");
            let message = OwnedMessage::new(
                Some(payload.to_vec()),
                key.map(<[u8]>::to_vec),
                topic.to_owned(),
                rdkafka::Timestamp::NotAvailable,
                rdkafka::producer::PARTITION_UA,
                0,
                record.headers,
            );
            let _ = self.retries.send(Retry { seq, message });
        }
    }

    pub fn acks(&self) -> &Arc<Acks> {
        &self.acks
    }

    /// Waits up to `timeout` for everything handed over so far to be acknowledged.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush: records left unacknowledged");
        }
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
        let watch = acks.watch();

        // Another partition was faster: 2 and 3 are acknowledged before 1.
        acks.ack(2);
        acks.ack(3);
        assert_eq!(acks.through(), 0);
        assert!(!acks.wait_blocking(1, Duration::from_millis(1)));
        acks.ack(1);
        assert_eq!(acks.through(), 3);
        assert_eq!(*watch.borrow(), 3, "async waiters see it too");

        acks.ack(5);
        assert_eq!(acks.through(), 3, "4 is still out");
        acks.ack(4);
        assert_eq!(acks.through(), 5);
        assert!(acks.wait_blocking(5, Duration::from_millis(1)));
    }
}
