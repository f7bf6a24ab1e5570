//! Core tests with simulated time: no tokio, no sockets, every time an explicit `Timestamp`.
use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::model::{AgentId, Channel, ConversationId, Presence, TenantId};

pub(super) const T: &str = "acme";
pub(super) const SEC: u64 = 1_000;
pub(super) const HOUR: u64 = 3_600 * SEC;

/// Two agents' worth of queues: `support` (SLA 60 s, max wait 300 s, handle 120 s, falls back
/// to `supervisors`), `claims` (no fallback, boost 25), and intents in both languages.
pub(super) fn config(bot: bool) -> Config {
    let bot = if bot { "bot = \"faq-bot\"" } else { "" };
    Config::from_toml_str(&format!(
        r#"
        [limits]
        context_messages = 3
        [[tenants]]
        id = "{T}"
        default_region = "ES"
        {bot}
        default_queue = "support"
        escalation_queue = "supervisors"
        [[tenants.queues]]
        name = "support"
        sla_target_secs = 60
        max_wait_secs = 300
        initial_handle_secs = 120
        fallback = "supervisors"
        [[tenants.queues]]
        name = "claims"
        sla_target_secs = 60
        max_wait_secs = 300
        initial_handle_secs = 120
        max_wait_priority_boost = 25
        [[tenants.queues]]
        name = "supervisors"
        sla_target_secs = 120
        max_wait_secs = 600
        [[tenants.intents]]
        name = "hours"
        mode = "bot"
        keywords = ["horario", "opening hours"]
        [[tenants.intents]]
        name = "return"
        mode = "human"
        queue = "claims"
        priority = 40
        keywords = ["devolución", "return"]
        [[tenants.intents]]
        name = "fraud"
        mode = "human"
        queue = "claims"
        priority = 80
        keywords = ["fraude"]
        [[tenants.numbers]]
        id = "N"
        mps = 100
        [tenants.quotas]
        messaging_limit = "unlimited"
        "#
    ))
    .expect("test config is valid")
}

pub(super) struct Sim {
    pub shard: Shard,
    pub now: Timestamp,
    pub effects: Vec<Effect>,
    pub next_msg: u64,
}

impl Sim {
    pub(super) fn new(bot: bool) -> Self {
        Self::with(&config(bot))
    }

    pub(super) fn with(config: &Config) -> Self {
        Self {
            shard: Shard::new(config, |_| true),
            now: Timestamp(1_700_000_000_000),
            effects: Vec::new(),
            next_msg: 0,
        }
    }

    pub(super) fn advance(&mut self, ms: u64) {
        self.now = Timestamp(self.now.as_millis() + ms);
    }

    pub(super) fn run(&mut self, command: Command) -> Result<Reply, CoreError> {
        self.effects.clear();
        let r = self.shard.handle(self.now, command, &mut self.effects);
        let desk = self.shard.tenant(T).unwrap().desk();
        desk.check_invariants().expect("desk invariants hold");
        r
    }

    pub(super) fn msg_on(&mut self, customer: &str, channel: Channel, text: &str) -> Decision {
        self.next_msg += 1;
        let id = format!("wamid.{}", self.next_msg);
        self.ingest(customer, channel, &id, text).unwrap()
    }

    pub(super) fn msg(&mut self, customer: &str, text: &str) -> Decision {
        self.msg_on(customer, Channel::WhatsApp, text)
    }

