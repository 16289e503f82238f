//! `api` binary.
//!
//! - `api` — the GraphQL API. On PostgreSQL (production) it needs `REDIS_URL` for the job queue and
//!   runs the workers only with `--with-worker` (otherwise in separate `worker` processes).
//! - With neither `DATABASE_URL` nor `REDIS_URL` set — any SQLite `DATABASE_URL` — it is the embedded
//!   default (README: Quick start): API and workers in this one process on `./data/consumption-sync.db`,
//!   the job queue in the same database, keys generated next to it on first start, and the GraphiQL
//!   and dashboard URLs plus a development admin token printed. A SQLite deployment with
//!   `REDIS_URL` keeps its queue in Redis.
//! - `api --demo` (or `api demo`) — the same, with a sandbox ConnectWise in this process, the demo
//!   tenant connected to it, and the latest closed month pushed to it (`api/src/demo.rs`).
//!   `--reset` (`api demo --reset`) deletes the demo tenant first: the demo starts over.
//! - `api export-schema [PATH]` — write the SDL (default `schema.graphql`).
//! - `api token --tenant T --role R …` — print a JWT signed with the configured HS256 secret (the
//!   embedded default's generated one included), for curl sessions and GraphiQL.
//!
//! Exit codes: 0 after a clean shutdown, 2 for configuration and connection problems found at start
//! (the message says what to fix), 1 when loading the demo fails.
use std::{process::ExitCode, sync::Arc, time::Instant};

use api::{Application, demo, embedded, startup};
use sync_core::Settings;
use worker::WorkerQueue;

