//! The desk as plain data, for snapshots (the scale-out issue): each agent's presence,
//! capacity, queues and the conversations it holds; who waits in which queue, in which order
//! and why; each queue's members, handle-time average and counters.
use serde::{Deserialize, Serialize};

use super::*;
use crate::core::quota::RestoreError;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeskState {
    pub agents: Vec<SavedAgent>,
    pub placements: Vec<SavedPlacement>,
    pub queues: Vec<SavedQueue>,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAgent {
    pub id: String,
    pub presence: Presence,
    pub capacity: u32,
    pub queues: Vec<String>,
    /// Its conversations, oldest first.
    pub active: Vec<u64>,
    pub last_change: Timestamp,
    pub preferred: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SavedPlacement {
    Waiting {
        conversation: u64,
        queue: String,
        priority: Priority,
        since: Timestamp,
        seq: u64,
        queue_since: Timestamp,
        reason: Reason,
        preferred: Option<String>,
        avoid: Option<String>,
        breached: bool,
        escalated: bool,
    },
    Assigned {
        conversation: u64,
        agent: String,
        queue: String,
        since: Timestamp,
        priority: Priority,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedQueue {
    pub name: String,
    /// Agents serving it, in registration order (ties go to the first).
    pub members: Vec<String>,
    pub avg_handle_ms: f64,
    pub assignments: u64,
    pub met_sla: u64,
    pub breaches: u64,
}

impl Desk {
    /// The desk's state, in a stable order (agents by id, placements by conversation).
    pub fn state(&self) -> DeskState {
        let name = |q: QueueIx| self.queues[q].name.to_string();
        let mut agents: Vec<SavedAgent> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let mut preferred: Vec<u64> = a.preferred.iter().map(|c| c.0).collect();
                preferred.sort_unstable();
                SavedAgent {
                    id: id.to_string(),
                    presence: a.presence,
                    capacity: a.capacity,
                    queues: a.queues.iter().map(|&q| name(q)).collect(),
                    active: a.active.iter().map(|c| c.0).collect(),
                    last_change: a.last_change,
                    preferred,
                }
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let mut placements: Vec<SavedPlacement> = self
            .placements
            .iter()
            .map(|(c, p)| match p {
                Placement::Waiting(w) => SavedPlacement::Waiting {
                    conversation: c.0,
                    queue: name(w.queue),
                    priority: w.key.priority.0,
                    since: w.key.since,
                    seq: w.key.seq,
                    queue_since: w.queue_since,
                    reason: w.reason,
                    preferred: w.preferred.as_ref().map(ToString::to_string),
                    avoid: w.avoid.as_ref().map(ToString::to_string),
                    breached: w.breached,
                    escalated: w.escalated,
                },
                Placement::Assigned(a) => SavedPlacement::Assigned {
                    conversation: c.0,
                    agent: a.agent.to_string(),
                    queue: name(a.queue),
                    since: a.since,
                    priority: a.priority,
                },
            })
            .collect();
        placements.sort_by_key(|p| match p {
            SavedPlacement::Waiting { conversation, .. }
            | SavedPlacement::Assigned { conversation, .. } => *conversation,
        });
        DeskState {
            agents,
            placements,
            queues: self
                .queues
                .iter()
                .map(|q| SavedQueue {
                    name: q.name.to_string(),
                    members: q.members.iter().map(ToString::to_string).collect(),
                    avg_handle_ms: q.avg_handle_ms,
                    assignments: q.assignments,
                    met_sla: q.met_sla,
                    breaches: q.breaches,
                })
                .collect(),
            seq: self.seq,
        }
    }

    /// Puts a saved state into a desk freshly built from its config. On error the desk is
    /// left as it was.
    pub fn restore(&mut self, state: DeskState) -> Result<(), RestoreError> {
        let queue = |name: &str| {
            self.queue_ix(name)
                .ok_or_else(|| RestoreError::UnknownQueue(name.to_owned()))
        };
        let mut agents = Map::default();
        for a in &state.agents {
            let queues = a
                .queues
                .iter()
                .map(|q| queue(q))
                .collect::<Result<Vec<_>, _>>()?;
            agents.insert(
                AgentId::new(&a.id),
                Agent {
                    presence: a.presence,
                    capacity: a.capacity,
                    queues,
                    active: a.active.iter().map(|&c| ConversationId(c)).collect(),
                    last_change: a.last_change,
                    preferred: a.preferred.iter().map(|&c| ConversationId(c)).collect(),
                },
            );
        }
        let mut placements = Map::default();
        let mut waiting: Vec<(QueueIx, WaitKey)> = Vec::new();
        for p in &state.placements {
            match p {
                SavedPlacement::Waiting {
                    conversation,
                    queue: q,
                    priority,
                    since,
                    seq,
                    queue_since,
                    reason,
                    preferred,
                    avoid,
                    breached,
                    escalated,
                } => {
                    let key = WaitKey {
                        priority: Reverse(*priority),
                        since: *since,
                        seq: *seq,
                        conversation: ConversationId(*conversation),
                    };
                    let q = queue(q)?;
                    waiting.push((q, key));
                    placements.insert(
                        ConversationId(*conversation),
                        Placement::Waiting(Waiting {
                            queue: q,
                            key,
                            queue_since: *queue_since,
                            reason: *reason,
                            preferred: preferred.as_deref().map(AgentId::new),
                            avoid: avoid.as_deref().map(AgentId::new),
                            breached: *breached,
                            escalated: *escalated,
                        }),
                    );
                }
                SavedPlacement::Assigned {
                    conversation,
                    agent,
                    queue: q,
                    since,
                    priority,
                } => {
                    placements.insert(
                        ConversationId(*conversation),
                        Placement::Assigned(Assigned {
                            agent: AgentId::new(agent),
                            queue: queue(q)?,
                            since: *since,
                            priority: *priority,
                        }),
                    );
                }
            }
        }
        let mut counters = Vec::with_capacity(state.queues.len());
        for q in &state.queues {
            counters.push((queue(&q.name)?, q));
        }
        // Everything fits: apply.
        for q in &mut self.queues {
            q.waiting.clear();
            q.by_priority.clear();
            q.members.clear();
        }
        for (ix, saved) in counters {
            let q = &mut self.queues[ix];
            q.members = saved.members.iter().map(AgentId::new).collect();
            q.avg_handle_ms = saved.avg_handle_ms;
            q.assignments = saved.assignments;
            q.met_sla = saved.met_sla;
            q.breaches = saved.breaches;
        }
        for (q, key) in waiting {
            self.queues[q].add(key);
        }
        self.agents = agents;
        self.placements = placements;
        self.seq = state.seq;
        Ok(())
    }
}
