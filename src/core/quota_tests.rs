//! Outbound quota tests with simulated time: every admission rule, exact to the millisecond.
use proptest::prelude::*;

use super::quota::{Admission, ProviderOutcome, Refusal, SendId, SendPriority, SendState};
use super::*;
use crate::config::{Category, Config};
use crate::model::{Channel, TenantId};

pub(super) const T: &str = "shop";
pub(super) const NUMBER: &str = "+34910000001";
pub(super) const SEC: u64 = 1_000;
pub(super) const HOUR: u64 = 3_600 * SEC;
pub(super) const DAY: u64 = 24 * HOUR;

fn config(quotas: &str, mps: u32) -> Config {
    Config::from_toml_str(&format!(
        r#"
        [[tenants]]
        id = "{T}"
        default_region = "ES"
        bot = "bot"
        default_queue = "q"
        [[tenants.queues]]
        name = "q"
        sla_target_secs = 60
        max_wait_secs = 600
        [[tenants.numbers]]
        id = "{NUMBER}"
        mps = {mps}
        [[tenants.numbers]]
        id = "+34910000002"
        mps = {mps}
        [tenants.quotas]
        {quotas}
        "#
    ))
    .expect("test config is valid")
}

pub(super) struct Sim {
    pub(super) shard: Shard,
    pub(super) now: Timestamp,
    pub(super) effects: Vec<Effect>,
    pub(super) keys: u64,
    /// What the shard was built from (a handover rebuilds it).
    pub(super) quota_config: String,
    pub(super) mps: u32,
    /// The template the next sends carry (None: sent by name).
    template: Option<std::sync::Arc<crate::model::Template>>,
}

impl Sim {
    pub(super) fn new(quotas: &str, mps: u32) -> Self {
        Self {
            shard: Shard::new(&config(quotas, mps), |_| true),
            now: Timestamp(1_700_000_000_000),
            effects: Vec::new(),
            keys: 0,
            quota_config: quotas.to_owned(),
            mps,
            template: None,
        }
    }

    pub(super) fn advance(&mut self, ms: u64) {
        self.now = Timestamp(self.now.as_millis() + ms);
    }

    pub(super) fn run(&mut self, c: Command) -> Result<Reply, CoreError> {
        self.effects.clear();
        self.shard.handle(self.now, c, &mut self.effects)
    }

    pub(super) fn send_with(
        &mut self,
        to: &str,
        category: Category,
        priority: Option<SendPriority>,
        valid_for_ms: Option<u64>,
    ) -> (SendId, Admission) {
        self.keys += 1;
        let key = format!("key-{}", self.keys);
        self.send_key(to, category, priority, valid_for_ms, &key)
    }

