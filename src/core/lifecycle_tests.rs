//! The send lifecycle with simulated time (issue 16): cancel, scheduled sends, quiet hours
//! across daylight-saving changes, consent keywords, the frequency cap and 131049, each to
//! the millisecond, and all of it through a save and restore (a handover).
use proptest::prelude::*;

use super::quota::{Admission, ConsentState, Hold, ProviderOutcome, Refusal, SendId, SendState};
use super::quota_tests::{DAY, HOUR, NUMBER, Sim, T, customer, refused};
use super::*;
use crate::config::Category;
use crate::model::{Channel, TenantId};

/// A send with a tag and a time (None: now).
pub(super) struct Req<'a> {
    pub(super) to: String,
    pub(super) category: Category,
    pub(super) tag: Option<&'a str>,
    pub(super) send_at: Option<Timestamp>,
    pub(super) valid_for_ms: Option<u64>,
}

impl<'a> Req<'a> {
    pub(super) fn new(to: &str, category: Category) -> Self {
        Self {
            to: to.to_owned(),
            category,
            tag: None,
            send_at: None,
            valid_for_ms: None,
        }
    }
}

impl Sim {
    pub(super) fn request(&mut self, r: Req<'_>) -> (SendId, Admission) {
        self.try_request(r).unwrap()
    }

    fn try_request(&mut self, r: Req<'_>) -> Result<(SendId, Admission), CoreError> {
        self.keys += 1;
        let reply = self.run(Command::Send(Outbound {
            tenant: TenantId::new(T),
            from: NUMBER.into(),
            to: r.to,
            category: r.category,
            content: "payment_reminder".into(),
            template: None,
            priority: None,
            idempotency_key: format!("key-{}", self.keys),
            valid_for_ms: r.valid_for_ms,
            tag: r.tag.map(Into::into),
            send_at: r.send_at,
            thread: None,
        }));
        match reply? {
            Reply::Send { id, admission } => Ok((id, admission)),
            other => panic!("{other:?}"),
        }
    }

    fn cancel(&mut self, target: Cancel) -> Result<u32, CoreError> {
        match self.run(Command::Cancel {
            tenant: TenantId::new(T),
            target,
        })? {
            Reply::Cancelled { cancelled, .. } => Ok(cancelled),
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn say(&mut self, from: &str, text: &str) -> Reply {
        self.keys += 1;
        self.run(Command::Ingest(Inbound {
            tenant: TenantId::new(T),
            customer: from.into(),
            channel: Channel::WhatsApp,
            provider_message_id: format!("in-{}", self.keys),
            text: text.into(),
            business_number: None,
            email: None,
            visitor_id: None,
            profile_name: None,
        }))
        .unwrap()
    }

    pub(super) fn at(&mut self, t: Timestamp) {
        assert!(t >= self.now, "time only moves forward");
        self.now = t;
    }

    pub(super) fn dispatched_ids(&self) -> Vec<SendId> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Dispatch { send, .. } => Some(send.id),
                _ => None,
            })
            .collect()
    }

    /// A save and a restore into a fresh shard (what a handover does).
    pub(super) fn handover(&mut self) {
        let saved = match self
            .run(Command::SaveState {
                tenant: TenantId::new(T),
            })
            .unwrap()
        {
            Reply::State(s) => s,
            other => panic!("{other:?}"),
        };
        let json = serde_json::to_string(&saved).expect("serializes");
        let back: TenantState = serde_json::from_str(&json).expect("deserializes");
        let mut fresh = Sim::new(&self.quota_config, self.mps);
        fresh.now = self.now;
        fresh.keys = self.keys;
        fresh
            .run(Command::RestoreState {
                tenant: TenantId::new(T),
                state: Some(Box::new(back)),
            })
            .unwrap();
        *self = fresh;
    }
}

fn scheduled_at(a: Admission) -> Timestamp {
    match a {
        Admission::Scheduled { at } => at,
        other => panic!("not scheduled: {other:?}"),
    }
}

/// When a send queued by the lifecycle rule `hold` goes.
fn queued_until(a: Admission, hold: Hold) -> Timestamp {
    match a {
        Admission::Queued {
            estimated_release: Some(t),
            held,
        } => {
            assert_eq!(held, Some(hold));
            t
        }
        other => panic!("not queued with an estimate: {other:?}"),
    }
}

