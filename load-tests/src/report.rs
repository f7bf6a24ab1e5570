//! The end-of-run report, as Markdown (for people) and JSON (for tools), rendered from plain
//! figures so it can be checked from a fixed input.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::latency::{Second, Summary};

/// One measured target of a run (switchboard, or its anchor).
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub name: String,
    pub offered_per_sec: f64,
    pub achieved_per_sec: f64,
    pub measured: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: BTreeMap<String, u64>,
}

impl Measured {
    pub fn new(
        name: &str,
        offered_per_sec: f64,
        achieved_per_sec: f64,
        latency: &Summary,
        errors: BTreeMap<String, u64>,
    ) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        Self {
            name: name.to_owned(),
            offered_per_sec,
            achieved_per_sec,
            measured: latency.count,
            p50_ms: ms(latency.p50),
            p90_ms: ms(latency.p90),
            p99_ms: ms(latency.p99),
            p999_ms: ms(latency.p999),
            max_ms: ms(latency.max),
            errors,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    /// What was loaded, and how ("gRPC 127.0.0.1:50051, embedded server started by the harness").
    pub target: String,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub targets: Vec<Measured>,
    /// switchboard over the anchor, when both ran: achieved rate, p99, p99.9.
    pub ratios: Option<Ratios>,
    pub cost: Cost,
    /// Inbound decisions by "target: reason".
    pub routing: BTreeMap<String, u64>,
    /// Share of inbound decisions that overflowed to the bot because the queue's SLA was
    /// saturated.
    pub overflow_to_bot: Option<f64>,
    pub queues: Vec<QueueLine>,
    pub agents: Option<AgentsLine>,
    /// Send answers ("DISPATCHED", "QUEUED", "REFUSED: THROUGHPUT_LIMIT").
    pub sends: BTreeMap<String, u64>,
    /// Send status events seen on the status stream, by state.
    pub statuses: BTreeMap<String, u64>,
    pub limit: Option<LimitLine>,
    pub dirty: Option<DirtyLine>,
    /// Per stream, each second: completions and p99 (the plots).
    pub timelines: BTreeMap<String, Vec<Second>>,
    /// Per stream, its slowest measured second against its median one.
    pub steadiness: Vec<Steadiness>,
    /// How long the server's Kafka input stood still at each cut
    /// (`switchboard_kafka_cut_pause_seconds`), when it took any.
    pub cut_pause: Option<crate::usage::Buckets>,
    /// The cuts the server wrote and committed, and how long each took from being taken
    /// (`switchboard_kafka_snapshot_seconds`), when it wrote any.
    pub cuts_written: Option<crate::usage::Buckets>,
    pub limit_samples: Vec<LimitSample>,
}

/// A stream's completions per second over the whole seconds after the warm-up and before
/// the end of the load: the slowest second against the median one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Steadiness {
    pub stream: String,
    pub seconds: usize,
    pub median_per_s: f64,
    pub slowest_per_s: u64,
    /// The slowest second, counted from the start of the load.
    pub slowest_at_s: u64,
    /// slowest / median.
    pub ratio: f64,
    /// Seconds below [`Steadiness::FLOOR`] of the median (issue 18's bar: none).
    pub below_floor: usize,
}

impl Steadiness {
    /// The share of the median a second should not fall below.
    pub const FLOOR: f64 = 0.8;

    /// None when no whole second was measured.
    pub fn of(
        stream: &str,
        timeline: &[Second],
        warmup: Duration,
        duration: Duration,
    ) -> Option<Self> {
        let from = warmup.as_secs_f64().ceil() as u64;
        let to = duration.as_secs_f64().floor() as u64;
        let seconds: Vec<&Second> = timeline
            .iter()
            .filter(|s| s.second >= from && s.second < to)
            .collect();
        let (median, _, _) = spread(seconds.iter().map(|s| s.completed as f64).collect())?;
        let slowest = seconds.iter().min_by_key(|s| s.completed)?;
        Some(Self {
            stream: stream.to_owned(),
            seconds: seconds.len(),
            median_per_s: median,
            slowest_per_s: slowest.completed,
            slowest_at_s: slowest.second,
            ratio: slowest.completed as f64 / median.max(f64::MIN_POSITIVE),
            below_floor: seconds
                .iter()
                .filter(|s| (s.completed as f64) < Self::FLOOR * median)
                .count(),
        })
    }
}

