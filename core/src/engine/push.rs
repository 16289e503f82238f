//! One attempt of one push (SPEC §7): claim the row, check the addition, PATCH the quantity, and
//! record the outcome. The push row decides what happens next; the job itself always returns `Ok`
//! for business failures so that queue-level retries never multiply ours.
use std::time::Duration;

use chrono::{DateTime, Utc};
use connectwise::{CwClient, CwError};
use domain::{PushStatus, codes};
use entity::push;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, FromQueryResult, Value};
use serde_json::json;

use super::sql::{self, AuditRow};
use super::{ClientError, EngineDeps, EngineError, clip, codes as engine_codes};
use crate::jobs::{Job, PushJob, TicketJob};

/// Longest error message stored on a push or an attempt.
const MESSAGE_MAX: usize = 1000;

/// Step names of `push_attempts.step`.
const STEP_GET_ADDITION: &str = "GET_ADDITION";
const STEP_GET_COMPANY: &str = "GET_COMPANY";
const STEP_PATCH: &str = "PATCH_QUANTITY";

/// What the last HTTP call told us (for the push row and the audit detail).
#[derive(Clone, Debug, Default)]
struct CallInfo {
    http_status: Option<u16>,
    request_id: Option<String>,
    duration_ms: i64,
}

impl CallInfo {
    fn of_error(e: &CwError) -> Self {
        CallInfo { http_status: e.status, request_id: e.request_id.clone(), duration_ms: millis(e.duration) }
    }
}

/// The result of one attempt.
#[derive(Debug)]
enum Outcome {
    Succeeded(CallInfo),
    /// Permanent failure; `ticket` says whether a ConnectWise ticket should be opened.
    Dead {
        code: String,
        message: String,
        call: CallInfo,
        ticket: bool,
    },
    /// ConnectWise rejected our credentials: trip the tenant's breaker.
    AuthFailed {
        message: String,
        call: CallInfo,
    },
    Retry {
        code: String,
        message: String,
        call: CallInfo,
        retry_after: Option<Duration>,
        rate_limited: bool,
    },
    /// The tenant is paused (a 429 elsewhere): put the push back without counting an attempt.
    Deferred {
        until: DateTime<Utc>,
    },
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Run one attempt of push `push_id` (job `Push`).
///
/// Database round trips are what an attempt costs beside its two HTTP calls, so: the claim also
/// reads the tenant's settings and the cached company (one statement on PostgreSQL), the attempt
/// rows are written together with the outcome (one transaction; one statement for a success on
/// PostgreSQL), and the run is checked for completion with an index probe.
pub async fn attempt_push(deps: &EngineDeps, push_id: i64) -> Result<(), EngineError> {
    let now = deps.clock.now();
    let Some((p, context)) = claim(deps, push_id, now).await? else {
        return requeue_if_not_due(deps, push_id, now).await;
    };
    let mut calls = Vec::new();
    let outcome = run_attempt(deps, &p, context, &mut calls).await?;
    apply_outcome(deps, &p, outcome, calls).await
}

/// What an attempt needs besides the push row, read with the claim.
struct Context {
    settings: Option<entity::cw_settings::Model>,
    /// The company's status in the catalog cache; `None` when it is not cached.
    company_status: Option<String>,
}

/// `PENDING`/`FAILED_RETRYING` and due → `RUNNING`, counting the attempt. Only one worker wins.
async fn claim(deps: &EngineDeps, push_id: i64, now: DateTime<Utc>) -> Result<Option<(push::Model, Context)>, DbErr> {
    const CLAIM: &str = "UPDATE pushes SET status = 'RUNNING', attempts = attempts + 1, updated_at = $2 \
         WHERE id = $1 AND status IN ('PENDING', 'FAILED_RETRYING') \
           AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
         RETURNING *";
    if sql::is_pg(&deps.db) {
        // The statement text is the same for every push: built once.
        static CLAIM_WITH_CONTEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            use sea_orm::{IdenStatic, Iterable};
            let settings_cols =
                entity::cw_settings::Column::iter().map(|c| format!("s.{0} AS s_{0}", c.as_str())).collect::<Vec<_>>().join(", ");
            format!(
                "WITH claimed AS ({CLAIM}) \
                 SELECT claimed.*, {settings_cols}, c.status AS company_status \
                 FROM claimed \
                 LEFT JOIN cw_settings s ON s.tenant_id = claimed.tenant_id \
                 LEFT JOIN cw_companies c ON c.tenant_id = claimed.tenant_id AND c.id = claimed.cw_company_id"
            )
        });
        let row = sql::query(&deps.db, &CLAIM_WITH_CONTEXT, vec![push_id.into(), now.into()]).await?.into_iter().next();
        let Some(row) = row else { return Ok(None) };
        let p = push::Model::from_query_result(&row, "")?;
        let settings = match row.try_get::<Option<i64>>("", "s_tenant_id")? {
            Some(_) => Some(entity::cw_settings::Model::from_query_result(&row, "s_")?),
            None => None,
        };
        let company_status = row.try_get::<Option<String>>("", "company_status")?;
        return Ok(Some((p, Context { settings, company_status })));
    }
    let Some(p) = push::Model::find_by_statement(sql::stmt(&deps.db, CLAIM, vec![push_id.into(), now.into()])).one(&deps.db).await? else {
        return Ok(None);
    };
    let settings = entity::cw_settings::Entity::find_by_id(p.tenant_id).one(&deps.db).await?;
    let company_status = entity::cw_company::Entity::find_by_id((p.tenant_id, p.cw_company_id)).one(&deps.db).await?.map(|c| c.status);
    Ok(Some((p, Context { settings, company_status })))
}

