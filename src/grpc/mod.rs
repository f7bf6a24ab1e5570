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

#[tonic::async_trait]
impl proto::inbound_server::Inbound for Api {
    async fn ingest(
        &self,
        request: Request<proto::InboundMessage>,
    ) -> Result<Response<proto::RoutingDecision>, Status> {
        forward!(
            self,
            request,
            proto::inbound_client::InboundClient<Channel>,
            ingest
        );
        let inbound = inbound_in(request.into_inner())?;
        let id = inbound.provider_message_id.clone();
        let mut decision = self.decision_call(Command::Ingest(inbound)).await?;
        decision.get_mut().provider_message_id = id;
        Ok(decision)
    }
}

#[tonic::async_trait]
impl proto::agents_server::Agents for Api {
    async fn register(
        &self,
        request: Request<proto::RegisterAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        forward!(
            self,
            request,
            proto::agents_client::AgentsClient<Channel>,
            register
        );
        let r = request.into_inner();
        self.agent_call(Command::RegisterAgent {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            presence: presence(r.presence)?,
            capacity: r.capacity,
            queues: r.queues,
        })
        .await
    }

    async fn set_presence(
        &self,
        request: Request<proto::SetPresenceRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        forward!(
            self,
            request,
            proto::agents_client::AgentsClient<Channel>,
            set_presence
        );
        let r = request.into_inner();
        self.agent_call(Command::SetPresence {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            presence: presence(r.presence)?,
        })
        .await
    }

    async fn get(
        &self,
        request: Request<proto::AgentRef>,
    ) -> Result<Response<proto::Agent>, Status> {
        forward!(
            self,
            request,
            proto::agents_client::AgentsClient<Channel>,
            get
        );
        let r = request.into_inner();
        self.agent_call(Command::GetAgent {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
        })
        .await
    }

    type SubscribeStream = EventStream<proto::AgentEvent>;

