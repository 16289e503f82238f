//! Bad configuration, end to end with the real `api` binary (issue 5 point 5): each case stops the
//! process before it serves anything, with exit code 2 and a message naming what to fix.
use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use integration_tests::{JWT_SECRET, REDIS_URL};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// The `api` binary of this workspace, built once per test process so it is never stale (cargo
/// builds only this package's binaries for its tests).
pub fn api_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            // target/<profile>/deps/integration-… → target/<profile>/api
            let dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_path_buf();
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-q", "-p", "api"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let ok = build.status().expect("cargo build -p api");
            assert!(ok.success(), "building the api binary failed");
            dir.join("api")
        })
        .clone()
}

/// A fresh empty working directory (the embedded default writes `./data` there).
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csync-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// An `api` process; killed (SIGKILL) when dropped, so no test leaves one running.
pub struct ApiProcess(pub Child);

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `api` with exactly `env` (plus `PATH`/`HOME`), started in `dir`; stdout and stderr piped.
pub fn spawn_api(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> ApiProcess {
    let mut cmd = Command::new(api_binary());
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("RUST_LOG", "warn").envs(env.iter().copied()).args(args).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    ApiProcess(cmd.spawn().expect("spawn api"))
}

/// Run `api` until it exits (at most `secs`); returns its exit code and stdout + stderr.
fn run_api(env: &[(&str, &str)], args: &[&str], secs: u64) -> (Option<i32>, String) {
    let dir = temp_dir("config");
    let mut p = spawn_api(&dir, env, args);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = p.0.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut o) = p.0.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = p.0.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
    (status.and_then(|s| s.code()), out)
}

/// Assert `api` with `env` stops with exit code 2 and a message containing every one of `expect`.
fn refused(env: &[(&str, &str)], expect: &[&str]) {
    let (code, out) = run_api(env, &[], 30);
    assert_eq!(code, Some(2), "env {env:?}: expected exit code 2, output:\n{out}");
    for e in expect {
        assert!(out.contains(e), "env {env:?}: the message should name {e:?}; output:\n{out}");
    }
    assert!(!out.contains("panicked"), "env {env:?} panicked:\n{out}");
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn secrets_key() -> String {
    sync_core::crypto::SecretBox::generate_key_base64()
}

#[tokio::test]
async fn unparsable_numbers_malformed_cron_and_keys_are_refused() {
    let sixteen_bytes = "AAECAwQFBgcICQoLDA0ODw==";
    // (environment, what the message must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![("PUSH_MAX_ATTEMPTS", "eight")], vec!["PUSH_MAX_ATTEMPTS", "eight"]),
        (vec![("PUSH_BACKOFF_MIN_MS", "1s")], vec!["PUSH_BACKOFF_MIN_MS"]),
        (vec![("PUSH_BACKOFF_MIN_MS", "5000"), ("PUSH_BACKOFF_MAX_MS", "100")], vec!["PUSH_BACKOFF_MIN_MS", "PUSH_BACKOFF_MAX_MS"]),
        (vec![("CW_TIMEOUT_MS", "-1")], vec!["CW_TIMEOUT_MS"]),
        (vec![("CW_RATE_PER_TENANT", "1.5")], vec!["CW_RATE_PER_TENANT"]),
        (vec![("PUSH_CONCURRENCY", "0")], vec!["PUSH_CONCURRENCY"]),
        (vec![("RECONCILE_STALE_S", "5m")], vec!["RECONCILE_STALE_S"]),
        (vec![("CW_ALLOW_HTTP", "maybe")], vec!["CW_ALLOW_HTTP"]),
        (vec![("GRAPHQL_INTROSPECTION", "2")], vec!["GRAPHQL_INTROSPECTION"]),
        (vec![("LOG_FORMAT", "xml")], vec!["LOG_FORMAT"]),
        (vec![("SYNC_CRON", "0 6 2 * *")], vec!["SYNC_CRON", "six-field"]),
        (vec![("SYNC_CRON", "every month")], vec!["SYNC_CRON"]),
        (vec![("SECRETS_KEY", "not base64!")], vec!["SECRETS_KEY", "32 bytes"]),
        (vec![("SECRETS_KEY", sixteen_bytes)], vec!["SECRETS_KEY", "32 bytes"]),
        (vec![("JWT_PUBLIC_KEY_PEM", "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----")], vec!["JWT"]),
        (vec![("DATABASE_URL", "mysql://localhost/db")], vec!["DATABASE_URL"]),
    ];
    for (env, expect) in cases {
        refused(&env, &expect);
    }
    // A key is never echoed back in the message.
    let (_, out) = run_api(&[("SECRETS_KEY", "c2VjcmV0LXZhbHVlLXRoYXQtaXMtd3Jvbmc=")], &[], 30);
    assert!(!out.contains("c2VjcmV0LXZhbHVlLXRoYXQtaXMtd3Jvbmc="), "{out}");
    // An unknown argument.
    let (code, out) = run_api(&[], &["--frobnicate"], 30);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--frobnicate") && out.contains("usage"), "{out}");
}