const UNLIMITED: &str = r#"messaging_limit = "unlimited""#;

#[test]
fn paid_customers_reminders_are_cancelled_by_match_and_the_rest_go_at_their_minute() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let minute = Timestamp(s.now.as_millis() + 3 * DAY);
    let mut ids = Vec::new();
    for i in 0..100 {
        let c = customer(i);
        let mut r = Req::new(&c, Category::Utility);
        r.tag = Some("collections");
        r.send_at = Some(minute);
        let (id, answer) = s.request(r);
        assert_eq!(scheduled_at(answer), minute);
        assert!(
            s.effects.iter().any(|e| matches!(
                e,
                Effect::SendStatus {
                    state: SendState::Scheduled,
                    ..
                }
            )),
            "the status stream says scheduled"
        );
        ids.push(id);
    }
    // Another tag of a paying customer is not touched.
    let mut other = Req::new(&customer(0), Category::Utility);
    other.tag = Some("welcome");
    other.send_at = Some(minute);
    let (welcome, _) = s.request(other);

    s.advance(HOUR);
    for i in 0..30 {
        let cancelled = s
            .cancel(Cancel::Match {
                customer: customer(i),
                tag: "collections".into(),
            })
            .unwrap();
        assert_eq!(
            cancelled, 1,
            "customer {i} paid: their reminder is cancelled"
        );
        assert_eq!(s.state(ids[i as usize]), SendState::Cancelled);
    }
    assert_eq!(
        s.cancel(Cancel::Match {
            customer: customer(0),
            tag: "collections".into()
        }),
        Ok(0),
        "cancelling again finds nothing"
    );

    s.at(Timestamp(minute.as_millis() - 1));
    s.tick();
    assert_eq!(s.dispatched(), 0, "not a millisecond early");
    s.at(minute);
    s.tick();
    let sent = s.dispatched_ids();
    assert_eq!(sent.len(), 71, "70 reminders and the welcome");
    assert!(sent.contains(&welcome));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(sent.contains(id), i >= 30, "reminder {i}");
    }
    for id in &ids[..30] {
        assert_eq!(s.state(*id), SendState::Cancelled);
    }
}

#[test]
fn cancel_by_id_or_key_and_what_cannot_be_cancelled() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let later = Timestamp(s.now.as_millis() + HOUR);
    let mut r = Req::new(&customer(1), Category::Utility);
    r.send_at = Some(later);
    let (scheduled, _) = s.request(r);
    let key = format!("key-{}", s.keys);
    // The answer names the send's idempotency key: what the journal keeps (ids are not kept
    // when the journal is read again).
    match s.run(Command::Cancel {
        tenant: TenantId::new(T),
        target: Cancel::Id(scheduled),
    }) {
        Ok(Reply::Cancelled {
            cancelled: 1,
            key: Some(k),
        }) => assert_eq!(&*k, key),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.cancel(Cancel::Id(scheduled)), Ok(0), "already cancelled");

    let mut r = Req::new(&customer(2), Category::Utility);
    r.send_at = Some(later);
    s.request(r);
    let key = format!("key-{}", s.keys);
    assert_eq!(s.cancel(Cancel::Key(key)), Ok(1));

    let (now, answer) = s.request(Req::new(&customer(3), Category::Utility));
    assert_eq!(answer, Admission::Dispatched);
    match s.cancel(Cancel::Id(now)) {
        Err(CoreError::FailedPrecondition(why)) => assert!(why.contains("dispatched"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.cancel(Cancel::Id(SendId(999_999))),
        Err(CoreError::NotFound { .. })
    ));
    s.at(later);
    s.tick();
    assert_eq!(s.dispatched(), 0, "both cancelled sends stay cancelled");
}

#[test]
fn schedules_in_the_past_or_past_the_horizon_are_refused() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    for (at, says) in [
        (s.now.as_millis() - 1, "1 ms in the past"),
        (
            s.now.as_millis() + 35 * DAY + 1,
            "quotas.max_schedule_ahead_secs",
        ),
    ] {
        let mut r = Req::new(&customer(1), Category::Utility);
        r.send_at = Some(Timestamp(at));
        match s.try_request(r) {
            Err(CoreError::InvalidArgument { field, problem }) => {
                assert_eq!(field, "send_at_ms");
                assert!(problem.contains(says), "{problem}");
            }
            other => panic!("{other:?}"),
        }
    }
    let mut r = Req::new(&customer(1), Category::Utility);
    r.send_at = Some(Timestamp(s.now.as_millis() + 35 * DAY));
    assert!(matches!(s.request(r).1, Admission::Scheduled { .. }));
}

