//! Test harness: a fresh database per test (PostgreSQL `csync_test_<uuid>` or a temporary SQLite
//! file), a started fake ConnectWise, a recording job queue, and a manual clock, so a test steps the
//! engine job by job (zero2prod's `try_execute_task`) instead of sleeping.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany, FakeConfig, FakeConnectWise};
use futures::future::BoxFuture;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, EntityTrait, Statement};
use sync_core::{
    Settings,
    auth::Principal,
    crypto::SecretBox,
    engine::{self, EngineDeps, EngineError, LocalRateLimiter, ManualClock},
    jobs::{Job, JobQueue, QueueError},
};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A queue that records jobs; tests pop and run them. Delayed jobs are due at the test clock's
/// instant `now + delay`.
pub struct TestQueue {
    jobs: Mutex<Vec<(Job, Option<DateTime<Utc>>)>>,
    clock: Arc<ManualClock>,
}

impl TestQueue {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        TestQueue { jobs: Mutex::default(), clock }
    }
    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }
    pub fn jobs(&self) -> Vec<(Job, Option<DateTime<Utc>>)> {
        self.jobs.lock().unwrap().clone()
    }
    pub fn clear(&self) {
        self.jobs.lock().unwrap().clear();
    }
    /// The first job due at `now`.
    pub fn pop_due(&self, now: DateTime<Utc>) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap();
        let i = jobs.iter().position(|(_, at)| at.is_none_or(|at| at <= now))?;
        Some(jobs.remove(i).0)
    }
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.jobs.lock().unwrap().iter().filter_map(|(_, at)| *at).min()
    }
}

impl JobQueue for TestQueue {
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<(), QueueError>> {
        self.jobs.lock().unwrap().push((job, None));
        Box::pin(async { Ok(()) })
    }
    fn enqueue_after(&self, job: Job, delay: std::time::Duration) -> BoxFuture<'_, Result<(), QueueError>> {
        use sync_core::clock::Clock;
        let at = self.clock.now() + chrono::TimeDelta::from_std(delay).unwrap();
        self.jobs.lock().unwrap().push((job, Some(at)));
        Box::pin(async { Ok(()) })
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }
}

pub struct TestApp {
    pub backend: Backend,
    pub db: DatabaseConnection,
    pub deps: EngineDeps,
    pub queue: Arc<TestQueue>,
    pub clock: Arc<ManualClock>,
    pub fake: FakeConnectWise,
    pub tenant_id: i64,
    pub secrets: SecretBox,
    pub settings: Arc<Settings>,
}

/// 2026-03-02 06:00 UTC: the default cron tick for February 2026.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap()
}

pub fn d(s: &str) -> NaiveDate {
    domain::parse_day(s).unwrap()
}

pub fn period(s: &str) -> domain::Period {
    domain::Period::parse(s).unwrap()
}

pub async fn fresh_db(backend: Backend) -> DatabaseConnection {
    let name = format!("csync_test_{}", uuid::Uuid::new_v4().simple());
    let url = match backend {
        Backend::Postgres => {
            let admin = sea_orm::Database::connect(PG_ADMIN_URL).await.expect("PostgreSQL at 127.0.0.1:5432");
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
            admin.close().await.ok();
            format!("postgres://postgres@127.0.0.1:5432/{name}")
        }
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let db = sync_core::db::connect(&url, 5).await.expect("connect");
    sync_core::db::migrate(&db).await.expect("migrate");
    db
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, &[]).await
}

pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let db = fresh_db(backend).await;
    let fake = FakeConnectWise::start(FakeConfig::default()).await;
    let mut vars: HashMap<String, String> = [
        ("CW_CLIENT_ID", fake.config().client_id.as_str()),
        ("PUSH_BACKOFF_MIN_MS", "10"),
        ("PUSH_BACKOFF_MAX_MS", "50"),
        ("PUSH_MAX_ATTEMPTS", "5"),
        ("CW_TIMEOUT_MS", "5000"),
        ("RECONCILE_STALE_S", "60"),
        ("CW_ALLOW_HTTP", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let settings = Arc::new(Settings::from_vars(&vars).expect("settings"));
    let secrets = SecretBox::from_bytes(&[7; 32]).unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let queue = Arc::new(TestQueue::new(clock.clone()));
    let deps = EngineDeps {
        db: db.clone(),
        queue: queue.clone(),
        settings: settings.clone(),
        secrets: Some(secrets.clone()),
        http: connectwise::CwHttp::new(connectwise::AddressPolicy::AllowPrivate).expect("http client"),
        rate: Arc::new(LocalRateLimiter::with_clock(1000, clock.clone())),
        clock: clock.clone(),
    };
    let tenant = entity::tenant::ActiveModel { external_id: Set("t1".into()), created_at: Set(start_time()), ..Default::default() }
        .insert(&db)
        .await
        .unwrap();
    let app = TestApp { backend, db, deps, queue, clock, fake, tenant_id: tenant.id, secrets, settings };
    app.configure_cw("priv").await;
    app.fake.add_board(FakeBoard::new(1, "Billing"));
    app
}

impl TestApp {
    pub fn principal(&self) -> Principal {
        Principal { sub: "alice".into(), tenant_key: "t1".into(), tenant_id: self.tenant_id, roles: vec!["admin".into()] }
    }

    pub fn now(&self) -> DateTime<Utc> {
        use sync_core::engine::Clock;
        self.clock.now()
    }

    pub async fn configure_cw(&self, private_key: &str) {
        let now = self.now();
        entity::cw_settings::Entity::delete_by_id(self.tenant_id).exec(&self.db).await.unwrap();
        entity::cw_settings::ActiveModel {
            tenant_id: Set(self.tenant_id),
            site_url: Set(self.fake.site_url()),
            company_id: Set("msp".into()),
            public_key: Set("pub".into()),
            private_key_enc: Set(Some(self.secrets.encrypt(private_key).unwrap())),
            codebase: Set("v4_6_release".into()),
            consumption_sync_enabled: Set(true),
            ticket_board_id: Set(1),
            ticket_team_id: Set(11),
            ticket_status_id: Set(11),
            ticket_type_id: Set(None),
            ticket_subtype_id: Set(None),
            breaker_open: Set(false),
            breaker_reason: Set(None),
            breaker_opened_at: Set(None),
            paused_until: Set(None),
            catalog_refreshed_at: Set(None),
            owed_scheduled_period: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await
        .unwrap();
    }

    pub async fn exec(&self, sql: &str) {
        self.db.execute_unprepared(sql).await.unwrap();
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        let row = self.db.query_one_raw(Statement::from_string(self.db.get_database_backend(), sql)).await.unwrap().unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    pub async fn customer(&self, external_id: &str, name: &str) -> i64 {
        let now = self.now();
        entity::customer::ActiveModel {
            tenant_id: Set(self.tenant_id),
            external_id: Set(external_id.into()),
            account_name: Set(name.into()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .unwrap()
        .id
    }

    pub async fn license(&self, customer_id: i64, module: domain::ProductModule, from: &str, to: Option<&str>) {
        entity::license::ActiveModel {
            tenant_id: Set(self.tenant_id),
            customer_id: Set(customer_id),
            product_module: Set(module.as_str().into()),
            edition: Set("BUSINESS".into()),
            provisioned_on: Set(d(from)),
            deprovisioned_on: Set(to.map(d)),
            add_ons: Set(serde_json::json!([])),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .unwrap();
    }

    /// A ConnectWise company (in the fake) mapped to the customer.
    pub async fn map_customer(&self, customer_id: i64, company_id: i64, name: &str) {
        self.fake.add_company(FakeCompany::new(company_id, &format!("C{company_id}"), name));
        let now = self.now();
        entity::customer_mapping::ActiveModel {
            tenant_id: Set(self.tenant_id),
            customer_id: Set(customer_id),
            cw_company_id: Set(company_id),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .unwrap();
    }

    /// An agreement + addition in the fake and the product mapping to it; returns the mapping id.
    #[allow(clippy::too_many_arguments)]
    pub async fn map_product(
        &self,
        customer_id: i64,
        company_id: i64,
        module: domain::ProductModule,
        usage: domain::UsageMetric,
        method: domain::IntervalMethod,
        agreement_id: i64,
        addition_id: i64,
    ) -> i64 {
        self.fake.add_agreement(FakeAgreement::new(agreement_id, &format!("Agreement {agreement_id}"), company_id));
        let product_id = addition_id * 10;
        self.fake.add_addition(FakeAddition::new(addition_id, agreement_id, product_id, 1));
        let now = self.now();
        entity::product_mapping::ActiveModel {
            tenant_id: Set(self.tenant_id),
            customer_id: Set(customer_id),
            product_module: Set(module.as_str().into()),
            usage: Set(usage.as_str().into()),
            interval_method: Set(method.as_str().into()),
            cw_agreement_id: Set(agreement_id),
            cw_sequence_number: Set(1),
            cw_addition_id: Set(addition_id),
            cw_product_id: Set(Some(product_id)),
            cw_product_identifier: Set(Some(format!("PROD-{product_id}"))),
            version: Set(1),
            stale: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .unwrap()
        .id
    }

    /// Record samples by customer id (`(day, value)` pairs), asserting success.
    pub async fn record(
        &self,
        customer_id: i64,
        module: domain::ProductModule,
        usage: domain::UsageMetric,
        samples: &[(&str, &str)],
    ) -> sync_core::service::consumption::RecordResult {
        let input = samples
            .iter()
            .map(|(day, value)| sync_core::service::consumption::SampleInput {
                customer_id: Some(customer_id.to_string()),
                customer_external_id: None,
                product_module: module,
                usage,
                day: day.to_string(),
                value: value.to_string(),
            })
            .collect();
        sync_core::service::consumption::record_consumption(&self.db, &self.principal(), input, self.now())
            .await
            .unwrap()
            .expect("samples accepted")
    }

    /// Pull the fake's catalog into the cache tables, then forget those requests.
    pub async fn refresh_catalog(&self) -> engine::CatalogReport {
        let report = engine::catalog::refresh_catalog(&self.deps, self.tenant_id, "user:test").await.unwrap();
        self.fake.clear_requests();
        report
    }

    /// Start a manual run (non-dry unless asked) for `p` as on 2026-03-02, asserting success.
    pub async fn run_sync(&self, p: &str, dry_run: bool) -> entity::sync_run::Model {
        sync_core::service::sync::run_monthly_sync(&self.db, self.queue.as_ref(), &self.principal(), period(p), None, dry_run, start_time())
            .await
            .unwrap()
            .expect("run started")
    }

    /// Run one job.
    pub async fn execute(&self, job: Job) -> Result<(), EngineError> {
        match job {
            Job::AggregateRun(j) => engine::aggregate::aggregate_run(&self.deps, j.run_id).await,
            Job::Push(j) => engine::push::attempt_push(&self.deps, j.push_id).await,
            Job::Ticket(j) => engine::ticket::open_ticket(&self.deps, j.push_id).await,
            Job::CatalogRefresh(j) => engine::catalog::refresh_catalog(&self.deps, j.tenant_id, &j.requested_by).await.map(|_| ()),
        }
    }

    /// Run only the aggregation job(s) waiting now, leaving the push jobs queued.
    pub async fn run_due_only_aggregation(&self) {
        for (job, _) in self.queue.jobs() {
            if let Job::AggregateRun(j) = job {
                engine::aggregate::aggregate_run(&self.deps, j.run_id).await.unwrap();
            }
        }
    }

    /// Run every job due now (and those they enqueue for now); returns how many ran.
    pub async fn run_due(&self) -> usize {
        let mut n = 0;
        while let Some(job) = self.queue.pop_due(self.now()) {
            self.execute(job.clone()).await.unwrap_or_else(|e| panic!("job {job:?} failed: {e}"));
            n += 1;
            assert!(n < 10_000, "job loop");
        }
        n
    }

    /// Run jobs until the queue is empty, moving the clock to each delayed job's time.
    pub async fn run_all(&self) -> usize {
        let mut n = 0;
        for _ in 0..1000 {
            n += self.run_due().await;
            match self.queue.earliest() {
                Some(at) => self.clock.set(at.max(self.now())),
                None => return n,
            }
        }
        panic!("queue never drained");
    }

    pub async fn pushes(&self, run_id: i64) -> Vec<entity::push::Model> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        entity::push::Entity::find()
            .filter(entity::push::Column::SyncRunId.eq(run_id))
            .order_by_asc(entity::push::Column::Id)
            .all(&self.db)
            .await
            .unwrap()
    }

    pub async fn push(&self, id: i64) -> entity::push::Model {
        entity::push::Entity::find_by_id(id).one(&self.db).await.unwrap().unwrap()
    }

    pub async fn run(&self, id: i64) -> entity::sync_run::Model {
        entity::sync_run::Entity::find_by_id(id).one(&self.db).await.unwrap().unwrap()
    }

    pub async fn cw_settings(&self) -> entity::cw_settings::Model {
        entity::cw_settings::Entity::find_by_id(self.tenant_id).one(&self.db).await.unwrap().unwrap()
    }

    pub async fn audit(&self, action: &str) -> Vec<entity::audit_entry::Model> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        entity::audit_entry::Entity::find()
            .filter(entity::audit_entry::Column::Action.eq(action))
            .order_by_asc(entity::audit_entry::Column::Id)
            .all(&self.db)
            .await
            .unwrap()
    }

    pub async fn attempts(&self, push_id: i64) -> Vec<entity::push_attempt::Model> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        entity::push_attempt::Entity::find()
            .filter(entity::push_attempt::Column::PushId.eq(push_id))
            .order_by_asc(entity::push_attempt::Column::Id)
            .all(&self.db)
            .await
            .unwrap()
    }
}
