//! When the sweep looks at each conversation: a conversation is filed under the time its
//! retention would end if nothing happened to it from then on, in buckets of a fixed width, and
//! a sweep takes only the buckets that have come due. A sweep that read every conversation's
//! last activity took ~10 ms a sweep with a million conversations (`cargo bench --bench
//! stalls`), all of them read to forget a few.
//!
//! Activity only moves a conversation's end later, so it is filed too early, never too late:
//! a sweep that finds one not yet ended files it again under its new end. So the sweep forgets
//! exactly what looking at every conversation would, at the same sweep. A conversation dropped
//! otherwise (merged into another) leaves its entry behind until its bucket comes due.
use std::collections::VecDeque;

use crate::clock::Timestamp;
use crate::model::ConversationId;

/// Most buckets spanned by a retention: a longer retention gets wider buckets (whose
/// conversations not yet due are filed again at each sweep until they are), so that a
/// retention of months with a sweep a second costs no more buckets than this.
const MOST_BUCKETS: u64 = 4_096;

#[derive(Debug)]
pub(super) struct Retention {
    /// A bucket's width, in milliseconds.
    width: u64,
    /// The bucket `buckets[0]` is (its start divided by `width`).
    first: u64,
    buckets: VecDeque<Vec<ConversationId>>,
}

impl Retention {
    /// For conversations kept `retention_ms` after their last activity.
    pub fn new(retention_ms: u64, sweep_interval_ms: u64) -> Self {
        Self {
            width: sweep_interval_ms
                .max(retention_ms.div_ceil(MOST_BUCKETS))
                .max(1),
            first: 0,
            buckets: VecDeque::new(),
        }
    }

    /// Files `id` to be looked at by the first sweep at or after `due`.
    pub fn file(&mut self, id: ConversationId, due: Timestamp) {
        let bucket = due.as_millis() / self.width;
        if self.buckets.is_empty() {
            self.first = bucket;
        }
        while bucket < self.first {
            self.buckets.push_front(Vec::new());
            self.first -= 1;
        }
        let at = (bucket - self.first) as usize;
        if at >= self.buckets.len() {
            self.buckets.resize_with(at + 1, Vec::new);
        }
        self.buckets[at].push(id);
    }

    /// Takes the conversations a sweep at `now` looks at: those filed under any time up to
    /// the end of `now`'s bucket (some later than `now`: the sweep files them again).
    pub fn due(&mut self, now: Timestamp) -> Vec<ConversationId> {
        let last = now.as_millis() / self.width;
        let mut due = Vec::new();
        while self.first <= last {
            let Some(bucket) = self.buckets.pop_front() else {
                break;
            };
            self.first += 1;
            if due.is_empty() {
                due = bucket;
            } else {
                due.extend(bucket);
            }
        }
        due
    }

    /// Conversations filed (those dropped otherwise, not yet due, included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    /// Buckets spanned, empty ones included.
    #[cfg(test)]
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn a_sweep_takes_what_is_due_by_the_end_of_its_bucket_and_nothing_later() {
        let mut r = Retention::new(60 * MIN, MIN);
        r.file(ConversationId(1), Timestamp(10 * MIN + 5));
        r.file(ConversationId(2), Timestamp(12 * MIN));
        r.file(ConversationId(3), Timestamp(10 * MIN + MIN - 1));
        r.file(ConversationId(4), Timestamp(3 * MIN));
        assert_eq!(r.due(Timestamp(2 * MIN)), []);
        assert_eq!(
            r.due(Timestamp(10 * MIN)),
            [ConversationId(4), ConversationId(1), ConversationId(3)]
        );
        assert_eq!(r.due(Timestamp(11 * MIN + MIN - 1)), []);
        assert_eq!(r.len(), 1);
        // Filed again under a time whose bucket was taken: the next sweep takes it.
        r.file(ConversationId(3), Timestamp(10 * MIN + MIN - 1));
        assert_eq!(
            r.due(Timestamp(12 * MIN)),
            [ConversationId(3), ConversationId(2)]
        );
        assert_eq!((r.len(), r.buckets()), (0, 0));
    }

    #[test]
    fn a_long_retention_spans_a_bounded_number_of_buckets() {
        // 90 days, a sweep a second: conversations ending all over the retention.
        let retention = 90 * 24 * 60 * MIN;
        let mut r = Retention::new(retention, 1_000);
        for n in 0..=10_000u64 {
            r.file(ConversationId(n), Timestamp(n * retention / 10_000));
        }
        assert!(r.buckets() <= MOST_BUCKETS as usize + 1, "{}", r.buckets());
        assert_eq!(r.due(Timestamp(retention / 2)).len(), 5_001);
        assert_eq!(r.due(Timestamp(retention)).len(), 5_000);
    }
}
