//! A tenant's state as plain data, for snapshots (the scale-out issue): its portfolio's quota
//! state, its conversations (customer, customer-service window, channels, context, automation
//! pause, route override, bot, last queue, priority) and the message ids it has seen.
//!
//! And the desk: agents, who holds which conversation, who waits in which queue (see
//! `desk::state`).
use serde::{Deserialize, Serialize};

use super::*;
use crate::core::customer::{Attr, Field, Profile};
use crate::core::quota::{QuotaState, RestoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantState {
    pub quota: QuotaState,
    pub next_conversation: u64,
    pub conversations: Vec<SavedConversation>,
    /// Seen message ids: (when, fingerprint as 32 hex digits), oldest first.
    pub seen: Vec<(Timestamp, String)>,
    /// Agents, assignments and queues (absent in snapshots taken before it was saved).
    #[serde(default)]
    pub desk: crate::core::desk::DeskState,
    /// Profile disagreements kept for review, oldest first.
    #[serde(default)]
    pub conflicts: Vec<SavedConflict>,
    /// Duplicate suggestions, oldest first (the name index is rebuilt from the profiles).
    #[serde(default)]
    pub duplicates: Vec<crate::core::duplicates::Suggestion>,
    /// None: the state is whole. Some: a *part* (an incremental cut, see `TenantState::merge`):
    /// `conversations` and `seen` hold only what the cut copied, and these conversations are
    /// gone since the cut before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<u64>>,
}

impl TenantState {
    /// Puts consecutive cuts of one tenant together, oldest first: everything but the
    /// conversations and ids seen from the newest; the conversations as the newest cut that
    /// has each left them (minus those removed after); the ids seen, all of them, by time.
    /// Whole when the oldest is whole, or when the parts are `spread` cuts in a row (each
    /// conversation is in at least one of them: see `slab::Slice`).
    pub fn merge(parts: Vec<TenantState>) -> Option<TenantState> {
        let mut parts = parts.into_iter();
        let mut merged = parts.next()?;
        let mut conversations: Map<u64, SavedConversation> =
            std::mem::take(&mut merged.conversations)
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
        let mut seen = std::mem::take(&mut merged.seen);
        for mut part in parts {
            for id in part.removed.iter().flatten() {
                conversations.remove(id);
            }
            let newer = std::mem::take(&mut part.conversations);
            conversations.extend(newer.into_iter().map(|c| (c.id, c)));
            seen.append(&mut part.seen);
            merged = part;
        }
        let mut conversations: Vec<SavedConversation> = conversations.into_values().collect();
        conversations.sort_by_key(|c| c.id);
        // By time, each id once (copies of one id in several cuts are the same entry).
        seen.sort();
        seen.dedup();
        merged.conversations = conversations;
        merged.seen = seen;
        merged.removed = None;
        Some(merged)
    }
}

/// An identity besides a conversation's first phone (`kind`: phone, email, visitor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedIdentity {
    pub kind: String,
    pub value: String,
    pub window_expires: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedConflict {
    pub conversation: u64,
    pub field: Field,
    pub kept: Attr,
    pub other: Attr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedConversation {
    pub id: u64,
    /// The first phone, E.164; empty for a customer known by e-mail or visitor id only.
    pub customer: String,
    /// Everything else the customer is known by (links, e-mail, visitor ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<SavedIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    pub window_expires: Option<Timestamp>,
    pub channels: Vec<Channel>,
    pub context: Vec<SavedMessage>,
    pub paused: bool,
    /// ("queue" | "agent", name)
    pub route_override: Option<(String, String)>,
    pub with_bot: bool,
    /// For bot containment (absent in snapshots before they were saved: false).
    #[serde(default)]
    pub served_by_bot: bool,
    #[serde(default)]
    pub served_by_human: bool,
    pub last_queue: Option<String>,
    pub priority: Priority,
    pub last_activity: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMessage {
    pub note: bool,
    /// A reply to the customer (absent in snapshots before it was saved).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub channel: Channel,
    pub text: String,
    pub at: Timestamp,
    pub provider_message_id: String,
    pub intent: Option<String>,
}

/// A conversation as saved; `queue` names a queue index.
fn saved_conversation(
    id: ConversationId,
    c: &Conversation,
    queue: impl Fn(u16) -> String,
) -> SavedConversation {
    SavedConversation {
        id: id.0,
        customer: c
            .customer
            .as_ref()
            .map_or(String::new(), |p| p.as_e164().to_owned()),
        others: c
            .known
            .iter()
            .flat_map(|k| &k.others)
            .map(|o| SavedIdentity {
                kind: o.identity.kind().to_owned(),
                value: o.identity.value().to_owned(),
                window_expires: o.window_expires,
            })
            .collect(),
        profile: c
            .known
            .as_ref()
            .map(|k| k.profile.clone())
            .filter(|p| !p.is_empty()),
        window_expires: c.window_expires.get(),
        channels: c.channels.to_vec(),
        context: c
            .context
            .iter()
            .map(|m| SavedMessage {
                note: m.direction == Direction::Note,
                outbound: m.direction == Direction::Outbound,
                author: m.author().map(|a| a.to_string()),
                channel: m.channel,
                text: m.text.to_owned(),
                at: m.at,
                provider_message_id: m.provider_message_id.to_owned(),
                intent: m.intent().map(|i| i.to_string()),
            })
            .collect(),
        paused: c.paused,
        route_override: c.route_override.as_deref().map(|o| match o {
            RouteOverride::Queue(q) => ("queue".into(), q.to_string()),
            RouteOverride::Agent(a) => ("agent".into(), a.to_string()),
        }),
        with_bot: c.with_bot,
        served_by_bot: c.served_by_bot,
        served_by_human: c.served_by_human,
        last_queue: c.last_queue.map(queue),
        priority: c.priority,
        last_activity: c.last_activity,
    }
}

fn hex(fp: u128) -> String {
    format!("{fp:032x}")
}

/// A cut of one tenant, taken without stopping the shard (see `slab`): the small parts as
/// they were when it began, the conversations and ids seen it copied since. Turned into a
/// [`TenantState`] off the shard ([`TenantCut::into_state`]).
#[derive(Debug, Clone)]
pub struct TenantCut {
    base: TenantState,
    /// Every conversation and id seen is in it (it does not need the cuts before it).
    whole: bool,
    conversations: Vec<(ConversationId, Conversation)>,
    removed: Vec<ConversationId>,
    seen: Vec<(Timestamp, [u64; 2])>,
    /// Queue names by index, for the conversations' last queue.
    queues: Vec<String>,
}

/// Equal when they save equal (replies are compared in tests).
impl PartialEq for TenantCut {
    fn eq(&self, other: &Self) -> bool {
        self.clone().into_state() == other.clone().into_state()
    }
}

impl TenantCut {
    pub fn into_state(self) -> TenantState {
        let TenantCut {
            mut base,
            whole,
            mut conversations,
            removed,
            seen,
            queues,
        } = self;
        conversations.sort_by_key(|(id, _)| *id);
        let queue = |q: u16| queues.get(q as usize).cloned().unwrap_or_default();
        base.conversations = conversations
            .iter()
            .map(|(id, c)| saved_conversation(*id, c, queue))
            .collect();
        base.seen = seen
            .into_iter()
            .map(|(at, fp)| (at, hex(identity::join(fp))))
            .collect();
        base.removed = (!whole).then(|| removed.into_iter().map(|id| id.0).collect());
        base
    }
}

impl TenantCut {
    /// A part (an incremental cut), not a whole state: [`TenantState::removed`] is set.
    pub fn is_part(&self) -> bool {
        !self.whole
    }

    /// Writes exactly the JSON of [`TenantCut::into_state`], converting the conversations and
    /// the ids seen one at a time as they are written: a cut of a big tenant never holds its
    /// whole saved form, nor (with a writer that sends what it is given) its whole JSON.
    pub fn write_json<W: std::io::Write>(mut self, out: W) -> serde_json::Result<()> {
        self.conversations.sort_by_key(|(id, _)| *id);
        let cut = &self;
        let queue = |q: u16| cut.queues.get(q as usize).cloned().unwrap_or_default();
        // The fields of `TenantState`, in its order and with its attributes (a test checks
        // the bytes are the same).
        #[derive(Serialize)]
        struct View<'a, C, S> {
            quota: &'a QuotaState,
            next_conversation: u64,
            conversations: C,
            seen: S,
            desk: &'a crate::core::desk::DeskState,
            conflicts: &'a [SavedConflict],
            duplicates: &'a [crate::core::duplicates::Suggestion],
            #[serde(skip_serializing_if = "Option::is_none")]
            removed: Option<Vec<u64>>,
        }
        let view = View {
            quota: &cut.base.quota,
            next_conversation: cut.base.next_conversation,
            conversations: Lazy::new(
                cut.conversations
                    .iter()
                    .map(|(id, c)| saved_conversation(*id, c, queue)),
            ),
            seen: Lazy::new(
                cut.seen
                    .iter()
                    .map(|&(at, fp)| (at, hex(identity::join(fp)))),
            ),
            desk: &cut.base.desk,
            conflicts: &cut.base.conflicts,
            duplicates: &cut.base.duplicates,
            removed: (!cut.whole).then(|| cut.removed.iter().map(|id| id.0).collect()),
        };
        serde_json::to_writer(out, &view)
    }
}

/// A sequence serialized from an iterator, each item made as it is written (once).
struct Lazy<I>(std::cell::Cell<Option<I>>);

impl<I> Lazy<I> {
    fn new(items: I) -> Self {
        Self(std::cell::Cell::new(Some(items)))
    }
}

impl<I> Serialize for Lazy<I>
where
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(items) => serializer.collect_seq(items),
            None => Err(serde::ser::Error::custom("a lazy sequence is written once")),
        }
    }
}

