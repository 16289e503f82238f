//! The exponential backoff of push retries. Jitter is passed in, so the policy stays deterministic
//! and testable. (Which failures are retried is the ConnectWise client's `CwError::is_retryable`;
//! how many attempts a push has is its own `max_attempts`, which a manual retry extends.)

use std::time::Duration;

/// Exponential backoff with "equal jitter", capped, honouring `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackoffPolicy {
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
    /// let p = domain::BackoffPolicy { min: Duration::from_secs(2), max: Duration::from_secs(60) };
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
    fn policy() -> BackoffPolicy {
        BackoffPolicy { min: secs(2), max: secs(60) }
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
        let huge = BackoffPolicy { min: Duration::MAX, max: Duration::MAX };
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
}
