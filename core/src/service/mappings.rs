//! Product mappings: (customer, module, usage, interval) → ConnectWise agreement + addition.
//! The rules are `domain::check_product_mapping`; the two duplicate rules are unique indexes, so
//! they hold under concurrency; this module loads the facts and writes.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, ExprTrait},
};
use serde_json::json;

use crate::{
    UserError,
    audit::{self, AuditRecord},
    auth::Principal,
    error::{Outcome, ServiceResult, UniqueIndex, unique_violation},
};
use domain::{AdditionFacts, AgreementFacts, IntervalMethod, LicenseWindow, MappingFacts, ProductModule, UsageMetric, codes};
use entity::{customer, customer_mapping, cw_addition, cw_agreement, cw_settings, license, product_mapping};

#[derive(Clone, Debug)]
pub struct MappingInput {
    pub customer_id: String,
    pub product_module: ProductModule,
    pub usage: UsageMetric,
    pub interval: IntervalMethod,
    pub cw_agreement_id: i64,
    pub cw_sequence_number: i64,
}

/// A validated mapping, ready to write.
#[derive(Clone, Debug)]
struct Resolved {
    input: MappingInput,
    customer_id: i64,
    addition_id: i64,
    product_id: Option<i64>,
    product_identifier: Option<String>,
}

pub async fn get_mapping<C: ConnectionTrait>(db: &C, tenant_id: i64, id: i64) -> ServiceResult<Option<product_mapping::Model>> {
    Ok(product_mapping::Entity::find_by_id(id).filter(product_mapping::Column::TenantId.eq(tenant_id)).one(db).await?)
}

pub async fn mappings_by_ids(db: &DatabaseConnection, tenant_id: i64, ids: &[i64]) -> ServiceResult<Vec<product_mapping::Model>> {
    Ok(product_mapping::Entity::find()
        .filter(product_mapping::Column::TenantId.eq(tenant_id))
        .filter(product_mapping::Column::Id.is_in(ids.to_vec()))
        .all(db)
        .await?)
}

pub async fn mappings_of_customers(
    db: &DatabaseConnection,
    tenant_id: i64,
    customer_ids: &[i64],
) -> ServiceResult<Vec<product_mapping::Model>> {
    Ok(product_mapping::Entity::find()
        .filter(product_mapping::Column::TenantId.eq(tenant_id))
        .filter(product_mapping::Column::CustomerId.is_in(customer_ids.to_vec()))
        .order_by_asc(product_mapping::Column::ProductModule)
        .order_by_asc(product_mapping::Column::Usage)
        .all(db)
        .await?)
}

/// Everything the rules need about one customer and a set of agreements, loaded in a few queries.
struct Facts {
    sync_enabled: bool,
    company_id: Option<i64>,
    licenses: HashMap<String, LicenseWindow>,
    agreements: HashMap<i64, AgreementFacts>,
    additions: HashMap<i64, Vec<AdditionFacts>>,
}

async fn load_facts<C: ConnectionTrait>(db: &C, tenant_id: i64, customer_id: i64, agreement_ids: &[i64]) -> Result<Facts, DbErr> {
    let sync_enabled = cw_settings::Entity::find_by_id(tenant_id).one(db).await?.is_some_and(|s| s.consumption_sync_enabled);
    let company_id = customer_mapping::Entity::find()
        .filter(customer_mapping::Column::CustomerId.eq(customer_id))
        .one(db)
        .await?
        .map(|m| m.cw_company_id);
    let licenses = license::Entity::find()
        .filter(license::Column::CustomerId.eq(customer_id))
        .all(db)
        .await?
        .into_iter()
        .map(|l| (l.product_module, LicenseWindow { provisioned_on: l.provisioned_on, deprovisioned_on: l.deprovisioned_on }))
        .collect();
    let agreements = cw_agreement::Entity::find()
        .filter(cw_agreement::Column::TenantId.eq(tenant_id))
        .filter(cw_agreement::Column::Id.is_in(agreement_ids.to_vec()))
        .all(db)
        .await?
        .into_iter()
        .map(|a| {
            (
                a.id,
                AgreementFacts {
                    id: a.id,
                    company_id: a.company_id,
                    status: a.status,
                    cancelled_flag: a.cancelled_flag,
                    end_date: a.end_date,
                },
            )
        })
        .collect();
    let mut additions: HashMap<i64, Vec<AdditionFacts>> = HashMap::new();
    for a in cw_addition::Entity::find()
        .filter(cw_addition::Column::TenantId.eq(tenant_id))
        .filter(cw_addition::Column::AgreementId.is_in(agreement_ids.to_vec()))
        .all(db)
        .await?
    {
        additions.entry(a.agreement_id).or_default().push(AdditionFacts {
            id: a.id,
            sequence_number: a.sequence_number,
            fractional_sequence_number: a.fractional_sequence_number,
            product_id: a.product_id,
            product_identifier: a.product_identifier,
            cancelled_date: a.cancelled_date,
        });
    }
    Ok(Facts { sync_enabled, company_id, licenses, agreements, additions })
}

