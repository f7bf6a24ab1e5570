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
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, FakeRelativeClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::Timestamp;
use crate::config::{Category, NumberConfig, QuotaConfig, Rule};
use crate::model::{CustomerNumber, TenantId};

use super::{Effect, Map, identity};

use serde::{Deserialize, Serialize};

mod controls;
mod state;
pub use controls::{
    AuditEntry, Change, NumberSnapshot, OverrideView, PlanRequest, PlanResult, QuotaSnapshot,
};
pub use state::{QuotaState, RestoreError};

type NoOp = governor::middleware::NoOpMiddleware<governor::nanos::Nanos>;
/// The number buckets report their remaining capacity, for the state SREs read.
type DirectLimiter = RateLimiter<
    NotKeyed,
    InMemoryState,
    FakeRelativeClock,
    governor::middleware::StateInformationMiddleware,
>;
type PairLimiter = RateLimiter<
    (u16, CustomerNumber),
    governor::state::keyed::HashMapStateStore<(u16, CustomerNumber), foldhash::fast::RandomState>,
    FakeRelativeClock,
    NoOp,
>;

/// A send's id, sequential per portfolio ("s-42").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SendId(pub u64);

impl std::fmt::Display for SendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s-{}", self.0)
    }
}

impl std::str::FromStr for SendId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("s-")
            .and_then(|n| n.parse().ok())
            .map(SendId)
            .ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SendPriority {
    Low,
    Normal,
    High,
}

/// Why a send was refused (or failed at the provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// Free-form message outside the customer-service window: send a template.
    TemplateRequired,
    /// The business number's throughput bucket is empty.
    ThroughputLimit,
    /// Too many messages to this customer from this number just now.
    PairLimit,
    /// The portfolio reached its messaging limit for new customers.
    MessagingLimit,
    /// The number is backing off after a throughput error from the provider (130429/131057).
    NumberBackoff,
    /// Marketing from this number is paused after a spam-rate error (131048).
    MarketingPaused,
    /// The batch queue is full.
    QueueFull,
    /// The provider refused it with another error.
    ProviderError,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TemplateRequired => "template_required",
            Refusal::ThroughputLimit => "throughput_limit",
            Refusal::PairLimit => "pair_limit",
            Refusal::MessagingLimit => "messaging_limit",
            Refusal::NumberBackoff => "number_backoff",
            Refusal::MarketingPaused => "marketing_paused",
            Refusal::QueueFull => "queue_full",
            Refusal::ProviderError => "provider_error",
        }
    }
}

/// The answer to a send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// Handed to the sender now.
    Dispatched,
    /// Waiting for a batch wave; None: no estimate (nothing frees a slot in view).
    Queued {
        estimated_release: Option<Timestamp>,
    },
    /// Not sent; retry after this long, if retrying can help.
    Refused {
        reason: Refusal,
        retry_after_ms: Option<u64>,
    },
}

/// Where a send is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SendState {
    /// Admitted (an event only: a send's lasting state is queued or dispatched).
    Accepted,
    Queued,
    Dispatched,
    Sent,
    Failed,
    Expired,
    Refused,
}

impl SendState {
    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Accepted => "accepted",
            SendState::Queued => "queued",
            SendState::Dispatched => "dispatched",
            SendState::Sent => "sent",
            SendState::Failed => "failed",
            SendState::Expired => "expired",
            SendState::Refused => "refused",
        }
    }
}

/// A message for the sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub id: SendId,
    pub from: Arc<str>,
    pub to: CustomerNumber,
    pub category: Category,
    pub content: Arc<str>,
    pub idempotency_key: Arc<str>,
    /// Counted in the messaging limit (business-initiated): the customer's 24 hours restart.
    pub counted: bool,
    /// When it was dispatched.
    pub at: Timestamp,
}

