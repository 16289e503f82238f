//! The jobs `api` enqueues and `worker` runs, and the queue contract between them. The queue carries
//! only ids: the database row is the truth (the outbox); a lost or duplicated message is harmless
//! because every job re-reads and conditionally updates its row.
use std::str::FromStr;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Compute a run's values and create its pushes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRunJob {
    pub run_id: i64,
}

/// One attempt of one push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushJob {
    pub push_id: i64,
}

/// Open (at most) one ConnectWise ticket for a dead push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketJob {
    pub push_id: i64,
}

/// Refresh a tenant's ConnectWise catalog cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRefreshJob {
    pub tenant_id: i64,
    pub requested_by: String,
}

/// Any job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    AggregateRun(AggregateRunJob),
    Push(PushJob),
    Ticket(TicketJob),
    CatalogRefresh(CatalogRefreshJob),
}

#[derive(Debug, thiserror::Error)]
#[error("could not enqueue the job: {0}")]
pub struct QueueError(pub String);

/// Where jobs go. Implemented by the worker crate for Redis (and the embedded SQLite queue).
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueue a job to run as soon as possible.
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<(), QueueError>>;
    /// Enqueue a job to run no earlier than `delay` from now. A queue waits in real time; callers
    /// turn a service instant into a delay with [`crate::clock::Clock::until`].
    fn enqueue_after(&self, job: Job, delay: std::time::Duration) -> BoxFuture<'_, Result<(), QueueError>>;
    /// Jobs waiting per queue name (for `/metrics` and the dashboard), if the backend can tell.
    fn depth(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, QueueError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Whether the queue backend answers (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>>;
}

/// Parse a six-field cron expression (seconds first), as `SYNC_CRON` takes it.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, cron::error::Error> {
    if expr.split_whitespace().count() != 6 {
        // The cron crate also accepts 7 fields (with years); our cron expressions have six.
        return cron::Schedule::from_str("invalid");
    }
    cron::Schedule::from_str(expr)
}
