//! The billing review: what each line of a month will bill in ConnectWise, how it changed, and
//! whether it is an exception a billing team should look at. Exact decimals throughout
//! ([`rust_decimal::Decimal`]); ConnectWise's money fields arrive as JSON number text and are parsed
//! without a float in between.

use rust_decimal::Decimal;

use crate::aggregate::LicenseWindow;
use crate::catalog::ProductModule;
use crate::period::Period;

pub use rust_decimal::Decimal as ExactDecimal;

named_enum! {
    /// The unit a line's quantity counts.
    pub enum BillingUnit {
        /// Gigabytes of storage (Enterprise Workloads).
        Gb => "GB",
        /// Users (every other module).
        Users => "users",
    }
}

impl BillingUnit {
    /// The unit of a module's quantities.
    ///
    /// ```
    /// use domain::{BillingUnit, ProductModule};
    /// assert_eq!(BillingUnit::of(ProductModule::EnterpriseWorkloads), BillingUnit::Gb);
    /// assert_eq!(BillingUnit::of(ProductModule::Endpoints).as_str(), "users");
    /// ```
    pub fn of(module: ProductModule) -> Self {
        match module {
            ProductModule::EnterpriseWorkloads => Self::Gb,
            _ => Self::Users,
        }
    }
}

/// The anomaly threshold a tenant has until it sets one (percent).
pub const DEFAULT_ANOMALY_THRESHOLD_PERCENT: u32 = 20;

/// Parses a JSON number as ConnectWise wrote it (`"12.3456789012345678"`, `"10.0"`, `"1e3"`) into an
/// exact decimal; `None` when it is not a number or does not fit 28 significant digits.
///
/// ```
/// use domain::parse_cw_decimal;
/// assert_eq!(parse_cw_decimal("12.50").unwrap().to_string(), "12.50");
/// assert_eq!(parse_cw_decimal("1e3").unwrap().to_string(), "1000");
/// assert_eq!(parse_cw_decimal("twelve"), None);
/// ```
pub fn parse_cw_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.contains(['e', 'E']) {
        return Decimal::from_scientific(text).ok();
    }
    text.parse::<Decimal>().ok()
}

/// What ConnectWise bills for an addition of `quantity` units: the quantity less what the agreement
/// includes (`less_included`, none when unset), never below zero, times `unit_price`. `None` when
/// the addition has no unit price (nothing to bill with) or the product overflows.
///
/// ```
/// use domain::{billed_amount, parse_cw_decimal as d};
/// assert_eq!(billed_amount(d("12").unwrap(), d("2"), d("9.99")), d("99.90"));
/// assert_eq!(billed_amount(d("1").unwrap(), d("5"), d("9.99")), d("0"));
/// assert_eq!(billed_amount(d("1").unwrap(), None, None), None);
/// ```
pub fn billed_amount(quantity: Decimal, less_included: Option<Decimal>, unit_price: Option<Decimal>) -> Option<Decimal> {
    let billable = (quantity - less_included.unwrap_or(Decimal::ZERO)).max(Decimal::ZERO);
    billable.checked_mul(unit_price?)
}

/// `quantity − previous`: how the quantity ConnectWise holds changes when the line is pushed.
pub fn quantity_change(quantity: Decimal, previous: Decimal) -> Decimal {
    quantity - previous
}

/// The change as a percentage of the previous quantity, rounded half-even to two decimals (a ratio is
/// rarely a finite decimal); `None` when the previous quantity is zero (no percentage of nothing).
///
/// ```
/// use domain::{change_percent, parse_cw_decimal as d};
/// assert_eq!(change_percent(d("15").unwrap(), d("10").unwrap()), d("50.00"));
/// assert_eq!(change_percent(d("2").unwrap(), d("3").unwrap()), d("-33.33"));
/// assert_eq!(change_percent(d("5").unwrap(), d("0").unwrap()), None);
/// ```
pub fn change_percent(quantity: Decimal, previous: Decimal) -> Option<Decimal> {
    if previous.is_zero() {
        return None;
    }
    let ratio = quantity_change(quantity, previous).checked_mul(Decimal::ONE_HUNDRED)?.checked_div(previous)?;
    Some(ratio.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven))
}