/// Europe/Madrid, quiet 21:00-09:00: a marketing send at 22:00 local on the night the clocks
/// go forward waits until 09:00 CEST (07:00 UTC), and on the night they go back until 09:00
/// CET (08:00 UTC). Instants from `date -u -d`.
#[test]
fn marketing_in_quiet_hours_waits_until_they_end_across_both_dst_changes() {
    const QUIET: &str = r#"messaging_limit = "unlimited"
        quiet_hours = { time_zone = "Europe/Madrid", start = "21:00", end = "09:00" }"#;
    for (at, ends) in [
        // 2027-03-27 21:00 CET = 20:00Z; 2027-03-28 09:00 CEST = 07:00Z.
        (1_806_177_600_000, 1_806_217_200_000),
        // 2027-10-30 23:30 CEST = 21:30Z; 2027-10-31 09:00 CET = 08:00Z.
        (1_824_931_800_000, 1_824_969_600_000_u64),
    ] {
        let mut s = Sim::new(QUIET, 1_000);
        s.now = Timestamp(at);
        let (id, answer) = s.request(Req::new(&customer(1), Category::Marketing));
        assert_eq!(queued_until(answer, Hold::QuietHours), Timestamp(ends));
        let (utility, answer) = s.request(Req::new(&customer(2), Category::Utility));
        assert_eq!(answer, Admission::Dispatched, "only low priority waits");
        assert_ne!(utility, id);
        s.at(Timestamp(ends - 1));
        s.tick();
        assert_eq!(s.dispatched(), 0, "still quiet 1 ms before the end");
        assert_eq!(s.state(id), SendState::Queued);
        s.at(Timestamp(ends));
        s.tick();
        assert_eq!(s.dispatched_ids(), vec![id]);
    }
}

#[test]
fn a_scheduled_reminder_due_in_quiet_hours_waits_and_one_past_its_validity_expires() {
    const QUIET: &str = r#"messaging_limit = "unlimited"
        quiet_hours = { time_zone = "Europe/Madrid", start = "21:00", end = "09:00" }"#;
    // Due at 21:00 on both nights the clocks change (instants as in the test above).
    for (due, ends) in [
        // 2027-03-27 21:00 CET = 20:00Z; the quiet ends 2027-03-28 09:00 CEST = 07:00Z.
        (1_806_177_600_000, 1_806_217_200_000),
        // 2027-10-30 21:00 CEST = 19:00Z; the quiet ends 2027-10-31 09:00 CET = 08:00Z.
        (1_824_922_800_000, 1_824_969_600_000_u64),
    ] {
        let mut s = Sim::new(QUIET, 1_000);
        s.now = Timestamp(due - 2 * HOUR); // 19:00 local: not quiet yet
        let due = Timestamp(due);
        let mut r = Req::new(&customer(1), Category::Marketing);
        r.send_at = Some(due);
        let (waits, _) = s.request(r);
        let mut r = Req::new(&customer(2), Category::Marketing);
        r.send_at = Some(due);
        r.valid_for_ms = Some(HOUR);
        let (expires, _) = s.request(r);
        s.at(due);
        s.tick();
        assert_eq!(s.dispatched(), 0);
        assert_eq!(s.state(waits), SendState::Queued);
        s.at(Timestamp(due.as_millis() + HOUR));
        s.tick();
        assert_eq!(
            s.state(expires),
            SendState::Expired,
            "validity counts from its time"
        );
        s.at(Timestamp(ends - 1));
        s.tick();
        assert_eq!(s.state(waits), SendState::Queued, "1 ms before the end");
        s.at(Timestamp(ends));
        s.tick();
        assert_eq!(s.dispatched_ids(), vec![waits]);
    }
}

