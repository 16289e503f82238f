//! Use cases of sync runs and pushes: start a manual run, retry failed pushes, and withdraw the
//! pushes of removed mappings. The engine (`crate::engine`) does the work the jobs carry.
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use domain::{CancelReason, Period, PushablePeriod, SyncRunStatus, SyncTrigger, codes};
use entity::{push, sync_run};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

use crate::{
    Settings,
    auth::Principal,
    engine::sql,
    error::{Outcome, ServiceResult, UserError},
    jobs::{AggregateRunJob, Job, JobQueue, PushJob},
    ledger,
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
    let actor = p.actor();
    let new = ledger::run::NewRun {
        tenant_id: p.tenant_id,
        period,
        trigger: SyncTrigger::Manual,
        dry_run,
        customer_ids: filter,
        requested_by: &actor,
    };
    let run = match ledger::run::start(&txn, now, new).await? {
        ledger::run::Started::Run(run) => *run,
        ledger::run::Started::AlreadyRunning => {
            return Ok(Err(user_error(codes::RUN_IN_PROGRESS, format!("a sync run for {period} is already running"))));
        }
    };
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

/// Put a `DEAD` or `FAILED_RETRYING` push back to `PENDING` with a fresh attempt budget
/// (`retryPush`). Refused, with nothing written, for a push that may no longer write its addition:
/// `PUSH_SUPERSEDED` (a newer push of the addition exists), `MAPPING_REMOVED` (its mapping was
/// deleted, unmapped or points elsewhere now); `PUSH_NOT_RETRYABLE` for other states;
/// `RUN_IN_PROGRESS` when another push of the addition (or another run of the period) is running.
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
    let txn = sql::begin_write(db).await?;
    let outcome = ledger::push::retry(&txn, now, p.tenant_id, existing.sync_run_id, Some(id), budget(settings), &p.actor()).await?;
    let refusal = if !outcome.orphaned.is_empty() {
        Some((
            codes::MAPPING_REMOVED,
            "this push can no longer be sent: its product mapping was removed or now points to another addition".to_string(),
        ))
    } else if !outcome.superseded.is_empty() {
        Some((
            codes::PUSH_SUPERSEDED,
            "this push is superseded: a newer push of the same addition exists; retry that one instead".to_string(),
        ))
    } else if !outcome.blocked.is_empty() {
        Some((codes::RUN_IN_PROGRESS, "another push for the same addition is in flight; retry when it has finished".to_string()))
    } else {
        None
    };
    if let Some((code, message)) = refusal {
        return Ok(Err(user_error(code, message)));
    }
    let Some(retried) = outcome.retried.into_iter().next() else {
        return Ok(Err(user_error(
            codes::PUSH_NOT_RETRYABLE,
            format!("this push is {}: only DEAD and FAILED_RETRYING pushes can be retried", current_status(&txn, id).await?),
        )));
    };
    if !ledger::run::reopen(&txn, retried.sync_run_id, now, &p.actor()).await? {
        return Ok(Err(user_error(codes::RUN_IN_PROGRESS, "another sync run of the same period is running; retry when it has finished")));
    }
    txn.commit().await?;
    enqueue_all(queue, std::slice::from_ref(&retried)).await;
    Ok(Ok(retried))
}

fn budget(settings: &Settings) -> i32 {
    i32::try_from(settings.push_max_attempts).unwrap_or(i32::MAX)
}

async fn current_status<C: ConnectionTrait>(db: &C, id: i64) -> Result<String, DbErr> {
    Ok(push::Entity::find_by_id(id).one(db).await?.map(|p| p.status).unwrap_or_else(|| "gone".into()))
}

/// What `retryFailedPushes` did.
#[derive(Clone, Debug, Default)]
pub struct RetriedPushes {
    /// Back to `PENDING` with a fresh attempt budget.
    pub retried: Vec<push::Model>,
    /// Left alone: a newer push of the same addition exists.
    pub skipped_superseded: usize,
    /// Left alone: their mapping was removed or points elsewhere now.
    pub skipped_orphaned: usize,
    /// Left alone: another push of their addition is in flight.
    pub skipped_in_flight: usize,
}

/// Retry every `DEAD`/`FAILED_RETRYING` push of a run (`retryFailedPushes`), skipping — and
/// counting — those that may no longer write their addition and those whose addition has another
/// push in flight. If only blocked pushes were left, the answer is `RUN_IN_PROGRESS`.
pub async fn retry_failed_pushes(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    settings: &Settings,
    p: &Principal,
    run_id: &str,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<RetriedPushes>> {
    let Some(run_id) = super::parse_id(run_id) else {
        return Ok(Err(vec![UserError::not_found("sync run").at(["syncRunId"])]));
    };
    if sync_run::Entity::find_by_id(run_id).filter(sync_run::Column::TenantId.eq(p.tenant_id)).one(db).await?.is_none() {
        return Ok(Err(vec![UserError::not_found("sync run").at(["syncRunId"])]));
    }
    let txn = sql::begin_write(db).await?;
    let outcome = ledger::push::retry(&txn, now, p.tenant_id, run_id, None, budget(settings), &p.actor()).await?;
    if outcome.retried.is_empty() && !outcome.blocked.is_empty() {
        return Ok(Err(user_error(codes::RUN_IN_PROGRESS, "another push for the same addition is in flight; retry when it has finished")));
    }
    if !outcome.retried.is_empty() && !ledger::run::reopen(&txn, run_id, now, &p.actor()).await? {
        return Ok(Err(user_error(codes::RUN_IN_PROGRESS, "another sync run of the same period is running; retry when it has finished")));
    }
    txn.commit().await?;
    enqueue_all(queue, &outcome.retried).await;
    Ok(Ok(RetriedPushes {
        skipped_superseded: outcome.superseded.len(),
        skipped_orphaned: outcome.orphaned.len(),
        skipped_in_flight: outcome.blocked.len(),
        retried: outcome.retried,
    }))
}

async fn enqueue_all(queue: &dyn JobQueue, pushes: &[push::Model]) {
    for p in pushes {
        if let Err(e) = queue.enqueue(Job::Push(PushJob { push_id: p.id })).await {
            // The rows are PENDING in the database; reconciliation enqueues them again.
            tracing::warn!(push_id = p.id, error = %e, "could not enqueue a retried push; reconciliation will");
        }
    }
}

/// Withdraw the non-final pushes of removed mappings (deleted, unmapped, or pointing to another
/// addition now): `CANCELLED` with `MAPPING_REMOVED`, audited, inside the mapping service's
/// transaction — so a mapping is never gone while its push can still be sent, and a push whose
/// PATCH is in flight finishes first. Returns the number of pushes cancelled.
pub async fn cancel_pushes_for_mapping<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    tenant_id: i64,
    mapping_ids: &[i64],
    actor: &str,
) -> Result<u64, DbErr> {
    let changed =
        ledger::push::cancel(txn, now, tenant_id, ledger::push::Which::Mappings(mapping_ids), CancelReason::MappingRemoved, actor, None)
            .await?;
    // A run whose last open pushes were these is done now (reconciliation would catch it too).
    for run_id in &changed.runs {
        ledger::run::finish_if_done(txn, *run_id, now).await?;
    }
    Ok(changed.pushes.len() as u64)
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
