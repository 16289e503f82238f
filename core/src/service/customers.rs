//! Customer accounts with their licenses, and the customer → ConnectWise company mapping.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, Order, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, Query},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    UserError,
    audit::{self, AuditRecord},
    auth::Principal,
    error::{Outcome, ServiceResult, UniqueIndex, unique_violation},
    ledger::{self, stale::InputChange},
    pagination::{Page, decode_cursor, encode_cursor},
};
use domain::{Edition, ProductModule, codes};
use entity::{customer, customer_mapping, cw_company, license, product_mapping};

/// At most this many customers per `upsertCustomers` call.
pub const MAX_CUSTOMERS_PER_CALL: usize = 1000;
const MAX_TEXT: usize = 200;
const MAX_ADD_ONS: usize = 50;

#[derive(Clone, Debug)]
pub struct CustomerInput {
    pub external_id: String,
    pub account_name: String,
    pub licenses: Vec<LicenseInput>,
}

#[derive(Clone, Debug)]
pub struct LicenseInput {
    pub product_module: ProductModule,
    pub edition: Edition,
    pub provisioned_on: NaiveDate,
    pub deprovisioned_on: Option<NaiveDate>,
    pub add_ons: Vec<String>,
}

/// Validate then upsert customers by external id; each customer's licenses are replaced by the given ones.
pub async fn upsert_customers(
    db: &DatabaseConnection,
    p: &Principal,
    input: Vec<CustomerInput>,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<Vec<customer::Model>>> {
    let errors = validate_customers(&input);
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let txn = crate::engine::sql::begin_write(db).await?;
    let ext_ids: Vec<String> = input.iter().map(|c| c.external_id.trim().to_string()).collect();
    let existing: HashMap<String, customer::Model> = customer::Entity::find()
        .filter(customer::Column::TenantId.eq(p.tenant_id))
        .filter(customer::Column::ExternalId.is_in(ext_ids.clone()))
        .all(&txn)
        .await?
        .into_iter()
        .map(|c| (c.external_id.clone(), c))
        .collect();
    let existing_ids: Vec<i64> = existing.values().map(|c| c.id).collect();
    let mut old_licenses: HashMap<i64, Vec<license::Model>> = HashMap::new();
    for l in license::Entity::find()
        .filter(license::Column::CustomerId.is_in(existing_ids))
        .order_by_asc(license::Column::ProductModule)
        .all(&txn)
        .await?
    {
        old_licenses.entry(l.customer_id).or_default().push(l);
    }
    let mut saved = Vec::with_capacity(input.len());
    let mut window_changes = Vec::new();
    for c in &input {
        let ext = c.external_id.trim().to_string();
        let name = c.account_name.trim().to_string();
        let before = existing.get(&ext);
        let model = match before {
            Some(b) if b.account_name == name => b.clone(),
            Some(b) => {
                let mut am = b.clone().into_active_model();
                am.account_name = Set(name);
                am.updated_at = Set(now);
                am.update(&txn).await?
            }
            None => {
                customer::ActiveModel {
                    tenant_id: Set(p.tenant_id),
                    external_id: Set(ext.clone()),
                    account_name: Set(name),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await?
            }
        };
        let old = before.and_then(|b| old_licenses.get(&b.id)).cloned().unwrap_or_default();
        let new_rows: Vec<license::ActiveModel> = c
            .licenses
            .iter()
            .map(|l| license::ActiveModel {
                tenant_id: Set(p.tenant_id),
                customer_id: Set(model.id),
                product_module: Set(l.product_module.as_str().to_string()),
                edition: Set(l.edition.as_str().to_string()),
                provisioned_on: Set(l.provisioned_on),
                deprovisioned_on: Set(l.deprovisioned_on),
                add_ons: Set(json!(l.add_ons)),
                ..Default::default()
            })
            .collect();
        let new_view = licenses_view(
            c.licenses
                .iter()
                .map(|l| (l.product_module.as_str(), l.edition.as_str(), l.provisioned_on, l.deprovisioned_on, json!(l.add_ons))),
        );
        let old_view = licenses_view(
            old.iter().map(|l| (l.product_module.as_str(), l.edition.as_str(), l.provisioned_on, l.deprovisioned_on, l.add_ons.clone())),
        );
        let licenses_changed = before.is_none() || old_view != new_view;
        if before.is_some() && licenses_changed {
            window_changes.extend(moved_windows(model.id, &old, &c.licenses));
        }
        if licenses_changed {
            license::Entity::delete_many().filter(license::Column::CustomerId.eq(model.id)).exec(&txn).await?;
            if !new_rows.is_empty() {
                license::Entity::insert_many(new_rows).exec_without_returning(&txn).await?;
            }
        }
        if before.is_none() || licenses_changed || before.is_some_and(|b| b.account_name != model.account_name) {
            audit::record(
                &txn,
                AuditRecord {
                    at: now,
                    tenant_id: p.tenant_id,
                    actor: &p.actor(),
                    action: if before.is_some() { "customer.updated" } else { "customer.created" },
                    entity_type: "customer",
                    entity_id: model.id.to_string(),
                    before: before.map(|b| json!({"external_id": b.external_id, "account_name": b.account_name, "licenses": old_view})),
                    after: Some(json!({"external_id": model.external_id, "account_name": model.account_name, "licenses": new_view})),
                    detail: None,
                },
            )
            .await?;
        }
        saved.push(model);
    }
    // A moved license window changes the monthly values of the months it moved over.
    ledger::stale::inputs_changed(
        &txn,
        now,
        p.tenant_id,
        &window_changes,
        &p.actor(),
        "a license window of an already pushed period moved",
    )
    .await?;
    txn.commit().await?;
    Ok(Ok(saved))
}

/// The input changes of a customer's licenses going from `old` to `new`, per module: a bound that
/// moved, or a license that appeared or disappeared (every month from its start on).
fn moved_windows(customer_id: i64, old: &[license::Model], new: &[LicenseInput]) -> Vec<InputChange> {
    let modules: HashSet<&str> =
        old.iter().map(|l| l.product_module.as_str()).chain(new.iter().map(|l| l.product_module.as_str())).collect();
    let mut out = Vec::new();
    for module in modules {
        let Ok(m) = module.parse::<domain::ProductModule>() else { continue };
        let before = old.iter().find(|l| l.product_module == module).map(|l| (l.provisioned_on, l.deprovisioned_on));
        let after = new.iter().find(|l| l.product_module.as_str() == module).map(|l| (l.provisioned_on, l.deprovisioned_on));
        match (before, after) {
            (Some(b), Some(a)) => out.extend(InputChange::window(customer_id, m, b, a)),
            (Some((start, _)), None) | (None, Some((start, _))) => {
                out.extend(InputChange::window(customer_id, m, (start, Some(start)), (start, None)));
            }
            (None, None) => {}
        }
    }
    out
}

fn licenses_view<'a>(it: impl Iterator<Item = (&'a str, &'a str, NaiveDate, Option<NaiveDate>, serde_json::Value)>) -> serde_json::Value {
    let mut v: Vec<_> = it
        .map(|(m, e, p, d, a)| json!({"product_module": m, "edition": e, "provisioned_on": p, "deprovisioned_on": d, "add_ons": a}))
        .collect();
    v.sort_by_key(|x| x["product_module"].as_str().unwrap_or_default().to_string());
    serde_json::Value::Array(v)
}

fn validate_customers(input: &[CustomerInput]) -> Vec<UserError> {
    let mut errors = Vec::new();
    if input.len() > MAX_CUSTOMERS_PER_CALL {
        errors.push(
            UserError::new(codes::BATCH_TOO_LARGE, format!("at most {MAX_CUSTOMERS_PER_CALL} customers per call, got {}", input.len()))
                .at(["input"]),
        );
        return errors;
    }
    let mut seen = HashSet::new();
    for (i, c) in input.iter().enumerate() {
        let at = |name: &str| vec!["input".to_string(), i.to_string(), name.to_string()];
        let ext = c.external_id.trim();
        if ext.is_empty() || ext.chars().count() > MAX_TEXT {
            errors
                .push(UserError::new(codes::INVALID_INPUT, format!("externalId must be 1 to {MAX_TEXT} characters")).at(at("externalId")));
        } else if !seen.insert(ext.to_string()) {
            errors
                .push(UserError::new("DUPLICATE_CUSTOMER", format!("externalId {ext:?} appears twice in this call")).at(at("externalId")));
        }
        let name = c.account_name.trim();
        if name.is_empty() || name.chars().count() > MAX_TEXT {
            errors.push(
                UserError::new(codes::INVALID_INPUT, format!("accountName must be 1 to {MAX_TEXT} characters")).at(at("accountName")),
            );
        }
        let mut modules = HashSet::new();
        for (j, l) in c.licenses.iter().enumerate() {
            let lat = |name: &str| vec!["input".to_string(), i.to_string(), "licenses".to_string(), j.to_string(), name.to_string()];
            if !modules.insert(l.product_module) {
                errors.push(
                    UserError::new("DUPLICATE_LICENSE", format!("{} is licensed twice for this customer", l.product_module))
                        .at(lat("productModule")),
                );
            }
            if l.deprovisioned_on.is_some_and(|d| d < l.provisioned_on) {
                errors.push(
                    UserError::new(codes::INVALID_INPUT, "deprovisionedOn must not be before provisionedOn").at(lat("deprovisionedOn")),
                );
            }
            if l.add_ons.len() > MAX_ADD_ONS || l.add_ons.iter().any(|a| a.trim().is_empty() || a.chars().count() > MAX_TEXT) {
                errors.push(
                    UserError::new(codes::INVALID_INPUT, format!("addOns: at most {MAX_ADD_ONS} names of 1 to {MAX_TEXT} characters"))
                        .at(lat("addOns")),
                );
            }
        }
    }
    errors
}

/// Keyset position of the customer list (ordered by account name, then id).
#[derive(Serialize, Deserialize)]
struct CustomerCursor(String, i64);

pub async fn list_customers(
    db: &DatabaseConnection,
    tenant_id: i64,
    limit: u64,
    after: Option<&str>,
    search: Option<&str>,
    mapped: Option<bool>,
) -> ServiceResult<Page<customer::Model>> {
    let mut q = customer::Entity::find().filter(customer::Column::TenantId.eq(tenant_id));
    if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
        let pattern = format!("%{}%", escape_like(&s.to_lowercase()));
        q = q.filter(
            Condition::any()
                .add(
                    Expr::expr(Func::lower(Expr::col((customer::Entity, customer::Column::AccountName))))
                        .like(sea_orm::sea_query::LikeExpr::new(pattern.clone()).escape('\\')),
                )
                .add(
                    Expr::expr(Func::lower(Expr::col((customer::Entity, customer::Column::ExternalId))))
                        .like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\')),
                ),
        );
    }
    if let Some(m) = mapped {
        let sub = Query::select()
            .column(customer_mapping::Column::CustomerId)
            .from(customer_mapping::Entity)
            .and_where(customer_mapping::Column::TenantId.eq(tenant_id))
            .to_owned();
        q = q.filter(if m { customer::Column::Id.in_subquery(sub) } else { customer::Column::Id.not_in_subquery(sub) });
    }
    if let Some(a) = after {
        let CustomerCursor(name, id) = decode_cursor(a)?;
        q = q.filter(
            Condition::any()
                .add(customer::Column::AccountName.gt(name.clone()))
                .add(Condition::all().add(customer::Column::AccountName.eq(name)).add(customer::Column::Id.gt(id))),
        );
    }
    let rows =
        q.order_by(customer::Column::AccountName, Order::Asc).order_by(customer::Column::Id, Order::Asc).limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows, limit, |c| encode_cursor(&CustomerCursor(c.account_name.clone(), c.id))))
}

