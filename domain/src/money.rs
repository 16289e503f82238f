//! Exact decimal values as integer micro-units (value × 10⁶ in `i64`), with the parsing, formatting
//! and integer rounding the billing path needs. No floating point anywhere.

/// Micro-units in one unit: values are stored as `value × MICROS_PER_UNIT`.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// The largest accepted consumption value (1,000,000,000) in micro-units.
pub const MAX_VALUE_MICROS: i64 = 1_000_000_000 * MICROS_PER_UNIT;

/// Number of fractional digits a value may carry.
const FRACTION_DIGITS: usize = 6;

/// Why a decimal string is not an acceptable consumption value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecimalError {
    /// The string is empty.
    #[error("the value is empty")]
    Empty,
    /// The string is not a plain decimal number (digits, optionally `.` and more digits).
    #[error("the value is not a plain decimal number such as 12 or 3.75")]
    Malformed,
    /// The value is below zero (`-0` included).
    #[error("the value must not be negative")]
    Negative,
    /// More than six digits after the decimal point.
    #[error("the value has more than 6 fractional digits")]
    TooManyFractionDigits,
    /// Above 1,000,000,000.
    #[error("the value exceeds 1,000,000,000")]
    TooLarge,
}

/// Parses a plain decimal string (`"3.75"`, `"007"`, `"0.000001"`) into micro-units.
///
/// Accepted: one or more ASCII digits, optionally followed by `.` and 1 to 6 digits, with a value in
/// `0..=1_000_000_000`. Rejected: `".5"`, `"5."`, signs (`+1`, `-0`), whitespace, exponents. Runs in
/// linear time without overflow on arbitrarily long digit strings.
///
/// ```
/// assert_eq!(domain::parse_micros("3.75"), Ok(3_750_000));
/// assert_eq!(domain::parse_micros("1e3"), Err(domain::DecimalError::Malformed));
/// ```
pub fn parse_micros(s: &str) -> Result<i64, DecimalError> {
    if s.is_empty() {
        return Err(DecimalError::Empty);
    }
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(DecimalError::Malformed);
    }
    if negative {
        return Err(DecimalError::Negative);
    }
    let frac = frac_part.unwrap_or("");
    if frac.len() > FRACTION_DIGITS {
        return Err(DecimalError::TooManyFractionDigits);
    }
    let significant = int_part.trim_start_matches('0');
    // 1,000,000,000 has 10 digits; anything longer is too large without computing it.
    if significant.len() > 10 {
        return Err(DecimalError::TooLarge);
    }
    let units = digits_value(significant);
    let fraction = digits_value(frac) * 10_i64.pow((FRACTION_DIGITS - frac.len()) as u32);
    let micros = units * MICROS_PER_UNIT + fraction;
    if micros > MAX_VALUE_MICROS {
        return Err(DecimalError::TooLarge);
    }
    Ok(micros)
}

/// Value of an ASCII digit string of at most 10 digits (callers guarantee both).
fn digits_value(digits: &str) -> i64 {
    digits.bytes().fold(0_i64, |acc, b| acc * 10 + i64::from(b - b'0'))
}

/// Formats micro-units as a plain decimal string: no exponent, no trailing zeros, no trailing `.`.
///
/// ```
/// assert_eq!(domain::format_micros(3_750_000), "3.75");
/// assert_eq!(domain::format_micros(4_000_000), "4");
/// assert_eq!(domain::format_micros(1), "0.000001");
/// assert_eq!(domain::format_micros(-1_500_000), "-1.5");
/// ```
pub fn format_micros(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let abs = v.unsigned_abs();
    let per_unit = MICROS_PER_UNIT.unsigned_abs();
    let (units, fraction) = (abs / per_unit, abs % per_unit);
    if fraction == 0 {
        format!("{sign}{units}")
    } else {
        let digits = format!("{fraction:06}");
        format!("{sign}{units}.{}", digits.trim_end_matches('0'))
    }
}

/// The quantity for a value: micro-units rounded up to whole units (`5.000001` → 6, `5` → 5).
///
/// Mathematical ceiling, so also correct for negative inputs (`-1.5` → `-1`).
pub fn ceil_units(micros: i64) -> i64 {
    let q = micros.div_euclid(MICROS_PER_UNIT);
    if micros.rem_euclid(MICROS_PER_UNIT) == 0 { q } else { q + 1 }
}

/// `num / den` rounded to the nearest integer, ties to even (banker's rounding).
///
/// Requires `den > 0`; like integer division it panics when `den == 0`.
///
/// ```
/// assert_eq!(domain::div_round_half_even(5, 2), 2);
/// assert_eq!(domain::div_round_half_even(7, 2), 4);
/// assert_eq!(domain::div_round_half_even(-5, 2), -2);
/// ```
pub fn div_round_half_even(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0, "div_round_half_even requires den > 0");
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den); // 0 <= r < den
    let rest = den - r; // distance to the next multiple; compares 2r with den without overflow
    if r > rest || (r == rest && q % 2 != 0) { q + 1 } else { q }
}

/// `num / den` rounded up (towards +∞).
///
/// Requires `den > 0`; like integer division it panics when `den == 0`.
///
/// ```
/// assert_eq!(domain::div_ceil_i128(7, 2), 4);
/// assert_eq!(domain::div_ceil_i128(-7, 2), -3);
/// ```
pub fn div_ceil_i128(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0, "div_ceil_i128 requires den > 0");
    let q = num.div_euclid(den);
    if num.rem_euclid(den) == 0 { q } else { q + 1 }
}

