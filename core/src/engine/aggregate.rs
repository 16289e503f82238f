//! Aggregation of a sync run: snapshot the tenant's mappings, compute each mapping's monthly value
//! with one set-based statistics query plus `domain::aggregate_month`, and write one push per mapping.
use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use domain::{
    CancelReason, IntervalMethod, LicenseWindow, MonthlyValue, Period, ProductModule, PushStatus, SkipReason, UsageMetric, UsageMonthStats,
};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DbErr, Value};
use serde_json::json;

use super::sql;
use super::{EngineDeps, EngineError};
use crate::{
    jobs::{Job, PushJob},
    ledger,
};

/// One product mapping as it stood when the run was aggregated, with its monthly value.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotRow {
    pub mapping_id: i64,
    pub customer_id: i64,
    pub module: ProductModule,
    pub usage: UsageMetric,
    pub method: IntervalMethod,
    pub cw_company_id: i64,
    pub cw_agreement_id: i64,
    pub cw_sequence_number: i64,
    pub cw_addition_id: i64,
    pub cw_product_id: Option<i64>,
    /// The mapping's input version, read before its samples (so a change racing the snapshot is
    /// never missed: at worst the mapping is flagged stale without need).
    pub input_version: i64,
    /// The customer's license window of the module (`None`: no license any more).
    pub window: Option<LicenseWindow>,
    /// Days of the period inside the window with at least one sample the mapping reads.
    pub days_with_sample: u32,
    pub result: Result<MonthlyValue, SkipReason>,
}

/// Which of the tenant's mappings a snapshot computes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SnapshotScope<'a> {
    /// Only these customers' mappings.
    pub customers: Option<&'a [i64]>,
    /// Only the first `limit` mappings with an id above `after_id` (in id order): pages of a
    /// snapshot too large to hold at once.
    pub page: Option<MappingPage>,
}

/// A keyset page of mappings by id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MappingPage {
    pub after_id: i64,
    pub limit: u64,
}

fn parse_enum<T: FromStr>(s: &str, what: &str) -> Result<T, DbErr> {
    T::from_str(s).map_err(|_| DbErr::Custom(format!("unexpected {what} `{s}` in the database")))
}

/// `2^50`: the factor packing a day offset and a value into one orderable integer.
const PACK: i64 = 1 << 50;
// Packing is exact only for values below 2^50; ingest caps them at 10^15.
const _: () = assert!(domain::MAX_VALUE_MICROS < PACK);
/// Per-storage-type sample counts packed into one sum (each count is at most 31 < 2^16).
const C1: i64 = 1 << 16;
const C2: i64 = 1 << 32;

/// Statistics of one mapping: of its own usage, and (SUM) of each storage type with samples.
struct MappingStats {
    own: UsageMonthStats,
    days_with_sample: u32,
    per_type: Vec<UsageMonthStats>,
}

/// `day offset × 2^50 + value` → (day, value).
fn unpack(period: Period, packed: i64) -> (NaiveDate, i64) {
    let day = period.first_day() + chrono::Duration::days(packed >> 50);
    (day, packed & (PACK - 1))
}

/// The sample of the period's last day: the latest sample, when it is from that day.
fn last_day_of(period: Period, latest: Option<(NaiveDate, i64)>) -> Option<i64> {
    latest.filter(|(day, _)| *day == period.last_day()).map(|(_, v)| v)
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(if n < 0 { 0 } else { u32::MAX })
}

/// `AND <customer filter>` for the snapshot queries, binding the list at `$param`.
fn customer_filter<C: ConnectionTrait>(c: &C, customers: Option<&[i64]>, param: usize, values: &mut Vec<Value>) -> String {
    match customers {
        None => String::new(),
        Some(ids) => {
            values.push(sql::i64_list(c, ids));
            format!(" AND {}", sql::in_list(c, "pm.customer_id", param))
        }
    }
}

