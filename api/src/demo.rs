//! `api --demo`: a realistic demo tenant `demo`, loaded through the same use cases the GraphQL API
//! calls (`sync_core::service::*`), connected to a **sandbox ConnectWise** that runs in this process,
//! and the latest closed month pushed to it for real — so the dashboard shows every push state on
//! first start.
//!
//! - The sandbox is the fake ConnectWise of the tests (crate `fake-connectwise`) on a loopback port,
//!   reached as `http://connectwise-sandbox.localhost:PORT` with codebase `sandbox`. This process's
//!   ConnectWise client may reach exactly that origin ([`connectwise::SandboxOrigin`]); the outbound
//!   guard still refuses every other loopback or private address. Without `--demo` no sandbox runs
//!   and a stored sandbox URL is refused like any loopback address.
//! - ConnectWise settings: configured once to the sandbox with consumption sync on; a later start
//!   re-points them at the sandbox's new port. Once the user points them at another ConnectWise
//!   (`configureConnectWise`), the demo leaves the tenant alone: nothing is loaded and nothing runs.
//! - The sandbox holds the demo's catalog (companies, agreements, additions, the ticket board). It
//!   keeps its state in memory: each start rebuilds it from the demo data and the quantities the
//!   tenant's pushes set.
//! - The first start plays a month: a manual run for Coho Winery alone (its additions are set, and
//!   somebody then edits one of them by hand in the sandbox), then the tenant's monthly run of the
//!   latest closed month, started ahead of its tick: most pushes succeed, Northwind's cloud storage
//!   addition answers 503 twice and succeeds on the third attempt, Tailspin's Google Workspace
//!   addition has been deleted in ConnectWise (`DEAD`, and a ticket on the sandbox's board), Coho's
//!   hand-edited addition shows drift.
//! - A catalog snapshot in the cache tables (what a refresh would write), customers across all four
//!   modules and all three editions, product mappings using all four interval methods, and two
//!   months of daily consumption (deterministic, with a few missing days — among them month ends,
//!   so some `LAST_DAY` values fall back — and one license provisioned mid-month).
//!
//! Idempotent: settings are configured once, customers are upserted by external id, mappings are
//! saved with replace-all (unchanged ones keep id and version), samples are upserts, and the month
//! is played only once. `api demo --reset` deletes the demo tenant first.
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use domain::{Edition, IntervalMethod, Period, ProductModule, UsageMetric};
use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany, FakeConfig, FakeConnectWise, Fault, FaultRule};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    sea_query::OnConflict,
};
use secrecy::SecretString;
use sync_core::{
    ServiceError, Settings, UserError,
    auth::Principal,
    clock::Clock,
    crypto::SecretBox,
    jobs::JobQueue,
    service::{self, consumption::SampleInput, customers::CustomerInput, customers::LicenseInput, mappings::MappingInput},
};

use crate::embedded::DEV_TENANT;

/// The sandbox's host name: it says what it is wherever the site URL shows. The process's
/// ConnectWise client pins it to the sandbox's loopback address (no DNS lookup).
pub const SANDBOX_HOST: &str = "connectwise-sandbox.localhost";
/// The sandbox's codebase (also a label: a real site's is like `v2025_1`).
pub const SANDBOX_CODEBASE: &str = "sandbox";
const SANDBOX_COMPANY: &str = "sandbox-msp";
const SANDBOX_PUBLIC_KEY: &str = "sandbox-public-key";
const SANDBOX_PRIVATE_KEY: &str = "sandbox-private-key";
/// Samples per `record_consumption` call (the API's limit is 10,000).
const SAMPLE_BATCH: usize = 5_000;

/// Northwind's cloud-storage addition: its first two calls answer 503, then it works.
pub const FLAKY_ADDITION: i64 = addition_id(agreement_id(1001), 2);
/// Tailspin's Google Workspace users addition, deleted in the sandbox: its push ends `DEAD`.
pub const VANISHED_ADDITION: (i64, i64) = (agreement_id(1004), addition_id(agreement_id(1004), 3));
/// Coho's Google Workspace users addition, edited by hand after the first run: drift.
pub const DRIFTED_ADDITION: i64 = addition_id(agreement_id(1010), 2);
/// How many users the hand edit adds.
const HAND_EDIT_DELTA: i64 = 7;
/// The customer of the first, single-customer run.
const FIRST_RUN_CUSTOMER: &str = "acct-coho";

/// What [`load`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DemoReport {
    pub tenant_id: i64,
    pub customers: usize,
    pub product_mappings: usize,
    /// Samples sent / newly inserted.
    pub samples: usize,
    pub samples_inserted: u64,
    pub period: String,
    /// Whether the tenant's settings point at the sandbox (false once the user pointed them at
    /// another ConnectWise: the demo then loads and runs nothing).
    pub sandbox_in_use: bool,
    /// The tenant's site URL as stored.
    pub site_url: String,
    /// The first, single-customer run, when this start plays the month.
    pub first_run_id: Option<i64>,
    /// The tenant's consumption-sync switch after loading.
    pub consumption_sync_enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0:?}")]
    Service(ServiceError),
    #[error("the demo data was refused ({step}): {errors}")]
    Refused { step: &'static str, errors: String },
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("SECRETS_KEY is required to store the demo's ConnectWise key")]
    NoSecretsKey,
    #[error("the sandbox ConnectWise: {0}")]
    Sandbox(String),
}

impl From<ServiceError> for DemoError {
    fn from(e: ServiceError) -> Self {
        DemoError::Service(e)
    }
}

