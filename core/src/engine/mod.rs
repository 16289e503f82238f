//! The sync engine: aggregation of runs, push attempts, tickets, reconciliation, catalog refresh and
//! the monthly schedule.
//!
//! Every function here is a job body: it takes ids, re-reads its rows, and moves them forward with
//! conditional updates, so a job delivered twice (or after a crash) is harmless. Business outcomes
//! (a dead push, a skipped mapping) are written to rows; only infrastructure failures are `Err`.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Once},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, EntityTrait};
use secrecy::SecretString;

pub use crate::clock::{Clock, ManualClock, ShiftedClock, SystemClock};
use crate::{
    Settings,
    crypto::SecretBox,
    jobs::{JobQueue, QueueError},
};

pub mod aggregate;
pub mod catalog;
pub mod push;
pub mod reconcile;
pub mod schedule;
pub(crate) mod sql;
pub mod ticket;

pub use catalog::CatalogReport;
pub use reconcile::ReconcileReport;

/// Error codes the engine writes on pushes beside those of `domain::codes` and `CwError::code`.
pub mod codes {
    /// ConnectWise answered the PATCH with another quantity than the one sent (retried).
    pub const QUANTITY_MISMATCH: &str = "QUANTITY_MISMATCH";
    /// The product mapping was deleted or its customer unmapped while the push was pending.
    pub const MAPPING_REMOVED: &str = "MAPPING_REMOVED";
    /// The tenant's ConnectWise credentials cannot be used (no private key, undecryptable, bad URL).
    pub const CW_NOT_CONFIGURED: &str = "CW_NOT_CONFIGURED";
    /// A worker stopped in the middle of an attempt; reconciliation counted it as lost.
    pub const ATTEMPT_LOST: &str = "ATTEMPT_LOST";
    /// The push row cannot be sent (e.g. it carries no quantity); a bug, reported loudly.
    pub const INVALID_PUSH: &str = "INVALID_PUSH";
}

/// What the engine needs from its process.
#[derive(Clone)]
pub struct EngineDeps {
    pub db: DatabaseConnection,
    pub queue: Arc<dyn JobQueue>,
    pub settings: Arc<Settings>,
    pub secrets: Option<SecretBox>,
    pub http: reqwest::Client,
    pub rate: Arc<dyn TenantRateLimiter>,
    pub clock: Arc<dyn Clock>,
}

/// Per-tenant ConnectWise request budget shared by all workers (Redis impl lives in the worker
/// crate; [`LocalRateLimiter`] serves one process, e.g. the embedded SQLite deployment and tests).
pub trait TenantRateLimiter: Send + Sync {
    /// Wait until the tenant may make one more ConnectWise request: its pause (if any) has passed
    /// and its request budget has room. Every ConnectWise call of a push goes through here.
    fn acquire(&self, tenant_id: i64) -> BoxFuture<'_, ()>;
    /// Hold every call of the tenant for `wait` (a 429's `Retry-After`), in every process that
    /// shares this limiter; never shortens a longer pause.
    fn pause(&self, tenant_id: i64, wait: Duration) -> BoxFuture<'_, ()>;
}

/// An in-process per-tenant limiter (GCRA: a token bucket of `per_second` tokens refilled evenly).
pub struct LocalRateLimiter {
    interval: Duration,
    burst: u32,
    /// Theoretical arrival time of the next request, per tenant.
    tat: Mutex<HashMap<i64, Instant>>,
    /// Until when each paused tenant must not call.
    paused: Mutex<HashMap<i64, Instant>>,
}

impl LocalRateLimiter {
    pub fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        LocalRateLimiter {
            interval: Duration::from_secs(1) / per_second,
            burst: per_second,
            tat: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
        }
    }

    /// Reserve the next slot and return how long to wait for it.
    fn reserve(&self, tenant_id: i64) -> Duration {
        let now = Instant::now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let tat = map.entry(tenant_id).or_insert(now);
        let new_tat = (*tat).max(now) + self.interval;
        *tat = new_tat;
        // A request may go as soon as the bucket has a token: `burst` intervals of tolerance.
        let allowed_at = new_tat.checked_sub(self.interval * self.burst).unwrap_or(now);
        allowed_at.saturating_duration_since(now)
    }
}

