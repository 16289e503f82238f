//! Lifecycle states of pushes (the outbox rows) and sync runs, and the one table of the transitions
//! between them.
//!
//! [`PUSH_TRANSITIONS`] and [`RUN_TRANSITIONS`] are the rules: every write of a push or run status
//! (in `sync_core::ledger`) names its event, and its conditional update only matches rows in one of
//! the event's `from` states. The status sets the rest of the code needs — non-final, claimable,
//! retryable — are derived from the tables, never typed out again.

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
        /// Withdrawn: superseded by a newer push of its addition, its mapping removed, or rejected.
        Cancelled => "CANCELLED",
    }
}

named_enum! {
    /// What moves a push from one state to another (the name of its ledger function and audit action).
    pub enum PushEvent {
        /// A run's aggregation writes the push (from no state).
        Create => "CREATE",
        /// A worker takes the push for one attempt (counts the attempt).
        Claim => "CLAIM",
        /// ConnectWise holds the pushed quantity after our PATCH.
        Succeed => "SUCCEED",
        /// ConnectWise already held the quantity: nothing sent.
        FindUnchanged => "FIND_UNCHANGED",
        /// A transient failure; another attempt is scheduled.
        FailAndRetry => "FAIL_AND_RETRY",
        /// The attempt could not start calling (the tenant is paused or its request budget is
        /// spent): the claim is given back with its attempt, and the push waits.
        Wait => "WAIT",
        /// A permanent failure, or the attempt budget is spent.
        Die => "DIE",
        /// Withdrawn (superseded, mapping removed, rejected).
        Cancel => "CANCEL",
        /// An operator gives a dead or failing push a fresh attempt budget.
        Retry => "RETRY",
        /// Reconciliation finds an attempt whose worker vanished.
        LoseAttempt => "LOSE_ATTEMPT",
    }
}

impl PushEvent {
    /// Whether the event brings a finished push back to life: an operator's decision, never the
    /// engine's. A state only such events leave is final.
    pub fn reopens(self) -> bool {
        self == PushEvent::Retry
    }
}

named_enum! {
    /// Why a push was withdrawn (`CANCELLED`); also its `lastErrorCode`.
    pub enum CancelReason {
        /// A newer push of the same addition exists: only the newest may write it.
        PushSuperseded => "PUSH_SUPERSEDED",
        /// Its product mapping was deleted, its customer unmapped, or the mapping now points to
        /// another addition.
        MappingRemoved => "MAPPING_REMOVED",
    }
}

impl CancelReason {
    /// A sentence for the push's `lastError`.
    pub fn message(self) -> &'static str {
        match self {
            CancelReason::PushSuperseded => "a newer push of the same addition exists: only the newest push of an addition may write it",
            CancelReason::MappingRemoved => "its product mapping was removed, or now points to another addition",
        }
    }
}

/// One legal transition: `event` moves a push from any of `from` (empty: a new row) to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushTransition {
    /// The event.
    pub event: PushEvent,
    /// The states the event applies to; empty for [`PushEvent::Create`].
    pub from: &'static [PushStatus],
    /// The state it leads to.
    pub to: PushStatus,
}

use PushStatus as P;

/// Every legal push transition. Anything not listed is refused.
pub const PUSH_TRANSITIONS: &[PushTransition] = &[
    PushTransition { event: PushEvent::Create, from: &[], to: P::Pending },
    PushTransition { event: PushEvent::Create, from: &[], to: P::Skipped },
    PushTransition { event: PushEvent::Claim, from: &[P::Pending, P::FailedRetrying], to: P::Running },
    PushTransition { event: PushEvent::Succeed, from: &[P::Running], to: P::Succeeded },
    PushTransition { event: PushEvent::FindUnchanged, from: &[P::Running], to: P::Skipped },
    PushTransition { event: PushEvent::FailAndRetry, from: &[P::Running], to: P::FailedRetrying },
    PushTransition { event: PushEvent::Wait, from: &[P::Running], to: P::Pending },
    PushTransition { event: PushEvent::Wait, from: &[P::Running], to: P::FailedRetrying },
    // Running: the attempt's own verdict; Pending/FailedRetrying: a tripped breaker ends the run's
    // other pushes without calling.
    PushTransition { event: PushEvent::Die, from: &[P::Running, P::Pending, P::FailedRetrying], to: P::Dead },
    PushTransition { event: PushEvent::Cancel, from: &[P::Pending, P::Running, P::FailedRetrying], to: P::Cancelled },
    PushTransition { event: PushEvent::Retry, from: &[P::Dead, P::FailedRetrying], to: P::Pending },
    PushTransition { event: PushEvent::LoseAttempt, from: &[P::Running], to: P::FailedRetrying },
    PushTransition { event: PushEvent::LoseAttempt, from: &[P::Running], to: P::Dead },
];

