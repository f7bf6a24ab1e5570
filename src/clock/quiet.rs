//! Quiet hours: a tenant's daily interval of local time, in an IANA time zone, during which
//! low-priority (marketing) sends are not dispatched.
//!
//! Deterministic like the rest of the core: the time is an input ([`Timestamp`], UTC
//! milliseconds) and the zone rules come from the IANA database that jiff bundles into the
//! binary (`tzdb-bundle-always`), so no system tz files are read.
//!
//! Times are wall-clock times: each local day D has the quiet period [D `start`, `end`), the
//! `end` being on D, or on the next day when `start` is after `end` (21:00-09:00 spans midnight).
//! A local date and time become an instant by the zone's rules for that date (never a fixed
//! offset), with jiff's "compatible" disambiguation across daylight-saving changes: a time that
//! does not exist (the spring-forward gap) is taken after the gap, as if the clocks had not
//! moved yet (02:30 on a 02:00 -> 03:00 night is 03:30 of the new offset), and a time that
//! happens twice (the fall-back fold) is its first, earlier occurrence.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

use super::Timestamp;

/// Quiet hours of a tenant: every day from `start` to `end`, local time in `zone`.
#[derive(Debug, Clone)]
pub struct QuietHours {
    zone: TimeZone,
    /// The zone's name as written in the config.
    name: String,
    start: Time,
    end: Time,
}

impl QuietHours {
    /// `time_zone`: an IANA name ("Europe/Madrid", "America/Mexico_City"); `start`/`end`:
    /// "HH:MM" (24-hour, 00:00..23:59). `start` after `end` spans midnight (21:00-09:00); equal
    /// start and end is an error. Errors are a sentence saying what is wrong and what to write
    /// instead (they reach an operator at config load).
    pub fn new(time_zone: &str, start: &str, end: &str) -> Result<Self, String> {
        let zone = zone(time_zone)?;
        let (start_time, end_time) = (
            parse_hhmm("quiet hours start", start)?,
            parse_hhmm("quiet hours end", end)?,
        );
        if start_time == end_time {
            return Err(format!(
                "quiet hours start and end are both {start:?}, which is no interval: write two \
                 different times, such as \"21:00\" and \"09:00\" (a start after the end spans \
                 midnight)"
            ));
        }
        Ok(Self {
            zone,
            name: time_zone.to_owned(),
            start: start_time,
            end: end_time,
        })
    }

    /// None when `now` is outside the quiet hours; else the instant the quiet period containing
    /// `now` ends (the next local `end`, resolved as the module doc says). A period includes its
    /// start and excludes its end. An instant jiff cannot represent (after the year 9999) is
    /// never quiet.
    pub fn quiet_until(&self, now: Timestamp) -> Option<Timestamp> {
        let now = jiff::Timestamp::from_millisecond(i64::try_from(now.as_millis()).ok()?).ok()?;
        let today = self.zone.to_datetime(now).date();
        // Yesterday's period may still run (past midnight); tomorrow's can have started only
        // when a fold repeats the hour before midnight. Overlaps (none outside such folds) merge.
        [today.yesterday().ok(), Some(today), today.tomorrow().ok()]
            .into_iter()
            .flatten()
            .filter_map(|day| self.period(day))
            .filter(|&(from, until)| from <= now && now < until)
            .map(|(_, until)| until)
            .max()
            .and_then(|until| u64::try_from(until.as_millisecond()).ok())
            .map(Timestamp::from_millis)
    }

    /// The zone's name, and start/end as written, for display: "21:00-09:00 Europe/Madrid".
    pub fn describe(&self) -> String {
        let hhmm = |t: Time| format!("{:02}:{:02}", t.hour(), t.minute());
        format!("{}-{} {}", hhmm(self.start), hhmm(self.end), self.name)
    }

    /// The instants of the quiet period that starts on local day `day`.
    fn period(&self, day: Date) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
        let end_day = if self.start < self.end {
            day
        } else {
            day.tomorrow().ok()?
        };
        let instant = |date: Date, time: Time| {
            let local = date.to_datetime(time);
            self.zone.to_ambiguous_timestamp(local).compatible().ok()
        };
        Some((instant(day, self.start)?, instant(end_day, self.end)?))
    }
}

/// The IANA zone `name` from the bundled database, or a sentence saying what to write.
pub(super) fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name)
        .ok()
        .filter(|zone| !zone.is_unknown())
        .ok_or_else(|| {
            format!("unknown time zone {name:?}: use an IANA name such as \"Europe/Madrid\"")
        })
}

