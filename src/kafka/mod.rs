//! Kafka as the backbone (on when `kafka.brokers` names brokers):
//!
//! - [`input`]: one consumer group reads inbound messages (protobuf), Cloud API webhooks (JSON:
//!   messages and statuses) and send requests (protobuf), hands each to the owning shard, and
//!   stores its offset only once everything it caused is acknowledged by the broker;
//! - [`handover`]: taking partitions over and handing them over (snapshots, replay, cuts),
//!   [`catch_up`]: what a partition taken over reads before it is served;
//!   [`rebalance`]: the consumer group's callbacks that trigger them;
//! - [`health`]: readiness, from what the input, the outbox and the cuts report;
//! - [`state`]: the snapshots on the state topic; [`ownership`], [`owners`] and
//!   [`partition`]: which replica serves which tenant;
//! - [`sink`]: the shards' dispatches and status changes leave through topics;
//! - [`outbox`]: the one idempotent producer all of them share, with the acknowledgement
//!   watermark that ties outputs to input offsets.
//!
//! Topics are keyed by tenant, so a tenant's records stay in order on one partition and the
//! consumer group spreads tenants over replicas. Missing topics are created at start-up
//! (`kafka.create_topics`).
pub mod catch_up;
pub mod handover;
pub mod health;
pub mod input;
pub mod outbox;
pub mod owners;
pub mod ownership;
pub mod partition;
pub mod rebalance;
pub mod sink;
pub mod state;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

pub use input::KafkaInput;

/// The header naming the one tenant a webhook payload record is for, when the payload names
/// several (the webhook endpoint writes one record per tenant; the input copies a payload to
/// each tenant's partition): the input handles that tenant's items only.
pub const TENANT_HEADER: &str = "switchboard.tenant";

/// The header saying what a record of the sends topic holds: absent, a `SendRequest`;
/// [`KIND_CANCEL`], a `CancelRequest` (journaled by the gRPC `Cancel`, or written by a
/// service that cancels through Kafka); [`KIND_CONSENT`], a `SetConsentRequest`.
pub const KIND_HEADER: &str = "switchboard.kind";
pub const KIND_CANCEL: &str = "cancel";
/// A `SetConsentRequest` (journaled by the gRPC `SetConsent`, its time filled in).
pub const KIND_CONSENT: &str = "consent";
/// A `LinkRequest` (journaled by the gRPC `Customers.Link`).
pub const KIND_LINK: &str = "link";
/// An `UpdateProfileRequest` (journaled by the gRPC `Customers.UpdateProfile`, its time filled
/// in).
pub const KIND_PROFILE: &str = "profile";
/// A `PauseRequest` (journaled by the gRPC `Outbound.Pause`, its start filled in).
pub const KIND_PAUSE: &str = "pause";
/// A `ResumeRequest` (journaled by the gRPC `Outbound.Resume`).
pub const KIND_RESUME: &str = "resume";

/// The settings every client shares: brokers, then the operator's raw librdkafka options.
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut common = ClientConfig::new();
    common.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.options {
        common.set(key, value);
    }
    common
}

/// The outbox's producer settings: the common ones and the bound of its queue (the
/// operator's raw options win).
pub fn producer_config(k: &KafkaConfig) -> ClientConfig {
    let mut settings = client_config(k);
    if !k.options.contains_key("queue.buffering.max.kbytes") {
        settings.set(
            "queue.buffering.max.kbytes",
            k.produce_queue_kbytes.to_string(),
        );
    }
    settings
}

/// A consumer in `group` that stores and commits its offsets itself, reading from the start
/// of a partition it has none for, with the failover settings (see
/// `KafkaConfig::session_timeout_ms`) and the bounds of its fetch queue (the operator's raw
/// options win).
pub fn consumer_config(k: &KafkaConfig, group: &str) -> ClientConfig {
    let mut settings = client_config(k);
    settings
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in [
        ("session.timeout.ms", k.session_timeout_ms),
        ("heartbeat.interval.ms", k.heartbeat_interval_ms),
        ("queued.max.messages.kbytes", k.fetch_queue_kbytes),
        ("queued.min.messages", k.fetch_queue_records),
    ] {
        if !k.options.contains_key(key) {
            settings.set(key, value.to_string());
        }
    }
    settings
}

