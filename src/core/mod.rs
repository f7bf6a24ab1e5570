//! The deterministic core: one [`Shard`] owns the state of one or more tenants and is driven by
//! a single ordered stream of commands, each with its time.
//!
//! `shard.handle(now, command, &mut effects) -> Result<Reply, CoreError>`
//!
//! It does no I/O, spawns nothing, reads no clock and takes no lock: the same commands at the
//! same times give the same replies and effects, which is what makes every routing rule testable
//! to the millisecond and replayable. Effects (assignments, messages for agents and bots,
//! escalations) are for the runtime to carry out; the core never knows who listens.
//!
//! Inside: `identity` (numbers, dedup), `classify` (intents), `desk` (agents, queues,
//! assignment, estimates) and `tenant` (conversations and the routing decision).
pub mod classify;
pub mod customer;
#[cfg(test)]
mod customer_tests;
#[cfg(test)]
mod cut_tests;
mod dense;
pub mod desk;
pub mod duplicates;
pub mod e164;
#[cfg(test)]
mod forecast_tests;
#[cfg(test)]
mod hours_tests;
pub mod identity;
#[cfg(test)]
mod lifecycle_tests;
mod paged;
#[cfg(test)]
mod pause_tests;
pub mod positions;
mod prefetch;
mod queue;
pub mod quota;
#[cfg(test)]
mod quota_tests;
pub mod tenant;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::config::{Config, TenantConfig};
use crate::model::{AgentId, Channel, ConversationId, Presence, Priority, QueueName, TenantId};

pub use tenant::{Tenant, TenantCut, TenantState};

/// The core's hash maps and sets: foldhash (hashbrown's default hasher, randomly seeded per
/// process) instead of SipHash, which showed as the largest single cost of a routing decision.
/// Keys are validated numbers, provider message ids and our own ids.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Why a conversation went where it went (mirrors `switchboard.v1.Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    AutomationPaused,
    RouteOverride,
    AssignedAgent,
    AlreadyQueued,
    Friction,
    SimpleIntent,
    SlaOk,
    SlaSaturated,
    SlaSaturatedNoBot,
    NoBot,
    Duplicate,
    Escalated,
    MaxWaitExceeded,
    AgentOffline,
    Released,
    Transferred,
    CapacityReduced,
    Dequeued,
    WithBot,
    /// Linked into another conversation of the same customer (`Customers.Link`).
    Linked,
    /// Its queue is closed (business hours): the after-hours queue, or the bot.
    OutsideHours,
}

impl Reason {
    /// Stable snake-case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AutomationPaused => "automation_paused",
            Reason::RouteOverride => "route_override",
            Reason::AssignedAgent => "assigned_agent",
            Reason::AlreadyQueued => "already_queued",
            Reason::Friction => "friction",
            Reason::SimpleIntent => "simple_intent",
            Reason::SlaOk => "sla_ok",
            Reason::SlaSaturated => "sla_saturated",
            Reason::SlaSaturatedNoBot => "sla_saturated_no_bot",
            Reason::NoBot => "no_bot",
            Reason::Duplicate => "duplicate",
            Reason::Escalated => "escalated",
            Reason::MaxWaitExceeded => "max_wait_exceeded",
            Reason::AgentOffline => "agent_offline",
            Reason::Released => "released",
            Reason::Transferred => "transferred",
            Reason::CapacityReduced => "capacity_reduced",
            Reason::Dequeued => "dequeued",
            Reason::WithBot => "with_bot",
            Reason::Linked => "linked",
            Reason::OutsideHours => "outside_hours",
        }
    }
}

/// Where a message or conversation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Agent,
    Queue,
    Bot,
    None,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Agent => "agent",
            Target::Queue => "queue",
            Target::Bot => "bot",
            Target::None => "none",
        }
    }
}

