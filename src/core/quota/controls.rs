//! What SREs do with a portfolio's quotas: read the state, override a limit for a while (a
//! promotion), put a rule in shadow mode, reload the config file, plan a campaign — and see
//! every change in the audit log.
//!
//! Overrides are data on top of the base settings from the file: the effective settings are
//! the base with active overrides applied in the order they were set, so the most recent wins
//! for a field, and an override that expires leaves the next one (or the base) in force. An
//! override is checked by the same validation as the file: none can make a state the file
//! could not. Each one is time-boxed (at most `MAX_OVERRIDE_MS`) and ends by itself.
use super::*;
use crate::config::MessagingLimit;

/// The longest an override may last: a promotion is days, and a forgotten override must end.
pub const MAX_OVERRIDE_MS: u64 = 31 * 24 * 3_600 * 1_000;

/// One change an override makes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    MessagingLimit(MessagingLimit),
    BatchThreshold(f64),
    Reserve(f64),
    /// A business number's throughput (and burst; None: one second's worth).
    NumberRate {
        number: String,
        mps: u32,
        burst: Option<u32>,
    },
    /// A rule in (or out of) shadow mode: evaluated and counted, not enforced.
    Shadow {
        rule: Rule,
        on: bool,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Override {
    pub(super) view: OverrideView,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OverrideView {
    pub id: u64,
    pub change: Change,
    pub reason: Arc<str>,
    pub actor: Arc<str>,
    pub created: Timestamp,
    pub expires: Timestamp,
}

/// Who changed what, when, from what to what, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub actor: Arc<str>,
    /// `override_set`, `override_cleared`, `override_expired`, `config_reloaded`,
    /// `consent_set`, `customer_linked`.
    pub action: &'static str,
    pub target: String,
    pub before: String,
    pub after: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberSnapshot {
    pub id: Arc<str>,
    pub mps: u32,
    pub burst: u32,
    /// Tokens in the bucket now (an estimate from the last check and the refill since).
    pub tokens: u32,
    pub backoff_until: Option<Timestamp>,
    pub marketing_paused_until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuotaSnapshot {
    pub tenant: TenantId,
    /// None: unlimited.
    pub limit: Option<u64>,
    /// Unique customers reached by business-initiated sends in the last 24 hours.
    pub used: u64,
    pub usage_ratio: f64,
    pub batch_mode: bool,
    pub batch_threshold: f64,
    pub reserve: f64,
    pub queued: u64,
    pub shadow: Vec<Rule>,
    pub numbers: Vec<NumberSnapshot>,
    pub overrides: Vec<OverrideView>,
    pub forecast: super::Forecast,
}

/// A campaign to plan: `customers` new customers, each with `interactions` messages (the
/// first a template outside the window; the rest replies inside it), sent evenly over
/// `duration_ms` from `start`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    pub customers: u64,
    pub interactions: u32,
    pub start: Timestamp,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanResult {
    /// customers × interactions: the API volume the campaign adds.
    pub messages: u64,
    /// Messages per second the campaign needs at its even pace, against what the numbers
    /// allow together.
    pub mps_needed: f64,
    pub mps_available: u64,
    pub limit: Option<u64>,
    /// Customers already counted when the campaign starts.
    pub used_at_start: u64,
    /// The highest count the campaign reaches, and its share of the limit.
    pub peak_used: u64,
    pub peak_ratio: f64,
    /// When batch mode would engage (None: it would not).
    pub batch_mode_at: Option<Timestamp>,
    /// First messages sent as they come, and those released from the batch queue.
    pub sent_directly: u64,
    pub batched: u64,
    /// When the last first message would go (None: not within 30 days).
    pub done_at: Option<Timestamp>,
}

impl Quotas {
    /// Each business number's bucket and holds now.
    pub fn number_snapshots(&self, now: Timestamp) -> impl Iterator<Item = NumberSnapshot> + '_ {
        self.numbers.iter().map(move |n| NumberSnapshot {
            id: n.id.clone(),
            mps: n.mps,
            burst: n.burst,
            tokens: n.tokens(now),
            backoff_until: (n.backoff_until > now).then_some(n.backoff_until),
            marketing_paused_until: (n.marketing_paused_until > now)
                .then_some(n.marketing_paused_until),
        })
    }

    /// The state SREs read.
    pub fn snapshot(&self, now: Timestamp) -> QuotaSnapshot {
        let (used, limit) = self.usage();
        QuotaSnapshot {
            tenant: self.tenant.clone(),
            limit,
            used,
            usage_ratio: limit.map_or(0.0, |l| used as f64 / l as f64),
            batch_mode: self.batch_mode,
            batch_threshold: self.config.batch_threshold,
            reserve: self.config.reserve,
            queued: self.queued() as u64,
            shadow: self.config.shadow.clone(),
            numbers: self.number_snapshots(now).collect(),
            overrides: self.overrides.iter().map(|o| o.view.clone()).collect(),
            forecast: self.forecast(now),
        }
    }

    /// Sets a time-boxed override. Refused (nothing changes) when it would make invalid
    /// settings, names an unknown number, has no reason or actor, or lasts too long.
    pub fn set_override(
        &mut self,
        now: Timestamp,
        change: Change,
        reason: &str,
        actor: &str,
        ttl_ms: u64,
    ) -> Result<OverrideView, BadSend> {
        time_boxed(reason, actor, ttl_ms)?;
        if let Change::NumberRate { number, .. } = &change
            && !self.by_number.contains_key(number.as_str())
        {
            return Err(bad(
                "number",
                format!("{number:?} is not a business number of this tenant"),
            ));
        }
        let view = OverrideView {
            id: self.next_override,
            change,
            reason: Arc::from(reason),
            actor: Arc::from(actor),
            created: now,
            expires: Timestamp(now.as_millis().saturating_add(ttl_ms)),
        };
        let mut candidate = self.overrides.clone();
        candidate.push(Override { view: view.clone() });
        let (config, numbers) = self.effective(&candidate);
        check(&config, &numbers)?;
        let (target, before, after) = describe(&view.change, &self.config, &self.numbers);
        self.next_override += 1;
        self.overrides = candidate;
        self.apply(config, numbers);
        self.record(AuditEntry {
            at: now,
            actor: view.actor.clone(),
            action: "override_set",
            target,
            before,
            after: format!("{after} until {}", view.expires),
            reason: reason.to_owned(),
        });
        Ok(view)
    }

    /// Ends an override before its time.
    pub fn clear_override(
        &mut self,
        now: Timestamp,
        id: u64,
        actor: &str,
    ) -> Result<OverrideView, BadSend> {
        if actor.trim().is_empty() {
            return Err(bad("actor", "is required: who makes the change"));
        }
        let Some(i) = self.overrides.iter().position(|o| o.view.id == id) else {
            return Err(bad(
                "override_id",
                format!("no active override {id}; list them with Quotas.Get"),
            ));
        };
        let removed = self.remove_override(now, i, "override_cleared", Arc::from(actor));
        Ok(removed)
    }

    /// Overrides past their expiry end; each leaves an audit entry.
    pub(super) fn expire_overrides(&mut self, now: Timestamp) {
        while let Some(i) = self.overrides.iter().position(|o| o.view.expires <= now) {
            self.remove_override(now, i, "override_expired", Arc::from("switchboard"));
        }
    }

    fn remove_override(
        &mut self,
        now: Timestamp,
        i: usize,
        action: &'static str,
        actor: Arc<str>,
    ) -> OverrideView {
        let removed = self.overrides.remove(i).view;
        let (target, before, _) = describe(&removed.change, &self.config, &self.numbers);
        let (config, numbers) = self.effective(&self.overrides);
        self.apply(config, numbers);
        let (_, after, _) = describe(&removed.change, &self.config, &self.numbers);
        self.record(AuditEntry {
            at: now,
            actor,
            action,
            target,
            before,
            after,
            reason: format!("override {} ({})", removed.id, removed.reason),
        });
        removed
    }

    /// Replaces the base settings from a reloaded, validated config file. Business numbers
    /// may be added or re-rated; removing or reordering them needs a restart (queued sends
    /// refer to them).
    pub fn reload(
        &mut self,
        now: Timestamp,
        numbers: &[NumberConfig],
        quotas: &QuotaConfig,
        actor: &str,
    ) -> Result<(), BadSend> {
        let keeps_numbers = self.base_numbers.len() <= numbers.len()
            && self
                .base_numbers
                .iter()
                .zip(numbers)
                .all(|(old, new)| old.id == new.id);
        if !keeps_numbers {
            return Err(bad(
                "numbers",
                "removing or reordering business numbers needs a restart; add new ones at the end",
            ));
        }
        let before = summary(&self.base_config, &self.base_numbers);
        let old_base = (self.base_config.clone(), self.base_numbers.clone());
        self.base_config = quotas.clone();
        self.base_numbers = numbers.to_vec();
        let (config, effective_numbers) = self.effective(&self.overrides);
        if let Err(e) = check(&config, &effective_numbers) {
            // An active override no longer fits the new base: keep the old one.
            (self.base_config, self.base_numbers) = old_base;
            return Err(e);
        }
        let pair_changed = config.pair_period_ms != self.config.pair_period_ms
            || config.pair_burst != self.config.pair_burst;
        self.apply(config, effective_numbers);
        if pair_changed {
            // A new pair quota starts with fresh buckets.
            self.pairs = RateLimiter::new(
                pair_quota(&self.config),
                Default::default(),
                self.clock.clone(),
            );
        }
        let after = summary(&self.base_config, &self.base_numbers);
        if before != after {
            self.record(AuditEntry {
                at: now,
                actor: Arc::from(actor),
                action: "config_reloaded",
                target: "quotas".into(),
                before,
                after,
                reason: "configuration file reloaded".into(),
            });
        }
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Vec<AuditEntry> {
        self.audit.iter().rev().take(limit).cloned().collect()
    }

    /// Projects a campaign against the messaging limit with the same rules admission uses:
    /// first messages go as they come until the batch threshold, then wait in the batch queue
    /// and go as slots free (never into the reserve). Pacing by the throughput buckets is not
    /// simulated; `mps_needed` against `mps_available` says whether it would bind.
    pub fn plan(&self, now: Timestamp, r: &PlanRequest) -> PlanResult {
        const STEP_MS: u64 = 60_000; // minute resolution: waves run far more often than that
        const HORIZON_MS: u64 = 30 * 24 * 3_600 * 1_000;
        let start = r.start.max(now);
        let limit = self.limit();
        let duration = r.duration_ms.max(1);
        // Expiry times of counted customers, in order; the campaign's are appended in order.
        let mut expiries: VecDeque<u64> = {
            let mut v: Vec<u64> = self
                .reach
                .last
                .values()
                .map(|t| t.as_millis() + self.window_ms)
                .collect();
            v.sort_unstable();
            v.into()
        };
        let expire = |expiries: &mut VecDeque<u64>, t: u64| {
            while expiries.front().is_some_and(|e| *e <= t) {
                expiries.pop_front();
            }
        };
        expire(&mut expiries, start.as_millis());
        let used_at_start = expiries.len() as u64;
        let (threshold, cap) = match limit {
            Some(l) => (
                (l as f64 * self.config.batch_threshold).ceil() as u64,
                self.low_priority_cap(l),
            ),
            None => (u64::MAX, u64::MAX),
        };
        let (mut arrived, mut queue, mut direct, mut batched) = (0u64, 0u64, 0u64, 0u64);
        let (mut batch_mode_at, mut done_at, mut peak) = (None, None, used_at_start);
        let mut t = start.as_millis();
        while t <= start.as_millis() + HORIZON_MS {
            expire(&mut expiries, t);
            let elapsed = (t + STEP_MS - start.as_millis()).min(duration);
            let due = (u128::from(r.customers) * u128::from(elapsed) / u128::from(duration)) as u64;
            while arrived < due {
                arrived += 1;
                if limit.is_some() && (queue > 0 || expiries.len() as u64 >= threshold) {
                    batch_mode_at.get_or_insert(Timestamp(t));
                    queue += 1;
                } else {
                    direct += 1;
                    expiries.push_back(t + self.window_ms);
                }
            }
            let free = cap.saturating_sub(expiries.len() as u64);
            let released = queue.min(free);
            for _ in 0..released {
                expiries.push_back(t + self.window_ms);
            }
            queue -= released;
            batched += released;
            peak = peak.max(expiries.len() as u64);
            if arrived == r.customers && queue == 0 {
                done_at = Some(Timestamp(t));
                break;
            }
            t += STEP_MS;
        }
        let messages = r.customers.saturating_mul(u64::from(r.interactions));
        PlanResult {
            messages,
            mps_needed: messages as f64 / (duration as f64 / 1_000.0),
            mps_available: self.numbers.iter().map(|n| u64::from(n.mps)).sum(),
            limit,
            used_at_start,
            peak_used: peak,
            peak_ratio: limit.map_or(0.0, |l| peak as f64 / l as f64),
            batch_mode_at,
            sent_directly: direct,
            batched,
            done_at,
        }
    }

    /// The base settings with `overrides` applied in order.
    pub(super) fn effective(&self, overrides: &[Override]) -> (QuotaConfig, Vec<NumberConfig>) {
        let mut config = self.base_config.clone();
        let mut numbers = self.base_numbers.clone();
        for o in overrides {
            match &o.view.change {
                Change::MessagingLimit(l) => config.messaging_limit = *l,
                Change::BatchThreshold(x) => config.batch_threshold = *x,
                Change::Reserve(x) => config.reserve = *x,
                Change::NumberRate { number, mps, burst } => {
                    if let Some(n) = numbers.iter_mut().find(|n| &n.id == number) {
                        n.mps = *mps;
                        n.burst = *burst;
                    }
                }
                Change::Shadow { rule, on } => {
                    config.shadow.retain(|r| r != rule);
                    if *on {
                        config.shadow.push(*rule);
                    }
                }
            }
        }
        (config, numbers)
    }

    /// Puts effective settings in force: buckets whose rate changed start anew (full).
    pub(super) fn apply(&mut self, config: QuotaConfig, numbers: Vec<NumberConfig>) {
        self.life.configure(&config);
        self.config = config;
        for (i, n) in numbers.iter().enumerate() {
            match self.numbers.get_mut(i) {
                Some(current) => {
                    let burst = n.burst.unwrap_or(n.mps);
                    if current.mps != n.mps || current.burst != burst {
                        let keep = (current.backoff_until, current.marketing_paused_until);
                        *current = Number::new(n, &self.clock);
                        (current.backoff_until, current.marketing_paused_until) = keep;
                    }
                }
                None => {
                    self.by_number
                        .insert(Arc::from(n.id.as_str()), self.numbers.len() as u16);
                    self.numbers.push(Number::new(n, &self.clock));
                }
            }
        }
    }

    /// Adds an entry about something outside the quotas (a customer link) to the tenant's
    /// audit log.
    pub fn add_audit(&mut self, entry: AuditEntry) {
        self.record(entry);
    }

    pub(super) fn record(&mut self, entry: AuditEntry) {
        tracing::info!(
            tenant = %self.tenant,
            actor = %entry.actor,
            action = entry.action,
            target = %entry.target,
            before = %entry.before,
            after = %entry.after,
            reason = %entry.reason,
            "quota change"
        );
        self.audit.push_back(entry);
        while self.audit.len() > self.config.max_audit_entries {
            self.audit.pop_front();
        }
    }
}

/// What every SRE control needs (an override, a pause): why, who, and an end (at most
/// [`MAX_OVERRIDE_MS`] away, in the request's `expires_in_ms`).
pub(super) fn time_boxed(reason: &str, actor: &str, ttl_ms: u64) -> Result<(), BadSend> {
    if reason.trim().is_empty() {
        return Err(bad(
            "reason",
            "is required: say why (it goes to the audit log)",
        ));
    }
    if actor.trim().is_empty() {
        return Err(bad("actor", "is required: who makes the change"));
    }
    if ttl_ms == 0 || ttl_ms > MAX_OVERRIDE_MS {
        return Err(bad(
            "expires_in_ms",
            format!("must be from 1 to {MAX_OVERRIDE_MS} (31 days): it ends by itself"),
        ));
    }
    Ok(())
}

pub(super) fn bad(field: &'static str, problem: impl Into<String>) -> BadSend {
    BadSend {
        field,
        problem: problem.into(),
    }
}

/// Validates effective settings with the config file's own checks.
pub(super) fn check(config: &QuotaConfig, numbers: &[NumberConfig]) -> Result<(), BadSend> {
    let to_bad = |e: crate::config::ConfigError| bad("change", e.to_string());
    config.validate("quotas").map_err(to_bad)?;
    for n in numbers {
        n.validate(&format!("numbers[{}]", n.id)).map_err(to_bad)?;
    }
    Ok(())
}

fn limit_text(l: MessagingLimit) -> String {
    match l.customers() {
        Some(n) => n.to_string(),
        None => "unlimited".into(),
    }
}

/// (target, value before, value the change sets) for the audit log.
fn describe(change: &Change, config: &QuotaConfig, numbers: &[Number]) -> (String, String, String) {
    match change {
        Change::MessagingLimit(l) => (
            "quotas.messaging_limit".into(),
            limit_text(config.messaging_limit),
            limit_text(*l),
        ),
        Change::BatchThreshold(x) => (
            "quotas.batch_threshold".into(),
            config.batch_threshold.to_string(),
            x.to_string(),
        ),
        Change::Reserve(x) => (
            "quotas.reserve".into(),
            config.reserve.to_string(),
            x.to_string(),
        ),
        Change::NumberRate { number, mps, burst } => {
            let before = numbers
                .iter()
                .find(|n| &*n.id == number)
                .map(|n| format!("mps {} burst {}", n.mps, n.burst))
                .unwrap_or_default();
            (
                format!("numbers[{number}]"),
                before,
                format!("mps {mps} burst {}", burst.unwrap_or(*mps)),
            )
        }
        Change::Shadow { rule, on } => (
            format!("quotas.shadow.{}", rule.as_str()),
            if config.shadow.contains(rule) {
                "on"
            } else {
                "off"
            }
            .into(),
            if *on { "on" } else { "off" }.into(),
        ),
    }
}

fn summary(config: &QuotaConfig, numbers: &[NumberConfig]) -> String {
    let numbers: Vec<String> = numbers
        .iter()
        .map(|n| format!("{} {} mps", n.id, n.mps))
        .collect();
    format!(
        "limit {} threshold {} reserve {} shadow {:?} numbers [{}]",
        limit_text(config.messaging_limit),
        config.batch_threshold,
        config.reserve,
        config.shadow,
        numbers.join(", ")
    )
}
