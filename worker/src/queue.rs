//! [`RedisQueue`]: the [`JobQueue`] on apalis-redis 1.0, one `RedisStorage` per job type.
//!
//! Queue names are `{REDIS_PREFIX}:{kind}` (`csync:push`, …), so several deployments — or every
//! test — can share one Redis without seeing each other's jobs.
//!
//! Delayed jobs (`enqueue_at`) use apalis-redis's own scheduling: a task built with
//! `TaskBuilder::run_at_timestamp(unix_seconds)` is stored by the push script in the queue's
//! `{queue}:scheduled` sorted set (score = run-at second) instead of the `{queue}:active` list,
//! and every worker fetch promotes the due ones (`ZRANGEBYSCORE 0 now`) before taking work. It is
//! persisted in Redis, so a crash of the enqueuing process loses nothing.
use std::{fmt, time::Duration};

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_core::task::task_id::TaskId;
use apalis_cron::Tick;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use redis::{Client, aio::ConnectionManagerConfig};
use serde::{Serialize, de::DeserializeOwned};
use sync_core::{
    Settings,
    jobs::{AggregateRunJob, CatalogRefreshJob, Job, JobQueue, PushJob, QueueError, TicketJob},
};

use crate::error::{WorkerError, redact_url};

/// Response timeout of every Redis command. redis-rs defaults to 500 ms, which under load makes
/// apalis workers fail their fetch/heartbeat and silently stop.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one attempt to open the TCP connection.
pub const REDIS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a worker re-registers in Redis; it is considered dead (and its in-flight jobs are
/// handed to others) after [`MISSED_HEARTBEATS`] missed ones.
pub const QUEUE_HEARTBEAT: Duration = Duration::from_secs(10);
pub const MISSED_HEARTBEATS: usize = 6;

/// The queue kinds, i.e. the part after the prefix in the queue name.
pub const AGGREGATE: &str = "aggregate";
pub const PUSH: &str = "push";
pub const TICKET: &str = "ticket";
pub const CATALOG: &str = "catalog";
pub const CRON: &str = "cron";

/// Every job queue, in the order [`JobQueue::depth`] reports them.
pub const QUEUE_KINDS: [&str; 5] = [AGGREGATE, PUSH, TICKET, CATALOG, CRON];

/// The Redis job queue. Cheap to clone (one multiplexed connection shared by all clones).
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    prefix: String,
    aggregate: RedisStorage<AggregateRunJob>,
    push: RedisStorage<PushJob>,
    ticket: RedisStorage<TicketJob>,
    catalog: RedisStorage<CatalogRefreshJob>,
    cron: RedisStorage<Tick>,
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Counts of one queue, for the dashboard and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// The queue kind (`push`, …), without the prefix.
    pub queue: String,
    /// Ready to be taken now.
    pub ready: u64,
    /// Waiting for their run-at time (delayed jobs and apalis's own re-tries).
    pub scheduled: u64,
    /// Given up by apalis (after its hard-coded 25 attempts) — should stay 0, handlers give up earlier.
    pub dead: u64,
}

/// Open a Redis connection manager with the timeouts the workers need.
pub async fn connect_redis(url: &str) -> Result<ConnectionManager, WorkerError> {
    let redacted = redact_url(url);
    let client = Client::open(url).map_err(|source| WorkerError::RedisConnect { url: redacted.clone(), source })?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(REDIS_CONNECTION_TIMEOUT))
        // Reconnection attempts after the first connection; the initial connect also uses them,
        // so keep the total bounded (an unreachable Redis at start must fail within seconds).
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let mut conn = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|source| WorkerError::RedisConnect { url: redacted.clone(), source })?;
    let _: String =
        redis::cmd("PING").query_async(&mut conn).await.map_err(|source| WorkerError::RedisConnect { url: redacted, source })?;
    Ok(conn)
}

impl RedisQueue {
    /// Connect to `settings.redis_url` (required) and set up the storages under
    /// `settings.redis_prefix`.
    pub async fn connect(settings: &Settings) -> Result<RedisQueue, WorkerError> {
        let url = settings
            .redis_url
            .as_deref()
            .ok_or_else(|| WorkerError::Setup("REDIS_URL is not set: the worker needs a Redis job queue".into()))?;
        let conn = connect_redis(url).await?;
        Ok(Self::from_connection(conn, &settings.redis_prefix))
    }

