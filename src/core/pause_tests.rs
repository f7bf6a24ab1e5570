//! Pausing and resuming a campaign by tag (issue 19) with simulated time: what a pause holds,
//! the order and the quotas on resume, validity, the end of a pause, the audit, a handover.
use super::lifecycle_tests::Req;
use super::quota::{Admission, Hold, PauseView, Refusal, SendId, SendState};
use super::quota_tests::{HOUR, Sim, T, customer};
use super::*;
use crate::config::Category;
use crate::model::TenantId;

/// 5 of 100 customers reached turns batch mode on: low-priority sends (marketing) queue.
const NEAR_THE_LIMIT: &str = "messaging_limit = 100\nreserve = 0.01\nbatch_threshold = 0.05";
const MINUTE: u64 = 60_000;

impl Sim {
    fn pause(&mut self, tag: &str, ttl_ms: u64) -> Result<PauseView, CoreError> {
        match self.run(Command::PauseTag {
            tenant: TenantId::new(T),
            tag: tag.into(),
            ttl_ms,
            actor: "sre-ana".into(),
            reason: "wrong template in the promo".into(),
            at: None,
        })? {
            Reply::Paused(p) => Ok(p),
            other => panic!("{other:?}"),
        }
    }

    fn resume(&mut self, tag: &str) -> (Option<PauseView>, u32) {
        match self
            .run(Command::ResumeTag {
                tenant: TenantId::new(T),
                tag: tag.into(),
                actor: "sre-ana".into(),
                reason: "template fixed".into(),
            })
            .unwrap()
        {
            Reply::Resumed { pause, released } => (pause, released),
            other => panic!("{other:?}"),
        }
    }

