//! ConnectWise resource shapes (the fields this project uses).

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer, ser::SerializeStruct};

/// A successful response: the decoded body plus what to log about the call.
#[derive(Debug, Clone, PartialEq)]
pub struct CwResponse<T> {
    /// The decoded body.
    pub body: T,
    /// HTTP status (2xx).
    pub status: u16,
    /// The `x-cw-request-id` response header.
    pub request_id: Option<String>,
    /// Time from sending the request until the body was read.
    pub duration: Duration,
}

impl<T> CwResponse<T> {
    /// Transforms the body, keeping the call's metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> CwResponse<U> {
        CwResponse { body: f(self.body), status: self.status, request_id: self.request_id, duration: self.duration }
    }
}

/// A JSON number kept exactly as ConnectWise wrote it (`12.3456789012345678` stays that text; it is
/// never rounded through `f64`). Used for money (`unitPrice`, `unitCost`, `lessIncluded`) and for
/// `sequenceNumber`, which the official schema declares a `double`.
///
/// Equality compares the text: `2.0` and `2` are different values of this type (use
/// [`CwNumber::as_whole`] to compare whole numbers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CwNumber(String);

impl CwNumber {
    /// The number's text, exactly as received (e.g. `"10.125"`, `"2.0"`, `"1e3"`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as an `i64` when it is a whole number in range (`2`, `2.0`, `2.50e1`); `None` when
    /// it has a fractional part (`2.5`) or does not fit.
    pub fn as_whole(&self) -> Option<i64> {
        let (negative, digits, exp) = decimal_parts(&self.0)?;
        // Drop trailing zeros into the exponent: 2500 × 10^-2 → 25 × 10^0.
        let trimmed = digits.trim_end_matches('0');
        let exp = exp.checked_add(i64::try_from(digits.len() - trimmed.len()).ok()?)?;
        if trimmed.is_empty() {
            return Some(0);
        }
        if exp < 0 {
            return None;
        }
        let mut value: i128 = trimmed.parse().ok()?;
        for _ in 0..exp {
            value = value.checked_mul(10).filter(|v| *v <= i128::from(i64::MAX) + 1)?;
        }
        i64::try_from(if negative { -value } else { value }).ok()
    }

    /// The value rounded toward zero (`2.5` → 2, `-2.5` → -2, `2` → 2); `None` when out of range.
    pub fn whole_part(&self) -> Option<i64> {
        let (negative, digits, exp) = decimal_parts(&self.0)?;
        if exp >= 0 {
            return self.as_whole();
        }
        let drop = usize::try_from(exp.unsigned_abs()).ok()?;
        let kept = &digits[..digits.len().saturating_sub(drop)];
        if kept.is_empty() {
            return Some(0);
        }
        let value: i128 = kept.parse().ok()?;
        i64::try_from(if negative { -value } else { value }).ok()
    }

    /// Whether the value is a whole number that fits an `i64`.
    pub fn is_whole(&self) -> bool {
        self.as_whole().is_some()
    }
}

/// `(negative, significant digits, exponent)` of a JSON number: value = ±digits × 10^exponent.
/// `None` when `s` is not a JSON number.
fn decimal_parts(s: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].strip_prefix('+').unwrap_or(&rest[i + 1..]).parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let json_int = int == "0" || (!int.is_empty() && !int.starts_with('0'));
    let digits_only = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !json_int || !digits_only(int) || frac.is_some_and(|f| f.is_empty() || !digits_only(f)) {
        return None;
    }
    let frac = frac.unwrap_or("");
    let digits = format!("{int}{frac}").trim_start_matches('0').to_string();
    let exp = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
    Some((negative, digits, exp))
}

impl std::str::FromStr for CwNumber {
    type Err = String;

    /// Accepts exactly the JSON number grammar.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match decimal_parts(s) {
            Some(_) => Ok(CwNumber(s.to_string())),
            None => Err(format!("{s:?} is not a JSON number")),
        }
    }
}

impl std::fmt::Display for CwNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for CwNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written as the raw number text, so serde_json emits it unchanged.
        let raw = serde_json::value::RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CwNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The raw JSON text, so no digit is lost to f64 on the way.
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        raw.get().trim().parse().map_err(serde::de::Error::custom)
    }
}