/// What the provider answered for a dispatched send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderOutcome {
    Sent,
    /// Handed to an egress that reports later (the Kafka dispatch topic; the provider's
    /// answer comes back as a status webhook): the send stays dispatched until then.
    Handed,
    /// A Cloud API error code (130429, 131056, 131047, 131048, 131057, ...).
    Failed {
        code: u32,
    },
}

/// A send as status queries show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendView {
    pub id: SendId,
    pub idempotency_key: Arc<str>,
    pub from: Arc<str>,
    pub category: Category,
    pub priority: SendPriority,
    pub state: SendState,
    pub reason: Option<Refusal>,
    pub provider_code: Option<u32>,
    pub first_answer: Admission,
    pub created: Timestamp,
    pub valid_until: Timestamp,
}

#[derive(Debug)]
struct Send {
    view: SendView,
    /// Fingerprint of the idempotency key (the log's index by key).
    key_fp: u128,
    number: u16,
    to: CustomerNumber,
    content: Arc<str>,
    /// Whether the send needs a new messaging-limit slot (business-initiated, new customer)
    /// as of when it was admitted or queued.
    business_initiated: bool,
}

/// Sends remembered for status queries and idempotency, in id order. Ids are sequential, so
/// the log is a ring indexed by id (no hashing), and forgetting the oldest is a pop. An entry
/// is None only while a batch wave has it out.
#[derive(Debug)]
struct SendLog {
    /// The id of `sends[0]`.
    first: u64,
    sends: VecDeque<Option<Send>>,
    by_key: Map<u128, SendId>,
}

impl SendLog {
    fn new(first: u64) -> Self {
        Self {
            first,
            sends: VecDeque::new(),
            by_key: Map::default(),
        }
    }

    fn index(&self, id: SendId) -> Option<usize> {
        let i = usize::try_from(id.0.checked_sub(self.first)?).ok()?;
        (i < self.sends.len()).then_some(i)
    }

    fn get(&self, id: SendId) -> Option<&Send> {
        self.sends.get(self.index(id)?)?.as_ref()
    }

    fn get_mut(&mut self, id: SendId) -> Option<&mut Send> {
        let i = self.index(id)?;
        self.sends.get_mut(i)?.as_mut()
    }

    fn take(&mut self, id: SendId) -> Option<Send> {
        let i = self.index(id)?;
        self.sends.get_mut(i)?.take()
    }

    fn put(&mut self, send: Send) {
        if let Some(i) = self.index(send.view.id) {
            self.sends[i] = Some(send);
        }
    }

    fn by_key(&self, key: &str) -> Option<SendId> {
        self.by_key.get(&identity::fingerprint(key)).copied()
    }

    /// Appends the newest send, forgetting the oldest past `max`.
    fn push(&mut self, send: Send, max: usize) {
        debug_assert_eq!(send.view.id.0, self.first + self.sends.len() as u64);
        self.by_key.insert(send.key_fp, send.view.id);
        self.sends.push_back(Some(send));
        while self.sends.len() > max {
            if let Some(Some(old)) = self.sends.pop_front()
                && self.by_key.get(&old.key_fp) == Some(&old.view.id)
            {
                self.by_key.remove(&old.key_fp);
            }
            self.first += 1;
        }
    }
}

#[derive(Debug)]
struct Number {
    id: Arc<str>,
    mps: u32,
    burst: u32,
    bucket: DirectLimiter,
    /// Tokens left after the last check, and when: governor cannot be read without taking a
    /// token, so the state shown to SREs is this plus the refill since.
    tokens_left: u32,
    tokens_at: Timestamp,
    backoff_until: Timestamp,
    marketing_paused_until: Timestamp,
}

impl Number {
    fn new(config: &NumberConfig, clock: &FakeRelativeClock) -> Self {
        let burst = config.burst.unwrap_or(config.mps);
        Number {
            id: Arc::from(config.id.as_str()),
            mps: config.mps,
            burst,
            bucket: bucket(config.mps, burst, clock),
            tokens_left: burst,
            tokens_at: Timestamp(0),
            backoff_until: Timestamp(0),
            marketing_paused_until: Timestamp(0),
        }
    }