#[test]
fn baja_opts_the_customer_out_cancels_their_waiting_marketing_and_is_still_routed() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let c = customer(7);
    let later = Timestamp(s.now.as_millis() + DAY);
    let mut r = Req::new(&c, Category::Marketing);
    r.send_at = Some(later);
    let (promo, _) = s.request(r);
    let mut r = Req::new(&c, Category::Utility);
    r.send_at = Some(later);
    let (invoice, _) = s.request(r);
    // And one in the batch queue: over the frequency cap, it waits (two days' validity).
    assert_eq!(
        s.request(Req::new(&c, Category::Marketing)).1,
        Admission::Dispatched
    );
    let mut r = Req::new(&c, Category::Marketing);
    r.valid_for_ms = Some(2 * DAY);
    let (queued, answer) = s.request(r);
    assert!(matches!(answer, Admission::Queued { .. }));

    let reply = s.say(&c, "¡Baja!");
    assert!(matches!(reply, Reply::Decision(_)), "the message is routed");
    assert!(s.effects.iter().any(|e| matches!(
        e,
        Effect::Consent {
            state: ConsentState::OptedOut,
            ..
        }
    )));
    assert_eq!(
        s.state(promo),
        SendState::Cancelled,
        "scheduled marketing cancelled"
    );
    assert_eq!(
        s.state(queued),
        SendState::Cancelled,
        "queued marketing cancelled"
    );
    assert_eq!(s.quotas().queued(), 0);
    assert_eq!(s.state(invoice), SendState::Scheduled, "utility untouched");
    let (_, answer) = s.request(Req::new(&c, Category::Marketing));
    assert_eq!(refused(answer), Some((Refusal::OptedOut, None)));
    assert_eq!(
        s.request(Req::new(&c, Category::Utility)).1,
        Admission::Dispatched
    );
    // A phrase keyword, however spaced, capitalised and accented.
    s.say(&customer(11), "  No  MÁS   mensajes!! ");
    assert_eq!(
        s.quotas()
            .consent(&crate::model::CustomerNumber::from_valid_e164(&customer(
                11
            )))
            .map(|c| (c.state, c.source.to_string())),
        Some((ConsentState::OptedOut, "keyword:no mas mensajes".to_owned()))
    );
    // A longer sentence with the word in it is not an opt-out.
    s.say(&customer(8), "no quiero darme de baja todavía");
    assert_eq!(
        s.quotas()
            .consent(&crate::model::CustomerNumber::from_valid_e164(&customer(8))),
        None
    );
    // START opts back in (a minute later: the pair limit allows two sends per 6 s).
    s.advance(60_000);
    s.say(&c, "START");
    let (_, answer) = s.request(Req::new(&c, Category::Marketing));
    assert_eq!(answer, Admission::Dispatched);
}

/// A consent keyword changes consent only in a message routed as new: the platform's retry
/// of an old "STOP" (the same message id), after the customer opted back in, changes nothing.
#[test]
fn a_retried_keyword_message_does_not_change_consent_again() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let c = customer(5);
    let number = crate::model::CustomerNumber::from_valid_e164(&c);
    let stop = |s: &mut Sim| {
        s.run(Command::Ingest(Inbound {
            tenant: TenantId::new(T),
            customer: c.clone(),
            channel: Channel::WhatsApp,
            provider_message_id: "wamid.stop".into(),
            text: "STOP".into(),
            business_number: None,
            email: None,
            visitor_id: None,
            profile_name: None,
        }))
        .unwrap()
    };
    stop(&mut s);
    let state = |s: &Sim| s.quotas().consent(&number).map(|v| v.state);
    assert_eq!(state(&s), Some(ConsentState::OptedOut));
    s.advance(60_000);
    s.say(&c, "START");
    assert_eq!(state(&s), Some(ConsentState::OptedIn));
    match stop(&mut s) {
        Reply::Decision(d) => assert!(d.duplicate, "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        state(&s),
        Some(ConsentState::OptedIn),
        "the retry changed nothing"
    );
    assert!(
        !s.effects
            .iter()
            .any(|e| matches!(e, Effect::Consent { .. })),
        "no consent effect for the retry"
    );
}