/// An inbound customer message, as the core sees it (already decoded, not yet validated).
#[derive(Debug, Clone)]
pub struct Inbound {
    pub tenant: TenantId,
    pub customer: String,
    pub channel: Channel,
    pub provider_message_id: String,
    pub text: String,
    /// The business number the customer wrote to, if known: its throughput bucket counts the
    /// message (the platform counts inbound and outbound together).
    pub business_number: Option<String>,
    /// Other identities: either may stand instead of `customer` (empty) on channels other
    /// than WhatsApp; given with it, they are learnt as the same customer's.
    pub email: Option<String>,
    pub visitor_id: Option<String>,
    /// The name the channel shows for the customer (WhatsApp's `contacts[].profile.name`).
    pub profile_name: Option<String>,
}

/// A request to send a message from a business number.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub tenant: TenantId,
    pub from: String,
    pub to: String,
    pub category: crate::config::Category,
    /// The text (session message) or the template's name.
    pub content: String,
    /// A template send's template (None: a session message, or a template sent by name only,
    /// in the sender's default language).
    pub template: Option<Arc<crate::model::Template>>,
    /// None: by category (`quotas.low_priority`).
    pub priority: Option<quota::SendPriority>,
    pub idempotency_key: String,
    /// How long the send may wait in a batch queue; None: `quotas.default_validity_secs`.
    pub valid_for_ms: Option<u64>,
    /// The caller's label ("collections"): what cancel-by-match looks for.
    pub tag: Option<String>,
    /// Send at this time, not now (None: now).
    pub send_at: Option<Timestamp>,
    /// The conversation this send answers, and who wrote it: it joins the conversation's
    /// timeline once admitted.
    pub thread: Option<Thread>,
}

/// A send that belongs to a conversation's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub conversation: ConversationId,
    /// "agent:ana", "bot:faq-bot", or what the caller says.
    pub author: Arc<str>,
}

/// Which sends a cancel names, as the API gives them (the customer not parsed yet).
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    Id(quota::SendId),
    Key(String),
    /// Every queued or scheduled send to the customer carrying the tag.
    Match {
        customer: String,
        tag: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    /// A note added by switchboard or a person (escalation reason, transfer).
    Note,
    /// A reply sent to the customer by an agent or the bot (a send naming the conversation).
    Outbound,
}

/// One message of a conversation's context, as the API, the streams and the effects take it
/// (the context itself keeps its messages packed, see `tenant::context`). An inbound
/// message's text and id are moved in from the decoded message, not copied.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextMessage {
    pub direction: Direction,
    pub channel: Channel,
    pub at: Timestamp,
    text: Box<str>,
    provider_message_id: Box<str>,
    /// An inbound message's intent, or who wrote a note or a reply ("agent:ana",
    /// "bot:faq-bot"): one field, read through [`ContextMessage::intent`] and
    /// [`ContextMessage::author`].
    pub label: Option<Arc<str>>,
}

