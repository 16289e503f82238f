//! Errors of the use cases: user errors (expected, coded, shown in mutation payloads) and service
//! errors (bugs and outages: logged with their cause chain, shown to clients only as a code).
use sea_orm::DbErr;
use serde::Serialize;

/// A rejected input: a stable machine `code`, the input path it concerns, a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserError {
    pub code: String,
    pub field: Option<Vec<String>>,
    pub message: String,
}

impl UserError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_string(), field: None, message: message.into() }
    }

    /// Attach the input path, e.g. `["input", "usage"]` or `["mappings", "2", "usage"]`.
    pub fn at<I, S>(mut self, path: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.field = Some(path.into_iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(domain::codes::NOT_FOUND, format!("{what} not found"))
    }
}

/// What can go wrong beyond the user's input.
#[derive(thiserror::Error)]
pub enum ServiceError {
    /// The principal lacks the role (mapped to `FORBIDDEN`).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Bad arguments that are not a business rule (mapped to `BAD_USER_INPUT`).
    #[error("{0}")]
    BadInput(String),
    #[error("database error")]
    Db(#[from] DbErr),
    #[error("{0}")]
    Internal(String),
}

impl std::fmt::Debug for ServiceError {
    // Print the whole cause chain (zero2prod's `error_chain_fmt`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{self}")?;
        let mut current = std::error::Error::source(self);
        while let Some(cause) = current {
            writeln!(f, "Caused by:\n\t{cause}")?;
            current = cause.source();
        }
        Ok(())
    }
}

impl ServiceError {
    /// Stable machine code for `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Forbidden(_) => "FORBIDDEN",
            ServiceError::BadInput(_) => "BAD_USER_INPUT",
            ServiceError::Db(_) | ServiceError::Internal(_) => "INTERNAL",
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// The outcome of a mutation: the value, or the user errors that stopped it (nothing written).
pub type Outcome<T> = Result<T, Vec<UserError>>;

/// Which unique index a database error violated, if any (PostgreSQL names the index; SQLite names the
/// columns, so each index is recognised by either).
pub fn unique_violation(err: &DbErr) -> Option<UniqueIndex> {
    let text = err.to_string();
    if !(text.contains("duplicate key") || text.contains("UNIQUE constraint failed")) {
        return None;
    }
    UniqueIndex::ALL.into_iter().find(|idx| text.contains(idx.name()) || text.contains(idx.sqlite_columns()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UniqueIndex {
    ProductMappingAddition,
    ProductMappingUsage,
    CustomerMappingCompany,
    CustomerMappingCustomer,
    SyncRunScheduled,
    SyncRunRunning,
    PushInFlight,
    TicketPush,
}

impl UniqueIndex {
    const ALL: [UniqueIndex; 8] = [
        UniqueIndex::ProductMappingAddition,
        UniqueIndex::ProductMappingUsage,
        UniqueIndex::CustomerMappingCompany,
        UniqueIndex::CustomerMappingCustomer,
        UniqueIndex::SyncRunScheduled,
        UniqueIndex::SyncRunRunning,
        UniqueIndex::PushInFlight,
        UniqueIndex::TicketPush,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UniqueIndex::ProductMappingAddition => "uq_product_mappings_addition",
            UniqueIndex::ProductMappingUsage => "uq_product_mappings_usage",
            UniqueIndex::CustomerMappingCompany => "uq_customer_mappings_company",
            UniqueIndex::CustomerMappingCustomer => "uq_customer_mappings_customer",
            UniqueIndex::SyncRunScheduled => "uq_sync_runs_scheduled",
            UniqueIndex::SyncRunRunning => "uq_sync_runs_running",
            UniqueIndex::PushInFlight => "uq_pushes_in_flight",
            UniqueIndex::TicketPush => "uq_tickets_push",
        }
    }

    fn sqlite_columns(self) -> &'static str {
        match self {
            UniqueIndex::ProductMappingAddition => "product_mappings.tenant_id, product_mappings.cw_agreement_id",
            UniqueIndex::ProductMappingUsage => "product_mappings.customer_id, product_mappings.product_module",
            UniqueIndex::CustomerMappingCompany => "customer_mappings.tenant_id, customer_mappings.cw_company_id",
            UniqueIndex::CustomerMappingCustomer => "customer_mappings.customer_id",
            // Both partial indexes of sync_runs cover the same columns; SQLite cannot tell them apart.
            UniqueIndex::SyncRunScheduled | UniqueIndex::SyncRunRunning => "sync_runs.tenant_id, sync_runs.period",
            UniqueIndex::PushInFlight => "pushes.tenant_id, pushes.cw_addition_id",
            UniqueIndex::TicketPush => "tickets.push_id",
        }
    }
}
