//! The forecast of the messaging limit (issue 19) against hand-computed cases, to the second.
use super::quota::{Admission, Forecast};
use super::quota_tests::{DAY, HOUR, SEC, Sim, customer};
use crate::clock::Timestamp;
use crate::config::Category;

const MINUTE: u64 = 60 * SEC;

/// 40 customers counted 23 h 50 min ago (they leave in 10 min), then 30 new ones in the last
/// 15 minutes, one every 30 s: 70 counted, a pace of 120 an hour (one every 30 s).
/// - The batch threshold (80 of 100): 10 more, 300 s from now.
/// - The limit (100): in 600 s the count is 70 + 20 = 90 and the 40 leave: 50; 50 more take
///   1,500 s: 2,100 s from now.
#[test]
fn the_limit_is_forecast_from_the_pace_and_the_expiries_to_the_second() {
    let mut s = seventy_counted(0);
    let now = s.now;
    let at = |secs: u64| Some(Timestamp(now.as_millis() + secs * SEC));
    assert_seventy(&s, at(2_100));
    // Through Quotas.Get's snapshot and the gauges' refresh alike.
    s.tick();
    assert_eq!(s.quotas().last_forecast().unwrap().limit_at, at(2_100));
}

/// The case above with 10 of the first 40 customers sent to again an hour after: counted
/// once each still (70), the pace unchanged (a customer counted again takes no slot), but
/// those 10 leave an hour later than the other 30. The limit: at 600 s the count is 90 and
/// 30 leave: 60; 40 more take 1,200 s: 1,800 s from now (before the 10 leave, at 4,200 s).
/// The walk over the expiries skips each customer's earlier send, which no longer ends its
/// 24 hours.
#[test]
fn a_customer_counted_again_leaves_from_their_last_send() {
    let s = seventy_counted(10);
    assert_seventy(&s, Some(Timestamp(s.now.as_millis() + 1_800 * SEC)));
}

/// The cases above: 40 customers counted, the first `again` of them sent to again an hour
/// later, and 30 new ones over the last 15 minutes of the first 40's 24 hours.
fn seventy_counted(again: u64) -> Sim {
    let mut s = Sim::new("messaging_limit = 100\nbatch_threshold = 0.8", 1_000);
    let send = |s: &mut Sim, i| {
        assert_eq!(
            s.send(&customer(i), Category::Utility),
            Admission::Dispatched
        );
    };
    (0..40).for_each(|i| send(&mut s, i));
    s.advance(HOUR);
    (0..again).for_each(|i| send(&mut s, i));
    s.advance(DAY - 10 * MINUTE - 29 * 30 * SEC - HOUR);
    for i in 0..30 {
        if i > 0 {
            s.advance(30 * SEC);
        }
        send(&mut s, 100 + i);
    }
    s
}

/// What `seventy_counted` forecasts: 70 counted at 120 an hour, the threshold in 300 s, the
/// limit at `limit_at`.
fn assert_seventy(s: &Sim, limit_at: Option<Timestamp>) {
    assert_eq!(s.quotas().usage(), (70, Some(100)));
    assert_eq!(
        s.quotas().forecast(s.now),
        Forecast {
            per_hour: 120.0,
            threshold_at: Some(Timestamp(s.now.as_millis() + 300 * SEC)),
            limit_at,
            drained_at: Some(s.now),
        }
    );
}

#[test]
fn no_pace_no_forecast_and_a_reached_level_is_now() {
    let mut s = Sim::new("messaging_limit = 10\nbatch_threshold = 0.5", 1_000);
    for i in 0..5 {
        s.send(&customer(i), Category::Utility);
    }
    s.advance(HOUR); // the pace is measured over the last 15 minutes: none
    let f = s.quotas().forecast(s.now);
    assert_eq!(f.per_hour, 0.0);
    assert_eq!(f.threshold_at, Some(s.now), "5 of 10: reached");
    assert_eq!(f.limit_at, None, "not at this pace");
}

/// 9 counted one minute apart fill the low-priority budget (10, 1 in reserve); 3 marketing
/// sends to new customers wait for slots: the queue drains when the 3rd counted one leaves.
#[test]
fn the_batch_queue_drains_when_enough_counted_customers_leave() {
    let mut s = Sim::new(
        "messaging_limit = 10\nreserve = 0.1\nbatch_threshold = 0.5",
        1_000,
    );
    let first = s.now;
    for i in 0..9 {
        s.send(&customer(i), Category::Utility);
        s.advance(MINUTE);
    }
    for i in 0..3 {
        let a = s.send(&customer(100 + i), Category::Marketing);
        assert!(matches!(a, Admission::Queued { .. }), "{a:?}");
    }
    assert_eq!(
        s.quotas().forecast(s.now).drained_at,
        Some(Timestamp(first.as_millis() + DAY + 2 * MINUTE))
    );
}
