//! The wire layer: every conversion between the API's protobuf messages (`switchboard.v1`)
//! and the core's types, with the checks that need no state (required fields, enum values, id
//! syntax), and the one mapping from errors to `tonic::Status`. The gRPC services and the
//! Kafka input and sink both use it, so a record on a topic is read exactly like the same
//! request over gRPC, and neither depends on the other.
//!
//! A request that cannot be read is an [`Invalid`]: the field and what is wrong with it.
//! [`webhook`] reads Meta's Cloud API webhook JSON (and makes the callback data a dispatch
//! carries, by which a status webhook finds its send); [`template`] reads and checks the
//! templates a send carries.
pub mod customers;
pub mod encode;
pub mod json;
pub mod lifecycle;
pub mod template;
pub mod webhook;

use tonic::Status;

use crate::config::{Category, Rule};
use crate::core::quota::{
    Admission, AuditEntry, Change, Hold, OverrideView, ProviderOutcome, QuotaSnapshot, Refusal,
    SendId, SendPriority, SendState, SendView,
};
use crate::core::{
    AgentView, ContextMessage, ConversationState, ConversationView, CoreError, Decision, Direction,
    Inbound, Outbound, QueueStatsView, Reason, Reply, RouteOverride, Target, Thread,
};
use crate::model::{self, AgentId, ConversationId, Presence, QueueName, TenantId};
use crate::proto;
use crate::runtime::{AgentEvent, BotEvent, CallError, SendStatusEvent};

/// A request field that cannot be read: which one and what is wrong (the text names both, as
/// `field: problem`, the same over gRPC and on the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

impl From<Invalid> for Status {
    fn from(e: Invalid) -> Self {
        status(CallError::Core(e.into()))
    }
}

impl From<Invalid> for CoreError {
    fn from(Invalid { field, problem }: Invalid) -> Self {
        CoreError::InvalidArgument { field, problem }
    }
}

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

pub fn invalid(field: &'static str, problem: impl Into<String>) -> Invalid {
    Invalid {
        field,
        problem: problem.into(),
    }
}

pub fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Invalid> {
    if value.trim().is_empty() {
        Err(invalid(field, "is required"))
    } else {
        Ok(value)
    }
}

pub fn tenant(value: &str) -> Result<TenantId, Invalid> {
    required("tenant", value).map(TenantId::new)
}

pub fn agent(field: &'static str, value: &str) -> Result<AgentId, Invalid> {
    required(field, value).map(AgentId::new)
}

pub fn conversation_id(value: &str) -> Result<ConversationId, Invalid> {
    required("conversation_id", value)?.parse().map_err(|()| {
        invalid(
            "conversation_id",
            format!("{value:?} is not a conversation id; they look like \"c-42\""),
        )
    })
}

/// A proto enum field: unknown numbers and UNSPECIFIED are refused, naming the valid values.
pub fn enum_field<E, T>(
    field: &'static str,
    raw: i32,
    valid: &str,
    convert: impl Fn(E) -> Option<T>,
) -> Result<T, Invalid>
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

