//! Catalog refresh: the tenant's ConnectWise companies, agreements, additions and service boards
//! copied into the `cw_*` cache tables (dropdowns and mapping validation read them), replaced as a
//! whole in one transaction so readers never see half a catalog.
use std::collections::BTreeMap;

use chrono::NaiveDate;
use connectwise::{BoardItemKind, CwClient, CwError};
use futures::{StreamExt, TryStreamExt};
use sea_orm::DbErr;
use serde_json::json;

use super::sql::{self, Col, RowSet};
use super::{EngineDeps, EngineError};

/// ConnectWise list calls per tenant in flight at once during a refresh.
const CONCURRENCY: usize = 4;

/// What a refresh stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CatalogReport {
    pub companies: u64,
    pub agreements: u64,
    pub additions: u64,
    pub boards: u64,
    pub board_items: u64,
    /// Why nothing was refreshed (ConnectWise not configured, or a permanent ConnectWise error).
    pub error: Option<String>,
}

/// `"2026-03-01T00:00:00Z"` (or a bare date) → the calendar date.
pub(crate) fn cw_date(s: Option<&str>) -> Option<NaiveDate> {
    let s = s?.trim();
    domain::parse_day(s.get(..10)?).ok()
}

/// An addition's sequence number as the catalog keeps it: `(whole part, exact text when it is not
/// whole)`. ConnectWise declares it a double: `2.0` is stored as 2; `2.5` as 2 with `"2.5"`, which
/// the mapping rules refuse to resolve (a sequence number names an addition only when whole); none
/// as 0.
fn stored_sequence(a: &connectwise::Addition) -> (i64, Option<String>) {
    match &a.sequence_number {
        None => (0, None),
        Some(n) if n.is_whole() => (n.as_whole().unwrap_or(0), None),
        Some(n) => (n.whole_part().unwrap_or(0), Some(n.as_str().to_string())),
    }
}

fn kind_name(kind: BoardItemKind) -> &'static str {
    match kind {
        BoardItemKind::Teams => "TEAM",
        BoardItemKind::Statuses => "STATUS",
        BoardItemKind::Types => "TYPE",
        BoardItemKind::Subtypes => "SUBTYPE",
    }
}

struct Fetched {
    companies: Vec<connectwise::Company>,
    agreements: Vec<connectwise::Agreement>,
    additions: Vec<(i64, connectwise::Addition)>,
    boards: Vec<connectwise::Board>,
    items: Vec<(i64, BoardItemKind, connectwise::BoardItem)>,
}

async fn fetch(deps: &EngineDeps, tenant_id: i64, client: &CwClient) -> Result<Fetched, CwError> {
    // Each list call may follow several pages; the limiter is taken once per list.
    deps.rate.acquire(tenant_id).await;
    let companies = client.list_companies().await?;
    deps.rate.acquire(tenant_id).await;
    let agreements = client.list_agreements().await?;
    // Owned inputs and named async fns (not closures over borrowed iterators) keep this future
    // `Send`, which job runners need.
    let agreement_ids: Vec<i64> = agreements.iter().filter_map(|a| a.id).collect();
    let additions: Vec<Vec<(i64, connectwise::Addition)>> = futures::stream::iter(agreement_ids)
        .map(|agreement_id| additions_of(deps, client, tenant_id, agreement_id))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    deps.rate.acquire(tenant_id).await;
    let boards = client.list_boards().await?;
    let lists: Vec<(i64, BoardItemKind)> = boards.iter().filter_map(|b| b.id).flat_map(|id| BoardItemKind::ALL.map(|k| (id, k))).collect();
    let items: Vec<Vec<(i64, BoardItemKind, connectwise::BoardItem)>> = futures::stream::iter(lists)
        .map(|(board_id, kind)| board_items_of(deps, client, tenant_id, board_id, kind))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(Fetched {
        companies,
        agreements,
        additions: additions.into_iter().flatten().collect(),
        boards,
        items: items.into_iter().flatten().collect(),
    })
}

async fn additions_of(
    deps: &EngineDeps,
    client: &CwClient,
    tenant_id: i64,
    agreement_id: i64,
) -> Result<Vec<(i64, connectwise::Addition)>, CwError> {
    deps.rate.acquire(tenant_id).await;
    Ok(client.list_additions(agreement_id).await?.into_iter().map(|a| (agreement_id, a)).collect())
}

async fn board_items_of(
    deps: &EngineDeps,
    client: &CwClient,
    tenant_id: i64,
    board_id: i64,
    kind: BoardItemKind,
) -> Result<Vec<(i64, BoardItemKind, connectwise::BoardItem)>, CwError> {
    deps.rate.acquire(tenant_id).await;
    Ok(client.list_board_items(board_id, kind).await?.into_iter().map(|i| (board_id, kind, i)).collect())
}

