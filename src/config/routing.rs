//! What a reload changes in a tenant's routing rules (intents, queues, the bot): the answer
//! to `ReloadConfig` and SIGHUP lists it, one line a change.
use super::{QueueConfig, TenantConfig};

/// The differences between a tenant's running routing rules and the file's, in words; empty
/// when nothing changed. Queues missing from `new` are reported by [`removed_queues`].
pub fn changes(old: &TenantConfig, new: &TenantConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |what: &str, before: String, after: String| {
        if before != after {
            out.push(format!("{what}: {before} -> {after}"));
        }
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
    field("bot", opt(&old.bot), opt(&new.bot));
    field(
        "bot_idle_secs",
        old.bot_idle_secs.to_string(),
        new.bot_idle_secs.to_string(),
    );
    field(
        "default_queue",
        old.default_queue.clone(),
        new.default_queue.clone(),
    );
    field(
        "escalation_queue",
        opt(&old.escalation_queue),
        opt(&new.escalation_queue),
    );
    field(
        "default_priority",
        old.default_priority.to_string(),
        new.default_priority.to_string(),
    );
    field(
        "escalation_priority",
        old.escalation_priority.to_string(),
        new.escalation_priority.to_string(),
    );
    if old.duplicates != new.duplicates {
        out.push("duplicates: changed".into());
    }
    for q in &new.queues {
        match old.queues.iter().find(|o| o.name == q.name) {
            None => out.push(format!("queue {}: added", q.name)),
            Some(o) if o != q => out.push(format!("queue {}: {}", q.name, queue_changes(o, q))),
            Some(_) => {}
        }
    }
    for i in &new.intents {
        match old.intents.iter().find(|o| o.name == i.name) {
            None => out.push(format!("intent {}: added", i.name)),
            Some(o) if o != i => out.push(format!("intent {}: changed", i.name)),
            Some(_) => {}
        }
    }
    for i in &old.intents {
        if !new.intents.iter().any(|n| n.name == i.name) {
            out.push(format!("intent {}: removed", i.name));
        }
    }
    let order = |c: &TenantConfig| c.intents.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    if out.iter().all(|c| !c.starts_with("intent ")) && order(old) != order(new) {
        out.push("intents: reordered (the first configured wins a tie)".into());
    }
    out
}

/// Queues of `old` that `new` no longer has: a reload cannot remove them (their waiting
/// conversations would have nowhere to go); a restart can.
pub fn removed_queues<'a>(old: &'a TenantConfig, new: &TenantConfig) -> Vec<&'a str> {
    old.queues
        .iter()
        .filter(|o| !new.queues.iter().any(|q| q.name == o.name))
        .map(|o| o.name.as_str())
        .collect()
}

fn queue_changes(old: &QueueConfig, new: &QueueConfig) -> String {
    let mut parts = Vec::new();
    let mut num = |what: &str, a: u64, b: u64| {
        if a != b {
            parts.push(format!("{what} {a} -> {b}"));
        }
    };
    num("sla_target_secs", old.sla_target_secs, new.sla_target_secs);
    num("max_wait_secs", old.max_wait_secs, new.max_wait_secs);
    num(
        "initial_handle_secs",
        old.initial_handle_secs,
        new.initial_handle_secs,
    );
    num(
        "max_wait_priority_boost",
        u64::from(old.max_wait_priority_boost),
        u64::from(new.max_wait_priority_boost),
    );
    if old.fallback != new.fallback {
        parts.push(format!("fallback {:?} -> {:?}", old.fallback, new.fallback));
    }
    if old.hours != new.hours {
        parts.push("hours changed".into());
    }
    if old.after_hours_queue != new.after_hours_queue {
        parts.push(format!(
            "after_hours_queue {:?} -> {:?}",
            old.after_hours_queue, new.after_hours_queue
        ));
    }
    parts.join(", ")
}