/// Apply the rule matrix to one input; `path` prefixes the error's field (e.g. `["input"]`).
fn check(facts: &Facts, input: &MappingInput, customer_id: i64, today: NaiveDate, path: &[String]) -> Result<Resolved, UserError> {
    let f = MappingFacts {
        today,
        consumption_sync_enabled: facts.sync_enabled,
        module: input.product_module,
        usage: input.usage,
        interval: input.interval,
        customer_company_id: facts.company_id,
        license: facts.licenses.get(input.product_module.as_str()),
        agreement: facts.agreements.get(&input.cw_agreement_id),
        agreement_additions: facts.additions.get(&input.cw_agreement_id).map(Vec::as_slice).unwrap_or(&[]),
        sequence_number: input.cw_sequence_number,
    };
    match domain::check_product_mapping(&f) {
        Ok(r) => Ok(Resolved {
            input: input.clone(),
            customer_id,
            addition_id: r.addition_id,
            product_id: r.product_id,
            product_identifier: r.product_identifier,
        }),
        Err(v) => {
            let e = UserError::new(v.code, v.message);
            Err(match v.field {
                Some(name) => e.at(path.iter().cloned().chain([name.to_string()])),
                None => e,
            })
        }
    }
}

/// Serialize the mapping writes of these customers: the `SUM` exclusivity rule reads the
/// customer's mappings, then writes, so two concurrent writes must not both pass it. A row lock on
/// each customer on PostgreSQL (ascending, so never a deadlock); SQLite's write transaction
/// already serializes every writer.
async fn lock_customers<C: ConnectionTrait>(txn: &C, ids: &[i64]) -> Result<(), DbErr> {
    if !crate::engine::sql::is_pg(txn) {
        return Ok(());
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    crate::engine::sql::query(txn, "SELECT id FROM customers WHERE id = ANY($1) ORDER BY id FOR UPDATE", vec![ids.into()]).await?;
    Ok(())
}

fn key_of(m: &product_mapping::Model) -> Option<domain::MappingKey> {
    Some((m.product_module.parse().ok()?, m.usage.parse().ok()?, m.interval_method.parse().ok()?))
}

fn sum_error(path: &[String]) -> UserError {
    UserError::new(
        codes::DUPLICATE_USAGE_MAPPING,
        "a SUM mapping bills all three Enterprise Workloads storage types, so it cannot stand beside another \
         Enterprise Workloads mapping of the same customer (it would be billed twice)",
    )
    .at(path.iter().cloned().chain(["interval".to_string()]))
}

/// `DUPLICATE_USAGE_MAPPING` when `r` would break the `SUM` exclusivity rule against the customer's
/// other mappings (all but `own`). Call it after [`lock_customers`].
async fn check_sum_exclusive<C: ConnectionTrait>(
    txn: &C,
    tenant_id: i64,
    r: &Resolved,
    own: Option<i64>,
    path: &[String],
) -> Result<Option<UserError>, DbErr> {
    let others: Vec<domain::MappingKey> =
        mappings_of_customers_in(txn, tenant_id, r.customer_id).await?.iter().filter(|m| Some(m.id) != own).filter_map(key_of).collect();
    let new = (r.input.product_module, r.input.usage, r.input.interval);
    Ok((!domain::sum_is_exclusive(&others, new)).then(|| sum_error(path)))
}

fn duplicate_error(idx: UniqueIndex, path: &[String]) -> Option<UserError> {
    let at = |name: &str| path.iter().cloned().chain([name.to_string()]).collect::<Vec<_>>();
    match idx {
        UniqueIndex::ProductMappingAddition => Some(
            UserError::new(
                codes::DUPLICATE_ADDITION_MAPPING,
                "this agreement addition is already mapped; one agreement + addition maps to exactly one usage",
            )
            .at(at("cwSequenceNumber")),
        ),
        UniqueIndex::ProductMappingUsage => Some(
            UserError::new(
                codes::DUPLICATE_USAGE_MAPPING,
                "this customer's module and usage is already mapped to an addition (it would be billed twice)",
            )
            .at(at("usage")),
        ),
        _ => None,
    }
}

fn view(m: &product_mapping::Model) -> serde_json::Value {
    json!({
        "customer_id": m.customer_id, "product_module": m.product_module, "usage": m.usage, "interval": m.interval_method,
        "cw_agreement_id": m.cw_agreement_id, "cw_sequence_number": m.cw_sequence_number, "cw_addition_id": m.cw_addition_id,
        "cw_product_id": m.cw_product_id, "version": m.version,
    })
}

async fn audit_mapping<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    p: &Principal,
    action: &str,
    id: i64,
    before: Option<&product_mapping::Model>,
    after: Option<&product_mapping::Model>,
) -> Result<(), DbErr> {
    audit::record(
        db,
        AuditRecord {
            at: now,
            tenant_id: p.tenant_id,
            actor: &p.actor(),
            action,
            entity_type: "product_mapping",
            entity_id: id.to_string(),
            before: before.map(view),
            after: after.map(view),
            detail: None,
        },
    )
    .await
}