/// CPU seconds per message (client and server) and the server's peak RSS, when measured.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Cost {
    pub client_cpu_s_per_msg: Option<f64>,
    pub server_cpu_s_per_msg: Option<f64>,
    pub server_peak_rss_mb: Option<f64>,
    /// The anchor server's CPU per message, when an anchor ran.
    pub anchor_server_cpu_s_per_msg: Option<f64>,
    /// What the client itself used while it offered load.
    pub client: Option<ClientLoad>,
}

/// The client's CPU over the time it offered load, against what its threads could give.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ClientLoad {
    pub cpu_s: f64,
    pub wall_s: f64,
    /// The cores its work could use (worker threads, at most the cores it may run on).
    pub threads: usize,
    /// HTTP/2 connections to the target.
    pub connections: usize,
}

impl ClientLoad {
    /// Share of threads × wall time the client's CPU took (can pass 1 a little: the
    /// runtime's blocking and timer threads).
    pub fn busy(&self) -> f64 {
        self.cpu_s / (self.threads.max(1) as f64 * self.wall_s.max(f64::MIN_POSITIVE))
    }

    /// At or above this share the client, not the server, set the pace.
    pub const SATURATED: f64 = 0.85;

    pub fn saturated(&self) -> bool {
        self.busy() >= Self::SATURATED
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueLine {
    pub queue: String,
    pub assignments: u64,
    pub sla_attainment: f64,
    pub sla_breaches: u64,
    pub depth_at_end: u32,
    pub oldest_wait_s: f64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct AgentsLine {
    pub agents: u32,
    pub assignments: u64,
    pub completed: u64,
}

/// One reading of the tenant's quota.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LimitSample {
    pub at_s: f64,
    pub used: u64,
    pub limit: u64,
    pub threshold: f64,
    pub batch_mode: bool,
    pub queued: u64,
}

/// The daily messaging limit over the run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LimitLine {
    pub limit: u64,
    pub threshold: f64,
    /// The most customers counted at once in the rolling 24 hours.
    pub max_used: u64,
    pub peak_usage: f64,
    /// Customers counted beyond the limit (what must be 0).
    pub over_limit: u64,
    /// Distinct customers a template send was dispatched to, as the status stream showed.
    pub dispatched_customers: u64,
    pub batch_mode_s: f64,
    pub batch_mode_from_s: Option<f64>,
    pub max_queued: u64,
}

impl LimitLine {
    /// From the samples in time order; None without any.
    pub fn from_samples(samples: &[LimitSample], dispatched_customers: u64) -> Option<Self> {
        let last = samples.last()?;
        let max_used = samples.iter().map(|s| s.used).max().unwrap_or(0);
        let batch_mode_s = samples
            .windows(2)
            .filter(|w| w[0].batch_mode)
            .map(|w| w[1].at_s - w[0].at_s)
            .fold(0.0, |a, b| a + b);
        Some(Self {
            limit: last.limit,
            threshold: last.threshold,
            max_used,
            peak_usage: max_used as f64 / last.limit.max(1) as f64,
            over_limit: max_used
                .max(dispatched_customers)
                .saturating_sub(last.limit),
            dispatched_customers,
            batch_mode_s,
            batch_mode_from_s: samples.iter().find(|s| s.batch_mode).map(|s| s.at_s),
            max_queued: samples.iter().map(|s| s.queued).max().unwrap_or(0),
        })
    }
}

/// Bad input: what became of each bad record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DirtyLine {
    pub sent: u64,
    /// Answers by "flaw → outcome".
    pub outcomes: BTreeMap<String, u64>,
    /// Refused (an error status) or dead-lettered.
    pub refused: u64,
    /// Routed as if it were good: must be 0.
    pub accepted: u64,
    /// Never answered nor dead-lettered: must be 0.
    pub lost: u64,
}