/// The claim failed: if the push is merely not due yet (an early duplicate delivery), make sure a
/// job exists for when it is; otherwise another worker has it or it is final.
async fn requeue_if_not_due(deps: &EngineDeps, push_id: i64, now: DateTime<Utc>) -> Result<(), EngineError> {
    let Some(p) = push::Entity::find_by_id(push_id).one(&deps.db).await? else { return Ok(()) };
    let waiting = p.status == PushStatus::Pending.as_str() || p.status == PushStatus::FailedRetrying.as_str();
    if let (true, Some(at)) = (waiting, p.next_attempt_at)
        && at > now
    {
        deps.queue.enqueue_at(Job::Push(PushJob { push_id }), at).await?;
    }
    Ok(())
}

async fn run_attempt(deps: &EngineDeps, p: &push::Model, context: Context, calls: &mut Vec<AttemptRow>) -> Result<Outcome, EngineError> {
    let now = deps.clock.now();
    let Some(settings) = context.settings else {
        return Ok(dead_local(codes::CONSUMPTION_SYNC_DISABLED, "ConnectWise is not configured for this tenant", false));
    };
    if !settings.consumption_sync_enabled {
        return Ok(dead_local(codes::CONSUMPTION_SYNC_DISABLED, "consumption sync was switched off", false));
    }
    if settings.breaker_open {
        let reason = settings.breaker_reason.clone().unwrap_or_else(|| "ConnectWise rejected the credentials".into());
        return Ok(dead_local(codes::CW_AUTH_FAILED, &format!("not sent: the ConnectWise connection is broken ({reason})"), false));
    }
    if let Some(until) = settings.paused_until
        && until > now
    {
        return Ok(Outcome::Deferred { until });
    }
    let Some(quantity) = p.quantity else {
        return Ok(dead_local(engine_codes::INVALID_PUSH, "the push carries no quantity", true));
    };
    let client = match super::client_from_settings(deps, &settings) {
        Ok(c) => c,
        Err(ClientError::NotConfigured) => {
            return Ok(dead_local(engine_codes::CW_NOT_CONFIGURED, "no ConnectWise private key is configured", false));
        }
        Err(ClientError::Unusable(reason)) => return Ok(dead_local(engine_codes::CW_NOT_CONFIGURED, &reason, false)),
    };

    if let Some(outcome) = check_company(deps, p, &client, context.company_status, calls).await? {
        return Ok(outcome);
    }

    // Read the addition first: never write to an addition that is gone, cancelled or re-purposed.
    deps.rate.acquire(p.tenant_id).await;
    let started = deps.clock.now();
    let got = client.get_addition(p.cw_agreement_id, p.cw_addition_id).await;
    match got {
        Err(e) => {
            close_gate_on_429(deps, p.tenant_id, &e).await;
            let outcome = classify(&e, codes::ADDITION_NOT_FOUND);
            calls.push(attempt_row(p, STEP_GET_ADDITION, started, &CallInfo::of_error(&e), None, &outcome));
            return Ok(outcome);
        }
        Ok(resp) => {
            let call = CallInfo { http_status: Some(resp.status), request_id: resp.request_id.clone(), duration_ms: millis(resp.duration) };
            let today = deps.clock.now().date_naive();
            let problem = addition_problem(&resp.body, p.cw_product_id, today);
            let outcome =
                problem.map(|(code, message)| Outcome::Dead { code: code.to_string(), message, call: call.clone(), ticket: true });
            calls.push(attempt_row(
                p,
                STEP_GET_ADDITION,
                started,
                &call,
                resp.body.quantity_i64(),
                outcome.as_ref().unwrap_or(&Outcome::Succeeded(call.clone())),
            ));
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    deps.rate.acquire(p.tenant_id).await;
    let started = deps.clock.now();
    let outcome = match client.patch_addition_quantity(p.cw_agreement_id, p.cw_addition_id, quantity).await {
        Err(e) => {
            close_gate_on_429(deps, p.tenant_id, &e).await;
            let outcome = classify(&e, codes::ADDITION_NOT_FOUND);
            calls.push(attempt_row(p, STEP_PATCH, started, &CallInfo::of_error(&e), Some(quantity), &outcome));
            outcome
        }
        Ok(resp) => {
            let call = CallInfo { http_status: Some(resp.status), request_id: resp.request_id.clone(), duration_ms: millis(resp.duration) };
            let returned = resp.body.quantity_i64();
            let outcome = if returned == Some(quantity) {
                Outcome::Succeeded(call)
            } else {
                // ConnectWise accepted the call but holds another quantity: try again later.
                Outcome::Retry {
                    code: engine_codes::QUANTITY_MISMATCH.to_string(),
                    message: format!(
                        "sent quantity {quantity}, ConnectWise answered with {}",
                        resp.body.quantity.as_ref().map(|q| q.to_string()).unwrap_or_else(|| "no quantity".into())
                    ),
                    call,
                    retry_after: None,
                    rate_limited: false,
                }
            };
            calls.push(attempt_row(p, STEP_PATCH, started, &call_of(&outcome), Some(quantity), &outcome));
            outcome
        }
    };
    Ok(outcome)
}

/// A 429 pauses the whole tenant at once, before any bookkeeping: the tenant's other pushes are
/// waiting at the same gate and must not call until `Retry-After` has passed.
async fn close_gate_on_429(deps: &EngineDeps, tenant_id: i64, e: &connectwise::CwError) {
    if e.status == Some(429) {
        deps.rate.pause(tenant_id, e.retry_after.unwrap_or(deps.settings.push_backoff_min)).await;
    }
}

fn call_of(o: &Outcome) -> CallInfo {
    match o {
        Outcome::Succeeded(c) => c.clone(),
        Outcome::Dead { call, .. } | Outcome::AuthFailed { call, .. } | Outcome::Retry { call, .. } => call.clone(),
        Outcome::Deferred { .. } => CallInfo::default(),
    }
}

fn dead_local(code: &str, message: &str, ticket: bool) -> Outcome {
    Outcome::Dead { code: code.to_string(), message: message.to_string(), call: CallInfo::default(), ticket }
}

/// The company of the push must be Active: from the catalog cache (read with the claim), or asked
/// when not cached.
async fn check_company(
    deps: &EngineDeps,
    p: &push::Model,
    client: &CwClient,
    cached: Option<String>,
    calls: &mut Vec<AttemptRow>,
) -> Result<Option<Outcome>, EngineError> {
    let status = match cached {
        Some(status) => status,
        None => {
            deps.rate.acquire(p.tenant_id).await;
            let started = deps.clock.now();
            match client.get_company(p.cw_company_id).await {
                Err(e) => {
                    close_gate_on_429(deps, p.tenant_id, &e).await;
                    let outcome = classify(&e, codes::COMPANY_NOT_ACTIVE);
                    calls.push(attempt_row(p, STEP_GET_COMPANY, started, &CallInfo::of_error(&e), None, &outcome));
                    return Ok(Some(outcome));
                }
                Ok(resp) => {
                    let call = CallInfo {
                        http_status: Some(resp.status),
                        request_id: resp.request_id.clone(),
                        duration_ms: millis(resp.duration),
                    };
                    let status = if resp.body.is_deleted() {
                        "Deleted".to_string()
                    } else {
                        resp.body.status.as_ref().and_then(|s| s.name.clone()).unwrap_or_default()
                    };
                    let outcome = company_problem(&status, p.cw_company_id, &call);
                    calls.push(attempt_row(
                        p,
                        STEP_GET_COMPANY,
                        started,
                        &call,
                        None,
                        outcome.as_ref().unwrap_or(&Outcome::Succeeded(call.clone())),
                    ));
                    return Ok(outcome);
                }
            }
        }
    };
    Ok(company_problem(&status, p.cw_company_id, &CallInfo::default()))
}

fn company_problem(status: &str, company_id: i64, call: &CallInfo) -> Option<Outcome> {
    (!status.eq_ignore_ascii_case("Active")).then(|| Outcome::Dead {
        code: codes::COMPANY_NOT_ACTIVE.to_string(),
        message: format!("ConnectWise company {company_id} is not active (status {status:?})"),
        call: call.clone(),
        ticket: true,
    })
}

/// Why the addition must not be written to, if it must not.
fn addition_problem(a: &connectwise::Addition, product_id: Option<i64>, today: chrono::NaiveDate) -> Option<(&'static str, String)> {
    let id = a.id.map_or_else(|| "?".to_string(), |id| id.to_string());
    if let Some(cancelled) = a.cancelled_date.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        // A cancelled date in the future is a scheduled cancellation: the addition still bills.
        let in_past = cancelled.get(..10).and_then(|d| domain::parse_day(d).ok()).is_none_or(|d| d < today);
        if in_past {
            return Some((codes::ADDITION_CANCELLED, format!("addition {id} was cancelled on {cancelled}")));
        }
    }
    if let Some(expected) = product_id
        && a.product_id() != Some(expected)
    {
        return Some((
            codes::ADDITION_CHANGED,
            format!(
                "addition {id} now holds product {} instead of the mapped product {expected}",
                a.product_id().map(|p| p.to_string()).unwrap_or_else(|| "none".into())
            ),
        ));
    }
    if let Some(status) = a.agreement_status.as_deref()
        && !status.eq_ignore_ascii_case("Active")
    {
        return Some((codes::AGREEMENT_INACTIVE, format!("the agreement of addition {id} is {status}")));
    }
    None
}

/// A failed call → what to do with the push. `not_found_code` names what a 404 means at this step.
fn classify(e: &CwError, not_found_code: &str) -> Outcome {
    let call = CallInfo::of_error(e);
    let message = clip(&e.to_string(), MESSAGE_MAX);
    if e.is_auth_failure() {
        Outcome::AuthFailed { message, call }
    } else if e.is_not_found() {
        Outcome::Dead { code: not_found_code.to_string(), message, call, ticket: true }
    } else if e.is_retryable() {
        Outcome::Retry { code: e.code().to_string(), message, call, retry_after: e.retry_after(), rate_limited: e.is_rate_limited() }
    } else {
        Outcome::Dead { code: e.code().to_string(), message, call, ticket: true }
    }
}

/// One `push_attempts` row per HTTP call, written with the attempt's outcome.
fn attempt_row(
    p: &push::Model,
    step: &str,
    started_at: DateTime<Utc>,
    call: &CallInfo,
    quantity: Option<i64>,
    outcome: &Outcome,
) -> AttemptRow {
    let (result, code, message) = match outcome {
        Outcome::Succeeded(_) | Outcome::Deferred { .. } => ("OK", None, None),
        Outcome::Dead { code, message, call, .. } if call.http_status.is_some_and(|s| (200..300).contains(&s)) => {
            ("REJECTED", Some(code.clone()), Some(message.clone()))
        }
        Outcome::Dead { code, message, .. } => ("ERROR", Some(code.clone()), Some(message.clone())),
        Outcome::AuthFailed { message, .. } => ("ERROR", Some(codes::CW_AUTH_FAILED.to_string()), Some(message.clone())),
        Outcome::Retry { code, message, .. } => ("ERROR", Some(code.clone()), Some(message.clone())),
    };
    AttemptRow {
        push_id: p.id,
        tenant_id: p.tenant_id,
        attempt_no: p.attempts,
        step: step.to_string(),
        started_at,
        duration_ms: call.duration_ms,
        http_status: call.http_status.map(i32::from),
        request_id: call.request_id.clone(),
        quantity,
        outcome: result.to_string(),
        error_code: code,
        error_message: message,
    }
}

/// A `push_attempts` row not written yet.
#[derive(Debug)]
struct AttemptRow {
    push_id: i64,
    tenant_id: i64,
    attempt_no: i32,
    step: String,
    started_at: DateTime<Utc>,
    duration_ms: i64,
    http_status: Option<i32>,
    request_id: Option<String>,
    quantity: Option<i64>,
    outcome: String,
    error_code: Option<String>,
    error_message: Option<String>,
}

/// The attempt's rows as one set, in call order (so ids follow the calls).
fn attempt_rows(calls: Vec<AttemptRow>) -> sql::RowSet {
    use sql::Col;
    let n = calls.len();
    let (mut push_id, mut tenant_id, mut attempt_no, mut step) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut started_at, mut duration_ms, mut http_status, mut request_id) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut quantity, mut outcome, mut error_code, mut error_message) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for a in calls {
        push_id.push(a.push_id);
        tenant_id.push(a.tenant_id);
        attempt_no.push(a.attempt_no);
        step.push(a.step);
        started_at.push(a.started_at);
        duration_ms.push(a.duration_ms);
        http_status.push(a.http_status.map(i64::from));
        request_id.push(a.request_id);
        quantity.push(a.quantity);
        outcome.push(a.outcome);
        error_code.push(a.error_code);
        error_message.push(a.error_message);
    }
    sql::RowSet::new()
        .col("push_id", Col::I64(push_id))
        .col("tenant_id", Col::I64(tenant_id))
        .col("attempt_no", Col::I32(attempt_no))
        .col("step", Col::Text(step))
        .col("started_at", Col::Ts(started_at))
        .col("duration_ms", Col::I64(duration_ms))
        .col("http_status", Col::OptI64(http_status))
        .col("request_id", Col::OptText(request_id))
        .col("quantity", Col::OptI64(quantity))
        .col("outcome", Col::Text(outcome))
        .col("error_code", Col::OptText(error_code))
        .col("error_message", Col::OptText(error_message))
}