    /// Takes a token if there is one; the wait otherwise.
    fn take(&mut self, now: Timestamp, clock: &FakeRelativeClock) -> Result<(), Duration> {
        self.tokens_at = now;
        match self.bucket.check() {
            Ok(snapshot) => {
                self.tokens_left = snapshot.remaining_burst_capacity();
                Ok(())
            }
            Err(not_until) => {
                self.tokens_left = 0;
                Err(not_until.wait_time_from(clock.now()))
            }
        }
    }

    /// Tokens available at `now` (refilled at `mps` since the last check, up to the burst).
    fn tokens(&self, now: Timestamp) -> u32 {
        let refill = now.since(self.tokens_at).as_millis() as u64 * u64::from(self.mps) / 1_000;
        (u64::from(self.tokens_left) + refill).min(u64::from(self.burst)) as u32
    }
}

fn bucket(mps: u32, burst: u32, clock: &FakeRelativeClock) -> DirectLimiter {
    RateLimiter::direct_with_clock(mps_quota(mps, burst), clock.clone())
        .with_middleware::<governor::middleware::StateInformationMiddleware>()
}

/// Unique customers reached by business-initiated sends in the moving window.
#[derive(Debug, Default)]
struct Reach {
    /// Each counted customer and the time of their last counted send.
    last: Map<CustomerNumber, Timestamp>,
    /// Every counted send in time order; an entry is stale when the customer's `last` is later.
    events: VecDeque<(Timestamp, CustomerNumber)>,
}

impl Reach {
    /// Drops sends older than the window; true if a customer left the count.
    fn expire(&mut self, now: Timestamp, window_ms: u64) -> bool {
        let mut left = false;
        while let Some((at, _)) = self.events.front() {
            if at.as_millis() + window_ms > now.as_millis() {
                break;
            }
            let (at, customer) = self.events.pop_front().expect("front exists");
            if self.last.get(&customer) == Some(&at) {
                self.last.remove(&customer);
                left = true;
            }
        }
        left
    }

    /// Gives back capacity after a peak (a promotion's million customers leaving the window).
    fn shrink(&mut self) {
        if self.last.len() < self.last.capacity() / 4 {
            self.last.shrink_to_fit();
        }
        if self.events.len() < self.events.capacity() / 4 {
            self.events.shrink_to_fit();
        }
    }

    fn counts(&self, customer: &CustomerNumber) -> bool {
        self.last.contains_key(customer)
    }

    fn count(&self) -> u64 {
        self.last.len() as u64
    }

    fn record(&mut self, customer: CustomerNumber, now: Timestamp) {
        self.last.insert(customer.clone(), now);
        self.events.push_back((now, customer));
    }

    /// When the `n`-th (0-based) counted customer leaves the window.
    fn nth_release(&self, n: usize, window_ms: u64) -> Option<Timestamp> {
        self.events
            .iter()
            .filter(|(at, c)| self.last.get(c) == Some(at))
            .nth(n)
            .map(|(at, _)| Timestamp(at.as_millis() + window_ms))
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
}

/// What a send request says, once its recipient is known.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub from: String,
    pub to: CustomerNumber,
    pub category: Category,
    pub content: String,
    pub priority: Option<SendPriority>,
    pub idempotency_key: String,
    pub valid_for_ms: Option<u64>,
    /// Whether the customer's service window is open now.
    pub window_open: bool,
}

/// Why a send request is malformed (the shard turns it into INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSend {
    pub field: &'static str,
    pub problem: String,
}

impl Quotas {
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
            pairs: RateLimiter::hashmap_with_clock_and_hasher(
                pair_quota(config),
                clock.clone(),
                foldhash::fast::RandomState::default(),
            ),
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

