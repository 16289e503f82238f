//! Per-request DataLoaders, scoped to the principal's tenant, so nested lists cost one query per
//! level instead of one per parent (no N+1).
use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::DatabaseConnection;

use entity::{customer, cw_addition, cw_agreement, cw_company, license, product_mapping, push, push_attempt, sync_run};
use sync_core::service;

type LoadResult<V> = Result<HashMap<i64, V>, Arc<sync_core::ServiceError>>;

macro_rules! loader {
    ($name:ident, $value:ty, |$db:ident, $tenant:ident, $keys:ident| $body:expr) => {
        pub struct $name {
            db: DatabaseConnection,
            tenant_id: i64,
        }
        impl Loader<i64> for $name {
            type Value = $value;
            type Error = Arc<sync_core::ServiceError>;
            async fn load(&self, $keys: &[i64]) -> LoadResult<$value> {
                let ($db, $tenant) = (&self.db, self.tenant_id);
                $body.map_err(Arc::new)
            }
        }
    };
}

fn group<T>(rows: Vec<T>, key: impl Fn(&T) -> i64) -> HashMap<i64, Vec<T>> {
    let mut m: HashMap<i64, Vec<T>> = HashMap::new();
    for r in rows {
        m.entry(key(&r)).or_default().push(r);
    }
    m
}

loader!(CustomerLoader, customer::Model, |db, t, keys| service::customers::customers_by_ids(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|c| (c.id, c)).collect()));
loader!(LicensesLoader, Vec<license::Model>, |db, t, keys| service::customers::licenses_of(db, t, keys)
    .await
    .map(|v| group(v, |l| l.customer_id)));
loader!(CustomerCompanyLoader, (i64, Option<cw_company::Model>), |db, t, keys| service::customers::companies_of(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|(m, c)| (m.customer_id, (m.cw_company_id, c))).collect()));
loader!(MappingsOfCustomerLoader, Vec<product_mapping::Model>, |db, t, keys| service::mappings::mappings_of_customers(db, t, keys)
    .await
    .map(|v| group(v, |m| m.customer_id)));
loader!(MappingLoader, product_mapping::Model, |db, t, keys| service::mappings::mappings_by_ids(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|m| (m.id, m)).collect()));
loader!(AgreementLoader, cw_agreement::Model, |db, t, keys| service::catalog::agreements_by_ids(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|a| (a.id, a)).collect()));
loader!(AdditionsLoader, Vec<cw_addition::Model>, |db, t, keys| service::catalog::additions_of_agreements(db, t, keys)
    .await
    .map(|v| group(v, |a| a.agreement_id)));
loader!(CompanyLoader, cw_company::Model, |db, t, keys| service::catalog::companies_by_ids(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|c| (c.id, c)).collect()));
loader!(LastPushLoader, push::Model, |db, t, keys| service::history::last_pushes(db, t, keys)
    .await
    .map(|v| v.into_iter().filter_map(|p| p.product_mapping_id.map(|m| (m, p))).collect()));

loader!(RunLoader, sync_run::Model, |db, t, keys| service::history::runs_by_ids(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|r| (r.id, r)).collect()));
loader!(AttemptsLoader, Vec<push_attempt::Model>, |db, t, keys| service::history::attempts_of(db, t, keys)
    .await
    .map(|v| group(v, |a| a.push_id)));
loader!(RunCountsLoader, HashMap<String, i64>, |db, t, keys| service::history::run_status_counts(db, t, keys).await);

/// All loaders of one request.
pub struct Loaders {
    pub customer: DataLoader<CustomerLoader>,
    pub licenses: DataLoader<LicensesLoader>,
    pub customer_company: DataLoader<CustomerCompanyLoader>,
    pub mappings_of_customer: DataLoader<MappingsOfCustomerLoader>,
    pub mapping: DataLoader<MappingLoader>,
    pub agreement: DataLoader<AgreementLoader>,
    pub additions: DataLoader<AdditionsLoader>,
    pub company: DataLoader<CompanyLoader>,
    pub last_push: DataLoader<LastPushLoader>,
    pub run: DataLoader<RunLoader>,
    pub attempts: DataLoader<AttemptsLoader>,
    pub run_counts: DataLoader<RunCountsLoader>,
}

impl Loaders {
    pub fn new(db: &DatabaseConnection, tenant_id: i64) -> Self {
        macro_rules! dl {
            ($t:ident) => {
                DataLoader::new($t { db: db.clone(), tenant_id }, tokio::spawn)
            };
        }
        Loaders {
            customer: dl!(CustomerLoader),
            licenses: dl!(LicensesLoader),
            customer_company: dl!(CustomerCompanyLoader),
            mappings_of_customer: dl!(MappingsOfCustomerLoader),
            mapping: dl!(MappingLoader),
            agreement: dl!(AgreementLoader),
            additions: dl!(AdditionsLoader),
            company: dl!(CompanyLoader),
            last_push: dl!(LastPushLoader),
            run: dl!(RunLoader),
            attempts: dl!(AttemptsLoader),
            run_counts: dl!(RunCountsLoader),
        }
    }
}

pub fn loaders<'a>(ctx: &async_graphql::Context<'a>) -> async_graphql::Result<&'a Loaders> {
    ctx.data::<Loaders>().map_err(|_| super::errors::internal("loaders missing from the request"))
}

/// Loader errors as GraphQL errors.
pub fn load_err(e: Arc<sync_core::ServiceError>) -> async_graphql::Error {
    super::errors::internal(format!("{e:?}"))
}