    pub(super) fn ingest(
        &mut self,
        customer: &str,
        channel: Channel,
        id: &str,
        text: &str,
    ) -> Result<Decision, CoreError> {
        match self.run(Command::Ingest(inbound(customer, channel, id, text)))? {
            Reply::Decision(d) => Ok(d),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub(super) fn agent(&mut self, id: &str, capacity: u32, queues: &[&str]) {
        self.run(Command::RegisterAgent {
            tenant: TenantId::new(T),
            agent: AgentId::new(id),
            presence: Presence::Online,
            capacity,
            queues: queues.iter().map(|q| q.to_string()).collect(),
        })
        .unwrap();
    }

    fn presence(&mut self, id: &str, presence: Presence) {
        self.run(Command::SetPresence {
            tenant: TenantId::new(T),
            agent: AgentId::new(id),
            presence,
        })
        .unwrap();
    }

    pub(super) fn complete(&mut self, agent: &str, c: ConversationId) -> Result<Reply, CoreError> {
        self.run(Command::Complete {
            tenant: TenantId::new(T),
            agent: AgentId::new(agent),
            conversation: c,
        })
    }

    pub(super) fn view(&mut self, c: ConversationId) -> ConversationView {
        match self
            .run(Command::GetConversation {
                tenant: TenantId::new(T),
                conversation: c,
            })
            .unwrap()
        {
            Reply::Conversation(v) => v,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn stats(&mut self, queue: &str) -> QueueStatsView {
        match self
            .run(Command::QueueStats {
                tenant: TenantId::new(T),
                queue: Some(queue.into()),
            })
            .unwrap()
        {
            Reply::QueueStats(mut v) => v.remove(0),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub(super) fn tick(&mut self) {
        self.run(Command::Tick).unwrap();
    }

    pub(super) fn assigned_to(&self, agent: &str) -> Vec<ConversationId> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Assigned {
                    agent: a,
                    conversation,
                    ..
                } if a.as_str() == agent => Some(*conversation),
                _ => None,
            })
            .collect()
    }
}

/// The tenant's state saved, through JSON, and restored into a fresh shard (through the
/// commands the runtime uses), checked to be an exact round trip: the fresh shard and what was
/// saved.
pub(super) fn handover(s: &mut Sim) -> (Sim, TenantState) {
    let save = || Command::SaveState {
        tenant: TenantId::new(T),
    };
    let Ok(Reply::State(saved)) = s.run(save()) else {
        panic!("a state");
    };
    let json = serde_json::to_string(&saved).expect("serializes");
    let mut fresh = Sim::new(true);
    (fresh.now, fresh.next_msg) = (s.now, s.next_msg);
    let restore = Command::RestoreState {
        tenant: TenantId::new(T),
        state: Some(serde_json::from_str(&json).expect("deserializes")),
    };
    assert!(matches!(fresh.run(restore), Ok(Reply::Done)));
    let Ok(Reply::State(again)) = fresh.run(save()) else {
        panic!("a state");
    };
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        json,
        "an exact round trip"
    );
    (fresh, *saved)
}

/// A message from `customer` (a phone; empty for one known otherwise) to tenant `T`.
pub(super) fn inbound(customer: &str, channel: Channel, id: &str, text: &str) -> Inbound {
    Inbound {
        tenant: TenantId::new(T),
        customer: customer.into(),
        channel,
        provider_message_id: id.into(),
        text: text.into(),
        business_number: None,
        email: None,
        visitor_id: None,
        profile_name: None,
    }
}

pub(super) fn customer(i: u64) -> String {
    format!("+3461234{i:04}")
}

fn conv(d: &Decision) -> ConversationId {
    d.conversation
        .expect("routed decisions name their conversation")
}

#[test]
fn sla_load_decides_between_agent_queue_and_bot() {
    let mut s = Sim::new(true);
    s.agent("ana", 2, &["support"]);
    s.agent("ben", 2, &["support"]);
    let decisions: Vec<Decision> = (0..10).map(|i| s.msg(&customer(i), "hola")).collect();
    let targets: Vec<(Target, Reason)> = decisions.iter().map(|d| (d.target, d.reason)).collect();
    // 4 free slots: assigned at once. Then with 4 slots of 120 s average handle time, the
    // first waiting one needs 30 s, the second 60 s (= SLA, still within), the third 90 s.
    assert_eq!(&targets[..4], &[(Target::Agent, Reason::SlaOk); 4]);
    assert_eq!(&targets[4..6], &[(Target::Queue, Reason::SlaOk); 2]);
    assert_eq!(&targets[6..], &[(Target::Bot, Reason::SlaSaturated); 4]);
    assert_eq!(decisions[4].estimated_wait_ms, Some(30 * SEC));
    assert_eq!(decisions[5].estimated_wait_ms, Some(60 * SEC));
    assert_eq!(decisions[5].position, 1);
    assert_eq!(decisions[6].queue.as_ref().unwrap().as_str(), "support");
    // Least loaded first: the two agents alternate.
    let agents: Vec<&str> = decisions[..4]
        .iter()
        .map(|d| d.agent.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(agents, ["ana", "ben", "ana", "ben"]);

    // Completing frees capacity: the oldest waiting conversation goes to that agent.
    s.advance(10 * SEC);
    s.complete("ana", conv(&decisions[0])).unwrap();
    assert_eq!(s.assigned_to("ana"), vec![conv(&decisions[4])]);
    let st = s.stats("support");
    assert_eq!(st.depth, 1);
    assert_eq!(st.assignments_total, 5);
}

#[test]
fn without_a_bot_saturation_queues_anyway_and_says_so() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support"]);
    let d: Vec<Decision> = (0..4).map(|i| s.msg(&customer(i), "hola")).collect();
    assert_eq!((d[0].target, d[0].reason), (Target::Agent, Reason::SlaOk));
    // 1 slot, 120 s per conversation: 120 s > 60 s SLA for the first waiting one already.
    assert_eq!(
        (d[1].target, d[1].reason),
        (Target::Queue, Reason::SlaSaturatedNoBot)
    );
    // A simple intent without a bot goes to a human too.
    let h = s.msg(&customer(9), "¿cuál es el horario?");
    assert_eq!((h.target, h.reason), (Target::Queue, Reason::NoBot));
}

#[test]
fn no_agent_online_is_saturated() {
    let mut s = Sim::new(true);
    let d = s.msg(&customer(1), "hola");
    assert_eq!((d.target, d.reason), (Target::Bot, Reason::SlaSaturated));
    assert!(s.stats("support").estimated_wait_ms.is_none());
}

#[test]
fn simple_intent_goes_to_the_bot_and_friction_to_its_human_queue() {
    let mut s = Sim::new(true);
    s.agent("ana", 2, &["support", "claims"]);
    let d = s.msg(&customer(1), "What are your opening hours?");
    assert_eq!((d.target, d.reason), (Target::Bot, Reason::SimpleIntent));
    assert_eq!(d.intent.as_deref(), Some("hours"));
    assert!(matches!(
        &s.effects[..],
        [Effect::BotMessage {
            reason: Reason::SimpleIntent,
            ..
        }]
    ));

    let f = s.msg(&customer(2), "Quiero hacer una DEVOLUCION");
    assert_eq!((f.target, f.reason), (Target::Agent, Reason::Friction));
    assert_eq!(f.queue.as_ref().unwrap().as_str(), "claims");
    assert_eq!(
        s.view(conv(&f)).priority,
        40,
        "friction raised the priority"
    );
}

#[test]
fn friction_jumps_ahead_of_routine_traffic() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support", "claims"]);
    let first = s.msg(&customer(1), "hola");
    assert_eq!(first.target, Target::Agent);
    let routine = s.msg(&customer(2), "hola");
    s.advance(SEC);
    let fraud = s.msg(&customer(3), "esto es un fraude");
    assert_eq!(
        (fraud.target, fraud.reason),
        (Target::Queue, Reason::Friction)
    );
    s.complete("ana", conv(&first)).unwrap();
    assert_eq!(
        s.assigned_to("ana"),
        vec![conv(&fraud)],
        "priority beats age: the later fraud report goes first"
    );
    assert_eq!(s.view(conv(&routine)).state, ConversationState::Waiting);
}

#[test]
fn follow_up_goes_to_the_agent_who_has_the_conversation() {
    let mut s = Sim::new(true);
    s.agent("ana", 1, &["support"]);
    s.agent("ben", 1, &["support"]);
    let d = s.msg(&customer(1), "hola");
    let agent = d.agent.clone().unwrap();
    let f = s.msg(&customer(1), "¿sigues ahí? ¿cuál es el horario?");
    assert_eq!((f.target, f.reason), (Target::Agent, Reason::AssignedAgent));
    assert_eq!(f.agent, Some(agent.clone()));
    assert!(matches!(
        &s.effects[..],
        [Effect::AgentMessage { agent: a, .. }] if *a == agent
    ));
}

#[test]
fn waiting_conversation_keeps_its_place_and_friction_raises_it() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support"]);
    s.msg(&customer(1), "hola");
    let a = s.msg(&customer(2), "hola");
    let b = s.msg(&customer(3), "hola");
    assert_eq!(b.position, 1);
    let again = s.msg(&customer(3), "una devolución por favor");
    assert_eq!(
        (again.target, again.reason),
        (Target::Queue, Reason::AlreadyQueued)
    );
    assert_eq!(
        again.queue.as_ref().unwrap().as_str(),
        "support",
        "stays put"
    );
    assert_eq!(again.position, 0, "friction raised it ahead of {a:?}");
    assert_eq!(s.view(conv(&b)).priority, 40);
}

