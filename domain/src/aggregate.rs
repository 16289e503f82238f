//! The monthly value of a product mapping (docs/billing-rules.md): per-period statistics of daily samples and the
//! four interval methods. This is the money path: every step is exact integer arithmetic on
//! micro-units, and the quantity is rounded up once, at the end.

use crate::catalog::IntervalMethod;
use crate::money::{MICROS_PER_UNIT, ceil_units, div_ceil_i128, div_round_half_even, saturate_i64};
use crate::period::Period;
use chrono::NaiveDate;
use std::collections::BTreeMap;

/// The days a license is billable: from `provisioned_on` to `deprovisioned_on`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LicenseWindow {
    /// First day of the license (a partial day: excluded from AVERAGE).
    pub provisioned_on: NaiveDate,
    /// Last day of the license, if it was deprovisioned.
    pub deprovisioned_on: Option<NaiveDate>,
}

impl LicenseWindow {
    /// Whether `day` lies inside the window (both ends inclusive).
    pub fn contains(&self, day: NaiveDate) -> bool {
        day >= self.provisioned_on && self.deprovisioned_on.is_none_or(|end| day <= end)
    }

    /// Whether the license ended before the period's last day (`dn`): the service is gone at month end.
    pub fn deprovisioned_before_end_of(&self, period: Period) -> bool {
        self.deprovisioned_on.is_some_and(|end| end < period.last_day())
    }
}

/// Statistics of one (customer, module, usage) in one period, restricted to the license window.
///
/// A "counted day" is a day inside both the period and the license window. The database computes
/// these with one set-based query; [`UsageMonthStats::from_samples`] is the reference implementation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageMonthStats {
    /// Sum of micro-units over counted days with a sample, excluding the provisioning day.
    pub avg_sum: i128,
    /// Number of days summed in `avg_sum`.
    pub avg_days: u32,
    /// Largest sample over counted days (provisioning day included).
    pub max: Option<i64>,
    /// Number of counted days with a sample (provisioning day included).
    pub sample_days: u32,
    /// The sample of the period's last day, if that day is counted.
    pub last_day: Option<i64>,
    /// The latest counted sample in the period, with its day.
    pub latest: Option<(NaiveDate, i64)>,
}

impl UsageMonthStats {
    /// Computes the statistics from daily samples `(day, micro-units)`.
    ///
    /// Samples outside the period or the license window are ignored, and the result does not depend
    /// on the order of the slice. A day should have at most one sample (the database key guarantees
    /// it); if a day appears more than once, the **last one in slice order wins**, like the upsert
    /// that re-reporting a day performs.
    pub fn from_samples(period: Period, window: &LicenseWindow, samples: &[(NaiveDate, i64)]) -> Self {
        let by_day: BTreeMap<NaiveDate, i64> =
            samples.iter().filter(|(day, _)| period.contains(*day) && window.contains(*day)).copied().collect(); // later entries overwrite earlier ones: the last duplicate wins

        let mut stats = Self::default();
        for (&day, &value) in &by_day {
            stats.sample_days += 1;
            stats.max = Some(stats.max.map_or(value, |m| m.max(value)));
            if day != window.provisioned_on {
                stats.avg_sum += i128::from(value);
                stats.avg_days += 1;
            }
        }
        stats.last_day = by_day.get(&period.last_day()).copied();
        stats.latest = by_day.last_key_value().map(|(&day, &value)| (day, value));
        stats
    }
}

/// The monthly value of one mapping, ready to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MonthlyValue {
    /// The exact value in micro-units (AVERAGE: rounded half-even to 6 decimals). Display it with
    /// [`crate::format_micros`].
    pub value_micros: i64,
    /// The quantity sent to ConnectWise: the exact value rounded up to a whole number.
    pub quantity: i64,
    /// Counted days with a sample behind the value (AVERAGE: the days averaged).
    pub sample_days: u32,
    /// LAST_DAY/SUM: the last day had no sample and an earlier one was used.
    pub fallback: bool,
}

named_enum! {
    /// Why a push was recorded `SKIPPED` instead of being sent.
    pub enum SkipReason {
        /// No counted day with a sample in the period (and the license still runs).
        NoConsumption => "NO_CONSUMPTION",
        /// The quantity equals the last succeeded push of that mapping, addition and period.
        Unchanged => "UNCHANGED",
        /// The run was a dry run: computed and stored, never sent.
        DryRun => "DRY_RUN",
        /// A newer period has been closed; this one may no longer be pushed.
        Superseded => "SUPERSEDED",
    }
}

