//! Push transitions: create, claim, the verdict of an attempt (succeed, unchanged, fail and retry,
//! wait, die, cancel), cancel, retry, die without calls, and the reconciliation of lost attempts.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::{CancelReason, IntervalMethod, MonthlyValue, Period, ProductModule, PushEvent, PushStatus, SkipReason, UsageMetric};
use entity::push;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, Value};
use serde_json::json;

use super::{non_final_sql, sources_sql, stale};
use crate::{
    audit::SYSTEM_ACTOR,
    engine::sql::{self, AuditRow, Col, RowSet},
};

// ----------------------------------------------------------------------------------------------
// Creation (event CREATE)
// ----------------------------------------------------------------------------------------------

/// What a run's aggregation knows of one mapping: its snapshot and its monthly value (or why it has
/// none).
#[derive(Clone, Debug)]
pub struct NewPush {
    pub mapping_id: i64,
    pub customer_id: i64,
    pub module: ProductModule,
    pub usage: UsageMetric,
    pub method: IntervalMethod,
    pub cw_company_id: i64,
    pub cw_agreement_id: i64,
    pub cw_sequence_number: i64,
    pub cw_addition_id: i64,
    pub cw_product_id: Option<i64>,
    /// The mapping's input version the value was computed from.
    pub input_version: i64,
    pub value: Option<MonthlyValue>,
    /// Set: the push is created `SKIPPED` for this reason; unset: `PENDING`.
    pub skip: Option<SkipReason>,
}

/// The run the new pushes belong to.
pub struct RunRef {
    pub tenant_id: i64,
    pub run_id: i64,
    pub period: Period,
    pub dry_run: bool,
    pub max_attempts: i32,
}

/// Write the pushes of a run; returns `(id, status)` per row.
pub async fn create<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    run: &RunRef,
    rows: &[NewPush],
) -> Result<Vec<(i64, PushStatus)>, DbErr> {
    let status_of = |r: &NewPush| if r.skip.is_some() { PushStatus::Skipped } else { PushStatus::Pending };
    debug_assert!(rows.iter().all(|r| PUSH_CREATES.contains(&status_of(r))));
    let set = RowSet::new()
        .col("product_mapping_id", Col::I64(rows.iter().map(|r| r.mapping_id).collect()))
        .col("customer_id", Col::I64(rows.iter().map(|r| r.customer_id).collect()))
        .col("product_module", Col::Text(rows.iter().map(|r| r.module.as_str().to_string()).collect()))
        .col("usage", Col::Text(rows.iter().map(|r| r.usage.as_str().to_string()).collect()))
        .col("interval_method", Col::Text(rows.iter().map(|r| r.method.as_str().to_string()).collect()))
        .col("cw_company_id", Col::I64(rows.iter().map(|r| r.cw_company_id).collect()))
        .col("cw_agreement_id", Col::I64(rows.iter().map(|r| r.cw_agreement_id).collect()))
        .col("cw_addition_id", Col::I64(rows.iter().map(|r| r.cw_addition_id).collect()))
        .col("cw_sequence_number", Col::I64(rows.iter().map(|r| r.cw_sequence_number).collect()))
        .col("cw_product_id", Col::OptI64(rows.iter().map(|r| r.cw_product_id).collect()))
        .col("input_version", Col::I64(rows.iter().map(|r| r.input_version).collect()))
        .col("status", Col::Text(rows.iter().map(|r| status_of(r).as_str().to_string()).collect()))
        .col("value_micros", Col::OptI64(rows.iter().map(|r| r.value.map(|v| v.value_micros)).collect()))
        .col("quantity", Col::OptI64(rows.iter().map(|r| r.value.map(|v| v.quantity)).collect()))
        .col(
            "sample_days",
            Col::I32(rows.iter().map(|r| r.value.map(|v| i32::try_from(v.sample_days).unwrap_or(i32::MAX)).unwrap_or(0)).collect()),
        )
        .col("fallback", Col::Bool(rows.iter().map(|r| r.value.is_some_and(|v| v.fallback)).collect()))
        .col("skip_reason", Col::OptText(rows.iter().map(|r| r.skip.map(|s| s.as_str().to_string())).collect()))
        .col("finished_at", Col::OptTs(rows.iter().map(|r| r.skip.map(|_| now)).collect()));
    let inserted = sql::insert_rows(
        c,
        "pushes",
        &set,
        &[
            ("tenant_id", run.tenant_id.into()),
            ("sync_run_id", run.run_id.into()),
            ("period", run.period.to_string().into()),
            ("dry_run", run.dry_run.into()),
            ("attempts", 0i32.into()),
            ("max_attempts", run.max_attempts.into()),
            ("created_at", now.into()),
            ("updated_at", now.into()),
        ],
        "RETURNING id, status",
    )
    .await?;
    inserted
        .iter()
        .map(|r| {
            let status: String = r.try_get("", "status")?;
            let status = status.parse().map_err(|_| DbErr::Custom(format!("unexpected push status {status:?}")))?;
            Ok((r.try_get("", "id")?, status))
        })
        .collect()
}