pub(crate) fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

pub async fn get_customer<C: ConnectionTrait>(db: &C, tenant_id: i64, id: i64) -> ServiceResult<Option<customer::Model>> {
    Ok(customer::Entity::find_by_id(id).filter(customer::Column::TenantId.eq(tenant_id)).one(db).await?)
}

/// Customers by id (for DataLoaders), tenant-scoped.
pub async fn customers_by_ids(db: &DatabaseConnection, tenant_id: i64, ids: &[i64]) -> ServiceResult<Vec<customer::Model>> {
    Ok(customer::Entity::find()
        .filter(customer::Column::TenantId.eq(tenant_id))
        .filter(customer::Column::Id.is_in(ids.to_vec()))
        .all(db)
        .await?)
}

/// Licenses of many customers (for DataLoaders), tenant-scoped.
pub async fn licenses_of(db: &DatabaseConnection, tenant_id: i64, customer_ids: &[i64]) -> ServiceResult<Vec<license::Model>> {
    Ok(license::Entity::find()
        .filter(license::Column::TenantId.eq(tenant_id))
        .filter(license::Column::CustomerId.is_in(customer_ids.to_vec()))
        .order_by_asc(license::Column::ProductModule)
        .all(db)
        .await?)
}

/// The companies mapped to many customers (for DataLoaders): (mapping, company if cached).
pub async fn companies_of(
    db: &DatabaseConnection,
    tenant_id: i64,
    customer_ids: &[i64],
) -> ServiceResult<Vec<(customer_mapping::Model, Option<cw_company::Model>)>> {
    let maps = customer_mapping::Entity::find()
        .filter(customer_mapping::Column::TenantId.eq(tenant_id))
        .filter(customer_mapping::Column::CustomerId.is_in(customer_ids.to_vec()))
        .all(db)
        .await?;
    let company_ids: Vec<i64> = maps.iter().map(|m| m.cw_company_id).collect();
    let companies: HashMap<i64, cw_company::Model> = cw_company::Entity::find()
        .filter(cw_company::Column::TenantId.eq(tenant_id))
        .filter(cw_company::Column::Id.is_in(company_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    Ok(maps
        .into_iter()
        .map(|m| {
            let c = companies.get(&m.cw_company_id).cloned();
            (m, c)
        })
        .collect())
}

/// Map a customer to an Active company of the refreshed catalog (one-to-one both ways).
pub async fn map_customer(
    db: &DatabaseConnection,
    p: &Principal,
    customer_id: &str,
    cw_company_id: i64,
    unmap_products: bool,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<customer::Model>> {
    let not_found = |field: &str, what: &str| Ok(Err(vec![UserError::not_found(what).at([field])]));
    let Some(cid) = super::parse_id(customer_id) else { return not_found("customerId", "customer") };
    let txn = crate::engine::sql::begin_write(db).await?;
    let Some(cust) = get_customer(&txn, p.tenant_id, cid).await? else { return not_found("customerId", "customer") };
    let Some(company) = cw_company::Entity::find_by_id((p.tenant_id, cw_company_id)).one(&txn).await? else {
        return not_found("cwCompanyId", "ConnectWise company (refresh the catalog if it is new)");
    };
    if !company.status.eq_ignore_ascii_case("Active") {
        return Ok(Err(vec![
            UserError::new(
                codes::COMPANY_NOT_ACTIVE,
                format!("company {} ({}) is {}, not Active", company.id, company.name, company.status),
            )
            .at(["cwCompanyId"]),
        ]));
    }
    let current = customer_mapping::Entity::find().filter(customer_mapping::Column::CustomerId.eq(cid)).one(&txn).await?;
    if current.as_ref().is_some_and(|m| m.cw_company_id == cw_company_id) {
        return Ok(Ok(cust));
    }
    if let Some(other) = customer_mapping::Entity::find()
        .filter(customer_mapping::Column::TenantId.eq(p.tenant_id))
        .filter(customer_mapping::Column::CwCompanyId.eq(cw_company_id))
        .one(&txn)
        .await?
    {
        return Ok(Err(vec![
            UserError::new(
                codes::COMPANY_ALREADY_MAPPED,
                format!("company {} is already mapped to customer {}", cw_company_id, other.customer_id),
            )
            .at(["cwCompanyId"]),
        ]));
    }
    if let Some(cur) = &current {
        if let Err(e) = remove_product_mappings_if_allowed(&txn, now, p, cid, unmap_products).await? {
            return Ok(Err(e));
        }
        customer_mapping::Entity::delete_by_id(cur.id).exec(&txn).await?;
    }
    let inserted = customer_mapping::ActiveModel {
        tenant_id: Set(p.tenant_id),
        customer_id: Set(cid),
        cw_company_id: Set(cw_company_id),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await;
    if let Err(e) = inserted {
        return match unique_violation(&e) {
            Some(UniqueIndex::CustomerMappingCompany) => Ok(Err(vec![
                UserError::new(codes::COMPANY_ALREADY_MAPPED, format!("company {cw_company_id} is already mapped")).at(["cwCompanyId"]),
            ])),
            Some(UniqueIndex::CustomerMappingCustomer) => Ok(Err(vec![
                UserError::new(codes::VERSION_CONFLICT, "the customer was mapped concurrently; reload and retry").at(["customerId"]),
            ])),
            _ => Err(e.into()),
        };
    }
    audit::record(
        &txn,
        AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: &p.actor(),
            action: "customer_mapping.mapped",
            entity_type: "customer",
            entity_id: cid.to_string(),
            before: current.map(|c| json!({"cw_company_id": c.cw_company_id})),
            after: Some(json!({"cw_company_id": cw_company_id, "cw_company_name": company.name})),
            detail: Some(json!({"unmap_products": unmap_products})),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Ok(cust))
}

pub async fn unmap_customer(
    db: &DatabaseConnection,
    p: &Principal,
    customer_id: &str,
    unmap_products: bool,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<customer::Model>> {
    let Some(cid) = super::parse_id(customer_id) else { return Ok(Err(vec![UserError::not_found("customer").at(["customerId"])])) };
    let txn = crate::engine::sql::begin_write(db).await?;
    let Some(cust) = get_customer(&txn, p.tenant_id, cid).await? else {
        return Ok(Err(vec![UserError::not_found("customer").at(["customerId"])]));
    };
    let Some(current) = customer_mapping::Entity::find().filter(customer_mapping::Column::CustomerId.eq(cid)).one(&txn).await? else {
        return Ok(Ok(cust));
    };
    if let Err(e) = remove_product_mappings_if_allowed(&txn, now, p, cid, unmap_products).await? {
        return Ok(Err(e));
    }
    customer_mapping::Entity::delete_by_id(current.id).exec(&txn).await?;
    audit::record(
        &txn,
        AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: &p.actor(),
            action: "customer_mapping.unmapped",
            entity_type: "customer",
            entity_id: cid.to_string(),
            before: Some(json!({"cw_company_id": current.cw_company_id})),
            after: None,
            detail: Some(json!({"unmap_products": unmap_products})),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Ok(cust))
}

/// Changing or removing a customer's company with product mappings needs `unmapProducts: true`,
/// which removes them (and cancels their pending pushes) in the caller's transaction.
async fn remove_product_mappings_if_allowed<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    p: &Principal,
    customer_id: i64,
    unmap_products: bool,
) -> ServiceResult<Outcome<()>> {
    let mappings = product_mapping::Entity::find().filter(product_mapping::Column::CustomerId.eq(customer_id)).all(txn).await?;
    if mappings.is_empty() {
        return Ok(Ok(()));
    }
    if !unmap_products {
        return Ok(Err(vec![
            UserError::new(
                codes::CUSTOMER_HAS_PRODUCT_MAPPINGS,
                format!("the customer has {} product mapping(s); pass unmapProducts: true to remove them too", mappings.len()),
            )
            .at(["unmapProducts"]),
        ]));
    }
    super::mappings::delete_mappings(txn, now, p, &mappings, "customer unmapped").await?;
    Ok(Ok(()))
}
