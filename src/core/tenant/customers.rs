//! A tenant's customers beyond their phone numbers: which conversation an identity finds,
//! linking two identities into one customer (merging their conversations), and the profile
//! with its conflicts.
//!
//! Phone numbers are found through `by_customer` (the hot path, no parsing for a known E.164
//! number); e-mail addresses and visitor ids through `by_alias`. A conversation's first phone
//! is its `customer`; everything else it is known by sits in its [`Known`] with the profile,
//! boxed so that a phone-only customer pays one pointer for it.
use super::*;
use crate::core::customer::{Attr, Conflict, Field, Identity, Profile};
use crate::core::quota::AuditEntry;

/// The e-mail and visitor id an inbound message carried, checked.
pub(super) type Aliases = [Option<Identity>; 2];

/// What a conversation's customer is known by besides its first phone, and their profile.
#[derive(Debug, Default, Clone)]
pub(super) struct Known {
    pub others: Vec<Other>,
    pub profile: Profile,
}

/// An identity besides the first phone. A phone has its own service window: WhatsApp opens
/// it per number, so a message from one number does not open the other's.
#[derive(Debug, Clone, PartialEq)]
pub struct Other {
    pub identity: Identity,
    pub window_expires: Option<Timestamp>,
}

/// An identity as the API names it, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityRef {
    Phone(String),
    Email(String),
    Visitor(String),
}

/// A customer as `Customers.Get` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerView {
    pub conversation: ConversationId,
    /// The first phone first, then the others in the order they were learnt.
    pub identities: Vec<Identity>,
    pub profile: Profile,
}

/// A customer suggested as a possible duplicate of another (`of`).
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateView {
    pub conversation: ConversationId,
    pub identities: Vec<Identity>,
    pub name: Option<Arc<str>>,
    pub similarity: f64,
    pub of: ConversationId,
    pub of_name: Option<Arc<str>>,
}

/// What a link did.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkView {
    /// The customer's one conversation now.
    pub conversation: ConversationId,
    /// The conversation merged into it, if the two identities had one each.
    pub merged: Option<ConversationId>,
    /// The agent who has the conversation, if any.
    pub agent: Option<AgentId>,
    /// When both conversations had an agent: the one who no longer has it (the most recently
    /// active conversation's agent keeps it).
    pub released_agent: Option<AgentId>,
}

/// How a conversation stands on the desk, for choosing which of two keeps the customer: an
/// agent's beats a queue place, which beats the bot, which beats nothing.
fn standing(location: &Location, with_bot: bool) -> u8 {
    match location {
        Location::Assigned { .. } => 3,
        Location::Waiting { .. } => 2,
        Location::Nowhere if with_bot => 1,
        Location::Nowhere => 0,
    }
}

impl Tenant {
    /// Checks an identity the API gave (`field` names it in the error).
    pub(super) fn identity(
        &self,
        field: &'static str,
        given: &IdentityRef,
    ) -> Result<Identity, CoreError> {
        match given {
            IdentityRef::Phone(raw) => identity::normalize(raw, self.region).map(Identity::Phone),
            IdentityRef::Email(raw) => Identity::email(raw),
            IdentityRef::Visitor(raw) => Identity::visitor(raw),
        }
        .map_err(|problem| invalid(field, problem))
    }

    /// The conversation an identity finds, if any.
    pub(super) fn find(&self, identity: &Identity) -> Option<ConversationId> {
        match identity {
            Identity::Phone(p) => self.by_customer.id(&self.conversations, p.as_e164()),
            other => self.by_alias.get(other).copied(),
        }
    }