/// A reference to another record: `{id, name}` (and `identifier` for company references).
///
/// ConnectWise's schema declares every reference id nullable, so `id` is `None` when it sends
/// `null` (or leaves it out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedRef {
    /// Record id, when ConnectWise sends one.
    #[serde(default)]
    pub id: Option<i64>,
    /// Display name, when ConnectWise sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Short identifier (company references).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

/// A product reference on an addition: `{id, identifier}` (ConnectWise's `IvItemReference`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductRef {
    /// Product (catalog item) id; nullable in ConnectWise's schema.
    #[serde(default)]
    pub id: Option<i64>,
    /// Product identifier (the catalog item's code).
    #[serde(default)]
    pub identifier: Option<String>,
}

/// A company (`/company/companies`).
///
/// Every field is optional in ConnectWise's schema except `identifier` and `name`; a record
/// without an `id` decodes (and callers that key on ids skip it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    /// Company id.
    #[serde(default)]
    pub id: Option<i64>,
    /// Short identifier (≤ 30 characters).
    #[serde(default)]
    pub identifier: String,
    /// Name (≤ 50 characters).
    #[serde(default)]
    pub name: String,
    /// Company status, e.g. `{id: 1, name: "Active"}`.
    #[serde(default)]
    pub status: Option<NamedRef>,
    /// Whether the company is deleted; `None` when ConnectWise sends `null` (see
    /// [`Company::is_deleted`]).
    #[serde(default)]
    pub deleted_flag: Option<bool>,
}

impl Company {
    /// Whether the company is deleted. A `null` or missing `deletedFlag` is ConnectWise's default,
    /// `false` (not deleted).
    pub fn is_deleted(&self) -> bool {
        self.deleted_flag.unwrap_or(false)
    }
}

/// An agreement (`/finance/agreements`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    /// Agreement id.
    #[serde(default)]
    pub id: Option<i64>,
    /// Agreement name.
    #[serde(default)]
    pub name: String,
    /// Agreement type, e.g. `{id, name: "Managed Services"}`.
    #[serde(default, rename = "type")]
    pub type_: Option<NamedRef>,
    /// The agreement's company `{id, identifier, name}` (its `id` is nullable).
    #[serde(default)]
    pub company: NamedRef,
    /// `Active`, `Cancelled`, `Expired` or `Inactive` (nullable).
    #[serde(default)]
    pub agreement_status: Option<String>,
    /// Whether the agreement is cancelled; `None` for `null` (see [`Agreement::is_cancelled`]).
    #[serde(default)]
    pub cancelled_flag: Option<bool>,
    /// Start date (ISO 8601 as sent by ConnectWise).
    #[serde(default)]
    pub start_date: Option<String>,
    /// End date (ISO 8601 as sent by ConnectWise).
    #[serde(default)]
    pub end_date: Option<String>,
    /// Date of the next invoice run (ISO 8601 as sent by ConnectWise).
    #[serde(default)]
    pub next_invoice_date: Option<String>,
}

impl Agreement {
    /// Whether the agreement is flagged cancelled. A `null` or missing `cancelledFlag` is
    /// ConnectWise's default, `false`.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled_flag.unwrap_or(false)
    }
}

/// An agreement addition (`/finance/agreements/{id}/additions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Addition {
    /// Addition id (the key; `sequence_number` is not unique).
    #[serde(default)]
    pub id: Option<i64>,
    /// The product `{id, identifier}` (required by ConnectWise's schema; its `id` is nullable).
    #[serde(default)]
    pub product: Option<ProductRef>,
    /// Quantity exactly as sent (may be fractional).
    #[serde(default)]
    pub quantity: Option<serde_json::Number>,
    /// Quantity included in the agreement's price, exact (nullable).
    #[serde(default)]
    pub less_included: Option<CwNumber>,
    /// Unit price, exact (nullable; money: never rounded through `f64`).
    #[serde(default)]
    pub unit_price: Option<CwNumber>,
    /// Unit cost, exact (nullable; money: never rounded through `f64`).
    #[serde(default)]
    pub unit_cost: Option<CwNumber>,
    /// Display order on the invoice ("Sequence" in the UI). A `double` in ConnectWise's schema: a
    /// fractional value (`2.5`) is kept as such; see [`Addition::whole_sequence_number`].
    #[serde(default)]
    pub sequence_number: Option<CwNumber>,
    /// Effective date.
    #[serde(default)]
    pub effective_date: Option<String>,
    /// Cancelled date; set means the addition is cancelled.
    #[serde(default)]
    pub cancelled_date: Option<String>,
    /// Id of the agreement the addition belongs to.
    #[serde(default)]
    pub agreement_id: Option<i64>,
    /// The agreement's status (`Active|Cancelled|Expired|Inactive`).
    #[serde(default)]
    pub agreement_status: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// `Billable`, `DoNotBill` or `NoCharge` (required, but nullable).
    #[serde(default)]
    pub bill_customer: Option<String>,
    /// Unit of measure.
    #[serde(default)]
    pub uom: Option<String>,
}

