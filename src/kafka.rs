//! Kafka as the input: a consumer group reads inbound messages (protobuf on
//! `kafka.inbound_topic`, Meta's webhook JSON on `kafka.webhooks_topic`), routes each through
//! the owning shard, and produces the decision to `kafka.routed_topic` keyed by tenant. A
//! record that cannot be handled goes to `kafka.dlq_topic` with its original topic, partition,
//! offset and the error in headers; the partition keeps moving.
//!
//! At-least-once: offsets are stored (auto offset store off) only after every record the input
//! caused was acknowledged by the broker, and records are handled one at a time, so offsets are
//! stored in per-partition order. A crash re-reads from the last committed offset; the shard's
//! message-id de-duplication absorbs what was routed twice. Producing is retried until it
//! succeeds or the service stops (then the offset is not stored and the record is re-read).
//!
//! Not yet here (see the README): the outbound send-request topic, dispatch and status
//! topics, webhook statuses feeding provider feedback, concurrency across partitions, state
//! handover between replicas.
use std::time::Duration;

use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, KafkaConfig};
use crate::core::{Command, Reply};
use crate::proto;
use crate::runtime::{CallError, Runtime};
use crate::webhook::{self, NumberDirectory};

/// Why one record went to the dead-letter topic.
#[derive(Debug)]
struct DeadLetter {
    reason: &'static str,
    error: String,
}

pub struct KafkaInput {
    config: KafkaConfig,
    consumer: StreamConsumer,
    producer: FutureProducer,
    runtime: Runtime,
    numbers: NumberDirectory,
}

impl KafkaInput {
    pub fn new(config: &Config, runtime: Runtime) -> Result<Self, rdkafka::error::KafkaError> {
        let k = &config.kafka;
        let mut common = ClientConfig::new();
        common.set("bootstrap.servers", &k.brokers);
        for (key, value) in &k.options {
            common.set(key, value);
        }
        let consumer: StreamConsumer = common
            .clone()
            .set("group.id", &k.group_id)
            .set("enable.auto.commit", "true")
            // Stored only after the outputs are acknowledged (module docs).
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[&k.inbound_topic, &k.webhooks_topic])?;
        let producer: FutureProducer = common
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(Self {
            config: k.clone(),
            consumer,
            producer,
            runtime,
            numbers: NumberDirectory::new(config),
        })
    }

    /// Consumes until `stop`: finishes the record in hand, then commits what was stored.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let record = tokio::select! {
                () = stop.cancelled() => break,
                record = self.consumer.recv() => record,
            };
            let message = match record {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consume error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if self.handle(&message, &stop).await {
                if let Err(e) = self.consumer.store_offset_from_message(&message) {
                    tracing::warn!(error = %e, "cannot store the offset; the record may be read again");
                }
            } else {
                break; // stopping with the record not done: it is read again after restart
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit (nothing stored, or the group is gone)");
        }
        // Leave the group now, so its partitions go to another member at once instead of
        // after the session timeout.
        self.consumer.unsubscribe();
        tracing::info!("kafka input stopped");
    }

    /// Routes one record and produces what it caused; true once all of it is acknowledged.
    async fn handle(&self, m: &BorrowedMessage<'_>, stop: &CancellationToken) -> bool {
        let payload = m.payload().unwrap_or_default();
        let outputs = if m.topic() == self.config.webhooks_topic {
            self.route_webhook(payload).await
        } else {
            self.route_inbound(payload).await.map(|o| vec![o])
        };
        match outputs {
            Ok(outputs) => {
                for (key, decision) in outputs {
                    let bytes = decision.encode_to_vec();
                    let topic = &self.config.routed_topic;
                    if !self
                        .produce(topic, Some(key.as_bytes()), &bytes, None, stop)
                        .await
                    {
                        return false;
                    }
                }
                true
            }
            Err(dead) => {
                tracing::debug!(reason = dead.reason, error = %dead.error, topic = m.topic(), partition = m.partition(), offset = m.offset(), "dead letter");
                let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
                let headers = OwnedHeaders::new()
                    .insert(header("switchboard.original.topic", m.topic()))
                    .insert(header("switchboard.original.partition", &partition))
                    .insert(header("switchboard.original.offset", &offset))
                    .insert(header("switchboard.error.reason", dead.reason))
                    .insert(header("switchboard.error", &dead.error));
                let topic = &self.config.dlq_topic;
                self.produce(topic, m.key(), payload, Some(headers), stop)
                    .await
            }
        }
    }

    async fn route_inbound(
        &self,
        payload: &[u8],
    ) -> Result<(String, proto::RoutingDecision), DeadLetter> {
        let message = proto::InboundMessage::decode(payload).map_err(|e| DeadLetter {
            reason: "undecodable",
            error: format!("not a switchboard.v1.InboundMessage: {e}"),
        })?;
        let inbound = crate::grpc::inbound_in(message).map_err(|s| DeadLetter {
            reason: "invalid",
            error: s.message().to_owned(),
        })?;
        self.route(inbound).await
    }

    async fn route_webhook(
        &self,
        payload: &[u8],
    ) -> Result<Vec<(String, proto::RoutingDecision)>, DeadLetter> {
        let batch = webhook::parse(payload).map_err(|e| DeadLetter {
            reason: e.reason(),
            error: e.to_string(),
        })?;
        let mut outputs = Vec::with_capacity(batch.messages.len());
        for m in &batch.messages {
            let inbound = self.numbers.inbound(m).map_err(|e| DeadLetter {
                reason: e.reason(),
                error: e.to_string(),
            })?;
            outputs.push(self.route(inbound).await?);
        }
        Ok(outputs)
    }

    async fn route(
        &self,
        inbound: crate::core::Inbound,
    ) -> Result<(String, proto::RoutingDecision), DeadLetter> {
        let tenant = inbound.tenant.to_string();
        let id = inbound.provider_message_id.clone();
        match self.runtime.call(Command::Ingest(inbound)).await {
            Ok(Reply::Decision(d)) => {
                let mut decision = crate::grpc::decision_out(&d);
                decision.provider_message_id = id;
                Ok((tenant, decision))
            }
            Ok(other) => Err(DeadLetter {
                reason: "internal",
                error: format!("unexpected reply {other:?}"),
            }),
            Err(CallError::Core(e)) => Err(DeadLetter {
                reason: crate::telemetry::error_type(&e),
                error: e.to_string(),
            }),
            Err(CallError::Unavailable) => Err(DeadLetter {
                reason: "unavailable",
                error: "the service is shutting down".into(),
            }),
        }
    }

    /// Produces one record until the broker acknowledges it, retrying on failure; false if
    /// the service stops first (then the input's offset is not stored).
    async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        stop: &CancellationToken,
    ) -> bool {
        let timeout = Duration::from_millis(self.config.produce_timeout_ms);
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            let sent = tokio::select! {
                () = stop.cancelled() => return false,
                sent = self.producer.send(record, timeout) => sent,
            };
            match sent {
                Ok(_) => return true,
                Err((e, _)) => {
                    tracing::warn!(error = %e, topic, "produce failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
