//! Daily consumption: atomic, set-based ingest of sample batches (`recordConsumption`), reading a
//! customer's days back, and the preview of a month's values.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use domain::{IntervalMethod, MonthlyValue, Period, ProductModule, SkipReason, UsageMetric, codes};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait, Value};
use serde_json::json;

use crate::{
    auth::Principal,
    engine::sql::{self, AuditRow, Col, RowSet},
    error::{Outcome, ServiceError, ServiceResult, UserError},
    ledger::{self, stale::InputChange},
};

/// Most samples in one `recordConsumption` batch.
pub const MAX_BATCH: usize = 10_000;

/// Longest range `daily_consumption` answers, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// One sample as the integration sends it (strings are validated here, not in the resolver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleInput {
    pub customer_id: Option<String>,
    pub customer_external_id: Option<String>,
    pub product_module: ProductModule,
    pub usage: UsageMetric,
    pub day: String,
    pub value: String,
}

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordResult {
    /// Samples in the batch.
    pub accepted: u64,
    /// New days.
    pub inserted: u64,
    /// Days re-reported with another value (corrections, audited).
    pub updated: u64,
    /// Days re-reported with the same value.
    pub unchanged: u64,
    /// Mappings newly flagged stale because a corrected day was already pushed.
    pub stale_mappings: u64,
}

/// How a sample names its customer.
enum CustomerRef {
    Id(i64),
    External(String),
}

/// A sample that passed the checks that need no database.
struct Checked {
    index: usize,
    customer: CustomerRef,
    module: ProductModule,
    usage: UsageMetric,
    day: NaiveDate,
    micros: i64,
}

fn at(index: usize, name: &str) -> [String; 3] {
    ["samples".to_string(), index.to_string(), name.to_string()]
}