/// Refresh the tenant's catalog cache (job `CatalogRefresh`). A retryable ConnectWise failure is
/// returned as `Err` so the queue tries again; a permanent one is audited and reported.
pub async fn refresh_catalog(deps: &EngineDeps, tenant_id: i64, actor: &str) -> Result<CatalogReport, EngineError> {
    // From now on a new `refreshConnectWiseCatalog` queues a new job (it may want what changes
    // while this one reads).
    crate::service::catalog::refresh_started(&deps.db, tenant_id).await?;
    let (client, _settings) = match super::cw_client_for_tenant(deps, tenant_id).await? {
        Some(found) => found,
        None => return Ok(CatalogReport { error: Some("ConnectWise is not configured".into()), ..Default::default() }),
    };
    let fetched = match fetch(deps, tenant_id, &client).await {
        Ok(f) => f,
        Err(e) => {
            let message = super::clip(&e.to_string(), 1000);
            crate::audit::record(
                &deps.db,
                crate::audit::AuditRecord {
                    at: deps.clock.now(),
                    tenant_id,
                    actor,
                    action: "catalog.failed",
                    entity_type: "cw_settings",
                    entity_id: tenant_id.to_string(),
                    before: None,
                    after: None,
                    detail: Some(json!({"error_code": e.code(), "error": message, "willRetry": e.is_retryable()})),
                },
            )
            .await?;
            if e.is_retryable() {
                return Err(EngineError::Internal(format!("catalog refresh of tenant {tenant_id}: {message}")));
            }
            return Ok(CatalogReport { error: Some(message), ..Default::default() });
        }
    };
    let report = store(deps, tenant_id, actor, fetched).await?;
    Ok(report)
}