    fn paused(&mut self) -> Vec<PauseView> {
        match self
            .run(Command::ListPaused {
                tenant: TenantId::new(T),
            })
            .unwrap()
        {
            Reply::Pauses(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn audit_actions(&mut self) -> Vec<&'static str> {
        match self
            .run(Command::ListAudit {
                tenant: TenantId::new(T),
                limit: 100,
            })
            .unwrap()
        {
            Reply::Audit(entries) => entries.iter().rev().map(|e| e.action).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// Reaches 5 customers: batch mode is on.
    fn near_the_limit() -> Self {
        let mut s = Sim::new(NEAR_THE_LIMIT, 1_000);
        for i in 0..5 {
            s.request(Req::new(&customer(900 + i), Category::Utility));
        }
        assert!(s.quotas().batch_mode());
        s
    }

    fn tagged(&mut self, i: u64, category: Category, tag: &str) -> (SendId, Admission) {
        let mut r = Req::new(&customer(i), category);
        r.tag = Some(tag);
        self.request(r)
    }
}

fn held_until(a: Admission) -> Timestamp {
    match a {
        Admission::Queued {
            estimated_release: Some(t),
            held: Some(Hold::Paused),
        } => t,
        other => panic!("not held by a pause: {other:?}"),
    }
}

#[test]
fn a_paused_tag_holds_its_queued_scheduled_and_new_sends_and_resumes_them_in_order() {
    let mut s = Sim::near_the_limit();
    let queued: Vec<SendId> = (0..3)
        .map(|i| s.tagged(i, Category::Marketing, "promo").0)
        .collect();
    let other: Vec<SendId> = (10..12)
        .map(|i| s.tagged(i, Category::Marketing, "welcome").0)
        .collect();
    let mut r = Req::new(&customer(20), Category::Utility);
    r.tag = Some("promo");
    r.send_at = Some(Timestamp(s.now.as_millis() + HOUR));
    let (scheduled, _) = s.request(r);

    let pause = s.pause("promo", 2 * HOUR).unwrap();
    assert_eq!(pause.until, Timestamp(s.now.as_millis() + 2 * HOUR));
    assert_eq!(pause.held, 3, "the queued ones");
    // New sends with the tag are accepted and held, whatever their priority.
    let (new_marketing, a) = s.tagged(30, Category::Marketing, "promo");
    assert_eq!(held_until(a), pause.until);
    let (new_utility, a) = s.tagged(31, Category::Utility, "promo");
    assert_eq!(held_until(a), pause.until);
    assert_eq!(s.state(new_utility), SendState::Queued);
    // A free-form reply (the customer wrote: the window is open) cannot wait: refused, with
    // when the pause ends.
    s.say(&customer(32), "hola");
    let (_, a) = s.tagged(32, Category::Session, "promo");
    assert_eq!(
        a,
        Admission::Refused {
            reason: Refusal::TagPaused,
            retry_after_ms: Some(2 * HOUR)
        }
    );

    s.tick();
    assert_eq!(s.dispatched_ids(), other, "other tags flow");
    s.advance(HOUR);
    s.tick();
    assert_eq!(s.dispatched(), 0, "the scheduled one came due and is held");
    assert_eq!(s.state(scheduled), SendState::Queued);
    assert_eq!(s.paused()[0].held, 6);

    assert_eq!(s.resume("promo").1, 6);
    assert!(s.paused().is_empty());
    s.tick();
    let mut order = queued.clone();
    order.extend([new_marketing, new_utility, scheduled]);
    assert_eq!(
        s.dispatched_ids(),
        order,
        "in the order they were held: queued, new, come due"
    );
    assert_eq!(s.audit_actions(), ["tag_paused", "tag_resumed"]);
}

#[test]
fn resumed_sends_leave_within_the_quotas() {
    // 10 customers at most, 1 kept for higher classes: batch mode at 5; low priority may
    // reach 9.
    let mut s = Sim::new(
        "messaging_limit = 10\nreserve = 0.1\nbatch_threshold = 0.5",
        1_000,
    );
    for i in 0..5 {
        s.request(Req::new(&customer(900 + i), Category::Utility));
    }
    s.pause("promo", HOUR).unwrap();
    let held: Vec<SendId> = (0..8)
        .map(|i| s.tagged(i, Category::Marketing, "promo").0)
        .collect();
    s.resume("promo");
    s.tick();
    assert_eq!(
        s.dispatched_ids(),
        held[..4],
        "the 4 slots the low-priority budget has left, first held first"
    );
    assert_eq!(s.quotas().usage().0, 9);
    for &id in &held[4..] {
        assert_eq!(s.state(id), SendState::Queued);
    }
}

#[test]
fn a_send_whose_validity_ends_while_paused_expires_and_is_never_sent() {
    let mut s = Sim::near_the_limit();
    let mut r = Req::new(&customer(1), Category::Marketing);
    r.tag = Some("promo");
    r.valid_for_ms = Some(30 * MINUTE);
    let (short, _) = s.request(r);
    let (long, _) = s.tagged(2, Category::Marketing, "promo");
    s.pause("promo", 2 * HOUR).unwrap();
    s.advance(30 * MINUTE);
    s.tick();
    assert_eq!(s.state(short), SendState::Expired);
    assert_eq!(s.paused()[0].held, 1);
    assert_eq!(s.resume("promo").1, 1);
    s.tick();
    assert_eq!(s.dispatched_ids(), vec![long]);
}

#[test]
fn a_pause_ends_by_itself_at_its_time_and_pausing_again_extends_it() {
    let mut s = Sim::near_the_limit();
    let (id, _) = s.tagged(1, Category::Marketing, "promo");
    let first = s.pause("promo", HOUR).unwrap();
    s.advance(30 * MINUTE);
    let extended = s.pause("promo", HOUR).unwrap();
    assert_eq!(extended.since, first.since, "the same pause, longer");
    assert_eq!(
        extended.until,
        Timestamp(first.until.as_millis() + 30 * MINUTE)
    );
    s.at(Timestamp(extended.until.as_millis() - 1));
    s.tick();
    assert_eq!(s.dispatched(), 0, "not a millisecond early");
    s.at(extended.until);
    s.tick();
    assert_eq!(
        s.dispatched_ids(),
        vec![id],
        "resumed by itself, sent in that tick"
    );
    assert!(s.paused().is_empty());
    assert_eq!(
        s.audit_actions(),
        ["tag_paused", "pause_extended", "pause_expired"]
    );
    // Resuming it again changes nothing (a retry, a replay).
    assert_eq!(s.resume("promo"), (None, 0));
    // Nor does the journal's pause read again after it ended (a replay after a crash).
    let replayed = s.run(Command::PauseTag {
        tenant: TenantId::new(T),
        tag: "promo".into(),
        ttl_ms: HOUR,
        actor: "sre-ana".into(),
        reason: "wrong template in the promo".into(),
        at: Some(first.since),
    });
    assert!(matches!(replayed, Ok(Reply::Paused(_))), "{replayed:?}");
    assert!(s.paused().is_empty());
    assert_eq!(s.audit_actions().len(), 3, "no entry for it");
}

#[test]
fn a_pause_and_what_it_holds_survive_a_handover() {
    let mut s = Sim::near_the_limit();
    let (queued, _) = s.tagged(1, Category::Marketing, "promo");
    let pause = s.pause("promo", HOUR).unwrap();
    let (new, _) = s.tagged(2, Category::Marketing, "promo");

    s.handover();

    assert_eq!(s.paused(), vec![PauseView { held: 2, ..pause }]);
    let (after, a) = s.tagged(3, Category::Marketing, "promo");
    assert!(matches!(
        a,
        Admission::Queued {
            held: Some(Hold::Paused),
            ..
        }
    ));
    s.tick();
    assert_eq!(s.dispatched(), 0);
    s.resume("promo");
    s.tick();
    assert_eq!(s.dispatched_ids(), vec![queued, new, after]);
}

#[test]
fn a_pause_needs_a_tag_a_reason_an_actor_and_an_end() {
    let mut s = Sim::near_the_limit();
    let invalid = |r: Result<PauseView, CoreError>| match r {
        Err(CoreError::InvalidArgument { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(invalid(s.pause(" ", HOUR)), "tag");
    assert_eq!(invalid(s.pause("promo", 0)), "expires_in_ms");
    assert_eq!(invalid(s.pause("promo", 32 * 24 * HOUR)), "expires_in_ms");
    let no_reason = s.run(Command::PauseTag {
        tenant: TenantId::new(T),
        tag: "promo".into(),
        ttl_ms: HOUR,
        actor: "sre-ana".into(),
        reason: String::new(),
        at: None,
    });
    assert!(matches!(
        no_reason,
        Err(CoreError::InvalidArgument {
            field: "reason",
            ..
        })
    ));
    assert!(s.paused().is_empty(), "nothing changed");
    // Opted-out marketing is still refused, paused tag or not.
    s.say(&customer(7), "STOP");
    s.pause("promo", HOUR).unwrap();
    assert_eq!(
        s.tagged(7, Category::Marketing, "promo").1,
        Admission::Refused {
            reason: Refusal::OptedOut,
            retry_after_ms: None
        }
    );
}