impl DirtyLine {
    /// `outcomes` keys end in "routed" for records that went through, anything else is a
    /// refusal or a dead letter.
    pub fn new(sent: u64, outcomes: BTreeMap<String, u64>) -> Self {
        let accepted = outcomes
            .iter()
            .filter(|(k, _)| k.ends_with("routed"))
            .map(|(_, v)| v)
            .sum();
        let answered: u64 = outcomes.values().sum();
        Self {
            sent,
            refused: answered - accepted,
            accepted,
            lost: sent.saturating_sub(answered),
            outcomes,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Ratios {
    pub achieved: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Report {
    pub fn new(
        scenario: &str,
        duration: Duration,
        warmup: Duration,
        targets: Vec<Measured>,
    ) -> Self {
        let ratios = match (
            targets.iter().find(|t| t.name != "anchor"),
            targets.iter().find(|t| t.name == "anchor"),
        ) {
            (Some(s), Some(a)) if a.achieved_per_sec > 0.0 && a.p99_ms > 0.0 && a.p999_ms > 0.0 => {
                Some(Ratios {
                    achieved: s.achieved_per_sec / a.achieved_per_sec,
                    p99: s.p99_ms / a.p99_ms,
                    p999: s.p999_ms / a.p999_ms,
                })
            }
            _ => None,
        };
        Self {
            scenario: scenario.to_owned(),
            target: String::new(),
            duration_s: duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            targets,
            ratios,
            cost: Cost::default(),
            routing: BTreeMap::new(),
            overflow_to_bot: None,
            queues: Vec::new(),
            agents: None,
            sends: BTreeMap::new(),
            statuses: BTreeMap::new(),
            limit: None,
            dirty: None,
            timelines: BTreeMap::new(),
            steadiness: Vec::new(),
            cut_pause: None,
            cuts_written: None,
            limit_samples: Vec::new(),
        }
    }

    /// Adds a stream's per-second timeline and its steadiness.
    pub fn add_timeline(&mut self, stream: &str, timeline: Vec<Second>) {
        let (warmup, duration) = (
            Duration::from_secs_f64(self.warmup_s),
            Duration::from_secs_f64(self.duration_s),
        );
        self.steadiness
            .extend(Steadiness::of(stream, &timeline, warmup, duration));
        self.timelines.insert(stream.to_owned(), timeline);
    }

    /// Sets the routing outcomes and the share that overflowed to the bot.
    pub fn with_routing(mut self, routing: BTreeMap<String, u64>) -> Self {
        let total: u64 = routing.values().sum();
        let overflow: u64 = routing
            .iter()
            .filter(|(k, _)| k.ends_with("SLA_SATURATED"))
            .map(|(_, v)| v)
            .sum();
        self.overflow_to_bot = (total > 0).then(|| overflow as f64 / total as f64);
        self.routing = routing;
        self
    }

    /// Prints the report and, with a directory, writes report.md, report.json and the plots
    /// there.
    pub fn finish(&self, dir: Option<&std::path::Path>) -> anyhow::Result<()> {
        use anyhow::Context;
        println!("{}", self.markdown());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::write(dir.join("report.md"), self.markdown())?;
            std::fs::write(dir.join("report.json"), self.json())?;
            let plots = crate::plot::write(self, dir).map_err(anyhow::Error::msg)?;
            println!(
                "report written to {}: report.md, report.json, {}",
                dir.display(),
                plots.join(", ")
            );
        }
        Ok(())
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Load test: {}\n\n{} s of load, the first {} s left out as warm-up. Latency is \
             measured from each request's scheduled time.\n\n",
            self.scenario, self.duration_s, self.warmup_s
        );
        if !self.target.is_empty() {
            md.push_str(&format!("Target: {}.\n\n", self.target));
        }
        md.push_str("| target | offered/s | achieved/s | measured | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for t in &self.targets {
            let errors = if t.errors.is_empty() {
                "none".to_owned()
            } else {
                t.errors
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                t.name,
                per_sec(t.offered_per_sec),
                per_sec(t.achieved_per_sec),
                t.measured,
                t.p50_ms,
                t.p90_ms,
                t.p99_ms,
                t.p999_ms,
                t.max_ms,
                errors
            ));
        }
        if let Some(r) = self.ratios {
            md.push_str(&format!(
                "\nAgainst the anchor (same schedule, same client): achieved rate {:.2}×, p99 \
                 {:.2}×, p99.9 {:.2}×.\n",
                r.achieved, r.p99, r.p999
            ));
        }
        let c = self.cost;
        let figure =
            |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("not measured".to_owned(), f);
        md.push_str(&format!(
            "\n## Cost\n\n| CPU per message, client | CPU per message, server | server peak RSS |\n|---|---|---|\n| {} | {} | {} |\n",
            figure(c.client_cpu_s_per_msg, &|v| format!("{:.1} µs", v * 1e6)),
            figure(c.server_cpu_s_per_msg, &|v| format!("{:.1} µs", v * 1e6)),
            figure(c.server_peak_rss_mb, &|v| format!("{v:.1} MB")),
        ));
        if let Some(client) = c.client {
            md.push_str(&format!(
                "\nThe client used {:.0}% of its {} thread(s) × {:.1} s, over {} connection(s).\n",
                client.busy() * 100.0,
                client.threads,
                client.wall_s,
                client.connections
            ));
            if client.saturated() {
                md.push_str(
                    "\n**Warning: the client's own CPU was the limit.** The rates above measure \
                     the harness, not the server: give it more `--threads` (and \
                     `--connections`), or run it on another machine.\n",
                );
            }
        }
        if let (Some(a), Some(s)) = (c.anchor_server_cpu_s_per_msg, c.server_cpu_s_per_msg) {
            md.push_str(&format!(
                "\nThe anchor server used {:.1} µs of CPU per message: switchboard {:.2}× that.\n",
                a * 1e6,
                s / a
            ));
        }
        if !self.routing.is_empty() {
            md.push_str("\n## Routing outcomes\n\n| decision | messages |\n|---|---|\n");
            for (k, v) in &self.routing {
                md.push_str(&format!("| {k} | {v} |\n"));
            }
            if let Some(share) = self.overflow_to_bot {
                md.push_str(&format!(
                    "\nOverflowed to the bot because the queue's SLA was saturated (reason \
                     SLA_SATURATED): **{:.1}%** of inbound messages.\n",
                    share * 100.0
                ));
            }
        }
        if !self.queues.is_empty() {
            md.push_str("\n## SLA by queue (the server's figures at the end)\n\n| queue | assignments | SLA attainment (of assignments) | breaches (waited past the target, assigned or not) | waiting at the end | oldest wait |\n|---|---|---|---|---|---|\n");
            for q in &self.queues {
                md.push_str(&format!(
                    "| {} | {} | {:.1}% | {} | {} | {:.0} s |\n",
                    q.queue,
                    q.assignments,
                    q.sla_attainment * 100.0,
                    q.sla_breaches,
                    q.depth_at_end,
                    q.oldest_wait_s
                ));
            }
        }
        if let Some(a) = self.agents {
            md.push_str(&format!(
                "\nSimulated agents: {}; conversations assigned to them {}, completed {}.\n",
                a.agents, a.assignments, a.completed
            ));
        }
        if !self.sends.is_empty() {
            md.push_str("\n## Quota outcomes\n\n| send answer | sends |\n|---|---|\n");
            for (k, v) in &self.sends {
                md.push_str(&format!("| {k} | {v} |\n"));
            }
            if !self.statuses.is_empty() {
                md.push_str("\n| status event | sends |\n|---|---|\n");
                for (k, v) in &self.statuses {
                    md.push_str(&format!("| {k} | {v} |\n"));
                }
            }
        }
        if let Some(l) = self.limit {
            md.push_str(&format!(
                "\n## Daily messaging limit\n\n| limit | batch threshold | most customers counted | peak usage | over the limit | customers reached by dispatched templates | time in batch mode | batch mode from | most queued |\n|---|---|---|---|---|---|---|---|---|\n| {} | {:.0}% | {} | {:.1}% | **{}** | {} | {:.1} s | {} | {} |\n",
                l.limit,
                l.threshold * 100.0,
                l.max_used,
                l.peak_usage * 100.0,
                l.over_limit,
                l.dispatched_customers,
                l.batch_mode_s,
                l.batch_mode_from_s.map_or("never".to_owned(), |t| format!("{t:.1} s")),
                l.max_queued
            ));
        }
        if !self.steadiness.is_empty() {
            md.push_str(&format!("\n## Steadiness (completions per whole second after the warm-up)\n\n| stream | seconds | median/s | slowest/s | at | slowest / median | seconds below {:.1}× the median |\n|---|---|---|---|---|---|---|\n", Steadiness::FLOOR));
            for s in &self.steadiness {
                md.push_str(&format!(
                    "| {} | {} | {:.0} | {} | {} s | {:.2} | {} |\n",
                    s.stream,
                    s.seconds,
                    s.median_per_s,
                    s.slowest_per_s,
                    s.slowest_at_s,
                    s.ratio,
                    s.below_floor
                ));
            }
        }
        if let Some(p) = &self.cut_pause {
            let at_most = |q: f64| {
                p.quantile_at_most(q)
                    .map_or("over the last bucket".to_owned(), |s| {
                        format!("≤ {:.1} ms", s * 1e3)
                    })
            };
            md.push_str(&format!(
                "\nThe server's Kafka input stood still for {} cut(s): p50 {}, p99 {}, the longest {}.\n",
                p.count,
                at_most(0.5),
                at_most(0.99),
                at_most(1.0)
            ));
        }
        if let Some(w) = &self.cuts_written {
            let at_most = |q: f64| {
                w.quantile_at_most(q)
                    .map_or("over the last bucket".to_owned(), |s| format!("≤ {s} s"))
            };
            md.push_str(&format!(
                "It wrote and committed {} cut(s), each from being taken: p50 {}, the longest {}.\n",
                w.count,
                at_most(0.5),
                at_most(1.0)
            ));
        }
        if let Some(d) = &self.dirty {
            md.push_str(&format!(
                "\n## Dirty input\n\n{} bad records sent: **{} refused or dead-lettered, {} accepted, {} lost**.\n\n| flaw → outcome | records |\n|---|---|\n",
                d.sent, d.refused, d.accepted, d.lost
            ));
            for (k, v) in &d.outcomes {
                md.push_str(&format!("| {k} | {v} |\n"));
            }
        }
        md
    }
}

/// A figure over several runs: (median, min, max).
pub type Spread = (f64, f64, f64);

/// Several runs of the same measurement: the median and the spread (min–max) of each ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeated {
    pub runs: usize,
    /// (what, median, min, max) for the achieved rate, p99, p99.9 and server CPU per message,
    /// over the runs that had them.
    pub ratios: Vec<(&'static str, f64, f64, f64)>,
    /// The same for switchboard's own achieved rate (answers/s).
    pub achieved: Option<Spread>,
    /// Each stream's steadiness over the runs that measured it (the anchor's too): the
    /// slowest second / median and the seconds below the floor, each (median, min, max).
    pub steadiness: Vec<(String, Spread, Spread)>,
}

fn spread(mut values: Vec<f64>) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some((median, values[0], values[n - 1]))
}

