//! GraphQL object types: thin adapters over the entities, resolving relations through DataLoaders.
use async_graphql::{Context, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use sync_core::auth::Permission;

use super::{
    context::{Need, app},
    enums::{self, parse_stored},
    ids::{GlobalId, NodeType},
    limits::COST_BATCHED,
    loaders::{load_err, loaders},
    scalars::{Date, Decimal},
};
use entity::{
    audit_entry, customer, cw_addition, cw_agreement, cw_board, cw_board_item, cw_company, cw_settings, license, product_mapping, push,
};

/// The caller.
#[derive(SimpleObject)]
pub struct Principal {
    pub sub: String,
    pub tenant_id: String,
    pub roles: Vec<String>,
}

/// A rejected input, with a stable machine code.
#[derive(SimpleObject, Clone)]
pub struct UserError {
    pub code: String,
    pub field: Option<Vec<String>>,
    pub message: String,
}

impl From<sync_core::UserError> for UserError {
    fn from(e: sync_core::UserError) -> Self {
        UserError { code: e.code, field: e.field, message: e.message }
    }
}

pub fn user_errors(v: Vec<sync_core::UserError>) -> Vec<UserError> {
    v.into_iter().map(UserError::from).collect()
}

pub struct ConnectWiseSettings(pub cw_settings::Model);

#[Object]
impl ConnectWiseSettings {
    async fn site_url(&self) -> &str {
        &self.0.site_url
    }
    async fn company_id(&self) -> &str {
        &self.0.company_id
    }
    async fn public_key(&self) -> &str {
        &self.0.public_key
    }
    /// The private key is write-only: this says whether one is stored.
    async fn has_private_key(&self) -> bool {
        self.0.private_key_enc.is_some()
    }
    async fn codebase(&self) -> &str {
        &self.0.codebase
    }
    async fn consumption_sync_enabled(&self) -> bool {
        self.0.consumption_sync_enabled
    }
    async fn ticket_board_id(&self) -> i64 {
        self.0.ticket_board_id
    }
    async fn ticket_team_id(&self) -> i64 {
        self.0.ticket_team_id
    }
    async fn ticket_status_id(&self) -> i64 {
        self.0.ticket_status_id
    }
    async fn ticket_type_id(&self) -> Option<i64> {
        self.0.ticket_type_id
    }
    async fn ticket_subtype_id(&self) -> Option<i64> {
        self.0.ticket_subtype_id
    }
    /// True when ConnectWise refused our credentials (401/403) during a push: pushes stop until the
    /// settings are saved again or `testConnectWiseConnection` passes.
    async fn connection_broken(&self) -> bool {
        self.0.breaker_open
    }
    async fn connection_broken_reason(&self) -> Option<&str> {
        self.0.breaker_reason.as_deref()
    }
    async fn paused_until(&self) -> Option<DateTime<Utc>> {
        self.0.paused_until
    }
    async fn catalog_refreshed_at(&self) -> Option<DateTime<Utc>> {
        self.0.catalog_refreshed_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

pub struct Customer(pub customer::Model);

#[Object]
impl Customer {
    pub(crate) async fn id(&self) -> ID {
        GlobalId::of::<Self>(self.0.id)
    }
    async fn external_id(&self) -> &str {
        &self.0.external_id
    }
    async fn account_name(&self) -> &str {
        &self.0.account_name
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn licenses(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<License>> {
        let v = loaders(ctx)?.licenses_of(self.0.id).await.map_err(load_err)?;
        Ok(v.into_iter().map(License).collect())
    }
    /// The mapped ConnectWise company, if any.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_BATCHED + child_complexity")]
    async fn cw_company(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CwCompany>> {
        let v = loaders(ctx)?.customer_company.load_one(self.0.id).await.map_err(load_err)?;
        let now = app(ctx)?.clock.now();
        Ok(v.map(|(id, c)| {
            CwCompany(c.unwrap_or(cw_company::Model {
                tenant_id: self.0.tenant_id,
                id,
                identifier: String::new(),
                name: format!("company {id} (not in the refreshed catalog)"),
                status: "Unknown".into(),
                refreshed_at: now,
            }))
        }))
    }
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_BATCHED + child_complexity")]
    async fn product_mappings(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ProductMapping>> {
        let v = loaders(ctx)?.mappings_of(self.0.id).await.map_err(load_err)?;
        Ok(v.into_iter().map(ProductMapping).collect())
    }
    /// License add-ons across the customer's licenses (their consumption is never sent separately).
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn add_ons(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let v = loaders(ctx)?.licenses_of(self.0.id).await.map_err(load_err)?;
        let mut out: Vec<String> = v.iter().flat_map(|l| add_ons(&l.add_ons)).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

fn add_ons(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

pub struct License(pub license::Model);

#[Object]
impl License {
    async fn product_module(&self) -> async_graphql::Result<enums::ProductModule> {
        Ok(parse_stored::<domain::ProductModule>(&self.0.product_module)?.into())
    }
    async fn edition(&self) -> async_graphql::Result<enums::Edition> {
        Ok(parse_stored::<domain::Edition>(&self.0.edition)?.into())
    }
    async fn provisioned_on(&self) -> Date {
        Date(self.0.provisioned_on)
    }
    async fn deprovisioned_on(&self) -> Option<Date> {
        self.0.deprovisioned_on.map(Date)
    }
    async fn add_ons(&self) -> Vec<String> {
        add_ons(&self.0.add_ons)
    }
}

pub struct CwCompany(pub cw_company::Model);

#[Object]
impl CwCompany {
    async fn id(&self) -> i64 {
        self.0.id
    }
    async fn identifier(&self) -> &str {
        &self.0.identifier
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn status(&self) -> &str {
        &self.0.status
    }
}

pub struct CwAgreement(pub cw_agreement::Model);

#[Object]
impl CwAgreement {
    async fn id(&self) -> i64 {
        self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// ConnectWise `agreementStatus`: Active, Cancelled, Expired or Inactive.
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn r#type(&self) -> Option<&str> {
        self.0.type_name.as_deref()
    }
    async fn cancelled(&self) -> bool {
        self.0.cancelled_flag
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn company(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CwCompany>> {
        Ok(loaders(ctx)?.company.load_one(self.0.company_id).await.map_err(load_err)?.map(CwCompany))
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn additions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<CwAddition>> {
        let v = loaders(ctx)?.additions.load_one(self.0.id).await.map_err(load_err)?;
        Ok(v.unwrap_or_default().into_iter().map(CwAddition).collect())
    }
    /// A quantity changed after the agreement's invoice run applies to the next invoice.
    async fn next_invoice_date(&self) -> Option<Date> {
        self.0.next_invoice_date.map(Date)
    }
    async fn start_date(&self) -> Option<Date> {
        self.0.start_date.map(Date)
    }
    async fn end_date(&self) -> Option<Date> {
        self.0.end_date.map(Date)
    }
}

pub struct CwAddition(pub cw_addition::Model);

#[Object]
impl CwAddition {
    async fn id(&self) -> i64 {
        self.0.id
    }
    async fn sequence_number(&self) -> i64 {
        self.0.sequence_number
    }
    async fn product_id(&self) -> Option<i64> {
        self.0.product_id
    }
    async fn product_identifier(&self) -> Option<&str> {
        self.0.product_identifier.as_deref()
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// The quantity ConnectWise reported at the last catalog refresh.
    async fn quantity(&self) -> Option<Decimal> {
        self.0.quantity.as_deref().map(|q| match domain::parse_micros(q) {
            Ok(m) => Decimal::from_micros(m),
            Err(_) => Decimal(q.to_string()),
        })
    }
    async fn effective_date(&self) -> Option<Date> {
        self.0.effective_date.map(Date)
    }
    async fn cancelled_date(&self) -> Option<Date> {
        self.0.cancelled_date.map(Date)
    }
}

#[derive(SimpleObject)]
pub struct CwBoardItem {
    pub id: i64,
    pub name: String,
    pub default_flag: bool,
}

#[derive(SimpleObject)]
pub struct CwBoard {
    pub id: i64,
    pub name: String,
    pub inactive: bool,
    pub teams: Vec<CwBoardItem>,
    pub statuses: Vec<CwBoardItem>,
    pub types: Vec<CwBoardItem>,
    pub subtypes: Vec<CwBoardItem>,
}

impl CwBoard {
    pub fn new(b: cw_board::Model, items: Vec<cw_board_item::Model>) -> Self {
        let pick = |kind: &str| {
            items
                .iter()
                .filter(|i| i.kind == kind)
                .map(|i| CwBoardItem { id: i.id, name: i.name.clone(), default_flag: i.default_flag })
                .collect()
        };
        CwBoard {
            id: b.id,
            name: b.name.clone(),
            inactive: b.inactive,
            teams: pick("TEAM"),
            statuses: pick("STATUS"),
            types: pick("TYPE"),
            subtypes: pick("SUBTYPE"),
        }
    }
}

pub struct ProductMapping(pub product_mapping::Model);

#[Object]
impl ProductMapping {
    pub(crate) async fn id(&self) -> ID {
        GlobalId::of::<Self>(self.0.id)
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        Ok(loaders(ctx)?.customer.load_one(self.0.customer_id).await.map_err(load_err)?.map(Customer))
    }
    async fn product_module(&self) -> async_graphql::Result<enums::ProductModule> {
        Ok(parse_stored::<domain::ProductModule>(&self.0.product_module)?.into())
    }
    /// The edition of the customer's license for this module.
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn edition(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<enums::Edition>> {
        let v = loaders(ctx)?.licenses_of(self.0.customer_id).await.map_err(load_err)?;
        let lic = v.into_iter().find(|l| l.product_module == self.0.product_module);
        lic.map(|l| parse_stored::<domain::Edition>(&l.edition).map(Into::into)).transpose()
    }
    async fn usage(&self) -> async_graphql::Result<enums::UsageMetric> {
        Ok(parse_stored::<domain::UsageMetric>(&self.0.usage)?.into())
    }
    async fn interval(&self) -> async_graphql::Result<enums::IntervalMethod> {
        Ok(parse_stored::<domain::IntervalMethod>(&self.0.interval_method)?.into())
    }
    async fn cw_agreement_id(&self) -> i64 {
        self.0.cw_agreement_id
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn cw_agreement(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CwAgreement>> {
        Ok(loaders(ctx)?.agreement.load_one(self.0.cw_agreement_id).await.map_err(load_err)?.map(CwAgreement))
    }
    async fn cw_sequence_number(&self) -> i64 {
        self.0.cw_sequence_number
    }
    /// Resolved once, when the mapping was saved; never re-derived.
    async fn cw_addition_id(&self) -> i64 {
        self.0.cw_addition_id
    }
    async fn cw_product_id(&self) -> Option<i64> {
        self.0.cw_product_id
    }
    async fn cw_product_identifier(&self) -> Option<&str> {
        self.0.cw_product_identifier.as_deref()
    }
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// A consumption correction changed a period that was already pushed: the next run re-sends it.
    async fn stale(&self) -> bool {
        self.0.stale
    }
    /// The latest (non-dry-run) push of this mapping.
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn last_push(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Push>> {
        Ok(loaders(ctx)?.last_push_of(self.0.id).await.map_err(load_err)?.map(Push))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// One push of one mapping in one run (the outbox row).
pub struct Push(pub push::Model);

#[Object]
impl Push {
    pub(crate) async fn id(&self) -> ID {
        GlobalId::of::<Self>(self.0.id)
    }
    async fn status(&self) -> async_graphql::Result<enums::PushStatus> {
        Ok(parse_stored::<domain::PushStatus>(&self.0.status)?.into())
    }
    async fn period(&self) -> async_graphql::Result<super::scalars::Period> {
        Ok(super::scalars::Period(parse_stored::<domain::Period>(&self.0.period)?))
    }
    async fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    async fn method(&self) -> async_graphql::Result<enums::IntervalMethod> {
        Ok(parse_stored::<domain::IntervalMethod>(&self.0.interval_method)?.into())
    }
    async fn value(&self) -> Option<Decimal> {
        self.0.value_micros.map(Decimal::from_micros)
    }
    async fn quantity(&self) -> Option<i64> {
        self.0.quantity
    }
    async fn sample_days(&self) -> i32 {
        self.0.sample_days
    }
    async fn fallback(&self) -> bool {
        self.0.fallback
    }
    async fn skip_reason(&self) -> Option<&str> {
        self.0.skip_reason.as_deref()
    }
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }
    async fn last_error_code(&self) -> Option<&str> {
        self.0.last_error_code.as_deref()
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn last_http_status(&self) -> Option<i32> {
        self.0.last_http_status
    }
    async fn ticket_id(&self) -> Option<i64> {
        self.0.ticket_id
    }
    /// What ConnectWise held on the addition when the last attempt read it.
    async fn held_quantity(&self) -> Option<i64> {
        self.0.held_quantity
    }
    /// Set when ConnectWise held another quantity than the one this service last set on the
    /// addition (somebody changed it by hand): the quantity it held.
    async fn drift_from_quantity(&self) -> Option<i64> {
        self.0.drift_from_quantity
    }
    /// Why a `CANCELLED` push was withdrawn: `PUSH_SUPERSEDED` or `MAPPING_REMOVED`.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
    /// Whether `retryPush` would accept it: `DEAD` or `FAILED_RETRYING`, the newest push of its
    /// addition, and its mapping still in place.
    async fn retryable(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let status = parse_stored::<domain::PushStatus>(&self.0.status)?;
        if !domain::PushStatus::sources_of(domain::PushEvent::Retry).contains(&status) {
            return Ok(false);
        }
        Ok(loaders(ctx)?.write_blocker.load_one(self.0.id).await.map_err(load_err)?.is_none())
    }
    /// Why the push may no longer write its addition (`PUSH_SUPERSEDED`, `MAPPING_REMOVED`), if so.
    async fn write_blocked_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(loaders(ctx)?.write_blocker.load_one(self.0.id).await.map_err(load_err)?.map(|r| r.as_str().to_string()))
    }
    async fn cw_agreement_id(&self) -> i64 {
        self.0.cw_agreement_id
    }
    async fn cw_addition_id(&self) -> i64 {
        self.0.cw_addition_id
    }
    async fn cw_company_id(&self) -> i64 {
        self.0.cw_company_id
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn product_mapping(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductMapping>> {
        match self.0.product_mapping_id {
            Some(id) => Ok(loaders(ctx)?.mapping.load_one(id).await.map_err(load_err)?.map(ProductMapping)),
            None => Ok(None),
        }
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        Ok(loaders(ctx)?.customer.load_one(self.0.customer_id).await.map_err(load_err)?.map(Customer))
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn sync_run(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<super::sync::SyncRun>> {
        Ok(loaders(ctx)?.run.load_one(self.0.sync_run_id).await.map_err(load_err)?.map(super::sync::SyncRun))
    }
    /// Every HTTP call made for this push, oldest first.
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn attempt_history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::sync::PushAttempt>> {
        let v = loaders(ctx)?.attempts.load_one(self.0.id).await.map_err(load_err)?;
        Ok(v.unwrap_or_default().into_iter().map(super::sync::PushAttempt).collect())
    }
    async fn usage(&self) -> async_graphql::Result<enums::UsageMetric> {
        Ok(parse_stored::<domain::UsageMetric>(&self.0.usage)?.into())
    }
    async fn product_module(&self) -> async_graphql::Result<enums::ProductModule> {
        Ok(parse_stored::<domain::ProductModule>(&self.0.product_module)?.into())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct AuditEntry(pub audit_entry::Model);

#[Object]
impl AuditEntry {
    pub(crate) async fn id(&self) -> ID {
        GlobalId::of::<Self>(self.0.id)
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn entity_type(&self) -> &str {
        &self.0.entity_type
    }
    /// The global id of the entity when it is one of ours that implements `Node` (customer,
    /// product mapping, sync run, push); otherwise the audit log's own key of it (the tenant for
    /// settings, the sample's day and series for consumption). `auditLog(entityId:)` takes either.
    async fn entity_id(&self) -> ID {
        audit_entity_id(&self.0.entity_type, &self.0.entity_id)
    }
    async fn before(&self) -> Option<Json<serde_json::Value>> {
        self.0.before.clone().map(Json)
    }
    async fn after(&self) -> Option<Json<serde_json::Value>> {
        self.0.after.clone().map(Json)
    }
    async fn detail(&self) -> Option<Json<serde_json::Value>> {
        self.0.detail.clone().map(Json)
    }
}

/// `AuditEntry.entityId`: see there.
pub fn audit_entity_id(entity_type: &str, stored_key: &str) -> ID {
    match (NodeType::from_audit_entity_type(entity_type), stored_key.parse::<i64>()) {
        (Some(t), Ok(key)) => GlobalId::encode(t, key),
        _ => ID(stored_key.to_string()),
    }
}
