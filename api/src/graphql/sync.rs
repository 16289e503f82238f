//! Consumption ingest, preview, sync runs, pushes and retries: thin adapters over
//! `sync_core::service::{consumption, sync, history}`.
use async_graphql::{Context, ID, InputObject, Object, SimpleObject, connection::Connection};
use chrono::{DateTime, Utc};
use sync_core::{auth::Permission, pagination::page_size, service};

use super::{
    context::{Need, app, principal},
    enums::{IntervalMethod, ProductModule, PushStatus, SyncRunStatus, UsageMetric, parse_stored},
    errors::OrGql,
    ids::GlobalId,
    limits::{COST_BATCHED, COST_DB_PER_PARENT, COST_DB_READ, COST_WRITE},
    loaders::{load_err, loaders},
    resolvers::{connection, list_cost},
    scalars::{Date, Decimal, Period},
    types::{Customer, ProductMapping, Push, UserError, user_errors},
};
use entity::{push_attempt, sync_run};

/// One run of the monthly sync.
pub struct SyncRun(pub sync_run::Model);

/// Pushes of a run by status.
#[derive(SimpleObject, Default)]
pub struct PushCounts {
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed_retrying: i64,
    pub dead: i64,
    pub skipped: i64,
    pub cancelled: i64,
}

impl PushCounts {
    /// From push counts keyed by stored status name (`PENDING`, …).
    pub fn from_status_counts(m: &std::collections::HashMap<String, i64>) -> Self {
        let get = |s: domain::PushStatus| m.get(s.as_str()).copied().unwrap_or(0);
        PushCounts {
            total: m.values().sum(),
            pending: get(domain::PushStatus::Pending),
            running: get(domain::PushStatus::Running),
            succeeded: get(domain::PushStatus::Succeeded),
            failed_retrying: get(domain::PushStatus::FailedRetrying),
            dead: get(domain::PushStatus::Dead),
            skipped: get(domain::PushStatus::Skipped),
            cancelled: get(domain::PushStatus::Cancelled),
        }
    }
}

#[Object]
impl SyncRun {
    pub(crate) async fn id(&self) -> ID {
        GlobalId::of::<Self>(self.0.id)
    }
    async fn period(&self) -> async_graphql::Result<Period> {
        Ok(Period(parse_stored::<domain::Period>(&self.0.period)?))
    }
    /// `SCHEDULED` or `MANUAL`.
    async fn trigger(&self) -> &str {
        &self.0.trigger
    }
    async fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    async fn status(&self) -> async_graphql::Result<SyncRunStatus> {
        Ok(parse_stored::<domain::SyncRunStatus>(&self.0.status)?.into())
    }
    async fn requested_by(&self) -> &str {
        &self.0.requested_by
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    /// When the values were computed and the pushes created.
    async fn aggregated_at(&self) -> Option<DateTime<Utc>> {
        self.0.aggregated_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// The customers the run was limited to, if any.
    async fn customer_ids(&self) -> Option<Vec<ID>> {
        self.0
            .customer_ids
            .as_ref()
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_i64().or_else(|| x.as_str()?.parse().ok())).map(GlobalId::of::<Customer>).collect())
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn counts(&self, ctx: &Context<'_>) -> async_graphql::Result<PushCounts> {
        let m = loaders(ctx)?.run_counts.load_one(self.0.id).await.map_err(load_err)?.unwrap_or_default();
        Ok(PushCounts::from_status_counts(&m))
    }
    /// The run's pushes, newest first (one query per run).
    #[graphql(complexity = "COST_DB_PER_PARENT + list_cost(first, child_complexity)")]
    async fn pushes(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<PushStatus>,
    ) -> async_graphql::Result<Connection<String, Push>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let limit = page_size(first).gql()?;
        let f = service::history::PushFilter { status: status.map(Into::into), sync_run_id: Some(self.0.id), ..Default::default() };
        Ok(connection(service::history::list_pushes(&a.db, p.tenant_id, limit, after.as_deref(), &f).await.gql()?, Push))
    }
}

/// One HTTP call made for a push.
pub struct PushAttempt(pub push_attempt::Model);

