//! A tenant's messages in and out: an inbound message identified, de-duplicated, put in
//! context and routed; a send checked and handed to the quotas (a reply joining its
//! conversation's timeline).
use super::*;

impl Tenant {
    pub(super) fn ingest(
        &mut self,
        now: Timestamp,
        m: Inbound,
        out: &mut Vec<Effect>,
    ) -> Result<Decision, CoreError> {
        // Validate everything before changing anything.
        if m.text.chars().all(char::is_whitespace) {
            return Err(invalid("text", "is empty; send the message text"));
        }
        if m.text.len() > self.limits.max_text_bytes {
            return Err(invalid(
                "text",
                format!(
                    "is {} bytes, over the limit of {} (limits.max_text_bytes); split the message",
                    m.text.len(),
                    self.limits.max_text_bytes
                ),
            ));
        }
        if m.provider_message_id.is_empty() {
            return Err(invalid(
                "provider_message_id",
                "is empty; send the provider's message id so that retries are recognised",
            ));
        }
        if m.provider_message_id.len() > MAX_PROVIDER_ID_BYTES {
            return Err(invalid(
                "provider_message_id",
                format!("is longer than {MAX_PROVIDER_ID_BYTES} bytes"),
            ));
        }
        if let Some(number) = &m.business_number
            && self.quotas.numbers().all(|(id, _, _)| id != number)
        {
            return Err(invalid(
                "business_number",
                format!("{number:?} is not a business number of this tenant"),
            ));
        }
        // The indexes' lines this message will read are asked for first, so that they load
        // together (the customer's, while the id's fingerprint is computed).
        if identity::looks_e164(&m.customer) {
            self.by_customer.prefetch(m.customer.as_bytes());
        }
        let fingerprint = identity::fingerprint(&m.provider_message_id);
        self.dedup.prefetch(fingerprint);
        let (who, existing, aliases) = self.inbound_identity(&m)?;
        // A known customer's context went cold after its last message: where this one will
        // be written loads while the text is classified (the record: the text, the id and
        // about 32 bytes of time, lengths and label).
        if let Some(conv) = existing.and_then(|id| self.conversations.get(&id)) {
            conv.context.prefetch(
                m.text.len() + m.provider_message_id.len() + 32,
                self.limits.context_messages,
            );
        }
        if self.dedup.contains(fingerprint) {
            // A retried webhook is not a new message: it takes no token either.
            return Ok(Decision {
                conversation: existing,
                target: Target::None,
                reason: Reason::Duplicate,
                duplicate: true,
                window_expires: existing.and_then(|id| self.decision(id, now).window_expires),
                window_open: existing.is_some_and(|id| self.window_open(id, now)),
                ..Decision::new(None)
            });
        }
        if existing.is_none() && self.conversations.len() >= self.limits.max_conversations {
            return Err(CoreError::ResourceExhausted(format!(
                "tenant {:?} tracks {} conversations, its limit (limits.max_conversations); \
                 retry later or raise the limit",
                self.id.as_str(),
                self.conversations.len()
            )));
        }
        let id = match existing {
            Some(id) => id,
            None => self.open_for(who.clone(), now),
        };
        if aliases.iter().any(Option::is_some) {
            self.learn_aliases(id, aliases);
        }
        if let Some(name) = m.profile_name.as_deref().map(str::trim)
            && !name.is_empty()
            && name.len() <= customer::MAX_ATTRIBUTE_BYTES
        {
            self.channel_name(id, name, m.channel, now);
        }

        if let Some(number) = &m.business_number {
            self.quotas.inbound(now, number);
        }
        // One pass over the text for its intent and for consent: "BAJA", "STOP" change the
        // customer's consent; the message is still routed (a person may want to see it).
        let quotas = &mut self.quotas;
        let intent = self
            .rules
            .classifier
            .classify_then(&m.text, |intent, spaced| {
                if let Identity::Phone(phone) = &who {
                    quotas.consent_keyword(now, phone, spaced, out);
                }
                intent
            });
        // The text and id move into the message the effects carry (no copy).
        let message = ContextMessage::new(
            Direction::Inbound,
            m.channel,
            now,
            m.text,
            m.provider_message_id,
            intent.map(|i| self.rules.intents[i].name.clone()),
        );
        let window = self.limits.window_secs * 1_000;
        let keep = self.limits.context_messages;
        let conv = self.conversations.get_mut(&id).expect("opened above");
        if m.channel == Channel::WhatsApp
            && let Identity::Phone(phone) = &who
        {
            // A customer's WhatsApp message opens its number's window, or resets it to a full
            // 24 hours.
            Self::open_window(conv, phone, Timestamp(now.as_millis() + window));
        }
        conv.channels.push(m.channel);
        conv.context.push(Kept::of(&message), keep);
        let idle_ms = now
            .as_millis()
            .saturating_sub(conv.last_activity.as_millis());
        conv.last_activity = now;

        let decision = self.route(now, id, intent, idle_ms, message, out);
        self.dedup.insert_unseen(fingerprint, now);
        Ok(decision)
    }