#[test]
fn consent_set_through_the_api_is_audited() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let reply = s
        .run(Command::SetConsent {
            tenant: TenantId::new(T),
            customer: customer(3),
            state: ConsentState::OptedOut,
            source: "crm".into(),
            actor: "ana@crm".into(),
            reason: "asked by phone".into(),
            at: None,
        })
        .unwrap();
    match reply {
        Reply::Consent(Some(v)) => {
            assert_eq!(v.state, ConsentState::OptedOut);
            assert_eq!(&*v.source, "crm");
            assert_eq!(v.at, s.now);
        }
        other => panic!("{other:?}"),
    }
    let audit = match s
        .run(Command::ListAudit {
            tenant: TenantId::new(T),
            limit: 10,
        })
        .unwrap()
    {
        Reply::Audit(a) => a,
        other => panic!("{other:?}"),
    };
    let entry = audit
        .iter()
        .find(|e| e.action == "consent_set")
        .expect("audited");
    // The journal read again after a crash sets the same consent at the same time: nothing
    // changes, nothing is audited twice.
    let again = |s: &mut Sim, at: Timestamp| {
        s.run(Command::SetConsent {
            tenant: TenantId::new(T),
            customer: customer(3),
            state: ConsentState::OptedOut,
            source: "crm".into(),
            actor: "ana@crm".into(),
            reason: "asked by phone".into(),
            at: Some(at),
        })
    };
    let set_at = s.now;
    s.advance(HOUR);
    again(&mut s, set_at).unwrap();
    let audited = |s: &mut Sim| match s
        .run(Command::ListAudit {
            tenant: TenantId::new(T),
            limit: 10,
        })
        .unwrap()
    {
        Reply::Audit(a) => a.iter().filter(|e| e.action == "consent_set").count(),
        other => panic!("{other:?}"),
    };
    assert_eq!(audited(&mut s), 1);
    let future = Timestamp(s.now.as_millis() + 1);
    assert!(matches!(
        again(&mut s, future),
        Err(CoreError::InvalidArgument { field: "at_ms", .. })
    ));
    assert_eq!(&*entry.actor, "ana@crm");
    assert!(
        !entry.target.contains(&customer(3)),
        "masked: {}",
        entry.target
    );
    assert_eq!(
        refused(s.request(Req::new(&customer(3), Category::Marketing)).1),
        Some((Refusal::OptedOut, None))
    );
}

/// Cap 1 per 24 hours: a second marketing send waits until exactly 24 hours after the first,
/// or, when it could not wait that long, is refused with that retry-after.
#[test]
fn the_frequency_cap_holds_a_second_push_to_the_millisecond() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let c = customer(5);
    let first = s.now;
    assert_eq!(
        s.request(Req::new(&c, Category::Marketing)).1,
        Admission::Dispatched
    );
    s.advance(HOUR);
    let mut short = Req::new(&c, Category::Marketing);
    short.valid_for_ms = Some(HOUR);
    assert_eq!(
        refused(s.request(short).1),
        Some((Refusal::FrequencyCap, Some(23 * HOUR)))
    );
    let (second, answer) = s.request(Req::new(&c, Category::Marketing));
    assert_eq!(
        queued_until(answer, Hold::FrequencyCap),
        Timestamp(first.as_millis() + DAY)
    );
    assert_eq!(
        s.request(Req::new(&customer(6), Category::Marketing)).1,
        Admission::Dispatched,
        "another customer is not capped"
    );
    s.at(Timestamp(first.as_millis() + DAY - 1));
    s.tick();
    assert_eq!(s.state(second), SendState::Queued);
    s.at(Timestamp(first.as_millis() + DAY));
    s.tick();
    assert_eq!(s.dispatched_ids(), vec![second]);
}

#[test]
fn opted_in_customers_have_their_own_cap() {
    let mut s = Sim::new(
        r#"messaging_limit = "unlimited"
        frequency_cap = { without_opt_in = 1, opted_in = 2 }"#,
        1_000,
    );
    let c = customer(9);
    // Opted in on the web (no message from the customer: their window stays closed, so the
    // sends are business-initiated).
    s.run(Command::SetConsent {
        tenant: TenantId::new(T),
        customer: c.clone(),
        state: ConsentState::OptedIn,
        source: "web-form".into(),
        actor: "crm".into(),
        reason: String::new(),
        at: None,
    })
    .unwrap();
    for _ in 0..2 {
        assert_eq!(
            s.request(Req::new(&c, Category::Marketing)).1,
            Admission::Dispatched
        );
    }
    // A third waits (it may wait two days).
    let waits = |to: &str| {
        let mut r = Req::new(to, Category::Marketing);
        r.valid_for_ms = Some(2 * DAY);
        r
    };
    assert!(matches!(s.request(waits(&c)).1, Admission::Queued { .. }));
    // Without the opt-in, one.
    let other = customer(10);
    s.request(Req::new(&other, Category::Marketing));
    assert!(matches!(
        s.request(waits(&other)).1,
        Admission::Queued { .. }
    ));
}