/// Leaves the consumer group and waits, up to `within`, until the group's revoke has been
/// served here (the partitions unassigned), so that the drop which closes the consumer has
/// nothing left to revoke. A revoke served during the close can wait forever in
/// `rd_kafka_assign` (librdkafka issue #4884; unsubscribing first is the maintainers'
/// workaround). Records read meanwhile are let go unhandled: their offsets are not
/// committed, so the partitions' next owner reads them.
pub async fn leave_group<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    within: Duration,
) {
    consumer.unsubscribe();
    let revoked = async {
        while consumer.assignment().is_ok_and(|a| a.count() > 0) {
            // `recv` serves the revoke (and returns only for a record): polled in short turns.
            let _ = tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await;
        }
    };
    if tokio::time::timeout(within, revoked).await.is_err() {
        tracing::warn!(
            within_ms = within.as_millis() as u64,
            "the group's revoke was not served in time; closing with partitions assigned"
        );
    }
}

/// How a topic is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `kafka.topic_partitions` partitions, the broker's retention.
    Plain,
    /// Like plain, with `kafka.state_retention_ms` and room for snapshot chunks.
    State,
    /// One partition, compacted: the owners' announcements.
    Owners,
}

/// Every topic switchboard reads or writes.
pub fn topics(k: &KafkaConfig) -> [(&str, TopicKind); 10] {
    use TopicKind::*;
    [
        (&k.inbound_topic, Plain),
        (&k.webhooks_topic, Plain),
        (&k.sends_topic, Plain),
        (&k.routed_topic, Plain),
        (&k.dispatch_topic, Plain),
        (&k.status_topic, Plain),
        (&k.outcomes_topic, Plain),
        (&k.dlq_topic, Plain),
        (&k.state_topic, State),
        (&k.owners_topic, Owners),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka admin client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(
        "topic {topic:?} has {found} partitions but {inbound:?} has {expected}: the input, \
         dispatch and state topics must have the same number of partitions (a tenant lives on \
         the same partition of each)"
    )]
    Partitions {
        topic: String,
        found: i32,
        inbound: String,
        expected: i32,
    },
    #[error("topic {0:?} does not exist; create it or set kafka.create_topics = true")]
    Missing(String),
    #[error(
        "topic {topic:?} accepts records of at most {limit} bytes (max.message.bytes) but \
         switchboard produces up to {needed} ({what}); raise the topic's max.message.bytes \
         or lower {setting}"
    )]
    TooSmall {
        topic: String,
        limit: usize,
        needed: usize,
        what: &'static str,
        setting: &'static str,
    },
    #[error(
        "cannot create topic {topic:?}: {code}; check kafka.replication_factor (at most the \
         number of brokers) and kafka.topic_partitions, or create the topics yourself and set \
         kafka.create_topics = false"
    )]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// The partition count of the input topics, checked to be the same on every topic a tenant's
/// records share a partition number on (input, dispatch, state).
pub async fn partition_count(k: &KafkaConfig) -> Result<i32, TopicError> {
    let k = k.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer as _;
        let client: rdkafka::consumer::BaseConsumer = client_config(&k).create()?;
        let count = |topic: &str| -> Result<i32, TopicError> {
            let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(30))?;
            match metadata.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len() as i32)
                }
                _ => Err(TopicError::Missing(topic.to_owned())),
            }
        };
        let expected = count(&k.inbound_topic)?;
        for topic in [
            &k.webhooks_topic,
            &k.sends_topic,
            &k.dispatch_topic,
            &k.state_topic,
        ] {
            let found = count(topic)?;
            if found != expected {
                return Err(TopicError::Partitions {
                    topic: topic.clone(),
                    found,
                    inbound: k.inbound_topic.clone(),
                    expected,
                });
            }
        }
        Ok(expected)
    })
    .await
    .expect("the metadata task does not panic")
}

