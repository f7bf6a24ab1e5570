//! The send-lifecycle rules of a portfolio (`[tenants.quotas]`): scheduled sends, consent
//! keywords, the per-customer frequency cap, the hold after Meta's per-user marketing limit
//! (131049) and quiet hours. Validated here with the rest of the quotas; enforced by the
//! shard (`core::quota::lifecycle`).
use serde::Deserialize;

use super::{ConfigError, invalid};

/// Opt-out and opt-in words (`[tenants.quotas.consent]`), matched against the whole text of
/// an inbound message, lower-cased, accents and surrounding punctuation removed ("¡Baja!" is
/// "baja").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// A customer sending one of these opts out of marketing.
    pub opt_out_keywords: Vec<String>,
    /// A customer sending one of these opts in again.
    pub opt_in_keywords: Vec<String>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
        Self {
            opt_out_keywords: words(&[
                "stop",
                "baja",
                "cancelar",
                "unsubscribe",
                "darme de baja",
                "no mas mensajes",
            ]),
            opt_in_keywords: words(&["start", "alta", "suscribir", "subscribe"]),
        }
    }
}

/// At most so many business-initiated low-priority sends per customer in any moving 24 hours
/// (`[tenants.quotas.frequency_cap]`); 0 is no cap.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrequencyCapConfig {
    /// For a customer without an opt-in (the integration guides' "one push per 24 hours").
    pub without_opt_in: u32,
    /// For a customer who opted in.
    pub opted_in: u32,
}

impl Default for FrequencyCapConfig {
    fn default() -> Self {
        Self {
            without_opt_in: 1,
            opted_in: 0,
        }
    }
}

/// Every day from `start` to `end` (local time in `time_zone`), low-priority sends wait
/// (`[tenants.quotas.quiet_hours]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// An IANA time zone ("Europe/Madrid").
    pub time_zone: String,
    /// "HH:MM", 24-hour; after `end` spans midnight ("21:00" to "09:00").
    pub start: String,
    pub end: String,
}

/// Defaults of the scheduling limits (`quotas.max_schedule_ahead_secs`,
/// `quotas.max_scheduled_sends`) and of the 131049 hold (`quotas.customer_hold_secs`).
pub mod defaults {
    /// 35 days: a reminder a month ahead, with room.
    pub const MAX_SCHEDULE_AHEAD_SECS: u64 = 35 * 24 * 3_600;
    pub const MAX_SCHEDULED_SENDS: usize = 1_000_000;
    /// Meta's per-user marketing limit (131049) holds that customer for a day.
    pub const CUSTOMER_HOLD_SECS: u64 = 24 * 3_600;
}

/// Checks the lifecycle settings of a portfolio's quotas; `at` names them in errors.
pub fn validate(
    at: &str,
    consent: &ConsentConfig,
    quiet: Option<&QuietHoursConfig>,
    max_schedule_ahead_secs: u64,
    max_scheduled_sends: usize,
) -> Result<(), ConfigError> {
    for (field, words) in [
        ("opt_out_keywords", &consent.opt_out_keywords),
        ("opt_in_keywords", &consent.opt_in_keywords),
    ] {
        if let Some(empty) = words.iter().position(|w| w.trim().is_empty()) {
            return Err(invalid(
                format!("{at}.consent.{field}[{empty}]"),
                "is empty; write the word a customer sends, e.g. \"baja\"",
            ));
        }
    }
    let both: Vec<&String> = consent
        .opt_out_keywords
        .iter()
        .filter(|w| consent.opt_in_keywords.contains(w))
        .collect();
    if !both.is_empty() {
        return Err(invalid(
            format!("{at}.consent"),
            format!("{both:?} both opts out and opts in; keep each word in one list"),
        ));
    }
    if max_schedule_ahead_secs == 0 {
        return Err(invalid(
            format!("{at}.max_schedule_ahead_secs"),
            "is 0; use how far ahead a send may be scheduled, e.g. 3024000 (35 days)",
        ));
    }
    if max_scheduled_sends == 0 {
        return Err(invalid(
            format!("{at}.max_scheduled_sends"),
            "is 0; use the most sends that may wait for their time, e.g. 1000000",
        ));
    }
    if let Some(q) = quiet {
        crate::clock::quiet::QuietHours::new(&q.time_zone, &q.start, &q.end)
            .map_err(|e| invalid(format!("{at}.quiet_hours"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// One tenant, its quotas table open.
    fn tenant() -> String {
        format!("{}\n[tenants.quotas]\n", crate::config::tests::MINIMAL)
    }

    fn err(quotas: &str) -> String {
        Config::from_toml_str(&format!("{}{quotas}", tenant()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_cap_one_push_a_day_and_know_baja() {
        let c = Config::from_toml_str(&tenant()).unwrap();
        let q = &c.tenants[0].quotas;
        assert_eq!(q.frequency_cap.without_opt_in, 1);
        assert!(q.consent.opt_out_keywords.iter().any(|w| w == "baja"));
        assert!(q.quiet_hours.is_none());
        assert_eq!(q.max_schedule_ahead_secs, 35 * 24 * 3_600);
    }

    #[test]
    fn bad_lifecycle_settings_name_the_key_and_the_fix() {
        let e =
            err(r#"quiet_hours = { time_zone = "Europe/Madird", start = "21:00", end = "09:00" }"#);
        assert!(e.contains("tenants[0].quotas.quiet_hours"), "{e}");
        assert!(e.contains("Europe/Madrid"), "{e}");
        let e = err(r#"quiet_hours = { time_zone = "UTC", start = "25:00", end = "09:00" }"#);
        assert!(e.contains("00 to 23"), "{e}");
        let e = err(r#"consent = { opt_out_keywords = ["baja", " "] }"#);
        assert!(e.contains("consent.opt_out_keywords[1]"), "{e}");
        let e = err(r#"consent = { opt_out_keywords = ["alta"] }"#);
        assert!(e.contains("both opts out and opts in"), "{e}");
        let e = err("max_schedule_ahead_secs = 0");
        assert!(
            e.contains("tenants[0].quotas.max_schedule_ahead_secs"),
            "{e}"
        );
        let e = err("frequency_cap = { per_day = 3 }");
        assert!(e.contains("per_day"), "{e}");
    }
}