    pub(super) fn send_key(
        &mut self,
        to: &str,
        category: Category,
        priority: Option<SendPriority>,
        valid_for_ms: Option<u64>,
        key: &str,
    ) -> (SendId, Admission) {
        match self
            .run(Command::Send(Outbound {
                tenant: TenantId::new(T),
                from: NUMBER.into(),
                to: to.into(),
                category,
                content: "promo_template".into(),
                template: self.template.clone(),
                priority,
                idempotency_key: key.into(),
                valid_for_ms,
                tag: None,
                send_at: None,
                thread: None,
            }))
            .unwrap()
        {
            Reply::Send { id, admission } => (id, admission),
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn send(&mut self, to: &str, category: Category) -> Admission {
        self.send_with(to, category, None, None).1
    }

    pub(super) fn inbound(&mut self, from: &str, business_number: Option<&str>) {
        self.keys += 1;
        self.run(Command::Ingest(Inbound {
            tenant: TenantId::new(T),
            customer: from.into(),
            channel: Channel::WhatsApp,
            provider_message_id: format!("in-{}", self.keys),
            text: "hola".into(),
            business_number: business_number.map(Into::into),
            email: None,
            visitor_id: None,
            profile_name: None,
        }))
        .unwrap();
    }

    pub(super) fn tick(&mut self) {
        self.run(Command::Tick).unwrap();
    }

    pub(super) fn provider(&mut self, id: SendId, outcome: ProviderOutcome) {
        self.run(Command::ProviderResult {
            tenant: TenantId::new(T),
            id,
            outcome,
        })
        .unwrap();
    }

    pub(super) fn state(&mut self, id: SendId) -> SendState {
        match self
            .run(Command::GetSend {
                tenant: TenantId::new(T),
                id,
            })
            .unwrap()
        {
            Reply::SendView(v) => v.state,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn quotas(&self) -> &quota::Quotas {
        self.shard.tenant(T).unwrap().quotas()
    }

    pub(super) fn dispatched(&self) -> usize {
        self.effects
            .iter()
            .filter(|e| matches!(e, Effect::Dispatch { .. }))
            .count()
    }
}

pub(super) fn customer(i: u64) -> String {
    format!("+346{i:08}")
}

pub(super) fn refused(a: Admission) -> Option<(Refusal, Option<u64>)> {
    match a {
        Admission::Refused {
            reason,
            retry_after_ms,
        } => Some((reason, retry_after_ms)),
        _ => None,
    }
}

const UNLIMITED: &str = r#"messaging_limit = "unlimited""#;

#[test]
fn mps_bucket_admits_exactly_burst_plus_rate_times_elapsed() {
    let mut s = Sim::new(UNLIMITED, 80);
    let mut next = 0;
    let mut burst = |s: &mut Sim, n: u64| -> u64 {
        let mut ok = 0;
        for _ in 0..n {
            next += 1;
            if s.send(&customer(next), Category::Utility) == Admission::Dispatched {
                ok += 1;
            }
        }
        ok
    };
    assert_eq!(burst(&mut s, 200), 80, "the burst");
    s.advance(500);
    assert_eq!(burst(&mut s, 200), 40, "80/s × 0.5 s");
    s.advance(12);
    assert_eq!(burst(&mut s, 10), 0, "12 ms < one token (12.5 ms)");
    s.advance(1);
    assert_eq!(burst(&mut s, 10), 1, "13 ms: one token");
    s.advance(10 * SEC);
    assert_eq!(burst(&mut s, 200), 80, "refill stops at the burst");
    let (reason, retry) = refused(s.send(&customer(9_999), Category::Utility)).unwrap();
    assert_eq!(reason, Refusal::ThroughputLimit);
    assert!(retry.is_some_and(|ms| (1..=13).contains(&ms)), "{retry:?}");
}

#[test]
fn inbound_messages_eat_outbound_headroom() {
    let mut s = Sim::new(UNLIMITED, 20);
    for i in 0..20 {
        s.inbound(&customer(i), Some(NUMBER));
    }
    let (reason, _) = refused(s.send(&customer(100), Category::Utility)).unwrap();
    assert_eq!(reason, Refusal::ThroughputLimit);
    // The other number's bucket is untouched.
    s.keys += 1;
    let r = s
        .run(Command::Send(Outbound {
            tenant: TenantId::new(T),
            from: "+34910000002".into(),
            to: customer(100),
            category: Category::Utility,
            content: "x".into(),
            template: None,
            priority: None,
            idempotency_key: "other".into(),
            valid_for_ms: None,
            tag: None,
            send_at: None,
            thread: None,
        }))
        .unwrap();
    assert!(matches!(
        r,
        Reply::Send {
            admission: Admission::Dispatched,
            ..
        }
    ));
    // An unknown business number on an inbound message is refused and changes nothing.
    let err = s
        .run(Command::Ingest(Inbound {
            tenant: TenantId::new(T),
            customer: customer(1),
            channel: Channel::WhatsApp,
            provider_message_id: "in-bad".into(),
            text: "hola".into(),
            business_number: Some("+1999".into()),
            email: None,
            visitor_id: None,
            profile_name: None,
        }))
        .unwrap_err();
    assert!(matches!(
        err,
        CoreError::InvalidArgument {
            field: "business_number",
            ..
        }
    ));
}

#[test]
fn pair_limit_holds_per_pair_and_not_across_pairs() {
    let mut s = Sim::new(UNLIMITED, 1000);
    let a = customer(1);
    assert_eq!(s.send(&a, Category::Utility), Admission::Dispatched);
    assert_eq!(
        s.send(&a, Category::Utility),
        Admission::Dispatched,
        "burst of 2"
    );
    let (reason, retry) = refused(s.send(&a, Category::Utility)).unwrap();
    assert_eq!(reason, Refusal::PairLimit);
    assert_eq!(retry, Some(6 * SEC), "one per 6 s");
    assert_eq!(
        s.send(&customer(2), Category::Utility),
        Admission::Dispatched
    );
    s.advance(6 * SEC - 1);
    assert!(refused(s.send(&a, Category::Utility)).is_some());
    s.advance(1);
    assert_eq!(s.send(&a, Category::Utility), Admission::Dispatched);
}

/// The sweep forgets a pair whose bucket has refilled (indistinguishable from a new one) and
/// keeps one still limited, which stays limited.
#[test]
fn the_sweep_forgets_pairs_whose_buckets_refilled() {
    let mut s = Sim::new(UNLIMITED, 1000);
    for i in 0..3 {
        assert_eq!(
            s.send(&customer(i), Category::Utility),
            Admission::Dispatched
        );
    }
    assert_eq!(s.quotas().tracked_pairs(), 3);
    s.advance(2 * 60 * SEC);
    let a = customer(9);
    for _ in 0..2 {
        assert_eq!(s.send(&a, Category::Utility), Admission::Dispatched);
    }
    assert_eq!(s.quotas().tracked_pairs(), 4);
    s.tick();
    assert_eq!(s.quotas().tracked_pairs(), 1);
    let (reason, _) = refused(s.send(&a, Category::Utility)).expect("still limited");
    assert_eq!(reason, Refusal::PairLimit);
    assert_eq!(
        s.send(&customer(0), Category::Utility),
        Admission::Dispatched
    );
}

#[test]
fn messaging_limit_counts_unique_customers_and_frees_a_slot_24h_after() {
    let mut s = Sim::new(
        "messaging_limit = 10\nbatch_threshold = 1.0\nreserve = 0.0",
        1000,
    );
    let start = s.now;
    for i in 0..10 {
        assert_eq!(
            s.send(&customer(i), Category::Utility),
            Admission::Dispatched
        );
        s.advance(HOUR);
    }
    assert_eq!(s.quotas().usage(), (10, Some(10)));
    // A counted customer costs no new slot.
    s.advance(6 * SEC);
    assert_eq!(
        s.send(&customer(3), Category::Utility),
        Admission::Dispatched
    );
    // A new one waits for the oldest to leave the window, 24 h after its send.
    let (reason, retry) = refused(s.send(&customer(10), Category::Utility)).unwrap();
    assert_eq!(reason, Refusal::MessagingLimit);
    assert_eq!(retry, Some(start.as_millis() + DAY - s.now.as_millis()));
    s.now = Timestamp(start.as_millis() + DAY - 1);
    assert!(refused(s.send(&customer(10), Category::Utility)).is_some());
    s.now = Timestamp(start.as_millis() + DAY);
    assert_eq!(
        s.send(&customer(10), Category::Utility),
        Admission::Dispatched
    );
    // customer(3) was sent to again at 3 h and 10 h + 6 s: counted until 24 h after the last.
    assert_eq!(s.quotas().usage().0, 10);
    s.now = Timestamp(start.as_millis() + 4 * HOUR + DAY);
    s.tick();
    assert_eq!(s.quotas().usage().0, 10 - 4 + 1, "0,1,2,4 left; 3 stays");
}

#[test]
fn replies_inside_the_window_never_count() {
    let mut s = Sim::new("messaging_limit = 10", 1000);
    s.inbound(&customer(1), None);
    assert_eq!(
        s.send(&customer(1), Category::Session),
        Admission::Dispatched
    );
    s.advance(6 * SEC);
    assert_eq!(
        s.send(&customer(1), Category::Utility),
        Admission::Dispatched
    );
    assert_eq!(s.quotas().usage().0, 0, "in-window sends are free");
    s.advance(DAY);
    assert_eq!(
        s.send(&customer(1), Category::Utility),
        Admission::Dispatched
    );
    assert_eq!(
        s.quotas().usage().0,
        1,
        "after the window closed, it counts"
    );
}

#[test]
fn free_form_outside_the_window_is_refused_and_never_sent() {
    let mut s = Sim::new(UNLIMITED, 1000);
    let (id, a) = s.send_with(&customer(1), Category::Session, None, None);
    assert_eq!(refused(a), Some((Refusal::TemplateRequired, None)));
    assert_eq!(s.dispatched(), 0);
    assert_eq!(s.state(id), SendState::Refused);
    s.inbound(&customer(1), None);
    s.advance(DAY);
    assert_eq!(
        refused(s.send(&customer(1), Category::Session)).map(|r| r.0),
        Some(Refusal::TemplateRequired),
        "the window closed exactly 24 h after the customer's message"
    );
}

#[test]
fn repeated_idempotency_key_returns_the_first_answer_and_sends_once() {
    let mut s = Sim::new(UNLIMITED, 1000);
    let first = s.send_key(&customer(1), Category::Utility, None, None, "order-42");
    assert_eq!(s.dispatched(), 1);
    let again = s.send_key(&customer(1), Category::Utility, None, None, "order-42");
    assert_eq!(first, again);
    assert_eq!(s.dispatched(), 0, "nothing sent twice");
}

#[test]
fn batch_mode_turns_on_at_the_threshold_and_off_below() {
    let mut s = Sim::new("messaging_limit = 10\nreserve = 0.1", 1000);
    for i in 0..7 {
        assert_eq!(
            s.send(&customer(i), Category::Utility),
            Admission::Dispatched
        );
    }
    assert!(!s.quotas().batch_mode());
    assert_eq!(
        s.send(&customer(7), Category::Utility),
        Admission::Dispatched
    );
    assert!(s.quotas().batch_mode(), "8 of 10 = 80%");
    assert!(s.effects.contains(&Effect::BatchMode {
        tenant: TenantId::new(T),
        on: true
    }));
    let (_, a) = s.send_with(&customer(20), Category::Marketing, None, Some(2 * DAY));
    assert!(matches!(a, Admission::Queued { .. }), "{a:?}");
    // The wave releases it: the budget for low priority is 10 - 1 (reserve) - 8 = 1.
    s.tick();
    assert_eq!(s.dispatched(), 1);
    assert_eq!(s.quotas().usage().0, 9);
    s.advance(DAY);
    s.tick();
    assert!(!s.quotas().batch_mode());
    assert!(s.effects.contains(&Effect::BatchMode {
        tenant: TenantId::new(T),
        on: false
    }));
}

#[test]
fn near_the_limit_high_priority_still_goes_out_from_the_reserve() {
    let mut s = Sim::new(
        "messaging_limit = 20\nreserve = 0.1\nbatch_threshold = 0.5",
        1000,
    );
    for i in 0..10 {
        s.send(&customer(i), Category::Utility);
    }
    assert!(s.quotas().batch_mode());
    let marketing: Vec<SendId> = (100..120)
        .map(|i| {
            s.send_with(&customer(i), Category::Marketing, None, Some(2 * DAY))
                .0
        })
        .collect();
    s.tick();
    assert_eq!(
        s.quotas().usage().0,
        18,
        "batched traffic stops at 20 - 2 reserved"
    );
    assert_eq!(s.quotas().queued(), 12);
    for i in 200..202 {
        assert_eq!(
            s.send(&customer(i), Category::Authentication),
            Admission::Dispatched,
            "the reserve"
        );
    }
    let (reason, _) = refused(s.send(&customer(300), Category::Authentication)).unwrap();
    assert_eq!(reason, Refusal::MessagingLimit, "and never past the limit");
    assert_eq!(s.state(marketing[0]), SendState::Dispatched);
    assert_eq!(s.state(marketing[19]), SendState::Queued);
}

#[test]
fn queued_sends_to_counted_customers_go_first_and_expire_after_validity() {
    let mut s = Sim::new("messaging_limit = 10\nreserve = 0.0", 1000);
    for i in 0..10 {
        s.send(&customer(i), Category::Utility);
    }
    s.advance(10 * SEC);
    let (new_customer, _) = s.send_with(&customer(50), Category::Marketing, None, Some(HOUR));
    let (counted, _) = s.send_with(&customer(5), Category::Marketing, None, Some(HOUR));
    s.tick();
    assert_eq!(s.state(counted), SendState::Dispatched, "costs no new slot");
    assert_eq!(s.state(new_customer), SendState::Queued, "no slot free");
    s.advance(HOUR);
    s.tick();
    assert!(s.effects.iter().any(|e| matches!(
        e,
        Effect::SendStatus { id, state: SendState::Expired, .. } if *id == new_customer
    )));
    assert_eq!(s.state(new_customer), SendState::Expired);
    assert_eq!(s.quotas().queued(), 0);
}

#[test]
fn provider_errors_get_their_reactions() {
    let mut s = Sim::new(UNLIMITED, 1000);
    // 130429: the number backs off; another number would not.
    let (id, _) = s.send_with(&customer(1), Category::Utility, None, None);
    s.provider(id, ProviderOutcome::Failed { code: 130429 });
    assert_eq!(s.state(id), SendState::Failed);
    let (reason, retry) = refused(s.send(&customer(2), Category::Utility)).unwrap();
    assert_eq!((reason, retry), (Refusal::NumberBackoff, Some(SEC)));
    s.advance(SEC);
    // 131056: that pair backs off, other pairs do not.
    let (id, _) = s.send_with(&customer(3), Category::Utility, None, None);
    s.provider(id, ProviderOutcome::Failed { code: 131056 });
    assert_eq!(
        refused(s.send(&customer(3), Category::Utility)).map(|r| r.0),
        Some(Refusal::PairLimit)
    );
    assert_eq!(
        s.send(&customer(4), Category::Utility),
        Admission::Dispatched
    );
    // 131047: failed, "template required", and the window is closed from now on.
    s.inbound(&customer(5), None);
    let (id, _) = s.send_with(&customer(5), Category::Session, None, None);
    s.provider(id, ProviderOutcome::Failed { code: 131047 });
    let view = match s
        .run(Command::GetSend {
            tenant: TenantId::new(T),
            id,
        })
        .unwrap()
    {
        Reply::SendView(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (view.state, view.reason, view.provider_code),
        (
            SendState::Failed,
            Some(Refusal::TemplateRequired),
            Some(131047)
        )
    );
    assert_eq!(
        refused(s.send(&customer(5), Category::Session)).map(|r| r.0),
        Some(Refusal::TemplateRequired)
    );
    // 131048: marketing from the number pauses, with an alert; utility still flows.
    let (id, _) = s.send_with(
        &customer(6),
        Category::Marketing,
        Some(SendPriority::Normal),
        None,
    );
    s.provider(id, ProviderOutcome::Failed { code: 131048 });
    assert!(
        s.effects
            .iter()
            .any(|e| matches!(e, Effect::SpamRateAlert { .. }))
    );
    assert_eq!(
        refused(s.send(&customer(7), Category::Marketing)).map(|r| r.0),
        Some(Refusal::MarketingPaused)
    );
    assert_eq!(
        s.send(&customer(8), Category::Utility),
        Admission::Dispatched
    );
    // Handed to an egress: still dispatched. Sent, then a failure (a status webhook after the
    // API took the message): taken. Failed is final: late reports change nothing.
    let (id, _) = s.send_with(&customer(9), Category::Utility, None, None);
    s.provider(id, ProviderOutcome::Handed);
    assert_eq!(s.state(id), SendState::Dispatched);
    s.provider(id, ProviderOutcome::Sent);
    assert_eq!(s.state(id), SendState::Sent);
    s.provider(id, ProviderOutcome::Failed { code: 131026 });
    assert_eq!(s.state(id), SendState::Failed);
    s.provider(id, ProviderOutcome::Sent);
    s.provider(id, ProviderOutcome::Failed { code: 130429 });
    assert_eq!(s.state(id), SendState::Failed);
    assert_eq!(
        s.send(&customer(10), Category::Utility),
        Admission::Dispatched,
        "no back-off from a late report"
    );
}

#[test]
fn delivered_and_read_move_a_send_forward_and_never_back() {
    use ProviderOutcome::{Delivered, Failed, Handed, Read, Sent};
    let mut s = Sim::new(UNLIMITED, 1000);
    // What the last command emitted: the status events, in order.
    let statuses = |s: &Sim| -> Vec<SendState> {
        s.effects
            .iter()
            .filter_map(|e| match e {
                Effect::SendStatus { state, .. } => Some(*state),
                _ => None,
            })
            .collect()
    };
    // In order: each report is a state of its own, with its event.
    let (id, _) = s.send_with(&customer(1), Category::Utility, None, None);
    for (outcome, state) in [
        (Sent, SendState::Sent),
        (Delivered, SendState::Delivered),
        (Read, SendState::Read),
    ] {
        s.provider(id, outcome);
        assert_eq!(statuses(&s), [state]);
        assert_eq!(s.state(id), state);
    }
    // Repeated and late reports (Meta retries webhooks): nothing changes, nothing is emitted;
    // a failure after delivery is ignored too.
    for outcome in [Read, Delivered, Sent, Failed { code: 131026 }, Handed] {
        s.provider(id, outcome);
        assert_eq!(statuses(&s), [], "{outcome:?}");
        assert_eq!(s.state(id), SendState::Read);
    }
    // Out of order: read before delivered, skipping sent; the late ones change nothing.
    let (id, _) = s.send_with(&customer(2), Category::Utility, None, None);
    s.provider(id, Read);
    assert_eq!(statuses(&s), [SendState::Read]);
    s.provider(id, Delivered);
    s.provider(id, Sent);
    assert_eq!((statuses(&s), s.state(id)), (vec![], SendState::Read));
    // Handed to the egress, then delivered straight from dispatched; a later sent is late,
    // a read is not.
    let (id, _) = s.send_with(&customer(3), Category::Utility, None, None);
    s.provider(id, Handed);
    assert_eq!(statuses(&s), []);
    s.provider(id, Delivered);
    assert_eq!(statuses(&s), [SendState::Delivered]);
    s.provider(id, Sent);
    assert_eq!(statuses(&s), []);
    s.provider(id, Read);
    assert_eq!(statuses(&s), [SendState::Read]);
    // Failed after sent still fails, and a failed send is never delivered back to life.
    let (id, _) = s.send_with(&customer(4), Category::Utility, None, None);
    s.provider(id, Sent);
    s.provider(id, Failed { code: 131026 });
    assert_eq!(statuses(&s), [SendState::Failed]);
    for outcome in [Delivered, Read, Sent] {
        s.provider(id, outcome);
        assert_eq!(statuses(&s), [], "{outcome:?}");
    }
    assert_eq!(s.state(id), SendState::Failed);
    // A refused send is not on the path at all.
    s.inbound(&customer(5), None);
    let (id, a) = s.send_with(&customer(6), Category::Session, None, None);
    assert_eq!(refused(a).map(|r| r.0), Some(Refusal::TemplateRequired));
    s.provider(id, Delivered);
    assert_eq!((statuses(&s), s.state(id)), (vec![], SendState::Refused));
}

#[test]
fn a_queued_template_send_keeps_its_template_through_a_snapshot() {
    use crate::model::{ComponentKind, Template, TemplateComponent, TemplateParameter};
    let quotas = "messaging_limit = 10\nreserve = 0.1";
    let mut s = Sim::new(quotas, 1000);
    for i in 0..8 {
        s.send(&customer(i), Category::Utility);
    }
    // Batch mode (8 of 10): the marketing send waits in the queue with its template.
    let template = std::sync::Arc::new(Template {
        name: "promo_template".into(),
        language: "pt_BR".into(),
        components: vec![TemplateComponent {
            kind: ComponentKind::Body,
            parameters: vec![TemplateParameter::Text("Ana".into())],
        }],
    });
    s.template = Some(template.clone());
    let (id, a) = s.send_with(&customer(20), Category::Marketing, None, Some(2 * DAY));
    assert!(matches!(a, Admission::Queued { .. }), "{a:?}");
    let json = serde_json::to_string(&s.quotas().state(s.now)).expect("serializes");
    assert_eq!(
        json.matches(r#""template":"#).count(),
        1,
        "only the template send carries the key: {json}"
    );
    // Restored into a fresh shard (a restart, a handover), the wave releases it, template and
    // all; and a state saved before sends had templates (no key) still restores.
    let without: serde_json::Value = {
        let mut v: serde_json::Value = serde_json::from_str(&json).expect("json");
        for send in v["sends"].as_array_mut().expect("sends").iter_mut() {
            if let Some(send) = send.as_object_mut() {
                send.remove("template");
            }
        }
        v
    };
    for (saved, expected) in [(json, Some(template)), (without.to_string(), None)] {
        let mut fresh = Sim::new(quotas, 1000);
        fresh.now = s.now;
        let restored = serde_json::from_str(&saved).expect("deserializes");
        let tenant = fresh.shard.tenant_mut(T).expect("configured");
        tenant
            .quotas_mut()
            .restore(restored)
            .expect("fits the config");
        fresh.tick();
        let released: Vec<&quota::Dispatch> = fresh
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Dispatch { send, .. } => Some(send),
                _ => None,
            })
            .collect();
        assert_eq!(released.len(), 1);
        assert_eq!(
            (released[0].id, &*released[0].content, &released[0].template),
            (id, "promo_template", &expected)
        );
    }
}

#[test]
fn a_promotion_sends_everything_that_fits_and_never_exceeds_the_limit() {
    // 10,000 marketing sends against a 2,000 limit, arriving evenly over 48 simulated hours;
    // batch waves every minute. Low-priority traffic may use 2,000 - 5% reserve = 1,900 slots
    // per moving 24 hours, so at most 2 × 1,900 go out in 48 hours.
    let mut s = Sim::new("messaging_limit = 2000", 80);
    let limit = 2_000;
    let cap = 1_900;
    let start = s.now;
    let mut arrivals = 0u64;
    let mut sent = 0u64;
    let mut max_usage = 0;
    let minutes = 48 * 60;
    for minute in 0..minutes {
        let due = (10_000 * (minute + 1)) / minutes;
        while arrivals < due {
            let a = promotion_send(&mut s, arrivals);
            sent += u64::from(a == Admission::Dispatched);
            arrivals += 1;
        }
        s.tick();
        sent += s.dispatched() as u64;
        max_usage = max_usage.max(s.quotas().usage().0);
        assert!(s.quotas().usage().0 <= limit);
        s.advance(60 * SEC);
    }
    assert_eq!(arrivals, 10_000);
    assert!(
        max_usage <= cap,
        "batched traffic stays out of the reserve: {max_usage}"
    );
    let available = 2 * cap;
    assert!(
        sent * 100 >= available * 99,
        "used {sent} of {available} available slots"
    );
    assert!(sent <= available);
    assert_eq!(s.now.as_millis() - start.as_millis(), 48 * HOUR);
}

#[test]
fn restored_state_keeps_the_count_the_queue_and_the_idempotency_keys() {
    // The promotion above, with the replica "restarted" every 6 simulated hours: its quota
    // state saved as JSON, a fresh shard built from the config, the state restored. Never over
    // the limit, no send dispatched twice, a repeated key still answered from the log, and as
    // much sent as without restarts.
    let mut s = Sim::new("messaging_limit = 2000", 80);
    let (limit, cap) = (2_000, 1_900);
    let (first, _) = s.send_with(&customer(99_999), Category::Utility, None, None);
    let mut arrivals = 0u64;
    let mut dispatched = std::collections::HashSet::new();
    let mut restores = 0;
    let minutes = 48 * 60;
    for minute in 0..minutes {
        let due = (10_000 * (minute + 1)) / minutes;
        while arrivals < due {
            promotion_send(&mut s, arrivals);
            collect_dispatches(&s, &mut dispatched);
            arrivals += 1;
        }
        s.tick();
        collect_dispatches(&s, &mut dispatched);
        assert!(s.quotas().usage().0 <= limit);
        s.advance(60 * SEC);
        if minute % 360 == 359 {
            let saved = s.quotas().state(s.now);
            let json = serde_json::to_string(&saved).expect("serializes");
            let mut fresh = Sim::new("messaging_limit = 2000", 80);
            (fresh.now, fresh.keys) = (s.now, s.keys);
            let tenant = fresh.shard.tenant_mut(T).expect("configured");
            let restored = serde_json::from_str(&json).expect("deserializes");
            tenant
                .quotas_mut()
                .restore(restored)
                .expect("fits the config");
            assert!(fresh.quotas().state(s.now) == saved, "an exact round trip");
            s = fresh;
            restores += 1;
        }
    }
    assert_eq!(restores, 8);
    let available = 2 * cap + 1; // the utility send before the promotion took one slot
    let sent = dispatched.len() as u64;
    assert!(sent * 100 >= available * 99, "used {sent} of {available}");
    assert!(sent <= available);
    // The very first key, sent again after eight restores: the first answer, nothing sent.
    let (again, _) = s.send_key(&customer(99_999), Category::Utility, None, None, "key-1");
    assert_eq!(again, first);
    assert_eq!(s.dispatched(), 0);
}

#[test]
fn dispatches_after_the_snapshot_replay_onto_it_so_a_crash_sends_nothing_twice() {
    // The promotion; a snapshot at hour 30; six more hours of arrivals and batch waves, every
    // dispatch kept (as the dispatch topic keeps them) and every request kept (as the sends
    // topic keeps them past the committed offset); then a crash: a fresh shard restores the
    // snapshot, replays the dispatches, then the requests. The count and the queues (by
    // idempotency key) come back as they were, and twelve more hours send no send twice and
    // never exceed the limit.
    let mut s = Sim::new("messaging_limit = 2000", 80);
    let limit = 2_000;
    let mut arrivals = 0u64;
    let mut dispatched = std::collections::HashSet::new();
    let mut snapshot = None;
    let mut changelog = Vec::new();
    let mut requests: Vec<(String, String)> = Vec::new();
    let minutes = 48 * 60;
    for minute in 0..minutes {
        if minute == 30 * 60 {
            snapshot = Some(serde_json::to_string(&s.quotas().state(s.now)).expect("json"));
        }
        if minute == 36 * 60 {
            let mut fresh = Sim::new("messaging_limit = 2000", 80);
            (fresh.now, fresh.keys) = (s.now, s.keys);
            let quotas = fresh.shard.tenant_mut(T).expect("configured").quotas_mut();
            let saved = serde_json::from_str(snapshot.as_deref().expect("taken")).expect("json");
            quotas.restore(saved).expect("fits");
            for d in changelog.iter().chain(&changelog) {
                quotas
                    .replay_dispatch(d)
                    .expect("a configured number; twice changes nothing");
            }
            for (to, key) in &requests {
                fresh.send_key(to, Category::Marketing, None, Some(3 * DAY), key);
                collect_dispatches(&fresh, &mut dispatched);
            }
            // Customers whose 24 hours ended since the snapshot leave the count, as the next
            // command would do on both.
            let now = s.now;
            for sim in [&mut s, &mut fresh] {
                let quotas = sim.shard.tenant_mut(T).expect("configured").quotas_mut();
                quotas.sweep(now);
            }
            assert_eq!(fresh.quotas().usage(), s.quotas().usage(), "the count");
            let (before, after) = (s.quotas().state(now), fresh.quotas().state(now));
            assert_eq!(queued_keys(&after), queued_keys(&before), "the queues");
            assert!(!changelog.is_empty() && !before.queue_new.is_empty());
            s = fresh;
        }
        let due = (10_000 * (minute + 1)) / minutes;
        while arrivals < due {
            promotion_send(&mut s, arrivals);
            if snapshot.is_some() && minute < 36 * 60 {
                requests.push((customer(arrivals), format!("key-{}", s.keys)));
            }
            collect_dispatches(&s, &mut dispatched);
            keep_changelog(&s, snapshot.is_some(), &mut changelog);
            arrivals += 1;
        }
        s.tick();
        collect_dispatches(&s, &mut dispatched);
        keep_changelog(&s, snapshot.is_some(), &mut changelog);
        assert!(s.quotas().usage().0 <= limit);
        s.advance(60 * SEC);
    }
    assert!(dispatched.len() >= 3_700, "{} sent", dispatched.len());
}

/// The idempotency keys of the queued sends, in queue order.
fn queued_keys(state: &quota::QuotaState) -> Vec<Vec<String>> {
    let key = |id: &u64| {
        let send = state.sends[(id - state.first_send) as usize].as_ref();
        send.map(|s| s.view.idempotency_key.to_string())
            .unwrap_or_default()
    };
    vec![
        state.queue_free.iter().map(key).collect(),
        state.queue_new.iter().map(key).collect(),
    ]
}

/// The i-th marketing send of the promotion tests (valid for 3 days: it may wait in a batch).
fn promotion_send(s: &mut Sim, i: u64) -> Admission {
    s.send_with(&customer(i), Category::Marketing, None, Some(3 * DAY))
        .1
}

fn keep_changelog(s: &Sim, after_snapshot: bool, log: &mut Vec<quota::Dispatch>) {
    if after_snapshot {
        log.extend(s.effects.iter().filter_map(|e| match e {
            Effect::Dispatch { send, .. } => Some(send.clone()),
            _ => None,
        }));
    }
}

/// Notes every send dispatched by the last command, by idempotency key (ids can change across
/// a restore; keys cannot); a key dispatched twice fails the test.
fn collect_dispatches(s: &Sim, keys: &mut std::collections::HashSet<String>) {
    for e in &s.effects {
        if let Effect::Dispatch { send, .. } = e {
            let key = send.idempotency_key.to_string();
            assert!(
                keys.insert(key),
                "{:?} dispatched twice",
                send.idempotency_key
            );
        }
    }
}

#[test]
fn a_saved_state_that_no_longer_fits_the_config_is_refused_and_changes_nothing() {
    let mut s = Sim::new("messaging_limit = 2000", 80);
    s.send(&customer(1), Category::Utility);
    let mut saved = s.quotas().state(s.now);
    saved.sends[0].as_mut().expect("logged").view.from = "+34999999999".into();
    let before = s.quotas().state(s.now);
    let tenant = s.shard.tenant_mut(T).expect("configured");
    assert_eq!(
        tenant.quotas_mut().restore(saved),
        Err(quota::RestoreError::UnknownNumber("+34999999999".into()))
    );
    assert_eq!(s.quotas().state(s.now), before);
}

// --- Property: the rolling count never exceeds the limit ---------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Send {
        customer: u8,
        category: u8,
        priority: u8,
    },
    Inbound {
        customer: u8,
    },
    Advance {
        minutes: u16,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..40, 0u8..4, 0u8..4).prop_map(|(customer, category, priority)| Op::Send { customer, category, priority }),
        1 => (0u8..40).prop_map(|customer| Op::Inbound { customer }),
        2 => (0u16..2_000).prop_map(|minutes| Op::Advance { minutes }),
        2 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Checked against an independent model: the unique customers that got a dispatched send
    /// while their window was closed, over the last 24 hours, never exceed the limit.
    #[test]
    fn rolling_count_never_exceeds_the_limit(ops in proptest::collection::vec(op(), 1..300)) {
        let limit = 12u64;
        let mut s = Sim::new("messaging_limit = 12\nbatch_threshold = 0.5\nreserve = 0.25\npair_burst = 100", 1000);
        let mut window_until: std::collections::HashMap<String, u64> = Default::default();
        let mut pending_business: std::collections::HashMap<SendId, String> = Default::default();
        let mut counted: Vec<(u64, String)> = Vec::new();
        for op in ops {
            // Sends and ticks move the window to now; then the count must match exactly.
            let exact = matches!(op, Op::Send { .. } | Op::Tick);
            match op {
                Op::Send { customer: c, category, priority } => {
                    let to = customer(u64::from(c));
                    let category = [Category::Marketing, Category::Utility, Category::Authentication, Category::Session][category as usize];
                    let priority = [None, Some(SendPriority::Low), Some(SendPriority::Normal), Some(SendPriority::High)][priority as usize];
                    let open = window_until.get(&to).is_some_and(|u| s.now.as_millis() < *u);
                    let (id, _) = s.send_with(&to, category, priority, Some(DAY));
                    if !open {
                        pending_business.insert(id, to);
                    }
                }
                Op::Inbound { customer: c } => {
                    let from = customer(u64::from(c));
                    s.inbound(&from, None);
                    window_until.insert(from, s.now.as_millis() + DAY);
                }
                Op::Advance { minutes } => s.advance(u64::from(minutes) * 60 * SEC),
                Op::Tick => s.tick(),
            }
            for e in &s.effects {
                if let Effect::Dispatch { send, .. } = e
                    && let Some(to) = pending_business.remove(&send.id)
                {
                    counted.push((s.now.as_millis(), to));
                }
            }
            let now = s.now.as_millis();
            let unique: std::collections::HashSet<&String> = counted
                .iter()
                .filter(|(at, _)| at + DAY > now)
                .map(|(_, c)| c)
                .collect();
            prop_assert!(unique.len() as u64 <= limit, "{} customers in 24 h", unique.len());
            if exact {
                prop_assert_eq!(unique.len() as u64, s.quotas().usage().0, "the count is exact");
            }
        }
    }
}

// --- SRE controls -------------------------------------------------------------------------------

use super::quota::{Change, PlanRequest};
use crate::config::{MessagingLimit, Rule};

impl Sim {
    fn set(&mut self, change: Change, ttl: u64) -> Result<Reply, CoreError> {
        self.run(Command::SetOverride {
            tenant: TenantId::new(T),
            change,
            reason: "summer promotion".into(),
            actor: "sre-ana".into(),
            expires_in_ms: ttl,
        })
    }

    fn audit(&mut self) -> Vec<quota::AuditEntry> {
        match self
            .run(Command::ListAudit {
                tenant: TenantId::new(T),
                limit: 100,
            })
            .unwrap()
        {
            Reply::Audit(a) => a,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn an_override_raises_a_limit_is_audited_and_expires_by_itself() {
    let mut s = Sim::new(
        "messaging_limit = 2\nbatch_threshold = 1.0\nreserve = 0.0",
        1000,
    );
    s.send(&customer(1), Category::Utility);
    s.send(&customer(2), Category::Utility);
    assert_eq!(
        refused(s.send(&customer(3), Category::Utility)).map(|r| r.0),
        Some(Refusal::MessagingLimit)
    );
    let Reply::Override(o) = s
        .set(
            Change::MessagingLimit(MessagingLimit::Customers(2000)),
            HOUR,
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(o.expires, Timestamp(s.now.as_millis() + HOUR));
    assert_eq!(
        s.send(&customer(3), Category::Utility),
        Admission::Dispatched
    );
    let audit = s.audit();
    assert_eq!(audit[0].action, "override_set");
    assert_eq!(
        (audit[0].before.as_str(), &*audit[0].actor),
        ("2", "sre-ana")
    );
    assert!(audit[0].after.starts_with("2000 until"), "{:?}", audit[0]);
    assert_eq!(audit[0].reason, "summer promotion");

    s.advance(HOUR - 1);
    s.tick();
    assert_eq!(
        s.quotas().usage().1,
        Some(2000),
        "still in force 1 ms before expiry"
    );
    s.advance(1);
    s.tick();
    assert_eq!(s.quotas().usage().1, Some(2), "expired by itself");
    let audit = s.audit();
    assert_eq!(
        (audit[0].action, &*audit[0].actor),
        ("override_expired", "switchboard")
    );
    assert_eq!(
        (audit[0].before.as_str(), audit[0].after.as_str()),
        ("2000", "2")
    );
    assert_eq!(
        refused(s.send(&customer(4), Category::Utility)).map(|r| r.0),
        Some(Refusal::MessagingLimit)
    );
}

#[test]
fn the_latest_override_wins_and_clearing_it_uncovers_the_previous() {
    let mut s = Sim::new("messaging_limit = 10", 1000);
    s.set(Change::MessagingLimit(MessagingLimit::Customers(100)), DAY)
        .unwrap();
    let Reply::Override(second) = s
        .set(Change::MessagingLimit(MessagingLimit::Customers(1000)), DAY)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(s.quotas().usage().1, Some(1000));
    s.run(Command::ClearOverride {
        tenant: TenantId::new(T),
        id: second.id,
        actor: "sre-ben".into(),
    })
    .unwrap();
    assert_eq!(s.quotas().usage().1, Some(100));
    assert_eq!(s.audit()[0].action, "override_cleared");
}

#[test]
fn a_number_rate_override_raises_its_bucket() {
    let mut s = Sim::new(UNLIMITED, 20);
    let mut ok = 0;
    for i in 0..50 {
        ok += u32::from(s.send(&customer(i), Category::Utility) == Admission::Dispatched);
    }
    assert_eq!(ok, 20);
    s.set(
        Change::NumberRate {
            number: NUMBER.into(),
            mps: 1000,
            burst: None,
        },
        HOUR,
    )
    .unwrap();
    let mut ok = 0;
    for i in 100..1100 {
        ok += u32::from(s.send(&customer(i), Category::Utility) == Admission::Dispatched);
    }
    assert_eq!(ok, 1000, "the new bucket starts full at its new burst");
    let snap = s.quotas().snapshot(s.now);
    assert_eq!((snap.numbers[0].mps, snap.numbers[0].tokens), (1000, 0));
    s.advance(500);
    assert_eq!(
        s.quotas().snapshot(s.now).numbers[0].tokens,
        500,
        "refilled at 1000/s"
    );
}

#[test]
fn bad_overrides_are_refused_and_change_nothing() {
    let mut s = Sim::new("messaging_limit = 10", 1000);
    let cases = [
        (Change::BatchThreshold(1.5), HOUR, "quotas.batch_threshold"),
        (Change::Reserve(0.9), HOUR, "quotas.reserve"),
        (
            Change::MessagingLimit(MessagingLimit::Customers(0)),
            HOUR,
            "quotas.messaging_limit",
        ),
        (
            Change::NumberRate {
                number: "+1999".into(),
                mps: 80,
                burst: None,
            },
            HOUR,
            "not a business number",
        ),
        (
            Change::NumberRate {
                number: NUMBER.into(),
                mps: 0,
                burst: None,
            },
            HOUR,
            ".mps",
        ),
        (
            Change::MessagingLimit(MessagingLimit::Customers(99)),
            0,
            "expires_in_ms",
        ),
        (
            Change::MessagingLimit(MessagingLimit::Customers(99)),
            40 * DAY,
            "expires_in_ms",
        ),
    ];
    for (change, ttl, needle) in cases {
        let err = s.set(change, ttl).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    let err = s
        .run(Command::SetOverride {
            tenant: TenantId::new(T),
            change: Change::BatchThreshold(0.5),
            reason: " ".into(),
            actor: "a".into(),
            expires_in_ms: HOUR,
        })
        .unwrap_err();
    assert!(err.to_string().contains("reason"), "{err}");
    assert!(s.audit().is_empty());
    let snap = s.quotas().snapshot(s.now);
    assert_eq!(
        (snap.limit, snap.batch_threshold, snap.overrides.len()),
        (Some(10), 0.8, 0)
    );
}

#[test]
fn shadow_mode_counts_would_be_refusals_without_refusing() {
    let mut s = Sim::new(
        "messaging_limit = 2\nbatch_threshold = 1.0\nreserve = 0.0",
        1000,
    );
    s.set(
        Change::Shadow {
            rule: Rule::Pair,
            on: true,
        },
        HOUR,
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            s.send(&customer(1), Category::Utility),
            Admission::Dispatched
        );
    }
    assert!(s.effects.contains(&Effect::ShadowRefusal {
        tenant: TenantId::new(T),
        rule: Rule::Pair
    }));
    // Rules not in shadow still refuse.
    s.send(&customer(2), Category::Utility);
    assert_eq!(
        refused(s.send(&customer(3), Category::Utility)).map(|r| r.0),
        Some(Refusal::MessagingLimit)
    );
    s.set(
        Change::Shadow {
            rule: Rule::MessagingLimit,
            on: true,
        },
        HOUR,
    )
    .unwrap();
    assert_eq!(
        s.send(&customer(3), Category::Utility),
        Admission::Dispatched
    );
    assert_eq!(
        s.quotas().usage(),
        (3, Some(2)),
        "shadow lets it over, and says so"
    );
    s.set(
        Change::Shadow {
            rule: Rule::Window,
            on: true,
        },
        HOUR,
    )
    .unwrap();
    assert_eq!(
        s.send(&customer(9), Category::Session),
        Admission::Dispatched
    );
    assert_eq!(
        s.quotas().snapshot(s.now).shadow,
        vec![Rule::Pair, Rule::MessagingLimit, Rule::Window]
    );
}

#[test]
fn a_reload_changes_the_base_and_a_bad_one_keeps_the_old_limits() {
    let mut s = Sim::new("messaging_limit = 10", 1000);
    let base = config("messaging_limit = 10", 1000).tenants[0].clone();
    let mut quotas = base.quotas.clone();
    quotas.messaging_limit = MessagingLimit::Customers(10_000);
    let mut numbers = base.numbers.clone();
    numbers.push(crate::config::NumberConfig {
        id: "+34910000003".into(),
        mps: 20,
        burst: None,
    });
    s.run(Command::ReloadQuotas {
        tenant: TenantId::new(T),
        numbers: numbers.clone(),
        quotas: Box::new(quotas),
        actor: "reload".into(),
    })
    .unwrap();
    assert_eq!(s.quotas().usage().1, Some(10_000));
    assert_eq!(s.quotas().numbers().count(), 3);
    assert_eq!(s.audit()[0].action, "config_reloaded");
    // Removing a number is refused; the limits in force stay.
    let err = s
        .run(Command::ReloadQuotas {
            tenant: TenantId::new(T),
            numbers: numbers[1..].to_vec(),
            quotas: Box::new(base.quotas.clone()),
            actor: "reload".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("needs a restart"), "{err}");
    assert_eq!(s.quotas().usage().1, Some(10_000));
}

#[test]
fn a_campaign_plan_projects_batch_mode_and_the_release() {
    let s = Sim::new("messaging_limit = 2000", 80);
    let plan = s.quotas().plan(
        s.now,
        &PlanRequest {
            customers: 10_000,
            interactions: 3,
            start: s.now,
            duration_ms: 48 * HOUR,
        },
    );
    assert_eq!(plan.messages, 30_000);
    assert!((plan.mps_needed - 30_000.0 / (48.0 * 3_600.0)).abs() < 1e-9);
    assert_eq!(plan.mps_available, 160);
    assert_eq!(plan.sent_directly, 1_600, "up to the 80% threshold");
    assert!(
        plan.peak_used <= 1_900,
        "never into the reserve: {}",
        plan.peak_used
    );
    let at = plan.batch_mode_at.expect("batch mode engages").as_millis() - s.now.as_millis();
    assert!(
        (7 * HOUR..8 * HOUR).contains(&at),
        "1,600 of 10,000 over 48 h ≈ 7.7 h: {at}"
    );
    let done = plan.done_at.expect("drains within 30 days").as_millis() - s.now.as_millis();
    assert!(
        done > 4 * DAY && done < 6 * DAY,
        "≈ 10,000 / 1,900 per day: {done}"
    );
    assert_eq!(plan.sent_directly + plan.batched, 10_000);
    // A campaign that fits is sent as it comes.
    let small = s.quotas().plan(
        s.now,
        &PlanRequest {
            customers: 500,
            interactions: 3,
            start: s.now,
            duration_ms: HOUR,
        },
    );
    assert_eq!(
        (small.sent_directly, small.batched, small.batch_mode_at),
        (500, 0, None)
    );
}

#[test]
fn tracked_sends_are_bounded_and_the_oldest_is_forgotten() {
    let mut s = Sim::new(&format!("{UNLIMITED}\nmax_tracked_sends = 3"), 1000);
    let ids: Vec<SendId> = (0..5)
        .map(|i| {
            s.send_key(
                &customer(i),
                Category::Utility,
                None,
                None,
                &format!("k{i}"),
            )
            .0
        })
        .collect();
    for id in &ids[2..] {
        assert_eq!(s.state(*id), SendState::Dispatched);
    }
    for id in &ids[..2] {
        let err = s
            .run(Command::GetSend {
                tenant: TenantId::new(T),
                id: *id,
            })
            .unwrap_err();
        assert!(
            matches!(err, CoreError::NotFound { what: "send", .. }),
            "{err:?}"
        );
    }
    // A forgotten key is a new send; a remembered one still answers the first time.
    s.advance(6 * SEC);
    let (again, _) = s.send_key(&customer(0), Category::Utility, None, None, "k0");
    assert!(again > ids[4]);
    assert_eq!(
        s.send_key(&customer(4), Category::Utility, None, None, "k4")
            .0,
        ids[4]
    );
}

/// The log's index of keys through several growths and a ring that forgets: a remembered key
/// answers with its first send, a forgotten one makes a new send, and the index files exactly
/// the sends the log remembers.
#[test]
fn idempotency_keys_are_found_through_growth_and_forgetting() {
    let mut s = Sim::new(&format!("{UNLIMITED}\nmax_tracked_sends = 5000"), 1000);
    let mut ids = Vec::new();
    for i in 0..20_000u64 {
        if i % 500 == 0 {
            s.advance(SEC);
        }
        let key = format!("k{i}");
        ids.push(
            s.send_key(&customer(i), Category::Utility, None, None, &key)
                .0,
        );
    }
    assert_eq!(s.quotas().keys_filed(), 5_000);
    s.advance(10 * SEC);
    for i in (15_000..20_000u64).step_by(7) {
        let key = format!("k{i}");
        let (id, _) = s.send_key(&customer(i), Category::Utility, None, None, &key);
        assert_eq!(id, ids[i as usize], "key {key}");
    }
    let last = *ids.last().expect("sent");
    let (again, _) = s.send_key(&customer(3), Category::Utility, None, None, "k3");
    assert!(again > last, "a forgotten key is a new send");
    assert_eq!(s.quotas().keys_filed(), 5_000);
}

#[test]
fn session_replies_are_never_batched_even_when_marked_low() {
    let mut s = Sim::new("messaging_limit = 10\nreserve = 0.1", 1000);
    for i in 0..8 {
        s.send(&customer(i), Category::Utility);
    }
    assert!(s.quotas().batch_mode());
    s.inbound(&customer(50), None);
    let (_, a) = s.send_with(
        &customer(50),
        Category::Session,
        Some(SendPriority::Low),
        None,
    );
    assert_eq!(
        a,
        Admission::Dispatched,
        "queued, it could outlive the window"
    );
}
