//! The product-mapping validation matrix (docs/graphql.md), as a pure function over facts the caller has
//! loaded (settings, customer, license, cached ConnectWise agreement and additions).

use crate::aggregate::LicenseWindow;
use crate::catalog::{IntervalMethod, ProductModule, UsageMetric};
use chrono::NaiveDate;

/// Stable error codes of the GraphQL `userErrors`.
pub mod codes {
    /// The tenant has not configured ConnectWise or has consumption sync off.
    pub const CONSUMPTION_SYNC_DISABLED: &str = "CONSUMPTION_SYNC_DISABLED";
    /// The customer has no ConnectWise company.
    pub const CUSTOMER_NOT_MAPPED: &str = "CUSTOMER_NOT_MAPPED";
    /// The customer has no active license for the module.
    pub const MODULE_NOT_PROVISIONED: &str = "MODULE_NOT_PROVISIONED";
    /// The usage metric is not one of the module's.
    pub const USAGE_NOT_ALLOWED: &str = "USAGE_NOT_ALLOWED";
    /// `SUM` on a module other than Enterprise Workloads.
    pub const INTERVAL_NOT_ALLOWED: &str = "INTERVAL_NOT_ALLOWED";
    /// The agreement is unknown or belongs to another company than the customer's.
    pub const AGREEMENT_NOT_FOUND: &str = "AGREEMENT_NOT_FOUND";
    /// The agreement is cancelled, expired or inactive.
    pub const AGREEMENT_INACTIVE: &str = "AGREEMENT_INACTIVE";
    /// No addition with that sequence number on that agreement.
    pub const ADDITION_NOT_FOUND: &str = "ADDITION_NOT_FOUND";
    /// More than one non-cancelled addition on the agreement has that sequence number.
    pub const ADDITION_AMBIGUOUS: &str = "ADDITION_AMBIGUOUS";
    /// The addition has a cancelled date in the past.
    pub const ADDITION_CANCELLED: &str = "ADDITION_CANCELLED";
    /// Another non-cancelled addition on the agreement has the same product.
    pub const ADDITION_PRODUCT_NOT_UNIQUE: &str = "ADDITION_PRODUCT_NOT_UNIQUE";
    /// That agreement + addition is already mapped (to any usage).
    pub const DUPLICATE_ADDITION_MAPPING: &str = "DUPLICATE_ADDITION_MAPPING";
    /// That customer's module + usage is already mapped to an addition.
    pub const DUPLICATE_USAGE_MAPPING: &str = "DUPLICATE_USAGE_MAPPING";
    /// Update with a stale `expectedVersion`.
    pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";
    /// The customer, mapping, agreement or company id does not exist for this tenant.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The ConnectWise company is not active.
    pub const COMPANY_NOT_ACTIVE: &str = "COMPANY_NOT_ACTIVE";
    /// The ConnectWise company is already mapped to another customer (one-to-one).
    pub const COMPANY_ALREADY_MAPPED: &str = "COMPANY_ALREADY_MAPPED";
    /// Changing or removing the customer's company while product mappings exist.
    pub const CUSTOMER_HAS_PRODUCT_MAPPINGS: &str = "CUSTOMER_HAS_PRODUCT_MAPPINGS";
    /// The ConnectWise site URL is not `https` (or not scheme + host [+ port]).
    pub const INSECURE_SITE_URL: &str = "INSECURE_SITE_URL";
    /// A consumption value is not a valid decimal in range.
    pub const INVALID_VALUE: &str = "INVALID_VALUE";
    /// A consumption day is not a valid `YYYY-MM-DD` date.
    pub const INVALID_DAY: &str = "INVALID_DAY";
    /// A sample names a customer that does not exist.
    pub const UNKNOWN_CUSTOMER: &str = "UNKNOWN_CUSTOMER";
    /// The same sample key appears twice in one batch.
    pub const DUPLICATE_SAMPLE: &str = "DUPLICATE_SAMPLE";
    /// More than 10,000 samples in one batch.
    pub const BATCH_TOO_LARGE: &str = "BATCH_TOO_LARGE";
    /// A non-dry run for the current or a future month.
    pub const PERIOD_NOT_CLOSED: &str = "PERIOD_NOT_CLOSED";
    /// A non-dry run for a month older than the latest closed one.
    pub const PERIOD_SUPERSEDED: &str = "PERIOD_SUPERSEDED";
    /// Another run of the same tenant and period is `RUNNING`.
    pub const RUN_IN_PROGRESS: &str = "RUN_IN_PROGRESS";
    /// The addition now holds another product than mapped.
    pub const ADDITION_CHANGED: &str = "ADDITION_CHANGED";
    /// ConnectWise rejected the credentials (401/403).
    pub const CW_AUTH_FAILED: &str = "CW_AUTH_FAILED";
    /// An input field is invalid (generic).
    pub const INVALID_INPUT: &str = "INVALID_INPUT";
    /// `retryPush` on a push that is neither `DEAD` nor `FAILED_RETRYING`.
    pub const PUSH_NOT_RETRYABLE: &str = "PUSH_NOT_RETRYABLE";
    /// `retryPush` on a push for which a newer push of the same addition exists (only the newest
    /// push of an addition may write it).
    pub const PUSH_SUPERSEDED: &str = "PUSH_SUPERSEDED";
    /// `retryPush` on a push whose mapping was deleted, unmapped or now points to another addition.
    pub const MAPPING_REMOVED: &str = "MAPPING_REMOVED";
}

