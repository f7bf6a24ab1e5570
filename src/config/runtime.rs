//! `[runtime]`: shards, ticks, buffers, the in-flight limit and the shutdown grace period.
use serde::Deserialize;

/// How the runtime around the core is shaped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Number of shards (single-threaded state machines); tenants are spread over them.
    pub shards: usize,
    /// How often each shard gets a tick (max-wait escalation, SLA breaches, sweeps, gauges).
    pub tick_interval_ms: u64,
    /// Requests waiting for one shard; when full, callers wait (backpressure, not buffering).
    pub shard_queue_capacity: usize,
    /// Events buffered per stream subscriber; a subscriber this far behind is disconnected.
    pub subscriber_buffer: usize,
    /// How long shutdown waits for in-flight calls before it gives up.
    pub shutdown_grace_ms: u64,
    /// gRPC calls handled at once across all connections; past it a call is refused at once
    /// with RESOURCE_EXHAUSTED and a retry hint (health checks are never refused).
    pub max_in_flight_calls: usize,
    /// The retry hint given with RESOURCE_EXHAUSTED (`grpc-retry-pushback-ms`).
    pub overload_retry_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shards: 2,
            tick_interval_ms: 1_000,
            shard_queue_capacity: 4_096,
            subscriber_buffer: 1_024,
            shutdown_grace_ms: 10_000,
            max_in_flight_calls: 2_048,
            overload_retry_ms: 100,
        }
    }
}
