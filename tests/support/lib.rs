//! Test harness (zero2prod's `spawn_app`): every test gets its own PostgreSQL database, its own Redis
//! key prefix, an API on port 0 and its own stateful fake ConnectWise over real HTTP. Logs only with
//! `TEST_LOG=1`. With `AppOptions { sqlite: true, .. }` the app runs as the embedded deployment
//! instead: a temporary SQLite file, the job queue in that same database, no Redis.
use std::{
    collections::HashMap,
    ops::Deref,
    sync::{Arc, OnceLock},
    time::Duration,
};

use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany, FakeConfig, FakeConnectWise};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use sync_core::{
    Settings,
    clock::{SharedClock, ShiftedClock},
    crypto::SecretBox,
};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// The instant test apps' clocks start at unless a test pins its own: 2026-08-03 10:00 UTC, so
/// "the latest closed month" is July 2026 (31 days) whatever day the suite runs on.
pub fn test_epoch() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-08-03T10:00:00Z").expect("constant instant").to_utc()
}

/// The clock every test app of this process shares unless it pins its own
/// ([`AppOptions::clock_start`]): [`test_epoch`] when first used, then running in real time.
pub fn shared_clock() -> SharedClock {
    static CLOCK: OnceLock<SharedClock> = OnceLock::new();
    CLOCK.get_or_init(|| Arc::new(ShiftedClock::starting_at(test_epoch()))).clone()
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            api::telemetry::init(sync_core::config::LogFormat::Text);
        }
    });
}

/// A running API with its own database and fake ConnectWise.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub db: DatabaseConnection,
    pub db_name: String,
    pub settings: Arc<Settings>,
    pub fake: FakeConnectWise,
    pub http: reqwest::Client,
    /// The job queue of the deployment (Redis, or SQLite with `AppOptions::sqlite`).
    pub queue: AppQueue,
    /// The environment the app was configured with (for worker processes of the same deployment).
    pub env: HashMap<String, String>,
    /// The app's clock (shared with its in-process workers; worker processes start from it).
    pub clock: SharedClock,
    server: actix_web::dev::ServerHandle,
    worker: Option<worker::WorkerHandle>,
}

/// Options of [`spawn_app_with`].
#[derive(Default, Clone)]
pub struct AppOptions {
    /// Extra or overriding environment variables.
    pub env: Vec<(String, String)>,
    /// Run the workers in-process (for sync tests).
    pub with_worker: bool,
    /// The embedded deployment: a temporary SQLite file with the job queue in it (apalis-sqlite)
    /// and no Redis, instead of PostgreSQL + Redis.
    pub sqlite: bool,
    /// The app's clock (default: the process-wide [`shared_clock`]); e.g. [`pinned_at`] for another
    /// month, or a `ManualClock` a test moves itself.
    pub clock: Option<SharedClock>,
}

/// A clock that starts at `at` and runs on in real time.
pub fn pinned_at(at: &str) -> SharedClock {
    Arc::new(ShiftedClock::starting_at(chrono::DateTime::parse_from_rfc3339(at).expect("an RFC 3339 instant").to_utc()))
}

/// The job queue a [`TestApp`] runs on (Redis, or SQLite with [`AppOptions::sqlite`]).
#[derive(Clone, Debug)]
pub struct AppQueue(pub worker::WorkerQueue);

impl AppQueue {
    /// The queue as the app and the workers take it.
    pub fn worker_queue(&self) -> worker::WorkerQueue {
        self.0.clone()
    }
}

/// Tests written for PostgreSQL + Redis use the Redis queue directly (`app.queue.connection()`).
impl Deref for AppQueue {
    type Target = worker::RedisQueue;

