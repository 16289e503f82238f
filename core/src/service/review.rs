//! The billing review of a month (`billingReview`, the CSV export): one line per product mapping,
//! computed by the very snapshot a sync run aggregates (`engine::aggregate::compute_snapshot`: the
//! same set-based statistics and domain rules), joined with what ConnectWise holds on each
//! addition (the catalog cache) and the domain's billing rules (`domain::review`).
use std::collections::{HashMap, HashSet};

use domain::{
    BillingUnit, ExactDecimal as Decimal, IntervalMethod, LineFlags, MonthlyValue, Period, ProductModule, SkipReason, UsageMetric,
};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::{
    engine::{
        aggregate::{MappingPage, SnapshotRow, SnapshotScope, compute_snapshot},
        sql,
    },
    error::{ServiceError, ServiceResult},
    pagination::{Page, decode_cursor, encode_cursor},
};

/// One line of the review: a mapping's month as a run would push it now, and what it bills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewLine {
    pub product_mapping_id: i64,
    pub customer_id: i64,
    pub customer_name: String,
    pub customer_external_id: String,
    pub cw_addition_id: i64,
    pub module: ProductModule,
    pub usage: UsageMetric,
    pub interval: IntervalMethod,
    pub unit: BillingUnit,
    /// The monthly value and quantity, or why the run would skip the line.
    pub result: Result<MonthlyValue, SkipReason>,
    pub missing_days: u32,
    pub stale: bool,
    pub awaiting_approval: bool,
    /// What ConnectWise holds on the addition (catalog cache); `None` when unknown.
    pub previous_quantity: Option<Decimal>,
    pub change: Option<Decimal>,
    pub change_percent: Option<Decimal>,
    pub unit_price: Option<Decimal>,
    pub less_included: Option<Decimal>,
    /// What ConnectWise will bill once the quantity is pushed; `None` without a quantity or a price.
    pub amount: Option<Decimal>,
    /// What ConnectWise bills for the addition now.
    pub previous_amount: Option<Decimal>,
    pub exception: bool,
}

impl ReviewLine {
    /// The quantity a run would send (`None` when the line is skipped).
    pub fn quantity(&self) -> Option<i64> {
        self.result.as_ref().ok().map(|v| v.quantity)
    }
    /// The exact monthly value in micro-units.
    pub fn value_micros(&self) -> Option<i64> {
        self.result.as_ref().ok().map(|v| v.value_micros)
    }
    pub fn sample_days(&self) -> u32 {
        self.result.as_ref().map_or(0, |v| v.sample_days)
    }
    pub fn fallback(&self) -> bool {
        self.result.as_ref().is_ok_and(|v| v.fallback)
    }
    pub fn skip_reason(&self) -> Option<SkipReason> {
        self.result.as_ref().err().copied()
    }
}

/// Sums over every line that passes the filter (not only the page).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewTotals {
    pub lines: u64,
    pub amount: Decimal,
    pub previous_amount: Decimal,
    pub exceptions: u64,
}

/// `search` (account name or external id, case-insensitive substring) and `onlyExceptions`.
#[derive(Clone, Debug, Default)]
pub struct ReviewFilter {
    pub search: Option<String>,
    pub only_exceptions: bool,
}

impl ReviewFilter {
    fn keeps(&self, line: &ReviewLine) -> bool {
        if self.only_exceptions && !line.exception {
            return false;
        }
        match self.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => true,
            Some(s) => {
                let s = s.to_lowercase();
                line.customer_name.to_lowercase().contains(&s) || line.customer_external_id.to_lowercase().contains(&s)
            }
        }
    }
}

/// A page of the review and the totals of the whole filtered review.
pub struct ReviewPage {
    pub page: Page<ReviewLine>,
    pub totals: ReviewTotals,
}

/// What the catalog and the ledger say about one mapping's addition.
struct LineContext {
    customer_name: String,
    customer_external_id: String,
    stale: bool,
    previous_quantity: Option<Decimal>,
    unit_price: Option<Decimal>,
    less_included: Option<Decimal>,
}

/// The customer, the stale flag and the cached addition of every mapping in scope: one statement.
async fn line_contexts<C: sea_orm::ConnectionTrait>(
    c: &C,
    tenant_id: i64,
    page: Option<(i64, i64)>,
) -> Result<HashMap<i64, LineContext>, DbErr> {
    let mut values: Vec<sea_orm::Value> = vec![tenant_id.into()];
    let mut range = String::new();
    if let Some((after, last)) = page {
        values.push(after.into());
        values.push(last.into());
        range = " AND pm.id > $2 AND pm.id <= $3".into();
    }
    let rows = sql::query(
        c,
        &format!(
            "SELECT pm.id, pm.stale, c.account_name, c.external_id, a.quantity, a.unit_price, a.less_included \
             FROM product_mappings pm \
             JOIN customers c ON c.id = pm.customer_id AND c.tenant_id = pm.tenant_id \
             LEFT JOIN cw_additions a ON a.tenant_id = pm.tenant_id AND a.id = pm.cw_addition_id \
             WHERE pm.tenant_id = $1{range}"
        ),
        values,
    )
    .await?;
    let decimal = |text: Option<String>| text.as_deref().and_then(domain::parse_cw_decimal);
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get::<i64>("", "id")?,
            LineContext {
                customer_name: r.try_get("", "account_name")?,
                customer_external_id: r.try_get("", "external_id")?,
                stale: r.try_get("", "stale")?,
                previous_quantity: decimal(r.try_get("", "quantity")?),
                unit_price: decimal(r.try_get("", "unit_price")?),
                less_included: decimal(r.try_get("", "less_included")?),
            },
        );
    }
    Ok(out)
}

