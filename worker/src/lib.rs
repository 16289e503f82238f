//! The job workers (SPEC §2 `worker`): apalis 1.0 on Redis (apalis-redis), shared by any number
//! of worker processes.
//!
//! - [`RedisQueue`] — the [`sync_core::jobs::JobQueue`] the `api` and the engine enqueue into.
//! - [`RedisRateLimiter`] — ConnectWise requests/second per tenant across all processes.
//! - [`run_workers`] / [`spawn_in_process`] — the workers themselves (binary `worker`,
//!   `api --with-worker`, tests).
pub mod error;
pub mod queue;
pub mod rate;
pub mod run;

pub(crate) use sync_core::engine;

pub use error::WorkerError;
pub use queue::{QueueStats, RedisQueue, connect_redis};
pub use rate::RedisRateLimiter;
pub use run::{MAX_JOB_ATTEMPTS, WorkerHandle, run_workers, spawn_in_process, worker_name};

use std::sync::Arc;

use engine::{EngineDeps, SystemClock, TenantRateLimiter};
use sea_orm::DatabaseConnection;
use sync_core::{Settings, crypto::SecretBox};

/// The engine's dependencies with `queue` as the job queue and the system clock.
pub fn engine_deps(
    db: DatabaseConnection,
    queue: &RedisQueue,
    settings: Arc<Settings>,
    secrets: Option<SecretBox>,
    http: reqwest::Client,
    rate: Arc<dyn TenantRateLimiter>,
) -> EngineDeps {
    EngineDeps { db, queue: Arc::new(queue.clone()), settings, secrets, http, rate, clock: Arc::new(SystemClock) }
}