    fn deref(&self) -> &worker::RedisQueue {
        match &self.0 {
            worker::WorkerQueue::Redis(q) => q,
            worker::WorkerQueue::Sqlite(_) => panic!("this test uses the Redis queue; it cannot run with AppOptions {{ sqlite: true }}"),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Create a fresh database named by a uuid and run the migrations on it.
pub async fn fresh_database() -> (DatabaseConnection, String, String) {
    fresh_database_with_pool(10).await
}

/// [`fresh_database`] with a pool of `max_connections`.
pub async fn fresh_database_with_pool(max_connections: u32) -> (DatabaseConnection, String, String) {
    let name = format!("csync_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sync_core::db::connect(PG_ADMIN_URL, 1).await.expect("PostgreSQL must be running on 127.0.0.1:5432");
    admin.execute_raw(Statement::from_string(DbBackend::Postgres, format!("CREATE DATABASE {name}"))).await.expect("create database");
    admin.close().await.ok();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let db = sync_core::db::connect(&url, max_connections).await.expect("connect test database");
    sync_core::db::migrate(&db).await.expect("migrate");
    (db, name, url)
}

/// A fresh SQLite file in the temporary directory (the embedded deployment's database), migrated.
/// Returns the connection, the file's path and its URL.
pub async fn fresh_sqlite_database() -> (DatabaseConnection, String, String) {
    let path = std::env::temp_dir().join(format!("csync_test_{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = sync_core::db::connect(&url, 10).await.expect("create the SQLite test database");
    sync_core::db::migrate(&db).await.expect("migrate");
    (db, path.display().to_string(), url)
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    init_logs();
    let fake = FakeConnectWise::start(FakeConfig { private_key: "Pr1v4te-K3y-Never-Shown".into(), ..FakeConfig::default() }).await;
    // The app and its in-process workers share one pool: a fenced PATCH holds a connection.
    let concurrency = opts.env.iter().find(|(k, _)| k == "PUSH_CONCURRENCY").and_then(|(_, v)| v.parse::<u32>().ok()).unwrap_or(16);
    let pool = if opts.with_worker { 10 + concurrency } else { 10 };
    let (db, db_name, url) = if opts.sqlite { fresh_sqlite_database().await } else { fresh_database_with_pool(pool).await };
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", url.as_str()),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("JWT_SECRET", JWT_SECRET),
        ("CW_ALLOW_HTTP", "true"),
        ("PUSH_BACKOFF_MIN_MS", "50"),
        ("PUSH_BACKOFF_MAX_MS", "400"),
        ("CW_TIMEOUT_MS", "2000"),
        ("CW_RATE_PER_TENANT", "1000"),
        ("RECONCILE_STALE_S", "2"),
        // Tests send bursts of requests as one tenant; the budget has its own tests (abuse.rs).
        ("API_RATE_PER_TENANT", "100000"),
        ("API_BURST_PER_TENANT", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.insert("SECRETS_KEY".into(), SecretBox::generate_key_base64());
    if !opts.sqlite {
        vars.insert("REDIS_URL".into(), REDIS_URL.into());
    }
    vars.insert("REDIS_PREFIX".into(), format!("csync-test-{}", uuid::Uuid::new_v4().simple()));
    vars.insert("CW_CLIENT_ID".into(), fake.config().client_id.clone());
    for (k, v) in &opts.env {
        vars.insert(k.clone(), v.clone());
    }
    let settings = Arc::new(Settings::from_vars(&vars).expect("test settings"));
    let clock: SharedClock = opts.clock.clone().unwrap_or_else(shared_clock);
    let queue = if opts.sqlite {
        AppQueue(worker::SqliteQueue::setup(&db).await.expect("SQLite job queue").into())
    } else {
        AppQueue(worker::RedisQueue::connect(&settings).await.expect("Redis must be running on 127.0.0.1:6379").into())
    };
    let app =
        api::Application::build(settings.clone(), db.clone(), Arc::new(queue.worker_queue()), clock.clone()).await.expect("build app");
    let port = app.port();
    let server = app.handle();
    tokio::spawn(app.run_until_stopped());
    let worker = if opts.with_worker {
        let secrets = api::startup::secret_box(&settings).expect("secrets");
        // One process on SQLite: the in-process limiter is the whole budget.
        let rate: Arc<dyn sync_core::engine::TenantRateLimiter> = match &queue.0 {
            worker::WorkerQueue::Redis(q) => {
                Arc::new(worker::RedisRateLimiter::new(q.connection(), &settings.redis_prefix, settings.cw_rate_per_tenant))
            }
            worker::WorkerQueue::Sqlite(_) => {
                Arc::new(sync_core::engine::LocalRateLimiter::with_clock(settings.cw_rate_per_tenant, clock.clone()))
            }
        };
        let deps = worker::engine_deps(
            db.clone(),
            &queue.worker_queue(),
            settings.clone(),
            secrets,
            api::startup::cw_http(&settings).expect("http client"),
            rate,
            clock.clone(),
        );
        Some(worker::spawn_in_process(deps, queue.worker_queue()).await)
    } else {
        None
    };
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        db,
        db_name,
        settings,
        fake,
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
        queue,
        env: vars,
        clock,
        server,
        worker,
    }
}

/// The `worker` binary of this workspace (built by `cargo test --workspace`; built here if missing).
pub fn worker_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/integration-… → target/<profile>/worker
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_path_buf();
    let bin = dir.join("worker");
    if !bin.exists() {
        let ok = std::process::Command::new(env!("CARGO")).args(["build", "-q", "-p", "worker"]).status().expect("cargo build -p worker");
        assert!(ok.success(), "building the worker binary failed");
    }
    bin
}

/// A `worker` process of the app's deployment; killed on drop.
pub struct WorkerProcess(pub std::process::Child);

impl WorkerProcess {
    /// SIGKILL: no graceful shutdown, in-flight jobs are lost.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestApp {
    /// Start a separate `worker` process with the app's configuration (plus `extra`).
    pub fn spawn_worker_process(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut cmd = std::process::Command::new(worker_binary());
        cmd.env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        // The worker's clock starts where the app's shows now, so both see the same pinned calendar.
        cmd.envs(&self.env).env("RUST_LOG", "warn").env("CLOCK_START", self.clock.now().to_rfc3339());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if std::env::var("TEST_LOG").is_err() {
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        }
        WorkerProcess(cmd.spawn().expect("spawn worker"))
    }

    /// Poll `f` until it returns `Some`, or panic after `secs`.
    pub async fn wait_for<T, F, Fut>(&self, secs: u64, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The app's current instant.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The app's "today".
    pub fn today(&self) -> chrono::NaiveDate {
        self.clock.today()
    }

    /// The latest closed month on the app's clock (the only one a non-dry run may push).
    pub fn latest_closed(&self) -> domain::Period {
        domain::Period::latest_closed(self.today())
    }

    /// The latest closed month and its number of days.
    pub fn closed_period(&self) -> (String, u32) {
        let p = self.latest_closed();
        (p.to_string(), p.num_days())
    }

    /// The app's current instant as an SQL timestamp literal of its backend (for rows a test writes
    /// directly; never the database server's own `now()`, which does not know the pinned clock).
    pub fn sql_now(&self) -> String {
        self.sql_time(self.now())
    }

    /// `at` as an SQL timestamp literal of the app's backend.
    pub fn sql_time(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        if self.is_sqlite() { format!("'{}'", at.to_rfc3339()) } else { format!("'{}'::timestamptz", at.to_rfc3339()) }
    }

    /// An HS256 test token valid for an hour on the app's clock.
    pub fn token(&self, tenant: &str, roles: &[&str]) -> String {
        sign_hs256(&claims_at(tenant, roles, self.now().timestamp()), JWT_SECRET)
    }

    /// Wait until the run is no longer RUNNING; returns its final JSON.
    pub async fn wait_for_run(&self, tenant: &str, run_id: &str, secs: u64) -> Value {
        let t = self.token(tenant, &["viewer"]);
        self.wait_for(secs, "the run to finish", || {
            let t = t.clone();
            async move {
                let d = self
                    .gql_ok(&t, "query($id: ID!) { syncRun(id: $id) { id status finishedAt counts { total pending running succeeded failedRetrying dead skipped cancelled } } }", json!({"id": run_id}))
                    .await;
                (d["syncRun"]["status"] != "RUNNING").then(|| d["syncRun"].clone())
            }
        })
        .await
    }
}

/// Claims for a test token valid for an hour on the [`shared_clock`].
pub fn claims(tenant: &str, roles: &[&str]) -> Value {
    claims_at(tenant, roles, now())
}

/// Claims for a test token issued at `now` (seconds), valid for an hour.
pub fn claims_at(tenant: &str, roles: &[&str], now: i64) -> Value {
    json!({"sub": format!("user-of-{tenant}"), "tenant": tenant, "roles": roles, "exp": now + 3600, "iat": now})
}

/// Seconds since the epoch on the [`shared_clock`] (the clock of apps that pin none).
pub fn now() -> i64 {
    shared_clock().now().timestamp()
}

/// An HS256 token signed with the test secret, for apps on the [`shared_clock`].
pub fn token(tenant: &str, roles: &[&str]) -> String {
    sign_hs256(&claims(tenant, roles), JWT_SECRET)
}

pub fn sign_hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).expect("sign")
}

/// A PEM key pair generated once per test process with `openssl` (no private key is committed).
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

pub fn key_pair(kind: &str) -> &'static KeyPair {
    static RSA: OnceLock<KeyPair> = OnceLock::new();
    static EC: OnceLock<KeyPair> = OnceLock::new();
    let cell = if kind == "rsa" { &RSA } else { &EC };
    cell.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("csync-keys-{}-{}", kind, uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let private = dir.join("private.pem");
        let public = dir.join("public.pem");
        let gen_args: Vec<&str> = if kind == "rsa" {
            vec!["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"]
        } else {
            vec!["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"]
        };
        let ok = std::process::Command::new("openssl").args(&gen_args).arg(&private).status().expect("openssl must be installed");
        assert!(ok.success());
        let ok = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .expect("openssl");
        assert!(ok.success());
        let kp = KeyPair {
            private_pem: std::fs::read_to_string(&private).expect("read"),
            public_pem: std::fs::read_to_string(&public).expect("read"),
        };
        let _ = std::fs::remove_dir_all(&dir);
        kp
    })
}

impl TestApp {
    /// POST a GraphQL request; returns (HTTP status, JSON body).
    pub async fn gql_raw(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/graphql", self.address)).json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// POST a GraphQL request that must not fail at the HTTP level; returns the body.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql_raw(Some(token), query, variables).await;
        assert_eq!(status, 200, "unexpected status; body: {body}");
        body
    }

    /// Like [`gql`] but also asserts there are no GraphQL errors; returns `data`.
    pub async fn gql_ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Whether this app runs on the embedded SQLite deployment.
    pub fn is_sqlite(&self) -> bool {
        matches!(self.queue.0, worker::WorkerQueue::Sqlite(_))
    }

    /// Count rows of a table (for "nothing was written" assertions).
    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(self.db.get_database_backend(), format!("SELECT COUNT(*) AS n FROM {table}")))
            .await
            .expect("count")
            .expect("row");
        row.try_get::<i64>("", "n").expect("n")
    }

