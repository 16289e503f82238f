//! Query and mutation resolvers: thin adapters from GraphQL to `sync_core::service`.
//! Every field carries a role guard; every service call is tenant-scoped by the principal.
use async_graphql::{
    Context, ID, InputObject, MergedObject, Object, SimpleObject,
    connection::{Connection, Edge},
};
use secrecy::SecretString;
use sync_core::{
    auth::Permission,
    pagination::{Page, page_size},
    service,
};

use super::{
    context::{Need, app, principal},
    enums::{Edition, IntervalMethod, ProductModule, UsageMetric},
    errors::OrGql,
    ids::{GlobalId, NodeType},
    limits::{COST_CONNECTWISE, COST_DB_READ, COST_WRITE},
    loaders::{CustomerPrefetch, load_err, loaders},
    scalars::Date,
    types::*,
};

pub(crate) fn connection<T, U>(page: Page<T>, wrap: impl Fn(T) -> U) -> Connection<String, U>
where
    U: async_graphql::OutputType,
{
    let mut c = Connection::new(false, page.has_next_page);
    c.edges.extend(page.items.into_iter().map(|(cursor, item)| Edge::new(cursor, wrap(item))));
    c
}

/// List fields cost `first` times their selection (docs/graphql.md).
pub(crate) fn list_cost(first: Option<i32>, child: usize) -> usize {
    (first.unwrap_or(50).clamp(0, 100) as usize).max(1).saturating_mul(child)
}

// ---------------------------------------------------------------- queries

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// Who the token says you are.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Principal> {
        let p = principal(ctx)?;
        Ok(Principal { sub: p.sub.clone(), tenant_id: p.tenant_key.clone(), roles: p.roles.clone() })
    }

    /// `null` until configured; never the private key.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + child_complexity")]
    async fn connect_wise_settings(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ConnectWiseSettings>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(service::settings::get(&a.db, p.tenant_id).await.gql()?.map(ConnectWiseSettings))
    }

    /// The usage metrics a module allows.
    async fn usage_options(&self, product_module: ProductModule) -> Vec<UsageMetric> {
        domain::ProductModule::from(product_module).usage_metrics().iter().map(|u| (*u).into()).collect()
    }

    /// The interval methods a module allows (`SUM` only for Enterprise Workloads).
    async fn interval_options(&self, product_module: ProductModule) -> Vec<IntervalMethod> {
        domain::ProductModule::from(product_module).interval_methods().iter().map(|m| (*m).into()).collect()
    }

    /// Audit entries, newest first.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + list_cost(first, child_complexity)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        entity_type: Option<String>,
        entity_id: Option<ID>,
        action: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuditEntry>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let limit = page_size(first).gql()?;
        let Some(f) = audit_filter(entity_type, entity_id, action) else {
            return Ok(Connection::new(false, false));
        };
        let page = service::history::audit_log(&a.db, p.tenant_id, limit, after.as_deref(), &f).await.gql()?;
        Ok(connection(page, AuditEntry))
    }
}

/// The audit log's filter for `auditLog(entityType, entityId, action)`, or `None` when it can match
/// nothing. `entityId` takes what `AuditEntry.entityId` shows: the global id of one of our entities
/// (it names the entity type too), or the audit log's own key of an entity without one (settings,
/// consumption). A plain table key of an entity that has a global id matches nothing.
fn audit_filter(entity_type: Option<String>, entity_id: Option<ID>, action: Option<String>) -> Option<service::history::AuditFilter> {
    let mut f = service::history::AuditFilter { entity_type, action, ..Default::default() };
    let Some(id) = entity_id else { return Some(f) };
    match GlobalId::parse(&id) {
        Some(g) => {
            let audited = g.node_type.audit_entity_type()?;
            if f.entity_type.as_deref().is_some_and(|t| t != audited) {
                return None;
            }
            f.entity_type = Some(audited.to_string());
            f.entity_id = Some(g.key.to_string());
        }
        None => {
            f.entity_id = Some(id.0);
            f.exclude_entity_types = NodeType::ALL.iter().filter_map(|t| t.audit_entity_type()).map(str::to_string).collect();
        }
    }
    Some(f)
}