/// Record a batch of daily samples (`recordConsumption`): all or nothing.
pub async fn record_consumption(
    db: &DatabaseConnection,
    p: &Principal,
    samples: Vec<SampleInput>,
    now: DateTime<Utc>,
) -> ServiceResult<Outcome<RecordResult>> {
    if samples.len() > MAX_BATCH {
        return Ok(Err(vec![
            UserError::new(codes::BATCH_TOO_LARGE, format!("at most {MAX_BATCH} samples per batch, got {}", samples.len())).at(["samples"]),
        ]));
    }
    if samples.is_empty() {
        return Ok(Ok(RecordResult::default()));
    }

    // 1. Checks per sample.
    let mut errors: Vec<Vec<UserError>> = vec![Vec::new(); samples.len()];
    let mut checked = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let micros = domain::parse_micros(&s.value)
            .map_err(|e| {
                errors[i].push(UserError::new(codes::INVALID_VALUE, format!("value {:?}: {e}", clip(&s.value))).at(at(i, "value")))
            })
            .ok();
        let day = domain::parse_day(&s.day)
            .map_err(|e| errors[i].push(UserError::new(codes::INVALID_DAY, format!("day {:?}: {e}", clip(&s.day))).at(at(i, "day"))))
            .ok();
        if !s.product_module.allows_usage(s.usage) {
            errors[i].push(
                UserError::new(codes::USAGE_NOT_ALLOWED, format!("{} does not report {}", s.product_module, s.usage)).at(at(i, "usage")),
            );
        }
        let customer = match (s.customer_id.as_deref(), s.customer_external_id.as_deref()) {
            (Some(id), None) => match id.trim().parse::<i64>() {
                Ok(id) => Some(CustomerRef::Id(id)),
                Err(_) => {
                    errors[i].push(UserError::new(codes::UNKNOWN_CUSTOMER, "no customer has this id").at(at(i, "customerId")));
                    None
                }
            },
            (None, Some(ext)) => Some(CustomerRef::External(ext.to_string())),
            _ => {
                errors[i].push(
                    UserError::new(codes::UNKNOWN_CUSTOMER, "give exactly one of customerId and customerExternalId")
                        .at(at(i, "customerId")),
                );
                None
            }
        };
        if let (Some(micros), Some(day), Some(customer), true) = (micros, day, customer, errors[i].is_empty()) {
            checked.push(Checked { index: i, customer, module: s.product_module, usage: s.usage, day, micros });
        }
    }

    // 2. Customers, all in one query.
    let ids: Vec<i64> = checked
        .iter()
        .filter_map(|c| match c.customer {
            CustomerRef::Id(id) => Some(id),
            CustomerRef::External(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let externals: Vec<String> = checked
        .iter()
        .filter_map(|c| match &c.customer {
            CustomerRef::External(e) => Some(e.clone()),
            CustomerRef::Id(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (known_ids, by_external) = resolve_customers(db, p.tenant_id, &ids, &externals).await?;

    // 3. Unknown customers and duplicates (the later occurrence is the error).
    let mut rows: Vec<(i64, &Checked)> = Vec::with_capacity(checked.len());
    let mut seen: HashMap<(i64, ProductModule, UsageMetric, NaiveDate), usize> = HashMap::with_capacity(checked.len());
    for c in &checked {
        let customer_id = match &c.customer {
            CustomerRef::Id(id) if known_ids.contains(id) => *id,
            CustomerRef::Id(_) => {
                errors[c.index].push(UserError::new(codes::UNKNOWN_CUSTOMER, "no customer has this id").at(at(c.index, "customerId")));
                continue;
            }
            CustomerRef::External(e) => match by_external.get(e) {
                Some(id) => *id,
                None => {
                    errors[c.index].push(
                        UserError::new(codes::UNKNOWN_CUSTOMER, format!("no customer with external id {:?}", clip(e)))
                            .at(at(c.index, "customerExternalId")),
                    );
                    continue;
                }
            },
        };
        if let Some(first) = seen.insert((customer_id, c.module, c.usage, c.day), c.index) {
            errors[c.index].push(
                UserError::new(codes::DUPLICATE_SAMPLE, format!("the same customer, module, usage and day as sample {first}"))
                    .at(at(c.index, "day")),
            );
            continue;
        }
        rows.push((customer_id, c));
    }
    let errors: Vec<UserError> = errors.into_iter().flatten().collect();
    if !errors.is_empty() {
        return Ok(Err(errors));
    }

    // 4. Write everything in one transaction.
    let txn = sql::begin_write(db).await?;
    let input = SampleRows::from(&rows);
    let (inserted, new_days, corrections) =
        if sql::is_pg(&txn) { upsert_postgres(&txn, p.tenant_id, input).await? } else { upsert_sqlite(&txn, p.tenant_id, input).await? };
    // Every new day and every corrected value is a changed input of the mappings that read it.
    let mut changes: Vec<InputChange> = Vec::with_capacity(new_days.len() + corrections.len());
    for (customer_id, module, usage, period) in &new_days {
        if let (Ok(module), Ok(usage)) = (module.parse(), usage.parse()) {
            changes.push(InputChange { customer_id: *customer_id, module, usage: Some(usage), from: *period, to: *period });
        }
    }
    for c in &corrections {
        if let (Ok(module), Ok(usage)) = (c.module.parse(), c.usage.parse()) {
            changes.push(InputChange::sample(c.customer_id, module, usage, c.day));
        }
    }
    let stale =
        ledger::stale::inputs_changed(&txn, now, p.tenant_id, &changes, &p.actor(), "an input of an already pushed period changed").await?;
    let actor = p.actor();
    let audits = corrections
        .iter()
        .map(|c| AuditRow {
            tenant_id: p.tenant_id,
            actor: actor.clone(),
            action: "consumption.corrected",
            entity_type: "consumption",
            entity_id: format!("{}:{}:{}:{}", c.customer_id, c.module, c.usage, c.day),
            before: Some(json!({"value": domain::format_micros(c.old)})),
            after: Some(json!({"value": domain::format_micros(c.new)})),
            detail: None,
        })
        .collect();
    sql::audit_many(&txn, now, audits).await?;
    txn.commit().await?;

    let accepted = rows.len() as u64;
    let updated = corrections.len() as u64;
    Ok(Ok(RecordResult { accepted, inserted, updated, unchanged: accepted.saturating_sub(inserted + updated), stale_mappings: stale }))
}

fn clip(s: &str) -> String {
    crate::engine::clip(s, 100)
}

/// Known customer ids among `ids`, and external id → id for `externals`, of the tenant.
async fn resolve_customers(
    db: &DatabaseConnection,
    tenant_id: i64,
    ids: &[i64],
    externals: &[String],
) -> Result<(HashSet<i64>, HashMap<String, i64>), DbErr> {
    let mut known = HashSet::new();
    let mut by_external = HashMap::new();
    if ids.is_empty() && externals.is_empty() {
        return Ok((known, by_external));
    }
    let rows = sql::query(
        db,
        &format!(
            "SELECT id, external_id FROM customers WHERE tenant_id = $1 AND ({} OR {})",
            sql::in_list(db, "id", 2),
            sql::in_list(db, "external_id", 3)
        ),
        vec![tenant_id.into(), sql::i64_list(db, ids), sql::text_list(db, externals)],
    )
    .await?;
    let wanted_ids: HashSet<i64> = ids.iter().copied().collect();
    for r in rows {
        let id: i64 = r.try_get("", "id")?;
        let ext: String = r.try_get("", "external_id")?;
        if wanted_ids.contains(&id) {
            known.insert(id);
        }
        by_external.insert(ext, id);
    }
    Ok((known, by_external))
}

/// The batch as column vectors.
struct SampleRows {
    customer: Vec<i64>,
    module: Vec<String>,
    usage: Vec<String>,
    day: Vec<NaiveDate>,
    value: Vec<i64>,
}

impl SampleRows {
    fn from(rows: &[(i64, &Checked)]) -> Self {
        SampleRows {
            customer: rows.iter().map(|r| r.0).collect(),
            module: rows.iter().map(|r| r.1.module.as_str().to_string()).collect(),
            usage: rows.iter().map(|r| r.1.usage.as_str().to_string()).collect(),
            day: rows.iter().map(|r| r.1.day).collect(),
            value: rows.iter().map(|r| r.1.micros).collect(),
        }
    }
}

/// Days that had no sample before, grouped by (customer, module, usage, month).
type NewDays = Vec<(i64, String, String, Period)>;

/// A re-reported day whose value changed.
struct Correction {
    customer_id: i64,
    module: String,
    usage: String,
    day: NaiveDate,
    old: i64,
    new: i64,
}

const UPSERT_CONFLICT: &str = "ON CONFLICT (customer_id, product_module, usage, day) DO UPDATE SET value_micros = EXCLUDED.value_micros \
     WHERE consumption_samples.value_micros <> EXCLUDED.value_micros";

/// PostgreSQL: first insert the batch with `ON CONFLICT DO NOTHING` (new days, the common case: one
/// statement, no look-up of old values). Only when some days already existed: lock those whose value
/// changed and read their old values (an index probe per sample, forced by `LATERAL`: a hash join
/// would read the whole table for every batch), then update just those. Arrays bind the batch
/// (`UNNEST`): a handful of parameters whatever its size.
async fn upsert_postgres<C: ConnectionTrait>(c: &C, tenant_id: i64, rows: SampleRows) -> Result<(u64, NewDays, Vec<Correction>), DbErr> {
    const INPUT: &str = "UNNEST($1::int8[], $2::text[], $3::text[], $4::date[], $5::int8[]) \
                         AS i(customer_id, product_module, usage, day, value_micros)";
    let n = rows.customer.len() as u64;
    let arrays = |r: &SampleRows| {
        vec![
            Value::from(r.customer.clone()),
            Value::from(r.module.clone()),
            Value::from(r.usage.clone()),
            Value::from(r.day.clone()),
            Value::from(r.value.clone()),
        ]
    };
    let mut values = arrays(&rows);
    values.push(tenant_id.into());
    // The new days come back grouped by month: what the stale rules need, in a few rows.
    let groups = sql::query(
        c,
        &format!(
            "WITH ins AS (INSERT INTO consumption_samples (tenant_id, customer_id, product_module, usage, day, value_micros) \
               SELECT $6, i.* FROM {INPUT} \
               ON CONFLICT (customer_id, product_module, usage, day) DO NOTHING \
               RETURNING customer_id, product_module, usage, day) \
             SELECT customer_id, product_module, usage, to_char(day, 'YYYY-MM') AS period, COUNT(*) AS n FROM ins GROUP BY 1, 2, 3, 4"
        ),
        values,
    )
    .await?;
    let mut inserted = 0u64;
    let mut new_days = Vec::with_capacity(groups.len());
    for g in &groups {
        inserted += u64::try_from(g.try_get::<i64>("", "n")?).unwrap_or(0);
        let period: String = g.try_get("", "period")?;
        let period = Period::parse(&period).map_err(|e| DbErr::Custom(format!("month {period:?}: {e}")))?;
        new_days.push((g.try_get("", "customer_id")?, g.try_get("", "product_module")?, g.try_get("", "usage")?, period));
    }
    if inserted == n {
        return Ok((inserted, new_days, Vec::new()));
    }
    let found = sql::query(
        c,
        &format!(
            "SELECT i.customer_id, i.product_module, i.usage, i.day, s.value_micros AS old_value, i.value_micros AS new_value \
             FROM {INPUT} \
             CROSS JOIN LATERAL (SELECT value_micros FROM consumption_samples s \
               WHERE s.customer_id = i.customer_id AND s.product_module = i.product_module AND s.usage = i.usage \
                 AND s.day = i.day AND s.value_micros <> i.value_micros \
               FOR UPDATE) s"
        ),
        arrays(&rows),
    )
    .await?;
    let mut corrections = Vec::with_capacity(found.len());
    for r in found {
        corrections.push(Correction {
            customer_id: r.try_get("", "customer_id")?,
            module: r.try_get("", "product_module")?,
            usage: r.try_get("", "usage")?,
            day: r.try_get("", "day")?,
            old: r.try_get("", "old_value")?,
            new: r.try_get("", "new_value")?,
        });
    }
    if !corrections.is_empty() {
        let changed = SampleRows {
            customer: corrections.iter().map(|c| c.customer_id).collect(),
            module: corrections.iter().map(|c| c.module.clone()).collect(),
            usage: corrections.iter().map(|c| c.usage.clone()).collect(),
            day: corrections.iter().map(|c| c.day).collect(),
            value: corrections.iter().map(|c| c.new).collect(),
        };
        sql::exec(
            c,
            &format!(
                "UPDATE consumption_samples s SET value_micros = i.value_micros FROM {INPUT} \
                 WHERE s.customer_id = i.customer_id AND s.product_module = i.product_module AND s.usage = i.usage AND s.day = i.day"
            ),
            arrays(&changed),
        )
        .await?;
    }
    Ok((inserted, new_days, corrections))
}

/// SQLite: read the old values, then upsert, in chunks that stay under the bind-parameter limit
/// (the write lock is held since `BEGIN IMMEDIATE`, so nothing changes in between).
async fn upsert_sqlite<C: ConnectionTrait>(c: &C, tenant_id: i64, rows: SampleRows) -> Result<(u64, NewDays, Vec<Correction>), DbErr> {
    let keys = RowSet::new()
        .col("customer_id", Col::I64(rows.customer.clone()))
        .col("product_module", Col::Text(rows.module.clone()))
        .col("usage", Col::Text(rows.usage.clone()))
        .col("day", Col::Date(rows.day.clone()));
    let mut old: HashMap<(i64, String, String, NaiveDate), i64> = HashMap::new();
    for (cte, values) in keys.ctes(c.get_database_backend(), "k", 1) {
        let found = sql::query(
            c,
            &format!(
                "WITH {cte} SELECT s.customer_id, s.product_module, s.usage, s.day, s.value_micros FROM consumption_samples s \
                 JOIN k ON s.customer_id = k.customer_id AND s.product_module = k.product_module AND s.usage = k.usage AND s.day = k.day"
            ),
            values,
        )
        .await?;
        for r in found {
            old.insert(
                (r.try_get("", "customer_id")?, r.try_get("", "product_module")?, r.try_get("", "usage")?, r.try_get("", "day")?),
                r.try_get("", "value_micros")?,
            );
        }
    }
    let mut inserted = 0;
    let mut new_days: HashSet<(i64, String, String, Period)> = HashSet::new();
    let mut corrections = Vec::new();
    for i in 0..rows.customer.len() {
        let key = (rows.customer[i], rows.module[i].clone(), rows.usage[i].clone(), rows.day[i]);
        match old.get(&key) {
            None => {
                inserted += 1;
                new_days.insert((key.0, key.1, key.2, Period::of(key.3)));
            }
            Some(&before) if before != rows.value[i] => corrections.push(Correction {
                customer_id: key.0,
                module: key.1,
                usage: key.2,
                day: key.3,
                old: before,
                new: rows.value[i],
            }),
            Some(_) => {}
        }
    }
    let all = RowSet::new()
        .col("customer_id", Col::I64(rows.customer))
        .col("product_module", Col::Text(rows.module))
        .col("usage", Col::Text(rows.usage))
        .col("day", Col::Date(rows.day))
        .col("value_micros", Col::I64(rows.value));
    sql::insert_rows(c, "consumption_samples", &all, &[("tenant_id", tenant_id.into())], UPSERT_CONFLICT).await?;
    Ok((inserted, new_days.into_iter().collect(), corrections))
}

/// A customer's daily values of one module and usage, `from..=to`; `None` when the customer is not
/// the tenant's.
pub async fn daily_consumption(
    db: &DatabaseConnection,
    p: &Principal,
    customer_id: i64,
    module: ProductModule,
    usage: UsageMetric,
    from: NaiveDate,
    to: NaiveDate,
) -> ServiceResult<Option<Vec<(NaiveDate, i64)>>> {
    if to < from {
        return Err(ServiceError::BadInput("`to` must not be before `from`".into()));
    }
    if (to - from).num_days() > MAX_RANGE_DAYS {
        return Err(ServiceError::BadInput(format!("at most {MAX_RANGE_DAYS} days per query")));
    }
    let owner =
        sql::query(db, "SELECT id FROM customers WHERE id = $1 AND tenant_id = $2", vec![customer_id.into(), p.tenant_id.into()]).await?;
    if owner.is_empty() {
        return Ok(None);
    }
    let rows = sql::query(
        db,
        "SELECT day, value_micros FROM consumption_samples \
         WHERE customer_id = $1 AND product_module = $2 AND usage = $3 AND day >= $4 AND day <= $5 ORDER BY day",
        vec![customer_id.into(), module.as_str().into(), usage.as_str().into(), from.into(), to.into()],
    )
    .await?;
    let days = rows.iter().map(|r| Ok((r.try_get("", "day")?, r.try_get("", "value_micros")?))).collect::<Result<Vec<_>, DbErr>>()?;
    Ok(Some(days))
}

/// One mapping's value for a month, as a run would compute it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewRow {
    pub product_mapping_id: i64,
    pub customer_id: i64,
    pub method: IntervalMethod,
    pub result: Result<MonthlyValue, SkipReason>,
}

/// The values a run for `period` would push (`consumptionPreview`): the same snapshot and
/// statistics SQL and the same domain rules as aggregation.
pub async fn preview(db: &DatabaseConnection, p: &Principal, period: Period, customer_id: Option<i64>) -> ServiceResult<Vec<PreviewRow>> {
    let filter = customer_id.map(|c| vec![c]);
    // A transaction: one consistent snapshot, and room for the statement settings aggregation uses.
    let txn = db.begin().await?;
    let rows = crate::engine::aggregate::compute_snapshot(
        &txn,
        p.tenant_id,
        period,
        crate::engine::aggregate::SnapshotScope { customers: filter.as_deref(), page: None },
    )
    .await?;
    txn.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| PreviewRow { product_mapping_id: r.mapping_id, customer_id: r.customer_id, method: r.method, result: r.result })
        .collect())
}