    /// Configure ConnectWise for `tenant` against this app's fake, with consumption sync on.
    pub async fn configure_cw(&self, tenant: &str) -> Value {
        let admin = self.token(tenant, &["admin"]);
        let cfg = self.fake.config();
        let data = self
            .gql_ok(
                &admin,
                r#"mutation($i: ConnectWiseSettingsInput!) { configureConnectWise(input: $i) { settings { siteUrl codebase hasPrivateKey consumptionSyncEnabled } userErrors { code field message } } }"#,
                json!({"i": {"siteUrl": self.fake.site_url(), "companyId": cfg.company_id, "publicKey": cfg.public_key, "privateKey": cfg.private_key,
                    "ticketBoardId": 1, "ticketTeamId": 11, "ticketStatusId": 21, "consumptionSyncEnabled": true}}),
            )
            .await;
        assert_eq!(data["configureConnectWise"]["userErrors"], json!([]), "{data}");
        data["configureConnectWise"]["settings"].clone()
    }

    /// The tenant's row id (created on first token use).
    pub async fn tenant_id(&self, tenant: &str) -> i64 {
        self.gql_ok(&self.token(tenant, &["viewer"]), "{ me { tenantId } }", json!({})).await;
        sync_core::service::tenants::ensure_tenant(&self.db, tenant, self.now()).await.expect("tenant")
    }

