//! The Kafka target: inbound messages (and bad records) are produced to the input topic keyed
//! by tenant, and a request is answered when its routed decision, or its dead letter, is read
//! back; send requests go to the sends topic and are answered by their first status event
//! (or dead letter). The same load models drive it as gRPC: a [`Call`] produces record `n` and waits for
//! its answer, so latency counts from the scheduled time to the answer read from the broker.
//!
//! The anchor is a raw rdkafka consume→produce pipe ([`pipe`]) in its own process, copying
//! the same records between two topics of the same broker with the same client settings.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use switchboard::proto;
use tokio::sync::oneshot;

use crate::drive::{
    Call, SendRequests, Shared, Tenants, count_send, dirty_message, inbound_message,
};
use crate::scenario::{Dirty, Flaw, Messages};

/// How long a record may take to come back before it counts as lost.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// What came back for a record.
#[derive(Debug)]
enum Answer {
    Routed(Option<proto::RoutingDecision>),
    Dead { reason: String },
    Status(proto::SendStatus),
}

/// What the reader finds on an output topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    /// switchboard's routed topic: `RoutingDecision`s.
    Decisions,
    /// switchboard's dead-letter topic: the original record, the error in headers.
    DeadLetters,
    /// The anchor pipe's output: the input records, copied.
    Copies,
    /// switchboard's status topic: `SendStatus` events, found by idempotency key.
    Statuses,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>;

/// Produces to one input topic and answers each record from the output topics.
pub struct KafkaTarget {
    producer: FutureProducer,
    input: String,
    sends: Option<String>,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
}

/// The producer settings both switchboard's input and the anchor's get: keyed by tenant,
/// murmur2 like the Java client, a short linger.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .set("enable.idempotence", "true")
        .create()?)
}

/// Produces every `(key, payload)` of `records` to `topic` and waits until the broker stored
/// them all. Records are enqueued at once (a `FutureProducer::send` future enqueues only when
/// first polled, which would send them one round trip at a time); past `WINDOW` in flight, or
/// on a full local queue, the oldest is awaited first.
pub async fn produce_all<K, P>(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = (K, P)>,
) -> anyhow::Result<()>
where
    K: AsRef<[u8]>,
    P: AsRef<[u8]>,
{
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    const WINDOW: usize = 10_000;
    async fn stored(delivery: rdkafka::producer::DeliveryFuture) -> anyhow::Result<()> {
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(anyhow::Error::new(e).context("a record was not stored")),
            Err(_) => anyhow::bail!("the producer dropped a record"),
        }
    }
    let mut deliveries = std::collections::VecDeque::new();
    for (key, payload) in records {
        let mut record = FutureRecord::to(topic)
            .key(key.as_ref())
            .payload(payload.as_ref());
        loop {
            if deliveries.len() >= WINDOW
                && let Some(oldest) = deliveries.pop_front()
            {
                stored(oldest).await?;
            }
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push_back(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    let oldest = deliveries
                        .pop_front()
                        .ok_or_else(|| anyhow::anyhow!("a full queue with nothing in it"))?;
                    record = back;
                    stored(oldest).await?;
                }
                Err((e, _)) => {
                    return Err(anyhow::Error::new(e).context(format!("producing to {topic}")));
                }
            }
        }
    }
    while let Some(d) = deliveries.pop_front() {
        stored(d).await?;
    }
    Ok(())
}

fn consumer(brokers: &str, group: &str) -> anyhow::Result<StreamConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?)
}

/// Every partition of `topics` from its first record; waits (at most 60 s) until each topic
/// exists with its partitions.
fn from_the_beginning(
    consumer: &StreamConsumer,
    topics: &[&str],
) -> anyhow::Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let started = std::time::Instant::now();
        let partitions = loop {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == *topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if found > 0 {
                break found;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "topic {topic} does not exist after 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        for p in 0..partitions {
            list.add_partition_offset(topic, p as i32, Offset::Beginning)?;
        }
    }
    Ok(list)
}

/// The request id a record carries (`provider_message_id`, or in a record that is not
/// protobuf, the `load-dirty.N` text in it).
fn id_of(payload: &[u8]) -> Option<String> {
    if let Ok(m) = proto::InboundMessage::decode(payload)
        && !m.provider_message_id.is_empty()
    {
        return Some(m.provider_message_id);
    }
    let text = String::from_utf8_lossy(payload);
    let at = text.find("load-dirty.")?;
    let digits: String = text[at + 11..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("load-dirty.{digits}"))
}

