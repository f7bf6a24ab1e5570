//! The gRPC API (`switchboard.v1`), a thin adapter: each call converts its request to a core
//! [`Command`], hands it to the owning shard through the [`Runtime`], and converts the answer
//! back. It decides nothing. Checks that need no state (required fields, enum values, id
//! syntax) happen here, so a bad request never reaches a shard; everything else is the core's.
//!
//! [`status`] is the one place that turns an error into a `tonic::Status`.
use std::pin::Pin;

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::config::Category;
use crate::core::Outbound;
use crate::core::quota::{Admission, Refusal, SendId, SendPriority, SendState, SendView};
use crate::core::{
    AgentView, Command, ContextMessage, ConversationState, ConversationView, CoreError, Decision,
    Direction, Inbound, QueueStatsView, Reason, Reply, RouteOverride, Target, TransferTarget,
};
use crate::model::{self, AgentId, ConversationId, Presence, QueueName, TenantId};
use crate::proto;
use std::sync::Arc;

use crate::config::{MessagingLimit, Rule};
use crate::core::quota::{AuditEntry, Change, OverrideView, PlanRequest, QuotaSnapshot};
use crate::runtime::{
    AgentEvent, BotEvent, CallError, Lagged, ReloadError, Reloader, Runtime, SendStatusEvent,
};