/// The mappings of a tenant (optionally only some customers) joined with their customer's company
/// and license, with the monthly value of `period`. Mappings of customers without a ConnectWise
/// company are left out. Shared by aggregation and the preview, so both compute the same numbers.
pub(crate) async fn compute_snapshot<C: ConnectionTrait>(
    c: &C,
    tenant_id: i64,
    period: Period,
    scope: SnapshotScope<'_>,
) -> Result<Vec<SnapshotRow>, DbErr> {
    let customers = scope.customers;
    // 1. The mappings themselves.
    let mut values: Vec<Value> = vec![tenant_id.into()];
    let mut filter = customer_filter(c, customers, 2, &mut values);
    let mut limit = String::new();
    if let Some(page) = scope.page {
        values.push(page.after_id.into());
        filter.push_str(&format!(" AND pm.id > ${}", values.len()));
        limit = format!(" LIMIT {}", page.limit);
    }
    let mapping_rows = sql::query(
        c,
        &format!(
            "SELECT pm.id, pm.customer_id, pm.product_module, pm.usage, pm.interval_method, pm.cw_agreement_id, \
                    pm.cw_sequence_number, pm.cw_addition_id, pm.cw_product_id, pm.input_version, cm.cw_company_id, \
                    l.provisioned_on, l.deprovisioned_on \
             FROM product_mappings pm \
             JOIN customer_mappings cm ON cm.customer_id = pm.customer_id AND cm.tenant_id = pm.tenant_id \
             LEFT JOIN licenses l ON l.customer_id = pm.customer_id AND l.product_module = pm.product_module \
             WHERE pm.tenant_id = $1{filter} \
             ORDER BY pm.id{limit}"
        ),
        values,
    )
    .await?;

    // 2. Per-mapping statistics over the period inside the license window, in one statement shaped
    // like the obvious hand-written query (one hash join of the month's samples with the mappings,
    // grouped by mapping id). SUM mappings match all three Enterprise Workloads storage types and get
    // per-type columns. "Latest day and its value" is one MAX over `day offset × 2^50 + value`
    // (values are at most 10^15 < 2^50, validated on ingest), so no second pass over the samples.
    let ew = UsageMetric::EW_STORAGE;
    let ew_list = ew.iter().map(|u| format!("'{}'", u.as_str())).collect::<Vec<_>>().join(", ");
    let offset = if sql::is_pg(c) { "(s.day - $2)".to_string() } else { "(CAST(substr(s.day, 9, 2) AS INTEGER) - 1)".to_string() };
    let packed = format!("({offset} * {PACK} + s.value_micros)");
    let per_type = ew
        .iter()
        .enumerate()
        .map(|(i, u)| format!("MAX(CASE WHEN s.usage = '{u}' THEN {packed} END) AS latest_{i}", u = u.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut values: Vec<Value> = vec![tenant_id.into(), period.first_day().into(), period.last_day().into()];
    let mut filter = customer_filter(c, customers, 4, &mut values);
    if let Some(page) = scope.page {
        // The page's id range: the statistics of exactly the mappings read above.
        let last_id = mapping_rows.last().map(|r| r.try_get::<i64>("", "id")).transpose()?.unwrap_or(page.after_id);
        values.push(page.after_id.into());
        values.push(last_id.into());
        filter.push_str(&format!(" AND pm.id > ${} AND pm.id <= ${}", values.len() - 1, values.len()));
    }
    if sql::is_pg(c) {
        // The grouping holds one small state per mapping; let it hash in memory instead of sorting
        // millions of joined rows on disk (the default work_mem is sized for OLTP statements).
        c.execute_unprepared("SET LOCAL work_mem = '64MB'").await?;
    }
    let stats_rows = sql::query(
        c,
        &format!(
            "SELECT pm.id, \
               COUNT(*) AS sample_days, \
               COUNT(DISTINCT s.day) AS days_with_sample, \
               CAST(SUM(CASE WHEN s.day <> l.provisioned_on THEN s.value_micros ELSE 0 END) AS BIGINT) AS avg_sum, \
               CAST(MAX(CASE WHEN s.day = l.provisioned_on THEN 1 ELSE 0 END) AS BIGINT) AS has_first_day, \
               MAX(s.value_micros) AS max_value, \
               MAX({packed}) AS latest, \
               CAST(SUM(CASE s.usage WHEN '{u0}' THEN 1 WHEN '{u1}' THEN {C1} WHEN '{u2}' THEN {C2} ELSE 0 END) AS BIGINT) AS type_counts, \
               {per_type} \
             FROM product_mappings pm \
             JOIN customer_mappings cm ON cm.customer_id = pm.customer_id AND cm.tenant_id = pm.tenant_id \
             JOIN licenses l ON l.customer_id = pm.customer_id AND l.product_module = pm.product_module \
             JOIN consumption_samples s ON s.customer_id = pm.customer_id AND s.product_module = pm.product_module \
               AND (s.usage = pm.usage OR (pm.interval_method = 'SUM' AND s.usage IN ({ew_list}))) \
             WHERE pm.tenant_id = $1{filter} AND s.day >= $2 AND s.day <= $3 \
               AND s.day >= l.provisioned_on AND (l.deprovisioned_on IS NULL OR s.day <= l.deprovisioned_on) \
             GROUP BY pm.id",
            u0 = ew[0].as_str(),
            u1 = ew[1].as_str(),
            u2 = ew[2].as_str(),
        ),
        values,
    )
    .await?;

    let mut stats: HashMap<i64, MappingStats> = HashMap::with_capacity(stats_rows.len());
    for r in &stats_rows {
        let unpack =
            |col: &str| -> Result<Option<(NaiveDate, i64)>, DbErr> { Ok(r.try_get::<Option<i64>>("", col)?.map(|p| unpack(period, p))) };
        let sample_days = count(r.try_get::<i64>("", "sample_days")?);
        let latest = unpack("latest")?;
        let own = UsageMonthStats {
            avg_sum: i128::from(r.try_get::<i64>("", "avg_sum")?),
            avg_days: sample_days.saturating_sub(count(r.try_get::<i64>("", "has_first_day")?)),
            max: r.try_get::<Option<i64>>("", "max_value")?,
            sample_days,
            last_day: last_day_of(period, latest),
            latest,
        };
        let counts = r.try_get::<i64>("", "type_counts")?;
        let mut per_type = Vec::with_capacity(3);
        for (i, shift) in [0u32, 16, 32].into_iter().enumerate() {
            let latest = unpack(&format!("latest_{i}"))?;
            if latest.is_none() {
                continue; // a storage type without samples contributes nothing
            }
            // Only what SUM reads (LAST_DAY of each type) is filled in; averages do not apply.
            per_type.push(UsageMonthStats {
                sample_days: u32::try_from((counts >> shift) & 0xFFFF).unwrap_or(0),
                last_day: last_day_of(period, latest),
                latest,
                ..Default::default()
            });
        }
        let days_with_sample = count(r.try_get::<i64>("", "days_with_sample")?);
        stats.insert(r.try_get("", "id")?, MappingStats { own, days_with_sample, per_type });
    }

    // 3. The domain rules turn statistics into values.
    let mut out = Vec::with_capacity(mapping_rows.len());
    for r in &mapping_rows {
        let customer_id: i64 = r.try_get("", "customer_id")?;
        let module: ProductModule = parse_enum(&r.try_get::<String>("", "product_module")?, "product module")?;
        let usage: UsageMetric = parse_enum(&r.try_get::<String>("", "usage")?, "usage metric")?;
        let method: IntervalMethod = parse_enum(&r.try_get::<String>("", "interval_method")?, "interval method")?;
        let provisioned_on: Option<NaiveDate> = r.try_get("", "provisioned_on")?;
        let deprovisioned_on: Option<NaiveDate> = r.try_get("", "deprovisioned_on")?;
        let mapping_id: i64 = r.try_get("", "id")?;
        let window = provisioned_on.map(|provisioned_on| LicenseWindow { provisioned_on, deprovisioned_on });
        let mapping_stats = stats.remove(&mapping_id);
        let days_with_sample = mapping_stats.as_ref().map_or(0, |m| m.days_with_sample);
        let result = match &window {
            // No license for the module any more: no day is inside a window, nothing to bill.
            None => Err(SkipReason::NoConsumption),
            Some(window) => {
                let inputs: Vec<UsageMonthStats> = match mapping_stats {
                    None => Vec::new(),
                    Some(m) if method == IntervalMethod::Sum => m.per_type,
                    Some(m) => vec![m.own],
                };
                domain::aggregate_month(method, period, window, &inputs)
            }
        };
        out.push(SnapshotRow {
            mapping_id,
            customer_id,
            module,
            usage,
            method,
            cw_company_id: r.try_get("", "cw_company_id")?,
            cw_agreement_id: r.try_get("", "cw_agreement_id")?,
            cw_sequence_number: r.try_get("", "cw_sequence_number")?,
            cw_addition_id: r.try_get("", "cw_addition_id")?,
            cw_product_id: r.try_get("", "cw_product_id")?,
            input_version: r.try_get("", "input_version")?,
            window,
            days_with_sample,
            result,
        });
    }
    Ok(out)
}

/// The run's customer filter, stored as a JSON array of customer ids.
pub(crate) fn run_customer_filter(customer_ids: Option<&serde_json::Value>) -> Option<Vec<i64>> {
    let arr = customer_ids?.as_array()?;
    Some(arr.iter().filter_map(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))).collect())
}

