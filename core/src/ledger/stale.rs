//! The mappings' `stale` flag and input version.
//!
//! Every change of a mapping's inputs — a corrected value, a sample for a day that had none, a
//! license window that moved — bumps the mapping's `input_version`. When the changed period has a
//! non-dry, non-cancelled push of the mapping (in any state: its snapshot predates the change), the
//! mapping is flagged `stale`. A push that reaches ConnectWise (or finds it already holds the
//! quantity) clears the flag only when its snapshot's input version is the mapping's current one:
//! no input changed after it.
use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use domain::{Period, ProductModule, UsageMetric};
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::json;

use crate::engine::sql::{self, AuditRow, Col, RowSet};

/// An input of some mappings changed in the months `from..=to`: the samples of one usage
/// (`usage: Some`) or the license window of the module (`usage: None`: every mapping of the
/// customer and module).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InputChange {
    pub customer_id: i64,
    pub module: ProductModule,
    pub usage: Option<UsageMetric>,
    pub from: Period,
    pub to: Period,
}

/// The last month there is (an open end).
fn end_of_time() -> Period {
    Period::new(9999, 12).unwrap_or_else(|| Period::of(NaiveDate::MAX))
}

impl InputChange {
    /// A changed or new sample of `day`.
    pub fn sample(customer_id: i64, module: ProductModule, usage: UsageMetric, day: NaiveDate) -> Self {
        InputChange { customer_id, module, usage: Some(usage), from: Period::of(day), to: Period::of(day) }
    }

    /// The license window of the module moved from `old` to `new` (`(provisioned, deprovisioned)`):
    /// the months between the old and the new date of each bound that moved (from the bound on, when
    /// a deprovisioning date was set or removed). Empty when nothing moved.
    pub fn window(
        customer_id: i64,
        module: ProductModule,
        old: (NaiveDate, Option<NaiveDate>),
        new: (NaiveDate, Option<NaiveDate>),
    ) -> Vec<InputChange> {
        let span = |a: NaiveDate, b: Option<NaiveDate>| {
            let (from, to) = match b {
                Some(b) => (Period::of(a.min(b)), Period::of(a.max(b))),
                None => (Period::of(a), end_of_time()),
            };
            InputChange { customer_id, module, usage: None, from, to }
        };
        let mut out = Vec::new();
        if old.0 != new.0 {
            out.push(span(old.0, Some(new.0)));
        }
        match (old.1, new.1) {
            (Some(a), Some(b)) if a != b => out.push(span(a, Some(b))),
            (Some(d), None) | (None, Some(d)) => out.push(span(d, None)),
            _ => {}
        }
        out
    }
}

