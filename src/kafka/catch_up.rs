//! A partition's catch-up after a takeover: what was written to its inputs before the
//! takeover is read before the partition is served (see `handover::take_over`). The inbound
//! messages and webhooks first (send requests wait for the windows and provider answers they
//! carry), then the sends topic up to its end at the takeover (the journal of what the API
//! acknowledged: sends, cancels, consents, links, profiles).
use std::time::Instant;

/// What a partition taken over still has to read before it is served. Its tenants are held
/// (`Command::HoldTime`) until then: nothing of theirs falls due before what was written
/// before the takeover is applied.
pub(super) struct CatchUp {
    /// Inbound messages and webhooks: (topic, high watermark at the takeover) still ahead.
    /// Send requests wait until these are read (the windows they opened, the provider's
    /// answers, come first).
    pub(super) first: Vec<(String, i64)>,
    /// The sends topic's high watermark at the takeover, while records below it are unread:
    /// the journal of what the API acknowledged (sends, cancels, consents, links, profiles).
    pub(super) journal: Option<i64>,
    pub(super) since: Instant,
}

impl CatchUp {
    /// Notes where reading each topic is (`read_to`: the offset after the last record read,
    /// if known); the sends topic is `sends`.
    pub(super) fn advance(
        &mut self,
        sends: &str,
        read_to: impl Fn(&str) -> Option<i64>,
    ) -> Progress {
        let had_first = !self.first.is_empty();
        self.first
            .retain(|(t, high)| read_to(t).is_none_or(|at| at < *high));
        if !self.first.is_empty() {
            return Progress::Reading;
        }
        if self
            .journal
            .is_some_and(|high| read_to(sends).is_some_and(|at| at >= high))
        {
            self.journal = None;
        }
        match (self.journal, had_first) {
            (None, _) => Progress::CaughtUp,
            (Some(_), true) => Progress::SendsNext,
            (Some(_), false) => Progress::Reading,
        }
    }
}

/// What reading a record did to its partition's catch-up.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Nothing to note (not catching up, or more to read).
    Reading,
    /// The inbound messages and webhooks are read: its send requests may be read now.
    SendsNext,
    /// Everything written before the takeover is read: serve the partition (`caught_up`).
    CaughtUp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_reads_the_inbound_then_the_journal_then_serves() {
        let mut c = CatchUp {
            first: vec![("inbound".into(), 10), ("webhooks".into(), 3)],
            journal: Some(5),
            since: crate::clock::monotonic(),
        };
        let at = |topic: &'static str, offset: i64| move |t: &str| (t == topic).then_some(offset);
        assert_eq!(c.advance("sends", at("inbound", 10)), Progress::Reading);
        assert_eq!(c.advance("sends", at("webhooks", 2)), Progress::Reading);
        assert_eq!(
            c.advance("sends", at("webhooks", 3)),
            Progress::SendsNext,
            "the earlier inbound is read: the send requests come next"
        );
        assert_eq!(c.advance("sends", at("sends", 4)), Progress::Reading);
        assert_eq!(
            c.advance("sends", at("sends", 5)),
            Progress::CaughtUp,
            "the journal up to the takeover is read"
        );

        // Only the journal to read: served once it is.
        let mut c = CatchUp {
            first: Vec::new(),
            journal: Some(2),
            since: crate::clock::monotonic(),
        };
        assert_eq!(c.advance("sends", at("inbound", 9)), Progress::Reading);
        assert_eq!(c.advance("sends", at("sends", 2)), Progress::CaughtUp);
        // Only inbound: served as soon as it is read (nothing journaled to wait for).
        let mut c = CatchUp {
            first: vec![("inbound".into(), 1)],
            journal: None,
            since: crate::clock::monotonic(),
        };
        assert_eq!(c.advance("sends", at("inbound", 1)), Progress::CaughtUp);
    }
}