    /// Fill the tenant's catalog cache directly (the worker's refresh does this in production).
    pub async fn seed_catalog(&self, tenant: &str, c: &Catalog) {
        let t = self.tenant_id(tenant).await;
        let now = self.sql_now();
        let mut sql = Vec::new();
        for co in &c.companies {
            sql.push(format!(
                "INSERT INTO cw_companies (tenant_id,id,identifier,name,status,refreshed_at) VALUES ({t},{},'{}','{}','{}',{now})",
                co.id, co.identifier, co.name, co.status
            ));
        }
        for a in &c.agreements {
            sql.push(format!(
                "INSERT INTO cw_agreements (tenant_id,id,company_id,name,status,cancelled_flag,next_invoice_date,refreshed_at) VALUES ({t},{},{},'{}','{}',{},'2026-12-01',{now})",
                a.id, a.company_id, a.name, a.status, a.cancelled_flag
            ));
        }
        for ad in &c.additions {
            let cancelled = ad.cancelled_date.as_ref().map(|d| format!("'{d}'")).unwrap_or("NULL".into());
            sql.push(format!(
                "INSERT INTO cw_additions (tenant_id,id,agreement_id,sequence_number,product_id,product_identifier,description,quantity,cancelled_date,refreshed_at) VALUES ({t},{},{},{},{},'{}','{}','{}',{cancelled},{now})",
                ad.id, ad.agreement_id, ad.sequence_number, ad.product_id, ad.product_identifier, ad.description, ad.quantity
            ));
        }
        for s in sql {
            self.db.execute_unprepared(&s).await.expect("seed catalog");
        }
    }