#[test]
fn paused_automation_sends_the_next_message_to_a_human() {
    let mut s = Sim::new(true);
    let d = s.msg(&customer(1), "What are your opening hours?");
    assert_eq!(d.target, Target::Bot);
    s.run(Command::PauseAutomation {
        tenant: TenantId::new(T),
        conversation: conv(&d),
    })
    .unwrap();
    let next = s.msg(&customer(1), "opening hours again");
    assert_eq!(
        (next.target, next.reason),
        (Target::Queue, Reason::AutomationPaused)
    );
    // Never routed to a queue before: the tenant's escalation queue.
    assert_eq!(next.queue.as_ref().unwrap().as_str(), "supervisors");
    s.run(Command::ResumeAutomation {
        tenant: TenantId::new(T),
        conversation: conv(&d),
    })
    .unwrap();
    assert!(!s.view(conv(&d)).automation_paused);
}

#[test]
fn paused_automation_keeps_a_conversation_with_its_agent() {
    let mut s = Sim::new(true);
    s.agent("ana", 1, &["support"]);
    let d = s.msg(&customer(1), "hola");
    assert_eq!(d.agent.as_ref().unwrap().as_str(), "ana");
    s.run(Command::PauseAutomation {
        tenant: TenantId::new(T),
        conversation: conv(&d),
    })
    .unwrap();
    let next = s.msg(&customer(1), "opening hours?");
    assert_eq!(
        (next.target, next.reason),
        (Target::Agent, Reason::AutomationPaused)
    );
    assert_eq!(
        next.agent.unwrap().as_str(),
        "ana",
        "already with a person: that person"
    );
    assert!(matches!(&s.effects[..], [Effect::AgentMessage { .. }]));
}

#[test]
fn route_override_to_a_queue_or_an_agent() {
    let mut s = Sim::new(true);
    s.agent("vip", 1, &["claims"]);
    let d = s.msg(&customer(1), "opening hours");
    assert_eq!(d.target, Target::Bot);
    let tenant = TenantId::new(T);
    // To an agent: the bot conversation moves to that agent at once.
    s.run(Command::OverrideRoute {
        tenant: tenant.clone(),
        conversation: conv(&d),
        to: Some(RouteOverride::Agent(AgentId::new("vip"))),
    })
    .unwrap();
    assert_eq!(s.assigned_to("vip"), vec![conv(&d)]);
    let next = s.msg(&customer(1), "opening hours");
    assert_eq!(
        (next.target, next.reason),
        (Target::Agent, Reason::RouteOverride)
    );
    assert_eq!(next.agent.as_ref().unwrap().as_str(), "vip");

    // To a queue, for another conversation.
    let e = s.msg(&customer(2), "opening hours");
    s.run(Command::OverrideRoute {
        tenant: tenant.clone(),
        conversation: conv(&e),
        to: Some(RouteOverride::Queue(QueueName::new("claims"))),
    })
    .unwrap();
    let v = s.view(conv(&e));
    assert_eq!(v.state, ConversationState::Waiting);
    assert_eq!(v.queue.unwrap().as_str(), "claims");

    // Bad overrides change nothing.
    let err = s
        .run(Command::OverrideRoute {
            tenant: tenant.clone(),
            conversation: conv(&e),
            to: Some(RouteOverride::Queue(QueueName::new("nope"))),
        })
        .unwrap_err();
    assert!(matches!(
        err,
        CoreError::InvalidArgument { field: "queue", .. }
    ));
    let err = s
        .run(Command::OverrideRoute {
            tenant,
            conversation: conv(&e),
            to: Some(RouteOverride::Agent(AgentId::new("ghost"))),
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::NotFound { what: "agent", .. }));
    assert_eq!(
        s.view(conv(&e)).route_override,
        Some(RouteOverride::Queue(QueueName::new("claims")))
    );
}

#[test]
fn bot_escalates_with_context() {
    let mut s = Sim::new(true);
    s.agent("sup", 1, &["supervisors"]);
    let d = s.msg(&customer(1), "opening hours");
    let esc = match s
        .run(Command::Escalate {
            tenant: TenantId::new(T),
            conversation: conv(&d),
            queue: None,
            note: "customer asked for a person".into(),
            author: None,
        })
        .unwrap()
    {
        Reply::Decision(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!((esc.target, esc.reason), (Target::Agent, Reason::Escalated));
    assert_eq!(esc.agent.unwrap().as_str(), "sup");
    let v = s.view(conv(&d));
    assert_eq!(v.priority, 50, "escalation priority");
    assert_eq!(v.context.len(), 2);
    assert_eq!(v.context[1].text(), "customer asked for a person");
    assert_eq!(v.context[1].direction, Direction::Note);
    // An assigned conversation cannot be escalated again.
    let err = s
        .run(Command::Escalate {
            tenant: TenantId::new(T),
            conversation: conv(&d),
            queue: None,
            note: String::new(),
            author: None,
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::FailedPrecondition(_)));
}

#[test]
fn whatsapp_and_web_chat_from_one_number_are_one_conversation() {
    let mut s = Sim::new(true);
    let a = s.msg_on("+34 612 345 678", Channel::WhatsApp, "hola");
    let b = s.msg_on("612345678", Channel::WebChat, "hola otra vez");
    let c = s.msg_on("+34612345678", Channel::Voice, "llamada");
    assert_eq!(a.conversation, b.conversation);
    assert_eq!(a.conversation, c.conversation);
    let v = s.view(conv(&a));
    assert_eq!(
        v.channels,
        vec![Channel::WhatsApp, Channel::WebChat, Channel::Voice]
    );
    assert_eq!(v.customer, "+34612345678");
    assert_ne!(s.msg(&customer(2), "hola").conversation, a.conversation);
}

#[test]
fn duplicates_are_dropped() {
    let mut s = Sim::new(true);
    let first = s
        .ingest(&customer(1), Channel::WhatsApp, "wamid.X", "hola")
        .unwrap();
    assert!(!first.duplicate);
    s.advance(3 * 24 * HOUR); // Meta retries for days
    let again = s
        .ingest(&customer(1), Channel::WhatsApp, "wamid.X", "hola")
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.target, again.reason),
        (Target::None, Reason::Duplicate)
    );
    assert_eq!(again.conversation, first.conversation);
    assert!(s.effects.is_empty(), "a duplicate has no effect");
    assert_eq!(
        s.view(conv(&first)).context.len(),
        1,
        "not added to the context"
    );
}