#[derive(Default)]
pub struct CustomerQuery;

#[Object]
impl CustomerQuery {
    /// Customers ordered by account name.
    #[graphql(guard = "Need(Permission::ReadCustomers)", complexity = "COST_DB_READ + list_cost(first, child_complexity)")]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
        mapped: Option<bool>,
    ) -> async_graphql::Result<Connection<String, Customer>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let limit = page_size(first).gql()?;
        let page =
            service::customers::list_customers(&a.db, p.tenant_id, limit, after.as_deref(), search.as_deref(), mapped).await.gql()?;
        // Read ahead what the selection asks of the page's customers: one query per relation.
        let node = ctx.look_ahead().field("edges").field("node");
        let mappings = node.field("productMappings");
        let what = CustomerPrefetch {
            licenses: node.field("licenses").exists() || node.field("addOns").exists() || mappings.field("edition").exists(),
            mappings: mappings.exists(),
            last_push: mappings.field("lastPush").exists(),
        };
        let ids: Vec<i64> = page.items.iter().map(|(_, c)| c.id).collect();
        loaders(ctx)?.prefetch_customers(&ids, what).await.map_err(load_err)?;
        Ok(connection(page, Customer))
    }

    #[graphql(guard = "Need(Permission::ReadCustomers)", complexity = "COST_DB_READ + child_complexity")]
    async fn customer(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Customer>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let Some(id) = GlobalId::decode::<Customer>(&id) else { return Ok(None) };
        Ok(service::customers::get_customer(&a.db, p.tenant_id, id).await.gql()?.map(Customer))
    }

    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + child_complexity")]
    async fn product_mapping(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<ProductMapping>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let Some(id) = GlobalId::decode::<ProductMapping>(&id) else { return Ok(None) };
        Ok(service::mappings::get_mapping(&a.db, p.tenant_id, id).await.gql()?.map(ProductMapping))
    }
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// ConnectWise companies from the refreshed catalog, by name.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + list_cost(first, child_complexity)")]
    async fn cw_companies(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> async_graphql::Result<Connection<String, CwCompany>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let limit = page_size(first).gql()?;
        let page = service::catalog::list_companies(&a.db, p.tenant_id, limit, after.as_deref(), search.as_deref()).await.gql()?;
        Ok(connection(page, CwCompany))
    }

    /// A company's agreements with their additions.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + 20 * child_complexity")]
    async fn cw_agreements(&self, ctx: &Context<'_>, company_id: i64) -> async_graphql::Result<Vec<CwAgreement>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(service::catalog::agreements_of_company(&a.db, p.tenant_id, company_id).await.gql()?.into_iter().map(CwAgreement).collect())
    }

    /// Service boards with teams, statuses, types and subtypes.
    #[graphql(guard = "Need(Permission::Read)", complexity = "COST_DB_READ + 20 * child_complexity")]
    async fn cw_boards(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<CwBoard>> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(service::catalog::boards(&a.db, p.tenant_id).await.gql()?.into_iter().map(|(b, i)| CwBoard::new(b, i)).collect())
    }
}

#[derive(MergedObject, Default)]
pub struct Query(
    super::node::NodeQuery,
    AccountQuery,
    CustomerQuery,
    CatalogQuery,
    super::sync::SyncQuery,
    super::status::StatusQuery,
    super::review::ReviewQuery,
);

// ---------------------------------------------------------------- mutations