/// Record input changes: bump the affected mappings' input version, and flag those whose changed
/// period has a non-dry, non-cancelled push. Returns how many mappings were newly flagged.
pub async fn inputs_changed<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    tenant_id: i64,
    changes: &[InputChange],
    actor: &str,
    reason: &str,
) -> Result<u64, DbErr> {
    let changes: Vec<&InputChange> = changes.iter().collect::<HashSet<_>>().into_iter().collect();
    if changes.is_empty() {
        return Ok(0);
    }
    // Wait for a run being aggregated: its pushes must be visible to the search below.
    lock_inputs(c, tenant_id).await?;
    let rows = RowSet::new()
        .col("customer_id", Col::I64(changes.iter().map(|t| t.customer_id).collect()))
        .col("product_module", Col::Text(changes.iter().map(|t| t.module.as_str().to_string()).collect()))
        .col("usage", Col::Text(changes.iter().map(|t| t.usage.map(|u| u.as_str()).unwrap_or("").to_string()).collect()))
        .col("period_from", Col::Text(changes.iter().map(|t| t.from.to_string()).collect()))
        .col("period_to", Col::Text(changes.iter().map(|t| t.to.to_string()).collect()));
    let ew = UsageMetric::EW_STORAGE.iter().map(|u| format!("'{}'", u.as_str())).collect::<Vec<_>>().join(", ");
    let mut hit: HashSet<i64> = HashSet::new();
    let mut flag: HashSet<i64> = HashSet::new();
    for (cte, mut values) in rows.ctes(c.get_database_backend(), "t", 2) {
        values.insert(0, tenant_id.into());
        // SUM mappings bill all three Enterprise Workloads storage types: any of them is their input.
        let found = sql::query(
            c,
            &format!(
                "WITH {cte} \
                 SELECT pm.id, MAX(CASE WHEN EXISTS (SELECT 1 FROM pushes p WHERE p.product_mapping_id = pm.id \
                     AND p.period >= t.period_from AND p.period <= t.period_to AND p.dry_run = FALSE AND p.status <> 'CANCELLED') THEN 1 ELSE 0 END) AS pushed \
                 FROM product_mappings pm JOIN t ON t.customer_id = pm.customer_id AND t.product_module = pm.product_module \
                   AND (t.usage = '' OR t.usage = pm.usage OR (pm.interval_method = 'SUM' AND t.usage IN ({ew}))) \
                 WHERE pm.tenant_id = $1 GROUP BY pm.id"
            ),
            values,
        )
        .await?;
        for r in found {
            let id: i64 = r.try_get("", "id")?;
            hit.insert(id);
            if r.try_get::<i32>("", "pushed")? == 1 {
                flag.insert(id);
            }
        }
    }
    if hit.is_empty() {
        return Ok(0);
    }
    let hit: Vec<i64> = hit.into_iter().collect();
    sql::exec(
        c,
        &format!("UPDATE product_mappings SET input_version = input_version + 1 WHERE {}", sql::in_list(c, "id", 1)),
        vec![sql::i64_list(c, &hit)],
    )
    .await?;
    if flag.is_empty() {
        return Ok(0);
    }
    let flag: Vec<i64> = flag.into_iter().collect();
    let flagged = sql::query(
        c,
        &format!("UPDATE product_mappings SET stale = TRUE WHERE {} AND stale = FALSE RETURNING id", sql::in_list(c, "id", 1)),
        vec![sql::i64_list(c, &flag)],
    )
    .await?;
    let audits = flagged
        .iter()
        .map(|r| {
            Ok(AuditRow {
                tenant_id,
                actor: actor.to_string(),
                action: "product_mapping.stale",
                entity_type: "product_mapping",
                entity_id: r.try_get::<i64>("", "id")?.to_string(),
                before: Some(json!({"stale": false})),
                after: Some(json!({"stale": true})),
                detail: Some(json!({"reason": reason})),
            })
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    let n = audits.len() as u64;
    sql::audit_many(c, now, audits).await?;
    Ok(n)
}

/// Serialises a tenant's input changes with the aggregation of its runs, until the caller's
/// transaction ends (PostgreSQL; SQLite serialises all writers already).
///
/// Without it, a change committed while a run is being aggregated is lost to both sides: the
/// aggregation read the samples before the change, and the change's search for pushes to flag
/// cannot see the pushes the aggregation has not committed yet — so the push sends the old value
/// and the mapping is never flagged stale. Both take this lock before reading: an input change
/// (after writing its samples or licenses, before searching for pushes) then sees the committed
/// pushes, and an aggregation that waited sees the committed change.
pub async fn lock_inputs<C: ConnectionTrait>(c: &C, tenant_id: i64) -> Result<(), DbErr> {
    if !sql::is_pg(c) {
        return Ok(());
    }
    sql::exec(c, "SELECT pg_advisory_xact_lock($1)", vec![(INPUTS_LOCK_BASE ^ tenant_id).into()]).await?;
    Ok(())
}

/// Advisory lock keys of [`lock_inputs`]: this base XOR the tenant id. The high bytes ("input" in
/// ASCII) differ from the migration lock's ("csync_mg"), and tenant ids only reach the low ones, so
/// the keys never meet.
const INPUTS_LOCK_BASE: i64 = 0x696e_7075_7400_0000;

/// A push computed from `input_version` reached ConnectWise: the mapping is current again unless an
/// input changed after that snapshot.
pub async fn clear_if_current<C: ConnectionTrait>(c: &C, mapping_id: i64, input_version: i64) -> Result<bool, DbErr> {
    let n = sql::exec(
        c,
        "UPDATE product_mappings SET stale = FALSE WHERE id = $1 AND stale = TRUE AND input_version <= $2",
        vec![mapping_id.into(), input_version.into()],
    )
    .await?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        domain::parse_day(s).expect("day")
    }

    fn p(s: &str) -> Period {
        Period::parse(s).expect("period")
    }

    #[test]
    fn moved_windows_cover_every_month_between_the_old_and_new_bound() {
        let m = ProductModule::Microsoft365;
        let span = |old, new| InputChange::window(1, m, old, new).into_iter().map(|c| (c.from, c.to)).collect::<Vec<_>>();
        assert_eq!(span((d("2026-02-10"), None), (d("2026-02-10"), None)), vec![]);
        assert_eq!(span((d("2026-02-10"), None), (d("2026-04-02"), None)), vec![(p("2026-02"), p("2026-04"))]);
        assert_eq!(span((d("2026-04-02"), None), (d("2026-03-30"), None)), vec![(p("2026-03"), p("2026-04"))]);
        let ended = span((d("2026-01-01"), Some(d("2026-05-31"))), (d("2026-01-01"), Some(d("2026-06-15"))));
        assert_eq!(ended, vec![(p("2026-05"), p("2026-06"))]);
        let closed = span((d("2026-01-01"), None), (d("2026-01-01"), Some(d("2026-06-15"))));
        assert_eq!(closed, vec![(p("2026-06"), end_of_time())], "a window that closes changes every later month");
    }
}
