//! The end-of-run report, as Markdown (for people) and JSON (for tools), rendered from plain
//! figures so it can be checked from a fixed input.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::latency::Summary;

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
    pub duration_s: f64,
    pub warmup_s: f64,
    pub targets: Vec<Measured>,
    /// switchboard over the anchor, when both ran: achieved rate, p99, p99.9.
    pub ratios: Option<Ratios>,
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
            duration_s: duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            targets,
            ratios,
        }
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
                "| {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                t.name,
                t.offered_per_sec,
                t.achieved_per_sec,
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
        md
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
}
