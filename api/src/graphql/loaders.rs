//! Per-request DataLoaders, scoped to the principal's tenant, so nested lists cost one query per
//! level instead of one per parent (no N+1).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::DatabaseConnection;

use entity::{audit_entry, customer, cw_addition, cw_agreement, cw_company, license, product_mapping, push, push_attempt, sync_run};
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
loader!(PushLoader, push::Model, |db, t, keys| service::history::pushes_by_ids(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|p| (p.id, p)).collect()));
loader!(AuditEntryLoader, audit_entry::Model, |db, t, keys| service::history::audit_entries_by_ids(db, t, keys)
    .await
    .map(|v| v.into_iter().map(|e| (e.id, e)).collect()));
loader!(AttemptsLoader, Vec<push_attempt::Model>, |db, t, keys| service::history::attempts_of(db, t, keys)
    .await
    .map(|v| group(v, |a| a.push_id)));
loader!(WriteBlockerLoader, domain::CancelReason, |db, t, keys| sync_core::ledger::push::write_blockers(db, t, keys)
    .await
    .map_err(sync_core::ServiceError::from));
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
    pub push: DataLoader<PushLoader>,
    pub audit_entry: DataLoader<AuditEntryLoader>,
    pub attempts: DataLoader<AttemptsLoader>,
    pub run_counts: DataLoader<RunCountsLoader>,
    pub write_blocker: DataLoader<WriteBlockerLoader>,
    prefetched: Prefetched,
    db: DatabaseConnection,
    tenant_id: i64,
}

/// A poisoned lock only means another resolver panicked mid-insert (caught and reported as an
/// internal error); the map itself is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Rows read ahead for a whole page of customers (see [`Loaders::prefetch_customers`]), handed to
/// the field resolvers directly: no DataLoader round per field (a channel per key, a spawned batch
/// task, its 1 ms gathering wait), which cost more CPU than the rows themselves on a 50-customer page.
#[derive(Default)]
struct Prefetched {
    licenses: Mutex<HashMap<i64, Vec<license::Model>>>,
    mappings: Mutex<HashMap<i64, Vec<product_mapping::Model>>>,
    last_push: Mutex<HashMap<i64, Option<push::Model>>>,
}

/// What a page of customers should read ahead, from the query's selection.
#[derive(Clone, Copy, Debug, Default)]
pub struct CustomerPrefetch {
    pub licenses: bool,
    pub mappings: bool,
    pub last_push: bool,
}

impl Loaders {
    /// Read ahead, in one query per relation for the whole page, what the selection asks of these
    /// customers: licenses and product mappings together, then the mappings' last pushes. The
    /// statement count stays constant whatever the page size.
    pub async fn prefetch_customers(&self, customer_ids: &[i64], what: CustomerPrefetch) -> Result<(), Arc<sync_core::ServiceError>> {
        if customer_ids.is_empty() || !(what.licenses || what.mappings) {
            return Ok(());
        }
        let (db, t) = (&self.db, self.tenant_id);
        let licenses =
            async { if what.licenses { service::customers::licenses_of(db, t, customer_ids).await.map(Some) } else { Ok(None) } };
        let mappings =
            async { if what.mappings { service::mappings::mappings_of_customers(db, t, customer_ids).await.map(Some) } else { Ok(None) } };
        let (licenses, mappings) = futures::try_join!(licenses, mappings).map_err(Arc::new)?;
        if let Some(rows) = licenses {
            let mut by_customer = group(rows, |l| l.customer_id);
            let mut map = lock(&self.prefetched.licenses);
            for id in customer_ids {
                map.insert(*id, by_customer.remove(id).unwrap_or_default());
            }
        }
        let Some(rows) = mappings else { return Ok(()) };
        let mapping_ids: Vec<i64> = rows.iter().map(|m| m.id).collect();
        let mut by_customer = group(rows, |m| m.customer_id);
        {
            let mut map = lock(&self.prefetched.mappings);
            for id in customer_ids {
                map.insert(*id, by_customer.remove(id).unwrap_or_default());
            }
        }
        if what.last_push && !mapping_ids.is_empty() {
            let pushes = service::history::last_pushes(db, t, &mapping_ids).await.map_err(Arc::new)?;
            let mut by_mapping: HashMap<i64, push::Model> =
                pushes.into_iter().filter_map(|p| p.product_mapping_id.map(|m| (m, p))).collect();
            let mut map = lock(&self.prefetched.last_push);
            for id in mapping_ids {
                map.insert(id, by_mapping.remove(&id));
            }
        }
        Ok(())
    }

    /// The customer's licenses: read ahead with its page, else batched by the loader.
    pub async fn licenses_of(&self, customer_id: i64) -> Result<Vec<license::Model>, Arc<sync_core::ServiceError>> {
        // Cloned, not taken: `licenses`, `addOns` and each mapping's license read them.
        if let Some(v) = lock(&self.prefetched.licenses).get(&customer_id) {
            return Ok(v.clone());
        }
        Ok(self.licenses.load_one(customer_id).await?.unwrap_or_default())
    }

    /// The customer's product mappings: read ahead with its page, else batched by the loader.
    pub async fn mappings_of(&self, customer_id: i64) -> Result<Vec<product_mapping::Model>, Arc<sync_core::ServiceError>> {
        // Taken: one field reads them (an alias asking again goes to the loader).
        if let Some(v) = lock(&self.prefetched.mappings).remove(&customer_id) {
            return Ok(v);
        }
        Ok(self.mappings_of_customer.load_one(customer_id).await?.unwrap_or_default())
    }

    /// The mapping's last non-dry push: read ahead with its customers' page, else batched.
    pub async fn last_push_of(&self, mapping_id: i64) -> Result<Option<push::Model>, Arc<sync_core::ServiceError>> {
        if let Some(v) = lock(&self.prefetched.last_push).remove(&mapping_id) {
            return Ok(v);
        }
        self.last_push.load_one(mapping_id).await
    }

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
            push: dl!(PushLoader),
            audit_entry: dl!(AuditEntryLoader),
            attempts: dl!(AttemptsLoader),
            run_counts: dl!(RunCountsLoader),
            write_blocker: dl!(WriteBlockerLoader),
            prefetched: Prefetched::default(),
            db: db.clone(),
            tenant_id,
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
