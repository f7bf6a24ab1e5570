//! Pausing a tenant's sends by tag: a campaign that misbehaves (a wrong template, complaints,
//! a spam-rate warning) is held with its sends intact and resumed later.
//!
//! - While a tag is paused, its sends are held, not dispatched: those queued when the pause
//!   begins, scheduled ones as they come due, and new ones (accepted, answered `QUEUED` with
//!   the pause's end as their estimate). A free-form session send with a paused tag is refused
//!   (`TagPaused`): its window does not wait.
//! - Held sends keep their order and their validity: one whose validity ends during the pause
//!   expires (`EXPIRED`), it is not sent late.
//! - Resuming (or the pause reaching its end: pauses are time-boxed like overrides, at most
//!   `MAX_OVERRIDE_MS`, and extended by pausing again) puts the held sends back at the end of
//!   the batch queues in their order; the next waves release them within the quotas.
//! - Every pause, extension and resume is audited with its actor and reason.
use super::*;
use controls::{bad, time_boxed};

/// An active pause of one tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseView {
    pub tag: Arc<str>,
    pub since: Timestamp,
    /// It ends by itself then, unless extended.
    pub until: Timestamp,
    pub actor: Arc<str>,
    pub reason: Arc<str>,
    /// Sends it holds now (not saved: counted when viewed).
    #[serde(skip)]
    pub held: u32,
}

impl Quotas {
    /// Pauses the sends tagged `tag` for `ttl_ms` from `at` (None: now; a journal replayed
    /// gives the time it was asked); pausing again extends the pause to that end. The same
    /// pause again, or one already over (a journal replayed after it ended), changes nothing.
    /// Refused (nothing changes) without a tag, reason or actor, or past the longest pause.
    pub fn pause(
        &mut self,
        now: Timestamp,
        at: Option<Timestamp>,
        tag: &str,
        ttl_ms: u64,
        actor: &str,
        reason: &str,
    ) -> Result<PauseView, BadSend> {
        let tag = tag.trim();
        if tag.is_empty() {
            return Err(bad(
                "tag",
                "is required: the tag the campaign's sends carry",
            ));
        }
        time_boxed(reason, actor, ttl_ms)?;
        let at = at.unwrap_or(now);
        let until = Timestamp(at.as_millis().saturating_add(ttl_ms));
        let view = PauseView {
            tag: Arc::from(tag),
            since: at,
            until,
            actor: Arc::from(actor),
            reason: Arc::from(reason),
            held: 0,
        };
        if until <= now {
            return Ok(view);
        }
        let (action, before) = match self.pauses.iter_mut().find(|p| &*p.tag == tag) {
            Some(p) if p.until == until => {
                return Ok(self.pause_view(tag).expect("active"));
            }
            Some(p) => {
                let before = format!("paused until {}", p.until);
                (p.until, p.actor, p.reason) = (until, view.actor, view.reason);
                ("pause_extended", before)
            }
            None => {
                self.pauses.push(view);
                self.hold_queued(tag);
                ("tag_paused", "sending".to_owned())
            }
        };
        self.record(AuditEntry {
            at: now,
            actor: Arc::from(actor),
            action,
            target: format!("tag {tag}"),
            before,
            after: format!("paused until {}", until),
            reason: reason.to_owned(),
        });
        Ok(self.pause_view(tag).expect("just set"))
    }

    /// Ends the pause of `tag` now: its held sends go back to the batch queues, in order.
    /// The pause as it was (None: the tag was not paused, nothing changed: a retry, or a
    /// replay, is safe), and how many sends it released.
    pub fn resume(
        &mut self,
        now: Timestamp,
        tag: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(Option<PauseView>, u32), BadSend> {
        if actor.trim().is_empty() {
            return Err(bad("actor", "is required: who resumes"));
        }
        let Some(i) = self.pauses.iter().position(|p| &*p.tag == tag.trim()) else {
            return Ok((None, 0));
        };
        let reason = if reason.trim().is_empty() {
            "resumed"
        } else {
            reason
        };
        let (view, released) = self.end_pause(now, i, "tag_resumed", Arc::from(actor), reason);
        Ok((Some(view), released))
    }

    /// The active pauses, oldest first, with the sends each holds.
    pub fn pauses(&self) -> Vec<PauseView> {
        self.pauses
            .iter()
            .filter_map(|p| self.pause_view(&p.tag))
            .collect()
    }

    fn pause_view(&self, tag: &str) -> Option<PauseView> {
        let p = self.pauses.iter().find(|p| &*p.tag == tag)?;
        let held = self
            .paused
            .iter()
            .filter(|&&id| {
                self.log
                    .get(id)
                    .is_some_and(|s| s.view.tag.as_deref() == Some(tag))
            })
            .count();
        Some(PauseView {
            held: held as u32,
            ..p.clone()
        })
    }

    /// Pauses past their end resume by themselves (audited as `pause_expired`).
    pub(super) fn expire_pauses(&mut self, now: Timestamp) {
        while let Some(i) = self.pauses.iter().position(|p| p.until <= now) {
            let reason = "the pause reached its end";
            self.end_pause(now, i, "pause_expired", Arc::from("switchboard"), reason);
        }
    }

    fn end_pause(
        &mut self,
        now: Timestamp,
        i: usize,
        action: &'static str,
        actor: Arc<str>,
        reason: &str,
    ) -> (PauseView, u32) {
        let view = self
            .pause_view(&self.pauses[i].tag.clone())
            .expect("active");
        self.pauses.remove(i);
        let released = self.unhold(&view.tag);
        self.record(AuditEntry {
            at: now,
            actor,
            action,
            target: format!("tag {}", view.tag),
            before: format!("paused until {}", view.until),
            after: format!("sending ({released} held sends back in the queue)"),
            reason: reason.to_owned(),
        });
        (view, released)
    }

    /// The end of the pause holding `send`, if its tag is paused.
    pub(super) fn paused_until(&self, send: &Send) -> Option<Timestamp> {
        let tag = send.view.tag.as_deref()?;
        self.pauses.iter().find(|p| &*p.tag == tag).map(|p| p.until)
    }

    /// A new pause of `tag`: its queued sends leave the batch queues for the held ones, in
    /// arrival order (ids are given in arrival order).
    fn hold_queued(&mut self, tag: &str) {
        let log = &self.log;
        let tagged = |id: &SendId| {
            log.get(*id)
                .is_some_and(|s| s.view.tag.as_deref() == Some(tag))
        };
        let mut moved: Vec<SendId> = self
            .queue_free
            .iter()
            .chain(&self.queue_new)
            .copied()
            .filter(tagged)
            .collect();
        if moved.is_empty() {
            return;
        }
        self.queue_free.retain(|id| !tagged(id));
        self.queue_new.retain(|id| !tagged(id));
        moved.sort_unstable();
        self.paused.extend(moved);
    }

    /// The end of `tag`'s pause: its held sends go to the back of the batch queues, in order.
    fn unhold(&mut self, tag: &str) -> u32 {
        let mut released = 0;
        let mut kept = VecDeque::with_capacity(self.paused.len());
        for id in std::mem::take(&mut self.paused) {
            let Some(send) = self.log.get(id) else {
                continue;
            };
            if send.view.tag.as_deref() != Some(tag) {
                kept.push_back(id);
                continue;
            }
            if send.business_initiated && !self.reach.counts(&send.to) {
                self.queue_new.push_back(id);
            } else {
                self.queue_free.push_back(id);
            }
            self.next_expiry = self.next_expiry.min(send.view.valid_until);
            released += 1;
        }
        self.paused = kept;
        released
    }
}
