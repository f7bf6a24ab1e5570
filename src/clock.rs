//! Time, in one place.
//!
//! The core never reads a clock: every event carries its [`Timestamp`]. This module is the only
//! one allowed to call `SystemTime::now()` / `Instant::now()`; the runtime asks a [`Clock`] for
//! the time and passes it in, so tests can drive simulated time to the millisecond.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Local time in a tenant's time zone: its quiet hours.
pub mod hours;
pub mod quiet;

/// Milliseconds since the Unix epoch. Millisecond resolution is what the platform rules need
/// (the 24-hour window, SLA targets) and keeps arithmetic exact.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_ms(d)))
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// RFC 3339 in UTC, to the second ("2026-12-01T18:00:00Z"): how the audit log writes times.
impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = i64::try_from(self.0 / 1_000).unwrap_or(i64::MAX);
        match jiff::Timestamp::from_second(seconds) {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "{} ms since the epoch", self.0),
        }
    }
}

/// A duration in whole milliseconds, saturating (config values are bounded, this never saturates
/// in practice).
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where the runtime gets the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
            .unwrap_or_default();
        Timestamp(duration_ms(since_epoch))
    }
}

/// Measures how long a piece of work took (for latency histograms), monotonic.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Self(Instant::now())
    }
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The monotonic clock's now: for timeouts and ages measured by the runtime around the core
/// (readiness, snapshot ages), never for the core's rules (those take a [`Timestamp`]).
pub fn monotonic() -> Instant {
    Instant::now()
}

/// A few varying bits for spreading retries (jitter), from the wall clock's nanoseconds.
pub fn jitter_bits() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn a_timestamp_reads_as_utc_to_the_second() {
        assert_eq!(
            Timestamp(1_700_000_000_999).to_string(),
            "2023-11-14T22:13:20Z"
        );
    }
}
