//! Use cases of sync runs and pushes: start a manual run, retry failed pushes, and withdraw the
//! pushes of removed mappings. The engine (`crate::engine`) does the work the jobs carry.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::{Period, PushStatus, PushablePeriod, SyncRunStatus, SyncTrigger, codes};
use entity::{push, sync_run};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, QueryFilter,
};
use serde_json::json;

use crate::{
    Settings,
    auth::Principal,
    engine::sql::{self, AuditRow},
    error::{Outcome, ServiceResult, UniqueIndex, UserError, unique_violation},
    jobs::{AggregateRunJob, Job, JobQueue, PushJob},
};

fn user_error(code: &str, message: impl Into<String>) -> Vec<UserError> {
    vec![UserError::new(code, message)]
}

/// Start a manual monthly sync (`runMonthlySync`).
pub async fn run_monthly_sync(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    p: &Principal,
    period: Period,
    customer_ids: Option<Vec<String>>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<sync_run::Model>> {
    let today = now.date_naive();
    let settings = entity::cw_settings::Entity::find_by_id(p.tenant_id).one(db).await?;
    if !settings.is_some_and(|s| s.consumption_sync_enabled) {
        return Ok(Err(user_error(codes::CONSUMPTION_SYNC_DISABLED, "configure ConnectWise and switch consumption sync on first")));
    }
    if !dry_run {
        match domain::check_pushable(period, today) {
            PushablePeriod::Ok => {}
            PushablePeriod::NotClosed => {
                return Ok(Err(vec![
                    UserError::new(
                        codes::PERIOD_NOT_CLOSED,
                        format!("{period} is not closed yet; only {} may be pushed", Period::latest_closed(today)),
                    )
                    .at(["period"]),
                ]));
            }
            PushablePeriod::Superseded => {
                return Ok(Err(vec![
                    UserError::new(
                        codes::PERIOD_SUPERSEDED,
                        format!(
                            "{period} is older than the latest closed month {}; use a dry run to look at it",
                            Period::latest_closed(today)
                        ),
                    )
                    .at(["period"]),
                ]));
            }
        }
    }

    let filter = match customer_ids {
        None => None,
        Some(ids) => match resolve_customers(db, p.tenant_id, &ids).await? {
            Ok(found) => Some(found),
            Err(errors) => return Ok(Err(errors)),
        },
    };

    if running_run_exists(db, p.tenant_id, period).await? {
        return Ok(Err(user_error(codes::RUN_IN_PROGRESS, format!("a sync run for {period} is already running"))));
    }

    let txn = sql::begin_write(db).await?;
    let inserted = sync_run::ActiveModel {
        tenant_id: Set(p.tenant_id),
        period: Set(period.to_string()),
        trigger: Set(SyncTrigger::Manual.as_str().to_string()),
        dry_run: Set(dry_run),
        status: Set(SyncRunStatus::Running.as_str().to_string()),
        customer_ids: Set(filter.as_ref().map(|ids| json!(ids))),
        requested_by: Set(p.actor()),
        started_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await;
    let run = match inserted {
        Ok(run) => run,
        Err(e) if matches!(unique_violation(&e), Some(UniqueIndex::SyncRunRunning | UniqueIndex::SyncRunScheduled)) => {
            return Ok(Err(user_error(codes::RUN_IN_PROGRESS, format!("a sync run for {period} is already running"))));
        }
        Err(e) => return Err(e.into()),
    };
    crate::audit::record(
        &txn,
        crate::audit::AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: &p.actor(),
            action: "sync_run.started",
            entity_type: "sync_run",
            entity_id: run.id.to_string(),
            before: None,
            after: Some(json!({"status": run.status, "period": run.period, "trigger": run.trigger, "dryRun": dry_run, "customerIds": run.customer_ids})),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    if let Err(e) = queue.enqueue(Job::AggregateRun(AggregateRunJob { run_id: run.id })).await {
        // The run is committed; reconciliation enqueues it again after RECONCILE_STALE_S.
        tracing::warn!(run_id = run.id, error = %e, "could not enqueue the aggregation; reconciliation will");
    }
    Ok(Ok(run))
}

/// The tenant's customers named by `ids` (GraphQL ids), or `NOT_FOUND` per unknown entry.
async fn resolve_customers(db: &DatabaseConnection, tenant_id: i64, ids: &[String]) -> ServiceResult<Outcome<Vec<i64>>> {
    let parsed: Vec<Option<i64>> = ids.iter().map(|s| super::parse_id(s)).collect();
    let wanted: Vec<i64> = parsed.iter().flatten().copied().collect();
    let known: HashSet<i64> = if wanted.is_empty() {
        HashSet::new()
    } else {
        let rows = sql::query(
            db,
            &format!("SELECT id FROM customers WHERE tenant_id = $1 AND {}", sql::in_list(db, "id", 2)),
            vec![tenant_id.into(), sql::i64_list(db, &wanted)],
        )
        .await?;
        rows.iter().map(|r| r.try_get::<i64>("", "id")).collect::<Result<_, _>>()?
    };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, id) in parsed.iter().enumerate() {
        match id {
            Some(id) if known.contains(id) => {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
            _ => errors.push(UserError::not_found("customer").at(["customerIds".to_string(), i.to_string()])),
        }
    }
    Ok(if errors.is_empty() { Ok(out) } else { Err(errors) })
}

async fn running_run_exists<C: ConnectionTrait>(c: &C, tenant_id: i64, period: Period) -> Result<bool, DbErr> {
    Ok(sync_run::Entity::find()
        .filter(sync_run::Column::TenantId.eq(tenant_id))
        .filter(sync_run::Column::Period.eq(period.to_string()))
        .filter(sync_run::Column::Status.eq(SyncRunStatus::Running.as_str()))
        .one(c)
        .await?
        .is_some())
}

/// Put a `DEAD` or `FAILED_RETRYING` push back to `PENDING` with a fresh attempt budget (`retryPush`).
pub async fn retry_push(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    settings: &Settings,
    p: &Principal,
    push_id: &str,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<push::Model>> {
    let Some(id) = super::parse_id(push_id) else {
        return Ok(Err(vec![UserError::not_found("push").at(["id"])]));
    };
    let Some(existing) = push::Entity::find_by_id(id).filter(push::Column::TenantId.eq(p.tenant_id)).one(db).await? else {
        return Ok(Err(vec![UserError::not_found("push").at(["id"])]));
    };
    let outcome = retry_where(db, settings, p, existing.sync_run_id, Some(id), now).await?;
    let pushes = match outcome {
        Ok(pushes) => pushes,
        Err(errors) => return Ok(Err(errors)),
    };
    let Some(retried) = pushes.into_iter().next() else {
        return Ok(Err(user_error(
            codes::PUSH_NOT_RETRYABLE,
            format!("push {id} is {}: only DEAD and FAILED_RETRYING pushes can be retried", current_status(db, id).await?),
        )));
    };
    enqueue_all(queue, std::slice::from_ref(&retried)).await;
    Ok(Ok(retried))
}

async fn current_status(db: &DatabaseConnection, id: i64) -> Result<String, DbErr> {
    Ok(push::Entity::find_by_id(id).one(db).await?.map(|p| p.status).unwrap_or_else(|| "gone".into()))
}

/// Retry every `DEAD`/`FAILED_RETRYING` push of a run (`retryFailedPushes`). Pushes whose addition
/// is held by another in-flight push stay as they are; if that leaves nothing to retry while some
/// were blocked, the answer is `RUN_IN_PROGRESS`.
pub async fn retry_failed_pushes(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    settings: &Settings,
    p: &Principal,
    run_id: &str,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<Vec<push::Model>>> {
    let Some(run_id) = super::parse_id(run_id) else {
        return Ok(Err(vec![UserError::not_found("sync run").at(["syncRunId"])]));
    };
    if sync_run::Entity::find_by_id(run_id).filter(sync_run::Column::TenantId.eq(p.tenant_id)).one(db).await?.is_none() {
        return Ok(Err(vec![UserError::not_found("sync run").at(["syncRunId"])]));
    }
    let retried = match retry_where(db, settings, p, run_id, None, now).await? {
        Ok(r) => r,
        Err(errors) => return Ok(Err(errors)),
    };
    enqueue_all(queue, &retried).await;
    Ok(Ok(retried))
}

async fn enqueue_all(queue: &dyn JobQueue, pushes: &[push::Model]) {
    for p in pushes {
        if let Err(e) = queue.enqueue(Job::Push(PushJob { push_id: p.id })).await {
            // The rows are PENDING in the database; reconciliation enqueues them again.
            tracing::warn!(push_id = p.id, error = %e, "could not enqueue a retried push; reconciliation will");
        }
    }
}

/// The shared core of both retries: one conditional, set-based update (so of two concurrent
/// retries exactly one wins), the run back to `RUNNING`, one audit entry per push.
async fn retry_where(
    db: &DatabaseConnection,
    settings: &Settings,
    p: &Principal,
    run_id: i64,
    only: Option<i64>,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<Vec<push::Model>>> {
    let budget = i32::try_from(settings.push_max_attempts).unwrap_or(i32::MAX);
    let txn = sql::begin_write(db).await?;
    let only_sql = if only.is_some() { " AND pushes.id = $5" } else { "" };
    let mut values = vec![run_id.into(), p.tenant_id.into(), now.into(), budget.into()];
    if let Some(id) = only {
        values.push(id.into());
    }
    let before_rows = sql::query(
        &txn,
        &format!(
            "SELECT id, status FROM pushes WHERE sync_run_id = $1 AND tenant_id = $2 AND status IN ('DEAD', 'FAILED_RETRYING'){}",
            if only.is_some() { " AND pushes.id = $3" } else { "" }
        ),
        [vec![run_id.into(), p.tenant_id.into()], only.map(|i| vec![i.into()]).unwrap_or_default()].concat(),
    )
    .await?;
    let mut old_status: HashMap<i64, String> = HashMap::new();
    for r in &before_rows {
        old_status.insert(r.try_get("", "id")?, r.try_get("", "status")?);
    }
    // A DEAD push whose addition meanwhile has another in-flight push must not come back alive
    // (uq_pushes_in_flight); it is left out instead of failing the whole statement.
    let updated = sql::stmt(
        &txn,
        &format!(
            "UPDATE pushes SET status = 'PENDING', max_attempts = attempts + $4, next_attempt_at = NULL, finished_at = NULL, \
               updated_at = $3 \
             WHERE sync_run_id = $1 AND tenant_id = $2 AND status IN ('DEAD', 'FAILED_RETRYING'){only_sql} \
               AND NOT EXISTS (SELECT 1 FROM pushes o WHERE o.tenant_id = pushes.tenant_id \
                               AND o.cw_addition_id = pushes.cw_addition_id AND o.id <> pushes.id AND o.status IN {nf}) \
             RETURNING *",
            nf = sql::NON_FINAL_SQL
        ),
        values,
    );
    let retried = match push::Model::find_by_statement(updated).all(&txn).await {
        Ok(rows) => rows,
        Err(e) if unique_violation(&e) == Some(UniqueIndex::PushInFlight) => {
            return Ok(Err(user_error(
                codes::RUN_IN_PROGRESS,
                "another push for the same addition is in flight; retry when it has finished",
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if retried.is_empty() {
        // Nothing moved: either nothing is retryable (any more: a concurrent retry won), or what is
        // retryable is blocked by another in-flight push on its addition. A fresh read tells which.
        let still = sql::query(
            &txn,
            &format!(
                "SELECT COUNT(*) AS n FROM pushes WHERE sync_run_id = $1 AND tenant_id = $2 AND status IN ('DEAD', 'FAILED_RETRYING'){}",
                if only.is_some() { " AND pushes.id = $3" } else { "" }
            ),
            [vec![run_id.into(), p.tenant_id.into()], only.map(|i| vec![i.into()]).unwrap_or_default()].concat(),
        )
        .await?;
        let blocked = still.first().map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0);
        if blocked > 0 {
            return Ok(Err(user_error(
                codes::RUN_IN_PROGRESS,
                "another push for the same addition is in flight; retry when it has finished",
            )));
        }
        return Ok(Ok(Vec::new()));
    }
    // The run has work again.
    let reopened = sql::exec(
        &txn,
        "UPDATE sync_runs SET status = 'RUNNING', finished_at = NULL WHERE id = $1 AND status <> 'RUNNING'",
        vec![run_id.into()],
    )
    .await;
    match reopened {
        Ok(_) => {}
        Err(e) if matches!(unique_violation(&e), Some(UniqueIndex::SyncRunRunning | UniqueIndex::SyncRunScheduled)) => {
            return Ok(Err(user_error(
                codes::RUN_IN_PROGRESS,
                "another sync run of the same period is running; retry when it has finished",
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let actor = p.actor();
    let audits = retried
        .iter()
        .map(|r| AuditRow {
            tenant_id: p.tenant_id,
            actor: actor.clone(),
            action: "push.retried",
            entity_type: "push",
            entity_id: r.id.to_string(),
            before: Some(json!({"status": old_status.get(&r.id)})),
            after: Some(json!({"status": PushStatus::Pending.as_str(), "maxAttempts": r.max_attempts})),
            detail: Some(json!({"attempts": r.attempts, "lastErrorCode": r.last_error_code})),
        })
        .collect();
    sql::audit_many(&txn, now, audits).await?;
    txn.commit().await?;
    Ok(Ok(retried))
}

/// Withdraw the non-final pushes of removed mappings: `CANCELLED` with `last_error_code`
/// `MAPPING_REMOVED`, audited. Runs inside the mapping service's transaction, so a mapping is never
/// gone while its push can still be sent. Returns the number of pushes cancelled.
pub async fn cancel_pushes_for_mapping<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    tenant_id: i64,
    mapping_ids: &[i64],
    actor: &str,
) -> Result<u64, DbErr> {
    if mapping_ids.is_empty() {
        return Ok(0);
    }
    let found = sql::query(
        txn,
        &format!(
            "SELECT id, status FROM pushes WHERE tenant_id = $1 AND status IN {nf} AND {}",
            sql::in_list(txn, "product_mapping_id", 2),
            nf = sql::NON_FINAL_SQL
        ),
        vec![tenant_id.into(), sql::i64_list(txn, mapping_ids)],
    )
    .await?;
    if found.is_empty() {
        return Ok(0);
    }
    let mut before: HashMap<i64, String> = HashMap::new();
    for r in &found {
        before.insert(r.try_get("", "id")?, r.try_get("", "status")?);
    }
    let ids: Vec<i64> = before.keys().copied().collect();
    let rows = sql::query(
        txn,
        &format!(
            "UPDATE pushes SET status = 'CANCELLED', skip_reason = NULL, last_error_code = $2, \
               last_error = 'the product mapping was removed', finished_at = $3, updated_at = $3, next_attempt_at = NULL \
             WHERE {} AND status IN {nf} RETURNING id, sync_run_id",
            sql::in_list(txn, "id", 1),
            nf = sql::NON_FINAL_SQL
        ),
        vec![sql::i64_list(txn, &ids), crate::engine::codes::MAPPING_REMOVED.into(), now.into()],
    )
    .await?;
    let mut runs = HashSet::new();
    let mut audits = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get("", "id")?;
        runs.insert(r.try_get::<i64>("", "sync_run_id")?);
        audits.push(AuditRow {
            tenant_id,
            actor: actor.to_string(),
            action: "push.cancelled",
            entity_type: "push",
            entity_id: id.to_string(),
            before: Some(json!({"status": before.get(&id)})),
            after: Some(json!({"status": "CANCELLED", "errorCode": crate::engine::codes::MAPPING_REMOVED})),
            detail: None,
        });
    }
    let n = audits.len() as u64;
    sql::audit_many(txn, now, audits).await?;
    // A run whose last open pushes were these is done now (reconciliation would catch it too).
    for run_id in runs {
        crate::engine::finish_run_if_done(txn, run_id, now).await?;
    }
    Ok(n)
}

/// Compile-time check: the use cases can run inside GraphQL resolvers (which need `Send` futures).
#[cfg(test)]
#[allow(dead_code)]
fn futures_are_send(db: &DatabaseConnection, txn: &sea_orm::DatabaseTransaction, queue: &dyn JobQueue, settings: &Settings, p: &Principal) {
    fn is_send<T: Send>(_: &T) {}
    let now = chrono::DateTime::<Utc>::UNIX_EPOCH;
    let today = now.date_naive();
    is_send(&run_monthly_sync(db, queue, p, Period::latest_closed(today), None, false, now));
    is_send(&retry_push(db, queue, settings, p, "1", now));
    is_send(&retry_failed_pushes(db, queue, settings, p, "1", now));
    is_send(&cancel_pushes_for_mapping(txn, now, 1, &[1], "system"));
    is_send(&super::consumption::record_consumption(db, p, Vec::new(), now));
    is_send(&super::consumption::daily_consumption(
        db,
        p,
        1,
        domain::ProductModule::Endpoints,
        domain::UsageMetric::ActiveUsers,
        today,
        today,
    ));
    is_send(&super::consumption::preview(db, p, Period::latest_closed(today), None));
}