/// Converts every error to its status; the message names the field or the object.
pub fn status(e: CallError) -> Status {
    match e {
        CallError::Core(CoreError::InvalidArgument { field, problem }) => {
            Status::invalid_argument(format!("{field}: {problem}"))
        }
        CallError::Core(e @ CoreError::NotFound { .. }) => Status::not_found(e.to_string()),
        CallError::Core(CoreError::FailedPrecondition(m)) => Status::failed_precondition(m),
        CallError::Core(CoreError::ResourceExhausted(m)) => Status::resource_exhausted(m),
        CallError::Unavailable => Status::unavailable("switchboard is shutting down; retry"),
        e @ CallError::Elsewhere { .. } => Status::unavailable(format!("{e}; retry")),
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> Status {
    status(CallError::Core(CoreError::InvalidArgument {
        field,
        problem: problem.into(),
    }))
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        Err(invalid(field, "is required"))
    } else {
        Ok(value)
    }
}

fn tenant(value: &str) -> Result<TenantId, Status> {
    required("tenant", value).map(TenantId::new)
}

fn agent(field: &'static str, value: &str) -> Result<AgentId, Status> {
    required(field, value).map(AgentId::new)
}

fn conversation_id(value: &str) -> Result<ConversationId, Status> {
    required("conversation_id", value)?.parse().map_err(|()| {
        invalid(
            "conversation_id",
            format!("{value:?} is not a conversation id; they look like \"c-42\""),
        )
    })
}

/// A proto enum field: unknown numbers and UNSPECIFIED are refused, naming the valid values.
fn enum_field<E, T>(
    field: &'static str,
    raw: i32,
    valid: &str,
    convert: impl Fn(E) -> Option<T>,
) -> Result<T, Status>
where
    E: TryFrom<i32>,
{
    match E::try_from(raw) {
        Ok(e) => {
            convert(e).ok_or_else(|| invalid(field, format!("is required; use one of {valid}")))
        }
        Err(_) => Err(invalid(
            field,
            format!("has unknown value {raw}; use one of {valid}"),
        )),
    }
}

fn channel(raw: i32) -> Result<model::Channel, Status> {
    enum_field(
        "channel",
        raw,
        "CHANNEL_WHATSAPP, CHANNEL_WEBCHAT, CHANNEL_VOICE",
        |c: proto::Channel| match c {
            proto::Channel::Unspecified => None,
            proto::Channel::Whatsapp => Some(model::Channel::WhatsApp),
            proto::Channel::Webchat => Some(model::Channel::WebChat),
            proto::Channel::Voice => Some(model::Channel::Voice),
        },
    )
}

fn presence(raw: i32) -> Result<Presence, Status> {
    enum_field(
        "presence",
        raw,
        "PRESENCE_ONLINE, PRESENCE_AWAY, PRESENCE_OFFLINE",
        |p: proto::Presence| match p {
            proto::Presence::Unspecified => None,
            proto::Presence::Online => Some(Presence::Online),
            proto::Presence::Away => Some(Presence::Away),
            proto::Presence::Offline => Some(Presence::Offline),
        },
    )
}

pub(crate) fn category_in(raw: i32) -> Result<Category, Status> {
    enum_field(
        "category",
        raw,
        "CATEGORY_MARKETING, CATEGORY_UTILITY, CATEGORY_AUTHENTICATION, CATEGORY_SESSION",
        |c: proto::Category| match c {
            proto::Category::Unspecified => None,
            proto::Category::Marketing => Some(Category::Marketing),
            proto::Category::Utility => Some(Category::Utility),
            proto::Category::Authentication => Some(Category::Authentication),
            proto::Category::Session => Some(Category::Session),
        },
    )
}

pub(crate) fn category_out(c: Category) -> proto::Category {
    match c {
        Category::Marketing => proto::Category::Marketing,
        Category::Utility => proto::Category::Utility,
        Category::Authentication => proto::Category::Authentication,
        Category::Session => proto::Category::Session,
    }
}

/// UNSPECIFIED is valid here: it means "by category".
fn send_priority(raw: i32) -> Result<Option<SendPriority>, Status> {
    match proto::SendPriority::try_from(raw) {
        Ok(proto::SendPriority::Unspecified) => Ok(None),
        Ok(proto::SendPriority::Low) => Ok(Some(SendPriority::Low)),
        Ok(proto::SendPriority::Normal) => Ok(Some(SendPriority::Normal)),
        Ok(proto::SendPriority::High) => Ok(Some(SendPriority::High)),
        Err(_) => Err(invalid(
            "priority",
            format!(
                "has unknown value {raw}; use SEND_PRIORITY_LOW, SEND_PRIORITY_NORMAL, SEND_PRIORITY_HIGH or leave it unset"
            ),
        )),
    }
}

fn send_id(value: &str) -> Result<SendId, Status> {
    required("send_id", value)?.parse().map_err(|()| {
        invalid(
            "send_id",
            format!("{value:?} is not a send id; they look like \"s-42\""),
        )
    })
}

// --- core → proto ----------------------------------------------------------------------------

fn refusal_out(r: Refusal) -> proto::RefusalReason {
    use proto::RefusalReason as P;
    match r {
        Refusal::TemplateRequired => P::TemplateRequired,
        Refusal::ThroughputLimit => P::ThroughputLimit,
        Refusal::PairLimit => P::PairLimit,
        Refusal::MessagingLimit => P::MessagingLimit,
        Refusal::NumberBackoff => P::NumberBackoff,
        Refusal::MarketingPaused => P::MarketingPaused,
        Refusal::QueueFull => P::QueueFull,
        Refusal::ProviderError => P::ProviderError,
    }
}

fn send_state_out(s: SendState) -> proto::SendState {
    use proto::SendState as P;
    match s {
        SendState::Accepted => P::Accepted,
        SendState::Queued => P::Queued,
        SendState::Dispatched => P::Dispatched,
        SendState::Sent => P::Sent,
        SendState::Failed => P::Failed,
        SendState::Expired => P::Expired,
        SendState::Refused => P::Refused,
    }
}

fn refusal_detail(r: Refusal) -> &'static str {
    match r {
        Refusal::TemplateRequired => {
            "the customer's service window is closed: send an approved template instead"
        }
        Refusal::ThroughputLimit => "the business number's throughput bucket is empty: retry later",
        Refusal::PairLimit => "too many messages to this customer just now: retry later",
        Refusal::MessagingLimit => {
            "the portfolio reached its messaging limit for new customers: retry when a slot frees"
        }
        Refusal::NumberBackoff => "the number backs off after a throughput error from the provider",
        Refusal::MarketingPaused => "marketing from this number is paused after a spam-rate error",
        Refusal::QueueFull => "the batch queue is full: retry later",
        Refusal::ProviderError => "the provider refused the send",
    }
}