fn accepted<T>(step: &'static str, outcome: Result<T, Vec<UserError>>) -> Result<T, DemoError> {
    outcome.map_err(|errors| DemoError::Refused {
        step,
        errors: errors.iter().map(|e| format!("{} {:?}: {}", e.code, e.field, e.message)).collect::<Vec<_>>().join("; "),
    })
}

/// The in-process sandbox ConnectWise (runs while this value lives).
pub struct Sandbox {
    fake: FakeConnectWise,
    origin: connectwise::SandboxOrigin,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("origin", &self.origin).finish()
    }
}

impl Sandbox {
    /// Start it on `127.0.0.1:<free port>`, accepting the demo's credentials and this process's
    /// `clientId`. Its catalog is empty until [`load`] seeds it.
    pub async fn start(settings: &Settings) -> Result<Sandbox, DemoError> {
        let config = FakeConfig {
            company_id: SANDBOX_COMPANY.into(),
            public_key: SANDBOX_PUBLIC_KEY.into(),
            private_key: SANDBOX_PRIVATE_KEY.into(),
            // The clientId pushes and tickets send (the engine's placeholder when CW_CLIENT_ID is unset).
            client_id: settings.cw_client_id.clone().unwrap_or_else(|| sync_core::engine::PLACEHOLDER_CLIENT_ID.to_string()),
            codebase: SANDBOX_CODEBASE.into(),
            workers: 1,
            sparse: false,
        };
        let fake = FakeConnectWise::start(config).await;
        let addr = fake
            .site_url()
            .strip_prefix("http://")
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .ok_or_else(|| DemoError::Sandbox(format!("unexpected address {}", fake.site_url())))?;
        Ok(Sandbox { fake, origin: connectwise::SandboxOrigin { host: SANDBOX_HOST.into(), addr } })
    }

    /// The origin this process's ConnectWise client may reach.
    pub fn origin(&self) -> &connectwise::SandboxOrigin {
        &self.origin
    }

    /// `http://connectwise-sandbox.localhost:PORT`.
    pub fn site_url(&self) -> String {
        self.origin.site_url()
    }

    /// Tickets created in the sandbox (the dead push's among them).
    pub fn tickets(&self) -> Vec<serde_json::Value> {
        self.fake.tickets()
    }
}

/// Whether a stored site URL is the demo's sandbox (any port: it changes at every start).
pub fn is_sandbox_site(site_url: &str) -> bool {
    reqwest::Url::parse(site_url).is_ok_and(|u| u.scheme() == "http" && u.host_str() == Some(SANDBOX_HOST))
}

