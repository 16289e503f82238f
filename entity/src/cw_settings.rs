//! `cw_settings` table.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "cw_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: i64,
    pub site_url: String,
    pub company_id: String,
    pub public_key: String,
    /// AES-256-GCM ciphertext (base64 of nonce ‖ ciphertext); never leaves the service in clear.
    #[serde(skip_serializing)]
    pub private_key_enc: Option<String>,
    pub codebase: String,
    pub consumption_sync_enabled: bool,
    pub ticket_board_id: i64,
    pub ticket_team_id: i64,
    pub ticket_status_id: i64,
    pub ticket_type_id: Option<i64>,
    pub ticket_subtype_id: Option<i64>,
    pub breaker_open: bool,
    pub breaker_reason: Option<String>,
    pub breaker_opened_at: Option<DateTimeUtc>,
    pub paused_until: Option<DateTimeUtc>,
    pub catalog_refreshed_at: Option<DateTimeUtc>,
    /// A monthly tick found a run of this period still running: the scheduled run is owed.
    pub owed_scheduled_period: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
