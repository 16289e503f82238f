//! Aggregation: a dry-run monthly sync of the aggregation tenant (all four methods mixed), run by
//! the `worker` process, against one hand-written SQL query computing the same quantities.
use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use domain::Period;
use sea_orm::sqlx::{self, Row as _};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::infra::{Child, Infra, Result, fail};
use crate::report::{Row, Series, Target};
use crate::{Extras, Sizes};

/// The baseline: the quantity of every mapping of tenant `$1` for the month `$2..=$3`, written by
/// hand as one grouped join (the billing rules: license window, AVERAGE without the provisioning day,
/// LAST_DAY with its fallback to the latest earlier sample, SUM of the three storage types'
/// LAST_DAY, 0 once deprovisioned before month end, NULL = nothing to bill). The latest sample is
/// found with one MAX over `day offset × 2^50 + value`.
pub const BASELINE_SQL: &str = "\
SELECT pm.id, CAST(CASE
    WHEN COUNT(s.day) = 0 THEN CASE WHEN l.deprovisioned_on < $3 THEN 0 END
    WHEN pm.interval_method = 'AVERAGE' THEN CASE WHEN COUNT(s.day) FILTER (WHERE s.day <> l.provisioned_on) > 0 THEN
        (CAST(SUM(s.value_micros) FILTER (WHERE s.day <> l.provisioned_on) AS BIGINT)
          + COUNT(s.day) FILTER (WHERE s.day <> l.provisioned_on) * 1000000 - 1)
        / (COUNT(s.day) FILTER (WHERE s.day <> l.provisioned_on) * 1000000) END
    WHEN pm.interval_method = 'MAXIMUM' THEN (MAX(s.value_micros) + 999999) / 1000000
    WHEN l.deprovisioned_on < $3 THEN 0
    WHEN pm.interval_method = 'LAST_DAY' THEN
        (MAX((s.day - $2) * 1125899906842624 + s.value_micros) % 1125899906842624 + 999999) / 1000000
    ELSE (COALESCE(MAX((s.day - $2) * 1125899906842624 + s.value_micros) FILTER (WHERE s.usage = 'CLOUD_STORAGE') % 1125899906842624, 0)
        + COALESCE(MAX((s.day - $2) * 1125899906842624 + s.value_micros) FILTER (WHERE s.usage = 'EARLY_DELETE_LTR_STORAGE') % 1125899906842624, 0)
        + COALESCE(MAX((s.day - $2) * 1125899906842624 + s.value_micros) FILTER (WHERE s.usage = 'LTR_STORAGE') % 1125899906842624, 0)
        + 999999) / 1000000
  END AS BIGINT) AS quantity
FROM product_mappings pm
JOIN customer_mappings cm ON cm.customer_id = pm.customer_id AND cm.tenant_id = pm.tenant_id
JOIN licenses l ON l.customer_id = pm.customer_id AND l.product_module = pm.product_module
LEFT JOIN consumption_samples s ON s.customer_id = pm.customer_id AND s.product_module = pm.product_module
  AND (s.usage = pm.usage OR (pm.interval_method = 'SUM' AND s.usage IN ('CLOUD_STORAGE', 'EARLY_DELETE_LTR_STORAGE', 'LTR_STORAGE')))
  AND s.day BETWEEN $2 AND $3 AND s.day >= l.provisioned_on AND (l.deprovisioned_on IS NULL OR s.day <= l.deprovisioned_on)
WHERE pm.tenant_id = $1
GROUP BY pm.id, pm.interval_method, l.provisioned_on, l.deprovisioned_on";

/// The aggregation tenant as seeded.
pub struct AggTenant {
    pub tenant_id: i64,
    pub period: Period,
    pub mappings: usize,
}

type Quantities = HashMap<i64, Option<i64>>;

/// The baseline query once (with the same `work_mem` aggregation sets for its statistics query).
async fn baseline_once(infra: &Infra, t: &AggTenant) -> Result<(f64, Quantities)> {
    let pool = infra.db.get_postgres_connection_pool();
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL work_mem = '64MB'").execute(&mut *tx).await?;
    let started = std::time::Instant::now();
    let rows = sqlx::query(BASELINE_SQL).bind(t.tenant_id).bind(t.period.first_day()).bind(t.period.last_day()).fetch_all(&mut *tx).await?;
    let elapsed = started.elapsed().as_secs_f64();
    tx.commit().await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(r.try_get::<i64, _>(0)?, r.try_get::<Option<i64>, _>(1)?);
    }
    Ok((elapsed, out))
}