fn send_response_out(id: SendId, a: Admission) -> proto::SendResponse {
    let mut r = proto::SendResponse {
        send_id: id.to_string(),
        ..Default::default()
    };
    match a {
        Admission::Dispatched => {
            r.set_admission(proto::Admission::Dispatched);
            r.detail = "dispatched".into();
        }
        Admission::Queued { estimated_release } => {
            r.set_admission(proto::Admission::Queued);
            r.detail = "near the messaging limit: queued for a paced batch".into();
            r.estimated_release_at_ms = estimated_release.map_or(0, |t| t.as_millis() as i64);
        }
        Admission::Refused {
            reason,
            retry_after_ms,
        } => {
            r.set_admission(proto::Admission::Refused);
            r.set_reason(refusal_out(reason));
            r.detail = refusal_detail(reason).into();
            r.retry_after_ms = retry_after_ms.unwrap_or_default();
        }
    }
    r
}

fn send_view_out(tenant: &TenantId, v: &SendView) -> proto::SendStatus {
    proto::SendStatus {
        tenant: tenant.to_string(),
        send_id: v.id.to_string(),
        state: send_state_out(v.state) as i32,
        reason: v.reason.map_or(0, |r| refusal_out(r) as i32),
        provider_code: v.provider_code.unwrap_or_default(),
        idempotency_key: v.idempotency_key.to_string(),
    }
}

pub(crate) fn status_event_out(e: SendStatusEvent) -> proto::SendStatus {
    proto::SendStatus {
        tenant: e.tenant.to_string(),
        send_id: e.id.to_string(),
        state: send_state_out(e.state) as i32,
        reason: e.reason.map_or(0, |r| refusal_out(r) as i32),
        provider_code: e.provider_code.unwrap_or_default(),
        idempotency_key: e.idempotency_key.to_string(),
    }
}

fn channel_out(c: model::Channel) -> proto::Channel {
    match c {
        model::Channel::WhatsApp => proto::Channel::Whatsapp,
        model::Channel::WebChat => proto::Channel::Webchat,
        model::Channel::Voice => proto::Channel::Voice,
    }
}

fn presence_out(p: Presence) -> proto::Presence {
    match p {
        Presence::Online => proto::Presence::Online,
        Presence::Away => proto::Presence::Away,
        Presence::Offline => proto::Presence::Offline,
    }
}

fn reason_out(r: Reason) -> proto::Reason {
    use proto::Reason as P;
    match r {
        Reason::AutomationPaused => P::AutomationPaused,
        Reason::RouteOverride => P::RouteOverride,
        Reason::AssignedAgent => P::AssignedAgent,
        Reason::AlreadyQueued => P::AlreadyQueued,
        Reason::Friction => P::Friction,
        Reason::SimpleIntent => P::SimpleIntent,
        Reason::SlaOk => P::SlaOk,
        Reason::SlaSaturated => P::SlaSaturated,
        Reason::SlaSaturatedNoBot => P::SlaSaturatedNoBot,
        Reason::NoBot => P::NoBot,
        Reason::Duplicate => P::Duplicate,
        Reason::Escalated => P::Escalated,
        Reason::MaxWaitExceeded => P::MaxWaitExceeded,
        Reason::AgentOffline => P::AgentOffline,
        Reason::Released => P::Released,
        Reason::Transferred => P::Transferred,
        Reason::CapacityReduced => P::CapacityReduced,
        Reason::Dequeued => P::Dequeued,
    }
}

