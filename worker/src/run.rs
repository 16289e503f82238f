//! The worker process: apalis workers under a `Monitor`, plus the periodic sweeps.
//!
//! The same workers run on either queue backend ([`WorkerQueue`]): Redis (the `worker` binary and
//! `api --with-worker` in production) or SQLite (the embedded default inside `api`). Handlers,
//! retry policy, concurrency, cron and sweeps are written once; only the storages differ.
//!
//! | worker | queue | what |
//! |---|---|---|
//! | `aggregate` | `{prefix}:aggregate` | compute a run's values, create its pushes |
//! | `push` | `{prefix}:push` | one attempt of one push (`PUSH_CONCURRENCY` in flight) |
//! | `ticket` | `{prefix}:ticket` | open the ticket of a dead push |
//! | `catalog` | `{prefix}:catalog` | refresh a tenant's ConnectWise catalog cache |
//! | `cron` | `{prefix}:cron` | `SYNC_CRON` ticks: start the monthly runs |
//!
//! Beside them: catch-up of a missed monthly tick once at start, reconciliation every
//! min(30 s, `RECONCILE_STALE_S`/2), a heartbeat row in `worker_heartbeats` every 10 s, and an
//! hourly clean-up of finished apalis tasks (in Redis or in the SQLite `Jobs` table).
//!
//! On SQLite there is one process, so its cron scheduler is the only one; exactly once per
//! (tenant, period) still comes from the database's unique index, as on Redis.
//!
//! Jobs carry ids only; the database rows are the truth. Business outcomes are written there by
//! the engine, so a handler returns `Ok` for them. An `EngineError` (database or queue down) is
//! returned as an error so that apalis tries again — a couple of times in-process with backoff,
//! then re-scheduled by the queue backend — until [`MAX_JOB_ATTEMPTS`]; then the handler logs and
//! gives up (apalis-redis would otherwise go on until its hard-coded 25), and reconciliation
//! re-enqueues whatever is still due.
use std::{future::Future, sync::Arc, time::Duration};

use apalis::{
    layers::retry::{
        BackoffRetryPolicy, HasherRng, RetryPolicy,
        backoff::{ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff},
    },
    prelude::*,
};
use apalis_core::backend::ext::lifecycle::BeforeStart;
use apalis_cron::Tick;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set, sea_query::OnConflict};
use sync_core::{
    clock::SharedClock,
    jobs::{AggregateRunJob, CatalogRefreshJob, PushJob, TicketJob},
};
use tokio::{sync::watch, task::JoinSet};

use crate::{
    backend::WorkerQueue,
    engine::{self, EngineDeps, EngineError},
    error::WorkerError,
    queue::{AGGREGATE, CATALOG, CRON, PUSH, TICKET},
};

/// Attempts of one job (in-process retries and apalis-redis re-schedules together) before its
/// handler gives up on an infrastructure error.
pub const MAX_JOB_ATTEMPTS: usize = 5;
/// In-process retries (with 1–10 s exponential backoff) before the job goes back to Redis.
const IN_PROCESS_RETRIES: usize = 2;
/// How long in-flight jobs may take to finish after the shutdown signal.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval of the `worker_heartbeats` upsert.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Heartbeat rows of workers not seen for this long are deleted.
const HEARTBEAT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Poll intervals of the queues (apalis-redis 1.0 has no push notification for plain
/// storages: an idle worker only looks again when its poll strategy wakes it).
const FAST_POLL: Duration = Duration::from_millis(250);
const SLOW_POLL: Duration = Duration::from_secs(1);
/// Finished apalis tasks (their payload and metadata hashes) are removed after this long.
const FINISHED_TASK_RETENTION: Duration = Duration::from_secs(3 * 86_400);
const VACUUM_INTERVAL: Duration = Duration::from_secs(3_600);
/// How often delayed Redis tasks that fell due are moved to their ready lists.
const PROMOTE_INTERVAL: Duration = Duration::from_millis(200);

/// A unique name for this process: `{hostname}-{pid}-{8 hex}`. apalis-redis refuses a worker
/// whose name was seen alive within the last minutes, so a restarted process must not reuse one.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &id[..8])
}

type Deps = Arc<EngineDeps>;

#[derive(Debug, thiserror::Error)]
#[error("{kind} job {id} failed: {message}")]
struct JobFailed {
    kind: &'static str,
    id: String,
    message: String,
}