impl PushStatus {
    /// Whether `event` may move a push from `self` to `to`.
    ///
    /// ```
    /// use domain::{PushEvent, PushStatus};
    /// assert!(PushStatus::Dead.can(PushEvent::Retry, PushStatus::Pending));
    /// assert!(!PushStatus::Succeeded.can(PushEvent::Retry, PushStatus::Pending));
    /// ```
    pub fn can(self, event: PushEvent, to: PushStatus) -> bool {
        PUSH_TRANSITIONS.iter().any(|t| t.event == event && t.to == to && t.from.contains(&self))
    }

    /// Whether any event moves a push from `self` to `to`.
    pub fn can_become(self, to: PushStatus) -> bool {
        PUSH_TRANSITIONS.iter().any(|t| t.to == to && t.from.contains(&self))
    }

    /// Whether the push has reached an end state: only an operator's retry ([`PushEvent::reopens`])
    /// leaves it.
    pub fn is_final(self) -> bool {
        !PUSH_TRANSITIONS.iter().any(|t| !t.event.reopens() && t.from.contains(&self))
    }

    /// The states the engine still moves on (at most one such push per tenant and addition; a run
    /// is finished when none of its pushes is in one).
    pub fn non_final() -> Vec<PushStatus> {
        PushStatus::ALL.into_iter().filter(|s| !s.is_final()).collect()
    }

    /// The states `event` applies to.
    pub fn sources_of(event: PushEvent) -> Vec<PushStatus> {
        let mut out: Vec<PushStatus> = Vec::new();
        for t in PUSH_TRANSITIONS.iter().filter(|t| t.event == event) {
            for s in t.from {
                if !out.contains(s) {
                    out.push(*s);
                }
            }
        }
        out.sort();
        out
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

named_enum! {
    /// What moves a sync run from one state to another.
    pub enum RunEvent {
        /// A run is created (manual or scheduled).
        Start => "START",
        /// Its last open push became final.
        Finish => "FINISH",
        /// A push of the finished run was retried: the run has work again.
        Reopen => "REOPEN",
        /// The run could not be aggregated (e.g. an impossible period): it ends at once.
        Fail => "FAIL",
    }
}

/// One legal run transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTransition {
    /// The event.
    pub event: RunEvent,
    /// The states it applies to; empty for [`RunEvent::Start`].
    pub from: &'static [SyncRunStatus],
    /// The state it leads to.
    pub to: SyncRunStatus,
}

use SyncRunStatus as R;

/// Every legal run transition.
pub const RUN_TRANSITIONS: &[RunTransition] = &[
    RunTransition { event: RunEvent::Start, from: &[], to: R::Running },
    RunTransition { event: RunEvent::Finish, from: &[R::Running], to: R::Succeeded },
    RunTransition { event: RunEvent::Finish, from: &[R::Running], to: R::PartiallyFailed },
    RunTransition { event: RunEvent::Finish, from: &[R::Running], to: R::Failed },
    RunTransition { event: RunEvent::Reopen, from: &[R::Succeeded, R::PartiallyFailed, R::Failed], to: R::Running },
    RunTransition { event: RunEvent::Fail, from: &[R::Running], to: R::Failed },
];

impl SyncRunStatus {
    /// Whether `event` may move a run from `self` to `to`.
    pub fn can(self, event: RunEvent, to: SyncRunStatus) -> bool {
        RUN_TRANSITIONS.iter().any(|t| t.event == event && t.to == to && t.from.contains(&self))
    }

