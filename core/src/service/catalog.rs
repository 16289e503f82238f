//! Reads of the ConnectWise catalog cache (filled by the worker's catalog refresh).
use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::ServiceResult,
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
