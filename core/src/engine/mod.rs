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

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr, EntityTrait};
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
    /// The tenant's ConnectWise credentials cannot be used (no private key, undecryptable, bad URL).
    pub const CW_NOT_CONFIGURED: &str = "CW_NOT_CONFIGURED";
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
    /// The guarded ConnectWise HTTP client (no redirects, the address guard at connect time).
    pub http: connectwise::CwHttp,
    pub rate: Arc<dyn TenantRateLimiter>,
    pub clock: Arc<dyn Clock>,
}

/// Per-tenant ConnectWise request budget shared by all workers (Redis impl lives in the worker
/// crate; [`LocalRateLimiter`] serves one process, e.g. the embedded SQLite deployment and tests).
pub trait TenantRateLimiter: Send + Sync {
    /// Wait until the tenant may make one more ConnectWise request: its pause (if any) has passed
    /// and its request budget has room.
    fn acquire(&self, tenant_id: i64) -> BoxFuture<'_, ()>;
    /// Take one request of the tenant's budget if that is possible within `max_wait`; otherwise
    /// take nothing and answer how long until the gate may open (a pause, a spent budget). Every
    /// ConnectWise call of a push goes through here, so that an attempt never waits long while
    /// holding its claim.
    fn acquire_within(&self, tenant_id: i64, max_wait: Duration) -> BoxFuture<'_, Result<(), Duration>>;
    /// Hold every call of the tenant for `wait` (a 429's `Retry-After`), in every process that
    /// shares this limiter; never shortens a longer pause.
    fn pause(&self, tenant_id: i64, wait: Duration) -> BoxFuture<'_, ()>;
}

/// An in-process per-tenant limiter (GCRA: a token bucket of `per_second` tokens refilled evenly).
/// Pauses (a 429's `Retry-After`) run on the service's clock.
pub struct LocalRateLimiter {
    interval: Duration,
    burst: u32,
    /// Theoretical arrival time of the next request, per tenant.
    tat: Mutex<HashMap<i64, Instant>>,
    /// Until when each paused tenant must not call.
    paused: Mutex<HashMap<i64, chrono::DateTime<chrono::Utc>>>,
    clock: crate::clock::SharedClock,
}

impl LocalRateLimiter {
    /// `per_second` requests per tenant, pauses on the system clock.
    pub fn new(per_second: u32) -> Self {
        Self::with_clock(per_second, Arc::new(SystemClock))
    }

    /// `per_second` requests per tenant, pauses on `clock`.
    pub fn with_clock(per_second: u32, clock: crate::clock::SharedClock) -> Self {
        let per_second = per_second.max(1);
        LocalRateLimiter {
            interval: Duration::from_secs(1) / per_second,
            burst: per_second,
            tat: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Reserve the next slot and return how long to wait for it; with `limit`, reserve nothing when
    /// the wait would be longer and return `Err(wait)`.
    fn reserve(&self, tenant_id: i64, limit: Option<Duration>) -> Result<Duration, Duration> {
        let now = Instant::now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let tat = map.entry(tenant_id).or_insert(now);
        let new_tat = (*tat).max(now) + self.interval;
        // A request may go as soon as the bucket has a token: `burst` intervals of tolerance.
        let allowed_at = new_tat.checked_sub(self.interval * self.burst).unwrap_or(now);
        let wait = allowed_at.saturating_duration_since(now);
        if limit.is_some_and(|limit| wait > limit) {
            return Err(wait);
        }
        *tat = new_tat;
        Ok(wait)
    }
}

impl LocalRateLimiter {
    /// How long the tenant is still paused.
    fn paused_for(&self, tenant_id: i64) -> Duration {
        let map = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&tenant_id).map(|until| self.clock.until(*until)).unwrap_or_default()
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
                let wait = self.reserve(tenant_id, None).unwrap_or_else(|w| w);
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

    fn acquire_within(&self, tenant_id: i64, max_wait: Duration) -> BoxFuture<'_, Result<(), Duration>> {
        Box::pin(async move {
            let paused = self.paused_for(tenant_id);
            if paused > max_wait {
                return Err(paused);
            }
            tokio::time::sleep(paused).await;
            let wait = self.reserve(tenant_id, Some(max_wait.saturating_sub(paused)))?;
            tokio::time::sleep(wait).await;
            // A pause set while we waited for the slot still applies.
            match self.paused_for(tenant_id) {
                d if d.is_zero() => Ok(()),
                d => Err(d),
            }
        })
    }

    fn pause(&self, tenant_id: i64, wait: Duration) -> BoxFuture<'_, ()> {
        let until = self.clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
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

pub use crate::ledger::run::RunCounts;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_gate_refuses_rather_than_waits_long() {
        let gate = LocalRateLimiter::new(2);
        assert!(gate.acquire_within(1, Duration::ZERO).await.is_ok());
        assert!(gate.acquire_within(1, Duration::ZERO).await.is_ok(), "a burst of the rate");
        let refused = gate.acquire_within(1, Duration::from_millis(10)).await.expect_err("the budget is spent");
        assert!(refused > Duration::from_millis(10) && refused <= Duration::from_secs(1), "{refused:?}");
        assert!(gate.acquire_within(2, Duration::ZERO).await.is_ok(), "another tenant has its own budget");
        gate.pause(3, Duration::from_secs(60)).await;
        let paused = gate.acquire_within(3, Duration::from_secs(1)).await.expect_err("paused");
        assert!(paused > Duration::from_secs(50), "{paused:?}");
    }
}
