//! The routing decision and what follows it: the order in the module docs of `tenant`
//! (paused or overridden, already assigned, already queued, friction, simple intent, SLA
//! load), placing a conversation on the desk or with the bot, escalations past the max wait,
//! and route overrides.
use super::*;

impl Tenant {
    /// The routing decision for a message just added to conversation `id` (module docs),
    /// which had been idle `idle_ms` before it.
    pub(super) fn route(
        &mut self,
        now: Timestamp,
        id: ConversationId,
        intent: Option<usize>,
        idle_ms: u64,
        message: ContextMessage,
        out: &mut Vec<Effect>,
    ) -> Decision {
        let intent = intent.map(|i| &self.rules.intents[i]);
        let intent_name = intent.map(|i| i.name.clone());
        let priority = intent.map_or(self.rules.default_priority, |i| i.priority);
        let conv = &self.conversations[&id];

        // 1. People decided.
        if conv.paused || conv.route_override.is_some() {
            let reason = if conv.route_override.is_some() {
                Reason::RouteOverride
            } else {
                Reason::AutomationPaused
            };
            let mut d = self.route_to_human(now, id, priority, reason, Some(message), out);
            d.intent = intent_name;
            return d;
        }
        match self.desk.location(id) {
            // 2. A follow-up goes to the agent who has the conversation.
            Location::Assigned { agent, queue, .. } => {
                out.push(Effect::AgentMessage {
                    tenant: self.id.clone(),
                    agent: agent.clone(),
                    conversation: id,
                    message,
                });
                return Decision {
                    target: Target::Agent,
                    reason: Reason::AssignedAgent,
                    intent: intent_name,
                    queue: Some(self.desk.queue_name(queue).clone()),
                    agent: Some(agent),
                    ..self.decision(id, now)
                };
            }
            // 3. Already waiting: keep the place; friction only raises the priority.
            Location::Waiting { queue, .. } => {
                if intent.is_some_and(|i| i.mode == IntentMode::Human) {
                    self.desk.raise_priority(id, priority);
                }
                let placed = self
                    .desk
                    .waiting_status(id, now)
                    .expect("the conversation is waiting");
                let mut d = self.placed_decision(now, id, queue, placed, Reason::AlreadyQueued);
                d.intent = intent_name;
                return d;
            }
            Location::Nowhere => {}
        }
        let mode = intent.map_or(IntentMode::Auto, |i| i.mode);
        let queue = intent
            .and_then(|i| i.queue)
            .unwrap_or(self.rules.default_queue);
        // 4. Mid-dialogue with the bot: it keeps the conversation unless the customer shows
        // friction or the dialogue went idle (the bot escalates through `Escalate`).
        let sticky = self.conversations[&id].with_bot && idle_ms < self.rules.bot_idle_ms;
        if sticky
            && mode != IntentMode::Human
            && let Some(bot) = self.rules.bot.clone()
        {
            let mut d = self.send_to_bot(now, id, bot, Reason::WithBot, message, &intent_name, out);
            d.intent = intent_name;
            return d;
        }
        // 5. Business hours: a closed queue's messages go to its after-hours queue, else (but
        // friction, which waits in its queue) to the bot.
        if self.desk.closed_until(queue, now).is_some() {
            let mut d = match (self.desk.after_hours(queue), mode, self.rules.bot.clone()) {
                (Some(after), _, _) => {
                    self.enqueue(now, id, after, priority, Reason::OutsideHours, out)
                }
                (None, IntentMode::Human, _) => {
                    self.enqueue(now, id, queue, priority, Reason::Friction, out)
                }
                (None, _, Some(bot)) => {
                    let mut d = self.send_to_bot(
                        now,
                        id,
                        bot,
                        Reason::OutsideHours,
                        message,
                        &intent_name,
                        out,
                    );
                    d.queue = Some(self.desk.queue_name(queue).clone());
                    d
                }
                (None, _, None) => {
                    self.enqueue(now, id, queue, priority, Reason::OutsideHours, out)
                }
            };
            d.intent = intent_name;
            return d;
        }
        let mut d = match mode {
            // 6. Friction: a human, at the intent's priority.
            IntentMode::Human => self.enqueue(now, id, queue, priority, Reason::Friction, out),
            // 7. Simple intents: the bot, if there is one.
            IntentMode::Bot => match self.rules.bot.clone() {
                Some(bot) => self.send_to_bot(
                    now,
                    id,
                    bot,
                    Reason::SimpleIntent,
                    message,
                    &intent_name,
                    out,
                ),
                None => self.enqueue(now, id, queue, priority, Reason::NoBot, out),
            },
            // 8. By SLA load.
            IntentMode::Auto => {
                let sla = self.desk.sla_target_ms(queue);
                let within = self
                    .desk
                    .estimate(queue, priority, now)
                    .is_some_and(|wait| wait <= sla);
                match (within, self.rules.bot.clone()) {
                    (true, _) => self.enqueue(now, id, queue, priority, Reason::SlaOk, out),
                    (false, Some(bot)) => {
                        let mut d = self.send_to_bot(
                            now,
                            id,
                            bot,
                            Reason::SlaSaturated,
                            message,
                            &intent_name,
                            out,
                        );
                        d.queue = Some(self.desk.queue_name(queue).clone());
                        d
                    }
                    (false, None) => {
                        self.enqueue(now, id, queue, priority, Reason::SlaSaturatedNoBot, out)
                    }
                }
            }
        };
        d.intent = intent_name;
        d
    }

