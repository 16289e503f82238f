//! GraphQL enums mirroring the domain's, with the exact names of the GraphQL contract (docs/graphql.md).
use async_graphql::Enum;

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "domain::ProductModule")]
pub enum ProductModule {
    #[graphql(name = "ENTERPRISE_WORKLOADS")]
    EnterpriseWorkloads,
    #[graphql(name = "MICROSOFT_365")]
    Microsoft365,
    #[graphql(name = "ENDPOINTS")]
    Endpoints,
    #[graphql(name = "GOOGLE_WORKSPACE")]
    GoogleWorkspace,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "domain::Edition")]
pub enum Edition {
    #[graphql(name = "BUSINESS")]
    Business,
    #[graphql(name = "ENTERPRISE")]
    Enterprise,
    #[graphql(name = "ELITE")]
    Elite,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "domain::UsageMetric")]
pub enum UsageMetric {
    #[graphql(name = "CLOUD_STORAGE")]
    CloudStorage,
    #[graphql(name = "EARLY_DELETE_LTR_STORAGE")]
    EarlyDeleteLtrStorage,
    #[graphql(name = "LTR_STORAGE")]
    LtrStorage,
    #[graphql(name = "ACTIVE_USERS")]
    ActiveUsers,
    #[graphql(name = "PRESERVED_USERS")]
    PreservedUsers,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "domain::IntervalMethod")]
pub enum IntervalMethod {
    #[graphql(name = "AVERAGE")]
    Average,
    #[graphql(name = "MAXIMUM")]
    Maximum,
    #[graphql(name = "LAST_DAY")]
    LastDay,
    #[graphql(name = "SUM")]
    Sum,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "domain::PushStatus")]
pub enum PushStatus {
    #[graphql(name = "PENDING")]
    Pending,
    #[graphql(name = "RUNNING")]
    Running,
    #[graphql(name = "SUCCEEDED")]
    Succeeded,
    #[graphql(name = "FAILED_RETRYING")]
    FailedRetrying,
    #[graphql(name = "DEAD")]
    Dead,
    #[graphql(name = "SKIPPED")]
    Skipped,
    #[graphql(name = "CANCELLED")]
    Cancelled,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "domain::SyncRunStatus")]
pub enum SyncRunStatus {
    #[graphql(name = "RUNNING")]
    Running,
    #[graphql(name = "SUCCEEDED")]
    Succeeded,
    #[graphql(name = "PARTIALLY_FAILED")]
    PartiallyFailed,
    #[graphql(name = "FAILED")]
    Failed,
}

/// Parse a stored enum name; stored values are written by us, so a mismatch is a bug worth surfacing.
pub fn parse_stored<T: std::str::FromStr>(s: &str) -> async_graphql::Result<T> {
    s.parse::<T>().map_err(|_| crate::graphql::errors::internal(format!("unexpected stored value {s:?}")))
}
