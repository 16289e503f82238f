//! Reads of the history: runs, pushes, attempts and the audit log.
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, sea_query::Query};

use crate::{
    error::ServiceResult,
    pagination::{Page, decode_cursor, encode_cursor},
};
use entity::{audit_entry, push};

/// The latest non-dry-run push of each mapping.
pub async fn last_pushes(db: &DatabaseConnection, tenant_id: i64, mapping_ids: &[i64]) -> ServiceResult<Vec<push::Model>> {
    let latest = Query::select()
        .expr(push::Column::Id.max())
        .from(push::Entity)
        .and_where(push::Column::TenantId.eq(tenant_id))
        .and_where(push::Column::ProductMappingId.is_in(mapping_ids.to_vec()))
        .and_where(push::Column::DryRun.eq(false))
        .group_by_col(push::Column::ProductMappingId)
        .to_owned();
    Ok(push::Entity::find().filter(push::Column::Id.in_subquery(latest)).all(db).await?)
}

/// Filters of the audit log.
#[derive(Default, Clone, Debug)]
pub struct AuditFilter {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// Entity types left out (the API leaves out those whose entries are found by global id).
    pub exclude_entity_types: Vec<String>,
    pub action: Option<String>,
}

/// Audit entries, newest first.
pub async fn audit_log(
    db: &DatabaseConnection,
    tenant_id: i64,
    limit: u64,
    after: Option<&str>,
    f: &AuditFilter,
) -> ServiceResult<Page<audit_entry::Model>> {
    let mut q = audit_entry::Entity::find().filter(audit_entry::Column::TenantId.eq(tenant_id));
    if let Some(t) = &f.entity_type {
        q = q.filter(audit_entry::Column::EntityType.eq(t.clone()));
    }
    if let Some(id) = &f.entity_id {
        q = q.filter(audit_entry::Column::EntityId.eq(id.clone()));
    }
    if !f.exclude_entity_types.is_empty() {
        q = q.filter(audit_entry::Column::EntityType.is_not_in(f.exclude_entity_types.clone()));
    }
    if let Some(a) = &f.action {
        q = q.filter(audit_entry::Column::Action.eq(a.clone()));
    }
    if let Some(a) = after {
        let id: i64 = decode_cursor(a)?;
        q = q.filter(audit_entry::Column::Id.lt(id));
    }
    let rows = q.order_by(audit_entry::Column::Id, Order::Desc).limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows, limit, |e| encode_cursor(&e.id)))
}

use std::collections::HashMap;

use entity::{push_attempt, sync_run};
use sea_orm::{DbBackend, FromQueryResult, Statement};

/// Filters of the run list.
#[derive(Default, Clone, Debug)]
pub struct RunFilter {
    pub status: Option<domain::SyncRunStatus>,
}

/// Runs, newest first.
pub async fn list_runs(
    db: &DatabaseConnection,
    tenant_id: i64,
    limit: u64,
    after: Option<&str>,
    f: &RunFilter,
) -> ServiceResult<Page<sync_run::Model>> {
    let mut q = sync_run::Entity::find().filter(sync_run::Column::TenantId.eq(tenant_id));
    if let Some(s) = f.status {
        q = q.filter(sync_run::Column::Status.eq(s.as_str()));
    }
    if let Some(a) = after {
        let id: i64 = decode_cursor(a)?;
        q = q.filter(sync_run::Column::Id.lt(id));
    }
    let rows = q.order_by(sync_run::Column::Id, Order::Desc).limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows, limit, |r| encode_cursor(&r.id)))
}

pub async fn get_run(db: &DatabaseConnection, tenant_id: i64, id: i64) -> ServiceResult<Option<sync_run::Model>> {
    Ok(sync_run::Entity::find_by_id(id).filter(sync_run::Column::TenantId.eq(tenant_id)).one(db).await?)
}

pub async fn runs_by_ids(db: &DatabaseConnection, tenant_id: i64, ids: &[i64]) -> ServiceResult<Vec<sync_run::Model>> {
    Ok(sync_run::Entity::find()
        .filter(sync_run::Column::TenantId.eq(tenant_id))
        .filter(sync_run::Column::Id.is_in(ids.to_vec()))
        .all(db)
        .await?)
}

