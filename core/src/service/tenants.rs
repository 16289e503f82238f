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