/// Turn an engine result into the job result apalis sees (see the module docs).
fn settle(kind: &'static str, id: impl ToString, attempt: &Attempt, result: Result<(), EngineError>) -> Result<(), BoxDynError> {
    let Err(error) = result else { return Ok(()) };
    let id = id.to_string();
    let attempt = attempt.current();
    if attempt >= MAX_JOB_ATTEMPTS {
        tracing::error!(
            job = kind,
            id,
            attempt,
            error = %error,
            "job failed on its last attempt; giving up (reconciliation re-enqueues work that is still due)"
        );
        Ok(())
    } else {
        tracing::warn!(job = kind, id, attempt, error = %error, "job failed; it will be retried");
        Err(Box::new(JobFailed { kind, id, message: error.to_string() }))
    }
}

async fn aggregate_job(job: AggregateRunJob, deps: Data<Deps>, attempt: Attempt) -> Result<(), BoxDynError> {
    let result = engine::aggregate::aggregate_run(&deps, job.run_id).await;
    settle(AGGREGATE, job.run_id, &attempt, result)
}

async fn push_job(job: PushJob, deps: Data<Deps>, attempt: Attempt) -> Result<(), BoxDynError> {
    let result = engine::push::attempt_push(&deps, job.push_id).await;
    settle(PUSH, job.push_id, &attempt, result)
}

async fn ticket_job(job: TicketJob, deps: Data<Deps>, attempt: Attempt) -> Result<(), BoxDynError> {
    let result = engine::ticket::open_ticket(&deps, job.push_id).await;
    settle(TICKET, job.push_id, &attempt, result)
}

async fn catalog_job(job: CatalogRefreshJob, deps: Data<Deps>, attempt: Attempt) -> Result<(), BoxDynError> {
    // `refresh_catalog`'s future is not provably `Send` (rustc's "implementation of `FnOnce` is
    // not general enough": it holds an iterator adapter with a closure across an `.await`), and
    // apalis needs `Send` job futures. Drive it on a blocking thread of the same runtime, which
    // does not need `Send`; a catalog refresh is rare and long, so the thread is well spent.
    let (engine_deps, tenant_id, actor) = (Deps::clone(&deps), job.tenant_id, job.requested_by.clone());
    let runtime = tokio::runtime::Handle::current();
    let refresh = tokio::task::spawn_blocking(move || runtime.block_on(engine::catalog::refresh_catalog(&engine_deps, tenant_id, &actor)));
    let result = refresh.await.unwrap_or_else(|e| Err(EngineError::Internal(format!("the catalog refresh panicked: {e}")))).map(|report| {
        tracing::info!(tenant_id = job.tenant_id, ?report, "catalog refreshed");
    });
    settle(CATALOG, job.tenant_id, &attempt, result)
}

/// A `SYNC_CRON` tick: start the runs of the month that closed before the tick's day.
async fn cron_job(tick: Tick, deps: Data<Deps>, attempt: Attempt) -> Result<(), BoxDynError> {
    let at =
        i64::try_from(tick.get_timestamp()).ok().and_then(|s| DateTime::<Utc>::from_timestamp(s, 0)).unwrap_or_else(|| deps.clock.now());
    let period = domain::Period::latest_closed(at.date_naive());
    let result = engine::schedule::start_scheduled_runs(&deps, period).await.map(|runs| {
        tracing::info!(%period, tick = %at, runs = runs.len(), "scheduled monthly sync started");
    });
    settle(CRON, tick.get_timestamp(), &attempt, result)
}

fn retry_policy() -> BackoffRetryPolicy<ExponentialBackoff> {
    let backoff = ExponentialBackoffMaker::new(Duration::from_secs(1), Duration::from_secs(10), 0.5, HasherRng::default())
        .expect("constant backoff bounds are valid")
        .make_backoff();
    RetryPolicy::retries(IN_PROCESS_RETRIES).with_backoff(backoff)
}

/// apalis worker names: `{process}:{kind}`, and a fresh one for each restart by the monitor
/// (a restarted worker under its old name would be refused by apalis-redis for minutes).
fn instance_name(base: &str, kind: &str, restarts: usize) -> String {
    if restarts == 0 { format!("{base}:{kind}") } else { format!("{base}:{kind}:r{restarts}") }
}

/// A queue storage polled every `interval`.
type Polled<S> = BeforeStart<PollWith<S, Every>, <S as Backend>::Error>;

