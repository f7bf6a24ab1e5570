//! Identities beyond the phone number, links and profiles, with simulated time (issue 17).
use super::customer::{Field, Identity};
use super::tenant::IdentityRef;
use super::tests::{self, HOUR, SEC, Sim, T, customer};
use super::*;
use crate::model::{AgentId, Channel, ConversationId, CustomerNumber, QueueName, TenantId};

fn visitor_msg(s: &mut Sim, visitor: &str, text: &str) -> Result<Decision, CoreError> {
    s.next_msg += 1;
    let id = format!("web.{}", s.next_msg);
    inbound(s, "", Channel::WebChat, &id, text, |m| {
        m.visitor_id = Some(visitor.into())
    })
}

fn inbound(
    s: &mut Sim,
    customer: &str,
    channel: Channel,
    id: &str,
    text: &str,
    with: impl FnOnce(&mut Inbound),
) -> Result<Decision, CoreError> {
    let mut m = tests::inbound(customer, channel, id, text);
    with(&mut m);
    match s.run(Command::Ingest(m))? {
        Reply::Decision(d) => Ok(d),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn link(s: &mut Sim, a: IdentityRef, b: IdentityRef) -> tenant::LinkView {
    match s.run(Command::Link {
        tenant: TenantId::new(T),
        a,
        b,
        source: "web-chat form".into(),
        actor: "bot".into(),
        reason: "the visitor gave their number".into(),
    }) {
        Ok(Reply::Linked(v)) => v,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn phone(i: u64) -> IdentityRef {
    IdentityRef::Phone(customer(i))
}

fn visitor(v: &str) -> IdentityRef {
    IdentityRef::Visitor(v.into())
}

fn texts(v: &ConversationView) -> Vec<&str> {
    v.context.iter().map(|m| m.text()).collect()
}

#[test]
fn a_web_chat_visitor_without_a_phone_is_routed_and_whatsapp_needs_one() {
    let mut s = Sim::new(true);
    let first = visitor_msg(&mut s, "v-81f2", "hola, una pregunta").unwrap();
    let id = first.conversation.expect("a conversation");
    assert_ne!(first.target, Target::None);
    let again = visitor_msg(&mut s, "v-81f2", "sigo aquí").unwrap();
    assert_eq!(
        again.conversation,
        Some(id),
        "the same visitor, the same conversation"
    );
    let v = s.view(id);
    assert_eq!(v.customer, "", "no phone");
    assert_eq!(v.identities, vec![Identity::Visitor("v-81f2".into())]);
    assert!(!v.window_open, "only a WhatsApp message opens the window");
    assert_eq!(v.channels, vec![Channel::WebChat]);

    // By e-mail (compared lower-cased).
    let by_mail = |s: &mut Sim, mail: &str, n: &str| {
        inbound(s, "", Channel::WebChat, n, "hola", |m| {
            m.email = Some(mail.into())
        })
    };
    let a = by_mail(&mut s, "Ana@Example.com", "m1")
        .unwrap()
        .conversation;
    let b = by_mail(&mut s, "ana@example.com", "m2")
        .unwrap()
        .conversation;
    assert_eq!(a, b);
    assert_ne!(a, Some(id));

    // WhatsApp without the phone, or nobody at all: refused, saying what to send.
    let e = inbound(&mut s, "", Channel::WhatsApp, "w1", "hola", |m| {
        m.visitor_id = Some("v-1".into())
    })
    .unwrap_err();
    assert!(
        matches!(&e, CoreError::InvalidArgument { field: "customer", problem } if problem.contains("phone number")),
        "{e}"
    );
    let e = inbound(&mut s, "", Channel::WebChat, "w2", "hola", |_| {}).unwrap_err();
    assert!(e.to_string().contains("email and visitor_id"), "{e}");
    // A bad e-mail beside a good phone is refused too, and nothing is learnt.
    let e = inbound(&mut s, &customer(7), Channel::WhatsApp, "w3", "hola", |m| {
        m.email = Some("not-an-address".into())
    })
    .unwrap_err();
    assert!(
        matches!(e, CoreError::InvalidArgument { field: "email", .. }),
        "{e}"
    );
    assert!(matches!(
        s.run(Command::GetCustomer {
            tenant: TenantId::new(T),
            identity: phone(7),
        }),
        Err(CoreError::NotFound { .. })
    ));
    let e = visitor_msg(&mut s, &"x".repeat(200), "hola").unwrap_err();
    assert!(matches!(
        e,
        CoreError::InvalidArgument {
            field: "visitor_id",
            ..
        }
    ));
}

#[test]
fn linking_a_visitor_to_a_phone_customer_gives_one_conversation_in_time_order_and_one_agent() {
    let mut s = Sim::new(true);
    s.agent("ana", 2, &["claims"]);
    // No agent on support: the visitor's question goes to the bot.
    let web = visitor_msg(&mut s, "v-81f2", "quiero devolver un pedido").unwrap();
    assert_eq!(web.target, Target::Bot);
    let web = web.conversation.unwrap();
    s.advance(SEC);
    let wa = s.msg(&customer(1), "es por una devolución");
    assert_eq!(
        (wa.target, wa.agent.clone()),
        (Target::Agent, Some(AgentId::new("ana")))
    );
    let wa = wa.conversation.unwrap();
    s.advance(SEC);
    visitor_msg(&mut s, "v-81f2", "el pedido 8812").unwrap();
    assert_ne!(web, wa);

    s.advance(SEC);
    let linked = link(&mut s, visitor("v-81f2"), phone(1));
    assert_eq!(
        linked.conversation, wa,
        "the conversation with the agent is kept"
    );
    assert_eq!(linked.merged, Some(web));
    assert_eq!(linked.agent, Some(AgentId::new("ana")));
    assert_eq!(linked.released_agent, None);

    let v = s.view(wa);
    assert_eq!(
        texts(&v),
        [
            "quiero devolver un pedido",
            "es por una devolución",
            "el pedido 8812"
        ],
        "both histories, in time order"
    );
    assert_eq!(
        v.identities,
        vec![
            Identity::Phone(CustomerNumber::from_valid_e164(&customer(1))),
            Identity::Visitor("v-81f2".into())
        ]
    );
    assert_eq!(v.channels, vec![Channel::WhatsApp, Channel::WebChat]);
    assert!(v.window_open, "the phone's window stays open");
    assert!(matches!(
        s.run(Command::GetConversation {
            tenant: TenantId::new(T),
            conversation: web,
        }),
        Err(CoreError::NotFound { .. })
    ));

    // The visitor's next message is a follow-up for ana.
    let next = visitor_msg(&mut s, "v-81f2", "¿alguna novedad?").unwrap();
    assert_eq!(next.conversation, Some(wa));
    assert_eq!(
        (next.target, next.reason),
        (Target::Agent, Reason::AssignedAgent)
    );

    // Linking again changes nothing; the audit has it, masked.
    let again = link(&mut s, phone(1), visitor("v-81f2"));
    assert_eq!((again.conversation, again.merged), (wa, None));
    let Ok(Reply::Audit(audit)) = s.run(Command::ListAudit {
        tenant: TenantId::new(T),
        limit: 10,
    }) else {
        panic!("an audit");
    };
    let entry = audit
        .iter()
        .find(|e| e.action == "customer_linked")
        .expect("the link is audited");
    assert_eq!(entry.target, "visitor:…81f2 + phone:…0001");
    assert!(entry.reason.contains("web-chat form"), "{entry:?}");
    assert!(
        !format!("{audit:?}").contains(&customer(1)),
        "no full number"
    );
}

#[test]
fn when_both_have_an_agent_the_most_recently_active_keeps_it_and_the_other_is_told() {
    let mut s = Sim::new(true);
    s.agent("ana", 1, &["claims"]);
    s.agent("bob", 1, &["claims"]);
    let wa = s.msg(&customer(1), "devolución");
    let web = visitor_msg(&mut s, "v-9", "una devolución").unwrap();
    assert_eq!(wa.agent, Some(AgentId::new("ana")));
    assert_eq!(web.agent, Some(AgentId::new("bob")));
    // Someone else waits for an agent.
    let waiting = s.msg(&customer(2), "fraude").conversation.unwrap();
    s.advance(SEC);
    visitor_msg(&mut s, "v-9", "¿me oyes?").unwrap();

    let linked = link(&mut s, phone(1), visitor("v-9"));
    assert_eq!(linked.conversation, web.conversation.unwrap());
    assert_eq!(linked.agent, Some(AgentId::new("bob")));
    assert_eq!(linked.released_agent, Some(AgentId::new("ana")));
    assert!(s.effects.iter().any(|e| matches!(e,
        Effect::Unassigned { agent, conversation, reason: Reason::Linked, .. }
            if agent.as_str() == "ana" && Some(*conversation) == wa.conversation)));
    assert_eq!(
        s.assigned_to("ana"),
        vec![waiting],
        "ana's freed capacity takes the next waiting conversation"
    );
    // A WhatsApp follow-up from the phone goes to bob now.
    let next = s.msg(&customer(1), "hola?");
    assert_eq!(next.agent, Some(AgentId::new("bob")));
}

fn update(
    s: &mut Sim,
    who: IdentityRef,
    name: &str,
    source: &str,
    at: u64,
) -> tenant::CustomerView {
    match s.run(Command::UpdateProfile {
        tenant: TenantId::new(T),
        identity: who,
        values: vec![(Field::Name, name.into())],
        source: source.into(),
        at: Some(Timestamp(at)),
    }) {
        Ok(Reply::Customer(v)) => v,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[test]
fn conflicting_names_keep_the_most_recent_to_the_millisecond_and_list_the_conflict() {
    let mut s = Sim::new(true);
    let t0 = s.now.as_millis();
    inbound(&mut s, &customer(1), Channel::WhatsApp, "w1", "hola", |m| {
        m.profile_name = Some("María".into())
    })
    .unwrap();
    s.advance(SEC);
    // The CRM's name, true one millisecond after WhatsApp's: it wins.
    let v = update(&mut s, phone(1), "María José Pérez", "crm", t0 + 1);
    let name = v.profile.name.clone().unwrap();
    assert_eq!((&*name.value, &*name.source), ("María José Pérez", "crm"));
    // The ERP's, one millisecond older than WhatsApp's: kept as a conflict only.
    let v = update(&mut s, phone(1), "Mery Pérez", "erp", t0 - 1);
    assert_eq!(&*v.profile.name.unwrap().value, "María José Pérez");

    let Ok(Reply::Conflicts(list)) = s.run(Command::ListConflicts {
        tenant: TenantId::new(T),
        limit: 10,
    }) else {
        panic!("conflicts");
    };
    let seen: Vec<(&str, &str, &str, &str)> = list
        .iter()
        .map(|(c, _)| {
            (
                &*c.kept.value,
                &*c.kept.source,
                &*c.other.value,
                &*c.other.source,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("María José Pérez", "crm", "Mery Pérez", "erp"),
            ("María José Pérez", "crm", "María", "whatsapp"),
        ],
        "newest first"
    );
    assert_eq!(list[0].0.field, Field::Name);
    assert_eq!(
        list[0].1,
        vec![Identity::Phone(CustomerNumber::from_valid_e164(&customer(
            1
        )))]
    );
    // A time in the future, or an empty source: refused, nothing changed.
    let future = s.run(Command::UpdateProfile {
        tenant: TenantId::new(T),
        identity: phone(1),
        values: vec![(Field::Name, "X".into())],
        source: "crm".into(),
        at: Some(Timestamp(s.now.as_millis() + 1)),
    });
    assert!(matches!(
        future,
        Err(CoreError::InvalidArgument { field: "at_ms", .. })
    ));
    // A bad e-mail value is refused with the reason.
    let mail = s.run(Command::UpdateProfile {
        tenant: TenantId::new(T),
        identity: phone(1),
        values: vec![(Field::Email, "not-an-address".into())],
        source: "crm".into(),
        at: None,
    });
    assert!(matches!(
        mail,
        Err(CoreError::InvalidArgument { field: "email", .. })
    ));
}

#[test]
fn links_profiles_conflicts_and_each_numbers_window_survive_a_handover() {
    let mut s = Sim::new(true);
    s.msg(&customer(1), "hola");
    s.advance(HOUR);
    // A second number of the same person, on web chat: it has no window of its own.
    let b = inbound(
        &mut s,
        &customer(2),
        Channel::WebChat,
        "web-1",
        "soy yo otra vez",
        |m| m.email = Some("ana@example.com".into()),
    )
    .unwrap()
    .conversation
    .unwrap();
    let now = s.now.as_millis();
    update(
        &mut s,
        IdentityRef::Email("ana@example.com".into()),
        "Ana",
        "crm",
        now,
    );
    update(&mut s, phone(1), "Ana María", "erp", now);
    let linked = link(&mut s, phone(2), phone(1));
    let keep = linked.conversation;
    assert_eq!(
        keep, b,
        "both with the bot: the most recently active conversation keeps the customer"
    );
    // The merge put the two sources' names side by side: one conflict more.
    let conflicts = |s: &mut Sim| match s.run(Command::ListConflicts {
        tenant: TenantId::new(T),
        limit: 10,
    }) {
        Ok(Reply::Conflicts(l)) => l.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(conflicts(&mut s), 1);

    let (mut fresh, _) = tests::handover(&mut s);
    assert_eq!(fresh.view(keep), s.view(keep));
    assert_eq!(conflicts(&mut fresh), 1);
    let customer_of = |s: &mut Sim, who| match s.run(Command::GetCustomer {
        tenant: TenantId::new(T),
        identity: who,
    }) {
        Ok(Reply::Customer(v)) => v,
        other => panic!("{other:?}"),
    };
    let by_mail = customer_of(&mut fresh, IdentityRef::Email("ANA@example.com".into()));
    assert_eq!(by_mail.conversation, keep);
    assert_eq!(by_mail.identities.len(), 3, "{by_mail:?}");
    assert_eq!(by_mail, customer_of(&mut s, phone(2)));
    // Each number keeps its own window: only the first one's WhatsApp message opened one.
    let t = fresh.shard.tenant(T).unwrap();
    assert!(t.window_open_for(&customer(1), fresh.now));
    assert!(!t.window_open_for(&customer(2), fresh.now));
    // A WhatsApp message from the second number opens its window and reaches the customer.
    let d = fresh.msg(&customer(2), "hola desde el otro");
    assert_eq!(d.conversation, Some(keep));
    let t = fresh.shard.tenant(T).unwrap();
    assert!(t.window_open_for(&customer(2), fresh.now));
    assert!(matches!(
        customer_of_err(&mut fresh, IdentityRef::Visitor("nobody".into())),
        CoreError::NotFound {
            what: "customer",
            ..
        }
    ));
}

fn customer_of_err(s: &mut Sim, who: IdentityRef) -> CoreError {
    s.run(Command::GetCustomer {
        tenant: TenantId::new(T),
        identity: who,
    })
    .unwrap_err()
}

#[test]
fn retention_forgets_a_customer_with_all_their_identities() {
    let mut s = Sim::new(true);
    let id = visitor_msg(&mut s, "v-1", "hola")
        .unwrap()
        .conversation
        .unwrap();
    link(
        &mut s,
        visitor("v-1"),
        IdentityRef::Email("ana@example.com".into()),
    );
    s.advance(4 * 24 * HOUR);
    s.tick();
    assert!(matches!(
        customer_of_err(&mut s, IdentityRef::Email("ana@example.com".into())),
        CoreError::NotFound { .. }
    ));
    let again = visitor_msg(&mut s, "v-1", "vuelvo")
        .unwrap()
        .conversation
        .unwrap();
    assert_ne!(again, id, "a new conversation");
}

#[test]
fn alike_names_from_webhooks_and_the_crm_are_suggested_as_duplicates_never_merged() {
    let mut s = Sim::new(true);
    let named = |s: &mut Sim, n: u64, name: &str| {
        let id = format!("w{n}");
        inbound(s, &customer(n), Channel::WhatsApp, &id, "hola", |m| {
            m.profile_name = Some(name.into())
        })
        .unwrap()
        .conversation
        .unwrap()
    };
    let a = named(&mut s, 1, "María José Pérez");
    let b = named(&mut s, 2, "Maria Jose Perez");
    named(&mut s, 3, "María Pérez");
    named(&mut s, 4, "Mario Gómez");
    let suggest = |s: &mut Sim, who: Option<IdentityRef>| match s.run(Command::SuggestDuplicates {
        tenant: TenantId::new(T),
        identity: who,
        limit: 10,
    }) {
        Ok(Reply::Duplicates(list)) => list,
        other => panic!("{other:?}"),
    };
    let all = suggest(&mut s, None);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!((all[0].conversation, all[0].of), (a, b));
    assert_eq!(all[0].similarity, 1.0);
    assert_eq!(all[0].name.as_deref(), Some("María José Pérez"));
    assert!(
        suggest(&mut s, Some(phone(3))).is_empty(),
        "María Pérez has no duplicate"
    );
    assert!(
        suggest(&mut s, Some(phone(4))).is_empty(),
        "nor has Mario Gómez"
    );
    let like_b = suggest(&mut s, Some(phone(2)));
    assert_eq!(
        like_b.iter().map(|x| x.conversation).collect::<Vec<_>>(),
        [a]
    );
    // Nothing was merged; once linked, the pair is no longer suggested.
    assert_eq!(s.view(a).identities.len(), 1);
    link(&mut s, phone(1), phone(2));
    assert!(suggest(&mut s, None).is_empty());
}

fn reply(
    s: &mut Sim,
    to: &str,
    key: &str,
    thread: Option<(ConversationId, &str)>,
) -> Result<Reply, CoreError> {
    s.run(Command::Send(Outbound {
        tenant: TenantId::new(T),
        from: "N".into(),
        to: to.into(),
        category: crate::config::Category::Session,
        content: format!("reply {key}"),
        template: None,
        priority: None,
        idempotency_key: key.into(),
        valid_for_ms: None,
        tag: None,
        send_at: None,
        thread: thread.map(|(conversation, author)| Thread {
            conversation,
            author: author.into(),
        }),
    }))
}

#[test]
fn replies_notes_and_transfers_join_one_timeline_with_their_authors() {
    let mut s = Sim::new(true);
    let c = s
        .msg(&customer(1), "hola, una pregunta")
        .conversation
        .unwrap();
    s.advance(SEC);
    reply(&mut s, &customer(1), "b1", Some((c, "bot:faq-bot"))).unwrap();
    s.advance(SEC);
    s.run(Command::Escalate {
        tenant: TenantId::new(T),
        conversation: c,
        queue: Some("claims".into()),
        note: "wants a refund".into(),
        author: Some("bot:faq-bot".into()),
    })
    .unwrap();
    s.agent("ana", 1, &["claims"]);
    assert_eq!(s.assigned_to("ana"), vec![c]);
    s.advance(SEC);
    reply(&mut s, &customer(1), "a1", Some((c, "agent:ana"))).unwrap();
    // A retry of the same send is the same reply, once.
    reply(&mut s, &customer(1), "a1", Some((c, "agent:ana"))).unwrap();
    s.advance(SEC);
    s.run(Command::Transfer {
        tenant: TenantId::new(T),
        agent: AgentId::new("ana"),
        conversation: c,
        to: TransferTarget::Queue(QueueName::new("supervisors")),
    })
    .unwrap();
    let timeline: Vec<(Direction, String, Option<String>)> = s
        .view(c)
        .context
        .iter()
        .map(|m| {
            (
                m.direction,
                m.text().to_string(),
                m.author().map(|a| a.to_string()),
            )
        })
        .collect();
    let who = |a: &str| Some(a.to_owned());
    // The test config keeps 3 messages of context: the last three, in order.
    assert_eq!(
        timeline,
        [
            (Direction::Note, "wants a refund".into(), who("bot:faq-bot")),
            (Direction::Outbound, "reply a1".into(), who("agent:ana")),
            (
                Direction::Note,
                "transferred to queue supervisors".into(),
                who("agent:ana")
            ),
        ]
    );
    // A reply naming another customer's conversation is refused, and nothing joins.
    let other = s.msg(&customer(2), "hola").conversation.unwrap();
    let e = reply(&mut s, &customer(1), "x", Some((other, "agent:ana"))).unwrap_err();
    assert!(
        matches!(
            e,
            CoreError::InvalidArgument {
                field: "conversation_id",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(s.view(other).context.len(), 1);
}

#[test]
fn bot_containment_is_counted_when_a_conversation_is_forgotten() {
    let mut s = Sim::new(true);
    // Answered by the bot only; answered by the bot, then taken by a person.
    s.msg(&customer(1), "¿horario?");
    let handed = s.msg(&customer(2), "¿horario?").conversation.unwrap();
    s.run(Command::Escalate {
        tenant: TenantId::new(T),
        conversation: handed,
        queue: None,
        note: String::new(),
        author: Some("bot:faq-bot".into()),
    })
    .unwrap();
    s.agent("ana", 1, &["supervisors"]);
    s.complete("ana", handed).unwrap();
    // A third never met the bot: not counted.
    s.agent("bob", 1, &["claims"]);
    let human = s.msg(&customer(3), "fraude").conversation.unwrap();
    s.complete("bob", human).unwrap();
    s.advance(4 * 24 * HOUR);
    s.tick();
    // One effect for the sweep, with both counts.
    let ended: Vec<(u64, u64)> = s
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::BotConversationsEnded {
                contained,
                handed_over,
                ..
            } => Some((*contained, *handed_over)),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [(1, 1)]);
}

#[test]
fn the_profile_name_sent_with_every_message_moves_on_without_conflicts() {
    let mut s = Sim::new(true);
    let send = |s: &mut Sim, id: &str, name: &str| {
        inbound(s, &customer(1), Channel::WhatsApp, id, "hola", |m| {
            m.profile_name = Some(name.into())
        })
        .unwrap();
    };
    send(&mut s, "w1", "Ana");
    s.advance(SEC);
    send(&mut s, "w2", "Ana");
    let get = |s: &mut Sim| match s.run(Command::GetCustomer {
        tenant: TenantId::new(T),
        identity: phone(1),
    }) {
        Ok(Reply::Customer(v)) => v.profile.name.unwrap(),
        other => panic!("{other:?}"),
    };
    let name = get(&mut s);
    assert_eq!(
        (&*name.value, name.at),
        ("Ana", s.now),
        "the same name, its time moved on"
    );
    s.advance(SEC);
    send(&mut s, "w3", "Ana María");
    assert_eq!(&*get(&mut s).value, "Ana María");
    let Ok(Reply::Conflicts(list)) = s.run(Command::ListConflicts {
        tenant: TenantId::new(T),
        limit: 10,
    }) else {
        panic!("conflicts");
    };
    assert!(
        list.is_empty(),
        "one source changing its value is no conflict: {list:?}"
    );
}
