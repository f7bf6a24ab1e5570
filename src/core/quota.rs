//! Outbound admission for one portfolio (tenant): the platform's quotas, enforced with the
//! shard's injected time (shared/design/WHATSAPP.md).
//!
//! - **Throughput**: a token bucket per business number (governor GCRA), counting inbound and
//!   outbound together: inbound messages take tokens too, so a spike of customer messages eats
//!   outbound headroom, as on the platform.
//! - **Pair limit**: a keyed bucket per (business number, customer); idle pairs are swept.
//! - **Messaging limit**: unique customers reached by business-initiated sends (the window was
//!   closed) in a moving 24 hours, per portfolio. A customer stays counted until 24 hours after
//!   the *last* such send; replies inside an open window never count.
//! - **Window rule**: a free-form (session) message to a customer whose window is closed is
//!   refused: a template is needed. It is never sent.
//! - **Batch mode**: at `batch_threshold` of the limit, low-priority sends are queued instead of
//!   sent one by one, and released on ticks in waves that fit the remaining budget (less the
//!   reserve kept for higher classes) and the throughput bucket. Queued sends to customers who
//!   already count cost no new slot and go first. Queued sends past their validity expire.
//!
//! A bucket token taken by a check that a later check refuses is not given back: the error is
//! on the side of sending less, never more. The messaging-limit count is exact.
//!
//! Governor's limiters read a `FakeRelativeClock` that this module advances to each command's
//! time: they never see the wall clock.
use std::collections::VecDeque;
use std::hash::BuildHasher as _;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, FakeRelativeClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::Timestamp;
use crate::config::{Category, NumberConfig, QuotaConfig, Rule};
use crate::model::{CustomerNumber, Template, TenantId};

use super::positions::{Handle, Positions};
use super::queue::Queue;
use super::{Effect, Map, identity};

use serde::{Deserialize, Serialize};

mod batch;
mod controls;
mod counts;
mod forecast;
mod lifecycle;
use counts::{Number, Reach};
mod pause;
mod provider;
mod state;
mod types;
pub use controls::{
    AuditEntry, Change, NumberSnapshot, OverrideView, PlanRequest, PlanResult, QuotaSnapshot,
};
pub use forecast::Forecast;
pub use lifecycle::{CancelError, CancelTarget, ConsentState, ConsentView, Hold};
pub use pause::PauseView;
pub use state::{QuotaState, RestoreError};
pub use types::*;

type NoOp = governor::middleware::NoOpMiddleware<governor::nanos::Nanos>;
/// The number buckets report their remaining capacity, for the state SREs read.
type DirectLimiter = RateLimiter<
    NotKeyed,
    InMemoryState,
    FakeRelativeClock,
    governor::middleware::StateInformationMiddleware,
>;
type PairLimiter = RateLimiter<(u16, CustomerNumber), counts::Pairs, FakeRelativeClock, NoOp>;

#[derive(Debug)]
struct Send {
    view: SendView,
    /// Fingerprint of the idempotency key (the log's index by key).
    key_fp: u128,
    number: u16,
    to: CustomerNumber,
    content: Arc<str>,
    template: Option<Arc<Template>>,
    /// Whether the send needs a new messaging-limit slot (business-initiated, new customer)
    /// as of when it was admitted or queued.
    business_initiated: bool,
}

/// Sends remembered for status queries and idempotency, in id order. Ids are sequential, so
/// the log is a ring indexed by id (no hashing), and forgetting the oldest is a pop. An entry
/// is None only while a batch wave has it out.
///
/// A send still waiting (queued, or scheduled weeks ahead) is never forgotten: when the ring
/// passes it, it moves to `held` until it leaves its queue (swept by `Quotas::sweep`).
#[derive(Debug)]
struct SendLog {
    /// The id of `sends[0]`.
    first: u64,
    /// In pages: a log of hundreds of thousands of sends grows without copying itself.
    sends: Queue<Option<Send>>,
    /// Sends by their idempotency key's fingerprint, read from the send found: a table that
    /// grows a few entries at a time (a map rehashing 2²⁰ keys at once stopped the shard for
    /// ~100 ms). Every send it files is in `sends` or `held`.
    by_key: Positions<SendId>,
    /// Hashes a fingerprint's low half for `by_key` (randomly seeded per process).
    hasher: foldhash::fast::RandomState,
    /// Waiting sends older than `first`.
    held: Map<u64, Send>,
}