#[derive(InputObject)]
pub struct ConnectWiseSettingsInput {
    /// Scheme + host [+ port], e.g. `https://api-na.myconnectwise.net`.
    pub site_url: String,
    pub company_id: String,
    pub public_key: String,
    /// Omitted on update = keep the stored one.
    #[graphql(secret)]
    pub private_key: Option<String>,
    /// Omitted = discovered via `/login/companyinfo/{companyId}`.
    pub codebase: Option<String>,
    pub ticket_board_id: i64,
    pub ticket_team_id: i64,
    pub ticket_status_id: i64,
    pub ticket_type_id: Option<i64>,
    pub ticket_subtype_id: Option<i64>,
    /// Omitted = keep the current switch (off for a new configuration).
    pub consumption_sync_enabled: Option<bool>,
}

#[derive(SimpleObject)]
pub struct ConnectWiseSettingsPayload {
    pub settings: Option<ConnectWiseSettings>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject)]
pub struct ConnectionCheck {
    pub name: String,
    pub ok: bool,
    pub message: String,
}

#[derive(SimpleObject)]
pub struct ConnectionTestPayload {
    pub ok: bool,
    pub checks: Vec<ConnectionCheck>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct LicenseInput {
    pub product_module: ProductModule,
    pub edition: Edition,
    pub provisioned_on: Date,
    pub deprovisioned_on: Option<Date>,
    pub add_ons: Option<Vec<String>>,
}

#[derive(InputObject)]
pub struct CustomerInput {
    pub external_id: String,
    pub account_name: String,
    pub licenses: Vec<LicenseInput>,
}

#[derive(SimpleObject)]
pub struct UpsertCustomersPayload {
    pub customers: Vec<Customer>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject)]
pub struct CustomerMappingPayload {
    pub customer: Option<Customer>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct ProductMappingInput {
    pub customer_id: ID,
    pub product_module: ProductModule,
    pub usage: UsageMetric,
    pub interval: IntervalMethod,
    pub cw_agreement_id: i64,
    pub cw_sequence_number: i64,
}

impl From<ProductMappingInput> for service::mappings::MappingInput {
    fn from(i: ProductMappingInput) -> Self {
        service::mappings::MappingInput {
            customer_id: GlobalId::service_key::<Customer>(&i.customer_id),
            product_module: i.product_module.into(),
            usage: i.usage.into(),
            interval: i.interval.into(),
            cw_agreement_id: i.cw_agreement_id,
            cw_sequence_number: i.cw_sequence_number,
        }
    }
}

#[derive(SimpleObject)]
pub struct ProductMappingPayload {
    pub product_mapping: Option<ProductMapping>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject)]
pub struct DeleteProductMappingPayload {
    pub deleted_id: Option<ID>,
    pub user_errors: Vec<UserError>,
}

#[derive(SimpleObject)]
pub struct SaveProductMappingsPayload {
    pub product_mappings: Vec<ProductMapping>,
    pub user_errors: Vec<UserError>,
}

const MAX_INPUT_LIST: usize = 1000;

fn too_many(what: &str, n: usize) -> async_graphql::Error {
    super::errors::bad_input(format!("{what}: at most {MAX_INPUT_LIST} entries, got {n}"))
}

#[derive(Default)]
pub struct SettingsMutation;