    /// The same catalog in the fake ConnectWise (for pushes and refresh).
    pub fn seed_fake(&self, c: &Catalog) {
        for co in &c.companies {
            self.fake.add_company(FakeCompany {
                id: co.id,
                identifier: co.identifier.clone(),
                name: co.name.clone(),
                status: co.status.clone(),
                deleted: false,
            });
        }
        for a in &c.agreements {
            self.fake.add_agreement(FakeAgreement {
                id: a.id,
                name: a.name.clone(),
                company_id: a.company_id,
                status: a.status.clone(),
                cancelled_flag: a.cancelled_flag,
                next_invoice_date: Some("2026-12-01T00:00:00Z".into()),
            });
        }
        for ad in &c.additions {
            self.fake.add_addition(FakeAddition {
                id: ad.id,
                agreement_id: ad.agreement_id,
                sequence_number: ad.sequence_number,
                product_id: ad.product_id,
                product_identifier: ad.product_identifier.clone(),
                quantity: 0,
                cancelled_date: ad.cancelled_date.clone(),
                effective_date: Some("2026-01-01T00:00:00Z".into()),
                description: ad.description.clone(),
                ..FakeAddition::default()
            });
        }
        self.fake.add_board(FakeBoard {
            id: 1,
            name: "Billing".into(),
            teams: vec![(11, "Finance".into(), true)],
            statuses: vec![(21, "New".into(), true)],
            types: vec![(31, "Billing".into(), true)],
            subtypes: vec![(41, "Consumption".into(), true)],
        });
    }

    /// Create a customer with licenses via the API; returns its id.
    pub async fn customer(&self, tenant: &str, external_id: &str, name: &str, licenses: Value) -> String {
        let data = self
            .gql_ok(
                &self.token(tenant, &["integration"]),
                "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { customers { id } userErrors { code field message } } }",
                json!({"i": [{"externalId": external_id, "accountName": name, "licenses": licenses}]}),
            )
            .await;
        assert_eq!(data["upsertCustomers"]["userErrors"], json!([]), "{data}");
        data["upsertCustomers"]["customers"][0]["id"].as_str().expect("id").to_string()
    }

    /// Map a customer to a company; returns the payload.
    pub async fn map_customer(&self, tenant: &str, customer_id: &str, company: i64) -> Value {
        self.gql_ok(
            &self.token(tenant, &["operator"]),
            "mutation($c: ID!, $co: Int!) { mapCustomer(customerId: $c, cwCompanyId: $co) { customer { id cwCompany { id } } userErrors { code field message } } }",
            json!({"c": customer_id, "co": company}),
        )
        .await["mapCustomer"]
            .clone()
    }

    /// Stop the server, the workers and drop the database.
    pub async fn shutdown(mut self) {
        if let Some(w) = self.worker.take() {
            let _ = w.shutdown().await;
        }
        self.server.stop(false).await;
        self.db.clone().close().await.ok();
        if self.is_sqlite() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.db_name));
            }
            return;
        }
        if let Ok(admin) = sync_core::db::connect(PG_ADMIN_URL, 1).await {
            let _ = admin
                .execute_raw(Statement::from_string(DbBackend::Postgres, format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name)))
                .await;
        }
    }
}

/// A `ProductMappingInput`.
pub fn mapping_input(customer: &str, module: &str, usage: &str, interval: &str, agreement: i64, seq: i64) -> Value {
    json!({"customerId": customer, "productModule": module, "usage": usage, "interval": interval, "cwAgreementId": agreement, "cwSequenceNumber": seq})
}

/// A `ConsumptionSampleInput` by customer id.
pub fn sample(customer: &str, module: &str, usage: &str, day: String, value: &str) -> Value {
    json!({"customerId": customer, "productModule": module, "usage": usage, "day": day, "value": value})
}

/// Day `d` of `period` (`YYYY-MM`) as `YYYY-MM-DD`.
pub fn day(period: &str, d: u32) -> String {
    format!("{period}-{d:02}")
}

/// A small ConnectWise catalog.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub companies: Vec<Company>,
    pub agreements: Vec<Agreement>,
    pub additions: Vec<Addition>,
}