/// Where `by_key` files a key's fingerprint: the hash of its low half.
fn key_hash(hasher: &foldhash::fast::RandomState, fp: u128) -> u64 {
    hasher.hash_one(fp as u64)
}

impl Handle for SendId {
    const WORDS: usize = 2;
    fn to_word(self) -> u64 {
        self.0
    }
    fn from_word(word: u64) -> Self {
        SendId(word)
    }
}

impl SendLog {
    fn new(first: u64) -> Self {
        Self {
            first,
            sends: Queue::default(),
            by_key: Positions::default(),
            hasher: foldhash::fast::RandomState::default(),
            held: Map::default(),
        }
    }

    fn index(&self, id: SendId) -> Option<usize> {
        let i = usize::try_from(id.0.checked_sub(self.first)?).ok()?;
        (i < self.sends.len()).then_some(i)
    }

    fn get(&self, id: SendId) -> Option<&Send> {
        match self.index(id) {
            Some(i) => self.sends.get(i)?.as_ref(),
            None => self.held.get(&id.0),
        }
    }

    fn get_mut(&mut self, id: SendId) -> Option<&mut Send> {
        match self.index(id) {
            Some(i) => self.sends.get_mut(i)?.as_mut(),
            None => self.held.get_mut(&id.0),
        }
    }

    fn take(&mut self, id: SendId) -> Option<Send> {
        match self.index(id) {
            Some(i) => self.sends.get_mut(i)?.take(),
            None => self.held.remove(&id.0),
        }
    }

    fn put(&mut self, send: Send) {
        match self.index(send.view.id) {
            Some(i) => self.sends[i] = Some(send),
            None if send.view.id.0 < self.first && send.view.waiting() => {
                self.held.insert(send.view.id.0, send);
            }
            // Held, and no longer waiting: forgotten, key and all.
            None => {
                self.by_key
                    .remove(key_hash(&self.hasher, send.key_fp), send.view.id);
            }
        }
    }

    /// Forgets held sends that stopped waiting (dispatched, cancelled, expired).
    fn sweep(&mut self) {
        let (by_key, hasher) = (&mut self.by_key, &self.hasher);
        self.held.retain(|_, s| {
            let keep = s.view.waiting();
            if !keep {
                by_key.remove(key_hash(hasher, s.key_fp), s.view.id);
            }
            keep
        });
        if self.by_key.len() < self.by_key.capacity() / 4 {
            // A step at a time (see `Positions::shrink_gradually`), walked on by the tenant's
            // ticks (`Quotas::settle_keys`).
            self.by_key.shrink_gradually();
            self.sends.shrink_to_fit();
        }
    }

    fn by_key(&self, key: &str) -> Option<SendId> {
        self.by_fingerprint(identity::fingerprint(key))
    }

    fn by_fingerprint(&self, fp: u128) -> Option<SendId> {
        self.by_key.find(key_hash(&self.hasher, fp), |id| {
            self.get(id).is_some_and(|s| s.key_fp == fp)
        })
    }

    /// Files send `id`, which the log holds and no key finds yet, under its key's fingerprint
    /// `fp`: the key finds it from now on, not a send it found before.
    fn file(&mut self, fp: u128, id: SendId) {
        let hash = key_hash(&self.hasher, fp);
        if let Some(before) = self.by_fingerprint(fp) {
            self.by_key.remove(hash, before);
        }
        self.by_key.insert(hash, id);
    }

