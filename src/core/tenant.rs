//! One tenant's conversations and the routing decision.
//!
//! A conversation is one per (tenant, customer), whatever the channel: the customer who writes
//! on WhatsApp and then opens web chat continues the same conversation. It carries the last N
//! messages as context, the 24-hour customer-service window (opened and reset by each WhatsApp
//! message from the customer), and the flags people set (automation paused, route override).
//!
//! The routing order, each outcome with its reason:
//! 1. automation paused or a route override → a human (`AUTOMATION_PAUSED`, `ROUTE_OVERRIDE`);
//! 2. already with an agent → that agent (`ASSIGNED_AGENT`);
//! 3. already waiting in a queue → keeps its place (`ALREADY_QUEUED`; friction raises priority);
//! 4. mid-dialogue with the bot, no friction, idle under `bot_idle_secs` → the bot again
//!    (`WITH_BOT`; the bot ends it by escalating);
//! 5. the queue it would go to is closed (business hours) → its after-hours queue
//!    (`OUTSIDE_HOURS`); else friction waits in it, its estimate counted from the opening
//!    (`FRICTION`); else the bot (`OUTSIDE_HOURS`), else waits in it (`OUTSIDE_HOURS`);
//! 6. friction intent (mode `human`) → its queue at its priority (`FRICTION`);
//! 7. simple intent (mode `bot`) → the bot (`SIMPLE_INTENT`; `NO_BOT` queues it without a bot);
//! 8. otherwise (mode `auto`, or no intent) → the queue if its estimated wait is within the SLA
//!    target (`SLA_OK`), else the bot (`SLA_SATURATED`), else queued anyway
//!    (`SLA_SATURATED_NO_BOT`).
//!
//! A customer is found by any of their identities (`customers`): a phone number, an e-mail
//! address, a web-chat visitor id.
use std::collections::VecDeque;
use std::sync::Arc;

use phonenumber::country;

use crate::clock::Timestamp;
use crate::config::{IntentMode, Limits, TenantConfig};
use crate::model::{
    AgentId, Channel, ConversationId, CustomerNumber, Priority, QueueName, TenantId,
};

mod context;
mod customers;
mod messages;
mod numbers;
mod retention;
mod routing;
mod slab;
mod state;
mod view;
use context::{Context, Kept};
pub use customers::{CustomerView, DuplicateView, IdentityRef, LinkView, Other};
use numbers::Numbers;
use retention::Retention;
use slab::Slab;
pub use state::{SavedConversation, SavedMessage, TenantCut, TenantState};

use super::Map;
use super::classify::Classifier;
use super::customer::{self, Conflict, Identity};
use super::desk::{Desk, Location, Placed, QueueIx};
use super::duplicates::Duplicates;
use super::identity::{self, Dedup};
use super::quota::{self, Quotas, SendRequest};
use super::{
    Cancel, Command, ContextMessage, ConversationState, ConversationView, CoreError, Decision,
    Direction, Effect, Inbound, Outbound, Reason, Reply, RouteOverride, Target, TransferTarget,
};

/// Longest provider message id accepted (WhatsApp ids are about 60 bytes).
const MAX_PROVIDER_ID_BYTES: usize = 256;
/// Most queues one agent may serve, and most conversations at once: far above any real desk,
/// low enough that a typo (capacity 10000) is refused instead of skewing estimates.
const MAX_AGENT_QUEUES: usize = 64;
const MAX_AGENT_CAPACITY: u32 = 100;
/// How many conversations ahead of its removal the sweep starts loading one's index slot
/// (then its value at half the distance, its phone's slot at a quarter).
const SWEEP_AHEAD: usize = 16;
/// Slots of an index's table being emptied that a tick walks, each index. A table of
/// 8,388,608 slots left with 100,000 or 1,000,000 entries after a peak: ~0.1 ms a step
/// (median; the slowest 2.8–3.0 ms), 128 ticks in all, against 12–28 ms for remaking it at once
/// (a throwaway program, session 37).
const SETTLE_SLOTS: usize = 1 << 16;

#[derive(Debug)]
struct Intent {
    name: Arc<str>,
    mode: IntentMode,
    queue: Option<QueueIx>,
    priority: Priority,
}

