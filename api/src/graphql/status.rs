//! Operator status for the dashboard: worker liveness, the tenant's ConnectWise connection, the
//! next scheduled run, stale mappings, the tenant's waiting work, and push counts per status for
//! the tabs. Thin adapters over `sync_core::service::status`. Everything here is the tenant's own:
//! no worker host names or process ids, no other tenant's queue.
use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use sync_core::{auth::Permission, service};

use super::{
    context::{Need, app, principal},
    errors::OrGql,
    ids::GlobalId,
    limits::{COST_DB_READ, COST_STATUS},
    scalars::Period,
    sync::{PushCounts, SyncRun},
    types::Customer,
};

/// One worker process, from the heartbeat it writes every 10 seconds.
#[derive(SimpleObject)]
pub struct WorkerStatus {
    /// A label, `worker 1`, `worker 2`, … (alive ones first): host names and process ids are the
    /// deployment's, not shown to tenants.
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Seen within the last 60 seconds.
    pub alive: bool,
}

/// The tenant's own work waiting in one queue.
#[derive(SimpleObject)]
pub struct QueueDepth {
    pub queue: String,
    pub waiting: i64,
}

/// What an operator needs at a glance.
#[derive(SimpleObject)]
pub struct SystemStatus {
    /// The service's clock when this was read: compute "how long ago" against it, not the client's.
    pub server_time: DateTime<Utc>,
    /// Every worker process with a heartbeat row, alive ones first.
    pub workers: Vec<WorkerStatus>,
    /// Workers seen within the last 60 seconds; 0 means nothing processes pushes.
    pub workers_alive: i64,
    pub connect_wise_configured: bool,
    pub consumption_sync_enabled: bool,
    /// ConnectWise refused the tenant's credentials: pushes stop until the settings are fixed.
    pub connection_broken: bool,
    pub connection_broken_reason: Option<String>,
    pub connection_broken_since: Option<DateTime<Utc>>,
    /// A 429 paused the tenant's ConnectWise calls until then.
    pub paused_until: Option<DateTime<Utc>>,
    /// The next tick of `SYNC_CRON` (UTC); a run is created then if consumption sync is on.
    pub next_scheduled_run_at: Option<DateTime<Utc>>,
    /// Mappings whose pushed values a late consumption correction changed (the next run re-sends them).
    pub stale_mappings: i64,
    /// The tenant's own waiting work per queue: `aggregate` (runs not aggregated yet), `push`
    /// (pushes waiting to be sent or retried), `catalog` (a queued catalog refresh, 0 or 1).
    pub queue_depth: Option<Vec<QueueDepth>>,
}

#[derive(Default)]
pub struct StatusQuery;

#[Object]
impl StatusQuery {
    /// Workers, the ConnectWise connection, the next scheduled run, stale mappings, the tenant's
    /// waiting work.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_STATUS + child_complexity")]
    async fn system_status(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemStatus> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let now = a.clock.now();
        let (workers, connection, stale, depth) = futures::join!(
            service::status::workers(&a.db, now),
            service::status::connection_status(&a.db, p.tenant_id),
            service::status::stale_mappings(&a.db, p.tenant_id),
            service::status::tenant_queue_depth(&a.db, p.tenant_id),
        );
        let (workers, connection, stale) = (workers.gql()?, connection.gql()?, stale.gql()?);
        let queue_depth = match depth {
            Ok(d) => Some(d.into_iter().map(|(queue, waiting)| QueueDepth { queue, waiting }).collect()),
            Err(e) => {
                tracing::warn!(error = ?e, "the tenant's queue depth is unavailable");
                None
            }
        };
        let workers = service::status::tenant_view_of_workers(workers);
        Ok(SystemStatus {
            server_time: now,
            workers_alive: workers.iter().filter(|w| w.alive).count() as i64,
            workers: workers
                .into_iter()
                .map(|w| WorkerStatus { name: w.name, started_at: w.started_at, last_seen_at: w.last_seen_at, alive: w.alive })
                .collect(),
            connect_wise_configured: connection.configured,
            consumption_sync_enabled: connection.consumption_sync_enabled,
            connection_broken: connection.broken,
            connection_broken_reason: connection.broken_reason,
            connection_broken_since: connection.broken_since,
            paused_until: connection.paused_until.filter(|until| *until > now),
            next_scheduled_run_at: service::status::next_scheduled_run(&a.settings.sync_cron, now),
            stale_mappings: stale,
            queue_depth,
        })
    }

    /// Pushes per status, with the filters of `pushes` (for status tabs with counts).
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + child_complexity")]
    async fn push_counts(
        &self,
        ctx: &Context<'_>,
        period: Option<Period>,
        customer_id: Option<ID>,
        sync_run_id: Option<ID>,
    ) -> async_graphql::Result<PushCounts> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        // A malformed or foreign id counts nothing, like an id that does not exist.
        let f = service::status::PushCountFilter {
            period: period.map(|p| p.0),
            customer_id: GlobalId::filter_key::<Customer>(customer_id.as_ref()),
            sync_run_id: GlobalId::filter_key::<SyncRun>(sync_run_id.as_ref()),
        };
        let m = service::status::push_status_counts(&a.db, p.tenant_id, &f).await.gql()?;
        Ok(PushCounts::from_status_counts(&m))
    }
}