    /// Appends the newest send, forgetting the oldest past `max`.
    fn push(&mut self, send: Send, max: usize) {
        debug_assert_eq!(send.view.id.0, self.first + self.sends.len() as u64);
        let (fp, id) = (send.key_fp, send.view.id);
        self.sends.push_back(Some(send));
        self.file(fp, id);
        while self.sends.len() > max {
            match self.sends.pop_front() {
                Some(Some(old)) if old.view.waiting() => {
                    self.held.insert(old.view.id.0, old);
                }
                Some(Some(old)) => {
                    self.by_key
                        .remove(key_hash(&self.hasher, old.key_fp), old.view.id);
                }
                _ => {}
            }
            self.first += 1;
        }
    }
}

/// Quota state of one portfolio.
#[derive(Debug)]
pub struct Quotas {
    tenant: TenantId,
    /// The effective settings: the base (from the config file) with active overrides applied.
    config: QuotaConfig,
    base_config: QuotaConfig,
    base_numbers: Vec<NumberConfig>,
    overrides: Vec<controls::Override>,
    next_override: u64,
    audit: VecDeque<AuditEntry>,
    window_ms: u64,
    tick_ms: u64,
    clock: FakeRelativeClock,
    /// The shard time the governor clock's zero stands for, and how far it was advanced.
    clock_epoch: Option<Timestamp>,
    clock_at: Timestamp,
    numbers: Vec<Number>,
    by_number: Map<Arc<str>, u16>,
    pairs: PairLimiter,
    pair_backoff: Map<(u16, CustomerNumber), Timestamp>,
    reach: Reach,
    /// Queued sends that cost no new slot (in-window, or to a customer already counted when
    /// queued), and queued sends to new customers; each in arrival order. Release re-checks
    /// everything, so a send whose customer changed status while queued is still right.
    queue_free: VecDeque<SendId>,
    queue_new: VecDeque<SendId>,
    /// The earliest validity end among queued sends (an expiry pass runs then).
    next_expiry: Timestamp,
    batch_mode: bool,
    /// Rules in shadow mode that would have refused during the current command.
    shadow_hits: Vec<Rule>,
    log: SendLog,
    next_send: u64,
    /// The send-lifecycle rules' state: scheduled sends, consent, frequency counts, holds.
    life: lifecycle::Lifecycle,
    /// Paused tags (see `pause`), and the sends they hold, in arrival order.
    pauses: Vec<PauseView>,
    paused: VecDeque<SendId>,
    /// The last forecast ticks made, and when (see `forecast`).
    forecast: Option<(Timestamp, Forecast)>,
}

/// What a send request says, once its recipient is known.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub from: String,
    pub to: CustomerNumber,
    pub category: Category,
    pub content: String,
    pub template: Option<Arc<Template>>,
    pub priority: Option<SendPriority>,
    pub idempotency_key: String,
    pub valid_for_ms: Option<u64>,
    /// Whether the customer's service window is open now.
    pub window_open: bool,
    /// The caller's label, for cancel-by-match.
    pub tag: Option<String>,
    /// Held until then (at most `quotas.max_schedule_ahead_secs` ahead; not in the past).
    pub send_at: Option<Timestamp>,
}

/// Why a send request is malformed (the shard turns it into INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSend {
    pub field: &'static str,
    pub problem: String,
}

impl Quotas {
    /// Walks on the send log's key index, if a table of it is being emptied (after a growth
    /// or a shrink), by up to `slots` slots.
    pub fn settle_keys(&mut self, slots: usize) {
        self.log.by_key.settle(slots);
    }

