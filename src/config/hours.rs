//! A queue's business hours (`[tenants.queues.hours]`) and where its messages go while it is
//! closed (`after_hours_queue`). Validated here; enforced by the shard's routing and desk.
use serde::Deserialize;

use super::{ConfigError, QueueConfig, invalid};
use crate::clock::hours::BusinessHours;

/// When a queue is open: weekly intervals in a time zone, and holidays.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    /// An IANA name ("Europe/Madrid"), from the time-zone database bundled in the binary.
    pub time_zone: String,
    /// "mon-fri 09:00-18:00", "sat 10:00-14:00"; "24:00" ends at midnight.
    pub open: Vec<String>,
    /// Local dates it does not open at all: "2026-12-25".
    #[serde(default)]
    pub holidays: Vec<String>,
}

impl HoursConfig {
    pub fn build(&self) -> Result<BusinessHours, String> {
        BusinessHours::new(&self.time_zone, &self.open, &self.holidays)
    }
}

/// Each queue's hours parse, and its after-hours queue is another defined queue.
pub(super) fn validate(at: &str, queues: &[QueueConfig]) -> Result<(), ConfigError> {
    for (j, q) in queues.iter().enumerate() {
        let qat = format!("{at}.queues[{j}]");
        if let Some(h) = &q.hours {
            h.build().map_err(|e| invalid(format!("{qat}.hours"), e))?;
        }
        if let Some(after) = &q.after_hours_queue {
            if *after == q.name {
                return Err(invalid(
                    format!("{qat}.after_hours_queue"),
                    "is the queue itself; name another queue, or leave it out to send \
                     after-hours messages to the bot",
                ));
            }
            if !queues.iter().any(|other| other.name == *after) {
                return Err(invalid(
                    format!("{qat}.after_hours_queue"),
                    format!("queue {after:?} is not defined under [[tenants.queues]]"),
                ));
            }
            if q.hours.is_none() {
                return Err(invalid(
                    format!("{qat}.after_hours_queue"),
                    "is set but the queue has no hours (it is always open); add [tenants.queues.hours]",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(queue_extra: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!(
            r#"
            [[tenants]]
            id = "t"
            default_region = "ES"
            default_queue = "support"
            [[tenants.queues]]
            name = "support"
            sla_target_secs = 60
            max_wait_secs = 600
            {queue_extra}
            [[tenants.queues]]
            name = "night"
            sla_target_secs = 60
            max_wait_secs = 600
            "#
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn hours_and_the_after_hours_queue_are_checked_with_the_field_named() {
        let ok = load(
            r#"after_hours_queue = "night"
            hours = { time_zone = "Europe/Madrid", open = ["mon-fri 09:00-18:00"], holidays = ["2026-12-25"] }"#,
        )
        .unwrap();
        assert!(ok.tenants[0].queues[0].hours.is_some());
        let e = load(r#"hours = { time_zone = "Europe/Madird", open = ["mon-fri 09:00-18:00"] }"#)
            .unwrap_err();
        assert!(
            e.contains("tenants[0].queues[0].hours") && e.contains("IANA"),
            "{e}"
        );
        let e =
            load(r#"hours = { time_zone = "UTC", open = ["mon-fri 18:00-09:00"] }"#).unwrap_err();
        assert!(e.contains("two entries"), "{e}");
        let e = load(
            r#"after_hours_queue = "nowhere"
            hours = { time_zone = "UTC", open = ["mon 09:00-18:00"] }"#,
        )
        .unwrap_err();
        assert!(
            e.contains("after_hours_queue") && e.contains("not defined"),
            "{e}"
        );
        let e = load(r#"after_hours_queue = "night""#).unwrap_err();
        assert!(e.contains("has no hours"), "{e}");
        let e = load(
            r#"after_hours_queue = "support"
            hours = { time_zone = "UTC", open = ["mon 09:00-18:00"] }"#,
        )
        .unwrap_err();
        assert!(e.contains("the queue itself"), "{e}");
    }
}
