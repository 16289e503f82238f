//! `api` binary. `api` serves GraphQL; `api --with-worker` also runs the workers in-process;
//! `api export-schema [PATH]` writes the SDL (default `schema.graphql`).
use std::{process::ExitCode, sync::Arc};

use api::{Application, startup};
use sync_core::Settings;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("export-schema") {
        let path = args.get(1).cloned().unwrap_or_else(|| "schema.graphql".into());
        return match std::fs::write(&path, api::graphql::sdl()) {
            Ok(()) => {
                println!("wrote {path}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot write {path}: {e}")),
        };
    }
    let with_worker = args.iter().any(|a| a == "--with-worker");
    if let Some(unknown) = args.iter().find(|a| *a != "--with-worker") {
        return fail(format!("unknown argument {unknown:?}; usage: api [--with-worker] | api export-schema [PATH]"));
    }
    let settings = match Settings::from_env() {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(format!("configuration: {e}")),
    };
    api::telemetry::init(settings.log_format);
    if let Err(e) = settings.require_production_secrets() {
        return fail(format!("configuration: {e}"));
    }
    let Some(_) = settings.redis_url.as_ref() else {
        return fail("configuration: REDIS_URL is required (the embedded SQLite queue is not available in this build)");
    };
    let db = match sync_core::db::connect(&settings.database_url, 20).await {
        Ok(db) => db,
        Err(e) => return fail(format!("cannot connect to the database: {e}")),
    };
    if let Err(e) = sync_core::db::migrate(&db).await {
        return fail(format!("migrations failed: {e}"));
    }
    let queue = match worker::RedisQueue::connect(&settings).await {
        Ok(q) => q,
        Err(e) => return fail(format!("cannot connect to Redis: {e}")),
    };
    let app = match Application::build(settings.clone(), db.clone(), Arc::new(queue.clone())).await {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let workers = if with_worker {
        let secrets = match startup::secret_box(&settings) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let rate = Arc::new(worker::RedisRateLimiter::new(queue.connection(), &settings.redis_prefix, settings.cw_rate_per_tenant));
        let deps = worker::engine_deps(db.clone(), &queue, settings.clone(), secrets, startup::http_client(), rate);
        Some(worker::spawn_in_process(deps, queue.clone()).await)
    } else {
        None
    };
    tracing::info!(port = app.port(), with_worker, "api listening; GraphiQL at /graphql");
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.stop(true).await;
    let _ = server.await;
    if let Some(w) = workers
        && let Err(e) = w.shutdown().await
    {
        tracing::warn!(error = ?e, "worker shutdown");
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