    /// `numbers` and `config` must be validated.
    pub fn new(
        tenant: TenantId,
        numbers: &[NumberConfig],
        config: &QuotaConfig,
        window_ms: u64,
        tick_ms: u64,
    ) -> Self {
        let clock = FakeRelativeClock::default();
        let base_numbers = numbers.to_vec();
        let numbers: Vec<Number> = numbers.iter().map(|n| Number::new(n, &clock)).collect();
        let by_number = numbers
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i as u16))
            .collect();
        Self {
            tenant,
            pairs: RateLimiter::new(pair_quota(config), counts::Pairs::default(), clock.clone()),
            config: config.clone(),
            base_config: config.clone(),
            base_numbers,
            overrides: Vec::new(),
            next_override: 1,
            audit: VecDeque::new(),
            window_ms,
            tick_ms,
            clock,
            clock_epoch: None,
            clock_at: Timestamp(0),
            numbers,
            by_number,
            pair_backoff: Map::default(),
            reach: Reach::default(),
            queue_free: VecDeque::new(),
            queue_new: VecDeque::new(),
            next_expiry: Timestamp(u64::MAX),
            batch_mode: false,
            shadow_hits: Vec::new(),
            log: SendLog::new(1),
            next_send: 1,
            life: lifecycle::Lifecycle::new(config),
            pauses: Vec::new(),
            paused: VecDeque::new(),
            forecast: None,
        }
    }

    /// Moves governor's clock to `now` (never backwards: a wall clock stepping back holds it).
    fn sync_clock(&mut self, now: Timestamp) {
        match self.clock_epoch {
            None => {
                self.clock_epoch = Some(now);
                self.clock_at = now;
            }
            Some(_) if now > self.clock_at => {
                self.clock.advance(now.since(self.clock_at));
                self.clock_at = now;
            }
            Some(_) => {}
        }
    }

    fn limit(&self) -> Option<u64> {
        self.config.messaging_limit.customers().map(u64::from)
    }

    /// Slots of the limit that low-priority traffic may use.
    fn low_priority_cap(&self, limit: u64) -> u64 {
        limit - (limit as f64 * self.config.reserve).ceil() as u64
    }

    /// New customers low-priority traffic may still reach now (u64::MAX when unlimited).
    fn low_budget(&self) -> u64 {
        self.limit().map_or(u64::MAX, |l| {
            self.low_priority_cap(l).saturating_sub(self.reach.count())
        })
    }

    fn threshold_reached(&self) -> bool {
        self.limit()
            .is_some_and(|l| self.reach.count() as f64 >= (l as f64 * self.config.batch_threshold))
    }

    /// Updates batch mode from usage; an effect when it changes.
    fn update_batch_mode(&mut self, out: &mut Vec<Effect>) {
        let on = self.threshold_reached();
        if on != self.batch_mode {
            self.batch_mode = on;
            out.push(Effect::BatchMode {
                tenant: self.tenant.clone(),
                on,
            });
        }
    }

    /// An inbound message on `number` takes a token from its bucket: the platform counts
    /// inbound and outbound together. Never refused (a customer's message already arrived).
    pub fn inbound(&mut self, now: Timestamp, number: &str) {
        self.sync_clock(now);
        if let Some(&n) = self.by_number.get(number) {
            let _ = self.numbers[n as usize].take(now, &self.clock);
        }
    }

    /// Checks a request's own fields; the number must be one of the portfolio's.
    pub fn check_request(&self, r: &SendRequest) -> Result<u16, BadSend> {
        let number = *self.by_number.get(r.from.as_str()).ok_or_else(|| BadSend {
            field: "from",
            problem: format!(
                "is not a business number of this tenant; its numbers are {:?}",
                self.numbers.iter().map(|n| &*n.id).collect::<Vec<_>>()
            ),
        })?;
        if r.idempotency_key.is_empty() || r.idempotency_key.len() > 256 {
            return Err(BadSend {
                field: "idempotency_key",
                problem: "must be 1 to 256 bytes; reuse it when retrying the same send".into(),
            });
        }
        if r.content.is_empty() {
            return Err(BadSend {
                field: "content",
                problem: "is empty; send the text or the template name".into(),
            });
        }
        Ok(number)
    }

    /// Admits, queues, schedules or refuses a send. A repeated idempotency key returns the
    /// first answer.
    pub fn send(
        &mut self,
        now: Timestamp,
        r: SendRequest,
        out: &mut Vec<Effect>,
    ) -> Result<(SendId, Admission), BadSend> {
        if let Some(id) = self.log.by_key(&r.idempotency_key)
            && let Some(first) = self.log.get(id)
        {
            return Ok((id, first.view.first_answer));
        }
        let number = self.check_request(&r)?;
        let send_at = self.check_schedule(now, r.send_at)?;
        self.sync_clock(now);
        self.reach.expire(now, self.window_ms);
        let priority = r
            .priority
            .unwrap_or(if self.config.low_priority.contains(&r.category) {
                SendPriority::Low
            } else {
                SendPriority::Normal
            });
        let id = SendId(self.next_send);
        self.next_send += 1;
        let valid_for = r
            .valid_for_ms
            .unwrap_or(self.config.default_validity_secs * 1_000);
        let key_fp = identity::fingerprint(&r.idempotency_key);
        let key: Arc<str> = Arc::from(r.idempotency_key.as_str());
        // A scheduled send's validity counts from its time.
        let starts = send_at.unwrap_or(now);
        let mut send = Send {
            key_fp,
            view: SendView {
                id,
                idempotency_key: key,
                from: self.numbers[number as usize].id.clone(),
                category: r.category,
                priority,
                state: SendState::Refused,
                reason: None,
                provider_code: None,
                first_answer: Admission::Dispatched,
                created: now,
                valid_until: Timestamp(starts.as_millis().saturating_add(valid_for)),
                tag: r.tag.filter(|t| !t.is_empty()).map(Arc::from),
                send_at,
            },
            number,
            to: r.to,
            content: Arc::from(r.content),
            template: r.template,
            business_initiated: !r.window_open,
        };
        let answer = match send_at {
            Some(at) => self.schedule(&send, at),
            None => self.first_admission(now, &mut send, r.window_open),
        };
        send.view.first_answer = answer;
        self.flush_shadow(out);
        self.settle(now, &mut send, answer, true, out);
        self.log.push(send, self.config.max_tracked_sends);
        self.update_batch_mode(out);
        Ok((id, answer))
    }

    /// The window rule, then the admission rules, for a send that was not queued before.
    fn first_admission(&mut self, now: Timestamp, send: &mut Send, window_open: bool) -> Admission {
        if send.view.category == Category::Session
            && !window_open
            && !self.shadowed_rule(Rule::Window)
        {
            refuse(Refusal::TemplateRequired, None)
        } else {
            self.admit(now, send, true)
        }
    }

    /// Puts a send where its answer says (dispatched, queued, scheduled, refused) and tells
    /// the status stream (`accepted` first, unless it was accepted before: a scheduled send
    /// coming due).
    fn settle(
        &mut self,
        now: Timestamp,
        send: &mut Send,
        answer: Admission,
        accepted: bool,
        out: &mut Vec<Effect>,
    ) {
        let id = send.view.id;
        match answer {
            Admission::Dispatched => {
                send.view.state = SendState::Dispatched;
                self.dispatch_effect(now, send, out);
            }
            Admission::Queued {
                held: Some(Hold::Paused),
                ..
            } => {
                send.view.state = SendState::Queued;
                self.paused.push_back(id);
                self.next_expiry = self.next_expiry.min(send.view.valid_until);
            }
            Admission::Queued { .. } => {
                send.view.state = SendState::Queued;
                if send.business_initiated && !self.reach.counts(&send.to) {
                    self.queue_new.push_back(id);
                } else {
                    self.queue_free.push_back(id);
                }
                self.next_expiry = self.next_expiry.min(send.view.valid_until);
            }
            Admission::Scheduled { at } => {
                send.view.state = SendState::Scheduled;
                self.life.scheduled.insert((at, id));
            }
            Admission::Refused { reason, .. } => {
                send.view.state = SendState::Refused;
                send.view.reason = Some(reason);
            }
        }
        if accepted && send.view.state != SendState::Refused {
            self.status_as(send, SendState::Accepted, out);
        }
        self.status(send, out);
    }

    /// The admission rules for a send that is not queued yet (`fresh`) or is being released
    /// from the queue (`!fresh`: it may not queue again, it stays where it is).
    fn admit(&mut self, now: Timestamp, send: &mut Send, fresh: bool) -> Admission {
        // A paused tag holds its sends (a free-form reply is refused: its window does not
        // wait); opted-out marketing is refused whatever its tag.
        if fresh
            && let Some(until) = self.paused_until(send)
            && !(send.view.category == Category::Marketing && self.life.opted_out(&send.to))
        {
            let retry = until.as_millis().saturating_sub(now.as_millis());
            if send.view.category == Category::Session {
                return refuse(Refusal::TagPaused, Some(retry));
            }
            return self.queue_until(now, send, until, Some(Hold::Paused));
        }
        let n = send.number as usize;
        let number = &self.numbers[n];
        if number.backoff_until > now {
            return refuse(
                Refusal::NumberBackoff,
                Some(number.backoff_until.as_millis() - now.as_millis()),
            );
        }
        if send.view.category == Category::Marketing && number.marketing_paused_until > now {
            return refuse(
                Refusal::MarketingPaused,
                Some(number.marketing_paused_until.as_millis() - now.as_millis()),
            );
        }
        if send.view.category == Category::Marketing && self.life.opted_out(&send.to) {
            return refuse(Refusal::OptedOut, None);
        }
        // A free-form reply must go while the window is open (it is checked only on request),
        // so it is never batched, whatever priority the caller gave it.
        let low =
            send.view.priority == SendPriority::Low && send.view.category != Category::Session;
        // Quiet hours, Meta's per-user marketing hold (131049), the frequency cap: the send
        // waits in the batch queue, or is refused with the exact retry-after when it could
        // not go before its validity ends (quiet hours: it waits and expires).
        if low && let Some(wait) = self.life.wait(now, send, &self.config) {
            let retry = wait.until.as_millis().saturating_sub(now.as_millis());
            if fresh && (wait.hold == Hold::QuietHours || wait.until < send.view.valid_until) {
                return self.queue_until(now, send, wait.until, Some(wait.hold));
            }
            // Every hold ends by itself: the caller may retry then.
            return refuse(Refusal::FrequencyCap, Some(retry));
        }
        let needs_slot = send.business_initiated && !self.reach.counts(&send.to);
        if fresh && low && self.batch_mode {
            return self.queue_or_refuse(now, send);
        }
        if needs_slot && let Some(limit) = self.limit() {
            let cap = if low {
                self.low_priority_cap(limit)
            } else {
                limit
            };
            if self.reach.count() >= cap && !self.shadowed_rule(Rule::MessagingLimit) {
                if fresh && low {
                    return self.queue_or_refuse(now, send);
                }
                let retry = self
                    .reach
                    .nth_release(0, self.window_ms)
                    .map(|t| t.as_millis().saturating_sub(now.as_millis()));
                return refuse(Refusal::MessagingLimit, retry);
            }
        }
        let pair = (send.number, send.to.clone());
        if let Some(until) = self.pair_backoff.get(&pair)
            && *until > now
        {
            return refuse(
                Refusal::PairLimit,
                Some(until.as_millis() - now.as_millis()),
            );
        }
        if let Err(not_until) = self.pairs.check_key(&pair)
            && !self.shadowed_rule(Rule::Pair)
        {
            return refuse(
                Refusal::PairLimit,
                Some(ms(not_until.wait_time_from(self.clock.now()))),
            );
        }
        if let Err(wait) = self.numbers[n].take(now, &self.clock)
            && !self.shadowed_rule(Rule::Throughput)
        {
            if fresh && low && self.batch_mode {
                return self.queue_or_refuse(now, send);
            }
            return refuse(Refusal::ThroughputLimit, Some(ms(wait).max(1)));
        }
        // Every business-initiated send (re)starts the customer's 24 hours in the count, new
        // slot or not.
        if send.business_initiated {
            self.reach.record(send.to.clone(), now);
            if low {
                self.life.counted(&send.to, now);
            }
        }
        Admission::Dispatched
    }

    /// Whether `rule` is in shadow mode; if so, notes that it would have refused (the caller
    /// lets the send through and `flush_shadow` reports it).
    fn shadowed_rule(&mut self, rule: Rule) -> bool {
        let shadow = self.config.shadow.contains(&rule);
        if shadow {
            self.shadow_hits.push(rule);
        }
        shadow
    }

    fn flush_shadow(&mut self, out: &mut Vec<Effect>) {
        for rule in self.shadow_hits.drain(..) {
            out.push(Effect::ShadowRefusal {
                tenant: self.tenant.clone(),
                rule,
            });
        }
    }

    pub fn view(&self, id: SendId) -> Option<&SendView> {
        self.log.get(id).map(|s| &s.view)
    }

    /// A remembered send by its idempotency key.
    pub fn view_by_key(&self, key: &str) -> Option<&SendView> {
        self.log.by_key(key).and_then(|id| self.view(id))
    }

    /// Usage of the messaging limit now: (customers counted, limit).
    pub fn usage(&self) -> (u64, Option<u64>) {
        (self.reach.count(), self.limit())
    }

    pub fn batch_mode(&self) -> bool {
        self.batch_mode
    }

    pub fn queued(&self) -> usize {
        self.queue_free.len() + self.queue_new.len() + self.paused.len()
    }

    /// Sweeps idle pair buckets (governor's `retain_recent`) and expired pair back-offs.
    pub fn sweep(&mut self, now: Timestamp) {
        self.sync_clock(now);
        self.pairs.retain_recent();
        self.pairs.shrink_to_fit();
        self.pair_backoff.retain(|_, until| *until > now);
        self.reach.expire(now, self.window_ms);
        self.reach.shrink();
        self.log.sweep();
        self.life.sweep(now, self.window_ms);
    }

    /// Tracked pair buckets (for memory accounting and tests).
    /// How many sends were ever requested (a new send's id is the next one): a repeated
    /// idempotency key does not change it.
    pub fn sends_made(&self) -> u64 {
        self.next_send - 1
    }

    /// Sends the log's index of keys files (for tests).
    #[cfg(test)]
    pub fn keys_filed(&self) -> usize {
        self.log.by_key.len()
    }

    pub fn tracked_pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Business numbers: (id, mps, burst).
    pub fn numbers(&self) -> impl Iterator<Item = (&str, u32, u32)> {
        self.numbers.iter().map(|n| (&*n.id, n.mps, n.burst))
    }

    fn dispatch_effect(&self, now: Timestamp, send: &Send, out: &mut Vec<Effect>) {
        out.push(Effect::Dispatch {
            tenant: self.tenant.clone(),
            send: Dispatch {
                id: send.view.id,
                from: self.numbers[send.number as usize].id.clone(),
                to: send.to.clone(),
                category: send.view.category,
                content: send.content.clone(),
                template: send.template.clone(),
                idempotency_key: send.view.idempotency_key.clone(),
                counted: send.business_initiated,
                at: now,
            },
        });
    }

    fn status(&self, send: &Send, out: &mut Vec<Effect>) {
        self.status_as(send, send.view.state, out);
    }

    fn status_as(&self, send: &Send, state: SendState, out: &mut Vec<Effect>) {
        out.push(Effect::SendStatus {
            tenant: self.tenant.clone(),
            id: send.view.id,
            state,
            reason: send.view.reason,
            provider_code: send.view.provider_code,
            idempotency_key: send.view.idempotency_key.clone(),
        });
    }
}

fn refuse(reason: Refusal, retry_after_ms: Option<u64>) -> Admission {
    Admission::Refused {
        reason,
        retry_after_ms,
    }
}

fn ms(d: Duration) -> u64 {
    crate::clock::duration_ms(d)
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("max(1) is not zero")
}

fn mps_quota(mps: u32, burst: u32) -> Quota {
    Quota::per_second(nonzero(mps)).allow_burst(nonzero(burst))
}

fn pair_quota(config: &QuotaConfig) -> Quota {
    Quota::with_period(Duration::from_millis(config.pair_period_ms))
        .expect("pair_period_ms is validated to be positive")
        .allow_burst(nonzero(config.pair_burst))
}
