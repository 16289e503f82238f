//! Custom scalars of the GraphQL contract: `Date`, `Decimal`, `Period` (`DateTime` and `JSON` come from async-graphql).
use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::NaiveDate;

/// A calendar date, `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                domain::parse_day(s).map(Date).map_err(|e| InputValueError::custom(format!("expected a date YYYY-MM-DD: {e}")))
            }
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// An exact decimal written as a string (`"3.75"`, `"4"`). Inputs accept strings and integers only:
/// a JSON float has already lost exactness by the time it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal(pub String);

impl Decimal {
    pub fn from_micros(v: i64) -> Self {
        Decimal(domain::format_micros(v))
    }
}

#[Scalar(name = "Decimal")]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => Ok(Decimal(s.clone())),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Decimal(n.to_string())),
            Value::Number(_) => {
                Err(InputValueError::custom("Decimal takes a string such as \"3.75\" (or an integer); JSON floats are not exact"))
            }
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

/// A calendar month, `YYYY-MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period(pub domain::Period);

#[Scalar(name = "Period")]
impl ScalarType for Period {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                domain::Period::parse(s).map(Period).map_err(|e| InputValueError::custom(format!("expected a month YYYY-MM: {e}")))
            }
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}