/// A ConnectWise agreement as cached by the catalog refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementFacts {
    /// ConnectWise agreement id.
    pub id: i64,
    /// The ConnectWise company the agreement belongs to.
    pub company_id: i64,
    /// ConnectWise `agreementStatus`: `Active`, `Cancelled`, `Expired` or `Inactive`.
    pub status: String,
    /// ConnectWise `cancelledFlag`.
    pub cancelled_flag: bool,
    /// Agreement end date, if any.
    pub end_date: Option<NaiveDate>,
}

/// A ConnectWise agreement addition as cached by the catalog refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdditionFacts {
    /// ConnectWise addition id.
    pub id: i64,
    /// The addition's sequence number on its agreement (what the user picks); for a fractional one,
    /// its whole part.
    pub sequence_number: i64,
    /// ConnectWise's sequence number as sent when it is not a whole number (e.g. `2.5`): such an
    /// addition cannot be named by a (whole) sequence number.
    pub fractional_sequence_number: Option<String>,
    /// The catalog product id, if known.
    pub product_id: Option<i64>,
    /// The catalog product identifier, if known.
    pub product_identifier: Option<String>,
    /// The date the addition was cancelled, if any.
    pub cancelled_date: Option<NaiveDate>,
}

/// Everything [`check_product_mapping`] needs to decide on one mapping.
#[derive(Debug, Clone, Copy)]
pub struct MappingFacts<'a> {
    /// The date the check runs on.
    pub today: NaiveDate,
    /// Consumption sync is on (false also when ConnectWise is not configured).
    pub consumption_sync_enabled: bool,
    /// The mapped product module.
    pub module: ProductModule,
    /// The mapped usage metric.
    pub usage: UsageMetric,
    /// The mapped interval method.
    pub interval: IntervalMethod,
    /// The customer's mapped ConnectWise company.
    pub customer_company_id: Option<i64>,
    /// The customer's license for `module`, if any.
    pub license: Option<&'a LicenseWindow>,
    /// The agreement, looked up by id in the tenant's catalog.
    pub agreement: Option<&'a AgreementFacts>,
    /// All additions of that agreement.
    pub agreement_additions: &'a [AdditionFacts],
    /// The sequence number the mapping names.
    pub sequence_number: i64,
}

/// The addition a valid mapping resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAddition {
    /// ConnectWise addition id.
    pub addition_id: i64,
    /// Its catalog product id, if known.
    pub product_id: Option<i64>,
    /// Its catalog product identifier, if known.
    pub product_identifier: Option<String>,
}

/// A broken business rule, ready to become a GraphQL `UserError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RuleViolation {
    /// Stable code from [`codes`].
    pub code: &'static str,
    /// The input field at fault (GraphQL name), if any.
    pub field: Option<&'static str>,
    /// A human sentence naming the values involved.
    pub message: String,
}

impl RuleViolation {
    fn new(code: &'static str, field: Option<&'static str>, message: String) -> Self {
        Self { code, field, message }
    }
}

/// Whether the addition has a cancelled date in the past (strictly before `today`).
pub fn addition_is_cancelled(a: &AdditionFacts, today: NaiveDate) -> bool {
    a.cancelled_date.is_some_and(|date| date < today)
}

/// Whether the agreement is active: status `Active` (any case), not flagged cancelled, and not ended
/// before `today`.
pub fn agreement_is_active(a: &AgreementFacts, today: NaiveDate) -> bool {
    agreement_status_is_active(&a.status) && !a.cancelled_flag && a.end_date.is_none_or(|end| end >= today)
}