/// A cut being taken: what it took when it began, and the two copies as they finish.
#[derive(Debug)]
pub(super) struct Cutting {
    base: TenantState,
    whole: bool,
    conversations: Option<super::slab::CutCopy<Conversation>>,
    seen: Option<Vec<(Timestamp, [u64; 2])>>,
}

impl Tenant {
    /// The state to save (see the module docs for what is in it), conversations in id order.
    pub fn state(&self, now: Timestamp) -> TenantState {
        let mut ids: Vec<&ConversationId> = self.conversations.keys().collect();
        ids.sort();
        let queue = |q: u16| self.desk.queue_name(q.into()).to_string();
        let conversations = ids
            .into_iter()
            .map(|id| saved_conversation(*id, &self.conversations[id], queue))
            .collect();
        TenantState {
            conversations,
            seen: self.dedup.entries().map(|(at, fp)| (at, hex(fp))).collect(),
            ..self.small_state(now)
        }
    }

    /// Everything but the conversations and the ids seen.
    fn small_state(&self, now: Timestamp) -> TenantState {
        TenantState {
            quota: self.quotas.state(now),
            next_conversation: self.next_conversation,
            conversations: Vec::new(),
            seen: Vec::new(),
            desk: self.desk.state(),
            conflicts: self
                .conflicts
                .iter()
                .map(|c| SavedConflict {
                    conversation: c.conversation.0,
                    field: c.field,
                    kept: c.kept.clone(),
                    other: c.other.clone(),
                })
                .collect(),
            duplicates: self.duplicates.saved_suggestions().cloned().collect(),
            removed: None,
        }
    }

