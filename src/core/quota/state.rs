//! A portfolio's quota state as plain data, for snapshots (the scale-out issue): what must
//! survive a restart or a handover. The rolling count (each counted customer and their last
//! counted send), the send log with the queued sends in their order (idempotency keys
//! included), back-offs and paused marketing, active overrides and the audit trail, batch mode.
//!
//! Settings are not in it: a restored portfolio takes them from its config, with the saved
//! overrides applied on top. Bucket tokens are not in it either: a restored bucket starts full,
//! which can let one burst more through in the first second (the platform's own throughput
//! limit then answers 130429, and the number backs off).
use super::lifecycle::ConsentView;
use super::*;
use crate::core::identity;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaState {
    /// When the state was taken.
    pub at: Timestamp,
    /// Counted customers (E.164) and the time of their last counted send.
    pub counted: Vec<(String, Timestamp)>,
    /// The id of the first entry of `sends`; entries are consecutive ids.
    pub first_send: u64,
    pub sends: Vec<Option<SavedSend>>,
    pub queue_free: Vec<u64>,
    pub queue_new: Vec<u64>,
    pub next_send: u64,
    pub numbers: Vec<SavedNumber>,
    /// (business number id, customer E.164, until)
    pub pair_backoff: Vec<(String, String, Timestamp)>,
    pub overrides: Vec<SavedOverride>,
    pub next_override: u64,
    pub audit: Vec<SavedAudit>,
    pub batch_mode: bool,
    /// Scheduled sends: (due, send id), in due order. (Absent from states saved before
    /// scheduling existed, as are the fields below.)
    #[serde(default)]
    pub scheduled: Vec<(Timestamp, u64)>,
    /// Waiting sends the log's ring has passed (see `SendLog`).
    #[serde(default)]
    pub held_sends: Vec<SavedSend>,
    /// Customers' consent (E.164, consent), sorted by number.
    #[serde(default)]
    pub consent: Vec<(String, ConsentView)>,
    /// The frequency cap's counts: (E.164, times of the last 24 hours), sorted by number.
    #[serde(default)]
    pub capped: Vec<(String, Vec<Timestamp>)>,
    /// Customers held after a 131049: (E.164, until), sorted by number.
    #[serde(default)]
    pub holds: Vec<(String, Timestamp)>,
    /// Paused tags (absent from states saved before pauses existed, as is `paused`).
    #[serde(default)]
    pub pauses: Vec<PauseView>,
    /// The sends the pauses hold, in arrival order.
    #[serde(default)]
    pub paused: Vec<u64>,
    /// When the new customers of the forecast's window were counted (its pace survives).
    #[serde(default)]
    pub new_slots: Vec<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSend {
    /// As status queries show it; `from` is the business number's id.
    pub view: SendView,
    pub to: String,
    pub content: String,
    /// A template send's template (absent from states saved before templates had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Arc<crate::model::Template>>,
    pub business_initiated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedNumber {
    pub id: String,
    pub backoff_until: Timestamp,
    pub marketing_paused_until: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedOverride {
    pub id: u64,
    pub change: Change,
    pub reason: String,
    pub actor: String,
    pub created: Timestamp,
    pub expires: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAudit {
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: String,
    pub after: String,
    pub reason: String,
}

/// Why a saved state does not fit the portfolio as configured now.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("business number {0:?} of a saved send or back-off is no longer configured")]
    UnknownNumber(String),
    #[error("{0:?} in the saved state is not an E.164 number")]
    BadNumber(String),
    #[error("{0:?} in the saved state is not a valid customer identity")]
    BadIdentity(String),
    #[error("the saved overrides no longer fit the configured limits: {0}")]
    Overrides(String),
    #[error("queue {0:?} of a saved conversation is no longer configured")]
    UnknownQueue(String),
    #[error("{0:?} is not a message-id fingerprint")]
    BadFingerprint(String),
    #[error(
        "conversation {id} is saved twice or is not below the saved next conversation id {next}"
    )]
    BadConversationId { id: u64, next: u64 },
}

impl Quotas {
    /// Applies a dispatch made after the saved state was taken (read back from the dispatch
    /// topic, which serves as the changelog between snapshots): a queued send leaves its
    /// queue, a send the state does not know is logged as dispatched under its own id and
    /// key, and a counted one (re)starts its customer's 24 hours. So after a crash nothing is
    /// dispatched twice and nothing that was sent is missing from the count. Apply them in
    /// dispatch order; applying one twice changes nothing.
    pub fn replay_dispatch(&mut self, d: &Dispatch) -> Result<(), RestoreError> {
        let number = self
            .by_number
            .get(&*d.from)
            .copied()
            .ok_or_else(|| RestoreError::UnknownNumber(d.from.to_string()))?;
        match self.log.by_key(&d.idempotency_key) {
            Some(id) => {
                let Some(send) = self.log.get_mut(id) else {
                    return Ok(());
                };
                if !send.view.waiting() {
                    return Ok(()); // already dispatched (or later) in the saved state
                }
                send.view.state = SendState::Dispatched;
                self.queue_free.retain(|&q| q != id);
                self.queue_new.retain(|&q| q != id);
                self.paused.retain(|&q| q != id);
                self.life.scheduled.retain(|&(_, q)| q != id);
            }
            None => {
                if d.id.0 < self.log.first + self.log.sends.len() as u64 {
                    return Ok(()); // an id the log has (or forgot): not a newer send
                }
                // Ids are consecutive: the sends between were refused or are unknown here.
                while self.log.first + (self.log.sends.len() as u64) < d.id.0 {
                    self.log.sends.push_back(None);
                }
                let view = SendView {
                    id: d.id,
                    idempotency_key: d.idempotency_key.clone(),
                    from: d.from.clone(),
                    category: d.category,
                    priority: SendPriority::Normal,
                    state: SendState::Dispatched,
                    reason: None,
                    provider_code: None,
                    first_answer: Admission::Dispatched,
                    created: d.at,
                    valid_until: d.at,
                    tag: None,
                    send_at: None,
                };
                let send = Send {
                    view,
                    key_fp: identity::fingerprint(&d.idempotency_key),
                    number,
                    to: d.to.clone(),
                    content: d.content.clone(),
                    template: d.template.clone(),
                    business_initiated: d.counted,
                };
                self.log.push(send, self.config.max_tracked_sends);
                self.next_send = self.next_send.max(d.id.0 + 1);
            }
        }
        if d.counted {
            self.reach.record(d.to.clone(), d.at);
        }
        Ok(())
    }
}

/// The audit actions the service writes (the log keeps them as static names).
const ACTIONS: &[&str] = &[
    "override_set",
    "override_cleared",
    "override_expired",
    "config_reloaded",
    "consent_set",
    "customer_linked",
    "tag_paused",
    "pause_extended",
    "tag_resumed",
    "pause_expired",
];

fn saved(s: &Send) -> SavedSend {
    SavedSend {
        view: s.view.clone(),
        to: s.to.as_e164().to_owned(),
        content: s.content.to_string(),
        template: s.template.clone(),
        business_initiated: s.business_initiated,
    }
}

/// Per-customer entries as saved: by number, so equal states save equal.
fn sorted<'a, T>(entries: impl Iterator<Item = (&'a CustomerNumber, T)>) -> Vec<(String, T)> {
    let mut v: Vec<(String, T)> = entries.map(|(c, t)| (c.as_e164().to_owned(), t)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn customer(e164: &str) -> Result<CustomerNumber, RestoreError> {
    if identity::looks_e164(e164) {
        Ok(CustomerNumber::from_valid_e164(e164))
    } else {
        Err(RestoreError::BadNumber(e164.to_owned()))
    }
}

impl Quotas {
    /// The state to save (see the module docs for what is in it).
    pub fn state(&self, now: Timestamp) -> QuotaState {
        let number_id = |i: u16| self.numbers[i as usize].id.to_string();
        // Sorted, so equal states save equal (maps iterate in any order).
        let mut counted: Vec<(String, Timestamp)> = self
            .reach
            .last
            .iter()
            .map(|(c, &at)| (c.as_e164().to_owned(), at))
            .collect();
        counted.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let mut pair_backoff: Vec<(String, String, Timestamp)> = self
            .pair_backoff
            .iter()
            .map(|((n, c), &until)| (number_id(*n), c.as_e164().to_owned(), until))
            .collect();
        pair_backoff.sort();
        QuotaState {
            at: now,
            counted,
            first_send: self.log.first,
            sends: self
                .log
                .sends
                .iter()
                .map(|s| s.as_ref().map(saved))
                .collect(),
            queue_free: self.queue_free.iter().map(|id| id.0).collect(),
            queue_new: self.queue_new.iter().map(|id| id.0).collect(),
            next_send: self.next_send,
            numbers: self
                .numbers
                .iter()
                .map(|n| SavedNumber {
                    id: n.id.to_string(),
                    backoff_until: n.backoff_until,
                    marketing_paused_until: n.marketing_paused_until,
                })
                .collect(),
            pair_backoff,
            overrides: self
                .overrides
                .iter()
                .map(|o| SavedOverride {
                    id: o.view.id,
                    change: o.view.change.clone(),
                    reason: o.view.reason.to_string(),
                    actor: o.view.actor.to_string(),
                    created: o.view.created,
                    expires: o.view.expires,
                })
                .collect(),
            next_override: self.next_override,
            audit: self
                .audit
                .iter()
                .map(|e| SavedAudit {
                    at: e.at,
                    actor: e.actor.to_string(),
                    action: e.action.to_owned(),
                    target: e.target.clone(),
                    before: e.before.clone(),
                    after: e.after.clone(),
                    reason: e.reason.clone(),
                })
                .collect(),
            batch_mode: self.batch_mode,
            scheduled: self
                .life
                .scheduled
                .iter()
                .map(|&(at, id)| (at, id.0))
                .collect(),
            held_sends: {
                let mut held: Vec<SavedSend> = self.log.held.values().map(saved).collect();
                held.sort_by_key(|s| s.view.id);
                held
            },
            consent: sorted(self.life.consent.iter().map(|(c, v)| (c, v.clone()))),
            capped: sorted(
                self.life
                    .capped
                    .iter()
                    .map(|(c, t)| (c, t.iter().copied().collect())),
            ),
            holds: sorted(self.life.holds.iter().map(|(c, &until)| (c, until))),
            pauses: self.pauses.clone(),
            paused: self.paused.iter().map(|id| id.0).collect(),
            new_slots: self.reach.new_slots.iter().copied().collect(),
        }
    }

    /// Puts a saved state into a portfolio freshly built from its config. On error the
    /// portfolio is left as it was.
    pub fn restore(&mut self, state: QuotaState) -> Result<(), RestoreError> {
        let number = |id: &str| {
            self.by_number
                .get(id)
                .copied()
                .ok_or_else(|| RestoreError::UnknownNumber(id.to_owned()))
        };
        let mut reach = Reach::default();
        let mut counted = Vec::with_capacity(state.counted.len());
        for (c, at) in &state.counted {
            counted.push((*at, customer(c)?));
        }
        counted.sort_by_key(|(at, _)| *at);
        for (at, c) in counted {
            reach.last.insert(c.clone(), at);
            reach.events.push_back((at, c));
        }
        reach.new_slots = state.new_slots.iter().copied().collect();
        let restored = |s: &SavedSend| -> Result<Send, RestoreError> {
            let number = number(&s.view.from)?;
            Ok(Send {
                view: SendView {
                    from: self.numbers[number as usize].id.clone(),
                    ..s.view.clone()
                },
                key_fp: identity::fingerprint(&s.view.idempotency_key),
                number,
                to: customer(&s.to)?,
                content: Arc::from(s.content.as_str()),
                template: s.template.clone(),
                business_initiated: s.business_initiated,
            })
        };
        let mut log = SendLog::new(state.first_send);
        for s in &state.held_sends {
            let send = restored(s)?;
            let (fp, id) = (send.key_fp, send.view.id);
            log.held.insert(id.0, send);
            log.file(fp, id);
        }
        for saved in &state.sends {
            let send = saved.as_ref().map(restored).transpose()?;
            let key = send.as_ref().map(|s| (s.key_fp, s.view.id));
            log.sends.push_back(send);
            if let Some((fp, id)) = key {
                log.file(fp, id);
            }
        }
        let mut life = lifecycle::Lifecycle::new(&self.config);
        life.scheduled = state
            .scheduled
            .iter()
            .map(|&(at, id)| (at, SendId(id)))
            .collect();
        for (c, view) in &state.consent {
            life.consent.insert(customer(c)?, view.clone());
        }
        for (c, times) in &state.capped {
            life.capped
                .insert(customer(c)?, times.iter().copied().collect());
        }
        for (c, until) in &state.holds {
            life.holds.insert(customer(c)?, *until);
        }
        let mut pair_backoff = Map::default();
        for (n, c, until) in &state.pair_backoff {
            pair_backoff.insert((number(n)?, customer(c)?), *until);
        }
        let mut backoffs = Vec::with_capacity(state.numbers.len());
        for n in &state.numbers {
            backoffs.push((number(&n.id)?, n.backoff_until, n.marketing_paused_until));
        }
        let overrides: Vec<controls::Override> = state
            .overrides
            .iter()
            .map(|o| controls::Override {
                view: OverrideView {
                    id: o.id,
                    change: o.change.clone(),
                    reason: Arc::from(o.reason.as_str()),
                    actor: Arc::from(o.actor.as_str()),
                    created: o.created,
                    expires: o.expires,
                },
            })
            .collect();
        let (config, numbers) = self.effective(&overrides);
        controls::check(&config, &numbers)
            .map_err(|e| RestoreError::Overrides(format!("{}: {}", e.field, e.problem)))?;

        // Everything fits: apply.
        self.overrides = overrides;
        self.next_override = state.next_override;
        self.apply(config, numbers);
        self.reach = reach;
        self.log = log;
        life.configure(&self.config);
        self.life = life;
        self.pair_backoff = pair_backoff;
        for (i, backoff_until, paused_until) in backoffs {
            let n = &mut self.numbers[i as usize];
            n.backoff_until = backoff_until;
            n.marketing_paused_until = paused_until;
        }
        self.queue_free = state.queue_free.iter().map(|&id| SendId(id)).collect();
        self.queue_new = state.queue_new.iter().map(|&id| SendId(id)).collect();
        self.pauses = state.pauses;
        self.paused = state.paused.iter().map(|&id| SendId(id)).collect();
        self.next_expiry = Timestamp(0); // the next tick recomputes it
        self.next_send = state.next_send;
        self.batch_mode = state.batch_mode;
        self.audit = state
            .audit
            .into_iter()
            .map(|e| AuditEntry {
                at: e.at,
                actor: Arc::from(e.actor.as_str()),
                action: ACTIONS
                    .iter()
                    .copied()
                    .find(|a| *a == e.action)
                    .unwrap_or("restored"),
                target: e.target,
                before: e.before,
                after: e.after,
                reason: e.reason,
            })
            .collect();
        Ok(())
    }
}