#[test]
fn window_opens_resets_and_closes_at_the_exact_boundary() {
    let mut s = Sim::new(true);
    let start = s.now;
    let d = s.msg(&customer(1), "hola");
    let id = conv(&d);
    let day = 24 * HOUR;
    assert_eq!(d.window_expires, Some(Timestamp(start.as_millis() + day)));
    let tenant = |s: &Sim| s.shard.tenant(T).unwrap().window_open(id, s.now);

    s.advance(day - 1);
    assert!(tenant(&s), "open 1 ms before 24 h");
    s.advance(1);
    assert!(!tenant(&s), "closed at exactly 24 h");

    // A new customer message reopens it for a full 24 hours from that message.
    s.advance(5 * HOUR);
    let reopened = s.now;
    let d = s.msg(&customer(1), "sigo aquí");
    assert_eq!(
        d.window_expires,
        Some(Timestamp(reopened.as_millis() + day))
    );
    s.advance(20 * HOUR);
    s.msg(&customer(1), "hola?"); // resets: 24 h from now, not from `reopened`
    s.advance(day - 1);
    assert!(tenant(&s));
    s.advance(1);
    assert!(!tenant(&s));
    assert!(!s.view(id).window_open);
}

#[test]
fn web_chat_does_not_open_the_whatsapp_window() {
    let mut s = Sim::new(true);
    let d = s.msg_on(&customer(1), Channel::WebChat, "hola");
    assert_eq!(d.window_expires, None);
    assert!(!s.view(conv(&d)).window_open);
}

#[test]
fn context_keeps_the_last_n_messages() {
    let mut s = Sim::new(true);
    for i in 0..5 {
        s.msg(&customer(1), &format!("message {i}"));
    }
    let v = s.view(ConversationId(1));
    let texts: Vec<&str> = v.context.iter().map(|m| m.text()).collect();
    assert_eq!(texts, ["message 2", "message 3", "message 4"]);
}

#[test]
fn max_wait_moves_to_the_fallback_queue() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support"]);
    s.msg(&customer(1), "hola");
    let waiting = s.msg(&customer(2), "hola");
    assert_eq!(waiting.target, Target::Queue);
    s.advance(300 * SEC);
    s.tick();
    assert_eq!(
        s.view(conv(&waiting)).queue.unwrap().as_str(),
        "support",
        "exactly the max wait is not past it"
    );
    s.advance(1);
    s.tick();
    assert!(s.effects.iter().any(|e| matches!(
        e,
        Effect::Escalated { from, to, .. } if from.as_str() == "support" && to.as_str() == "supervisors"
    )));
    assert_eq!(
        s.view(conv(&waiting)).queue.unwrap().as_str(),
        "supervisors"
    );
    // A supervisor coming online takes it.
    s.agent("sup", 1, &["supervisors"]);
    assert_eq!(s.assigned_to("sup"), vec![conv(&waiting)]);
}

#[test]
fn max_wait_without_fallback_raises_priority_once() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["claims"]);
    s.msg(&customer(1), "devolución");
    let waiting = s.msg(&customer(2), "devolución");
    s.advance(301 * SEC);
    s.tick();
    assert_eq!(s.view(conv(&waiting)).priority, 65, "40 + boost 25");
    s.advance(301 * SEC);
    s.tick();
    assert_eq!(s.view(conv(&waiting)).priority, 65, "raised once");
    assert!(
        s.effects
            .iter()
            .all(|e| !matches!(e, Effect::Escalated { .. }))
    );
}

#[test]
fn sla_breaches_and_attainment() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support"]);
    let first = s.msg(&customer(1), "hola");
    let second = s.msg(&customer(2), "hola");
    s.advance(60 * SEC);
    s.tick();
    assert_eq!(s.stats("support").sla_breaches_total, 0, "60 s is within");
    s.advance(1);
    s.tick();
    assert!(matches!(&s.effects[..], [Effect::SlaBreached { .. }]));
    s.advance(10 * SEC);
    s.tick();
    assert!(s.effects.is_empty(), "a breach counts once");
    s.complete("ana", conv(&first)).unwrap();
    assert_eq!(s.assigned_to("ana"), vec![conv(&second)]);
    let st = s.stats("support");
    assert_eq!(st.sla_breaches_total, 1);
    assert_eq!(st.assignments_total, 2);
    assert!((st.sla_attainment - 0.5).abs() < 1e-9);
    // The first completion (after 70.001 s) moves the 120 s average a fifth of the way.
    assert_eq!(st.average_handle_ms, 110_000, "moving average");
}

#[test]
fn offline_agent_conversations_requeue_and_prefer_it_on_return() {
    let mut s = Sim::new(false);
    s.agent("ana", 2, &["support"]);
    let a = s.msg(&customer(1), "hola");
    let b = s.msg(&customer(2), "hola");
    s.presence("ana", Presence::Offline);
    assert_eq!(
        s.effects
            .iter()
            .filter(|e| matches!(
                e,
                Effect::Unassigned {
                    reason: Reason::AgentOffline,
                    ..
                }
            ))
            .count(),
        2
    );
    let c = s.msg(&customer(3), "hola"); // arrives while ana is away
    s.advance(SEC);
    s.agent("ben", 1, &["support"]);
    assert_eq!(
        s.assigned_to("ben"),
        vec![conv(&a)],
        "others may take it meanwhile"
    );
    s.presence("ana", Presence::Online);
    assert_eq!(
        s.assigned_to("ana"),
        vec![conv(&b), conv(&c)],
        "its own conversation first, then the queue"
    );
}

#[test]
fn away_agent_keeps_conversations_but_takes_no_new_ones() {
    let mut s = Sim::new(false);
    s.agent("ana", 2, &["support"]);
    let a = s.msg(&customer(1), "hola");
    s.presence("ana", Presence::Away);
    let b = s.msg(&customer(2), "hola");
    assert_eq!(b.target, Target::Queue);
    let follow = s.msg(&customer(1), "hola?");
    assert_eq!(follow.agent.unwrap().as_str(), "ana");
    s.presence("ana", Presence::Online);
    assert_eq!(s.assigned_to("ana"), vec![conv(&b)]);
    assert_eq!(s.view(conv(&a)).state, ConversationState::Assigned);
}