/// The states a push is created in.
const PUSH_CREATES: [PushStatus; 2] = [PushStatus::Pending, PushStatus::Skipped];

// ----------------------------------------------------------------------------------------------
// Claim (event CLAIM)
// ----------------------------------------------------------------------------------------------

/// What an attempt needs besides the push row, read with the claim.
#[derive(Debug)]
pub struct ClaimContext {
    pub settings: Option<entity::cw_settings::Model>,
    /// The company's status in the catalog cache; `None` when it is not cached.
    pub company_status: Option<String>,
    /// The quantity of the last push of this addition that reached ConnectWise (drift is judged
    /// against it).
    pub last_set_quantity: Option<i64>,
    /// Set when the push may not write its addition any more: superseded by a newer push of it, or
    /// its mapping gone or pointing elsewhere.
    pub blocked: Option<CancelReason>,
}

/// The columns `superseded` and `orphaned` (1 or 0) of the push row `alias`: whether a newer
/// non-dry push of its addition exists, and whether its mapping is gone or points elsewhere now.
/// Only the newest push of a mapped addition may write it.
pub(crate) fn write_blocker_columns(alias: &str) -> String {
    format!(
        "CASE WHEN EXISTS (SELECT 1 FROM pushes n WHERE n.tenant_id = {a}.tenant_id AND n.cw_addition_id = {a}.cw_addition_id \
           AND n.id > {a}.id AND n.dry_run = FALSE) THEN 1 ELSE 0 END AS superseded, \
         CASE WHEN EXISTS (SELECT 1 FROM product_mappings m WHERE m.id = {a}.product_mapping_id \
           AND m.cw_addition_id = {a}.cw_addition_id AND m.cw_agreement_id = {a}.cw_agreement_id) THEN 0 ELSE 1 END AS orphaned",
        a = alias
    )
}

/// Why a push may not write its addition, from the [`write_blocker_columns`] of a row.
fn write_blocker(row: &sea_orm::QueryResult) -> Result<Option<CancelReason>, DbErr> {
    Ok(if row.try_get::<i32>("", "orphaned")? == 1 {
        Some(CancelReason::MappingRemoved)
    } else if row.try_get::<i32>("", "superseded")? == 1 {
        Some(CancelReason::PushSuperseded)
    } else {
        None
    })
}

/// The tenant's pushes among `ids` that may not write their addition any more, and why (the
/// dashboard offers no Retry for them).
pub async fn write_blockers<C: ConnectionTrait>(c: &C, tenant_id: i64, ids: &[i64]) -> Result<HashMap<i64, CancelReason>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sql::query(
        c,
        &format!("SELECT p.id, {} FROM pushes p WHERE p.tenant_id = $1 AND {}", write_blocker_columns("p"), sql::in_list(c, "p.id", 2)),
        vec![tenant_id.into(), sql::i64_list(c, ids)],
    )
    .await?;
    let mut out = HashMap::new();
    for r in &rows {
        if let Some(reason) = write_blocker(r)? {
            out.insert(r.try_get("", "id")?, reason);
        }
    }
    Ok(out)
}

fn context_columns() -> String {
    format!(
        "c.status AS company_status, \
         (SELECT l.quantity FROM pushes l WHERE l.tenant_id = claimed.tenant_id AND l.cw_addition_id = claimed.cw_addition_id \
            AND l.status = 'SUCCEEDED' AND l.dry_run = FALSE AND l.id <> claimed.id ORDER BY l.id DESC LIMIT 1) AS last_set_quantity, {}",
        write_blocker_columns("claimed")
    )
}