/// Poll every `interval`. Unlike apalis's `IntervalStrategy`, which creates its next timer when one
/// fires but does not poll it (so no wake-up is registered), this arms the next tick at once: with
/// `IntervalStrategy` a worker whose fetch then comes back empty could sleep until its next
/// heartbeat (10 s) — a delayed job on the SQLite queue was taken up to 10 s late.
pub(crate) struct Every {
    interval: Duration,
    tick: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Every {
    pub(crate) fn new(interval: Duration) -> Self {
        Every { interval, tick: None }
    }
}

impl std::fmt::Debug for Every {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Every").field("interval", &self.interval).finish()
    }
}

impl PollStrategy for Every {
    fn poll_drive(&mut self, cx: &mut std::task::Context<'_>, _: &PollSnapshot) -> std::task::Poll<Option<()>> {
        let interval = self.interval;
        let tick = self.tick.get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if tick.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        tick.as_mut().reset(tokio::time::Instant::now() + interval);
        // Registers this task's waker for the next tick.
        let _ = tick.as_mut().poll(cx);
        std::task::Poll::Ready(Some(()))
    }
}

/// A storage (Redis or SQLite) polled every `interval`, that waits a little before (re)starting
/// after a failure so that an unreachable queue does not make the monitor restart it in a tight loop.
fn polled<S: Backend>(storage: S, interval: Duration, restarts: usize) -> Polled<S> {
    let delay = Duration::from_secs(restarts.min(30) as u64);
    storage.poll_with_strategy(Every::new(interval)).before_start(move |_| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    })
}

/// How often a waiting cron source looks at the clock again (a clock moved by a test, a
/// suspended host) even when the next tick is further away.
const TICK_RECHECK: Duration = Duration::from_secs(1);

