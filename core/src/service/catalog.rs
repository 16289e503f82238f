//! Reads of the ConnectWise catalog cache (filled by the worker's catalog refresh), and requests
//! of a refresh (one queued at a time per tenant).
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};
use serde::{Deserialize, Serialize};

use crate::{
    UserError,
    auth::Principal,
    engine::sql,
    error::{Outcome, ServiceError, ServiceResult},
    jobs::{CatalogRefreshJob, Job, JobQueue},
    pagination::{Page, decode_cursor, encode_cursor},
};
use entity::{cw_addition, cw_agreement, cw_board, cw_board_item, cw_company};

#[derive(Serialize, Deserialize)]
struct CompanyCursor(String, i64);

/// Companies ordered by name (keyset pagination), optionally searched by name or identifier.
pub async fn list_companies(
    db: &DatabaseConnection,
    tenant_id: i64,
    limit: u64,
    after: Option<&str>,
    search: Option<&str>,
) -> ServiceResult<Page<cw_company::Model>> {
    let mut q = cw_company::Entity::find().filter(cw_company::Column::TenantId.eq(tenant_id));
    if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
        let pattern = format!("%{}%", super::customers::escape_like(&s.to_lowercase()));
        q = q.filter(
            Condition::any()
                .add(
                    Expr::expr(Func::lower(Expr::col((cw_company::Entity, cw_company::Column::Name))))
                        .like(LikeExpr::new(pattern.clone()).escape('\\')),
                )
                .add(
                    Expr::expr(Func::lower(Expr::col((cw_company::Entity, cw_company::Column::Identifier))))
                        .like(LikeExpr::new(pattern).escape('\\')),
                ),
        );
    }
    if let Some(a) = after {
        let CompanyCursor(name, id) = decode_cursor(a)?;
        q = q.filter(
            Condition::any()
                .add(cw_company::Column::Name.gt(name.clone()))
                .add(Condition::all().add(cw_company::Column::Name.eq(name)).add(cw_company::Column::Id.gt(id))),
        );
    }
    let rows =
        q.order_by(cw_company::Column::Name, Order::Asc).order_by(cw_company::Column::Id, Order::Asc).limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows, limit, |c| encode_cursor(&CompanyCursor(c.name.clone(), c.id))))
}

pub async fn companies_by_ids(db: &DatabaseConnection, tenant_id: i64, ids: &[i64]) -> ServiceResult<Vec<cw_company::Model>> {
    Ok(cw_company::Entity::find()
        .filter(cw_company::Column::TenantId.eq(tenant_id))
        .filter(cw_company::Column::Id.is_in(ids.to_vec()))
        .all(db)
        .await?)
}

/// Agreements of one company, by name.
pub async fn agreements_of_company(db: &DatabaseConnection, tenant_id: i64, company_id: i64) -> ServiceResult<Vec<cw_agreement::Model>> {
    Ok(cw_agreement::Entity::find()
        .filter(cw_agreement::Column::TenantId.eq(tenant_id))
        .filter(cw_agreement::Column::CompanyId.eq(company_id))
        .order_by_asc(cw_agreement::Column::Name)
        .order_by_asc(cw_agreement::Column::Id)
        .all(db)
        .await?)
}

pub async fn agreements_by_ids(db: &DatabaseConnection, tenant_id: i64, ids: &[i64]) -> ServiceResult<Vec<cw_agreement::Model>> {
    Ok(cw_agreement::Entity::find()
        .filter(cw_agreement::Column::TenantId.eq(tenant_id))
        .filter(cw_agreement::Column::Id.is_in(ids.to_vec()))
        .all(db)
        .await?)
}

/// Additions of many agreements, in sequence order.
pub async fn additions_of_agreements(
    db: &DatabaseConnection,
    tenant_id: i64,
    agreement_ids: &[i64],
) -> ServiceResult<Vec<cw_addition::Model>> {
    Ok(cw_addition::Entity::find()
        .filter(cw_addition::Column::TenantId.eq(tenant_id))
        .filter(cw_addition::Column::AgreementId.is_in(agreement_ids.to_vec()))
        .order_by_asc(cw_addition::Column::SequenceNumber)
        .order_by_asc(cw_addition::Column::Id)
        .all(db)
        .await?)
}