/// `PENDING`/`FAILED_RETRYING` and due → `RUNNING`, counting the attempt. Only one worker wins; the
/// attempt number (`attempts` after the claim) fences every later write of this attempt.
pub async fn claim(db: &DatabaseConnection, push_id: i64, now: DateTime<Utc>) -> Result<Option<(push::Model, ClaimContext)>, DbErr> {
    use sea_orm::{IdenStatic, Iterable};
    static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE pushes SET status = 'RUNNING', attempts = attempts + 1, updated_at = $2 \
             WHERE id = $1 AND status IN {from} AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
             RETURNING *",
            from = sources_sql(PushEvent::Claim)
        )
    });
    if sql::is_pg(db) {
        // One statement: the claim, the tenant's settings, the cached company and the facts the
        // attempt judges by (built once; the text is the same for every push).
        static WITH_CONTEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let settings_cols =
                entity::cw_settings::Column::iter().map(|c| format!("s.{0} AS s_{0}", c.as_str())).collect::<Vec<_>>().join(", ");
            format!(
                "WITH claimed AS ({claim}) \
                 SELECT claimed.*, {settings_cols}, {context} \
                 FROM claimed \
                 LEFT JOIN cw_settings s ON s.tenant_id = claimed.tenant_id \
                 LEFT JOIN cw_companies c ON c.tenant_id = claimed.tenant_id AND c.id = claimed.cw_company_id",
                claim = *CLAIM,
                context = context_columns()
            )
        });
        let row = sql::query(db, &WITH_CONTEXT, vec![push_id.into(), now.into()]).await?.into_iter().next();
        let Some(row) = row else { return Ok(None) };
        let p = push::Model::from_query_result(&row, "")?;
        let settings = match row.try_get::<Option<i64>>("", "s_tenant_id")? {
            Some(_) => Some(entity::cw_settings::Model::from_query_result(&row, "s_")?),
            None => None,
        };
        return Ok(Some((p, context_of(&row, settings)?)));
    }
    let Some(p) = push::Model::find_by_statement(sql::stmt(db, &CLAIM, vec![push_id.into(), now.into()])).one(db).await? else {
        return Ok(None);
    };
    use sea_orm::EntityTrait;
    let settings = entity::cw_settings::Entity::find_by_id(p.tenant_id).one(db).await?;
    let row = sql::query(
        db,
        &format!(
            "SELECT {} FROM pushes claimed \
             LEFT JOIN cw_companies c ON c.tenant_id = claimed.tenant_id AND c.id = claimed.cw_company_id WHERE claimed.id = $1",
            context_columns()
        ),
        vec![push_id.into()],
    )
    .await?
    .into_iter()
    .next()
    .ok_or_else(|| DbErr::RecordNotFound(format!("push {push_id}")))?;
    Ok(Some((p, context_of(&row, settings)?)))
}

fn context_of(row: &sea_orm::QueryResult, settings: Option<entity::cw_settings::Model>) -> Result<ClaimContext, DbErr> {
    Ok(ClaimContext {
        settings,
        company_status: row.try_get("", "company_status")?,
        last_set_quantity: row.try_get("", "last_set_quantity")?,
        blocked: write_blocker(row)?,
    })
}

/// A push that is not claimed waits until `until` (the tenant is paused, or its request budget is
/// spent): its next attempt moves, nothing else — waiting is not an attempt, nor a state change.
pub async fn wait_unclaimed<C: ConnectionTrait>(c: &C, push_id: i64, until: DateTime<Utc>) -> Result<bool, DbErr> {
    let n = sql::exec(
        c,
        &format!(
            "UPDATE pushes SET next_attempt_at = $2 WHERE id = $1 AND status IN {from} \
             AND (next_attempt_at IS NULL OR next_attempt_at < $2)",
            from = sources_sql(PushEvent::Claim)
        ),
        vec![push_id.into(), until.into()],
    )
    .await?;
    Ok(n == 1)
}

// ----------------------------------------------------------------------------------------------
// The verdict of an attempt (events SUCCEED, FIND_UNCHANGED, FAIL_AND_RETRY, WAIT, DIE, CANCEL)
// ----------------------------------------------------------------------------------------------

/// One HTTP call of an attempt, as `push_attempts` records it.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// `GET_COMPANY`, `GET_ADDITION`, `PATCH_QUANTITY`, `VERIFY_ADDITION`.
    pub step: &'static str,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    /// The quantity sent (PATCH) or read (GET).
    pub quantity: Option<i64>,
    /// `OK`, `ERROR` (the call failed) or `REJECTED` (it worked, but its answer ends the push).
    pub outcome: &'static str,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// What an attempt concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// ConnectWise holds the quantity after our PATCH.
    Succeeded,
    /// ConnectWise already held the quantity: nothing sent.
    Unchanged,
    /// Transient failure: try again at `next_attempt_at`.
    Retry { code: String, message: String, next_attempt_at: DateTime<Utc> },
    /// Permanent failure (or budget spent); `ticket`: open a ConnectWise ticket.
    Dead { code: String, message: String, ticket: bool },
    /// Withdrawn before calling: superseded or orphaned.
    Cancelled { reason: CancelReason, message: String },
    /// The attempt could not start calling: give it back and wait until `until`.
    Wait { until: DateTime<Utc>, reason: String },
}

impl Verdict {
    fn event(&self) -> PushEvent {
        match self {
            Verdict::Succeeded => PushEvent::Succeed,
            Verdict::Unchanged => PushEvent::FindUnchanged,
            Verdict::Retry { .. } => PushEvent::FailAndRetry,
            Verdict::Dead { .. } => PushEvent::Die,
            Verdict::Cancelled { .. } => PushEvent::Cancel,
            Verdict::Wait { .. } => PushEvent::Wait,
        }
    }

    fn action(&self) -> &'static str {
        match self {
            Verdict::Succeeded => "push.succeeded",
            Verdict::Unchanged => "push.unchanged",
            Verdict::Retry { .. } => "push.retry_scheduled",
            Verdict::Dead { .. } => "push.dead",
            Verdict::Cancelled { .. } => "push.cancelled",
            Verdict::Wait { .. } => "push.waiting",
        }
    }
}