/// Whether a ConnectWise `agreementStatus` means active.
pub fn agreement_status_is_active(status: &str) -> bool {
    status.eq_ignore_ascii_case("active")
}

/// The checks a push makes on the addition it read from ConnectWise just before writing it (the
/// same rules as mapping validation, on the live record): cancelled in the past →
/// `ADDITION_CANCELLED`; another product than the mapping resolved → `ADDITION_CHANGED`; agreement
/// not active → `AGREEMENT_INACTIVE`.
///
/// ```
/// use domain::{AdditionFacts, check_addition_before_push};
/// let today = domain::parse_day("2026-03-02").unwrap();
/// let a = AdditionFacts {
///     id: 9, sequence_number: 1, fractional_sequence_number: None,
///     product_id: Some(7), product_identifier: None, cancelled_date: None,
/// };
/// assert!(check_addition_before_push(&a, Some("Active"), Some(7), today).is_ok());
/// assert_eq!(check_addition_before_push(&a, Some("Active"), Some(8), today).unwrap_err().code, "ADDITION_CHANGED");
/// ```
pub fn check_addition_before_push(
    a: &AdditionFacts,
    agreement_status: Option<&str>,
    mapped_product: Option<i64>,
    today: NaiveDate,
) -> Result<(), RuleViolation> {
    use codes::*;
    if addition_is_cancelled(a, today) {
        let when = a.cancelled_date.map(|d| d.to_string()).unwrap_or_default();
        return Err(RuleViolation::new(ADDITION_CANCELLED, None, format!("addition {} was cancelled on {when}", a.id)));
    }
    if let Some(expected) = mapped_product
        && a.product_id != Some(expected)
    {
        let now_holds = a.product_id.map(|p| p.to_string()).unwrap_or_else(|| "none".into());
        return Err(RuleViolation::new(
            ADDITION_CHANGED,
            None,
            format!("addition {} now holds product {now_holds} instead of the mapped product {expected}", a.id),
        ));
    }
    if let Some(status) = agreement_status
        && !agreement_status_is_active(status)
    {
        return Err(RuleViolation::new(AGREEMENT_INACTIVE, None, format!("the agreement of addition {} is {status}", a.id)));
    }
    Ok(())
}

/// Whether the license still runs on `today` (not deprovisioned before it).
pub fn license_is_active(w: &LicenseWindow, today: NaiveDate) -> bool {
    w.deprovisioned_on.is_none_or(|end| end >= today)
}

/// Validates a product mapping against the mapping rules and resolves its addition.
///
/// Checks run in this order and the first failure is returned: `CONSUMPTION_SYNC_DISABLED`,
/// `USAGE_NOT_ALLOWED`, `INTERVAL_NOT_ALLOWED`, `CUSTOMER_NOT_MAPPED`, `MODULE_NOT_PROVISIONED`,
/// `AGREEMENT_NOT_FOUND`, `AGREEMENT_INACTIVE`, then on the additions with the sequence number:
/// `ADDITION_NOT_FOUND` (none), `ADDITION_AMBIGUOUS` (several not cancelled), `ADDITION_CANCELLED`
/// (all cancelled), `ADDITION_PRODUCT_NOT_UNIQUE` (another non-cancelled addition of the agreement
/// has the same product). The duplicate-mapping and version rules need the database and are not
/// checked here.
pub fn check_product_mapping(f: &MappingFacts) -> Result<ResolvedAddition, RuleViolation> {
    use codes::*;
    if !f.consumption_sync_enabled {
        return Err(RuleViolation::new(
            CONSUMPTION_SYNC_DISABLED,
            None,
            "Consumption sync is disabled: configure ConnectWise and turn consumption sync on first.".to_owned(),
        ));
    }
    if !f.module.allows_usage(f.usage) {
        return Err(RuleViolation::new(
            USAGE_NOT_ALLOWED,
            Some("usage"),
            format!("Usage {} is not available for module {} (allowed: {}).", f.usage, f.module, join(f.module.usage_metrics())),
        ));
    }
    if !f.module.allows_interval(f.interval) {
        return Err(RuleViolation::new(
            INTERVAL_NOT_ALLOWED,
            Some("interval"),
            format!("Interval {} is not available for module {} (allowed: {}).", f.interval, f.module, join(f.module.interval_methods())),
        ));
    }
    let Some(company_id) = f.customer_company_id else {
        return Err(RuleViolation::new(
            CUSTOMER_NOT_MAPPED,
            Some("customerId"),
            "The customer is not mapped to a ConnectWise company.".to_owned(),
        ));
    };
    if !f.license.is_some_and(|l| license_is_active(l, f.today)) {
        return Err(RuleViolation::new(
            MODULE_NOT_PROVISIONED,
            Some("productModule"),
            format!("The customer has no active {} license.", f.module),
        ));
    }
    let agreement = match f.agreement {
        Some(a) if a.company_id == company_id => a,
        Some(a) => {
            return Err(RuleViolation::new(
                AGREEMENT_NOT_FOUND,
                Some("cwAgreementId"),
                format!(
                    "Agreement {} belongs to ConnectWise company {}, not to the customer's company {}.",
                    a.id, a.company_id, company_id
                ),
            ));
        }
        None => {
            return Err(RuleViolation::new(
                AGREEMENT_NOT_FOUND,
                Some("cwAgreementId"),
                "The agreement does not exist in the ConnectWise catalog; refresh the catalog if it is new.".to_owned(),
            ));
        }
    };
    if !agreement_is_active(agreement, f.today) {
        return Err(RuleViolation::new(
            AGREEMENT_INACTIVE,
            Some("cwAgreementId"),
            format!(
                "Agreement {} is not active (status {}{}{}).",
                agreement.id,
                agreement.status,
                if agreement.cancelled_flag { ", cancelled" } else { "" },
                agreement.end_date.filter(|end| *end < f.today).map(|end| format!(", ended {end}")).unwrap_or_default()
            ),
        ));
    }
    resolve_addition(f, agreement.id)
}