    /// Who an inbound message is from: its phone (`customer`) when given, else its e-mail,
    /// else its visitor id; and their conversation if they have one. A known E.164 number is
    /// found without parsing. A WhatsApp message needs the phone.
    /// The e-mail and visitor id it carries, each checked (a bad one is refused even beside
    /// a phone number).
    pub(super) fn inbound_identity(
        &self,
        m: &Inbound,
    ) -> Result<(Identity, Option<ConversationId>, Aliases), CoreError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|v| !v.trim().is_empty())
        }
        let aliases = [
            given(&m.email)
                .map(|e| Identity::email(e).map_err(|p| invalid("email", p)))
                .transpose()?,
            given(&m.visitor_id)
                .map(|v| Identity::visitor(v).map_err(|p| invalid("visitor_id", p)))
                .transpose()?,
        ];
        if !m.customer.chars().all(char::is_whitespace) {
            let looked_up = identity::looks_e164(&m.customer);
            if looked_up
                && let Some((known, id)) = self
                    .by_customer
                    .get(&self.conversations, m.customer.as_str())
            {
                return Ok((Identity::Phone(known.clone()), Some(id), aliases));
            }
            let phone = identity::normalize(&m.customer, self.region)
                .map_err(|problem| invalid("customer", problem))?;
            // A number given in E.164 (as WhatsApp gives them) was looked up just above.
            let id = match looked_up && phone.is(&m.customer) {
                true => None,
                false => self.by_customer.id(&self.conversations, phone.as_e164()),
            };
            return Ok((Identity::Phone(phone), id, aliases));
        }
        if m.channel == Channel::WhatsApp {
            return Err(invalid(
                "customer",
                "is empty; a WhatsApp message needs the customer's phone number (email and \
                 visitor_id identify customers on other channels)",
            ));
        }
        // E-mail first when both are given; the other is learnt beside it.
        let Some(who) = aliases.iter().flatten().next().cloned() else {
            return Err(invalid(
                "customer",
                "is empty and so are email and visitor_id; send at least one",
            ));
        };
        let id = self.find(&who);
        Ok((who, id, aliases))
    }

    /// A new conversation for `who`.
    pub(super) fn open_for(&mut self, who: Identity, now: Timestamp) -> ConversationId {
        match who {
            Identity::Phone(p) => self.open_conversation(Some(p), now),
            alias => {
                let id = self.open_conversation(None, now);
                self.add_identity(id, alias);
                id
            }
        }
    }

    /// Also finds `id` by `who` (not yet known to any conversation).
    fn add_identity(&mut self, id: ConversationId, who: Identity) {
        let conv = self.conversations.get_mut(&id).expect("exists");
        match who {
            Identity::Phone(p) => {
                if conv.customer.is_none() {
                    conv.customer = Some(p.clone());
                } else {
                    conv.known.get_or_insert_default().others.push(Other {
                        identity: Identity::Phone(p.clone()),
                        window_expires: None,
                    });
                }
                self.by_customer.insert(&self.conversations, p, id);
            }
            alias => {
                self.by_alias.insert(alias.clone(), id);
                conv.known.get_or_insert_default().others.push(Other {
                    identity: alias,
                    window_expires: None,
                });
            }
        }
    }

    /// Attaches the e-mail or visitor id an inbound message also carried to its conversation,
    /// when no conversation has it yet (one that has it is only joined by `Link`).
    pub(super) fn learn_aliases(&mut self, id: ConversationId, aliases: Aliases) {
        for alias in aliases.into_iter().flatten() {
            if self.find(&alias).is_none() {
                self.add_identity(id, alias);
            }
        }
    }

    /// Every identity of a conversation, the first phone first.
    pub(super) fn identities(c: &Conversation) -> Vec<Identity> {
        c.customer
            .iter()
            .cloned()
            .map(Identity::Phone)
            .chain(
                c.known
                    .iter()
                    .flat_map(|k| k.others.iter().map(|o| o.identity.clone())),
            )
            .collect()
    }

    /// Takes conversation `id` out of the slab and its identities out of the indexes (it is
    /// being forgotten or merged).
    pub(super) fn remove_conversation(&mut self, id: ConversationId) -> Option<Conversation> {
        let c = self
            .by_customer
            .remove_conversation(&mut self.conversations, id)?;
        for other in c.known.iter().flat_map(|k| &k.others) {
            match &other.identity {
                Identity::Phone(p) => self.by_customer.remove_other(p, id),
                alias => {
                    self.by_alias.remove(alias);
                }
            }
        }
        Some(c)
    }

    /// The customer `who` names, as the API shows them.
    pub(super) fn customer_view(&self, who: &IdentityRef) -> Result<CustomerView, CoreError> {
        let who = self.identity("identity", who)?;
        let id = self.find(&who).ok_or_else(|| CoreError::NotFound {
            what: "customer",
            id: who.masked(),
        })?;
        Ok(self.customer_of(id))
    }

    fn customer_of(&self, id: ConversationId) -> CustomerView {
        let c = &self.conversations[&id];
        CustomerView {
            conversation: id,
            identities: Self::identities(c),
            profile: c
                .known
                .as_ref()
                .map(|k| k.profile.clone())
                .unwrap_or_default(),
        }
    }

    /// Sets profile attributes of the customer `who` names (the most recent value per field
    /// wins; a disagreement between sources is kept as a conflict).
    pub(super) fn update_profile(
        &mut self,
        now: Timestamp,
        who: &IdentityRef,
        values: Vec<(Field, String)>,
        source: &str,
        at: Option<Timestamp>,
    ) -> Result<CustomerView, CoreError> {
        let who = self.identity("identity", who)?;
        if source.trim().is_empty() {
            return Err(invalid(
                "source",
                "is empty; say where the values come from (crm, erp)",
            ));
        }
        let at = at.unwrap_or(now);
        if at > now {
            return Err(invalid("at_ms", "is in the future"));
        }
        for (field, value) in &values {
            let trimmed = value.trim();
            if trimmed.is_empty() || trimmed.len() > customer::MAX_ATTRIBUTE_BYTES {
                return Err(invalid(
                    field.as_str(),
                    format!(
                        "must be 1 to {} bytes (leave it unset to keep the value)",
                        customer::MAX_ATTRIBUTE_BYTES
                    ),
                ));
            }
            if *field == Field::Email {
                Identity::email(trimmed).map_err(|p| invalid("email", p))?;
            }
        }
        let id = match self.find(&who) {
            Some(id) => id,
            None => self.open_for(who, now),
        };
        let source: Arc<str> = Arc::from(source.trim());
        for (field, value) in values {
            let value = match field {
                Field::Email => Identity::email(&value).map(|e| Arc::from(e.value())),
                _ => Ok(Arc::from(value.trim())),
            }
            .expect("checked above");
            let attr = Attr {
                value,
                source: source.clone(),
                at,
            };
            self.set_attribute(id, field, attr);
        }
        Ok(self.customer_of(id))
    }

    /// One attribute from a source; a disagreement with another source is kept. A new name
    /// is looked up among similar names (duplicate suggestions).
    pub(super) fn set_attribute(&mut self, id: ConversationId, field: Field, attr: Attr) {
        let conv = self.conversations.get_mut(&id).expect("exists");
        let known = conv.known.get_or_insert_default();
        let renamed = field == Field::Name
            && known
                .profile
                .name
                .as_ref()
                .is_none_or(|held| held.value != attr.value);
        if let Some((kept, other)) = known.profile.set(field, attr) {
            self.conflict(Conflict {
                conversation: id,
                field,
                kept,
                other,
            });
        }
        if renamed {
            self.renamed(id);
        }
    }

    /// The name a channel shows for the customer (WhatsApp's profile name), sent with every
    /// message: the same name from the same channel only moves its time on (no allocation,
    /// no comparison); anything else is set like any attribute.
    pub(super) fn channel_name(
        &mut self,
        id: ConversationId,
        name: &str,
        channel: Channel,
        now: Timestamp,
    ) {
        let source = channel.as_str();
        let conv = self.conversations.get_mut(&id).expect("exists");
        if let Some(held) = conv.known.as_mut().and_then(|k| k.profile.name.as_mut())
            && &*held.value == name
            && &*held.source == source
        {
            held.at = held.at.max(now);
            return;
        }
        let attr = Attr {
            value: Arc::from(name),
            source: super::messages::channel_source(channel),
            at: now,
        };
        self.set_attribute(id, Field::Name, attr);
    }

    /// The customer's name may have changed: the duplicate index learns it.
    pub(super) fn renamed(&mut self, id: ConversationId) {
        if let Some(name) = self.name_of(id) {
            self.duplicates.named(id, &name);
        }
    }

    fn name_of(&self, id: ConversationId) -> Option<Arc<str>> {
        let known = self.conversations.get(&id)?.known.as_ref()?;
        known.profile.name.as_ref().map(|a| a.value.clone())
    }

    /// Customers whose names are like `who`'s (most alike first), or the suggestions found as
    /// names were set (newest first).
    pub(super) fn suggest_duplicates(
        &self,
        who: Option<&IdentityRef>,
        limit: usize,
    ) -> Result<Vec<DuplicateView>, CoreError> {
        let pairs: Vec<(ConversationId, ConversationId, f64)> = match who {
            Some(who) => {
                let of = self.customer_view(who)?.conversation;
                self.duplicates
                    .similar(of)
                    .into_iter()
                    .map(|(c, s)| (c, of, s))
                    .collect()
            }
            None => self
                .duplicates
                .suggestions()
                .map(|s| (s.a, s.b, s.similarity))
                .collect(),
        };
        Ok(pairs
            .into_iter()
            .filter(|(c, of, _)| {
                self.conversations.contains_key(c) && self.conversations.contains_key(of)
            })
            .take(limit)
            .map(|(c, of, similarity)| DuplicateView {
                conversation: c,
                identities: Self::identities(&self.conversations[&c]),
                name: self.name_of(c),
                similarity,
                of,
                of_name: self.name_of(of),
            })
            .collect())
    }

    fn conflict(&mut self, c: Conflict) {
        if self.conflicts.len() == self.limits.max_conflicts {
            self.conflicts.pop_front();
        }
        self.conflicts.push_back(c);
    }

    /// Disagreements between sources, newest first, with the customer's identities.
    pub(super) fn list_conflicts(&self, limit: usize) -> Vec<(Conflict, Vec<Identity>)> {
        self.conflicts
            .iter()
            .rev()
            .filter_map(|c| {
                let conv = self.conversations.get(&c.conversation)?;
                Some((c.clone(), Self::identities(conv)))
            })
            .take(limit)
            .collect()
    }

    /// Joins two identities into one customer: one conversation, the two contexts merged in
    /// time order, the agent who has either keeps it. Audited with its source.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn link(
        &mut self,
        now: Timestamp,
        a: &IdentityRef,
        b: &IdentityRef,
        source: &str,
        actor: &str,
        reason: &str,
        out: &mut Vec<Effect>,
    ) -> Result<LinkView, CoreError> {
        let a = self.identity("a", a)?;
        let b = self.identity("b", b)?;
        if source.trim().is_empty() || actor.trim().is_empty() {
            return Err(invalid(
                "source",
                "and actor are required: say where the link comes from (\"web-chat form\", \
                 \"crm\") and who makes it",
            ));
        }
        if a == b {
            return Err(invalid("b", "is the same identity as a"));
        }
        let view = |t: &Self, id: ConversationId, released: Option<AgentId>, merged| LinkView {
            conversation: id,
            merged,
            agent: match t.desk.location(id) {
                Location::Assigned { agent, .. } => Some(agent),
                _ => None,
            },
            released_agent: released,
        };
        let (ida, idb) = (self.find(&a), self.find(&b));
        let (keep, gone) = match (ida, idb) {
            (Some(x), Some(y)) if x == y => return Ok(view(self, x, None, None)),
            (Some(x), None) => {
                self.add_identity(x, b.clone());
                (x, None)
            }
            (None, Some(y)) => {
                self.add_identity(y, a.clone());
                (y, None)
            }
            (None, None) => {
                let id = self.open_for(a.clone(), now);
                self.add_identity(id, b.clone());
                (id, None)
            }
            (Some(x), Some(y)) => {
                let rank = |t: &Self, id: ConversationId| {
                    let c = &t.conversations[&id];
                    (
                        standing(&t.desk.location(id), c.with_bot),
                        c.last_activity,
                        std::cmp::Reverse(id),
                    )
                };
                if rank(self, x) >= rank(self, y) {
                    (x, Some(y))
                } else {
                    (y, Some(x))
                }
            }
        };
        // An agent who had both keeps the customer: nobody was released.
        let released = gone
            .and_then(|g| self.merge(now, keep, g, out))
            .filter(|a| !matches!(self.desk.location(keep), Location::Assigned { agent, .. } if agent == *a));
        self.quotas.add_audit(AuditEntry {
            at: now,
            actor: Arc::from(actor.trim()),
            action: "customer_linked",
            target: format!("{} + {}", a.masked(), b.masked()),
            before: match gone {
                Some(g) => format!("conversations {g} and {keep}"),
                None => "one conversation or none".into(),
            },
            after: format!("conversation {keep}"),
            reason: format!("{} (source {})", reason.trim(), source.trim()),
        });
        Ok(view(self, keep, released, gone))
    }

    /// Moves conversation `gone` into `keep`: identities, context (in time order, the newest
    /// `limits.context_messages` kept), channels, windows, flags and profile. `gone` leaves the
    /// desk; when it had an agent too, that agent no longer has it (returned).
    fn merge(
        &mut self,
        now: Timestamp,
        keep: ConversationId,
        gone: ConversationId,
        out: &mut Vec<Effect>,
    ) -> Option<AgentId> {
        let released = self.desk.withdraw(now, gone, out);
        if let Some(agent) = &released {
            out.push(Effect::Unassigned {
                tenant: self.id.clone(),
                agent: agent.clone(),
                conversation: gone,
                reason: Reason::Linked,
            });
        }
        let g = self.remove_conversation(gone).expect("exists");
        self.duplicates.forget(gone);
        let keep_n = self.limits.context_messages;
        let k = self.conversations.get_mut(&keep).expect("exists");
        k.context = Context::merged(&k.context, &g.context, keep_n);
        for ch in g.channels.iter() {
            k.channels.push(ch);
        }
        k.paused |= g.paused;
        if k.route_override.is_none() {
            k.route_override = g.route_override;
        }
        k.last_queue = k.last_queue.or(g.last_queue);
        k.priority = k.priority.max(g.priority);
        k.last_activity = k.last_activity.max(g.last_activity);
        let mut others = Vec::new();
        if let Some(p) = g.customer {
            others.push(Other {
                identity: Identity::Phone(p),
                window_expires: g.window_expires.get(),
            });
        }
        let mut conflicts = Vec::new();
        if let Some(known) = g.known {
            others.extend(known.others);
            conflicts = k.known.get_or_insert_default().profile.merge(known.profile);
        }
        let mut phones = Vec::new();
        for other in others {
            match (&other.identity, &k.customer) {
                (Identity::Phone(p), None) => {
                    k.customer = Some(p.clone());
                    k.window_expires = Expiry::from(other.window_expires);
                }
                _ => k.known.get_or_insert_default().others.push(other.clone()),
            }
            match other.identity {
                Identity::Phone(p) => phones.push(p),
                alias => {
                    self.by_alias.insert(alias, keep);
                }
            }
        }
        for p in phones {
            self.by_customer.insert(&self.conversations, p, keep);
        }
        for (field, kept, other) in conflicts {
            self.conflict(Conflict {
                conversation: keep,
                field,
                kept,
                other,
            });
        }
        // The conflicts of the conversation that went are now the customer's.
        for c in &mut self.conflicts {
            if c.conversation == gone {
                c.conversation = keep;
            }
        }
        self.renamed(keep);
        released
    }

    /// The service window for messages to `phone` in conversation `c`.
    pub(super) fn window_for(c: &Conversation, phone: &CustomerNumber) -> Option<Timestamp> {
        if c.customer.as_ref() == Some(phone) {
            return c.window_expires.get();
        }
        c.known.as_ref().and_then(|k| {
            k.others
                .iter()
                .find(|o| matches!(&o.identity, Identity::Phone(p) if p == phone))
                .and_then(|o| o.window_expires)
        })
    }

    /// A WhatsApp message from `phone` opens (or resets) that number's window.
    pub(super) fn open_window(c: &mut Conversation, phone: &CustomerNumber, until: Timestamp) {
        if c.customer.as_ref() == Some(phone) {
            c.window_expires = Expiry::at(until);
        } else if let Some(o) = c.known.as_mut().and_then(|k| {
            k.others
                .iter_mut()
                .find(|o| matches!(&o.identity, Identity::Phone(p) if p == phone))
        }) {
            o.window_expires = Some(until);
        }
    }
}
