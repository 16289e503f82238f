//! The append-only audit log. Every write goes through [`record`], inside the caller's transaction,
//! so an audited change and its audit entry commit together.
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use serde_json::Value;

use entity::audit_entry;

/// One audit entry to write.
pub struct AuditRecord<'a> {
    /// When it happened, by the service's clock.
    pub at: DateTime<Utc>,
    pub tenant_id: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub detail: Option<Value>,
}

pub async fn record<C: ConnectionTrait>(db: &C, r: AuditRecord<'_>) -> Result<(), DbErr> {
    audit_entry::Entity::insert(audit_entry::ActiveModel {
        tenant_id: Set(r.tenant_id),
        at: Set(r.at),
        actor: Set(r.actor.to_string()),
        action: Set(r.action.to_string()),
        entity_type: Set(r.entity_type.to_string()),
        entity_id: Set(r.entity_id),
        before: Set(r.before),
        after: Set(r.after),
        detail: Set(r.detail),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The actor name of the system's own jobs.
pub const SYSTEM_ACTOR: &str = "system";
