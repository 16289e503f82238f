//! `pushes` table.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "pushes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub sync_run_id: i64,
    pub product_mapping_id: Option<i64>,
    pub customer_id: i64,
    pub period: String,
    pub dry_run: bool,
    pub product_module: String,
    pub usage: String,
    pub interval_method: String,
    pub cw_company_id: i64,
    pub cw_agreement_id: i64,
    pub cw_addition_id: i64,
    pub cw_sequence_number: i64,
    pub cw_product_id: Option<i64>,
    pub status: String,
    pub value_micros: Option<i64>,
    pub quantity: Option<i64>,
    pub sample_days: i32,
    pub fallback: bool,
    pub skip_reason: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub last_http_status: Option<i32>,
    pub ticket_id: Option<i64>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