/// "HH:MM", two digits each, 00:00 to 23:59; `which` ("quiet hours start") names it in the
/// error.
pub(super) fn parse_hhmm(which: &str, text: &str) -> Result<Time, String> {
    let bad = |problem: &str| {
        format!(
            "{which} {text:?}: {problem}; write HH:MM in 24-hour time, such as \
             \"21:00\" or \"09:00\""
        )
    };
    let two_digits =
        |p: &str| (p.len() == 2 && p.bytes().all(|c| c.is_ascii_digit())).then(|| p.parse::<i8>());
    let (Some(Ok(hour)), Some(Ok(minute))) = text
        .split_once(':')
        .map_or((None, None), |(h, m)| (two_digits(h), two_digits(m)))
    else {
        return Err(bad("not in HH:MM form"));
    };
    if hour > 23 {
        return Err(bad("the hour must be 00 to 23"));
    }
    if minute > 59 {
        return Err(bad("the minutes must be 00 to 59"));
    }
    Time::new(hour, minute, 0, 0).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Days since 1970-01-01 (UTC), by hand: 2027-01-01 is day 57 × 365 + 14 leap days
    // (1972..=2024) = 20_819; 2027 is not a leap year (February has 28 days).
    const MAR_27: u64 = 20_819 + 31 + 28 + 26; // 20_904
    const MAR_28: u64 = MAR_27 + 1;
    const JUN_15: u64 = 20_819 + 31 + 28 + 31 + 30 + 31 + 14; // 20_984
    const JUN_16: u64 = JUN_15 + 1;
    const OCT_30: u64 = 20_819 + 31 + 28 + 31 + 30 + 31 + 30 + 31 + 31 + 30 + 29; // 21_121
    const OCT_31: u64 = OCT_30 + 1;

    /// `hh:mm` UTC on day `day` since the epoch.
    fn utc(day: u64, hh: u64, mm: u64) -> Timestamp {
        Timestamp::from_millis(day * 86_400_000 + hh * 3_600_000 + mm * 60_000)
    }

    fn quiet(zone: &str, start: &str, end: &str) -> QuietHours {
        QuietHours::new(zone, start, end).expect("valid quiet hours")
    }

    #[test]
    fn bundled_database_knows_madrid() {
        let zone = TimeZone::get("Europe/Madrid").expect("bundled tzdb has Europe/Madrid");
        // The global database is the one compiled in, not /usr/share/zoneinfo (jiff's Debug).
        let db = format!("{:?}", jiff::tz::db());
        assert!(db.contains("Bundled"), "{db}");
        // 2027-06-15 (summer): CEST, UTC+2; 2027-01-15: CET, UTC+1.
        let at = |t: Timestamp| jiff::Timestamp::from_millisecond(t.0 as i64).unwrap();
        assert_eq!(zone.to_offset(at(utc(JUN_15, 12, 0))).seconds(), 7_200);
        assert_eq!(zone.to_offset(at(utc(20_819 + 14, 12, 0))).seconds(), 3_600);
    }

    #[test]
    fn night_of_spring_forward_ends_at_nine_cest() {
        // 2027-03-28 is the last Sunday of March: 02:00 CET -> 03:00 CEST.
        let q = quiet("Europe/Madrid", "21:00", "09:00");
        // 2027-03-27 22:00 CET (UTC+1) = 21:00Z; 2027-03-28 09:00 CEST (UTC+2) = 07:00Z.
        assert_eq!(q.quiet_until(utc(MAR_27, 21, 0)), Some(utc(MAR_28, 7, 0)));
    }

    #[test]
    fn night_of_fall_back_ends_at_nine_cet() {
        // 2027-10-31 is the last Sunday of October: 03:00 CEST -> 02:00 CET.
        let q = quiet("Europe/Madrid", "21:00", "09:00");
        // 2027-10-30 23:30 CEST (UTC+2) = 21:30Z; 2027-10-31 09:00 CET (UTC+1) = 08:00Z.
        assert_eq!(q.quiet_until(utc(OCT_30, 21, 30)), Some(utc(OCT_31, 8, 0)));
    }

    #[test]
    fn start_is_quiet_and_end_is_not() {
        let q = quiet("Europe/Madrid", "21:00", "09:00");
        // June, CEST (UTC+2): 2027-06-15 21:00 local = 19:00Z, 2027-06-16 09:00 local = 07:00Z.
        let (start, end) = (utc(JUN_15, 19, 0), utc(JUN_16, 7, 0));
        assert_eq!(q.quiet_until(start), Some(end));
        assert_eq!(q.quiet_until(Timestamp(start.0 - 1)), None);
        assert_eq!(q.quiet_until(end), None);
        let last = Timestamp(end.0 - 1);
        assert_eq!(q.quiet_until(last), Some(Timestamp(last.0 + 1)));
    }

    #[test]
    fn both_sides_of_midnight_end_at_the_same_morning() {
        let q = quiet("Europe/Madrid", "21:00", "09:00");
        // CEST (UTC+2): 23:00 local on the 15th = 21:00Z; 03:00 local on the 16th = 01:00Z;
        // both end at 09:00 local on the 16th = 07:00Z. Noon (10:00Z) is not quiet.
        assert_eq!(q.quiet_until(utc(JUN_15, 21, 0)), Some(utc(JUN_16, 7, 0)));
        assert_eq!(q.quiet_until(utc(JUN_16, 1, 0)), Some(utc(JUN_16, 7, 0)));
        assert_eq!(q.quiet_until(utc(JUN_15, 10, 0)), None);
    }

    #[test]
    fn same_day_interval_in_mexico_city() {
        // Mexico City has kept CST (UTC-6) all year since 2022: 13:00-15:00 local = 19:00-21:00Z.
        let q = quiet("America/Mexico_City", "13:00", "15:00");
        assert_eq!(q.quiet_until(utc(JUN_15, 20, 0)), Some(utc(JUN_15, 21, 0)));
        assert_eq!(q.quiet_until(utc(JUN_15, 18, 59)), None);
        assert_eq!(q.quiet_until(utc(JUN_15, 21, 0)), None);
        assert_eq!(q.quiet_until(utc(JUN_16, 1, 0)), None); // 19:00 local
    }

    #[test]
    fn end_in_the_spring_gap_is_taken_after_it() {
        // 2027-03-28 02:30 does not exist in Madrid; compatible: 03:30 CEST = 01:30Z.
        let q = quiet("Europe/Madrid", "01:00", "02:30");
        // 01:30 CET (UTC+1) = 00:30Z; 03:00 CEST (just after the gap) = 01:00Z.
        assert_eq!(q.quiet_until(utc(MAR_28, 0, 30)), Some(utc(MAR_28, 1, 30)));
        assert_eq!(q.quiet_until(utc(MAR_28, 1, 0)), Some(utc(MAR_28, 1, 30)));
        assert_eq!(q.quiet_until(utc(MAR_28, 1, 30)), None);
        // 01:00 CET = 00:00Z is the start.
        assert_eq!(q.quiet_until(Timestamp(utc(MAR_28, 0, 0).0 - 1)), None);
    }

    #[test]
    fn start_in_the_autumn_fold_is_its_first_occurrence() {
        // 2027-10-31 02:30 happens twice in Madrid: first CEST (UTC+2) = 00:30Z, then CET = 01:30Z.
        // Compatible takes the first; 05:00 CET (UTC+1) = 04:00Z.
        let q = quiet("Europe/Madrid", "02:30", "05:00");
        assert_eq!(q.quiet_until(utc(OCT_31, 0, 30)), Some(utc(OCT_31, 4, 0)));
        assert_eq!(q.quiet_until(Timestamp(utc(OCT_31, 0, 30).0 - 1)), None);
        // The second 02:30 (CET, 01:30Z) is inside the period that began at the first.
        assert_eq!(q.quiet_until(utc(OCT_31, 1, 30)), Some(utc(OCT_31, 4, 0)));
    }

    #[test]
    fn describe_shows_times_and_zone() {
        let q = quiet("Europe/Madrid", "21:00", "09:00");
        assert_eq!(q.describe(), "21:00-09:00 Europe/Madrid");
    }

    #[test]
    fn unknown_zone_is_named_with_an_example() {
        let e = QuietHours::new("Europe/Madird", "21:00", "09:00").unwrap_err();
        assert_eq!(
            e,
            "unknown time zone \"Europe/Madird\": use an IANA name such as \"Europe/Madrid\""
        );
        assert!(QuietHours::new("Etc/Unknown", "21:00", "09:00").is_err());
    }

    #[test]
    fn bad_times_name_the_problem() {
        let err = |start: &str| QuietHours::new("Europe/Madrid", start, "09:00").unwrap_err();
        let e = err("25:00");
        assert!(
            e.starts_with("quiet hours start \"25:00\": the hour must be 00 to 23;"),
            "{e}"
        );
        let e = err("9");
        assert!(
            e.starts_with("quiet hours start \"9\": not in HH:MM form;"),
            "{e}"
        );
        let e = err("09:60");
        assert!(
            e.starts_with("quiet hours start \"09:60\": the minutes must be 00 to 59;"),
            "{e}"
        );
        let e = QuietHours::new("Europe/Madrid", "21:00", "+9:00").unwrap_err();
        assert!(
            e.starts_with("quiet hours end \"+9:00\": not in HH:MM form;"),
            "{e}"
        );
        assert!(e.ends_with("such as \"21:00\" or \"09:00\""), "{e}");
    }

    #[test]
    fn equal_start_and_end_is_an_error() {
        let e = QuietHours::new("Europe/Madrid", "21:00", "21:00").unwrap_err();
        assert!(
            e.starts_with("quiet hours start and end are both \"21:00\""),
            "{e}"
        );
        assert!(e.contains("write two different times"), "{e}");
    }
}