/// Emits the ticks of `SYNC_CRON` by the service's clock, as tasks that carry an idempotency key
/// `tick-{unix seconds}`: every worker process pipes its ticks into the same queue, and the key lets
/// exactly one of them in, so one worker runs each tick. (apalis-cron's `CronScheduler` waits by the
/// operating system's clock; with a pinned clock its ticks would fall on the wrong day.)
struct IdempotentTicks {
    schedule: cron::Schedule,
    clock: SharedClock,
    /// The tick being waited for, and the timer of the current wait.
    next: Option<DateTime<Utc>>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl IdempotentTicks {
    fn new(schedule: cron::Schedule, clock: SharedClock) -> Self {
        IdempotentTicks { schedule, clock, next: None, sleep: None }
    }

    fn tick_task(at: DateTime<Utc>) -> Task<Tick> {
        let tick = Tick::new(u64::try_from(at.timestamp()).unwrap_or(0));
        TaskBuilder::new(tick).idempotency_key(format!("tick-{}", at.timestamp())).build()
    }
}

impl Backend for IdempotentTicks {
    type Task = Task<Tick>;
    type Error = apalis_cron::Error;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>, _: &WorkerContext) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _: &WorkerContext,
    ) -> std::task::Poll<Option<Result<Self::Task, Self::Error>>> {
        use std::task::Poll;
        loop {
            let next = match self.next {
                Some(next) => next,
                None => match self.schedule.after(&self.clock.now()).next() {
                    Some(next) => *self.next.insert(next),
                    None => return Poll::Ready(None),
                },
            };
            let left = self.clock.until(next);
            if left.is_zero() {
                self.next = None;
                self.sleep = None;
                return Poll::Ready(Some(Ok(Self::tick_task(next))));
            }
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(left.min(TICK_RECHECK))));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
    }

    fn poll_close(&mut self, _: &mut std::task::Context<'_>, _: &WorkerContext) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The monitor of every job worker on one queue backend. A macro, not a generic function: the two
/// backends' storages are different types whose apalis bounds would have to be spelled out for
/// every layer; the expansion is the same code — the same handlers, concurrency and retry policy —
/// for a [`crate::RedisQueue`] and a [`crate::SqliteQueue`] (which have the same storage accessors).
macro_rules! job_monitor {
    ($queue:expr, $deps:expr, $base:expr, $schedule:expr, $push_concurrency:expr) => {{
        let (queue, deps, base, schedule, push_concurrency) = ($queue, $deps, $base, $schedule, $push_concurrency);
        let (q, d, b) = (queue.clone(), deps.clone(), base.clone());
        let monitor = Monitor::new().register(move |restarts| {
            WorkerBuilder::new(instance_name(&b, AGGREGATE, restarts))
                .backend(polled(q.aggregate_storage(), FAST_POLL, restarts))
                .concurrency(2)
                .retry(retry_policy())
                .enable_tracing()
                .catch_panic()
                .data(d.clone())
                .build(aggregate_job)
        });
        let (q, d, b) = (queue.clone(), deps.clone(), base.clone());
        let monitor = monitor.register(move |restarts| {
            WorkerBuilder::new(instance_name(&b, PUSH, restarts))
                .backend(polled(q.push_storage(), FAST_POLL, restarts))
                .concurrency(push_concurrency)
                .retry(retry_policy())
                .enable_tracing()
                .catch_panic()
                .data(d.clone())
                .build(push_job)
        });
        let (q, d, b) = (queue.clone(), deps.clone(), base.clone());
        let monitor = monitor.register(move |restarts| {
            WorkerBuilder::new(instance_name(&b, TICKET, restarts))
                .backend(polled(q.ticket_storage(), SLOW_POLL, restarts))
                .concurrency(4)
                .retry(retry_policy())
                .enable_tracing()
                .catch_panic()
                .data(d.clone())
                .build(ticket_job)
        });
        let (q, d, b) = (queue.clone(), deps.clone(), base.clone());
        let monitor = monitor.register(move |restarts| {
            WorkerBuilder::new(instance_name(&b, CATALOG, restarts))
                .backend(polled(q.catalog_storage(), SLOW_POLL, restarts))
                .concurrency(1)
                .retry(retry_policy())
                .enable_tracing()
                .catch_panic()
                .data(d.clone())
                .build(catalog_job)
        });
        let (q, d, b, s) = (queue.clone(), deps.clone(), base.clone(), schedule.clone());
        monitor.register(move |restarts| {
            let ticks = IdempotentTicks::new(s.clone(), d.clock.clone());
            WorkerBuilder::new(instance_name(&b, CRON, restarts))
                .backend(ticks.pipe_to(polled(q.cron_storage(), SLOW_POLL, restarts)))
                .concurrency(1)
                .retry(retry_policy())
                .enable_tracing()
                .catch_panic()
                .data(d.clone())
                .build(cron_job)
        })
    }};
}

/// Run every worker on `queue` (Redis or SQLite) until `shutdown` resolves; then stop taking jobs,
/// let in-flight ones finish (at most [`SHUTDOWN_TIMEOUT`]) and return.
pub async fn run_workers(
    deps: EngineDeps,
    queue: impl Into<WorkerQueue>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    run(deps, queue.into(), shutdown, None).await
}

/// [`run_workers`]; `caught_up` is told once the start-up catch-up has run.
async fn run(
    deps: EngineDeps,
    queue: WorkerQueue,
    shutdown: impl Future<Output = ()> + Send + 'static,
    caught_up: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), WorkerError> {
    let settings = deps.settings.clone();
    let schedule = sync_core::jobs::parse_cron(&settings.sync_cron)
        .map_err(|source| WorkerError::Cron { expr: settings.sync_cron.clone(), source })?;
    let deps: Deps = Arc::new(deps);
    let base = worker_name();
    let push_concurrency = settings.push_concurrency.max(1);
    tracing::info!(
        worker = %base,
        queue = queue.backend_name(),
        queues = %queue.queue_name("*"),
        push_concurrency,
        sync_cron = %settings.sync_cron,
        "starting workers"
    );

    // Periodic sweeps beside the apalis workers.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sweeps = JoinSet::new();
    sweeps.spawn(heartbeat_loop(deps.clone(), base.clone(), stop_rx.clone()));
    sweeps.spawn(reconcile_loop(deps.clone(), stop_rx.clone()));
    sweeps.spawn(vacuum_loop(queue.clone(), stop_rx.clone()));
    if let WorkerQueue::Redis(q) = &queue {
        sweeps.spawn(promote_loop(q.clone(), stop_rx.clone()));
    }

    // The missed-tick catch-up runs before any job is taken, and `spawn_in_process` returns after
    // it: a tenant configured right after the start is never raced by it (on SQLite, where writers
    // queue for the lock, that race was easy to lose).
    catch_up_once(deps.clone(), stop_rx.clone()).await;
    if let Some(caught_up) = caught_up {
        let _ = caught_up.send(());
    }

    let monitor = match &queue {
        WorkerQueue::Redis(q) => job_monitor!(q, &deps, &base, &schedule, push_concurrency),
        WorkerQueue::Sqlite(q) => job_monitor!(q, &deps, &base, &schedule, push_concurrency),
    };
    let monitor = monitor
        .should_restart(|worker, error| {
            tracing::error!(worker = worker.name(), %error, "worker stopped with an error; restarting it");
            true
        })
        .shutdown_timeout(SHUTDOWN_TIMEOUT);

    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("shutting down: no new jobs, waiting for the running ones");
            Ok(())
        })
        .await;

    match queue.release_workers(&base).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(requeued = n, "jobs cut short by the shutdown were put back on the queue"),
        Err(error) => tracing::warn!(?error, "could not release the jobs held by this process's workers"),
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(joined) = sweeps.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a background sweep panicked");
            }
        }
    })
    .await;
    if drained.is_err() {
        sweeps.abort_all();
    }
    tracing::info!(worker = %base, "workers stopped");
    result.map_err(|e| WorkerError::Monitor(e.to_string()))
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn heartbeat_loop(deps: Deps, name: String, mut stop: watch::Receiver<bool>) {
    use entity::worker_heartbeat::{ActiveModel, Column, Entity};
    let started_at = deps.clock.now();
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = interval.tick() => {}
        }
        let now = deps.clock.now();
        let row = ActiveModel { worker_name: Set(name.clone()), started_at: Set(started_at), last_seen_at: Set(now) };
        let upsert = Entity::insert(row)
            .on_conflict(OnConflict::column(Column::WorkerName).update_column(Column::LastSeenAt).to_owned())
            .exec_without_returning(&deps.db)
            .await;
        if let Err(error) = upsert {
            tracing::warn!(%error, "could not record the worker heartbeat");
        }
        if beats.is_multiple_of(360) {
            // Hourly: forget workers gone for a day (each process has its own name).
            if let Err(error) = Entity::delete_many().filter(Column::LastSeenAt.lt(now - HEARTBEAT_RETENTION)).exec(&deps.db).await {
                tracing::warn!(%error, "could not prune old worker heartbeats");
            }
        }
        beats += 1;
    }
    // A clean stop removes the row; a crashed worker's row stays until it is a day old.
    if let Err(error) = Entity::delete_by_id(name.clone()).exec(&deps.db).await {
        tracing::warn!(%error, "could not remove the worker heartbeat");
    }
}

