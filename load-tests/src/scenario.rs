//! Scenario files (`load-tests/scenarios/*.toml`): what the simulated customers do. Checked on
//! load: a bad file is refused with the field that is wrong.
//!
//! A scenario has up to four parts, each optional:
//! - `[inbound]`, the customers: their rate over time, how many distinct customers write, the
//!   share of follow-ups in an open conversation and of web chat, and the texts with their
//!   weights ([`Messages`] turns it into the same message stream every run);
//! - `[agents]`, the contact center: how many agents, their capacity and queues, how long
//!   they take to handle a conversation (they complete it from their stream);
//! - `[[outbound]]`, the business services: sends of one category each, at a rate, to a pool
//!   of customers;
//! - `[dirty]`, bad input mixed in: bad numbers, oversize texts, unknown tenants (and, on
//!   Kafka, records that are not protobuf at all).
use std::time::Duration;

use serde::Deserialize;

use crate::schedule::Rate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// How long load is offered ("60s", "5m").
    pub duration: String,
    /// Left out of the results.
    #[serde(default = "default_warmup")]
    pub warmup: String,
    /// The server config the harness starts its embedded server with (a path relative to the
    /// scenario file); default: the service's embedded demo config.
    #[serde(default)]
    pub server_config: Option<String>,
    #[serde(default)]
    pub inbound: Option<InboundLoad>,
    #[serde(default)]
    pub agents: Option<AgentsSpec>,
    #[serde(default)]
    pub outbound: Vec<OutboundSpec>,
    #[serde(default)]
    pub dirty: Option<DirtySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSpec {
    pub count: u32,
    /// Conversations each agent holds at once.
    pub capacity: u32,
    pub queues: Vec<String>,
    /// Mean handle time of a conversation ("20s"); each one takes 0.5 to 1.5 times it.
    pub handle: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    /// `marketing`, `utility`, `authentication` or `session` (free-form, window only).
    pub category: String,
    pub rate: RateSpec,
    /// Distinct customers sent to. Templates go to customers who never wrote (each one new
    /// to the messaging limit); session messages reply to the customers who wrote (the n-th
    /// to the writer of the n-th inbound message; without `[inbound]`, to this many of them).
    pub customers: u64,
    /// `low`, `normal` or `high`; default: by category (the tenant's `low_priority`).
    #[serde(default)]
    pub priority: Option<String>,
    /// The sending business numbers (as configured on the server), taking turns.
    #[serde(default = "default_from")]
    pub from: Vec<String>,
    #[serde(default = "default_content")]
    pub content: String,
}

fn default_from() -> Vec<String> {
    vec!["+34910000001".into()]
}

