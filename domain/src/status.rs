//! Lifecycle states of pushes (the outbox rows) and sync runs (SPEC §7).

named_enum! {
    /// State of one push: `PENDING → RUNNING → SUCCEEDED | FAILED_RETRYING → … | DEAD | SKIPPED | CANCELLED`.
    pub enum PushStatus {
        /// Waiting to be attempted.
        Pending => "PENDING",
        /// An attempt is in flight.
        Running => "RUNNING",
        /// ConnectWise accepted the quantity.
        Succeeded => "SUCCEEDED",
        /// The last attempt failed; another one is scheduled.
        FailedRetrying => "FAILED_RETRYING",
        /// Gave up; a service ticket is raised.
        Dead => "DEAD",
        /// Not sent (see the push's skip reason).
        Skipped => "SKIPPED",
        /// Withdrawn, e.g. because its mapping was removed.
        Cancelled => "CANCELLED",
    }
}

impl PushStatus {
    /// The states a push can still leave (at most one such push per tenant and addition).
    pub const NON_FINAL: [PushStatus; 3] = [PushStatus::Pending, PushStatus::Running, PushStatus::FailedRetrying];

    /// Whether the push has reached an end state (`SUCCEEDED`, `DEAD`, `SKIPPED`, `CANCELLED`).
    pub fn is_final(&self) -> bool {
        !Self::NON_FINAL.contains(self)
    }
}

named_enum! {
    /// State of a sync run, derived from its pushes.
    pub enum SyncRunStatus {
        /// Some pushes are not final yet.
        Running => "RUNNING",
        /// Every push is final and none is dead.
        Succeeded => "SUCCEEDED",
        /// Some pushes are dead, others succeeded or were skipped.
        PartiallyFailed => "PARTIALLY_FAILED",
        /// Every push that was not cancelled is dead.
        Failed => "FAILED",
    }
}

impl SyncRunStatus {
    /// The run status for its push counts by state.
    ///
    /// Any non-final push keeps the run `RUNNING`; then no dead push means `SUCCEEDED` (also for a run
    /// without pushes); dead pushes beside succeeded or skipped ones mean `PARTIALLY_FAILED`; only dead
    /// ones mean `FAILED`. Cancelled pushes count as neither success nor failure.
    ///
    /// ```
    /// use domain::SyncRunStatus;
    /// assert_eq!(SyncRunStatus::from_push_counts(0, 3, 1, 1, 0), SyncRunStatus::PartiallyFailed);
    /// ```
    pub fn from_push_counts(non_final: u64, succeeded: u64, skipped: u64, dead: u64, cancelled: u64) -> SyncRunStatus {
        let _ = cancelled; // deliberately ignored: a cancelled push neither succeeds nor fails
        if non_final > 0 {
            SyncRunStatus::Running
        } else if dead == 0 {
            SyncRunStatus::Succeeded
        } else if succeeded.saturating_add(skipped) > 0 {
            SyncRunStatus::PartiallyFailed
        } else {
            SyncRunStatus::Failed
        }
    }
}

named_enum! {
    /// What started a sync run.
    pub enum SyncTrigger {
        /// The cron schedule (`SYNC_CRON`).
        Scheduled => "SCHEDULED",
        /// A user's `runMonthlySync`.
        Manual => "MANUAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let push: Vec<_> = PushStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(push, ["PENDING", "RUNNING", "SUCCEEDED", "FAILED_RETRYING", "DEAD", "SKIPPED", "CANCELLED"]);
        let run: Vec<_> = SyncRunStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(run, ["RUNNING", "SUCCEEDED", "PARTIALLY_FAILED", "FAILED"]);
        let trig: Vec<_> = SyncTrigger::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(trig, ["SCHEDULED", "MANUAL"]);
        for s in PushStatus::ALL {
            assert_eq!(s.to_string().parse::<PushStatus>(), Ok(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<PushStatus>(&json).unwrap(), s);
        }
        for s in SyncRunStatus::ALL {
            assert_eq!(s.to_string().parse::<SyncRunStatus>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for s in SyncTrigger::ALL {
            assert_eq!(s.to_string().parse::<SyncTrigger>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("FAILEDRETRYING".parse::<PushStatus>().is_err());
    }

    #[test]
    fn finality() {
        use PushStatus::*;
        for s in [Succeeded, Dead, Skipped, Cancelled] {
            assert!(s.is_final(), "{s}");
        }
        for s in [Pending, Running, FailedRetrying] {
            assert!(!s.is_final(), "{s}");
        }
        assert_eq!(PushStatus::NON_FINAL, [Pending, Running, FailedRetrying]);
    }

    #[test]
    fn run_status_from_counts() {
        use SyncRunStatus::*;
        let f = SyncRunStatus::from_push_counts;
        assert_eq!(f(0, 0, 0, 0, 0), Succeeded, "a run without pushes");
        assert_eq!(f(1, 5, 0, 2, 0), Running);
        assert_eq!(f(1, 0, 0, 0, 0), Running);
        assert_eq!(f(0, 5, 2, 0, 0), Succeeded);
        assert_eq!(f(0, 0, 3, 0, 0), Succeeded, "all skipped");
        assert_eq!(f(0, 0, 0, 0, 4), Succeeded, "all cancelled");
        assert_eq!(f(0, 1, 0, 1, 0), PartiallyFailed);
        assert_eq!(f(0, 0, 1, 1, 0), PartiallyFailed);
        assert_eq!(f(0, 0, 0, 3, 0), Failed);
        assert_eq!(f(0, 0, 0, 3, 9), Failed, "cancelled is not a success");
        assert_eq!(f(0, u64::MAX, u64::MAX, 1, 0), PartiallyFailed);
    }
}
