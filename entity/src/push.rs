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
    /// The mapping's input version the push's value was computed from.
    pub input_version: i64,
    /// What ConnectWise held when the last attempt read the addition.
    pub held_quantity: Option<i64>,
    /// What ConnectWise held when that differed from the last quantity this service set (drift).
    pub drift_from_quantity: Option<i64>,
    /// Why the push was withdrawn (`PUSH_SUPERSEDED`, `MAPPING_REMOVED`).
    pub cancel_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
