//! `product_mappings` table.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "product_mappings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub customer_id: i64,
    pub product_module: String,
    pub usage: String,
    pub interval_method: String,
    pub cw_agreement_id: i64,
    pub cw_sequence_number: i64,
    pub cw_addition_id: i64,
    pub cw_product_id: Option<i64>,
    pub cw_product_identifier: Option<String>,
    pub version: i32,
    pub stale: bool,
    /// Bumped by every change of the mapping's inputs (samples, license window).
    pub input_version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