#[Object]
impl PushAttempt {
    async fn attempt(&self) -> i32 {
        self.0.attempt_no
    }
    /// `GET_ADDITION` or `PATCH_QUANTITY`.
    async fn step(&self) -> &str {
        &self.0.step
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    async fn duration_ms(&self) -> i64 {
        self.0.duration_ms
    }
    async fn http_status(&self) -> Option<i32> {
        self.0.http_status
    }
    /// ConnectWise's `x-cw-request-id`.
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
    async fn quantity(&self) -> Option<i64> {
        self.0.quantity
    }
    async fn outcome(&self) -> &str {
        &self.0.outcome
    }
    async fn error_code(&self) -> Option<&str> {
        self.0.error_code.as_deref()
    }
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }
}

#[derive(SimpleObject)]
pub struct DailyConsumption {
    pub day: Date,
    pub value: Decimal,
}

/// What a run for the period would compute for one mapping now.
pub struct ConsumptionPreview {
    row: service::consumption::PreviewRow,
}

#[Object]
impl ConsumptionPreview {
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn product_mapping(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductMapping>> {
        Ok(loaders(ctx)?.mapping.load_one(self.row.product_mapping_id).await.map_err(load_err)?.map(ProductMapping))
    }
    #[graphql(complexity = "COST_BATCHED + child_complexity")]
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Customer>> {
        Ok(loaders(ctx)?.customer.load_one(self.row.customer_id).await.map_err(load_err)?.map(Customer))
    }
    async fn method(&self) -> IntervalMethod {
        self.row.method.into()
    }
    /// The exact result, rounded half-even to 6 decimals; `null` when skipped.
    async fn value(&self) -> Option<Decimal> {
        self.row.result.as_ref().ok().map(|v| Decimal::from_micros(v.value_micros))
    }
    /// The value rounded up: what would be sent.
    async fn quantity(&self) -> Option<i64> {
        self.row.result.as_ref().ok().map(|v| v.quantity)
    }
    async fn sample_days(&self) -> i32 {
        self.row.result.as_ref().map(|v| v.sample_days as i32).unwrap_or(0)
    }
    async fn fallback(&self) -> bool {
        self.row.result.as_ref().is_ok_and(|v| v.fallback)
    }
    async fn skip_reason(&self) -> Option<String> {
        self.row.result.as_ref().err().map(|r| r.as_str().to_string())
    }
}

#[derive(Default)]
pub struct SyncQuery;

#[Object]
impl SyncQuery {
    /// Daily values of one customer's module and usage, `from..=to` (at most 366 days).
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + 366 * child_complexity")]
    async fn consumption(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        product_module: ProductModule,
        usage: UsageMetric,
        from: Date,
        to: Date,
    ) -> async_graphql::Result<Vec<DailyConsumption>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let Some(cid) = GlobalId::decode::<Customer>(&customer_id) else { return Ok(vec![]) };
        let rows = service::consumption::daily_consumption(&a.db, p, cid, product_module.into(), usage.into(), from.0, to.0).await.gql()?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(|(day, v)| DailyConsumption { day: Date(day), value: Decimal::from_micros(v) })
            .collect())
    }

    /// The value and quantity each mapping would get for `period` (optionally one customer).
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ * 10 + 100 * child_complexity")]
    async fn consumption_preview(
        &self,
        ctx: &Context<'_>,
        period: Period,
        customer_id: Option<ID>,
    ) -> async_graphql::Result<Vec<ConsumptionPreview>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let customer = match customer_id {
            None => None,
            Some(id) => match GlobalId::decode::<Customer>(&id) {
                Some(id) => Some(id),
                None => return Ok(vec![]),
            },
        };
        if let Some(c) = customer
            && service::customers::get_customer(&a.db, p.tenant_id, c).await.gql()?.is_none()
        {
            return Ok(vec![]);
        }
        let rows = service::consumption::preview(&a.db, p, period.0, customer).await.gql()?;
        Ok(rows.into_iter().map(|row| ConsumptionPreview { row }).collect())
    }

    /// Runs, newest first.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + list_cost(first, child_complexity)")]
    async fn sync_runs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<SyncRunStatus>,
    ) -> async_graphql::Result<Connection<String, SyncRun>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let limit = page_size(first).gql()?;
        let f = service::history::RunFilter { status: status.map(Into::into) };
        Ok(connection(service::history::list_runs(&a.db, p.tenant_id, limit, after.as_deref(), &f).await.gql()?, SyncRun))
    }

    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + child_complexity")]
    async fn sync_run(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<SyncRun>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let Some(id) = GlobalId::decode::<SyncRun>(&id) else { return Ok(None) };
        Ok(service::history::get_run(&a.db, p.tenant_id, id).await.gql()?.map(SyncRun))
    }

    /// Pushes, newest first, filtered by status, period, customer or run.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + list_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn pushes(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<PushStatus>,
        period: Option<Period>,
        customer_id: Option<ID>,
        sync_run_id: Option<ID>,
    ) -> async_graphql::Result<Connection<String, Push>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let limit = page_size(first).gql()?;
        // A malformed or foreign id filters to nothing, like an id that does not exist.
        let f = service::history::PushFilter {
            status: status.map(Into::into),
            period: period.map(|p| p.0),
            customer_id: GlobalId::filter_key::<Customer>(customer_id.as_ref()),
            sync_run_id: GlobalId::filter_key::<SyncRun>(sync_run_id.as_ref()),
        };
        Ok(connection(service::history::list_pushes(&a.db, p.tenant_id, limit, after.as_deref(), &f).await.gql()?, Push))
    }

    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + child_complexity")]
    async fn push(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Push>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let Some(id) = GlobalId::decode::<Push>(&id) else { return Ok(None) };
        Ok(service::history::get_push(&a.db, p.tenant_id, id).await.gql()?.map(Push))
    }
}

