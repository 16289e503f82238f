//! What every scenario stands on: a database and a Redis key prefix of the harness's own (removed
//! at the end, also after a failure), the release binaries, child processes that never outlive the
//! harness, and small helpers (tokens, GraphQL over HTTP, peak RSS).
use std::{
    collections::HashMap,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Err` with a message.
pub fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(msg.into().into())
}

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const JWT_SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// The harness's own database and Redis prefix.
pub struct Infra {
    pub db: DatabaseConnection,
    pub admin: DatabaseConnection,
    pub db_name: String,
    pub db_url: String,
    pub redis_prefix: String,
    pub redis: redis::aio::ConnectionManager,
    pub secrets_key: String,
    pub secrets: sync_core::crypto::SecretBox,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
}

impl Infra {
    /// Create `csync_bench_<id>` (migrated) and pick the Redis prefix `csync-bench-<id>`.
    pub async fn create(bin_dir: PathBuf) -> Result<Infra> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let db_name = format!("csync_bench_{id}");
        let admin = sync_core::db::connect(PG_ADMIN_URL, 2).await.map_err(|e| format!("PostgreSQL on 127.0.0.1:5432: {e}"))?;
        admin.execute_unprepared(&format!("CREATE DATABASE {db_name}")).await?;
        let db_url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
        let db = sync_core::db::connect(&db_url, 8).await?;
        sync_core::db::migrate(&db).await?;
        let redis = worker::connect_redis(REDIS_URL).await.map_err(|e| format!("Redis on 127.0.0.1:6379: {e:?}"))?;
        let secrets_key = sync_core::crypto::SecretBox::generate_key_base64();
        let secrets = sync_core::crypto::SecretBox::from_base64(&secrecy::SecretString::from(secrets_key.clone()))?;
        let log_dir = bin_dir.join("bench-logs").join(&id);
        std::fs::create_dir_all(&log_dir)?;
        Ok(Infra { db, admin, db_name, db_url, redis_prefix: format!("csync-bench-{id}"), redis, secrets_key, secrets, bin_dir, log_dir })
    }

    /// Drop the database (unless `keep_db`) and delete every Redis key of the prefix (never
    /// FLUSHDB: Redis is shared).
    pub async fn destroy(self, keep_db: bool) -> Result<()> {
        self.db.close().await.ok();
        let dropped = if keep_db {
            Ok(())
        } else {
            self.admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name)).await.map(|_| ())
        };
        let mut conn = self.redis.clone();
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.redis_prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
        }
        // apalis-redis registers every queue's worker set in a global sorted set.
        let listed: Vec<String> = redis::cmd("ZRANGE").arg("core:apalis:queues:list").arg(0).arg(-1).query_async(&mut conn).await?;
        let ours: Vec<&String> = listed.iter().filter(|k| k.starts_with(&format!("{}:", self.redis_prefix))).collect();
        if !ours.is_empty() {
            let _: () = redis::cmd("ZREM").arg("core:apalis:queues:list").arg(ours).query_async(&mut conn).await?;
        }
        self.admin.close().await.ok();
        dropped?;
        Ok(())
    }

    pub async fn exec(&self, sql: &str) -> Result<()> {
        self.db.execute_unprepared(sql).await?;
        Ok(())
    }

    pub async fn scalar(&self, sql: &str) -> Result<i64> {
        let row = self.db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_string())).await?;
        Ok(row.ok_or("no row")?.try_get_by_index::<i64>(0)?)
    }

    /// Committed plus rolled-back transactions of the harness database so far (read through the
    /// admin database, so reading it does not count itself).
    pub async fn transactions(&self) -> Result<i64> {
        let row = self
            .admin
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT CAST(xact_commit + xact_rollback AS BIGINT) FROM pg_stat_database WHERE datname = $1",
                [self.db_name.clone().into()],
            ))
            .await?;
        Ok(row.ok_or("no pg_stat_database row")?.try_get_by_index::<i64>(0)?)
    }

    /// The environment of an `api`/`worker` process of this harness.
    pub fn process_env(&self, fake_client_id: &str) -> HashMap<String, String> {
        [
            ("DATABASE_URL", self.db_url.as_str()),
            ("REDIS_URL", REDIS_URL),
            ("REDIS_PREFIX", self.redis_prefix.as_str()),
            ("JWT_SECRET", JWT_SECRET),
            ("SECRETS_KEY", self.secrets_key.as_str()),
            ("CW_CLIENT_ID", fake_client_id),
            ("CW_ALLOW_HTTP", "true"),
            ("RUST_LOG", "warn"),
            // The scenarios load one tenant far beyond a tenant's default request budget: they
            // measure what the budget's check costs, not its refusals (the reads scenario
            // measures a flood against a real budget separately).
            ("API_RATE_PER_TENANT", "1000000"),
            ("API_BURST_PER_TENANT", "1000000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Start `bin` (`api` or `worker`) of the same build as this harness.
    pub fn spawn(&self, bin: &str, label: &str, env: &HashMap<String, String>, args: &[&str]) -> Result<Child> {
        let path = self.bin_dir.join(bin);
        let log_path = self.log_dir.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&path);
        cmd.env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(env).args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: prctl is async-signal-safe; it makes the child get SIGTERM when the harness's
        // main thread (which spawns every child) dies, even by SIGKILL.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        Ok(Child { label: label.to_string(), child: Some(child), log: log_path })
    }
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Child {
    pub label: String,
    child: Option<std::process::Child>,
    pub log: PathBuf,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return fail(format!("{} exited ({status}); see {}", self.label, self.log.display()));
        }
        Ok(())
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid())
    }

    /// SIGTERM, wait for a graceful exit (at most `grace`), then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An HS256 token for `tenant` with `roles`, valid for two hours.
pub fn token(tenant: &str, roles: &[&str]) -> Result<String> {
    let exp = chrono::Utc::now().timestamp() + 7200;
    let claims = json!({"sub": "bench", "tenant": tenant, "roles": roles, "exp": exp});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )?)
}

/// A running `api` process and a client for it.
pub struct Api {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// Start `api` on a free port and wait for `/healthz`.
    pub async fn start(infra: &Infra, label: &str, fake_client_id: &str, client_pool: usize) -> Result<Api> {
        Self::start_with(infra, label, fake_client_id, client_pool, &[]).await
    }

    /// [`Api::start`] with extra environment variables.
    pub async fn start_with(infra: &Infra, label: &str, fake_client_id: &str, client_pool: usize, extra: &[(&str, &str)]) -> Result<Api> {
        let port = free_port()?;
        let mut env = infra.process_env(fake_client_id);
        env.insert("BIND_ADDR".into(), format!("127.0.0.1:{port}"));
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let child = infra.spawn("api", label, &env, &[])?;
        let http =
            reqwest::Client::builder().pool_max_idle_per_host(client_pool).timeout(Duration::from_secs(120)).tcp_nodelay(true).build()?;
        let mut api = Api { child, base: format!("http://127.0.0.1:{port}"), http };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            api.child.check_alive()?;
            if let Ok(r) = api.http.get(format!("{}/healthz", api.base)).send().await
                && r.status().is_success()
            {
                return Ok(api);
            }
            if Instant::now() > deadline {
                return fail(format!("{label} did not answer /healthz within 90 s; see {}", api.child.log.display()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POST a GraphQL request, expecting 200 and no `errors`; returns `data`.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Result<Value> {
        let body = serde_json::to_vec(&json!({"query": query, "variables": variables}))?;
        self.gql_raw(token, body).await
    }

    /// POST a pre-serialized GraphQL request body.
    pub async fn gql_raw(&self, token: &str, body: Vec<u8>) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() || v.get("errors").is_some() {
            return fail(format!("GraphQL request failed ({status}): {}", crate::clip(&v.to_string(), 600)));
        }
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    }
}

/// The directory of this executable (`target/<profile>`), where `api` and `worker` are built too.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().ok_or("no parent directory of the bench executable")?.to_path_buf())
}

/// `cargo build [--release] -p api -p worker` with the profile of this harness, so the processes it
/// starts are the same build (a no-op when they are up to date).
pub fn build_binaries(workspace: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args(["build", "-q", "-p", "api", "-p", "worker", "--bins"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return fail("building api and worker failed");
    }
    Ok(())
}

/// CPU time (user + system) so far of the processes that take part in a scenario, in seconds:
/// PostgreSQL (every `postgres` process), Redis, the given children, and this harness (load
/// generators and the fake ConnectWise live here).
#[derive(Clone, Debug, Default)]
pub struct Cpu {
    pub postgres: f64,
    pub redis: f64,
    pub children: f64,
    pub harness: f64,
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz.max(1.0))
}

impl Cpu {
    pub fn now(children: &[u32]) -> Cpu {
        let mut cpu = Cpu::default();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                match comm.trim() {
                    "postgres" => cpu.postgres += cpu_seconds(pid).unwrap_or(0.0),
                    "redis-server" => cpu.redis += cpu_seconds(pid).unwrap_or(0.0),
                    _ => {}
                }
            }
        }
        cpu.children = children.iter().filter_map(|p| cpu_seconds(*p)).sum();
        cpu.harness = cpu_seconds(std::process::id()).unwrap_or(0.0);
        cpu
    }

    /// CPU used since `before`, per unit of work, as a one-line summary in µs.
    pub fn per_unit_since(&self, before: &Cpu, units: f64, children_label: &str) -> String {
        let us = |a: f64, b: f64| (a - b).max(0.0) * 1e6 / units.max(1.0);
        format!(
            "PostgreSQL {:.0} µs, Redis {:.0} µs, {children_label} {:.0} µs, harness {:.0} µs",
            us(self.postgres, before.postgres),
            us(self.redis, before.redis),
            us(self.children, before.children),
            us(self.harness, before.harness)
        )
    }
}