/// One sentence on why, for people reading logs or a support tool.
fn detail(d: &Decision) -> String {
    let queue = d.queue.as_ref().map_or("", QueueName::as_str);
    match d.reason {
        Reason::AutomationPaused => "automation is paused: a person handles it".into(),
        Reason::RouteOverride => "a supervisor fixed this conversation's route".into(),
        Reason::AssignedAgent => "follow-up: the agent who has the conversation".into(),
        Reason::AlreadyQueued => format!("already waiting in {queue}; keeps its place"),
        Reason::Friction => format!("friction intent: a person in {queue}, ahead of routine"),
        Reason::SimpleIntent => "simple intent: the bot answers".into(),
        Reason::SlaOk => format!("{queue} can answer within its SLA target"),
        Reason::SlaSaturated => format!("{queue} is over its SLA target: overflow to the bot"),
        Reason::SlaSaturatedNoBot => {
            format!("{queue} is over its SLA target and there is no bot: queued anyway")
        }
        Reason::NoBot => "simple intent but no bot is configured: queued for a person".into(),
        Reason::Duplicate => "this message id was already routed; nothing was done".into(),
        Reason::Escalated => format!("escalated to {queue}"),
        other => other.as_str().replace('_', " "),
    }
}

pub(crate) fn decision_out(d: &Decision) -> proto::RoutingDecision {
    proto::RoutingDecision {
        conversation_id: d.conversation.map(|c| c.to_string()).unwrap_or_default(),
        target: match d.target {
            Target::Agent => proto::Target::Agent,
            Target::Queue => proto::Target::Queue,
            Target::Bot => proto::Target::Bot,
            Target::None => proto::Target::None,
        } as i32,
        reason: reason_out(d.reason) as i32,
        detail: detail(d),
        intent: d.intent.as_deref().unwrap_or_default().to_owned(),
        queue: d
            .queue
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        agent_id: d
            .agent
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        bot: d.bot.as_deref().unwrap_or_default().to_owned(),
        queue_position: d.position,
        estimated_wait_ms: d.estimated_wait_ms.unwrap_or_default(),
        duplicate: d.duplicate,
        window_open: d.window_open,
        window_expires_at_ms: d.window_expires.map_or(0, |t| t.as_millis() as i64),
        // Filled by the caller, which has the inbound message.
        provider_message_id: String::new(),
    }
}

fn message_out(m: &ContextMessage) -> proto::Message {
    proto::Message {
        direction: match m.direction {
            Direction::Inbound => proto::Direction::Inbound,
            Direction::Note => proto::Direction::Note,
        } as i32,
        channel: channel_out(m.channel) as i32,
        text: m.text.to_string(),
        at_ms: m.at.as_millis() as i64,
        provider_message_id: m.provider_message_id.to_string(),
        intent: m.intent.as_deref().unwrap_or_default().to_owned(),
    }
}

fn conversation_out(v: &ConversationView) -> proto::Conversation {
    let (override_queue, override_agent_id) = match &v.route_override {
        Some(RouteOverride::Queue(q)) => (q.to_string(), String::new()),
        Some(RouteOverride::Agent(a)) => (String::new(), a.to_string()),
        None => (String::new(), String::new()),
    };
    proto::Conversation {
        tenant: v.tenant.to_string(),
        conversation_id: v.id.to_string(),
        customer: v.customer.clone(),
        state: match v.state {
            ConversationState::Idle => proto::ConversationState::Idle,
            ConversationState::Bot => proto::ConversationState::Bot,
            ConversationState::Waiting => proto::ConversationState::Waiting,
            ConversationState::Assigned => proto::ConversationState::Assigned,
        } as i32,
        queue: v
            .queue
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        agent_id: v
            .agent
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        priority: v.priority,
        automation_paused: v.automation_paused,
        override_queue,
        override_agent_id,
        window_open: v.window_open,
        window_expires_at_ms: v.window_expires.map_or(0, |t| t.as_millis() as i64),
        channels: v.channels.iter().map(|c| channel_out(*c) as i32).collect(),
        context: v.context.iter().map(message_out).collect(),
    }
}

fn agent_out(a: &AgentView) -> proto::Agent {
    proto::Agent {
        tenant: a.tenant.to_string(),
        agent_id: a.id.to_string(),
        presence: presence_out(a.presence) as i32,
        capacity: a.capacity,
        queues: a.queues.iter().map(ToString::to_string).collect(),
        conversations: a.conversations.iter().map(ToString::to_string).collect(),
    }
}