    /// Begins a cut without stopping (see `slab`): `round` = (round, spread) for an
    /// incremental one, None for a whole one. Finished by [`Tenant::step_cut`].
    pub fn begin_cut(&mut self, now: Timestamp, round: Option<(u64, u64)>) {
        // Changes are known only once tracked: the first cut is whole.
        let round = round.filter(|_| self.conversations.tracked());
        let slice = round.map_or(super::slab::Slice::All, |(round, spread)| {
            super::slab::Slice::Round { round, spread }
        });
        self.conversations
            .begin_cut(slice, ConversationId(self.next_conversation));
        self.dedup.begin_cut(round);
        self.cutting = Some(Box::new(Cutting {
            base: self.small_state(now),
            whole: round.is_none(),
            conversations: None,
            seen: None,
        }));
    }

    pub fn cutting(&self) -> bool {
        self.cutting.is_some()
    }

    /// Copies about `budget` more of the cut being taken; the cut once it is complete.
    pub fn step_cut(&mut self, budget: usize) -> Option<TenantCut> {
        let cutting = self.cutting.as_mut()?;
        if cutting.conversations.is_none() {
            cutting.conversations = self.conversations.step(budget);
        }
        if cutting.conversations.is_some() && cutting.seen.is_none() {
            cutting.seen = self.dedup.step(budget);
        }
        if cutting.conversations.is_none() || cutting.seen.is_none() {
            return None;
        }
        let Cutting {
            base,
            whole,
            conversations,
            seen,
        } = *self.cutting.take()?;
        let conversations = conversations.expect("finished");
        Some(TenantCut {
            base,
            whole,
            conversations: conversations.copies,
            removed: conversations.removed,
            seen: seen.expect("finished"),
            queues: self.desk.queue_names().map(|q| q.to_string()).collect(),
        })
    }

