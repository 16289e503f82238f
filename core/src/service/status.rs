//! Operator status (the dashboard's header and banners) and the aggregate figures `/metrics`
//! computes at scrape time. Tenant reads are scoped by the tenant id and show no deployment facts
//! (worker host names and process ids, other tenants' work); the cross-tenant aggregates return
//! counts only, never a tenant's name or data.
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use entity::{cw_settings, product_mapping, worker_heartbeat};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Value};

use crate::{engine::sql, error::ServiceResult};

/// A worker whose heartbeat is older than this counts as gone (it beats every 10 s).
pub const WORKER_ALIVE_WITHIN: Duration = Duration::seconds(60);

/// Window of the push attempt latency histogram.
pub const ATTEMPT_LATENCY_WINDOW: Duration = Duration::hours(24);

/// Upper bounds (milliseconds) of the push attempt latency histogram buckets.
pub const ATTEMPT_LATENCY_BOUNDS_MS: [i64; 11] = [25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000];

/// One worker process, from its heartbeat row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerLiveness {
    /// The worker's name (host and process id): a deployment fact, for operators' logs and
    /// `/metrics`, never shown to a tenant (see [`tenant_view_of_workers`]).
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Seen within [`WORKER_ALIVE_WITHIN`] of `now`.
    pub alive: bool,
}

/// Every worker with a heartbeat row, alive ones first, then by name.
pub async fn workers(db: &DatabaseConnection, now: DateTime<Utc>) -> ServiceResult<Vec<WorkerLiveness>> {
    let rows = worker_heartbeat::Entity::find().order_by_asc(worker_heartbeat::Column::WorkerName).all(db).await?;
    let mut out: Vec<WorkerLiveness> = rows
        .into_iter()
        .map(|r| WorkerLiveness {
            alive: is_alive(r.last_seen_at, now),
            name: r.worker_name,
            started_at: r.started_at,
            last_seen_at: r.last_seen_at,
        })
        .collect();
    out.sort_by_key(|w| !w.alive);
    Ok(out)
}

fn is_alive(last_seen_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - last_seen_at <= WORKER_ALIVE_WITHIN
}

/// Workers as a tenant may see them: whether they are alive and since when, labelled `worker 1`,
/// `worker 2`, … (alive ones first, then the most recently seen) instead of host names and pids.
pub fn tenant_view_of_workers(mut workers: Vec<WorkerLiveness>) -> Vec<WorkerLiveness> {
    workers.sort_by(|a, b| b.alive.cmp(&a.alive).then(b.last_seen_at.cmp(&a.last_seen_at)));
    workers.into_iter().enumerate().map(|(i, w)| WorkerLiveness { name: format!("worker {}", i + 1), ..w }).collect()
}

/// The tenant's own waiting work per queue, from its rows (the database is the truth; the queue
/// backend cannot tell one tenant's jobs from another's): `push` — pushes waiting to be sent or
/// retried, `aggregate` — runs not aggregated yet, `catalog` — a queued catalog refresh (0 or 1).
pub async fn tenant_queue_depth(db: &DatabaseConnection, tenant_id: i64) -> ServiceResult<Vec<(String, i64)>> {
    let rows = sql::query(
        db,
        "SELECT \
           (SELECT COUNT(*) FROM pushes WHERE tenant_id = $1 AND status IN ('PENDING', 'FAILED_RETRYING')) AS push, \
           (SELECT COUNT(*) FROM sync_runs WHERE tenant_id = $1 AND status = 'RUNNING' AND aggregated_at IS NULL) AS aggregate, \
           (SELECT COUNT(*) FROM catalog_refresh_requests WHERE tenant_id = $1) AS catalog",
        vec![tenant_id.into()],
    )
    .await?;
    let Some(r) = rows.first() else { return Ok(Vec::new()) };
    ["aggregate", "push", "catalog"].into_iter().map(|q| Ok((q.to_string(), r.try_get::<i64>("", q)?))).collect()
}

