//! The consumer group's rebalance callbacks: an assigned partition is taken over (its state
//! restored) before its input is read, a revoked one handed over (its final cut written);
//! and librdkafka's statistics (consumer lag, for the metric and for readiness). They run on
//! the input's polling thread, inside its `recv`.
use std::collections::BTreeSet;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::handover::{Handover, blocking};
use crate::telemetry;

/// Restores assigned partitions before their input is read, snapshots revoked ones, counts
/// rebalances and commits, reports consumer lag.
pub(super) struct InputContext {
    handover: Arc<Handover>,
}

impl InputContext {
    pub(super) fn new(handover: Arc<Handover>) -> Self {
        Self { handover }
    }
}

impl ClientContext for InputContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 is "not known".
                if partition >= 0 && p.consumer_lag >= 0 {
                    telemetry::kafka_lag(topic, partition, p.consumer_lag);
                    if self.handover.ownership.is_taken(partition) {
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
        h.rebalancing();
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
                // Served or still catching up: their state is what was read so far.
                let taken: Vec<i32> = numbers
                    .iter()
                    .copied()
                    .filter(|&p| h.ownership.is_taken(p))
                    .collect();
                let cut = blocking(|| h.cut(consumer, &taken));
                telemetry::kafka_handed_over(&taken, cut.as_ref().err());
                blocking(|| h.release(&taken));
                for p in &numbers {
                    h.forget_failed(*p);
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
                tracing::info!(partitions = ?taken, "partitions handed over");
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let taken = h.ownership.taken();
                blocking(|| h.release(&taken));
                for p in &numbers {
                    h.forget_failed(*p);
                }
                let _ = consumer.unassign();
            }
        }
    }
}
