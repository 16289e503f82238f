//! Calendar months (billing periods) and strict parsing of `YYYY-MM` and `YYYY-MM-DD`.
//!
//! Samples carry a plain date, so there is no time-zone arithmetic anywhere.

use chrono::{Datelike, NaiveDate};
use std::fmt;
use std::str::FromStr;

/// Years accepted by [`Period::parse`] and [`parse_day`].
const INPUT_YEARS: std::ops::RangeInclusive<i32> = 1900..=9999;

/// Why a period or day string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PeriodError {
    /// Not of the shape `YYYY-MM` (for a period) or `YYYY-MM-DD` (for a day).
    #[error("expected the form YYYY-MM (period) or YYYY-MM-DD (day) with zero-padded digits")]
    Malformed,
    /// The year is outside 1900..=9999.
    #[error("year {0} is outside 1900..=9999")]
    YearOutOfRange(i32),
    /// The month is not 01..=12.
    #[error("month {0} is not between 01 and 12")]
    MonthOutOfRange(u32),
    /// The day does not exist in that month (e.g. 2026-02-30).
    #[error("{year:04}-{month:02} has no day {day}")]
    NoSuchDay {
        /// The year of the rejected date.
        year: i32,
        /// The month of the rejected date.
        month: u32,
        /// The day that does not exist.
        day: u32,
    },
}

/// A calendar month, the unit of billing. Ordered chronologically; serialized as `"YYYY-MM"`.
///
/// Any month that `chrono` can represent is a valid `Period` (so [`Period::of`] is total), while
/// [`Period::parse`] and deserialization only accept years 1900..=9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// The month `year-month`, or `None` if `month` is not 1..=12 or the year is beyond what
    /// `chrono` can represent.
    pub fn new(year: i32, month: u32) -> Option<Self> {
        let years = NaiveDate::MIN.year()..=NaiveDate::MAX.year();
        ((1..=12).contains(&month) && years.contains(&year)).then_some(Self { year, month })
    }

    /// Parses a strict `YYYY-MM` (4-digit year 1900..=9999, 2-digit month 01..=12).
    ///
    /// ```
    /// let p = domain::Period::parse("2026-02").unwrap();
    /// assert_eq!((p.year(), p.month()), (2026, 2));
    /// assert!(domain::Period::parse("2026-2").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, PeriodError> {
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' {
            return Err(PeriodError::Malformed);
        }
        let year = year_of(&b[..4])?;
        let month = month_of(&b[5..])?;
        Ok(Self { year, month })
    }

    /// The period containing `date`.
    pub fn of(date: NaiveDate) -> Self {
        Self { year: date.year(), month: date.month() }
    }

    /// The latest closed month on `today`: the month before today's.
    pub fn latest_closed(today: NaiveDate) -> Self {
        Self::of(today).previous()
    }

    /// The calendar year.
    pub fn year(&self) -> i32 {
        self.year
    }

    /// The month number, 1..=12.
    pub fn month(&self) -> u32 {
        self.month
    }

    /// Number of days in the month (28..=31), leap years included.
    pub fn num_days(&self) -> u32 {
        match self.month {
            4 | 6 | 9 | 11 => 30,
            2 if is_leap_year(self.year) => 29,
            2 => 28,
            _ => 31,
        }
    }

    /// The first day of the month.
    pub fn first_day(&self) -> NaiveDate {
        // Every Period is within chrono's range by construction; the fallback is unreachable.
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN)
    }

    /// The last day of the month (`dn` in docs/billing-rules.md).
    pub fn last_day(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, self.num_days()).unwrap_or(NaiveDate::MAX)
    }

    /// The month before. Saturates at the earliest month `chrono` can represent.
    pub fn previous(&self) -> Self {
        let (year, month) = if self.month == 1 { (self.year - 1, 12) } else { (self.year, self.month - 1) };
        Self::new(year, month).unwrap_or(*self)
    }

    /// The month after. Saturates at the latest month `chrono` can represent.
    pub fn next(&self) -> Self {
        let (year, month) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        Self::new(year, month).unwrap_or(*self)
    }

    /// Whether `date` falls in this month.
    pub fn contains(&self, date: NaiveDate) -> bool {
        date.year() == self.year && date.month() == self.month
    }

    /// The days of the month, first to last.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        self.first_day().iter_days().take(self.num_days() as usize)
    }
}

impl fmt::Display for Period {
    /// Writes `YYYY-MM`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether a period may be pushed to ConnectWise (only the latest closed month; docs/billing-rules.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushablePeriod {
    /// The latest closed month: may be pushed.
    Ok,
    /// The current or a future month: refused with `PERIOD_NOT_CLOSED`.
    NotClosed,
    /// Older than the latest closed month: refused with `PERIOD_SUPERSEDED`.
    Superseded,
}