/// Computes the monthly value of a mapping for `period` (docs/billing-rules.md).
///
/// `stats` holds one element for AVERAGE, MAXIMUM and LAST_DAY (an empty slice means no data; extra
/// elements are ignored), and one element per Enterprise Workloads storage type present for SUM
/// (missing types contribute nothing). Returns `Err(SkipReason::NoConsumption)` when there is nothing
/// to bill and the license still runs at month end.
///
/// The AVERAGE quantity is `⌈avg_sum ÷ (avg_days × 10⁶)⌉`, computed from the exact sum, **not** the
/// ceiling of the rounded displayed value: an exact mean of 3.0000004 displays as `3` but bills 4,
/// because rounding to 6 decimals first would under-bill.
///
/// ```
/// use chrono::NaiveDate;
/// use domain::*;
/// let day = |d| NaiveDate::from_ymd_opt(2026, 2, d).unwrap();
/// let period = Period::parse("2026-02").unwrap();
/// let window = LicenseWindow { provisioned_on: day(10), deprovisioned_on: None };
/// let samples = [(day(10), 100_000_000), (day(11), 3_500_000), (day(12), 4_000_000)];
/// let stats = UsageMonthStats::from_samples(period, &window, &samples);
/// let v = aggregate_month(IntervalMethod::Average, period, &window, &[stats]).unwrap();
/// assert_eq!((format_micros(v.value_micros).as_str(), v.quantity, v.sample_days), ("3.75", 4, 2));
/// ```
pub fn aggregate_month(
    method: IntervalMethod,
    period: Period,
    window: &LicenseWindow,
    stats: &[UsageMonthStats],
) -> Result<MonthlyValue, SkipReason> {
    let relevant = match method {
        IntervalMethod::Sum => stats,
        _ => &stats[..stats.len().min(1)],
    };
    let gone_at_month_end = window.deprovisioned_before_end_of(period);
    if gone_at_month_end && relevant.iter().all(|s| s.sample_days == 0) {
        // Billing stops: push 0 so the addition no longer carries last month's quantity.
        return Ok(MonthlyValue { value_micros: 0, quantity: 0, sample_days: 0, fallback: false });
    }
    let no_data = UsageMonthStats::default();
    let single = relevant.first().unwrap_or(&no_data);
    match method {
        IntervalMethod::Average => average(single),
        IntervalMethod::Maximum => {
            let max = single.max.ok_or(SkipReason::NoConsumption)?;
            Ok(MonthlyValue { value_micros: max, quantity: ceil_units(max), sample_days: single.sample_days, fallback: false })
        }
        IntervalMethod::LastDay => {
            let (value, fallback) = last_day_value(single, gone_at_month_end).ok_or(SkipReason::NoConsumption)?;
            Ok(MonthlyValue { value_micros: value, quantity: ceil_units(value), sample_days: single.sample_days, fallback })
        }
        IntervalMethod::Sum => sum_of_last_days(relevant, gone_at_month_end),
    }
}

/// AVERAGE: exact mean over the counted days except the provisioning day.
fn average(stats: &UsageMonthStats) -> Result<MonthlyValue, SkipReason> {
    if stats.avg_days == 0 {
        return Err(SkipReason::NoConsumption);
    }
    let days = i128::from(stats.avg_days);
    Ok(MonthlyValue {
        value_micros: saturate_i64(div_round_half_even(stats.avg_sum, days)),
        // From the exact sum, not from the rounded value (see `aggregate_month`).
        quantity: saturate_i64(div_ceil_i128(stats.avg_sum, days * i128::from(MICROS_PER_UNIT))),
        sample_days: stats.avg_days,
        fallback: false,
    })
}

/// LAST_DAY of one usage: `(value, fallback)`, or `None` when there is nothing to bill.
fn last_day_value(stats: &UsageMonthStats, gone_at_month_end: bool) -> Option<(i64, bool)> {
    if gone_at_month_end {
        Some((0, false))
    } else if let Some(value) = stats.last_day {
        Some((value, false))
    } else {
        stats.latest.map(|(_, value)| (value, true))
    }
}