    /// Build on an existing connection.
    pub fn from_connection(conn: ConnectionManager, prefix: &str) -> RedisQueue {
        let prefix = prefix.to_string();
        RedisQueue {
            aggregate: storage(&conn, &prefix, AGGREGATE, 2),
            push: storage(&conn, &prefix, PUSH, 10),
            ticket: storage(&conn, &prefix, TICKET, 4),
            catalog: storage(&conn, &prefix, CATALOG, 1),
            // A tick is enqueued by every worker process; the idempotency key (one per tick
            // timestamp, kept 40 days) lets exactly one of them through.
            cron: RedisStorage::new(conn.clone())
                .with_config(queue_config(&prefix, CRON, 1).idempotency_ttl(Some(Duration::from_secs(40 * 86_400)))),
            conn,
            prefix,
        }
    }

    /// The key/queue prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full queue name of a kind, e.g. `csync:push`.
    pub fn queue_name(&self, kind: &str) -> String {
        format!("{}:{kind}", self.prefix)
    }

    /// The shared connection (e.g. for [`crate::RedisRateLimiter`]).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The apalis storage of aggregation jobs (for the workers, and tests that run their own).
    pub fn aggregate_storage(&self) -> RedisStorage<AggregateRunJob> {
        self.aggregate.clone()
    }
    /// The apalis storage of push jobs.
    pub fn push_storage(&self) -> RedisStorage<PushJob> {
        self.push.clone()
    }
    /// The apalis storage of ticket jobs.
    pub fn ticket_storage(&self) -> RedisStorage<TicketJob> {
        self.ticket.clone()
    }
    /// The apalis storage of catalog refresh jobs.
    pub fn catalog_storage(&self) -> RedisStorage<CatalogRefreshJob> {
        self.catalog.clone()
    }
    /// The apalis storage of `SYNC_CRON` ticks.
    pub fn cron_storage(&self) -> RedisStorage<Tick> {
        self.cron.clone()
    }

