//! Contract test: the fake ConnectWise and the client against ConnectWise's official OpenAPI
//! document (the embedded v2025.8 subset, `fake-connectwise/openapi/`).
//!
//! (a) Every response the fake can produce for the operations we use — list pages, single records in
//!     their fullest and their sparsest form, errors (404, 400, 401, injected 429/5xx) — is valid
//!     against the operation's declared response (status, media type, schema), or is an error with
//!     ConnectWise's error body.
//! (b) Every request the client sends — path, query, headers, body — as the fake recorded it, is
//!     valid against the operation's parameters and request body; strict findings (an undeclared
//!     query parameter, another `Accept` or `Content-Type`, no basic credentials) count too.

use std::collections::BTreeSet;
use std::time::Duration;

use connectwise::{BoardItemKind, Credentials, CwClient, NewTicket};
use fake_connectwise::openapi::{Contract, RequestParts};
use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany, FakeConfig, FakeConnectWise, Fault, FaultRule};
use secrecy::SecretString;
use serde_json::{Value, json};

fn contract() -> &'static Contract {
    Contract::official().expect("the embedded OpenAPI document parses")
}

/// A catalog with every shape the fake can serve: deleted and inactive companies, cancelled
/// agreements with and without a next invoice date, additions with all amounts, none, dates,
/// a cancelled one and a fractional sequence number, boards with all four item lists.
fn seed(fake: &FakeConnectWise) {
    fake.add_company(FakeCompany::new(1, "ACME", "Acme"));
    fake.add_company(FakeCompany { status: "Inactive".into(), ..FakeCompany::new(2, "BETA", "Beta") });
    fake.add_company(FakeCompany { deleted: true, ..FakeCompany::new(3, "GONE", "Gone") });
    fake.add_agreement(FakeAgreement { next_invoice_date: Some("2026-04-01T00:00:00Z".into()), ..FakeAgreement::new(10, "MSA", 1) });
    fake.add_agreement(FakeAgreement { status: "Cancelled".into(), cancelled_flag: true, ..FakeAgreement::new(11, "Old", 2) });
    fake.add_addition(
        FakeAddition {
            description: "Microsoft 365".into(),
            effective_date: Some("2026-01-01".into()),
            ..FakeAddition::new(100, 10, 7, 12)
        }
        .with_unit_price(Some("12345678.123456789012345"))
        .with_unit_cost(Some("0.1"))
        .with_less_included(Some("2")),
    );
    fake.add_addition(FakeAddition::new(101, 10, 8, 0).with_unit_price(None).with_unit_cost(None).with_less_included(None));
    fake.add_addition(FakeAddition {
        cancelled_date: Some("2026-01-31T00:00:00Z".into()),
        ..FakeAddition::new(102, 10, 9, 1).with_sequence_number_text(Some("2.5"))
    });
    let mut board = FakeBoard::new(3, "Billing");
    board.types = vec![(31, "Billing issue".into(), false), (32, "Other".into(), true)];
    board.subtypes = vec![(41, "Quantity".into(), true)];
    fake.add_board(board);
    fake.add_board(FakeBoard { teams: vec![], statuses: vec![], ..FakeBoard::new(4, "Empty") });
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Value,
}

struct Probe {
    http: reqwest::Client,
    base: String,
    auth: String,
    client_id: String,
}

