//! Relay-style pagination: `first` (default 50, at most 100) and opaque keyset cursors.
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Serialize, de::DeserializeOwned};

use crate::ServiceError;

pub const DEFAULT_PAGE: u64 = 50;
pub const MAX_PAGE: u64 = 100;

/// Validate `first`.
pub fn page_size(first: Option<i32>) -> Result<u64, ServiceError> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n < 0 => Err(ServiceError::BadInput("`first` must not be negative".into())),
        Some(n) if n as u64 > MAX_PAGE => Err(ServiceError::BadInput(format!("`first` must be at most {MAX_PAGE}, got {n}"))),
        Some(n) => Ok(n as u64),
    }
}

/// Encode a keyset position as an opaque cursor.
pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    B64.encode(serde_json::to_vec(key).unwrap_or_default())
}

/// Decode a cursor; a malformed one is bad input (never a server error). A crafted cursor is
/// base64 of anything: one carrying a control character (a NUL byte cannot even be compared by
/// PostgreSQL) is refused like any other cursor this API did not issue.
pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Result<K, ServiceError> {
    B64.decode(cursor)
        .ok()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .filter(|v| !has_control_characters(v))
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| ServiceError::BadInput("`after` is not a cursor this API issued".into()))
}

fn has_control_characters(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.chars().any(char::is_control),
        serde_json::Value::Array(items) => items.iter().any(has_control_characters),
        serde_json::Value::Object(fields) => fields.iter().any(|(k, v)| k.chars().any(char::is_control) || has_control_characters(v)),
        _ => false,
    }
}

/// One page: the items (each with its cursor) and whether more follow.
pub struct Page<T> {
    pub items: Vec<(String, T)>,
    pub has_next_page: bool,
}

impl<T> Page<T> {
    /// Build a page from `limit + 1` fetched rows.
    pub fn from_rows(mut rows: Vec<T>, limit: u64, cursor_of: impl Fn(&T) -> String) -> Self {
        let has_next_page = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Page { items: rows.into_iter().map(|r| (cursor_of(&r), r)).collect(), has_next_page }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_crafted_ones_are_bad_input() {
        let c = encode_cursor(&("Acme Corp".to_string(), 42i64));
        assert_eq!(decode_cursor::<(String, i64)>(&c).unwrap(), ("Acme Corp".to_string(), 42));
        for crafted in [B64.encode(br#"["a\u0000b", 1]"#), B64.encode(br#"["tab\there", 1]"#), "!!".into(), B64.encode(b"[1]")] {
            let e = decode_cursor::<(String, i64)>(&crafted).expect_err("crafted");
            assert!(matches!(e, ServiceError::BadInput(_)), "{crafted}");
        }
    }
}