/// The push status of a push held for approval (written by the approval policy's ledger functions).
const AWAITING_APPROVAL: &str = "AWAITING_APPROVAL";

/// Mappings of the tenant with a push waiting for approval: one statement.
async fn awaiting_approval<C: sea_orm::ConnectionTrait>(c: &C, tenant_id: i64) -> Result<HashSet<i64>, DbErr> {
    let rows = sql::query(
        c,
        "SELECT DISTINCT product_mapping_id FROM pushes WHERE tenant_id = $1 AND status = $2 AND product_mapping_id IS NOT NULL",
        vec![tenant_id.into(), AWAITING_APPROVAL.into()],
    )
    .await?;
    rows.iter().map(|r| r.try_get::<i64>("", "product_mapping_id")).collect()
}

/// A snapshot row and its context → a review line (the domain's billing rules).
fn review_line(period: Period, row: SnapshotRow, ctx: LineContext, awaiting: bool, threshold_percent: u32) -> ReviewLine {
    let quantity = row.result.as_ref().ok().map(|v| Decimal::from(v.quantity));
    let previous = ctx.previous_quantity;
    let change = quantity.zip(previous).map(|(q, p)| domain::quantity_change(q, p));
    let change_percent = quantity.zip(previous).and_then(|(q, p)| domain::change_percent(q, p));
    let amount = quantity.and_then(|q| domain::billed_amount(q, ctx.less_included, ctx.unit_price));
    let previous_amount = previous.and_then(|p| domain::billed_amount(p, ctx.less_included, ctx.unit_price));
    let flags = LineFlags {
        stale: ctx.stale,
        fallback: row.result.as_ref().is_ok_and(|v| v.fallback),
        missing_days: domain::missing_days(period, row.window.as_ref(), row.days_with_sample),
        no_consumption: row.result == Err(SkipReason::NoConsumption),
        awaiting_approval: awaiting,
        anomalous_change: quantity.zip(previous).is_some_and(|(q, p)| domain::is_anomalous_change(q, p, threshold_percent)),
    };
    ReviewLine {
        product_mapping_id: row.mapping_id,
        customer_id: row.customer_id,
        customer_name: ctx.customer_name,
        customer_external_id: ctx.customer_external_id,
        cw_addition_id: row.cw_addition_id,
        module: row.module,
        usage: row.usage,
        interval: row.method,
        unit: BillingUnit::of(row.module),
        result: row.result,
        missing_days: flags.missing_days,
        stale: flags.stale,
        awaiting_approval: awaiting,
        previous_quantity: previous,
        change,
        change_percent,
        unit_price: ctx.unit_price,
        less_included: ctx.less_included,
        amount,
        previous_amount,
        exception: domain::is_exception(&flags),
    }
}

/// The tenant's anomaly threshold (percent) for the "changed by more than the threshold" exception.
fn threshold_percent(_tenant_id: i64) -> u32 {
    // The per-tenant threshold arrives with the approval policy; until then every tenant has the default.
    domain::DEFAULT_ANOMALY_THRESHOLD_PERCENT
}

/// Lines of `period` for the mappings in `scope` (ordered by mapping id): a consistent snapshot in
/// one read transaction, a constant number of statements whatever the number of lines.
async fn compute_lines(
    db: &DatabaseConnection,
    tenant_id: i64,
    period: Period,
    page: Option<MappingPage>,
) -> ServiceResult<Vec<ReviewLine>> {
    let txn = db.begin().await?;
    let rows = compute_snapshot(&txn, tenant_id, period, SnapshotScope { customers: None, page }).await?;
    let range = page.map(|p| (p.after_id, rows.last().map_or(p.after_id, |r| r.mapping_id)));
    let mut contexts = line_contexts(&txn, tenant_id, range).await?;
    let awaiting = awaiting_approval(&txn, tenant_id).await?;
    txn.commit().await?;
    let threshold = threshold_percent(tenant_id);
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        // Each statement sees its own committed state: a mapping removed between the two is left out.
        let Some(ctx) = contexts.remove(&row.mapping_id) else { continue };
        let awaits = awaiting.contains(&row.mapping_id);
        lines.push(review_line(period, row, ctx, awaits, threshold));
    }
    Ok(lines)
}