impl ContextMessage {
    pub fn new(
        direction: Direction,
        channel: Channel,
        at: Timestamp,
        text: impl Into<Box<str>>,
        provider_message_id: impl Into<Box<str>>,
        label: Option<Arc<str>>,
    ) -> Self {
        Self {
            direction,
            channel,
            at,
            text: text.into(),
            provider_message_id: provider_message_id.into(),
            label,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The provider's id of the message ("" for notes and replies).
    pub fn provider_message_id(&self) -> &str {
        &self.provider_message_id
    }

    /// The intent an inbound message was classified as.
    pub fn intent(&self) -> Option<&Arc<str>> {
        self.label
            .as_ref()
            .filter(|_| self.direction == Direction::Inbound)
    }

    /// Who wrote a note or a reply (None for the customer's messages).
    pub fn author(&self) -> Option<&Arc<str>> {
        self.label
            .as_ref()
            .filter(|_| self.direction != Direction::Inbound)
    }
}

/// The answer to an inbound message or an escalation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// None only for a duplicate whose conversation was already forgotten.
    pub conversation: Option<ConversationId>,
    pub target: Target,
    pub reason: Reason,
    pub intent: Option<Arc<str>>,
    pub queue: Option<QueueName>,
    pub agent: Option<AgentId>,
    pub bot: Option<Arc<str>>,
    /// Target::Queue: conversations ahead of this one.
    pub position: u32,
    /// Target::Queue: the estimated wait; None when no agent of the queue is online.
    pub estimated_wait_ms: Option<u64>,
    pub duplicate: bool,
    pub window_expires: Option<Timestamp>,
    /// Whether the customer-service window is open as of this decision.
    pub window_open: bool,
}

/// What the runtime must carry out after a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The conversation is now the agent's.
    Assigned {
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        queue: QueueName,
        reason: Reason,
        waited_ms: u64,
    },
    /// The conversation was taken from the agent.
    Unassigned {
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        reason: Reason,
    },
    /// Conversations the bot answered that a sweep forgot (retention), counted: `contained`
    /// those no person ever took (bot containment), `handed_over` the others. One effect a
    /// sweep, not one a conversation: a sweep (every `limits.sweep_interval_secs`) forgets
    /// every conversation due since the one before at once, and each effect is a metric's
    /// lookup on the shard's task.
    BotConversationsEnded {
        tenant: TenantId,
        contained: u64,
        handed_over: u64,
    },
    /// A customer message for the agent who has the conversation.
    AgentMessage {
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        message: ContextMessage,
    },
    /// A customer message for the bot.
    BotMessage {
        tenant: TenantId,
        bot: Arc<str>,
        conversation: ConversationId,
        message: ContextMessage,
        reason: Reason,
        intent: Option<Arc<str>>,
    },
    /// The conversation now waits in a queue.
    Queued {
        tenant: TenantId,
        conversation: ConversationId,
        queue: QueueName,
        reason: Reason,
    },
    /// A waiting conversation passed its queue's SLA target.
    SlaBreached { tenant: TenantId, queue: QueueName },
    /// A send for the sender (the provider).
    Dispatch {
        tenant: TenantId,
        send: quota::Dispatch,
    },
    /// A send changed state.
    SendStatus {
        tenant: TenantId,
        id: quota::SendId,
        state: quota::SendState,
        reason: Option<quota::Refusal>,
        provider_code: Option<u32>,
        idempotency_key: Arc<str>,
    },
    /// A rule in shadow mode would have refused a send (it was let through).
    ShadowRefusal {
        tenant: TenantId,
        rule: crate::config::Rule,
    },
    /// The portfolio's batch mode turned on or off.
    BatchMode { tenant: TenantId, on: bool },
    /// The provider reported a spam-rate error (131048): marketing from the number is paused.
    SpamRateAlert { tenant: TenantId, number: Arc<str> },
    /// Meta's per-user marketing limit (131049): a customer's low-priority sends are held.
    CustomerHeld { tenant: TenantId },
    /// A customer's consent changed (keyword or API).
    Consent {
        tenant: TenantId,
        state: quota::ConsentState,
    },
    /// A waiting conversation passed its queue's maximum wait and moved or rose in priority.
    Escalated {
        tenant: TenantId,
        conversation: ConversationId,
        from: QueueName,
        to: QueueName,
        priority: Priority,
    },
}

/// Where a supervisor fixed a conversation's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOverride {
    Queue(QueueName),
    Agent(AgentId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    Queue(QueueName),
    Agent(AgentId),
}