async fn catch_up_once(deps: Deps, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = stopped(&mut stop) => {}
        result = engine::schedule::catch_up(&deps) => match result {
            Ok(_) => tracing::info!("missed-tick catch-up done"),
            Err(error) => tracing::error!(%error, "missed-tick catch-up failed; the next start or tick retries"),
        }
    }
}

/// min(30 s, `RECONCILE_STALE_S`/2), at least one second.
pub fn reconcile_interval(reconcile_stale: Duration) -> Duration {
    (reconcile_stale / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

async fn reconcile_loop(deps: Deps, mut stop: watch::Receiver<bool>) {
    let every = reconcile_interval(deps.settings.reconcile_stale);
    // Every worker process sweeps; the engine's updates are conditional. Start a little later and
    // spread the processes so they don't all sweep at the same instant.
    let first = tokio::time::Instant::now() + every.mul_f64(0.5 + rand::random::<f64>() / 2.0);
    let mut interval = tokio::time::interval_at(first, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = interval.tick() => {}
        }
        match engine::reconcile::reconcile(&deps).await {
            Ok(report) => tracing::debug!(?report, "reconciliation done"),
            Err(error) => tracing::warn!(%error, "reconciliation failed; next sweep in {every:?}"),
        }
    }
}

/// Both backends keep every finished task; remove those older than [`FINISHED_TASK_RETENTION`]
/// every hour (first an hour after start, so a queue that waited for workers a long time is
/// processed before anything is cleaned up).
async fn vacuum_loop(queue: WorkerQueue, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + VACUUM_INTERVAL, VACUUM_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = interval.tick() => {}
        }
        match queue.vacuum(FINISHED_TASK_RETENTION).await {
            Ok(removed) => tracing::debug!(removed, queue = queue.backend_name(), "finished apalis tasks removed"),
            Err(error) => tracing::warn!(?error, queue = queue.backend_name(), "could not clean up finished tasks"),
        }
    }
}