#[test]
fn release_and_transfer_free_capacity_and_avoid_the_agent() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support"]);
    s.agent("ben", 1, &["support", "claims"]);
    let a = s.msg(&customer(1), "hola");
    let b = s.msg(&customer(2), "hola");
    let c = s.msg(&customer(3), "hola");
    assert_eq!(a.agent.as_ref().unwrap().as_str(), "ana");
    assert_eq!(c.target, Target::Queue);
    let tenant = TenantId::new(T);
    // ana releases a: she takes the next waiting one (c), not a back; a waits for ben.
    s.run(Command::Release {
        tenant: tenant.clone(),
        agent: AgentId::new("ana"),
        conversation: conv(&a),
    })
    .unwrap();
    assert_eq!(s.assigned_to("ana"), vec![conv(&c)]);
    assert_eq!(s.view(conv(&a)).state, ConversationState::Waiting);
    // ben transfers b to claims: he takes the next waiting conversation (a) first, then b
    // waits in claims for an agent.
    s.run(Command::Transfer {
        tenant: tenant.clone(),
        agent: AgentId::new("ben"),
        conversation: conv(&b),
        to: TransferTarget::Queue(QueueName::new("claims")),
    })
    .unwrap();
    assert_eq!(s.assigned_to("ben"), vec![conv(&a)]);
    let v = s.view(conv(&b));
    assert_eq!(
        (v.state, v.queue.unwrap().as_str()),
        (ConversationState::Waiting, "claims")
    );
    // Transfer to a full agent is refused and changes nothing.
    let holder = s.view(conv(&c)).agent.unwrap();
    let err = s
        .run(Command::Transfer {
            tenant: tenant.clone(),
            agent: holder.clone(),
            conversation: conv(&c),
            to: TransferTarget::Agent(AgentId::new("ben")),
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::FailedPrecondition(m) if m.contains("at capacity")));
    assert_eq!(s.view(conv(&c)).agent, Some(holder));
}

#[test]
fn transfer_to_an_available_agent() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support"]);
    let a = s.msg(&customer(1), "hola");
    s.agent("ben", 1, &["claims"]);
    s.run(Command::Transfer {
        tenant: TenantId::new(T),
        agent: AgentId::new("ana"),
        conversation: conv(&a),
        to: TransferTarget::Agent(AgentId::new("ben")),
    })
    .unwrap();
    assert_eq!(s.assigned_to("ben"), vec![conv(&a)]);
    assert!(s.effects.iter().any(|e| matches!(
        e,
        Effect::Unassigned { agent, reason: Reason::Transferred, .. } if agent.as_str() == "ana"
    )));
}

#[test]
fn lowering_capacity_requeues_the_newest() {
    let mut s = Sim::new(false);
    s.agent("ana", 3, &["support"]);
    let ds: Vec<Decision> = (0..3).map(|i| s.msg(&customer(i), "hola")).collect();
    s.agent("ana", 1, &["support"]);
    let v = s.view(conv(&ds[0]));
    assert_eq!(v.state, ConversationState::Assigned);
    for d in &ds[1..] {
        assert_eq!(s.view(conv(d)).state, ConversationState::Waiting);
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut s = Sim::new(true);
    let bad = [
        ("not a number", "hola", "customer"),
        (&customer(1) as &str, "", "text"),
        (&customer(1), &"x".repeat(5_000), "text"),
    ];
    for (number, text, field) in bad {
        let err = s
            .ingest(number, Channel::WhatsApp, "wamid.bad", text)
            .unwrap_err();
        assert!(
            matches!(&err, CoreError::InvalidArgument { field: f, .. } if *f == field),
            "{err:?}"
        );
    }
    let err = s
        .ingest(&customer(1), Channel::WhatsApp, "", "hola")
        .unwrap_err();
    assert!(matches!(
        err,
        CoreError::InvalidArgument {
            field: "provider_message_id",
            ..
        }
    ));
    let t = s.shard.tenant(T).unwrap();
    assert_eq!(t.conversation_count(), 0);
    assert_eq!(
        t.remembered_message_ids(),
        0,
        "a refused id may be sent again, fixed"
    );

    let err = s
        .run(Command::RegisterAgent {
            tenant: TenantId::new(T),
            agent: AgentId::new("ana"),
            presence: Presence::Online,
            capacity: 0,
            queues: vec!["support".into()],
        })
        .unwrap_err();
    assert!(matches!(
        err,
        CoreError::InvalidArgument {
            field: "capacity",
            ..
        }
    ));
    let err = s
        .run(Command::RegisterAgent {
            tenant: TenantId::new(T),
            agent: AgentId::new("ana"),
            presence: Presence::Online,
            capacity: 1,
            queues: vec!["nope".into()],
        })
        .unwrap_err();
    assert!(matches!(
        err,
        CoreError::InvalidArgument {
            field: "queues",
            ..
        }
    ));
    let err = s.complete("ghost", ConversationId(1)).unwrap_err();
    assert!(matches!(
        err,
        CoreError::NotFound {
            what: "conversation",
            ..
        }
    ));
    let err = s
        .run(Command::GetAgent {
            tenant: TenantId::new(T),
            agent: AgentId::new("ana"),
        })
        .unwrap_err();
    assert!(
        matches!(err, CoreError::NotFound { what: "agent", .. }),
        "nothing registered"
    );
    let err = s
        .run(Command::GetConversation {
            tenant: TenantId::new("other"),
            conversation: ConversationId(1),
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::NotFound { what: "tenant", .. }));
}

#[test]
fn completing_someone_elses_conversation_is_refused() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["support"]);
    s.agent("ben", 1, &["support"]);
    let a = s.msg(&customer(1), "hola");
    let other = if a.agent.as_ref().unwrap().as_str() == "ana" {
        "ben"
    } else {
        "ana"
    };
    let err = s.complete(other, conv(&a)).unwrap_err();
    assert!(matches!(err, CoreError::FailedPrecondition(m) if m.contains("is assigned to agent")));
    assert_eq!(s.view(conv(&a)).state, ConversationState::Assigned);
}