/// Boards with their teams, statuses, types and subtypes.
pub async fn boards(db: &DatabaseConnection, tenant_id: i64) -> ServiceResult<Vec<(cw_board::Model, Vec<cw_board_item::Model>)>> {
    let boards =
        cw_board::Entity::find().filter(cw_board::Column::TenantId.eq(tenant_id)).order_by_asc(cw_board::Column::Name).all(db).await?;
    let mut items: HashMap<i64, Vec<cw_board_item::Model>> = HashMap::new();
    for i in cw_board_item::Entity::find()
        .filter(cw_board_item::Column::TenantId.eq(tenant_id))
        .order_by_asc(cw_board_item::Column::Name)
        .all(db)
        .await?
    {
        items.entry(i.board_id).or_default().push(i);
    }
    Ok(boards
        .into_iter()
        .map(|b| {
            let its = items.remove(&b.id).unwrap_or_default();
            (b, its)
        })
        .collect())
}

/// A queued catalog refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRequest {
    pub requested_at: DateTime<Utc>,
    pub requested_by: String,
    /// This call found a refresh already queued and queued nothing (the request it returns is
    /// that one).
    pub already_queued: bool,
}

/// A queued request older than this is taken over: its job was lost (a Redis outage) or is stuck.
pub const REFRESH_REQUEST_STALE: Duration = Duration::minutes(15);

/// Queue a refresh of the tenant's catalog (`refreshConnectWiseCatalog`) unless one is queued
/// already: then that one is returned with `already_queued`. The slot is claimed with one
/// conditional upsert, so of concurrent or aliased requests exactly one enqueues a job.
pub async fn request_refresh(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    p: &Principal,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<RefreshRequest>> {
    if super::settings::get(db, p.tenant_id).await?.is_none() {
        return Ok(Err(vec![UserError::new("CONNECTWISE_NOT_CONFIGURED", "configure ConnectWise first")]));
    }
    let actor = p.actor();
    // The queued job may start (and free the slot) between the claim and the read: claim again.
    let mut already = None;
    let mut claimed = None;
    for _ in 0..3 {
        let rows = sql::query(
            db,
            "INSERT INTO catalog_refresh_requests (tenant_id, requested_at, requested_by) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET requested_at = excluded.requested_at, requested_by = excluded.requested_by \
             WHERE catalog_refresh_requests.requested_at < $4 \
             RETURNING requested_at",
            vec![p.tenant_id.into(), now.into(), actor.clone().into(), (now - REFRESH_REQUEST_STALE).into()],
        )
        .await?;
        if let Some(r) = rows.first() {
            // As stored (the database may keep less precision than `now`).
            claimed = Some(r.try_get::<DateTime<Utc>>("", "requested_at")?);
            break;
        }
        let rows = sql::query(
            db,
            "SELECT requested_at, requested_by FROM catalog_refresh_requests WHERE tenant_id = $1",
            vec![p.tenant_id.into()],
        )
        .await?;
        if let Some(r) = rows.first() {
            already = Some(RefreshRequest {
                requested_at: r.try_get("", "requested_at")?,
                requested_by: r.try_get("", "requested_by")?,
                already_queued: true,
            });
            break;
        }
    }
    if let Some(queued) = already {
        return Ok(Ok(queued));
    }
    let Some(requested_at) = claimed else {
        return Err(ServiceError::Internal("the catalog refresh slot changed hands three times in a row".into()));
    };
    if let Err(e) = queue.enqueue(Job::CatalogRefresh(CatalogRefreshJob { tenant_id: p.tenant_id, requested_by: actor.clone() })).await {
        // Nothing was queued: free the slot so that the next request can try again.
        refresh_started(db, p.tenant_id).await?;
        return Err(ServiceError::Internal(format!("could not queue the catalog refresh: {e}")));
    }
    Ok(Ok(RefreshRequest { requested_at, requested_by: actor, already_queued: false }))
}

/// The refresh job of the tenant started: a new request queues a new job (called by the engine).
pub async fn refresh_started<C: sea_orm::ConnectionTrait>(db: &C, tenant_id: i64) -> Result<(), sea_orm::DbErr> {
    sql::exec(db, "DELETE FROM catalog_refresh_requests WHERE tenant_id = $1", vec![tenant_id.into()]).await?;
    Ok(())
}

/// Whether a refresh of the tenant's catalog is queued (for the tenant's queue depth).
pub async fn refresh_queued(db: &DatabaseConnection, tenant_id: i64) -> ServiceResult<bool> {
    Ok(!sql::query(db, "SELECT 1 AS one FROM catalog_refresh_requests WHERE tenant_id = $1", vec![tenant_id.into()]).await?.is_empty())
}