#[test]
fn meta_per_user_limit_131049_holds_that_customer_only() {
    let mut s = Sim::new(
        r#"messaging_limit = "unlimited"
        frequency_cap = { without_opt_in = 0 }"#,
        1_000,
    );
    let (a, b) = (customer(1), customer(2));
    let (sent, _) = s.request(Req::new(&a, Category::Marketing));
    s.provider(sent, ProviderOutcome::Failed { code: 131049 });
    assert!(
        s.effects
            .iter()
            .any(|e| matches!(e, Effect::CustomerHeld { .. }))
    );
    let mut short = Req::new(&a, Category::Marketing);
    short.valid_for_ms = Some(HOUR);
    assert_eq!(
        refused(s.request(short).1),
        Some((Refusal::FrequencyCap, Some(DAY)))
    );
    let mut long = Req::new(&a, Category::Marketing);
    long.valid_for_ms = Some(2 * DAY);
    let held_from = s.now;
    assert_eq!(
        queued_until(s.request(long).1, Hold::CustomerHold),
        Timestamp(held_from.as_millis() + DAY)
    );
    assert_eq!(
        s.request(Req::new(&b, Category::Marketing)).1,
        Admission::Dispatched,
        "the number is not held"
    );
    assert_eq!(
        s.request(Req::new(&a, Category::Utility)).1,
        Admission::Dispatched,
        "normal priority is not held"
    );
}

#[test]
fn scheduled_cancelled_opted_out_and_capped_state_survive_a_handover() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let later = Timestamp(s.now.as_millis() + DAY);
    let (kept, cancelled) = (customer(1), customer(2));
    let mut r = Req::new(&kept, Category::Utility);
    r.send_at = Some(later);
    let (kept_id, _) = s.request(r);
    let mut r = Req::new(&cancelled, Category::Utility);
    r.send_at = Some(later);
    r.tag = Some("collections");
    let (cancelled_id, _) = s.request(r);
    assert_eq!(
        s.cancel(Cancel::Match {
            customer: cancelled.clone(),
            tag: "collections".into()
        }),
        Ok(1)
    );
    s.say(&customer(3), "STOP");
    assert_eq!(
        s.request(Req::new(&customer(4), Category::Marketing)).1,
        Admission::Dispatched
    );

    s.handover();

    assert_eq!(s.state(kept_id), SendState::Scheduled);
    assert_eq!(s.state(cancelled_id), SendState::Cancelled);
    assert_eq!(
        refused(s.request(Req::new(&customer(3), Category::Marketing)).1),
        Some((Refusal::OptedOut, None))
    );
    assert_eq!(
        refused(s.request(Req::new(&customer(4), Category::Marketing)).1),
        Some((Refusal::FrequencyCap, Some(DAY))),
        "the cap's count came along (the default validity, 24 h, ends as it frees)"
    );
    s.at(later);
    s.tick();
    assert_eq!(s.dispatched_ids(), vec![kept_id]);
}

/// A tenant taken over is held until what was journaled before is read: a reminder that
/// fell due meanwhile waits for the cancel behind it, and goes (or not) once let go.
#[test]
fn a_held_tenant_lets_no_time_pass_until_it_is_let_go() {
    let mut s = Sim::new(UNLIMITED, 1_000);
    let due = Timestamp(s.now.as_millis() + HOUR);
    let mut scheduled = Vec::new();
    for i in 0..2 {
        let mut r = Req::new(&customer(i), Category::Utility);
        r.send_at = Some(due);
        r.tag = Some("collections");
        scheduled.push(s.request(r).0);
    }
    s.handover();
    let hold = |held| Command::HoldTime {
        tenant: TenantId::new(T),
        held,
    };
    s.run(hold(true)).unwrap();
    s.at(Timestamp(due.as_millis() + 60_000));
    s.tick();
    assert_eq!(s.dispatched(), 0, "nothing falls due while held");
    // The journal's cancel, read during the catch-up.
    assert_eq!(
        s.cancel(Cancel::Match {
            customer: customer(0),
            tag: "collections".into()
        }),
        Ok(1)
    );
    s.run(hold(false)).unwrap();
    s.tick();
    assert_eq!(s.dispatched_ids(), vec![scheduled[1]]);
    assert_eq!(s.state(scheduled[0]), SendState::Cancelled);
}

