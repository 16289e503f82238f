//! The periodic sweep that makes the database, not the queue, the source of truth: a lost Redis
//! queue or a killed worker loses no push and leaves no run unfinished.
use std::collections::HashSet;

use serde_json::json;

use super::sql::{self, AuditRow};
use super::{EngineDeps, EngineError};
use crate::jobs::{AggregateRunJob, Job, PushJob, TicketJob};

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Runs whose aggregation was enqueued again.
    pub runs_requeued: u64,
    /// Pushes enqueued again (including those whose attempt was lost).
    pub pushes_requeued: u64,
    /// Runs found with all pushes final and finished now.
    pub runs_finished: u64,
}

/// One sweep over all tenants.
pub async fn reconcile(deps: &EngineDeps) -> Result<ReconcileReport, EngineError> {
    let now = deps.clock.now();
    let stale = chrono::Duration::from_std(deps.settings.reconcile_stale).unwrap_or(chrono::Duration::MAX);
    let cutoff = now - stale;
    let mut report = ReconcileReport::default();
    let mut runs_to_check: HashSet<i64> = HashSet::new();

    // 1. Attempts lost with their worker: RUNNING for too long. The attempt stays counted.
    let txn = sql::begin_write(&deps.db).await?;
    let lost = sql::query(
        &txn,
        "UPDATE pushes SET \
           status = CASE WHEN attempts >= max_attempts THEN 'DEAD' ELSE 'FAILED_RETRYING' END, \
           finished_at = CASE WHEN attempts >= max_attempts THEN $2 ELSE NULL END, \
           next_attempt_at = CASE WHEN attempts >= max_attempts THEN NULL ELSE $2 END, \
           last_error_code = $3, last_error = $4, updated_at = $2 \
         WHERE status = 'RUNNING' AND updated_at < $1 \
         RETURNING id, tenant_id, sync_run_id, status, attempts",
        vec![
            cutoff.into(),
            now.into(),
            super::codes::ATTEMPT_LOST.into(),
            "the attempt did not finish in time (worker stopped or lost); counted as a failed attempt".into(),
        ],
    )
    .await?;
    let mut retry_now = Vec::new();
    let mut tickets = Vec::new();
    let mut audits = Vec::with_capacity(lost.len());
    for r in &lost {
        let id: i64 = r.try_get("", "id")?;
        let status: String = r.try_get("", "status")?;
        if status == "DEAD" {
            tickets.push(id);
            runs_to_check.insert(r.try_get("", "sync_run_id")?);
        } else {
            retry_now.push(id);
        }
        audits.push(AuditRow {
            tenant_id: r.try_get("", "tenant_id")?,
            actor: crate::audit::SYSTEM_ACTOR.to_string(),
            action: if status == "DEAD" { "push.dead" } else { "push.attempt_lost" },
            entity_type: "push",
            entity_id: id.to_string(),
            before: Some(json!({"status": "RUNNING"})),
            after: Some(json!({"status": status})),
            detail: Some(json!({"attempt": r.try_get::<i32>("", "attempts")?, "error_code": super::codes::ATTEMPT_LOST})),
        });
    }
    sql::audit_many(&txn, now, audits).await?;

    // 2. Pushes waiting for a job that never came: PENDING too long, or FAILED_RETRYING well past
    // their next attempt. Touching them keeps the next sweep from enqueueing them again at once.
    let waiting = sql::query(
        &txn,
        "UPDATE pushes SET updated_at = $2, next_attempt_at = CASE WHEN status = 'FAILED_RETRYING' THEN $2 ELSE next_attempt_at END \
         WHERE (status = 'PENDING' AND updated_at < $1) \
            OR (status = 'FAILED_RETRYING' AND next_attempt_at IS NOT NULL AND next_attempt_at < $1) \
         RETURNING id",
        vec![cutoff.into(), now.into()],
    )
    .await?;
    for r in &waiting {
        retry_now.push(r.try_get("", "id")?);
    }

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
            nf = sql::NON_FINAL_SQL
        ),
        vec![],
    )
    .await?;
    for r in &done {
        runs_to_check.insert(r.try_get("", "id")?);
    }
    txn.commit().await?;

    for run_id in runs_to_check {
        if super::finish_run_if_done(&deps.db, run_id, now).await? {
            report.runs_finished += 1;
        }
    }
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
    report.runs_requeued = runs.len() as u64;
    if report != ReconcileReport::default() {
        tracing::info!(?report, "reconciliation re-enqueued work");
    }
    Ok(report)
}