/// Sort key of the review: customer name, then mapping id (the cursor). The name travels as its
/// UTF-8 bytes: a name may hold a line break, which cursors refuse inside strings (and byte order
/// is `String`'s order).
type ReviewCursor = (Vec<u8>, i64);

fn cursor_of(line: &ReviewLine) -> ReviewCursor {
    (line.customer_name.as_bytes().to_vec(), line.product_mapping_id)
}

/// `billingReview`: the page of lines after `after` (ordered by customer name, then mapping id) and
/// the totals of every line the filter keeps.
pub async fn billing_review(
    db: &DatabaseConnection,
    tenant_id: i64,
    period: Period,
    filter: &ReviewFilter,
    limit: u64,
    after: Option<&str>,
) -> ServiceResult<ReviewPage> {
    let after: Option<ReviewCursor> = after.map(decode_cursor).transpose()?;
    let mut lines: Vec<ReviewLine> = compute_lines(db, tenant_id, period, None).await?.into_iter().filter(|l| filter.keeps(l)).collect();
    lines.sort_by_cached_key(cursor_of);
    let totals = totals_of(&lines);
    let rows: Vec<ReviewLine> =
        lines.into_iter().filter(|l| after.as_ref().is_none_or(|a| cursor_of(l) > *a)).take(limit as usize + 1).collect();
    Ok(ReviewPage { page: Page::from_rows(rows, limit, |l| encode_cursor(&cursor_of(l))), totals })
}

/// Totals of a set of lines.
pub fn totals_of(lines: &[ReviewLine]) -> ReviewTotals {
    let mut t = ReviewTotals::default();
    for l in lines {
        t.lines += 1;
        t.amount += l.amount.unwrap_or_default();
        t.previous_amount += l.previous_amount.unwrap_or_default();
        t.exceptions += u64::from(l.exception);
    }
    t
}

/// Lines per page of the CSV export.
pub const EXPORT_PAGE: u64 = 500;

/// One page of the export: the lines of the next `EXPORT_PAGE` mappings after `after_mapping_id`
/// (in mapping id order), and the id to continue after (`None`: the last page).
pub async fn export_page(
    db: &DatabaseConnection,
    tenant_id: i64,
    period: Period,
    after_mapping_id: i64,
) -> ServiceResult<(Vec<ReviewLine>, Option<i64>)> {
    let page = MappingPage { after_id: after_mapping_id, limit: EXPORT_PAGE };
    let lines = compute_lines(db, tenant_id, period, Some(page)).await?;
    let next = (lines.len() as u64 == EXPORT_PAGE).then(|| lines.last().map(|l| l.product_mapping_id)).flatten();
    Ok((lines, next))
}

/// A period argument that is not a `YYYY-MM` month: bad input.
pub fn parse_period(text: &str) -> ServiceResult<Period> {
    Period::parse(text).map_err(|e| ServiceError::BadInput(format!("period {text:?}: {e}")))
}

/// The CSV header of the export (one column per `ReviewLine` field the query shows).
pub const CSV_HEADER: [&str; 24] = [
    "productMappingId",
    "customerId",
    "customerExternalId",
    "customerName",
    "cwAdditionId",
    "productModule",
    "usage",
    "interval",
    "unit",
    "value",
    "quantity",
    "sampleDays",
    "missingDays",
    "fallback",
    "stale",
    "skipReason",
    "previousQuantity",
    "change",
    "changePercent",
    "unitPrice",
    "amount",
    "awaitingApproval",
    "exception",
    "previousAmount",
];

/// A decimal as the API writes it: exact, without trailing zeros (`"30"`, `"37.0370367037037034"`).
pub fn decimal_text(d: Decimal) -> String {
    d.normalize().to_string()
}

/// The CSV record of a line, in [`CSV_HEADER`] order; decimals as plain strings, empty when null.
pub fn csv_record(l: &ReviewLine) -> [String; 24] {
    let opt = |d: Option<Decimal>| d.map(decimal_text).unwrap_or_default();
    [
        l.product_mapping_id.to_string(),
        l.customer_id.to_string(),
        l.customer_external_id.clone(),
        l.customer_name.clone(),
        l.cw_addition_id.to_string(),
        l.module.as_str().to_string(),
        l.usage.as_str().to_string(),
        l.interval.as_str().to_string(),
        l.unit.as_str().to_string(),
        l.value_micros().map(domain::format_micros).unwrap_or_default(),
        l.quantity().map(|q| q.to_string()).unwrap_or_default(),
        l.sample_days().to_string(),
        l.missing_days.to_string(),
        l.fallback().to_string(),
        l.stale.to_string(),
        l.skip_reason().map(|r| r.as_str().to_string()).unwrap_or_default(),
        opt(l.previous_quantity),
        opt(l.change),
        opt(l.change_percent),
        opt(l.unit_price),
        opt(l.amount),
        l.awaiting_approval.to_string(),
        l.exception.to_string(),
        opt(l.previous_amount),
    ]
}