impl LocalRateLimiter {
    /// How long the tenant is still paused.
    fn paused_for(&self, tenant_id: i64) -> Duration {
        let map = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&tenant_id).map(|until| until.saturating_duration_since(Instant::now())).unwrap_or_default()
    }
}

impl TenantRateLimiter for LocalRateLimiter {
    fn acquire(&self, tenant_id: i64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let paused = self.paused_for(tenant_id);
                if !paused.is_zero() {
                    tokio::time::sleep(paused).await;
                }
                let wait = self.reserve(tenant_id);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                // A pause set while we waited for a slot still applies.
                if self.paused_for(tenant_id).is_zero() {
                    return;
                }
            }
        })
    }

    fn pause(&self, tenant_id: i64, wait: Duration) -> BoxFuture<'_, ()> {
        let until = Instant::now() + wait;
        let mut map = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(tenant_id).or_insert(until);
        *entry = (*entry).max(until);
        Box::pin(async {})
    }
}

/// Infrastructure failures only: business outcomes are written to rows, never returned as `Err`.
#[derive(thiserror::Error, Debug)]
pub enum EngineError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Internal(String),
}

/// The `clientId` sent when `CW_CLIENT_ID` is unset (development only; real pushes need one).
pub const PLACEHOLDER_CLIENT_ID: &str = "00000000-0000-0000-0000-000000000001";

static PLACEHOLDER_WARNING: Once = Once::new();

/// Why a tenant's ConnectWise client cannot be built.
pub(crate) enum ClientError {
    NotConfigured,
    Unusable(String),
}

/// The tenant's ConnectWise client and settings row; `None` when ConnectWise is not configured.
pub async fn cw_client_for_tenant(
    deps: &EngineDeps,
    tenant_id: i64,
) -> Result<Option<(connectwise::CwClient, entity::cw_settings::Model)>, EngineError> {
    let Some(settings) = entity::cw_settings::Entity::find_by_id(tenant_id).one(&deps.db).await? else {
        return Ok(None);
    };
    match client_from_settings(deps, &settings) {
        Ok(client) => Ok(Some((client, settings))),
        Err(ClientError::NotConfigured) => Ok(None),
        Err(ClientError::Unusable(reason)) => Err(EngineError::Internal(reason)),
    }
}

pub(crate) fn client_from_settings(deps: &EngineDeps, s: &entity::cw_settings::Model) -> Result<connectwise::CwClient, ClientError> {
    let Some(enc) = s.private_key_enc.as_deref() else {
        return Err(ClientError::NotConfigured);
    };
    let Some(secrets) = deps.secrets.as_ref() else {
        return Err(ClientError::Unusable("SECRETS_KEY is not configured: the ConnectWise private key cannot be decrypted".into()));
    };
    let private_key: SecretString = secrets.decrypt(enc).map_err(|e| ClientError::Unusable(e.to_string()))?;
    let site_url = url::Url::parse(&s.site_url).map_err(|e| ClientError::Unusable(format!("the ConnectWise site URL is invalid: {e}")))?;
    let client_id = match deps.settings.cw_client_id.clone() {
        Some(id) => id,
        None => {
            PLACEHOLDER_WARNING.call_once(|| {
                tracing::warn!("CW_CLIENT_ID is not set: using a placeholder clientId; set it before pushing to a real ConnectWise");
            });
            PLACEHOLDER_CLIENT_ID.to_string()
        }
    };
    let creds = connectwise::Credentials {
        site_url,
        codebase: s.codebase.clone(),
        company_id: s.company_id.clone(),
        public_key: s.public_key.clone(),
        private_key,
        client_id,
    };
    Ok(connectwise::CwClient::new(deps.http.clone(), creds, deps.settings.cw_timeout))
}

/// Push counts of a run by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    pub non_final: u64,
    pub succeeded: u64,
    pub skipped: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl RunCounts {
    pub fn status(&self) -> domain::SyncRunStatus {
        domain::SyncRunStatus::from_push_counts(self.non_final, self.succeeded, self.skipped, self.dead, self.cancelled)
    }
}