#[test]
fn idle_conversations_and_old_ids_are_swept_after_retention() {
    let mut s = Sim::new(true);
    let d = s.msg(&customer(1), "opening hours");
    s.tick();
    s.advance(3 * 24 * HOUR - 1);
    s.tick();
    assert_eq!(s.shard.tenant(T).unwrap().conversation_count(), 1);
    // Sweeps run every sweep interval (60 s): it goes at the first sweep past 72 h.
    s.advance(60 * SEC);
    s.tick();
    let t = s.shard.tenant(T).unwrap();
    assert_eq!(
        t.conversation_count(),
        0,
        "forgotten after 72 h of no activity"
    );
    assert_eq!(t.remembered_message_ids(), 1, "ids live 7 days");
    s.advance(4 * 24 * HOUR);
    s.tick();
    assert_eq!(s.shard.tenant(T).unwrap().remembered_message_ids(), 0);
    let again = s.msg(&customer(1), "hola");
    assert_ne!(again.conversation, d.conversation, "a new conversation");
}

#[test]
fn restored_conversations_are_swept_at_the_end_of_their_retention() {
    let mut s = Sim::new(true);
    s.msg(&customer(1), "horario");
    s.advance(HOUR);
    s.msg(&customer(2), "horario");
    let (mut fresh, _) = handover(&mut s);
    // Customer 1's 72 hours end first, at the first sweep past them; then customer 2's.
    fresh.advance(71 * HOUR + 60 * SEC);
    fresh.tick();
    assert_eq!(fresh.shard.tenant(T).unwrap().conversation_count(), 1);
    fresh.advance(HOUR);
    fresh.tick();
    assert_eq!(fresh.shard.tenant(T).unwrap().conversation_count(), 0);
}

/// After a peak the conversations' index and the phones' give their room back: the sweep
/// that leaves them under a quarter full begins smaller tables, the next tick walks the old
/// ones over, and every customer kept finds the same conversation throughout. (Until session
/// 37 the sweep compared the count with the slab's capacity, its pages, which go as they
/// empty: unless under half a page was left, the indexes kept their peak's size.)
#[test]
fn the_indexes_give_back_their_room_after_a_peak() {
    const KEPT: u64 = 3_000;
    let mut s = Sim::new(true);
    let phone = |i: u64| format!("+3461{:07}", 3_000_000 + i);
    let mut kept: Vec<_> = (0..20_000)
        .map(|i| s.msg(&phone(i), "hola").conversation)
        .collect();
    kept.truncate(KEPT as usize);
    let slots = |s: &Sim| s.shard.tenant(T).unwrap().index_slots();
    let peak = slots(&s);
    // All but the first KEPT customers go quiet past the retention.
    s.advance(71 * HOUR);
    for (i, id) in (0..).zip(&kept) {
        assert_eq!(&s.msg(&phone(i), "sigo aquí").conversation, id);
    }
    s.advance(2 * HOUR);
    s.tick();
    let conversations = s.shard.tenant(T).unwrap().conversation_count();
    assert_eq!(conversations as u64, KEPT);
    let walking = slots(&s);
    assert!(
        walking.0 > peak.0 && walking.1 > peak.1,
        "smaller tables begun beside the old ones: {peak:?} -> {walking:?}"
    );
    // Found while the old tables are still there, then once the ticks have walked them.
    for _ in 0..2 {
        for (i, id) in (0..).zip(&kept) {
            assert_eq!(&s.msg(&phone(i), "¿seguís?").conversation, id);
        }
        s.advance(SEC);
        s.tick();
    }
    let after = slots(&s);
    assert!(
        after.0 * 4 <= peak.0 && after.1 * 4 <= peak.1,
        "slots {peak:?} at the peak, {after:?} after"
    );
}

#[test]
fn a_conversation_held_past_its_retention_goes_at_the_first_sweep_after_it_is_let_go() {
    let mut s = Sim::new(false);
    s.agent("ana", 1, &["claims"]);
    let d = s.msg(&customer(1), "devolución");
    assert_eq!(s.assigned_to("ana"), [conv(&d)]);
    // Four days without a word: ana still has it, so every sweep keeps it.
    for _ in 0..4 {
        s.advance(24 * HOUR);
        s.tick();
    }
    assert_eq!(s.shard.tenant(T).unwrap().conversation_count(), 1);
    s.complete("ana", conv(&d)).expect("hers");
    s.advance(60 * SEC);
    s.tick();
    assert_eq!(s.shard.tenant(T).unwrap().conversation_count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Customers come back after hours or days, agents take and finish conversations: every
    /// sweep forgets exactly the conversations the plain rule names (no activity for the
    /// retention, nobody holding or waiting; `Tenant::sweep_conversations` checks it against
    /// every conversation at each sweep), and no later than the first sweep past their end.
    #[test]
    fn sweeps_forget_exactly_the_idle_conversations_nobody_holds(
        steps in proptest::collection::vec((0u8..40, 0u8..4, 0u16..1_800, 0u8..8), 1..200),
    ) {
        let mut s = Sim::new(true);
        s.agent("ana", 2, &["support", "claims"]);
        for (who, text, minutes, act) in steps {
            match act {
                // A customer writes ("devolución" waits for, or goes to, ana).
                0..=4 => {
                    s.msg(&customer(u64::from(who)), ["hola", "devolución", "horario", "gracias"][text as usize]);
                }
                // Ana finishes one of hers.
                5 => {
                    if let Some(&c) = s.assigned_to("ana").first() {
                        s.complete("ana", c).expect("hers");
                    }
                }
                // Time passes, up to 30 hours, and the shard ticks (the sweep runs at most
                // once a minute).
                _ => {
                    s.advance(u64::from(minutes) * 60 * SEC);
                    s.tick();
                }
            }
        }
        // Nobody wrote for longer than the retention (72 h), past a sweep: all forgotten but
        // those ana holds or that wait for her.
        s.advance(72 * HOUR + 61 * SEC);
        s.tick();
        let t = s.shard.tenant(T).expect("configured");
        let held = t.desk().placed_conversations().count();
        prop_assert_eq!(t.conversation_count(), held);
    }
}

#[test]
fn same_commands_same_results() {
    fn run() -> Vec<Effect> {
        let mut s = Sim::new(true);
        let mut all = Vec::new();
        s.agent("ana", 2, &["support", "claims"]);
        for i in 0..20 {
            let text = ["hola", "devolución", "horario", "fraude"][i % 4];
            s.msg(&customer(i as u64 % 7), text);
            all.append(&mut s.effects);
            s.advance(7 * SEC);
            s.tick();
            all.append(&mut s.effects);
        }
        all
    }
    assert_eq!(run(), run());
}

// --- Property tests: capacity accounting over random event sequences -------------------------

#[derive(Debug, Clone)]
enum Op {
    Message { customer: u8, text: u8 },
    Register { agent: u8, capacity: u8, queues: u8 },
    Presence { agent: u8, presence: u8 },
    Complete { agent: u8, pick: u8 },
    Release { agent: u8, pick: u8 },
    TransferQueue { agent: u8, pick: u8, queue: u8 },
    TransferAgent { agent: u8, pick: u8, to: u8 },
    Escalate { customer: u8 },
    Advance { secs: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..30, 0u8..4).prop_map(|(customer, text)| Op::Message { customer, text }),
        1 => (0u8..4, 1u8..4, 1u8..8).prop_map(|(agent, capacity, queues)| Op::Register { agent, capacity, queues }),
        1 => (0u8..4, 0u8..3).prop_map(|(agent, presence)| Op::Presence { agent, presence }),
        2 => (0u8..4, any::<u8>()).prop_map(|(agent, pick)| Op::Complete { agent, pick }),
        1 => (0u8..4, any::<u8>()).prop_map(|(agent, pick)| Op::Release { agent, pick }),
        1 => (0u8..4, any::<u8>(), 0u8..3).prop_map(|(agent, pick, queue)| Op::TransferQueue { agent, pick, queue }),
        1 => (0u8..4, any::<u8>(), 0u8..4).prop_map(|(agent, pick, to)| Op::TransferAgent { agent, pick, to }),
        1 => (0u8..30).prop_map(|customer| Op::Escalate { customer }),
        2 => (0u16..400).prop_map(|secs| Op::Advance { secs }),
    ]
}