#[Object]
impl SettingsMutation {
    /// Save the ConnectWise connection (admin). The private key is encrypted at rest and write-only.
    #[graphql(guard = "Need(Permission::Administer)", complexity = "COST_CONNECTWISE + child_complexity")]
    async fn configure_connect_wise(
        &self,
        ctx: &Context<'_>,
        input: ConnectWiseSettingsInput,
    ) -> async_graphql::Result<ConnectWiseSettingsPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        let input = service::settings::SettingsInput {
            site_url: input.site_url,
            company_id: input.company_id,
            public_key: input.public_key,
            private_key: input.private_key.map(SecretString::from),
            codebase: input.codebase,
            ticket_board_id: input.ticket_board_id,
            ticket_team_id: input.ticket_team_id,
            ticket_status_id: input.ticket_status_id,
            ticket_type_id: input.ticket_type_id,
            ticket_subtype_id: input.ticket_subtype_id,
            consumption_sync_enabled: input.consumption_sync_enabled,
        };
        Ok(match service::settings::configure(&a.db, &a.cw_access(), p, input, a.clock.now()).await.gql()? {
            Ok(s) => ConnectWiseSettingsPayload { settings: Some(ConnectWiseSettings(s)), user_errors: vec![] },
            Err(e) => ConnectWiseSettingsPayload { settings: None, user_errors: user_errors(e) },
        })
    }

    /// Check the credentials and that the ticket board, team, status, type and subtype exist together.
    #[graphql(guard = "Need(Permission::Administer)", complexity = "COST_CONNECTWISE + child_complexity")]
    async fn test_connect_wise_connection(&self, ctx: &Context<'_>) -> async_graphql::Result<ConnectionTestPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(match service::settings::test_connection(&a.db, &a.cw_access(), p, a.clock.now()).await.gql()? {
            Ok(checks) => ConnectionTestPayload {
                ok: checks.iter().all(|c| c.ok),
                checks: checks.into_iter().map(|c| ConnectionCheck { name: c.name, ok: c.ok, message: c.message }).collect(),
                user_errors: vec![],
            },
            Err(e) => ConnectionTestPayload { ok: false, checks: vec![], user_errors: user_errors(e) },
        })
    }

    /// Switch consumption sync on or off (admin).
    #[graphql(guard = "Need(Permission::Administer)", complexity = "COST_WRITE + child_complexity")]
    async fn set_consumption_sync(&self, ctx: &Context<'_>, enabled: bool) -> async_graphql::Result<ConnectWiseSettingsPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(match service::settings::set_consumption_sync(&a.db, p, enabled, a.clock.now()).await.gql()? {
            Ok(s) => ConnectWiseSettingsPayload { settings: Some(ConnectWiseSettings(s)), user_errors: vec![] },
            Err(e) => ConnectWiseSettingsPayload { settings: None, user_errors: user_errors(e) },
        })
    }
}

#[derive(Default)]
pub struct CustomerMutation;

#[Object]
impl CustomerMutation {
    /// Create or update customers by `externalId`; each one's licenses are replaced by the given ones.
    #[graphql(guard = "Need(Permission::Ingest)", complexity = "COST_WRITE + child_complexity")]
    async fn upsert_customers(&self, ctx: &Context<'_>, input: Vec<CustomerInput>) -> async_graphql::Result<UpsertCustomersPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        if input.len() > MAX_INPUT_LIST {
            return Err(too_many("input", input.len()));
        }
        let input = input
            .into_iter()
            .map(|c| service::customers::CustomerInput {
                external_id: c.external_id,
                account_name: c.account_name,
                licenses: c
                    .licenses
                    .into_iter()
                    .map(|l| service::customers::LicenseInput {
                        product_module: l.product_module.into(),
                        edition: l.edition.into(),
                        provisioned_on: l.provisioned_on.0,
                        deprovisioned_on: l.deprovisioned_on.map(|d| d.0),
                        add_ons: l.add_ons.unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        Ok(match service::customers::upsert_customers(&a.db, p, input, a.clock.now()).await.gql()? {
            Ok(v) => UpsertCustomersPayload { customers: v.into_iter().map(Customer).collect(), user_errors: vec![] },
            Err(e) => UpsertCustomersPayload { customers: vec![], user_errors: user_errors(e) },
        })
    }

    /// Map a customer to an Active ConnectWise company (one-to-one).
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn map_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        cw_company_id: i64,
        unmap_products: Option<bool>,
    ) -> async_graphql::Result<CustomerMappingPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(customer_payload(
            service::customers::map_customer(
                &a.db,
                p,
                &GlobalId::service_key::<Customer>(&customer_id),
                cw_company_id,
                unmap_products.unwrap_or(false),
                a.clock.now(),
            )
            .await
            .gql()?,
        ))
    }

    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn unmap_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        unmap_products: Option<bool>,
    ) -> async_graphql::Result<CustomerMappingPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(customer_payload(
            service::customers::unmap_customer(
                &a.db,
                p,
                &GlobalId::service_key::<Customer>(&customer_id),
                unmap_products.unwrap_or(false),
                a.clock.now(),
            )
            .await
            .gql()?,
        ))
    }
}