#[derive(Debug, Clone)]
struct Conversation {
    /// The customer's first phone number (None: known by e-mail or visitor id only).
    customer: Option<CustomerNumber>,
    /// Everything else the customer is known by, and their profile (None: nothing more).
    known: Option<Box<customers::Known>>,
    /// When the first phone's customer-service window closes ([`Expiry::get`]; None: never
    /// opened).
    window_expires: Expiry,
    channels: Channels,
    /// The newest messages (`limits.context_messages`, 20 by default), packed (see
    /// [`context`]).
    context: Context,
    paused: bool,
    /// Boxed: rare, and 24 bytes inline in every conversation.
    route_override: Option<Box<RouteOverride>>,
    /// With the bot (and not on the desk).
    with_bot: bool,
    /// The bot answered it at some point; a person took it at some point (queued or
    /// assigned): when it is forgotten, the bot contained it if only the first is true.
    served_by_bot: bool,
    served_by_human: bool,
    /// The queue it was last routed to: where a human takes it when automation is paused.
    /// A queue's index in two bytes (a desk has at most a few hundred queues).
    last_queue: Option<u16>,
    priority: Priority,
    last_activity: Timestamp,
}

impl slab::Share for Conversation {
    /// The copy shares the context's records (see `context`).
    fn share(&mut self) -> Self {
        self.context.seal();
        self.clone()
    }
}

/// When a window closes, in 8 bytes (an `Option<Timestamp>` takes 16, in every
/// conversation): `u64::MAX` for a window never opened, a time no window reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expiry(u64);

impl Expiry {
    const NEVER: Self = Self(u64::MAX);

    fn at(t: Timestamp) -> Self {
        Self(t.as_millis().min(u64::MAX - 1))
    }

    fn from(t: Option<Timestamp>) -> Self {
        t.map_or(Self::NEVER, Self::at)
    }

    fn get(self) -> Option<Timestamp> {
        (self != Self::NEVER).then_some(Timestamp(self.0))
    }
}

/// The channels a customer used, in first-use order, in one byte: two bits each (the
/// channel's number plus one, 0 for none), at most the three there are. A `Vec` cost a
/// conversation 24 bytes and an allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Channels(u8);

impl Channels {
    const ALL: [Channel; 3] = [Channel::WhatsApp, Channel::WebChat, Channel::Voice];

    fn code(c: Channel) -> u8 {
        match c {
            Channel::WhatsApp => 1,
            Channel::WebChat => 2,
            Channel::Voice => 3,
        }
    }

    fn iter(self) -> impl Iterator<Item = Channel> {
        (0..3)
            .map(move |i| (self.0 >> (2 * i)) & 3)
            .take_while(|code| *code != 0)
            .map(|code| Self::ALL[code as usize - 1])
    }

    fn contains(self, c: Channel) -> bool {
        self.iter().any(|x| x == c)
    }

    /// Adds `c` after the others unless it is there already.
    fn push(&mut self, c: Channel) {
        if !self.contains(c) {
            let n = self.iter().count();
            self.0 |= Self::code(c) << (2 * n);
        }
    }

    fn last(self) -> Option<Channel> {
        self.iter().last()
    }

    fn to_vec(self) -> Vec<Channel> {
        self.iter().collect()
    }
}

impl FromIterator<Channel> for Channels {
    fn from_iter<I: IntoIterator<Item = Channel>>(iter: I) -> Self {
        let mut c = Channels::default();
        for ch in iter {
            c.push(ch);
        }
        c
    }
}

impl Conversation {
    /// A new conversation with `customer` (None: known by an e-mail or visitor id only).
    fn new(customer: Option<CustomerNumber>, priority: Priority, now: Timestamp) -> Self {
        Self {
            customer,
            known: None,
            window_expires: Expiry::NEVER,
            channels: Channels::default(),
            context: Context::default(),
            paused: false,
            route_override: None,
            with_bot: false,
            served_by_bot: false,
            served_by_human: false,
            last_queue: None,
            priority,
            last_activity: now,
        }
    }
}

