//! switchboard: a message router and rate limiter for WhatsApp Business traffic in contact
//! centers.
//!
//! Map of the crate, one line a module, in layer order (a module uses only modules above it
//! in this list; `tests/layering.rs` checks it):
//! - [`model`]: identifiers and the customer number that never prints in full; [`proto`]: the
//!   generated `switchboard.v1` messages and services; [`allocator`]: the allocator's
//!   settings, set by the binaries at start.
//! - [`clock`]: the only place that reads the time.
//! - [`config`]: the TOML file and its environment overrides, validated once; a leaf.
//! - [`core`]: the deterministic per-tenant state machine (`Shard`): commands and time in,
//!   replies and effects out, no I/O.
//! - [`telemetry`]: metric names, their descriptions, the events that log and count, `/metrics`.
//! - [`gate`]: the one tower layer the call checks use; [`sender`]: where dispatched sends go
//!   and what the provider answered; [`tls`]: optional TLS for both listeners.
//! - [`auth`]: bearer tokens and roles; [`overload`]: the in-flight limit; [`runtime`]: shard
//!   tasks, the in-process bus, stream subscriptions, ticks.
//! - [`wire`]: every protobuf ⇄ core conversion and check, Meta's webhook JSON, and the one
//!   error → status mapping; gRPC and Kafka both read requests through it.
//! - [`grpc`]: the tonic services and forwarding, a thin adapter over the runtime; [`kafka`]:
//!   the Kafka input, handover, readiness and outputs; [`cloud_api`]: the Cloud API sender.
//! - [`webhook`]: Meta's webhooks over HTTP (signed), to the webhooks topic or the shards;
//!   [`egress`]: the dispatch topic through the Cloud API, answers to the outcomes topic.
//! - [`server`]: wires everything, serves until shutdown.
pub mod allocator;
pub mod auth;
pub mod clock;
pub mod cloud_api;
pub mod config;
pub mod core;
pub mod egress;
pub mod gate;
pub mod grpc;
pub mod kafka;
pub mod model;
pub mod overload;
pub mod runtime;
pub mod sender;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod webhook;
pub mod wire;

pub mod proto {
    //! Code generated from `proto/switchboard/v1/switchboard.proto`.
    tonic::include_proto!("switchboard.v1");

    /// Encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("switchboard_descriptor");
}
