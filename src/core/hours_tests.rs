//! Business hours per queue, with simulated time (issue 17): closed queues send messages to
//! the bot or the after-hours queue, friction waits with its estimate counted from the
//! opening, and SLA clocks stop while a queue is closed.
use super::tests::{SEC, Sim, T, customer};
use super::*;
use crate::config::Config;
use crate::model::{AgentId, QueueName, TenantId};

const MIN: u64 = 60 * SEC;

/// `support` open 09:00-18:00 Monday to Friday in Madrid (SLA 60 s); `claims` the same hours
/// with `night` as its after-hours queue (always open).
fn config(bot: bool) -> Config {
    Config::from_toml_str(&raw(bot)).expect("valid")
}

fn raw(bot: bool) -> String {
    let bot = if bot { "bot = \"faq-bot\"" } else { "" };
    format!(
        r#"
        [[tenants]]
        id = "{T}"
        default_region = "ES"
        {bot}
        default_queue = "support"
        [[tenants.queues]]
        name = "support"
        sla_target_secs = 60
        max_wait_secs = 3600
        hours = {{ time_zone = "Europe/Madrid", open = ["mon-fri 09:00-18:00"] }}
        [[tenants.queues]]
        name = "claims"
        sla_target_secs = 60
        max_wait_secs = 3600
        after_hours_queue = "night"
        hours = {{ time_zone = "Europe/Madrid", open = ["mon-fri 09:00-18:00"] }}
        [[tenants.queues]]
        name = "night"
        sla_target_secs = 600
        max_wait_secs = 3600
        [[tenants.intents]]
        name = "complaint"
        mode = "human"
        queue = "support"
        keywords = ["reclamación"]
        [[tenants.intents]]
        name = "return"
        mode = "auto"
        queue = "claims"
        keywords = ["devolución"]
        "#
    )
}

/// Tuesday 2027-01-05 at `hh:mm` in Madrid (UTC+1 in winter).
fn tuesday(hh: u64, mm: u64) -> Timestamp {
    // 2027-01-05 00:00 UTC is day 20_823 since the epoch.
    Timestamp((20_823 * 24 * 60 + (hh - 1) * 60 + mm) * MIN)
}

fn sim(bot: bool) -> Sim {
    let mut s = Sim::with(&config(bot));
    s.now = tuesday(22, 0);
    s
}

#[test]
fn at_22_00_a_message_for_a_queue_open_9_to_18_goes_to_the_bot() {
    let mut s = sim(true);
    s.agent("ana", 2, &["support"]);
    let d = s.msg(&customer(1), "hola, una pregunta");
    assert_eq!((d.target, d.reason), (Target::Bot, Reason::OutsideHours));
    assert_eq!(
        d.queue,
        Some(QueueName::new("support")),
        "the closed queue is named"
    );
    // The same at 10:00 the next morning goes to the open queue's agent.
    s.now = Timestamp(tuesday(10, 0).as_millis() + 24 * 60 * MIN);
    let d = s.msg(&customer(2), "hola, otra pregunta");
    assert_eq!((d.target, d.reason), (Target::Agent, Reason::SlaOk));
}

#[test]
fn friction_waits_in_its_closed_queue_its_estimate_counted_to_the_opening() {
    let mut s = sim(true);
    let d = s.msg(&customer(1), "quiero poner una reclamación");
    assert_eq!((d.target, d.reason), (Target::Queue, Reason::Friction));
    let to_nine = tuesday(9, 0).as_millis() + 24 * 60 * MIN - s.now.as_millis();
    assert_eq!(to_nine, 11 * 60 * MIN);
    assert_eq!(
        d.estimated_wait_ms,
        Some(to_nine),
        "nobody online yet: the wait is the time to 09:00"
    );
    // Without a bot, anything else waits the same way, with the reason saying why.
    let mut s = sim(false);
    let d = s.msg(&customer(1), "hola");
    assert_eq!((d.target, d.reason), (Target::Queue, Reason::OutsideHours));
    assert_eq!(d.estimated_wait_ms, Some(to_nine));
}

#[test]
fn a_closed_queue_with_an_after_hours_queue_sends_its_messages_there() {
    let mut s = sim(true);
    s.agent("nora", 1, &["night"]);
    let d = s.msg(&customer(1), "una devolución");
    assert_eq!((d.target, d.reason), (Target::Agent, Reason::OutsideHours));
    assert_eq!(d.queue, Some(QueueName::new("night")));
    assert_eq!(d.agent, Some(AgentId::new("nora")));
}

