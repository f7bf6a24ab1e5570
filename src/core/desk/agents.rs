//! What agents do at the desk: register, change presence (their conversations wait for
//! them or go back to the queue), complete, release and transfer conversations.
use super::*;

impl Desk {
    /// Creates or replaces an agent. `queues` must be known queue indexes.
    pub fn register(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        presence: Presence,
        capacity: u32,
        queues: Vec<QueueIx>,
        out: &mut Vec<Effect>,
    ) {
        let a = self.agents.entry(agent.clone()).or_insert_with(|| Agent {
            presence: Presence::Offline,
            capacity,
            queues: Vec::new(),
            active: Vec::new(),
            last_change: now,
            preferred: Set::default(),
        });
        let old_queues = std::mem::replace(&mut a.queues, queues.clone());
        a.capacity = capacity;
        let excess: Vec<ConversationId> = if a.active.len() > capacity as usize {
            a.active.split_off(capacity as usize)
        } else {
            Vec::new()
        };
        for q in old_queues {
            self.queues[q].members.retain(|m| m != agent);
        }
        for &q in &queues {
            self.queues[q].members.push(agent.clone());
        }
        // The newest assignments go back to their queues, so live load never exceeds capacity.
        for conversation in excess {
            self.requeue_from_agent(now, agent, conversation, Reason::CapacityReduced, out);
        }
        self.apply_presence(now, agent, presence, out);
    }

    pub fn set_presence(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        presence: Presence,
        out: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        if !self.agents.contains_key(agent) {
            return Err(agent_not_found(agent));
        }
        self.apply_presence(now, agent, presence, out);
        Ok(())
    }

    pub(super) fn apply_presence(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        presence: Presence,
        out: &mut Vec<Effect>,
    ) {
        let a = self
            .agents
            .get_mut(agent)
            .expect("caller checked the agent");
        let was = a.presence;
        a.presence = presence;
        match presence {
            Presence::Offline if was != Presence::Offline => {
                a.last_change = now;
                let active = std::mem::take(&mut a.active);
                a.preferred.extend(active.iter().copied());
                for conversation in active {
                    self.requeue_from_agent(now, agent, conversation, Reason::AgentOffline, out);
                }
            }
            Presence::Online => {
                let placements = &self.placements;
                a.preferred
                    .retain(|c| matches!(placements.get(c), Some(Placement::Waiting(_))));
                self.fill_agent(now, agent, out);
            }
            _ => {}
        }
    }

    /// The agent's conversation goes back to its queue (the agent's `active` no longer holds
    /// it). Offline agents are preferred on return; others are avoided.
    pub(super) fn requeue_from_agent(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        conversation: ConversationId,
        reason: Reason,
        out: &mut Vec<Effect>,
    ) {
        let Some(Placement::Assigned(was)) = self.placements.remove(&conversation) else {
            unreachable!("an agent's active conversation is assigned to it");
        };
        out.push(Effect::Unassigned {
            tenant: self.tenant.clone(),
            agent: agent.clone(),
            conversation,
            reason,
        });
        let (preferred, avoid) = match reason {
            Reason::AgentOffline => (Some(agent.clone()), None),
            Reason::CapacityReduced => (None, None),
            _ => (None, Some(agent.clone())),
        };
        self.enqueue(
            now,
            conversation,
            was.queue,
            was.priority,
            reason,
            preferred,
            avoid,
            out,
        );
    }

    /// Checks that `agent` has `conversation`; the error says who has it instead.
    pub(super) fn check_holds(
        &self,
        agent: &AgentId,
        conversation: ConversationId,
    ) -> Result<(), CoreError> {
        if !self.agents.contains_key(agent) {
            return Err(agent_not_found(agent));
        }
        match self.placements.get(&conversation) {
            Some(Placement::Assigned(a)) if &a.agent == agent => Ok(()),
            Some(Placement::Assigned(a)) => Err(CoreError::FailedPrecondition(format!(
                "conversation {conversation} is assigned to agent {:?}, not to {:?}",
                a.agent.as_str(),
                agent.as_str()
            ))),
            Some(Placement::Waiting(w)) => Err(CoreError::FailedPrecondition(format!(
                "conversation {conversation} is waiting in queue {:?}, not assigned to {:?}",
                self.queues[w.queue].name.as_str(),
                agent.as_str()
            ))),
            None => Err(CoreError::FailedPrecondition(format!(
                "conversation {conversation} is not assigned to any agent"
            ))),
        }
    }

