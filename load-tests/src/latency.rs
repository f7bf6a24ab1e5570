//! Latency recorded from each request's **scheduled** time (open loop). A request that could
//! not even be sent on time, because the target (or the client) stalled, counts the time it
//! waited: that is what its caller would have seen. Measuring from the actual send instead
//! hides the stall (coordinated omission). Requests scheduled during the warm-up are left out.
use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Latencies {
    histogram: Histogram<u64>,
    /// Per second of the run (by completion time, warm-up included): for the plots.
    seconds: Vec<Histogram<u64>>,
    max_us: u64,
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

/// One second of a run, for the plots.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Second {
    pub second: u64,
    pub completed: u64,
    pub p99_ms: f64,
}

impl Latencies {
    /// Records latencies from 1 µs to `max` (larger ones are recorded as `max`) with 3
    /// significant digits; requests scheduled before `warmup` are skipped.
    pub fn new(warmup: Duration, max: Duration) -> Self {
        let max_us = (max.as_micros() as u64).max(2);
        Self {
            histogram: Histogram::new_with_bounds(1, max_us, 3)
                .expect("1 µs ≤ max with 3 digits is a valid histogram"),
            seconds: Vec::new(),
            max_us,
            warmup,
            warmup_skipped: 0,
        }
    }

    /// A request scheduled at `scheduled` (from the start of the run) completed at `done`.
    pub fn record(&mut self, scheduled: Duration, done: Duration) {
        let latency = (done.saturating_sub(scheduled).as_micros() as u64).max(1);
        let second = done.as_secs() as usize;
        if self.seconds.len() <= second {
            let max_us = self.max_us;
            self.seconds.resize_with(second + 1, || {
                Histogram::new_with_bounds(1, max_us, 2).expect("valid bounds, as above")
            });
        }
        self.seconds[second].saturating_record(latency);
        if scheduled < self.warmup {
            self.warmup_skipped += 1;
            return;
        }
        self.histogram.saturating_record(latency);
    }

    /// Each second of the run: requests completed in it and their p99 latency.
    pub fn timeline(&self) -> Vec<Second> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(s, h)| Second {
                second: s as u64,
                completed: h.len(),
                p99_ms: if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1_000.0
                },
            })
            .collect()
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

    #[test]
    fn the_timeline_counts_each_second_warm_up_included() {
        let mut l = Latencies::new(Duration::from_secs(1), Duration::from_secs(10));
        l.record(Duration::ZERO, 10 * MS);
        l.record(Duration::from_millis(1_990), Duration::from_millis(2_200));
        l.record(Duration::from_millis(2_000), Duration::from_millis(2_001));
        let t = l.timeline();
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].completed, t[1].completed, t[2].completed), (1, 0, 2));
        assert_eq!(t[1].p99_ms, 0.0);
        assert!((209.0..=211.0).contains(&t[2].p99_ms), "{:?}", t[2]);
    }
}
