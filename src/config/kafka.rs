//! `[kafka]`: brokers, topics, at-least-once and snapshot settings, failover and readiness.
use serde::Deserialize;

use super::{ConfigError, invalid, non_empty, positive};

/// Kafka input and outputs. Kafka mode is on when `brokers` names brokers
/// (`SWITCHBOARD_KAFKA_BROKERS`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list; empty: Kafka is off.
    pub brokers: String,
    /// The consumer group: replicas of one deployment share it.
    pub group_id: String,
    /// Inbound messages as protobuf `switchboard.v1.InboundMessage`.
    pub inbound_topic: String,
    /// Inbound messages as Meta's Cloud API webhook JSON.
    pub webhooks_topic: String,
    /// Routing decisions (protobuf `switchboard.v1.RoutingDecision`), keyed by tenant.
    pub routed_topic: String,
    /// Send requests as protobuf `switchboard.v1.SendRequest`, keyed by tenant.
    pub sends_topic: String,
    /// Admitted sends for the egress that calls the provider (`switchboard.v1.Dispatch`).
    pub dispatch_topic: String,
    /// Every status change of every send (`switchboard.v1.SendStatus`), keyed by tenant.
    pub status_topic: String,
    /// The egress's answers about dispatches (`switchboard.v1.SendOutcome`), keyed by tenant:
    /// an input of the tenant's owner, like the webhooks topic.
    pub outcomes_topic: String,
    /// Records that could not be handled, with their origin and the error in headers.
    pub dlq_topic: String,
    /// Snapshots of each partition's tenants (see `kafka::state`).
    pub state_topic: String,
    /// Which replica owns which partition: each owner announces its `advertise_addr` here
    /// (one partition, compacted), and gRPC calls for its tenants are forwarded to it.
    pub owners_topic: String,
    /// The gRPC address other replicas forward calls to (`host:port`). Empty: the gRPC
    /// listen address, unless it is a wildcard (0.0.0.0 or [::]); then calls are not forwarded
    /// to this replica (they get UNAVAILABLE, naming the partition).
    pub advertise_addr: String,
    /// Create missing topics at start-up (needs the broker's admin API).
    pub create_topics: bool,
    /// Partitions of topics created at start-up (the unit of scale-out: at most this many
    /// replicas share the work).
    pub topic_partitions: i32,
    /// Replication factor of topics created at start-up (1 only for a single-broker dev setup).
    pub replication_factor: i32,
    /// Input records handled but not yet acknowledged by the broker, at most; past it the
    /// input waits (the duplicates a crash can cause are bounded by it).
    pub max_in_flight: usize,
    /// How often each owned partition with new input is snapshotted to the state topic and
    /// its input offsets committed: bounds what a new owner replays after a crash.
    pub snapshot_interval_ms: u64,
    /// A partition without new input is snapshotted again after this long, so its snapshot
    /// stays well inside the state topic's retention.
    pub snapshot_max_age_ms: u64,
    /// Cuts are incremental: each writes the conversations and message ids that changed since
    /// the one before and one in `snapshot_spread` of the others, so every one is written at
    /// least once in this many cuts in a row, and a takeover reads (at most) that many. 1:
    /// every cut writes everything.
    pub snapshot_spread: u32,
    /// The most of the time cuts may take, in percent. A shard copies a cut within this share
    /// of its time; the writer rests `t × (100 / this − 1)` after each chunk it took `t` to
    /// encode; and after a cut that cost `t` (copying and encoding, its waits and rests left
    /// out), the partition's next cut begins no sooner than `t × 100 / this` after it began
    /// (waiting at most half of `stall_timeout_ms`), besides `snapshot_interval_ms`. Under a
    /// backlog, or with a large state, where every conversation changes between cuts, this
    /// keeps the cuts from taking the CPU the input needs in bursts; what a new owner replays
    /// after a crash grows as much. Cuts a revoke or a shutdown waits for are not paced.
    /// 100: cuts every `snapshot_interval_ms` whatever they cost.
    pub snapshot_busy_percent: u32,
    /// Largest state record, in bytes: a tenant's snapshot is cut into chunks of this size
    /// (keep it under the broker's `message.max.bytes`).
    pub snapshot_chunk_bytes: usize,
    /// Retention of the state topic when switchboard creates it (delete policy; see
    /// `kafka::state` for why not compaction). Must exceed `snapshot_max_age_ms` by far.
    pub state_retention_ms: u64,
    /// Largest input record accepted, in bytes; a larger one is dead-lettered as `oversize`
    /// (its payload cut to this plus 8 KiB). Also the largest record produced: the producer's
    /// `message.max.bytes` is this plus 16 KiB for headers, checked at start-up against the
    /// output topics' `max.message.bytes` where the broker tells it. At most 64 MiB.
    pub max_record_bytes: usize,
    /// How long a partition revoke may wait for its in-flight records to be acknowledged.
    pub revoke_drain_ms: u64,
    /// How often librdkafka reports statistics (consumer lag metrics); 0: off.
    pub statistics_interval_ms: u64,
    /// How long producing one record may take before it is retried.
    pub produce_timeout_ms: u64,
    /// The consumer group's session timeout: a replica that stops heartbeating (killed, cut
    /// off) loses its partitions after this long, and only then can another replica take its
    /// tenants over. Shorter fails over faster; too short and a network blip or a slow
    /// broker moves partitions needlessly. Brokers accept 6,000 ms and up by default
    /// (`group.min.session.timeout.ms`). An entry in `options` overrides it.
    pub session_timeout_ms: u64,
    /// How often the consumer heartbeats the group (at most a third of the session timeout);
    /// also how soon the survivors hear of a rebalance. An entry in `options` overrides it.
    pub heartbeat_interval_ms: u64,
    /// Readiness: the input counts as stalled (NOT_SERVING) when records are waiting and
    /// nothing moved (no record read, no output acknowledged) for this long.
    pub stall_timeout_ms: u64,
    /// Readiness: NOT_SERVING when cuts have failed, with none written since, for this long.
    pub snapshot_failure_timeout_ms: u64,
    /// The retry hint (`grpc-retry-pushback-ms`) on UNAVAILABLE answers for a tenant whose
    /// partition is changing hands or whose owner cannot be reached.
    pub unavailable_retry_ms: u64,
    /// Most input records handled together: the ones the consumer already fetched, up to
    /// the in-flight room; a run of inbound messages among them goes to the shards in one
    /// hand-off per shard. 1: one record at a time.
    pub input_batch: usize,
    /// Fetched input kept ready by librdkafka, at most this many KiB in all (its
    /// `queued.max.messages.kbytes`; librdkafka's own default, 64 MiB, plus its per-partition
    /// record count, lets a replica catching up on a backlog hold far more than it needs).
    pub fetch_queue_kbytes: u64,
    /// Fetched input records librdkafka tries to keep ready per partition
    /// (`queued.min.messages`, its default too). The memory bound is `fetch_queue_kbytes`:
    /// 10,000 here held a busy partition to one broker round trip per 10,000 records, and the
    /// Kafka path to 0.58× the raw pipe's rate (0.97× with 100,000; `load-tests/RESULTS.md`).
    pub fetch_queue_records: u64,
    /// Records produced and not yet acknowledged, at most this many KiB in the producer's
    /// queue (`queue.buffering.max.kbytes`; librdkafka's default is 1 GiB). A full queue
    /// makes the input wait, as `max_in_flight` does.
    pub produce_queue_kbytes: u64,
    /// Raw librdkafka options for consumer and producer (e.g. security settings); an entry
    /// here overrides the settings above.
    pub options: std::collections::BTreeMap<String, String>,
}