fn customer_payload(r: sync_core::error::Outcome<entity::customer::Model>) -> CustomerMappingPayload {
    match r {
        Ok(c) => CustomerMappingPayload { customer: Some(Customer(c)), user_errors: vec![] },
        Err(e) => CustomerMappingPayload { customer: None, user_errors: user_errors(e) },
    }
}

fn mapping_payload(r: sync_core::error::Outcome<entity::product_mapping::Model>) -> ProductMappingPayload {
    match r {
        Ok(m) => ProductMappingPayload { product_mapping: Some(ProductMapping(m)), user_errors: vec![] },
        Err(e) => ProductMappingPayload { product_mapping: None, user_errors: user_errors(e) },
    }
}

#[derive(Default)]
pub struct MappingMutation;

#[Object]
impl MappingMutation {
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn create_product_mapping(&self, ctx: &Context<'_>, input: ProductMappingInput) -> async_graphql::Result<ProductMappingPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(mapping_payload(service::mappings::create_product_mapping(&a.db, p, input.into(), a.clock.now()).await.gql()?))
    }

    /// Update with optimistic concurrency: `expectedVersion` must be the current version.
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn update_product_mapping(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: ProductMappingInput,
        expected_version: i32,
    ) -> async_graphql::Result<ProductMappingPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(mapping_payload(
            service::mappings::update_product_mapping(
                &a.db,
                p,
                &GlobalId::service_key::<ProductMapping>(&id),
                input.into(),
                expected_version,
                a.clock.now(),
            )
            .await
            .gql()?,
        ))
    }

    /// Delete a mapping; its pending pushes are cancelled.
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn delete_product_mapping(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<DeleteProductMappingPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        Ok(
            match service::mappings::delete_product_mapping(&a.db, p, &GlobalId::service_key::<ProductMapping>(&id), a.clock.now())
                .await
                .gql()?
            {
                Ok(id) => DeleteProductMappingPayload { deleted_id: Some(GlobalId::of::<ProductMapping>(id)), user_errors: vec![] },
                Err(e) => DeleteProductMappingPayload { deleted_id: None, user_errors: user_errors(e) },
            },
        )
    }

    /// Atomically replace all of a customer's mappings: all valid or nothing written.
    #[graphql(guard = "Need(Permission::Operate)", complexity = "COST_WRITE + child_complexity")]
    async fn save_product_mappings(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        mappings: Vec<ProductMappingInput>,
    ) -> async_graphql::Result<SaveProductMappingsPayload> {
        let (a, p) = (app(ctx)?, principal(ctx)?);
        if mappings.len() > MAX_INPUT_LIST {
            return Err(too_many("mappings", mappings.len()));
        }
        let inputs = mappings.into_iter().map(Into::into).collect();
        Ok(
            match service::mappings::save_product_mappings(
                &a.db,
                p,
                &GlobalId::service_key::<Customer>(&customer_id),
                inputs,
                a.clock.now(),
            )
            .await
            .gql()?
            {
                Ok(v) => SaveProductMappingsPayload { product_mappings: v.into_iter().map(ProductMapping).collect(), user_errors: vec![] },
                Err(e) => SaveProductMappingsPayload { product_mappings: vec![], user_errors: user_errors(e) },
            },
        )
    }
}

#[derive(MergedObject, Default)]
pub struct Mutation(SettingsMutation, CustomerMutation, MappingMutation, super::sync::SyncMutation);
