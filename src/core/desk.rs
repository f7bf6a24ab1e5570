//! The desk of one tenant: its agents, its queues, and where every handled conversation is
//! (waiting in a queue or assigned to an agent). It is the one source of truth for placement,
//! so a conversation cannot be in two places: it is a key of one map.
//!
//! Rules it keeps:
//! - an agent takes new conversations only when online and below capacity;
//! - a queue is served by priority, then age; the agent chosen is the least loaded available
//!   one serving the queue, ties to the one idle longest (then by id, for determinism);
//! - a conversation whose agent went offline prefers that agent when it returns; one released
//!   or transferred away is not offered to the same agent while another agent of the queue is
//!   online;
//! - the estimated wait comes from free capacity, the position in the queue and a moving
//!   average of handle times.
//!
//! It never classifies, never reads message text and knows nothing of customers.
use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::clock::Timestamp;
use crate::clock::hours::BusinessHours;
use crate::config::QueueConfig;
use crate::model::{AgentId, ConversationId, Presence, Priority, QueueName, TenantId};

use super::{AgentView, CoreError, Effect, Map, QueueStatsView, Reason, Set};

mod agents;
mod assign;
pub mod state;
pub use state::DeskState;

pub type QueueIx = usize;

/// Weight of the newest handle time in the moving average: about the last 10 conversations
/// shape the estimate, so it follows a change of pace within minutes but one outlier does not
/// swing it.
const HANDLE_TIME_SMOOTHING: f64 = 0.2;

/// Reported queue positions stop counting here: a conversation this far back is told so, and
/// a follow-up never walks a huge queue. (A new arrival's position is exact at any depth.)
pub const MAX_COUNTED_POSITION: usize = 1_000;

/// Order of a queue: priority (highest first), then arrival, then a sequence number so that
/// two arrivals in the same millisecond keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WaitKey {
    priority: Reverse<Priority>,
    since: Timestamp,
    seq: u64,
    conversation: ConversationId,
}

#[derive(Debug, Clone)]
struct Waiting {
    queue: QueueIx,
    key: WaitKey,
    /// When it entered this queue (max wait counts from here; SLA counts from `key.since`).
    queue_since: Timestamp,
    reason: Reason,
    preferred: Option<AgentId>,
    avoid: Option<AgentId>,
    breached: bool,
    /// Already raised in priority for exceeding this queue's max wait.
    escalated: bool,
}

#[derive(Debug, Clone)]
struct Assigned {
    agent: AgentId,
    queue: QueueIx,
    since: Timestamp,
    priority: Priority,
}

#[derive(Debug, Clone)]
enum Placement {
    Waiting(Waiting),
    Assigned(Assigned),
}

#[derive(Debug)]
struct Queue {
    name: QueueName,
    sla_target_ms: u64,
    max_wait_ms: u64,
    fallback: Option<QueueIx>,
    max_wait_boost: Priority,
    avg_handle_ms: f64,
    waiting: BTreeSet<WaitKey>,
    /// How many wait at each priority: the position of a new arrival without counting.
    by_priority: std::collections::BTreeMap<Reverse<Priority>, usize>,
    /// Agents serving this queue, in registration order.
    members: Vec<AgentId>,
    /// When it is open (None: always); its SLA and max-wait clocks stop while it is closed.
    hours: Option<BusinessHours>,
    /// Where its messages go while it is closed.
    after_hours: Option<QueueIx>,
    assignments: u64,
    met_sla: u64,
    breaches: u64,
}

impl Queue {
    /// A queue with nothing waiting yet; its settings and links are set by
    /// `Desk::reconfigure`.
    fn new(q: &QueueConfig) -> Self {
        Queue {
            name: QueueName::new(&q.name),
            sla_target_ms: 0,
            max_wait_ms: 0,
            fallback: None,
            max_wait_boost: 0,
            avg_handle_ms: (q.initial_handle_secs * 1_000) as f64,
            waiting: BTreeSet::new(),
            by_priority: std::collections::BTreeMap::new(),
            members: Vec::new(),
            hours: None,
            after_hours: None,
            assignments: 0,
            met_sla: 0,
            breaches: 0,
        }
    }

    /// How long a conversation waiting since `since` has waited by the queue's clock: the time
    /// it was open.
    fn waited_ms(&self, since: Timestamp, now: Timestamp) -> u64 {
        match &self.hours {
            Some(h) => h.open_ms_between(since, now),
            None => now.since(since).as_millis() as u64,
        }
    }

    fn add(&mut self, key: WaitKey) {
        if self.waiting.insert(key) {
            *self.by_priority.entry(key.priority).or_default() += 1;
        }
    }