fn default_content() -> String {
    "promo_black_friday".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirtySpec {
    pub rate: RateSpec,
    /// Size of an oversize text, in bytes (above the server's `limits.max_text_bytes`).
    #[serde(default = "default_oversize")]
    pub oversize_bytes: usize,
}

fn default_oversize() -> usize {
    5_000
}
fn default_tenant() -> String {
    "demo".into()
}

fn default_warmup() -> String {
    "10s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundLoad {
    pub rate: RateSpec,
    /// Distinct customers (E.164 numbers are made up from their index).
    pub customers: u64,
    /// Share of messages that follow up a recent customer's conversation (0 to 1).
    #[serde(default)]
    pub follow_up: f64,
    /// Share of messages on web chat (the rest on WhatsApp).
    #[serde(default)]
    pub web_chat: f64,
    pub texts: Vec<WeightedText>,
}

impl InboundLoad {
    /// The load of a run given by flags: every message the same order-status question, from
    /// `customers` customers on WhatsApp, none a follow-up.
    pub fn order_status(customers: u64) -> Self {
        Self {
            rate: RateSpec::Constant { per_sec: 0.0 },
            customers,
            follow_up: 0.0,
            web_chat: 0.0,
            texts: vec![WeightedText {
                text: "hola, ¿dónde está mi pedido?".into(),
                weight: 1,
            }],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum RateSpec {
    Constant { per_sec: f64 },
    Step { from: f64, to: f64, at: String },
    Ramp { from: f64, to: f64, over: String },
    Stages { stages: Vec<StageSpec> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub length: String,
    pub per_sec: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedText {
    pub text: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A scenario that cannot be used, and why.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("scenario field `{field}` {problem}")]
pub struct ScenarioError {
    pub field: String,
    pub problem: String,
}

fn bad(field: &str, problem: impl Into<String>) -> ScenarioError {
    ScenarioError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn duration(field: &str, value: &str) -> Result<Duration, ScenarioError> {
    humantime::parse_duration(value).map_err(|e| {
        bad(
            field,
            format!("is {value:?}, not a duration like \"30s\": {e}"),
        )
    })
}

/// A checked scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub tenant: String,
    pub duration: Duration,
    pub warmup: Duration,
    pub server_config: Option<String>,
    /// The customers' rate and messages.
    pub inbound: Option<(Rate, InboundLoad)>,
    pub agents: Option<Agents>,
    pub outbound: Vec<Outbound>,
    pub dirty: Option<Dirty>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agents {
    pub count: u32,
    pub capacity: u32,
    pub queues: Vec<String>,
    pub handle: Duration,
}

/// Send priority, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Priority {
    ByCategory,
    Low,
    Normal,
    High,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// `marketing`, `utility`, `authentication` or `session`.
    pub category: String,
    pub priority: Priority,
    pub rate: Rate,
    pub customers: u64,
    pub from: Vec<String>,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dirty {
    pub rate: Rate,
    pub oversize_bytes: usize,
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Plan, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|r| format!("at bytes {}..{}", r.start, r.end))
                .unwrap_or_default();
            bad(&field, e.message().to_owned())
        })?;
        s.check()
    }

    fn check(self) -> Result<Plan, ScenarioError> {
        let d = duration("duration", &self.duration)?;
        let warmup = duration("warmup", &self.warmup)?;
        if warmup >= d {
            return Err(bad(
                "warmup",
                "is not shorter than duration: nothing would be measured",
            ));
        }
        let mut plan = Plan {
            name: self.name,
            tenant: self.tenant,
            duration: d,
            warmup,
            server_config: self.server_config,
            inbound: None,
            agents: None,
            outbound: Vec::new(),
            dirty: None,
        };
        if let Some(i) = self.inbound {
            let rate = rate("inbound.rate", &i.rate)?;
            if i.customers == 0 {
                return Err(bad(
                    "inbound.customers",
                    "is 0; at least one customer writes",
                ));
            }
            for (field, share) in [
                ("inbound.follow_up", i.follow_up),
                ("inbound.web_chat", i.web_chat),
            ] {
                if !(0.0..=1.0).contains(&share) {
                    return Err(bad(
                        field,
                        format!("is {share}; a share is between 0 and 1"),
                    ));
                }
            }
            if i.texts.iter().map(|t| u64::from(t.weight)).sum::<u64>() == 0 {
                return Err(bad("inbound.texts", "has no text with a weight above 0"));
            }
            plan.inbound = Some((rate, i));
        }
        if let Some(a) = self.agents {
            if a.count == 0 || a.capacity == 0 || a.queues.is_empty() {
                return Err(bad(
                    "agents",
                    "needs count and capacity above 0 and at least one queue (leave the \
                     section out for no agents)",
                ));
            }
            plan.agents = Some(Agents {
                handle: duration("agents.handle", &a.handle)?,
                count: a.count,
                capacity: a.capacity,
                queues: a.queues,
            });
        }
        for (n, o) in self.outbound.into_iter().enumerate() {
            let field = |f: &str| format!("outbound[{n}].{f}");
            if !["marketing", "utility", "authentication", "session"].contains(&o.category.as_str())
            {
                return Err(bad(
                    &field("category"),
                    format!(
                        "is {:?}; use marketing, utility, authentication or session",
                        o.category
                    ),
                ));
            }
            let priority = match o.priority.as_deref() {
                None => Priority::ByCategory,
                Some("low") => Priority::Low,
                Some("normal") => Priority::Normal,
                Some("high") => Priority::High,
                Some(other) => {
                    return Err(bad(
                        &field("priority"),
                        format!("is {other:?}; use low, normal or high"),
                    ));
                }
            };
            if o.from.is_empty() {
                return Err(bad(
                    &field("from"),
                    "is empty; name at least one business number",
                ));
            }
            if o.customers == 0 {
                return Err(bad(
                    &field("customers"),
                    "is 0; send to at least one customer",
                ));
            }
            plan.outbound.push(Outbound {
                rate: rate(&field("rate"), &o.rate)?,
                category: o.category,
                priority,
                customers: o.customers,
                from: o.from,
                content: o.content,
            });
        }
        if let Some(dirty) = self.dirty {
            plan.dirty = Some(Dirty {
                rate: rate("dirty.rate", &dirty.rate)?,
                oversize_bytes: dirty.oversize_bytes,
            });
        }
        if plan.inbound.is_none() && plan.outbound.is_empty() && plan.dirty.is_none() {
            return Err(bad(
                "inbound",
                "is missing, and so are outbound and dirty: the scenario offers no load",
            ));
        }
        Ok(plan)
    }
}

/// A rate from its spec; `field` names it in errors.
fn rate(field: &str, spec: &RateSpec) -> Result<Rate, ScenarioError> {
    let positive = |f: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(bad(
                &format!("{field}.{f}"),
                format!("is {v}; use a rate of 0 or more per second"),
            ))
        }
    };
    Ok(match spec {
        RateSpec::Constant { per_sec } => Rate::Constant {
            per_sec: positive("per_sec", *per_sec)?,
        },
        RateSpec::Step { from, to, at } => Rate::Step {
            from: positive("from", *from)?,
            to: positive("to", *to)?,
            at: duration(&format!("{field}.at"), at)?,
        },
        RateSpec::Ramp { from, to, over } => Rate::Ramp {
            from: positive("from", *from)?,
            to: positive("to", *to)?,
            over: duration(&format!("{field}.over"), over)?,
        },
        RateSpec::Stages { stages } => Rate::Stages(
            stages
                .iter()
                .map(|s| {
                    Ok((
                        duration(&format!("{field}.stages.length"), &s.length)?,
                        positive("stages.per_sec", s.per_sec)?,
                    ))
                })
                .collect::<Result<_, ScenarioError>>()?,
        ),
    })
}

/// One simulated inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub customer: String,
    pub web_chat: bool,
    pub text: String,
    pub follow_up: bool,
}