/// Every [`PROMOTE_INTERVAL`]: delayed Redis tasks that fell due move to their ready lists a bounded
/// batch at a time (apalis-redis's fetch would move them all at once and fail beyond ~8,000; see
/// [`crate::RedisQueue::promote_due`]).
async fn promote_loop(queue: crate::RedisQueue, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(PROMOTE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = interval.tick() => {}
        }
        if let Err(error) = queue.promote_due().await {
            tracing::warn!(?error, "could not move due delayed jobs to their queues; the next sweep tries again");
        }
    }
}

/// A worker running inside this process (`api --with-worker`, tests).
///
/// Dropping the handle also stops the workers (gracefully, without waiting for them).
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), WorkerError>>>,
}

impl WorkerHandle {
    /// Stop taking jobs, let the running ones finish, and wait for the workers to end.
    pub async fn shutdown(mut self) -> Result<(), WorkerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Whether the workers have ended (they only end on shutdown or on a fatal error).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Run the workers (on Redis or SQLite) in a tokio task of this process. Returns once the
/// start-up catch-up of a missed monthly tick has run (or the workers failed to start).
pub async fn spawn_in_process(deps: EngineDeps, queue: impl Into<WorkerQueue>) -> WorkerHandle {
    let queue: WorkerQueue = queue.into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (caught_up, started) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let result = run(deps, queue, shutdown, Some(caught_up)).await;
        if let Err(error) = &result {
            tracing::error!(?error, "in-process workers failed");
        }
        result
    });
    // An error means the workers ended before catching up; the handle reports how.
    let _ = started.await;
    WorkerHandle { stop: Some(stop), task: Some(task) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisQueue;

    #[test]
    fn worker_names_are_unique_per_call() {
        let (a, b) = (worker_name(), worker_name());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn restarted_workers_get_new_names() {
        assert_eq!(instance_name("h-1-abc", PUSH, 0), "h-1-abc:push");
        assert_eq!(instance_name("h-1-abc", PUSH, 2), "h-1-abc:push:r2");
    }

    /// Two processes' cron schedulers piped into one Redis queue: each tick is run exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_tick_runs_once_across_processes() {
        use std::{str::FromStr, sync::Mutex};
        let prefix = format!("test-worker-cron-{}", uuid::Uuid::new_v4().simple());
        let conn = crate::connect_redis("redis://127.0.0.1:6379").await.expect("local Redis");
        let queue = RedisQueue::from_connection(conn.clone(), &prefix);
        let schedule = cron::Schedule::from_str("* * * * * *").expect("every second");

        type Seen = Arc<Mutex<Vec<u64>>>;
        async fn record(tick: Tick, seen: Data<Seen>) -> Result<(), BoxDynError> {
            seen.lock().unwrap().push(tick.get_timestamp());
            Ok(())
        }
        let seen: Seen = Arc::default();
        let mut running = Vec::new();
        for process in 0..2 {
            let ticks = IdempotentTicks::new(schedule.clone(), Arc::new(sync_core::clock::SystemClock));
            let worker = WorkerBuilder::new(format!("{}-cron-{process}", worker_name()))
                .backend(ticks.pipe_to(polled(queue.cron_storage(), Duration::from_millis(100), 0)))
                .data(seen.clone())
                .build(record);
            running.push(tokio::spawn(async move { worker.run().await }));
        }
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        for r in &running {
            r.abort();
        }
        let mut got = seen.lock().unwrap().clone();

        // Clean up our keys (never FLUSHDB: other tests share this Redis).
        let mut c = conn.clone();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut c).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
        }
        let _: Result<(), _> =
            redis::cmd("ZREM").arg("core:apalis:queues:list").arg(format!("{prefix}:cron:workers")).query_async(&mut c).await;

        got.sort_unstable();
        let mut unique = got.clone();
        unique.dedup();
        assert!(unique.len() >= 3, "too few ticks: {got:?}");
        assert_eq!(got, unique, "a tick ran twice");
    }

    #[test]
    fn reconcile_interval_is_half_the_staleness_capped_at_30s() {
        assert_eq!(reconcile_interval(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(reconcile_interval(Duration::from_secs(20)), Duration::from_secs(10));
        assert_eq!(reconcile_interval(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
