//! The monthly schedule: one `SCHEDULED` run per tenant and period, exactly once however many
//! workers fire the cron tick (the partial unique index `uq_sync_runs_scheduled` decides, not a lock
//! in memory), and a catch-up for ticks missed while no worker ran.
use chrono::{DateTime, Datelike, TimeZone, Utc};
use domain::Period;

use super::{EngineDeps, EngineError, sql};
use crate::{
    jobs::{AggregateRunJob, Job},
    ledger,
};

/// Create the scheduled run of `period` for every tenant with consumption sync enabled that has
/// none yet, and enqueue their aggregation. A tenant with a run of the period still running is owed
/// its scheduled run, which the sweep starts when that run has ended. Returns the ids of the runs
/// created by this call.
pub async fn start_scheduled_runs(deps: &EngineDeps, period: Period) -> Result<Vec<i64>, EngineError> {
    let now = deps.clock.now();
    let txn = sql::begin_write(&deps.db).await?;
    let created: Vec<i64> = ledger::run::start_scheduled(&txn, now, period).await?.into_iter().map(|(run, _)| run).collect();
    txn.commit().await?;
    for run_id in &created {
        deps.queue.enqueue(Job::AggregateRun(AggregateRunJob { run_id: *run_id })).await?;
    }
    if !created.is_empty() {
        tracing::info!(period = %period, runs = created.len(), "scheduled sync runs started");
    }
    Ok(created)
}

/// Start one tenant's scheduled run of `period` now rather than at the tick (`api --demo` does, for
/// its sandbox tenant), and enqueue its aggregation. `None` if it was not started (see
/// [`ledger::run::start_scheduled_for_tenant`]).
pub async fn start_tenant_run_now(
    db: &sea_orm::DatabaseConnection,
    queue: &dyn crate::jobs::JobQueue,
    tenant_id: i64,
    period: Period,
    now: DateTime<Utc>,
) -> Result<Option<i64>, EngineError> {
    let txn = sql::begin_write(db).await?;
    let created = ledger::run::start_scheduled_for_tenant(&txn, now, period, tenant_id).await?;
    txn.commit().await?;
    if let Some(run_id) = created {
        queue.enqueue(Job::AggregateRun(AggregateRunJob { run_id })).await?;
        tracing::info!(period = %period, run_id, tenant_id, "scheduled sync run started ahead of the tick");
    }
    Ok(created)
}

/// This month's tick of `SYNC_CRON`: the first one at or after the start of `now`'s month.
pub fn tick_of_month(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let month_start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single()?;
    schedule.after(&(month_start - chrono::Duration::seconds(1))).next()
}

/// Start the runs a missed tick should have started: when the clock is past this month's tick, the
/// latest closed month gets its scheduled run for every tenant still missing one (idempotent).
pub async fn catch_up(deps: &EngineDeps) -> Result<Vec<i64>, EngineError> {
    let now = deps.clock.now();
    let schedule = crate::jobs::parse_cron(&deps.settings.sync_cron).map_err(|e| EngineError::Internal(format!("SYNC_CRON: {e}")))?;
    match tick_of_month(&schedule, now) {
        Some(tick) if tick <= now => start_scheduled_runs(deps, Period::latest_closed(now.date_naive())).await,
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cron_ticks_on_the_second_at_six() {
        let s = crate::jobs::parse_cron("0 0 6 2 * *").expect("cron");
        let now = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).single().expect("date");
        assert_eq!(tick_of_month(&s, now), Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).single());
        let early = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("date");
        assert!(tick_of_month(&s, early).is_some_and(|t| t > early));
    }
}
