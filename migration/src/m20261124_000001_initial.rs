use sea_orm_migration::prelude::*;

use crate::portable;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The whole data model. Amounts are integer micro-units (`BIGINT`), never NUMERIC or floating point.
const UP: &str = r#"
CREATE TABLE tenants (
    id {PK},
    external_id TEXT NOT NULL UNIQUE,
    created_at {TS} NOT NULL
);

CREATE TABLE cw_settings (
    tenant_id BIGINT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    site_url TEXT NOT NULL,
    company_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    private_key_enc TEXT,
    codebase TEXT NOT NULL,
    consumption_sync_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    ticket_board_id BIGINT NOT NULL,
    ticket_team_id BIGINT NOT NULL,
    ticket_status_id BIGINT NOT NULL,
    ticket_type_id BIGINT,
    ticket_subtype_id BIGINT,
    breaker_open BOOLEAN NOT NULL DEFAULT FALSE,
    breaker_reason TEXT,
    breaker_opened_at {TS},
    paused_until {TS},
    catalog_refreshed_at {TS},
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL
);

CREATE TABLE customers (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    external_id TEXT NOT NULL,
    account_name TEXT NOT NULL,
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL
);
CREATE UNIQUE INDEX uq_customers_external ON customers (tenant_id, external_id);
CREATE INDEX ix_customers_name ON customers (tenant_id, account_name, id);

CREATE TABLE licenses (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    product_module TEXT NOT NULL,
    edition TEXT NOT NULL,
    provisioned_on DATE NOT NULL,
    deprovisioned_on DATE,
    add_ons {JSON} NOT NULL
);
CREATE UNIQUE INDEX uq_licenses_module ON licenses (customer_id, product_module);

