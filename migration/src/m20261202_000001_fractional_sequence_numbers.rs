use sea_orm_migration::prelude::*;

use crate::m20261124_000001_initial::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// ConnectWise's official schema declares an addition's `sequenceNumber` a double. A fractional one
/// (`2.5`) is kept here exactly as sent, next to its whole part in `sequence_number`, so that a
/// mapping naming it is refused with a clear message instead of the catalog refresh failing or the
/// value being rounded onto another addition's number. NULL when the sequence number is whole.
const UP: &str = r#"
ALTER TABLE cw_additions ADD COLUMN fractional_sequence_number TEXT
"#;

const DOWN: &str = r#"
ALTER TABLE cw_additions DROP COLUMN fractional_sequence_number
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
