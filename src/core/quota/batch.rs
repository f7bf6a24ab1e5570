//! Batch mode: near the daily limit, low-priority sends are queued instead of refused or
//! sent one by one, and released on ticks in waves that fit the remaining budget and the
//! throughput bucket; queued sends past their validity expire.
use super::*;

impl Quotas {
    pub(super) fn queue_or_refuse(&self, now: Timestamp, send: &Send) -> Admission {
        if self.queued() >= self.config.max_queued_sends {
            return refuse(Refusal::QueueFull, Some(self.tick_ms));
        }
        Admission::Queued {
            estimated_release: self.estimate_release(now, send),
            held: None,
        }
    }

    /// When a send joining the back of the queue would go: at the next waves if a slot is
    /// free for it, else when enough counted customers leave the window.
    pub(super) fn estimate_release(&self, now: Timestamp, send: &Send) -> Option<Timestamp> {
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

    /// One batch wave: scheduled sends that came due are admitted; expired sends leave the queue; then sends that cost no new slot go
    /// first, then sends to new customers while the low-priority budget and the buckets allow,
    /// at most `batch_wave` in all.
    /// Scheduled sends whose time came are admitted first; `window_open` says whether a
    /// customer's service window is open now.
    pub fn tick(
        &mut self,
        now: Timestamp,
        window_open: &dyn Fn(&CustomerNumber) -> bool,
        out: &mut Vec<Effect>,
    ) {
        self.expire_overrides(now);
        self.expire_pauses(now);
        self.sync_clock(now);
        self.reach.expire(now, self.window_ms);
        let pace = self.config.forecast_window_secs * 1_000;
        self.reach
            .prune_new_slots(Timestamp(now.as_millis().saturating_sub(pace)));
        self.update_batch_mode(out);
        self.release_scheduled(now, window_open, out);
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
        self.refresh_forecast(now);
    }

    /// Tries to dispatch a queued send; false leaves it queued (bucket, budget, back-off).
    pub(super) fn try_release(
        &mut self,
        now: Timestamp,
        id: SendId,
        out: &mut Vec<Effect>,
    ) -> bool {
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
    pub(super) fn expire_queued(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let mut next = Timestamp(u64::MAX);
        for queue in [&mut self.queue_free, &mut self.queue_new, &mut self.paused] {
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
}