async fn store(deps: &EngineDeps, tenant_id: i64, actor: &str, f: Fetched) -> Result<CatalogReport, DbErr> {
    let now = deps.clock.now();
    // Keyed maps drop duplicates a record moving between pages could cause (primary keys).
    // Records without an id (optional in ConnectWise's schema) cannot be referred to: skipped, as
    // are agreements whose company id is null (they cannot be matched to a customer).
    let companies: BTreeMap<i64, connectwise::Company> =
        f.companies.into_iter().filter(|c| !c.is_deleted()).filter_map(|c| Some((c.id?, c))).collect();
    let agreements: BTreeMap<i64, (i64, connectwise::Agreement)> =
        f.agreements.into_iter().filter_map(|a| Some((a.id?, (a.company.id?, a)))).collect();
    let additions: BTreeMap<i64, (i64, connectwise::Addition)> =
        f.additions.into_iter().filter_map(|(ag, a)| Some((a.id?, (ag, a)))).collect();
    let boards: BTreeMap<i64, connectwise::Board> = f.boards.into_iter().filter_map(|b| Some((b.id?, b))).collect();
    let items: BTreeMap<(i64, &'static str, i64), connectwise::BoardItem> =
        f.items.into_iter().filter_map(|(b, k, i)| Some(((b, kind_name(k), i.id?), i))).collect();

    let txn = sql::begin_write(&deps.db).await?;
    for table in ["cw_companies", "cw_agreements", "cw_additions", "cw_boards", "cw_board_items"] {
        sql::exec(&txn, &format!("DELETE FROM {table} WHERE tenant_id = $1"), vec![tenant_id.into()]).await?;
    }
    let consts = [("tenant_id", tenant_id.into()), ("refreshed_at", now.into())];

    let rows = RowSet::new()
        .col("id", Col::I64(companies.keys().copied().collect()))
        .col("identifier", Col::Text(companies.values().map(|c| c.identifier.clone()).collect()))
        .col("name", Col::Text(companies.values().map(|c| c.name.clone()).collect()))
        .col(
            "status",
            Col::Text(
                companies.values().map(|c| c.status.as_ref().and_then(|s| s.name.clone()).unwrap_or_else(|| "Unknown".into())).collect(),
            ),
        );
    sql::insert_rows(&txn, "cw_companies", &rows, &consts, "").await?;

    let rows = RowSet::new()
        .col("id", Col::I64(agreements.keys().copied().collect()))
        .col("company_id", Col::I64(agreements.values().map(|(company, _)| *company).collect()))
        .col("name", Col::Text(agreements.values().map(|(_, a)| a.name.clone()).collect()))
        .col("type_name", Col::OptText(agreements.values().map(|(_, a)| a.type_.as_ref().and_then(|t| t.name.clone())).collect()))
        .col(
            "status",
            Col::Text(
                agreements
                    .values()
                    .map(|(_, a)| {
                        a.agreement_status.clone().unwrap_or_else(|| if a.is_cancelled() { "Cancelled".into() } else { "Unknown".into() })
                    })
                    .collect(),
            ),
        )
        .col("cancelled_flag", Col::Bool(agreements.values().map(|(_, a)| a.is_cancelled()).collect()))
        .col("start_date", Col::OptDate(agreements.values().map(|(_, a)| cw_date(a.start_date.as_deref())).collect()))
        .col("end_date", Col::OptDate(agreements.values().map(|(_, a)| cw_date(a.end_date.as_deref())).collect()))
        .col("next_invoice_date", Col::OptDate(agreements.values().map(|(_, a)| cw_date(a.next_invoice_date.as_deref())).collect()));
    sql::insert_rows(&txn, "cw_agreements", &rows, &consts, "").await?;

    let rows = RowSet::new()
        .col("id", Col::I64(additions.keys().copied().collect()))
        .col("agreement_id", Col::I64(additions.values().map(|(ag, a)| a.agreement_id.unwrap_or(*ag)).collect()))
        .col("sequence_number", Col::I64(additions.values().map(|(_, a)| stored_sequence(a).0).collect()))
        .col("fractional_sequence_number", Col::OptText(additions.values().map(|(_, a)| stored_sequence(a).1).collect()))
        .col("product_id", Col::OptI64(additions.values().map(|(_, a)| a.product_id()).collect()))
        .col(
            "product_identifier",
            Col::OptText(additions.values().map(|(_, a)| a.product.as_ref().and_then(|p| p.identifier.clone())).collect()),
        )
        .col("description", Col::OptText(additions.values().map(|(_, a)| a.description.clone()).collect()))
        // Kept as ConnectWise's text (exact; the billing review parses them as decimals).
        .col("quantity", Col::OptText(additions.values().map(|(_, a)| a.quantity.as_ref().map(|q| q.to_string())).collect()))
        .col("unit_price", Col::OptText(additions.values().map(|(_, a)| a.unit_price.as_ref().map(|p| p.as_str().to_string())).collect()))
        .col(
            "less_included",
            Col::OptText(additions.values().map(|(_, a)| a.less_included.as_ref().map(|l| l.as_str().to_string())).collect()),
        )
        .col("effective_date", Col::OptDate(additions.values().map(|(_, a)| cw_date(a.effective_date.as_deref())).collect()))
        .col("cancelled_date", Col::OptDate(additions.values().map(|(_, a)| cw_date(a.cancelled_date.as_deref())).collect()));
    sql::insert_rows(&txn, "cw_additions", &rows, &consts, "").await?;

    let rows = RowSet::new()
        .col("id", Col::I64(boards.keys().copied().collect()))
        .col("name", Col::Text(boards.values().map(|b| b.name.clone()).collect()))
        .col("inactive", Col::Bool(boards.values().map(|b| b.is_inactive()).collect()));
    sql::insert_rows(&txn, "cw_boards", &rows, &consts, "").await?;

    let rows = RowSet::new()
        .col("board_id", Col::I64(items.keys().map(|k| k.0).collect()))
        .col("kind", Col::Text(items.keys().map(|k| k.1.to_string()).collect()))
        .col("id", Col::I64(items.keys().map(|k| k.2).collect()))
        .col("name", Col::Text(items.values().map(|i| i.name.clone()).collect()))
        .col("default_flag", Col::Bool(items.values().map(|i| i.is_default()).collect()));
    sql::insert_rows(&txn, "cw_board_items", &rows, &[("tenant_id", tenant_id.into())], "").await?;

    sql::exec(&txn, "UPDATE cw_settings SET catalog_refreshed_at = $2 WHERE tenant_id = $1", vec![tenant_id.into(), now.into()]).await?;
    let report = CatalogReport {
        companies: companies.len() as u64,
        agreements: agreements.len() as u64,
        additions: additions.len() as u64,
        boards: boards.len() as u64,
        board_items: items.len() as u64,
        error: None,
    };
    crate::audit::record(
        &txn,
        crate::audit::AuditRecord {
            at: now,
            tenant_id,
            actor,
            action: "catalog.refreshed",
            entity_type: "cw_settings",
            entity_id: tenant_id.to_string(),
            before: None,
            after: None,
            detail: Some(serde_json::to_value(&report).unwrap_or_default()),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_connectwise_strings() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 1);
        assert_eq!(cw_date(Some("2026-03-01T00:00:00Z")), d);
        assert_eq!(cw_date(Some("2026-03-01")), d);
        assert_eq!(cw_date(Some("")), None);
        assert_eq!(cw_date(Some("soon")), None);
        assert_eq!(cw_date(None), None);
    }

    #[test]
    fn sequence_numbers_as_stored() {
        let with = |seq: Option<&str>| connectwise::Addition { sequence_number: seq.map(|s| s.parse().unwrap()), ..Default::default() };
        assert_eq!(stored_sequence(&with(Some("2"))), (2, None));
        assert_eq!(stored_sequence(&with(Some("2.0"))), (2, None));
        assert_eq!(stored_sequence(&with(Some("2.5"))), (2, Some("2.5".into())));
        assert_eq!(stored_sequence(&with(Some("1e30"))), (0, Some("1e30".into())));
        assert_eq!(stored_sequence(&with(None)), (0, None));
    }
}