    /// Remove finished tasks older than `retention` (apalis-redis keeps every task's payload and
    /// metadata, and its id in the done/dead sets, forever otherwise). Returns how many went.
    pub async fn vacuum(&self, retention: Duration) -> Result<usize, WorkerError> {
        use apalis_core::backend::Vacuum;
        let mut removed = 0;
        removed += self.aggregate.clone().vacuum_before(retention).await?;
        removed += self.push.clone().vacuum_before(retention).await?;
        removed += self.ticket.clone().vacuum_before(retention).await?;
        removed += self.catalog.clone().vacuum_before(retention).await?;
        removed += self.cron.clone().vacuum_before(retention).await?;
        let script = redis::Script::new(TRIM_FINISHED_SETS);
        let mut conn = self.conn.clone();
        for kind in QUEUE_KINDS {
            let config = queue_config(&self.prefix, kind, 1);
            let _: u64 =
                script.key(config.job_data_hash()).key(config.done_jobs_set()).key(config.dead_jobs_set()).invoke_async(&mut conn).await?;
        }
        Ok(removed)
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

    /// Ready / scheduled / dead counts of every queue.
    ///
    /// apalis-redis puts every pushed task in the `{queue}:scheduled` sorted set (score = run-at
    /// second, "now" for immediate jobs) and moves due ones to the `{queue}:active` list when a
    /// worker fetches; so "ready" counts both the list and the due part of the set.
    pub async fn stats(&self) -> Result<Vec<QueueStats>, WorkerError> {
        let now = crate::backend::queue_now().timestamp();
        let mut pipe = redis::pipe();
        for kind in QUEUE_KINDS {
            let config = queue_config(&self.prefix, kind, 1);
            pipe.llen(config.active_jobs_list())
                .zcount(config.scheduled_jobs_set(), "-inf", now)
                .zcount(config.scheduled_jobs_set(), format!("({now}"), "+inf")
                .scard(config.dead_jobs_set());
        }
        let mut conn = self.conn.clone();
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(QUEUE_KINDS
            .iter()
            .zip(counts.chunks(4))
            .map(|(kind, c)| QueueStats { queue: kind.to_string(), ready: c[0] + c[1], scheduled: c[2], dead: c[3] })
            .collect())
    }

    /// After this process's workers (named `{base}:…`) stopped: put whatever is still in their
    /// in-flight sets back on the queues (a job cut short by the shutdown timeout) and remove their
    /// registrations. apalis-redis 1.0 leaves both behind on a clean stop; the in-flight jobs would
    /// only come back after other workers declared this one dead. Returns the re-queued count.
    pub async fn release_workers(&self, base: &str) -> Result<u64, WorkerError> {
        let script = redis::Script::new(RELEASE_WORKERS);
        let mut conn = self.conn.clone();
        let mut requeued = 0;
        for kind in QUEUE_KINDS {
            let config = queue_config(&self.prefix, kind, 1);
            let n: u64 = script
                .key(config.workers_set())
                .key(config.active_jobs_list())
                .key(config.inflight_jobs_set())
                .key(format!("{}:metadata", config.workers_set()))
                .arg(format!("{base}:"))
                .invoke_async(&mut conn)
                .await?;
            requeued += n;
        }
        Ok(requeued)
    }

    /// `PING`.
    pub async fn ping_redis(&self) -> Result<(), WorkerError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

/// See [`RedisQueue::release_workers`].
const RELEASE_WORKERS: &str = r#"
-- KEYS[1] workers zset, KEYS[2] active list, KEYS[3] in-flight set prefix, KEYS[4] metadata prefix
-- ARGV[1] worker name prefix
local requeued = 0
for _, w in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(w, 1, #ARGV[1]) == ARGV[1] then
    local inflight = KEYS[3] .. ':' .. w
    local jobs = redis.call('SMEMBERS', inflight)
    if #jobs > 0 then
      redis.call('RPUSH', KEYS[2], unpack(jobs))
      requeued = requeued + #jobs
    end
    redis.call('DEL', inflight, KEYS[4] .. ':' .. w)
    redis.call('ZREM', KEYS[1], w)
  end
end
return requeued
"#;

/// Drop the ids of the done/dead sets whose task payload is gone (vacuumed).
const TRIM_FINISHED_SETS: &str = r#"
local removed = 0
for i = 2, 3 do
  if redis.call('TYPE', KEYS[i]).ok == 'set' then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[i])) do
      if redis.call('HEXISTS', KEYS[1], id) == 0 then
        redis.call('SREM', KEYS[i], id)
        removed = removed + 1
      end
    end
  end
end
return removed
"#;

/// The apalis-redis config of one queue.
pub(crate) fn queue_config(prefix: &str, kind: &str, batch_size: usize) -> Config {
    Config::default()
        .queue(format!("{prefix}:{kind}"))
        .batch_size(batch_size.max(1))
        .heartbeat_interval(QUEUE_HEARTBEAT)
        .missed_heartbeats(MISSED_HEARTBEATS)
        // Nobody subscribes to apalis's pub/sub events; workers poll.
        .emit_events(false)
}

fn storage<T>(conn: &ConnectionManager, prefix: &str, kind: &str, batch_size: usize) -> RedisStorage<T> {
    RedisStorage::new(conn.clone()).with_config(queue_config(prefix, kind, batch_size))
}

/// Unix seconds, rounded up: apalis-redis schedules with one-second resolution and promotes a
/// task once `now_seconds >= run_at`, so rounding down could deliver it up to a second early.
pub(crate) fn run_at_seconds(at: DateTime<Utc>) -> u64 {
    let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
    u64::try_from(secs).unwrap_or(0)
}

async fn push_to<T>(mut storage: RedisStorage<T>, job: T, run_at: Option<DateTime<Utc>>) -> Result<(), WorkerError>
where
    T: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static,
{
    // Our own id (apalis-redis would make one up and not tell), so that an immediate job can be
    // moved to the ready list right after the push (see `PROMOTE_ONE`).
    let id = uuid::Uuid::now_v7().to_string();
    let mut task = TaskBuilder::new(job).max_attempts(crate::run::MAX_JOB_ATTEMPTS).task_id(TaskId::from_string(id.clone()));
    if let Some(at) = run_at {
        task = task.run_at_timestamp(run_at_seconds(at));
    }
    storage.push_task(task.build()).await.map_err(|e| match e {
        apalis::prelude::TaskSinkError::PushError(e) => WorkerError::Queue(e),
        other => WorkerError::Setup(format!("could not encode the job: {other}")),
    })?;
    if run_at.is_none() {
        let config = storage.get_config().clone();
        let script = redis::Script::new(PROMOTE_ONE);
        let _: u64 = script
            .key(config.scheduled_jobs_set())
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .arg(&id)
            .invoke_async(storage.get_connection())
            .await?;
    }
    Ok(())
}

/// apalis-redis 1.0 stores every pushed task, immediate ones too, in the `{queue}:scheduled` sorted
/// set, and each fetch moves *all* due ones to the ready list with one Lua `unpack`, which fails
/// ("too many results to unpack") beyond about 8,000 ids: a run enqueueing 20,000 pushes faster than
/// the workers fetch wedged the push queue for good. So an immediate job is moved to the ready list
/// at once (this script), and delayed ones that fall due together are moved a bounded batch at a
/// time by [`RedisQueue::promote_due`] (every worker process runs it), before a fetch sees them.
const PROMOTE_ONE: &str = r#"
-- KEYS[1] scheduled set, KEYS[2] ready (active) list, KEYS[3] signal list; ARGV[1] task id
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], 1)
  return 1