/// The addition-level checks of [`check_product_mapping`].
fn resolve_addition(f: &MappingFacts, agreement_id: i64) -> Result<ResolvedAddition, RuleViolation> {
    use codes::*;
    let seq = f.sequence_number;
    let field = Some("cwSequenceNumber");
    let (with_seq, fractional): (Vec<&AdditionFacts>, Vec<&AdditionFacts>) =
        f.agreement_additions.iter().filter(|a| a.sequence_number == seq).partition(|a| a.fractional_sequence_number.is_none());
    if let ([], [first, ..]) = (with_seq.as_slice(), fractional.as_slice()) {
        return Err(RuleViolation::new(
            ADDITION_NOT_FOUND,
            field,
            format!(
                "Agreement {agreement_id} has no addition with sequence number {seq}: addition {} has the sequence number {} in \
                 ConnectWise, which is not a whole number. Give it a whole sequence number in ConnectWise and refresh the catalog.",
                first.id,
                first.fractional_sequence_number.as_deref().unwrap_or("?")
            ),
        ));
    }
    let live: Vec<&AdditionFacts> = with_seq.iter().copied().filter(|a| !addition_is_cancelled(a, f.today)).collect();
    let addition = match (with_seq.as_slice(), live.as_slice()) {
        ([], _) => {
            return Err(RuleViolation::new(
                ADDITION_NOT_FOUND,
                field,
                format!("Agreement {agreement_id} has no addition with sequence number {seq}."),
            ));
        }
        (_, [one]) => *one,
        (_, []) => {
            return Err(RuleViolation::new(
                ADDITION_CANCELLED,
                field,
                format!("The addition with sequence number {seq} on agreement {agreement_id} is cancelled."),
            ));
        }
        (_, several) => {
            return Err(RuleViolation::new(
                ADDITION_AMBIGUOUS,
                field,
                format!("Agreement {agreement_id} has {} non-cancelled additions with sequence number {seq}.", several.len()),
            ));
        }
    };
    if let Some(product_id) = addition.product_id {
        let clash = f
            .agreement_additions
            .iter()
            .find(|other| other.id != addition.id && other.product_id == Some(product_id) && !addition_is_cancelled(other, f.today));
        if let Some(other) = clash {
            return Err(RuleViolation::new(
                ADDITION_PRODUCT_NOT_UNIQUE,
                field,
                format!(
                    "Product {} of addition {seq} is also on addition {} of agreement {agreement_id}; \
                     the product must be unique on the agreement.",
                    addition.product_identifier.clone().unwrap_or_else(|| product_id.to_string()),
                    other.sequence_number
                ),
            ));
        }
    }
    Ok(ResolvedAddition {
        addition_id: addition.id,
        product_id: addition.product_id,
        product_identifier: addition.product_identifier.clone(),
    })
}