    fn take(&mut self, key: &WaitKey) {
        if self.waiting.remove(key)
            && let std::collections::btree_map::Entry::Occupied(mut e) =
                self.by_priority.entry(key.priority)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// Conversations that wait at `priority` or higher (all ahead of a new arrival at it).
    fn at_or_above(&self, priority: Priority) -> usize {
        self.by_priority
            .range(..=Reverse(priority))
            .map(|(_, n)| n)
            .sum()
    }

    /// Conversations ahead of `key`: every higher priority, plus older ones at its priority,
    /// counted up to `MAX_COUNTED_POSITION`.
    fn ahead_of(&self, key: &WaitKey) -> usize {
        let higher: usize = self.by_priority.range(..key.priority).map(|(_, n)| n).sum();
        let first_at_priority = WaitKey {
            priority: key.priority,
            since: Timestamp(0),
            seq: 0,
            conversation: ConversationId(0),
        };
        let older = self
            .waiting
            .range(first_at_priority..*key)
            .take(MAX_COUNTED_POSITION)
            .count();
        higher + older
    }

    /// When the longest-waiting conversation arrived: the head of each priority level.
    fn oldest_since(&self) -> Option<Timestamp> {
        self.by_priority
            .keys()
            .filter_map(|p| {
                let first = WaitKey {
                    priority: *p,
                    since: Timestamp(0),
                    seq: 0,
                    conversation: ConversationId(0),
                };
                self.waiting.range(first..).next().map(|k| k.since)
            })
            .min()
    }
}

#[derive(Debug)]
struct Agent {
    presence: Presence,
    capacity: u32,
    queues: Vec<QueueIx>,
    /// Live assignments, oldest first.
    active: Vec<ConversationId>,
    /// Last time it took or finished a conversation: "idle longest" breaks load ties.
    last_change: Timestamp,
    /// Conversations sent back to a queue when it went offline; it gets them first on return.
    preferred: Set<ConversationId>,
}

impl Agent {
    fn available(&self) -> bool {
        self.presence == Presence::Online && (self.active.len() as u64) < u64::from(self.capacity)
    }
}

/// Where a conversation is on the desk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Nowhere,
    Waiting {
        queue: QueueIx,
        priority: Priority,
    },
    Assigned {
        agent: AgentId,
        queue: QueueIx,
        priority: Priority,
    },
}

/// Where an enqueued conversation ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    Agent(AgentId),
    Waiting {
        position: u32,
        estimated_wait_ms: Option<u64>,
    },
}

#[derive(Debug)]
pub struct Desk {
    tenant: TenantId,
    queues: Vec<Queue>,
    by_name: Map<QueueName, QueueIx>,
    agents: Map<AgentId, Agent>,
    placements: Map<ConversationId, Placement>,
    seq: u64,
}