fn queue_stats_out(s: &QueueStatsView) -> proto::QueueStats {
    proto::QueueStats {
        queue: s.queue.to_string(),
        depth: s.depth,
        available_agents: s.available_agents,
        online_agents: s.online_agents,
        free_capacity: s.free_capacity,
        estimated_wait_ms: s.estimated_wait_ms.unwrap_or_default(),
        estimate_unbounded: s.estimated_wait_ms.is_none(),
        sla_target_ms: s.sla_target_ms,
        max_wait_ms: s.max_wait_ms,
        sla_attainment: s.sla_attainment,
        assignments_total: s.assignments_total,
        sla_breaches_total: s.sla_breaches_total,
        average_handle_ms: s.average_handle_ms,
        oldest_wait_ms: s.oldest_wait_ms,
    }
}

fn agent_event_out(e: AgentEvent) -> proto::AgentEvent {
    use proto::agent_event::Event;
    let event = match e {
        AgentEvent::Assigned {
            conversation,
            queue,
            reason,
            waited_ms,
        } => Event::Assigned(proto::Assignment {
            conversation: Some(conversation_out(&conversation)),
            queue: queue.to_string(),
            reason: reason_out(reason) as i32,
            waited_ms,
        }),
        AgentEvent::Message {
            conversation,
            message,
        } => Event::Message(proto::ConversationMessage {
            conversation_id: conversation.to_string(),
            message: Some(message_out(&message)),
        }),
        AgentEvent::Unassigned {
            conversation,
            reason,
        } => Event::Unassigned(proto::Unassignment {
            conversation_id: conversation.to_string(),
            reason: reason_out(reason) as i32,
        }),
    };
    proto::AgentEvent { event: Some(event) }
}

fn bot_event_out(e: BotEvent) -> proto::BotEvent {
    proto::BotEvent {
        conversation_id: e.conversation.to_string(),
        message: Some(message_out(&e.message)),
        reason: reason_out(e.reason) as i32,
        intent: e.intent.as_deref().unwrap_or_default().to_owned(),
        context: e.context.iter().map(message_out).collect(),
    }
}

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
    forwarder: Option<Arc<crate::forward::Forwarder>>,
    /// Kafka mode: where admitted sends are written (the sends topic).
    journal: Option<Arc<dyn Journal>>,
}