    /// Admits, queues or refuses a send. A repeated idempotency key returns the first answer.
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
                valid_until: Timestamp(now.as_millis().saturating_add(valid_for)),
            },
            number,
            to: r.to,
            content: Arc::from(r.content),
            business_initiated: !r.window_open,
        };
        let answer = if r.category == Category::Session
            && !r.window_open
            && !self.shadowed_rule(Rule::Window)
        {
            refuse(Refusal::TemplateRequired, None)
        } else {
            self.admit(now, &mut send, true)
        };
        send.view.first_answer = answer;
        self.flush_shadow(out);
        match answer {
            Admission::Dispatched => {
                send.view.state = SendState::Dispatched;
                self.dispatch_effect(now, &send, out);
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
            Admission::Refused { reason, .. } => {
                send.view.state = SendState::Refused;
                send.view.reason = Some(reason);
            }
        }
        if send.view.state != SendState::Refused {
            self.status_as(&send, SendState::Accepted, out);
        }
        self.status(&send, out);
        self.log.push(send, self.config.max_tracked_sends);
        self.update_batch_mode(out);
        Ok((id, answer))
    }

    /// The admission rules for a send that is not queued yet (`fresh`) or is being released
    /// from the queue (`!fresh`: it may not queue again, it stays where it is).
    fn admit(&mut self, now: Timestamp, send: &mut Send, fresh: bool) -> Admission {
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
        // A free-form reply must go while the window is open (it is checked only on request),
        // so it is never batched, whatever priority the caller gave it.
        let low =
            send.view.priority == SendPriority::Low && send.view.category != Category::Session;
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

    fn queue_or_refuse(&self, now: Timestamp, send: &Send) -> Admission {
        if self.queued() >= self.config.max_queued_sends {
            return refuse(Refusal::QueueFull, Some(self.tick_ms));
        }
        Admission::Queued {
            estimated_release: self.estimate_release(now, send),
        }
    }

    /// When a send joining the back of the queue would go: at the next waves if a slot is
    /// free for it, else when enough counted customers leave the window.
    fn estimate_release(&self, now: Timestamp, send: &Send) -> Option<Timestamp> {
        let wave = u64::from(self.config.batch_wave);
        let next_tick = |waves: u64| Some(Timestamp(now.as_millis() + (waves + 1) * self.tick_ms));
        if !send.business_initiated || self.reach.counts(&send.to) {
            return next_tick(self.queue_free.len() as u64 / wave);
        }
        let ahead = self.queue_new.len() as u64;
        let Some(limit) = self.limit() else {
            return next_tick(ahead / wave);
        };
        let free = self
            .low_priority_cap(limit)
            .saturating_sub(self.reach.count());
        if ahead < free {
            return next_tick(ahead / wave);
        }
        self.reach
            .nth_release((ahead - free) as usize, self.window_ms)
            .map(|t| t.max(now))
    }

    /// One batch wave: expired sends leave the queue; then sends that cost no new slot go
    /// first, then sends to new customers while the low-priority budget and the buckets allow,
    /// at most `batch_wave` in all.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        self.expire_overrides(now);
        self.sync_clock(now);
        self.reach.expire(now, self.window_ms);
        self.update_batch_mode(out);
        if now >= self.next_expiry {
            self.expire_queued(now, out);
        }
        let mut released = 0;
        let wave = self.config.batch_wave;
        let mut i = 0;
        while i < self.queue_free.len() && released < wave {
            if self.try_release(now, self.queue_free[i], out) {
                self.queue_free.remove(i);
                released += 1;
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.queue_new.len() && released < wave && self.low_budget() > 0 {
            if self.try_release(now, self.queue_new[i], out) {
                self.queue_new.remove(i);
                released += 1;
            } else {
                i += 1;
            }
        }
        self.update_batch_mode(out);
    }

    /// Tries to dispatch a queued send; false leaves it queued (bucket, budget, back-off).
    fn try_release(&mut self, now: Timestamp, id: SendId, out: &mut Vec<Effect>) -> bool {
        let Some(mut send) = self.log.take(id) else {
            return true; // forgotten past max_tracked_sends: drop it from the queue
        };
        let released = self.admit(now, &mut send, false) == Admission::Dispatched;
        self.flush_shadow(out);
        if released {
            send.view.state = SendState::Dispatched;
            self.dispatch_effect(now, &send, out);
            self.status(&send, out);
        }
        self.log.put(send);
        released
    }

    /// Queued sends past their validity leave the queue with an `expired` status.
    fn expire_queued(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let mut next = Timestamp(u64::MAX);
        for queue in [&mut self.queue_free, &mut self.queue_new] {
            queue.retain(|id| {
                let Some(send) = self.log.get_mut(*id) else {
                    return false;
                };
                if send.view.valid_until > now {
                    next = next.min(send.view.valid_until);
                    return true;
                }
                send.view.state = SendState::Expired;
                out.push(Effect::SendStatus {
                    tenant: self.tenant.clone(),
                    id: *id,
                    state: SendState::Expired,
                    reason: None,
                    provider_code: None,
                    idempotency_key: send.view.idempotency_key.clone(),
                });
                false
            });
        }
        self.next_expiry = next;
    }

    /// The provider's answer for a dispatched send, and the reaction it calls for.
    pub fn provider_result(
        &mut self,
        now: Timestamp,
        id: SendId,
        outcome: ProviderOutcome,
        out: &mut Vec<Effect>,
    ) -> Option<CustomerNumber> {
        let send = self.log.get_mut(id)?;
        // A status webhook may report a failure after the API accepted the message ("sent",
        // then "failed"); anything else after the first answer is a late or repeated report.
        let failed = match (outcome, send.view.state) {
            (ProviderOutcome::Sent, SendState::Dispatched) => None,
            (ProviderOutcome::Failed { code }, SendState::Dispatched | SendState::Sent) => {
                Some(code)
            }
            _ => return None,
        };
        let mut closed_window = None;
        match failed {
            None => send.view.state = SendState::Sent,
            Some(code) => {
                send.view.state = SendState::Failed;
                send.view.provider_code = Some(code);
                let number = &mut self.numbers[send.number as usize];
                send.view.reason = Some(match code {
                    130429 => {
                        number.backoff_until = now
                            .saturating_add(Duration::from_millis(self.config.number_backoff_ms));
                        Refusal::ThroughputLimit
                    }
                    // The number is being upgraded: hold it for the minute that takes.
                    131057 => {
                        number.backoff_until = now.saturating_add(Duration::from_secs(60));
                        Refusal::NumberBackoff
                    }
                    131056 => {
                        self.pair_backoff.insert(
                            (send.number, send.to.clone()),
                            now.saturating_add(Duration::from_millis(self.config.pair_backoff_ms)),
                        );
                        Refusal::PairLimit
                    }
                    131047 => {
                        closed_window = Some(send.to.clone());
                        Refusal::TemplateRequired
                    }
                    131048 => {
                        number.marketing_paused_until = now
                            .saturating_add(Duration::from_secs(self.config.marketing_pause_secs));
                        out.push(Effect::SpamRateAlert {
                            tenant: self.tenant.clone(),
                            number: number.id.clone(),
                        });
                        Refusal::MarketingPaused
                    }
                    _ => Refusal::ProviderError,
                });
            }
        }
        let send = self.log.get(id).expect("updated above");
        self.status(send, out);
        closed_window
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
        self.queue_free.len() + self.queue_new.len()
    }

    /// Sweeps idle pair buckets (governor's `retain_recent`) and expired pair back-offs.
    pub fn sweep(&mut self, now: Timestamp) {
        self.sync_clock(now);
        self.pairs.retain_recent();
        self.pairs.shrink_to_fit();
        self.pair_backoff.retain(|_, until| *until > now);
        self.reach.expire(now, self.window_ms);
        self.reach.shrink();
    }

    /// Tracked pair buckets (for memory accounting and tests).
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
