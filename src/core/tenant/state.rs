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

/// A conversation as saved. Its strings and its two lists are type parameters: a cut writes
/// one borrowed from the conversation ([`conversation_view`]: no string copied, its channels
/// and messages made as they are written), a restore reads an owned one (the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedConversation<S = String, K = Vec<Channel>, M = Vec<SavedMessage<S>>> {
    pub id: u64,
    /// The first phone, E.164; empty for a customer known by e-mail or visitor id only.
    pub customer: S,
    /// Everything else the customer is known by (links, e-mail, visitor ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<SavedIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    pub window_expires: Option<Timestamp>,
    pub channels: K,
    pub context: M,
    pub paused: bool,
    /// ("queue" | "agent", name)
    pub route_override: Option<(S, S)>,
    pub with_bot: bool,
    /// For bot containment (absent in snapshots before they were saved: false).
    #[serde(default)]
    pub served_by_bot: bool,
    #[serde(default)]
    pub served_by_human: bool,
    pub last_queue: Option<S>,
    pub priority: Priority,
    pub last_activity: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMessage<S = String> {
    pub note: bool,
    /// A reply to the customer (absent in snapshots before it was saved).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<S>,
    pub channel: Channel,
    pub text: S,
    pub at: Timestamp,
    pub provider_message_id: S,
    pub intent: Option<S>,
}

/// A conversation as a cut writes it, borrowed from `c` (and from `queue`'s names for its
/// queue indexes). Under load a cut writes nearly every conversation: each owned copy of its
/// strings (a context holds 20 messages by default, each a text, an id and an intent) was
/// an allocation and a copy made only to be written and dropped.
fn conversation_view<'a>(
    id: ConversationId,
    c: &'a Conversation,
    queue: impl Fn(u16) -> &'a str,
) -> SavedConversation<
    &'a str,
    Lazy<impl Iterator<Item = Channel>>,
    Lazy<impl Iterator<Item = SavedMessage<&'a str>>>,
> {
    SavedConversation {
        id: id.0,
        customer: c.customer.as_ref().map_or("", CustomerNumber::as_e164),
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
        channels: Lazy::new(c.channels.iter()),
        context: Lazy::new(c.context.iter().map(|m| SavedMessage {
            note: m.direction == Direction::Note,
            outbound: m.direction == Direction::Outbound,
            author: m.author(),
            channel: m.channel,
            text: m.text,
            at: m.at,
            provider_message_id: m.provider_message_id,
            intent: m.intent(),
        })),
        paused: c.paused,
        route_override: c.route_override.as_deref().map(|o| match o {
            RouteOverride::Queue(q) => ("queue", q.as_str()),
            RouteOverride::Agent(a) => ("agent", a.as_str()),
        }),
        with_bot: c.with_bot,
        served_by_bot: c.served_by_bot,
        served_by_human: c.served_by_human,
        last_queue: c.last_queue.map(queue),
        priority: c.priority,
        last_activity: c.last_activity,
    }
}

/// A conversation as saved, owned (a state to hand over whole); `queue` names a queue index.
fn saved_conversation<'a>(
    id: ConversationId,
    c: &'a Conversation,
    queue: impl Fn(u16) -> &'a str,
) -> SavedConversation {
    let v = conversation_view(id, c, queue);
    SavedConversation {
        id: v.id,
        customer: v.customer.to_owned(),
        others: v.others,
        profile: v.profile,
        window_expires: v.window_expires,
        channels: v.channels.into_inner().collect(),
        context: v.context.into_inner().map(SavedMessage::owned).collect(),
        paused: v.paused,
        route_override: v.route_override.map(|(k, n)| (k.to_owned(), n.to_owned())),
        with_bot: v.with_bot,
        served_by_bot: v.served_by_bot,
        served_by_human: v.served_by_human,
        last_queue: v.last_queue.map(str::to_owned),
        priority: v.priority,
        last_activity: v.last_activity,
    }
}

impl SavedMessage<&str> {
    fn owned(self) -> SavedMessage {
        SavedMessage {
            note: self.note,
            outbound: self.outbound,
            author: self.author.map(str::to_owned),
            channel: self.channel,
            text: self.text.to_owned(),
            at: self.at,
            provider_message_id: self.provider_message_id.to_owned(),
            intent: self.intent.map(str::to_owned),
        }
    }
}

/// A message id's fingerprint as saved: 32 lower-case hex digits, as `{:032x}` writes them
/// but without the formatting machinery or a `String` (a cut writes one for every id seen:
/// `format!` was ~1.2% of the server's samples at 80,000 records/s).
struct Hex([u8; 32]);

impl Hex {
    fn of(fp: u128) -> Self {
        let mut digits = [0; 32];
        hex::encode_to_slice(fp.to_be_bytes(), &mut digits).expect("16 bytes are 32 digits");
        Self(digits)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn hex(fp: u128) -> String {
    Hex::of(fp).as_str().to_owned()
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
        let queue = |q: u16| queues.get(q as usize).map_or("", String::as_str);
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
        let queue = |q: u16| cut.queues.get(q as usize).map_or("", String::as_str);
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
                    .map(|(id, c)| conversation_view(*id, c, queue)),
            ),
            seen: Lazy::new(
                cut.seen
                    .iter()
                    .map(|&(at, fp)| (at, Hex::of(identity::join(fp)))),
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

    /// The items, not written.
    fn into_inner(self) -> I {
        self.0.into_inner().expect("not written yet")
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
        let queue = |q: u16| self.desk.queue_name(q.into()).as_str();
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

#[cfg(test)]
mod tests {
    use super::Hex;

    /// Fingerprints are written as `{:032x}` writes them: every digit's place, every digit.
    #[test]
    fn fingerprints_are_written_as_32_lower_case_hex_digits() {
        let mut fps = vec![0, 1, u128::MAX, 0xfedc_ba98_7654_3210_0123_4567_89ab_cdef];
        fps.extend((0..32).map(|i| 0xa_u128 << (4 * i)));
        fps.extend((0..128).map(|i| 1_u128 << i));
        for fp in fps {
            assert_eq!(Hex::of(fp).as_str(), format!("{fp:032x}"));
        }
    }
}
