use sea_orm_migration::prelude::*;

use crate::m20261124_000001_initial::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// One row per tenant while a catalog refresh is queued: `refreshConnectWiseCatalog` claims it
/// (an upsert that only a free or stale slot lets through) before enqueueing, and the job frees it
/// when it starts. A second request while one is queued returns the queued one instead of queueing
/// another job — one tenant cannot fill the catalog queue in front of the others.
const UP: &str = r#"
CREATE TABLE catalog_refresh_requests (
    tenant_id BIGINT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    requested_at {TS} NOT NULL,
    requested_by TEXT NOT NULL
)
"#;

const DOWN: &str = r#"
DROP TABLE catalog_refresh_requests
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