impl Probe {
    fn new(fake: &FakeConnectWise) -> Self {
        Probe {
            http: reqwest::Client::new(),
            base: fake.api_base_url(),
            auth: fake.expected_authorization(),
            client_id: fake.config().client_id.clone(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>, auth: &str) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb =
            self.http.request(method, format!("{}{path}", self.base)).header("Authorization", auth).header("clientId", &self.client_id);
        if let Some(b) = body {
            rb = rb.header("Content-Type", "application/json").body(b.to_string());
        }
        let r = rb.send().await.expect("the fake answers");
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: the body is not JSON ({e}): {text}"));
        Answer { status, content_type, body }
    }
}

/// One request per operation and answer shape; `(method, path, body)`.
fn probes() -> Vec<(&'static str, String, Option<Value>)> {
    let patch = json!([{"op": "replace", "path": "quantity", "value": 13}]);
    let ticket_full = json!({
        "summary": "Quantity push failed", "company": {"id": 1}, "board": {"id": 3}, "team": {"id": 31},
        "status": {"id": 32}, "type": {"id": 31}, "subType": {"id": 41}, "initialDescription": "details",
        "externalXRef": "push-1", "processNotifications": false
    });
    let ticket_sparse = json!({"summary": "s", "company": {"id": 1}, "board": {"id": 4}});
    let mut out: Vec<(&'static str, String, Option<Value>)> = vec![
        ("GET", "/system/info".into(), None),
        ("GET", "/company/companies".into(), None),
        ("GET", "/company/companies?pageSize=1&page=2&conditions=deletedFlag%3Dfalse".into(), None),
        ("GET", "/company/companies?pageSize=2&page=9".into(), None), // past the last page: []
        ("GET", "/finance/agreements?conditions=company%2Fid%3D1".into(), None),
        ("GET", "/finance/agreements?pageSize=1".into(), None),
        ("GET", "/finance/agreements/10/additions".into(), None),
        ("GET", "/finance/agreements/11/additions".into(), None), // none: []
        ("GET", "/service/boards".into(), None),
        ("GET", "/service/tickets".into(), None),
        ("POST", "/service/tickets".into(), Some(ticket_full)),
        ("POST", "/service/tickets".into(), Some(ticket_sparse)),
        ("GET", "/service/tickets?conditions=externalXRef%3D%22push-1%22".into(), None),
        ("PATCH", "/finance/agreements/10/additions/100".into(), Some(patch.clone())),
        ("PATCH", "/finance/agreements/10/additions/102".into(), Some(patch.clone())),
        // Errors: unknown records, refused requests.
        ("GET", "/company/companies/999".into(), None),
        ("GET", "/finance/agreements/999".into(), None),
        ("GET", "/finance/agreements/999/additions".into(), None),
        ("GET", "/finance/agreements/10/additions/999".into(), None),
        ("GET", "/finance/agreements/11/additions/100".into(), None),
        ("PATCH", "/finance/agreements/10/additions/999".into(), Some(patch)),
        ("PATCH", "/finance/agreements/10/additions/100".into(), Some(json!([{"op": "replace", "path": "quantity", "value": 1.5}]))),
        ("PATCH", "/finance/agreements/10/additions/100".into(), Some(json!([{"op": "replace", "path": "quantity", "value": "1"}]))),
        ("PATCH", "/finance/agreements/10/additions/100".into(), Some(json!({"op": "replace"}))),
        ("POST", "/service/tickets".into(), Some(json!({"summary": "s", "company": {"id": 999}, "board": {"id": 3}}))),
        ("POST", "/service/tickets".into(), Some(json!({"summary": "s", "company": {"id": 1}, "board": {"id": 3}, "externalXRef": null}))),
        ("GET", "/company/companies?page=x".into(), None),
        ("GET", "/company/companies?conditions=bogus%3D1".into(), None),
        ("GET", "/service/boards/99/teams".into(), None),
        ("GET", "/finance/agreements/3000000000".into(), None),
    ];
    for id in [1, 2, 3] {
        out.push(("GET", format!("/company/companies/{id}"), None));
    }
    for id in [10, 11] {
        out.push(("GET", format!("/finance/agreements/{id}"), None));
    }
    for id in [100, 101, 102] {
        out.push(("GET", format!("/finance/agreements/10/additions/{id}"), None));
    }
    for board in [3, 4] {
        for kind in ["teams", "statuses", "types", "subtypes"] {
            out.push(("GET", format!("/service/boards/{board}/{kind}"), None));
        }
    }
    out
}

/// Validates `answer` and returns the operation it belongs to (for coverage).
fn check(method: &str, path: &str, answer: &Answer, failures: &mut Vec<String>) -> String {
    let path_only = path.split('?').next().unwrap_or(path);
    let op = contract().find(method, path_only).map(|o| o.id.clone()).unwrap_or_else(|| format!("none for {method} {path_only}"));
    if let Err(violations) = contract().check_response(method, path_only, answer.status, answer.content_type.as_deref(), &answer.body) {
        for v in violations {
            failures.push(format!("{method} {path} → {}: {v}\n    body: {}", answer.status, answer.body));
        }
    }
    op
}

#[tokio::test]
async fn every_response_of_the_fake_matches_the_official_schema() {
    let all: BTreeSet<String> = contract().operations().iter().map(|o| o.id.clone()).collect();
    let mut failures = Vec::new();
    for sparse in [false, true] {
        let fake = FakeConnectWise::start(FakeConfig { sparse, ..FakeConfig::default() }).await;
        seed(&fake);
        let probe = Probe::new(&fake);
        let mut covered = BTreeSet::new();
        let mut statuses = BTreeSet::new();
        for (method, path, body) in probes() {
            let answer = probe.call(method, &path, body.as_ref(), &probe.auth).await;
            statuses.insert(answer.status);
            covered.insert(check(method, &path, &answer, &mut failures));
        }
        // Bad credentials, and injected faults, on every operation.
        for op in contract().operations() {
            let path = op.template.replace("{parentId}", "10").replace("{id}", "100");
            let path = if op.template.starts_with("/service/boards/") { path.replace("/10/", "/3/") } else { path };
            let body = match op.method.as_str() {
                "PATCH" => Some(json!([{"op": "replace", "path": "quantity", "value": 1}])),
                "POST" => Some(json!({"summary": "s", "company": {"id": 1}, "board": {"id": 3}})),
                _ => None,
            };
            let answer = probe.call(&op.method, &path, body.as_ref(), "Basic bXNwK3B1Yjp3cm9uZw==").await;
            assert_eq!(answer.status, 401, "{path}");
            check(&op.method, &path, &answer, &mut failures);
            for fault in [Fault::Status(500), Fault::Status(503), Fault::RateLimit { retry_after_secs: 2 }, Fault::Status(403)] {
                fake.inject(FaultRule { method: Some(op.method.clone()), path_contains: None, fault, times: 1 });
                let answer = probe.call(&op.method, &path, body.as_ref(), &probe.auth).await;
                assert!(answer.status >= 400, "{path}: {}", answer.status);
                check(&op.method, &path, &answer, &mut failures);
            }
        }
        assert_eq!(covered.intersection(&all).cloned().collect::<BTreeSet<_>>(), all, "every operation is exercised (sparse: {sparse})");
        for s in [200, 201, 400, 404] {
            assert!(statuses.contains(&s), "status {s} was produced (sparse: {sparse}): {statuses:?}");
        }
    }
    assert!(failures.is_empty(), "{} contract violations:\n{}", failures.len(), failures.join("\n"));
}

fn client(fake: &FakeConnectWise) -> CwClient {
    let c = fake.config();
    let creds = Credentials {
        site_url: url::Url::parse(&fake.site_url()).expect("url"),
        codebase: c.codebase.clone(),
        company_id: c.company_id.clone(),
        public_key: c.public_key.clone(),
        private_key: SecretString::from(c.private_key.clone()),
        client_id: c.client_id.clone(),
    };
    CwClient::new(connectwise::CwHttp::new(connectwise::AddressPolicy::AllowPrivate).expect("http client"), creds, Duration::from_secs(10))
}

/// Every call the client makes, once; returns what it decoded, for a sanity check.
async fn drive(client: &CwClient) -> (usize, Option<i64>, Option<i64>) {
    client.system_info().await.expect("system info");
    let companies = client.list_companies().await.expect("companies");
    client.get_company(1).await.expect("company");
    client.list_agreements().await.expect("agreements");
    client.get_agreement(10).await.expect("agreement");
    client.list_additions(10).await.expect("additions");
    let fractional = client.get_addition(10, 102).await.expect("addition").body;
    let patched = client.patch_addition_quantity(10, 100, 42).await.expect("patch").body;
    client.list_boards().await.expect("boards");
    for kind in BoardItemKind::ALL {
        client.list_board_items(3, kind).await.expect("board items");
    }
    let ticket = NewTicket {
        summary: "Quantity push failed".into(),
        company_id: 1,
        board_id: 3,
        team_id: Some(31),
        status_id: Some(31),
        type_id: Some(31),
        subtype_id: Some(41),
        initial_description: "details".into(),
        external_x_ref: "push-7".into(),
    };
    client.create_ticket(&ticket).await.expect("ticket");
    let found = client.find_ticket_by_xref("push-7").await.expect("find ticket").and_then(|t| t.id);
    assert_eq!(fractional.sequence_number.as_ref().map(|n| n.as_str()), Some("2.5"));
    (companies.len(), patched.quantity_i64(), found)
}

#[tokio::test]
async fn every_request_of_the_client_matches_the_official_schema() {
    let all: BTreeSet<String> = contract().operations().iter().map(|o| o.id.clone()).collect();
    for sparse in [false, true] {
        let fake = FakeConnectWise::start(FakeConfig { sparse, ..FakeConfig::default() }).await;
        seed(&fake);
        // More companies than one page of 1,000: the client follows the fake's `Link` header.
        for id in 1000..2100 {
            fake.add_company(FakeCompany::new(id, &format!("C{id}"), &format!("Company {id}")));
        }
        fake.clear_requests();
        let (companies, quantity, ticket) = drive(&client(&fake)).await;
        assert_eq!((companies, quantity, ticket), (1102, Some(42), Some(1000)), "sparse: {sparse}");

        let requests = fake.requests();
        let mut covered = BTreeSet::new();
        let mut failures = Vec::new();
        for r in &requests {
            let parts = RequestParts {
                method: &r.method,
                path: &r.path,
                query: &r.query,
                headers: &r.headers,
                body: r.body.as_ref(),
                body_sent: r.body_len > 0,
            };
            match contract().check_request(&parts) {
                Ok(op) => {
                    covered.insert(op.id.clone());
                }
                Err(violations) => failures.extend(violations.iter().map(|v| format!("{} {}?{}: {v}", r.method, r.path, r.query))),
            }
            assert!((200..300).contains(&r.status), "{} {} → {}", r.method, r.path, r.status);
        }
        assert!(failures.is_empty(), "the client broke the contract (sparse: {sparse}):\n{}", failures.join("\n"));
        assert_eq!(covered, all, "the client called every operation of the document");
        assert!(requests.iter().filter(|r| r.path == "/company/companies").count() >= 2, "paged");
    }
}
