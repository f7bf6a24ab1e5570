//! How a tenant's conversation looks from outside: the API's view of it and its window.
use super::*;

impl Tenant {
    /// The conversation as the API shows it, with its context.
    pub fn view(&self, id: ConversationId, now: Timestamp) -> Result<ConversationView, CoreError> {
        let c = self.conversation(id)?;
        let (state, queue, agent, priority) = match self.desk.location(id) {
            Location::Assigned {
                agent,
                queue,
                priority,
            } => (
                ConversationState::Assigned,
                Some(queue),
                Some(agent),
                priority,
            ),
            Location::Waiting { queue, priority } => {
                (ConversationState::Waiting, Some(queue), None, priority)
            }
            Location::Nowhere if c.with_bot => (ConversationState::Bot, None, None, c.priority),
            Location::Nowhere => (ConversationState::Idle, None, None, c.priority),
        };
        Ok(ConversationView {
            tenant: self.id.clone(),
            id,
            customer: c
                .customer
                .as_ref()
                .map_or(String::new(), |p| p.as_e164().to_owned()),
            identities: Self::identities(c),
            state,
            queue: queue.map(|q| self.desk.queue_name(q).clone()),
            agent,
            priority,
            automation_paused: c.paused,
            route_override: c.route_override.as_deref().cloned(),
            window_expires: c.window_expires.get(),
            window_open: c.window_expires.get().is_some_and(|e| now < e),
            channels: c.channels.to_vec(),
            context: c.context.iter().map(Kept::to_message).collect(),
        })
    }

    /// Whether the customer-service window for messages to `phone` (E.164) is open at `now`:
    /// each of a customer's numbers has its own.
    pub fn window_open_for(&self, phone: &str, now: Timestamp) -> bool {
        self.by_customer
            .get(&self.conversations, phone)
            .and_then(|(p, id)| Self::window_for(&self.conversations[&id], p))
            .is_some_and(|e| now < e)
    }

    /// Whether the customer-service window of the customer's conversation is open at `now`.
    pub fn window_open(&self, id: ConversationId, now: Timestamp) -> bool {
        self.conversations
            .get(&id)
            .and_then(|c| c.window_expires.get())
            .is_some_and(|e| now < e)
    }
}