#[derive(Debug)]
pub struct Tenant {
    id: TenantId,
    region: country::Id,
    /// Intents, queues to route to, the bot: what a reload replaces.
    rules: Rules,
    limits: Arc<Limits>,
    conversations: Slab<Conversation>,
    /// Every phone number a conversation's customer is known by.
    by_customer: Numbers,
    /// E-mail addresses and visitor ids.
    by_alias: Map<Identity, ConversationId>,
    /// Disagreements between profile sources, oldest first (at most `limits.max_conflicts`).
    conflicts: VecDeque<Conflict>,
    duplicates: Duplicates,
    next_conversation: u64,
    dedup: Dedup,
    desk: Desk,
    quotas: Quotas,
    next_sweep: Timestamp,
    /// When the sweep looks at each conversation.
    retention: Retention,
    /// A cut being taken (Kafka mode's snapshots; see `slab`).
    cutting: Option<Box<state::Cutting>>,
    /// Time does not pass for it (`Command::HoldTime`).
    held: bool,
}

/// The routing rules a tenant takes from its config (and again on a reload).
#[derive(Debug)]
struct Rules {
    bot: Option<Arc<str>>,
    /// A conversation with the bot stays there while its idle time is under this (0: off).
    bot_idle_ms: u64,
    default_queue: QueueIx,
    escalation_queue: QueueIx,
    default_priority: Priority,
    escalation_priority: Priority,
    intents: Vec<Intent>,
    classifier: Classifier,
}

impl Rules {
    /// From a validated config, with the desk already holding its queues.
    fn new(config: &TenantConfig, desk: &Desk) -> Self {
        let queue = |name: &str| desk.queue_ix(name).expect("validated by Config::validate");
        let default_queue = queue(&config.default_queue);
        Self {
            bot: config.bot.as_deref().map(Arc::from),
            bot_idle_ms: config.bot_idle_secs * 1_000,
            default_queue,
            escalation_queue: config
                .escalation_queue
                .as_deref()
                .map_or(default_queue, queue),
            default_priority: config.default_priority,
            escalation_priority: config.escalation_priority,
            intents: config
                .intents
                .iter()
                .map(|i| Intent {
                    name: Arc::from(i.name.as_str()),
                    mode: i.mode,
                    queue: i.queue.as_deref().map(queue),
                    priority: i.priority.unwrap_or(config.default_priority),
                })
                .collect(),
            classifier: Classifier::new(&config.intents, config.default_priority)
                .expect("validated by Config::validate"),
        }
    }
}

impl Tenant {
    /// Takes reloaded routing rules (intents, queues, the bot, duplicate suggestions): waiting
    /// and assigned conversations keep their places. Refused, changing nothing, when a queue
    /// is gone from the file (its conversations would have nowhere to go: restart for that).
    pub(super) fn reload_routing(
        &mut self,
        old: &TenantConfig,
        new: &TenantConfig,
    ) -> Result<Vec<String>, CoreError> {
        let removed = crate::config::routing::removed_queues(old, new);
        if !removed.is_empty() {
            return Err(CoreError::FailedPrecondition(format!(
                "tenant {}: queue(s) {removed:?} are gone from the file; removing a queue needs \
                 a restart (its conversations would have nowhere to go); nothing of this \
                 tenant's routing was changed",
                self.id
            )));
        }
        let changes = crate::config::routing::changes(old, new);
        self.desk.reconfigure(&new.queues);
        self.rules = Rules::new(new, &self.desk);
        self.duplicates.configure(&new.duplicates);
        Ok(changes)
    }

    /// Builds a tenant from its validated configuration.
    /// `tick_ms` is how often the runtime ticks (batch waves are paced by it).
    pub fn new(config: &TenantConfig, limits: Arc<Limits>, tick_ms: u64) -> Self {
        let id = TenantId::new(&config.id);
        let quotas = Quotas::new(
            id.clone(),
            &config.numbers,
            &config.quotas,
            limits.window_secs * 1_000,
            tick_ms,
        );
        let desk = Desk::new(id.clone(), &config.queues);
        let rules = Rules::new(config, &desk);
        let region = (config.default_region.parse()).expect("validated by Config::validate");
        super::e164::prepare(region);
        Self {
            region,
            rules,
            dedup: Dedup::new(limits.dedup_ttl_secs * 1_000, limits.dedup_max_ids),
            retention: Retention::new(
                limits.conversation_retention_secs * 1_000,
                limits.sweep_interval_secs * 1_000,
            ),
            limits,
            conversations: Slab::default(),
            by_customer: Numbers::default(),
            by_alias: Map::default(),
            conflicts: VecDeque::new(),
            duplicates: Duplicates::new(&config.duplicates),
            next_conversation: 1,
            desk,
            quotas,
            next_sweep: Timestamp(0),
            cutting: None,
            held: false,
            id,
        }
    }

    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// The tenant's bot, if it has one.
    pub fn bot(&self) -> Option<&Arc<str>> {
        self.rules.bot.as_ref()
    }

