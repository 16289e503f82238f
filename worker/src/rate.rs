//! [`RedisRateLimiter`]: ConnectWise requests per second per tenant, shared by every worker
//! process through Redis (`CW_RATE_PER_TENANT`, README: Configuration).
//!
//! A sliding-window log per tenant: a sorted set `{prefix}:rate:{tenant}` of the admission times
//! (milliseconds of Redis's own clock, so the hosts' clocks don't matter). A Lua script drops the
//! entries older than one second and admits the request if fewer than N remain; otherwise it
//! answers how long until the oldest one leaves the window, and the caller sleeps that long and
//! asks again. So in any one-second window at most N requests of a tenant start, whichever
//! processes make them.
//!
//! Redis trouble must not stop pushes: on an error or a slow answer the limiter logs and falls back
//! to a per-process limiter of the same rate (fails open towards Redis, still polite towards
//! ConnectWise).
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::engine::{LocalRateLimiter, TenantRateLimiter};
use apalis_redis::ConnectionManager;
use futures::future::BoxFuture;
use redis::Script;

/// How long one admission check may take before the limiter falls back to the local one.
const REDIS_BUDGET: Duration = Duration::from_millis(1_000);
/// The window.
const WINDOW_MS: u64 = 1_000;

const SCRIPT: &str = r#"
-- KEYS[1] the tenant's window (sorted set), KEYS[2] the tenant's pause (ms of Redis time until
-- which nobody may call), ARGV[1] limit, ARGV[2] window ms, ARGV[3] unique member
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return paused - now
end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now + 1
if wait < 1 then wait = 1 end
return wait
"#;

/// Sets a tenant's pause (a 429's `Retry-After`) on Redis's clock, never shortening a longer one.
const PAUSE_SCRIPT: &str = r#"
-- KEYS[1] the tenant's pause, ARGV[1] wait ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < now + wait then
  redis.call('SET', KEYS[1], now + wait, 'PX', wait + 1000)
end
return 0
"#;

/// Per-tenant requests/second budget shared through Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    prefix: String,
    per_second: u32,
    script: Arc<Script>,
    /// Makes the sorted-set members unique within this process (with the instance id across).
    seq: Arc<AtomicU64>,
    instance: String,
    fallback: Arc<LocalRateLimiter>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").field("prefix", &self.prefix).field("per_second", &self.per_second).finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// `per_second` requests per tenant across all processes using the same Redis and prefix.
    pub fn new(conn: ConnectionManager, prefix: &str, per_second: u32) -> Self {
        let per_second = per_second.max(1);
        RedisRateLimiter {
            conn,
            prefix: prefix.to_string(),
            per_second,
            script: Arc::new(Script::new(SCRIPT)),
            seq: Arc::new(AtomicU64::new(0)),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            fallback: Arc::new(LocalRateLimiter::new(per_second)),
        }
    }

    /// The limiter on a queue's connection and prefix.
    pub fn for_queue(queue: &crate::RedisQueue, per_second: u32) -> Self {
        Self::new(queue.connection(), queue.prefix(), per_second)
    }

    /// The Redis key of a tenant's window.
    pub fn key(&self, tenant_id: i64) -> String {
        format!("{}:rate:{tenant_id}", self.prefix)
    }

    /// The Redis key of a tenant's pause.
    pub fn pause_key(&self, tenant_id: i64) -> String {
        format!("{}:pause:{tenant_id}", self.prefix)
    }

    /// One admission check: `Ok(None)` admitted, `Ok(Some(wait))` over budget.
    async fn try_acquire(&self, key: &str, pause_key: &str) -> Result<Option<Duration>, redis::RedisError> {
        let member = format!("{}-{}", self.instance, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut conn = self.conn.clone();
        let wait_ms: u64 =
            self.script.key(key).key(pause_key).arg(self.per_second).arg(WINDOW_MS).arg(member).invoke_async(&mut conn).await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    async fn acquire_inner(&self, tenant_id: i64) {
        let (key, pause_key) = (self.key(tenant_id), self.pause_key(tenant_id));
        loop {
            match tokio::time::timeout(REDIS_BUDGET, self.try_acquire(&key, &pause_key)).await {
                Ok(Ok(None)) => return,
                Ok(Ok(Some(wait))) => {
                    // A little jitter so that waiting processes don't all ask at the same instant.
                    // (A pause may be longer than the window: sleep it whole, then ask again.)
                    let jitter = Duration::from_millis(rand::random_range(0..20));
                    tokio::time::sleep(wait + jitter).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(tenant_id, %error, "rate limiter: Redis failed, using the per-process limit");
                    return self.fallback.acquire(tenant_id).await;
                }
                Err(_) => {
                    tracing::warn!(tenant_id, "rate limiter: Redis too slow, using the per-process limit");
                    return self.fallback.acquire(tenant_id).await;
                }
            }
        }
    }
}

impl RedisRateLimiter {
    /// [`TenantRateLimiter::acquire_within`]: wait for the gate while it opens within `max_wait`.
    async fn acquire_within_inner(&self, tenant_id: i64, max_wait: Duration) -> Result<(), Duration> {
        let (key, pause_key) = (self.key(tenant_id), self.pause_key(tenant_id));
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            match tokio::time::timeout(REDIS_BUDGET, self.try_acquire(&key, &pause_key)).await {
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(wait))) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if wait > left {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait + Duration::from_millis(rand::random_range(0..20))).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(tenant_id, %error, "rate limiter: Redis failed, using the per-process limit");
                    return self.fallback.acquire_within(tenant_id, max_wait).await;
                }
                Err(_) => {
                    tracing::warn!(tenant_id, "rate limiter: Redis too slow, using the per-process limit");
                    return self.fallback.acquire_within(tenant_id, max_wait).await;
                }
            }
        }
    }
}

impl TenantRateLimiter for RedisRateLimiter {
    fn acquire(&self, tenant_id: i64) -> BoxFuture<'_, ()> {
        Box::pin(self.acquire_inner(tenant_id))
    }

    fn acquire_within(&self, tenant_id: i64, max_wait: Duration) -> BoxFuture<'_, Result<(), Duration>> {
        Box::pin(self.acquire_within_inner(tenant_id, max_wait))
    }

    fn pause(&self, tenant_id: i64, wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The fallback holds it too, for the case Redis fails while the pause runs.
            self.fallback.pause(tenant_id, wait).await;
            let mut conn = self.conn.clone();
            let script = redis::Script::new(PAUSE_SCRIPT);
            let mut invocation = script.key(self.pause_key(tenant_id));
            invocation.arg(wait.as_millis() as u64);
            match tokio::time::timeout(REDIS_BUDGET, invocation.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(tenant_id, %error, "rate limiter: could not record the pause in Redis"),
                Err(_) => tracing::warn!(tenant_id, "rate limiter: Redis too slow to record the pause"),
            }
        })
    }
}
