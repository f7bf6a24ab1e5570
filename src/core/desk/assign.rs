//! Who takes what: placing a conversation in its queue, choosing the agent (least loaded,
//! then idle longest, then by id), and filling agents and queues as capacity frees up.
use super::*;

impl Desk {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_waiting(
        &mut self,
        since: Timestamp,
        now: Timestamp,
        conversation: ConversationId,
        q: QueueIx,
        priority: Priority,
        reason: Reason,
        preferred: Option<AgentId>,
        avoid: Option<AgentId>,
    ) {
        self.seq += 1;
        let key = WaitKey {
            priority: Reverse(priority),
            since,
            seq: self.seq,
            conversation,
        };
        self.queues[q].add(key);
        self.placements.insert(
            conversation,
            Placement::Waiting(Waiting {
                queue: q,
                key,
                queue_since: now,
                reason,
                preferred,
                avoid,
                breached: false,
                escalated: false,
            }),
        );
    }

    /// Where a just-enqueued conversation is; a `Queued` effect if it waits. `ahead`: its
    /// position if known exactly (a new arrival), else it is counted (capped).
    pub(super) fn placed(
        &self,
        now: Timestamp,
        conversation: ConversationId,
        reason: Reason,
        ahead: Option<usize>,
        out: &mut Vec<Effect>,
    ) -> Placed {
        match self.placements.get(&conversation) {
            Some(Placement::Assigned(a)) => Placed::Agent(a.agent.clone()),
            Some(Placement::Waiting(w)) => {
                out.push(Effect::Queued {
                    tenant: self.tenant.clone(),
                    conversation,
                    queue: self.queues[w.queue].name.clone(),
                    reason,
                });
                match ahead {
                    Some(ahead) => Placed::Waiting {
                        position: u32::try_from(ahead).unwrap_or(u32::MAX),
                        estimated_wait_ms: self.wait_from_opening(w.queue, ahead, now),
                    },
                    None => self
                        .waiting_status(conversation, now)
                        .expect("the conversation is waiting"),
                }
            }
            None => unreachable!("an enqueued conversation is placed"),
        }
    }

    /// Whether `agent` may take `w` from queue `q`: not if it is the agent the conversation
    /// avoids while another agent of the queue is online.
    pub(super) fn may_take(&self, agent: &AgentId, q: QueueIx, w: &Waiting) -> bool {
        match &w.avoid {
            Some(avoid) if avoid == agent => !self.queues[q]
                .members
                .iter()
                .any(|m| m != agent && self.agents[m].presence == Presence::Online),
            _ => true,
        }
    }

    /// The agent for waiting conversation `w`: its preferred agent if available, else the least
    /// loaded available one, ties to the longest idle, then by id.
    pub(super) fn pick_agent(&self, q: QueueIx, w: &Waiting) -> Option<AgentId> {
        if let Some(p) = &w.preferred
            && self.agents.get(p).is_some_and(Agent::available)
        {
            return Some(p.clone());
        }
        self.queues[q]
            .members
            .iter()
            .filter_map(|id| {
                let a = &self.agents[id];
                (a.available() && self.may_take(id, q, w)).then_some((
                    a.active.len(),
                    a.last_change,
                    id,
                ))
            })
            .min()
            .map(|(_, _, id)| id.clone())
    }

    /// Assigns waiting conversations of queue `q`, in order, while agents are free.
    pub(super) fn try_assign_queue(&mut self, now: Timestamp, q: QueueIx, out: &mut Vec<Effect>) {
        loop {
            let any_free = self.queues[q]
                .members
                .iter()
                .any(|m| self.agents[m].available());
            if !any_free {
                return;
            }
            let next = self.queues[q].waiting.iter().find_map(|key| {
                let Some(Placement::Waiting(w)) = self.placements.get(&key.conversation) else {
                    unreachable!("every queue entry has its placement");
                };
                self.pick_agent(q, w).map(|a| (key.conversation, a))
            });
            match next {
                Some((conversation, agent)) => self.assign(now, conversation, &agent, out),
                None => return,
            }
        }
    }

    /// Fills the agent's free capacity: conversations that prefer it first, then the best
    /// waiting conversation across its queues.
    pub(super) fn fill_agent(&mut self, now: Timestamp, agent: &AgentId, out: &mut Vec<Effect>) {
        loop {
            let Some(a) = self.agents.get(agent) else {
                return;
            };
            if !a.available() {
                return;
            }
            let preferred = a
                .preferred
                .iter()
                .filter_map(|c| match self.placements.get(c) {
                    Some(Placement::Waiting(w)) => Some(w.key),
                    _ => None,
                })
                .min();
            let next = preferred.or_else(|| {
                a.queues
                    .iter()
                    .filter_map(|&q| {
                        self.queues[q].waiting.iter().copied().find(|key| {
                            let Some(Placement::Waiting(w)) =
                                self.placements.get(&key.conversation)
                            else {
                                unreachable!("every queue entry has its placement");
                            };
                            self.may_take(agent, q, w)
                        })
                    })
                    .min()
            });
            match next {
                Some(key) => self.assign(now, key.conversation, agent, out),
                None => return,
            }
        }
    }

    pub(super) fn assign(
        &mut self,
        now: Timestamp,
        conversation: ConversationId,
        agent: &AgentId,
        out: &mut Vec<Effect>,
    ) {
        let Some(Placement::Waiting(w)) = self.placements.remove(&conversation) else {
            unreachable!("only waiting conversations are assigned from a queue");
        };
        let queue = &mut self.queues[w.queue];
        queue.take(&w.key);
        let waited_ms = queue.waited_ms(w.key.since, now);
        queue.assignments += 1;
        if waited_ms <= queue.sla_target_ms {
            queue.met_sla += 1;
        } else if !w.breached {
            queue.breaches += 1;
            out.push(Effect::SlaBreached {
                tenant: self.tenant.clone(),
                queue: queue.name.clone(),
            });
        }
        let a = self.agents.get_mut(agent).expect("picked agents exist");
        a.active.push(conversation);
        a.last_change = now;
        a.preferred.remove(&conversation);
        self.placements.insert(
            conversation,
            Placement::Assigned(Assigned {
                agent: agent.clone(),
                queue: w.queue,
                since: now,
                priority: w.key.priority.0,
            }),
        );
        out.push(Effect::Assigned {
            tenant: self.tenant.clone(),
            agent: agent.clone(),
            conversation,
            queue: self.queues[w.queue].name.clone(),
            reason: w.reason,
            waited_ms,
        });
    }
}
