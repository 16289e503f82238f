//! Sync-run transitions: start (manual or scheduled, and the scheduled run a tick owes), aggregated,
//! fail, finish when the last push is final, reopen after a retry.
use chrono::{DateTime, Utc};
use domain::{Period, RunEvent, SyncRunStatus, SyncTrigger};
use entity::sync_run;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbErr};
use serde_json::json;

use super::non_final_sql;
use crate::{
    audit::SYSTEM_ACTOR,
    engine::sql::{self, AuditRow},
    error::{UniqueIndex, unique_violation},
};

/// Push counts of a run by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    pub non_final: u64,
    pub succeeded: u64,
    pub skipped: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl RunCounts {
    pub fn status(&self) -> SyncRunStatus {
        SyncRunStatus::from_push_counts(self.non_final, self.succeeded, self.skipped, self.dead, self.cancelled)
    }
}

pub async fn counts<C: ConnectionTrait>(c: &C, run_id: i64) -> Result<RunCounts, DbErr> {
    let rows = sql::query(
        c,
        &format!(
            "SELECT \
               COALESCE(SUM(CASE WHEN status IN {nf} THEN 1 ELSE 0 END), 0) AS non_final, \
               COALESCE(SUM(CASE WHEN status = 'SUCCEEDED' THEN 1 ELSE 0 END), 0) AS succeeded, \
               COALESCE(SUM(CASE WHEN status = 'SKIPPED' THEN 1 ELSE 0 END), 0) AS skipped, \
               COALESCE(SUM(CASE WHEN status = 'DEAD' THEN 1 ELSE 0 END), 0) AS dead, \
               COALESCE(SUM(CASE WHEN status = 'CANCELLED' THEN 1 ELSE 0 END), 0) AS cancelled \
             FROM pushes WHERE sync_run_id = $1",
            nf = non_final_sql()
        ),
        vec![run_id.into()],
    )
    .await?;
    let Some(r) = rows.first() else { return Ok(RunCounts::default()) };
    let get = |col: &str| -> Result<u64, DbErr> { Ok(u64::try_from(r.try_get::<i64>("", col)?).unwrap_or(0)) };
    Ok(RunCounts {
        non_final: get("non_final")?,
        succeeded: get("succeeded")?,
        skipped: get("skipped")?,
        dead: get("dead")?,
        cancelled: get("cancelled")?,
    })
}

/// A run to start.
pub struct NewRun<'a> {
    pub tenant_id: i64,
    pub period: Period,
    pub trigger: SyncTrigger,
    pub dry_run: bool,
    pub customer_ids: Option<Vec<i64>>,
    pub requested_by: &'a str,
}

/// The result of [`start`].
pub enum Started {
    Run(Box<sync_run::Model>),
    /// A run of the tenant and period is running (or its scheduled run exists): nothing written.
    AlreadyRunning,
}

/// Start a run (event START), audited. Uniqueness of running and scheduled runs per tenant and
/// period is the database's (`uq_sync_runs_running`, `uq_sync_runs_scheduled`).
pub async fn start<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, r: NewRun<'_>) -> Result<Started, DbErr> {
    debug_assert!(domain::RUN_TRANSITIONS.iter().any(|t| t.event == RunEvent::Start && t.to == SyncRunStatus::Running));
    let inserted = sync_run::ActiveModel {
        tenant_id: Set(r.tenant_id),
        period: Set(r.period.to_string()),
        trigger: Set(r.trigger.as_str().to_string()),
        dry_run: Set(r.dry_run),
        status: Set(SyncRunStatus::Running.as_str().to_string()),
        customer_ids: Set(r.customer_ids.as_ref().map(|ids| json!(ids))),
        requested_by: Set(r.requested_by.to_string()),
        started_at: Set(now),
        ..Default::default()
    }
    .insert(c)
    .await;
    let run = match inserted {
        Ok(run) => run,
        Err(e) if matches!(unique_violation(&e), Some(UniqueIndex::SyncRunRunning | UniqueIndex::SyncRunScheduled)) => {
            return Ok(Started::AlreadyRunning);
        }
        Err(e) => return Err(e),
    };
    sql::audit_many(
        c,
        now,
        vec![AuditRow {
            tenant_id: r.tenant_id,
            actor: r.requested_by.to_string(),
            action: "sync_run.started",
            entity_type: "sync_run",
            entity_id: run.id.to_string(),
            before: None,
            after: Some(
                json!({"status": run.status, "period": run.period, "trigger": run.trigger, "dryRun": r.dry_run, "customerIds": run.customer_ids}),
            ),
            detail: None,
        }],
    )
    .await?;
    Ok(Started::Run(Box::new(run)))
}

