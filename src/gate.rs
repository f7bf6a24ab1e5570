//! One tower layer for the checks every gRPC call passes before its service sees it (the
//! in-flight limit, the token check): a [`Gate`] either refuses the call with a status,
//! answered at once, or lets it through with a guard held until its answer is ready.
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::http;

/// A check in front of every call.
pub trait Gate: Clone + Send + Sync + 'static {
    /// Held while the call runs (a concurrency permit, or nothing).
    type Guard: Send + 'static;

    /// Refuse the call, or let it through (the check may add request extensions).
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<Self::Guard, Status>;
}

/// The layer for a [`Gate`].
#[derive(Clone)]
pub struct GateLayer<G>(pub G);

impl<S, G: Gate> tower_layer::Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, B, R> tower_service::Service<http::Request<B>> for Gated<S, G>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    G: Gate,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.gate.admit(&mut request) {
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
            Ok(guard) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let response = call.await;
                    drop(guard);
                    response
                })
            }
        }
    }
}
