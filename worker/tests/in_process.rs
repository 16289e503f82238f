//! The whole worker in-process (`spawn_in_process`) on a throw-away SQLite database and the local
//! Redis (127.0.0.1:6379) under a unique key prefix. Business behaviour is tested with the engine;
//! here: start-up, heartbeat, jobs taken and acknowledged, giving up on infrastructure errors, and
//! graceful shutdown.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use redis::AsyncCommands;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};
use sync_core::{
    Settings,
    clock::ShiftedClock,
    engine::LocalRateLimiter,
    jobs::{AggregateRunJob, Job, JobQueue, PushJob},
};
use worker::{RedisQueue, WorkerHandle, connect_redis, engine_deps, spawn_in_process};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

struct Env {
    prefix: String,
    db_path: std::path::PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(REDIS_URL)
            && let Ok(mut conn) = client.get_connection()
        {
            let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut conn).unwrap_or_default();
            for chunk in keys.chunks(100) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
            let queues: Vec<String> =
                redis::cmd("ZRANGE").arg("core:apalis:queues:list").arg(0).arg(-1).query(&mut conn).unwrap_or_default();
            let ours: Vec<&String> = queues.iter().filter(|q| q.starts_with(&format!("{}:", self.prefix))).collect();
            if !ours.is_empty() {
                let _: Result<(), _> = redis::cmd("ZREM").arg("core:apalis:queues:list").arg(ours).query(&mut conn);
            }
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db_path.display()));
        }
    }
}

async fn start(test: &str) -> (Env, DatabaseConnection, RedisQueue, WorkerHandle) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("test-worker-{test}-{id}");
    let db_path = std::env::temp_dir().join(format!("worker-{test}-{id}.db"));
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", format!("sqlite://{}?mode=rwc", db_path.display())),
        ("REDIS_URL", REDIS_URL.to_string()),
        ("REDIS_PREFIX", prefix.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Arc::new(Settings::from_vars(&vars).expect("settings"));
    let db = sync_core::db::connect(&settings.database_url, 4).await.expect("sqlite");
    sync_core::db::migrate(&db).await.expect("migrate");
    let queue = RedisQueue::from_connection(connect_redis(REDIS_URL).await.expect("redis"), &prefix);
    // A pinned calendar: nothing here may depend on the day the suite runs.
    let clock =
        Arc::new(ShiftedClock::starting_at(chrono::DateTime::parse_from_rfc3339("2026-08-03T10:00:00Z").expect("instant").to_utc()));
    let deps = engine_deps(
        db.clone(),
        &queue,
        settings,
        None,
        connectwise::CwHttp::new(connectwise::AddressPolicy::AllowPrivate).expect("http client"),
        Arc::new(LocalRateLimiter::new(10)),
        clock,
    );
    let handle = spawn_in_process(deps, queue.clone()).await;
    (Env { prefix, db_path }, db, queue, handle)
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn done_ids(queue: &RedisQueue, kind: &str) -> Vec<String> {
    let mut conn = queue.connection();
    conn.smembers(format!("{}:{kind}:done", queue.prefix())).await.expect("smembers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_workers_take_jobs_beat_and_stop_gracefully() {
    let (_env, db, queue, handle) = start("lifecycle").await;

    wait_for("the heartbeat row", Duration::from_secs(10), || async {
        !entity::worker_heartbeat::Entity::find().all(&db).await.expect("heartbeats").is_empty()
    })
    .await;
    let beats = entity::worker_heartbeat::Entity::find().all(&db).await.expect("heartbeats");
    assert_eq!(beats.len(), 1);
    assert!(beats[0].worker_name.contains(&format!("-{}-", std::process::id())), "{beats:?}");

    // A push that does not exist: the engine has nothing to do, and the job is acknowledged.
    queue.enqueue(Job::Push(PushJob { push_id: 987_654_321 })).await.expect("enqueue");
    wait_for("the push job to be done", Duration::from_secs(15), || async { done_ids(&queue, "push").await.len() == 1 }).await;
    let depth = queue.depth().await.expect("depth");
    assert!(depth.iter().all(|(_, n)| *n == 0), "{depth:?}");

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(40), handle.shutdown()).await.expect("shutdown in time").expect("clean shutdown");
    assert!(started.elapsed() < Duration::from_secs(35), "shutdown took {:?}", started.elapsed());
    // A clean stop leaves no worker registration in Redis…
    let mut conn = queue.connection();
    for kind in ["aggregate", "push", "ticket", "catalog", "cron"] {
        let workers: u64 = conn.zcard(format!("{}:{kind}:workers", queue.prefix())).await.expect("zcard");
        assert_eq!(workers, 0, "{kind} workers still registered");
    }
    // …and removes the heartbeat row.
    assert!(entity::worker_heartbeat::Entity::find().all(&db).await.expect("heartbeats").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_errors_are_retried_then_given_up() {
    let (_env, db, queue, handle) = start("give-up").await;
    // Make every engine query on runs fail: an infrastructure error, not a business outcome.
    db.execute_unprepared("PRAGMA foreign_keys=OFF").await.expect("pragma");
    db.execute_unprepared("DROP TABLE sync_runs").await.expect("drop");

    queue.enqueue(Job::AggregateRun(AggregateRunJob { run_id: 1 })).await.expect("enqueue");
    // 5 attempts: two in-process retries (1 s, 2 s backoff), then apalis-redis re-schedules (+3 s,
    // +4 s); the last attempt logs and acknowledges.
    wait_for("the job to be given up", Duration::from_secs(40), || async { done_ids(&queue, "aggregate").await.len() == 1 }).await;
    let id = done_ids(&queue, "aggregate").await.remove(0);
    let mut conn = queue.connection();
    let attempts: String = conn.hget(format!("{}:aggregate:meta:{id}", queue.prefix()), "attempts").await.expect("meta");
    assert_eq!(attempts, worker::MAX_JOB_ATTEMPTS.to_string());
    let dead: u64 = conn.scard(format!("{}:aggregate:dead", queue.prefix())).await.expect("dead");
    assert_eq!(dead, 0);

    tokio::time::timeout(Duration::from_secs(40), handle.shutdown()).await.expect("shutdown in time").expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_running_job_finish() {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    let (env, _db, queue, handle) = start("drain").await;

    // Hold SQLite's write lock from another connection: the aggregation job blocks on it.
    let url = format!("sqlite://{}?mode=rwc", env.db_path.display());
    let locker = sync_core::db::connect(&url, 1).await.expect("second pool");
    let lock = locker
        .begin_with_options(TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() })
        .await
        .expect("write lock");

    queue.enqueue(Job::AggregateRun(AggregateRunJob { run_id: 424_242 })).await.expect("enqueue");
    wait_for("the job to be taken", Duration::from_secs(10), || async { queue.depth().await.expect("depth").iter().all(|(_, n)| *n == 0) })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopping = tokio::spawn(handle.shutdown());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!stopping.is_finished(), "shutdown did not wait for the running job");
    assert!(done_ids(&queue, "aggregate").await.is_empty());

    lock.rollback().await.expect("release the lock");
    tokio::time::timeout(Duration::from_secs(35), stopping).await.expect("shutdown in time").expect("join").expect("clean");
    assert_eq!(done_ids(&queue, "aggregate").await.len(), 1, "the running job finished and was acknowledged");
}
