//! Readiness in Kafka mode: the watchdog turns what the input, the outbox and the cuts report
//! into one answer, "serving" or "not serving, because …", that gRPC health and `/ready` give
//! out (see `server`). A replica is **not ready** while any of these conditions holds:
//!
//! - `input_stalled`: for `kafka.stall_timeout_ms`, outputs waited for the broker's
//!   acknowledgement and none came (the acknowledgement watermark did not move), or the
//!   owned partitions had consumer lag and no record was read: the broker is unreachable or
//!   paused, or an output keeps failing (reading more input meanwhile is no progress: its
//!   offsets cannot be committed past the stuck output);
//! - `snapshots_failing`: cuts have failed, with none written since, for
//!   `kafka.snapshot_failure_timeout_ms` (offsets are not committed meanwhile, so a crash
//!   would replay more and more);
//! - `takeover_failed`: a partition's state could not be restored; its input is paused and
//!   the takeover is tried again at each snapshot interval.
//!
//! Each condition clears by itself when its cause ends. Every change of a condition is one
//! log line and one gauge (`switchboard_kafka_unhealthy{condition}`), written together by
//! `telemetry::kafka_unhealthy`. The watchdog only observes: it never stops the input.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::outbox::Acks;
use crate::telemetry;

/// The conditions, in the order they are reported.
pub const INPUT_STALLED: &str = "input_stalled";
pub const SNAPSHOTS_FAILING: &str = "snapshots_failing";
pub const TAKEOVER_FAILED: &str = "takeover_failed";
const CONDITIONS: [&str; 3] = [INPUT_STALLED, SNAPSHOTS_FAILING, TAKEOVER_FAILED];

/// What the watchdog has been told; the input and the rebalance callbacks write it, the
/// check reads it.
pub struct Watchdog {
    stall_after: Duration,
    failing_after: Duration,
    /// Records handed to the shards so far (read by the check to see progress).
    read: AtomicU64,
    /// Consumer lag summed over the owned partitions (librdkafka statistics; 0 if off).
    lag: AtomicI64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Since when cuts have failed with none written, and the last error.
    cuts_failing: Option<(Instant, String)>,
    /// Partitions whose takeover failed, and why.
    takeovers: BTreeMap<i32, String>,
}

/// What the check saw last time (progress is a change between two checks).
struct Seen {
    read: u64,
    through: u64,
    /// Since when the watermark has not moved with outputs waiting (now, if none wait).
    outputs_idle_since: Instant,
    /// Since when no record was read with lag waiting (now, if there is no lag).
    input_idle_since: Instant,
}

impl Seen {
    fn new(now: Instant) -> Self {
        Self {
            read: 0,
            through: 0,
            outputs_idle_since: now,
            input_idle_since: now,
        }
    }
}