/// One attempt's verdict and what it observed.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub verdict: Verdict,
    /// The HTTP status of the call that decided it.
    pub http_status: Option<u16>,
    /// What ConnectWise held when the attempt read the addition.
    pub held_quantity: Option<i64>,
    /// Set when that differed from the last quantity this service set on the addition.
    pub drift_from_quantity: Option<i64>,
    /// The last quantity this service set on the addition (for the drift entry).
    pub last_set_quantity: Option<i64>,
    pub calls: Vec<CallRecord>,
}

/// What [`settle`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The push was still this attempt's (`RUNNING` under its number) and took the verdict; `false`:
    /// someone else moved it meanwhile, the verdict was discarded (the calls are still recorded).
    pub kept: bool,
    /// The state it moved to (when kept).
    pub to: PushStatus,
}

/// Record an attempt of the claimed push `p` (its `attempts` is the attempt number): the call rows,
/// the verdict as a state change fenced by status and attempt number, the drift, the mapping's
/// `stale` flag after a success, and the audit entries. Run it in the caller's transaction.
pub async fn settle<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, p: &push::Model, a: &Attempt) -> Result<Settled, DbErr> {
    write_calls(c, p, &a.calls).await?;
    let status_code = a.http_status.map(i32::from);
    let mut values: Vec<Value> =
        vec![p.id.into(), p.attempts.into(), now.into(), status_code.into(), a.held_quantity.into(), a.drift_from_quantity.into()];
    let (to, set) = match &a.verdict {
        Verdict::Succeeded => {
            (PushStatus::Succeeded, "finished_at = $3, next_attempt_at = NULL, last_error_code = NULL, last_error = NULL".to_string())
        }
        Verdict::Unchanged => (
            PushStatus::Skipped,
            format!(
                "skip_reason = '{}', finished_at = $3, next_attempt_at = NULL, last_error_code = NULL, last_error = NULL",
                SkipReason::Unchanged.as_str()
            ),
        ),
        Verdict::Retry { code, message, next_attempt_at } => {
            values.extend([Value::from(code.clone()), clip(message).into(), (*next_attempt_at).into()]);
            (PushStatus::FailedRetrying, "last_error_code = $7, last_error = $8, next_attempt_at = $9".to_string())
        }
        Verdict::Dead { code, message, .. } => {
            values.extend([Value::from(code.clone()), clip(message).into()]);
            (PushStatus::Dead, "last_error_code = $7, last_error = $8, finished_at = $3, next_attempt_at = NULL".to_string())
        }
        Verdict::Cancelled { reason, message } => {
            values.extend([Value::from(reason.as_str()), clip(message).into()]);
            (
                PushStatus::Cancelled,
                "cancel_reason = $7, last_error_code = $7, last_error = $8, finished_at = $3, next_attempt_at = NULL".to_string(),
            )
        }
        Verdict::Wait { until, .. } => {
            values.push((*until).into());
            // The claim is given back with its attempt; a push that failed before shows it still.
            let to = if p.last_error_code.is_some() { PushStatus::FailedRetrying } else { PushStatus::Pending };
            (to, "attempts = attempts - 1, next_attempt_at = $7".to_string())
        }
    };
    let event = a.verdict.event();
    debug_assert!(PushStatus::Running.can(event, to), "{event} may not move RUNNING to {to}");
    let kept = sql::exec(
        c,
        &format!(
            "UPDATE pushes SET status = '{to}', updated_at = $3, last_http_status = $4, \
               held_quantity = COALESCE($5, held_quantity), drift_from_quantity = COALESCE($6, drift_from_quantity), {set} \
             WHERE id = $1 AND status = 'RUNNING' AND attempts = $2",
            to = to.as_str()
        ),
        values,
    )
    .await?
        == 1;
    if !kept {
        discarded(c, now, p, a.verdict.action(), a.http_status).await?;
        return Ok(Settled { kept, to });
    }
    if matches!(a.verdict, Verdict::Succeeded | Verdict::Unchanged)
        && let Some(mapping_id) = p.product_mapping_id
    {
        // The mapping's value reached ConnectWise; it is current unless an input changed since.
        stale::clear_if_current(c, mapping_id, p.input_version).await?;
    }
    let mut audits = vec![AuditRow {
        tenant_id: p.tenant_id,
        actor: SYSTEM_ACTOR.to_string(),
        action: a.verdict.action(),
        entity_type: "push",
        entity_id: p.id.to_string(),
        before: Some(json!({"status": PushStatus::Running.as_str()})),
        after: Some(after_of(to, &a.verdict)),
        detail: Some(detail_of(p, a)),
    }];
    if let Some(held) = a.drift_from_quantity {
        audits.push(AuditRow {
            tenant_id: p.tenant_id,
            actor: SYSTEM_ACTOR.to_string(),
            action: "push.drift",
            entity_type: "push",
            entity_id: p.id.to_string(),
            before: Some(json!({"quantity": a.last_set_quantity})),
            after: Some(json!({"quantity": held})),
            detail: Some(json!({
                "addition": p.cw_addition_id,
                "lastSetQuantity": a.last_set_quantity,
                "heldQuantity": held,
                "pushQuantity": p.quantity,
                "message": "ConnectWise held another quantity than the one this service last set: somebody changed the addition by hand",
            })),
        });
    }
    sql::audit_many(c, now, audits).await?;
    Ok(Settled { kept, to })
}