/// The tenant's ConnectWise connection as the engine sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub configured: bool,
    pub consumption_sync_enabled: bool,
    /// The auth breaker is open: ConnectWise refused the credentials, pushes stop until fixed.
    pub broken: bool,
    pub broken_reason: Option<String>,
    pub broken_since: Option<DateTime<Utc>>,
    /// A 429 paused all of the tenant's ConnectWise calls until then.
    pub paused_until: Option<DateTime<Utc>>,
}

pub async fn connection_status(db: &DatabaseConnection, tenant_id: i64) -> ServiceResult<ConnectionStatus> {
    let Some(s) = cw_settings::Entity::find_by_id(tenant_id).one(db).await? else {
        return Ok(ConnectionStatus::default());
    };
    Ok(ConnectionStatus {
        configured: true,
        consumption_sync_enabled: s.consumption_sync_enabled,
        broken: s.breaker_open,
        broken_reason: if s.breaker_open { s.breaker_reason } else { None },
        broken_since: if s.breaker_open { s.breaker_opened_at } else { None },
        paused_until: s.paused_until,
    })
}

/// Mappings whose pushed values a late consumption correction changed (the next run re-sends them).
pub async fn stale_mappings(db: &DatabaseConnection, tenant_id: i64) -> ServiceResult<i64> {
    let n = product_mapping::Entity::find()
        .filter(product_mapping::Column::TenantId.eq(tenant_id))
        .filter(product_mapping::Column::Stale.eq(true))
        .count(db)
        .await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The next tick of the six-field `SYNC_CRON` expression strictly after `after` (UTC).
pub fn next_scheduled_run(cron_expr: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    crate::jobs::parse_cron(cron_expr).ok()?.after(&after).next()
}

/// Which pushes [`push_status_counts`] counts (every filter optional).
#[derive(Clone, Debug, Default)]
pub struct PushCountFilter {
    pub period: Option<domain::Period>,
    pub customer_id: Option<i64>,
    pub sync_run_id: Option<i64>,
}

/// The tenant's pushes per status (for the dashboard's status tabs).
pub async fn push_status_counts(db: &DatabaseConnection, tenant_id: i64, f: &PushCountFilter) -> ServiceResult<HashMap<String, i64>> {
    let mut where_sql = String::from("tenant_id = $1");
    let mut values: Vec<Value> = vec![tenant_id.into()];
    if let Some(p) = f.period {
        values.push(p.to_string().into());
        where_sql.push_str(&format!(" AND period = ${}", values.len()));
    }
    if let Some(c) = f.customer_id {
        values.push(c.into());
        where_sql.push_str(&format!(" AND customer_id = ${}", values.len()));
    }
    if let Some(r) = f.sync_run_id {
        values.push(r.into());
        where_sql.push_str(&format!(" AND sync_run_id = ${}", values.len()));
    }
    let rows = sql::query(db, &format!("SELECT status, COUNT(*) AS n FROM pushes WHERE {where_sql} GROUP BY status"), values).await?;
    rows.iter().map(|r| Ok((r.try_get::<String>("", "status")?, r.try_get::<i64>("", "n")?))).collect()
}

// ------------------------------------------------------------ cross-tenant aggregates (/metrics)

/// Rows per value of `column` of `table`, across tenants. Both names are ours, never input.
async fn count_by(db: &DatabaseConnection, table: &'static str, column: &'static str) -> ServiceResult<Vec<(String, i64)>> {
    let rows =
        sql::query(db, &format!("SELECT {column} AS k, COUNT(*) AS n FROM {table} GROUP BY {column} ORDER BY {column}"), vec![]).await?;
    rows.iter().map(|r| Ok((r.try_get::<String>("", "k")?, r.try_get::<i64>("", "n")?))).collect()
}

/// Pushes per status across tenants (dry runs included: they are pushes too, marked `SKIPPED`…).
pub async fn pushes_by_status(db: &DatabaseConnection) -> ServiceResult<Vec<(String, i64)>> {
    count_by(db, "pushes", "status").await
}

/// Sync runs per status across tenants.
pub async fn runs_by_status(db: &DatabaseConnection) -> ServiceResult<Vec<(String, i64)>> {
    count_by(db, "sync_runs", "status").await
}

/// Worker processes seen within [`WORKER_ALIVE_WITHIN`].
pub async fn workers_alive(db: &DatabaseConnection, now: DateTime<Utc>) -> ServiceResult<i64> {
    let n = worker_heartbeat::Entity::find().filter(worker_heartbeat::Column::LastSeenAt.gte(now - WORKER_ALIVE_WITHIN)).count(db).await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Tenants whose ConnectWise auth breaker is open.
pub async fn open_breakers(db: &DatabaseConnection) -> ServiceResult<i64> {
    let n = cw_settings::Entity::find().filter(cw_settings::Column::BreakerOpen.eq(true)).count(db).await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Push attempt durations of one step and outcome, as a cumulative histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    /// `GET_COMPANY`, `GET_ADDITION`, `PATCH_QUANTITY`.
    pub step: String,
    /// `OK`, `ERROR`, `REJECTED`.
    pub outcome: String,
    /// (upper bound in milliseconds, attempts at or below it), in the order of the bounds.
    pub buckets: Vec<(i64, u64)>,
    pub count: u64,
    pub sum_ms: i64,
}

/// Push attempts started since `since`, bucketed in one set-based statement (no rows leave the
/// database): one `SUM(CASE …)` per bucket bound.
pub async fn attempt_latency(db: &DatabaseConnection, since: DateTime<Utc>, bounds_ms: &[i64]) -> ServiceResult<Vec<LatencyHistogram>> {
    let bucket_cols: String =
        bounds_ms.iter().enumerate().map(|(i, b)| format!(", SUM(CASE WHEN duration_ms <= {b} THEN 1 ELSE 0 END) AS le_{i}")).collect();
    let statement = format!(
        "SELECT step, outcome, COUNT(*) AS n, CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) AS total_ms{bucket_cols} \
         FROM push_attempts WHERE started_at >= $1 GROUP BY step, outcome ORDER BY step, outcome"
    );
    let rows = sql::query(db, &statement, vec![since.into()]).await?;
    let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
    rows.iter()
        .map(|r| {
            let buckets = bounds_ms
                .iter()
                .enumerate()
                .map(|(i, b)| Ok((*b, as_u64(r.try_get::<Option<i64>>("", &format!("le_{i}"))?.unwrap_or(0)))))
                .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
            Ok(LatencyHistogram {
                step: r.try_get("", "step")?,
                outcome: r.try_get("", "outcome")?,
                buckets,
                count: as_u64(r.try_get::<i64>("", "n")?),
                sum_ms: r.try_get("", "total_ms")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn next_scheduled_run_is_the_next_tick_after_now() {
        let now = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
        assert_eq!(next_scheduled_run("0 0 6 2 * *", now), Some(Utc.with_ymd_and_hms(2026, 4, 2, 6, 0, 0).unwrap()));
        let on_tick = Utc.with_ymd_and_hms(2026, 4, 2, 6, 0, 0).unwrap();
        assert_eq!(next_scheduled_run("0 0 6 2 * *", on_tick), Some(Utc.with_ymd_and_hms(2026, 5, 2, 6, 0, 0).unwrap()));
        assert_eq!(next_scheduled_run("not a cron", now), None);
    }

    /// The set-based aggregates are portable: the same statements on SQLite (PostgreSQL is covered
    /// by the integration tests).
    #[tokio::test]
    async fn aggregates_run_on_sqlite() {
        let db = crate::db::connect("sqlite::memory:", 1).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let now = Utc::now();
        let t = |v: DateTime<Utc>| -> Value { v.into() };
        sql::exec(&db, "INSERT INTO tenants (id, external_id, created_at) VALUES (1, 'acme', $1)", vec![t(now)]).await.unwrap();
        sql::exec(
            &db,
            "INSERT INTO sync_runs (id, tenant_id, period, trigger, dry_run, status, requested_by, started_at) \
             VALUES (1, 1, '2026-01', 'MANUAL', FALSE, 'PARTIALLY_FAILED', 'user:a', $1)",
            vec![t(now)],
        )
        .await
        .unwrap();
        for (id, status) in [(1, "DEAD"), (2, "SUCCEEDED"), (3, "SUCCEEDED")] {
            sql::exec(
                &db,
                "INSERT INTO pushes (id, tenant_id, sync_run_id, customer_id, period, product_module, usage, interval_method, cw_company_id, \
                   cw_agreement_id, cw_addition_id, cw_sequence_number, status, max_attempts, created_at, updated_at) \
                 VALUES ($1, 1, 1, 1, '2026-01', 'MICROSOFT_365', 'ACTIVE_USERS', 'AVERAGE', 1, 1, $1, 1, $2, 8, $3, $3)",
                vec![id.into(), status.into(), t(now)],
            )
            .await
            .unwrap();
        }
        // Two recent attempts (40 ms, 700 ms) and one outside the window.
        for (ms, at) in [(40i64, now - Duration::minutes(5)), (700, now - Duration::hours(1)), (10, now - Duration::hours(30))] {
            sql::exec(
                &db,
                "INSERT INTO push_attempts (push_id, tenant_id, attempt_no, step, started_at, duration_ms, outcome) \
                 VALUES (1, 1, 1, 'PATCH_QUANTITY', $1, $2, 'ERROR')",
                vec![t(at), ms.into()],
            )
            .await
            .unwrap();
        }
        sql::exec(&db, "INSERT INTO worker_heartbeats (worker_name, started_at, last_seen_at) VALUES ('w', $1, $1)", vec![t(now)])
            .await
            .unwrap();

        assert_eq!(pushes_by_status(&db).await.unwrap(), vec![("DEAD".to_string(), 1), ("SUCCEEDED".to_string(), 2)]);
        assert_eq!(runs_by_status(&db).await.unwrap(), vec![("PARTIALLY_FAILED".to_string(), 1)]);
        assert_eq!(workers_alive(&db, now).await.unwrap(), 1);
        assert_eq!(workers_alive(&db, now + Duration::minutes(2)).await.unwrap(), 0);
        let h = attempt_latency(&db, now - ATTEMPT_LATENCY_WINDOW, &[50, 500, 1000]).await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].step.as_str(), h[0].outcome.as_str(), h[0].count, h[0].sum_ms), ("PATCH_QUANTITY", "ERROR", 2, 740));
        assert_eq!(h[0].buckets, vec![(50, 1), (500, 1), (1000, 2)]);
        let depth = tenant_queue_depth(&db, 1).await.unwrap();
        assert_eq!(depth, vec![("aggregate".to_string(), 0), ("push".to_string(), 0), ("catalog".to_string(), 0)]);
        let counts = push_status_counts(&db, 1, &PushCountFilter { sync_run_id: Some(1), ..Default::default() }).await.unwrap();
        assert_eq!((counts.get("DEAD"), counts.get("SUCCEEDED")), (Some(&1), Some(&2)));
        assert!(push_status_counts(&db, 2, &PushCountFilter::default()).await.unwrap().is_empty(), "tenant-scoped");
    }

    #[test]
    fn tenants_see_worker_labels_not_hosts() {
        let now = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
        let w = |name: &str, seen_s: i64| WorkerLiveness {
            name: name.into(),
            started_at: now - Duration::hours(1),
            last_seen_at: now - Duration::seconds(seen_s),
            alive: is_alive(now - Duration::seconds(seen_s), now),
        };
        let view = tenant_view_of_workers(vec![w("host-b:202", 120), w("host-a:101", 3), w("host-c:303", 1)]);
        let names: Vec<(&str, bool)> = view.iter().map(|w| (w.name.as_str(), w.alive)).collect();
        assert_eq!(names, [("worker 1", true), ("worker 2", true), ("worker 3", false)]);
        assert_eq!(view[0].last_seen_at, now - Duration::seconds(1), "the most recently seen first");
    }

    #[test]
    fn a_worker_is_alive_for_sixty_seconds_after_its_heartbeat() {
        let now = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
        assert!(is_alive(now - Duration::seconds(60), now));
        assert!(!is_alive(now - Duration::seconds(61), now));
    }
}