pub(crate) async fn run_counts<C: ConnectionTrait>(c: &C, run_id: i64) -> Result<RunCounts, DbErr> {
    let rows = sql::query(
        c,
        &format!(
            "SELECT \
               COALESCE(SUM(CASE WHEN status IN {nf} THEN 1 ELSE 0 END), 0) AS non_final, \
               COALESCE(SUM(CASE WHEN status = 'SUCCEEDED' THEN 1 ELSE 0 END), 0) AS succeeded, \
               COALESCE(SUM(CASE WHEN status = 'SKIPPED' THEN 1 ELSE 0 END), 0) AS skipped, \
               COALESCE(SUM(CASE WHEN status = 'DEAD' THEN 1 ELSE 0 END), 0) AS dead, \
               COALESCE(SUM(CASE WHEN status = 'CANCELLED' THEN 1 ELSE 0 END), 0) AS cancelled \
             FROM pushes WHERE sync_run_id = $1",
            nf = sql::NON_FINAL_SQL
        ),
        vec![run_id.into()],
    )
    .await?;
    let Some(r) = rows.first() else { return Ok(RunCounts::default()) };
    let get = |col: &str| -> Result<u64, DbErr> { Ok(u64::try_from(r.try_get::<i64>("", col)?).unwrap_or(0)) };
    Ok(RunCounts {
        non_final: get("non_final")?,
        succeeded: get("succeeded")?,
        skipped: get("skipped")?,
        dead: get("dead")?,
        cancelled: get("cancelled")?,
    })
}

/// Finish the run if all its pushes are final. Conditional (`status = 'RUNNING'` and no non-final
/// push at update time), so when several workers finish the last pushes together exactly one wins.
/// Call it after committing the push's own change, so the last committer sees every other one.
pub(crate) async fn finish_run_if_done<C: ConnectionTrait>(c: &C, run_id: i64, now: DateTime<Utc>) -> Result<bool, DbErr> {
    // Called after every final push: while any push is open, stop at the first one found
    // (ix_pushes_run) instead of counting the whole run each time.
    let open = sql::query(
        c,
        &format!("SELECT 1 AS open FROM pushes WHERE sync_run_id = $1 AND status IN {} LIMIT 1", sql::NON_FINAL_SQL),
        vec![run_id.into()],
    )
    .await?;
    if !open.is_empty() {
        return Ok(false);
    }
    let counts = run_counts(c, run_id).await?;
    if counts.non_final > 0 {
        return Ok(false);
    }
    let status = counts.status();
    let rows = sql::query(
        c,
        &format!(
            "UPDATE sync_runs SET status = $2, finished_at = $3 \
             WHERE id = $1 AND status = 'RUNNING' AND aggregated_at IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM pushes p WHERE p.sync_run_id = $1 AND p.status IN {nf}) \
             RETURNING tenant_id",
            nf = sql::NON_FINAL_SQL
        ),
        vec![run_id.into(), status.as_str().into(), now.into()],
    )
    .await?;
    let Some(row) = rows.first() else { return Ok(false) };
    let tenant_id: i64 = row.try_get("", "tenant_id")?;
    crate::audit::record(
        c,
        crate::audit::AuditRecord {
            at: now,
            tenant_id,
            actor: crate::audit::SYSTEM_ACTOR,
            action: "sync_run.finished",
            entity_type: "sync_run",
            entity_id: run_id.to_string(),
            before: Some(serde_json::json!({"status": "RUNNING"})),
            after: Some(serde_json::json!({"status": status.as_str()})),
            detail: Some(serde_json::to_value(counts).unwrap_or_default()),
        },
    )
    .await?;
    Ok(true)
}

/// Cut a message to a length that fits a log column (never splits a character).
pub(crate) fn clip(s: &str, max: usize) -> String {
    connectwise::truncate_chars(s, max).to_string()
}

/// Compile-time check: every job body can run on a multi-threaded executor (`tokio::spawn`, apalis).
#[cfg(test)]
#[allow(dead_code)]
fn job_futures_are_send(deps: &EngineDeps) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&aggregate::aggregate_run(deps, 1));
    is_send(&push::attempt_push(deps, 1));
    is_send(&ticket::open_ticket(deps, 1));
    is_send(&reconcile::reconcile(deps));
    is_send(&catalog::refresh_catalog(deps, 1, "system"));
    is_send(&schedule::start_scheduled_runs(deps, domain::Period::latest_closed(deps.clock.today())));
    is_send(&schedule::catch_up(deps));
    is_send(&cw_client_for_tenant(deps, 1));
}