fn after_of(to: PushStatus, v: &Verdict) -> serde_json::Value {
    match v {
        Verdict::Unchanged => json!({"status": to.as_str(), "skipReason": SkipReason::Unchanged.as_str()}),
        Verdict::Retry { code, next_attempt_at, .. } => {
            json!({"status": to.as_str(), "errorCode": code, "nextAttemptAt": next_attempt_at.to_rfc3339()})
        }
        Verdict::Dead { code, .. } => json!({"status": to.as_str(), "errorCode": code}),
        Verdict::Cancelled { reason, .. } => json!({"status": to.as_str(), "cancelReason": reason.as_str()}),
        Verdict::Wait { until, .. } => json!({"status": to.as_str(), "nextAttemptAt": until.to_rfc3339()}),
        Verdict::Succeeded => json!({"status": to.as_str()}),
    }
}

fn detail_of(p: &push::Model, a: &Attempt) -> serde_json::Value {
    let last = a.calls.last();
    let mut d = json!({
        "attempt": p.attempts,
        "httpStatus": a.http_status,
        "quantity": p.quantity,
        "heldQuantity": a.held_quantity,
        "requestId": last.and_then(|c| c.request_id.clone()),
        "durationMs": a.calls.iter().map(|c| c.duration_ms).sum::<i64>(),
    });
    match &a.verdict {
        Verdict::Retry { message, .. } | Verdict::Dead { message, .. } | Verdict::Cancelled { message, .. } => {
            d["message"] = json!(clip(message));
        }
        Verdict::Wait { reason, .. } => d["reason"] = json!(reason),
        _ => {}
    }
    if let Verdict::Dead { ticket, .. } = &a.verdict {
        d["ticket"] = json!(ticket);
    }
    d
}

/// The fence found the push no longer this attempt's: record its calls, change nothing.
pub async fn discard<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, p: &push::Model, calls: &[CallRecord]) -> Result<(), DbErr> {
    write_calls(c, p, calls).await?;
    discarded(c, now, p, "not sent", None).await
}

/// Someone else moved the push during the attempt (an unmap, a newer run, reconciliation): its
/// state stays, and what the attempt found is noted.
async fn discarded<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    p: &push::Model,
    verdict: &str,
    http_status: Option<u16>,
) -> Result<(), DbErr> {
    tracing::info!(push_id = p.id, attempt = p.attempts, "push changed state during its attempt; result discarded");
    sql::audit_many(
        c,
        now,
        vec![AuditRow {
            tenant_id: p.tenant_id,
            actor: SYSTEM_ACTOR.to_string(),
            action: "push.result_discarded",
            entity_type: "push",
            entity_id: p.id.to_string(),
            before: None,
            after: None,
            detail: Some(json!({"verdict": verdict, "attempt": p.attempts, "httpStatus": http_status})),
        }],
    )
    .await
}

/// Longest message stored on a push or an attempt.
const MESSAGE_MAX: usize = 1000;

fn clip(s: &str) -> String {
    connectwise::truncate_chars(s, MESSAGE_MAX).to_string()
}