/// Pushes by id (for DataLoaders), tenant-scoped.
pub async fn pushes_by_ids(db: &DatabaseConnection, tenant_id: i64, ids: &[i64]) -> ServiceResult<Vec<push::Model>> {
    Ok(push::Entity::find().filter(push::Column::TenantId.eq(tenant_id)).filter(push::Column::Id.is_in(ids.to_vec())).all(db).await?)
}

/// Audit entries by id (for DataLoaders), tenant-scoped.
pub async fn audit_entries_by_ids(db: &DatabaseConnection, tenant_id: i64, ids: &[i64]) -> ServiceResult<Vec<audit_entry::Model>> {
    Ok(audit_entry::Entity::find()
        .filter(audit_entry::Column::TenantId.eq(tenant_id))
        .filter(audit_entry::Column::Id.is_in(ids.to_vec()))
        .all(db)
        .await?)
}

/// Filters of the push list.
#[derive(Default, Clone, Debug)]
pub struct PushFilter {
    pub status: Option<domain::PushStatus>,
    pub period: Option<domain::Period>,
    pub customer_id: Option<i64>,
    pub sync_run_id: Option<i64>,
}

/// Pushes, newest first.
pub async fn list_pushes(
    db: &DatabaseConnection,
    tenant_id: i64,
    limit: u64,
    after: Option<&str>,
    f: &PushFilter,
) -> ServiceResult<Page<push::Model>> {
    let mut q = push::Entity::find().filter(push::Column::TenantId.eq(tenant_id));
    if let Some(s) = f.status {
        q = q.filter(push::Column::Status.eq(s.as_str()));
    }
    if let Some(p) = f.period {
        q = q.filter(push::Column::Period.eq(p.to_string()));
    }
    if let Some(c) = f.customer_id {
        q = q.filter(push::Column::CustomerId.eq(c));
    }
    if let Some(r) = f.sync_run_id {
        q = q.filter(push::Column::SyncRunId.eq(r));
    }
    if let Some(a) = after {
        let id: i64 = decode_cursor(a)?;
        q = q.filter(push::Column::Id.lt(id));
    }
    let rows = q.order_by(push::Column::Id, Order::Desc).limit(limit + 1).all(db).await?;
    Ok(Page::from_rows(rows, limit, |p| encode_cursor(&p.id)))
}

pub async fn get_push(db: &DatabaseConnection, tenant_id: i64, id: i64) -> ServiceResult<Option<push::Model>> {
    Ok(push::Entity::find_by_id(id).filter(push::Column::TenantId.eq(tenant_id)).one(db).await?)
}

/// Attempts of many pushes, oldest first.
pub async fn attempts_of(db: &DatabaseConnection, tenant_id: i64, push_ids: &[i64]) -> ServiceResult<Vec<push_attempt::Model>> {
    Ok(push_attempt::Entity::find()
        .filter(push_attempt::Column::TenantId.eq(tenant_id))
        .filter(push_attempt::Column::PushId.is_in(push_ids.to_vec()))
        .order_by_asc(push_attempt::Column::Id)
        .all(db)
        .await?)
}

/// Push counts per status of many runs: run id → status → count.
pub async fn run_status_counts(
    db: &DatabaseConnection,
    tenant_id: i64,
    run_ids: &[i64],
) -> ServiceResult<HashMap<i64, HashMap<String, i64>>> {
    #[derive(FromQueryResult)]
    struct Row {
        sync_run_id: i64,
        status: String,
        n: i64,
    }
    if run_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let backend = db.get_database_backend();
    let list = run_ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let placeholder = if backend == DbBackend::Postgres { "$1" } else { "?" };
    let sql = format!(
        "SELECT sync_run_id, status, COUNT(*) AS n FROM pushes WHERE tenant_id = {placeholder} AND sync_run_id IN ({list}) GROUP BY sync_run_id, status"
    );
    let rows = Row::find_by_statement(Statement::from_sql_and_values(backend, sql, [tenant_id.into()])).all(db).await?;
    let mut out: HashMap<i64, HashMap<String, i64>> = HashMap::new();
    for r in rows {
        out.entry(r.sync_run_id).or_default().insert(r.status, r.n);
    }
    Ok(out)
}