#[test]
fn sla_clocks_do_not_run_while_the_queue_is_closed() {
    let mut s = sim(true);
    let waiting = s.msg(&customer(1), "reclamación").conversation.unwrap();
    // All night, and 59 s after opening: no breach (59 s of open time).
    s.now = Timestamp(tuesday(9, 0).as_millis() + 24 * 60 * MIN + 59 * SEC);
    s.tick();
    assert!(
        !s.effects
            .iter()
            .any(|e| matches!(e, Effect::SlaBreached { .. })),
        "{:?}",
        s.effects
    );
    // At 61 s of open time it breaches.
    s.now = Timestamp(s.now.as_millis() + 2 * SEC);
    s.tick();
    assert!(
        s.effects
            .iter()
            .any(|e| matches!(e, Effect::SlaBreached { .. }))
    );
    // An agent then takes it: it waited 61 s by the queue's clock, not 11 hours.
    s.agent("ana", 1, &["support"]);
    let waited: Vec<u64> = s
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Assigned {
                conversation,
                waited_ms,
                ..
            } if *conversation == waiting => Some(*waited_ms),
            _ => None,
        })
        .collect();
    assert_eq!(waited, vec![61 * SEC]);
}

/// `config` with `edit` applied to its TOML text.
fn edited(bot: bool, edit: impl Fn(String) -> String) -> crate::config::TenantConfig {
    let text = edit(raw(bot));
    Config::from_toml_str(&text)
        .expect("valid")
        .tenants
        .remove(0)
}

fn reload(s: &mut Sim, config: crate::config::TenantConfig) -> Result<Vec<String>, CoreError> {
    match s.run(Command::ReloadRouting {
        tenant: TenantId::new(T),
        config: Box::new(config),
    })? {
        Reply::Reloaded(changes) => Ok(changes),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reload_changes_the_rules_and_waiting_conversations_keep_their_places() {
    let mut s = sim(true);
    s.now = tuesday(10, 0);
    let first = s.msg(&customer(1), "reclamación").conversation.unwrap();
    let second = s
        .msg(&customer(2), "otra reclamación")
        .conversation
        .unwrap();
    let new = edited(false, |t| {
        t.replacen(
            "sla_target_secs = 60\n        max_wait_secs = 3600\n        hours = {",
            "sla_target_secs = 30\n        max_wait_secs = 3600\n        hours = {",
            1,
        )
        .replacen(
            r#"hours = { time_zone = "Europe/Madrid", open = ["mon-fri 09:00-18:00"] }"#,
            "",
            1,
        ) + r#"
        [[tenants.queues]]
        name = "vip"
        sla_target_secs = 10
        max_wait_secs = 60
        [[tenants.intents]]
        name = "urgent"
        mode = "human"
        queue = "vip"
        priority = 90
        keywords = ["urgente"]
        "#
    });
    let changes = reload(&mut s, new.clone()).unwrap();
    assert!(
        changes.contains(&"bot: faq-bot -> none".to_owned()),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"queue support: sla_target_secs 60 -> 30, hours changed".to_owned()),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"queue vip: added".to_owned()),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"intent urgent: added".to_owned()),
        "{changes:?}"
    );
    // Nothing changed again: nothing to say.
    assert_eq!(reload(&mut s, new.clone()).unwrap(), Vec::<String>::new());

    // The new intent and queue route; the bot is gone.
    let d = s.msg(&customer(3), "es urgente");
    assert_eq!(
        (d.target, d.queue.clone()),
        (Target::Queue, Some(QueueName::new("vip")))
    );
    // The waiting conversations kept their places: the first agent takes the first.
    s.agent("ana", 1, &["support"]);
    assert_eq!(s.assigned_to("ana"), vec![first]);
    s.agent("bob", 1, &["support"]);
    assert_eq!(s.assigned_to("bob"), vec![second]);

    // A file without a queue the tenant has is refused whole.
    let without_night = edited(false, |t| {
        t.replace(
            "[[tenants.queues]]\n        name = \"night\"\n        sla_target_secs = 600\n        max_wait_secs = 3600",
            "",
        )
        .replace("after_hours_queue = \"night\"", "")
    });
    let e = reload(&mut s, without_night).unwrap_err();
    assert!(
        e.to_string().contains("\"night\"") && e.to_string().contains("restart"),
        "{e}"
    );
    assert_eq!(
        s.msg(&customer(4), "urgente").queue,
        Some(QueueName::new("vip"))
    );

    // A takeover rebuilds the tenant from the reloaded rules (the shard keeps them).
    let Ok(Reply::State(saved)) = s.run(Command::SaveState {
        tenant: TenantId::new(T),
    }) else {
        panic!("a state");
    };
    s.run(Command::RestoreState {
        tenant: TenantId::new(T),
        state: Some(saved),
    })
    .expect("restores");
    assert_eq!(
        s.msg(&customer(5), "urgente").queue,
        Some(QueueName::new("vip"))
    );
    assert_eq!(s.view(first).agent, Some(AgentId::new("ana")));
}