async fn write_calls<C: ConnectionTrait>(c: &C, p: &push::Model, calls: &[CallRecord]) -> Result<(), DbErr> {
    if calls.is_empty() {
        return Ok(());
    }
    let rows = RowSet::new()
        .col("push_id", Col::I64(vec![p.id; calls.len()]))
        .col("tenant_id", Col::I64(vec![p.tenant_id; calls.len()]))
        .col("attempt_no", Col::I32(vec![p.attempts; calls.len()]))
        .col("step", Col::Text(calls.iter().map(|a| a.step.to_string()).collect()))
        .col("started_at", Col::Ts(calls.iter().map(|a| a.started_at).collect()))
        .col("duration_ms", Col::I64(calls.iter().map(|a| a.duration_ms).collect()))
        .col("http_status", Col::OptI64(calls.iter().map(|a| a.http_status.map(i64::from)).collect()))
        .col("request_id", Col::OptText(calls.iter().map(|a| a.request_id.clone()).collect()))
        .col("quantity", Col::OptI64(calls.iter().map(|a| a.quantity).collect()))
        .col("outcome", Col::Text(calls.iter().map(|a| a.outcome.to_string()).collect()))
        .col("error_code", Col::OptText(calls.iter().map(|a| a.error_code.clone()).collect()))
        .col("error_message", Col::OptText(calls.iter().map(|a| a.error_message.as_deref().map(clip)).collect()));
    sql::insert_rows(c, "push_attempts", &rows, &[], "").await?;
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// Fence: the push row held while a PATCH is in flight
// ----------------------------------------------------------------------------------------------

/// Hold the claimed push for the PATCH: inside the caller's write transaction, lock its row (row
/// lock on PostgreSQL; SQLite's write transaction already excludes every other writer) if it is
/// still this attempt's and may still write its addition. `Ok(None)`: go ahead; `Ok(Some(verdict))`:
/// do not send — the verdict says why (or `None` inside when the push is simply not ours any more).
pub async fn fence<C: ConnectionTrait>(c: &C, p: &push::Model) -> Result<FenceCheck, DbErr> {
    let rows = sql::query(
        c,
        &format!(
            "SELECT claimed.id, {} FROM pushes claimed WHERE claimed.id = $1 AND claimed.status = 'RUNNING' AND claimed.attempts = $2{}",
            write_blocker_columns("claimed"),
            sql::for_update(c)
        ),
        vec![p.id.into(), p.attempts.into()],
    )
    .await?;
    let Some(row) = rows.first() else { return Ok(FenceCheck::NotOurs) };
    if let Some(reason) = write_blocker(row)? {
        return Ok(FenceCheck::Withdraw(reason));
    }
    Ok(FenceCheck::Send)
}

/// What [`fence`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceCheck {
    /// Still ours, still the newest push of a mapped addition: send.
    Send,
    /// Not `RUNNING` under this attempt any more (unmapped, superseded, reconciled): send nothing.
    NotOurs,
    /// Ours, but it must not write its addition any more.
    Withdraw(CancelReason),
}

// ----------------------------------------------------------------------------------------------
// Without an attempt: cancel, die (breaker), retry, lost attempts, waiting jobs
// ----------------------------------------------------------------------------------------------

/// Which pushes a bulk transition applies to (always within one tenant).
#[derive(Clone, Copy, Debug)]
pub enum Which<'a> {
    /// These pushes.
    Pushes(&'a [i64]),
    /// The pushes of these product mappings.
    Mappings(&'a [i64]),
    /// The pushes on these additions (a newer run computes them).
    Additions(&'a [i64]),
}

impl Which<'_> {
    fn condition<C: ConnectionTrait>(&self, c: &C, param: usize) -> (String, Value) {
        let (column, ids) = match self {
            Which::Pushes(ids) => ("id", *ids),
            Which::Mappings(ids) => ("product_mapping_id", *ids),
            Which::Additions(ids) => ("cw_addition_id", *ids),
        };
        (sql::in_list(c, column, param), sql::i64_list(c, ids))
    }

    fn is_empty(&self) -> bool {
        match self {
            Which::Pushes(ids) | Which::Mappings(ids) | Which::Additions(ids) => ids.is_empty(),
        }
    }
}

/// What a bulk transition changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The pushes moved.
    pub pushes: Vec<i64>,
    /// Their runs (to check for completion).
    pub runs: Vec<i64>,
}

/// Withdraw the tenant's non-final pushes selected by `which`: `CANCELLED` with `reason`, audited.
/// Runs in the caller's transaction; a push whose PATCH is in flight is waited for (its fence holds
/// the row), so cancellation and a send never interleave.
pub async fn cancel<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    tenant_id: i64,
    which: Which<'_>,
    reason: CancelReason,
    actor: &str,
    detail: Option<serde_json::Value>,
) -> Result<Changed, DbErr> {
    if which.is_empty() {
        return Ok(Changed::default());
    }
    let (cond, list) = which.condition(c, 2);
    let from = sources_sql(PushEvent::Cancel);
    let found = sql::query(
        c,
        &format!("SELECT id, status FROM pushes WHERE tenant_id = $1 AND status IN {from} AND {cond}{}", sql::for_update(c)),
        vec![tenant_id.into(), list],
    )
    .await?;
    if found.is_empty() {
        return Ok(Changed::default());
    }
    let mut before: HashMap<i64, String> = HashMap::with_capacity(found.len());
    for r in &found {
        before.insert(r.try_get("", "id")?, r.try_get("", "status")?);
    }
    let ids: Vec<i64> = before.keys().copied().collect();
    let message = reason.message();
    let rows = sql::query(
        c,
        &format!(
            "UPDATE pushes SET status = 'CANCELLED', cancel_reason = $2, last_error_code = $2, last_error = $3, \
               finished_at = $4, updated_at = $4, next_attempt_at = NULL \
             WHERE {} AND status IN {from} RETURNING id, sync_run_id",
            sql::in_list(c, "id", 1)
        ),
        vec![sql::i64_list(c, &ids), reason.as_str().into(), message.into(), now.into()],
    )
    .await?;
    let mut changed = Changed::default();
    let mut runs = HashSet::new();
    let mut audits = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get("", "id")?;
        runs.insert(r.try_get::<i64>("", "sync_run_id")?);
        changed.pushes.push(id);
        audits.push(AuditRow {
            tenant_id,
            actor: actor.to_string(),
            action: "push.cancelled",
            entity_type: "push",
            entity_id: id.to_string(),
            before: Some(json!({"status": before.get(&id)})),
            after: Some(json!({"status": PushStatus::Cancelled.as_str(), "cancelReason": reason.as_str()})),
            detail: detail.clone(),
        });
    }
    sql::audit_many(c, now, audits).await?;
    changed.runs = runs.into_iter().collect();
    Ok(changed)
}