/// Creates the topics that do not exist yet (`kafka.topic_partitions` partitions,
/// `kafka.replication_factor` replicas; the state topic with `kafka.state_retention_ms`).
/// Existing topics are left
/// as they are.
pub async fn create_topics(k: &KafkaConfig) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = client_config(k).create()?;
    let list = topics(k);
    let retention = k.state_retention_ms.to_string();
    let max_bytes = state::max_message_bytes(k).to_string();
    let plain_max_bytes = outbox::Settings::for_config(k)
        .max_message_bytes()
        .to_string();
    let new: Vec<NewTopic<'_>> = list
        .iter()
        .map(|&(name, kind)| {
            let partitions = match kind {
                TopicKind::Owners => 1,
                _ => k.topic_partitions,
            };
            let topic = NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(k.replication_factor),
            );
            match kind {
                // Room for the largest record switchboard produces (a dead letter cut to
                // kafka.max_record_bytes, with headers).
                TopicKind::Plain => topic.set("max.message.bytes", &plain_max_bytes),
                TopicKind::State => topic
                    .set("cleanup.policy", "delete")
                    .set("retention.ms", &retention)
                    .set("max.message.bytes", &max_bytes),
                TopicKind::Owners => topic.set("cleanup.policy", "compact"),
            }
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    Ok(())
}

/// Checks that every topic switchboard writes takes the largest record it may write there:
/// outputs up to `kafka.max_record_bytes` plus headers, state chunks up to
/// `kafka.snapshot_chunk_bytes` plus headers. Uses the topics' `max.message.bytes` as the
/// broker describes them; a broker that does not describe them is not checked (logged).
pub async fn check_record_limits(k: &KafkaConfig) -> Result<(), TopicError> {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = client_config(k).create()?;
    let outputs = outbox::Settings::for_config(k).max_message_bytes();
    let mut wanted: Vec<(&str, usize, &'static str, &'static str)> = [
        &k.routed_topic,
        &k.dispatch_topic,
        &k.status_topic,
        &k.outcomes_topic,
        &k.dlq_topic,
        &k.sends_topic,
        &k.inbound_topic,
        &k.webhooks_topic,
    ]
    .into_iter()
    .map(|t| {
        (
            t.as_str(),
            outputs,
            "outputs, dead letters and moved records with headers",
            "kafka.max_record_bytes",
        )
    })
    .collect();
    wanted.push((
        &k.state_topic,
        state::max_message_bytes(k),
        "snapshot chunks with headers",
        "kafka.snapshot_chunk_bytes",
    ));
    let resources: Vec<ResourceSpecifier<'_>> = wanted
        .iter()
        .map(|(t, ..)| ResourceSpecifier::Topic(t))
        .collect();
    // Short: a broker that cannot describe configs (librdkafka's mock cluster) should not
    // hold the start-up long.
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(3)));
    let described = match admin.describe_configs(&resources, &options).await {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(error = %e, "the broker did not describe the topics' record size limits; not checked");
            return Ok(());
        }
    };
    for ((topic, needed, what, setting), result) in wanted.into_iter().zip(described) {
        let limit = result.ok().and_then(|r| {
            r.get("max.message.bytes")
                .filter(|e| e.source != ConfigSource::Unknown)
                .and_then(|e| e.value.as_deref()?.parse::<usize>().ok())
        });
        match limit {
            Some(limit) if limit < needed => {
                return Err(TopicError::TooSmall {
                    topic: topic.to_owned(),
                    limit,
                    needed,
                    what,
                    setting,
                });
            }
            Some(_) => {}
            None => tracing::info!(
                topic,
                "the broker did not say the topic's max.message.bytes; not checked"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue bounds reach librdkafka's settings; the operator's raw options win.
    #[test]
    fn queue_bounds_reach_the_clients_and_raw_options_win() {
        let k = KafkaConfig {
            brokers: "b:9092".into(),
            ..Default::default()
        };
        let consumer = consumer_config(&k, "g");
        assert_eq!(consumer.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(consumer.get("queued.min.messages"), Some("100000"));
        assert_eq!(
            producer_config(&k).get("queue.buffering.max.kbytes"),
            Some("65536")
        );
        let mut raw = k.clone();
        raw.options.insert("queued.min.messages".into(), "5".into());
        raw.options
            .insert("queue.buffering.max.kbytes".into(), "1024".into());
        assert_eq!(
            consumer_config(&raw, "g").get("queued.min.messages"),
            Some("5")
        );
        assert_eq!(
            producer_config(&raw).get("queue.buffering.max.kbytes"),
            Some("1024")
        );
    }
}
