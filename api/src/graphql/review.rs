//! The billing review of a month (`billingReview`): a thin adapter over
//! `sync_core::service::review`, which computes the lines with the run's own aggregation.
use async_graphql::{
    Context, Object, OutputType, SimpleObject,
    connection::{Connection, ConnectionNameType, DefaultEdgeName, Edge, EmptyFields, EnableNodesField},
};
use sync_core::{
    auth::Permission,
    pagination::page_size,
    service::review::{self as service, ReviewLine},
};

use super::{
    context::{Need, app, principal},
    enums::{IntervalMethod, ProductModule, UsageMetric},
    errors::OrGql,
    limits::{COST_BATCHED, COST_DB_READ},
    loaders::{load_err, loaders},
    resolvers::list_cost,
    scalars::{Decimal, Period},
    types::{Customer, ProductMapping, Push},
};

fn decimal(d: domain::ExactDecimal) -> Decimal {
    Decimal(service::decimal_text(d))
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One product mapping's month: what a run would push now, and what ConnectWise will bill.
pub struct BillingLine(pub ReviewLine);

#[Object]
impl BillingLine {
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        Ok(loaders(ctx)?.customer.load_one(self.0.customer_id).await.map_err(load_err)?.map(Customer))
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn product_mapping(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductMapping>> {
        Ok(loaders(ctx)?.mapping.load_one(self.0.product_mapping_id).await.map_err(load_err)?.map(ProductMapping))
    }
    async fn product_module(&self) -> ProductModule {
        self.0.module.into()
    }
    async fn usage(&self) -> UsageMetric {
        self.0.usage.into()
    }
    async fn interval(&self) -> IntervalMethod {
        self.0.interval.into()
    }
    /// `GB` for Enterprise Workloads, `users` otherwise.
    async fn unit(&self) -> &'static str {
        self.0.unit.as_str()
    }
    /// The exact monthly value (6 decimals at most); `null` when the line is skipped.
    async fn value(&self) -> Option<Decimal> {
        self.0.value_micros().map(Decimal::from_micros)
    }
    /// The value rounded up: what a run would send; `null` when skipped.
    async fn quantity(&self) -> Option<i64> {
        self.0.quantity()
    }
    async fn sample_days(&self) -> i32 {
        i32::try_from(self.0.sample_days()).unwrap_or(i32::MAX)
    }
    /// Days of the license window in the period without a sample.
    async fn missing_days(&self) -> i32 {
        i32::try_from(self.0.missing_days).unwrap_or(i32::MAX)
    }
    async fn fallback(&self) -> bool {
        self.0.fallback()
    }
    /// An input changed after the last push of the mapping.
    async fn stale(&self) -> bool {
        self.0.stale
    }
    /// Why a run would not send the line (`NO_CONSUMPTION`).
    async fn skip_reason(&self) -> Option<&'static str> {
        self.0.skip_reason().map(|r| r.as_str())
    }
    /// What ConnectWise holds on the addition now (from the catalog); `null` when unknown.
    async fn previous_quantity(&self) -> Option<Decimal> {
        self.0.previous_quantity.map(decimal)
    }
    /// `quantity − previousQuantity`.
    async fn change(&self) -> Option<Decimal> {
        self.0.change.map(decimal)
    }
    /// The change in percent of `previousQuantity` (two decimals, half-even); `null` when previous is 0.
    async fn change_percent(&self) -> Option<Decimal> {
        self.0.change_percent.map(decimal)
    }
    /// The addition's unit price (from the catalog).
    async fn unit_price(&self) -> Option<Decimal> {
        self.0.unit_price.map(decimal)
    }
    /// The addition's `lessIncluded` (from the catalog).
    async fn less_included(&self) -> Option<Decimal> {
        self.0.less_included.map(decimal)
    }
    /// What ConnectWise will bill: (quantity − lessIncluded, not below 0) × unitPrice.
    async fn amount(&self) -> Option<Decimal> {
        self.0.amount.map(decimal)
    }
    /// What ConnectWise bills for the addition now (previousQuantity, same rule).
    async fn previous_amount(&self) -> Option<Decimal> {
        self.0.previous_amount.map(decimal)
    }
    async fn awaiting_approval(&self) -> bool {
        self.0.awaiting_approval
    }
    /// Stale, fell back, missing days, no consumption, awaiting approval, or changed by more than
    /// the tenant's threshold.
    async fn exception(&self) -> bool {
        self.0.exception
    }
    /// The addition's ConnectWise id.
    async fn cw_addition_id(&self) -> i64 {
        self.0.cw_addition_id
    }
    /// The mapping's newest push (any period).
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn last_push(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Push>> {
        Ok(loaders(ctx)?.last_push_of(self.0.product_mapping_id).await.map_err(load_err)?.map(Push))
    }
}

/// Sums over every line the filter keeps (all pages).
#[derive(SimpleObject)]
pub struct BillingReviewTotals {
    pub lines: i32,
    pub amount: Decimal,
    pub previous_amount: Decimal,
    pub exceptions: i32,
}

#[derive(SimpleObject)]
pub struct BillingReviewFields {
    pub totals: BillingReviewTotals,
}

/// Names the review's connection type `BillingReview`.
pub struct BillingReviewName;

impl ConnectionNameType for BillingReviewName {
    fn type_name<T: OutputType>() -> String {
        "BillingReview".into()
    }
}

pub type BillingReview =
    Connection<String, BillingLine, BillingReviewFields, EmptyFields, BillingReviewName, DefaultEdgeName, EnableNodesField>;

#[derive(Default)]
pub struct ReviewQuery;

#[Object]
impl ReviewQuery {
    /// The billing review of `period`: one line per product mapping, as a run would push it now,
    /// ordered by customer name; `search` matches account name or external id.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ * 10 + list_cost(first, child_complexity)")]
    async fn billing_review(
        &self,
        ctx: &Context<'_>,
        period: Period,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
        only_exceptions: Option<bool>,
    ) -> async_graphql::Result<BillingReview> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let limit = page_size(first).gql()?;
        let filter = service::ReviewFilter { search, only_exceptions: only_exceptions.unwrap_or(false) };
        let review = service::billing_review(&a.db, p.tenant_id, period.0, &filter, limit, after.as_deref()).await.gql()?;
        let t = review.totals;
        let fields = BillingReviewFields {
            totals: BillingReviewTotals {
                lines: count(t.lines),
                amount: decimal(t.amount),
                previous_amount: decimal(t.previous_amount),
                exceptions: count(t.exceptions),
            },
        };
        let mut c = BillingReview::with_additional_fields(false, review.page.has_next_page, fields);
        c.edges.extend(review.page.items.into_iter().map(|(cursor, line)| Edge::new(cursor, BillingLine(line))));
        Ok(c)
    }
}