/// After a 401/403 the run's other pushes go `DEAD` without calls and without tickets (they would
/// fail the same way).
pub async fn die_without_calls<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    p: &push::Model,
    code: &str,
    message: &str,
) -> Result<Changed, DbErr> {
    let rows = sql::query(
        c,
        &format!(
            "UPDATE pushes SET status = 'DEAD', last_error_code = $3, last_error = $4, finished_at = $5, updated_at = $5, \
               next_attempt_at = NULL \
             WHERE sync_run_id = $1 AND id <> $2 AND status IN {from} RETURNING id",
            from = sources_sql(PushEvent::Die)
        ),
        vec![p.sync_run_id.into(), p.id.into(), code.into(), message.into(), now.into()],
    )
    .await?;
    let mut changed = Changed { pushes: Vec::with_capacity(rows.len()), runs: vec![p.sync_run_id] };
    let mut audits = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get("", "id")?;
        changed.pushes.push(id);
        audits.push(AuditRow {
            tenant_id: p.tenant_id,
            actor: SYSTEM_ACTOR.to_string(),
            action: "push.dead",
            entity_type: "push",
            entity_id: id.to_string(),
            before: None,
            after: Some(json!({"status": PushStatus::Dead.as_str(), "errorCode": code})),
            detail: Some(json!({"causedByPush": p.id, "message": message})),
        });
    }
    sql::audit_many(c, now, audits).await?;
    Ok(changed)
}

/// What a retry did.
#[derive(Clone, Debug, Default)]
pub struct Retried {
    /// Back to `PENDING` with a fresh attempt budget.
    pub retried: Vec<push::Model>,
    /// Refused: a newer push of the same addition exists.
    pub superseded: Vec<i64>,
    /// Refused: the mapping was removed or points to another addition.
    pub orphaned: Vec<i64>,
    /// Left as they are: another push of the addition is in flight.
    pub blocked: Vec<i64>,
}

/// Give the run's `DEAD`/`FAILED_RETRYING` pushes (or only `only`) a fresh budget of `budget`
/// attempts — except those that may no longer write their addition (superseded, orphaned) and
/// those whose addition has another push in flight. One conditional update, so of two concurrent
/// retries exactly one moves each push.
pub async fn retry<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    tenant_id: i64,
    run_id: i64,
    only: Option<i64>,
    budget: i32,
    actor: &str,
) -> Result<Retried, DbErr> {
    let from = sources_sql(PushEvent::Retry);
    let only_sql = if only.is_some() { " AND p.id = $3" } else { "" };
    let mut values: Vec<Value> = vec![run_id.into(), tenant_id.into()];
    if let Some(id) = only {
        values.push(id.into());
    }
    let candidates = sql::query(
        c,
        &format!(
            "SELECT p.id, p.status, {} FROM pushes p WHERE p.sync_run_id = $1 AND p.tenant_id = $2 AND p.status IN {from}{only_sql}{}",
            write_blocker_columns("p"),
            if sql::is_pg(c) { " FOR UPDATE OF p" } else { "" }
        ),
        values,
    )
    .await?;
    let mut out = Retried::default();
    let mut ok = Vec::new();
    let mut before: HashMap<i64, String> = HashMap::new();
    for r in &candidates {
        let id: i64 = r.try_get("", "id")?;
        before.insert(id, r.try_get("", "status")?);
        match write_blocker(r)? {
            Some(CancelReason::MappingRemoved) => out.orphaned.push(id),
            Some(CancelReason::PushSuperseded) => out.superseded.push(id),
            None => ok.push(id),
        }
    }
    if ok.is_empty() {
        return Ok(out);
    }
    let retried = push::Model::find_by_statement(sql::stmt(
        c,
        &format!(
            "UPDATE pushes SET status = 'PENDING', max_attempts = attempts + $2, next_attempt_at = NULL, finished_at = NULL, \
               updated_at = $3 \
             WHERE {} AND status IN {from} \
               AND NOT EXISTS (SELECT 1 FROM pushes o WHERE o.tenant_id = pushes.tenant_id \
                               AND o.cw_addition_id = pushes.cw_addition_id AND o.id <> pushes.id AND o.status IN {nf}) \
             RETURNING *",
            sql::in_list(c, "id", 1),
            nf = non_final_sql()
        ),
        vec![sql::i64_list(c, &ok), budget.into(), now.into()],
    ))
    .all(c)
    .await?;
    let moved: HashSet<i64> = retried.iter().map(|r| r.id).collect();
    out.blocked = ok.into_iter().filter(|id| !moved.contains(id)).collect();
    let audits = retried
        .iter()
        .map(|r| AuditRow {
            tenant_id,
            actor: actor.to_string(),
            action: "push.retried",
            entity_type: "push",
            entity_id: r.id.to_string(),
            before: Some(json!({"status": before.get(&r.id)})),
            after: Some(json!({"status": PushStatus::Pending.as_str(), "maxAttempts": r.max_attempts})),
            detail: Some(json!({"attempts": r.attempts, "lastErrorCode": r.last_error_code})),
        })
        .collect();
    sql::audit_many(c, now, audits).await?;
    out.retried = retried;
    Ok(out)
}

