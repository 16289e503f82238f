//! The job workers (docs/operations.md): apalis 1.0 on Redis (apalis-redis), shared by any number
//! of worker processes — or, in the embedded default, on SQLite (apalis-sqlite) inside `api`.
//!
//! - [`RedisQueue`] — the [`sync_core::jobs::JobQueue`] the `api` and the engine enqueue into.
//! - [`SqliteQueue`] — the same on apalis-sqlite, in the application's own SQLite database.
//! - [`WorkerQueue`] — either of them; what the workers run on.
//! - [`RedisRateLimiter`] — ConnectWise requests/second per tenant across all processes (on SQLite,
//!   one process: `sync_core::engine::LocalRateLimiter`).
//! - [`run_workers`] / [`spawn_in_process`] — the workers themselves (binary `worker`,
//!   `api --with-worker`, the embedded `api`, tests), the same for both backends.
pub mod backend;
pub mod error;
pub mod queue;
pub mod rate;
pub mod run;
pub mod sqlite_queue;

pub(crate) use sync_core::engine;

pub use backend::WorkerQueue;
pub use error::WorkerError;
pub use queue::{QueueStats, RedisQueue, connect_redis};
pub use rate::RedisRateLimiter;
pub use run::{MAX_JOB_ATTEMPTS, WorkerHandle, run_workers, spawn_in_process, worker_name};
pub use sqlite_queue::SqliteQueue;

use std::sync::Arc;

use engine::{EngineDeps, TenantRateLimiter};
use sea_orm::DatabaseConnection;
use sync_core::{Settings, clock::SharedClock, crypto::SecretBox};

/// The engine's dependencies with `queue` (Redis, SQLite or either) as the job queue.
pub fn engine_deps<Q: sync_core::jobs::JobQueue + Clone>(
    db: DatabaseConnection,
    queue: &Q,
    settings: Arc<Settings>,
    secrets: Option<SecretBox>,
    http: connectwise::CwHttp,
    rate: Arc<dyn TenantRateLimiter>,
    clock: SharedClock,
) -> EngineDeps {
    EngineDeps { db, queue: Arc::new(queue.clone()), settings, secrets, http, rate, clock }
}
