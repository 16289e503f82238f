//! [`SqliteQueue`]: the [`JobQueue`] of the embedded deployment (README: Quick start) on apalis-sqlite 1.0,
//! one `SqliteStorage` per job type, in the same SQLite file as the data and on sea-orm's own sqlx
//! pool (`DatabaseConnection::get_sqlite_connection_pool`), so there is one set of connections, one
//! busy timeout and one WAL for everything.
//!
//! apalis-sqlite keeps its tasks in a `Jobs` table and its worker registrations in `Workers`
//! (created by its own sqlx migrations, recorded in `_sqlx_migrations`; our schema is in
//! `seaql_migrations`, and no table names collide). Queue names are `csync:{kind}`.
//!
//! Delayed jobs (`enqueue_at`) use apalis-sqlite's own scheduling: the task's `run_at` column (unix
//! seconds) is written by its sink, and a worker's fetch only takes tasks with `run_at <= now`. It is
//! persisted in the database, so a crash loses nothing.
//!
//! The same handlers as on Redis run these jobs ([`crate::run_workers`]); only the storage differs.
use std::{fmt, time::Duration};

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_cron::Tick;
use apalis_sqlite::{Config, SqlitePool, SqliteStorage};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::{Serialize, de::DeserializeOwned};
use sync_core::jobs::{AggregateRunJob, CatalogRefreshJob, Job, JobQueue, PushJob, QueueError, TicketJob};

use crate::{
    error::WorkerError,
    queue::{AGGREGATE, CATALOG, CRON, MISSED_HEARTBEATS, PUSH, QUEUE_HEARTBEAT, QUEUE_KINDS, QueueStats, TICKET, run_at_seconds},
};

/// Prefix of the queue names (`job_type` column) in the `Jobs` table. One deployment per database
/// file, so unlike `REDIS_PREFIX` this is fixed.
pub const SQLITE_QUEUE_PREFIX: &str = "csync";

/// The SQLite job queue. Cheap to clone (the pool is shared by all clones and by sea-orm).
#[derive(Clone)]
pub struct SqliteQueue {
    db: DatabaseConnection,
    aggregate: SqliteStorage<AggregateRunJob>,
    push: SqliteStorage<PushJob>,
    ticket: SqliteStorage<TicketJob>,
    catalog: SqliteStorage<CatalogRefreshJob>,
    cron: SqliteStorage<Tick>,
}

impl fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteQueue").field("prefix", &SQLITE_QUEUE_PREFIX).finish_non_exhaustive()
    }
}

impl SqliteQueue {
    /// Create (or upgrade) apalis-sqlite's tables in the database of `db` and build the storages on
    /// its pool. `db` must be a SQLite connection.
    pub async fn setup(db: &DatabaseConnection) -> Result<SqliteQueue, WorkerError> {
        if db.get_database_backend() != DbBackend::Sqlite {
            return Err(WorkerError::Setup("the SQLite job queue needs a SQLite DATABASE_URL (sqlite://…)".into()));
        }
        let pool = db.get_sqlite_connection_pool().clone();
        // Only the migrations, not `SqliteStorage::setup`: that also runs `PRAGMA synchronous = OFF`
        // (and other tuning) on whichever pooled connection it gets, and billing data must not be
        // lost to a power cut. Our pragmas are set on every connection by `sync_core::db::connect`.
        SqliteStorage::migrations()
            .run(&pool)
            .await
            .map_err(|e| WorkerError::SqliteQueue(apalis_sqlite::Error::Database(apalis_sqlite::SqlxError::from(e))))?;
        Ok(Self::on_pool(db.clone(), &pool))
    }

    fn on_pool(db: DatabaseConnection, pool: &SqlitePool) -> SqliteQueue {
        SqliteQueue {
            aggregate: storage(pool, AGGREGATE, 2),
            push: storage(pool, PUSH, 10),
            ticket: storage(pool, TICKET, 4),
            catalog: storage(pool, CATALOG, 1),
            // Ticks carry an idempotency key (unique per queue in the `Jobs` table), so a tick is
            // stored once even if the scheduler hands it over twice.
            cron: storage(pool, CRON, 1),
            db,
        }
    }

    /// The full queue name of a kind, e.g. `csync:push`.
    pub fn queue_name(&self, kind: &str) -> String {
        queue_name(kind)
    }

    /// The apalis storage of aggregation jobs.
    pub fn aggregate_storage(&self) -> SqliteStorage<AggregateRunJob> {
        self.aggregate.clone()
    }
    /// The apalis storage of push jobs.
    pub fn push_storage(&self) -> SqliteStorage<PushJob> {
        self.push.clone()
    }
    /// The apalis storage of ticket jobs.
    pub fn ticket_storage(&self) -> SqliteStorage<TicketJob> {
        self.ticket.clone()
    }
    /// The apalis storage of catalog refresh jobs.
    pub fn catalog_storage(&self) -> SqliteStorage<CatalogRefreshJob> {
        self.catalog.clone()
    }
    /// The apalis storage of `SYNC_CRON` ticks.
    pub fn cron_storage(&self) -> SqliteStorage<Tick> {
        self.cron.clone()
    }