impl Repeated {
    pub fn new(reports: &[Report]) -> Self {
        let pick =
            |f: &dyn Fn(&Report) -> Option<f64>| spread(reports.iter().filter_map(f).collect());
        let mut ratios = Vec::new();
        for (what, f) in [
            (
                "achieved rate",
                &(|r: &Report| r.ratios.map(|x| x.achieved)) as &dyn Fn(&Report) -> Option<f64>,
            ),
            ("p99", &|r: &Report| r.ratios.map(|x| x.p99)),
            ("p99.9", &|r: &Report| r.ratios.map(|x| x.p999)),
            ("server CPU per message", &|r: &Report| {
                Some(r.cost.server_cpu_s_per_msg? / r.cost.anchor_server_cpu_s_per_msg?)
            }),
        ] {
            if let Some((m, lo, hi)) = pick(f) {
                ratios.push((what, m, lo, hi));
            }
        }
        let achieved = pick(&|r: &Report| {
            r.targets
                .iter()
                .find(|t| t.name != "anchor")
                .map(|t| t.achieved_per_sec)
        });
        let mut streams: Vec<&str> = Vec::new();
        for s in reports.iter().flat_map(|r| &r.steadiness) {
            if !streams.contains(&s.stream.as_str()) {
                streams.push(&s.stream);
            }
        }
        let steadiness = streams
            .into_iter()
            .filter_map(|name| {
                let of = |f: &dyn Fn(&Steadiness) -> f64| {
                    let values = reports
                        .iter()
                        .flat_map(|r| &r.steadiness)
                        .filter(|s| s.stream == name)
                        .map(f);
                    spread(values.collect())
                };
                Some((
                    name.to_owned(),
                    of(&|s| s.ratio)?,
                    of(&|s| s.below_floor as f64)?,
                ))
            })
            .collect();
        Self {
            runs: reports.len(),
            ratios,
            achieved,
            steadiness,
        }
    }