/// SUM: the LAST_DAY values of the storage types present, added exactly.
fn sum_of_last_days(stats: &[UsageMonthStats], gone_at_month_end: bool) -> Result<MonthlyValue, SkipReason> {
    let mut total: i128 = 0;
    let mut any_value = false;
    let mut fallback = false;
    let mut sample_days = 0;
    for s in stats {
        sample_days = sample_days.max(s.sample_days);
        if let Some((value, fell_back)) = last_day_value(s, gone_at_month_end) {
            total += i128::from(value);
            any_value = true;
            fallback |= fell_back;
        }
    }
    if !any_value {
        return Err(SkipReason::NoConsumption);
    }
    let value = saturate_i64(total);
    Ok(MonthlyValue { value_micros: value, quantity: ceil_units(value), sample_days, fallback })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{format_micros, parse_micros};
    use IntervalMethod::*;

    fn d(s: &str) -> NaiveDate {
        crate::parse_day(s).unwrap()
    }
    fn p(s: &str) -> Period {
        Period::parse(s).unwrap()
    }
    fn m(s: &str) -> i64 {
        parse_micros(s).unwrap()
    }
    fn window(from: &str, to: Option<&str>) -> LicenseWindow {
        LicenseWindow { provisioned_on: d(from), deprovisioned_on: to.map(d) }
    }
    fn samples(list: &[(&str, &str)]) -> Vec<(NaiveDate, i64)> {
        list.iter().map(|(day, v)| (d(day), m(v))).collect()
    }
    /// Aggregates one usage's samples.
    fn agg(method: IntervalMethod, period: &str, w: &LicenseWindow, list: &[(&str, &str)]) -> Result<MonthlyValue, SkipReason> {
        let stats = UsageMonthStats::from_samples(p(period), w, &samples(list));
        aggregate_month(method, p(period), w, &[stats])
    }
    fn mv(value: &str, quantity: i64, sample_days: u32, fallback: bool) -> MonthlyValue {
        MonthlyValue { value_micros: m(value), quantity, sample_days, fallback }
    }
    const ZERO: MonthlyValue = MonthlyValue { value_micros: 0, quantity: 0, sample_days: 0, fallback: false };

    #[test]
    fn worked_example_from_spec() {
        let w = window("2026-02-10", None);
        let v = agg(Average, "2026-02", &w, &[("2026-02-10", "100"), ("2026-02-11", "3.5"), ("2026-02-12", "4")]).unwrap();
        assert_eq!(format_micros(v.value_micros), "3.75");
        assert_eq!(v, mv("3.75", 4, 2, false));
    }

    #[test]
    fn from_samples_computes_every_statistic() {
        let w = window("2026-02-10", None);
        let s = UsageMonthStats::from_samples(
            p("2026-02"),
            &w,
            &samples(&[
                ("2026-02-12", "4"),
                ("2026-02-10", "100"),
                ("2026-02-09", "999"), // before the window
                ("2026-03-01", "999"), // after the period
                ("2026-01-31", "999"), // before the period
                ("2026-02-28", "2.5"),
                ("2026-02-11", "3.5"),
            ]),
        );
        assert_eq!(
            s,
            UsageMonthStats {
                avg_sum: i128::from(m("10")),
                avg_days: 3,
                max: Some(m("100")),
                sample_days: 4,
                last_day: Some(m("2.5")),
                latest: Some((d("2026-02-28"), m("2.5"))),
            }
        );
    }

    #[test]
    fn from_samples_last_duplicate_wins() {
        let w = window("2026-01-01", None);
        let s = UsageMonthStats::from_samples(p("2026-02"), &w, &samples(&[("2026-02-05", "1"), ("2026-02-05", "7"), ("2026-02-05", "3")]));
        assert_eq!(s.sample_days, 1);
        assert_eq!(s.max, Some(m("3")));
        assert_eq!(s.avg_sum, i128::from(m("3")));
    }

    #[test]
    fn quantity_is_ceil_of_exact_average_not_of_rounded_value() {
        // Mean = 15.000002 / 5 = 3.0000004: displays 3.000000, bills 4.
        let w = window("2025-12-01", None);
        let list = [("2026-01-05", "3.000001"), ("2026-01-06", "3.000001"), ("2026-01-07", "3"), ("2026-01-08", "3"), ("2026-01-09", "3")];
        let v = agg(Average, "2026-01", &w, &list).unwrap();
        assert_eq!(v, mv("3", 4, 5, false));
        assert_eq!(format_micros(v.value_micros), "3");
    }

    #[test]
    fn average_rounds_half_even() {
        let w = window("2025-12-01", None);
        // 0.000005 / 2 = 0.0000025 → 0.000002; 0.000007 / 2 = 0.0000035 → 0.000004
        let a = agg(Average, "2026-01", &w, &[("2026-01-01", "0.000002"), ("2026-01-02", "0.000003")]).unwrap();
        assert_eq!(a, mv("0.000002", 1, 2, false));
        let b = agg(Average, "2026-01", &w, &[("2026-01-01", "0.000003"), ("2026-01-02", "0.000004")]).unwrap();
        assert_eq!(b, mv("0.000004", 1, 2, false));
    }

    #[test]
    fn thirds_that_add_up_to_one_bill_one() {
        let w = window("2025-12-01", None);
        let list = [("2026-01-01", "0.333333"), ("2026-01-02", "0.333333"), ("2026-01-03", "0.333334")];
        // AVERAGE: exact mean 1/3 → quantity 1
        assert_eq!(agg(Average, "2026-01", &w, &list), Ok(mv("0.333333", 1, 3, false)));
        // SUM over the three storage types' last days: exactly 1 → quantity 1, not 2 or 3
        let stats: Vec<_> =
            list.iter().map(|(_, v)| UsageMonthStats::from_samples(p("2026-01"), &w, &samples(&[("2026-01-31", v)]))).collect();
        assert_eq!(aggregate_month(Sum, p("2026-01"), &w, &stats), Ok(mv("1", 1, 1, false)));
        // MAXIMUM of an exact integer written with 6 decimals
        assert_eq!(agg(Maximum, "2026-01", &w, &[("2026-01-09", "1.000000")]), Ok(mv("1", 1, 1, false)));
    }

    #[test]
    fn quantity_rounds_up_once() {
        let w = window("2025-12-01", None);
        for (value, quantity) in [("5.000001", 6), ("5", 5), ("0.000001", 1), ("0", 0), ("1000000000", 1_000_000_000)] {
            for method in [Maximum, LastDay] {
                assert_eq!(agg(method, "2026-01", &w, &[("2026-01-31", value)]), Ok(mv(value, quantity, 1, false)), "{method} {value}");
            }
        }
    }

    #[test]
    fn months_of_every_length() {
        let w = window("2020-01-01", None);
        for (period, last) in [("2026-02", "2026-02-28"), ("2028-02", "2028-02-29"), ("2026-04", "2026-04-30"), ("2026-01", "2026-01-31")] {
            let first = format!("{period}-01");
            let list = [(first.as_str(), "1"), (last, "2")];
            assert_eq!(agg(LastDay, period, &w, &list), Ok(mv("2", 2, 2, false)));
            assert_eq!(agg(Average, period, &w, &list), Ok(mv("1.5", 2, 2, false)));
            assert_eq!(agg(Maximum, period, &w, &list), Ok(mv("2", 2, 2, false)));
        }
        // The day after a non-leap February's end is March, not part of the period.
        assert_eq!(agg(LastDay, "2026-02", &w, &[("2026-03-01", "9"), ("2026-02-27", "1")]), Ok(mv("1", 1, 1, true)));
        // 2028-02-28 is not the last day of a leap February: fallback.
        assert_eq!(agg(LastDay, "2028-02", &w, &[("2028-02-28", "1")]), Ok(mv("1", 1, 1, true)));
    }

    #[test]
    fn provisioned_on_first_day_excludes_it_from_average() {
        let w = window("2026-04-01", None);
        let list = [("2026-04-01", "50"), ("2026-04-02", "2"), ("2026-04-30", "4")];
        assert_eq!(agg(Average, "2026-04", &w, &list), Ok(mv("3", 3, 2, false)));
        assert_eq!(agg(Maximum, "2026-04", &w, &list), Ok(mv("50", 50, 3, false)));
        assert_eq!(agg(LastDay, "2026-04", &w, &list), Ok(mv("4", 4, 3, false)));
    }

    #[test]
    fn provisioned_on_last_day_of_month() {
        let w = window("2026-01-31", None);
        let list = [("2026-01-30", "9"), ("2026-01-31", "7")];
        // the only counted day is the provisioning day: no average
        assert_eq!(agg(Average, "2026-01", &w, &list), Err(SkipReason::NoConsumption));
        assert_eq!(agg(Maximum, "2026-01", &w, &list), Ok(mv("7", 7, 1, false)));
        assert_eq!(agg(LastDay, "2026-01", &w, &list), Ok(mv("7", 7, 1, false)));
    }

    #[test]
    fn single_day() {
        let w = window("2026-01-01", None);
        let list = [("2026-01-15", "2.4")];
        assert_eq!(agg(Average, "2026-01", &w, &list), Ok(mv("2.4", 3, 1, false)));
        assert_eq!(agg(Maximum, "2026-01", &w, &list), Ok(mv("2.4", 3, 1, false)));
        assert_eq!(agg(LastDay, "2026-01", &w, &list), Ok(mv("2.4", 3, 1, true)));
    }

    #[test]
    fn no_data_is_no_consumption() {
        let w = window("2026-01-01", None);
        for method in IntervalMethod::ALL {
            assert_eq!(agg(method, "2026-02", &w, &[]), Err(SkipReason::NoConsumption), "{method}");
            assert_eq!(aggregate_month(method, p("2026-02"), &w, &[]), Err(SkipReason::NoConsumption), "{method} with empty stats");
            // samples only outside the period do not count
            assert_eq!(agg(method, "2026-02", &w, &[("2026-01-31", "5"), ("2026-03-01", "5")]), Err(SkipReason::NoConsumption), "{method}");
        }
    }

    #[test]
    fn provisioned_after_the_period() {
        let w = window("2026-03-05", None);
        let list = [("2026-02-10", "5"), ("2026-02-28", "5")];
        for method in IntervalMethod::ALL {
            assert_eq!(agg(method, "2026-02", &w, &list), Err(SkipReason::NoConsumption), "{method}");
        }
    }

    #[test]
    fn deprovisioned_mid_month_without_samples_bills_zero() {
        let w = window("2025-06-01", Some("2026-02-14"));
        let list = [("2026-02-20", "5")]; // after deprovisioning: not counted
        for method in IntervalMethod::ALL {
            assert_eq!(agg(method, "2026-02", &w, &list), Ok(ZERO), "{method}");
            assert_eq!(aggregate_month(method, p("2026-02"), &w, &[]), Ok(ZERO), "{method} with empty stats");
        }
        // deprovisioned in an earlier month: billing stays stopped
        let earlier = window("2025-06-01", Some("2025-12-31"));
        assert_eq!(agg(Average, "2026-02", &earlier, &[]), Ok(ZERO));
    }

    #[test]
    fn deprovisioned_mid_month_with_samples() {
        let w = window("2025-06-01", Some("2026-02-14"));
        let list = [("2026-02-01", "2"), ("2026-02-14", "4"), ("2026-02-20", "50")];
        assert_eq!(agg(Average, "2026-02", &w, &list), Ok(mv("3", 3, 2, false)));
        assert_eq!(agg(Maximum, "2026-02", &w, &list), Ok(mv("4", 4, 2, false)));
        // the service is gone at month end: LAST_DAY bills 0 without fallback
        assert_eq!(agg(LastDay, "2026-02", &w, &list), Ok(MonthlyValue { sample_days: 2, ..ZERO }));
        let stats = UsageMonthStats::from_samples(p("2026-02"), &w, &samples(&list));
        assert_eq!(aggregate_month(Sum, p("2026-02"), &w, &[stats]), Ok(MonthlyValue { sample_days: 2, ..ZERO }));
    }

    #[test]
    fn deprovisioned_on_last_day_still_runs_at_month_end() {
        let w = window("2025-06-01", Some("2026-02-28"));
        assert_eq!(agg(LastDay, "2026-02", &w, &[("2026-02-28", "3")]), Ok(mv("3", 3, 1, false)));
        assert_eq!(agg(LastDay, "2026-02", &w, &[("2026-02-20", "3")]), Ok(mv("3", 3, 1, true)));
        assert_eq!(agg(Maximum, "2026-02", &w, &[]), Err(SkipReason::NoConsumption));
    }

    #[test]
    fn deprovisioned_with_only_the_provisioning_day_is_no_consumption_for_average() {
        // There is a counted sample, so billing-stops does not apply; AVERAGE has no day to average.
        let w = window("2026-02-10", Some("2026-02-10"));
        let list = [("2026-02-10", "5")];
        assert_eq!(agg(Average, "2026-02", &w, &list), Err(SkipReason::NoConsumption));
        assert_eq!(agg(Maximum, "2026-02", &w, &list), Ok(mv("5", 5, 1, false)));
    }

    #[test]
    fn small_values_bill_one() {
        let w = window("2025-01-01", None);
        for method in [Average, Maximum, LastDay] {
            assert_eq!(agg(method, "2026-01", &w, &[("2026-01-31", "0.000001")]), Ok(mv("0.000001", 1, 1, false)), "{method}");
        }
    }

    #[test]
    fn last_day_fallback_uses_latest_earlier_sample() {
        let w = window("2025-01-01", None);
        let list = [("2026-01-03", "9"), ("2026-01-20", "2"), ("2026-01-10", "5")];
        assert_eq!(agg(LastDay, "2026-01", &w, &list), Ok(mv("2", 2, 3, true)));
    }

    fn ew_stats(w: &LicenseWindow, list: &[(&str, &str)]) -> UsageMonthStats {
        UsageMonthStats::from_samples(p("2026-01"), w, &samples(list))
    }

    #[test]
    fn sum_adds_last_day_values_of_storage_types() {
        let w = window("2025-01-01", None);
        let cloud = ew_stats(&w, &[("2026-01-30", "100"), ("2026-01-31", "10.5")]);
        let early = ew_stats(&w, &[("2026-01-31", "0.25")]);
        let ltr = ew_stats(&w, &[("2026-01-31", "3")]);
        assert_eq!(aggregate_month(Sum, p("2026-01"), &w, &[cloud, early, ltr]), Ok(mv("13.75", 14, 2, false)));
    }

    #[test]
    fn sum_with_one_type_falling_back() {
        let w = window("2025-01-01", None);
        let cloud = ew_stats(&w, &[("2026-01-31", "10")]);
        let early = ew_stats(&w, &[("2026-01-12", "1.5")]);
        let ltr = ew_stats(&w, &[("2026-01-31", "3")]);
        assert_eq!(aggregate_month(Sum, p("2026-01"), &w, &[cloud, early, ltr]), Ok(mv("14.5", 15, 1, true)));
    }

    #[test]
    fn sum_with_missing_and_empty_types() {
        let w = window("2025-01-01", None);
        let cloud = ew_stats(&w, &[("2026-01-31", "10"), ("2026-01-30", "1")]);
        let empty = ew_stats(&w, &[]);
        assert_eq!(aggregate_month(Sum, p("2026-01"), &w, std::slice::from_ref(&cloud)), Ok(mv("10", 10, 2, false)));
        assert_eq!(aggregate_month(Sum, p("2026-01"), &w, &[empty.clone(), cloud]), Ok(mv("10", 10, 2, false)));
        assert_eq!(aggregate_month(Sum, p("2026-01"), &w, &[empty.clone(), empty]), Err(SkipReason::NoConsumption));
    }

    #[test]
    fn single_usage_methods_ignore_extra_stats() {
        let w = window("2025-01-01", None);
        let a = ew_stats(&w, &[("2026-01-31", "1")]);
        let b = ew_stats(&w, &[("2026-01-31", "7")]);
        assert_eq!(aggregate_month(Maximum, p("2026-01"), &w, &[a, b]), Ok(mv("1", 1, 1, false)));
    }

    #[test]
    fn skip_reason_names() {
        let names: Vec<_> = SkipReason::ALL.iter().map(|r| r.to_string()).collect();
        assert_eq!(names, ["NO_CONSUMPTION", "UNCHANGED", "DRY_RUN", "SUPERSEDED"]);
        assert_eq!("DRY_RUN".parse::<SkipReason>(), Ok(SkipReason::DryRun));
        assert!("dry_run".parse::<SkipReason>().is_err());
        assert_eq!(serde_json::to_string(&SkipReason::NoConsumption).unwrap(), "\"NO_CONSUMPTION\"");
    }

    #[test]
    fn window_contains_is_inclusive() {
        let w = window("2026-01-10", Some("2026-01-20"));
        assert!(!w.contains(d("2026-01-09")));
        assert!(w.contains(d("2026-01-10")));
        assert!(w.contains(d("2026-01-20")));
        assert!(!w.contains(d("2026-01-21")));
        assert!(window("2026-01-10", None).contains(d("2099-01-01")));
    }
}