/// Classifies `period` against `today` for a non-dry run.
///
/// ```
/// use chrono::NaiveDate;
/// use domain::{check_pushable, Period, PushablePeriod};
/// let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
/// assert_eq!(check_pushable(Period::parse("2026-02").unwrap(), today), PushablePeriod::Ok);
/// assert_eq!(check_pushable(Period::parse("2026-03").unwrap(), today), PushablePeriod::NotClosed);
/// assert_eq!(check_pushable(Period::parse("2026-01").unwrap(), today), PushablePeriod::Superseded);
/// ```
pub fn check_pushable(period: Period, today: NaiveDate) -> PushablePeriod {
    let current = Period::of(today);
    if period >= current {
        PushablePeriod::NotClosed
    } else if period < current.previous() {
        PushablePeriod::Superseded
    } else {
        PushablePeriod::Ok
    }
}

/// Parses a strict `YYYY-MM-DD` calendar date (zero-padded, year 1900..=9999, day must exist).
///
/// ```
/// assert!(domain::parse_day("2028-02-29").is_ok());
/// assert!(domain::parse_day("2026-02-29").is_err());
/// ```
pub fn parse_day(s: &str) -> Result<NaiveDate, PeriodError> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(PeriodError::Malformed);
    }
    let year = year_of(&b[..4])?;
    let month = month_of(&b[5..7])?;
    let day = digits(&b[8..]).ok_or(PeriodError::Malformed)?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or(PeriodError::NoSuchDay { year, month, day })
}

