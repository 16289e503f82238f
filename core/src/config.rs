//! Layered settings: defaults in code, overridden by environment variables (README: Configuration), validated once.
use std::{collections::HashMap, time::Duration};

use secrecy::SecretString;

/// Everything the processes need, parsed and checked once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: String,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and queue name (lets tests and several deployments share one Redis).
    pub redis_prefix: String,
    pub bind_addr: String,
    pub jwt: JwtSettings,
    pub cw_client_id: Option<String>,
    pub cw_allow_http: bool,
    pub secrets_key: Option<SecretString>,
    pub sync_cron: String,
    pub push_max_attempts: u32,
    pub push_backoff_min: Duration,
    pub push_backoff_max: Duration,
    pub cw_timeout: Duration,
    pub cw_rate_per_tenant: u32,
    pub push_concurrency: usize,
    pub reconcile_stale: Duration,
    /// GraphiQL page and schema introspection (off with `GRAPHQL_INTROSPECTION=false`).
    pub graphql_introspection: bool,
    /// `/graphql` requests per second per tenant, sustained (per `api` process).
    pub api_rate_per_tenant: u32,
    /// `/graphql` requests a tenant may send at once before the sustained rate applies.
    pub api_burst_per_tenant: u32,
    pub log_format: LogFormat,
    /// `CLOCK_START` (tests and demos only): the process's clock starts at this instant and runs on
    /// in real time (see [`crate::clock`]). Unset: the system clock.
    pub clock_start: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone, Debug, Default)]
pub struct JwtSettings {
    pub hs256_secret: Option<SecretString>,
    pub public_key_pem: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl JwtSettings {
    pub fn has_keys(&self) -> bool {
        self.hs256_secret.is_some() || self.public_key_pem.is_some() || self.jwks_url.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be {expected}, got {value:?}")]
    Invalid { name: &'static str, expected: &'static str, value: String },
    #[error("{0}")]
    Missing(String),
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/consumption-sync.db?mode=rwc";

impl Settings {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Settings from a map of variables (the environment, or a test's own).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let settings = Settings {
            database_url: get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            redis_url: get("REDIS_URL"),
            redis_prefix: get("REDIS_PREFIX").unwrap_or_else(|| "csync".to_string()),
            bind_addr: get("BIND_ADDR").unwrap_or_else(|| "127.0.0.1:8080".to_string()),
            jwt: JwtSettings {
                hs256_secret: get("JWT_SECRET").map(SecretString::from),
                public_key_pem: get("JWT_PUBLIC_KEY_PEM"),
                jwks_url: get("JWT_JWKS_URL"),
                issuer: get("JWT_ISSUER"),
                audience: get("JWT_AUDIENCE"),
            },
            cw_client_id: get("CW_CLIENT_ID"),
            cw_allow_http: parse_bool(vars, "CW_ALLOW_HTTP", false)?,
            secrets_key: get("SECRETS_KEY").map(SecretString::from),
            sync_cron: get("SYNC_CRON").unwrap_or_else(|| "0 0 6 2 * *".to_string()),
            push_max_attempts: parse_num(vars, "PUSH_MAX_ATTEMPTS", 8u32, 1)?,
            push_backoff_min: Duration::from_millis(parse_num(vars, "PUSH_BACKOFF_MIN_MS", 1000u64, 1)?),
            push_backoff_max: Duration::from_millis(parse_num(vars, "PUSH_BACKOFF_MAX_MS", 300_000u64, 1)?),
            cw_timeout: Duration::from_millis(parse_num(vars, "CW_TIMEOUT_MS", 30_000u64, 1)?),
            cw_rate_per_tenant: parse_num(vars, "CW_RATE_PER_TENANT", 10u32, 1)?,
            push_concurrency: parse_num(vars, "PUSH_CONCURRENCY", 16usize, 1)?,
            reconcile_stale: Duration::from_secs(parse_num(vars, "RECONCILE_STALE_S", 300u64, 1)?),
            graphql_introspection: parse_bool(vars, "GRAPHQL_INTROSPECTION", true)?,
            api_rate_per_tenant: parse_num(vars, "API_RATE_PER_TENANT", 50u32, 1)?,
            api_burst_per_tenant: parse_num(vars, "API_BURST_PER_TENANT", 100u32, 1)?,
            log_format: match get("LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError::Invalid { name: "LOG_FORMAT", expected: "`text` or `json`", value: other.into() });
                }
            },
            clock_start: match get("CLOCK_START") {
                None => None,
                Some(raw) => Some(chrono::DateTime::parse_from_rfc3339(&raw).map(|t| t.to_utc()).map_err(|_| ConfigError::Invalid {
                    name: "CLOCK_START",
                    expected: "an RFC 3339 instant, e.g. `2026-03-01T00:00:00Z`",
                    value: raw.clone(),
                })?),
            },
        };
        settings.validate()?;
        Ok(settings)
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")
    }

    /// Checks that need more than one variable.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.push_backoff_min > self.push_backoff_max {
            return Err(ConfigError::Invalid {
                name: "PUSH_BACKOFF_MIN_MS",
                expected: "at most PUSH_BACKOFF_MAX_MS",
                value: self.push_backoff_min.as_millis().to_string(),
            });
        }
        crate::jobs::parse_cron(&self.sync_cron).map_err(|_| ConfigError::Invalid {
            name: "SYNC_CRON",
            expected: "a six-field cron expression (sec min hour day month weekday), e.g. `0 0 6 2 * *`",
            value: self.sync_cron.clone(),
        })?;
        if let Some(key) = &self.secrets_key {
            crate::crypto::SecretBox::from_base64(key).map_err(|_| ConfigError::Invalid {
                name: "SECRETS_KEY",
                expected: "32 bytes, base64-encoded",
                value: "<redacted>".into(),
            })?;
        }
        if !(self.database_url.starts_with("sqlite:") || self.is_postgres()) {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                expected: "postgres://… or sqlite://…",
                value: self.database_url.clone(),
            });
        }
        Ok(())
    }

    /// Production (PostgreSQL) refuses to start without explicit keys and a queue (README: Configuration).
    pub fn require_production_secrets(&self) -> Result<(), ConfigError> {
        if !self.is_postgres() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if !self.jwt.has_keys() {
            missing.push("JWT_SECRET, JWT_PUBLIC_KEY_PEM or JWT_JWKS_URL");
        }
        if self.secrets_key.is_none() {
            missing.push("SECRETS_KEY");
        }
        if self.redis_url.is_none() {
            missing.push("REDIS_URL");
        }
        if missing.is_empty() { Ok(()) } else { Err(ConfigError::Missing(format!("a PostgreSQL deployment needs {}", missing.join(", ")))) }
    }

    /// Database connections a process needs: `base` for its own work, plus one per push in flight
    /// when it runs workers (an attempt holds a connection while its PATCH is fenced).
    pub fn db_pool_size(&self, base: u32, runs_workers: bool) -> u32 {
        let pushes = if runs_workers { u32::try_from(self.push_concurrency).unwrap_or(u32::MAX) } else { 0 };
        base.saturating_add(pushes)
    }

    /// The retry policy of pushes.
    pub fn backoff_policy(&self) -> domain::BackoffPolicy {
        domain::BackoffPolicy { min: self.push_backoff_min, max: self.push_backoff_max }
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    vars: &HashMap<String, String>,
    name: &'static str,
    default: T,
    min: T,
) -> Result<T, ConfigError> {
    match vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(raw) => match raw.parse::<T>() {
            Ok(v) if v >= min => Ok(v),
            _ => Err(ConfigError::Invalid { name, expected: "a whole number ≥ 1", value: raw.to_string() }),
        },
    }
}