/// One demo customer: its account, company, licenses and mappings.
struct DemoCustomer {
    external_id: &'static str,
    name: &'static str,
    /// The ConnectWise company (and its agreement `2000 + n`); `None` = not mapped (a trial).
    company: Option<(i64, &'static str, &'static str)>,
    licenses: &'static [(ProductModule, Edition, &'static [&'static str])],
    mappings: &'static [(ProductModule, UsageMetric, IntervalMethod)],
}

use Edition::{Business, Elite, Enterprise};
use IntervalMethod::{Average, LastDay, Maximum, Sum};
use ProductModule::{Endpoints as EP, EnterpriseWorkloads as EW, GoogleWorkspace as GWS, Microsoft365 as M365};
use UsageMetric::{ActiveUsers, CloudStorage, EarlyDeleteLtrStorage, LtrStorage, PreservedUsers};

const HST: &str = "High Storage Tier";
const SDG: &str = "Sensitive Data Governance";

const CUSTOMERS: &[DemoCustomer] = &[
    DemoCustomer {
        external_id: "acct-northwind",
        name: "Northwind Traders",
        company: Some((1001, "NWT", "Northwind Traders")),
        licenses: &[(EW, Enterprise, &[HST]), (M365, Business, &[])],
        mappings: &[(EW, CloudStorage, Sum), (M365, ActiveUsers, Average)],
    },
    DemoCustomer {
        external_id: "acct-contoso-dental",
        name: "Contoso Dental Group",
        company: Some((1002, "CDG", "Contoso Dental Group")),
        licenses: &[(M365, Enterprise, &[SDG]), (EP, Business, &[])],
        mappings: &[(M365, ActiveUsers, Maximum), (M365, PreservedUsers, LastDay), (EP, ActiveUsers, Average)],
    },
    DemoCustomer {
        external_id: "acct-fabrikam",
        name: "Fabrikam Legal LLP",
        company: Some((1003, "FAB", "Fabrikam Legal LLP")),
        licenses: &[(EW, Elite, &[HST, SDG]), (GWS, Enterprise, &[])],
        mappings: &[
            (EW, CloudStorage, Average),
            (EW, EarlyDeleteLtrStorage, Maximum),
            (EW, LtrStorage, LastDay),
            (GWS, ActiveUsers, LastDay),
        ],
    },
    DemoCustomer {
        external_id: "acct-tailspin",
        name: "Tailspin Logistics",
        company: Some((1004, "TSL", "Tailspin Logistics")),
        licenses: &[(EP, Elite, &[]), (GWS, Business, &[])],
        mappings: &[(EP, ActiveUsers, Maximum), (GWS, ActiveUsers, Average)],
    },
    DemoCustomer {
        external_id: "acct-adventure-works",
        name: "Adventure Works Cycles",
        company: Some((1005, "AWC", "Adventure Works Cycles")),
        licenses: &[(M365, Business, &[]), (EP, Enterprise, &[]), (EW, Business, &[])],
        mappings: &[(M365, ActiveUsers, LastDay), (EP, PreservedUsers, Maximum), (EW, CloudStorage, Sum)],
    },
    DemoCustomer {
        external_id: "acct-litware",
        name: "Litware Accounting",
        company: Some((1006, "LIT", "Litware Accounting")),
        licenses: &[(M365, Elite, &[SDG])],
        mappings: &[(M365, ActiveUsers, Average), (M365, PreservedUsers, Maximum)],
    },
    DemoCustomer {
        external_id: "acct-proseware",
        name: "Proseware Clinics",
        company: Some((1007, "PRO", "Proseware Clinics")),
        licenses: &[(GWS, Elite, &[SDG])],
        mappings: &[(GWS, ActiveUsers, Maximum), (GWS, PreservedUsers, LastDay)],
    },
    DemoCustomer {
        external_id: "acct-wingtip",
        name: "Wingtip Realty",
        company: Some((1008, "WTR", "Wingtip Realty")),
        // Provisioned on the 10th of the demo month (see `provisioned_on`).
        licenses: &[(M365, Business, &[])],
        mappings: &[(M365, ActiveUsers, Average)],
    },
    DemoCustomer {
        external_id: "acct-alpine",
        name: "Alpine Ski House",
        company: Some((1009, "ASH", "Alpine Ski House")),
        licenses: &[(EW, Enterprise, &[]), (EP, Business, &[])],
        mappings: &[(EW, CloudStorage, Maximum), (EP, PreservedUsers, LastDay)],
    },
    DemoCustomer {
        external_id: "acct-coho",
        name: "Coho Winery",
        company: Some((1010, "COHO", "Coho Winery")),
        licenses: &[(GWS, Business, &[]), (M365, Business, &[])],
        mappings: &[(GWS, ActiveUsers, Average), (M365, ActiveUsers, LastDay)],
    },
    DemoCustomer {
        external_id: "acct-woodgrove",
        name: "Woodgrove Credit Union",
        company: Some((1011, "WCU", "Woodgrove Credit Union")),
        licenses: &[(EW, Elite, &[HST]), (M365, Enterprise, &[SDG])],
        mappings: &[(EW, CloudStorage, Sum), (M365, ActiveUsers, Maximum)],
    },
    DemoCustomer {
        external_id: "acct-globex-trial",
        name: "Globex (trial)",
        company: None,
        licenses: &[(M365, Business, &[])],
        mappings: &[],
    },
];

/// An inactive company of the catalog (not mappable; shows the status in the dropdowns).
const INACTIVE_COMPANY: (i64, &str, &str) = (1012, "BYA", "Blue Yonder Airlines");

/// The ConnectWise product of a mapping's addition. `SUM` bills the total of all storage types.
fn product(module: ProductModule, usage: UsageMetric, method: IntervalMethod) -> (i64, &'static str, &'static str) {
    match (module, usage, method) {
        (EW, _, Sum) => (5104, "BKP-EW-TOTAL", "Cloud backup, total storage (GB)"),
        (EW, CloudStorage, _) => (5101, "BKP-EW-CLOUD", "Cloud backup storage (GB)"),
        (EW, EarlyDeleteLtrStorage, _) => (5102, "BKP-EW-EDLTR", "Early-delete long-term retention (GB)"),
        (EW, _, _) => (5103, "BKP-EW-LTR", "Long-term retention storage (GB)"),
        (M365, ActiveUsers, _) => (5201, "BKP-M365-USR", "Microsoft 365 backup, per user"),
        (M365, _, _) => (5202, "BKP-M365-PRS", "Microsoft 365 preserved users"),
        (EP, ActiveUsers, _) => (5301, "BKP-EP-USR", "Endpoint backup, per user"),
        (EP, _, _) => (5302, "BKP-EP-PRS", "Endpoint preserved users"),
        (GWS, ActiveUsers, _) => (5401, "BKP-GWS-USR", "Google Workspace backup, per user"),
        (GWS, _, _) => (5402, "BKP-GWS-PRS", "Google Workspace preserved users"),
    }
}

/// The demo catalog's unit prices (exact decimal text, as ConnectWise would send them): storage per
/// GB, users per user, the flat managed-services fee.
fn demo_unit_price(product_id: i64) -> &'static str {
    match product_id {
        5101..=5104 => "0.045",
        5202 | 5302 | 5402 => "1.25",
        5201 | 5301 | 5401 => "3.50",
        _ => "450.00",
    }
}

const fn agreement_id(company: i64) -> i64 {
    company + 1000
}

/// Addition ids: agreement × 10 + sequence number. Sequence 1 is the flat managed-services fee
/// (not consumption-based, never mapped); the mapped additions follow from 2.
const fn addition_id(agreement: i64, seq: i64) -> i64 {
    agreement * 10 + seq
}

/// The day the demo customer's licenses start: long ago, except Wingtip's, provisioned on the 10th
/// of the demo month (its first, partial day is left out of `AVERAGE`).
fn provisioned_on(c: &DemoCustomer, period: Period, index: usize) -> NaiveDate {
    if c.external_id == "acct-wingtip" {
        return period.first_day().with_day(10).unwrap_or(period.first_day());
    }
    let start = period.previous().previous().first_day();
    let months_back = 3 + (index as u32 * 5) % 14;
    let mut d = start;
    for _ in 0..months_back {
        d = Period::of(d).previous().first_day();
    }
    d.with_day(1 + (index as u32 * 7) % 27).unwrap_or(d)
}

