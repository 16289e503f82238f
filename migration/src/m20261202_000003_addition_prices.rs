use sea_orm_migration::prelude::*;

use crate::m20261124_000001_initial::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The billing review shows what ConnectWise will bill for each addition: its `unitPrice` and
/// `lessIncluded`, kept by the catalog refresh exactly as ConnectWise wrote them (JSON number text,
/// never rounded through a float; NULL when ConnectWise sent `null`).
const UP: &str = r#"
ALTER TABLE cw_additions ADD COLUMN unit_price TEXT;
ALTER TABLE cw_additions ADD COLUMN less_included TEXT
"#;

const DOWN: &str = r#"
ALTER TABLE cw_additions DROP COLUMN less_included;
ALTER TABLE cw_additions DROP COLUMN unit_price
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