    /// Puts a saved state into a tenant freshly built from its config. On error the tenant may
    /// be partly restored: discard it (the shard does).
    pub fn restore(&mut self, state: TenantState) -> Result<(), RestoreError> {
        let mut conversations = super::Slab::default();
        let mut by_alias = Map::default();
        for c in state.conversations {
            let id = ConversationId(c.id);
            // New conversations take ids from `next_conversation` on, unchecked.
            if c.id >= state.next_conversation || conversations.contains_key(&id) {
                return Err(RestoreError::BadConversationId {
                    id: c.id,
                    next: state.next_conversation,
                });
            }
            let customer = match c.customer.as_str() {
                "" => None,
                e164 if identity::looks_e164(e164) => Some(CustomerNumber::from_valid_e164(e164)),
                _ => return Err(RestoreError::BadNumber(c.customer)),
            };
            let mut others = Vec::with_capacity(c.others.len());
            for o in c.others {
                let identity = Identity::restore(&o.kind, &o.value)
                    .ok_or_else(|| RestoreError::BadIdentity(format!("{}:{}", o.kind, o.value)))?;
                match &identity {
                    Identity::Phone(_) => {}
                    alias => {
                        by_alias.insert(alias.clone(), id);
                    }
                }
                others.push(Other {
                    identity,
                    window_expires: o.window_expires,
                });
            }
            let known = (!others.is_empty() || c.profile.is_some()).then(|| {
                Box::new(customers::Known {
                    others,
                    profile: c.profile.unwrap_or_default(),
                })
            });
            let last_queue = match &c.last_queue {
                Some(name) => Some(
                    self.desk
                        .queue_ix(name)
                        .and_then(|q| u16::try_from(q).ok())
                        .ok_or_else(|| RestoreError::UnknownQueue(name.clone()))?,
                ),
                None => None,
            };
            let route_override = match c.route_override {
                Some((kind, name)) if kind == "agent" => {
                    Some(Box::new(RouteOverride::Agent(AgentId::new(&name))))
                }
                Some((_, name)) => Some(Box::new(RouteOverride::Queue(QueueName::new(&name)))),
                None => None,
            };
            // Checked above: no value has this id yet.
            conversations.push_new(
                id,
                Conversation {
                    customer,
                    known,
                    window_expires: Expiry::from(c.window_expires),
                    channels: c.channels.into_iter().collect(),
                    context: c
                        .context
                        .into_iter()
                        .map(|m| {
                            ContextMessage::new(
                                match (m.note, m.outbound) {
                                    (true, _) => Direction::Note,
                                    (_, true) => Direction::Outbound,
                                    _ => Direction::Inbound,
                                },
                                m.channel,
                                m.at,
                                m.text,
                                m.provider_message_id,
                                m.intent.or(m.author).as_deref().map(Arc::from),
                            )
                        })
                        .collect(),
                    paused: c.paused,
                    route_override,
                    with_bot: c.with_bot,
                    served_by_bot: c.served_by_bot,
                    served_by_human: c.served_by_human,
                    last_queue,
                    priority: c.priority,
                    last_activity: c.last_activity,
                },
            );
        }
        let mut seen = Vec::with_capacity(state.seen.len());
        for (at, fp) in &state.seen {
            let fp = u128::from_str_radix(fp, 16)
                .map_err(|_| RestoreError::BadFingerprint(fp.clone()))?;
            seen.push((*at, fp));
        }
        // Each checks everything before it changes anything; the shard restores into a fresh
        // tenant and keeps it only if all of it fits.
        self.desk.restore(state.desk)?;
        self.quotas.restore(state.quota)?;
        // The phones, once the conversations that hold them are in place.
        let mut by_customer = super::Numbers::default();
        for (id, c) in conversations.iter() {
            for phone in c.customer.iter().chain(c.known.iter().flat_map(|k| {
                k.others.iter().filter_map(|o| match &o.identity {
                    Identity::Phone(p) => Some(p),
                    _ => None,
                })
            })) {
                by_customer.insert(&conversations, phone.clone(), *id);
            }
        }
        // Each conversation filed for the sweep at the end of its retention.
        for (id, c) in conversations.iter() {
            let ends = self.retained_until(c.last_activity);
            self.retention.file(*id, ends);
        }
        self.conversations = conversations;
        self.by_customer = by_customer;
        self.by_alias = by_alias;
        // The name index, rebuilt in conversation order; the suggestions as they were.
        let mut named: Vec<(ConversationId, Arc<str>)> = self
            .conversations
            .iter()
            .filter_map(|(id, c)| {
                Some((*id, c.known.as_ref()?.profile.name.as_ref()?.value.clone()))
            })
            .collect();
        named.sort();
        for (id, name) in named {
            self.duplicates.restore_name(id, &name);
        }
        self.duplicates.restore_suggestions(state.duplicates);
        self.conflicts = state
            .conflicts
            .into_iter()
            .map(|c| Conflict {
                conversation: ConversationId(c.conversation),
                field: c.field,
                kept: c.kept,
                other: c.other,
            })
            .collect();
        self.next_conversation = state.next_conversation;
        self.dedup.restore(seen);
        // A restored tenant is cut incrementally from here on (Kafka mode).
        self.conversations.track();
        Ok(())
    }
}
