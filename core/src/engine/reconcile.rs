//! The periodic sweep that makes the database, not the queue, the source of truth: a lost Redis
//! queue or a killed worker loses no push, leaves no run unfinished, and loses no monthly tick.
use std::collections::HashSet;

use super::{EngineDeps, EngineError, sql};
use crate::{
    jobs::{AggregateRunJob, Job, PushJob, TicketJob},
    ledger,
};

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Runs whose aggregation was enqueued again.
    pub runs_requeued: u64,
    /// Pushes enqueued again (including those whose attempt was lost).
    pub pushes_requeued: u64,
    /// Runs found with all pushes final and finished now.
    pub runs_finished: u64,
    /// Scheduled runs a tick owed (it found a run of the period running) started now.
    pub owed_runs_started: u64,
}

/// One sweep over all tenants.
///
/// A `RUNNING` push is reclaimed only once it is older than both `RECONCILE_STALE_S` and the longest
/// an attempt can take ([`super::push::max_attempt_duration`]): an attempt never waits while
/// claimed, so by then its worker is gone. A push that waits (a pause, the request budget) has its
/// next attempt in the future and is left alone.
pub async fn reconcile(deps: &EngineDeps) -> Result<ReconcileReport, EngineError> {
    let now = deps.clock.now();
    let stale = deps.settings.reconcile_stale;
    let cutoff = now - chrono::Duration::from_std(stale).unwrap_or(chrono::Duration::MAX);
    let attempt_cutoff = now
        - chrono::Duration::from_std(stale.max(super::push::max_attempt_duration(deps.settings.cw_timeout)))
            .unwrap_or(chrono::Duration::MAX);
    let mut report = ReconcileReport::default();
    let mut runs_to_check: HashSet<i64> = HashSet::new();

    let txn = sql::begin_write(&deps.db).await?;
    // 1. Attempts lost with their worker. The attempt stays counted.
    let lost = ledger::push::lose_stale_attempts(&txn, now, attempt_cutoff).await?;
    let mut retry_now = Vec::new();
    let mut tickets = Vec::new();
    for l in &lost {
        if l.to.is_final() {
            tickets.push(l.id);
            runs_to_check.insert(l.run_id);
        } else {
            retry_now.push(l.id);
        }
    }
    // 2. Pushes waiting for a job that never came.
    retry_now.extend(ledger::push::overdue(&txn, now, cutoff).await?);

    // 3. Runs never aggregated.
    let unaggregated = sql::query(
        &txn,
        "SELECT id FROM sync_runs WHERE status = 'RUNNING' AND aggregated_at IS NULL AND started_at < $1",
        vec![cutoff.into()],
    )
    .await?;
    let mut runs = Vec::with_capacity(unaggregated.len());
    for r in &unaggregated {
        runs.push(r.try_get::<i64>("", "id")?);
    }

    // 4. Runs whose pushes are all final but that are still RUNNING.
    let done = sql::query(
        &txn,
        &format!(
            "SELECT r.id FROM sync_runs r WHERE r.status = 'RUNNING' AND r.aggregated_at IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM pushes p WHERE p.sync_run_id = r.id AND p.status IN {nf})",
            nf = ledger::non_final_sql()
        ),
        vec![],
    )
    .await?;
    for r in &done {
        runs_to_check.insert(r.try_get("", "id")?);
    }
    txn.commit().await?;

    for run_id in runs_to_check {
        if ledger::run::finish_if_done(&deps.db, run_id, now).await? {
            report.runs_finished += 1;
        }
    }
    // 5. Scheduled runs a tick owes, now that the run that blocked them has ended.
    let txn = sql::begin_write(&deps.db).await?;
    let owed = ledger::run::start_owed(&txn, now, domain::Period::latest_closed(deps.clock.today())).await?;
    txn.commit().await?;
    report.owed_runs_started = owed.len() as u64;
    runs.extend(owed.iter().map(|(run_id, _)| *run_id));

    for push_id in &retry_now {
        deps.queue.enqueue(Job::Push(PushJob { push_id: *push_id })).await?;
    }
    report.pushes_requeued = retry_now.len() as u64;
    for push_id in tickets {
        deps.queue.enqueue(Job::Ticket(TicketJob { push_id })).await?;
    }
    for run_id in &runs {
        deps.queue.enqueue(Job::AggregateRun(AggregateRunJob { run_id: *run_id })).await?;
    }
    report.runs_requeued = runs.len() as u64 - report.owed_runs_started;
    if report != ReconcileReport::default() {
        tracing::info!(?report, "reconciliation re-enqueued work");
    }
    Ok(report)
}