#[derive(Clone, Debug)]
pub struct Company {
    pub id: i64,
    pub identifier: String,
    pub name: String,
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct Agreement {
    pub id: i64,
    pub company_id: i64,
    pub name: String,
    pub status: String,
    pub cancelled_flag: bool,
}

#[derive(Clone, Debug)]
pub struct Addition {
    pub id: i64,
    pub agreement_id: i64,
    pub sequence_number: i64,
    pub product_id: i64,
    pub product_identifier: String,
    pub description: String,
    pub quantity: String,
    pub cancelled_date: Option<String>,
}

/// The standard catalog: companies 100 (Active), 101 (Active), 102 (Inactive); agreement 500 of
/// company 100 with additions 9001..9005 (seq 1..5, products 701..705), agreement 501 of company 100
/// Cancelled, agreement 502 of company 101; plus the rule-specific additions:
/// 9010/9011 both seq 10 (ambiguous), 9012 seq 12 cancelled, 9013 seq 13 and 9014 seq 14 sharing product 713.
pub fn standard_catalog() -> Catalog {
    let co = |id: i64, name: &str, status: &str| Company { id, identifier: format!("C{id}"), name: name.into(), status: status.into() };
    let ag = |id: i64, company_id: i64, status: &str| Agreement {
        id,
        company_id,
        name: format!("Agreement {id}"),
        status: status.into(),
        cancelled_flag: status == "Cancelled",
    };
    let ad = |id: i64, agreement_id: i64, seq: i64, product: i64, cancelled: Option<&str>| Addition {
        id,
        agreement_id,
        sequence_number: seq,
        product_id: product,
        product_identifier: format!("PROD-{product}"),
        description: format!("Addition {id}"),
        quantity: "0".into(),
        cancelled_date: cancelled.map(str::to_string),
    };
    Catalog {
        companies: vec![co(100, "Acme Corp", "Active"), co(101, "Beta LLC", "Active"), co(102, "Gone Inc", "Inactive")],
        agreements: vec![ag(500, 100, "Active"), ag(501, 100, "Cancelled"), ag(502, 101, "Active")],
        additions: vec![
            ad(9001, 500, 1, 701, None),
            ad(9002, 500, 2, 702, None),
            ad(9003, 500, 3, 703, None),
            ad(9004, 500, 4, 704, None),
            ad(9005, 500, 5, 705, None),
            ad(9010, 500, 10, 710, None),
            ad(9011, 500, 10, 711, None),
            ad(9012, 500, 12, 712, Some("2020-01-01")),
            ad(9013, 500, 13, 713, None),
            ad(9014, 500, 14, 713, None),
            ad(9020, 501, 1, 720, None),
            ad(9030, 502, 1, 730, None),
            ad(9031, 502, 2, 731, None),
        ],
    }
}

/// Licenses JSON for all four modules, provisioned on 2026-01-01.
pub fn all_licenses() -> Value {
    json!([
        {"productModule": "ENTERPRISE_WORKLOADS", "edition": "ENTERPRISE", "provisionedOn": "2026-01-01", "addOns": ["High Storage Tier"]},
        {"productModule": "MICROSOFT_365", "edition": "BUSINESS", "provisionedOn": "2026-01-01"},
        {"productModule": "ENDPOINTS", "edition": "ELITE", "provisionedOn": "2026-01-01"},
        {"productModule": "GOOGLE_WORKSPACE", "edition": "BUSINESS", "provisionedOn": "2026-01-01"}
    ])
}

/// A tenant ready for product mappings: ConnectWise configured (sync on), catalog cached, one
/// customer with all licenses mapped to company 100. Returns the customer id.
pub async fn ready_tenant(app: &TestApp, tenant: &str) -> String {
    app.configure_cw(tenant).await;
    let cat = standard_catalog();
    app.seed_catalog(tenant, &cat).await;
    let c = app.customer(tenant, "ext-1", "Customer One", all_licenses()).await;
    let m = app.map_customer(tenant, &c, 100).await;
    assert_eq!(m["userErrors"], json!([]), "{m}");
    c
}

/// The GraphQL global id of a database row, for tests that start from rows they wrote or read in
/// SQL (clients get ids from the API; only tests have table keys). Built by the API's own id module.
pub fn global_id(node_type: api::graphql::ids::NodeType, key: i64) -> String {
    api::graphql::ids::GlobalId::encode(node_type, key).0
}

/// The table key behind a global id the API returned, for tests that go on in SQL.
pub fn table_key(global_id: &str) -> i64 {
    api::graphql::ids::GlobalId::parse(global_id).unwrap_or_else(|| panic!("not a global id: {global_id:?}")).key
}

pub use api::graphql::ids::NodeType;
