//! One attempt of one push: claim the row, read the addition, PATCH the quantity inside the fence,
//! and hand the verdict to the ledger. The push row decides what happens next; the job itself
//! returns `Ok` for business failures so that queue-level retries never multiply ours.
//!
//! An attempt never holds its claim while waiting: when the tenant is paused (a 429's
//! `Retry-After`) or its request budget is spent for longer than [`GATE_MAX_WAIT`], the claim is
//! given back with its attempt ([`Verdict::Wait`]) and the push is scheduled for when the gate
//! opens. So a `RUNNING` push is always calling ConnectWise, and reconciliation — which only
//! reclaims attempts older than the longest possible attempt — never takes a live one.
use std::time::Duration;

use chrono::{DateTime, Utc};
use connectwise::{CwClient, CwError, CwErrorKind, CwResponse};
use domain::{AdditionFacts, CancelReason, PushStatus, codes};
use entity::push;
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::json;

use super::{ClientError, EngineDeps, EngineError, codes as engine_codes, sql};
use crate::{
    jobs::{Job, PushJob, TicketJob},
    ledger::{
        self,
        push::{Attempt, CallRecord, ClaimContext, FenceCheck, Verdict},
    },
};

/// Longest an attempt waits at the tenant's gate while holding its claim; a longer wait gives the
/// claim back.
pub const GATE_MAX_WAIT: Duration = Duration::from_secs(1);

/// How long after giving up on a PATCH (timeout, broken connection) the attempt waits before it
/// reads the addition to learn whether the PATCH was applied.
const VERIFY_GRACE: Duration = Duration::from_millis(500);

/// Step names of `push_attempts.step`.
const STEP_GET_COMPANY: &str = "GET_COMPANY";
const STEP_GET_ADDITION: &str = "GET_ADDITION";
const STEP_PATCH: &str = "PATCH_QUANTITY";
const STEP_VERIFY: &str = "VERIFY_ADDITION";

/// The longest an attempt can take once claimed: its calls (company, addition, PATCH, verification)
/// each bounded by the ConnectWise timeout, and its waits at the gate by [`GATE_MAX_WAIT`].
/// Reconciliation never reclaims a `RUNNING` push younger than this.
pub fn max_attempt_duration(cw_timeout: Duration) -> Duration {
    (cw_timeout + GATE_MAX_WAIT) * 4 + VERIFY_GRACE + Duration::from_secs(5)
}

/// Run one attempt of push `push_id` (job `Push`).
pub async fn attempt_push(deps: &EngineDeps, push_id: i64) -> Result<(), EngineError> {
    let now = deps.clock.now();
    let Some((p, context)) = ledger::push::claim(&deps.db, push_id, now).await? else {
        return requeue_if_not_due(deps, push_id, now).await;
    };
    let mut calls = Vec::new();
    let attempt = match prepare(deps, &p, &context, &mut calls).await? {
        Prepared::Decided(attempt) => attempt,
        Prepared::Send { client, held, drift } => return send(deps, &p, &client, held, drift, context.last_set_quantity, calls).await,
    };
    let txn = sql::begin_write(&deps.db).await?;
    let follow = record(deps, &txn, &p, &attempt).await?;
    txn.commit().await?;
    follow.run(deps, &p).await
}

/// The claim failed: if the push is merely not due yet (an early duplicate delivery), make sure a
/// job exists for when it is; otherwise another worker has it or it is final.
async fn requeue_if_not_due(deps: &EngineDeps, push_id: i64, now: DateTime<Utc>) -> Result<(), EngineError> {
    use sea_orm::EntityTrait;
    let Some(p) = push::Entity::find_by_id(push_id).one(&deps.db).await? else { return Ok(()) };
    let waiting = PushStatus::sources_of(domain::PushEvent::Claim).iter().any(|s| s.as_str() == p.status);
    if let (true, Some(at)) = (waiting, p.next_attempt_at)
        && at > now
    {
        deps.queue.enqueue_after(Job::Push(PushJob { push_id }), deps.clock.until(at)).await?;
    }
    Ok(())
}

/// What the attempt decided before sending anything.
enum Prepared {
    /// No PATCH: the verdict is known.
    Decided(Attempt),
    /// The addition is fine and holds another quantity: send.
    Send { client: CwClient, held: Option<i64>, drift: Option<i64> },
}