fn input_path() -> Vec<String> {
    vec!["input".to_string()]
}

pub async fn create_product_mapping(
    db: &DatabaseConnection,
    p: &Principal,
    input: MappingInput,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<product_mapping::Model>> {
    let today = now.date_naive();
    let txn = crate::engine::sql::begin_write(db).await?;
    let Some(cust) = customer_for(&txn, p.tenant_id, &input.customer_id).await? else {
        return Ok(Err(vec![UserError::not_found("customer").at(["input", "customerId"])]));
    };
    lock_customers(&txn, &[cust.id]).await?;
    let facts = load_facts(&txn, p.tenant_id, cust.id, &[input.cw_agreement_id]).await?;
    let r = match check(&facts, &input, cust.id, today, &input_path()) {
        Ok(r) => r,
        Err(e) => return Ok(Err(vec![e])),
    };
    if let Some(e) = check_sum_exclusive(&txn, p.tenant_id, &r, None, &input_path()).await? {
        return Ok(Err(vec![e]));
    }
    let inserted = active_model(&r, p.tenant_id, now).insert(&txn).await;
    let model = match inserted {
        Ok(m) => m,
        Err(e) => {
            drop(txn);
            return duplicate_to_user_error(db, p.tenant_id, &r, None, e, &input_path()).await;
        }
    };
    audit_mapping(&txn, now, p, "product_mapping.created", model.id, None, Some(&model)).await?;
    match txn.commit().await {
        Ok(()) => Ok(Ok(model)),
        Err(e) => unique_to_user_error(e, &input_path()),
    }
}

/// [`unique_to_user_error`] for the single mapping `r` (other than `own_id`): an input that duplicates
/// an existing mapping on both counts reports `DUPLICATE_ADDITION_MAPPING`, whichever unique index the
/// database checked first (PostgreSQL checks the addition index first, SQLite the usage index).
async fn duplicate_to_user_error<T>(
    db: &DatabaseConnection,
    tenant_id: i64,
    r: &Resolved,
    own_id: Option<i64>,
    e: DbErr,
    path: &[String],
) -> ServiceResult<Outcome<T>> {
    if unique_violation(&e) == Some(UniqueIndex::ProductMappingUsage) {
        let mut same_addition = product_mapping::Entity::find()
            .filter(product_mapping::Column::TenantId.eq(tenant_id))
            .filter(product_mapping::Column::CwAgreementId.eq(r.input.cw_agreement_id))
            .filter(product_mapping::Column::CwAdditionId.eq(r.addition_id));
        if let Some(id) = own_id {
            same_addition = same_addition.filter(product_mapping::Column::Id.ne(id));
        }
        if same_addition.one(db).await?.is_some() {
            return Ok(Err(duplicate_error(UniqueIndex::ProductMappingAddition, path).into_iter().collect()));
        }
    }
    unique_to_user_error(e, path)
}

fn unique_to_user_error<T>(e: DbErr, path: &[String]) -> ServiceResult<Outcome<T>> {
    match unique_violation(&e).and_then(|idx| duplicate_error(idx, path)) {
        Some(ue) => Ok(Err(vec![ue])),
        None => Err(e.into()),
    }
}

fn active_model(r: &Resolved, tenant_id: i64, now: chrono::DateTime<Utc>) -> product_mapping::ActiveModel {
    product_mapping::ActiveModel {
        tenant_id: Set(tenant_id),
        customer_id: Set(r.customer_id),
        product_module: Set(r.input.product_module.as_str().to_string()),
        usage: Set(r.input.usage.as_str().to_string()),
        interval_method: Set(r.input.interval.as_str().to_string()),
        cw_agreement_id: Set(r.input.cw_agreement_id),
        cw_sequence_number: Set(r.input.cw_sequence_number),
        cw_addition_id: Set(r.addition_id),
        cw_product_id: Set(r.product_id),
        cw_product_identifier: Set(r.product_identifier.clone()),
        version: Set(1),
        stale: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

async fn customer_for<C: ConnectionTrait>(db: &C, tenant_id: i64, id: &str) -> ServiceResult<Option<customer::Model>> {
    match super::parse_id(id) {
        Some(id) => super::customers::get_customer(db, tenant_id, id).await,
        None => Ok(None),
    }
}

pub async fn update_product_mapping(
    db: &DatabaseConnection,
    p: &Principal,
    id: &str,
    input: MappingInput,
    expected_version: i32,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<product_mapping::Model>> {
    let today = now.date_naive();
    let not_found = || Ok(Err(vec![UserError::not_found("product mapping").at(["id"])]));
    let Some(mid) = super::parse_id(id) else { return not_found() };
    let txn = crate::engine::sql::begin_write(db).await?;
    let Some(before) = get_mapping(&txn, p.tenant_id, mid).await? else { return not_found() };
    let conflict = || {
        Ok(Err(vec![
            UserError::new(
                codes::VERSION_CONFLICT,
                format!("the mapping changed since version {expected_version}; reload it and apply your change again"),
            )
            .at(["expectedVersion"]),
        ]))
    };
    if before.version != expected_version {
        return conflict();
    }
    let Some(cust) = customer_for(&txn, p.tenant_id, &input.customer_id).await? else {
        return Ok(Err(vec![UserError::not_found("customer").at(["input", "customerId"])]));
    };
    lock_customers(&txn, &[cust.id, before.customer_id]).await?;
    let facts = load_facts(&txn, p.tenant_id, cust.id, &[input.cw_agreement_id]).await?;
    let r = match check(&facts, &input, cust.id, today, &input_path()) {
        Ok(r) => r,
        Err(e) => return Ok(Err(vec![e])),
    };
    if let Some(e) = check_sum_exclusive(&txn, p.tenant_id, &r, Some(mid), &input_path()).await? {
        return Ok(Err(vec![e]));
    }
    if before.cw_addition_id != r.addition_id || before.cw_agreement_id != r.input.cw_agreement_id || before.customer_id != r.customer_id {
        // The mapping leaves its addition: the addition's unfinished pushes may no longer write it.
        super::sync::cancel_pushes_for_mapping(&txn, now, p.tenant_id, &[mid], &p.actor()).await?;
    }
    let updated = product_mapping::Entity::update_many()
        .col_expr(product_mapping::Column::CustomerId, Expr::value(r.customer_id))
        .col_expr(product_mapping::Column::ProductModule, Expr::value(r.input.product_module.as_str()))
        .col_expr(product_mapping::Column::Usage, Expr::value(r.input.usage.as_str()))
        .col_expr(product_mapping::Column::IntervalMethod, Expr::value(r.input.interval.as_str()))
        .col_expr(product_mapping::Column::CwAgreementId, Expr::value(r.input.cw_agreement_id))
        .col_expr(product_mapping::Column::CwSequenceNumber, Expr::value(r.input.cw_sequence_number))
        .col_expr(product_mapping::Column::CwAdditionId, Expr::value(r.addition_id))
        .col_expr(product_mapping::Column::CwProductId, Expr::value(r.product_id))
        .col_expr(product_mapping::Column::CwProductIdentifier, Expr::value(r.product_identifier.clone()))
        .col_expr(product_mapping::Column::Version, Expr::col(product_mapping::Column::Version).add(1))
        .col_expr(product_mapping::Column::UpdatedAt, Expr::value(now))
        .filter(product_mapping::Column::Id.eq(mid))
        .filter(product_mapping::Column::Version.eq(expected_version))
        .exec(&txn)
        .await;
    match updated {
        Ok(res) if res.rows_affected == 0 => return conflict(),
        Ok(_) => {}
        Err(e) => {
            drop(txn);
            return duplicate_to_user_error(db, p.tenant_id, &r, Some(mid), e, &input_path()).await;
        }
    }
    let Some(after) = get_mapping(&txn, p.tenant_id, mid).await? else { return not_found() };
    audit_mapping(&txn, now, p, "product_mapping.updated", mid, Some(&before), Some(&after)).await?;
    match txn.commit().await {
        Ok(()) => Ok(Ok(after)),
        Err(e) => unique_to_user_error(e, &input_path()),
    }
}

pub async fn delete_product_mapping(db: &DatabaseConnection, p: &Principal, id: &str, now: DateTime<Utc>) -> ServiceResult<Outcome<i64>> {
    let not_found = || Ok(Err(vec![UserError::not_found("product mapping").at(["id"])]));
    let Some(mid) = super::parse_id(id) else { return not_found() };
    let txn = crate::engine::sql::begin_write(db).await?;
    let Some(m) = get_mapping(&txn, p.tenant_id, mid).await? else { return not_found() };
    delete_mappings(&txn, now, p, std::slice::from_ref(&m), "mapping deleted").await?;
    txn.commit().await?;
    Ok(Ok(mid))
}

/// Delete mappings inside the caller's transaction: cancel their pending pushes first
/// (cancellation beats the run snapshot), then delete, audited.
pub(crate) async fn delete_mappings<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    p: &Principal,
    mappings: &[product_mapping::Model],
    reason: &str,
) -> Result<(), DbErr> {
    if mappings.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = mappings.iter().map(|m| m.id).collect();
    super::sync::cancel_pushes_for_mapping(txn, now, p.tenant_id, &ids, &p.actor()).await?;
    product_mapping::Entity::delete_many().filter(product_mapping::Column::Id.is_in(ids)).exec(txn).await?;
    for m in mappings {
        audit::record(
            txn,
            AuditRecord {
                at: now,
                tenant_id: p.tenant_id,
                actor: &p.actor(),
                action: "product_mapping.deleted",
                entity_type: "product_mapping",
                entity_id: m.id.to_string(),
                before: Some(view(m)),
                after: None,
                detail: Some(json!({"reason": reason})),
            },
        )
        .await?;
    }
    Ok(())
}

/// Atomic replace-all of one customer's mappings: every entry valid or nothing written; mappings
/// whose (module, usage) stays keep their id (and version, unless they change).
pub async fn save_product_mappings(
    db: &DatabaseConnection,
    p: &Principal,
    customer_id: &str,
    inputs: Vec<MappingInput>,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<Vec<product_mapping::Model>>> {
    let today = now.date_naive();
    let txn = crate::engine::sql::begin_write(db).await?;
    let Some(cust) = customer_for(&txn, p.tenant_id, customer_id).await? else {
        return Ok(Err(vec![UserError::not_found("customer").at(["customerId"])]));
    };
    lock_customers(&txn, &[cust.id]).await?;
    let agreement_ids: Vec<i64> = inputs.iter().map(|i| i.cw_agreement_id).collect::<HashSet<_>>().into_iter().collect();
    let facts = load_facts(&txn, p.tenant_id, cust.id, &agreement_ids).await?;
    let mut errors = Vec::new();
    let mut resolved = Vec::new();
    let mut seen_usage = HashSet::new();
    let mut seen_addition = HashSet::new();
    for (i, input) in inputs.iter().enumerate() {
        let path = vec!["mappings".to_string(), i.to_string()];
        let at = |name: &str| path.iter().cloned().chain([name.to_string()]).collect::<Vec<_>>();
        if super::parse_id(&input.customer_id) != Some(cust.id) {
            errors.push(
                UserError::new(codes::INVALID_INPUT, "every entry's customerId must be the customerId being saved").at(at("customerId")),
            );
            continue;
        }
        match check(&facts, input, cust.id, today, &path) {
            Err(e) => errors.push(e),
            Ok(r) => {
                if !seen_usage.insert((input.product_module, input.usage)) {
                    errors.push(
                        duplicate_error(UniqueIndex::ProductMappingUsage, &path)
                            .unwrap_or_else(|| UserError::new(codes::DUPLICATE_USAGE_MAPPING, "duplicate")),
                    );
                } else if !seen_addition.insert((input.cw_agreement_id, r.addition_id)) {
                    errors.push(
                        duplicate_error(UniqueIndex::ProductMappingAddition, &path)
                            .unwrap_or_else(|| UserError::new(codes::DUPLICATE_ADDITION_MAPPING, "duplicate")),
                    );
                } else {
                    resolved.push((i, r));
                }
            }
        }
    }
    // The saved set replaces the customer's mappings: SUM exclusivity holds within it.
    let keys: Vec<(usize, domain::MappingKey)> =
        resolved.iter().map(|(i, r)| (*i, (r.input.product_module, r.input.usage, r.input.interval))).collect();
    for (i, key) in &keys {
        let others: Vec<domain::MappingKey> = keys.iter().filter(|(j, _)| j != i).map(|(_, k)| *k).collect();
        if !domain::sum_is_exclusive(&others, *key) {
            errors.push(sum_error(&["mappings".to_string(), i.to_string()]));
        }
    }
    // Additions already mapped by another customer.
    let addition_ids: Vec<i64> = resolved.iter().map(|(_, r)| r.addition_id).collect();
    let taken: HashSet<(i64, i64)> = product_mapping::Entity::find()
        .filter(product_mapping::Column::TenantId.eq(p.tenant_id))
        .filter(product_mapping::Column::CwAdditionId.is_in(addition_ids))
        .filter(product_mapping::Column::CustomerId.ne(cust.id))
        .all(&txn)
        .await?
        .into_iter()
        .map(|m| (m.cw_agreement_id, m.cw_addition_id))
        .collect();
    for (i, r) in &resolved {
        if taken.contains(&(r.input.cw_agreement_id, r.addition_id)) {
            errors.extend(duplicate_error(UniqueIndex::ProductMappingAddition, &["mappings".to_string(), i.to_string()]));
        }
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }

    let existing = mappings_of_customers_in(&txn, p.tenant_id, cust.id).await?;
    let by_key: HashMap<(String, String), product_mapping::Model> =
        existing.iter().map(|m| ((m.product_module.clone(), m.usage.clone()), m.clone())).collect();
    let new_keys: HashSet<(String, String)> =
        resolved.iter().map(|(_, r)| (r.input.product_module.as_str().to_string(), r.input.usage.as_str().to_string())).collect();
    let removed: Vec<product_mapping::Model> =
        existing.iter().filter(|m| !new_keys.contains(&(m.product_module.clone(), m.usage.clone()))).cloned().collect();
    delete_mappings(&txn, now, p, &removed, "replaced by saveProductMappings").await?;

    let mut changed = Vec::new();
    for (_, r) in &resolved {
        let key = (r.input.product_module.as_str().to_string(), r.input.usage.as_str().to_string());
        if let Some(old) = by_key.get(&key) {
            let differs = old.interval_method != r.input.interval.as_str()
                || old.cw_agreement_id != r.input.cw_agreement_id
                || old.cw_sequence_number != r.input.cw_sequence_number
                || old.cw_addition_id != r.addition_id
                || old.cw_product_id != r.product_id;
            if differs {
                changed.push((old.clone(), r.clone()));
            }
        }
    }
    // Rows that leave their addition: the addition's unfinished pushes may no longer write it.
    let leaving: Vec<i64> = changed
        .iter()
        .filter(|(old, r)| old.cw_addition_id != r.addition_id || old.cw_agreement_id != r.input.cw_agreement_id)
        .map(|(old, _)| old.id)
        .collect();
    super::sync::cancel_pushes_for_mapping(&txn, now, p.tenant_id, &leaving, &p.actor()).await?;
    // Park the changing rows' additions first so swaps between kept rows never collide mid-way
    // (unique indexes are checked per statement and SQLite cannot defer them).
    for (old, _) in &changed {
        product_mapping::Entity::update_many()
            .col_expr(product_mapping::Column::CwAdditionId, Expr::value(-old.id))
            .filter(product_mapping::Column::Id.eq(old.id))
            .exec(&txn)
            .await?;
    }
    for (old, r) in &changed {
        let res = product_mapping::Entity::update_many()
            .col_expr(product_mapping::Column::IntervalMethod, Expr::value(r.input.interval.as_str()))
            .col_expr(product_mapping::Column::CwAgreementId, Expr::value(r.input.cw_agreement_id))
            .col_expr(product_mapping::Column::CwSequenceNumber, Expr::value(r.input.cw_sequence_number))
            .col_expr(product_mapping::Column::CwAdditionId, Expr::value(r.addition_id))
            .col_expr(product_mapping::Column::CwProductId, Expr::value(r.product_id))
            .col_expr(product_mapping::Column::CwProductIdentifier, Expr::value(r.product_identifier.clone()))
            .col_expr(product_mapping::Column::Version, Expr::value(old.version + 1))
            .col_expr(product_mapping::Column::UpdatedAt, Expr::value(now))
            .filter(product_mapping::Column::Id.eq(old.id))
            .exec(&txn)
            .await;
        if let Err(e) = res {
            return unique_to_user_error(e, &["mappings".to_string()]);
        }
    }
    for (_, r) in resolved
        .iter()
        .filter(|(_, r)| !by_key.contains_key(&(r.input.product_module.as_str().to_string(), r.input.usage.as_str().to_string())))
    {
        match active_model(r, p.tenant_id, now).insert(&txn).await {
            Ok(m) => audit_mapping(&txn, now, p, "product_mapping.created", m.id, None, Some(&m)).await?,
            Err(e) => return unique_to_user_error(e, &["mappings".to_string()]),
        }
    }
    let after = mappings_of_customers_in(&txn, p.tenant_id, cust.id).await?;
    for (old, _) in &changed {
        if let Some(new) = after.iter().find(|m| m.id == old.id) {
            audit_mapping(&txn, now, p, "product_mapping.updated", old.id, Some(old), Some(new)).await?;
        }
    }
    match txn.commit().await {
        Ok(()) => Ok(Ok(after)),
        Err(e) => unique_to_user_error(e, &["mappings".to_string()]),
    }
}

async fn mappings_of_customers_in<C: ConnectionTrait>(
    db: &C,
    tenant_id: i64,
    customer_id: i64,
) -> Result<Vec<product_mapping::Model>, DbErr> {
    product_mapping::Entity::find()
        .filter(product_mapping::Column::TenantId.eq(tenant_id))
        .filter(product_mapping::Column::CustomerId.eq(customer_id))
        .order_by_asc(product_mapping::Column::ProductModule)
        .order_by_asc(product_mapping::Column::Usage)
        .all(db)
        .await
}