end
return 0
"#;

/// Move at most ARGV[2] due tasks (score ≤ ARGV[1], unix seconds) from the scheduled set to the
/// ready list; returns how many moved.
const PROMOTE_DUE: &str = r#"
-- KEYS[1] scheduled set, KEYS[2] ready (active) list, KEYS[3] signal list
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
  redis.call('RPUSH', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], 1)
end
return #ids
"#;

/// Tasks [`RedisQueue::promote_due`] moves per script call (well below Lua's `unpack` limit).
const PROMOTE_BATCH: u64 = 1_000;

impl RedisQueue {
    /// Move the due delayed tasks of every queue to their ready lists, [`PROMOTE_BATCH`] per Redis
    /// call, so that apalis-redis's own promotion (all at once) never meets thousands of them (see
    /// [`PROMOTE_ONE`]). Returns how many moved.
    pub async fn promote_due(&self) -> Result<u64, WorkerError> {
        let script = redis::Script::new(PROMOTE_DUE);
        let mut conn = self.conn.clone();
        let now = crate::backend::queue_now().timestamp().max(0);
        let mut moved = 0;
        for kind in QUEUE_KINDS {
            let config = queue_config(&self.prefix, kind, 1);
            loop {
                let n: u64 = script
                    .key(config.scheduled_jobs_set())
                    .key(config.active_jobs_list())
                    .key(config.signal_list())
                    .arg(now)
                    .arg(PROMOTE_BATCH)
                    .invoke_async(&mut conn)
                    .await?;
                moved += n;
                if n < PROMOTE_BATCH {
                    break;
                }
            }
        }
        Ok(moved)
    }
}

fn queue_error(err: WorkerError) -> QueueError {
    QueueError(format!("{err:?}").replace("\n  caused by:", ";"))
}

impl JobQueue for RedisQueue {
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

    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move { self.ping_redis().await.map_err(queue_error) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn run_at_rounds_up_to_the_next_second() {
        let whole = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        assert_eq!(run_at_seconds(whole), 1_800_000_000);
        let fraction = Utc.timestamp_opt(1_800_000_000, 1).unwrap();
        assert_eq!(run_at_seconds(fraction), 1_800_000_001);
        let before_epoch = Utc.timestamp_opt(-5, 0).unwrap();
        assert_eq!(run_at_seconds(before_epoch), 0);
    }

    #[test]
    fn queue_names_carry_the_prefix() {
        let config = queue_config("t-1", PUSH, 10);
        assert_eq!(config.queue.as_ref(), "t-1:push");
        assert_eq!(config.active_jobs_list(), "t-1:push:active");
        assert_eq!(config.scheduled_jobs_set(), "t-1:push:scheduled");
    }
}