#[derive(InputObject)]
pub struct ConsumptionSampleInput {
    /// Exactly one of `customerId` and `customerExternalId`.
    pub customer_id: Option<ID>,
    pub customer_external_id: Option<String>,
    pub product_module: ProductModule,
    pub usage: UsageMetric,
    /// Validated by the service so a bad day is a per-sample user error, not a request error.
    pub day: String,
    pub value: Decimal,
}

#[derive(SimpleObject)]
pub struct RecordConsumptionResult {
    pub accepted: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub stale_mappings: i64,
}

#[derive(SimpleObject)]
pub struct RecordConsumptionPayload {
    pub result: Option<RecordConsumptionResult>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject)]
pub struct SyncRunPayload {
    pub sync_run: Option<SyncRun>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject)]
pub struct PushPayload {
    pub push: Option<Push>,
    pub user_errors: Vec<UserError>,
}

/// A count as a GraphQL `Int`.
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[derive(SimpleObject)]
pub struct RetryPushesPayload {
    /// The pushes retried (back to `PENDING` with a fresh attempt budget).
    pub pushes: Vec<Push>,
    /// Left alone because a newer push of the same addition exists.
    pub skipped_superseded: i32,
    /// Left alone because their mapping was removed or points to another addition now.
    pub skipped_orphaned: i32,
    /// Left alone because another push of their addition is in flight.
    pub skipped_in_flight: i32,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject)]
pub struct RefreshCatalogPayload {
    /// A refresh is queued (by this call or an earlier one); `connectWiseSettings.catalogRefreshedAt`
    /// moves when it is done.
    pub queued: bool,
    /// A refresh was queued already: this call queued nothing and answers with that one.
    pub already_queued: bool,
    /// When the queued refresh was requested.
    pub requested_at: Option<DateTime<Utc>>,
    pub user_errors: Vec<UserError>,
}

/// The batch limit of `recordConsumption` (docs/billing-rules.md); larger batches get `BATCH_TOO_LARGE`.
pub const MAX_SAMPLES: usize = 10_000;

#[derive(Default)]
pub struct SyncMutation;