/// The monthly tick (event START, trigger `SCHEDULED`): one run of `period` for every tenant with
/// consumption sync on that has none yet. A tenant whose run of the period is still running (a
/// manual or dry run) is owed its scheduled run: the sweep starts it once that run has ended
/// ([`start_owed`]). Returns `(run id, tenant id)` of the runs created.
pub async fn start_scheduled<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, period: Period) -> Result<Vec<(i64, i64)>, DbErr> {
    let created = insert_scheduled(c, now, period, "s.consumption_sync_enabled = TRUE").await?;
    sql::exec(
        c,
        "UPDATE cw_settings SET owed_scheduled_period = $1 WHERE consumption_sync_enabled = TRUE \
         AND NOT EXISTS (SELECT 1 FROM sync_runs r WHERE r.tenant_id = cw_settings.tenant_id AND r.period = $1 AND r.trigger = 'SCHEDULED')",
        vec![period.to_string().into()],
    )
    .await?;
    Ok(created)
}

/// The scheduled runs ticks owe (see [`start_scheduled`]) whose blocking run has ended, for the
/// latest closed month; an owed run of an older month is dropped (a newer tick took its place).
pub async fn start_owed<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, latest_closed: Period) -> Result<Vec<(i64, i64)>, DbErr> {
    let period = latest_closed.to_string();
    sql::exec(
        c,
        "UPDATE cw_settings SET owed_scheduled_period = NULL \
         WHERE owed_scheduled_period IS NOT NULL AND (owed_scheduled_period <> $1 OR consumption_sync_enabled = FALSE)",
        vec![period.clone().into()],
    )
    .await?;
    let created = insert_scheduled(c, now, latest_closed, "s.consumption_sync_enabled = TRUE AND s.owed_scheduled_period = $1").await?;
    sql::exec(
        c,
        "UPDATE cw_settings SET owed_scheduled_period = NULL WHERE owed_scheduled_period = $1 \
         AND EXISTS (SELECT 1 FROM sync_runs r WHERE r.tenant_id = cw_settings.tenant_id AND r.period = $1 AND r.trigger = 'SCHEDULED')",
        vec![period.into()],
    )
    .await?;
    Ok(created)
}

/// The monthly run of one tenant started ahead of its tick (the demo's sandbox tenant): the same
/// `SCHEDULED` run the tick would start, so the tick and its catch-up find it and start no other.
/// `None` when the tenant has it already, has a run of the period running, or has sync off.
pub async fn start_scheduled_for_tenant<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    period: Period,
    tenant_id: i64,
) -> Result<Option<i64>, DbErr> {
    // An integer, formatted: no text of anyone's reaches the statement.
    let created = insert_scheduled(c, now, period, &format!("s.consumption_sync_enabled = TRUE AND s.tenant_id = {tenant_id}")).await?;
    Ok(created.first().map(|(run, _)| *run))
}

async fn insert_scheduled<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, period: Period, tenants: &str) -> Result<Vec<(i64, i64)>, DbErr> {
    // No conflict target: a tenant whose scheduled run exists (uq_sync_runs_scheduled), or that has a
    // run of the period RUNNING (uq_sync_runs_running), gets nothing now.
    let rows = sql::query(
        c,
        &format!(
            "INSERT INTO sync_runs (tenant_id, period, trigger, dry_run, status, requested_by, started_at) \
             SELECT s.tenant_id, $1, 'SCHEDULED', FALSE, 'RUNNING', $2, $3 FROM cw_settings s WHERE {tenants} \
             ON CONFLICT DO NOTHING \
             RETURNING id, tenant_id"
        ),
        vec![period.to_string().into(), SYSTEM_ACTOR.into(), now.into()],
    )
    .await?;
    let mut created = Vec::with_capacity(rows.len());
    let mut audits = Vec::with_capacity(rows.len());
    for r in &rows {
        let (id, tenant_id): (i64, i64) = (r.try_get("", "id")?, r.try_get("", "tenant_id")?);
        created.push((id, tenant_id));
        audits.push(AuditRow {
            tenant_id,
            actor: SYSTEM_ACTOR.to_string(),
            action: "sync_run.started",
            entity_type: "sync_run",
            entity_id: id.to_string(),
            before: None,
            after: Some(json!({"status": "RUNNING", "period": period.to_string(), "trigger": "SCHEDULED", "dryRun": false})),
            detail: None,
        });
    }
    sql::audit_many(c, now, audits).await?;
    created.sort_unstable();
    Ok(created)
}

/// The run's pushes are written.
pub async fn mark_aggregated<C: ConnectionTrait>(c: &C, run_id: i64, now: DateTime<Utc>) -> Result<(), DbErr> {
    sql::exec(c, "UPDATE sync_runs SET aggregated_at = $2 WHERE id = $1", vec![run_id.into(), now.into()]).await?;
    Ok(())
}

