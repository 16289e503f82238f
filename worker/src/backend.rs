//! [`WorkerQueue`]: which job queue the workers run on — Redis (production: any number of processes)
//! or SQLite (the embedded default: one process). Everything above the storage — handlers, retry
//! policy, cron, reconciliation, heartbeats — is the same code for both ([`crate::run_workers`]).
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sync_core::{
    clock::{Clock, SystemClock},
    jobs::{Job, JobQueue, QueueError},
};

use crate::{QueueStats, RedisQueue, SqliteQueue, WorkerError};

/// The queues' own time: apalis schedules and expires tasks by the operating system's clock,
/// whatever the service's clock shows (a pinned test clock), so queue scores use it too.
pub(crate) fn queue_now() -> DateTime<Utc> {
    SystemClock.now()
}

/// The queue time `delay` from now (a delayed job's run-at).
pub(crate) fn queue_time_after(delay: Duration) -> DateTime<Utc> {
    queue_now() + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX)
}

/// The queue backend of a deployment. Cheap to clone.
// Both variants are about a kilobyte (five apalis storages each) and the value is made once per
// process: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum WorkerQueue {
    Redis(RedisQueue),
    Sqlite(SqliteQueue),
}

impl From<RedisQueue> for WorkerQueue {
    fn from(q: RedisQueue) -> Self {
        WorkerQueue::Redis(q)
    }
}

impl From<SqliteQueue> for WorkerQueue {
    fn from(q: SqliteQueue) -> Self {
        WorkerQueue::Sqlite(q)
    }
}

impl WorkerQueue {
    /// `redis` or `sqlite`, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            WorkerQueue::Redis(_) => "redis",
            WorkerQueue::Sqlite(_) => "sqlite",
        }
    }

    /// The full name of a queue kind (`csync:push`).
    pub fn queue_name(&self, kind: &str) -> String {
        match self {
            WorkerQueue::Redis(q) => q.queue_name(kind),
            WorkerQueue::Sqlite(q) => q.queue_name(kind),
        }
    }

    /// Ready / scheduled / dead counts of every queue.
    pub async fn stats(&self) -> Result<Vec<QueueStats>, WorkerError> {
        match self {
            WorkerQueue::Redis(q) => q.stats().await,
            WorkerQueue::Sqlite(q) => q.stats().await,
        }
    }

    /// Put back what this process's workers (named `{base}:…`) still held after they stopped.
    pub async fn release_workers(&self, base: &str) -> Result<u64, WorkerError> {
        match self {
            WorkerQueue::Redis(q) => q.release_workers(base).await,
            WorkerQueue::Sqlite(q) => q.release_workers(base).await,
        }
    }

    /// Remove finished tasks older than `retention`.
    pub async fn vacuum(&self, retention: Duration) -> Result<usize, WorkerError> {
        match self {
            WorkerQueue::Redis(q) => q.vacuum(retention).await,
            WorkerQueue::Sqlite(q) => q.vacuum(retention).await,
        }
    }

    fn inner(&self) -> &dyn JobQueue {
        match self {
            WorkerQueue::Redis(q) => q,
            WorkerQueue::Sqlite(q) => q,
        }
    }
}

impl JobQueue for WorkerQueue {
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<(), QueueError>> {
        self.inner().enqueue(job)
    }

    fn enqueue_after(&self, job: Job, delay: std::time::Duration) -> BoxFuture<'_, Result<(), QueueError>> {
        self.inner().enqueue_after(job, delay)
    }

    fn depth(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, QueueError>> {
        self.inner().depth()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        self.inner().ping()
    }
}