    /// Enqueue a job, to run at `run_at` (unix seconds, rounded up so never early) or now.
    pub async fn push_job(&self, job: Job, run_at: Option<DateTime<Utc>>) -> Result<(), WorkerError> {
        match job {
            Job::AggregateRun(j) => push_to(self.aggregate.clone(), j, run_at).await,
            Job::Push(j) => push_to(self.push.clone(), j, run_at).await,
            Job::Ticket(j) => push_to(self.ticket.clone(), j, run_at).await,
            Job::CatalogRefresh(j) => push_to(self.catalog.clone(), j, run_at).await,
        }
    }

    /// Ready / scheduled / dead counts of every queue (same meaning as on Redis).
    pub async fn stats(&self) -> Result<Vec<QueueStats>, WorkerError> {
        let now = crate::backend::queue_now().timestamp();
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT job_type, \
                   COALESCE(SUM(CASE WHEN (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)) AND run_at <= $1 THEN 1 ELSE 0 END), 0) AS ready, \
                   COALESCE(SUM(CASE WHEN (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)) AND run_at > $1 THEN 1 ELSE 0 END), 0) AS scheduled, \
                   COALESCE(SUM(CASE WHEN status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts) THEN 1 ELSE 0 END), 0) AS dead \
                 FROM Jobs WHERE job_type LIKE $2 GROUP BY job_type",
                [now.into(), format!("{SQLITE_QUEUE_PREFIX}:%").into()],
            ))
            .await?;
        let mut stats: Vec<QueueStats> =
            QUEUE_KINDS.iter().map(|k| QueueStats { queue: k.to_string(), ready: 0, scheduled: 0, dead: 0 }).collect();
        for row in rows {
            let job_type: String = row.try_get("", "job_type")?;
            let Some(s) = stats.iter_mut().find(|s| queue_name(&s.queue) == job_type) else { continue };
            let count = |col: &str| -> Result<u64, sea_orm::DbErr> { Ok(u64::try_from(row.try_get::<i64>("", col)?).unwrap_or(0)) };
            s.ready = count("ready")?;
            s.scheduled = count("scheduled")?;
            s.dead = count("dead")?;
        }
        Ok(stats)
    }

    /// After this process's workers (named `{base}:…`) stopped: put the tasks they still held
    /// (cut short by the shutdown timeout, or fetched but not started) back in their queues at once,
    /// instead of waiting for the next start to declare the old workers dead. Returns the count.
    pub async fn release_workers(&self, base: &str) -> Result<u64, WorkerError> {
        let result = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
                 WHERE status IN ('Running', 'Queued') AND substr(lock_by, 1, length($1)) = $1",
                [format!("{base}:").into()],
            ))
            .await?;
        Ok(result.rows_affected())
    }

    /// Remove finished tasks older than `retention` (apalis-sqlite keeps every task and its result
    /// otherwise), and registrations of workers gone that long that no task refers to any more.
    ///
    /// Not apalis-sqlite's own `vacuum_before`: it compares the integer `run_at` with a text
    /// datetime (so it removes every finished task whatever its age) and runs `VACUUM`, which
    /// rewrites the whole database file under an exclusive lock.
    pub async fn vacuum(&self, retention: Duration) -> Result<usize, WorkerError> {
        let cutoff = crate::backend::queue_now().timestamp() - i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 2);
        let removed = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "DELETE FROM Jobs WHERE job_type LIKE $2 AND COALESCE(done_at, run_at) < $1 \
                 AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))",
                [cutoff.into(), format!("{SQLITE_QUEUE_PREFIX}:%").into()],
            ))
            .await?
            .rows_affected();
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "DELETE FROM Workers WHERE last_seen < $1 AND NOT EXISTS (SELECT 1 FROM Jobs WHERE Jobs.lock_by = Workers.id)",
                [cutoff.into()],
            ))
            .await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// `SELECT 1` on the shared pool.
    pub async fn ping_database(&self) -> Result<(), WorkerError> {
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }
}

fn queue_name(kind: &str) -> String {
    format!("{SQLITE_QUEUE_PREFIX}:{kind}")
}

/// The apalis-sqlite config of one queue: the same liveness timing as the Redis queues.
pub(crate) fn queue_config(kind: &str, batch_size: usize) -> Config {
    Config::default()
        .queue(queue_name(kind))
        .batch_size(batch_size.max(1))
        .heartbeat_interval(QUEUE_HEARTBEAT)
        .missed_heartbeats(MISSED_HEARTBEATS)
}

fn storage<T>(pool: &SqlitePool, kind: &str, batch_size: usize) -> SqliteStorage<T> {
    SqliteStorage::new(pool).with_config(queue_config(kind, batch_size))
}

async fn push_to<T>(mut storage: SqliteStorage<T>, job: T, run_at: Option<DateTime<Utc>>) -> Result<(), WorkerError>
where
    T: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static,
{
    let mut task = TaskBuilder::new(job).max_attempts(crate::run::MAX_JOB_ATTEMPTS);
    if let Some(at) = run_at {
        task = task.run_at_timestamp(run_at_seconds(at));
    }
    storage.push_task(task.build()).await.map_err(|e| match e {
        apalis::prelude::TaskSinkError::PushError(e) => WorkerError::SqliteQueue(e),
        other => WorkerError::Setup(format!("could not encode the job: {other}")),
    })
}

