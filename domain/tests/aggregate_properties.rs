//! Property tests of the monthly aggregation (docs/billing-rules.md) against a naive day-by-day recomputation.

use chrono::{Days, NaiveDate};
use domain::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn offset(base: NaiveDate, days: i64) -> NaiveDate {
    if days >= 0 { base + Days::new(days as u64) } else { base - Days::new(days.unsigned_abs()) }
}

fn period_strategy() -> impl Strategy<Value = Period> {
    (2024..=2030_i32, 1..=12_u32).prop_map(|(y, m)| Period::new(y, m).unwrap())
}

fn value_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        0..=10_i64,
        (0..=100_i64).prop_map(|u| u * MICROS_PER_UNIT),
        (0..=100_i64, 0..=2_i64).prop_map(|(u, f)| u * MICROS_PER_UNIT + f),
        0..=MAX_VALUE_MICROS,
    ]
}

/// A period, a license window around it, and samples around it (duplicates of a day possible).
fn scenario() -> impl Strategy<Value = (Period, LicenseWindow, Vec<(NaiveDate, i64)>)> {
    period_strategy().prop_flat_map(|period| {
        let first = period.first_day();
        let window = (-40_i64..=40, proptest::option::of(0_i64..=60)).prop_map(move |(p, len)| {
            let provisioned_on = offset(first, p);
            LicenseWindow { provisioned_on, deprovisioned_on: len.map(|l| offset(provisioned_on, l)) }
        });
        let samples = proptest::collection::vec(((-10_i64..=40).prop_map(move |o| offset(first, o)), value_strategy()), 0..45);
        (Just(period), window, samples)
    })
}

/// Counted days with their sample, recomputed day by day; the last duplicate in slice order wins.
fn naive_counted(period: Period, window: &LicenseWindow, samples: &[(NaiveDate, i64)]) -> BTreeMap<NaiveDate, i64> {
    period
        .days()
        .filter(|day| *day >= window.provisioned_on && window.deprovisioned_on.is_none_or(|end| *day <= end))
        .filter_map(|day| samples.iter().rev().find(|(d, _)| *d == day).map(|(_, v)| (day, *v)))
        .collect()
}

fn naive_ceil(micros: i64) -> i64 {
    (micros + MICROS_PER_UNIT - 1) / MICROS_PER_UNIT
}

fn dedup(samples: Vec<(NaiveDate, i64)>) -> Vec<(NaiveDate, i64)> {
    samples.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn from_samples_agrees_with_naive_recomputation((period, window, samples) in scenario()) {
        let counted = naive_counted(period, &window, &samples);
        let averaged: Vec<i64> = counted
            .iter()
            .filter(|(day, _)| **day != window.provisioned_on)
            .map(|(_, v)| *v)
            .collect();
        let expected = UsageMonthStats {
            avg_sum: averaged.iter().map(|v| i128::from(*v)).sum(),
            avg_days: averaged.len() as u32,
            max: counted.values().copied().max(),
            sample_days: counted.len() as u32,
            last_day: counted.get(&period.last_day()).copied(),
            latest: counted.iter().next_back().map(|(d, v)| (*d, *v)),
        };
        prop_assert_eq!(UsageMonthStats::from_samples(period, &window, &samples), expected);
    }

    #[test]
    fn average_lies_between_min_and_max((period, window, samples) in scenario()) {
        let counted = naive_counted(period, &window, &samples);
        let averaged: Vec<i64> = counted
            .iter()
            .filter(|(day, _)| **day != window.provisioned_on)
            .map(|(_, v)| *v)
            .collect();
        let stats = UsageMonthStats::from_samples(period, &window, &samples);
        let result = aggregate_month(IntervalMethod::Average, period, &window, &[stats]);
        match (averaged.iter().min(), averaged.iter().max()) {
            (Some(&min), Some(&max)) => {
                let v = result.unwrap();
                prop_assert!(min <= v.value_micros && v.value_micros <= max);
                prop_assert!(naive_ceil(min) <= v.quantity && v.quantity <= naive_ceil(max));
                prop_assert_eq!(v.sample_days as usize, averaged.len());
            }
            _ => {
                let gone = window.deprovisioned_on.is_some_and(|d| d < period.last_day());
                if gone && counted.is_empty() {
                    prop_assert_eq!(result.unwrap().quantity, 0);
                } else {
                    prop_assert_eq!(result, Err(SkipReason::NoConsumption));
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_sample_order(
        (period, window, samples, shuffled) in scenario().prop_flat_map(|(p, w, s)| {
            let unique = dedup(s);
            (Just(p), Just(w), Just(unique.clone()), Just(unique).prop_shuffle())
        })
    ) {
        let a = UsageMonthStats::from_samples(period, &window, &samples);
        let b = UsageMonthStats::from_samples(period, &window, &shuffled);
        prop_assert_eq!(&a, &b);
        for method in IntervalMethod::ALL {
            prop_assert_eq!(
                aggregate_month(method, period, &window, std::slice::from_ref(&a)),
                aggregate_month(method, period, &window, std::slice::from_ref(&b))
            );
        }
    }

    #[test]
    fn quantity_is_the_ceiling_of_the_exact_value(
        (period, window, samples) in scenario(),
        more in proptest::collection::vec(
            proptest::collection::vec((0_i64..=40, value_strategy()), 0..10), 0..=2),
    ) {
        let stats = UsageMonthStats::from_samples(period, &window, &samples);
        for method in [IntervalMethod::Maximum, IntervalMethod::LastDay] {
            if let Ok(v) = aggregate_month(method, period, &window, std::slice::from_ref(&stats)) {
                prop_assert_eq!(v.quantity, naive_ceil(v.value_micros));
            }
        }
        let mut all = vec![stats.clone()];
        for extra in &more {
            let list: Vec<_> = extra
                .iter()
                .map(|(o, v)| (offset(period.first_day(), *o), *v))
                .collect();
            all.push(UsageMonthStats::from_samples(period, &window, &list));
        }
        if let Ok(v) = aggregate_month(IntervalMethod::Sum, period, &window, &all) {
            prop_assert_eq!(v.quantity, naive_ceil(v.value_micros));
            prop_assert_eq!(v.sample_days, all.iter().map(|s| s.sample_days).max().unwrap_or(0));
        }
        if let Ok(v) = aggregate_month(IntervalMethod::Average, period, &window, std::slice::from_ref(&stats)) {
            if stats.avg_days > 0 {
                let den = i128::from(stats.avg_days) * i128::from(MICROS_PER_UNIT);
                let q = i128::from(v.quantity);
                prop_assert!(q * den >= stats.avg_sum, "quantity too small");
                prop_assert!((q - 1) * den < stats.avg_sum, "quantity too large");
            } else {
                prop_assert_eq!(v.quantity, 0);
            }
        }
    }

    #[test]
    fn decimal_strings_round_trip(v in 0..=MAX_VALUE_MICROS) {
        prop_assert_eq!(parse_micros(&format_micros(v)), Ok(v));
    }

    #[test]
    fn parse_never_panics(s in "[-+.0-9eE ]{0,40}") {
        let _ = parse_micros(&s);
    }
}