    /// Outbound: the recipient is identified like an inbound customer, its window looked up,
    /// and the quotas decide.
    /// A customer's number as the API gives it: a known customer's without parsing.
    pub(super) fn customer_number(&self, given: &str) -> Result<CustomerNumber, CoreError> {
        match identity::looks_e164(given)
            .then(|| self.by_customer.get(&self.conversations, given))
            .flatten()
        {
            Some((known, _)) => Ok(known.clone()),
            None => identity::normalize(given, self.region).map_err(|p| invalid("to", p)),
        }
    }

    pub(super) fn send(
        &mut self,
        now: Timestamp,
        o: Outbound,
        out: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        let to = self.customer_number(&o.to)?;
        if let Some(thread) = &o.thread {
            self.conversation(thread.conversation)?;
            // The customer's numbers all find their conversation.
            if self.by_customer.id(&self.conversations, to.as_e164()) != Some(thread.conversation) {
                return Err(invalid(
                    "conversation_id",
                    format!(
                        "conversation {} is not with the customer in `to`; name the \
                         customer's conversation or leave it empty",
                        thread.conversation
                    ),
                ));
            }
        }
        // What the timeline shows of a reply (only a send naming its conversation has one).
        let thread = o.thread.clone().map(|t| {
            let text = match &o.template {
                Some(tpl) => format!("[template {}]", tpl.name),
                None => o.content.clone(),
            };
            (t, text)
        });
        let window_open = self
            .by_customer
            .id(&self.conversations, to.as_e164())
            .and_then(|id| Self::window_for(&self.conversations[&id], &to))
            .is_some_and(|e| now < e);
        let made_before = self.quotas.sends_made();
        let request = SendRequest {
            from: o.from,
            to,
            category: o.category,
            content: o.content,
            template: o.template,
            priority: o.priority,
            idempotency_key: o.idempotency_key,
            valid_for_ms: o.valid_for_ms,
            window_open,
            tag: o.tag,
            send_at: o.send_at,
        };
        let (id, admission) = self
            .quotas
            .send(now, request, out)
            .map_err(|b| invalid(b.field, b.problem))?;
        // A reply joins the conversation's timeline once it is on its way (a refused one
        // did not happen; a repeated idempotency key is the same send, added once).
        if let Some((thread, text)) = thread
            && !matches!(admission, quota::Admission::Refused { .. })
            && self.quotas.sends_made() > made_before
        {
            let keep = self.limits.context_messages;
            let conv = self
                .conversations
                .get_mut(&thread.conversation)
                .expect("checked above");
            conv.context.push(
                Kept {
                    direction: Direction::Outbound,
                    channel: Channel::WhatsApp,
                    at: now,
                    text: &text,
                    provider_message_id: "",
                    label: Some(&thread.author),
                },
                keep,
            );
            conv.last_activity = now;
        }
        Ok(Reply::Send { id, admission })
    }

    pub(super) fn open_conversation(
        &mut self,
        customer: Option<CustomerNumber>,
        now: Timestamp,
    ) -> ConversationId {
        let id = ConversationId(self.next_conversation);
        self.next_conversation += 1;
        let phone = customer.is_some();
        // Ids only grow (a restore starts past every id it restores): this one is new.
        let at = self.conversations.push_new(
            id,
            Conversation::new(customer, self.rules.default_priority, now),
        );
        self.retention.file(id, self.retained_until(now));
        if phone {
            // Its callers open a conversation for a phone no conversation has.
            self.by_customer.insert_new(&self.conversations, at);
        }
        // The next new conversation's index slot, loaded by the time it comes.
        self.conversations
            .prefetch(&ConversationId(self.next_conversation));
        id
    }
}

/// The profile source a channel's own values carry ("whatsapp"): one shared string, not one a
/// customer.
pub(super) fn channel_source(channel: Channel) -> Arc<str> {
    static SOURCES: std::sync::LazyLock<[Arc<str>; 3]> = std::sync::LazyLock::new(|| {
        [Channel::WhatsApp, Channel::WebChat, Channel::Voice].map(|c| Arc::from(c.as_str()))
    });
    let i = match channel {
        Channel::WhatsApp => 0,
        Channel::WebChat => 1,
        Channel::Voice => 2,
    };
    SOURCES[i].clone()
}