fn decided(verdict: Verdict, http_status: Option<u16>, calls: &mut Vec<CallRecord>) -> Prepared {
    Prepared::Decided(Attempt {
        verdict,
        http_status,
        held_quantity: None,
        drift_from_quantity: None,
        last_set_quantity: None,
        calls: std::mem::take(calls),
    })
}

fn withdrawn(reason: CancelReason) -> Verdict {
    Verdict::Cancelled { reason, message: reason.message().into() }
}

fn dead(code: &str, message: impl Into<String>, ticket: bool) -> Verdict {
    Verdict::Dead { code: code.to_string(), message: message.into(), ticket }
}

/// Everything up to the PATCH: local checks, the gate, the company, the addition.
async fn prepare(deps: &EngineDeps, p: &push::Model, context: &ClaimContext, calls: &mut Vec<CallRecord>) -> Result<Prepared, EngineError> {
    let now = deps.clock.now();
    if let Some(reason) = context.blocked {
        // Only the newest push of a mapped addition may write it.
        return Ok(decided(withdrawn(reason), None, calls));
    }
    let Some(settings) = &context.settings else {
        return Ok(decided(dead(codes::CONSUMPTION_SYNC_DISABLED, "ConnectWise is not configured for this tenant", false), None, calls));
    };
    if !settings.consumption_sync_enabled {
        return Ok(decided(dead(codes::CONSUMPTION_SYNC_DISABLED, "consumption sync was switched off", false), None, calls));
    }
    if settings.breaker_open {
        let reason = settings.breaker_reason.clone().unwrap_or_else(|| "ConnectWise rejected the credentials".into());
        let message = format!("not sent: the ConnectWise connection is broken ({reason})");
        return Ok(decided(dead(codes::CW_AUTH_FAILED, message, false), None, calls));
    }
    if let Some(until) = settings.paused_until
        && until > now
    {
        return Ok(decided(Verdict::Wait { until, reason: "the tenant is paused after a 429".into() }, None, calls));
    }
    if p.quantity.is_none() {
        return Ok(decided(dead(engine_codes::INVALID_PUSH, "the push carries no quantity", true), None, calls));
    }
    let client = match super::client_from_settings(deps, settings) {
        Ok(c) => c,
        Err(ClientError::NotConfigured) => {
            return Ok(decided(dead(engine_codes::CW_NOT_CONFIGURED, "no ConnectWise private key is configured", false), None, calls));
        }
        Err(ClientError::Unusable(reason)) => return Ok(decided(dead(engine_codes::CW_NOT_CONFIGURED, reason, false), None, calls)),
    };

    // The company must be Active: from the catalog cache, or asked when not cached.
    let company_status = match &context.company_status {
        Some(status) => status.clone(),
        None => {
            if let Some(wait) = gate(deps, p).await {
                return Ok(decided(wait, None, calls));
            }
            let started = deps.clock.now();
            match client.get_company(p.cw_company_id).await {
                Err(e) => {
                    let verdict = classify(deps, p, &e, codes::COMPANY_NOT_ACTIVE).await;
                    calls.push(call_record(STEP_GET_COMPANY, started, &e, None, &verdict));
                    return Ok(decided(verdict, e.status, calls));
                }
                Ok(resp) => {
                    let status = if resp.body.is_deleted() {
                        "Deleted".to_string()
                    } else {
                        resp.body.status.as_ref().and_then(|s| s.name.clone()).unwrap_or_default()
                    };
                    let verdict = company_verdict(&status, p.cw_company_id);
                    calls.push(call_record(STEP_GET_COMPANY, started, &resp, None, verdict.as_ref().unwrap_or(&Verdict::Succeeded)));
                    if let Some(verdict) = verdict {
                        return Ok(decided(verdict, Some(resp.status), calls));
                    }
                    status
                }
            }
        }
    };
    if let Some(verdict) = company_verdict(&company_status, p.cw_company_id) {
        return Ok(decided(verdict, None, calls));
    }

    // Read the addition first: never write to an addition that is gone, cancelled or re-purposed;
    // and whether it needs writing at all is what ConnectWise holds, not our own history.
    if let Some(wait) = gate(deps, p).await {
        return Ok(decided(wait, None, calls));
    }
    let started = deps.clock.now();
    let resp = match client.get_addition(p.cw_agreement_id, p.cw_addition_id).await {
        Err(e) => {
            let verdict = classify(deps, p, &e, codes::ADDITION_NOT_FOUND).await;
            calls.push(call_record(STEP_GET_ADDITION, started, &e, None, &verdict));
            return Ok(decided(verdict, e.status, calls));
        }
        Ok(resp) => resp,
    };
    let held = resp.body.quantity_i64();
    let problem = domain::check_addition_before_push(
        &addition_facts(&resp.body, p.cw_addition_id),
        resp.body.agreement_status.as_deref(),
        p.cw_product_id,
        deps.clock.today(),
    )
    .err()
    .map(|v| dead(v.code, v.message, true));
    let verdict = problem.clone().unwrap_or(Verdict::Succeeded);
    calls.push(call_record(STEP_GET_ADDITION, started, &resp, held, &verdict));
    if let Some(verdict) = problem {
        return Ok(decided(verdict, Some(resp.status), calls));
    }
    // Somebody changed the addition by hand since we last set it.
    let drift = match (context.last_set_quantity, held) {
        (Some(last), Some(h)) if last != h => Some(h),
        _ => None,
    };
    if held == p.quantity {
        return Ok(Prepared::Decided(Attempt {
            verdict: Verdict::Unchanged,
            http_status: Some(resp.status),
            held_quantity: held,
            drift_from_quantity: drift,
            last_set_quantity: context.last_set_quantity,
            calls: std::mem::take(calls),
        }));
    }
    Ok(Prepared::Send { client, held, drift })
}

