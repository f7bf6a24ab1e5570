//! Overload protection for the gRPC server: at most `runtime.max_in_flight_calls` calls are
//! handled at once across all connections; a call past that is answered at once with
//! `RESOURCE_EXHAUSTED` and a retry hint (`grpc-retry-pushback-ms` metadata, the gRPC retry
//! policy's own header, and the same in the message) instead of waiting in a queue that
//! grows with the overload. Behind the limit every queue is bounded (the shards' request
//! queues, `runtime.shard_queue_capacity`, make callers wait), so memory stays bounded
//! whatever the offered load.
//!
//! Health checks and reflection are never shed: an orchestrator must be able to tell an
//! overloaded replica from a dead one. A stream holds its slot only until its answer starts.
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::codegen::http;

/// The metadata key of the retry hint (milliseconds), as gRPC's retry policy reads it.
pub const RETRY_PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// The in-flight limit, one shared by every connection (a gate, see [`crate::gate`]).
#[derive(Clone)]
pub struct InFlightLimit {
    slots: Arc<Semaphore>,
    limit: usize,
    retry_after_ms: u64,
}

impl InFlightLimit {
    pub fn new(limit: usize, retry_after_ms: u64) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            retry_after_ms,
        }
    }
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

impl crate::gate::Gate for InFlightLimit {
    /// The call's slot (none for exempt calls), given back when its answer is ready.
    type Guard = Option<OwnedSemaphorePermit>;

    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<Self::Guard, Status> {
        let path = request.uri().path();
        if exempt(path) {
            return Ok(None);
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            crate::telemetry::shed(path.rsplit('/').next().unwrap_or(path));
            let retry = self.retry_after_ms;
            let mut status = Status::resource_exhausted(format!(
                "switchboard is at capacity ({} calls in flight); retry after {retry} ms, with \
                 backoff",
                self.limit
            ));
            if let Ok(v) = retry.to_string().parse() {
                status.metadata_mut().insert(RETRY_PUSHBACK_HEADER, v);
            }
            return Err(status);
        };
        Ok(Some(slot))
    }
}
