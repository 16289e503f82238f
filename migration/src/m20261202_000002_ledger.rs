use sea_orm_migration::prelude::*;

use crate::m20261124_000001_initial::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The billing ledger (what ConnectWise holds is the truth, stale means stale, no lost tick):
/// - `pushes.input_version`: the mapping's input version the push's snapshot was computed from; a
///   success clears the mapping's `stale` flag only when no input changed after it.
/// - `pushes.held_quantity` / `drift_from_quantity`: what ConnectWise held when the attempt read the
///   addition, and — when that differed from the last quantity this service set on it — the drift.
/// - `pushes.cancel_reason`: why a push was withdrawn (`PUSH_SUPERSEDED`, `MAPPING_REMOVED`, …).
/// - `product_mappings.input_version`: bumped by every change of the mapping's inputs.
/// - `cw_settings.owed_scheduled_period`: a monthly tick that found a run of the period still
///   running; the sweep starts the scheduled run once that run has ended.
/// - `ix_pushes_addition`: "the newest push of this addition" and "the last quantity we set on it".
const UP: &str = r#"
ALTER TABLE pushes ADD COLUMN input_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pushes ADD COLUMN held_quantity BIGINT;
ALTER TABLE pushes ADD COLUMN drift_from_quantity BIGINT;
ALTER TABLE pushes ADD COLUMN cancel_reason TEXT;
ALTER TABLE product_mappings ADD COLUMN input_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cw_settings ADD COLUMN owed_scheduled_period TEXT;
CREATE INDEX ix_pushes_addition ON pushes (tenant_id, cw_addition_id, id)
"#;

const DOWN: &str = r#"
DROP INDEX ix_pushes_addition;
ALTER TABLE cw_settings DROP COLUMN owed_scheduled_period;
ALTER TABLE product_mappings DROP COLUMN input_version;
ALTER TABLE pushes DROP COLUMN cancel_reason;
ALTER TABLE pushes DROP COLUMN drift_from_quantity;
ALTER TABLE pushes DROP COLUMN held_quantity;
ALTER TABLE pushes DROP COLUMN input_version
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, DOWN).await
    }
}