/// The n-th message of a scenario, the same every run (a seeded SplitMix64 per message).
pub struct Messages {
    load: InboundLoad,
    seed: u64,
    total_weight: u64,
}

impl Messages {
    pub fn new(load: &InboundLoad, seed: u64) -> Self {
        let total_weight = load.texts.iter().map(|t| u64::from(t.weight)).sum();
        Self {
            load: load.clone(),
            seed,
            total_weight,
        }
    }

    /// The random draws of message `n` (SplitMix64 seeded by the scenario's seed and `n`).
    fn draws(&self, n: u64) -> impl FnMut() -> u64 {
        let mut state = self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    /// Message `n`'s first two draws: whether it follows up, and then which earlier message
    /// (1 to 100 back) or which customer.
    fn origin(&self, n: u64, next: &mut impl FnMut() -> u64) -> Result<u64, u64> {
        let follow_up = n > 0 && unit(next()) < self.load.follow_up;
        let pick = next();
        if follow_up {
            Err(n - 1 - pick % n.min(100))
        } else {
            Ok(pick % self.load.customers)
        }
    }

    /// The customer who wrote message `n` (following follow-ups back, without recursion).
    fn customer_of(&self, mut n: u64) -> u64 {
        loop {
            match self.origin(n, &mut self.draws(n)) {
                Ok(customer) => return customer,
                Err(earlier) => n = earlier,
            }
        }
    }

    pub fn nth(&self, n: u64) -> Message {
        let mut next = self.draws(n);
        let (customer, follow_up) = match self.origin(n, &mut next) {
            Ok(customer) => (customer, false),
            Err(earlier) => (self.customer_of(earlier), true),
        };
        let web_chat = unit(next()) < self.load.web_chat;
        let mut pick = next() % self.total_weight;
        let text = self
            .load
            .texts
            .iter()
            .find(|t| {
                let hit = pick < u64::from(t.weight);
                pick = pick.saturating_sub(u64::from(t.weight));
                hit
            })
            .map(|t| t.text.clone())
            .expect("the weights add up to total_weight");
        Message {
            customer: format!("+3461{:07}", customer % 10_000_000),
            web_chat,
            text,
            follow_up,
        }
    }
}

impl Outbound {
    /// The customer the `n`-th send goes to: templates to customers who never wrote
    /// (`+3462…`), one after the other, so each one is new to the messaging limit until the
    /// pool comes round; session messages to the inbound customers (`+3461…`).
    pub fn customer(&self, n: u64) -> String {
        let i = (n % self.customers) % 10_000_000;
        if self.category == "session" {
            format!("+3461{i:07}")
        } else {
            format!("+3462{i:07}")
        }
    }
}

/// What is wrong with a dirty record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flaw {
    BadNumber,
    OversizeText,
    UnknownTenant,
    NoCustomer,
    /// Kafka only: a record that is not protobuf at all.
    NotProtobuf,
}

