//! switchboard: a message router and rate limiter for WhatsApp Business traffic in contact
//! centers.
//!
//! Map of the crate, in the direction data flows:
//! - [`config`]: the TOML file and its environment overrides, validated once.
//! - [`model`]: identifiers and the customer number that never prints in full.
//! - [`clock`]: the only place that reads the time.
//! - [`core`]: the deterministic per-tenant state machine (`Shard`): commands and time in,
//!   replies and effects out, no I/O.
//! - [`kafka`]: the Kafka input (consume, route, produce at-least-once, dead letters).
//! - [`runtime`]: shard tasks, the in-process bus, stream subscriptions, ticks.
//! - [`sender`]: where dispatched messages go (the provider), and what it answered.
//! - [`wire`]: every protobuf ⇄ core conversion and check, and the one error → status
//!   mapping; gRPC and Kafka both read requests through it.
//! - [`grpc`]: the tonic services, a thin adapter over the runtime.
//! - [`telemetry`]: metric names, their descriptions, the Prometheus endpoint.
//! - [`server`]: wires everything, serves until shutdown.
//! - [`webhook`]: the Cloud API webhook JSON as Meta posts it, read into inbound commands.
pub mod auth;
pub mod clock;
pub mod cloud_api;
pub mod config;
pub mod core;
pub mod forward;
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