const QUEUES: [&str; 3] = ["support", "claims", "supervisors"];

fn agent_name(i: u8) -> AgentId {
    AgentId::new(format!("agent-{i}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever happens: no agent ever holds more than its capacity, no conversation is in two
    /// places (checked by `check_invariants` after every command), every effect assigns a
    /// conversation that was not already assigned elsewhere, and every conversation that
    /// entered the desk is still there (waiting or assigned) unless an agent completed it.
    #[test]
    fn capacity_accounting_holds(ops in proptest::collection::vec(op(), 1..120), bot in any::<bool>()) {
        let mut s = Sim::new(bot);
        let tenant = TenantId::new(T);
        let mut holder: std::collections::HashMap<ConversationId, AgentId> = Default::default();
        let mut on_desk: std::collections::HashSet<ConversationId> = Default::default();
        for op in ops {
            let command = match op {
                Op::Message { customer: c, text } => Command::Ingest(Inbound {
                    tenant: tenant.clone(),
                    customer: customer(u64::from(c)),
                    channel: Channel::WhatsApp,
                    provider_message_id: format!("m{}", s.now.as_millis()),
                    text: ["hola", "devolución", "horario", "fraude"][text as usize].into(),
                    business_number: None,
                    email: None,
                    visitor_id: None,
                    profile_name: None,
                }),
                Op::Register { agent, capacity, queues } => Command::RegisterAgent {
                    tenant: tenant.clone(),
                    agent: agent_name(agent),
                    presence: Presence::Online,
                    capacity: u32::from(capacity),
                    queues: QUEUES.iter().enumerate()
                        .filter(|(i, _)| queues & (1 << i) != 0)
                        .map(|(_, q)| q.to_string()).collect(),
                },
                Op::Presence { agent, presence } => Command::SetPresence {
                    tenant: tenant.clone(),
                    agent: agent_name(agent),
                    presence: [Presence::Online, Presence::Away, Presence::Offline][presence as usize],
                },
                Op::Complete { agent, pick } | Op::Release { agent, pick }
                | Op::TransferQueue { agent, pick, .. } | Op::TransferAgent { agent, pick, .. } => {
                    let agent = agent_name(agent);
                    let mine: Vec<ConversationId> = holder.iter()
                        .filter(|(_, a)| **a == agent).map(|(c, _)| *c).collect();
                    let conversation = if mine.is_empty() {
                        ConversationId(u64::from(pick))
                    } else {
                        let mut mine = mine;
                        mine.sort();
                        mine[pick as usize % mine.len()]
                    };
                    match op {
                        Op::Complete { .. } => Command::Complete { tenant: tenant.clone(), agent, conversation },
                        Op::Release { .. } => Command::Release { tenant: tenant.clone(), agent, conversation },
                        Op::TransferQueue { queue, .. } => Command::Transfer {
                            tenant: tenant.clone(), agent, conversation,
                            to: TransferTarget::Queue(QueueName::new(QUEUES[queue as usize])),
                        },
                        Op::TransferAgent { to, .. } => Command::Transfer {
                            tenant: tenant.clone(), agent, conversation,
                            to: TransferTarget::Agent(agent_name(to)),
                        },
                        _ => unreachable!(),
                    }
                }
                Op::Escalate { customer: c } => Command::Escalate {
                    tenant: tenant.clone(),
                    conversation: ConversationId(u64::from(c) + 1),
                    queue: None,
                    note: String::new(),
                    author: None,
                },
                Op::Advance { secs } => {
                    s.advance(u64::from(secs) * SEC + 1);
                    Command::Tick
                }
            };
            let was_complete = matches!(command, Command::Complete { .. });
            let completed_conversation = match &command {
                Command::Complete { conversation, .. } => Some(*conversation),
                _ => None,
            };
            // `run` checks the desk invariants after every command.
            let result = s.run(command);
            if was_complete && result.is_ok() {
                let c = completed_conversation.unwrap();
                prop_assert!(holder.remove(&c).is_some());
                prop_assert!(on_desk.remove(&c));
            }
            for e in &s.effects {
                match e {
                    Effect::Assigned { agent, conversation, .. } => {
                        prop_assert!(
                            !holder.contains_key(conversation),
                            "{conversation} assigned twice"
                        );
                        holder.insert(*conversation, agent.clone());
                        on_desk.insert(*conversation);
                    }
                    Effect::Unassigned { agent, conversation, .. } => {
                        let was = holder.remove(conversation);
                        prop_assert_eq!(was.as_ref(), Some(agent));
                    }
                    Effect::Queued { conversation, .. } => {
                        on_desk.insert(*conversation);
                    }
                    _ => {}
                }
            }
            // Nothing lost: what entered the desk is on it until completed.
            let desk = s.shard.tenant(T).unwrap().desk();
            let placed: std::collections::HashSet<ConversationId> = desk.placed_conversations().collect();
            prop_assert_eq!(&placed, &on_desk);
            for (c, a) in &holder {
                prop_assert!(
                    matches!(desk.location(*c), desk::Location::Assigned { agent, .. } if agent == *a),
                    "{c} should be with {a}"
                );
            }
        }
    }
}

#[test]
fn positions_are_exact_for_new_arrivals_and_capped_for_follow_ups() {
    let mut s = Sim::new(false);
    // No agent online, no bot: everything waits in support.
    let first = s.msg(&customer(0), "hola");
    for i in 1..3_000 {
        let d = s.msg(&customer(i), "hola");
        assert_eq!(d.position, i as u32, "exact at any depth");
    }
    // A friction message goes ahead of all of them (a higher priority, in claims here).
    let fraud = s.msg(&customer(5_000), "fraude");
    assert_eq!(
        (fraud.position, fraud.queue.unwrap().as_str()),
        (0, "claims")
    );
    // A follow-up from deep in the queue reports the counting cap.
    let deep = s.msg(&customer(2_999), "sigo esperando");
    assert_eq!(deep.reason, Reason::AlreadyQueued);
    assert_eq!(deep.position, desk::MAX_COUNTED_POSITION as u32);
    let front = s.msg(&customer(0), "sigo esperando");
    assert_eq!(
        (front.position, front.conversation),
        (0, first.conversation)
    );
    assert_eq!(s.stats("support").depth, 3_000);
}

#[test]
fn a_restored_tenant_keeps_its_conversations_windows_and_seen_ids() {
    // State saved as JSON, a fresh shard built from the config, the state restored: the
    // window is still open, the follow-up joins the same conversation, a re-delivered
    // message is still a duplicate, and saving again gives the same state.
    let mut s = Sim::new(true);
    s.agent("ana", 1, &["support", "claims"]);
    let first = s
        .ingest("+34612345678", Channel::WhatsApp, "wamid.A", "hola")
        .unwrap()
        .conversation
        .expect("a conversation");
    s.msg_on("+34612345678", Channel::WebChat, "sigo aquí");
    // A person's work: the first conversation is on ana's desk (capacity 1); two returns
    // wait for her.
    let held = s.msg("+34699999999", "quiero una devolución");
    let waits = s.msg("+34688888888", "quiero una devolución");
    let (held, waits) = (held.conversation.unwrap(), waits.conversation.unwrap());
    s.run(Command::PauseAutomation {
        tenant: TenantId::new(T),
        conversation: first,
    })
    .unwrap();
    s.advance(HOUR);

    let (mut fresh, saved) = handover(&mut s);
    assert!(!saved.desk.agents.is_empty() && !saved.desk.placements.is_empty());
    for c in [first, held, waits] {
        assert_eq!(fresh.view(c), s.view(c), "the desk survived: {c:?}");
    }
    assert_eq!(fresh.view(first).agent, Some(AgentId::new("ana")));
    assert_eq!(fresh.view(held).state, ConversationState::Waiting);

    let view = fresh.view(first);
    assert!(view.window_open, "the window survived");
    assert!(view.automation_paused, "so did the automation pause");
    assert_eq!(view.channels, vec![Channel::WhatsApp, Channel::WebChat]);
    let again = fresh
        .ingest("+34612345678", Channel::WhatsApp, "wamid.A", "hola")
        .unwrap();
    assert!(
        again.duplicate,
        "a re-delivered message is still a duplicate"
    );
    let next = fresh.msg("+34612345678", "¿y mi pedido?");
    assert_eq!(next.conversation, Some(first), "the same conversation");
    let other = fresh.msg("+34600000000", "hola");
    let other = other.conversation.expect("a conversation");
    assert!(
        other.0 > 3,
        "new conversations get new ids, not reused ones"
    );
    // The desk goes on working: ana finishes, the longest-waiting return is hers.
    fresh
        .run(Command::Complete {
            tenant: TenantId::new(T),
            agent: AgentId::new("ana"),
            conversation: first,
        })
        .unwrap();
    assert_eq!(fresh.view(held).agent, Some(AgentId::new("ana")));
    assert_eq!(fresh.view(waits).state, ConversationState::Waiting);
}

/// A customer mid-dialogue with the bot stays with it (`WITH_BOT`) while an agent is free,
/// until friction appears, the bot escalates, or the dialogue was idle for `bot_idle_secs`
/// (600 by default) to the millisecond.
#[test]
fn a_conversation_with_the_bot_stays_there_until_friction_escalation_or_idle() {
    let mut s = Sim::new(true);
    let d = s.msg(&customer(1), "What are your opening hours?");
    assert_eq!((d.target, d.reason), (Target::Bot, Reason::SimpleIntent));
    s.agent("ana", 5, &["support", "claims"]);
    // An agent is free now (SLA_OK would take it), but the customer is answering the bot.
    s.advance(599_999);
    let d = s.msg(&customer(1), "el sábado");
    assert_eq!((d.target, d.reason), (Target::Bot, Reason::WithBot));
    assert!(matches!(
        &s.effects[..],
        [Effect::BotMessage {
            reason: Reason::WithBot,
            ..
        }]
    ));
    // Idle for exactly bot_idle_secs: routed afresh, to the free agent.
    s.advance(600_000);
    let d = s.msg(&customer(1), "hola otra vez");
    assert_eq!((d.target, d.reason), (Target::Agent, Reason::SlaOk));

    // Friction ends the dialogue at once.
    let d = s.msg(&customer(2), "opening hours");
    assert_eq!(d.reason, Reason::SimpleIntent);
    let d = s.msg(&customer(2), "quiero una devolución");
    assert_eq!((d.target, d.reason), (Target::Agent, Reason::Friction));

    // So does the bot's escalation.
    let d = s.msg(&customer(3), "opening hours");
    s.run(Command::Escalate {
        tenant: TenantId::new(T),
        conversation: conv(&d),
        queue: Some("support".into()),
        note: "needs a person".into(),
        author: None,
    })
    .unwrap();
    let d = s.msg(&customer(3), "gracias");
    assert_eq!(d.reason, Reason::AssignedAgent);
}