/// The PATCH, inside the fence: the push row is held from the last check until the outcome is
/// written, so an unmap, a delete or a newer run waits for it instead of racing it.
async fn send(
    deps: &EngineDeps,
    p: &push::Model,
    client: &CwClient,
    held: Option<i64>,
    drift: Option<i64>,
    last_set: Option<i64>,
    mut calls: Vec<CallRecord>,
) -> Result<(), EngineError> {
    let quantity = p.quantity.unwrap_or_default();
    let observed = |verdict: Verdict, http_status: Option<u16>, calls: Vec<CallRecord>| Attempt {
        verdict,
        http_status,
        held_quantity: held,
        drift_from_quantity: drift,
        last_set_quantity: last_set,
        calls,
    };
    let txn = sql::begin_write(&deps.db).await?;
    match ledger::push::fence(&txn, p).await? {
        FenceCheck::Send => {}
        FenceCheck::NotOurs => {
            // Unmapped, superseded or reconciled while we read the addition: send nothing.
            ledger::push::discard(&txn, deps.clock.now(), p, &calls).await?;
            txn.commit().await?;
            return Ok(());
        }
        FenceCheck::Withdraw(reason) => {
            let attempt = observed(withdrawn(reason), None, calls);
            let follow = record(deps, &txn, p, &attempt).await?;
            txn.commit().await?;
            return follow.run(deps, p).await;
        }
    }
    // The gate is the last thing before the call (a 429 that arrived while we waited for the row
    // still holds us back); it waits at most GATE_MAX_WAIT while the row is held.
    if let Some(wait) = gate(deps, p).await {
        txn.rollback().await?;
        return settle_alone(deps, p, observed(wait, None, calls)).await;
    }
    let timeout = fence_timeout(deps);
    let started = deps.clock.now();
    let sent = with_timeout(timeout, client.patch_addition_quantity(p.cw_agreement_id, p.cw_addition_id, quantity)).await;
    let (verdict, http_status) = match sent {
        Ok(resp) => {
            let returned = resp.body.quantity_i64();
            let verdict = if returned == Some(quantity) {
                Verdict::Succeeded
            } else {
                // ConnectWise accepted the call but holds another quantity: try again later.
                let answer = resp.body.quantity.as_ref().map(|q| q.to_string()).unwrap_or_else(|| "no quantity".into());
                retry_verdict(
                    deps,
                    p,
                    engine_codes::QUANTITY_MISMATCH,
                    format!("sent quantity {quantity}, ConnectWise answered with {answer}"),
                    None,
                )
            };
            calls.push(call_record(STEP_PATCH, started, &resp, Some(quantity), &verdict));
            (verdict, Some(resp.status))
        }
        Err(e) if sent_maybe_applied(&e) => {
            // An answer we could not read (or none): ConnectWise may have applied it. Ask; if it
            // did not, the outcome is unknown rather than wrong, so the push tries again.
            let failed = retry_verdict(deps, p, e.code(), e.to_string(), e.retry_after());
            calls.push(call_record(STEP_PATCH, started, &e, Some(quantity), &failed));
            if !matches!(e.kind, CwErrorKind::Decode(_)) {
                // We hung up on a request ConnectWise may still be working on: give it a moment to
                // finish or drop it, so that the read sees its outcome and never overlaps it.
                tokio::time::sleep(VERIFY_GRACE).await;
            }
            // The gate may wait a little for a pause to end: the read starts after it.
            let gate_closed = gate(deps, p).await.is_some();
            let verified_at = deps.clock.now();
            let read = if gate_closed {
                // The tenant's gate closed meanwhile: the next attempt's read will tell.
                Err(CwError::new(CwErrorKind::Connect("not verified: the tenant's ConnectWise gate is closed".into()), Duration::ZERO))
            } else {
                with_timeout(timeout, client.get_addition(p.cw_agreement_id, p.cw_addition_id)).await
            };
            match read {
                Ok(resp) if resp.body.quantity_i64() == Some(quantity) => {
                    calls.push(call_record(STEP_VERIFY, verified_at, &resp, Some(quantity), &Verdict::Succeeded));
                    (Verdict::Succeeded, Some(resp.status))
                }
                Ok(resp) => {
                    calls.push(call_record(STEP_VERIFY, verified_at, &resp, resp.body.quantity_i64(), &failed));
                    (failed, e.status)
                }
                Err(v) if v.status == Some(429) => {
                    // The verifying read was told to slow down: the tenant's gate closes as for any
                    // 429, and the push waits at least its Retry-After.
                    let verdict = classify(deps, p, &v, codes::ADDITION_NOT_FOUND).await;
                    calls.push(call_record(STEP_VERIFY, verified_at, &v, None, &verdict));
                    (verdict, v.status)
                }
                Err(v) => {
                    calls.push(call_record(STEP_VERIFY, verified_at, &v, None, &failed));
                    (failed, e.status)
                }
            }
        }
        Err(e) => {
            let verdict = classify(deps, p, &e, codes::ADDITION_NOT_FOUND).await;
            calls.push(call_record(STEP_PATCH, started, &e, Some(quantity), &verdict));
            (verdict, e.status)
        }
    };
    let follow = record(deps, &txn, p, &observed(verdict, http_status, calls)).await?;
    txn.commit().await?;
    follow.run(deps, p).await
}

