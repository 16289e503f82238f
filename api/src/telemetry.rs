//! Logging setup: text or JSON (`LOG_FORMAT=json`), filtered by `RUST_LOG` (default `info`).
use sync_core::config::LogFormat;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry.with(fmt::layer().json().with_current_span(false)).try_init(),
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
    };
}