/// Where an admitted gRPC send is written so that it survives a crash (Kafka mode: the sends
/// topic, which the owner replays after the last snapshot; its idempotency key makes the
/// replay a no-op when the send is already in the state).
pub trait Journal: Send + Sync {
    fn append<'a>(
        &'a self,
        request: &'a proto::SendRequest,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
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
    pub fn forwarding(self, forwarder: Arc<crate::forward::Forwarder>) -> Self {
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

/// A reply of the wrong kind is a bug in this file, not the caller's fault.
fn unexpected(reply: Reply) -> Status {
    tracing::error!(?reply, "shard answered with an unexpected reply kind");
    Status::internal("internal error: unexpected reply")
}

/// The core's inbound message from the API's (also what the Kafka input decodes).
/// A send request as the shard takes it (shared with the Kafka sends topic).
pub fn send_in(r: proto::SendRequest) -> Result<Outbound, Status> {
    Ok(Outbound {
        tenant: tenant(&r.tenant)?,
        from: required("from", &r.from)?.to_owned(),
        to: required("to", &r.to)?.to_owned(),
        category: category_in(r.category)?,
        content: r.content,
        priority: send_priority(r.priority)?,
        idempotency_key: required("idempotency_key", &r.idempotency_key)?.to_owned(),
        valid_for_ms: (r.valid_for_ms > 0).then_some(r.valid_for_ms),
    })
}

pub fn inbound_in(m: proto::InboundMessage) -> Result<Inbound, Status> {
    Ok(Inbound {
        tenant: tenant(&m.tenant)?,
        customer: m.customer,
        channel: channel(m.channel)?,
        provider_message_id: m.provider_message_id,
        text: m.text,
        business_number: (!m.business_number.is_empty()).then_some(m.business_number),
    })
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
            None => return Err(invalid("to", "is required: set queue or to_agent_id")),
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
                return Err(invalid(
                    "to",
                    "is required: set queue, agent_id or clear = true",
                ));
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

fn rule_out(r: Rule) -> proto::QuotaRule {
    match r {
        Rule::Throughput => proto::QuotaRule::Throughput,
        Rule::Pair => proto::QuotaRule::Pair,
        Rule::MessagingLimit => proto::QuotaRule::MessagingLimit,
        Rule::Window => proto::QuotaRule::Window,
    }
}

fn rule_in(raw: i32) -> Result<Rule, Status> {
    enum_field(
        "shadow.rule",
        raw,
        "QUOTA_RULE_THROUGHPUT, QUOTA_RULE_PAIR, QUOTA_RULE_MESSAGING_LIMIT, QUOTA_RULE_WINDOW",
        |r: proto::QuotaRule| match r {
            proto::QuotaRule::Unspecified => None,
            proto::QuotaRule::Throughput => Some(Rule::Throughput),
            proto::QuotaRule::Pair => Some(Rule::Pair),
            proto::QuotaRule::MessagingLimit => Some(Rule::MessagingLimit),
            proto::QuotaRule::Window => Some(Rule::Window),
        },
    )
}

fn millis(t: Option<crate::clock::Timestamp>) -> i64 {
    t.map_or(0, |t| t.as_millis() as i64)
}

fn override_out(o: &OverrideView) -> proto::OverrideInfo {
    let (target, value) = match &o.change {
        Change::MessagingLimit(l) => (
            "quotas.messaging_limit".to_owned(),
            l.customers()
                .map_or("unlimited".to_owned(), |n| n.to_string()),
        ),
        Change::BatchThreshold(x) => ("quotas.batch_threshold".into(), x.to_string()),
        Change::Reserve(x) => ("quotas.reserve".into(), x.to_string()),
        Change::NumberRate { number, mps, burst } => (
            format!("numbers[{number}]"),
            format!("mps {mps} burst {}", burst.unwrap_or(*mps)),
        ),
        Change::Shadow { rule, on } => (
            format!("quotas.shadow.{}", rule.as_str()),
            if *on { "on" } else { "off" }.into(),
        ),
    };
    proto::OverrideInfo {
        id: o.id,
        target,
        value,
        reason: o.reason.to_string(),
        actor: o.actor.to_string(),
        created_at_ms: o.created.as_millis() as i64,
        expires_at_ms: o.expires.as_millis() as i64,
    }
}

fn quota_out(q: &QuotaSnapshot) -> proto::PortfolioQuota {
    proto::PortfolioQuota {
        tenant: q.tenant.to_string(),
        messaging_limit: q.limit.unwrap_or_default(),
        unlimited: q.limit.is_none(),
        used: q.used,
        usage_ratio: q.usage_ratio,
        batch_mode: q.batch_mode,
        batch_threshold: q.batch_threshold,
        reserve: q.reserve,
        queued: q.queued,
        shadow: q.shadow.iter().map(|r| rule_out(*r) as i32).collect(),
        numbers: q
            .numbers
            .iter()
            .map(|n| proto::NumberQuota {
                id: n.id.to_string(),
                mps: n.mps,
                burst: n.burst,
                tokens: n.tokens,
                backoff_until_ms: millis(n.backoff_until),
                marketing_paused_until_ms: millis(n.marketing_paused_until),
            })
            .collect(),
        overrides: q.overrides.iter().map(override_out).collect(),
    }
}

fn audit_out(e: &AuditEntry) -> proto::AuditEntry {
    proto::AuditEntry {
        at_ms: e.at.as_millis() as i64,
        actor: e.actor.to_string(),
        action: e.action.to_owned(),
        target: e.target.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
        reason: e.reason.clone(),
    }
}

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
                ));
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
