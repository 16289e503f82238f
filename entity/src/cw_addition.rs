//! `cw_additions` table.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "cw_additions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    pub agreement_id: i64,
    /// Whole sequence number; for a fractional one (see `fractional_sequence_number`) its whole part.
    pub sequence_number: i64,
    /// ConnectWise's sequence number exactly as sent when it is not a whole number (e.g. `2.5`).
    pub fractional_sequence_number: Option<String>,
    pub product_id: Option<i64>,
    pub product_identifier: Option<String>,
    pub description: Option<String>,
    /// As ConnectWise reported it (a JSON number kept as text; the billing review parses it exactly).
    pub quantity: Option<String>,
    /// `unitPrice` exactly as ConnectWise wrote it (JSON number text; parse with
    /// `domain::parse_cw_decimal`, never through a float).
    pub unit_price: Option<String>,
    /// `lessIncluded` exactly as ConnectWise wrote it (JSON number text).
    pub less_included: Option<String>,
    pub effective_date: Option<Date>,
    pub cancelled_date: Option<Date>,
    pub refreshed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
