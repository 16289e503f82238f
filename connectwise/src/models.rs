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

/// A reference to another record: `{id, name}` (and `identifier` for company references).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedRef {
    /// Record id.
    #[serde(default)]
    pub id: i64,
    /// Display name, when ConnectWise sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Short identifier (company references).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

/// A product reference on an addition: `{id, identifier}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductRef {
    /// Product (catalog item) id.
    #[serde(default)]
    pub id: i64,
    /// Product identifier (the catalog item's code).
    #[serde(default)]
    pub identifier: Option<String>,
}

/// A company (`/company/companies`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    /// Company id.
    pub id: i64,
    /// Short identifier (≤ 30 characters).
    #[serde(default)]
    pub identifier: String,
    /// Name (≤ 50 characters).
    #[serde(default)]
    pub name: String,
    /// Company status, e.g. `{id: 1, name: "Active"}`.
    #[serde(default)]
    pub status: Option<NamedRef>,
    /// Whether the company is deleted.
    #[serde(default)]
    pub deleted_flag: bool,
}

/// An agreement (`/finance/agreements`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    /// Agreement id.
    pub id: i64,
    /// Agreement name.
    #[serde(default)]
    pub name: String,
    /// Agreement type, e.g. `{id, name: "Managed Services"}`.
    #[serde(default, rename = "type")]
    pub type_: Option<NamedRef>,
    /// The agreement's company `{id, identifier, name}`.
    #[serde(default)]
    pub company: NamedRef,
    /// `Active`, `Cancelled`, `Expired` or `Inactive`.
    #[serde(default)]
    pub agreement_status: Option<String>,
    /// Whether the agreement is cancelled.
    #[serde(default)]
    pub cancelled_flag: bool,
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

/// An agreement addition (`/finance/agreements/{id}/additions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Addition {
    /// Addition id (the key; `sequence_number` is not unique).
    pub id: i64,
    /// The product `{id, identifier}`.
    #[serde(default)]
    pub product: Option<ProductRef>,
    /// Quantity exactly as sent (may be fractional).
    #[serde(default)]
    pub quantity: Option<serde_json::Number>,
    /// Display order on the invoice ("Sequence" in the UI).
    #[serde(default)]
    pub sequence_number: Option<i64>,
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
    /// `Billable`, `DoNotBill` or `NoCharge`.
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

    /// The product id, when the addition has a product.
    pub fn product_id(&self) -> Option<i64> {
        self.product.as_ref().map(|p| p.id)
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
    pub id: i64,
    /// Board name.
    #[serde(default)]
    pub name: String,
    /// Whether the board is inactive.
    #[serde(default)]
    pub inactive_flag: bool,
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

/// A board team, status, type or subtype.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoardItem {
    /// Item id.
    pub id: i64,
    /// Item name.
    #[serde(default)]
    pub name: String,
    /// Whether this is the board's default.
    #[serde(default)]
    pub default_flag: bool,
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
    /// Ticket id.
    pub id: i64,
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
        assert_eq!(a.sequence_number, Some(2));
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
        assert!(!c.deleted_flag);
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