    pub fn desk(&self) -> &Desk {
        &self.desk
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// For restoring saved state (the scale-out work builds on it).
    pub fn quotas_mut(&mut self) -> &mut Quotas {
        &mut self.quotas
    }

    pub fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    pub fn remembered_message_ids(&self) -> usize {
        self.dedup.len()
    }

    pub(super) fn handle(
        &mut self,
        now: Timestamp,
        command: Command,
        out: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        match command {
            Command::Ingest(m) => self.ingest(now, m, out).map(Reply::Decision),
            Command::RegisterAgent {
                agent,
                presence,
                capacity,
                queues,
                ..
            } => {
                let queues = self.check_agent(&agent, capacity, &queues)?;
                self.desk
                    .register(now, &agent, presence, capacity, queues, out);
                self.agent_reply(&agent)
            }
            Command::SetPresence {
                agent, presence, ..
            } => {
                self.desk.set_presence(now, &agent, presence, out)?;
                self.agent_reply(&agent)
            }
            Command::Complete {
                agent,
                conversation,
                ..
            } => {
                self.conversation(conversation)?;
                self.desk.complete(now, &agent, conversation, out)?;
                self.agent_reply(&agent)
            }
            Command::Release {
                agent,
                conversation,
                ..
            } => {
                self.conversation(conversation)?;
                self.desk.release(now, &agent, conversation, out)?;
                self.agent_reply(&agent)
            }
            Command::Transfer {
                agent,
                conversation,
                to,
                ..
            } => {
                self.conversation(conversation)?;
                let text = match &to {
                    TransferTarget::Queue(q) => {
                        let q = self.queue_arg("queue", q.as_str())?;
                        self.desk
                            .transfer_to_queue(now, &agent, conversation, q, out)?;
                        format!("transferred to queue {}", self.desk.queue_name(q))
                    }
                    TransferTarget::Agent(to) => {
                        self.desk
                            .transfer_to_agent(now, &agent, conversation, to, out)?;
                        format!("transferred to agent {to}")
                    }
                };
                let author = format!("agent:{agent}");
                self.note(conversation, now, &text, &author);
                self.agent_reply(&agent)
            }
            Command::PauseAutomation { conversation, .. } => {
                self.conversation_mut(conversation)?.paused = true;
                self.view(conversation, now).map(Reply::Conversation)
            }
            Command::ResumeAutomation { conversation, .. } => {
                self.conversation_mut(conversation)?.paused = false;
                self.view(conversation, now).map(Reply::Conversation)
            }
            Command::OverrideRoute {
                conversation, to, ..
            } => {
                self.override_route(now, conversation, to, out)?;
                self.view(conversation, now).map(Reply::Conversation)
            }
            Command::Escalate {
                conversation,
                queue,
                note,
                author,
                ..
            } => self
                .escalate(
                    now,
                    conversation,
                    queue.as_deref(),
                    &note,
                    author.as_deref(),
                    out,
                )
                .map(Reply::Decision),
            Command::GetConversation { conversation, .. } => {
                self.view(conversation, now).map(Reply::Conversation)
            }
            Command::GetAgent { agent, .. } => self.agent_reply(&agent),
            Command::QueueStats { queue, .. } => {
                let stats = match queue {
                    Some(name) => {
                        let q = self
                            .desk
                            .queue_ix(&name)
                            .ok_or_else(|| CoreError::NotFound {
                                what: "queue",
                                id: name.clone(),
                            })?;
                        vec![self.desk.stats(q, now, self.rules.default_priority)]
                    }
                    None => (0..self.desk.queue_names().count())
                        .map(|q| self.desk.stats(q, now, self.rules.default_priority))
                        .collect(),
                };
                Ok(Reply::QueueStats(stats))
            }
            Command::Send(o) => self.send(now, o, out),
            Command::Cancel { target, .. } => {
                let target = match target {
                    Cancel::Id(id) => quota::CancelTarget::Id(id),
                    Cancel::Key(key) => quota::CancelTarget::Key(key),
                    Cancel::Match { customer, tag } => quota::CancelTarget::Match {
                        customer: self.customer_number(&customer)?,
                        tag,
                    },
                };
                let (cancelled, key) =
                    self.quotas
                        .cancel_keyed(&target, out)
                        .map_err(|e| match e {
                            quota::CancelError::NotFound(id) => {
                                CoreError::NotFound { what: "send", id }
                            }
                            dispatched => CoreError::FailedPrecondition(dispatched.to_string()),
                        })?;
                Ok(Reply::Cancelled { cancelled, key })
            }
            Command::Link {
                a,
                b,
                source,
                actor,
                reason,
                ..
            } => self
                .link(now, &a, &b, &source, &actor, &reason, out)
                .map(Reply::Linked),
            Command::GetCustomer { identity, .. } => {
                self.customer_view(&identity).map(Reply::Customer)
            }
            Command::UpdateProfile {
                identity,
                values,
                source,
                at,
                ..
            } => self
                .update_profile(now, &identity, values, &source, at)
                .map(Reply::Customer),
            Command::ListConflicts { limit, .. } => {
                Ok(Reply::Conflicts(self.list_conflicts(limit)))
            }
            Command::SuggestDuplicates {
                identity, limit, ..
            } => self
                .suggest_duplicates(identity.as_ref(), limit)
                .map(Reply::Duplicates),
            Command::GetConsent { customer, .. } => {
                let customer = self.customer_number(&customer)?;
                Ok(Reply::Consent(self.quotas.consent(&customer).cloned()))
            }
            Command::SetConsent {
                customer,
                state,
                source,
                actor,
                reason,
                at,
                ..
            } => {
                let customer = self.customer_number(&customer)?;
                let at = at.unwrap_or(now);
                if at > now {
                    return Err(invalid(
                        "at_ms",
                        "is in the future; give when the customer said it, or 0 for now",
                    ));
                }
                let view = quota::ConsentView {
                    state,
                    source: Arc::from(source),
                    actor: Arc::from(actor),
                    at,
                };
                self.quotas.set_consent(&customer, view, &reason, out);
                Ok(Reply::Consent(self.quotas.consent(&customer).cloned()))
            }
            Command::GetSend { id, .. } => self
                .quotas
                .view(id)
                .cloned()
                .map(Reply::SendView)
                .ok_or_else(|| CoreError::NotFound {
                    what: "send",
                    id: id.to_string(),
                }),
            Command::GetSendByKey { key, .. } => self
                .quotas
                .view_by_key(&key)
                .cloned()
                .map(Reply::SendView)
                .ok_or(CoreError::NotFound {
                    what: "send with idempotency key",
                    id: key,
                }),
            Command::ProviderResult { id, outcome, .. } => {
                if self.quotas.view(id).is_none() {
                    return Err(CoreError::NotFound {
                        what: "send",
                        id: id.to_string(),
                    });
                }
                // 131047: the platform says the window is closed, whatever we thought.
                if let Some(customer) = self.quotas.provider_result(now, id, outcome, out)
                    && let Some(id) = self.by_customer.id(&self.conversations, customer.as_e164())
                    && let Some(c) = self.conversations.get_mut(&id)
                {
                    c.window_expires = Expiry::at(now);
                }
                Ok(Reply::Done)
            }
            Command::GetQuota { .. } => Ok(Reply::Quota(Box::new(self.quotas.snapshot(now)))),
            Command::SaveState { .. } => Ok(Reply::State(Box::new(self.state(now)))),
            Command::BeginCut { round, .. } => {
                if self.cutting() {
                    return Err(CoreError::FailedPrecondition(format!(
                        "tenant {}: a cut is still being taken",
                        self.id
                    )));
                }
                self.begin_cut(now, round);
                Ok(Reply::Done)
            }
            Command::RestoreState { .. } => unreachable!("the shard rebuilds the tenant"),
            Command::ReloadRouting { .. } => {
                unreachable!("the shard reloads the routing, with the config it keeps")
            }
            Command::ReplayDispatch { dispatch, .. } => self
                .quotas
                .replay_dispatch(&dispatch)
                .map(|()| Reply::Done)
                .map_err(|e| CoreError::FailedPrecondition(format!("cannot replay: {e}"))),
            Command::SetOverride {
                change,
                reason,
                actor,
                expires_in_ms,
                ..
            } => self
                .quotas
                .set_override(now, change, &reason, &actor, expires_in_ms)
                .map(Reply::Override)
                .map_err(|b| invalid(b.field, b.problem)),
            Command::ClearOverride { id, actor, .. } => self
                .quotas
                .clear_override(now, id, &actor)
                .map(Reply::Override)
                .map_err(|b| invalid(b.field, b.problem)),
            Command::PauseTag {
                tag,
                ttl_ms,
                actor,
                reason,
                at,
                ..
            } => self
                .quotas
                .pause(now, at, &tag, ttl_ms, &actor, &reason)
                .map(Reply::Paused)
                .map_err(|b| invalid(b.field, b.problem)),
            Command::ResumeTag {
                tag, actor, reason, ..
            } => {
                let (pause, released) = self
                    .quotas
                    .resume(now, &tag, &actor, &reason)
                    .map_err(|b| invalid(b.field, b.problem))?;
                // Released sends go with the next batch waves (ticks).
                Ok(Reply::Resumed { pause, released })
            }
            Command::ListPaused { .. } => Ok(Reply::Pauses(self.quotas.pauses())),
            Command::ListAudit { limit, .. } => Ok(Reply::Audit(self.quotas.audit(limit))),
            Command::PlanCampaign { plan, .. } => {
                if plan.customers == 0 || plan.duration_ms == 0 || plan.interactions == 0 {
                    return Err(invalid(
                        "plan",
                        "customers, interactions and duration_ms must all be greater than 0",
                    ));
                }
                Ok(Reply::Plan(self.quotas.plan(now, &plan)))
            }
            Command::ReloadQuotas {
                numbers,
                quotas,
                actor,
                ..
            } => self
                .quotas
                .reload(now, &numbers, &quotas, &actor)
                .map(|()| Reply::Done)
                .map_err(|b| invalid(b.field, b.problem)),
            Command::Tick => {
                self.tick(now, out);
                Ok(Reply::Done)
            }
            Command::HoldTime { held, .. } => {
                self.held = held;
                Ok(Reply::Done)
            }
        }
    }

    /// Time passes on the desk; every `limits.sweep_interval_secs`, expired message ids and
    /// conversations nobody handles that saw no activity for the retention period are dropped.
    pub(super) fn tick(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        if self.held {
            return;
        }
        self.settle();
        self.desk.tick(now, out);
        let (by_customer, conversations) = (&self.by_customer, &self.conversations);
        let window_open = |c: &CustomerNumber| {
            by_customer
                .id(conversations, c.as_e164())
                .and_then(|id| conversations.get(&id))
                .and_then(|conv| Self::window_for(conv, c))
                .is_some_and(|e| now < e)
        };
        self.quotas.tick(now, &window_open, out);
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.saturating_add(std::time::Duration::from_secs(
            self.limits.sweep_interval_secs,
        ));
        self.dedup.sweep(now);
        self.quotas.sweep(now);
        self.sweep_conversations(now, out);
        self.duplicates.sweep();
        let conversations = &self.conversations;
        self.conflicts
            .retain(|c| conversations.contains_key(&c.conversation));
        // Give back room after a peak: the slab's pages go as they empty; its index and the
        // phones' shrink once under a quarter full, walked over a few ticks (`settle`).
        self.conversations.shrink_gradually();
        self.by_customer.shrink_gradually();
    }

    /// When a conversation last active at `at` ends (`limits.conversation_retention_secs`
    /// later), if nothing happens to it again.
    fn retained_until(&self, at: Timestamp) -> Timestamp {
        let retention = self.limits.conversation_retention_secs * 1_000;
        Timestamp(at.as_millis().saturating_add(retention))
    }

    /// Forgets the conversations with no activity for the retention that no agent holds or
    /// waits for: those due in `retention` looked at, the rest filed again.
    fn sweep_conversations(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        // Tests hold every sweep to the plain rule, applied to every conversation.
        #[cfg(test)]
        let kept: Vec<ConversationId> = {
            let mut kept: Vec<ConversationId> = (self.conversations.iter())
                .filter(|(id, c)| {
                    now < self.retained_until(c.last_activity)
                        || self.desk.location(**id) != Location::Nowhere
                })
                .map(|(id, _)| *id)
                .collect();
            kept.sort_unstable();
            kept
        };
        let due = self.retention.due(now);
        let (mut contained, mut handed_over) = (0, 0);
        for (i, &id) in due.iter().enumerate() {
            self.prefetch_removal(&due, i);
            // Gone already (merged into another): its entry with it.
            let Some(c) = self.conversations.get(&id) else {
                continue;
            };
            let ends = self.retained_until(c.last_activity);
            if now < ends {
                self.retention.file(id, ends);
            } else if self.desk.location(id) != Location::Nowhere {
                // Looked at again at the next sweep, as every sweep looks at it while held.
                self.retention.file(id, self.next_sweep);
            } else {
                let c = self.remove_conversation(id).expect("looked up above");
                self.duplicates.forget(id);
                if c.served_by_bot {
                    match c.served_by_human {
                        false => contained += 1,
                        true => handed_over += 1,
                    }
                }
            }
        }
        if contained + handed_over > 0 {
            out.push(Effect::BotConversationsEnded {
                tenant: self.id.clone(),
                contained,
                handed_over,
            });
        }
        #[cfg(test)]
        {
            let mut left: Vec<ConversationId> = self.conversations.keys().copied().collect();
            left.sort_unstable();
            assert_eq!(left, kept, "the sweep at {now:?} kept other conversations");
        }
    }

    /// The slots of the conversations' index and of the phones', tables being emptied
    /// included.
    #[cfg(test)]
    pub(crate) fn index_slots(&self) -> (usize, usize) {
        (self.conversations.index_slots(), self.by_customer.slots())
    }

    /// Moves on the indexes being emptied after a growth or a shrink, [`SETTLE_SLOTS`] slots
    /// each: an index that takes no inserts (a quiet tenant after a peak) still ends its walk.
    fn settle(&mut self) {
        self.conversations.settle(SETTLE_SLOTS);
        self.by_customer.settle(SETTLE_SLOTS);
        self.dedup.settle(SETTLE_SLOTS);
        self.quotas.settle_keys(SETTLE_SLOTS);
    }

    /// Starts loading what the sweep's removals of the conversations `due` names read, a few
    /// conversations ahead of the one at `i`, in the order each read needs the one before: a
    /// conversation's index slot, then the conversation, then its phone's slot. Each is a
    /// line no message has touched for as long as the retention (cold), and one after the
    /// other the sweep would wait for each in turn.
    fn prefetch_removal(&self, due: &[ConversationId], i: usize) {
        if let Some(id) = due.get(i + SWEEP_AHEAD) {
            self.conversations.prefetch(id);
        }
        if let Some(id) = due.get(i + SWEEP_AHEAD / 2) {
            self.conversations.prefetch_value(id);
        }
        if let Some(phone) = due
            .get(i + SWEEP_AHEAD / 4)
            .and_then(|id| self.conversations.get(id)?.customer.as_ref())
        {
            self.by_customer.prefetch(phone.as_bytes());
        }
    }

    fn check_agent(
        &self,
        agent: &AgentId,
        capacity: u32,
        queues: &[String],
    ) -> Result<Vec<QueueIx>, CoreError> {
        if agent.as_str().trim().is_empty() {
            return Err(invalid("agent_id", "is empty"));
        }
        if capacity == 0 || capacity > MAX_AGENT_CAPACITY {
            return Err(invalid(
                "capacity",
                format!(
                    "is {capacity}; it is the most conversations the agent handles at once, \
                     from 1 to {MAX_AGENT_CAPACITY}"
                ),
            ));
        }
        if queues.is_empty() || queues.len() > MAX_AGENT_QUEUES {
            return Err(invalid(
                "queues",
                format!("must name 1 to {MAX_AGENT_QUEUES} queues the agent serves"),
            ));
        }
        let mut ixs = Vec::with_capacity(queues.len());
        for name in queues {
            let q = self.queue_arg("queues", name)?;
            if !ixs.contains(&q) {
                ixs.push(q);
            }
        }
        Ok(ixs)
    }

    fn queue_arg(&self, field: &'static str, name: &str) -> Result<QueueIx, CoreError> {
        self.desk.queue_ix(name).ok_or_else(|| {
            invalid(
                field,
                format!(
                    "names queue {name:?}, which tenant {:?} does not have; its queues are {:?}",
                    self.id.as_str(),
                    self.desk
                        .queue_names()
                        .map(QueueName::as_str)
                        .collect::<Vec<_>>()
                ),
            )
        })
    }

    fn conversation(&self, id: ConversationId) -> Result<&Conversation, CoreError> {
        self.conversations
            .get(&id)
            .ok_or_else(|| conversation_not_found(id))
    }

    fn conversation_mut(&mut self, id: ConversationId) -> Result<&mut Conversation, CoreError> {
        self.conversations
            .get_mut(&id)
            .ok_or_else(|| conversation_not_found(id))
    }

    fn agent_reply(&self, agent: &AgentId) -> Result<Reply, CoreError> {
        self.desk.agent_view(agent).map(Reply::Agent)
    }
}

impl Decision {
    /// A decision with nothing decided yet (no target, no queue, no window).
    pub(crate) fn new(conversation: Option<ConversationId>) -> Self {
        Decision {
            conversation,
            target: Target::None,
            reason: Reason::Duplicate,
            intent: None,
            queue: None,
            agent: None,
            bot: None,
            position: 0,
            estimated_wait_ms: None,
            duplicate: false,
            window_expires: None,
            window_open: false,
        }
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> CoreError {
    CoreError::InvalidArgument {
        field,
        problem: problem.into(),
    }
}

fn conversation_not_found(id: ConversationId) -> CoreError {
    CoreError::NotFound {
        what: "conversation",
        id: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_keep_their_first_use_order_in_one_byte() {
        let mut c = Channels::default();
        assert_eq!(c.to_vec(), []);
        assert_eq!(c.last(), None);
        for ch in [
            Channel::WebChat,
            Channel::WhatsApp,
            Channel::WebChat,
            Channel::Voice,
        ] {
            c.push(ch);
        }
        assert_eq!(
            c.to_vec(),
            [Channel::WebChat, Channel::WhatsApp, Channel::Voice]
        );
        assert_eq!(c.last(), Some(Channel::Voice));
        assert!(c.contains(Channel::WhatsApp));
        let again: Channels = c.to_vec().into_iter().collect();
        assert_eq!(again, c);
        assert_eq!(std::mem::size_of::<Channels>(), 1);
    }

    /// A conversation's window in 8 bytes: never opened reads None, any time reads back.
    #[test]
    fn an_expiry_is_a_time_or_never_in_eight_bytes() {
        assert_eq!(Expiry::NEVER.get(), None);
        assert_eq!(Expiry::from(None), Expiry::NEVER);
        for t in [0, 1, 1_700_000_000_000, u64::MAX - 1] {
            assert_eq!(Expiry::from(Some(Timestamp(t))).get(), Some(Timestamp(t)));
        }
        assert_eq!(std::mem::size_of::<Expiry>(), 8);
        // The state a conversation holds inline (the slab adds its id and a byte of flags).
        assert_eq!(std::mem::size_of::<Conversation>(), 120);
    }

    #[test]
    fn a_context_message_takes_its_text_and_id_without_copying_them() {
        assert_eq!(std::mem::size_of::<ContextMessage>(), 64);
        let at = Timestamp(7);
        let (text, id) = (
            String::from("¿dónde está mi pedido?"),
            String::from("wamid.42"),
        );
        let (text_at, id_at) = (text.as_ptr(), id.as_ptr());
        let m = ContextMessage::new(Direction::Inbound, Channel::WhatsApp, at, text, id, None);
        assert_eq!(m.text(), "¿dónde está mi pedido?");
        assert_eq!(m.provider_message_id(), "wamid.42");
        assert_eq!(
            (m.text().as_ptr(), m.provider_message_id().as_ptr()),
            (text_at, id_at)
        );
        let note = ContextMessage::new(Direction::Note, Channel::Voice, at, "ñ", "", None);
        assert_eq!((note.text(), note.provider_message_id()), ("ñ", ""));
    }
}