impl Flaw {
    pub fn name(self) -> &'static str {
        match self {
            Flaw::BadNumber => "bad number",
            Flaw::OversizeText => "oversize text",
            Flaw::UnknownTenant => "unknown tenant",
            Flaw::NoCustomer => "no customer",
            Flaw::NotProtobuf => "not protobuf",
        }
    }
}

/// One bad inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct DirtyMessage {
    pub flaw: Flaw,
    pub tenant: String,
    pub customer: String,
    pub text: String,
}

impl Dirty {
    /// The `n`-th bad message for `tenant`: the flaws take turns (`NotProtobuf` only when
    /// `raw_bytes`, i.e. on Kafka, where a record can be anything).
    pub fn nth(&self, n: u64, tenant: &str, raw_bytes: bool) -> DirtyMessage {
        let flaws: &[Flaw] = if raw_bytes {
            &[
                Flaw::BadNumber,
                Flaw::OversizeText,
                Flaw::UnknownTenant,
                Flaw::NoCustomer,
                Flaw::NotProtobuf,
            ]
        } else {
            &[
                Flaw::BadNumber,
                Flaw::OversizeText,
                Flaw::UnknownTenant,
                Flaw::NoCustomer,
            ]
        };
        let flaw = flaws[(n % flaws.len() as u64) as usize];
        let mut m = DirtyMessage {
            flaw,
            tenant: tenant.to_owned(),
            customer: format!("+3463{:07}", n % 10_000_000),
            text: "hola".to_owned(),
        };
        match flaw {
            Flaw::BadNumber => m.customer = format!("12ab{n}"),
            Flaw::OversizeText => m.text = "x".repeat(self.oversize_bytes),
            Flaw::UnknownTenant => m.tenant = "no-such-tenant".to_owned(),
            Flaw::NoCustomer => m.customer.clear(),
            Flaw::NotProtobuf => {}
        }
        m
    }
}