impl KafkaTarget {
    /// Reads `outputs` from their beginning, answering pending records. Every partition is
    /// assigned by hand (no group coordinator between the reader and the records).
    pub fn start(
        brokers: &str,
        input: &str,
        outputs: &[(String, Output)],
        group: &str,
    ) -> anyhow::Result<Self> {
        let reader = consumer(brokers, group)?;
        let topics: Vec<&str> = outputs.iter().map(|(t, _)| t.as_str()).collect();
        reader.assign(&from_the_beginning(&reader, &topics)?)?;
        let kinds: HashMap<String, Output> = outputs.iter().cloned().collect();
        let pending = Pending::default();
        let answers = pending.clone();
        let reader = tokio::spawn(async move {
            let mut errors = 0u64;
            loop {
                let m = match reader.recv().await {
                    Ok(m) => m,
                    Err(e) => {
                        // Said, not swallowed: a reader that gets nothing shows up as timeouts.
                        errors += 1;
                        if errors.is_power_of_two() {
                            eprintln!("the harness's reader: {e} ({errors} errors so far)");
                        }
                        continue;
                    }
                };
                let payload = m.payload().unwrap_or_default();
                let answer = match kinds.get(m.topic()) {
                    Some(Output::Decisions) => proto::RoutingDecision::decode(payload)
                        .ok()
                        .map(|d| (d.provider_message_id.clone(), Answer::Routed(Some(d)))),
                    Some(Output::Copies) => id_of(payload).map(|id| (id, Answer::Routed(None))),
                    // The admission's answer: the first state after "accepted".
                    Some(Output::Statuses) => proto::SendStatus::decode(payload)
                        .ok()
                        .filter(|s| s.state() != proto::SendState::Accepted)
                        .map(|s| (s.idempotency_key.clone(), Answer::Status(s))),
                    Some(Output::DeadLetters) => id_of(payload).map(|id| {
                        let reason = m
                            .headers()
                            .and_then(|h| {
                                h.iter()
                                    .find(|h| h.key == "switchboard.error.reason")
                                    .and_then(|h| h.value)
                            })
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_else(|| "unknown".into());
                        (id, Answer::Dead { reason })
                    }),
                    None => None,
                };
                if let Some((id, answer)) = answer
                    && let Some(tx) = answers.lock().expect("not poisoned").remove(&id)
                {
                    let _ = tx.send(answer);
                }
            }
        });
        Ok(Self {
            producer: producer(brokers)?,
            input: input.to_owned(),
            sends: None,
            pending,
            reader,
        })
    }

    /// Send requests go to `topic` (switchboard's sends topic).
    pub fn with_sends(mut self, topic: &str) -> Self {
        self.sends = Some(topic.to_owned());
        self
    }

    /// Produces `payload` keyed by `key` to the input topic and waits for the record `id`'s
    /// answer.
    fn produce(
        &self,
        id: String,
        key: String,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Answer, tonic::Status>> + Send + 'static {
        self.produce_to(self.input.clone(), id, key, payload)
    }

    fn produce_to(
        &self,
        topic: String,
        id: String,
        key: String,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Answer, tonic::Status>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), tx);
        let (producer, pending) = (self.producer.clone(), self.pending.clone());
        async move {
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            if let Err((e, _)) = producer.send(record, Duration::from_secs(30)).await {
                pending.lock().expect("not poisoned").remove(&id);
                return Err(tonic::Status::unavailable(format!("produce failed: {e}")));
            }
            match tokio::time::timeout(ANSWER_WITHIN, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                _ => {
                    pending.lock().expect("not poisoned").remove(&id);
                    Err(tonic::Status::deadline_exceeded(format!(
                        "{id}: not answered (routed, dead-lettered or a status) within {ANSWER_WITHIN:?}"
                    )))
                }
            }
        }
    }

    /// Customers writing in, through the input topic.
    pub fn inbound(
        self: &Arc<Self>,
        tenants: &Tenants,
        messages: Messages,
        outcomes: &Shared,
    ) -> Call {
        let (target, tenants, outcomes) = (self.clone(), tenants.clone(), outcomes.clone());
        let messages = Arc::new(messages);
        Arc::new(move |n| {
            let tenant = tenants.of(n);
            let message = inbound_message(tenant, n, messages.nth(n));
            let id = message.provider_message_id.clone();
            let payload = message.encode_to_vec();
            let answer = target.produce(id, tenant.to_owned(), payload);
            let outcomes = outcomes.clone();
            Box::pin(async move {
                let key = match answer.await? {
                    Answer::Routed(Some(d)) => format!(
                        "{}: {}",
                        d.target()
                            .as_str_name()
                            .trim_start_matches("TARGET_")
                            .to_lowercase(),
                        d.reason().as_str_name()
                    ),
                    Answer::Routed(None) | Answer::Status(_) => return Ok(()),
                    Answer::Dead { reason } => {
                        return Err(tonic::Status::invalid_argument(format!(
                            "dead-lettered: {reason}"
                        )));
                    }
                };
                *outcomes
                    .lock()
                    .expect("not poisoned")
                    .routing
                    .entry(key)
                    .or_default() += 1;
                Ok(())
            })
        })
    }

    /// Bad records, through the input topic: each must come back as a dead letter.
    pub fn dirty(self: &Arc<Self>, tenant: &str, dirty: Dirty, outcomes: &Shared) -> Call {
        let (target, tenant, outcomes) = (self.clone(), tenant.to_owned(), outcomes.clone());
        Arc::new(move |n| {
            let m = dirty.nth(n, &tenant, true);
            let id = format!("load-dirty.{n}");
            let (flaw, key) = (m.flaw, m.tenant.clone());
            let payload = if flaw == Flaw::NotProtobuf {
                format!("not protobuf: {id}").into_bytes()
            } else {
                dirty_message(n, m).encode_to_vec()
            };
            let answer = target.produce(id, key, payload);
            let outcomes = outcomes.clone();
            Box::pin(async move {
                let (outcome, result) = match answer.await {
                    Ok(Answer::Dead { reason }) => (
                        Some(format!("dead-lettered ({reason})")),
                        Err(tonic::Status::invalid_argument(reason)),
                    ),
                    Ok(Answer::Routed(_) | Answer::Status(_)) => {
                        (Some("routed".to_owned()), Ok(()))
                    }
                    // Never answered (or never produced): lost, not refused; the report
                    // counts it from what was sent.
                    Err(status) => (None, Err(status)),
                };
                if let Some(outcome) = outcome {
                    *outcomes
                        .lock()
                        .expect("not poisoned")
                        .dirty
                        .entry(format!("{} → {outcome}", flaw.name()))
                        .or_default() += 1;
                }
                result
            })
        })
    }
}

