//! Failure classification of ConnectWise responses and the exponential backoff of push retries
//! (SPEC §7). Jitter is passed in, so the policy stays deterministic and testable.

use std::time::Duration;

/// How a failed ConnectWise call is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Transient (5xx gateway errors, 408, connect errors, timeouts): retry with backoff.
    Retryable,
    /// 429: counts as an attempt and pauses the tenant's calls until `Retry-After`.
    RateLimited,
    /// 401/403: trips the tenant's breaker; remaining pushes go `DEAD` with `CW_AUTH_FAILED`.
    AuthFailed,
    /// Any other error status: retrying cannot help.
    Permanent,
}

/// Classifies an HTTP error status.
///
/// 429 → `RateLimited`; 408, 500, 502, 503, 504 → `Retryable`; 401, 403 → `AuthFailed`; anything
/// else → `Permanent` (callers only ask for non-success statuses; an unexpected 1xx–3xx is treated
/// as permanent too, since repeating the same request will not change it).
pub fn classify_http_status(status: u16) -> FailureClass {
    match status {
        429 => FailureClass::RateLimited,
        408 | 500 | 502 | 503 | 504 => FailureClass::Retryable,
        401 | 403 => FailureClass::AuthFailed,
        _ => FailureClass::Permanent,
    }
}

/// Exponential backoff with "equal jitter", capped, honouring `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackoffPolicy {
    /// Attempts allowed in one budget (`PUSH_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Base delay after the first failed attempt.
    pub min: Duration,
    /// Upper bound of the exponential base (a `Retry-After` may exceed it).
    pub max: Duration,
}

impl BackoffPolicy {
    /// Delay before the next attempt, after attempt number `attempt` (1-based) failed.
    ///
    /// `base = min(min × 2^(attempt−1), max)` (saturating; attempt 0 counts as 1), jittered as
    /// `base/2 + base/2 × jitter_permille/1000` with `jitter_permille` clamped to `0..=1000`. A
    /// `retry_after` longer than that wins, even beyond `max`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = domain::BackoffPolicy { max_attempts: 5, min: Duration::from_secs(2), max: Duration::from_secs(60) };
    /// assert_eq!(p.delay(3, 1000, None), Duration::from_secs(8));
    /// assert_eq!(p.delay(3, 0, None), Duration::from_secs(4));
    /// assert_eq!(p.delay(1, 0, Some(Duration::from_secs(120))), Duration::from_secs(120));
    /// ```
    pub fn delay(&self, attempt: u32, jitter_permille: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1);
        let base = 2_u32.checked_pow(exponent).and_then(|factor| self.min.checked_mul(factor)).map_or(self.max, |d| d.min(self.max));
        let half = base / 2;
        let permille = jitter_permille.min(1000);
        // half × permille can only overflow for absurd durations; then scale before multiplying.
        let extra = half.checked_mul(permille).map_or_else(|| (half / 1000) * permille, |d| d / 1000);
        let jittered = half.saturating_add(extra);
        retry_after.map_or(jittered, |ra| jittered.max(ra))
    }

    /// Whether `attempts_made` attempts have used up the budget.
    pub fn exhausted(&self, attempts_made: u32) -> bool {
        attempts_made >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
    fn policy() -> BackoffPolicy {
        BackoffPolicy { max_attempts: 5, min: secs(2), max: secs(60) }
    }

    #[test]
    fn classifies_statuses() {
        use FailureClass::*;
        assert_eq!(classify_http_status(429), RateLimited);
        for s in [408, 500, 502, 503, 504] {
            assert_eq!(classify_http_status(s), Retryable, "{s}");
        }
        for s in [401, 403] {
            assert_eq!(classify_http_status(s), AuthFailed, "{s}");
        }
        for s in [400, 404, 405, 409, 410, 422, 499, 501, 505, 599, 200, 302] {
            assert_eq!(classify_http_status(s), Permanent, "{s}");
        }
    }

    #[test]
    fn exponential_base_without_jitter_spread() {
        let p = policy();
        // permille 1000 gives the full base (2 × half)
        assert_eq!(p.delay(1, 1000, None), secs(2));
        assert_eq!(p.delay(2, 1000, None), secs(4));
        assert_eq!(p.delay(3, 1000, None), secs(8));
        assert_eq!(p.delay(5, 1000, None), secs(32));
        assert_eq!(p.delay(6, 1000, None), secs(60), "capped at max");
        assert_eq!(p.delay(0, 1000, None), secs(2), "attempt 0 counts as 1");
    }

    #[test]
    fn equal_jitter() {
        let p = policy();
        assert_eq!(p.delay(3, 0, None), secs(4));
        assert_eq!(p.delay(3, 500, None), secs(6));
        assert_eq!(p.delay(3, 250, None), secs(5));
        assert_eq!(p.delay(3, 5000, None), secs(8), "permille clamped");
        for j in 0..=1000 {
            let d = p.delay(4, j, None);
            assert!(d >= secs(8) && d <= secs(16), "{j}: {d:?}");
        }
    }

    #[test]
    fn saturates_for_large_attempts() {
        let p = policy();
        for attempt in [31, 32, 33, 63, 64, 65, 1000, u32::MAX] {
            assert_eq!(p.delay(attempt, 1000, None), secs(60), "{attempt}");
            assert_eq!(p.delay(attempt, 0, None), secs(30), "{attempt}");
        }
        let huge = BackoffPolicy { max_attempts: 3, min: Duration::MAX, max: Duration::MAX };
        assert!(huge.delay(64, 1000, None) >= Duration::MAX / 2);
        assert_eq!(huge.delay(64, 0, None), Duration::MAX / 2);
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let p = policy();
        assert_eq!(p.delay(1, 1000, Some(secs(1))), secs(2));
        assert_eq!(p.delay(1, 1000, Some(secs(30))), secs(30));
        assert_eq!(p.delay(10, 1000, Some(secs(600))), secs(600), "beyond max");
    }

    #[test]
    fn budget() {
        let p = policy();
        assert!(!p.exhausted(0));
        assert!(!p.exhausted(4));
        assert!(p.exhausted(5));
        assert!(p.exhausted(6));
    }
}
