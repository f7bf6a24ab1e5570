//! Snapshots of the tenants' state on `kafka.state_topic`, one partition per input partition.
//!
//! A **cut** of input partition `p` writes, to partition `p` of the state topic, each tenant's
//! state (JSON, in chunks of at most `kafka.snapshot_chunk_bytes`, keyed by tenant) and then a
//! **manifest**: which tenants and how many chunks, the offset of the first chunk (null: no
//! chunks, a partition without tenants), the input offsets the state covers (the next record
//! to read on each input topic) and the offset of the dispatch topic from which dispatches
//! are not necessarily in the state. A manifest is
//! written only after its chunks are acknowledged, so a manifest means a complete snapshot;
//! every chunk names the offset of the last complete manifest before it, so a reader that
//! finds an unfinished cut at the end of the partition (its writer died) steps back to it.
//!
//! Restoring partition `p` reads the last record of the state partition, finds the manifest,
//! reads its chunks, and the new owner then replays the dispatch topic from the manifest's
//! offset and reads the input from the manifest's offsets. Only the owner of `p` writes to
//! partition `p`. Every record is its own batch (`batch.num.messages = 1`): readers seek to
//! exact offsets, and some Kafka-compatible brokers answer a fetch from inside a batch with
//! the next batch.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::KafkaConfig;

const KIND: &str = "switchboard.state.kind";
const CUT: &str = "switchboard.state.cut";
const PREVIOUS: &str = "switchboard.state.previous";

/// What a complete snapshot of one partition holds (the manifest record's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Unique per cut of this partition (the writer's clock in ms, made increasing).
    pub cut: u64,
    /// When the cut was taken (ms since the epoch).
    pub at_ms: i64,
    /// The state-topic offset of the cut's first chunk; None: the cut has no chunks (a
    /// partition without tenants), so there is nothing to read before the manifest. (Older
    /// manifests wrote -1 for that; [`Manifest::chunks`] reads both.)
    pub first: Option<i64>,
    /// (tenant, chunks) in the order they were written.
    pub tenants: Vec<(String, u32)>,
    /// (input topic, next offset to read): what the state covers.
    pub inputs: Vec<(String, i64)>,
    /// The dispatch-topic offset to replay from (earlier dispatches are in the state).
    pub dispatch: i64,
    /// Incremental cuts (`kafka.snapshot_spread`): a tenant's record may be a *part* that
    /// needs the cuts before it, up to `spread` in all (see `TenantState::merge`). None: every
    /// record is whole (and older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<u32>,
    /// This cut's number among the partition's cuts.
    #[serde(default)]
    pub round: u64,
    /// The offset of the complete manifest before this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<i64>,
    /// The tenants whose record here is a part (the others' are whole).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

impl Manifest {
    /// Where the cut's chunks start on a state partition whose first offset is `low`: None
    /// when the cut has no chunks; an error when they should exist but are gone (only then is
    /// retention the cause) or the manifest contradicts itself.
    pub fn chunks(&self, low: i64) -> Result<Option<i64>, String> {
        match self.first {
            // A partition without tenants (-1: how older manifests wrote it).
            None | Some(-1) if self.tenants.is_empty() => Ok(None),
            None | Some(-1) => Err(format!(
                "cut {}: the manifest lists {} tenant(s) but no first chunk",
                self.cut,
                self.tenants.len()
            )),
            Some(first) if first < low => Err(format!(
                "cut {}: the snapshot's first chunk (offset {first}) is gone (the partition \
                 starts at {low}): the state topic's retention is shorter than \
                 kafka.snapshot_max_age_ms; raise its retention.ms",
                self.cut
            )),
            Some(first) => Ok(Some(first)),
        }
    }
}