impl Watchdog {
    pub fn new(stall_after: Duration, failing_after: Duration) -> Self {
        Self {
            stall_after,
            failing_after,
            read: AtomicU64::new(0),
            lag: AtomicI64::new(0),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no panic while holding the watchdog lock")
    }

    /// A record was read and handed to the shards.
    pub fn record_read(&self) {
        self.read.fetch_add(1, Ordering::Relaxed);
    }

    /// The consumer's lag over its owned partitions (from librdkafka's statistics).
    pub fn lag(&self, total: i64) {
        self.lag.store(total.max(0), Ordering::Relaxed);
    }

    pub fn cut_written(&self) {
        self.lock().cuts_failing = None;
    }

    pub fn cut_failed(&self, why: &str) {
        let mut state = self.lock();
        match &mut state.cuts_failing {
            Some((_, last)) => *last = why.to_owned(),
            None => state.cuts_failing = Some((crate::clock::monotonic(), why.to_owned())),
        }
    }

    pub fn takeover_failed(&self, partition: i32, why: &str) {
        self.lock().takeovers.insert(partition, why.to_owned());
    }

    /// The partition was taken over after all, or is no longer this replica's.
    pub fn takeover_cleared(&self, partition: i32) {
        self.lock().takeovers.remove(&partition);
    }

    /// Each condition with why it holds (None: it does not), as of `now`.
    fn conditions(&self, acks: &Acks, seen: &mut Seen, now: Instant) -> [Option<String>; 3] {
        let (read, through) = (self.read.load(Ordering::Relaxed), acks.through());
        let unacknowledged = acks.issued().saturating_sub(through);
        let lag = self.lag.load(Ordering::Relaxed);
        if through != seen.through || unacknowledged == 0 {
            seen.outputs_idle_since = now;
        }
        if read != seen.read || lag == 0 {
            seen.input_idle_since = now;
        }
        (seen.read, seen.through) = (read, through);
        let outputs_idle = now.saturating_duration_since(seen.outputs_idle_since);
        let input_idle = now.saturating_duration_since(seen.input_idle_since);
        let bound = self.stall_after.as_millis();
        let stalled = if outputs_idle >= self.stall_after {
            Some(format!(
                "{unacknowledged} output(s) waited {} s for the broker's acknowledgement \
                 without one (kafka.stall_timeout_ms = {bound}): is the broker reachable, or \
                 is an output failing? (see switchboard_kafka_produce_retries_total)",
                outputs_idle.as_secs()
            ))
        } else if input_idle >= self.stall_after {
            Some(format!(
                "{lag} record(s) of consumer lag and none read for {} s \
                 (kafka.stall_timeout_ms = {bound}): is the broker reachable?",
                input_idle.as_secs()
            ))
        } else {
            None
        };
        let state = self.lock();
        let failing = state.cuts_failing.as_ref().and_then(|(since, last)| {
            let failing_for = now.saturating_duration_since(*since);
            (failing_for >= self.failing_after).then(|| {
                format!(
                    "no snapshot written for {} s (kafka.snapshot_failure_timeout_ms = {}); \
                     offsets are not committed meanwhile; last error: {last}",
                    failing_for.as_secs(),
                    self.failing_after.as_millis()
                )
            })
        });
        let takeover = (!state.takeovers.is_empty()).then(|| {
            let parts: Vec<String> = state
                .takeovers
                .iter()
                .map(|(p, why)| format!("partition {p}: {why}"))
                .collect();
            format!(
                "state not restored, input paused, retried at each snapshot interval: {}",
                parts.join("; ")
            )
        });
        [stalled, failing, takeover]
    }

    /// Checks the conditions every `every` until `stop`, publishing the readiness (None:
    /// ready; else why not) to `ready` and each change of a condition to the log and metrics.
    pub async fn run(
        self: std::sync::Arc<Self>,
        acks: std::sync::Arc<Acks>,
        ready: watch::Sender<Option<String>>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut seen = Seen::new(crate::clock::monotonic());
        let mut held = [false; 3];
        // Exported from the start (0), so dashboards and alerts see the series before a fault.
        for condition in CONDITIONS {
            telemetry::kafka_condition(condition, false);
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let conditions = self.conditions(&acks, &mut seen, crate::clock::monotonic());
            for (i, why) in conditions.iter().enumerate() {
                if why.is_some() != held[i] {
                    held[i] = why.is_some();
                    telemetry::kafka_unhealthy(CONDITIONS[i], why.as_deref());
                }
            }
            let reasons: Vec<String> = conditions
                .iter()
                .zip(CONDITIONS)
                .filter_map(|(why, name)| why.as_ref().map(|w| format!("{name}: {w}")))
                .collect();
            let now = (!reasons.is_empty()).then(|| reasons.join(" | "));
            ready.send_if_modified(|r| {
                // The text changes every second (durations): only a change of state notifies.
                let changed = r.is_some() != now.is_some();
                *r = now;
                changed
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchdog() -> Watchdog {
        Watchdog::new(Duration::from_secs(30), Duration::from_secs(60))
    }

    #[test]
    fn waiting_without_progress_past_the_bound_is_a_stall_and_progress_clears_it() {
        let w = watchdog();
        let acks = Acks::new();
        let t0 = crate::clock::monotonic();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut seen = Seen::new(t0);
        // Idle: nothing waiting, however long, is not a stall.
        assert_eq!(w.conditions(&acks, &mut seen, at(600))[0], None);

        // An output is produced and never acknowledged; input is read meanwhile, which is no
        // progress for it.
        let seq = acks.issue();
        assert_eq!(w.conditions(&acks, &mut seen, at(601))[0], None);
        w.record_read();
        let [stalled, ..] = w.conditions(&acks, &mut seen, at(629));
        assert_eq!(stalled, None, "within the bound");
        w.record_read();
        let [stalled, ..] = w.conditions(&acks, &mut seen, at(632));
        let why = stalled.expect("a stall past the bound");
        assert!(why.contains("1 output(s) waited 32 s"), "{why}");

        // The broker answers: the watermark moves, the stall ends.
        acks.ack(seq);
        let [stalled, ..] = w.conditions(&acks, &mut seen, at(633));
        assert_eq!(stalled, None);

        // Lag with no record read is a stall too; a record read is progress.
        w.lag(5);
        assert_eq!(w.conditions(&acks, &mut seen, at(634))[0], None);
        let [stalled, ..] = w.conditions(&acks, &mut seen, at(665));
        assert!(
            stalled
                .expect("lag without progress")
                .contains("5 record(s)")
        );
        w.record_read();
        let [stalled, ..] = w.conditions(&acks, &mut seen, at(666));
        assert_eq!(stalled, None);
    }

    #[test]
    fn failing_cuts_count_from_the_first_failure_and_a_written_cut_clears_them() {
        let w = watchdog();
        let acks = Acks::new();
        let t0 = crate::clock::monotonic();
        let mut seen = Seen::new(t0);
        w.cut_failed("broker timeout");
        w.cut_failed("still down");
        let later = crate::clock::monotonic() + Duration::from_secs(61);
        let [_, failing, _] = w.conditions(&acks, &mut seen, later);
        let why = failing.expect("failing past the bound");
        assert!(why.contains("still down"), "the last error: {why}");
        w.cut_written();
        assert_eq!(w.conditions(&acks, &mut seen, later)[1], None);
        // A failure just now is within the bound.
        w.cut_failed("again");
        assert_eq!(
            w.conditions(&acks, &mut seen, crate::clock::monotonic())[1],
            None
        );
    }

    #[test]
    fn a_failed_takeover_is_unready_at_once_until_cleared() {
        let w = watchdog();
        let acks = Acks::new();
        let now = crate::clock::monotonic();
        let mut seen = Seen::new(now);
        w.takeover_failed(3, "snapshot unreadable");
        let why = w.conditions(&acks, &mut seen, now)[2]
            .clone()
            .expect("unready");
        assert!(why.contains("partition 3: snapshot unreadable"), "{why}");
        w.takeover_cleared(3);
        assert_eq!(w.conditions(&acks, &mut seen, now)[2], None);
    }
}
