//! Aggregation of a sync run: snapshot the tenant's mappings, compute each mapping's monthly value
//! with one set-based statistics query plus `domain::aggregate_month`, and write one push per mapping.
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use domain::{IntervalMethod, LicenseWindow, MonthlyValue, Period, ProductModule, PushStatus, SkipReason, UsageMetric, UsageMonthStats};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DbErr, Value};
use serde_json::json;

use super::sql::{self, AuditRow, Col, RowSet};
use super::{EngineDeps, EngineError};
use crate::jobs::{Job, PushJob};

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
    pub result: Result<MonthlyValue, SkipReason>,
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
    customers: Option<&[i64]>,
) -> Result<Vec<SnapshotRow>, DbErr> {
    // 1. The mappings themselves.
    let mut values: Vec<Value> = vec![tenant_id.into()];
    let filter = customer_filter(c, customers, 2, &mut values);
    let mapping_rows = sql::query(
        c,
        &format!(
            "SELECT pm.id, pm.customer_id, pm.product_module, pm.usage, pm.interval_method, pm.cw_agreement_id, \
                    pm.cw_sequence_number, pm.cw_addition_id, pm.cw_product_id, cm.cw_company_id, \
                    l.provisioned_on, l.deprovisioned_on \
             FROM product_mappings pm \
             JOIN customer_mappings cm ON cm.customer_id = pm.customer_id AND cm.tenant_id = pm.tenant_id \
             LEFT JOIN licenses l ON l.customer_id = pm.customer_id AND l.product_module = pm.product_module \
             WHERE pm.tenant_id = $1{filter} \
             ORDER BY pm.id"
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
    let filter = customer_filter(c, customers, 4, &mut values);
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
        stats.insert(r.try_get("", "id")?, MappingStats { own, per_type });
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
        let result = match provisioned_on {
            // No license for the module any more: no day is inside a window, nothing to bill.
            None => Err(SkipReason::NoConsumption),
            Some(provisioned_on) => {
                let window = LicenseWindow { provisioned_on, deprovisioned_on };
                let inputs: Vec<UsageMonthStats> = match stats.remove(&mapping_id) {
                    None => Vec::new(),
                    Some(m) if method == IntervalMethod::Sum => m.per_type,
                    Some(m) => vec![m.own],
                };
                domain::aggregate_month(method, period, &window, &inputs)
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

/// Quantity of the last `SUCCEEDED` non-dry push per (mapping, addition) of the tenant and period.
async fn last_succeeded<C: ConnectionTrait>(c: &C, tenant_id: i64, period: Period) -> Result<HashMap<(i64, i64), i64>, DbErr> {
    let rows = sql::query(
        c,
        "SELECT p.product_mapping_id, p.cw_addition_id, p.quantity FROM pushes p \
         JOIN (SELECT product_mapping_id, cw_addition_id, MAX(id) AS id FROM pushes \
               WHERE tenant_id = $1 AND period = $2 AND status = 'SUCCEEDED' AND dry_run = FALSE \
                 AND product_mapping_id IS NOT NULL \
               GROUP BY product_mapping_id, cw_addition_id) last ON last.id = p.id",
        vec![tenant_id.into(), period.to_string().into()],
    )
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        if let Some(q) = r.try_get::<Option<i64>>("", "quantity")? {
            out.insert((r.try_get("", "product_mapping_id")?, r.try_get("", "cw_addition_id")?), q);
        }
    }
    Ok(out)
}

/// Cancel the tenant's non-final pushes on `additions` (older runs): a newer computation supersedes
/// them, and it keeps "one in-flight push per addition" (uq_pushes_in_flight) true. Returns the runs touched.
async fn supersede_older<C: ConnectionTrait>(
    c: &C,
    tenant_id: i64,
    additions: &[i64],
    new_run_id: i64,
    now: DateTime<Utc>,
) -> Result<(usize, Vec<i64>), DbErr> {
    if additions.is_empty() {
        return Ok((0, Vec::new()));
    }
    let found = sql::query(
        c,
        &format!(
            "SELECT id, status FROM pushes WHERE tenant_id = $1 AND status IN {nf} AND {}{}",
            sql::in_list(c, "cw_addition_id", 2),
            sql::for_update(c),
            nf = sql::NON_FINAL_SQL
        ),
        vec![tenant_id.into(), sql::i64_list(c, additions)],
    )
    .await?;
    if found.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut before: HashMap<i64, String> = HashMap::with_capacity(found.len());
    for r in &found {
        before.insert(r.try_get("", "id")?, r.try_get("", "status")?);
    }
    let ids: Vec<i64> = before.keys().copied().collect();
    let cancelled = sql::query(
        c,
        &format!(
            "UPDATE pushes SET status = 'CANCELLED', skip_reason = 'SUPERSEDED', finished_at = $2, updated_at = $2 \
             WHERE {} AND status IN {nf} RETURNING id, sync_run_id",
            sql::in_list(c, "id", 1),
            nf = sql::NON_FINAL_SQL
        ),
        vec![sql::i64_list(c, &ids), now.into()],
    )
    .await?;
    let mut runs = HashSet::new();
    let mut audits = Vec::with_capacity(cancelled.len());
    for r in &cancelled {
        let id: i64 = r.try_get("", "id")?;
        runs.insert(r.try_get::<i64>("", "sync_run_id")?);
        audits.push(AuditRow {
            tenant_id,
            actor: crate::audit::SYSTEM_ACTOR.to_string(),
            action: "push.cancelled",
            entity_type: "push",
            entity_id: id.to_string(),
            before: Some(json!({"status": before.get(&id)})),
            after: Some(json!({"status": "CANCELLED", "skipReason": "SUPERSEDED"})),
            detail: Some(json!({"supersededByRun": new_run_id})),
        });
    }
    let n = audits.len();
    sql::audit_many(c, now, audits).await?;
    Ok((n, runs.into_iter().collect()))
}

/// Compute a run's values and create its pushes (job `AggregateRun`). Idempotent.
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
        sql::exec(
            &txn,
            "UPDATE sync_runs SET status = 'FAILED', error = $2, aggregated_at = $3, finished_at = $3 WHERE id = $1",
            vec![run_id.into(), format!("invalid period {period_s:?}").into(), now.into()],
        )
        .await?;
        txn.commit().await?;
        return Ok(());
    };
    let filter = run_customer_filter(customer_ids.as_ref());

    let snapshot = compute_snapshot(&txn, tenant_id, period, filter.as_deref()).await?;
    let last = if dry_run { HashMap::new() } else { last_succeeded(&txn, tenant_id, period).await? };

    let (superseded, touched_runs) = if dry_run {
        (0, Vec::new())
    } else {
        let additions: Vec<i64> = snapshot.iter().map(|s| s.cw_addition_id).collect();
        supersede_older(&txn, tenant_id, &additions, run_id, now).await?
    };

    let n = snapshot.len();
    let mut cols = PushColumns::with_capacity(n);
    let mut skipped: HashMap<&'static str, u64> = HashMap::new();
    let mut unchanged = Vec::new();
    for s in &snapshot {
        let (status, skip, value) = match (&s.result, dry_run) {
            (Err(reason), _) => (PushStatus::Skipped, Some(*reason), None),
            (Ok(v), true) => (PushStatus::Skipped, Some(SkipReason::DryRun), Some(*v)),
            (Ok(v), false) if last.get(&(s.mapping_id, s.cw_addition_id)) == Some(&v.quantity) => {
                (PushStatus::Skipped, Some(SkipReason::Unchanged), Some(*v))
            }
            (Ok(v), false) => (PushStatus::Pending, None, Some(*v)),
        };
        if let Some(reason) = skip {
            *skipped.entry(reason.as_str()).or_default() += 1;
        }
        if skip == Some(SkipReason::Unchanged) {
            unchanged.push(s.mapping_id);
        }
        cols.push(s, status, skip, value, now);
    }

    let inserted = sql::insert_rows(
        &txn,
        "pushes",
        &cols.into_rowset(),
        &[
            ("tenant_id", tenant_id.into()),
            ("sync_run_id", run_id.into()),
            ("period", period.to_string().into()),
            ("dry_run", dry_run.into()),
            ("attempts", 0i32.into()),
            ("max_attempts", i32::try_from(deps.settings.push_max_attempts).unwrap_or(i32::MAX).into()),
            ("created_at", now.into()),
            ("updated_at", now.into()),
        ],
        "RETURNING id, status",
    )
    .await?;
    let mut pending = Vec::new();
    for r in &inserted {
        if r.try_get::<String>("", "status")? == PushStatus::Pending.as_str() {
            pending.push(r.try_get::<i64>("", "id")?);
        }
    }

    if !unchanged.is_empty() {
        // ConnectWise already holds the recomputed quantity: a correction that did not change it
        // leaves nothing to re-send, so the mapping is current again.
        sql::exec(
            &txn,
            &format!("UPDATE product_mappings SET stale = FALSE WHERE {} AND stale = TRUE", sql::in_list(&txn, "id", 1)),
            vec![sql::i64_list(&txn, &unchanged)],
        )
        .await?;
    }
    sql::exec(&txn, "UPDATE sync_runs SET aggregated_at = $2 WHERE id = $1", vec![run_id.into(), now.into()]).await?;
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
                "mappings": n,
                "pending": pending.len(),
                "skipped": skipped,
                "superseded": superseded,
            })),
        },
    )
    .await?;
    if pending.is_empty() {
        super::finish_run_if_done(&txn, run_id, now).await?;
    }
    txn.commit().await?;

    for other in touched_runs {
        super::finish_run_if_done(&deps.db, other, now).await?;
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

/// Column vectors of the push rows to insert.
struct PushColumns {
    mapping_id: Vec<i64>,
    customer_id: Vec<i64>,
    module: Vec<String>,
    usage: Vec<String>,
    method: Vec<String>,
    company: Vec<i64>,
    agreement: Vec<i64>,
    addition: Vec<i64>,
    sequence: Vec<i64>,
    product: Vec<Option<i64>>,
    status: Vec<String>,
    value: Vec<Option<i64>>,
    quantity: Vec<Option<i64>>,
    sample_days: Vec<i32>,
    fallback: Vec<bool>,
    skip_reason: Vec<Option<String>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
}

impl PushColumns {
    fn with_capacity(n: usize) -> Self {
        PushColumns {
            mapping_id: Vec::with_capacity(n),
            customer_id: Vec::with_capacity(n),
            module: Vec::with_capacity(n),
            usage: Vec::with_capacity(n),
            method: Vec::with_capacity(n),
            company: Vec::with_capacity(n),
            agreement: Vec::with_capacity(n),
            addition: Vec::with_capacity(n),
            sequence: Vec::with_capacity(n),
            product: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
            quantity: Vec::with_capacity(n),
            sample_days: Vec::with_capacity(n),
            fallback: Vec::with_capacity(n),
            skip_reason: Vec::with_capacity(n),
            finished_at: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, s: &SnapshotRow, status: PushStatus, skip: Option<SkipReason>, value: Option<MonthlyValue>, now: DateTime<Utc>) {
        self.mapping_id.push(s.mapping_id);
        self.customer_id.push(s.customer_id);
        self.module.push(s.module.as_str().to_string());
        self.usage.push(s.usage.as_str().to_string());
        self.method.push(s.method.as_str().to_string());
        self.company.push(s.cw_company_id);
        self.agreement.push(s.cw_agreement_id);
        self.addition.push(s.cw_addition_id);
        self.sequence.push(s.cw_sequence_number);
        self.product.push(s.cw_product_id);
        self.status.push(status.as_str().to_string());
        self.value.push(value.map(|v| v.value_micros));
        self.quantity.push(value.map(|v| v.quantity));
        self.sample_days.push(value.map(|v| i32::try_from(v.sample_days).unwrap_or(i32::MAX)).unwrap_or(0));
        self.fallback.push(value.is_some_and(|v| v.fallback));
        self.skip_reason.push(skip.map(|r| r.as_str().to_string()));
        self.finished_at.push(status.is_final().then_some(now));
    }

    fn into_rowset(self) -> RowSet {
        RowSet::new()
            .col("product_mapping_id", Col::I64(self.mapping_id))
            .col("customer_id", Col::I64(self.customer_id))
            .col("product_module", Col::Text(self.module))
            .col("usage", Col::Text(self.usage))
            .col("interval_method", Col::Text(self.method))
            .col("cw_company_id", Col::I64(self.company))
            .col("cw_agreement_id", Col::I64(self.agreement))
            .col("cw_addition_id", Col::I64(self.addition))
            .col("cw_sequence_number", Col::I64(self.sequence))
            .col("cw_product_id", Col::OptI64(self.product))
            .col("status", Col::Text(self.status))
            .col("value_micros", Col::OptI64(self.value))
            .col("quantity", Col::OptI64(self.quantity))
            .col("sample_days", Col::I32(self.sample_days))
            .col("fallback", Col::Bool(self.fallback))
            .col("skip_reason", Col::OptText(self.skip_reason))
            .col("finished_at", Col::OptTs(self.finished_at))
    }
}