    /// Routes to a person: the override's agent or queue, else the conversation's last queue,
    /// else the escalation queue. A conversation with an agent stays with that agent.
    pub(super) fn route_to_human(
        &mut self,
        now: Timestamp,
        id: ConversationId,
        priority: Priority,
        reason: Reason,
        message: Option<ContextMessage>,
        out: &mut Vec<Effect>,
    ) -> Decision {
        let conv = &self.conversations[&id];
        let default = conv
            .last_queue
            .map_or(self.rules.escalation_queue, QueueIx::from);
        let location = self.desk.location(id);
        if let Location::Assigned { agent, queue, .. } = location {
            if let Some(message) = message {
                out.push(Effect::AgentMessage {
                    tenant: self.id.clone(),
                    agent: agent.clone(),
                    conversation: id,
                    message,
                });
            }
            return Decision {
                target: Target::Agent,
                reason,
                queue: Some(self.desk.queue_name(queue).clone()),
                agent: Some(agent),
                ..self.decision(id, now)
            };
        }
        match conv.route_override.as_deref().cloned() {
            Some(RouteOverride::Agent(agent)) if self.desk.agent_available(agent.as_str()) => {
                let queue = match location {
                    Location::Waiting { queue, .. } => queue,
                    _ => default,
                };
                let priority = priority.max(conv.priority);
                self.desk.remove_waiting(id);
                self.desk
                    .assign_direct(now, id, &agent, queue, priority, reason, out);
                self.placed(id, queue, priority);
                Decision {
                    target: Target::Agent,
                    reason,
                    queue: Some(self.desk.queue_name(queue).clone()),
                    agent: Some(agent),
                    ..self.decision(id, now)
                }
            }
            over => {
                let (queue, preferred) = match over {
                    Some(RouteOverride::Queue(q)) => (
                        self.desk
                            .queue_ix(q.as_str())
                            .expect("override queues are checked"),
                        None,
                    ),
                    Some(RouteOverride::Agent(a)) => (default, Some(a)),
                    None => (default, None),
                };
                match location {
                    Location::Waiting { queue: at, .. } if at == queue => {
                        let placed = self.desk.waiting_status(id, now).expect("waiting");
                        self.placed_decision(now, id, queue, placed, reason)
                    }
                    Location::Waiting { .. } => {
                        let placed = self
                            .desk
                            .move_waiting(now, id, queue, priority, reason, out);
                        self.placed(id, queue, priority);
                        self.placed_decision(now, id, queue, placed, reason)
                    }
                    _ => {
                        let placed = self
                            .desk
                            .enqueue(now, id, queue, priority, reason, preferred, None, out);
                        self.placed(id, queue, priority);
                        self.placed_decision(now, id, queue, placed, reason)
                    }
                }
            }
        }
    }

    pub(super) fn enqueue(
        &mut self,
        now: Timestamp,
        id: ConversationId,
        queue: QueueIx,
        priority: Priority,
        reason: Reason,
        out: &mut Vec<Effect>,
    ) -> Decision {
        let placed = self
            .desk
            .enqueue(now, id, queue, priority, reason, None, None, out);
        self.placed(id, queue, priority);
        self.placed_decision(now, id, queue, placed, reason)
    }

    /// Records that the conversation is on the desk in `queue`.
    pub(super) fn placed(&mut self, id: ConversationId, queue: QueueIx, priority: Priority) {
        let conv = self
            .conversations
            .get_mut(&id)
            .expect("placed conversations exist");
        conv.with_bot = false;
        conv.served_by_human = true;
        conv.last_queue = u16::try_from(queue).ok();
        conv.priority = priority;
    }

    #[allow(clippy::too_many_arguments)] // the routing facts of one message
    pub(super) fn send_to_bot(
        &mut self,
        now: Timestamp,
        id: ConversationId,
        bot: Arc<str>,
        reason: Reason,
        message: ContextMessage,
        intent: &Option<Arc<str>>,
        out: &mut Vec<Effect>,
    ) -> Decision {
        let conv = self
            .conversations
            .get_mut(&id)
            .expect("routed conversations exist");
        conv.with_bot = true;
        conv.served_by_bot = true;
        out.push(Effect::BotMessage {
            tenant: self.id.clone(),
            bot: bot.clone(),
            conversation: id,
            message,
            reason,
            intent: intent.clone(),
        });
        Decision {
            target: Target::Bot,
            reason,
            bot: Some(bot),
            ..self.decision(id, now)
        }
    }

