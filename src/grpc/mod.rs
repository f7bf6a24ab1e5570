//! The gRPC API (`switchboard.v1`), a thin adapter: each call converts its request to a core
//! [`Command`] (through the `wire` layer, which also checks what needs no state, so a bad
//! request never reaches a shard), hands it to the owning shard through the [`Runtime`], and
//! converts the answer back. It decides nothing. `wire::status` is the one place that turns
//! an error into a `tonic::Status`.
pub mod forward;

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::config::MessagingLimit;
use crate::core::quota::{Admission, Change, PlanRequest};
use crate::core::{Command, Reply, RouteOverride, TransferTarget};
use crate::model::{QueueName, TenantId};
use crate::proto;
use crate::runtime::{Lagged, ReloadError, Reloader, Runtime};
// Every conversion and the error mapping (the wire layer).
use crate::sender::Journal;
use crate::wire::*;

fn lagged() -> Status {
    Status::resource_exhausted(
        "this stream fell behind (runtime.subscriber_buffer events) and was closed; subscribe again",
    )
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn stream<T: Send + 'static, U: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<Result<T, Lagged>>,
    convert: fn(T) -> U,
) -> EventStream<U> {
    Box::pin(ReceiverStream::new(rx).map(move |item| item.map(convert).map_err(|Lagged| lagged())))
}

// --- services --------------------------------------------------------------------------------

/// Serves a call here, or (Kafka mode) forwards it to the replica that owns its tenant and
/// returns that replica's answer.
macro_rules! forward {
    ($api:ident, $request:ident, $client:ty, $method:ident) => {
        if let Some((channel, owner)) =
            $api.owner_of(&$request.get_ref().tenant, $request.metadata())?
        {
            let tenant = $request.get_ref().tenant.clone();
            let mut response = <$client>::new(channel)
                .$method(forwarded($request))
                .await
                .map_err(|s| $api.unreached(&tenant, &owner, s))?;
            served_by(response.metadata_mut(), &owner);
            return Ok(response);
        }
    };
    (stream $api:ident, $request:ident, $client:ty, $method:ident) => {
        if let Some((channel, owner)) =
            $api.owner_of(&$request.get_ref().tenant, $request.metadata())?
        {
            let tenant = $request.get_ref().tenant.clone();
            let response = <$client>::new(channel)
                .$method(forwarded($request))
                .await
                .map_err(|s| $api.unreached(&tenant, &owner, s))?;
            let (mut metadata, events, extensions) = response.into_parts();
            served_by(&mut metadata, &owner);
            let events: EventStream<_> = Box::pin(events);
            return Ok(Response::from_parts(metadata, events, extensions));
        }
    };
}

/// Writes a service's handlers, each with the skeleton every call shares (written once,
/// here): `unary` and `stream` handlers are forwarded to the tenant's owner when that is
/// another replica (Kafka mode), else their body runs here; `local` ones always run here.
/// `type` items (the stream types) are kept as they are. (`&self` is written at each handler:
/// `self` in a body must come from the same place as the signature's.)
///
/// ```text
/// service!(proto::agents_server::Agents, proto::agents_client::AgentsClient<Channel> {
///     unary get(&self, request: proto::AgentRef) -> proto::Agent { /* request → command → reply */ }
/// });
/// ```
macro_rules! service {
    ($service:path, $client:ty { $($items:tt)* }) => {
        service!(@items [$service] [$client] [] $($items)*);
    };
    (@items [$service:path] [$client:ty] [$($done:tt)*]
        type $name:ident = $t:ty; $($rest:tt)*) => {
        service!(@items [$service] [$client] [$($done)* type $name = $t;] $($rest)*);
    };
    (@items [$service:path] [$client:ty] [$($done:tt)*]
        $kind:ident $method:ident(&$self:ident, $request:ident: $req:ty) -> $resp:ty $body:block
        $($rest:tt)*) => {
        service!(@items [$service] [$client] [$($done)*
            async fn $method(&$self, $request: Request<$req>) -> Result<Response<$resp>, Status> {
                service!(@forward $kind $self, $request, $client, $method);
                $body
            }
        ] $($rest)*);
    };
    (@items [$service:path] [$client:ty] [$($done:tt)*]) => {
        #[tonic::async_trait]
        impl $service for Api {
            $($done)*
        }
    };
    (@forward unary $($call:tt)*) => { forward!($($call)*); };
    (@forward stream $($call:tt)*) => { forward!(stream $($call)*); };
    (@forward local $($call:tt)*) => {};
}