/// Whether a failed PATCH may still have been applied: no answer in time, a broken connection, or a
/// 2xx whose body could not be read.
fn sent_maybe_applied(e: &CwError) -> bool {
    match &e.kind {
        CwErrorKind::Timeout | CwErrorKind::Connect(_) => true,
        CwErrorKind::Decode(_) => e.status.is_some_and(|s| (200..300).contains(&s)),
        _ => false,
    }
}

/// How long a call inside the fence may take. On SQLite the fence holds the database's single write
/// lock, which other writers wait for at most their busy timeout (10 s): stay below it.
fn fence_timeout(deps: &EngineDeps) -> Duration {
    if sql::is_pg(&deps.db) { deps.settings.cw_timeout } else { deps.settings.cw_timeout.min(Duration::from_secs(8)) }
}

async fn with_timeout<T>(limit: Duration, call: impl Future<Output = Result<T, CwError>>) -> Result<T, CwError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(CwError::new(CwErrorKind::Timeout, limit)),
    }
}

/// Pass the tenant's gate (pause and request budget), or the verdict to give the claim back.
async fn gate(deps: &EngineDeps, p: &push::Model) -> Option<Verdict> {
    match deps.rate.acquire_within(p.tenant_id, GATE_MAX_WAIT).await {
        Ok(()) => None,
        Err(wait) => {
            let until = deps.clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            Some(Verdict::Wait { until, reason: "the tenant's ConnectWise gate is closed (paused or request budget spent)".into() })
        }
    }
}

/// A verdict decided outside the fence, in its own transaction.
async fn settle_alone(deps: &EngineDeps, p: &push::Model, attempt: Attempt) -> Result<(), EngineError> {
    let txn = sql::begin_write(&deps.db).await?;
    let follow = record(deps, &txn, p, &attempt).await?;
    txn.commit().await?;
    follow.run(deps, p).await
}

/// What to do after the outcome is committed.
#[derive(Default)]
struct FollowUp {
    job: Option<(Job, Option<DateTime<Utc>>)>,
    final_state: bool,
}

impl FollowUp {
    async fn run(self, deps: &EngineDeps, p: &push::Model) -> Result<(), EngineError> {
        if let Some((job, at)) = self.job {
            match at {
                Some(at) => deps.queue.enqueue_after(job, deps.clock.until(at)).await?,
                None => deps.queue.enqueue(job).await?,
            }
        }
        if self.final_state {
            ledger::run::finish_if_done(&deps.db, p.sync_run_id, deps.clock.now()).await?;
        }
        Ok(())
    }
}