CREATE TABLE cw_companies (
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    identifier TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    refreshed_at {TS} NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ix_cw_companies_name ON cw_companies (tenant_id, name, id);

CREATE TABLE cw_agreements (
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    company_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    type_name TEXT,
    status TEXT NOT NULL,
    cancelled_flag BOOLEAN NOT NULL DEFAULT FALSE,
    start_date DATE,
    end_date DATE,
    next_invoice_date DATE,
    refreshed_at {TS} NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ix_cw_agreements_company ON cw_agreements (tenant_id, company_id);

CREATE TABLE cw_additions (
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    agreement_id BIGINT NOT NULL,
    sequence_number BIGINT NOT NULL,
    product_id BIGINT,
    product_identifier TEXT,
    description TEXT,
    quantity TEXT,
    effective_date DATE,
    cancelled_date DATE,
    refreshed_at {TS} NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ix_cw_additions_agreement ON cw_additions (tenant_id, agreement_id, sequence_number);

CREATE TABLE cw_boards (
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    name TEXT NOT NULL,
    inactive BOOLEAN NOT NULL DEFAULT FALSE,
    refreshed_at {TS} NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE cw_board_items (
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    board_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    id BIGINT NOT NULL,
    name TEXT NOT NULL,
    default_flag BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant_id, board_id, kind, id)
);

CREATE TABLE customer_mappings (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    cw_company_id BIGINT NOT NULL,
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL
);
CREATE UNIQUE INDEX uq_customer_mappings_customer ON customer_mappings (customer_id);
CREATE UNIQUE INDEX uq_customer_mappings_company ON customer_mappings (tenant_id, cw_company_id);

CREATE TABLE product_mappings (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    product_module TEXT NOT NULL,
    usage TEXT NOT NULL,
    interval_method TEXT NOT NULL,
    cw_agreement_id BIGINT NOT NULL,
    cw_sequence_number BIGINT NOT NULL,
    cw_addition_id BIGINT NOT NULL,
    cw_product_id BIGINT,
    cw_product_identifier TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    stale BOOLEAN NOT NULL DEFAULT FALSE,
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL
);
CREATE UNIQUE INDEX uq_product_mappings_addition ON product_mappings (tenant_id, cw_agreement_id, cw_addition_id);
CREATE UNIQUE INDEX uq_product_mappings_usage ON product_mappings (customer_id, product_module, usage);
CREATE INDEX ix_product_mappings_tenant ON product_mappings (tenant_id, id);

CREATE TABLE consumption_samples (
    tenant_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    product_module TEXT NOT NULL,
    usage TEXT NOT NULL,
    day DATE NOT NULL,
    value_micros BIGINT NOT NULL CHECK (value_micros >= 0),
    PRIMARY KEY (customer_id, product_module, usage, day)
);

CREATE TABLE sync_runs (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    period TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL DEFAULT FALSE,
    status TEXT NOT NULL,
    customer_ids {JSON},
    requested_by TEXT NOT NULL,
    started_at {TS} NOT NULL,
    aggregated_at {TS},
    finished_at {TS},
    error TEXT
);
CREATE UNIQUE INDEX uq_sync_runs_scheduled ON sync_runs (tenant_id, period) WHERE trigger = 'SCHEDULED';
CREATE UNIQUE INDEX uq_sync_runs_running ON sync_runs (tenant_id, period) WHERE status = 'RUNNING';
CREATE INDEX ix_sync_runs_tenant ON sync_runs (tenant_id, id);
CREATE INDEX ix_sync_runs_status ON sync_runs (status, started_at);

CREATE TABLE pushes (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    sync_run_id BIGINT NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    product_mapping_id BIGINT REFERENCES product_mappings(id) ON DELETE SET NULL,
    customer_id BIGINT NOT NULL,
    period TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL DEFAULT FALSE,
    product_module TEXT NOT NULL,
    usage TEXT NOT NULL,
    interval_method TEXT NOT NULL,
    cw_company_id BIGINT NOT NULL,
    cw_agreement_id BIGINT NOT NULL,
    cw_addition_id BIGINT NOT NULL,
    cw_sequence_number BIGINT NOT NULL,
    cw_product_id BIGINT,
    status TEXT NOT NULL,
    value_micros BIGINT,
    quantity BIGINT,
    sample_days INTEGER NOT NULL DEFAULT 0,
    fallback BOOLEAN NOT NULL DEFAULT FALSE,
    skip_reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_attempt_at {TS},
    last_error_code TEXT,
    last_error TEXT,
    last_http_status INTEGER,
    ticket_id BIGINT,
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL,
    finished_at {TS}
);
CREATE UNIQUE INDEX uq_pushes_run_mapping ON pushes (sync_run_id, product_mapping_id);
CREATE UNIQUE INDEX uq_pushes_in_flight ON pushes (tenant_id, cw_addition_id) WHERE status IN ('PENDING', 'RUNNING', 'FAILED_RETRYING');
CREATE INDEX ix_pushes_tenant ON pushes (tenant_id, id);
CREATE INDEX ix_pushes_run ON pushes (sync_run_id, status);
CREATE INDEX ix_pushes_mapping ON pushes (product_mapping_id, period, status);
CREATE INDEX ix_pushes_active ON pushes (status, updated_at) WHERE status IN ('PENDING', 'RUNNING', 'FAILED_RETRYING');

CREATE TABLE push_attempts (
    id {PK},
    push_id BIGINT NOT NULL REFERENCES pushes(id) ON DELETE CASCADE,
    tenant_id BIGINT NOT NULL,
    attempt_no INTEGER NOT NULL,
    step TEXT NOT NULL,
    started_at {TS} NOT NULL,
    duration_ms BIGINT NOT NULL,
    http_status INTEGER,
    request_id TEXT,
    quantity BIGINT,
    outcome TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT
);
CREATE INDEX ix_push_attempts_push ON push_attempts (push_id, id);

CREATE TABLE tickets (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    push_id BIGINT NOT NULL REFERENCES pushes(id) ON DELETE CASCADE,
    cw_ticket_id BIGINT,
    summary TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at {TS} NOT NULL,
    updated_at {TS} NOT NULL
);
CREATE UNIQUE INDEX uq_tickets_push ON tickets (push_id);

CREATE TABLE audit_log (
    id {PK},
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    at {TS} NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    before {JSON},
    after {JSON},
    detail {JSON}
);
CREATE INDEX ix_audit_log_tenant ON audit_log (tenant_id, id);
CREATE INDEX ix_audit_log_entity ON audit_log (tenant_id, entity_type, entity_id, id);

CREATE TABLE worker_heartbeats (
    worker_name TEXT PRIMARY KEY,
    started_at {TS} NOT NULL,
    last_seen_at {TS} NOT NULL
)
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS worker_heartbeats;
DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS tickets;
DROP TABLE IF EXISTS push_attempts;
DROP TABLE IF EXISTS pushes;
DROP TABLE IF EXISTS sync_runs;
DROP TABLE IF EXISTS consumption_samples;
DROP TABLE IF EXISTS product_mappings;
DROP TABLE IF EXISTS customer_mappings;
DROP TABLE IF EXISTS cw_board_items;
DROP TABLE IF EXISTS cw_boards;
DROP TABLE IF EXISTS cw_additions;
DROP TABLE IF EXISTS cw_agreements;
DROP TABLE IF EXISTS cw_companies;
DROP TABLE IF EXISTS licenses;
DROP TABLE IF EXISTS customers;
DROP TABLE IF EXISTS cw_settings;
DROP TABLE IF EXISTS tenants
"#;

pub(crate) async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let sql = portable::render(script, manager.get_database_backend());
    for statement in portable::statements(&sql) {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, DOWN).await
    }
}
