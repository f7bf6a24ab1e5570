//! What admission counts with: each business number's throughput bucket (governor, on the
//! shard's clock) and the rolling 24-hour set of customers reached.
use super::*;
use std::cell::RefCell;

use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;

use crate::core::dense::Dense;
use crate::core::queue::Queue;

#[derive(Debug)]
pub(super) struct Number {
    pub(super) id: Arc<str>,
    pub(super) mps: u32,
    pub(super) burst: u32,
    pub(super) bucket: DirectLimiter,
    /// Tokens left after the last check, and when: governor cannot be read without taking a
    /// token, so the state shown to SREs is this plus the refill since.
    pub(super) tokens_left: u32,
    pub(super) tokens_at: Timestamp,
    pub(super) backoff_until: Timestamp,
    pub(super) marketing_paused_until: Timestamp,
}

impl Number {
    pub(super) fn new(config: &NumberConfig, clock: &FakeRelativeClock) -> Self {
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
    pub(super) fn take(
        &mut self,
        now: Timestamp,
        clock: &FakeRelativeClock,
    ) -> Result<(), Duration> {
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
    pub(super) fn tokens(&self, now: Timestamp) -> u32 {
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
pub(super) struct Reach {
    /// Each counted customer and the time of their last counted send.
    pub(super) last: Dense<CustomerNumber, Timestamp>,
    /// Every counted send in time order; an entry is stale when the customer's `last` is later.
    /// In pages, as `new_slots`: growing never copies them.
    pub(super) events: Queue<(Timestamp, CustomerNumber)>,
    /// When each new customer was counted (a slot taken), oldest first: the forecast's pace,
    /// pruned to its window on ticks (`prune_new_slots`).
    pub(super) new_slots: Queue<Timestamp>,
}

impl Reach {
    /// Drops sends older than the window; true if a customer left the count.
    pub(super) fn expire(&mut self, now: Timestamp, window_ms: u64) -> bool {
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
    pub(super) fn shrink(&mut self) {
        if self.last.len() < self.last.capacity() / 4 {
            self.last.shrink_to_fit();
        }
        self.events.shrink_to_fit();
        self.new_slots.shrink_to_fit();
    }

    pub(super) fn counts(&self, customer: &CustomerNumber) -> bool {
        self.last.contains_key(customer)
    }

    pub(super) fn count(&self) -> u64 {
        self.last.len() as u64
    }

    pub(super) fn record(&mut self, customer: CustomerNumber, now: Timestamp) {
        if self.last.insert(customer.clone(), now).is_none() {
            self.new_slots.push_back(now);
        }
        self.events.push_back((now, customer));
    }

    /// Forgets the slots taken at or before `before`.
    pub(super) fn prune_new_slots(&mut self, before: Timestamp) {
        while self.new_slots.front().is_some_and(|&t| t <= before) {
            self.new_slots.pop_front();
        }
    }

    /// When the `n`-th (0-based) counted customer leaves the window.
    pub(super) fn nth_release(&self, n: usize, window_ms: u64) -> Option<Timestamp> {
        self.live_events()
            .nth(n)
            .map(|(at, _)| Timestamp(at.as_millis() + window_ms))
    }

    /// The events that are each customer's last counted send, in time order. A customer has
    /// one such event while counted, so when there are as many events as customers (no
    /// customer counted twice in the window: a promotion's usual shape) every event is one
    /// and none is looked up; else each is checked against `last` (a lookup an event: at
    /// ~830,000 events a tick of ~0.25 s in `cargo bench --bench stalls`).
    pub(super) fn live_events(&self) -> impl Iterator<Item = &(Timestamp, CustomerNumber)> {
        let all = self.events.len() == self.last.len();
        (self.events.iter()).filter(move |(at, c)| all || self.last.get(c) == Some(at))
    }
}

/// The pair limit's state (each pair's theoretical arrival time, what governor's keyed limiter
/// keeps) in a `Dense` map, which grows a few entries at a time. governor's own store, a hash
/// map, was shrunk by each sweep and rehashed every pair at once as it grew back: sends of
/// 5–7 ms once a minute in `cargo bench --bench stalls` (`STALLS_CALL=send`). The shard is
/// one thread: a `RefCell`, where governor's store takes a lock.
#[derive(Debug, Default)]
pub(super) struct Pairs(RefCell<Dense<(u16, CustomerNumber), Nanos>>);

impl StateStore for Pairs {
    type Key = (u16, CustomerNumber);

    /// As governor's store: a state of 0 is a fresh bucket (`None`); a fresh pair refused is
    /// not kept.
    fn measure_and_replace<T, F, E>(&self, key: &Self::Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut pairs = self.0.borrow_mut();
        match pairs.position(key) {
            Some(at) => {
                let tat = pairs[at].1;
                let (answer, next) = f((tat.as_u64() != 0).then_some(tat))?;
                *pairs.value_mut(at) = next;
                Ok(answer)
            }
            None => {
                let (answer, next) = f(None)?;
                pairs.push_new(key.clone(), next);
                Ok(answer)
            }
        }
    }
}

impl ShrinkableKeyedStateStore<(u16, CustomerNumber)> for Pairs {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.borrow_mut().retain(|_, &tat| tat > drop_below);
    }

    /// Only after a peak (a quarter full or less): a store shrunk at every sweep grows again.
    fn shrink_to_fit(&self) {
        let mut pairs = self.0.borrow_mut();
        if pairs.len() < pairs.capacity() / 4 {
            pairs.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.0.borrow().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