/// Hand the attempt to the ledger, with its consequences for the tenant (a 429 pauses it, a 401/403
/// opens its breaker and ends the run's other pushes), inside the caller's transaction.
async fn record<C: ConnectionTrait>(deps: &EngineDeps, c: &C, p: &push::Model, attempt: &Attempt) -> Result<FollowUp, DbErr> {
    let now = deps.clock.now();
    let settled = ledger::push::settle(c, now, p, attempt).await?;
    if !settled.kept {
        return Ok(FollowUp::default());
    }
    let mut follow = FollowUp { job: None, final_state: settled.to.is_final() };
    match &attempt.verdict {
        Verdict::Dead { code, message, ticket } => {
            if code == codes::CW_AUTH_FAILED && attempt.http_status.is_some() {
                open_breaker(c, p.tenant_id, message, now).await?;
                let others = "not sent: ConnectWise rejected the credentials on another push of this run";
                ledger::push::die_without_calls(c, now, p, codes::CW_AUTH_FAILED, others).await?;
            }
            if *ticket {
                follow.job = Some((Job::Ticket(TicketJob { push_id: p.id }), None));
            }
        }
        Verdict::Retry { next_attempt_at, .. } => follow.job = Some((Job::Push(PushJob { push_id: p.id }), Some(*next_attempt_at))),
        Verdict::Wait { until, .. } => follow.job = Some((Job::Push(PushJob { push_id: p.id }), Some(*until))),
        Verdict::Succeeded | Verdict::Unchanged | Verdict::Cancelled { .. } => {}
    }
    if attempt.http_status == Some(429) {
        // Everyone of this tenant waits: ConnectWise asked us to slow down (the gate was closed at
        // once when the answer arrived; this is the record the dashboard shows and claims respect).
        let until = match &attempt.verdict {
            Verdict::Retry { next_attempt_at, .. } => *next_attempt_at,
            _ => now + chrono::Duration::from_std(deps.settings.push_backoff_min).unwrap_or_default(),
        };
        pause_tenant_in(c, p.tenant_id, until).await?;
    }
    Ok(follow)
}

/// The retry verdict for a transient failure after attempt `p.attempts`: backoff with jitter (a
/// longer `Retry-After` wins), or `DEAD` with the same error when the budget is spent.
fn retry_verdict(deps: &EngineDeps, p: &push::Model, code: &str, message: String, retry_after: Option<Duration>) -> Verdict {
    if p.attempts >= p.max_attempts {
        return dead(code, format!("{message} (attempt {} of {}; giving up)", p.attempts, p.max_attempts), true);
    }
    let policy = deps.settings.backoff_policy();
    let attempt = u32::try_from(p.attempts).unwrap_or(1);
    let delay = policy.delay(attempt, rand::random_range(0..=1000u32), retry_after);
    let next_attempt_at = deps.clock.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    Verdict::Retry { code: code.to_string(), message, next_attempt_at }
}

/// A failed call → the verdict. `not_found_code` names what a 404 means at this step. A 429 closes
/// the tenant's gate at once, before any bookkeeping: its other pushes wait at the same gate.
async fn classify(deps: &EngineDeps, p: &push::Model, e: &CwError, not_found_code: &str) -> Verdict {
    let message = e.to_string();
    if e.status == Some(429) {
        deps.rate.pause(p.tenant_id, e.retry_after.unwrap_or(deps.settings.push_backoff_min)).await;
    }
    if e.is_auth_failure() {
        dead(codes::CW_AUTH_FAILED, message, false)
    } else if e.is_not_found() {
        dead(not_found_code, message, true)
    } else if e.is_retryable() {
        retry_verdict(deps, p, e.code(), message, e.retry_after())
    } else {
        dead(e.code(), message, true)
    }
}

fn company_verdict(status: &str, company_id: i64) -> Option<Verdict> {
    (!status.eq_ignore_ascii_case("Active"))
        .then(|| dead(codes::COMPANY_NOT_ACTIVE, format!("ConnectWise company {company_id} is not active (status {status:?})"), true))
}

/// The live addition as the domain rules see it. A cancelled date that cannot be read counts as a
/// past one: never write to an addition whose state is unclear.
fn addition_facts(a: &connectwise::Addition, id: i64) -> AdditionFacts {
    let cancelled_date = a
        .cancelled_date
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.get(..10).and_then(|d| domain::parse_day(d).ok()).unwrap_or(chrono::NaiveDate::MIN));
    AdditionFacts {
        id: a.id.unwrap_or(id),
        sequence_number: 0,
        fractional_sequence_number: None,
        product_id: a.product_id(),
        product_identifier: None,
        cancelled_date,
    }
}