/// Proleptic Gregorian leap-year rule.
fn is_leap_year(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Value of a byte string made only of ASCII digits (at most 4 here), or `None`.
fn digits(s: &[u8]) -> Option<u32> {
    (!s.is_empty() && s.iter().all(u8::is_ascii_digit)).then(|| s.iter().fold(0, |acc, b| acc * 10 + u32::from(b - b'0')))
}

/// A 4-digit year in the accepted input range.
fn year_of(s: &[u8]) -> Result<i32, PeriodError> {
    let year = digits(s).ok_or(PeriodError::Malformed)?;
    let year = i32::try_from(year).map_err(|_| PeriodError::Malformed)?;
    if INPUT_YEARS.contains(&year) { Ok(year) } else { Err(PeriodError::YearOutOfRange(year)) }
}

/// A 2-digit month 01..=12.
fn month_of(s: &[u8]) -> Result<u32, PeriodError> {
    let month = digits(s).ok_or(PeriodError::Malformed)?;
    if (1..=12).contains(&month) { Ok(month) } else { Err(PeriodError::MonthOutOfRange(month)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }
    fn p(s: &str) -> Period {
        Period::parse(s).unwrap()
    }

    #[test]
    fn parses_strict_periods() {
        assert_eq!(p("2026-02"), Period::new(2026, 2).unwrap());
        assert_eq!(p("1900-01").to_string(), "1900-01");
        assert_eq!(p("9999-12").to_string(), "9999-12");
        assert_eq!("2026-11".parse::<Period>(), Ok(Period::new(2026, 11).unwrap()));
        use PeriodError::*;
        for s in [
            "2026-2",
            "26-02",
            "2026/02",
            "2026-02-01",
            " 2026-02",
            "2026-02 ",
            "",
            "2026-+2",
            "+202-02",
            "2026--2",
            "２０２６-02",
            "abcd-ef",
            "2€-02",
            "2026-€",
        ] {
            assert_eq!(Period::parse(s), Err(Malformed), "{s:?}");
        }
        assert_eq!(Period::parse("2026-00"), Err(MonthOutOfRange(0)));
        assert_eq!(Period::parse("2026-13"), Err(MonthOutOfRange(13)));
        assert_eq!(Period::parse("1899-12"), Err(YearOutOfRange(1899)));
        assert_eq!(Period::parse("0000-01"), Err(YearOutOfRange(0)));
    }

    #[test]
    fn new_validates_month() {
        assert!(Period::new(2026, 0).is_none());
        assert!(Period::new(2026, 13).is_none());
        assert!(Period::new(i32::MAX, 1).is_none());
        assert!(Period::new(1, 1).is_some());
    }

    #[test]
    fn month_lengths() {
        assert_eq!(p("2026-02").num_days(), 28);
        assert_eq!(p("2028-02").num_days(), 29);
        assert_eq!(p("2000-02").num_days(), 29);
        assert_eq!(p("1900-02").num_days(), 28);
        assert_eq!(p("2026-04").num_days(), 30);
        assert_eq!(p("2026-01").num_days(), 31);
        assert_eq!(p("2026-12").num_days(), 31);
        assert_eq!(p("2028-02").last_day(), d(2028, 2, 29));
        assert_eq!(p("2026-02").last_day(), d(2026, 2, 28));
        assert_eq!(p("2026-04").first_day(), d(2026, 4, 1));
        assert_eq!(p("2026-04").last_day(), d(2026, 4, 30));
        // num_days agrees with chrono for every month of a few centuries
        let mut m = p("1900-01");
        while m < p("2101-01") {
            assert_eq!(m.last_day().succ_opt().unwrap(), m.next().first_day());
            assert_eq!(m.days().count() as u32, m.num_days());
            m = m.next();
        }
    }

    #[test]
    fn navigation_and_membership() {
        assert_eq!(p("2026-01").previous(), p("2025-12"));
        assert_eq!(p("2025-12").next(), p("2026-01"));
        assert_eq!(p("2026-06").next().previous(), p("2026-06"));
        assert_eq!(Period::of(d(2026, 2, 28)), p("2026-02"));
        assert!(p("2026-02").contains(d(2026, 2, 1)));
        assert!(p("2026-02").contains(d(2026, 2, 28)));
        assert!(!p("2026-02").contains(d(2026, 3, 1)));
        assert!(!p("2026-02").contains(d(2025, 2, 1)));
        let days: Vec<_> = p("2028-02").days().collect();
        assert_eq!(days.len(), 29);
        assert_eq!(days[0], d(2028, 2, 1));
        assert_eq!(days[28], d(2028, 2, 29));
        assert!(p("2025-12") < p("2026-01"));
    }

    #[test]
    fn navigation_saturates_at_calendar_bounds() {
        let first = Period::of(NaiveDate::MIN);
        assert_eq!(first.previous(), first);
        assert_eq!(first.first_day(), NaiveDate::MIN);
        let last = Period::of(NaiveDate::MAX);
        assert_eq!(last.next(), last);
        assert_eq!(last.last_day(), NaiveDate::MAX);
    }

    #[test]
    fn latest_closed_and_pushability() {
        assert_eq!(Period::latest_closed(d(2026, 1, 15)), p("2025-12"));
        assert_eq!(Period::latest_closed(d(2026, 3, 1)), p("2026-02"));
        let today = d(2026, 3, 31);
        assert_eq!(check_pushable(p("2026-02"), today), PushablePeriod::Ok);
        assert_eq!(check_pushable(p("2026-03"), today), PushablePeriod::NotClosed);
        assert_eq!(check_pushable(p("2027-01"), today), PushablePeriod::NotClosed);
        assert_eq!(check_pushable(p("2026-01"), today), PushablePeriod::Superseded);
        assert_eq!(check_pushable(p("2020-01"), today), PushablePeriod::Superseded);
        assert_eq!(check_pushable(p("2025-12"), d(2026, 1, 1)), PushablePeriod::Ok);
    }

    #[test]
    fn serde_as_string() {
        let json = serde_json::to_string(&p("2026-02")).unwrap();
        assert_eq!(json, "\"2026-02\"");
        assert_eq!(serde_json::from_str::<Period>(&json).unwrap(), p("2026-02"));
        assert!(serde_json::from_str::<Period>("\"2026-2\"").is_err());
        assert!(serde_json::from_str::<Period>("202602").is_err());
    }

    #[test]
    fn parses_strict_days() {
        assert_eq!(parse_day("2026-02-28"), Ok(d(2026, 2, 28)));
        assert_eq!(parse_day("2028-02-29"), Ok(d(2028, 2, 29)));
        assert_eq!(parse_day("2026-02-29"), Err(PeriodError::NoSuchDay { year: 2026, month: 2, day: 29 }));
        assert!(matches!(parse_day("2026-02-30"), Err(PeriodError::NoSuchDay { .. })));
        assert!(matches!(parse_day("2026-04-31"), Err(PeriodError::NoSuchDay { .. })));
        assert!(matches!(parse_day("2026-01-00"), Err(PeriodError::NoSuchDay { .. })));
        for s in [
            "2026-2-3",
            "2026-02-3",
            "2026-02-03x",
            "2026-02-03T00:00",
            " 2026-02-03",
            "20260203",
            "2026/02/03",
            "2026-02-+3",
            "",
            "2026-02",
            "2€-02-03",
            "2026-€-1",
        ] {
            assert_eq!(parse_day(s), Err(PeriodError::Malformed), "{s:?}");
        }
        assert_eq!(parse_day("2026-13-01"), Err(PeriodError::MonthOutOfRange(13)));
        assert_eq!(parse_day("1899-12-31"), Err(PeriodError::YearOutOfRange(1899)));
        assert_eq!(PeriodError::NoSuchDay { year: 2026, month: 2, day: 30 }.to_string(), "2026-02 has no day 30");
    }
}