/// Narrows an exact `i128` result to `i64`, saturating at the bounds (unreachable for values that
/// come from validated samples, which are at most 10¹⁵ micro-units).
pub(crate) fn saturate_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals() {
        assert_eq!(parse_micros("0"), Ok(0));
        assert_eq!(parse_micros("3.75"), Ok(3_750_000));
        assert_eq!(parse_micros("4"), Ok(4_000_000));
        assert_eq!(parse_micros("0.000001"), Ok(1));
        assert_eq!(parse_micros("007"), Ok(7_000_000));
        assert_eq!(parse_micros("0000000000000000000001.5"), Ok(1_500_000));
        assert_eq!(parse_micros("1.000000"), Ok(1_000_000));
        assert_eq!(parse_micros("999999999.999999"), Ok(MAX_VALUE_MICROS - 1));
        assert_eq!(parse_micros("1000000000"), Ok(MAX_VALUE_MICROS));
        assert_eq!(parse_micros("1000000000.000000"), Ok(MAX_VALUE_MICROS));
    }

    #[test]
    fn rejects_malformed() {
        use DecimalError::*;
        assert_eq!(parse_micros(""), Err(Empty));
        for s in [
            ".5", "5.", "+1", " 1", "1 ", "1e3", "1E3", "1.2.3", "abc", "1,5", "-", ".", "-.5", "--1", "0x10", "١", "1_000", "\t", "1.-5",
            "NaN", "inf",
        ] {
            assert_eq!(parse_micros(s), Err(Malformed), "{s:?}");
        }
        assert_eq!(parse_micros("-0"), Err(Negative));
        assert_eq!(parse_micros("-1.5"), Err(Negative));
        assert_eq!(parse_micros("1.0000001"), Err(TooManyFractionDigits));
        assert_eq!(parse_micros("0.0000000"), Err(TooManyFractionDigits));
        assert_eq!(parse_micros("1000000000.000001"), Err(TooLarge));
        assert_eq!(parse_micros("1000000001"), Err(TooLarge));
        assert_eq!(parse_micros("99999999999"), Err(TooLarge));
        assert_eq!(parse_micros("9223372036854775808"), Err(TooLarge));
    }

    #[test]
    fn huge_digit_strings_do_not_overflow() {
        let huge = "9".repeat(10_000);
        assert_eq!(parse_micros(&huge), Err(DecimalError::TooLarge));
        let padded = format!("{}1", "0".repeat(10_000));
        assert_eq!(parse_micros(&padded), Ok(1_000_000));
        let long_frac = format!("1.{}", "0".repeat(10_000));
        assert_eq!(parse_micros(&long_frac), Err(DecimalError::TooManyFractionDigits));
    }

    #[test]
    fn errors_have_human_messages() {
        assert_eq!(DecimalError::TooLarge.to_string(), "the value exceeds 1,000,000,000");
        assert!(!DecimalError::Malformed.to_string().is_empty());
    }

    #[test]
    fn formats_without_trailing_zeros() {
        assert_eq!(format_micros(3_750_000), "3.75");
        assert_eq!(format_micros(4_000_000), "4");
        assert_eq!(format_micros(1), "0.000001");
        assert_eq!(format_micros(0), "0");
        assert_eq!(format_micros(100_000), "0.1");
        assert_eq!(format_micros(MAX_VALUE_MICROS), "1000000000");
        assert_eq!(format_micros(-1), "-0.000001");
        assert_eq!(format_micros(-4_000_000), "-4");
        assert_eq!(format_micros(i64::MIN), "-9223372036854.775808");
        assert_eq!(format_micros(i64::MAX), "9223372036854.775807");
    }

    #[test]
    fn format_then_parse_round_trips() {
        for v in [0, 1, 10, 999_999, 1_000_000, 3_750_000, 123_456_789, MAX_VALUE_MICROS] {
            assert_eq!(parse_micros(&format_micros(v)), Ok(v));
        }
    }

    #[test]
    fn ceil_units_rounds_up_once() {
        assert_eq!(ceil_units(5_000_001), 6);
        assert_eq!(ceil_units(5_000_000), 5);
        assert_eq!(ceil_units(1), 1);
        assert_eq!(ceil_units(0), 0);
        assert_eq!(ceil_units(999_999), 1);
        assert_eq!(ceil_units(-1_500_000), -1);
        assert_eq!(ceil_units(i64::MAX), i64::MAX / MICROS_PER_UNIT + 1);
    }

    #[test]
    fn integer_division_helpers() {
        assert_eq!(div_round_half_even(5, 2), 2);
        assert_eq!(div_round_half_even(7, 2), 4);
        assert_eq!(div_round_half_even(1, 3), 0);
        assert_eq!(div_round_half_even(2, 3), 1);
        assert_eq!(div_round_half_even(-5, 2), -2);
        assert_eq!(div_round_half_even(-7, 2), -4);
        assert_eq!(div_round_half_even(6, 3), 2);
        assert_eq!(div_round_half_even(i128::MAX, i128::MAX), 1);
        assert_eq!(div_round_half_even(i128::MAX - 1, i128::MAX), 1);
        assert_eq!(div_round_half_even(i128::MAX / 2, i128::MAX), 0); // just below one half
        assert_eq!(div_ceil_i128(7, 2), 4);
        assert_eq!(div_ceil_i128(6, 2), 3);
        assert_eq!(div_ceil_i128(0, 5), 0);
        assert_eq!(div_ceil_i128(-7, 2), -3);
        assert_eq!(div_ceil_i128(1, i128::MAX), 1);
    }

    #[test]
    fn saturate_narrows() {
        assert_eq!(saturate_i64(5), 5);
        assert_eq!(saturate_i64(i128::MAX), i64::MAX);
        assert_eq!(saturate_i64(i128::MIN), i64::MIN);
    }
}