fn parse_bool(vars: &HashMap<String, String>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match vars.get(name).map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::Invalid { name, expected: "true or false", value: other.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::from_vars(&vars(&[])).expect("defaults are valid");
        assert_eq!(s.sync_cron, "0 0 6 2 * *");
        assert_eq!(s.push_max_attempts, 8);
        assert_eq!(s.push_backoff_min, Duration::from_millis(1000));
        assert_eq!(s.push_backoff_max, Duration::from_millis(300_000));
        assert_eq!(s.cw_timeout, Duration::from_secs(30));
        assert_eq!(s.cw_rate_per_tenant, 10);
        assert_eq!(s.push_concurrency, 16);
        assert_eq!(s.reconcile_stale, Duration::from_secs(300));
        assert_eq!(s.bind_addr, "127.0.0.1:8080");
        assert_eq!((s.api_rate_per_tenant, s.api_burst_per_tenant), (50, 100));
        assert!(!s.is_postgres());
        assert!(s.clock_start.is_none(), "the system clock unless CLOCK_START is set");
    }

    #[test]
    fn clock_start_is_an_rfc3339_instant() {
        let s = Settings::from_vars(&vars(&[("CLOCK_START", "2028-03-01T00:00:00Z")])).expect("parses");
        assert_eq!(s.clock_start.map(|t| t.to_rfc3339()), Some("2028-03-01T00:00:00+00:00".to_string()));
        let err = Settings::from_vars(&vars(&[("CLOCK_START", "2028-03-01")])).expect_err("a date alone is refused").to_string();
        assert!(err.contains("CLOCK_START"), "{err}");
    }

    #[test]
    fn unparsable_numbers_and_cron_are_refused_with_the_variable_name() {
        for (k, v) in [
            ("PUSH_MAX_ATTEMPTS", "eight"),
            ("CW_TIMEOUT_MS", "-1"),
            ("PUSH_CONCURRENCY", "0"),
            ("SYNC_CRON", "0 6 2 * *"),
            ("API_RATE_PER_TENANT", "0"),
            ("API_BURST_PER_TENANT", "many"),
        ] {
            let err = Settings::from_vars(&vars(&[(k, v)])).expect_err(k).to_string();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn postgres_needs_keys_secrets_and_redis() {
        let s = Settings::from_vars(&vars(&[("DATABASE_URL", "postgres://localhost/x")])).expect("parses");
        let err = s.require_production_secrets().expect_err("refused").to_string();
        assert!(err.contains("JWT_SECRET") && err.contains("SECRETS_KEY") && err.contains("REDIS_URL"), "{err}");
    }
}