/// What one call answered, for its `push_attempts` row.
struct Answer {
    http_status: Option<u16>,
    request_id: Option<String>,
    duration: Duration,
    /// The call itself failed: its code and message.
    error: Option<(String, String)>,
}

impl<T> From<&CwResponse<T>> for Answer {
    fn from(r: &CwResponse<T>) -> Self {
        Answer { http_status: Some(r.status), request_id: r.request_id.clone(), duration: r.duration, error: None }
    }
}

impl From<&CwError> for Answer {
    fn from(e: &CwError) -> Self {
        Answer {
            http_status: e.status,
            request_id: e.request_id.clone(),
            duration: e.duration,
            error: Some((e.code().to_string(), e.to_string())),
        }
    }
}

/// One `push_attempts` row.
fn call_record(
    step: &'static str,
    started_at: DateTime<Utc>,
    answer: impl Into<Answer>,
    quantity: Option<i64>,
    verdict: &Verdict,
) -> CallRecord {
    let Answer { http_status, request_id, duration, error } = answer.into();
    let (outcome, error_code, error_message) = match (error, verdict) {
        (Some((code, message)), _) => ("ERROR", Some(code), Some(message)),
        (None, Verdict::Dead { code, message, .. } | Verdict::Retry { code, message, .. }) => {
            ("REJECTED", Some(code.clone()), Some(message.clone()))
        }
        (None, _) => ("OK", None, None),
    };
    CallRecord {
        step,
        started_at,
        duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
        http_status,
        request_id,
        quantity,
        outcome,
        error_code,
        error_message,
    }
}

/// `paused_until` for the tenant (what the dashboard shows and claims respect), never shortening a
/// longer pause.
async fn pause_tenant_in<C: ConnectionTrait>(c: &C, tenant_id: i64, until: DateTime<Utc>) -> Result<(), DbErr> {
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
    let reason = connectwise::truncate_chars(reason, 1000).to_string();
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
                at: now,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addition(v: serde_json::Value) -> connectwise::Addition {
        serde_json::from_value(v).expect("addition")
    }

    #[test]
    fn live_addition_facts() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 2).expect("date");
        let check = |v: serde_json::Value| {
            let a = addition(v);
            domain::check_addition_before_push(&addition_facts(&a, 1), a.agreement_status.as_deref(), Some(7), today).err().map(|e| e.code)
        };
        assert_eq!(check(json!({"id": 1, "product": {"id": 7}, "agreementStatus": "Active"})), None);
        assert_eq!(check(json!({"id": 1, "product": {"id": 7}, "cancelledDate": "2026-04-01T00:00:00Z"})), None, "scheduled cancellation");
        assert_eq!(check(json!({"id": 1, "product": {"id": 7}, "cancelledDate": "2026-03-01T00:00:00Z"})), Some(codes::ADDITION_CANCELLED));
        assert_eq!(check(json!({"id": 1, "product": {"id": 7}, "cancelledDate": "soon"})), Some(codes::ADDITION_CANCELLED), "unreadable");
        assert_eq!(check(json!({"id": 1, "product": {"id": 8}})), Some(codes::ADDITION_CHANGED));
        assert_eq!(check(json!({"id": 1, "product": {"id": 7}, "agreementStatus": "Expired"})), Some(codes::AGREEMENT_INACTIVE));
    }

    #[test]
    fn an_unreadable_success_or_a_timeout_may_have_been_applied() {
        let mut e = CwError::new(CwErrorKind::Decode("x".into()), Duration::ZERO);
        e.status = Some(200);
        assert!(sent_maybe_applied(&e));
        e.status = None;
        assert!(!sent_maybe_applied(&e), "an encoding failure of ours sent nothing");
        assert!(sent_maybe_applied(&CwError::new(CwErrorKind::Timeout, Duration::ZERO)));
        let mut http = CwError::new(CwErrorKind::Http { code: None, message: "x".into() }, Duration::ZERO);
        http.status = Some(500);
        assert!(!sent_maybe_applied(&http));
    }

    #[test]
    fn an_attempt_is_bounded() {
        assert_eq!(max_attempt_duration(Duration::from_secs(30)), Duration::from_millis(129_500));
    }
}