impl Addition {
    /// The quantity as an integer when it is integral (`42` or `42.0`); `None` when absent,
    /// fractional or out of range.
    pub fn quantity_i64(&self) -> Option<i64> {
        let n = self.quantity.as_ref()?;
        if let Some(i) = n.as_i64() {
            return Some(i);
        }
        if n.is_u64() {
            return None; // larger than i64::MAX
        }
        let f = n.as_f64()?;
        // 2^63 is exactly representable; anything in [-2^63, 2^63) fits in i64.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) { Some(f as i64) } else { None }
    }

    /// The sequence number when it is whole (`2` and `2.0` are `Some(2)`); `None` when it is
    /// fractional (`2.5`), out of range or absent.
    pub fn whole_sequence_number(&self) -> Option<i64> {
        self.sequence_number.as_ref().and_then(CwNumber::as_whole)
    }

    /// The product id, when the addition has a product with a (non-null) id.
    pub fn product_id(&self) -> Option<i64> {
        self.product.as_ref().and_then(|p| p.id)
    }

    /// Whether the addition carries a cancelled date.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled_date.as_deref().is_some_and(|d| !d.trim().is_empty())
    }
}

/// A service board (`/service/boards`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    /// Board id.
    #[serde(default)]
    pub id: Option<i64>,
    /// Board name.
    #[serde(default)]
    pub name: String,
    /// Whether the board is inactive; `None` for `null` (see [`Board::is_inactive`]).
    #[serde(default)]
    pub inactive_flag: Option<bool>,
}

impl Board {
    /// Whether the board is inactive. A `null` or missing `inactiveFlag` is ConnectWise's
    /// default, `false` (active).
    pub fn is_inactive(&self) -> bool {
        self.inactive_flag.unwrap_or(false)
    }
}

/// Which per-board list to read with [`crate::CwClient::list_board_items`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoardItemKind {
    /// `/service/boards/{id}/teams`
    Teams,
    /// `/service/boards/{id}/statuses`
    Statuses,
    /// `/service/boards/{id}/types`
    Types,
    /// `/service/boards/{id}/subtypes`
    Subtypes,
}

impl BoardItemKind {
    /// All kinds, in a stable order.
    pub const ALL: [BoardItemKind; 4] = [BoardItemKind::Teams, BoardItemKind::Statuses, BoardItemKind::Types, BoardItemKind::Subtypes];

    /// The URL path segment (`teams`, `statuses`, `types`, `subtypes`).
    pub fn path_segment(self) -> &'static str {
        match self {
            BoardItemKind::Teams => "teams",
            BoardItemKind::Statuses => "statuses",
            BoardItemKind::Types => "types",
            BoardItemKind::Subtypes => "subtypes",
        }
    }
}

/// A board team, status, type or subtype (ConnectWise's `BoardTeam`, `BoardStatus`, `BoardType`,
/// `BoardSubType`: the fields they share).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoardItem {
    /// Item id.
    #[serde(default)]
    pub id: Option<i64>,
    /// Item name.
    #[serde(default)]
    pub name: String,
    /// Whether this is the board's default; `None` for `null`, and always for subtypes
    /// (`BoardSubType` has no `defaultFlag`). See [`BoardItem::is_default`].
    #[serde(default)]
    pub default_flag: Option<bool>,
}

impl BoardItem {
    /// Whether this is the board's default. A `null` or missing `defaultFlag` is ConnectWise's
    /// default, `false`; a subtype is never a default.
    pub fn is_default(&self) -> bool {
        self.default_flag.unwrap_or(false)
    }
}