async fn write_attempts<C: ConnectionTrait>(c: &C, calls: Vec<AttemptRow>) -> Result<(), DbErr> {
    sql::insert_rows(c, "push_attempts", &attempt_rows(calls), &[], "").await?;
    Ok(())
}

/// PostgreSQL, the common case: a successful attempt's rows, the push's `SUCCEEDED`, the mapping's
/// `stale = FALSE` and the audit entry in one statement (atomic like the transaction it replaces).
/// Returns whether the push was still `RUNNING` (false: the result is discarded, rows still kept).
async fn succeed_in_one_statement(
    deps: &EngineDeps,
    p: &push::Model,
    call: &CallInfo,
    calls: Vec<AttemptRow>,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let rows = attempt_rows(calls);
    let mut values: Vec<Value> = vec![
        p.id.into(),
        now.into(),
        call.http_status.map(i32::from).into(),
        p.tenant_id.into(),
        Utc::now().into(),
        json!({"status": "RUNNING"}).to_string().into(),
        json!({"status": "SUCCEEDED"}).to_string().into(),
        detail(p, call, None).to_string().into(),
    ];
    let attempts = match rows.ctes(deps.db.get_database_backend(), "a", values.len() + 1).pop() {
        Some((cte, v)) => {
            values.extend(v);
            format!("{cte}, att AS (INSERT INTO push_attempts ({cols}) SELECT {cols} FROM a), ", cols = rows.column_list())
        }
        None => String::new(),
    };
    let kept = sql::query(
        &deps.db,
        &format!(
            "WITH {attempts}\
             up AS (UPDATE pushes SET status = 'SUCCEEDED', finished_at = $2, updated_at = $2, next_attempt_at = NULL, \
                      last_http_status = $3, last_error_code = NULL, last_error = NULL \
                    WHERE id = $1 AND status = 'RUNNING' RETURNING id, product_mapping_id), \
             pm AS (UPDATE product_mappings SET stale = FALSE WHERE id = (SELECT product_mapping_id FROM up) AND stale = TRUE), \
             au AS (INSERT INTO audit_log (tenant_id, at, actor, action, entity_type, entity_id, before, after, detail) \
                    SELECT $4, $5, '{actor}', 'push.succeeded', 'push', CAST(up.id AS TEXT), CAST($6 AS JSONB), CAST($7 AS JSONB), \
                           CAST($8 AS JSONB) FROM up) \
             SELECT COUNT(*) AS kept FROM up",
            actor = crate::audit::SYSTEM_ACTOR
        ),
        values,
    )
    .await?;
    Ok(kept.first().map(|r| r.try_get::<i64>("", "kept")).transpose()?.unwrap_or(0) == 1)
}

