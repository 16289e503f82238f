//! At most one ConnectWise service ticket per dead push (job `Ticket`). Idempotent: the `tickets`
//! row is unique per push and claimed (`CREATING`) before anything is asked of ConnectWise, so two
//! ticket jobs for one push never create concurrently; and ConnectWise is searched by
//! `externalXRef` before creating, so neither a duplicated job nor a crash between "created" and
//! "stored" makes a second ticket.
use std::time::Duration;

use chrono::{DateTime, Utc};
use connectwise::NewTicket;
use domain::{PushStatus, codes};
use entity::{push, ticket};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::json;

use super::{EngineDeps, EngineError, clip, sql};

const SUMMARY_MAX: usize = 100;

/// Ticket row states.
const TICKET_PENDING: &str = "PENDING";
/// Claimed by one ticket job, which is asking ConnectWise.
const TICKET_CREATING: &str = "CREATING";
const TICKET_CREATED: &str = "CREATED";
const TICKET_FAILED: &str = "FAILED";

/// Codes that never get a ticket: the connection itself is broken or switched off, so the ticket
/// would fail the same way (and the dashboard already shows it).
const NO_TICKET_CODES: [&str; 3] = [codes::CW_AUTH_FAILED, codes::CONSUMPTION_SYNC_DISABLED, super::codes::CW_NOT_CONFIGURED];