/// The run cannot be aggregated (event FAIL): it ends `FAILED` with `error`.
pub async fn fail<C: ConnectionTrait>(c: &C, tenant_id: i64, run_id: i64, error: &str, now: DateTime<Utc>) -> Result<(), DbErr> {
    let n = sql::exec(
        c,
        "UPDATE sync_runs SET status = 'FAILED', error = $2, aggregated_at = $3, finished_at = $3 WHERE id = $1 AND status = 'RUNNING'",
        vec![run_id.into(), error.into(), now.into()],
    )
    .await?;
    if n == 1 {
        audit_run(
            c,
            now,
            tenant_id,
            run_id,
            SYSTEM_ACTOR,
            "sync_run.finished",
            SyncRunStatus::Running,
            SyncRunStatus::Failed,
            json!({"error": error}),
        )
        .await?;
    }
    Ok(())
}

/// Finish the run (event FINISH) if all its pushes are final. Conditional (`RUNNING` and no
/// non-final push at update time), so when several workers finish the last pushes together exactly
/// one wins. Call it after committing the push's own change, so the last committer sees every other.
pub async fn finish_if_done<C: ConnectionTrait>(c: &C, run_id: i64, now: DateTime<Utc>) -> Result<bool, DbErr> {
    // Called after every final push: while any push is open, stop at the first one found
    // (ix_pushes_run_open) instead of counting the whole run each time.
    let open = sql::query(
        c,
        &format!("SELECT 1 AS open FROM pushes WHERE sync_run_id = $1 AND status IN {} LIMIT 1", non_final_sql()),
        vec![run_id.into()],
    )
    .await?;
    if !open.is_empty() {
        return Ok(false);
    }
    let counts = counts(c, run_id).await?;
    if counts.non_final > 0 {
        return Ok(false);
    }
    let status = counts.status();
    debug_assert!(SyncRunStatus::Running.can(RunEvent::Finish, status));
    let rows = sql::query(
        c,
        &format!(
            "UPDATE sync_runs SET status = $2, finished_at = $3 \
             WHERE id = $1 AND status = 'RUNNING' AND aggregated_at IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM pushes p WHERE p.sync_run_id = $1 AND p.status IN {nf}) \
             RETURNING tenant_id",
            nf = non_final_sql()
        ),
        vec![run_id.into(), status.as_str().into(), now.into()],
    )
    .await?;
    let Some(row) = rows.first() else { return Ok(false) };
    let tenant_id: i64 = row.try_get("", "tenant_id")?;
    audit_run(
        c,
        now,
        tenant_id,
        run_id,
        SYSTEM_ACTOR,
        "sync_run.finished",
        SyncRunStatus::Running,
        status,
        serde_json::to_value(counts).unwrap_or_default(),
    )
    .await?;
    Ok(true)
}

/// A retried push gives its finished run work again (event REOPEN). `Ok(false)`: another run of
/// the same tenant and period is running, so this one cannot be (nothing written).
pub async fn reopen<C: ConnectionTrait>(c: &C, run_id: i64, now: DateTime<Utc>, actor: &str) -> Result<bool, DbErr> {
    let found =
        sql::query(c, &format!("SELECT tenant_id, status FROM sync_runs WHERE id = $1{}", sql::for_update(c)), vec![run_id.into()]).await?;
    let Some(row) = found.first() else { return Ok(true) };
    let tenant_id: i64 = row.try_get("", "tenant_id")?;
    let from: SyncRunStatus = row.try_get::<String>("", "status")?.parse().map_err(|e| DbErr::Custom(format!("run {run_id}: {e}")))?;
    if !from.can(RunEvent::Reopen, SyncRunStatus::Running) {
        return Ok(true); // still running: nothing to reopen
    }
    let updated = sql::exec(
        c,
        "UPDATE sync_runs SET status = 'RUNNING', finished_at = NULL WHERE id = $1 AND status = $2",
        vec![run_id.into(), from.as_str().into()],
    )
    .await;
    match updated {
        Ok(_) => {}
        Err(e) if matches!(unique_violation(&e), Some(UniqueIndex::SyncRunRunning | UniqueIndex::SyncRunScheduled)) => return Ok(false),
        Err(e) => return Err(e),
    }
    audit_run(c, now, tenant_id, run_id, actor, "sync_run.reopened", from, SyncRunStatus::Running, json!({})).await?;
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
async fn audit_run<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    tenant_id: i64,
    run_id: i64,
    actor: &str,
    action: &'static str,
    from: SyncRunStatus,
    to: SyncRunStatus,
    detail: serde_json::Value,
) -> Result<(), DbErr> {
    sql::audit_many(
        c,
        now,
        vec![AuditRow {
            tenant_id,
            actor: actor.to_string(),
            action,
            entity_type: "sync_run",
            entity_id: run_id.to_string(),
            before: Some(json!({"status": from.as_str()})),
            after: Some(json!({"status": to.as_str()})),
            detail: Some(detail),
        }],
    )
    .await
}
