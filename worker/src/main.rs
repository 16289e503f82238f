//! `worker`: runs the job workers until SIGTERM/SIGINT.
//!
//! Exit codes: 0 after a clean shutdown, 2 for configuration and connection problems found at
//! start (the message says what to fix), 1 when the workers fail while running.
use std::{process::ExitCode, sync::Arc, time::Duration};

use sync_core::{Settings, crypto::SecretBox};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};
use worker::{RedisQueue, RedisRateLimiter, WorkerError, run_workers};

/// mimalloc: GraphQL execution and the job loop allocate many small short-lived objects, which
/// glibc's allocator served at about a third of the CPU time under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Problems reported before anything runs: log, exit 2.
fn fail_setup(what: &str, detail: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{what}: {detail}");
    ExitCode::from(2)
}

/// The error with its cause chain (`WorkerError`'s `Debug`).
fn chain(error: impl Into<WorkerError>) -> String {
    format!("{:?}", error.into())
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.trim().eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt::layer().json().with_current_span(true)).init();
    } else {
        registry.with(fmt::layer()).init();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail_setup("cannot start the async runtime", error),
    };
    let code = runtime.block_on(run());
    // Don't wait on stragglers (e.g. a catalog refresh on a blocking thread) after the workers'
    // own graceful shutdown already had its time.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn run() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => return fail_setup("cannot start", chain(error)),
    };
    if settings.redis_url.is_none() {
        return fail_setup(
            "REDIS_URL is not set",
            "the worker process runs jobs from Redis; set REDIS_URL (the embedded SQLite deployment runs its jobs inside `api`)",
        );
    }
    if let Err(error) = settings.require_production_secrets() {
        return fail_setup("cannot start", chain(error));
    }
    let secrets = match settings.secrets_key.as_ref().map(SecretBox::from_base64).transpose() {
        Ok(secrets) => secrets,
        Err(error) => return fail_setup("invalid SECRETS_KEY", error),
    };

    let db = match sync_core::db::connect(&settings.database_url, settings.db_pool_size(10, true)).await {
        Ok(db) => db,
        Err(error) => {
            return fail_setup("cannot connect to the database (check DATABASE_URL and that the server is reachable)", chain(error));
        }
    };
    if let Err(error) = sync_core::db::migrate(&db).await {
        return fail_setup("database migration failed", chain(error));
    }

    let queue = match RedisQueue::connect(&settings).await {
        Ok(queue) => queue,
        Err(error) => return fail_setup("cannot use the Redis job queue", chain(error)),
    };

    // ConnectWise calls set their own timeout (CW_TIMEOUT_MS); the client refuses redirects and
    // guards every address it connects to.
    let http = match connectwise::CwHttp::new(connectwise::AddressPolicy::from_allow_http(settings.cw_allow_http)) {
        Ok(http) => http,
        Err(error) => return fail_setup("cannot build the HTTP client", error),
    };

    let settings = Arc::new(settings);
    let clock = sync_core::clock::from_settings(&settings);
    let deps = worker::engine_deps(
        db,
        &queue,
        settings.clone(),
        secrets,
        http,
        Arc::new(RedisRateLimiter::for_queue(&queue, settings.cw_rate_per_tenant)),
        clock,
    );

    match run_workers(deps, queue, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("worker stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("worker failed: {error:?}");
            ExitCode::FAILURE
        }
    }
}