/// Maximum length of a ticket summary and of `externalXRef`.
const TICKET_TEXT_MAX: usize = 100;

/// Truncates `s` to at most `max` characters (never splits a character).
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}

/// A ticket to create (`POST /service/tickets`).
///
/// Serializes to ConnectWise's shape `{summary, company:{id}, board:{id}, team:{id},
/// status:{id}, type:{id}, subType:{id}, initialDescription, externalXRef}` (absent optional
/// references are omitted), with `summary` and `externalXRef` truncated to 100 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTicket {
    /// Summary (truncated to 100 characters on serialization).
    pub summary: String,
    /// Company id.
    pub company_id: i64,
    /// Board id.
    pub board_id: i64,
    /// Team id (board's default when absent).
    pub team_id: Option<i64>,
    /// Status id (board's default when absent).
    pub status_id: Option<i64>,
    /// Type id.
    pub type_id: Option<i64>,
    /// Subtype id.
    pub subtype_id: Option<i64>,
    /// Initial description (accepted on create, never returned by ConnectWise).
    pub initial_description: String,
    /// De-duplication key (truncated to 100 characters on serialization).
    pub external_x_ref: String,
}

impl NewTicket {
    /// The summary as it will be sent (≤ 100 characters).
    pub fn summary_truncated(&self) -> &str {
        truncate_chars(&self.summary, TICKET_TEXT_MAX)
    }

    /// The `externalXRef` as it will be sent (≤ 100 characters).
    pub fn external_x_ref_truncated(&self) -> &str {
        truncate_chars(&self.external_x_ref, TICKET_TEXT_MAX)
    }
}

#[derive(Serialize)]
struct IdRef {
    id: i64,
}

impl Serialize for NewTicket {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut st = serializer.serialize_struct("NewTicket", 9)?;
        st.serialize_field("summary", self.summary_truncated())?;
        st.serialize_field("company", &IdRef { id: self.company_id })?;
        st.serialize_field("board", &IdRef { id: self.board_id })?;
        let opt = [("team", self.team_id), ("status", self.status_id), ("type", self.type_id), ("subType", self.subtype_id)];
        for (name, id) in opt {
            match id {
                Some(id) => st.serialize_field(name, &IdRef { id })?,
                None => st.skip_field(name)?,
            }
        }
        st.serialize_field("initialDescription", &self.initial_description)?;
        st.serialize_field("externalXRef", self.external_x_ref_truncated())?;
        st.end()
    }
}