/// Whether moving an addition from `previous` to `quantity` is an anomaly under a threshold of
/// `threshold_percent`: the change is more than that share of the previous quantity, or the quantity
/// goes from zero to something or from something to zero. Exact: `|change| × 100 > threshold ×
/// previous`, no rounded percentage in between.
///
/// ```
/// use domain::{is_anomalous_change, parse_cw_decimal as d};
/// let q = |s| d(s).unwrap();
/// assert!(is_anomalous_change(q("13"), q("10"), 20));   // +30 %
/// assert!(!is_anomalous_change(q("12"), q("10"), 20));  // +20 % is not more than 20 %
/// assert!(is_anomalous_change(q("1"), q("0"), 1000));   // 0 → n
/// assert!(is_anomalous_change(q("0"), q("7"), 1000));   // n → 0
/// assert!(!is_anomalous_change(q("0"), q("0"), 1));
/// ```
pub fn is_anomalous_change(quantity: Decimal, previous: Decimal, threshold_percent: u32) -> bool {
    if previous.is_zero() || quantity.is_zero() {
        return previous != quantity;
    }
    let change = quantity_change(quantity, previous).abs();
    match (change.checked_mul(Decimal::ONE_HUNDRED), previous.abs().checked_mul(Decimal::from(threshold_percent))) {
        (Some(scaled_change), Some(allowed)) => scaled_change > allowed,
        // Only a change of more than 10^26 overflows: certainly an anomaly.
        _ => true,
    }
}

/// Days of the period inside the license window that have no sample. No license: no billable day,
/// nothing missing.
///
/// ```
/// use chrono::NaiveDate;
/// use domain::{LicenseWindow, Period, missing_days};
/// let feb = Period::new(2026, 2).unwrap();
/// let window = LicenseWindow { provisioned_on: NaiveDate::from_ymd_opt(2026, 2, 11).unwrap(), deprovisioned_on: None };
/// assert_eq!(missing_days(feb, Some(&window), 15), 3); // 18 licensed days, 15 with a sample
/// assert_eq!(missing_days(feb, None, 0), 0);
/// ```
pub fn missing_days(period: Period, window: Option<&LicenseWindow>, days_with_sample: u32) -> u32 {
    let Some(window) = window else { return 0 };
    let from = period.first_day().max(window.provisioned_on);
    let to = window.deprovisioned_on.map_or(period.last_day(), |end| end.min(period.last_day()));
    let licensed = if to < from { 0 } else { u32::try_from((to - from).num_days() + 1).unwrap_or(0) };
    licensed.saturating_sub(days_with_sample)
}

/// What makes a review line worth a billing team's look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineFlags {
    /// An input changed after the last push (the pushed quantity is out of date).
    pub stale: bool,
    /// LAST_DAY/SUM used an earlier day because the last one had no sample.
    pub fallback: bool,
    /// Licensed days of the period without a sample.
    pub missing_days: u32,
    /// Nothing to bill: no counted day with a sample.
    pub no_consumption: bool,
    /// A push of the line waits for approval.
    pub awaiting_approval: bool,
    /// The quantity moves from what ConnectWise holds by more than the threshold (or 0 ↔ n).
    pub anomalous_change: bool,
}