fn detail(p: &push::Model, call: &CallInfo, code: Option<&str>) -> serde_json::Value {
    json!({
        "attempt": p.attempts,
        "http_status": call.http_status,
        "quantity": p.quantity,
        "error_code": code,
        "request_id": call.request_id,
        "duration_ms": call.duration_ms,
    })
}

async fn audit_push<C: ConnectionTrait>(
    c: &C,
    p: &push::Model,
    action: &str,
    after: serde_json::Value,
    detail: serde_json::Value,
) -> Result<(), DbErr> {
    crate::audit::record(
        c,
        crate::audit::AuditRecord {
            tenant_id: p.tenant_id,
            actor: crate::audit::SYSTEM_ACTOR,
            action,
            entity_type: "push",
            entity_id: p.id.to_string(),
            before: Some(json!({"status": "RUNNING"})),
            after: Some(after),
            detail: Some(detail),
        },
    )
    .await
}

/// The conditional update that leaves `RUNNING`; `false` when someone else (an unmap, a
/// reconciliation) changed the row meanwhile — then our result is discarded.
async fn leave_running<C: ConnectionTrait>(c: &C, push_id: i64, set: &str, mut values: Vec<Value>) -> Result<bool, DbErr> {
    values.insert(0, push_id.into());
    let n = sql::exec(c, &format!("UPDATE pushes SET {set} WHERE id = $1 AND status = 'RUNNING'"), values).await?;
    Ok(n == 1)
}