/// A ticket as returned by ConnectWise (the fields this project uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    /// Ticket id (optional in ConnectWise's schema).
    #[serde(default)]
    pub id: Option<i64>,
    /// Summary.
    #[serde(default)]
    pub summary: String,
    /// External cross reference (our de-duplication key).
    #[serde(default, rename = "externalXRef")]
    pub external_x_ref: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn add(q: serde_json::Value) -> Addition {
        serde_json::from_value(json!({"id": 1, "quantity": q})).unwrap()
    }

    #[test]
    fn quantity_i64_only_integral() {
        assert_eq!(add(json!(42)).quantity_i64(), Some(42));
        assert_eq!(add(json!(42.0)).quantity_i64(), Some(42));
        assert_eq!(add(json!(-3)).quantity_i64(), Some(-3));
        assert_eq!(add(json!(42.5)).quantity_i64(), None);
        assert_eq!(add(json!(u64::MAX)).quantity_i64(), None);
        assert_eq!(add(json!(1e300)).quantity_i64(), None);
        assert_eq!(add(json!(null)).quantity_i64(), None);
    }

    #[test]
    fn models_decode_camel_case_and_ignore_unknown() {
        let a: Addition = serde_json::from_value(json!({
            "id": 7, "product": {"id": 3, "identifier": "M365-E3", "_info": {}},
            "quantity": 5, "sequenceNumber": 2, "cancelledDate": "2026-01-01T00:00:00Z",
            "agreementId": 9, "agreementStatus": "Active", "billCustomer": "Billable",
            "uom": "Each", "lessIncluded": 0, "_info": {"lastUpdated": "x"}
        }))
        .unwrap();
        assert_eq!(a.product_id(), Some(3));
        assert_eq!(a.whole_sequence_number(), Some(2));
        assert!(a.is_cancelled());
        assert_eq!(a.agreement_status.as_deref(), Some("Active"));

        let ag: Agreement = serde_json::from_value(json!({
            "id": 1, "name": "MSA", "type": {"id": 1, "name": "Managed Services"},
            "company": {"id": 5, "identifier": "ACME", "name": "Acme"},
            "agreementStatus": "Active", "cancelledFlag": false, "nextInvoiceDate": "2026-02-01"
        }))
        .unwrap();
        assert_eq!(ag.type_.unwrap().name.as_deref(), Some("Managed Services"));
        assert_eq!(ag.company.identifier.as_deref(), Some("ACME"));
        assert_eq!(ag.next_invoice_date.as_deref(), Some("2026-02-01"));

        let c: Company = serde_json::from_value(json!({"id": 2})).unwrap();
        assert!(!c.is_deleted());
    }

    /// The sparsest form ConnectWise's schema allows for each entity: only the required fields,
    /// each nullable one `null`, each required reference an empty object.
    #[test]
    fn sparsest_legal_form_of_every_entity_decodes() {
        let c: Company = serde_json::from_slice(br#"{"identifier": "", "name": ""}"#).unwrap();
        assert_eq!((c.id, c.is_deleted(), c.status), (None, false, None));
        let a: Agreement = serde_json::from_slice(br#"{"company": {}, "contact": {}, "name": "", "type": {}}"#).unwrap();
        assert_eq!((a.id, a.company.id, a.is_cancelled()), (None, None, false));
        let x: Addition = serde_json::from_slice(br#"{"billCustomer": null, "product": {}}"#).unwrap();
        assert_eq!((x.id, x.product_id(), x.quantity_i64(), x.whole_sequence_number()), (None, None, None, None));
        let b: Board = serde_json::from_slice(br#"{"department": {}, "location": {}, "name": ""}"#).unwrap();
        assert_eq!((b.id, b.is_inactive()), (None, false));
        for item in [r#"{"name": "", "teamLeader": {}}"#, r#"{"name": ""}"#] {
            let i: BoardItem = serde_json::from_str(item).unwrap();
            assert_eq!((i.id, i.is_default()), (None, false));
        }
        let t: Ticket = serde_json::from_slice(br#"{"company": {}, "summary": ""}"#).unwrap();
        assert_eq!((t.id, t.external_x_ref), (None, None));
    }

    /// Every nullable field ConnectWise may send as `null`.
    #[test]
    fn nulls_everywhere_the_schema_allows_them_decode() {
        let c: Company = serde_json::from_value(json!({
            "id": 1, "identifier": "A", "name": "A", "status": {"id": null, "name": "Active"}, "deletedFlag": null
        }))
        .unwrap();
        assert!(!c.is_deleted(), "null deletedFlag = not deleted");
        assert_eq!(c.status.unwrap().id, None);
        let a: Agreement = serde_json::from_value(json!({
            "id": 1, "name": "MSA", "type": {"id": null, "name": "T"}, "company": {"id": null, "identifier": "A"},
            "contact": {"id": null}, "agreementStatus": null, "cancelledFlag": null, "prorateFlag": null
        }))
        .unwrap();
        assert!(!a.is_cancelled(), "null cancelledFlag = not cancelled");
        assert_eq!((a.company.id, a.agreement_status), (None, None));
        let x: Addition = serde_json::from_value(json!({
            "id": 1, "product": {"id": null, "identifier": "P"}, "quantity": null, "lessIncluded": null,
            "unitPrice": null, "unitCost": null, "billCustomer": null, "sequenceNumber": null,
            "agreementId": null, "agreementStatus": null, "taxableFlag": null
        }))
        .unwrap();
        assert_eq!((x.product_id(), x.unit_price.clone(), x.sequence_number.clone(), x.agreement_id), (None, None, None, None));
        let b: Board = serde_json::from_value(json!({"id": 1, "name": "B", "inactiveFlag": null, "location": {"id": null}})).unwrap();
        assert!(!b.is_inactive(), "null inactiveFlag = active");
        let i: BoardItem = serde_json::from_value(json!({"id": 1, "name": "S", "defaultFlag": null})).unwrap();
        assert!(!i.is_default(), "null defaultFlag = not the default");
        let t: Ticket = serde_json::from_value(json!({"id": 5, "summary": "s", "company": {"id": null}, "team": {"id": null}})).unwrap();
        assert_eq!(t.id, Some(5));
    }

    #[test]
    fn sequence_numbers_are_doubles_kept_exactly() {
        let seq = |raw: &str| -> Addition {
            serde_json::from_str(&format!(r#"{{"product": {{}}, "billCustomer": null, "sequenceNumber": {raw}}}"#)).unwrap()
        };
        assert_eq!(seq("2").whole_sequence_number(), Some(2));
        assert_eq!(seq("2.0").whole_sequence_number(), Some(2), "integral doubles work as integers");
        assert_eq!(seq("2.50e1").whole_sequence_number(), Some(25));
        assert_eq!(seq("-0.0").whole_sequence_number(), Some(0));
        let frac = seq("2.5");
        assert_eq!(frac.whole_sequence_number(), None);
        assert_eq!(frac.sequence_number.as_ref().map(CwNumber::as_str), Some("2.5"), "kept as such");
        assert_eq!(seq("1e400").whole_sequence_number(), None, "out of range, not a decode failure");
        let text: Result<Addition, _> = serde_json::from_str(r#"{"product": {}, "billCustomer": null, "sequenceNumber": "2"}"#);
        assert!(text.is_err(), "a string is not a number");
    }

    #[test]
    fn money_is_kept_exactly() {
        let body = br#"{"id": 1, "product": {"id": 7}, "billCustomer": "Billable",
            "unitPrice": 12345678.123456789012345, "unitCost": 0.1, "lessIncluded": 2}"#;
        let a: Addition = serde_json::from_slice(body).unwrap();
        assert_eq!(a.unit_price.as_ref().map(CwNumber::as_str), Some("12345678.123456789012345"));
        assert_eq!(a.unit_cost.as_ref().map(CwNumber::as_str), Some("0.1"));
        assert_eq!(a.less_included.as_ref().and_then(CwNumber::as_whole), Some(2));
        // Written back unchanged.
        let v = serde_json::to_string(&a).unwrap();
        assert!(v.contains(r#""unitPrice":12345678.123456789012345"#), "{v}");
        let again: Addition = serde_json::from_str(&v).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn cw_number_grammar_and_whole_values() {
        for ok in ["0", "-1", "2.5", "1e3", "1E+3", "0.000", "12345678901234567890.5"] {
            assert!(ok.parse::<CwNumber>().is_ok(), "{ok}");
        }
        for bad in ["", "01", "1.", ".5", "+1", "1e", "NaN", "0x10", "1 "] {
            assert!(bad.parse::<CwNumber>().is_err(), "{bad}");
        }
        let whole = |s: &str| s.parse::<CwNumber>().unwrap().as_whole();
        assert_eq!(whole("9223372036854775807"), Some(i64::MAX));
        assert_eq!(whole("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(whole("9223372036854775808"), None);
        assert_eq!(whole("1.25e2"), Some(125));
        assert_eq!(whole("1.255e2"), None);
        assert_eq!(whole("1000e-3"), Some(1));
        let part = |s: &str| s.parse::<CwNumber>().unwrap().whole_part();
        assert_eq!(
            (part("2.5"), part("-2.5"), part("0.5"), part("7"), part("1.5e1"), part("3e2")),
            (Some(2), Some(-2), Some(0), Some(7), Some(15), Some(300))
        );
    }

    #[test]
    fn new_ticket_serializes_to_cw_shape() {
        let t = NewTicket {
            summary: "é".repeat(150),
            company_id: 1,
            board_id: 2,
            team_id: Some(3),
            status_id: None,
            type_id: Some(4),
            subtype_id: None,
            initial_description: "desc".into(),
            external_x_ref: "x".repeat(120),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["summary"].as_str().unwrap().chars().count(), 100);
        assert_eq!(v["externalXRef"].as_str().unwrap().len(), 100);
        assert_eq!(v["company"], json!({"id": 1}));
        assert_eq!(v["board"], json!({"id": 2}));
        assert_eq!(v["team"], json!({"id": 3}));
        assert_eq!(v["type"], json!({"id": 4}));
        assert!(v.get("status").is_none());
        assert!(v.get("subType").is_none());
        assert_eq!(v["initialDescription"], "desc");
    }
}
