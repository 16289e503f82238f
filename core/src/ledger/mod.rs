//! The billing ledger: the one owner of every push and sync-run state change, and of the mappings'
//! `stale` flag.
//!
//! Each transition is a named function that does its conditional write and its audit entry in one
//! statement or in the caller's transaction. The conditions come from the transition tables of
//! `domain::status` (a write of event E only matches rows in one of E's `from` states), so the
//! rules are stated once and checked by construction; nothing else in the code base writes
//! `pushes.status`, `sync_runs.status` or `product_mappings.stale`.
//!
//! What the ledger guarantees (RELIABILITY.md has the long form):
//! - Only the newest push of an addition may write it: an older one is superseded (cancelled) when a
//!   newer run computes the addition, and a retry of a superseded or orphaned push is refused.
//! - An attempt's outcome is kept only while the push is still `RUNNING` under that attempt's
//!   number, so a late or duplicated attempt can never overwrite a newer state.
//! - A push's PATCH is sent inside a fence that holds the push row (a row lock on PostgreSQL, the
//!   write lock on SQLite): unmapping, deleting or superseding it waits for the PATCH to finish, so no
//!   addition receives a PATCH after its mapping was removed.
use std::sync::LazyLock;

use domain::{PushEvent, PushStatus};

pub mod push;
pub mod run;
pub mod stale;

/// `('A', 'B', …)`: a status set as an SQL list (statuses are fixed identifiers, never user input).
pub(crate) fn sql_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    format!("({})", names.into_iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "))
}

/// The non-final push statuses as an SQL list, derived from the transition table.
pub(crate) fn non_final_sql() -> &'static str {
    static LIST: LazyLock<String> = LazyLock::new(|| sql_list(PushStatus::non_final().iter().map(|s| s.as_str())));
    &LIST
}

/// The statuses `event` applies to, as an SQL list.
pub(crate) fn sources_sql(event: PushEvent) -> String {
    sql_list(PushStatus::sources_of(event).iter().map(|s| s.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_lists_come_from_the_table() {
        assert_eq!(non_final_sql(), "('PENDING', 'RUNNING', 'FAILED_RETRYING')");
        assert_eq!(sources_sql(PushEvent::Retry), "('FAILED_RETRYING', 'DEAD')");
        assert_eq!(sources_sql(PushEvent::Claim), "('PENDING', 'FAILED_RETRYING')");
    }
}