/// The largest `kafka.max_record_bytes` accepted (librdkafka fetches at most 100 MB a record).
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "switchboard".into(),
            inbound_topic: "switchboard.inbound".into(),
            webhooks_topic: "switchboard.webhooks".into(),
            routed_topic: "switchboard.routed".into(),
            sends_topic: "switchboard.sends".into(),
            dispatch_topic: "switchboard.dispatch".into(),
            status_topic: "switchboard.status".into(),
            outcomes_topic: "switchboard.outcomes".into(),
            dlq_topic: "switchboard.dlq".into(),
            state_topic: "switchboard.state".into(),
            owners_topic: "switchboard.owners".into(),
            advertise_addr: String::new(),
            create_topics: true,
            topic_partitions: 12,
            replication_factor: 3,
            max_in_flight: 10_000,
            snapshot_interval_ms: 5_000,
            snapshot_max_age_ms: 3_600_000,
            snapshot_spread: 12,
            snapshot_busy_percent: 10,
            snapshot_chunk_bytes: 900_000,
            state_retention_ms: 7 * 24 * 3_600_000,
            max_record_bytes: 256 * 1024,
            revoke_drain_ms: 10_000,
            statistics_interval_ms: 5_000,
            produce_timeout_ms: 10_000,
            // A killed replica's tenants are served again after the session timeout, the
            // survivors' rejoin and the restore: measured 12.9 s on librdkafka's mock cluster
            // with these (20.8 s with 10 s and 1 s). 6 s is the brokers' default minimum
            // (group.min.session.timeout.ms).
            session_timeout_ms: 6_000,
            heartbeat_interval_ms: 500,
            // Three produce timeouts: a broker that answers late is not yet a stall.
            stall_timeout_ms: 30_000,
            snapshot_failure_timeout_ms: 60_000,
            unavailable_retry_ms: 1_000,
            input_batch: 256,
            fetch_queue_kbytes: 16 * 1024,
            fetch_queue_records: 100_000,
            produce_queue_kbytes: 64 * 1024,
            options: Default::default(),
        }
    }
}