pub fn channel(raw: i32) -> Result<model::Channel, Invalid> {
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

pub fn presence(raw: i32) -> Result<Presence, Invalid> {
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

pub fn category_in(raw: i32) -> Result<Category, Invalid> {
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

pub fn category_out(c: Category) -> proto::Category {
    match c {
        Category::Marketing => proto::Category::Marketing,
        Category::Utility => proto::Category::Utility,
        Category::Authentication => proto::Category::Authentication,
        Category::Session => proto::Category::Session,
    }
}

/// UNSPECIFIED is valid here: it means "by category".
pub fn send_priority(raw: i32) -> Result<Option<SendPriority>, Invalid> {
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

pub fn send_id(value: &str) -> Result<SendId, Invalid> {
    required("send_id", value)?.parse().map_err(|()| {
        invalid(
            "send_id",
            format!("{value:?} is not a send id; they look like \"s-42\""),
        )
    })
}

// --- core → proto ----------------------------------------------------------------------------

pub fn refusal_out(r: Refusal) -> proto::RefusalReason {
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
        Refusal::OptedOut => P::OptedOut,
        Refusal::FrequencyCap => P::FrequencyCap,
        Refusal::TagPaused => P::TagPaused,
    }
}

pub fn send_state_out(s: SendState) -> proto::SendState {
    use proto::SendState as P;
    match s {
        SendState::Accepted => P::Accepted,
        SendState::Queued => P::Queued,
        SendState::Dispatched => P::Dispatched,
        SendState::Sent => P::Sent,
        SendState::Failed => P::Failed,
        SendState::Expired => P::Expired,
        SendState::Refused => P::Refused,
        SendState::Delivered => P::Delivered,
        SendState::Read => P::Read,
        SendState::Scheduled => P::Scheduled,
        SendState::Cancelled => P::Cancelled,
    }
}

pub fn refusal_detail(r: Refusal) -> &'static str {
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
        Refusal::OptedOut => {
            "the customer opted out of marketing: send utility or authentication messages only"
        }
        Refusal::FrequencyCap => {
            "the customer's frequency cap (quotas.frequency_cap) or Meta's per-user marketing \
             limit (131049) is reached: retry after retry_after_ms"
        }
        Refusal::TagPaused => {
            "the send's tag is paused (Outbound.Pause) and a free-form message cannot wait: \
             retry after retry_after_ms, when the pause ends, or resume the tag"
        }
    }
}

pub fn send_response_out(id: SendId, a: Admission) -> proto::SendResponse {
    let mut r = proto::SendResponse {
        send_id: id.to_string(),
        ..Default::default()
    };
    match a {
        Admission::Dispatched => {
            r.set_admission(proto::Admission::Dispatched);
            r.detail = "dispatched".into();
        }
        Admission::Queued {
            estimated_release,
            held,
        } => {
            r.set_admission(proto::Admission::Queued);
            r.detail = match held {
                None => "near the messaging limit: queued for a paced batch",
                Some(Hold::Paused) => {
                    "its tag is paused (Outbound.Pause): held until it is resumed or the pause \
                     ends (estimated_release_at_ms), then sent within the quotas"
                }
                Some(Hold::QuietHours) => {
                    "the tenant's quiet hours: held until they end (estimated_release_at_ms)"
                }
                Some(Hold::CustomerHold) => {
                    "Meta's per-user marketing limit (131049) holds this customer: held until \
                     it ends (estimated_release_at_ms)"
                }
                Some(Hold::FrequencyCap) => {
                    "the customer's frequency cap is reached: held until it frees \
                     (estimated_release_at_ms)"
                }
            }
            .into();
            r.estimated_release_at_ms = estimated_release.map_or(0, |t| t.as_millis() as i64);
        }
        Admission::Scheduled { at } => {
            r.set_admission(proto::Admission::Scheduled);
            r.detail = "scheduled: admitted at its time by the same rules as any send".into();
            r.estimated_release_at_ms = at.as_millis() as i64;
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

pub fn send_view_out(tenant: &TenantId, v: &SendView) -> proto::SendStatus {
    proto::SendStatus {
        tenant: tenant.to_string(),
        send_id: v.id.to_string(),
        state: send_state_out(v.state) as i32,
        reason: v.reason.map_or(0, |r| refusal_out(r) as i32),
        provider_code: v.provider_code.unwrap_or_default(),
        idempotency_key: v.idempotency_key.to_string(),
    }
}

pub fn status_event_out(e: SendStatusEvent) -> proto::SendStatus {
    proto::SendStatus {
        tenant: e.tenant.to_string(),
        send_id: e.id.to_string(),
        state: send_state_out(e.state) as i32,
        reason: e.reason.map_or(0, |r| refusal_out(r) as i32),
        provider_code: e.provider_code.unwrap_or_default(),
        idempotency_key: e.idempotency_key.to_string(),
    }
}

pub fn channel_out(c: model::Channel) -> proto::Channel {
    match c {
        model::Channel::WhatsApp => proto::Channel::Whatsapp,
        model::Channel::WebChat => proto::Channel::Webchat,
        model::Channel::Voice => proto::Channel::Voice,
    }
}

pub fn presence_out(p: Presence) -> proto::Presence {
    match p {
        Presence::Online => proto::Presence::Online,
        Presence::Away => proto::Presence::Away,
        Presence::Offline => proto::Presence::Offline,
    }
}

pub fn reason_out(r: Reason) -> proto::Reason {
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
        Reason::WithBot => P::WithBot,
        Reason::Linked => P::Linked,
        Reason::OutsideHours => P::OutsideHours,
    }
}

/// One sentence on why, for people reading logs or a support tool.
pub fn detail(d: &Decision) -> String {
    let mut out = String::new();
    write_detail(d, &mut out).expect("a String takes any text");
    out
}

/// [`detail`], written to `out`.
pub fn write_detail(d: &Decision, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let queue = d.queue.as_ref().map_or("", QueueName::as_str);
    match d.reason {
        Reason::AutomationPaused => out.write_str("automation is paused: a person handles it"),
        Reason::RouteOverride => out.write_str("a supervisor fixed this conversation's route"),
        Reason::AssignedAgent => out.write_str("follow-up: the agent who has the conversation"),
        Reason::AlreadyQueued => write!(out, "already waiting in {queue}; keeps its place"),
        Reason::Friction => write!(
            out,
            "friction intent: a person in {queue}, ahead of routine"
        ),
        Reason::SimpleIntent => out.write_str("simple intent: the bot answers"),
        Reason::SlaOk => write!(out, "{queue} can answer within its SLA target"),
        Reason::SlaSaturated => write!(out, "{queue} is over its SLA target: overflow to the bot"),
        Reason::SlaSaturatedNoBot => write!(
            out,
            "{queue} is over its SLA target and there is no bot: queued anyway"
        ),
        Reason::NoBot => {
            out.write_str("simple intent but no bot is configured: queued for a person")
        }
        Reason::Duplicate => out.write_str("this message id was already routed; nothing was done"),
        Reason::Escalated => write!(out, "escalated to {queue}"),
        Reason::OutsideHours if d.target == Target::Bot => {
            write!(out, "{queue} is closed (business hours): the bot answers")
        }
        Reason::OutsideHours => write!(out, "outside business hours: {queue}"),
        other => other
            .as_str()
            .chars()
            .try_for_each(|c| out.write_char(if c == '_' { ' ' } else { c })),
    }
}

pub fn target_out(t: Target) -> proto::Target {
    match t {
        Target::Agent => proto::Target::Agent,
        Target::Queue => proto::Target::Queue,
        Target::Bot => proto::Target::Bot,
        Target::None => proto::Target::None,
    }
}

pub fn decision_out(d: &Decision) -> proto::RoutingDecision {
    proto::RoutingDecision {
        conversation_id: d.conversation.map(|c| c.to_string()).unwrap_or_default(),
        target: target_out(d.target) as i32,
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

pub fn message_out(m: &ContextMessage) -> proto::Message {
    proto::Message {
        direction: match m.direction {
            Direction::Inbound => proto::Direction::Inbound,
            Direction::Note => proto::Direction::Note,
            Direction::Outbound => proto::Direction::Outbound,
        } as i32,
        channel: channel_out(m.channel) as i32,
        text: m.text().to_owned(),
        at_ms: m.at.as_millis() as i64,
        provider_message_id: m.provider_message_id().to_owned(),
        intent: m.intent().map(|i| i.to_string()).unwrap_or_default(),
        author: m.author().map(|a| a.to_string()).unwrap_or_default(),
    }
}

pub fn conversation_out(v: &ConversationView) -> proto::Conversation {
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
        identities: v.identities.iter().map(customers::identity_out).collect(),
    }
}

pub fn agent_out(a: &AgentView) -> proto::Agent {
    proto::Agent {
        tenant: a.tenant.to_string(),
        agent_id: a.id.to_string(),
        presence: presence_out(a.presence) as i32,
        capacity: a.capacity,
        queues: a.queues.iter().map(ToString::to_string).collect(),
        conversations: a.conversations.iter().map(ToString::to_string).collect(),
    }
}

pub fn queue_stats_out(s: &QueueStatsView) -> proto::QueueStats {
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

pub fn agent_event_out(e: AgentEvent) -> proto::AgentEvent {
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

pub fn bot_event_out(e: BotEvent) -> proto::BotEvent {
    proto::BotEvent {
        conversation_id: e.conversation.to_string(),
        message: Some(message_out(&e.message)),
        reason: reason_out(e.reason) as i32,
        intent: e.intent.as_deref().unwrap_or_default().to_owned(),
        context: e.context.iter().map(message_out).collect(),
    }
}

/// A reply of the wrong kind is a bug in this file, not the caller's fault.
pub fn unexpected(reply: Reply) -> Status {
    tracing::error!(?reply, "shard answered with an unexpected reply kind");
    Status::internal("internal error: unexpected reply")
}

/// A send request as the shard takes it (shared with the Kafka sends topic). Its template is
/// checked here (see [`template::send_template`]).
pub fn send_in(r: proto::SendRequest) -> Result<Outbound, Invalid> {
    let (tenant, from, to) = (
        tenant(&r.tenant)?,
        required("from", &r.from)?.to_owned(),
        required("to", &r.to)?.to_owned(),
    );
    let category = category_in(r.category)?;
    let (content, template) = template::send_template(category, r.content, r.template)?;
    Ok(Outbound {
        tenant,
        from,
        to,
        category,
        content,
        template,
        priority: send_priority(r.priority)?,
        idempotency_key: required("idempotency_key", &r.idempotency_key)?.to_owned(),
        valid_for_ms: (r.valid_for_ms > 0).then_some(r.valid_for_ms),
        tag: lifecycle::tag_in(r.tag)?,
        send_at: lifecycle::send_at_in(r.send_at_ms)?,
        thread: thread_in(&r.conversation_id, r.author)?,
    })
}

/// The conversation a send answers, with its author (required with it, at most 128 bytes).
fn thread_in(conversation: &str, author: String) -> Result<Option<Thread>, Invalid> {
    if conversation.is_empty() {
        return Ok(None);
    }
    let conversation = conversation_id(conversation)?;
    let author = author.trim();
    if author.is_empty() || author.len() > 128 {
        return Err(invalid(
            "author",
            "is required with conversation_id (1 to 128 bytes): who wrote the reply, such as \
             \"agent:ana\" or \"bot:faq-bot\"",
        ));
    }
    Ok(Some(Thread {
        conversation,
        author: std::sync::Arc::from(author),
    }))
}

/// The core's inbound message from the API's (also what the Kafka input decodes).
pub fn inbound_in(m: proto::InboundMessage) -> Result<Inbound, Invalid> {
    Ok(Inbound {
        tenant: tenant(&m.tenant)?,
        customer: m.customer,
        channel: channel(m.channel)?,
        provider_message_id: m.provider_message_id,
        text: m.text,
        business_number: (!m.business_number.is_empty()).then_some(m.business_number),
        email: (!m.email.is_empty()).then_some(m.email),
        visitor_id: (!m.visitor_id.is_empty()).then_some(m.visitor_id),
        profile_name: (!m.profile_name.is_empty()).then_some(m.profile_name),
    })
}

pub fn rule_out(r: Rule) -> proto::QuotaRule {
    match r {
        Rule::Throughput => proto::QuotaRule::Throughput,
        Rule::Pair => proto::QuotaRule::Pair,
        Rule::MessagingLimit => proto::QuotaRule::MessagingLimit,
        Rule::Window => proto::QuotaRule::Window,
    }
}

pub fn rule_in(raw: i32) -> Result<Rule, Invalid> {
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

pub fn millis(t: Option<crate::clock::Timestamp>) -> i64 {
    t.map_or(0, |t| t.as_millis() as i64)
}

pub fn override_out(o: &OverrideView) -> proto::OverrideInfo {
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

pub fn quota_out(q: &QuotaSnapshot) -> proto::PortfolioQuota {
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
        forecast: Some(proto::QuotaForecast {
            new_customers_per_hour: q.forecast.per_hour,
            batch_threshold_at_ms: millis(q.forecast.threshold_at),
            limit_at_ms: millis(q.forecast.limit_at),
            queue_drained_at_ms: millis(q.forecast.drained_at),
        }),
    }
}

pub fn audit_out(e: &AuditEntry) -> proto::AuditEntry {
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

/// A dispatch as the egress reads it from the dispatch topic.
pub fn dispatch_out(
    tenant: &TenantId,
    m: &crate::core::quota::Dispatch,
    callback_data: String,
) -> proto::Dispatch {
    proto::Dispatch {
        tenant: tenant.to_string(),
        send_id: m.id.to_string(),
        from: m.from.to_string(),
        to: m.to.as_e164().to_owned(),
        category: category_out(m.category) as i32,
        content: m.content.to_string(),
        callback_data,
        idempotency_key: m.idempotency_key.to_string(),
        counted: m.counted,
        dispatched_at_ms: i64::try_from(m.at.as_millis()).unwrap_or(i64::MAX),
        template: m.template.as_deref().map(template::template_out),
    }
}

/// A dispatch record read back (a takeover replays them); the error names the bad field.
pub fn dispatch_in(d: &proto::Dispatch) -> Result<crate::core::quota::Dispatch, String> {
    let id = d
        .send_id
        .parse()
        .map_err(|()| format!("dispatch send_id {:?} is not a send id", d.send_id))?;
    if !crate::core::identity::looks_e164(&d.to) {
        return Err(format!("dispatch {id}: `to` is not an E.164 number"));
    }
    let category = category_in(d.category).map_err(|e| format!("dispatch {id}: {e}"))?;
    let template = d
        .template
        .clone()
        .map(template::template_in)
        .transpose()
        .map_err(|e| format!("dispatch {id}: {e}"))?;
    Ok(crate::core::quota::Dispatch {
        id,
        from: std::sync::Arc::from(d.from.as_str()),
        to: crate::model::CustomerNumber::from_valid_e164(&d.to),
        category,
        content: std::sync::Arc::from(d.content.as_str()),
        template: template.map(std::sync::Arc::new),
        idempotency_key: std::sync::Arc::from(d.idempotency_key.as_str()),
        counted: d.counted,
        at: crate::clock::Timestamp(d.dispatched_at_ms.max(0) as u64),
    })
}

/// The egress's answer about a dispatch, for the outcomes topic. `at`: where the dispatch was
/// read (partition, offset).
pub fn outcome_out(
    d: &proto::Dispatch,
    outcome: ProviderOutcome,
    provider_message_id: String,
    at: (i32, i64),
    attempts: u32,
) -> proto::SendOutcome {
    let (state, error_code) = match outcome {
        ProviderOutcome::Failed { code } => (proto::SendState::Failed, code),
        _ => (proto::SendState::Sent, 0),
    };
    proto::SendOutcome {
        tenant: d.tenant.clone(),
        send_id: d.send_id.clone(),
        state: state as i32,
        provider_message_id,
        error_code,
        dispatch_partition: at.0,
        dispatch_offset: at.1,
        attempts,
    }
}

/// An outcome read back by the tenant's owner: the tenant, the send and what to apply.
pub fn outcome_in(o: &proto::SendOutcome) -> Result<(TenantId, SendId, ProviderOutcome), Invalid> {
    let outcome = match proto::SendState::try_from(o.state) {
        Ok(proto::SendState::Sent) => ProviderOutcome::Sent,
        Ok(proto::SendState::Failed) => ProviderOutcome::Failed { code: o.error_code },
        _ => {
            return Err(invalid(
                "state",
                format!(
                    "{} is not an outcome; use SEND_STATE_SENT or SEND_STATE_FAILED",
                    o.state
                ),
            ));
        }
    };
    Ok((tenant(&o.tenant)?, send_id(&o.send_id)?, outcome))
}