    /// Takes an assigned conversation off its agent, returning what it was.
    pub(super) fn unassign(&mut self, conversation: ConversationId) -> Assigned {
        let Some(Placement::Assigned(was)) = self.placements.remove(&conversation) else {
            unreachable!("caller checked the conversation is assigned");
        };
        let a = self
            .agents
            .get_mut(&was.agent)
            .expect("assigned agents exist");
        a.active.retain(|c| *c != conversation);
        was
    }

    /// Takes a conversation off the desk wherever it is (it was linked into another): a
    /// waiting one leaves its queue, an assigned one frees its agent, who takes the next
    /// waiting conversation. Returns the agent who had it.
    pub fn withdraw(
        &mut self,
        now: Timestamp,
        conversation: ConversationId,
        out: &mut Vec<Effect>,
    ) -> Option<AgentId> {
        match self.placements.get(&conversation) {
            Some(Placement::Assigned(_)) => {
                let was = self.unassign(conversation);
                self.fill_agent(now, &was.agent, out);
                Some(was.agent)
            }
            Some(Placement::Waiting(_)) => {
                self.remove_waiting(conversation);
                None
            }
            None => None,
        }
    }

    /// The agent finished the conversation: its handle time feeds the queue's average and the
    /// agent takes the next waiting conversation.
    pub fn complete(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        conversation: ConversationId,
        out: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        self.check_holds(agent, conversation)?;
        let was = self.unassign(conversation);
        let handle_ms = now.since(was.since).as_millis() as f64;
        let q = &mut self.queues[was.queue];
        q.avg_handle_ms += HANDLE_TIME_SMOOTHING * (handle_ms - q.avg_handle_ms);
        self.agents
            .get_mut(agent)
            .expect("checked above")
            .last_change = now;
        self.fill_agent(now, agent, out);
        Ok(())
    }

    /// The agent gives the conversation back to its queue; another agent gets it.
    pub fn release(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        conversation: ConversationId,
        out: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        self.check_holds(agent, conversation)?;
        self.unassign_and_requeue(now, agent, conversation, None, Reason::Released, out);
        Ok(())
    }

    pub fn transfer_to_queue(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        conversation: ConversationId,
        q: QueueIx,
        out: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        self.check_holds(agent, conversation)?;
        self.unassign_and_requeue(now, agent, conversation, Some(q), Reason::Transferred, out);
        Ok(())
    }

    pub(super) fn unassign_and_requeue(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        conversation: ConversationId,
        to: Option<QueueIx>,
        reason: Reason,
        out: &mut Vec<Effect>,
    ) {
        let a = self.agents.get_mut(agent).expect("checked by check_holds");
        a.active.retain(|c| *c != conversation);
        a.last_change = now;
        if let (Some(q), Some(Placement::Assigned(p))) =
            (to, self.placements.get_mut(&conversation))
        {
            p.queue = q;
        }
        // The agent takes its next waiting conversation before the one it let go is offered
        // again: otherwise the only agent of a queue would get it straight back.
        self.fill_agent(now, agent, out);
        self.requeue_from_agent(now, agent, conversation, reason, out);
    }

    pub fn transfer_to_agent(
        &mut self,
        now: Timestamp,
        agent: &AgentId,
        conversation: ConversationId,
        to: &AgentId,
        out: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        self.check_holds(agent, conversation)?;
        if to == agent {
            return Err(CoreError::FailedPrecondition(format!(
                "conversation {conversation} is already with agent {:?}",
                agent.as_str()
            )));
        }
        let target = self.agents.get(to).ok_or_else(|| agent_not_found(to))?;
        if !target.available() {
            return Err(CoreError::FailedPrecondition(format!(
                "agent {:?} cannot take a conversation now ({}); transfer to a queue instead",
                to.as_str(),
                if target.presence == Presence::Online {
                    "at capacity"
                } else {
                    "not online"
                }
            )));
        }
        let was = self.unassign(conversation);
        self.agents.get_mut(agent).expect("checked").last_change = now;
        out.push(Effect::Unassigned {
            tenant: self.tenant.clone(),
            agent: agent.clone(),
            conversation,
            reason: Reason::Transferred,
        });
        self.assign_direct(
            now,
            conversation,
            to,
            was.queue,
            was.priority,
            Reason::Transferred,
            out,
        );
        self.fill_agent(now, agent, out);
        Ok(())
    }
}