fn queue_error(err: WorkerError) -> QueueError {
    QueueError(format!("{err:?}").replace("\n  caused by:", ";"))
}

impl JobQueue for SqliteQueue {
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move { self.push_job(job, None).await.map_err(queue_error) })
    }

    fn enqueue_after(&self, job: Job, delay: std::time::Duration) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move { self.push_job(job, Some(crate::backend::queue_time_after(delay))).await.map_err(queue_error) })
    }

    /// Jobs not taken yet per queue kind: ready now plus scheduled for later.
    fn depth(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, QueueError>> {
        Box::pin(async move {
            let stats = self.stats().await.map_err(queue_error)?;
            Ok(stats.into_iter().map(|s| (s.queue, s.ready + s.scheduled)).collect())
        })
    }

    /// The queue is the database: it answers when the database does.
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move { self.ping_database().await.map_err(queue_error) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn queue() -> (SqliteQueue, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("csync-queue-{}.db", uuid::Uuid::new_v4().simple()));
        let db = sync_core::db::connect(&format!("sqlite://{}?mode=rwc", path.display()), 4).await.expect("sqlite");
        sync_core::db::migrate(&db).await.expect("migrate");
        (SqliteQueue::setup(&db).await.expect("setup"), path)
    }

    fn remove(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn enqueue_counts_ready_and_scheduled_and_setup_is_idempotent() {
        let (q, path) = queue().await;
        q.enqueue(Job::Push(PushJob { push_id: 1 })).await.expect("enqueue");
        q.enqueue(Job::Push(PushJob { push_id: 2 })).await.expect("enqueue");
        q.enqueue_after(Job::Ticket(TicketJob { push_id: 3 }), Duration::from_secs(3600)).await.expect("enqueue_after");
        let depth: std::collections::HashMap<String, u64> = q.depth().await.expect("depth").into_iter().collect();
        assert_eq!(depth["push"], 2);
        assert_eq!(depth["ticket"], 1);
        assert_eq!(depth["aggregate"], 0);
        let stats = q.stats().await.expect("stats");
        let ticket = stats.iter().find(|s| s.queue == "ticket").expect("ticket");
        assert_eq!((ticket.ready, ticket.scheduled), (0, 1));
        q.ping().await.expect("ping");
        // A second start on the same file migrates nothing and keeps the jobs.
        let again = SqliteQueue::setup(&q.db).await.expect("setup twice");
        assert_eq!(again.stats().await.expect("stats").iter().map(|s| s.ready + s.scheduled).sum::<u64>(), 3);
        assert_eq!(q.vacuum(Duration::from_secs(3600)).await.expect("vacuum"), 0, "nothing finished yet");
        remove(&path);
    }

    /// A delayed job waits in the database for its time, then a worker on the shared pool takes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_takes_a_delayed_job_when_it_is_due() {
        use apalis::prelude::*;
        let (q, path) = queue().await;
        type Seen = std::sync::Arc<std::sync::Mutex<Vec<(i64, DateTime<Utc>)>>>;
        async fn record(job: PushJob, seen: Data<Seen>) -> Result<(), BoxDynError> {
            seen.lock().map_err(|e| e.to_string())?.push((job.push_id, crate::backend::queue_now()));
            Ok(())
        }
        let seen: Seen = Default::default();
        let due = crate::backend::queue_now() + chrono::Duration::seconds(2);
        q.push_job(Job::Push(PushJob { push_id: 7 }), Some(due)).await.expect("push_job");
        q.enqueue(Job::Push(PushJob { push_id: 8 })).await.expect("enqueue");
        let worker = WorkerBuilder::new(format!("test-{}", uuid::Uuid::new_v4().simple()))
            .backend(q.push_storage().poll_with_strategy(crate::run::Every::new(Duration::from_millis(100))))
            .data(seen.clone())
            .build(record);
        let running = tokio::spawn(async move { worker.run().await });
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while seen.lock().expect("lock").len() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.abort();
        let got = seen.lock().expect("lock").clone();
        assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![8, 7], "the due job first: {got:?}");
        // Scheduling has one-second resolution and rounds up, so never early — and not much late
        // either (apalis's own `IntervalStrategy` could leave it until the next heartbeat, 10 s).
        assert!(got[1].1 >= due - chrono::Duration::milliseconds(1), "taken at {} before {due}", got[1].1);
        assert!(got[1].1 <= due + chrono::Duration::seconds(3), "taken at {}, long after {due}", got[1].1);
        remove(&path);
    }

    #[tokio::test]
    async fn setup_refuses_postgres() {
        let db = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres").await.expect("local PostgreSQL");
        let err = SqliteQueue::setup(&db).await.expect_err("refused");
        assert!(format!("{err:?}").contains("SQLite"), "{err:?}");
    }
}