/// Open the ticket of a dead push, if it has none yet.
pub async fn open_ticket(deps: &EngineDeps, push_id: i64) -> Result<(), EngineError> {
    let Some(p) = push::Entity::find_by_id(push_id).one(&deps.db).await? else { return Ok(()) };
    if p.status != PushStatus::Dead.as_str() || p.last_error_code.as_deref().is_some_and(|c| NO_TICKET_CODES.contains(&c)) {
        return Ok(());
    }
    let now = deps.clock.now();
    let account = entity::customer::Entity::find_by_id(p.customer_id)
        .one(&deps.db)
        .await?
        .map(|c| c.account_name)
        .unwrap_or_else(|| format!("customer {}", p.customer_id));
    let summary = summary(&account, &p);
    let t = insert_or_get(deps, &p, &summary, now).await?;
    if let Some(cw_id) = t.cw_ticket_id {
        // Created earlier; make sure the push shows it (a crash may have come in between).
        sql::exec(&deps.db, "UPDATE pushes SET ticket_id = $2 WHERE id = $1 AND ticket_id IS NULL", vec![p.id.into(), cw_id.into()])
            .await?;
        return Ok(());
    }

    // Claim the row: one job at a time asks ConnectWise. A claim older than two calls and a margin
    // was left by a stopped worker and may be taken over.
    let claim_expired = now - chrono::Duration::from_std(deps.settings.cw_timeout * 2 + Duration::from_secs(60)).unwrap_or_default();
    let claimed = sql::exec(
        &deps.db,
        "UPDATE tickets SET status = $2, updated_at = $3 WHERE id = $1 AND cw_ticket_id IS NULL          AND (status IN ($4, $5) OR (status = $2 AND updated_at < $6))",
        vec![t.id.into(), TICKET_CREATING.into(), now.into(), TICKET_PENDING.into(), TICKET_FAILED.into(), claim_expired.into()],
    )
    .await?;
    if claimed != 1 {
        return Ok(()); // another job is creating it
    }

    let client = match super::cw_client_for_tenant(deps, p.tenant_id).await {
        Ok(Some((client, settings))) if !settings.breaker_open => (client, settings),
        Ok(Some(_)) => return fail(deps, &p, &t, "the ConnectWise connection is broken (breaker open)", now).await,
        Ok(None) => return fail(deps, &p, &t, "ConnectWise is not configured", now).await,
        Err(EngineError::Internal(reason)) => return fail(deps, &p, &t, &reason, now).await,
        Err(e) => return Err(e),
    };
    let (client, settings) = client;

    let xref = p.id.to_string();
    if let Err(wait) = deps.rate.acquire_within(p.tenant_id, super::push::GATE_MAX_WAIT).await {
        return release(deps, &p, &t, wait).await;
    }
    let existing = match client.find_ticket_by_xref(&xref).await {
        Ok(found) => found.and_then(|t| t.id),
        Err(e) => return cw_failure(deps, &p, &t, &e, now).await,
    };
    let (cw_id, reused) = match existing {
        Some(id) => (id, true),
        None => {
            let new = NewTicket {
                summary: summary.clone(),
                company_id: p.cw_company_id,
                board_id: settings.ticket_board_id,
                team_id: Some(settings.ticket_team_id),
                status_id: Some(settings.ticket_status_id),
                type_id: settings.ticket_type_id,
                subtype_id: settings.ticket_subtype_id,
                initial_description: description(&account, &p),
                external_x_ref: xref,
            };
            if let Err(wait) = deps.rate.acquire_within(p.tenant_id, super::push::GATE_MAX_WAIT).await {
                return release(deps, &p, &t, wait).await;
            }
            match client.create_ticket(&new).await {
                Ok(resp) => match resp.body.id {
                    Some(id) => (id, false),
                    // The id is optional in ConnectWise's schema; the next attempt finds the ticket by its xref.
                    None => return fail(deps, &p, &t, "ConnectWise created the ticket but answered without its id", now).await,
                },
                Err(e) => return cw_failure(deps, &p, &t, &e, now).await,
            }
        }
    };

    let txn = sql::begin_write(&deps.db).await?;
    sql::exec(
        &txn,
        "UPDATE tickets SET cw_ticket_id = $2, status = $3, error = NULL, updated_at = $4 WHERE id = $1",
        vec![t.id.into(), cw_id.into(), TICKET_CREATED.into(), now.into()],
    )
    .await?;
    sql::exec(&txn, "UPDATE pushes SET ticket_id = $2, updated_at = $3 WHERE id = $1", vec![p.id.into(), cw_id.into(), now.into()]).await?;
    crate::audit::record(
        &txn,
        crate::audit::AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: crate::audit::SYSTEM_ACTOR,
            action: "ticket.created",
            entity_type: "push",
            entity_id: p.id.to_string(),
            before: None,
            after: Some(json!({"cwTicketId": cw_id})),
            detail: Some(json!({"summary": summary, "foundExisting": reused, "errorCode": p.last_error_code})),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// The tenant's gate is closed for a while: give the claim back and come again when it opens.
async fn release(deps: &EngineDeps, p: &push::Model, t: &ticket::Model, wait: Duration) -> Result<(), EngineError> {
    sql::exec(
        &deps.db,
        "UPDATE tickets SET status = $2 WHERE id = $1 AND status = $3",
        vec![t.id.into(), TICKET_PENDING.into(), TICKET_CREATING.into()],
    )
    .await?;
    deps.queue.enqueue_after(crate::jobs::Job::Ticket(crate::jobs::TicketJob { push_id: p.id }), wait).await?;
    Ok(())
}

async fn insert_or_get(deps: &EngineDeps, p: &push::Model, summary: &str, now: DateTime<Utc>) -> Result<ticket::Model, EngineError> {
    sql::exec(
        &deps.db,
        "INSERT INTO tickets (tenant_id, push_id, summary, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (push_id) DO NOTHING",
        vec![p.tenant_id.into(), p.id.into(), summary.into(), TICKET_PENDING.into(), now.into()],
    )
    .await?;
    ticket::Entity::find()
        .filter(ticket::Column::PushId.eq(p.id))
        .one(&deps.db)
        .await?
        .ok_or_else(|| EngineError::Internal(format!("ticket row of push {} vanished", p.id)))
}

/// A failed ConnectWise call: retryable ones go back to the queue (`Err`), others are recorded.
async fn cw_failure(
    deps: &EngineDeps,
    p: &push::Model,
    t: &ticket::Model,
    e: &connectwise::CwError,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let message = clip(&e.to_string(), 1000);
    if e.is_retryable() {
        record_failure(deps, p, t, &message, TICKET_PENDING, now).await?;
        return Err(EngineError::Internal(format!("ticket for push {} not created yet: {message}", p.id)));
    }
    record_failure(deps, p, t, &message, TICKET_FAILED, now).await?;
    Ok(())
}

async fn fail(deps: &EngineDeps, p: &push::Model, t: &ticket::Model, reason: &str, now: DateTime<Utc>) -> Result<(), EngineError> {
    record_failure(deps, p, t, reason, TICKET_FAILED, now).await?;
    Ok(())
}

async fn record_failure(
    deps: &EngineDeps,
    p: &push::Model,
    t: &ticket::Model,
    message: &str,
    status: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let txn = sql::begin_write(&deps.db).await?;
    sql::exec(
        &txn,
        "UPDATE tickets SET status = $2, error = $3, updated_at = $4 WHERE id = $1 AND cw_ticket_id IS NULL",
        vec![t.id.into(), status.into(), message.into(), now.into()],
    )
    .await?;
    crate::audit::record(
        &txn,
        crate::audit::AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: crate::audit::SYSTEM_ACTOR,
            action: "ticket.failed",
            entity_type: "push",
            entity_id: p.id.to_string(),
            before: None,
            after: None,
            detail: Some(json!({"error": message, "willRetry": status == TICKET_PENDING})),
        },
    )
    .await?;
    txn.commit().await
}

/// `"<account>: <module> <usage> <period> not billed"`, at most 100 characters (the account name
/// gives way first, so the rest always fits).
fn summary(account: &str, p: &push::Model) -> String {
    let tail = format!(": {} {} {} not billed", p.product_module, p.usage, p.period);
    let room = SUMMARY_MAX.saturating_sub(tail.chars().count()).max(1);
    let name = clip(account, room);
    clip(&format!("{name}{tail}"), SUMMARY_MAX)
}

fn description(account: &str, p: &push::Model) -> String {
    let quantity = p.quantity.map(|q| q.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "Consumption Sync could not set the monthly quantity on a ConnectWise agreement addition.\n\n\
         Customer: {account}\n\
         Product module: {module}\nUsage: {usage}\nInterval: {method}\nPeriod: {period}\n\
         Quantity to bill: {quantity}\n\
         Agreement id: {agreement}\nAddition id: {addition} (sequence {sequence})\n\n\
         Error: {code}: {message}\n\n\
         What to do: check the agreement and the addition in ConnectWise (does it still exist, is it active, \
         does it still hold the mapped product, is the company active?). Fix the addition or update the product \
         mapping in Consumption Sync, then retry the push (retryPush with push id {id}).",
        module = p.product_module,
        usage = p.usage,
        method = p.interval_method,
        period = p.period,
        agreement = p.cw_agreement_id,
        addition = p.cw_addition_id,
        sequence = p.cw_sequence_number,
        code = p.last_error_code.as_deref().unwrap_or("UNKNOWN"),
        message = p.last_error.as_deref().unwrap_or("no details"),
        id = p.id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_at_most_100_chars_and_keeps_the_facts() {
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, 6, 0, 0).single().expect("date");
        let p = push::Model {
            id: 1,
            tenant_id: 1,
            sync_run_id: 1,
            product_mapping_id: Some(1),
            customer_id: 1,
            period: "2026-02".into(),
            dry_run: false,
            product_module: "ENTERPRISE_WORKLOADS".into(),
            usage: "EARLY_DELETE_LTR_STORAGE".into(),
            interval_method: "SUM".into(),
            cw_company_id: 1,
            cw_agreement_id: 1,
            cw_addition_id: 1,
            cw_sequence_number: 1,
            cw_product_id: None,
            status: "DEAD".into(),
            value_micros: None,
            quantity: Some(3),
            sample_days: 0,
            fallback: false,
            skip_reason: None,
            attempts: 1,
            max_attempts: 8,
            next_attempt_at: None,
            last_error_code: Some("ADDITION_NOT_FOUND".into()),
            last_error: Some("gone".into()),
            last_http_status: Some(404),
            ticket_id: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            input_version: 0,
            held_quantity: None,
            drift_from_quantity: None,
            cancel_reason: None,
        };
        let s = summary(&"Very Long Customer Name ".repeat(10), &p);
        assert!(s.chars().count() <= 100, "{s}");
        assert!(s.ends_with("ENTERPRISE_WORKLOADS EARLY_DELETE_LTR_STORAGE 2026-02 not billed"), "{s}");
        let d = description("Acme", &p);
        assert!(d.contains("ADDITION_NOT_FOUND") && d.contains("retryPush"));
    }
}