/// A draw as a number in [0, 1).
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady() -> Plan {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/steady.toml"
        ))
        .unwrap();
        Scenario::from_toml(&text).expect("the bundled scenario is valid")
    }

    #[test]
    fn the_bundled_scenarios_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            n += 1;
        }
        assert!(n >= 1);
        let s = steady();
        assert_eq!(
            (s.duration, s.warmup),
            (Duration::from_secs(60), Duration::from_secs(10))
        );
        assert_eq!(s.inbound.unwrap().0, Rate::Constant { per_sec: 200.0 });
    }

    #[test]
    fn the_afternoon_peak_carries_35_percent_of_the_day_between_2_and_4_pm() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/afternoon_peak.toml"
        ))
        .unwrap();
        let plan = Scenario::from_toml(&text).unwrap();
        let due = plan.inbound.unwrap().0.schedule(plan.duration);
        // 5 s per hour: 2 pm to 4 pm is from 70 s to 80 s.
        let hour = Duration::from_secs(5);
        let peak = due
            .iter()
            .filter(|t| (14 * hour..16 * hour).contains(*t))
            .count();
        assert_eq!(due.len(), 12_000);
        assert_eq!(peak, 4_200, "35% of 12,000");
    }

    #[test]
    fn a_bad_scenario_names_its_field() {
        let base = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/steady.toml"
        ))
        .unwrap();
        let cases = [
            ("duration = \"60s\"", "duration = \"soon\"", "duration"),
            ("warmup = \"10s\"", "warmup = \"90s\"", "warmup"),
            ("follow_up = 0.2", "follow_up = 1.5", "inbound.follow_up"),
            ("customers = 50000", "customers = 0", "inbound.customers"),
        ];
        for (from, to, field) in cases {
            let text = base.replace(from, to);
            assert_ne!(text, base, "{from}");
            let e = Scenario::from_toml(&text).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let e = Scenario::from_toml(&base.replace("per_sec = 200", "per_sec = -1")).unwrap_err();
        assert_eq!(e.field, "inbound.rate.per_sec", "{e}");
        let e = Scenario::from_toml(&base.replace("customers", "clients")).unwrap_err();
        assert!(e.problem.contains("clients"), "{e}");
    }

    #[test]
    fn messages_are_the_same_every_run_and_follow_the_mix() {
        let plan = steady();
        let (a, b) = (
            Messages::new(&plan.inbound.as_ref().unwrap().1, 7),
            Messages::new(&plan.inbound.as_ref().unwrap().1, 7),
        );
        let first: Vec<Message> = (0..1_000).map(|n| a.nth(n)).collect();
        assert_eq!(first, (0..1_000).map(|n| b.nth(n)).collect::<Vec<_>>());
        let share = |f: &dyn Fn(&Message) -> bool| {
            first.iter().filter(|m| f(m)).count() as f64 / first.len() as f64
        };
        let follow_ups = share(&|m| m.follow_up);
        let web = share(&|m| m.web_chat);
        let order = share(&|m| m.text == "hola, ¿dónde está mi pedido?");
        assert!((0.15..0.25).contains(&follow_ups), "{follow_ups}");
        assert!((0.06..0.14).contains(&web), "{web}");
        assert!((0.35..0.45).contains(&order), "4 of 10 by weight: {order}");
        // A follow-up comes from someone who wrote before.
        for (n, m) in first.iter().enumerate().filter(|(_, m)| m.follow_up) {
            assert!(first[..n].iter().any(|p| p.customer == m.customer), "{n}");
        }
    }

    #[test]
    fn every_part_of_a_scenario_is_checked() {
        let text = r#"
            name = "all"
            duration = "10s"
            warmup = "1s"
            [agents]
            count = 2
            capacity = 3
            queues = ["support"]
            handle = "5s"
            [[outbound]]
            category = "marketing"
            rate = { kind = "stages", stages = [{ length = "2s", per_sec = 10 }, { length = "3s", per_sec = 0 }] }
            customers = 100
            [dirty]
            rate = { kind = "constant", per_sec = 5 }
        "#;
        let plan = Scenario::from_toml(text).expect("valid");
        assert!(plan.inbound.is_none());
        assert_eq!(plan.agents.as_ref().unwrap().handle, Duration::from_secs(5));
        let send = &plan.outbound[0];
        assert_eq!(send.priority, Priority::ByCategory);
        assert_eq!(send.rate.schedule(Duration::from_secs(10)).len(), 20);
        assert_eq!(
            (send.customer(0), send.customer(100)),
            ("+34620000000".into(), "+34620000000".into())
        );
        let dirty = plan.dirty.as_ref().unwrap();
        let flaws: Vec<Flaw> = (0..5).map(|n| dirty.nth(n, "demo", true).flaw).collect();
        assert_eq!(flaws.len(), 5);
        assert!(flaws.contains(&Flaw::NotProtobuf));
        assert!((0..8).all(|n| dirty.nth(n, "demo", false).flaw != Flaw::NotProtobuf));
        assert_eq!(dirty.nth(1, "demo", false).text.len(), 5_000);
        for (from, to, field) in [
            (
                "category = \"marketing\"",
                "category = \"spam\"",
                "outbound[0].category",
            ),
            ("count = 2", "count = 0", "agents"),
            ("handle = \"5s\"", "handle = \"soon\"", "agents.handle"),
            (
                "length = \"2s\"",
                "length = \"2\"",
                "outbound[0].rate.stages.length",
            ),
            ("per_sec = 5", "per_sec = -5", "dirty.rate.per_sec"),
        ] {
            let e = Scenario::from_toml(&text.replace(from, to)).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let e =
            Scenario::from_toml("name = \"x\"\nduration = \"5s\"\nwarmup = \"1s\"").unwrap_err();
        assert_eq!(e.field, "inbound", "{e}");
    }

    #[test]
    fn long_chains_of_follow_ups_do_not_recurse() {
        let mut plan = steady();
        let load = &mut plan.inbound.as_mut().unwrap().1;
        load.follow_up = 1.0;
        let m = Messages::new(load, 1);
        let last = m.nth(1_000_000);
        assert!(last.follow_up);
        assert_eq!(
            last.customer,
            m.nth(0).customer,
            "all follow up the first customer"
        );
    }
}
