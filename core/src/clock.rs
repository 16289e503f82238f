//! The service's one source of "now" and "today".
//!
//! Every rule that depends on the date — which month may be pushed, the monthly tick and its
//! catch-up, reconciliation ages, backoff and `Retry-After`, token `exp`/`nbf`, audit timestamps —
//! asks a [`Clock`], never the operating system directly. Production runs on [`SystemClock`];
//! tests pin the calendar with [`ShiftedClock`] (runs in real time from a chosen instant, so
//! timeouts and backoff behave as usual) or step it with [`ManualClock`].
//!
//! Queues and timers still wait in real time: a job due at a service instant `at` waits
//! `at - clock.now()` of real time ([`Clock::until`]).
use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Utc};

/// A source of the current instant.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Today's calendar date in UTC (billing periods are UTC calendar months).
    fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// How long from now until `at` (zero if `at` has passed): what a timer or a delayed job must
    /// wait in real time to fire at the service instant `at`.
    fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now()).to_std().unwrap_or(Duration::ZERO)
    }
}

/// A shared clock, as the application and the engine hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock. The only place the service reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock moved to start at a chosen instant; it then runs in real time.
///
/// Integration tests, demos and `CLOCK_START` use it: the calendar is pinned, while timeouts,
/// backoff and queue delays keep their real durations.
#[derive(Clone, Copy, Debug)]
pub struct ShiftedClock {
    offset: chrono::TimeDelta,
}

impl ShiftedClock {
    /// A clock that shows `at` now.
    ///
    /// ```
    /// use sync_core::clock::{Clock, ShiftedClock};
    /// let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").unwrap().to_utc();
    /// let clock = ShiftedClock::starting_at(at);
    /// assert!(clock.now() >= at && clock.now() - at < chrono::TimeDelta::seconds(5));
    /// ```
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        ShiftedClock { offset: at - Utc::now() }
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// A clock that only moves when told to (stepped tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The clock a process runs on: the system clock, or — when `CLOCK_START` is set (tests, demos of
/// a given month) — one that starts at that instant.
pub fn from_settings(settings: &crate::Settings) -> SharedClock {
    match settings.clock_start {
        Some(at) => {
            tracing::warn!(clock_start = %at, "CLOCK_START is set: this process's clock starts at {at}, not at the real time");
            Arc::new(ShiftedClock::starting_at(at))
        }
        None => Arc::new(SystemClock),
    }
}

/// Sleep until the clock shows `at` (or later). Re-checks at least every `recheck`, so a
/// [`ManualClock`] moved by a test, or a shifted one, is followed.
pub async fn sleep_until(clock: &dyn Clock, at: DateTime<Utc>, recheck: Duration) {
    loop {
        let left = clock.until(at);
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(recheck)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let at = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).single().expect("date");
        let c = ManualClock::new(at);
        assert_eq!(c.now(), at);
        assert_eq!(c.today(), NaiveDate::from_ymd_opt(2024, 2, 29).expect("date"));
        c.advance(Duration::from_secs(1));
        assert_eq!(c.today(), NaiveDate::from_ymd_opt(2024, 3, 1).expect("date"));
        assert_eq!(c.until(at), Duration::ZERO, "the past is due at once");
        assert_eq!(c.until(at + chrono::TimeDelta::seconds(10)), Duration::from_secs(9));
    }

    #[test]
    fn shifted_clock_shows_the_pinned_day_and_runs_on() {
        let at = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).single().expect("date");
        let c = ShiftedClock::starting_at(at);
        let first = c.now();
        assert!(first >= at && first - at < chrono::TimeDelta::seconds(5));
        assert_eq!(c.today(), NaiveDate::from_ymd_opt(2027, 1, 1).expect("date"));
        assert!(c.now() >= first);
    }

    #[tokio::test]
    async fn sleep_until_follows_a_manual_clock() {
        let at = Utc.with_ymd_and_hms(2026, 3, 31, 23, 59, 59).single().expect("date");
        let c = Arc::new(ManualClock::new(at));
        let c2 = c.clone();
        let waiter =
            tokio::spawn(async move { sleep_until(c2.as_ref(), at + chrono::TimeDelta::hours(1), Duration::from_millis(10)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        c.advance(Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("wakes up").expect("task");
    }
}