    pub fn markdown(&self) -> String {
        let mut md = format!(
            "## {} runs: ratio to the anchor, median (min–max)\n\n| figure | median | spread |\n|---|---|---|\n",
            self.runs
        );
        for (what, m, lo, hi) in &self.ratios {
            md.push_str(&format!("| {what} | **{m:.2}×** | {lo:.2}–{hi:.2} |\n"));
        }
        if let Some((m, lo, hi)) = self.achieved {
            md.push_str(&format!(
                "\nswitchboard achieved {m:.0}/s (median; {lo:.0}–{hi:.0}).\n"
            ));
        }
        if !self.steadiness.is_empty() {
            md.push_str(&format!(
                "\n## Steadiness over the runs, median (min–max)\n\n| stream | slowest second / median | seconds below {:.1}× the median |\n|---|---|---|\n",
                Steadiness::FLOOR
            ));
            for (stream, (m, lo, hi), (b, blo, bhi)) in &self.steadiness {
                md.push_str(&format!(
                    "| {stream} | **{m:.2}** ({lo:.2}–{hi:.2}) | {b:.0} ({blo:.0}–{bhi:.0}) |\n"
                ));
            }
        }
        md
    }
}

/// A rate for the table: whole numbers, one decimal below 10/s.
fn per_sec(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50: u64, p99: u64, p999: u64) -> Summary {
        let ms = Duration::from_millis;
        Summary {
            count: 1_000,
            p50: ms(p50),
            p90: ms(p50 * 2),
            p99: ms(p99),
            p999: ms(p999),
            max: ms(p999 * 2),
        }
    }

    #[test]
    fn a_report_renders_the_figures_and_the_ratios() {
        let errors = BTreeMap::from([("Unavailable".to_owned(), 3)]);
        let report = Report::new(
            "steady",
            Duration::from_secs(60),
            Duration::from_secs(10),
            vec![
                Measured::new("anchor", 200.0, 200.0, &summary(1, 4, 8), BTreeMap::new()),
                Measured::new("switchboard", 200.0, 180.0, &summary(2, 6, 12), errors),
            ],
        );
        assert_eq!(
            report.ratios,
            Some(Ratios {
                achieved: 0.9,
                p99: 1.5,
                p999: 1.5
            })
        );
        let md = report.markdown();
        assert!(md.starts_with("# Load test: steady\n"), "{md}");
        assert!(
            md.contains("| switchboard | 200 | 180 | 1000 | 2.00 | 4.00 | 6.00 | 12.00 | 24.00 | Unavailable 3 |"),
            "{md}"
        );
        assert!(
            md.contains("| anchor | 200 | 200 | 1000 | 1.00 | 2.00 | 4.00 | 8.00 | 16.00 | none |")
        );
        assert!(
            md.contains("achieved rate 0.90×, p99 1.50×, p99.9 1.50×"),
            "{md}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["targets"][1]["errors"]["Unavailable"], 3);
        assert_eq!(json["ratios"]["p99"], 1.5);
    }

    #[test]
    fn the_outcome_sections_render_from_fixed_figures() {
        let mut report = Report::new(
            "promotion",
            Duration::from_secs(60),
            Duration::from_secs(5),
            vec![Measured::new(
                "send utility",
                0.5,
                0.5,
                &summary(1, 2, 3),
                BTreeMap::new(),
            )],
        )
        .with_routing(BTreeMap::from([
            ("bot: SLA_SATURATED".to_owned(), 30),
            ("agent: SLA_OK".to_owned(), 60),
            ("queue: FRICTION".to_owned(), 10),
        ]));
        let sample = |at_s: f64, used: u64, batch_mode: bool| LimitSample {
            at_s,
            used,
            limit: 250,
            threshold: 0.8,
            batch_mode,
            queued: if batch_mode { 7 } else { 0 },
        };
        let samples = [
            sample(0.0, 0, false),
            sample(1.0, 150, false),
            sample(2.0, 200, true),
            sample(2.5, 230, true),
            sample(4.0, 240, false),
        ];
        report.limit = LimitLine::from_samples(&samples, 240);
        report.dirty = Some(DirtyLine::new(
            10,
            BTreeMap::from([
                ("bad number → InvalidArgument".to_owned(), 5),
                ("unknown tenant → NotFound".to_owned(), 4),
            ]),
        ));
        report.cost.server_cpu_s_per_msg = Some(0.000_012);
        report.cut_pause = Some(crate::usage::Buckets {
            count: 4,
            bounds: vec![(0.001, 3), (0.005, 4)],
        });
        report.cuts_written = Some(crate::usage::Buckets {
            count: 3,
            bounds: vec![(1.0, 2), (5.0, 3)],
        });
        assert_eq!(report.overflow_to_bot, Some(0.3));
        let limit = report.limit.unwrap();
        assert_eq!(
            (limit.max_used, limit.over_limit, limit.max_queued),
            (240, 0, 7)
        );
        assert_eq!(limit.batch_mode_s, 2.0);
        assert_eq!(limit.batch_mode_from_s, Some(2.0));
        assert_eq!(
            LimitLine::from_samples(&samples, 251).unwrap().over_limit,
            1,
            "the status stream counts too"
        );
        let dirty = report.dirty.as_ref().unwrap();
        assert_eq!((dirty.refused, dirty.accepted, dirty.lost), (9, 0, 1));
        let md = report.markdown();
        for expected in [
            "| send utility | 0.5 | 0.5 | 1000 |",
            "| bot: SLA_SATURATED | 30 |",
            "**30.0%** of inbound messages",
            "| 250 | 80% | 240 | 96.0% | **0** | 240 | 2.0 s | 2.0 s | 7 |",
            "10 bad records sent: **9 refused or dead-lettered, 0 accepted, 1 lost**",
            "| not measured | 12.0 µs | not measured |",
            "stood still for 4 cut(s): p50 ≤ 1.0 ms, p99 ≤ 5.0 ms, the longest ≤ 5.0 ms",
            "It wrote and committed 3 cut(s), each from being taken: p50 ≤ 1 s, the longest ≤ 5 s.",
        ] {
            assert!(md.contains(expected), "{expected:?} in\n{md}");
        }
        assert!(LimitLine::from_samples(&[], 0).is_none());
    }

    #[test]
    fn repeated_runs_give_the_median_and_the_spread() {
        let run = |achieved: f64, p99: u64| {
            Report::new(
                "send",
                Duration::from_secs(20),
                Duration::from_secs(3),
                vec![
                    Measured::new("anchor", 100.0, 100.0, &summary(1, 4, 8), BTreeMap::new()),
                    Measured::new(
                        "send",
                        100.0,
                        achieved,
                        &summary(2, p99, 16),
                        BTreeMap::new(),
                    ),
                ],
            )
        };
        // Steadiness: the anchor is steady in every run; switchboard's slowest second falls
        // to 0.5, 0.9 and 0.7 of its median (100/s), one second below the floor in two runs.
        let steady = |mut report: Report, slowest: u64| {
            let second = |second, completed| Second {
                second,
                completed,
                p99_ms: 1.0,
            };
            report.add_timeline("anchor", (4..8).map(|s| second(s, 100)).collect());
            let send = [100, 100, slowest, 100, 100].into_iter().enumerate();
            report.add_timeline("send", send.map(|(s, c)| second(s as u64 + 4, c)).collect());
            report
        };
        let r = Repeated::new(&[
            steady(run(60.0, 8), 50),
            steady(run(70.0, 4), 90),
            steady(run(65.0, 6), 70),
        ]);
        assert_eq!(
            r.steadiness,
            [
                ("anchor".to_owned(), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
                ("send".to_owned(), (0.7, 0.5, 0.9), (1.0, 0.0, 1.0)),
            ]
        );
        assert!(
            r.markdown()
                .contains("| send | **0.70** (0.50–0.90) | 1 (0–1) |"),
            "{}",
            r.markdown()
        );
        assert_eq!(r.runs, 3);
        assert_eq!(r.ratios[0], ("achieved rate", 0.65, 0.6, 0.7));
        assert_eq!(r.ratios[1], ("p99", 1.5, 1.0, 2.0));
        assert_eq!(r.achieved, Some((65.0, 60.0, 70.0)));
        assert!(
            r.markdown()
                .contains("| achieved rate | **0.65×** | 0.60–0.70 |"),
            "{}",
            r.markdown()
        );
        assert_eq!(spread(vec![4.0, 1.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(vec![]), None);
    }

    #[test]
    fn without_an_anchor_there_is_no_ratio() {
        let report = Report::new(
            "steady",
            Duration::from_secs(60),
            Duration::from_secs(10),
            vec![Measured::new(
                "switchboard",
                200.0,
                200.0,
                &summary(2, 6, 12),
                BTreeMap::new(),
            )],
        );
        assert!(report.ratios.is_none());
        assert!(!report.markdown().contains("Against the anchor"));
    }

    /// The report warns when the client's CPU was near its threads × wall time, and only then.
    #[test]
    fn a_saturated_client_is_called_out() {
        let mut report = Report::new(
            "ingest",
            Duration::from_secs(20),
            Duration::from_secs(3),
            vec![Measured::new(
                "inbound",
                30_000.0,
                26_000.0,
                &summary(2, 6, 12),
                BTreeMap::new(),
            )],
        );
        let load = |cpu_s| ClientLoad {
            cpu_s,
            wall_s: 20.0,
            threads: 2,
            connections: 4,
        };
        report.cost.client = Some(load(36.0));
        assert_eq!(report.cost.client.unwrap().busy(), 0.9);
        let md = report.markdown();
        assert!(
            md.contains("The client used 90% of its 2 thread(s) × 20.0 s, over 4 connection(s)."),
            "{md}"
        );
        assert!(md.contains("the client's own CPU was the limit"), "{md}");
        report.cost.client = Some(load(20.0));
        let md = report.markdown();
        assert!(
            md.contains("The client used 50% of its 2 thread(s)"),
            "{md}"
        );
        assert!(!md.contains("was the limit"), "{md}");
    }

    #[test]
    fn steadiness_takes_the_whole_seconds_after_the_warm_up_and_before_the_end() {
        let second = |second, completed| Second {
            second,
            completed,
            p99_ms: 1.0,
        };
        // Warm-up 1.5 s, load 6 s: seconds 2, 3, 4 and 5 count; 0, 1 (warm-up) and 6
        // (the drain after the load) do not, however slow.
        let timeline: Vec<Second> = [
            (0, 1),
            (1, 50),
            (2, 100),
            (3, 70),
            (4, 110),
            (5, 90),
            (6, 3),
        ]
        .into_iter()
        .map(|(s, c)| second(s, c))
        .collect();
        let s = Steadiness::of(
            "switchboard",
            &timeline,
            Duration::from_millis(1_500),
            Duration::from_secs(6),
        )
        .expect("four seconds");
        assert_eq!(s.seconds, 4);
        assert_eq!(s.median_per_s, 95.0);
        assert_eq!((s.slowest_per_s, s.slowest_at_s), (70, 3));
        assert!((s.ratio - 70.0 / 95.0).abs() < 1e-12);
        // 70 is below 0.8 × 95 = 76; 90 is not.
        assert_eq!(s.below_floor, 1);
        assert_eq!(
            Steadiness::of(
                "x",
                &timeline[..1],
                Duration::from_secs(1),
                Duration::from_secs(6)
            ),
            None
        );
        let mut report = Report::new(
            "r",
            Duration::from_secs(6),
            Duration::from_millis(1_500),
            vec![],
        );
        report.add_timeline("switchboard", timeline);
        assert!(
            report
                .markdown()
                .contains("| switchboard | 4 | 95 | 70 | 3 s | 0.74 |")
        );
    }
}