/// A snapshot read back: the last complete cut and, for incremental cuts, the ones before it
/// that its parts need.
#[derive(Debug)]
pub struct Snapshot {
    /// The newest cut's manifest (the positions, the replay start).
    pub manifest: Manifest,
    /// The manifest's own offset.
    pub offset: i64,
    /// Each tenant's records (JSON), newest first: the newest cut's and, while they are
    /// parts, those of the cuts before it (at most `spread` in all).
    pub tenants: Vec<(String, Vec<Vec<u8>>)>,
    /// Bytes read (chunks).
    pub bytes: usize,
    /// Cuts read.
    pub cuts: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("state partition {partition}: {problem}")]
    Corrupt { partition: i32, problem: String },
    #[error("state partition {partition}: no record at offset {offset} within {timeout:?}")]
    Timeout {
        partition: i32,
        offset: i64,
        timeout: Duration,
    },
}

/// The largest state record: a chunk and its headers.
pub fn max_message_bytes(k: &KafkaConfig) -> usize {
    k.snapshot_chunk_bytes + 64 * 1024
}

/// A cut being written ([`StateStore::begin`]): a tenant's chunks go in order, one tenant
/// after the other, each produced (and acknowledged) as it is given; the manifest last, which
/// is what makes the cut visible to readers.
pub struct CutWriter<'a> {
    store: &'a StateStore,
    partition: i32,
    at_ms: i64,
    cut: u64,
    previous: i64,
    first: Option<i64>,
    counts: Vec<(String, u32)>,
}

impl CutWriter<'_> {
    fn headers(&self, kind: &str) -> OwnedHeaders {
        OwnedHeaders::new()
            .insert(header(KIND, kind))
            .insert(header(CUT, &self.cut.to_string()))
            .insert(header(PREVIOUS, &self.previous.to_string()))
    }

    /// The next chunk of `tenant`'s state (at most [`StateStore::chunk_bytes`]).
    pub async fn chunk(&mut self, tenant: &str, bytes: &[u8]) -> Result<(), StateError> {
        let offset = self
            .store
            .produce(
                self.partition,
                tenant.as_bytes(),
                bytes,
                self.headers("chunk"),
            )
            .await?;
        self.first.get_or_insert(offset);
        match self.counts.last_mut() {
            Some((last, n)) if last == tenant => *n += 1,
            _ => self.counts.push((tenant.to_owned(), 1)),
        }
        Ok(())
    }

    /// Writes the manifest; returns it.
    pub async fn finish(
        self,
        inputs: Vec<(String, i64)>,
        dispatch: i64,
        spread: Option<u32>,
        round: u64,
        parts: Vec<String>,
    ) -> Result<Manifest, StateError> {
        let headers = self.headers("manifest");
        let manifest = Manifest {
            cut: self.cut,
            at_ms: self.at_ms,
            first: self.first,
            tenants: self.counts,
            inputs,
            dispatch,
            spread,
            round,
            previous: (self.previous >= 0).then_some(self.previous),
            parts,
        };
        let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
        let offset = self
            .store
            .produce(self.partition, b"manifest", &body, headers)
            .await?;
        StateStore::lock(&self.store.last).insert(self.partition, offset);
        Ok(manifest)
    }
}

pub struct StateStore {
    topic: String,
    chunk_bytes: usize,
    timeout: Duration,
    producer: FutureProducer,
    /// For watermarks; each scan reads with a consumer of its own (`reading`).
    reader: BaseConsumer,
    reading: rdkafka::ClientConfig,
    /// Per partition, the offset of the last complete manifest this replica knows of.
    last: Mutex<HashMap<i32, i64>>,
    last_cut: Mutex<u64>,
}