    pub(super) fn placed_decision(
        &self,
        now: Timestamp,
        id: ConversationId,
        queue: QueueIx,
        placed: Placed,
        reason: Reason,
    ) -> Decision {
        let queue = Some(self.desk.queue_name(queue).clone());
        match placed {
            Placed::Agent(agent) => Decision {
                target: Target::Agent,
                reason,
                queue,
                agent: Some(agent),
                ..self.decision(id, now)
            },
            Placed::Waiting {
                position,
                estimated_wait_ms,
            } => Decision {
                target: Target::Queue,
                reason,
                queue,
                position,
                estimated_wait_ms,
                ..self.decision(id, now)
            },
        }
    }

    /// A decision about conversation `id` with its window filled in.
    pub(super) fn decision(&self, id: ConversationId, now: Timestamp) -> Decision {
        let mut d = Decision::new(Some(id));
        d.window_expires = self
            .conversations
            .get(&id)
            .and_then(|c| c.window_expires.get());
        d.window_open = d.window_expires.is_some_and(|e| now < e);
        d
    }

    pub(super) fn escalate(
        &mut self,
        now: Timestamp,
        id: ConversationId,
        queue: Option<&str>,
        note: &str,
        author: Option<&str>,
        out: &mut Vec<Effect>,
    ) -> Result<Decision, CoreError> {
        let queue = match queue.filter(|q| !q.is_empty()) {
            Some(name) => self.queue_arg("queue", name)?,
            None => self.rules.escalation_queue,
        };
        if note.len() > self.limits.max_text_bytes {
            return Err(invalid(
                "note",
                format!(
                    "is over the limit of {} bytes (limits.max_text_bytes)",
                    self.limits.max_text_bytes
                ),
            ));
        }
        let conv = self.conversation(id)?;
        let location = self.desk.location(id);
        if let Location::Assigned { agent, .. } = &location {
            return Err(CoreError::FailedPrecondition(format!(
                "conversation {id} is already with agent {:?}; transfer it instead",
                agent.as_str()
            )));
        }
        let priority = conv.priority.max(self.rules.escalation_priority);
        let text = if note.trim().is_empty() {
            "escalated to a person"
        } else {
            note
        };
        self.note(id, now, text, author.unwrap_or("switchboard"));
        self.conversations
            .get_mut(&id)
            .expect("checked above")
            .last_activity = now;
        let placed = match location {
            Location::Waiting { .. } => {
                self.desk
                    .move_waiting(now, id, queue, priority, Reason::Escalated, out)
            }
            _ => self
                .desk
                .enqueue(now, id, queue, priority, Reason::Escalated, None, None, out),
        };
        self.placed(id, queue, priority);
        Ok(self.placed_decision(now, id, queue, placed, Reason::Escalated))
    }

    /// A note in the conversation's timeline (a transfer, say), written by `author`.
    pub(super) fn note(&mut self, id: ConversationId, now: Timestamp, text: &str, author: &str) {
        let keep = self.limits.context_messages;
        let Some(conv) = self.conversations.get_mut(&id) else {
            return;
        };
        let channel = conv.channels.last().unwrap_or(Channel::WhatsApp);
        conv.context.push(
            Kept {
                direction: Direction::Note,
                channel,
                at: now,
                text,
                provider_message_id: "",
                label: Some(author),
            },
            keep,
        );
    }

    pub(super) fn override_route(
        &mut self,
        now: Timestamp,
        id: ConversationId,
        to: Option<RouteOverride>,
        out: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        match &to {
            Some(RouteOverride::Queue(q)) => {
                self.queue_arg("queue", q.as_str())?;
            }
            Some(RouteOverride::Agent(a)) if !self.desk.has_agent(a.as_str()) => {
                return Err(CoreError::NotFound {
                    what: "agent",
                    id: a.to_string(),
                });
            }
            _ => {}
        }
        let waiting = matches!(self.desk.location(id), Location::Waiting { .. });
        let conv = self.conversation_mut(id)?;
        let apply = to.is_some() && (conv.with_bot || waiting);
        conv.route_override = to.map(Box::new);
        // Apply at once unless an agent has the conversation (it moves when they let it go)
        // or nobody handles it (it moves with the customer's next message).
        if apply {
            let priority = conv.priority;
            self.route_to_human(now, id, priority, Reason::RouteOverride, None, out);
        }
        Ok(())
    }
}
