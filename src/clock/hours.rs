//! Business hours of a queue: weekly opening intervals in an IANA time zone, and holidays
//! (local dates when it does not open at all). Deterministic like quiet hours (see
//! `clock::quiet`): the time is an input and the zone rules are the bundled database's; local
//! times become instants by the zone's rules for that date, with jiff's "compatible"
//! disambiguation across daylight-saving changes.
use std::collections::BTreeSet;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

use super::Timestamp;
use super::quiet::{parse_hhmm, zone};

/// The longest span whose open time is counted: a wait never lasts this long.
const MAX_SPAN_DAYS: i64 = 400;

/// When a queue is open.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    zone: TimeZone,
    /// Monday first: each day's intervals [start, end), sorted; an end of `None` is midnight
    /// at the end of the day ("24:00").
    week: [Vec<(Time, Option<Time>)>; 7],
    holidays: BTreeSet<Date>,
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

impl BusinessHours {
    /// `open`: entries like "mon-fri 09:00-18:00", "sat 10:00-14:00", "sun 00:00-24:00"
    /// (days `mon`..`sun`, a range wrapping the week like "sat-mon" allowed; a day may have
    /// several intervals, which must not overlap). `holidays`: local dates "2026-12-25". Errors
    /// say what is wrong and what to write.
    pub fn new(time_zone: &str, open: &[String], holidays: &[String]) -> Result<Self, String> {
        let zone = zone(time_zone)?;
        if open.is_empty() {
            return Err(
                "no opening hours: write at least one entry such as \"mon-fri 09:00-18:00\"".into(),
            );
        }
        let mut week: [Vec<(Time, Option<Time>)>; 7] = Default::default();
        for entry in open {
            let (days, interval) = entry.trim().split_once(' ').ok_or_else(|| {
                format!(
                    "opening hours {entry:?}: write days and hours, such as \"mon-fri 09:00-18:00\""
                )
            })?;
            let (start, end) = interval.trim().split_once('-').ok_or_else(|| {
                format!("opening hours {entry:?}: write the hours as HH:MM-HH:MM")
            })?;
            let start = parse_hhmm(&format!("opening hours {entry:?}: start"), start)?;
            let end = match end {
                "24:00" => None,
                end => Some(parse_hhmm(&format!("opening hours {entry:?}: end"), end)?),
            };
            if end.is_some_and(|e| e <= start) {
                return Err(format!(
                    "opening hours {entry:?}: the end is not after the start (an interval past \
                     midnight is two entries: \"fri 20:00-24:00\" and \"sat 00:00-02:00\")"
                ));
            }
            for day in day_range(entry, days)? {
                week[day].push((start, end));
            }
        }
        for (day, intervals) in week.iter_mut().enumerate() {
            intervals.sort();
            for pair in intervals.windows(2) {
                if pair[0].1.is_none_or(|end| end > pair[1].0) {
                    return Err(format!(
                        "opening hours overlap on {}: merge them into one interval",
                        DAYS[day].0
                    ));
                }
            }
        }
        let holidays = holidays
            .iter()
            .map(|h| {
                h.parse::<Date>().map_err(|_| {
                    format!("holiday {h:?} is not a date: write YYYY-MM-DD, such as \"2026-12-25\"")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            zone,
            week,
            holidays,
        })
    }

    /// None when open at `now`; else when it next opens (None as well if it never opens again
    /// within 400 days, which only a calendar of holidays could cause).
    pub fn closed_until(&self, now: Timestamp) -> Option<Timestamp> {
        let t = instant(now)?;
        let today = self.zone.to_datetime(t).date();
        let mut next = None;
        for day in days_from(today.yesterday().ok()?, MAX_SPAN_DAYS) {
            for (from, until) in self.periods(day) {
                if from <= t && t < until {
                    return None;
                }
                if from > t {
                    next = Some(from);
                    break;
                }
            }
            if next.is_some() {
                break;
            }
        }
        next.and_then(|n| u64::try_from(n.as_millisecond()).ok())
            .map(Timestamp::from_millis)
    }

    /// How long it was open in [from, to), in milliseconds (spans over 400 days count their
    /// last 400 days).
    pub fn open_ms_between(&self, from: Timestamp, to: Timestamp) -> u64 {
        if to <= from {
            return 0;
        }
        let (Some(a), Some(b)) = (instant(from), instant(to)) else {
            return 0;
        };
        let last = self.zone.to_datetime(b).date();
        // From the day before `from`'s (a period that started then may still run).
        let days =
            i64::from((last - self.zone.to_datetime(a).date()).get_days()).min(MAX_SPAN_DAYS);
        let Ok(start) = last.checked_sub(jiff::Span::new().days(days + 1)) else {
            return 0;
        };
        let mut open = 0i64;
        for day in days_from(start, days + 2) {
            for (p_from, p_until) in self.periods(day) {
                let lo = p_from.max(a);
                let hi = p_until.min(b);
                if hi > lo {
                    open += hi.as_millisecond() - lo.as_millisecond();
                }
            }
        }
        open.max(0) as u64
    }

    /// The opening intervals of local day `day` as instants (none on a holiday).
    fn periods(&self, day: Date) -> Vec<(jiff::Timestamp, jiff::Timestamp)> {
        if self.holidays.contains(&day) {
            return Vec::new();
        }
        let at = |date: Date, time: Time| {
            self.zone
                .to_ambiguous_timestamp(date.to_datetime(time))
                .compatible()
                .ok()
        };
        let weekday = day.weekday().to_monday_zero_offset() as usize;
        self.week[weekday]
            .iter()
            .filter_map(|&(start, end)| {
                let until = match end {
                    Some(end) => at(day, end)?,
                    None => at(day.tomorrow().ok()?, Time::midnight())?,
                };
                Some((at(day, start)?, until))
            })
            .collect()
    }
}

/// `count` local days from `first`.
fn days_from(first: Date, count: i64) -> impl Iterator<Item = Date> {
    std::iter::successors(Some(first), |d| d.tomorrow().ok()).take(count.max(0) as usize)
}

fn instant(t: Timestamp) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(i64::try_from(t.as_millis()).ok()?).ok()
}

/// The days "mon-fri", "sat", "sat-mon" name (Monday = 0).
fn day_range(entry: &str, days: &str) -> Result<Vec<usize>, String> {
    let day = |name: &str| {
        DAYS.iter().position(|(d, _)| *d == name.trim()).ok_or_else(|| {
            format!("opening hours {entry:?}: {name:?} is not a day; use mon, tue, wed, thu, fri, sat, sun")
        })
    };
    Ok(match days.split_once('-') {
        None => vec![day(days)?],
        Some((from, to)) => {
            let (from, to) = (day(from)?, day(to)?);
            let mut list = vec![from];
            let mut d = from;
            while d != to {
                d = (d + 1) % 7;
                list.push(d);
            }
            list
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local Madrid time `hh:mm` on 2027-MM-DD, as an instant.
    fn madrid(date: &str, hh: i8, mm: i8) -> Timestamp {
        let zone = TimeZone::get("Europe/Madrid").unwrap();
        let d: Date = date.parse().unwrap();
        let t = zone
            .to_ambiguous_timestamp(d.to_datetime(Time::new(hh, mm, 0, 0).unwrap()))
            .compatible()
            .unwrap();
        Timestamp::from_millis(t.as_millisecond() as u64)
    }

    fn office() -> BusinessHours {
        BusinessHours::new(
            "Europe/Madrid",
            &["mon-fri 09:00-18:00".into(), "sat 10:00-14:00".into()],
            &["2027-01-06".into()],
        )
        .unwrap()
    }

    #[test]
    fn open_closed_and_the_next_opening_across_nights_weekends_and_holidays() {
        let h = office();
        // 2027-01-04 is a Monday.
        assert_eq!(h.closed_until(madrid("2027-01-04", 10, 0)), None);
        assert_eq!(
            h.closed_until(madrid("2027-01-04", 22, 0)),
            Some(madrid("2027-01-05", 9, 0))
        );
        assert_eq!(
            h.closed_until(madrid("2027-01-04", 18, 0)),
            Some(madrid("2027-01-05", 9, 0)),
            "the end is excluded"
        );
        // Tuesday night → Thursday: Wednesday the 6th is a holiday.
        assert_eq!(
            h.closed_until(madrid("2027-01-05", 19, 0)),
            Some(madrid("2027-01-07", 9, 0))
        );
        // Saturday afternoon → Monday.
        assert_eq!(
            h.closed_until(madrid("2027-01-09", 15, 0)),
            Some(madrid("2027-01-11", 9, 0))
        );
    }

    #[test]
    fn open_time_between_two_instants_skips_nights_and_counts_dst_days_by_the_clock() {
        let h = office();
        // Monday 17:00 → Tuesday 10:00: one hour Monday, one Tuesday.
        assert_eq!(
            h.open_ms_between(madrid("2027-01-04", 17, 0), madrid("2027-01-05", 10, 0)),
            2 * 3_600_000
        );
        assert_eq!(
            h.open_ms_between(madrid("2027-01-04", 19, 0), madrid("2027-01-04", 23, 0)),
            0
        );
        // Round the clock on the night clocks go forward (Sun 2027-03-28): the day has 23
        // hours, all open.
        let always =
            BusinessHours::new("Europe/Madrid", &["mon-sun 00:00-24:00".into()], &[]).unwrap();
        assert_eq!(
            always.open_ms_between(madrid("2027-03-28", 0, 0), madrid("2027-03-29", 0, 0)),
            23 * 3_600_000
        );
        assert_eq!(always.closed_until(madrid("2027-03-28", 3, 30)), None);
    }

    #[test]
    fn bad_hours_say_what_to_write() {
        let bad = |open: &[&str], holidays: &[&str]| {
            let open: Vec<String> = open.iter().map(|s| s.to_string()).collect();
            let holidays: Vec<String> = holidays.iter().map(|s| s.to_string()).collect();
            BusinessHours::new("Europe/Madrid", &open, &holidays).unwrap_err()
        };
        assert!(bad(&[], &[]).contains("at least one"));
        assert!(bad(&["mon-fri"], &[]).contains("days and hours"));
        assert!(bad(&["lun 09:00-18:00"], &[]).contains("not a day"));
        assert!(bad(&["mon 18:00-09:00"], &[]).contains("two entries"));
        assert!(bad(&["mon 09:00-14:00", "mon 13:00-18:00"], &[]).contains("overlap on mon"));
        assert!(bad(&["mon 9:00-18:00"], &[]).contains("HH:MM"));
        assert!(bad(&["mon 09:00-18:00"], &["25/12"]).contains("YYYY-MM-DD"));
        assert!(
            BusinessHours::new("Mars/Olympus", &["mon 09:00-18:00".into()], &[])
                .unwrap_err()
                .contains("IANA")
        );
        // A range wrapping the week.
        let h = BusinessHours::new("UTC", &["sat-mon 10:00-12:00".into()], &[]).unwrap();
        assert_eq!(h.week.iter().filter(|d| !d.is_empty()).count(), 3);
    }
}
