//! When the messaging limit will be reached at the current pace, and when the batch queue
//! will have drained: what an SRE watching a promotion wants before the limit, not at it.
//!
//! The model, stated so it can be checked by hand:
//! - **Pace**: `r` = the new customers counted (slots taken) in the last
//!   `quotas.forecast_window_secs`, divided by that window. Re-counting a customer already
//!   counted takes no slot and is not in it.
//! - **Count ahead**: `c(t) = c(now) + r·(t − now) − E(t)`, where `E(t)` is the number of
//!   counted customers whose 24 hours end in `(now, t]` (known: their last counted send + 24 h).
//!   Customers counted later are assumed not to be counted again before they leave.
//! - **Reached at**: the first `t` with `c(t) ≥ level`, looked for over the next 24 hours
//!   (the count's own window; past it every customer counted now has left and the count is
//!   `r·24 h`). None: not at this pace. A level already reached: now.
//! - **Drained at**: the batch queue (paused sends left out: they do not drain) goes at
//!   `batch_wave` sends a tick; sends to new customers also need a slot of the low-priority
//!   budget, freed as counted customers leave. Traffic arriving meanwhile is not counted.
use super::*;

/// A tenant's forecast (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// New customers counted per hour at the current pace.
    pub per_hour: f64,
    /// When the batch threshold will be reached (None: not at this pace, or no limit).
    pub threshold_at: Option<Timestamp>,
    /// When the messaging limit will be reached.
    pub limit_at: Option<Timestamp>,
    /// When the batch queue will have drained (now when it is empty).
    pub drained_at: Option<Timestamp>,
}

/// How often ticks refresh the forecast the gauges show (walking the counted customers'
/// expiries is not free in a promotion's peak).
const REFRESH_MS: u64 = 5_000;

impl Quotas {
    /// The forecast as of the last refresh (ticks refresh it every few seconds).
    pub fn last_forecast(&self) -> Option<Forecast> {
        self.forecast.map(|(_, f)| f)
    }

    /// Refreshes the forecast the gauges show, if it is a few seconds old.
    pub(super) fn refresh_forecast(&mut self, now: Timestamp) {
        if self
            .forecast
            .is_none_or(|(at, _)| now.as_millis() >= at.as_millis() + REFRESH_MS)
        {
            self.forecast = Some((now, self.forecast(now)));
        }
    }

    pub fn forecast(&self, now: Timestamp) -> Forecast {
        let window = self.config.forecast_window_secs * 1_000;
        let since = Timestamp(now.as_millis().saturating_sub(window));
        let slots = &self.reach.new_slots;
        let taken = slots.len() - slots.partition_point(|&t| t <= since);
        // Slots per millisecond.
        let rate = taken as f64 / window as f64;
        let reached = |level: f64| self.reached_at(now, rate, level);
        let (threshold_at, limit_at) = match self.limit() {
            Some(limit) => (
                reached((limit as f64 * self.config.batch_threshold).ceil()),
                reached(limit as f64),
            ),
            None => (None, None),
        };
        Forecast {
            per_hour: rate * 3_600_000.0,
            threshold_at,
            limit_at,
            drained_at: self.drained_at(now),
        }
    }

    /// The first time the count reaches `level` at `rate` slots a millisecond (module docs).
    fn reached_at(&self, now: Timestamp, rate: f64, level: f64) -> Option<Timestamp> {
        let mut count = self.reach.count() as f64;
        if count >= level {
            return Some(now);
        }
        let horizon = now.as_millis() + self.window_ms;
        // The count never exceeds this within the horizon: no need to walk the expiries.
        if rate <= 0.0 || count + rate * (self.window_ms as f64) < level {
            return None;
        }
        let start = now.as_millis();
        let mut at = start;
        let leaving = (self.reach.live_events())
            .map(|(t, _)| t.as_millis() + self.window_ms)
            .filter(|&e| e > start)
            .chain(std::iter::once(horizon));
        for until in leaving.take_while(|&e| e <= horizon) {
            let need = (level - count) / rate;
            if (at as f64) + need <= until as f64 {
                return Some(Timestamp((at as f64 + need).ceil() as u64));
            }
            count += rate * (until - at) as f64 - 1.0;
            at = until;
        }
        None
    }

    /// When the batch queue will have drained (module docs).
    fn drained_at(&self, now: Timestamp) -> Option<Timestamp> {
        let queued = (self.queue_free.len() + self.queue_new.len()) as u64;
        if queued == 0 {
            return Some(now);
        }
        let waves = queued.div_ceil(u64::from(self.config.batch_wave));
        let by_waves = Timestamp(now.as_millis() + waves * self.tick_ms);
        let short = (self.queue_new.len() as u64).saturating_sub(self.low_budget());
        if short == 0 {
            return Some(by_waves);
        }
        // The slot of the last new customer frees when the `short`-th counted one leaves.
        let freed = self
            .reach
            .nth_release((short - 1) as usize, self.window_ms)?;
        Some(freed.max(by_waves))
    }
}
