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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::Status;
use tonic::codegen::http;

/// The metadata key of the retry hint (milliseconds), as gRPC's retry policy reads it.
pub const RETRY_PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// The tower layer: one limit shared by every connection.
#[derive(Clone)]
pub struct OverloadLayer {
    slots: Arc<Semaphore>,
    limit: usize,
    retry_after_ms: u64,
}

impl OverloadLayer {
    pub fn new(limit: usize, retry_after_ms: u64) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            retry_after_ms,
        }
    }
}

impl<S> tower_layer::Layer<S> for OverloadLayer {
    type Service = Overload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Overload {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Overload<S> {
    inner: S,
    layer: OverloadLayer,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Overload<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(slot) = self.layer.slots.clone().try_acquire_owned() else {
            let path = request.uri().path();
            crate::telemetry::shed(path.rsplit('/').next().unwrap_or(path));
            let retry = self.layer.retry_after_ms;
            let mut status = Status::resource_exhausted(format!(
                "switchboard is at capacity ({} calls in flight); retry after {retry} ms, with \
                 backoff",
                self.layer.limit
            ));
            if let Ok(v) = retry.to_string().parse() {
                status.metadata_mut().insert(RETRY_PUSHBACK_HEADER, v);
            }
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(slot);
            response
        })
    }
}