/// Load (or complete) the demo tenant, point it at the sandbox and seed the sandbox; on the first
/// start, also start the single-customer run that opens the month (see the module docs).
#[allow(clippy::too_many_arguments)]
pub async fn load(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    settings: &Settings,
    secrets: Option<&SecretBox>,
    http: &connectwise::CwHttp,
    clock: &dyn Clock,
    sandbox: &Sandbox,
) -> Result<DemoReport, DemoError> {
    let now = clock.now();
    let period = Period::latest_closed(now.date_naive());
    let tenant_id = service::tenants::ensure_tenant(db, DEV_TENANT, now).await?;
    let p = Principal { sub: "demo-loader".into(), tenant_key: DEV_TENANT.into(), tenant_id, roles: vec!["admin".into()] };
    let mut report = DemoReport { tenant_id, period: period.to_string(), ..Default::default() };

    let existing = service::settings::get(db, tenant_id).await?;
    if let Some(s) = existing.as_ref().filter(|s| !is_sandbox_site(&s.site_url)) {
        // The user connected the demo tenant to another ConnectWise: not the demo's any more.
        report.site_url = s.site_url.clone();
        report.consumption_sync_enabled = s.consumption_sync_enabled;
        return Ok(report);
    }
    report.sandbox_in_use = true;
    let was_on = existing.as_ref().is_some_and(|s| s.consumption_sync_enabled);
    // First start: sync on (and it stays on). Later starts keep the user's switch, but mappings are
    // validated and saved only with sync on: on meanwhile, then off again.
    let saved = configure_connectwise(db, settings, secrets, http, &p, sandbox, existing.is_none(), now).await?;
    report.site_url = saved.site_url.clone();
    let keep_on = was_on || existing.is_none();
    if !saved.consumption_sync_enabled {
        accepted("consumption sync on", service::settings::set_consumption_sync(db, &p, true, now).await?)?;
    }
    let loaded = load_data(db, &p, period, now, &mut report).await;
    if !keep_on {
        accepted("consumption sync off", service::settings::set_consumption_sync(db, &p, false, clock.now()).await?)?;
    }
    report.consumption_sync_enabled = keep_on;
    loaded?;

    seed_sandbox(db, tenant_id, sandbox).await?;
    let runs = entity::sync_run::Entity::find()
        .filter(entity::sync_run::Column::TenantId.eq(tenant_id))
        .filter(entity::sync_run::Column::Period.eq(period.to_string()))
        .filter(entity::sync_run::Column::DryRun.eq(false))
        .all(db)
        .await?;
    if !runs.iter().any(|r| r.trigger == "SCHEDULED") {
        // The monthly run is still to come: Northwind's addition will stumble twice.
        sandbox.fake.inject(FaultRule {
            method: None,
            path_contains: Some(format!("/additions/{FLAKY_ADDITION}")),
            fault: Fault::Status(503),
            times: 2,
        });
    }
    if runs.is_empty() && keep_on {
        // The month opens with Coho alone; right after its addition is set, somebody edits it by
        // hand in ConnectWise, which the monthly run then finds (drift).
        sandbox.fake.hand_edit_after_next_patch(DRIFTED_ADDITION, HAND_EDIT_DELTA);
        let coho = entity::customer::Entity::find()
            .filter(entity::customer::Column::TenantId.eq(tenant_id))
            .filter(entity::customer::Column::ExternalId.eq(FIRST_RUN_CUSTOMER))
            .one(db)
            .await?
            .ok_or_else(|| DemoError::Sandbox(format!("customer {FIRST_RUN_CUSTOMER} is missing")))?;
        let run = accepted(
            "first run",
            service::sync::run_monthly_sync(db, queue, &p, period, Some(vec![coho.id.to_string()]), false, now).await?,
        )?;
        report.first_run_id = Some(run.id);
    }
    Ok(report)
}