/// A mapping's (module, usage, interval) as the duplicate rules see it.
pub type MappingKey = (ProductModule, UsageMetric, IntervalMethod);

/// The `SUM` exclusivity rule of `DUPLICATE_USAGE_MAPPING`: a `SUM` mapping bills all three
/// Enterprise Workloads storage types, so it may not stand beside any other Enterprise Workloads
/// mapping of the same customer (either order, a second `SUM` included). `others` are the
/// customer's other mappings.
///
/// ```
/// use domain::{IntervalMethod::*, ProductModule::*, UsageMetric::*, sum_is_exclusive};
/// assert!(!sum_is_exclusive(&[(EnterpriseWorkloads, LtrStorage, Average)], (EnterpriseWorkloads, CloudStorage, Sum)));
/// assert!(sum_is_exclusive(&[(Microsoft365, ActiveUsers, Sum)], (EnterpriseWorkloads, CloudStorage, Sum)));
/// ```
pub fn sum_is_exclusive(others: &[MappingKey], new: MappingKey) -> bool {
    let ew = |k: &MappingKey| k.0 == ProductModule::EnterpriseWorkloads;
    let sum = |k: &MappingKey| ew(k) && k.2 == IntervalMethod::Sum;
    if !ew(&new) {
        return true;
    }
    if sum(&new) { !others.iter().any(ew) } else { !others.iter().any(sum) }
}