async fn apply_outcome(deps: &EngineDeps, p: &push::Model, outcome: Outcome, calls: Vec<AttemptRow>) -> Result<(), EngineError> {
    let now = deps.clock.now();
    let policy = deps.settings.backoff_policy();
    // Exhausted budgets turn a retryable failure into a dead push with the last error's code.
    let outcome = match outcome {
        Outcome::Retry { code, message, call, retry_after, rate_limited } if i64::from(p.attempts) >= i64::from(p.max_attempts) => {
            if rate_limited {
                pause_tenant(deps, p.tenant_id, now, retry_after.unwrap_or(policy.min)).await?;
            }
            Outcome::Dead {
                code,
                message: format!("{message} (attempt {} of {}; giving up)", p.attempts, p.max_attempts),
                call,
                ticket: true,
            }
        }
        other => other,
    };

    if let Outcome::Succeeded(call) = &outcome
        && sql::is_pg(&deps.db)
    {
        if succeed_in_one_statement(deps, p, call, calls, now).await? {
            super::finish_run_if_done(&deps.db, p.sync_run_id, now).await?;
        } else {
            discarded(&deps.db, p, &outcome).await?;
        }
        return Ok(());
    }

    let txn = sql::begin_write(&deps.db).await?;
    write_attempts(&txn, calls).await?;
    let mut follow_up: Option<(Job, Option<DateTime<Utc>>)> = None;
    let mut final_state = false;
    let kept = match &outcome {
        Outcome::Succeeded(call) => {
            let kept = leave_running(
                &txn,
                p.id,
                "status = 'SUCCEEDED', finished_at = $2, updated_at = $2, next_attempt_at = NULL, last_http_status = $3, \
                 last_error_code = NULL, last_error = NULL",
                vec![now.into(), call.http_status.map(i32::from).into()],
            )
            .await?;
            if kept {
                if let Some(mapping_id) = p.product_mapping_id {
                    // The mapping's current value has reached ConnectWise: it is no longer stale.
                    sql::exec(&txn, "UPDATE product_mappings SET stale = FALSE WHERE id = $1 AND stale = TRUE", vec![mapping_id.into()])
                        .await?;
                }
                audit_push(&txn, p, "push.succeeded", json!({"status": "SUCCEEDED"}), detail(p, call, None)).await?;
                final_state = true;
            }
            kept
        }
        Outcome::Dead { code, message, call, ticket } => {
            let kept = mark_dead(&txn, p, code, message, call, now).await?;
            if kept {
                audit_push(&txn, p, "push.dead", json!({"status": "DEAD", "errorCode": code}), detail(p, call, Some(code))).await?;
                final_state = true;
                if *ticket {
                    follow_up = Some((Job::Ticket(TicketJob { push_id: p.id }), None));
                }
            }
            kept
        }
        Outcome::AuthFailed { message, call } => {
            let kept = mark_dead(&txn, p, codes::CW_AUTH_FAILED, message, call, now).await?;
            if kept {
                audit_push(
                    &txn,
                    p,
                    "push.dead",
                    json!({"status": "DEAD", "errorCode": codes::CW_AUTH_FAILED}),
                    detail(p, call, Some(codes::CW_AUTH_FAILED)),
                )
                .await?;
                open_breaker(&txn, p.tenant_id, message, now).await?;
                kill_run_for_auth(&txn, p, now).await?;
                final_state = true;
            }
            kept
        }
        Outcome::Retry { code, message, call, retry_after, rate_limited } => {
            let jitter = rand::random_range(0..=1000u32);
            let attempt = u32::try_from(p.attempts).unwrap_or(1);
            let delay = policy.delay(attempt, jitter, *retry_after);
            let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            let kept = leave_running(
                &txn,
                p.id,
                "status = 'FAILED_RETRYING', next_attempt_at = $2, updated_at = $3, last_error_code = $4, last_error = $5, \
                 last_http_status = $6",
                vec![next.into(), now.into(), code.clone().into(), message.clone().into(), call.http_status.map(i32::from).into()],
            )
            .await?;
            if kept {
                if *rate_limited {
                    // Everyone of this tenant waits: ConnectWise asked us to slow down.
                    pause_tenant_in(&txn, p.tenant_id, now, retry_after.unwrap_or(delay)).await?;
                }
                let mut d = detail(p, call, Some(code));
                d["next_attempt_at"] = json!(next.to_rfc3339());
                audit_push(&txn, p, "push.retry_scheduled", json!({"status": "FAILED_RETRYING"}), d).await?;
                follow_up = Some((Job::Push(PushJob { push_id: p.id }), Some(next)));
            }
            kept
        }
        Outcome::Deferred { until } => {
            // Not our attempt's fault: give the attempt back.
            let kept = leave_running(
                &txn,
                p.id,
                "status = 'FAILED_RETRYING', attempts = attempts - 1, next_attempt_at = $2, updated_at = $3",
                vec![(*until).into(), now.into()],
            )
            .await?;
            if kept {
                audit_push(
                    &txn,
                    p,
                    "push.deferred",
                    json!({"status": "FAILED_RETRYING"}),
                    json!({"attempt": p.attempts - 1, "reason": "tenant paused after a 429", "next_attempt_at": until.to_rfc3339()}),
                )
                .await?;
                follow_up = Some((Job::Push(PushJob { push_id: p.id }), Some(*until)));
            }
            kept
        }
    };
    if !kept {
        discarded(&txn, p, &outcome).await?;
    }
    txn.commit().await?;

    if let Some((job, at)) = follow_up {
        match at {
            Some(at) => deps.queue.enqueue_at(job, at).await?,
            None => deps.queue.enqueue(job).await?,
        }
    }
    if final_state {
        super::finish_run_if_done(&deps.db, p.sync_run_id, now).await?;
    }
    Ok(())
}