/// A push whose attempt vanished with its worker.
#[derive(Clone, Debug)]
pub struct Lost {
    pub id: i64,
    pub tenant_id: i64,
    pub run_id: i64,
    pub to: PushStatus,
}

/// Attempts claimed before `cutoff` and still `RUNNING` lost their worker: they count as failed
/// attempts (`FAILED_RETRYING`, due now, or `DEAD` when the budget is spent). A push whose PATCH is
/// in flight holds its row and is skipped (PostgreSQL `SKIP LOCKED`; on SQLite the fence holds the
/// write lock, so this waits for it).
pub async fn lose_stale_attempts<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, cutoff: DateTime<Utc>) -> Result<Vec<Lost>, DbErr> {
    const CODE: &str = "ATTEMPT_LOST";
    let message = "the attempt did not finish in time (worker stopped or lost); counted as a failed attempt";
    let pick = if sql::is_pg(c) {
        "SELECT id FROM pushes WHERE status = 'RUNNING' AND updated_at < $1 FOR UPDATE SKIP LOCKED"
    } else {
        "SELECT id FROM pushes WHERE status = 'RUNNING' AND updated_at < $1"
    };
    debug_assert!(PushStatus::Running.can(PushEvent::LoseAttempt, PushStatus::Dead));
    let rows = sql::query(
        c,
        &format!(
            "UPDATE pushes SET \
               status = CASE WHEN attempts >= max_attempts THEN 'DEAD' ELSE 'FAILED_RETRYING' END, \
               finished_at = CASE WHEN attempts >= max_attempts THEN $2 ELSE NULL END, \
               next_attempt_at = CASE WHEN attempts >= max_attempts THEN NULL ELSE $2 END, \
               last_error_code = $3, last_error = $4, updated_at = $2 \
             WHERE id IN ({pick}) AND status = 'RUNNING' \
             RETURNING id, tenant_id, sync_run_id, status, attempts"
        ),
        vec![cutoff.into(), now.into(), CODE.into(), message.into()],
    )
    .await?;
    let mut lost = Vec::with_capacity(rows.len());
    let mut audits = Vec::with_capacity(rows.len());
    for r in &rows {
        let status: String = r.try_get("", "status")?;
        let to = if status == PushStatus::Dead.as_str() { PushStatus::Dead } else { PushStatus::FailedRetrying };
        let l = Lost { id: r.try_get("", "id")?, tenant_id: r.try_get("", "tenant_id")?, run_id: r.try_get("", "sync_run_id")?, to };
        audits.push(AuditRow {
            tenant_id: l.tenant_id,
            actor: SYSTEM_ACTOR.to_string(),
            action: if to == PushStatus::Dead { "push.dead" } else { "push.attempt_lost" },
            entity_type: "push",
            entity_id: l.id.to_string(),
            before: Some(json!({"status": PushStatus::Running.as_str()})),
            after: Some(json!({"status": to.as_str(), "errorCode": CODE})),
            detail: Some(json!({"attempt": r.try_get::<i32>("", "attempts")?})),
        });
        lost.push(l);
    }
    sql::audit_many(c, now, audits).await?;
    Ok(lost)
}

/// Pushes waiting for a job that never came: `PENDING` untouched since before `cutoff` and not
/// deliberately waiting, or `FAILED_RETRYING` well past their next attempt. Touched (so the next
/// sweep does not take them again at once) and returned, to be enqueued. A push that waits for a
/// pause or the request budget has its next attempt in the future and is left alone.
pub async fn overdue<C: ConnectionTrait>(c: &C, now: DateTime<Utc>, cutoff: DateTime<Utc>) -> Result<Vec<i64>, DbErr> {
    let rows = sql::query(
        c,
        "UPDATE pushes SET updated_at = $2, next_attempt_at = CASE WHEN status = 'FAILED_RETRYING' THEN $2 ELSE next_attempt_at END \
         WHERE (status = 'PENDING' AND updated_at < $1 AND (next_attempt_at IS NULL OR next_attempt_at < $1)) \
            OR (status = 'FAILED_RETRYING' AND next_attempt_at IS NOT NULL AND next_attempt_at < $1) \
         RETURNING id",
        vec![cutoff.into(), now.into()],
    )
    .await?;
    rows.iter().map(|r| r.try_get("", "id")).collect()
}