/// `A, B, C` from contract names.
fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        crate::parse_day(s).unwrap()
    }
    fn addition(id: i64, seq: i64, product: Option<i64>, cancelled: Option<&str>) -> AdditionFacts {
        AdditionFacts {
            id,
            sequence_number: seq,
            fractional_sequence_number: None,
            product_id: product,
            product_identifier: product.map(|p| format!("PROD-{p}")),
            cancelled_date: cancelled.map(d),
        }
    }

    struct Fixture {
        license: LicenseWindow,
        agreement: AgreementFacts,
        additions: Vec<AdditionFacts>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                license: LicenseWindow { provisioned_on: d("2025-01-01"), deprovisioned_on: None },
                agreement: AgreementFacts { id: 77, company_id: 10, status: "Active".into(), cancelled_flag: false, end_date: None },
                additions: vec![addition(1, 1, Some(500), None), addition(2, 2, Some(501), None)],
            }
        }
        fn facts(&self) -> MappingFacts<'_> {
            MappingFacts {
                today: d("2026-03-15"),
                consumption_sync_enabled: true,
                module: ProductModule::Microsoft365,
                usage: UsageMetric::ActiveUsers,
                interval: IntervalMethod::Average,
                customer_company_id: Some(10),
                license: Some(&self.license),
                agreement: Some(&self.agreement),
                agreement_additions: &self.additions,
                sequence_number: 1,
            }
        }
    }

    fn code(r: Result<ResolvedAddition, RuleViolation>) -> (&'static str, Option<&'static str>) {
        let v = r.unwrap_err();
        assert!(!v.message.is_empty());
        (v.code, v.field)
    }

    #[test]
    fn valid_mapping_resolves_the_addition() {
        let fx = Fixture::new();
        assert_eq!(
            check_product_mapping(&fx.facts()),
            Ok(ResolvedAddition { addition_id: 1, product_id: Some(500), product_identifier: Some("PROD-500".into()) })
        );
        let ew = MappingFacts {
            module: ProductModule::EnterpriseWorkloads,
            usage: UsageMetric::LtrStorage,
            interval: IntervalMethod::Sum,
            sequence_number: 2,
            ..fx.facts()
        };
        assert_eq!(check_product_mapping(&ew).unwrap().addition_id, 2);
    }

    #[test]
    fn sync_disabled() {
        let fx = Fixture::new();
        let f = MappingFacts { consumption_sync_enabled: false, ..fx.facts() };
        assert_eq!(code(check_product_mapping(&f)), (codes::CONSUMPTION_SYNC_DISABLED, None));
    }

    #[test]
    fn usage_not_allowed() {
        let fx = Fixture::new();
        let f = MappingFacts { usage: UsageMetric::CloudStorage, ..fx.facts() };
        let v = check_product_mapping(&f).unwrap_err();
        assert_eq!((v.code, v.field), (codes::USAGE_NOT_ALLOWED, Some("usage")));
        assert_eq!(v.message, "Usage CLOUD_STORAGE is not available for module MICROSOFT_365 (allowed: ACTIVE_USERS, PRESERVED_USERS).");
        let f = MappingFacts { module: ProductModule::EnterpriseWorkloads, usage: UsageMetric::ActiveUsers, ..fx.facts() };
        assert_eq!(code(check_product_mapping(&f)), (codes::USAGE_NOT_ALLOWED, Some("usage")));
    }

    #[test]
    fn interval_not_allowed() {
        let fx = Fixture::new();
        for module in [ProductModule::Microsoft365, ProductModule::Endpoints, ProductModule::GoogleWorkspace] {
            let f = MappingFacts { module, interval: IntervalMethod::Sum, ..fx.facts() };
            assert_eq!(code(check_product_mapping(&f)), (codes::INTERVAL_NOT_ALLOWED, Some("interval")));
        }
    }

    #[test]
    fn customer_not_mapped() {
        let fx = Fixture::new();
        let f = MappingFacts { customer_company_id: None, ..fx.facts() };
        assert_eq!(code(check_product_mapping(&f)), (codes::CUSTOMER_NOT_MAPPED, Some("customerId")));
    }

    #[test]
    fn module_not_provisioned() {
        let fx = Fixture::new();
        let f = MappingFacts { license: None, ..fx.facts() };
        assert_eq!(code(check_product_mapping(&f)), (codes::MODULE_NOT_PROVISIONED, Some("productModule")));
        let ended = LicenseWindow { provisioned_on: d("2025-01-01"), deprovisioned_on: Some(d("2026-03-14")) };
        let f = MappingFacts { license: Some(&ended), ..fx.facts() };
        assert_eq!(code(check_product_mapping(&f)), (codes::MODULE_NOT_PROVISIONED, Some("productModule")));
        // deprovisioned today: still active today
        let ends_today = LicenseWindow { deprovisioned_on: Some(d("2026-03-15")), ..ended };
        let f = MappingFacts { license: Some(&ends_today), ..fx.facts() };
        assert!(check_product_mapping(&f).is_ok());
    }

    #[test]
    fn agreement_not_found() {
        let fx = Fixture::new();
        let f = MappingFacts { agreement: None, ..fx.facts() };
        assert_eq!(code(check_product_mapping(&f)), (codes::AGREEMENT_NOT_FOUND, Some("cwAgreementId")));
        let f = MappingFacts { customer_company_id: Some(11), ..fx.facts() };
        assert_eq!(code(check_product_mapping(&f)), (codes::AGREEMENT_NOT_FOUND, Some("cwAgreementId")));
    }

    #[test]
    fn agreement_inactive() {
        let base = Fixture::new();
        let variants = [
            AgreementFacts { status: "Cancelled".into(), ..base.agreement.clone() },
            AgreementFacts { status: "Expired".into(), ..base.agreement.clone() },
            AgreementFacts { status: "Inactive".into(), ..base.agreement.clone() },
            AgreementFacts { cancelled_flag: true, ..base.agreement.clone() },
            AgreementFacts { end_date: Some(d("2026-03-14")), ..base.agreement.clone() },
        ];
        for agreement in variants {
            let fx = Fixture { agreement, ..Fixture::new() };
            assert_eq!(code(check_product_mapping(&fx.facts())), (codes::AGREEMENT_INACTIVE, Some("cwAgreementId")), "{:?}", fx.agreement);
        }
        // case-insensitive status, end date today still active
        let fx = Fixture {
            agreement: AgreementFacts { status: "ACTIVE".into(), end_date: Some(d("2026-03-15")), ..base.agreement.clone() },
            ..Fixture::new()
        };
        assert!(check_product_mapping(&fx.facts()).is_ok());
    }

    #[test]
    fn addition_not_found() {
        let fx = Fixture::new();
        let f = MappingFacts { sequence_number: 9, ..fx.facts() };
        let v = check_product_mapping(&f).unwrap_err();
        assert_eq!((v.code, v.field), (codes::ADDITION_NOT_FOUND, Some("cwSequenceNumber")));
        assert_eq!(v.message, "Agreement 77 has no addition with sequence number 9.");
        let empty = Fixture { additions: vec![], ..Fixture::new() };
        assert_eq!(code(check_product_mapping(&empty.facts())).0, codes::ADDITION_NOT_FOUND);
    }

    #[test]
    fn fractional_sequence_number_is_refused_clearly() {
        let fractional = AdditionFacts { fractional_sequence_number: Some("2.5".into()), ..addition(3, 2, Some(502), None) };
        // Only the fractional addition has whole part 2: refused, naming its real number.
        let fx = Fixture { additions: vec![addition(1, 1, Some(500), None), fractional.clone()], ..Fixture::new() };
        let v = check_product_mapping(&MappingFacts { sequence_number: 2, ..fx.facts() }).unwrap_err();
        assert_eq!((v.code, v.field), (codes::ADDITION_NOT_FOUND, Some("cwSequenceNumber")));
        assert!(v.message.contains("addition 3 has the sequence number 2.5") && v.message.contains("not a whole number"), "{}", v.message);
        // A whole 2 next to it is the one named.
        let fx = Fixture { additions: vec![addition(2, 2, Some(501), None), fractional], ..Fixture::new() };
        assert_eq!(check_product_mapping(&MappingFacts { sequence_number: 2, ..fx.facts() }).unwrap().addition_id, 2);
    }

    #[test]
    fn addition_ambiguous() {
        let fx = Fixture {
            additions: vec![
                addition(1, 1, Some(500), None),
                addition(3, 1, Some(502), Some("2026-03-15")), // cancelled today: not in the past
            ],
            ..Fixture::new()
        };
        assert_eq!(code(check_product_mapping(&fx.facts())), (codes::ADDITION_AMBIGUOUS, Some("cwSequenceNumber")));
    }

    #[test]
    fn addition_cancelled() {
        let fx = Fixture {
            additions: vec![addition(1, 1, Some(500), Some("2026-03-14")), addition(3, 1, Some(502), Some("2025-01-01"))],
            ..Fixture::new()
        };
        assert_eq!(code(check_product_mapping(&fx.facts())), (codes::ADDITION_CANCELLED, Some("cwSequenceNumber")));
    }

    #[test]
    fn one_live_addition_among_cancelled_ones_resolves() {
        let fx = Fixture {
            additions: vec![
                addition(1, 1, Some(500), Some("2026-01-01")),
                addition(3, 1, Some(502), None),
                addition(4, 2, Some(500), None), // same product as the cancelled one: fine
            ],
            ..Fixture::new()
        };
        assert_eq!(check_product_mapping(&fx.facts()).unwrap().addition_id, 3);
    }

    #[test]
    fn addition_product_not_unique() {
        let fx = Fixture { additions: vec![addition(1, 1, Some(500), None), addition(2, 2, Some(500), None)], ..Fixture::new() };
        let v = check_product_mapping(&fx.facts()).unwrap_err();
        assert_eq!((v.code, v.field), (codes::ADDITION_PRODUCT_NOT_UNIQUE, Some("cwSequenceNumber")));
        assert!(v.message.contains("PROD-500"), "{}", v.message);
        // a cancelled other addition with the same product does not clash
        let fx =
            Fixture { additions: vec![addition(1, 1, Some(500), None), addition(2, 2, Some(500), Some("2026-02-01"))], ..Fixture::new() };
        assert!(check_product_mapping(&fx.facts()).is_ok());
        // unknown products never clash
        let fx = Fixture { additions: vec![addition(1, 1, None, None), addition(2, 2, None, None)], ..Fixture::new() };
        assert_eq!(check_product_mapping(&fx.facts()), Ok(ResolvedAddition { addition_id: 1, product_id: None, product_identifier: None }));
    }

    #[test]
    fn checks_run_in_order() {
        // Every rule broken at once; fixing them one by one reveals the next code in order.
        let bad_license = LicenseWindow { provisioned_on: d("2020-01-01"), deprovisioned_on: Some(d("2021-01-01")) };
        let bad_agreement = AgreementFacts { id: 77, company_id: 99, status: "Expired".into(), cancelled_flag: true, end_date: None };
        let inactive_agreement = AgreementFacts { company_id: 10, ..bad_agreement.clone() };
        let good = Fixture::new();
        let dup_product = vec![addition(1, 1, Some(500), None), addition(2, 2, Some(500), None)];
        let ambiguous = vec![addition(1, 1, Some(500), None), addition(2, 1, Some(501), None)];
        let cancelled = vec![addition(1, 1, Some(500), Some("2020-01-01"))];
        let none: Vec<AdditionFacts> = vec![];

        let mut f = MappingFacts {
            today: d("2026-03-15"),
            consumption_sync_enabled: false,
            module: ProductModule::Microsoft365,
            usage: UsageMetric::CloudStorage,
            interval: IntervalMethod::Sum,
            customer_company_id: None,
            license: Some(&bad_license),
            agreement: Some(&bad_agreement),
            agreement_additions: &none,
            sequence_number: 1,
        };
        let mut seen = vec![];
        let mut step = |f: &MappingFacts| seen.push(check_product_mapping(f).unwrap_err().code);
        step(&f);
        f.consumption_sync_enabled = true;
        step(&f);
        f.usage = UsageMetric::ActiveUsers;
        step(&f);
        f.interval = IntervalMethod::Maximum;
        step(&f);
        f.customer_company_id = Some(10);
        step(&f);
        f.license = Some(&good.license);
        step(&f);
        f.agreement = Some(&inactive_agreement);
        step(&f);
        f.agreement = Some(&good.agreement);
        step(&f);
        f.agreement_additions = &ambiguous;
        step(&f);
        f.agreement_additions = &cancelled;
        step(&f);
        f.agreement_additions = &dup_product;
        step(&f);
        assert_eq!(
            seen,
            [
                codes::CONSUMPTION_SYNC_DISABLED,
                codes::USAGE_NOT_ALLOWED,
                codes::INTERVAL_NOT_ALLOWED,
                codes::CUSTOMER_NOT_MAPPED,
                codes::MODULE_NOT_PROVISIONED,
                codes::AGREEMENT_NOT_FOUND,
                codes::AGREEMENT_INACTIVE,
                codes::ADDITION_NOT_FOUND,
                codes::ADDITION_AMBIGUOUS,
                codes::ADDITION_CANCELLED,
                codes::ADDITION_PRODUCT_NOT_UNIQUE,
            ]
        );
        f.agreement_additions = &good.additions;
        assert!(check_product_mapping(&f).is_ok());
    }

    #[test]
    fn predicates() {
        let today = d("2026-03-15");
        assert!(!addition_is_cancelled(&addition(1, 1, None, None), today));
        assert!(!addition_is_cancelled(&addition(1, 1, None, Some("2026-03-15")), today));
        assert!(!addition_is_cancelled(&addition(1, 1, None, Some("2026-04-01")), today));
        assert!(addition_is_cancelled(&addition(1, 1, None, Some("2026-03-14")), today));
        let w = LicenseWindow { provisioned_on: d("2026-01-01"), deprovisioned_on: None };
        assert!(license_is_active(&w, today));
        assert!(license_is_active(&LicenseWindow { deprovisioned_on: Some(today), ..w }, today));
        assert!(!license_is_active(&LicenseWindow { deprovisioned_on: Some(d("2026-03-14")), ..w }, today));
        let a = Fixture::new().agreement;
        assert!(agreement_is_active(&a, today));
        assert!(agreement_is_active(&AgreementFacts { status: "active".into(), ..a.clone() }, today));
        assert!(!agreement_is_active(&AgreementFacts { status: "Activ".into(), ..a }, today));
    }

    #[test]
    fn codes_are_their_own_names() {
        macro_rules! check {
            ($($code:ident),+ $(,)?) => {
                let all = [$(codes::$code),+];
                $(assert_eq!(codes::$code, stringify!($code));)+
                let unique: std::collections::BTreeSet<_> = all.iter().collect();
                assert_eq!(unique.len(), all.len());
            };
        }
        check!(
            CONSUMPTION_SYNC_DISABLED,
            CUSTOMER_NOT_MAPPED,
            MODULE_NOT_PROVISIONED,
            USAGE_NOT_ALLOWED,
            INTERVAL_NOT_ALLOWED,
            AGREEMENT_NOT_FOUND,
            AGREEMENT_INACTIVE,
            ADDITION_NOT_FOUND,
            ADDITION_AMBIGUOUS,
            ADDITION_CANCELLED,
            ADDITION_PRODUCT_NOT_UNIQUE,
            DUPLICATE_ADDITION_MAPPING,
            DUPLICATE_USAGE_MAPPING,
            VERSION_CONFLICT,
            NOT_FOUND,
            COMPANY_NOT_ACTIVE,
            COMPANY_ALREADY_MAPPED,
            CUSTOMER_HAS_PRODUCT_MAPPINGS,
            INSECURE_SITE_URL,
            INVALID_VALUE,
            INVALID_DAY,
            UNKNOWN_CUSTOMER,
            DUPLICATE_SAMPLE,
            BATCH_TOO_LARGE,
            PERIOD_NOT_CLOSED,
            PERIOD_SUPERSEDED,
            RUN_IN_PROGRESS,
            ADDITION_CHANGED,
            CW_AUTH_FAILED,
            INVALID_INPUT,
            PUSH_NOT_RETRYABLE,
        );
    }
}