// One file a service (after the macros they use).
mod agents;
mod bots;
mod conversations;
mod customers;
mod inbound;
mod outbound;
mod queues;
mod quotas;

/// Marks a forwarded call's response with the replica that served it.
fn served_by(metadata: &mut tonic::metadata::MetadataMap, owner: &str) {
    if let Ok(value) = owner.parse() {
        metadata.insert(SERVED_BY_HEADER, value);
    }
}

/// Response metadata of a forwarded call: the address of the replica that served it.
pub const SERVED_BY_HEADER: &str = "switchboard-served-by";

/// The request as it goes to the owner: its metadata (credentials included), marked so the
/// owner does not forward it again.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    let (mut metadata, _, message) = request.into_parts();
    metadata.insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    Request::from_parts(metadata, Default::default(), message)
}

/// Request metadata on a call one replica forwarded to another.
pub const FORWARDED_HEADER: &str = "switchboard-forwarded";

/// All services share one runtime handle.
#[derive(Clone)]
pub struct Api {
    runtime: Runtime,
    reloader: Arc<Reloader>,
    /// Kafka mode: where the tenants this replica does not own are served.
    forwarder: Option<Arc<forward::Forwarder>>,
    /// Kafka mode: where admitted sends are written (the sends topic).
    journal: Option<Arc<dyn Journal>>,
}

impl Api {
    pub fn new(runtime: Runtime, reloader: Arc<Reloader>) -> Self {
        Self {
            runtime,
            reloader,
            forwarder: None,
            journal: None,
        }
    }

    /// Writes admitted sends to `journal` before answering (Kafka mode).
    pub fn journaling(self, journal: Arc<dyn Journal>) -> Self {
        Self {
            journal: Some(journal),
            ..self
        }
    }

    /// Writes a change down before its answer (Kafka mode), so a crash before the next
    /// snapshot does not lose it.
    async fn journal_change(
        &self,
        record: crate::sender::Journaled<'_>,
        what: &str,
    ) -> Result<(), Status> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        journal.append(record).await.map_err(|e| {
            tracing::warn!(error = %e, "{what} not journaled");
            Status::unavailable(format!(
                "{what} done here but not journaled ({e}); retry (the same request is safe)"
            ))
        })
    }

    /// Forwards calls for tenants owned by other replicas (Kafka mode).
    pub fn forwarding(self, forwarder: Arc<forward::Forwarder>) -> Self {
        Self {
            forwarder: Some(forwarder),
            ..self
        }
    }

    /// The channel to the tenant's owner when it is another replica; None: serve it here.
    fn owner_of(
        &self,
        tenant: &str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<(Channel, String)>, Status> {
        match &self.forwarder {
            Some(f) => f.route(tenant, metadata.contains_key(FORWARDED_HEADER)),
            None => Ok(None),
        }
    }

    /// A forwarded call the owner did not serve (see `Forwarder::unreached`).
    fn unreached(&self, tenant: &str, owner: &str, status: Status) -> Status {
        match &self.forwarder {
            Some(f) => f.unreached(tenant, owner, status),
            None => status,
        }
    }

    async fn call(&self, command: Command) -> Result<Reply, Status> {
        self.runtime.call(command).await.map_err(status)
    }

    async fn agent_call(&self, command: Command) -> Result<Response<proto::Agent>, Status> {
        match self.call(command).await? {
            Reply::Agent(a) => Ok(Response::new(agent_out(&a))),
            other => Err(unexpected(other)),
        }
    }

    async fn conversation_call(
        &self,
        command: Command,
    ) -> Result<Response<proto::Conversation>, Status> {
        match self.call(command).await? {
            Reply::Conversation(c) => Ok(Response::new(conversation_out(&c))),
            other => Err(unexpected(other)),
        }
    }

    async fn decision_call(
        &self,
        command: Command,
    ) -> Result<Response<proto::RoutingDecision>, Status> {
        match self.call(command).await? {
            Reply::Decision(d) => Ok(Response::new(decision_out(&d))),
            other => Err(unexpected(other)),
        }
    }
}

// --- Quotas ------------------------------------------------------------------------------------

impl Api {
    async fn quota(&self, tenant: TenantId) -> Result<proto::PortfolioQuota, Status> {
        match self.call(Command::GetQuota { tenant }).await? {
            Reply::Quota(q) => Ok(quota_out(&q)),
            other => Err(unexpected(other)),
        }
    }
}