/// A concurrent unmap or reconciliation moved the row: keep its state, note what we did.
async fn discarded<C: ConnectionTrait>(c: &C, p: &push::Model, outcome: &Outcome) -> Result<(), DbErr> {
    let call = call_of(outcome);
    crate::audit::record(
        c,
        crate::audit::AuditRecord {
            tenant_id: p.tenant_id,
            actor: crate::audit::SYSTEM_ACTOR,
            action: "push.result_discarded",
            entity_type: "push",
            entity_id: p.id.to_string(),
            before: None,
            after: None,
            detail: Some(json!({"outcome": format!("{outcome:?}").chars().take(500).collect::<String>(), "http_status": call.http_status, "request_id": call.request_id})),
        },
    )
    .await?;
    tracing::info!(push_id = p.id, "push changed state during its attempt; result discarded");
    Ok(())
}

async fn mark_dead<C: ConnectionTrait>(
    c: &C,
    p: &push::Model,
    code: &str,
    message: &str,
    call: &CallInfo,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    leave_running(
        c,
        p.id,
        "status = 'DEAD', finished_at = $2, updated_at = $2, next_attempt_at = NULL, last_error_code = $3, last_error = $4, \
         last_http_status = $5",
        vec![now.into(), code.into(), clip(message, MESSAGE_MAX).into(), call.http_status.map(i32::from).into()],
    )
    .await
}

