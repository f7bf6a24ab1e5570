//! Latency recorded from each request's **scheduled** time (open loop). A request that could
//! not even be sent on time, because the target (or the client) stalled, counts the time it
//! waited: that is what its caller would have seen. Measuring from the actual send instead
//! hides the stall (coordinated omission). Requests scheduled during the warm-up are left out.
use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Latencies {
    histogram: Histogram<u64>,
    warmup: Duration,
    /// Requests scheduled during the warm-up (not recorded).
    pub warmup_skipped: u64,
}

/// The summary a report prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Latencies {
    /// Records latencies from 1 µs to `max` (larger ones are recorded as `max`) with 3
    /// significant digits; requests scheduled before `warmup` are skipped.
    pub fn new(warmup: Duration, max: Duration) -> Self {
        let max_us = (max.as_micros() as u64).max(2);
        Self {
            histogram: Histogram::new_with_bounds(1, max_us, 3)
                .expect("1 µs ≤ max with 3 digits is a valid histogram"),
            warmup,
            warmup_skipped: 0,
        }
    }

    /// A request scheduled at `scheduled` (from the start of the run) completed at `done`.
    pub fn record(&mut self, scheduled: Duration, done: Duration) {
        if scheduled < self.warmup {
            self.warmup_skipped += 1;
            return;
        }
        let latency = done.saturating_sub(scheduled).as_micros() as u64;
        self.histogram.saturating_record(latency.max(1));
    }

    pub fn summary(&self) -> Summary {
        let q = |q: f64| Duration::from_micros(self.histogram.value_at_quantile(q));
        Summary {
            count: self.histogram.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_micros(self.histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_stall_counts_for_every_request_scheduled_during_it() {
        // 100 requests at 10 ms intervals, each answered in 1 ms, except that the target
        // stalls for 500 ms at the 50th: the 50 scheduled during the stall are answered
        // when it ends.
        let mut corrected = Latencies::new(Duration::ZERO, Duration::from_secs(10));
        let mut naive = Latencies::new(Duration::ZERO, Duration::from_secs(10));
        let stall_ends = 500 * MS + 500 * MS;
        let mut free_at = Duration::ZERO;
        for n in 0..100u32 {
            let scheduled = n * 10 * MS;
            let sent = scheduled.max(free_at);
            let done = if n == 50 { stall_ends } else { sent + MS };
            free_at = done;
            corrected.record(scheduled, done);
            // What a closed-loop client that waits for each answer measures.
            naive.record(sent, done);
        }
        let (c, n) = (corrected.summary(), naive.summary());
        assert_eq!(c.count, 100);
        // Naive: one slow request in a hundred; corrected: half of them waited.
        assert!(n.p90 <= 2 * MS, "{n:?}");
        assert!(c.p90 >= 100 * MS, "{c:?}");
        assert!(c.max >= 499 * MS && c.max <= 501 * MS, "{c:?}");
        assert_eq!(c.max, n.max, "the stalled request itself is seen by both");
    }

    #[test]
    fn the_warm_up_is_left_out() {
        let mut l = Latencies::new(Duration::from_secs(1), Duration::from_secs(10));
        l.record(Duration::from_millis(999), Duration::from_secs(5));
        l.record(Duration::from_secs(1), Duration::from_millis(1_002));
        assert_eq!(l.warmup_skipped, 1);
        let s = l.summary();
        assert_eq!(s.count, 1);
        assert!(s.max <= Duration::from_millis(3));
    }
}
