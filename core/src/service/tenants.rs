//! Tenants are created on the first valid token naming them.
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, sea_query::OnConflict};

use entity::tenant;

/// The row id of the tenant with this external id, creating it if needed (race-free).
pub async fn ensure_tenant(db: &DatabaseConnection, external_id: &str, now: DateTime<Utc>) -> Result<i64, DbErr> {
    if let Some(t) = tenant::Entity::find().filter(tenant::Column::ExternalId.eq(external_id)).one(db).await? {
        return Ok(t.id);
    }
    tenant::Entity::insert(tenant::ActiveModel { external_id: Set(external_id.to_string()), created_at: Set(now), ..Default::default() })
        .on_conflict(OnConflict::column(tenant::Column::ExternalId).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    tenant::Entity::find()
        .filter(tenant::Column::ExternalId.eq(external_id))
        .one(db)
        .await?
        .map(|t| t.id)
        .ok_or_else(|| DbErr::RecordNotFound(format!("tenant {external_id}")))
}

/// Tables holding a tenant's rows, children before parents.
const TENANT_TABLES: [&str; 17] = [
    "push_attempts",
    "tickets",
    "pushes",
    "sync_runs",
    "product_mappings",
    "customer_mappings",
    "consumption_samples",
    "licenses",
    "customers",
    "cw_board_items",
    "cw_boards",
    "cw_additions",
    "cw_agreements",
    "cw_companies",
    "catalog_refresh_requests",
    "cw_settings",
    "audit_log",
];

/// Delete the tenant with this external id and every row of it, in one transaction (`api demo
/// --reset`). The foreign keys cascade too; the explicit deletes keep it independent of them.
/// Returns whether the tenant existed. Jobs already queued for its rows find nothing and end.
pub async fn delete_tenant(db: &DatabaseConnection, external_id: &str) -> Result<bool, DbErr> {
    use sea_orm::TransactionTrait;
    let Some(t) = tenant::Entity::find().filter(tenant::Column::ExternalId.eq(external_id)).one(db).await? else {
        return Ok(false);
    };
    let txn = db.begin().await?;
    for table in TENANT_TABLES {
        crate::engine::sql::exec(&txn, &format!("DELETE FROM {table} WHERE tenant_id = $1"), vec![t.id.into()]).await?;
    }
    crate::engine::sql::exec(&txn, "DELETE FROM tenants WHERE id = $1", vec![t.id.into()]).await?;
    txn.commit().await?;
    Ok(true)
}
