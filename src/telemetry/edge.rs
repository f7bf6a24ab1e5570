//! Edge events: refused gRPC calls (auth, overload), the webhook endpoint's requests, and the
//! Cloud API sender's attempts, probes and failover.
use std::sync::OnceLock;

use metrics::{Counter, counter, gauge, histogram};

use super::*;

/// A protected call refused: `reason` is missing (no token), unknown (not a configured
/// token) or role (a token without the role); `path` is the gRPC method (a fixed set). The
/// token itself is never logged.
pub fn auth_failure(reason: &'static str, path: &str) {
    let method = path.rsplit('/').next().unwrap_or(path).to_owned();
    tracing::warn!(reason, method = %method, "protected call refused");
    counter!(AUTH_FAILURES, "reason" => reason, "method" => method).increment(1);
}

/// A gRPC call shed at capacity (`method` is the gRPC method name: a fixed set).
pub fn shed(method: &str) {
    tracing::debug!(method, "call shed at capacity");
    counter!(GRPC_SHED, "method" => method.to_owned()).increment(1);
}

/// One Cloud API send attempt: sent, retryable or failed.
pub fn provider_attempt(outcome: &'static str) {
    static HANDLES: [OnceLock<Counter>; 3] = [const { OnceLock::new() }; 3];
    let make = || counter!(PROVIDER_ATTEMPTS, "outcome" => outcome);
    cached(&HANDLES, ["sent", "retryable", "failed"], outcome, make).increment(1);
}

/// The handle of a counter whose one label takes one of `values` (each created once, at its
/// first use); another value gets a handle looked up each time.
fn cached<const N: usize>(
    handles: &[OnceLock<Counter>; N],
    values: [&str; N],
    value: &str,
    make: impl FnOnce() -> Counter,
) -> Counter {
    match values.iter().position(|v| *v == value) {
        Some(i) => handles[i].get_or_init(make).clone(),
        None => make(),
    }
}

/// One probe of a Cloud API endpoint (`primary` or `backup`).
pub fn provider_probe(endpoint: &'static str, took: Duration, healthy: bool) {
    tracing::debug!(
        endpoint,
        took_ms = took.as_millis() as u64,
        healthy,
        "Cloud API probe"
    );
    histogram!(PROVIDER_PROBE, "endpoint" => endpoint).record(took.as_secs_f64());
}

/// Which Cloud API endpoint sends go to.
pub fn provider_endpoint(on_backup: bool) {
    gauge!(PROVIDER_ON_BACKUP).set(if on_backup { 1.0 } else { 0.0 });
}

/// One request to the webhook endpoint: `result` is a fixed name (see `WEBHOOK_REQUESTS`),
/// `app` a configured app name or `none`; `detail` says why for the log (never a secret).
pub fn webhook_request(result: &'static str, app: &str, detail: &str) {
    match result {
        "accepted" | "verified" => tracing::debug!(result, app, "webhook request"),
        "unreadable" => tracing::warn!(result, app, detail, "webhook stored as a dead letter"),
        _ => tracing::warn!(result, app, detail, "webhook request refused"),
    }
    counter!(WEBHOOK_REQUESTS, "result" => result, "app" => app.to_owned()).increment(1);
}

/// A signed post stored: `webhook_request("accepted", ..)` with the counter's handle kept by
/// the caller (one per app, made at first use), as every stored post counts.
pub fn webhook_accepted(app: &str, handle: &OnceLock<Counter>) {
    tracing::debug!(result = "accepted", app, "webhook request");
    handle
        .get_or_init(|| counter!(WEBHOOK_REQUESTS, "result" => "accepted", "app" => app.to_owned()))
        .increment(1);
}

/// How long a signed POST took to answer.
pub fn webhook_answered(took: Duration) {
    static ANSWERED: OnceLock<metrics::Histogram> = OnceLock::new();
    ANSWERED
        .get_or_init(|| histogram!(WEBHOOK_DURATION))
        .record(took.as_secs_f64());
}

/// A dispatch the egress handled: sent, failed, skipped or undecodable.
pub fn egress_dispatch(result: &'static str) {
    static HANDLES: [OnceLock<Counter>; 4] = [const { OnceLock::new() }; 4];
    let make = || counter!(EGRESS_DISPATCHES, "result" => result);
    let results = ["sent", "failed", "skipped", "undecodable"];
    cached(&HANDLES, results, result, make).increment(1);
}

/// Dispatches being sent now.
pub fn egress_in_flight(n: usize) {
    static IN_FLIGHT: OnceLock<metrics::Gauge> = OnceLock::new();
    IN_FLIGHT
        .get_or_init(|| gauge!(EGRESS_IN_FLIGHT))
        .set(n as f64);
}