/// Whether a line is an exception: stale, fell back, has missing days, has no consumption, awaits
/// approval, or changes by more than the tenant's threshold.
///
/// ```
/// use domain::{LineFlags, is_exception};
/// assert!(!is_exception(&LineFlags::default()));
/// assert!(is_exception(&LineFlags { missing_days: 2, ..Default::default() }));
/// ```
pub fn is_exception(flags: &LineFlags) -> bool {
    flags.stale || flags.fallback || flags.missing_days > 0 || flags.no_consumption || flags.awaiting_approval || flags.anomalous_change
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn d(s: &str) -> Decimal {
        parse_cw_decimal(s).unwrap()
    }

    #[test]
    fn money_is_exact_with_long_prices_and_fractional_inclusions() {
        // 18 significant digits survive: no f64 would keep them.
        assert_eq!(billed_amount(d("3"), None, Some(d("12.3456789012345678"))), Some(d("37.0370367037037034")));
        assert_eq!(billed_amount(d("10"), Some(d("2.5")), Some(d("0.1"))), Some(d("0.75")));
        assert_eq!(billed_amount(d("2"), Some(d("2")), Some(d("100"))), Some(Decimal::ZERO));
        assert_eq!(billed_amount(d("0"), None, Some(d("100"))), Some(Decimal::ZERO));
        assert_eq!(billed_amount(d("5"), Some(d("1")), None), None);
    }

    #[test]
    fn connectwise_number_text() {
        assert_eq!(parse_cw_decimal("10.0"), Some(d("10")));
        assert_eq!(parse_cw_decimal("2.50e1"), Some(d("25")));
        assert_eq!(parse_cw_decimal("-1.5"), Some(Decimal::new(-15, 1)));
        assert_eq!(parse_cw_decimal(""), None);
        assert_eq!(parse_cw_decimal("1e400"), None);
    }

    #[test]
    fn changes_and_percentages() {
        assert_eq!(quantity_change(d("7"), d("10")), d("-3"));
        assert_eq!(change_percent(d("7"), d("10")), Some(d("-30")));
        assert_eq!(change_percent(d("10"), d("10")), Some(Decimal::ZERO));
        // 1/8 = 12.5 %: exact; 1/6 = 16.666… % rounds half-even to 16.67.
        assert_eq!(change_percent(d("9"), d("8")), Some(d("12.5")));
        assert_eq!(change_percent(d("7"), d("6")), Some(d("16.67")));
        assert_eq!(change_percent(d("0"), d("0")), None);
    }

    #[test]
    fn anomalies_at_the_threshold_edge() {
        assert!(!is_anomalous_change(d("10"), d("10"), 1));
        assert!(!is_anomalous_change(d("101"), d("100"), 1));
        assert!(is_anomalous_change(d("102"), d("100"), 1));
        assert!(is_anomalous_change(d("98"), d("100"), 1));
        assert!(!is_anomalous_change(d("1000"), d("100"), 1000)); // +900 %
        assert!(is_anomalous_change(d("1200"), d("100"), 1000)); // +1100 %
        assert!(is_anomalous_change(d("0"), d("1"), 1000));
        assert!(is_anomalous_change(d("1"), d("0"), 1));
        // A fractional quantity in ConnectWise compares exactly: 10 vs 8.4 is +19.047… %.
        assert!(!is_anomalous_change(d("10"), d("8.4"), 20));
        assert!(is_anomalous_change(d("10"), d("8.3"), 20));
    }

    #[test]
    fn missing_days_follow_the_license_window() {
        let feb = Period::new(2026, 2).unwrap();
        let day = |n| NaiveDate::from_ymd_opt(2026, 2, n).unwrap();
        let whole = LicenseWindow { provisioned_on: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), deprovisioned_on: None };
        assert_eq!(missing_days(feb, Some(&whole), 28), 0);
        assert_eq!(missing_days(feb, Some(&whole), 25), 3);
        let ended = LicenseWindow { provisioned_on: day(3), deprovisioned_on: Some(day(10)) };
        assert_eq!(missing_days(feb, Some(&ended), 6), 2);
        let later = LicenseWindow { provisioned_on: NaiveDate::from_ymd_opt(2026, 3, 5).unwrap(), deprovisioned_on: None };
        assert_eq!(missing_days(feb, Some(&later), 0), 0);
        // More days with a sample than licensed cannot happen; it never goes below zero.
        assert_eq!(missing_days(feb, Some(&ended), 40), 0);
    }

    #[test]
    fn exceptions_are_any_flag() {
        let none = LineFlags::default();
        assert!(!is_exception(&none));
        for flags in [
            LineFlags { stale: true, ..none },
            LineFlags { fallback: true, ..none },
            LineFlags { missing_days: 1, ..none },
            LineFlags { no_consumption: true, ..none },
            LineFlags { awaiting_approval: true, ..none },
            LineFlags { anomalous_change: true, ..none },
        ] {
            assert!(is_exception(&flags), "{flags:?}");
        }
    }
}