/// A dry run through the worker. Returns (aggregation time: from the run's `aggregated_at`, stamped
/// when `aggregate_run` starts, to the moment its commit is visible; end-to-end time from the
/// enqueue; quantities).
async fn ours_once(infra: &Infra, queue: &worker::RedisQueue, t: &AggTenant, workers: &mut [Child]) -> Result<(f64, f64, Quantities)> {
    let principal = sync_core::auth::Principal {
        sub: "bench".into(),
        tenant_key: "bench-agg".into(),
        tenant_id: t.tenant_id,
        roles: vec!["admin".into()],
    };
    let started = Utc::now();
    let run = match sync_core::service::sync::run_monthly_sync(&infra.db, queue, &principal, t.period, None, true, started).await? {
        Ok(run) => run,
        Err(errors) => return fail(format!("runMonthlySync refused: {errors:?}")),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let (done, aggregated_at) = loop {
        let row = infra
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT status, aggregated_at FROM sync_runs WHERE id = $1",
                [run.id.into()],
            ))
            .await?
            .ok_or("the run disappeared")?;
        let now = Utc::now();
        let status: String = row.try_get("", "status")?;
        if status != "RUNNING" {
            let at: Option<DateTime<Utc>> = row.try_get("", "aggregated_at")?;
            break (now, at.ok_or("a finished run without aggregated_at")?);
        }
        if std::time::Instant::now() > deadline {
            return fail("the dry run did not finish within 10 minutes");
        }
        for w in workers.iter_mut() {
            w.check_alive()?;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let aggregation = (done - aggregated_at).as_seconds_f64();
    let end_to_end = (done - started).as_seconds_f64();
    let rows = infra
        .db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT product_mapping_id, quantity, status, skip_reason FROM pushes WHERE sync_run_id = $1",
            [run.id.into()],
        ))
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let status: String = r.try_get("", "status")?;
        if status != "SKIPPED" {
            return fail(format!("a dry-run push is {status}, not SKIPPED"));
        }
        out.insert(r.try_get::<i64>("", "product_mapping_id")?, r.try_get::<Option<i64>>("", "quantity")?);
    }
    Ok((aggregation, end_to_end, out))
}

/// Mismatches between two quantity maps, described.
fn compare(ours: &Quantities, baseline: &Quantities) -> Option<String> {
    let mut bad: Vec<String> = Vec::new();
    for (id, q) in baseline {
        match ours.get(id) {
            Some(o) if o == q => {}
            other => bad.push(format!("mapping {id}: ours {other:?}, baseline {q:?}")),
        }
    }
    for id in ours.keys().filter(|id| !baseline.contains_key(id)) {
        bad.push(format!("mapping {id} only in ours"));
    }
    if bad.is_empty() {
        return None;
    }
    bad.sort();
    Some(format!(
        "{} quantities differ from the baseline's, e.g. {}",
        bad.len(),
        bad.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
    ))
}

pub async fn run(
    infra: &Infra,
    sizes: &Sizes,
    t: &AggTenant,
    queue: &worker::RedisQueue,
    workers: &mut [Child],
    extras: &mut Extras,
) -> Result<Row> {
    let mut row = Row::new(
        &format!(
            "aggregation: dry run of {} mappings × {} days (worker) vs one SQL query",
            crate::report::thousands(t.mappings as f64),
            t.period.num_days()
        ),
        Target::Time { max_ratio: Some(2.0), min_rate: None, units: t.mappings as f64, unit: "mappings" },
    );
    let mut baseline = Series::default();
    let mut end_to_end = Series::default();
    for i in 0..sizes.iterations {
        let (b, expected) = baseline_once(infra, t).await?;
        baseline.push(b);
        if expected.len() != t.mappings {
            return fail(format!("the baseline returned {} rows for {} mappings", expected.len(), t.mappings));
        }
        let (o, e2e, got) = ours_once(infra, queue, t, workers).await?;
        row.ours.push(o);
        end_to_end.push(e2e);
        println!("  aggregation #{}: baseline query {:.2} s, aggregate_run {:.2} s (enqueue → done {:.2} s)", i + 1, b, o, e2e);
        if let Some(problem) = compare(&got, &expected) {
            row.error = Some(problem);
        }
        if i == 0 {
            let skipped = expected.values().filter(|q| q.is_none()).count();
            let zero = expected.values().filter(|q| **q == Some(0)).count();
            println!("  aggregation: {} quantities identical to the baseline's ({skipped} NO_CONSUMPTION, {zero} zero)", got.len());
        }
    }
    row.baseline = Some(baseline);
    extras.aggregation_end_to_end = Some(end_to_end.median());
    extras.worker_rss_after_aggregation_mib = workers.iter().filter_map(|w| w.peak_rss_kib()).max().map(|k| k as f64 / 1024.0);
    Ok(row)
}
