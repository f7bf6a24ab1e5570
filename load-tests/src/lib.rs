//! The load-test harness (see `README.md` here). Its own logic is kept apart from I/O so it
//! can be tested: when each request is due (`schedule`), how latency is recorded (`latency`:
//! from the scheduled time, so a stalled target shows up as the queueing it causes, no
//! coordinated omission), scenario files (`scenario`) and the report (`report`, `plot`). The
//! rest drives a run: `drive` (load models, simulated customers, services and agents over
//! gRPC), `kafka` (the Kafka target and its anchor pipe), `edges` (the webhook endpoint and
//! the egress against their anchors), `backlog` (a replica starting on a filled input
//! topic), `servers` (the processes a run starts), `usage` (CPU and peak RSS).
pub mod backlog;
pub mod drive;
pub mod edges;
pub mod kafka;
pub mod latency;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod servers;
pub mod usage;