impl Desk {
    /// `queues` must be validated (fallbacks name existing queues).
    pub fn new(tenant: TenantId, queues: &[QueueConfig]) -> Self {
        let by_name: Map<QueueName, QueueIx> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| (QueueName::new(&q.name), i))
            .collect();
        let mut desk = Self {
            tenant,
            queues: queues.iter().map(Queue::new).collect(),
            by_name,
            agents: Map::default(),
            placements: Map::default(),
            seq: 0,
        };
        // Links between queues (fallback, after hours) once every queue has its index.
        desk.reconfigure(queues);
        desk
    }

    /// Takes reloaded, validated queue settings: each queue keeps its place in the list, its
    /// waiting conversations and statistics; new queues are added at the end. Queues missing
    /// from `queues` stay as they are (the caller refuses a reload that removes one).
    pub fn reconfigure(&mut self, queues: &[QueueConfig]) {
        for q in queues {
            if !self.by_name.contains_key(q.name.as_str()) {
                let ix = self.queues.len();
                self.by_name.insert(QueueName::new(&q.name), ix);
                self.queues.push(Queue::new(q));
            }
        }
        for q in queues {
            let ix = self.by_name[q.name.as_str()];
            let fallback = q.fallback.as_deref().map(|f| self.by_name[f]);
            let after_hours = q.after_hours_queue.as_deref().map(|a| self.by_name[a]);
            let queue = &mut self.queues[ix];
            queue.sla_target_ms = q.sla_target_secs * 1_000;
            queue.max_wait_ms = q.max_wait_secs * 1_000;
            queue.max_wait_boost = q.max_wait_priority_boost;
            queue.fallback = fallback;
            queue.after_hours = after_hours;
            queue.hours = q
                .hours
                .as_ref()
                .map(|h| h.build().expect("validated by Config::validate"));
        }
    }

    pub fn queue_ix(&self, name: &str) -> Option<QueueIx> {
        self.by_name.get(name).copied()
    }

    pub fn queue_name(&self, q: QueueIx) -> &QueueName {
        &self.queues[q].name
    }

    pub fn sla_target_ms(&self, q: QueueIx) -> u64 {
        self.queues[q].sla_target_ms
    }

    pub fn queue_names(&self) -> impl Iterator<Item = &QueueName> {
        self.queues.iter().map(|q| &q.name)
    }

    pub fn has_agent(&self, agent: &str) -> bool {
        self.agents.contains_key(agent)
    }

    pub fn agent_available(&self, agent: &str) -> bool {
        self.agents.get(agent).is_some_and(Agent::available)
    }

    pub fn location(&self, conversation: ConversationId) -> Location {
        match self.placements.get(&conversation) {
            None => Location::Nowhere,
            Some(Placement::Waiting(w)) => Location::Waiting {
                queue: w.queue,
                priority: w.key.priority.0,
            },
            Some(Placement::Assigned(a)) => Location::Assigned {
                agent: a.agent.clone(),
                queue: a.queue,
                priority: a.priority,
            },
        }
    }

    /// Where a waiting conversation stands: position and estimated wait.
    pub fn waiting_status(&self, conversation: ConversationId, now: Timestamp) -> Option<Placed> {
        let Some(Placement::Waiting(w)) = self.placements.get(&conversation) else {
            return None;
        };
        let ahead = self.queues[w.queue].ahead_of(&w.key);
        Some(Placed::Waiting {
            position: ahead as u32,
            estimated_wait_ms: self.wait_from_opening(w.queue, ahead, now),
        })
    }

    /// The estimated wait of a conversation arriving now with `priority`: None when no agent
    /// of the queue is online (unbounded), unless the queue is closed (see
    /// [`Desk::wait_from_opening`]).
    pub fn estimate(&self, q: QueueIx, priority: Priority, now: Timestamp) -> Option<u64> {
        self.wait_from_opening(q, self.queues[q].at_or_above(priority), now)
    }

    /// When queue `q` next opens, if it is closed at `now`.
    pub fn closed_until(&self, q: QueueIx, now: Timestamp) -> Option<Timestamp> {
        self.queues[q].hours.as_ref()?.closed_until(now)
    }

    /// Where queue `q`'s messages go while it is closed, if it says.
    pub fn after_hours(&self, q: QueueIx) -> Option<QueueIx> {
        self.queues[q].after_hours
    }

    /// The wait with `ahead` before it, counted from the opening while the queue is closed:
    /// the time until it opens plus the wait then by its online agents (none online yet: the
    /// time until it opens).
    pub(super) fn wait_from_opening(
        &self,
        q: QueueIx,
        ahead: usize,
        now: Timestamp,
    ) -> Option<u64> {
        let wait = self.wait_for(q, ahead);
        match self.closed_until(q, now) {
            Some(opens) => {
                let closed = opens.as_millis().saturating_sub(now.as_millis());
                Some(closed + wait.unwrap_or(0))
            }
            None => wait,
        }
    }

    /// Wait of the conversation with `ahead` conversations before it: none while free capacity
    /// covers them; after that each conversation ahead needs one handle time of one slot of the
    /// queue's online capacity.
    fn wait_for(&self, q: QueueIx, ahead: usize) -> Option<u64> {
        let (free, online_capacity, _, _) = self.capacity(q);
        if (ahead as u64) < free {
            return Some(0);
        }
        if online_capacity == 0 {
            return None;
        }
        let slots_needed = (ahead as u64 - free + 1) as f64;
        Some((slots_needed * self.queues[q].avg_handle_ms / online_capacity as f64).round() as u64)
    }

    /// (free capacity, online capacity, available agents, online agents) of a queue.
    fn capacity(&self, q: QueueIx) -> (u64, u64, u32, u32) {
        let (mut free, mut online_capacity, mut available, mut online) = (0, 0, 0, 0);
        for id in &self.queues[q].members {
            let a = &self.agents[id];
            if a.presence == Presence::Online {
                online += 1;
                online_capacity += u64::from(a.capacity);
                let load = a.active.len() as u64;
                if load < u64::from(a.capacity) {
                    available += 1;
                    free += u64::from(a.capacity) - load;
                }
            }
        }
        (free, online_capacity, available, online)
    }

    /// Puts a conversation that is on no queue into queue `q` and gives it to an agent if one
    /// is free.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct fact of the placement
    pub fn enqueue(
        &mut self,
        now: Timestamp,
        conversation: ConversationId,
        q: QueueIx,
        priority: Priority,
        reason: Reason,
        preferred: Option<AgentId>,
        avoid: Option<AgentId>,
        out: &mut Vec<Effect>,
    ) -> Placed {
        debug_assert!(!self.placements.contains_key(&conversation));
        // The youngest at its priority: everyone at that priority or above is ahead.
        let ahead = self.queues[q].at_or_above(priority);
        self.insert_waiting(
            now,
            now,
            conversation,
            q,
            priority,
            reason,
            preferred,
            avoid,
        );
        self.try_assign_queue(now, q, out);
        self.placed(now, conversation, reason, Some(ahead), out)
    }

    /// Moves a waiting conversation to queue `q` (keeping its age), at least at `priority`.
    pub fn move_waiting(
        &mut self,
        now: Timestamp,
        conversation: ConversationId,
        q: QueueIx,
        priority: Priority,
        reason: Reason,
        out: &mut Vec<Effect>,
    ) -> Placed {
        let Some(Placement::Waiting(w)) = self.placements.remove(&conversation) else {
            unreachable!("move_waiting is only called for a waiting conversation");
        };
        self.queues[w.queue].take(&w.key);
        let priority = priority.max(w.key.priority.0);
        self.insert_waiting(
            w.key.since,
            now,
            conversation,
            q,
            priority,
            reason,
            w.preferred,
            None,
        );
        self.try_assign_queue(now, q, out);
        self.placed(now, conversation, reason, None, out)
    }

    /// Raises the priority of a waiting conversation (never lowers it).
    pub fn raise_priority(&mut self, conversation: ConversationId, priority: Priority) {
        let Some(Placement::Waiting(w)) = self.placements.get_mut(&conversation) else {
            return;
        };
        if priority <= w.key.priority.0 {
            return;
        }
        let queue = &mut self.queues[w.queue];
        queue.take(&w.key);
        w.key.priority = Reverse(priority);
        queue.add(w.key);
    }

    /// Gives a conversation that is on no queue straight to `agent`, which must be available.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct fact of the placement
    pub fn assign_direct(
        &mut self,
        now: Timestamp,
        conversation: ConversationId,
        agent: &AgentId,
        q: QueueIx,
        priority: Priority,
        reason: Reason,
        out: &mut Vec<Effect>,
    ) {
        debug_assert!(!self.placements.contains_key(&conversation));
        debug_assert!(self.agent_available(agent.as_str()));
        let a = self
            .agents
            .get_mut(agent)
            .expect("caller checked the agent");
        a.active.push(conversation);
        a.last_change = now;
        self.placements.insert(
            conversation,
            Placement::Assigned(Assigned {
                agent: agent.clone(),
                queue: q,
                since: now,
                priority,
            }),
        );
        out.push(Effect::Assigned {
            tenant: self.tenant.clone(),
            agent: agent.clone(),
            conversation,
            queue: self.queues[q].name.clone(),
            reason,
            waited_ms: 0,
        });
    }

    /// Takes a waiting conversation off its queue (it goes to the bot, say).
    pub fn remove_waiting(&mut self, conversation: ConversationId) {
        if let Some(Placement::Waiting(w)) = self.placements.get(&conversation) {
            self.queues[w.queue].take(&w.key);
            self.placements.remove(&conversation);
        }
    }

    /// Time passes: waiting conversations past the SLA target count as breaches (once per
    /// queue); past the max wait they move to the fallback queue or rise in priority (once).
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let mut overdue = Vec::new();
        for (qi, queue) in self.queues.iter_mut().enumerate() {
            // Its clocks stop while it is closed: nothing can breach then.
            if queue
                .hours
                .as_ref()
                .is_some_and(|h| h.closed_until(now).is_some())
            {
                continue;
            }
            for key in &queue.waiting {
                let Some(Placement::Waiting(w)) = self.placements.get_mut(&key.conversation) else {
                    unreachable!("every queue entry has its placement");
                };
                // The open time is at most the wall time: counted only past the target.
                let wall_ms = now.since(key.since).as_millis() as u64;
                if !w.breached
                    && wall_ms > queue.sla_target_ms
                    && queue.waited_ms(key.since, now) > queue.sla_target_ms
                {
                    w.breached = true;
                    queue.breaches += 1;
                    out.push(Effect::SlaBreached {
                        tenant: self.tenant.clone(),
                        queue: queue.name.clone(),
                    });
                }
                if !w.escalated
                    && now.since(w.queue_since).as_millis() as u64 > queue.max_wait_ms
                    && queue.waited_ms(w.queue_since, now) > queue.max_wait_ms
                {
                    overdue.push((qi, key.conversation));
                }
            }
        }
        for (from, conversation) in overdue {
            let queue = &self.queues[from];
            let (to, boost) = match queue.fallback {
                Some(f) => (f, 0),
                None => (from, queue.max_wait_boost),
            };
            let Some(Placement::Waiting(w)) = self.placements.get(&conversation) else {
                continue; // assigned by an earlier move in this loop
            };
            let priority = w.key.priority.0.saturating_add(boost);
            if to == from {
                self.raise_priority(conversation, priority);
                if let Some(Placement::Waiting(w)) = self.placements.get_mut(&conversation) {
                    w.escalated = true;
                }
            } else {
                self.move_waiting(
                    now,
                    conversation,
                    to,
                    priority,
                    Reason::MaxWaitExceeded,
                    out,
                );
            }
            out.push(Effect::Escalated {
                tenant: self.tenant.clone(),
                conversation,
                from: self.queues[from].name.clone(),
                to: self.queues[to].name.clone(),
                priority,
            });
        }
    }

    pub fn agent_view(&self, agent: &AgentId) -> Result<AgentView, CoreError> {
        let a = self
            .agents
            .get(agent)
            .ok_or_else(|| agent_not_found(agent))?;
        Ok(AgentView {
            tenant: self.tenant.clone(),
            id: agent.clone(),
            presence: a.presence,
            capacity: a.capacity,
            queues: a
                .queues
                .iter()
                .map(|&q| self.queues[q].name.clone())
                .collect(),
            conversations: a.active.clone(),
        })
    }

    pub fn stats(&self, q: QueueIx, now: Timestamp, default_priority: Priority) -> QueueStatsView {
        let queue = &self.queues[q];
        let (free, _, available, online) = self.capacity(q);
        QueueStatsView {
            tenant: self.tenant.clone(),
            queue: queue.name.clone(),
            depth: queue.waiting.len() as u32,
            available_agents: available,
            online_agents: online,
            free_capacity: free as u32,
            estimated_wait_ms: self.estimate(q, default_priority, now),
            sla_target_ms: queue.sla_target_ms,
            max_wait_ms: queue.max_wait_ms,
            sla_attainment: if queue.assignments == 0 {
                1.0
            } else {
                queue.met_sla as f64 / queue.assignments as f64
            },
            assignments_total: queue.assignments,
            sla_breaches_total: queue.breaches,
            average_handle_ms: queue.avg_handle_ms.round() as u64,
            oldest_wait_ms: queue
                .oldest_since()
                .map_or(0, |since| now.since(since).as_millis() as u64),
        }
    }

    /// Checks the desk's invariants; for tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut waiting = 0;
        for (qi, q) in self.queues.iter().enumerate() {
            for key in &q.waiting {
                match self.placements.get(&key.conversation) {
                    Some(Placement::Waiting(w)) if w.queue == qi && w.key == *key => waiting += 1,
                    other => {
                        return Err(format!(
                            "queue {} holds {} but its placement is {other:?}",
                            q.name, key.conversation
                        ));
                    }
                }
            }
            let counted: usize = q.by_priority.values().sum();
            if counted != q.waiting.len() {
                return Err(format!(
                    "queue {} counts {counted} by priority but holds {}",
                    q.name,
                    q.waiting.len()
                ));
            }
            for m in &q.members {
                if !self.agents[m].queues.contains(&qi) {
                    return Err(format!("{m} is a member of {} it does not serve", q.name));
                }
            }
        }
        let mut assigned = 0;
        for (id, a) in &self.agents {
            if a.active.len() > a.capacity as usize {
                return Err(format!(
                    "agent {id} has {} conversations, capacity {}",
                    a.active.len(),
                    a.capacity
                ));
            }
            if a.presence == Presence::Offline && !a.active.is_empty() {
                return Err(format!("offline agent {id} still has conversations"));
            }
            for c in &a.active {
                match self.placements.get(c) {
                    Some(Placement::Assigned(p)) if &p.agent == id => assigned += 1,
                    other => return Err(format!("agent {id} holds {c} placed {other:?}")),
                }
            }
        }
        if waiting + assigned != self.placements.len() {
            return Err(format!(
                "{} placements but {waiting} waiting and {assigned} assigned",
                self.placements.len()
            ));
        }
        Ok(())
    }

    /// Conversations on the desk (waiting or assigned): for tests.
    pub fn placed_conversations(&self) -> impl Iterator<Item = ConversationId> + '_ {
        self.placements.keys().copied()
    }
}

fn agent_not_found(agent: &AgentId) -> CoreError {
    CoreError::NotFound {
        what: "agent",
        id: agent.to_string(),
    }
}