/// Pause the tenant: at the call gate (every process, immediately: calls already claimed wait too)
/// and in `cw_settings.paused_until` (claims wait, the dashboard shows it).
async fn pause_tenant(deps: &EngineDeps, tenant_id: i64, now: DateTime<Utc>, wait: Duration) -> Result<(), DbErr> {
    deps.rate.pause(tenant_id, wait).await;
    pause_tenant_in(&deps.db, tenant_id, now, wait).await
}

/// `paused_until = now + wait` for the tenant, never shortening a longer pause.
async fn pause_tenant_in<C: ConnectionTrait>(c: &C, tenant_id: i64, now: DateTime<Utc>, wait: Duration) -> Result<(), DbErr> {
    let until = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    sql::exec(
        c,
        "UPDATE cw_settings SET paused_until = $2 WHERE tenant_id = $1 AND (paused_until IS NULL OR paused_until < $2)",
        vec![tenant_id.into(), until.into()],
    )
    .await?;
    Ok(())
}

/// Trip the tenant's breaker (once) and audit it.
async fn open_breaker<C: ConnectionTrait>(c: &C, tenant_id: i64, reason: &str, now: DateTime<Utc>) -> Result<(), DbErr> {
    let reason = clip(reason, MESSAGE_MAX);
    let n = sql::exec(
        c,
        "UPDATE cw_settings SET breaker_open = TRUE, breaker_reason = $2, breaker_opened_at = $3, updated_at = $3 \
         WHERE tenant_id = $1 AND breaker_open = FALSE",
        vec![tenant_id.into(), reason.clone().into(), now.into()],
    )
    .await?;
    if n == 1 {
        crate::audit::record(
            c,
            crate::audit::AuditRecord {
                tenant_id,
                actor: crate::audit::SYSTEM_ACTOR,
                action: "cw_settings.breaker_opened",
                entity_type: "cw_settings",
                entity_id: tenant_id.to_string(),
                before: Some(json!({"breakerOpen": false})),
                after: Some(json!({"breakerOpen": true})),
                detail: Some(json!({"reason": reason})),
            },
        )
        .await?;
    }
    Ok(())
}