impl KafkaTarget {
    /// A business service's sends through the sends topic: each answered by its first status
    /// event after "accepted" (dispatched, queued or refused) or its dead letter.
    pub fn sends(self: &Arc<Self>, requests: SendRequests, outcomes: &Shared) -> Call {
        let (target, outcomes) = (self.clone(), outcomes.clone());
        let requests = Arc::new(requests);
        Arc::new(move |n| {
            let request = requests.nth(n);
            let (id, key) = (request.idempotency_key.clone(), request.tenant.clone());
            let topic = target.sends.clone().unwrap_or_default();
            let answer = target.produce_to(topic, id, key, request.encode_to_vec());
            let outcomes = outcomes.clone();
            Box::pin(async move {
                let answer = match answer.await? {
                    Answer::Status(s) if s.state() == proto::SendState::Refused => {
                        format!("REFUSED: {}", s.reason().as_str_name())
                    }
                    Answer::Status(s) => s
                        .state()
                        .as_str_name()
                        .trim_start_matches("SEND_STATE_")
                        .to_owned(),
                    Answer::Dead { reason } => {
                        return Err(tonic::Status::invalid_argument(format!(
                            "dead-lettered: {reason}"
                        )));
                    }
                    Answer::Routed(_) => "UNEXPECTED".to_owned(),
                };
                count_send(&outcomes, answer);
                Ok(())
            })
        })
    }
}

impl Drop for KafkaTarget {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// The anchor: consume `input`, produce the same key and bytes to `output`, no per-record
/// waiting, until `stop` resolves.
pub async fn pipe(
    brokers: &str,
    input: &str,
    output: &str,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // The service's own client settings: librdkafka's consumer defaults (bar offsets, which
    // the pipe leaves to auto-commit), and its outbox's producer (idempotent, acks=all,
    // murmur2).
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{input}-pipe"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[input])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .create()?;
    tokio::pin!(stop);
    loop {
        let m = tokio::select! {
            () = &mut stop => break,
            m = consumer.recv() => m?,
        };
        let (key, payload) = (m.key().unwrap_or_default(), m.payload().unwrap_or_default());
        while producer
            .send_result(FutureRecord::to(output).key(key).payload(payload))
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Creates `topics` with `partitions` each (the anchor's; switchboard creates its own).
pub async fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<_> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&new, &AdminOptions::new()).await? {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_found_by_its_id_protobuf_or_not() {
        let m = proto::InboundMessage {
            provider_message_id: "load.42".into(),
            ..Default::default()
        };
        assert_eq!(id_of(&m.encode_to_vec()).as_deref(), Some("load.42"));
        assert_eq!(
            id_of(b"not protobuf: load-dirty.17").as_deref(),
            Some("load-dirty.17")
        );
        assert_eq!(id_of(b"not protobuf at all"), None);
    }
}
