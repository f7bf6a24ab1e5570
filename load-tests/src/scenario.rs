//! Scenario files (`load-tests/scenarios/*.toml`): what the simulated customers do. Checked on
//! load: a bad file is refused with the field that is wrong.
//!
//! Today a scenario describes inbound traffic: its rate over time, how many distinct
//! customers write, the share of follow-ups in an open conversation and of web chat, and the
//! texts with their weights. ([`Messages`] turns it into a deterministic message stream.)
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
    pub inbound: InboundLoad,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum RateSpec {
    Constant { per_sec: f64 },
    Step { from: f64, to: f64, at: String },
    Ramp { from: f64, to: f64, over: String },
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
    pub rate: Rate,
    pub inbound: InboundLoad,
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
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(bad(
                    field,
                    format!("is {v}; use a rate of 0 or more per second"),
                ))
            }
        };
        let rate = match &self.inbound.rate {
            RateSpec::Constant { per_sec } => Rate::Constant {
                per_sec: positive("inbound.rate.per_sec", *per_sec)?,
            },
            RateSpec::Step { from, to, at } => Rate::Step {
                from: positive("inbound.rate.from", *from)?,
                to: positive("inbound.rate.to", *to)?,
                at: duration("inbound.rate.at", at)?,
            },
            RateSpec::Ramp { from, to, over } => Rate::Ramp {
                from: positive("inbound.rate.from", *from)?,
                to: positive("inbound.rate.to", *to)?,
                over: duration("inbound.rate.over", over)?,
            },
        };
        let i = &self.inbound;
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
        Ok(Plan {
            name: self.name,
            tenant: self.tenant,
            duration: d,
            warmup,
            rate,
            inbound: self.inbound,
        })
    }
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
pub struct Messages<'a> {
    load: &'a InboundLoad,
    seed: u64,
    total_weight: u64,
}

impl<'a> Messages<'a> {
    pub fn new(load: &'a InboundLoad, seed: u64) -> Self {
        let total_weight = load.texts.iter().map(|t| u64::from(t.weight)).sum();
        Self {
            load,
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
        assert_eq!(s.rate, Rate::Constant { per_sec: 200.0 });
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
        let e = Scenario::from_toml(&base.replace("customers", "clients")).unwrap_err();
        assert!(e.problem.contains("clients"), "{e}");
    }

    #[test]
    fn messages_are_the_same_every_run_and_follow_the_mix() {
        let plan = steady();
        let (a, b) = (
            Messages::new(&plan.inbound, 7),
            Messages::new(&plan.inbound, 7),
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
    fn long_chains_of_follow_ups_do_not_recurse() {
        let mut plan = steady();
        plan.inbound.follow_up = 1.0;
        let m = Messages::new(&plan.inbound, 1);
        let last = m.nth(1_000_000);
        assert!(last.follow_up);
        assert_eq!(
            last.customer,
            m.nth(0).customer,
            "all follow up the first customer"
        );
    }
}
