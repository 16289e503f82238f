//! The worker's error type.
use std::fmt;

/// Why the worker (or one of its parts) could not start or stopped.
///
/// `Display` is one line; `Debug` prints the whole cause chain, so `main` returning it (or
/// `{:?}` in a log line) shows what actually went wrong.
#[derive(thiserror::Error)]
pub enum WorkerError {
    #[error("invalid configuration")]
    Config(#[from] sync_core::config::ConfigError),

    #[error("{0}")]
    Setup(String),

    #[error("cannot connect to Redis at {url}")]
    RedisConnect {
        /// The URL with any password removed.
        url: String,
        #[source]
        source: redis::RedisError,
    },

    #[error("Redis command failed")]
    Redis(#[from] redis::RedisError),

    #[error("Redis queue operation failed")]
    Queue(#[from] apalis_redis::Error),

    #[error("SQLite queue operation failed")]
    SqliteQueue(#[from] apalis_sqlite::Error),

    #[error("database error")]
    Database(#[from] sea_orm::DbErr),

    #[error("invalid SYNC_CRON expression {expr:?}")]
    Cron {
        expr: String,
        #[source]
        source: cron::error::Error,
    },

    #[error("the job workers stopped with an error: {0}")]
    Monitor(String),

    #[error("the worker task panicked or was cancelled")]
    Join(#[from] tokio::task::JoinError),
}

impl fmt::Debug for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut last = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            // Wrappers often repeat their cause's message; print each piece of news once.
            if !last.contains(&text) {
                write!(f, "\n  caused by: {text}")?;
            }
            last = text;
            source = cause.source();
        }
        Ok(())
    }
}

/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0` (for error messages and logs).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end + 3 => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_string() };
            format!("{}{}{}", &url[..scheme_end + 3], masked, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("rediss://u:pw@h"), "rediss://u:***@h");
        assert_eq!(redact_url("redis://token@h"), "redis://***@h");
    }

    #[test]
    fn debug_prints_the_cause_chain() {
        let err = WorkerError::Cron { expr: "x".into(), source: sync_core::jobs::parse_cron("x").unwrap_err() };
        let debug = format!("{err:?}");
        assert!(debug.starts_with("invalid SYNC_CRON expression \"x\""), "{debug}");
        assert!(debug.contains("caused by:"), "{debug}");
    }
}