/// A waiting send is never forgotten by the send log, however many sends follow it.
#[test]
fn a_send_scheduled_weeks_ahead_outlives_the_send_log() {
    let mut s = Sim::new(
        r#"messaging_limit = "unlimited"
        max_tracked_sends = 10"#,
        1_000,
    );
    let due = Timestamp(s.now.as_millis() + 30 * DAY);
    let mut r = Req::new(&customer(1), Category::Utility);
    r.send_at = Some(due);
    let (id, _) = s.request(r);
    for i in 0..50 {
        s.request(Req::new(&customer(100 + i), Category::Utility));
        s.advance(10_000);
    }
    s.tick();
    s.handover();
    assert_eq!(s.state(id), SendState::Scheduled);
    s.at(due);
    s.tick();
    assert_eq!(s.dispatched_ids(), vec![id]);
}

#[derive(Debug, Clone)]
enum Op {
    Send {
        customer: u8,
        delay_s: u16,
        tag: bool,
    },
    Cancel {
        send: u8,
    },
    CancelMatch {
        customer: u8,
    },
    Advance {
        s: u16,
    },
    Handover,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, 0..120u16, any::<bool>())
            .prop_map(|(customer, delay_s, tag)| Op::Send { customer, delay_s, tag }),
        2 => (0..40u8).prop_map(|send| Op::Cancel { send }),
        1 => (0..6u8).prop_map(|customer| Op::CancelMatch { customer }),
        3 => (1..90u16).prop_map(|s| Op::Advance { s }),
        1 => Just(Op::Handover),
    ]
}

proptest! {
    /// Whatever the interleaving of sends (now, scheduled, batched by a tight pair limit),
    /// cancels, ticks and handovers: no send is dispatched after a cancel that answered it
    /// cancelled.
    #[test]
    fn nothing_cancelled_is_ever_dispatched(ops in prop::collection::vec(op(), 1..80)) {
        let mut s = Sim::new(r#"messaging_limit = "unlimited"
            pair_burst = 1
            pair_period_ms = 60000
            frequency_cap = { without_opt_in = 0 }"#, 1_000);
        let mut sends: Vec<(SendId, u8, bool)> = Vec::new();
        let mut cancelled: std::collections::HashSet<SendId> = Default::default();
        let check = |s: &Sim, cancelled: &std::collections::HashSet<SendId>| {
            for id in s.dispatched_ids() {
                assert!(!cancelled.contains(&id), "{id} dispatched after its cancel");
            }
        };
        for op in ops {
            match op {
                Op::Send { customer: c, delay_s, tag } => {
                    let to = customer(u64::from(c));
                    let mut r = Req::new(&to, Category::Marketing);
                    r.tag = tag.then_some("t");
                    r.send_at = (delay_s > 0)
                        .then(|| Timestamp(s.now.as_millis() + u64::from(delay_s) * 1_000));
                    let (id, _) = s.request(r);
                    sends.push((id, c, tag));
                }
                Op::Cancel { send } => {
                    if let Some(&(id, _, _)) = sends.get(send as usize)
                        && s.cancel(Cancel::Id(id)) == Ok(1)
                    {
                        cancelled.insert(id);
                    }
                }
                Op::CancelMatch { customer: c } => {
                    let before: Vec<SendId> = sends
                        .iter()
                        .filter(|(_, sc, tag)| *sc == c && *tag)
                        .map(|(id, _, _)| *id)
                        .collect();
                    let n = s.cancel(Cancel::Match { customer: customer(u64::from(c)), tag: "t".into() }).unwrap();
                    let now_cancelled: Vec<SendId> = before
                        .into_iter()
                        .filter(|id| s.state(*id) == SendState::Cancelled && !cancelled.contains(id))
                        .collect();
                    prop_assert_eq!(n as usize, now_cancelled.len());
                    cancelled.extend(now_cancelled);
                }
                Op::Advance { s: secs } => {
                    s.advance(u64::from(secs) * 1_000);
                    s.tick();
                    check(&s, &cancelled);
                }
                Op::Handover => s.handover(),
            }
        }
        s.advance(DAY);
        s.tick();
        check(&s, &cancelled);
        for id in &cancelled {
            prop_assert_eq!(s.state(*id), SendState::Cancelled);
        }
    }
}