impl StateStore {
    pub fn new(k: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let common = super::client_config(k);
        let producer = common
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .set("message.max.bytes", max_message_bytes(k).to_string())
            .create()?;
        let reading = common
            .clone()
            // Never joins: partitions are assigned by hand; the id is only required.
            .set("group.id", format!("{}.state-reader", k.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // An offset that is gone is an error, not a jump to the end.
            .set("auto.offset.reset", "error")
            // The records asked for exist: do not let the broker wait for more.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", max_message_bytes(k).to_string())
            .clone();
        let reader = reading.create()?;
        Ok(Self {
            topic: k.state_topic.clone(),
            chunk_bytes: k.snapshot_chunk_bytes.max(1),
            timeout: Duration::from_millis(k.produce_timeout_ms),
            producer,
            reader,
            reading,
            last: Mutex::default(),
            last_cut: Mutex::default(),
        })
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().expect("no panic while holding a state-store lock")
    }

    /// A cut id above every earlier one of this replica (the clock, made increasing).
    fn next_cut(&self, at_ms: i64) -> u64 {
        let mut last = Self::lock(&self.last_cut);
        *last = (*last + 1).max(at_ms.max(0) as u64);
        *last
    }

    /// The most bytes of a state in one record.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Begins a cut of `partition` taken at `at_ms`: its tenants' states go in chunk by chunk
    /// ([`CutWriter::chunk`]), then its manifest ([`CutWriter::finish`]).
    pub fn begin(&self, partition: i32, at_ms: i64) -> CutWriter<'_> {
        let previous = Self::lock(&self.last)
            .get(&partition)
            .copied()
            .unwrap_or(-1);
        CutWriter {
            store: self,
            partition,
            at_ms,
            cut: self.next_cut(at_ms),
            previous,
            first: None,
            counts: Vec::new(),
        }
    }

    /// Writes the tenants' states and then the manifest to `partition`; returns the manifest.
    /// `spread`, `round`: see [`Manifest`].
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        &self,
        partition: i32,
        at_ms: i64,
        inputs: Vec<(String, i64)>,
        dispatch: i64,
        tenants: Vec<(String, Vec<u8>)>,
        spread: Option<u32>,
        round: u64,
        parts: Vec<String>,
    ) -> Result<Manifest, StateError> {
        let mut cut = self.begin(partition, at_ms);
        for (tenant, bytes) in &tenants {
            if bytes.is_empty() {
                cut.chunk(tenant, &[]).await?;
            }
            for chunk in bytes.chunks(self.chunk_bytes) {
                cut.chunk(tenant, chunk).await?;
            }
        }
        cut.finish(inputs, dispatch, spread, round, parts).await
    }