/// Catalog, customers, mappings and samples (consumption sync is on meanwhile).
async fn load_data(
    db: &DatabaseConnection,
    p: &Principal,
    period: Period,
    now: DateTime<Utc>,
    report: &mut DemoReport,
) -> Result<(), DemoError> {
    let tenant_id = p.tenant_id;
    write_catalog(db, tenant_id, now).await?;

    let inputs: Vec<CustomerInput> = CUSTOMERS
        .iter()
        .enumerate()
        .map(|(i, c)| CustomerInput {
            external_id: c.external_id.into(),
            account_name: c.name.into(),
            licenses: c
                .licenses
                .iter()
                .map(|(module, edition, add_ons)| LicenseInput {
                    product_module: *module,
                    edition: *edition,
                    provisioned_on: provisioned_on(c, period, i),
                    deprovisioned_on: None,
                    add_ons: add_ons.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
        })
        .collect();
    let customers = accepted("customers", service::customers::upsert_customers(db, p, inputs, now).await?)?;
    report.customers = customers.len();

    let mut samples = Vec::new();
    for (i, (c, model)) in CUSTOMERS.iter().zip(&customers).enumerate() {
        let id = model.id.to_string();
        if let Some((company, _, _)) = c.company {
            accepted("customer mapping", service::customers::map_customer(db, p, &id, company, false, now).await?)?;
            let agreement = agreement_id(company);
            let mappings: Vec<MappingInput> = c
                .mappings
                .iter()
                .enumerate()
                .map(|(k, (module, usage, interval))| MappingInput {
                    customer_id: id.clone(),
                    product_module: *module,
                    usage: *usage,
                    interval: *interval,
                    cw_agreement_id: agreement,
                    cw_sequence_number: k as i64 + 2,
                })
                .collect();
            let saved = accepted("product mappings", service::mappings::save_product_mappings(db, p, &id, mappings, now).await?)?;
            report.product_mappings += saved.len();
        }
        let from = provisioned_on(c, period, i).max(period.previous().first_day());
        for (module, _, _) in c.licenses {
            for usage in module.usage_metrics() {
                for day in period.previous().days().chain(period.days()).filter(|d| *d >= from) {
                    if let Some(value) = daily_value(c, *module, *usage, day, period, from) {
                        samples.push(SampleInput {
                            customer_id: Some(id.clone()),
                            customer_external_id: None,
                            product_module: *module,
                            usage: *usage,
                            day: day.to_string(),
                            value,
                        });
                    }
                }
            }
        }
    }
    report.samples = samples.len();
    while !samples.is_empty() {
        let rest = samples.split_off(samples.len().min(SAMPLE_BATCH));
        let result = accepted("consumption", service::consumption::record_consumption(db, p, samples, now).await?)?;
        report.samples_inserted += result.inserted;
        samples = rest;
    }

    Ok(())
}

/// The sandbox connection: created on the first start (sync on), re-pointed at the sandbox's
/// port on later ones (the switch and the rest as the user left them). `configure` checks the site
/// URL with `CW_ALLOW_HTTP`'s rules for this one call only: the sandbox is `http` on loopback, and
/// this process's client may reach exactly its origin.
#[allow(clippy::too_many_arguments)]
async fn configure_connectwise(
    db: &DatabaseConnection,
    settings: &Settings,
    secrets: Option<&SecretBox>,
    http: &connectwise::CwHttp,
    p: &Principal,
    sandbox: &Sandbox,
    first: bool,
    now: DateTime<Utc>,
) -> Result<entity::cw_settings::Model, DemoError> {
    if let Some(s) = service::settings::get(db, p.tenant_id).await?.filter(|s| s.site_url == sandbox.site_url()) {
        return Ok(s);
    }
    let secrets = secrets.ok_or(DemoError::NoSecretsKey)?;
    let mut loopback = settings.clone();
    loopback.cw_allow_http = true;
    let access = service::settings::CwAccess { settings: &loopback, secrets: Some(secrets), http };
    let input = service::settings::SettingsInput {
        site_url: sandbox.site_url(),
        company_id: SANDBOX_COMPANY.into(),
        public_key: SANDBOX_PUBLIC_KEY.into(),
        private_key: Some(SecretString::from(SANDBOX_PRIVATE_KEY)),
        codebase: Some(SANDBOX_CODEBASE.into()),
        ticket_board_id: 1,
        ticket_team_id: 11,
        ticket_status_id: 21,
        ticket_type_id: Some(31),
        ticket_subtype_id: Some(41),
        consumption_sync_enabled: first.then_some(true),
    };
    accepted("ConnectWise settings", service::settings::configure(db, &access, p, input, now).await?)
}

/// The sandbox's catalog: the demo's companies, agreements, additions and board, with each
/// addition's quantity as the tenant's last push that reached it left it, and Tailspin's Google
/// Workspace addition deleted.
async fn seed_sandbox(db: &DatabaseConnection, tenant_id: i64, sandbox: &Sandbox) -> Result<(), DemoError> {
    use entity::push;
    let mut last_set = std::collections::HashMap::new();
    let reached = push::Entity::find()
        .filter(push::Column::TenantId.eq(tenant_id))
        .filter(push::Column::DryRun.eq(false))
        .filter(push::Column::Status.is_in(["SUCCEEDED", "UNCHANGED"]))
        .order_by_asc(push::Column::Id)
        .all(db)
        .await?;
    for p in reached {
        if let Some(q) = p.quantity {
            last_set.insert(p.cw_addition_id, q);
        }
    }
    let fake = &sandbox.fake;
    for c in CUSTOMERS {
        let Some((company, identifier, name)) = c.company else { continue };
        fake.add_company(FakeCompany::new(company, identifier, name));
        let agreement = agreement_id(company);
        let mut a = FakeAgreement::new(agreement, &format!("{name} - Managed Backup"), company);
        a.next_invoice_date = None;
        fake.add_agreement(a);
        let flat = (6001, "MSP-MANAGED", "Managed services, flat fee");
        let mapped = c.mappings.iter().map(|(m, u, i)| product(*m, *u, *i));
        for (k, (product_id, product_identifier, description)) in std::iter::once(flat).chain(mapped).enumerate() {
            let seq = k as i64 + 1;
            let id = addition_id(agreement, seq);
            let quantity = if seq == 1 { 1 } else { last_set.get(&id).copied().unwrap_or(0) };
            let mut addition = FakeAddition::new(id, agreement, product_id, quantity).with_unit_price(Some(demo_unit_price(product_id)));
            addition.sequence_number = seq;
            addition.product_identifier = product_identifier.into();
            addition.description = description.into();
            fake.add_addition(addition);
        }
    }
    let (id, identifier, name) = INACTIVE_COMPANY;
    let mut inactive = FakeCompany::new(id, identifier, name);
    inactive.status = "Inactive".into();
    fake.add_company(inactive);
    let mut old = FakeAgreement::new(2101, "Northwind Traders - Backup 2024", 1001);
    old.status = "Cancelled".into();
    old.cancelled_flag = true;
    fake.add_agreement(old);
    let (product_id, _, _) = product(EW, CloudStorage, Maximum);
    let mut old_addition = FakeAddition::new(addition_id(2101, 1), 2101, product_id, 1250);
    old_addition.product_identifier = "BKP-EW-CLOUD".into();
    fake.add_addition(old_addition);
    let named = |items: &[(i64, &str, bool)]| items.iter().map(|(id, n, d)| (*id, n.to_string(), *d)).collect::<Vec<_>>();
    fake.add_board(FakeBoard {
        id: 1,
        name: "Billing".into(),
        teams: named(&[(11, "Finance", true)]),
        statuses: named(&[(21, "New", true), (22, "In Progress", false), (23, "Closed", false)]),
        types: named(&[(31, "Billing", true)]),
        subtypes: named(&[(41, "Consumption", true)]),
    });
    // Deleted in ConnectWise after the mapping was made: the push finds it gone.
    fake.remove_addition(VANISHED_ADDITION.0, VANISHED_ADDITION.1);
    Ok(())
}

/// How long [`play`] waits for a run to end.
const RUN_WAIT: Duration = Duration::from_secs(180);
/// How long [`play`] waits for the dead push's ticket once the run has ended.
const TICKET_WAIT: Duration = Duration::from_secs(30);

/// Once the workers run: wait for the first run, start the tenant's monthly run of the latest
/// closed month ahead of its tick, wait for it (and the dead push's ticket), then print what each
/// push did. Prints a line with `See it at` last.
pub async fn play(
    db: DatabaseConnection,
    queue: std::sync::Arc<dyn JobQueue>,
    clock: sync_core::clock::SharedClock,
    report: DemoReport,
    address: String,
) {
    let mut lines = Vec::new();
    if !report.sandbox_in_use {
        lines.push(format!(
            "Demo: tenant \"{DEV_TENANT}\" is connected to {}, not to the sandbox: the demo loads and runs nothing for it \
             (`api demo --reset` starts the demo over).",
            report.site_url
        ));
    } else if let Err(e) = play_month(&db, queue.as_ref(), clock.as_ref(), &report, &mut lines).await {
        lines.push(format!("Demo: could not play the month: {e}"));
    }
    lines.push(format!("See it at http://{address}/dashboard"));
    println!("{}", lines.join("\n"));
}

async fn play_month(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    clock: &dyn Clock,
    report: &DemoReport,
    lines: &mut Vec<String>,
) -> Result<(), DemoError> {
    use entity::{push, sync_run};
    let period = Period::parse(&report.period).map_err(|e| DemoError::Sandbox(format!("period {}: {e:?}", report.period)))?;
    if let Some(first) = report.first_run_id {
        wait_for_run(db, first).await?;
    }
    if report.consumption_sync_enabled {
        sync_core::engine::schedule::start_tenant_run_now(db, queue, report.tenant_id, period, clock.now())
            .await
            .map_err(|e| DemoError::Sandbox(format!("starting the monthly run: {e}")))?;
    }
    let runs = sync_run::Entity::find()
        .filter(sync_run::Column::TenantId.eq(report.tenant_id))
        .filter(sync_run::Column::Period.eq(report.period.clone()))
        .filter(sync_run::Column::DryRun.eq(false))
        .order_by_asc(sync_run::Column::Id)
        .all(db)
        .await?;
    for run in &runs {
        wait_for_run(db, run.id).await?;
    }
    let pushes_of = |ids: Vec<i64>| push::Entity::find().filter(push::Column::SyncRunId.is_in(ids)).order_by_asc(push::Column::Id).all(db);
    let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let deadline = Instant::now() + TICKET_WAIT;
    let pushes = loop {
        let pushes = pushes_of(run_ids.clone()).await?;
        let ticket_pending = pushes.iter().any(|p| p.status == "DEAD" && p.ticket_id.is_none());
        if !ticket_pending || Instant::now() > deadline {
            break pushes;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let customers: std::collections::HashMap<i64, String> = entity::customer::Entity::find()
        .filter(entity::customer::Column::TenantId.eq(report.tenant_id))
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c.account_name))
        .collect();
    lines.push(format!(
        "Demo: tenant \"{DEV_TENANT}\", {} customers, {} product mappings, {} daily samples; {} pushed to the sandbox ConnectWise at {}:",
        report.customers, report.product_mappings, report.samples, report.period, report.site_url
    ));
    for r in &runs {
        let what = if r.trigger == "SCHEDULED" { "the monthly run" } else { "a manual run" };
        // The id the API takes (`syncRun(id:)`), not the table key.
        let id = crate::graphql::ids::GlobalId::encode(crate::graphql::ids::NodeType::SyncRun, r.id).0;
        lines.push(format!("  run {id} ({what}), {}:", r.status));
        for p in pushes.iter().filter(|p| p.sync_run_id == r.id) {
            let mut notes = Vec::new();
            if p.attempts > 1 {
                notes.push(format!("{} attempts", p.attempts));
            }
            if let Some(held) = p.drift_from_quantity {
                notes.push(format!("drift: ConnectWise held {held}"));
            }
            if let (Some(code), true) = (&p.last_error_code, p.status == "DEAD") {
                notes.push(code.clone());
            }
            if let Some(ticket) = p.ticket_id {
                notes.push(format!("ticket #{ticket}"));
            }
            if p.fallback {
                notes.push("last-day fallback".into());
            }
            lines.push(format!(
                "    {:<24} {:<21} {:<25} {:<9} quantity {:>6}  {:<9} {}",
                customers.get(&p.customer_id).map(String::as_str).unwrap_or("?"),
                p.product_module,
                p.usage,
                p.interval_method,
                p.quantity.map(|q| q.to_string()).unwrap_or_else(|| "-".into()),
                p.status,
                notes.join(", ")
            ));
        }
    }
    Ok(())
}

/// Wait until the run is no longer `RUNNING` (or [`RUN_WAIT`] has passed).
async fn wait_for_run(db: &DatabaseConnection, run_id: i64) -> Result<(), DemoError> {
    let deadline = Instant::now() + RUN_WAIT;
    loop {
        match entity::sync_run::Entity::find_by_id(run_id).one(db).await? {
            Some(run) if run.status == "RUNNING" && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
            Some(run) if run.status == "RUNNING" => {
                return Err(DemoError::Sandbox(format!("run {run_id} is still running; see the dashboard")));
            }
            _ => return Ok(()),
        }
    }
}

/// The catalog cache a refresh would have written (upserts: a second run changes nothing).
async fn write_catalog(db: &DatabaseConnection, tenant_id: i64, now: DateTime<Utc>) -> Result<(), DemoError> {
    use entity::{cw_addition, cw_agreement, cw_board, cw_board_item, cw_company};
    let companies =
        CUSTOMERS.iter().filter_map(|c| c.company).map(|co| (co, "Active")).chain(std::iter::once((INACTIVE_COMPANY, "Inactive"))).map(
            |((id, identifier, name), status)| cw_company::ActiveModel {
                tenant_id: Set(tenant_id),
                id: Set(id),
                identifier: Set(identifier.into()),
                name: Set(name.into()),
                status: Set(status.into()),
                refreshed_at: Set(now),
            },
        );
    cw_company::Entity::insert_many(companies)
        .on_conflict(
            OnConflict::columns([cw_company::Column::TenantId, cw_company::Column::Id])
                .update_columns([cw_company::Column::Identifier, cw_company::Column::Name, cw_company::Column::Status])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;

    let year_start = NaiveDate::from_ymd_opt(now.year(), 1, 1);
    let next_invoice = Period::of(now.date_naive()).next().first_day();
    let mut agreements = Vec::new();
    let mut additions = Vec::new();
    let addition = |id: i64, agreement: i64, seq: i64, (product_id, identifier, description): (i64, &str, &str), quantity: &str| {
        cw_addition::ActiveModel {
            tenant_id: Set(tenant_id),
            id: Set(id),
            agreement_id: Set(agreement),
            sequence_number: Set(seq),
            fractional_sequence_number: Set(None),
            product_id: Set(Some(product_id)),
            product_identifier: Set(Some(identifier.into())),
            description: Set(Some(description.into())),
            quantity: Set(Some(quantity.into())),
            unit_price: Set(Some(demo_unit_price(product_id).into())),
            less_included: Set(Some("0".into())),
            effective_date: Set(year_start),
            cancelled_date: Set(None),
            refreshed_at: Set(now),
        }
    };
    for c in CUSTOMERS {
        let Some((company, _, name)) = c.company else { continue };
        let agreement = agreement_id(company);
        agreements.push(cw_agreement::ActiveModel {
            tenant_id: Set(tenant_id),
            id: Set(agreement),
            company_id: Set(company),
            name: Set(format!("{name} - Managed Backup")),
            type_name: Set(Some("Managed Services".into())),
            status: Set("Active".into()),
            cancelled_flag: Set(false),
            start_date: Set(year_start),
            end_date: Set(None),
            next_invoice_date: Set(Some(next_invoice)),
            refreshed_at: Set(now),
        });
        additions.push(addition(addition_id(agreement, 1), agreement, 1, (6001, "MSP-MANAGED", "Managed services, flat fee"), "1"));
        for (k, (module, usage, method)) in c.mappings.iter().enumerate() {
            let seq = k as i64 + 2;
            additions.push(addition(addition_id(agreement, seq), agreement, seq, product(*module, *usage, *method), "0"));
        }
    }
    // Northwind's old agreement, cancelled: listed, but mappings to it are refused.
    agreements.push(cw_agreement::ActiveModel {
        tenant_id: Set(tenant_id),
        id: Set(2101),
        company_id: Set(1001),
        name: Set("Northwind Traders - Backup 2024".into()),
        type_name: Set(Some("Managed Services".into())),
        status: Set("Cancelled".into()),
        cancelled_flag: Set(true),
        start_date: Set(NaiveDate::from_ymd_opt(2024, 1, 1)),
        end_date: Set(NaiveDate::from_ymd_opt(2024, 12, 31)),
        next_invoice_date: Set(None),
        refreshed_at: Set(now),
    });
    additions.push(addition(addition_id(2101, 1), 2101, 1, product(EW, CloudStorage, Maximum), "1250"));
    cw_agreement::Entity::insert_many(agreements)
        .on_conflict(OnConflict::columns([cw_agreement::Column::TenantId, cw_agreement::Column::Id]).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    cw_addition::Entity::insert_many(additions)
        .on_conflict(OnConflict::columns([cw_addition::Column::TenantId, cw_addition::Column::Id]).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;

    cw_board::Entity::insert(cw_board::ActiveModel {
        tenant_id: Set(tenant_id),
        id: Set(1),
        name: Set("Billing".into()),
        inactive: Set(false),
        refreshed_at: Set(now),
    })
    .on_conflict(OnConflict::columns([cw_board::Column::TenantId, cw_board::Column::Id]).do_nothing().to_owned())
    .exec_without_returning(db)
    .await?;
    let items = [
        ("TEAM", 11, "Finance", true),
        ("STATUS", 21, "New", true),
        ("STATUS", 22, "In Progress", false),
        ("STATUS", 23, "Closed", false),
        ("TYPE", 31, "Billing", true),
        ("SUBTYPE", 41, "Consumption", true),
    ]
    .into_iter()
    .map(|(kind, id, name, default_flag)| cw_board_item::ActiveModel {
        tenant_id: Set(tenant_id),
        board_id: Set(1),
        kind: Set(kind.into()),
        id: Set(id),
        name: Set(name.into()),
        default_flag: Set(default_flag),
    });
    cw_board_item::Entity::insert_many(items)
        .on_conflict(
            OnConflict::columns([
                cw_board_item::Column::TenantId,
                cw_board_item::Column::BoardId,
                cw_board_item::Column::Kind,
                cw_board_item::Column::Id,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;

    // What the refresh job records when it has filled the cache.
    if let Some(s) = entity::cw_settings::Entity::find_by_id(tenant_id).one(db).await?
        && s.catalog_refreshed_at.is_none()
    {
        let mut am = s.into_active_model();
        am.catalog_refreshed_at = Set(Some(now));
        am.update(db).await?;
    }
    Ok(())
}

/// A stable pseudo-random number for a key (splitmix64 of an FNV-1a hash): the demo's data is the
/// same on every machine and every run.
fn noise(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sample of one day as a decimal string, or `None` for a day the integration did not report.
///
/// Users: a per-customer base that grows slowly with ±2 daily jitter (preserved users only grow);
/// a license's first day, when it falls in the demo months, reports a quarter (a partial day). Storage (GB, three decimals):
/// a base that grows about 0.3 % a day with ±0.5 % jitter; early-delete and LTR storage are fractions
/// of it. About 3 % of days are missing; Fabrikam's Google Workspace and Alpine's Endpoints stop
/// reporting two days and one day before the end of the demo month (their `LAST_DAY` falls back).
fn daily_value(
    c: &DemoCustomer,
    module: ProductModule,
    usage: UsageMetric,
    day: NaiveDate,
    period: Period,
    first_day: NaiveDate,
) -> Option<String> {
    let key = [c.external_id, module.as_str(), usage.as_str()];
    let day_s = day.to_string();
    let ends_early = match (c.external_id, module, usage) {
        ("acct-fabrikam", GWS, ActiveUsers) => Some(2),
        ("acct-alpine", EP, PreservedUsers) => Some(1),
        _ => None,
    };
    if let Some(days) = ends_early
        && period.contains(day)
        && day > period.last_day() - chrono::Duration::days(days)
    {
        return None;
    }
    let is_month_end = day == period.last_day() || day == period.previous().last_day();
    if !is_month_end && noise(&[c.external_id, module.as_str(), usage.as_str(), &day_s, "gap"]) % 100 < 3 {
        return None;
    }
    let n = (day - period.previous().first_day()).num_days().max(0);
    let base = noise(&key);
    let jitter =
        |range: u64| -> i64 { (noise(&[c.external_id, module.as_str(), usage.as_str(), &day_s]) % (2 * range + 1)) as i64 - range as i64 };
    match usage {
        ActiveUsers | PreservedUsers => {
            let (lo, span) = if usage == ActiveUsers { (12, 240) } else { (1, 18) };
            let start = lo + (base % span) as i64;
            // Growth of about one user per ten days per hundred users.
            let users = if usage == ActiveUsers { start + start * n / 1000 + jitter(2) } else { start + n / 20 };
            let users = if day == first_day && day > period.previous().first_day() { users / 4 } else { users };
            Some(users.max(0).to_string())
        }
        CloudStorage | EarlyDeleteLtrStorage | LtrStorage => {
            let share_permille: i64 = match usage {
                CloudStorage => 1000,
                EarlyDeleteLtrStorage => 40,
                _ => 350,
            };
            // Thousandths of a GB: 180–4,980 GB of cloud storage, growing ~0.3 % a day.
            let start = 180_000 + (base % 4_800_000) as i64;
            let grown = start + start * 3 * n / 1000;
            let mgb = grown * share_permille / 1000;
            let mgb = mgb + mgb * jitter(5) / 1000;
            Some(format!("{}.{:03}", mgb / 1000, mgb % 1000))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_edition_and_method_is_used() {
        for m in ProductModule::ALL {
            assert!(CUSTOMERS.iter().any(|c| c.mappings.iter().any(|(mm, _, _)| *mm == m)), "{m:?}");
        }
        for e in Edition::ALL {
            assert!(CUSTOMERS.iter().any(|c| c.licenses.iter().any(|(_, ee, _)| *ee == e)), "{e:?}");
        }
        for i in IntervalMethod::ALL {
            assert!(CUSTOMERS.iter().any(|c| c.mappings.iter().any(|(_, _, ii)| *ii == i)), "{i:?}");
        }
        assert!(CUSTOMERS.iter().any(|c| c.licenses.iter().any(|(_, _, a)| !a.is_empty())));
    }

    #[test]
    fn mappings_are_valid_by_the_rules() {
        for c in CUSTOMERS {
            let mut products = std::collections::HashSet::new();
            let mut usages = std::collections::HashSet::new();
            for (module, usage, method) in c.mappings {
                assert!(module.allows_usage(*usage) && module.allows_interval(*method), "{} {module:?} {usage:?} {method:?}", c.name);
                assert!(c.licenses.iter().any(|(m, _, _)| m == module), "{} lacks a {module:?} license", c.name);
                assert!(products.insert(product(*module, *usage, *method).0), "{}: product not unique on the agreement", c.name);
                assert!(usages.insert((*module, *usage)), "{}: usage mapped twice", c.name);
            }
        }
    }

    #[test]
    fn values_are_deterministic_valid_decimals() {
        let period = Period::parse("2026-10").expect("period");
        let c = &CUSTOMERS[2];
        let day = period.first_day().with_day(5).expect("day");
        let first = period.previous().first_day();
        let a = daily_value(c, EW, CloudStorage, day, period, first);
        assert_eq!(a, daily_value(c, EW, CloudStorage, day, period, first));
        let v = a.expect("reported");
        let (int, frac) = v.split_once('.').expect("decimal");
        assert!(int.parse::<u64>().is_ok() && frac.len() == 3, "{v}");
        // Fabrikam's Google Workspace users stop two days before the month's end: fallback.
        assert_eq!(daily_value(c, GWS, ActiveUsers, period.last_day(), period, first), None);
        assert!(daily_value(c, GWS, ActiveUsers, period.last_day() - chrono::Duration::days(2), period, first).is_some());
    }
}