#[tokio::test]
async fn postgres_without_keys_secrets_or_redis_is_refused() {
    let pg = "postgres://postgres@127.0.0.1:5432/postgres";
    refused(&[("DATABASE_URL", pg)], &["PostgreSQL", "JWT_SECRET", "SECRETS_KEY", "REDIS_URL"]);
    let key = secrets_key();
    let (code, out) = run_api(&[("DATABASE_URL", pg), ("JWT_SECRET", JWT_SECRET), ("SECRETS_KEY", &key)], &[], 30);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("REDIS_URL") && !out.contains("JWT_SECRET") && !out.contains("SECRETS_KEY"), "only REDIS_URL is missing:\n{out}");
    refused(&[("DATABASE_URL", pg), ("REDIS_URL", REDIS_URL), ("SECRETS_KEY", &key)], &["JWT_SECRET"]);
    refused(&[("DATABASE_URL", pg), ("REDIS_URL", REDIS_URL), ("JWT_SECRET", JWT_SECRET)], &["SECRETS_KEY"]);
}

#[tokio::test]
async fn unreachable_database_or_redis_is_refused() {
    let key = secrets_key();
    let production = |db: &'static str, redis: &'static str| -> Vec<(&'static str, String)> {
        vec![("DATABASE_URL", db.into()), ("REDIS_URL", redis.into()), ("JWT_SECRET", JWT_SECRET.into()), ("SECRETS_KEY", key.clone())]
    };
    // Nothing listens on port 1.
    let env = production("postgres://postgres@127.0.0.1:1/csync", REDIS_URL);
    refused(&as_refs(&env), &["cannot connect to the database", "127.0.0.1:1"]);
    let env = production("postgres://postgres:hunter2@127.0.0.1:1/csync", REDIS_URL);
    let (_, out) = run_api(&as_refs(&env), &[], 30);
    assert!(!out.contains("hunter2"), "the password is not printed:\n{out}");

    // A reachable, migrated database (our own, dropped below) but no Redis.
    let (db, name, url) = integration_tests::fresh_database().await;
    db.close().await.ok();
    let env = vec![
        ("DATABASE_URL", url.clone()),
        ("REDIS_URL", "redis://127.0.0.1:1".to_string()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("SECRETS_KEY", key.clone()),
    ];
    refused(&as_refs(&env), &["cannot connect to Redis", "127.0.0.1:1"]);
    let env = vec![
        ("DATABASE_URL", url.clone()),
        ("REDIS_URL", "not-a-url".to_string()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("SECRETS_KEY", key),
    ];
    refused(&as_refs(&env), &["Redis"]);
    if let Ok(admin) = sync_core::db::connect(integration_tests::PG_ADMIN_URL, 1).await {
        let _ =
            admin.execute_raw(Statement::from_string(DbBackend::Postgres, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
    }
    // SQLite with an unreachable Redis queue.
    refused(&[("REDIS_URL", "redis://127.0.0.1:1")], &["cannot connect to Redis"]);
}

#[tokio::test]
async fn unusable_sqlite_files_are_refused() {
    // The database's directory cannot be created (a file is in the way).
    refused(&[("DATABASE_URL", "sqlite:///dev/null/data/x.db?mode=rwc")], &["/dev/null/data"]);
    // Without `mode=rwc` a missing file is not created.
    let dir = temp_dir("nofile");
    let url = format!("sqlite://{}/missing.db", dir.display());
    refused(&[("DATABASE_URL", url.as_str())], &["cannot connect to the database", "mode=rwc"]);
    // A damaged key file next to the database is refused, not silently replaced.
    let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.display());
    std::fs::write(dir.join("secrets-key"), "garbage").expect("write");
    refused(&[("DATABASE_URL", url.as_str())], &["secrets-key"]);
    assert_eq!(std::fs::read_to_string(dir.join("secrets-key")).expect("kept"), "garbage");
    // An address that cannot be listened on.
    std::fs::remove_file(dir.join("secrets-key")).expect("rm");
    refused(&[("DATABASE_URL", url.as_str()), ("BIND_ADDR", "not-an-address")], &["not-an-address"]);
    let _ = std::fs::remove_dir_all(&dir);
}
