//! Open-loop rate schedules: when the n-th request is due, whatever happened to the ones
//! before it. The rate may change over the run (step, ramp); the due times are where the
//! cumulative number of requests reaches each whole number.
use std::time::Duration;

/// Requests per second over time.
#[derive(Debug, Clone, PartialEq)]
pub enum Rate {
    /// `per_sec` for the whole run.
    Constant { per_sec: f64 },
    /// `from` until `at`, then `to`.
    Step { from: f64, to: f64, at: Duration },
    /// From `from` to `to` linearly over `over`, then `to`.
    Ramp { from: f64, to: f64, over: Duration },
    /// Each stage's rate for its length, one after the other; 0 after the last (a day's
    /// profile, time-compressed).
    Stages(Vec<(Duration, f64)>),
}

impl Rate {
    /// The rate at `t`.
    pub fn at(&self, t: Duration) -> f64 {
        match *self {
            Rate::Stages(ref stages) => {
                let mut start = Duration::ZERO;
                for &(length, per_sec) in stages {
                    if t < start + length {
                        return per_sec;
                    }
                    start += length;
                }
                0.0
            }
            Rate::Constant { per_sec } => per_sec,
            Rate::Step { from, to, at } => {
                if t < at {
                    from
                } else {
                    to
                }
            }
            Rate::Ramp { from, to, over } => {
                if t >= over || over.is_zero() {
                    to
                } else {
                    from + (to - from) * t.as_secs_f64() / over.as_secs_f64()
                }
            }
        }
    }

    /// Requests due by `t` (the integral of the rate from 0 to `t`).
    pub fn count_by(&self, t: Duration) -> f64 {
        let s = t.as_secs_f64();
        match *self {
            Rate::Stages(ref stages) => {
                let (mut start, mut count) = (0.0, 0.0);
                for &(length, per_sec) in stages {
                    let length = length.as_secs_f64();
                    count += per_sec * (s - start).clamp(0.0, length);
                    start += length;
                }
                count
            }
            Rate::Constant { per_sec } => per_sec * s,
            Rate::Step { from, to, at } => {
                let a = at.as_secs_f64();
                if s < a {
                    from * s
                } else {
                    from * a + to * (s - a)
                }
            }
            Rate::Ramp { from, to, over } => {
                let o = over.as_secs_f64();
                let ramp = s.min(o);
                let slope = if o > 0.0 { (to - from) / o } else { 0.0 };
                let during = from * ramp + slope * ramp * ramp / 2.0;
                during + to * (s - ramp).max(0.0)
            }
        }
    }

    /// When the `n`-th request (from 0) is due: the first `t` with `count_by(t) ≥ n`. None
    /// if the rate does not reach `n + 1` requests by `horizon` (the request would have no
    /// time of its own: a run of 1 s at 100/s has requests 0 to 99).
    pub fn due(&self, n: u64, horizon: Duration) -> Option<Duration> {
        let target = n as f64;
        if self.count_by(horizon) < target + 1.0 {
            return None;
        }
        // count_by is non-decreasing: bisect to the microsecond.
        let (mut lo, mut hi) = (0u128, horizon.as_micros());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.count_by(Duration::from_micros(mid as u64)) >= target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(Duration::from_micros(lo as u64))
    }

    /// Every due time within `duration`, in order.
    pub fn schedule(&self, duration: Duration) -> Vec<Duration> {
        (0..)
            .map_while(|n| self.due(n, duration))
            .take_while(|t| *t < duration)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_constant_rate_is_evenly_spaced() {
        let due = Rate::Constant { per_sec: 100.0 }.schedule(SEC);
        assert_eq!(due.len(), 100);
        assert_eq!(due[0], Duration::ZERO);
        assert_eq!(due[1], Duration::from_millis(10));
        assert_eq!(due[99], Duration::from_millis(990));
    }

    #[test]
    fn a_step_changes_the_spacing_at_its_time() {
        let rate = Rate::Step {
            from: 10.0,
            to: 100.0,
            at: SEC,
        };
        let due = rate.schedule(2 * SEC);
        assert_eq!(due.len(), 10 + 100);
        assert_eq!(due[9], Duration::from_millis(900));
        assert_eq!(due[10], SEC);
        assert_eq!(due[11], Duration::from_millis(1_010));
    }

    #[test]
    fn a_ramp_sends_the_area_under_it() {
        // 0 → 100/s over 2 s, then 100/s for 1 s: 100 + 100 requests.
        let rate = Rate::Ramp {
            from: 0.0,
            to: 100.0,
            over: 2 * SEC,
        };
        assert_eq!(rate.at(SEC), 50.0);
        let due = rate.schedule(3 * SEC);
        assert_eq!(due.len(), 200);
        // Sparse at first, dense later: the gaps shrink along the ramp.
        assert!(due[2] - due[1] > due[99] - due[98]);
        // A quarter of the ramp's requests in its first half: 50/s² × (1 s)² / 2 = 25.
        assert_eq!(due.iter().filter(|t| **t < SEC).count(), 25);
    }

    #[test]
    fn stages_follow_each_other_and_stop_after_the_last() {
        // A compressed day: 1 s quiet, 1 s peak, 1 s quiet.
        let rate = Rate::Stages(vec![(SEC, 10.0), (SEC, 50.0), (SEC, 20.0)]);
        assert_eq!(rate.at(Duration::from_millis(1_500)), 50.0);
        assert_eq!(rate.at(4 * SEC), 0.0);
        let due = rate.schedule(5 * SEC);
        assert_eq!(due.len(), 10 + 50 + 20);
        assert_eq!(
            due.iter().filter(|t| (SEC..2 * SEC).contains(*t)).count(),
            50
        );
        assert!(due.iter().all(|t| *t < 3 * SEC));
    }

    #[test]
    fn a_rate_that_stops_schedules_nothing_more() {
        let rate = Rate::Step {
            from: 10.0,
            to: 0.0,
            at: SEC,
        };
        assert_eq!(rate.schedule(10 * SEC).len(), 10);
    }
}