    async fn subscribe(
        &self,
        request: Request<proto::AgentRef>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        forward!(stream self, request, proto::agents_client::AgentsClient<Channel>, subscribe);
        let r = request.into_inner();
        let rx = self
            .runtime
            .subscribe_agent(tenant(&r.tenant)?, agent("agent_id", &r.agent_id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(stream(rx, agent_event_out)))
    }

    async fn complete(
        &self,
        request: Request<proto::ConversationAction>,
    ) -> Result<Response<proto::Agent>, Status> {
        forward!(
            self,
            request,
            proto::agents_client::AgentsClient<Channel>,
            complete
        );
        let r = request.into_inner();
        self.agent_call(Command::Complete {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    async fn release(
        &self,
        request: Request<proto::ConversationAction>,
    ) -> Result<Response<proto::Agent>, Status> {
        forward!(
            self,
            request,
            proto::agents_client::AgentsClient<Channel>,
            release
        );
        let r = request.into_inner();
        self.agent_call(Command::Release {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    async fn transfer(
        &self,
        request: Request<proto::TransferRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        forward!(
            self,
            request,
            proto::agents_client::AgentsClient<Channel>,
            transfer
        );
        use proto::transfer_request::To;
        let r = request.into_inner();
        let to = match r.to {
            Some(To::Queue(q)) => TransferTarget::Queue(QueueName::new(required("queue", &q)?)),
            Some(To::ToAgentId(a)) => TransferTarget::Agent(agent("to_agent_id", &a)?),
            None => return Err(invalid("to", "is required: set queue or to_agent_id").into()),
        };
        self.agent_call(Command::Transfer {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            conversation: conversation_id(&r.conversation_id)?,
            to,
        })
        .await
    }
}

#[tonic::async_trait]
impl proto::bots_server::Bots for Api {
    type SubscribeStream = EventStream<proto::BotEvent>;

    async fn subscribe(
        &self,
        request: Request<proto::BotRef>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        forward!(stream self, request, proto::bots_client::BotsClient<Channel>, subscribe);
        let r = request.into_inner();
        let rx = self
            .runtime
            .subscribe_bot(tenant(&r.tenant)?, required("bot", &r.bot)?.to_owned())
            .await
            .map_err(status)?;
        Ok(Response::new(stream(rx, bot_event_out)))
    }
}

#[tonic::async_trait]
impl proto::conversations_server::Conversations for Api {
    async fn get(
        &self,
        request: Request<proto::ConversationRef>,
    ) -> Result<Response<proto::Conversation>, Status> {
        forward!(
            self,
            request,
            proto::conversations_client::ConversationsClient<Channel>,
            get
        );
        let r = request.into_inner();
        self.conversation_call(Command::GetConversation {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    async fn pause_automation(
        &self,
        request: Request<proto::ConversationRef>,
    ) -> Result<Response<proto::Conversation>, Status> {
        forward!(
            self,
            request,
            proto::conversations_client::ConversationsClient<Channel>,
            pause_automation
        );
        let r = request.into_inner();
        self.conversation_call(Command::PauseAutomation {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    async fn resume_automation(
        &self,
        request: Request<proto::ConversationRef>,
    ) -> Result<Response<proto::Conversation>, Status> {
        forward!(
            self,
            request,
            proto::conversations_client::ConversationsClient<Channel>,
            resume_automation
        );
        let r = request.into_inner();
        self.conversation_call(Command::ResumeAutomation {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    async fn override_route(
        &self,
        request: Request<proto::OverrideRouteRequest>,
    ) -> Result<Response<proto::Conversation>, Status> {
        forward!(
            self,
            request,
            proto::conversations_client::ConversationsClient<Channel>,
            override_route
        );
        use proto::override_route_request::To;
        let r = request.into_inner();
        let to = match r.to {
            Some(To::Queue(q)) => {
                Some(RouteOverride::Queue(QueueName::new(required("queue", &q)?)))
            }
            Some(To::AgentId(a)) => Some(RouteOverride::Agent(agent("agent_id", &a)?)),
            Some(To::Clear(true)) => None,
            Some(To::Clear(false)) | None => {
                return Err(
                    invalid("to", "is required: set queue, agent_id or clear = true").into(),
                );
            }
        };
        self.conversation_call(Command::OverrideRoute {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
            to,
        })
        .await
    }

    async fn escalate(
        &self,
        request: Request<proto::EscalateRequest>,
    ) -> Result<Response<proto::RoutingDecision>, Status> {
        forward!(
            self,
            request,
            proto::conversations_client::ConversationsClient<Channel>,
            escalate
        );
        let r = request.into_inner();
        self.decision_call(Command::Escalate {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
            queue: (!r.queue.is_empty()).then_some(r.queue),
            note: r.note,
        })
        .await
    }
}

#[tonic::async_trait]
impl proto::queues_server::Queues for Api {
    async fn stats(
        &self,
        request: Request<proto::QueueStatsRequest>,
    ) -> Result<Response<proto::QueueStatsResponse>, Status> {
        forward!(
            self,
            request,
            proto::queues_client::QueuesClient<Channel>,
            stats
        );
        let r = request.into_inner();
        match self
            .call(Command::QueueStats {
                tenant: tenant(&r.tenant)?,
                queue: (!r.queue.is_empty()).then_some(r.queue),
            })
            .await?
        {
            Reply::QueueStats(stats) => Ok(Response::new(proto::QueueStatsResponse {
                queues: stats.iter().map(queue_stats_out).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }
}

#[tonic::async_trait]
impl proto::outbound_server::Outbound for Api {
    async fn send(
        &self,
        request: Request<proto::SendRequest>,
    ) -> Result<Response<proto::SendResponse>, Status> {
        forward!(
            self,
            request,
            proto::outbound_client::OutboundClient<Channel>,
            send
        );
        let r = request.into_inner();
        let command = Command::Send(send_in(r.clone())?);
        match self.call(command).await? {
            Reply::Send { id, admission } => {
                // Admitted (dispatched or queued): written down before the answer, so a crash
                // before the next snapshot loses no queued send (Kafka mode).
                if let Some(journal) = &self.journal
                    && !matches!(admission, Admission::Refused { .. })
                    && let Err(e) = journal.append(&r).await
                {
                    tracing::warn!(error = %e, "admitted send not journaled; a crash before the next snapshot would lose it if queued");
                }
                Ok(Response::new(send_response_out(id, admission)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn get_status(
        &self,
        request: Request<proto::SendRef>,
    ) -> Result<Response<proto::SendStatus>, Status> {
        forward!(
            self,
            request,
            proto::outbound_client::OutboundClient<Channel>,
            get_status
        );
        let r = request.into_inner();
        let tenant = tenant(&r.tenant)?;
        let command = if r.send_id.is_empty() && !r.idempotency_key.is_empty() {
            Command::GetSendByKey {
                tenant: tenant.clone(),
                key: r.idempotency_key,
            }
        } else {
            Command::GetSend {
                tenant: tenant.clone(),
                id: send_id(&r.send_id)?,
            }
        };
        match self.call(command).await? {
            Reply::SendView(v) => Ok(Response::new(send_view_out(&tenant, &v))),
            other => Err(unexpected(other)),
        }
    }

    type StreamStatusStream = EventStream<proto::SendStatus>;

    async fn stream_status(
        &self,
        request: Request<proto::StatusStreamRequest>,
    ) -> Result<Response<Self::StreamStatusStream>, Status> {
        forward!(stream self, request, proto::outbound_client::OutboundClient<Channel>, stream_status);
        let r = request.into_inner();
        let rx = self
            .runtime
            .subscribe_status(tenant(&r.tenant)?)
            .await
            .map_err(status)?;
        Ok(Response::new(stream(rx, status_event_out)))
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

#[tonic::async_trait]
impl proto::quotas_server::Quotas for Api {
    async fn get(
        &self,
        request: Request<proto::QuotaRef>,
    ) -> Result<Response<proto::PortfolioQuota>, Status> {
        forward!(
            self,
            request,
            proto::quotas_client::QuotasClient<Channel>,
            get
        );
        let tenant = tenant(&request.into_inner().tenant)?;
        Ok(Response::new(self.quota(tenant).await?))
    }

    async fn list(
        &self,
        request: Request<proto::ListQuotasRequest>,
    ) -> Result<Response<proto::ListQuotasResponse>, Status> {
        let mut tenants = Vec::new();
        for t in self.runtime.tenants() {
            let quota = match self.owner_of(t.as_str(), request.metadata())? {
                Some((channel, owner)) => {
                    let get = Request::from_parts(
                        request.metadata().clone(),
                        Default::default(),
                        proto::QuotaRef {
                            tenant: t.to_string(),
                        },
                    );
                    proto::quotas_client::QuotasClient::new(channel)
                        .get(forwarded(get))
                        .await
                        .map_err(|s| self.unreached(t.as_str(), &owner, s))?
                        .into_inner()
                }
                None => self.quota(t).await?,
            };
            tenants.push(quota);
        }
        Ok(Response::new(proto::ListQuotasResponse { tenants }))
    }

    async fn set_override(
        &self,
        request: Request<proto::SetOverrideRequest>,
    ) -> Result<Response<proto::OverrideInfo>, Status> {
        forward!(
            self,
            request,
            proto::quotas_client::QuotasClient<Channel>,
            set_override
        );
        use proto::set_override_request::Change as C;
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let change = match r.change {
            Some(C::MessagingLimit(n)) => {
                let n = u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(
                        "messaging_limit",
                        "must be from 1 to 4294967295; for no limit set messaging_unlimited",
                    )
                })?;
                Change::MessagingLimit(MessagingLimit::Customers(n))
            }
            Some(C::MessagingUnlimited(true)) => Change::MessagingLimit(MessagingLimit::Unlimited(
                crate::config::Unlimited::Unlimited,
            )),
            Some(C::BatchThreshold(x)) => Change::BatchThreshold(x),
            Some(C::Reserve(x)) => Change::Reserve(x),
            Some(C::NumberRate(n)) => Change::NumberRate {
                number: required("number_rate.number", &n.number)?.to_owned(),
                mps: n.mps,
                burst: (n.burst > 0).then_some(n.burst),
            },
            Some(C::Shadow(s)) => Change::Shadow {
                rule: rule_in(s.rule)?,
                on: s.on,
            },
            Some(C::MessagingUnlimited(false)) | None => {
                return Err(invalid(
                    "change",
                    "is required: set messaging_limit, messaging_unlimited, batch_threshold, reserve, number_rate or shadow",
                ).into());
            }
        };
        match self
            .call(Command::SetOverride {
                tenant: tenant(&r.tenant)?,
                change,
                reason: r.reason,
                actor,
                expires_in_ms: r.expires_in_ms,
            })
            .await?
        {
            Reply::Override(o) => Ok(Response::new(override_out(&o))),
            other => Err(unexpected(other)),
        }
    }

    async fn clear_override(
        &self,
        request: Request<proto::ClearOverrideRequest>,
    ) -> Result<Response<proto::OverrideInfo>, Status> {
        forward!(
            self,
            request,
            proto::quotas_client::QuotasClient<Channel>,
            clear_override
        );
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        match self
            .call(Command::ClearOverride {
                tenant: tenant(&r.tenant)?,
                id: r.override_id,
                actor,
            })
            .await?
        {
            Reply::Override(o) => Ok(Response::new(override_out(&o))),
            other => Err(unexpected(other)),
        }
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        forward!(
            self,
            request,
            proto::quotas_client::QuotasClient<Channel>,
            list_audit
        );
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        match self
            .call(Command::ListAudit {
                tenant: tenant(&r.tenant)?,
                limit,
            })
            .await?
        {
            Reply::Audit(entries) => Ok(Response::new(proto::ListAuditResponse {
                entries: entries.iter().map(audit_out).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn plan_campaign(
        &self,
        request: Request<proto::PlanCampaignRequest>,
    ) -> Result<Response<proto::CampaignPlan>, Status> {
        forward!(
            self,
            request,
            proto::quotas_client::QuotasClient<Channel>,
            plan_campaign
        );
        let r = request.into_inner();
        let plan = PlanRequest {
            customers: r.customers,
            interactions: if r.interactions == 0 {
                3
            } else {
                r.interactions
            },
            start: crate::clock::Timestamp(u64::try_from(r.start_ms).unwrap_or(0)),
            duration_ms: r.duration_ms,
        };
        match self
            .call(Command::PlanCampaign {
                tenant: tenant(&r.tenant)?,
                plan,
            })
            .await?
        {
            Reply::Plan(p) => Ok(Response::new(proto::CampaignPlan {
                messages: p.messages,
                mps_needed: p.mps_needed,
                mps_available: p.mps_available,
                messaging_limit: p.limit.unwrap_or_default(),
                unlimited: p.limit.is_none(),
                used_at_start: p.used_at_start,
                peak_used: p.peak_used,
                peak_ratio: p.peak_ratio,
                batch_mode: p.batch_mode_at.is_some(),
                batch_mode_at_ms: millis(p.batch_mode_at),
                sent_directly: p.sent_directly,
                batched: p.batched,
                completes: p.done_at.is_some(),
                done_at_ms: millis(p.done_at),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn reload_config(
        &self,
        request: Request<proto::ReloadConfigRequest>,
    ) -> Result<Response<proto::ReloadConfigResponse>, Status> {
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let actor = if actor.trim().is_empty() {
            "grpc".to_owned()
        } else {
            actor
        };
        match self.reloader.reload(&actor).await {
            Ok(notes) => Ok(Response::new(proto::ReloadConfigResponse { notes })),
            Err(ReloadError::Tenant { error, .. }) => Err(status(error)),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}