/// After a 401/403 the run's other non-final pushes go `DEAD` `CW_AUTH_FAILED` without calls and
/// without tickets (they would fail the same way).
async fn kill_run_for_auth<C: ConnectionTrait>(c: &C, p: &push::Model, now: DateTime<Utc>) -> Result<(), DbErr> {
    let message = "not sent: ConnectWise rejected the credentials on another push of this run";
    let rows = sql::query(
        c,
        &format!(
            "UPDATE pushes SET status = 'DEAD', last_error_code = $3, last_error = $4, finished_at = $5, updated_at = $5, \
             next_attempt_at = NULL \
             WHERE sync_run_id = $1 AND id <> $2 AND status IN {nf} RETURNING id",
            nf = sql::NON_FINAL_SQL
        ),
        vec![p.sync_run_id.into(), p.id.into(), codes::CW_AUTH_FAILED.into(), message.into(), now.into()],
    )
    .await?;
    let mut audits = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get("", "id")?;
        audits.push(AuditRow {
            tenant_id: p.tenant_id,
            actor: crate::audit::SYSTEM_ACTOR.to_string(),
            action: "push.dead",
            entity_type: "push",
            entity_id: id.to_string(),
            before: None,
            after: Some(json!({"status": "DEAD", "errorCode": codes::CW_AUTH_FAILED})),
            detail: Some(json!({"error_code": codes::CW_AUTH_FAILED, "causedByPush": p.id})),
        });
    }
    sql::audit_many(c, now, audits).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addition(v: serde_json::Value) -> connectwise::Addition {
        serde_json::from_value(v).expect("addition")
    }

    #[test]
    fn addition_checks() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 2).expect("date");
        let ok = addition(json!({"id": 1, "product": {"id": 7}, "agreementStatus": "Active"}));
        assert!(addition_problem(&ok, Some(7), today).is_none());
        let future = addition(json!({"id": 1, "product": {"id": 7}, "cancelledDate": "2026-04-01T00:00:00Z"}));
        assert!(addition_problem(&future, Some(7), today).is_none());
        let past = addition(json!({"id": 1, "product": {"id": 7}, "cancelledDate": "2026-03-01T00:00:00Z"}));
        assert_eq!(addition_problem(&past, Some(7), today).map(|p| p.0), Some(codes::ADDITION_CANCELLED));
        let changed = addition(json!({"id": 1, "product": {"id": 8}}));
        assert_eq!(addition_problem(&changed, Some(7), today).map(|p| p.0), Some(codes::ADDITION_CHANGED));
        let inactive = addition(json!({"id": 1, "product": {"id": 7}, "agreementStatus": "Expired"}));
        assert_eq!(addition_problem(&inactive, Some(7), today).map(|p| p.0), Some(codes::AGREEMENT_INACTIVE));
    }
}
