//! The per-tenant request budget of `/graphql` (a token bucket per tenant, governor's GCRA): up to
//! `API_BURST_PER_TENANT` requests at once, refilled at `API_RATE_PER_TENANT` per second. One
//! tenant flooding the API gets `429` with `Retry-After`; the others keep their budget. The budget
//! is per `api` process (several processes behind a load balancer each keep their own).
use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

/// Forget tenants idle long enough to have a full bucket again, every this many checks.
const PRUNE_EVERY: u64 = 4_096;

pub struct TenantBudget {
    limiter: DefaultKeyedRateLimiter<i64>,
    checks: AtomicU64,
}

impl TenantBudget {
    /// `per_second` sustained, `burst` at once (both at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        TenantBudget { limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)), checks: AtomicU64::new(0) }
    }

    /// Take one request from the tenant's budget, or say how long until one is available.
    pub fn check(&self, tenant_id: i64) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&tenant_id).map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_burst_then_waits_and_others_are_unaffected() {
        let budget = TenantBudget::new(2, 5);
        for i in 0..5 {
            assert!(budget.check(1).is_ok(), "request {i} of the burst");
        }
        let wait = budget.check(1).expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        for _ in 0..5 {
            assert!(budget.check(2).is_ok(), "another tenant has its own bucket");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