#[Object]
impl SyncMutation {
    /// Record up to 10,000 daily samples atomically: any invalid sample rejects the batch.
    #[graphql(guard = "Need(Permission::Ingest)", complexity = "COST_WRITE + child_complexity")]
    async fn record_consumption(
        &self,
        ctx: &Context<'_>,
        samples: Vec<ConsumptionSampleInput>,
    ) -> async_graphql::Result<RecordConsumptionPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let samples = samples
            .into_iter()
            .map(|s| service::consumption::SampleInput {
                customer_id: s.customer_id.map(|i| GlobalId::service_key::<Customer>(&i)),
                customer_external_id: s.customer_external_id,
                product_module: s.product_module.into(),
                usage: s.usage.into(),
                day: s.day,
                value: s.value.0,
            })
            .collect();
        Ok(match service::consumption::record_consumption(&a.db, p, samples, a.clock.now()).await.gql()? {
            Ok(r) => RecordConsumptionPayload {
                result: Some(RecordConsumptionResult {
                    accepted: r.accepted as i64,
                    inserted: r.inserted as i64,
                    updated: r.updated as i64,
                    unchanged: r.unchanged as i64,
                    stale_mappings: r.stale_mappings as i64,
                }),
                user_errors: vec![],
            },
            Err(e) => RecordConsumptionPayload { result: None, user_errors: user_errors(e) },
        })
    }

    /// Start a monthly sync. Non-dry runs only for the latest closed month.
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn run_monthly_sync(
        &self,
        ctx: &Context<'_>,
        period: Period,
        customer_ids: Option<Vec<ID>>,
        dry_run: Option<bool>,
    ) -> async_graphql::Result<SyncRunPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let ids = customer_ids.map(|v| v.iter().map(|i| GlobalId::service_key::<Customer>(i)).collect());
        Ok(
            match service::sync::run_monthly_sync(&a.db, a.queue.as_ref(), p, period.0, ids, dry_run.unwrap_or(false), a.clock.now())
                .await
                .gql()?
            {
                Ok(r) => SyncRunPayload { sync_run: Some(SyncRun(r)), user_errors: vec![] },
                Err(e) => SyncRunPayload { sync_run: None, user_errors: user_errors(e) },
            },
        )
    }

    /// Send a `DEAD` or `FAILED_RETRYING` push again now, with a fresh attempt budget.
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn retry_push(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<PushPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(
            match service::sync::retry_push(&a.db, a.queue.as_ref(), &a.settings, p, &GlobalId::service_key::<Push>(&id), a.clock.now())
                .await
                .gql()?
            {
                Ok(push) => PushPayload { push: Some(Push(push)), user_errors: vec![] },
                Err(e) => PushPayload { push: None, user_errors: user_errors(e) },
            },
        )
    }

    /// Retry every `DEAD` and `FAILED_RETRYING` push of a run.
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn retry_failed_pushes(&self, ctx: &Context<'_>, sync_run_id: ID) -> async_graphql::Result<RetryPushesPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(
            match service::sync::retry_failed_pushes(
                &a.db,
                a.queue.as_ref(),
                &a.settings,
                p,
                &GlobalId::service_key::<SyncRun>(&sync_run_id),
                a.clock.now(),
            )
            .await
            .gql()?
            {
                Ok(v) => RetryPushesPayload {
                    skipped_superseded: count(v.skipped_superseded),
                    skipped_orphaned: count(v.skipped_orphaned),
                    skipped_in_flight: count(v.skipped_in_flight),
                    pushes: v.retried.into_iter().map(Push).collect(),
                    user_errors: vec![],
                },
                Err(e) => RetryPushesPayload {
                    pushes: vec![],
                    skipped_superseded: 0,
                    skipped_orphaned: 0,
                    skipped_in_flight: 0,
                    user_errors: user_errors(e),
                },
            },
        )
    }

    /// Queue a refresh of the ConnectWise catalog (companies, agreements, additions, boards). While
    /// one is queued, asking again queues nothing and answers with the queued one.
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn refresh_connect_wise_catalog(&self, ctx: &Context<'_>) -> async_graphql::Result<RefreshCatalogPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(match service::catalog::request_refresh(&a.db, a.queue.as_ref(), p, a.clock.now()).await.gql()? {
            Ok(r) => RefreshCatalogPayload {
                queued: true,
                already_queued: r.already_queued,
                requested_at: Some(r.requested_at),
                user_errors: vec![],
            },
            Err(e) => RefreshCatalogPayload { queued: false, already_queued: false, requested_at: None, user_errors: user_errors(e) },
        })
    }
}