impl KafkaConfig {
    /// Checks the section (Kafka mode only); the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = self;
        non_empty("kafka.group_id", &k.group_id)?;
        for (field, topic) in [
            ("kafka.inbound_topic", &k.inbound_topic),
            ("kafka.webhooks_topic", &k.webhooks_topic),
            ("kafka.routed_topic", &k.routed_topic),
            ("kafka.sends_topic", &k.sends_topic),
            ("kafka.dispatch_topic", &k.dispatch_topic),
            ("kafka.status_topic", &k.status_topic),
            ("kafka.outcomes_topic", &k.outcomes_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
            ("kafka.state_topic", &k.state_topic),
            ("kafka.owners_topic", &k.owners_topic),
        ] {
            non_empty(field, topic)?;
        }
        positive("kafka.produce_timeout_ms", k.produce_timeout_ms)?;
        positive("kafka.max_in_flight", k.max_in_flight as u64)?;
        positive("kafka.max_record_bytes", k.max_record_bytes as u64)?;
        positive("kafka.snapshot_interval_ms", k.snapshot_interval_ms)?;
        positive("kafka.snapshot_chunk_bytes", k.snapshot_chunk_bytes as u64)?;
        if k.max_record_bytes > MAX_RECORD_BYTES {
            return Err(invalid(
                "kafka.max_record_bytes",
                format!(
                    "{} is over {MAX_RECORD_BYTES} (64 MiB), more than a Kafka client \
                     fetches in one record; lower it",
                    k.max_record_bytes
                ),
            ));
        }
        positive("kafka.session_timeout_ms", k.session_timeout_ms)?;
        if k.heartbeat_interval_ms == 0 || 3 * k.heartbeat_interval_ms > k.session_timeout_ms {
            return Err(invalid(
                "kafka.heartbeat_interval_ms",
                format!(
                    "must be above 0 and at most a third of kafka.session_timeout_ms ({}); \
                     lower it",
                    k.session_timeout_ms
                ),
            ));
        }
        positive(
            "kafka.snapshot_failure_timeout_ms",
            k.snapshot_failure_timeout_ms,
        )?;
        if k.stall_timeout_ms <= k.statistics_interval_ms {
            return Err(invalid(
                "kafka.stall_timeout_ms",
                format!(
                    "must be longer than kafka.statistics_interval_ms ({}): the consumer lag \
                     it reads is that old; raise it",
                    k.statistics_interval_ms
                ),
            ));
        }
        if k.snapshot_max_age_ms < k.snapshot_interval_ms {
            return Err(invalid(
                "kafka.snapshot_max_age_ms",
                "is shorter than kafka.snapshot_interval_ms; raise it",
            ));
        }
        if !(1..=1_000).contains(&k.snapshot_spread) {
            return Err(invalid(
                "kafka.snapshot_spread",
                format!("{} is outside 1..=1000; change it", k.snapshot_spread),
            ));
        }
        if !(1..=100).contains(&k.snapshot_busy_percent) {
            return Err(invalid(
                "kafka.snapshot_busy_percent",
                format!("{} is outside 1..=100; change it", k.snapshot_busy_percent),
            ));
        }
        let spread = u64::from(k.snapshot_spread);
        if k.state_retention_ms < (spread + 3) * k.snapshot_max_age_ms {
            return Err(invalid(
                "kafka.state_retention_ms",
                format!(
                    "must be at least (kafka.snapshot_spread + 3) × kafka.snapshot_max_age_ms \
                     ({} ms), or a takeover could find the cuts it reads expired",
                    (spread + 3) * k.snapshot_max_age_ms
                ),
            ));
        }
        if !(1..=10_000).contains(&k.input_batch) {
            return Err(invalid(
                "kafka.input_batch",
                format!("{} is outside 1..=10000; change it", k.input_batch),
            ));
        }
        // librdkafka's own ranges for the three.
        for (field, value, most) in [
            ("kafka.fetch_queue_kbytes", k.fetch_queue_kbytes, 2_097_151),
            (
                "kafka.fetch_queue_records",
                k.fetch_queue_records,
                10_000_000,
            ),
            (
                "kafka.produce_queue_kbytes",
                k.produce_queue_kbytes,
                2_147_483_647,
            ),
        ] {
            if !(1..=most).contains(&value) {
                return Err(invalid(
                    field,
                    format!("{value} is outside 1..={most} (librdkafka's range); change it"),
                ));
            }
        }
        if k.fetch_queue_kbytes * 1024 < k.max_record_bytes as u64 {
            return Err(invalid(
                "kafka.fetch_queue_kbytes",
                format!(
                    "holds less than one record of kafka.max_record_bytes ({} bytes); raise it",
                    k.max_record_bytes
                ),
            ));
        }
        positive("kafka.topic_partitions", k.topic_partitions.max(0) as u64)?;
        positive(
            "kafka.replication_factor",
            k.replication_factor.max(0) as u64,
        )?;
        Ok(())
    }
}
