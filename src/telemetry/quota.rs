//! Quota events: admissions, provider errors, the quota gauges.
use metrics::{counter, gauge};

use super::*;

/// The answer to a send request.
pub fn admission(tenant: &str, admission: &Admission) {
    let (outcome, reason) = match admission {
        Admission::Dispatched => ("dispatched", ""),
        Admission::Queued { held, .. } => ("queued", held.map_or("", |h| h.as_str())),
        Admission::Scheduled { .. } => ("scheduled", ""),
        Admission::Refused { reason, .. } => ("refused", reason.as_str()),
    };
    counter!(ADMISSIONS, "tenant" => tenant.to_owned(), "outcome" => outcome, "reason" => reason)
        .increment(1);
}

/// The provider refused a dispatched send.
pub fn provider_error(tenant: &str, code: u32) {
    counter!(PROVIDER_ERRORS, "tenant" => tenant.to_owned(), "code" => code.to_string())
        .increment(1);
}

/// Quota gauges of one portfolio, refreshed on every tick. Business numbers are few and come
/// from the config, so they may be labels; customers never are.
pub fn quota_gauges(tenant: &str, quotas: &Quotas, now: crate::clock::Timestamp) {
    for n in quotas.number_snapshots(now) {
        gauge!(NUMBER_TOKENS, "tenant" => tenant.to_owned(), "number" => n.id.to_string())
            .set(f64::from(n.tokens));
    }
    let (used, limit) = quotas.usage();
    let labels = [("tenant", tenant.to_owned())];
    gauge!(LIMIT_USAGE_RATIO, &labels).set(limit.map_or(0.0, |l| used as f64 / l as f64));
    gauge!(BATCH_QUEUE_DEPTH, &labels).set(quotas.queued() as f64);
    gauge!(SCHEDULED_SENDS, &labels).set(quotas.scheduled() as f64);
    gauge!(BATCH_MODE, &labels).set(if quotas.batch_mode() { 1.0 } else { 0.0 });
    if let Some(f) = quotas.last_forecast() {
        let seconds = |at: Option<crate::clock::Timestamp>| {
            at.map_or(f64::INFINITY, |t| {
                t.as_millis().saturating_sub(now.as_millis()) as f64 / 1_000.0
            })
        };
        gauge!(LIMIT_FORECAST, &labels).set(seconds(f.limit_at));
        gauge!(THRESHOLD_FORECAST, &labels).set(seconds(f.threshold_at));
        gauge!(DRAIN_FORECAST, &labels).set(seconds(f.drained_at));
        gauge!(NEW_CUSTOMERS_PACE, &labels).set(f.per_hour);
    }
}