/// Everything that changes or reads a shard's state.
#[derive(Debug, Clone)]
pub enum Command {
    Ingest(Inbound),
    RegisterAgent {
        tenant: TenantId,
        agent: AgentId,
        presence: Presence,
        capacity: u32,
        queues: Vec<String>,
    },
    SetPresence {
        tenant: TenantId,
        agent: AgentId,
        presence: Presence,
    },
    Complete {
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
    },
    Release {
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
    },
    Transfer {
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        to: TransferTarget,
    },
    PauseAutomation {
        tenant: TenantId,
        conversation: ConversationId,
    },
    ResumeAutomation {
        tenant: TenantId,
        conversation: ConversationId,
    },
    OverrideRoute {
        tenant: TenantId,
        conversation: ConversationId,
        to: Option<RouteOverride>,
    },
    Escalate {
        tenant: TenantId,
        conversation: ConversationId,
        queue: Option<String>,
        note: String,
        /// Who escalates ("bot:faq-bot", "supervisor:eva"); None: "switchboard".
        author: Option<String>,
    },
    GetConversation {
        tenant: TenantId,
        conversation: ConversationId,
    },
    GetAgent {
        tenant: TenantId,
        agent: AgentId,
    },
    QueueStats {
        tenant: TenantId,
        queue: Option<String>,
    },
    Send(Outbound),
    /// Cancels waiting sends (`Reply::Cancelled` with how many).
    Cancel {
        tenant: TenantId,
        target: Cancel,
    },
    /// A customer's consent (`Reply::Consent`, None: never set).
    GetConsent {
        tenant: TenantId,
        customer: String,
    },
    /// Sets a customer's consent (audited).
    SetConsent {
        tenant: TenantId,
        customer: String,
        state: quota::ConsentState,
        source: String,
        actor: String,
        reason: String,
        /// When it was given or withdrawn (None: now).
        at: Option<Timestamp>,
    },
    /// Joins two identities into one customer (`Reply::Linked`), audited.
    Link {
        tenant: TenantId,
        a: tenant::IdentityRef,
        b: tenant::IdentityRef,
        source: String,
        actor: String,
        reason: String,
    },
    /// The customer an identity names (`Reply::Customer`).
    GetCustomer {
        tenant: TenantId,
        identity: tenant::IdentityRef,
    },
    /// Sets profile attributes (`Reply::Customer`); a new identity becomes a new customer.
    UpdateProfile {
        tenant: TenantId,
        identity: tenant::IdentityRef,
        values: Vec<(customer::Field, String)>,
        source: String,
        /// When the values were true (None: now).
        at: Option<Timestamp>,
    },
    /// Customers whose names are like `identity`'s, or (None) the suggestions found as names
    /// were set, newest first (`Reply::Duplicates`).
    SuggestDuplicates {
        tenant: TenantId,
        identity: Option<tenant::IdentityRef>,
        limit: usize,
    },
    /// Disagreements between profile sources, newest first (`Reply::Conflicts`).
    ListConflicts {
        tenant: TenantId,
        limit: usize,
    },
    GetSend {
        tenant: TenantId,
        id: quota::SendId,
    },
    /// A send by the idempotency key it was requested with.
    GetSendByKey {
        tenant: TenantId,
        key: String,
    },
    ProviderResult {
        tenant: TenantId,
        id: quota::SendId,
        outcome: quota::ProviderOutcome,
    },
    GetQuota {
        tenant: TenantId,
    },
    SetOverride {
        tenant: TenantId,
        change: quota::Change,
        reason: String,
        actor: String,
        expires_in_ms: u64,
    },
    ClearOverride {
        tenant: TenantId,
        id: u64,
        actor: String,
    },
    /// Holds the sends tagged `tag` for `ttl_ms` from `at` (None: now); see `quota::pause`.
    PauseTag {
        tenant: TenantId,
        tag: String,
        ttl_ms: u64,
        actor: String,
        reason: String,
        at: Option<Timestamp>,
    },
    /// Ends a tag's pause: its held sends go back to the queue, in order.
    ResumeTag {
        tenant: TenantId,
        tag: String,
        actor: String,
        reason: String,
    },
    ListPaused {
        tenant: TenantId,
    },
    ListAudit {
        tenant: TenantId,
        limit: usize,
    },
    PlanCampaign {
        tenant: TenantId,
        plan: quota::PlanRequest,
    },
    /// New routing rules (intents, queues, the bot) from a reloaded, validated config file
    /// (`Reply::Reloaded` with what changed).
    ReloadRouting {
        tenant: TenantId,
        config: Box<TenantConfig>,
    },
    /// New base quotas and numbers from a reloaded, validated config file.
    ReloadQuotas {
        tenant: TenantId,
        numbers: Vec<crate::config::NumberConfig>,
        quotas: Box<crate::config::QuotaConfig>,
        actor: String,
    },
    /// The tenant's state as plain data, to save (see `tenant::TenantState`).
    SaveState {
        tenant: TenantId,
    },
    /// Begins a cut taken without stopping (see `tenant::slab`): `round` = (round, spread)
    /// for an incremental one, None for a whole one. The shard copies it a little at a time
    /// ([`Shard::step_cuts`]) and the runtime answers with [`Reply::Cut`] when it is done.
    /// `paced`: the runtime copies it within its share of the shard's time
    /// (`kafka.snapshot_busy_percent`); false for a cut someone waits for (a revoke, a
    /// shutdown), copied as fast as the shard can.
    BeginCut {
        tenant: TenantId,
        round: Option<(u64, u64)>,
        paced: bool,
    },
    /// Rebuilds the tenant from its config and puts a saved state into it (a restart or a
    /// handover); None leaves it empty (its partition went to another replica). On error the
    /// tenant is left as it was.
    RestoreState {
        tenant: TenantId,
        state: Option<Box<TenantState>>,
    },
    /// A dispatch made after the restored state was taken (see `Quotas::replay_dispatch`).
    ReplayDispatch {
        tenant: TenantId,
        dispatch: Box<quota::Dispatch>,
    },
    /// While held, time does not pass for the tenant: its ticks wait (nothing falls due, no
    /// SLA breaches, no sweeps), until it is let go. Kafka mode holds a tenant taken over
    /// until what was written before the takeover is read, so that a scheduled send cannot
    /// go out before the cancel that was journaled for it. Not saved: a restore lets go.
    HoldTime {
        tenant: TenantId,
        held: bool,
    },
    /// Time passes: SLA breaches, max-wait escalation, batch waves, sweeps of expired state.
    Tick,
}