    /// Announces on the owners topic that `address` serves `partition` (see `owners`).
    pub async fn announce(
        &self,
        owners_topic: &str,
        partition: i32,
        address: &str,
    ) -> Result<(), StateError> {
        let (key, payload) = super::owners::announcement(partition, address);
        let record = FutureRecord::to(owners_topic)
            .partition(0)
            .key(&key)
            .payload(&payload);
        match self.producer.send(record, self.timeout).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.into()),
        }
    }

    async fn produce(
        &self,
        partition: i32,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<i64, StateError> {
        let record = FutureRecord::to(&self.topic)
            .partition(partition)
            .key(key)
            .payload(payload)
            .headers(headers);
        match self.producer.send(record, self.timeout).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((e, _)) => Err(e.into()),
        }
    }

    /// Reads the last complete snapshot of `partition` (None: there is none), with the cuts
    /// before it that its parts need. Blocking.
    pub fn read(&self, partition: i32) -> Result<Option<Snapshot>, StateError> {
        let (low, high) = self
            .reader
            .fetch_watermarks(&self.topic, partition, self.timeout)?;
        let mut at = high - 1;
        let newest = loop {
            if at < low {
                return Ok(None);
            }
            let (kind, previous) = self.read_at(partition, at, |m| {
                (
                    header_value(m, KIND).unwrap_or_default(),
                    header_value(m, PREVIOUS).and_then(|p| p.parse::<i64>().ok()),
                )
            })?;
            match (kind.as_str(), previous) {
                ("manifest", _) => break at,
                (_, Some(previous)) if previous < at => at = previous,
                _ => return Ok(None),
            }
        };
        let (manifest, records, mut bytes) = self.read_cut(partition, newest, low)?;
        let spread = manifest.spread.unwrap_or(1).max(1) as usize;
        let mut wanting: Vec<&str> = manifest.parts.iter().map(String::as_str).collect();
        let mut tenants: Vec<(String, Vec<Vec<u8>>)> = records
            .into_iter()
            .map(|(tenant, json)| (tenant, vec![json]))
            .collect();
        let (mut cuts, mut previous) = (1, manifest.previous);
        while !wanting.is_empty() && cuts < spread {
            let Some(offset) = previous else {
                return Err(StateError::Corrupt {
                    partition,
                    problem: format!(
                        "cut {}: tenant(s) {wanting:?} saved incrementally, but the cuts \
                         before it are not listed",
                        manifest.cut
                    ),
                });
            };
            let (older, records, read) = self.read_cut(partition, offset, low)?;
            bytes += read;
            for (tenant, json) in records {
                if let Some(w) = wanting.iter().position(|t| *t == tenant) {
                    if !older.parts.contains(&tenant) {
                        wanting.swap_remove(w);
                    }
                    if let Some((_, list)) = tenants.iter_mut().find(|(t, _)| *t == tenant) {
                        list.push(json);
                    }
                }
            }
            // A tenant the older cut does not have began after it (its first record is whole).
            wanting.retain(|t| older.tenants.iter().any(|(o, _)| o == t));
            cuts += 1;
            previous = older.previous;
        }
        Self::lock(&self.last).insert(partition, newest);
        Ok(Some(Snapshot {
            manifest,
            offset: newest,
            tenants,
            bytes,
            cuts,
        }))
    }

    /// Reads the manifest at `offset` of `partition` and its chunks: each tenant's record, in
    /// manifest order, and the bytes read.
    #[allow(clippy::type_complexity)]
    fn read_cut(
        &self,
        partition: i32,
        offset: i64,
        low: i64,
    ) -> Result<(Manifest, Vec<(String, Vec<u8>)>, usize), StateError> {
        if offset < low {
            return Err(StateError::Corrupt {
                partition,
                problem: format!(
                    "the manifest at offset {offset} is gone (the partition starts at {low}): \
                     the state topic's retention is shorter than kafka.snapshot_spread × \
                     kafka.snapshot_max_age_ms; raise its retention.ms"
                ),
            });
        }
        let (kind, body) = self.read_at(partition, offset, |m| {
            (
                header_value(m, KIND).unwrap_or_default(),
                m.payload().unwrap_or_default().to_vec(),
            )
        })?;
        if kind != "manifest" {
            return Err(StateError::Corrupt {
                partition,
                problem: format!("offset {offset} is a {kind:?} record, not a manifest"),
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| StateError::Corrupt {
                partition,
                problem: format!("manifest at offset {offset}: {e}"),
            })?;
        let first = manifest
            .chunks(low)
            .map_err(|problem| StateError::Corrupt { partition, problem })?;
        let cut = manifest.cut.to_string();
        let mut parts: HashMap<String, (u32, Vec<u8>)> = HashMap::new();
        let mut bytes = 0;
        // No chunks (no tenants): an empty range, nothing is read.
        let from = first.unwrap_or(offset);
        self.scan(partition, from, offset, |m| {
            if header_value(m, KIND).as_deref() == Some("chunk")
                && header_value(m, CUT).as_deref() == Some(cut.as_str())
            {
                let tenant = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let payload = m.payload().unwrap_or_default();
                bytes += payload.len();
                let part = parts.entry(tenant).or_default();
                part.0 += 1;
                part.1.extend_from_slice(payload);
            }
        })?;
        let mut tenants = Vec::with_capacity(manifest.tenants.len());
        for (tenant, chunks) in &manifest.tenants {
            match parts.remove(tenant) {
                Some((n, state)) if n == *chunks => tenants.push((tenant.clone(), state)),
                found => {
                    return Err(StateError::Corrupt {
                        partition,
                        problem: format!(
                            "cut {cut}: tenant {tenant:?} has {} of {chunks} chunks",
                            found.map_or(0, |f| f.0)
                        ),
                    });
                }
            }
        }
        Ok((manifest, tenants, bytes))
    }

    /// Calls `f` with the record at `offset` of `partition`.
    fn read_at<R>(
        &self,
        partition: i32,
        offset: i64,
        f: impl FnOnce(&BorrowedMessage<'_>) -> R,
    ) -> Result<R, StateError> {
        let mut f = Some(f);
        let mut out = None;
        self.scan(partition, offset, offset + 1, |m| {
            if let Some(f) = f.take() {
                out = Some(f(m));
            }
        })?;
        Ok(out.expect("scan saw the record"))
    }

    /// Calls `f` with every record of `partition` in `[from, to)`. Blocking.
    pub fn scan(
        &self,
        partition: i32,
        from: i64,
        to: i64,
        f: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<(), StateError> {
        self.scan_topic(&self.topic, partition, from, to, f)
    }

    /// The high watermark of `topic`'s `partition` (the next offset to be written). Blocking.
    pub fn end_of(&self, topic: &str, partition: i32) -> Result<(i64, i64), StateError> {
        Ok(self
            .reader
            .fetch_watermarks(topic, partition, self.timeout)?)
    }

    /// Calls `f` with every record of `topic`'s `partition` in `[from, to)`. Blocking.
    pub fn scan_topic(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        f: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<(), StateError> {
        scan(
            &self.reading.create()?,
            topic,
            partition,
            from,
            to,
            self.timeout,
            f,
        )
    }
}

/// Reads `[from, to)` of one partition with a hand-assigned consumer. `timeout` bounds the
/// wait for each next record (the records exist: `to` is at most the high watermark).
fn scan(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), StateError> {
    if from >= to {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(from))?;
    reader.assign(&list)?;
    let mut next = from;
    let result = loop {
        if next >= to {
            break Ok(());
        }
        match reader.poll(timeout) {
            None => {
                break Err(StateError::Timeout {
                    partition,
                    offset: next,
                    timeout,
                });
            }
            Some(Err(e)) => break Err(e.into()),
            Some(Ok(m)) => {
                if m.offset() >= to {
                    break Ok(());
                }
                if m.offset() >= next {
                    next = m.offset() + 1;
                    f(&m);
                }
            }
        }
    };
    reader.unassign()?;
    result
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value.as_bytes()),
    }
}

fn header_value(m: &BorrowedMessage<'_>, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(first: Option<i64>, tenants: &[(&str, u32)]) -> Manifest {
        Manifest {
            cut: 7,
            at_ms: 1_700_000_000_000,
            first,
            tenants: tenants.iter().map(|&(t, n)| (t.to_owned(), n)).collect(),
            inputs: vec![("switchboard.inbound".into(), 42)],
            dispatch: 3,
            spread: None,
            round: 0,
            previous: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn a_partition_without_tenants_has_a_manifest_that_says_so_and_restores_as_empty() {
        let empty = manifest(None, &[]);
        let json = serde_json::to_string(&empty).unwrap();
        assert!(
            json.contains(r#""first":null"#),
            "explicit in the format: {json}"
        );
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, empty);
        // However far retention has moved the partition's start, nothing is missing.
        for low in [0, 5, 1_000_000] {
            assert_eq!(back.chunks(low), Ok(None), "low {low}");
        }
        // What earlier versions wrote for the same case (first = -1) reads the same.
        let old: Manifest = serde_json::from_str(&json.replace("null", "-1")).unwrap();
        assert_eq!(old.chunks(10), Ok(None));
    }

    #[test]
    fn retention_is_blamed_only_when_chunks_really_are_gone() {
        let m = manifest(Some(100), &[("acme", 2)]);
        assert_eq!(m.chunks(0), Ok(Some(100)));
        assert_eq!(m.chunks(100), Ok(Some(100)));
        let gone = m.chunks(101).unwrap_err();
        assert!(
            gone.contains("offset 100") && gone.contains("retention.ms"),
            "{gone}"
        );
        // Tenants but no first chunk is a contradiction, not a retention problem.
        let odd = manifest(None, &[("acme", 1)]).chunks(0).unwrap_err();
        assert!(!odd.contains("retention"), "{odd}");
        assert!(odd.contains("no first chunk"), "{odd}");
    }
}