/// Compute a run's values and create its pushes (job `AggregateRun`). Idempotent.
///
/// Every non-dry push with a value is created `PENDING`: whether ConnectWise already holds the
/// quantity is decided by the attempt's read of the addition, never by our own history. A newer
/// run supersedes the unfinished pushes of older runs on the same additions (only the newest push
/// of an addition may write it).
pub async fn aggregate_run(deps: &EngineDeps, run_id: i64) -> Result<(), EngineError> {
    let now = deps.clock.now();
    let txn = sql::begin_write(&deps.db).await?;
    let run_rows = sql::query(
        &txn,
        &format!(
            "SELECT id, tenant_id, period, dry_run, status, customer_ids, aggregated_at FROM sync_runs WHERE id = $1{}",
            sql::for_update(&txn)
        ),
        vec![run_id.into()],
    )
    .await?;
    let Some(run) = run_rows.first() else {
        tracing::warn!(run_id, "aggregate: no such run");
        return Ok(());
    };
    let aggregated_at: Option<DateTime<Utc>> = run.try_get("", "aggregated_at")?;
    let status: String = run.try_get("", "status")?;
    if aggregated_at.is_some() || status != domain::SyncRunStatus::Running.as_str() {
        // Delivered twice, or already finished: nothing to do.
        return Ok(());
    }
    let tenant_id: i64 = run.try_get("", "tenant_id")?;
    let dry_run: bool = run.try_get("", "dry_run")?;
    let period_s: String = run.try_get("", "period")?;
    let customer_ids: Option<serde_json::Value> = run.try_get("", "customer_ids")?;
    let Ok(period) = Period::parse(&period_s) else {
        // Cannot happen through the services; fail the run visibly rather than retrying forever.
        ledger::run::fail(&txn, tenant_id, run_id, &format!("invalid period {period_s:?}"), now).await?;
        txn.commit().await?;
        return Ok(());
    };
    let filter = run_customer_filter(customer_ids.as_ref());

    // An input change either committed before this snapshot (it is read) or waits until the pushes
    // are committed (it then flags them stale); see `ledger::stale::lock_inputs`.
    ledger::stale::lock_inputs(&txn, tenant_id).await?;
    let snapshot = compute_snapshot(&txn, tenant_id, period, SnapshotScope { customers: filter.as_deref(), page: None }).await?;
    let superseded = if dry_run {
        ledger::push::Changed::default()
    } else {
        let additions: Vec<i64> = snapshot.iter().map(|s| s.cw_addition_id).collect();
        ledger::push::cancel(
            &txn,
            now,
            tenant_id,
            ledger::push::Which::Additions(&additions),
            CancelReason::PushSuperseded,
            crate::audit::SYSTEM_ACTOR,
            Some(json!({"supersededByRun": run_id})),
        )
        .await?
    };

    let mut skipped: HashMap<&'static str, u64> = HashMap::new();
    let rows: Vec<ledger::push::NewPush> = snapshot
        .iter()
        .map(|s| {
            let (skip, value) = match (&s.result, dry_run) {
                (Err(reason), _) => (Some(*reason), None),
                (Ok(v), true) => (Some(SkipReason::DryRun), Some(*v)),
                (Ok(v), false) => (None, Some(*v)),
            };
            if let Some(reason) = skip {
                *skipped.entry(reason.as_str()).or_default() += 1;
            }
            ledger::push::NewPush {
                mapping_id: s.mapping_id,
                customer_id: s.customer_id,
                module: s.module,
                usage: s.usage,
                method: s.method,
                cw_company_id: s.cw_company_id,
                cw_agreement_id: s.cw_agreement_id,
                cw_sequence_number: s.cw_sequence_number,
                cw_addition_id: s.cw_addition_id,
                cw_product_id: s.cw_product_id,
                input_version: s.input_version,
                value,
                skip,
            }
        })
        .collect();
    let run_ref = ledger::push::RunRef {
        tenant_id,
        run_id,
        period,
        dry_run,
        max_attempts: i32::try_from(deps.settings.push_max_attempts).unwrap_or(i32::MAX),
    };
    let created = ledger::push::create(&txn, now, &run_ref, &rows).await?;
    let pending: Vec<i64> = created.iter().filter(|(_, s)| *s == PushStatus::Pending).map(|(id, _)| *id).collect();

    ledger::run::mark_aggregated(&txn, run_id, now).await?;
    crate::audit::record(
        &txn,
        crate::audit::AuditRecord {
            at: now,
            tenant_id,
            actor: crate::audit::SYSTEM_ACTOR,
            action: "sync_run.aggregated",
            entity_type: "sync_run",
            entity_id: run_id.to_string(),
            before: None,
            after: None,
            detail: Some(json!({
                "period": period.to_string(),
                "dryRun": dry_run,
                "mappings": snapshot.len(),
                "pending": pending.len(),
                "skipped": skipped,
                "superseded": superseded.pushes.len(),
            })),
        },
    )
    .await?;
    if pending.is_empty() {
        ledger::run::finish_if_done(&txn, run_id, now).await?;
    }
    txn.commit().await?;

    for other in superseded.runs {
        ledger::run::finish_if_done(&deps.db, other, now).await?;
    }
    if pending.len() >= ANALYZE_AFTER_PENDING && sql::is_pg(&deps.db) {
        refresh_push_statistics(deps, run_id).await;
    }
    enqueue_pushes(deps, &pending).await
}

