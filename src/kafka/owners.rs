//! Who serves which partition, for forwarding gRPC calls: when a replica has taken a
//! partition over it announces its advertised gRPC address on `kafka.owners_topic` (one
//! partition, compacted, keyed by partition number), and every replica follows that topic from
//! the start. An announcement can be stale (its replica died; the next owner's replaces it
//! once that one has restored the partition): a forwarded call then fails with UNAVAILABLE,
//! and the caller retries.
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::ownership::Ownership;
use crate::config::KafkaConfig;

/// The record announcing that `address` owns `partition`: (key, payload).
pub fn announcement(partition: i32, address: &str) -> (String, Vec<u8>) {
    (partition.to_string(), address.as_bytes().to_vec())
}

/// Follows the owners topic until `stop`, telling `ownership` who owns what.
pub fn follow(
    k: &KafkaConfig,
    ownership: Arc<Ownership>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, rdkafka::error::KafkaError> {
    let consumer: StreamConsumer = super::client_config(k)
        // Never joins a group (the partition is assigned by hand); the id is only required.
        .set("group.id", format!("{}.owners-reader", k.group_id))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&k.owners_topic, 0, Offset::Beginning)?;
    consumer.assign(&list)?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                record = consumer.recv() => match record {
                    Ok(m) => {
                        let partition = m
                            .key()
                            .and_then(|k| std::str::from_utf8(k).ok())
                            .and_then(|k| k.parse::<i32>().ok());
                        let address = m
                            .payload()
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_owned);
                        if let (Some(p), Some(a)) = (partition, address) {
                            ownership.announced(p, a);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "owners topic: read error; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }))
}