/// mimalloc: GraphQL execution and the job loop allocate many small short-lived objects, which
/// glibc's allocator served at about a third of the CPU time under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: api [--with-worker] [--demo [--reset]] | api demo [--reset] | api export-schema [PATH] | api token --tenant TENANT --role ROLE [--sub SUBJECT] [--days DAYS]";

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    ExportSchema(String),
    Token(api::token::TokenRequest),
    Serve { with_worker: bool, demo: bool, reset: bool },
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    if args.first().map(String::as_str) == Some("export-schema") {
        return match args {
            [_] => Ok(Command::ExportSchema("schema.graphql".into())),
            [_, path] => Ok(Command::ExportSchema(path.clone())),
            _ => Err(format!("too many arguments; {USAGE}")),
        };
    }
    if args.first().map(String::as_str) == Some("token") {
        return api::token::parse_args(&args[1..]).map(Command::Token);
    }
    let (mut with_worker, mut demo, mut reset) = (false, false, false);
    for (i, a) in args.iter().enumerate() {
        match a.as_str() {
            "--with-worker" => with_worker = true,
            "--demo" => demo = true,
            "demo" if i == 0 => demo = true,
            "--reset" => reset = true,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if reset && !demo {
        return Err(format!("--reset starts the demo over: use it with --demo or `api demo`; {USAGE}"));
    }
    Ok(Command::Serve { with_worker, demo, reset })
}

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (with_worker, load_demo, reset_demo) = match parse_args(&args) {
        Ok(Command::ExportSchema(path)) => {
            return match std::fs::write(&path, api::graphql::sdl()) {
                Ok(()) => {
                    println!("wrote {path}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("cannot write {path}: {e}")),
            };
        }
        Ok(Command::Token(request)) => return print_token(&request),
        Ok(Command::Serve { with_worker, demo, reset }) => (with_worker, demo, reset),
        Err(e) => return fail(e),
    };
    let mut settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => return fail(format!("configuration: {e}")),
    };
    api::telemetry::init(settings.log_format);
    let embedded = match embedded::prepare(&mut settings) {
        Ok(e) => e,
        Err(e) => return fail(format!("embedded setup: {e}")),
    };
    if let Err(e) = settings.require_production_secrets() {
        return fail(format!("configuration: {e}"));
    }
    let settings = Arc::new(settings);
    let sqlite = !settings.is_postgres();

    if !sqlite && let Err(e) = check_reachable(&settings.database_url).await {
        return fail(format!(
            "cannot connect to the database {}: {e} (is the server running and reachable?)",
            redact(&settings.database_url)
        ));
    }
    let db = match sync_core::db::connect(&settings.database_url, settings.db_pool_size(20, with_worker || sqlite)).await {
        Ok(db) => db,
        Err(e) => {
            let hint = if sqlite {
                " (is the directory writable? add ?mode=rwc to create the file)"
            } else {
                " (is the server running and reachable?)"
            };
            return fail(format!("cannot connect to the database {}{hint}: {e}", redact(&settings.database_url)));
        }
    };
    if let Err(e) = sync_core::db::migrate(&db).await {
        return fail(format!("migrations failed: {e}"));
    }
    // Redis when configured (required on PostgreSQL); otherwise the queue lives in the SQLite file.
    let queue: WorkerQueue = if settings.redis_url.is_some() {
        match worker::RedisQueue::connect(&settings).await {
            Ok(q) => q.into(),
            Err(e) => return fail(format!("cannot connect to Redis: {e:?}")),
        }
    } else {
        match worker::SqliteQueue::setup(&db).await {
            Ok(q) => q.into(),
            Err(e) => return fail(format!("cannot set up the SQLite job queue: {e:?}")),
        }
    };
    let secrets = match startup::secret_box(&settings) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // The sandbox ConnectWise runs only for the demo, and only this process's client may reach it.
    let sandbox = if load_demo {
        match demo::Sandbox::start(&settings).await {
            Ok(s) => Some(s),
            Err(e) => return fail(format!("cannot start the sandbox ConnectWise: {e}")),
        }
    } else {
        None
    };
    let cw_http = match startup::cw_http_with_sandbox(&settings, sandbox.as_ref().map(|s| s.origin().clone())) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let clock = sync_core::clock::from_settings(&settings);
    let app = match Application::build_with_cw_http(settings.clone(), db.clone(), Arc::new(queue.clone()), clock.clone(), cw_http.clone())
        .await
    {
        Ok(a) => a,
        Err(e) => return fail(e),
    };

    if reset_demo {
        match sync_core::service::tenants::delete_tenant(&db, embedded::DEV_TENANT).await {
            Ok(existed) => println!(
                "Demo reset: {}",
                if existed { "the demo tenant and all its data were deleted" } else { "there was no demo tenant yet" }
            ),
            Err(e) => {
                eprintln!("error: resetting the demo failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let demo_report = if let Some(sandbox) = &sandbox {
        match demo::load(&db, &queue, &settings, secrets.as_ref(), &cw_http, clock.as_ref(), sandbox).await {
            Ok(report) => {
                tracing::info!(?report, "demo tenant loaded");
                Some(report)
            }
            Err(e) => {
                eprintln!("error: loading the demo failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };

    // The embedded deployment is one process: its workers always run here.
    let run_workers = with_worker || sqlite;
    let workers = if run_workers {
        // One process per SQLite queue: the in-process limiter is the whole per-tenant budget.
        let rate: Arc<dyn sync_core::engine::TenantRateLimiter> = match &queue {
            WorkerQueue::Redis(q) => Arc::new(worker::RedisRateLimiter::for_queue(q, settings.cw_rate_per_tenant)),
            WorkerQueue::Sqlite(_) => Arc::new(sync_core::engine::LocalRateLimiter::with_clock(settings.cw_rate_per_tenant, clock.clone())),
        };
        let deps = worker::engine_deps(db.clone(), &queue, settings.clone(), secrets, cw_http, rate, clock.clone());
        Some(worker::spawn_in_process(deps, queue.clone()).await)
    } else {
        None
    };

    let address = display_address(&settings.bind_addr, app.port());
    tracing::info!(
        port = app.port(),
        database = if sqlite { "sqlite" } else { "postgres" },
        queue = queue.backend_name(),
        workers = run_workers,
        startup_ms = started.elapsed().as_millis() as u64,
        "api listening; GraphiQL at /graphql"
    );
    if sqlite {
        print_banner(&settings, &embedded, &queue, &address, started, clock.now(), sandbox.as_ref());
    } else if let Some(s) = &sandbox {
        println!("ConnectWise sandbox (demo only, in this process): {}", s.site_url());
    }
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    if let Some(report) = demo_report {
        tokio::spawn(demo::play(db.clone(), Arc::new(queue.clone()), clock.clone(), report, address.clone()));
    }
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

/// `api token`: the configuration the server would use (on SQLite the key files next to the
/// database, generated now if this is the first start), then the token alone on stdout.
fn print_token(request: &api::token::TokenRequest) -> ExitCode {
    let mut settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => return fail(format!("configuration: {e}")),
    };
    let embedded = match embedded::prepare(&mut settings) {
        Ok(e) => e,
        Err(e) => return fail(format!("embedded setup: {e}")),
    };
    for path in &embedded.generated {
        eprintln!("generated {} (the next start of api uses it)", path.display());
    }
    let Some(secret) = settings.jwt.hs256_secret.as_ref() else {
        return fail(
            "no HS256 secret: `api token` signs with JWT_SECRET (or the embedded default's generated one); \
             with JWT_PUBLIC_KEY_PEM or JWT_JWKS_URL, tokens come from your identity provider",
        );
    };
    let now = sync_core::clock::from_settings(&settings).now();
    match api::token::mint(secret, request, settings.jwt.issuer.as_deref(), settings.jwt.audience.as_deref(), now) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot sign the token: {e}")),
    }
}

/// `host:port` to print in URLs: the real port (for `BIND_ADDR=…:0`), a reachable host for `0.0.0.0`.
fn display_address(bind_addr: &str, port: u16) -> String {
    let host = bind_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(bind_addr);
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    format!("{host}:{port}")
}

/// One TCP connect to the PostgreSQL server. When it cannot be reached at all, sqlx retries until its
/// acquire timeout and then reports only "pool timed out"; this says why, at once.
async fn check_reachable(database_url: &str) -> Result<(), String> {
    let Ok(url) = reqwest::Url::parse(database_url) else { return Ok(()) };
    // No host (a Unix socket) or several hosts: leave it to the driver.
    let Some(host) = url.host_str().filter(|h| !h.is_empty() && !h.contains(',')) else { return Ok(()) };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port().unwrap_or(5432);
    match tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!("{host}:{port}: no answer within 5 s")),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    worker::error::redact_url(url)
}

/// What a newcomer needs on the console: where to click and a token to paste.
fn print_banner(
    settings: &Settings,
    embedded: &embedded::Embedded,
    queue: &WorkerQueue,
    address: &str,
    started: Instant,
    now: chrono::DateTime<chrono::Utc>,
    sandbox: Option<&demo::Sandbox>,
) {
    let shape = match queue {
        WorkerQueue::Sqlite(_) => "embedded: SQLite + in-process workers",
        WorkerQueue::Redis(_) => "SQLite + in-process workers, job queue in Redis",
    };
    let mut lines = vec![
        String::new(),
        format!("Consumption Sync is running ({shape}), ready in {} ms", started.elapsed().as_millis()),
        format!("  GraphiQL:   http://{address}/graphql"),
        format!("  Dashboard:  http://{address}/dashboard"),
    ];
    if let Some(dir) = &embedded.data_dir {
        let what = if matches!(queue, WorkerQueue::Sqlite(_)) { "database, job queue and keys" } else { "database and keys" };
        lines.push(format!("  Data:       {} ({what}; keep this directory)", dir.display()));
    }
    for path in &embedded.generated {
        lines.push(format!("  Generated:  {} (mode 0600; reused on the next start)", path.display()));
    }
    if let Some(s) = sandbox {
        lines.push(format!(
            "  ConnectWise sandbox: {} (demo only: a fake ConnectWise in this process, codebase \"{}\")",
            s.site_url(),
            demo::SANDBOX_CODEBASE
        ));
    }
    match settings.jwt.hs256_secret.as_ref().map(|secret| embedded::dev_admin_token(secret, now)) {
        Some(Ok(token)) => {
            lines.push(format!(
                "  Dev token (tenant \"{}\", role admin, valid {} days) — header `Authorization: Bearer <token>`:",
                embedded::DEV_TENANT,
                embedded::DEV_TOKEN_DAYS
            ));
            lines.push(format!("    {token}"));
        }
        Some(Err(e)) => lines.push(format!("  (could not mint a development token: {e})")),
        None => lines.push("  (JWT keys are configured externally: use a token from your identity provider)".into()),
    }
    lines.push(String::new());
    println!("{}", lines.join("\n"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_line() {
        assert_eq!(parse_args(&args(&[])), Ok(Command::Serve { with_worker: false, demo: false, reset: false }));
        assert_eq!(parse_args(&args(&["--with-worker", "--demo"])), Ok(Command::Serve { with_worker: true, demo: true, reset: false }));
        assert_eq!(parse_args(&args(&["demo"])), Ok(Command::Serve { with_worker: false, demo: true, reset: false }));
        assert_eq!(parse_args(&args(&["demo", "--reset"])), Ok(Command::Serve { with_worker: false, demo: true, reset: true }));
        assert_eq!(parse_args(&args(&["--demo", "--reset"])), Ok(Command::Serve { with_worker: false, demo: true, reset: true }));
        assert!(parse_args(&args(&["--reset"])).is_err(), "--reset without the demo");
        assert_eq!(parse_args(&args(&["export-schema"])), Ok(Command::ExportSchema("schema.graphql".into())));
        assert_eq!(parse_args(&args(&["export-schema", "x.graphql"])), Ok(Command::ExportSchema("x.graphql".into())));
        assert!(parse_args(&args(&["--nope"])).is_err());
        assert!(parse_args(&args(&["--demo", "demo"])).is_err());
        assert!(
            matches!(parse_args(&args(&["token", "--tenant", "demo", "--role", "admin"])), Ok(Command::Token(r)) if r.tenant == "demo")
        );
        assert!(parse_args(&args(&["token", "--tenant", "demo"])).is_err());
    }

    #[test]
    fn printed_addresses() {
        assert_eq!(display_address("127.0.0.1:8080", 8080), "127.0.0.1:8080");
        assert_eq!(display_address("0.0.0.0:0", 41234), "127.0.0.1:41234");
        assert_eq!(display_address("[::]:8080", 8080), "[::1]:8080");
    }
}