/// The per-push statements (claim, outcome, "is the run done?") are planned from the statistics of
/// `pushes.status`, and both ways of being wrong hurt: statistics from after last month's runs ("no
/// push in flight") send the claim through the partial index of in-flight pushes, one full scan of
/// it per push (measured: 3.7 ms per claim with 20,000 pending, 0.1 ms after `ANALYZE`); statistics
/// taken while everything was in flight make "is the run done?" a sequential scan. Autovacuum
/// analyses about a minute later, after most of a run. So a run that created many pending pushes
/// compares the planner's estimate of in-flight pushes with their actual number (one probe of the
/// small in-flight index) and analyses `pushes` when they are far apart; a cron tick creating every
/// tenant's run at once then analyses a few times, not once per run.
async fn refresh_push_statistics(deps: &EngineDeps, run_id: i64) {
    const IN_FLIGHT: &str = "FROM pushes WHERE status IN ('PENDING', 'RUNNING', 'FAILED_RETRYING')";
    let actual = sql::query(&deps.db, &format!("SELECT COUNT(*) AS n {IN_FLIGHT}"), vec![])
        .await
        .ok()
        .and_then(|rows| rows.first().and_then(|r| r.try_get::<i64>("", "n").ok()));
    let estimate = sql::query(&deps.db, &format!("EXPLAIN (FORMAT JSON) SELECT 1 {IN_FLIGHT}"), vec![])
        .await
        .ok()
        .and_then(|rows| rows.first().and_then(|r| r.try_get::<serde_json::Value>("", "QUERY PLAN").ok()))
        .and_then(|plan| plan.pointer("/0/Plan/Plan Rows").and_then(serde_json::Value::as_f64));
    let (Some(actual), Some(estimate)) = (actual, estimate) else { return };
    let actual = actual as f64;
    let total =
        sql::query(&deps.db, "SELECT CAST(GREATEST(reltuples, 1) AS BIGINT) AS n FROM pg_class WHERE oid = 'pushes'::regclass", vec![])
            .await
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r.try_get::<i64>("", "n").ok()))
            .unwrap_or(1) as f64;
    // Far apart: off by more than 2× and by a meaningful share of the table.
    let off = (actual - estimate).abs() > (total * 0.05).max(ANALYZE_AFTER_PENDING as f64)
        && (actual > 2.0 * estimate || estimate > 2.0 * actual);
    if !off {
        return;
    }
    tracing::debug!(run_id, actual, estimate, "planner statistics of pushes are stale; analysing");
    if let Err(error) = deps.db.execute_unprepared("ANALYZE pushes").await {
        tracing::warn!(run_id, ?error, "could not refresh the planner statistics of pushes");
    }
}

/// A run creating at least this many pending pushes refreshes the planner's statistics first.
const ANALYZE_AFTER_PENDING: usize = 500;

/// Enqueue one `PushJob` per id, a few at a time (the rows are already committed: a failed enqueue
/// is recovered by reconciliation, but is still reported so the job is retried sooner).
pub(crate) async fn enqueue_pushes(deps: &EngineDeps, ids: &[i64]) -> Result<(), EngineError> {
    let results: Vec<Result<(), crate::jobs::QueueError>> = futures::stream::iter(ids.iter().copied())
        .map(|push_id| deps.queue.enqueue(Job::Push(PushJob { push_id })))
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(())
}