impl Command {
    /// The tenant the command is for (None: every tenant of the shard).
    pub fn tenant(&self) -> Option<&TenantId> {
        use Command::*;
        match self {
            Ingest(m) => Some(&m.tenant),
            Send(o) => Some(&o.tenant),
            GetSend { tenant, .. }
            | Cancel { tenant, .. }
            | GetConsent { tenant, .. }
            | SetConsent { tenant, .. }
            | Link { tenant, .. }
            | GetCustomer { tenant, .. }
            | UpdateProfile { tenant, .. }
            | ListConflicts { tenant, .. }
            | SuggestDuplicates { tenant, .. }
            | GetSendByKey { tenant, .. }
            | ProviderResult { tenant, .. }
            | GetQuota { tenant }
            | SetOverride { tenant, .. }
            | ClearOverride { tenant, .. }
            | PauseTag { tenant, .. }
            | ResumeTag { tenant, .. }
            | ListPaused { tenant }
            | ListAudit { tenant, .. }
            | PlanCampaign { tenant, .. }
            | ReloadQuotas { tenant, .. }
            | ReloadRouting { tenant, .. }
            | SaveState { tenant }
            | BeginCut { tenant, .. }
            | RestoreState { tenant, .. }
            | HoldTime { tenant, .. }
            | ReplayDispatch { tenant, .. } => Some(tenant),
            RegisterAgent { tenant, .. }
            | SetPresence { tenant, .. }
            | Complete { tenant, .. }
            | Release { tenant, .. }
            | Transfer { tenant, .. }
            | PauseAutomation { tenant, .. }
            | ResumeAutomation { tenant, .. }
            | OverrideRoute { tenant, .. }
            | Escalate { tenant, .. }
            | GetConversation { tenant, .. }
            | GetAgent { tenant, .. }
            | QueueStats { tenant, .. } => Some(tenant),
            Tick => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationState {
    Idle,
    Bot,
    Waiting,
    Assigned,
}

/// A conversation as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationView {
    pub tenant: TenantId,
    pub id: ConversationId,
    /// The first phone, E.164, for the agent who answers (empty: none); never logged.
    pub customer: String,
    /// Every identity of the customer, the first phone first.
    pub identities: Vec<customer::Identity>,
    pub state: ConversationState,
    pub queue: Option<QueueName>,
    pub agent: Option<AgentId>,
    pub priority: Priority,
    pub automation_paused: bool,
    pub route_override: Option<RouteOverride>,
    pub window_expires: Option<Timestamp>,
    pub window_open: bool,
    pub channels: Vec<Channel>,
    pub context: Vec<ContextMessage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    pub tenant: TenantId,
    pub id: AgentId,
    pub presence: Presence,
    pub capacity: u32,
    pub queues: Vec<QueueName>,
    pub conversations: Vec<ConversationId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueStatsView {
    pub tenant: TenantId,
    pub queue: QueueName,
    pub depth: u32,
    pub available_agents: u32,
    pub online_agents: u32,
    pub free_capacity: u32,
    /// None: no agent online, the wait is unbounded.
    pub estimated_wait_ms: Option<u64>,
    pub sla_target_ms: u64,
    pub max_wait_ms: u64,
    pub sla_attainment: f64,
    pub assignments_total: u64,
    pub sla_breaches_total: u64,
    pub average_handle_ms: u64,
    pub oldest_wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Decision(Decision),
    Agent(AgentView),
    Conversation(ConversationView),
    QueueStats(Vec<QueueStatsView>),
    Send {
        id: quota::SendId,
        admission: quota::Admission,
    },
    SendView(quota::SendView),
    /// How many sends a cancel cancelled, and the idempotency key of the send it named (by id
    /// or key): what the journal writes, since ids are not kept across a replay.
    Cancelled {
        cancelled: u32,
        key: Option<Arc<str>>,
    },
    Consent(Option<quota::ConsentView>),
    Customer(tenant::CustomerView),
    Linked(tenant::LinkView),
    Conflicts(Vec<(customer::Conflict, Vec<customer::Identity>)>),
    Duplicates(Vec<tenant::DuplicateView>),
    /// What a reload changed, one line a change.
    Reloaded(Vec<String>),
    Quota(Box<quota::QuotaSnapshot>),
    Override(quota::OverrideView),
    Paused(quota::PauseView),
    /// The pause ended (None: the tag was not paused) and the sends it released.
    Resumed {
        pause: Option<quota::PauseView>,
        released: u32,
    },
    Pauses(Vec<quota::PauseView>),
    Audit(Vec<quota::AuditEntry>),
    Plan(quota::PlanResult),
    State(Box<TenantState>),
    /// A cut copied, and the shard's time spent copying it (the runtime's measure).
    Cut(Box<TenantCut>, std::time::Duration),
    Done,
}

/// Why a command was refused. Nothing changed in the shard when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("field `{field}` {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
}

/// The state of the tenants one shard owns, and the single entry point that changes it.
#[derive(Debug)]
pub struct Shard {
    tenants: Map<TenantId, Tenant>,
    /// What each tenant is rebuilt from on a restore (its numbers and quotas as last reloaded).
    configs: Map<TenantId, TenantConfig>,
    limits: Arc<crate::config::Limits>,
    tick_ms: u64,
}

impl Shard {
    /// A shard owning the configured tenants for which `owns` is true. `config` must have been
    /// validated (`Config::load` does).
    pub fn new(config: &Config, owns: impl Fn(&str) -> bool) -> Self {
        let limits = Arc::new(config.limits.clone());
        let tick_ms = config.runtime.tick_interval_ms;
        let configs: Map<TenantId, TenantConfig> = config
            .tenants
            .iter()
            .filter(|t| owns(&t.id))
            .map(|t| (TenantId::new(&t.id), t.clone()))
            .collect();
        let tenants = configs
            .iter()
            .map(|(id, t)| (id.clone(), Tenant::new(t, limits.clone(), tick_ms)))
            .collect();
        Self {
            tenants,
            configs,
            limits,
            tick_ms,
        }
    }

    pub fn tenant_ids(&self) -> impl Iterator<Item = &TenantId> {
        self.tenants.keys()
    }

    /// True while a tenant's cut is being copied.
    pub fn cutting(&self) -> bool {
        self.tenants.values().any(Tenant::cutting)
    }

    /// Copies about `budget` more of each cut being taken; the cuts finished.
    pub fn step_cuts(&mut self, budget: usize) -> Vec<(TenantId, TenantCut)> {
        self.tenants
            .iter_mut()
            .filter(|(_, t)| t.cutting())
            .filter_map(|(id, t)| Some((id.clone(), t.step_cut(budget)?)))
            .collect()
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.get(id)
    }

    pub fn tenant_mut(&mut self, id: &str) -> Option<&mut Tenant> {
        self.tenants.get_mut(id)
    }

    /// Applies one command at time `now`. Effects are appended to `out`; on error nothing
    /// changed and nothing was appended.
    pub fn handle(
        &mut self,
        now: Timestamp,
        command: Command,
        out: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        let Some(id) = command.tenant().cloned() else {
            for t in self.tenants.values_mut() {
                t.tick(now, out);
            }
            return Ok(Reply::Done);
        };
        let not_found = || CoreError::NotFound {
            what: "tenant",
            id: id.to_string(),
        };
        match command {
            Command::RestoreState { tenant, state } => {
                let config = self.configs.get(&tenant).ok_or_else(not_found)?;
                let mut fresh = Tenant::new(config, self.limits.clone(), self.tick_ms);
                if let Some(state) = state {
                    fresh.restore(*state).map_err(|e| {
                        CoreError::FailedPrecondition(format!("cannot restore: {e}"))
                    })?;
                }
                self.tenants.insert(tenant, fresh);
                Ok(Reply::Done)
            }
            Command::ReloadRouting { tenant, config } => {
                let t = self.tenants.get_mut(&tenant).ok_or_else(not_found)?;
                let old = self.configs.get(&tenant).ok_or_else(not_found)?;
                let changes = t.reload_routing(old, &config)?;
                // What a restore rebuilds the tenant from: the new rules, the quotas as they
                // were reloaded (ReloadQuotas keeps those).
                let (numbers, quotas) = (old.numbers.clone(), old.quotas.clone());
                let mut config = *config;
                (config.numbers, config.quotas) = (numbers, quotas);
                self.configs.insert(tenant, config);
                Ok(Reply::Reloaded(changes))
            }
            Command::ReloadQuotas {
                tenant,
                numbers,
                quotas,
                actor,
            } => {
                let t = self.tenants.get_mut(&tenant).ok_or_else(not_found)?;
                let reply = t.handle(
                    now,
                    Command::ReloadQuotas {
                        tenant: tenant.clone(),
                        numbers: numbers.clone(),
                        quotas: quotas.clone(),
                        actor,
                    },
                    out,
                )?;
                if let Some(config) = self.configs.get_mut(&tenant) {
                    (config.numbers, config.quotas) = (numbers, *quotas);
                }
                Ok(reply)
            }
            command => {
                let tenant = self.tenants.get_mut(id.as_str()).ok_or_else(not_found)?;
                tenant.handle(now, command, out)
            }
        }
    }
}
