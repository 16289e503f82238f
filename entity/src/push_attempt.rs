//! `push_attempts` table.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "push_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub push_id: i64,
    pub tenant_id: i64,
    pub attempt_no: i32,
    /// `GET_ADDITION` or `PATCH_QUANTITY`.
    pub step: String,
    pub started_at: DateTimeUtc,
    pub duration_ms: i64,
    pub http_status: Option<i32>,
    pub request_id: Option<String>,
    pub quantity: Option<i64>,
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