    /// Whether the run is over (only a retry reopens it).
    pub fn is_finished(self) -> bool {
        self != SyncRunStatus::Running
    }

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

    /// Every ordered pair of push states, legal or refused — the table written out as a matrix, so a
    /// change of the rules shows up here as a deliberate edit.
    #[test]
    fn every_pair_of_push_states() {
        use PushStatus::*;
        let legal: &[(PushStatus, PushStatus)] = &[
            (Pending, Running),
            (Pending, Dead),
            (Pending, Cancelled),
            (FailedRetrying, Running),
            (FailedRetrying, Dead),
            (FailedRetrying, Cancelled),
            (FailedRetrying, Pending),
            (Running, Succeeded),
            (Running, Skipped),
            (Running, FailedRetrying),
            (Running, Pending),
            (Running, Dead),
            (Running, Cancelled),
            (Dead, Pending),
        ];
        for from in PushStatus::ALL {
            for to in PushStatus::ALL {
                assert_eq!(from.can_become(to), legal.contains(&(from, to)), "{from} → {to}");
            }
        }
        // A push is created pending or skipped, never in any other state.
        let created: Vec<PushStatus> = PUSH_TRANSITIONS.iter().filter(|t| t.event == PushEvent::Create).map(|t| t.to).collect();
        assert_eq!(created, [Pending, Skipped]);
        assert!(PUSH_TRANSITIONS.iter().all(|t| (t.event == PushEvent::Create) == t.from.is_empty()));
    }

    #[test]
    fn events_name_their_transitions() {
        use PushStatus::*;
        assert!(Pending.can(PushEvent::Claim, Running) && FailedRetrying.can(PushEvent::Claim, Running));
        assert!(!Dead.can(PushEvent::Claim, Running), "a dead push is only attempted again through a retry");
        assert!(Running.can(PushEvent::Wait, Pending) && !Pending.can(PushEvent::Wait, Pending));
        assert!(!Running.can(PushEvent::Retry, Pending), "only dead or failing pushes are retried");
        assert!(!Succeeded.can(PushEvent::Cancel, Cancelled), "what reached ConnectWise cannot be withdrawn");
        assert!(Running.can(PushEvent::LoseAttempt, Dead) && !Pending.can(PushEvent::LoseAttempt, Dead));
    }

    #[test]
    fn sets_are_derived_from_the_table() {
        use PushStatus::*;
        for s in [Succeeded, Dead, Skipped, Cancelled] {
            assert!(s.is_final(), "{s}");
        }
        // Dead is final although an operator may retry it: only a reopening event leaves it.
        assert!(Dead.can_become(Pending) && PushEvent::Retry.reopens());
        assert_eq!(PushStatus::non_final(), [Pending, Running, FailedRetrying]);
        assert_eq!(PushStatus::sources_of(PushEvent::Claim), [Pending, FailedRetrying]);
        assert_eq!(PushStatus::sources_of(PushEvent::Retry), [FailedRetrying, Dead]);
        assert_eq!(PushStatus::sources_of(PushEvent::Cancel), [Pending, Running, FailedRetrying]);
    }

    #[test]
    fn every_pair_of_run_states() {
        use SyncRunStatus::*;
        let legal: &[(SyncRunStatus, SyncRunStatus)] = &[
            (Running, Succeeded),
            (Running, PartiallyFailed),
            (Running, Failed),
            (Succeeded, Running),
            (PartiallyFailed, Running),
            (Failed, Running),
        ];
        for from in SyncRunStatus::ALL {
            for to in SyncRunStatus::ALL {
                let any = RUN_TRANSITIONS.iter().any(|t| t.to == to && t.from.contains(&from));
                assert_eq!(any, legal.contains(&(from, to)), "{from} → {to}");
            }
        }
        assert!(Running.can(RunEvent::Finish, Failed) && Running.can(RunEvent::Fail, Failed));
        assert!(!Succeeded.can(RunEvent::Finish, Failed));
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
