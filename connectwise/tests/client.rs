//! The client against the fake ConnectWise over real HTTP.

use std::time::Duration;

use connectwise::{
    ACCEPT_HEADER_VALUE, AddressPolicy, BoardItemKind, Credentials, CwClient, CwErrorKind, CwHttp, NewTicket, discover_codebase,
};
use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany, FakeConfig, FakeConnectWise, Fault, FaultRule};
use secrecy::SecretString;
use serde_json::json;

const SECRET: &str = "s3cr3t-Priv-Key";

fn cfg() -> FakeConfig {
    FakeConfig { private_key: SECRET.into(), ..FakeConfig::default() }
}

fn creds(fake: &FakeConnectWise) -> Credentials {
    let c = fake.config();
    Credentials {
        site_url: url::Url::parse(&fake.site_url()).unwrap(),
        codebase: c.codebase.clone(),
        company_id: c.company_id.clone(),
        public_key: c.public_key.clone(),
        private_key: SecretString::from(c.private_key.clone()),
        client_id: c.client_id.clone(),
    }
}

/// The fake listens on 127.0.0.1 over http: the lab policy (`CW_ALLOW_HTTP`).
fn lab_http() -> CwHttp {
    CwHttp::new(AddressPolicy::AllowPrivate).unwrap()
}

fn client_with(fake: &FakeConnectWise, timeout: Duration) -> CwClient {
    CwClient::new(lab_http(), creds(fake), timeout)
}

async fn setup() -> (FakeConnectWise, CwClient) {
    let fake = FakeConnectWise::start(cfg()).await;
    fake.add_company(FakeCompany::new(5, "ACME", "Acme Inc"));
    fake.add_agreement(FakeAgreement {
        next_invoice_date: Some("2026-02-01T00:00:00Z".into()),
        ..FakeAgreement::new(10, "Managed Services", 5)
    });
    fake.add_addition(FakeAddition { sequence_number: 3, description: "Microsoft 365 E3".into(), ..FakeAddition::new(100, 10, 7, 12) });
    fake.add_addition(FakeAddition::new(101, 10, 8, 1));
    let client = client_with(&fake, Duration::from_secs(5));
    (fake, client)
}

fn rule(method: &str, path: &str, fault: Fault) -> FaultRule {
    FaultRule { method: Some(method.into()), path_contains: Some(path.into()), fault, times: 1 }
}

#[tokio::test]
async fn sends_auth_client_id_and_accept_headers() {
    let (fake, client) = setup().await;
    assert_eq!(client.base_url(), format!("{}/v4_6_release/apis/3.0", fake.site_url()));
    let info = client.system_info().await.unwrap();
    assert_eq!(info.status, 200);
    assert_eq!(info.body["isCloud"], json!(true));
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert!(r.authorized, "Authorization/clientId not accepted");
    assert_eq!(r.path, "/system/info");
    assert_eq!(r.accept.as_deref(), Some(ACCEPT_HEADER_VALUE));
    assert_eq!(info.request_id.as_deref(), Some(r.request_id.as_str()));
}

#[tokio::test]
async fn wrong_key_is_auth_failure() {
    let (fake, _) = setup().await;
    let mut c = creds(&fake);
    c.private_key = SecretString::from("wrong".to_string());
    let client = CwClient::new(lab_http(), c, Duration::from_secs(5));
    let err = client.get_addition(10, 100).await.unwrap_err();
    assert_eq!(err.status, Some(401));
    assert!(err.is_auth_failure());
    assert!(!err.is_retryable());
    assert_eq!(err.code(), "CW_AUTH_FAILED");
    assert_eq!(err.cw_code(), Some("Unauthorized"));
    assert!(err.request_id.is_some());
    assert!(!fake.requests()[0].authorized);

    let mut c = creds(&fake);
    c.client_id = "11111111-0000-0000-0000-000000000000".into();
    let client = CwClient::new(lab_http(), c, Duration::from_secs(5));
    assert!(client.system_info().await.unwrap_err().is_auth_failure());
}

#[tokio::test]
async fn forbidden_is_auth_failure() {
    let (fake, client) = setup().await;
    fake.inject(rule("GET", "/system/info", Fault::Status(403)));
    let err = client.system_info().await.unwrap_err();
    assert!(err.is_auth_failure());
    assert_eq!(err.code(), "CW_AUTH_FAILED");
}

#[tokio::test]
async fn lists_companies_across_pages() {
    let (fake, client) = setup().await;
    for id in 1000..3600 {
        let mut c = FakeCompany::new(id, &format!("C{id}"), &format!("Company {id}"));
        if id % 26 == 0 {
            c.deleted = true; // 100 deleted
        }
        if id % 3 == 0 {
            c.status = "Inactive".into();
        }
        fake.add_company(c);
    }
    fake.clear_requests();
    let companies = client.list_companies().await.unwrap();
    // 2,600 + the setup company, minus 100 deleted.
    assert_eq!(companies.len(), 2501);
    assert!(companies.iter().all(|c| !c.is_deleted()));
    assert!(companies.iter().any(|c| c.status.as_ref().and_then(|s| s.name.as_deref()) == Some("Inactive")));
    let mut ids: Vec<i64> = companies.iter().filter_map(|c| c.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2501, "no duplicates across pages");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.path, "/company/companies");
        assert!(r.query.contains("pageSize=1000"), "{}", r.query);
        assert!(r.query.contains(&format!("page={}", i + 1)), "{}", r.query);
        assert!(r.query.contains("conditions=deletedFlag%3Dfalse"), "{}", r.query);
        assert!(r.authorized);
    }
}

#[tokio::test]
async fn reads_agreements_and_additions() {
    let (fake, client) = setup().await;
    fake.add_agreement(FakeAgreement { status: "Cancelled".into(), cancelled_flag: true, ..FakeAgreement::new(11, "Old", 5) });
    let agreements = client.list_agreements().await.unwrap();
    assert_eq!(agreements.len(), 2);
    let a = &agreements[0];
    assert_eq!(a.company.id, Some(5));
    assert_eq!(a.company.identifier.as_deref(), Some("ACME"));
    assert_eq!(a.agreement_status.as_deref(), Some("Active"));
    assert_eq!(a.next_invoice_date.as_deref(), Some("2026-02-01T00:00:00Z"));
    assert_eq!(a.type_.as_ref().and_then(|t| t.name.as_deref()), Some("Managed Services"));
    assert!(agreements[1].is_cancelled());

    let one = client.get_agreement(11).await.unwrap().body;
    assert_eq!(one.agreement_status.as_deref(), Some("Cancelled"));

    let additions = client.list_additions(10).await.unwrap();
    assert_eq!(additions.len(), 2);
    let add = client.get_addition(10, 100).await.unwrap();
    assert_eq!(add.status, 200);
    assert!(add.request_id.is_some());
    let add = add.body;
    assert_eq!(add.quantity_i64(), Some(12));
    assert_eq!(add.product_id(), Some(7));
    assert_eq!(add.whole_sequence_number(), Some(3));
    assert_eq!(add.agreement_id, Some(10));
    assert_eq!(add.agreement_status.as_deref(), Some("Active"));
    assert_eq!(add.bill_customer.as_deref(), Some("Billable"));
    assert!(!add.is_cancelled());

    fake.set_addition_cancelled(100, Some("2026-01-31T00:00:00Z".into()));
    fake.set_agreement_status(10, "Expired");
    let add = client.get_addition(10, 100).await.unwrap().body;
    assert!(add.is_cancelled());
    assert_eq!(add.agreement_status.as_deref(), Some("Expired"));

    let company = client.get_company(5).await.unwrap().body;
    assert_eq!(company.identifier, "ACME");
}

#[tokio::test]
async fn patch_sends_json_patch_and_returns_quantity() {
    let (fake, client) = setup().await;
    let resp = client.patch_addition_quantity(10, 100, 42).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.quantity_i64(), Some(42));
    assert_eq!(fake.addition_quantity(100), Some(42));
    let patches = fake.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(fake.patch_count(), 1);
    let p = &patches[0];
    assert_eq!(p.path, "/finance/agreements/10/additions/100");
    assert_eq!(p.body, Some(json!([{"op": "replace", "path": "quantity", "value": 42}])));
    assert!(p.content_type.as_deref().is_some_and(|c| c.starts_with("application/json")));
}

#[tokio::test]
async fn not_found() {
    let (fake, client) = setup().await;
    let err = client.get_addition(10, 999).await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.code(), "CW_NOT_FOUND");
    assert_eq!(err.cw_code(), Some("NotFound"));
    assert!(!err.is_retryable());
    // An addition that moved to another agreement is not found under the old one.
    fake.remove_addition(10, 101);
    let err = client.patch_addition_quantity(10, 101, 5).await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(fake.patch_count(), 0);
    assert!(client.get_agreement(77).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let (fake, client) = setup().await;
    fake.inject(rule("PATCH", "/additions/100", Fault::RateLimit { retry_after_secs: 7 }));
    let err = client.patch_addition_quantity(10, 100, 3).await.unwrap_err();
    assert_eq!(err.status, Some(429));
    assert_eq!(err.code(), "CW_RATE_LIMITED");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(fake.addition_quantity(100), Some(12), "429 must not apply");

    // HTTP-date form.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(60)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    fake.inject(rule(
        "GET",
        "/additions/100",
        Fault::Raw {
            status: 429,
            headers: vec![("Retry-After".into(), at)],
            body: r#"{"code":"TooManyRequests","message":"slow down"}"#.into(),
        },
    ));
    let err = client.get_addition(10, 100).await.unwrap_err();
    let ra = err.retry_after.unwrap();
    assert!(ra > Duration::from_secs(50) && ra <= Duration::from_secs(60), "{ra:?}");

    // Afterwards the call succeeds.
    assert_eq!(client.patch_addition_quantity(10, 100, 3).await.unwrap().body.quantity_i64(), Some(3));
}

#[tokio::test]
async fn server_errors_are_retryable() {
    let (fake, client) = setup().await;
    for code in [500u16, 502, 503, 504] {
        fake.inject(rule("GET", "/additions/100", Fault::Status(code)));
        let err = client.get_addition(10, 100).await.unwrap_err();
        assert_eq!(err.status, Some(code));
        assert!(err.is_retryable(), "{code}");
        assert_eq!(err.code(), "CW_SERVER_ERROR");
        assert!(err.to_string().contains(&code.to_string()));
    }
    fake.inject(rule(
        "GET",
        "/additions/100",
        Fault::Raw { status: 503, headers: vec![("Retry-After".into(), "3".into())], body: "<html>maintenance</html>".into() },
    ));
    let err = client.get_addition(10, 100).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
    match &err.kind {
        CwErrorKind::Http { code, message } => {
            assert_eq!(code, &None);
            // A body that is not ConnectWise's is never echoed: the status reason only.
            assert_eq!(message, "Service Unavailable");
        }
        other => panic!("{other:?}"),
    }
    // 400 is permanent.
    fake.inject(rule("GET", "/additions/100", Fault::Status(400)));
    let err = client.get_addition(10, 100).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.code(), "CW_BAD_REQUEST");
}

#[tokio::test]
async fn slow_response_times_out() {
    let (fake, _) = setup().await;
    let client = client_with(&fake, Duration::from_millis(200));
    fake.inject(rule("GET", "/additions/100", Fault::Delay(Duration::from_millis(1500))));
    let started = std::time::Instant::now();
    let err = client.get_addition(10, 100).await.unwrap_err();
    assert!(matches!(err.kind, CwErrorKind::Timeout), "{err:?}");
    assert_eq!(err.code(), "CW_TIMEOUT");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_millis(1000));
    // The next call is fine.
    assert!(client.get_addition(10, 100).await.is_ok());
}

#[tokio::test]
async fn broken_connection_and_refused_connection_are_retryable() {
    let (fake, client) = setup().await;
    fake.inject(rule("GET", "/additions/100", Fault::CloseConnection));
    let err = client.get_addition(10, 100).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(err.kind, CwErrorKind::Connect(_)), "{err:?}");
    assert_eq!(fake.requests().last().unwrap().status, 444);

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = creds(&fake);
    c.site_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let client = CwClient::new(lab_http(), c, Duration::from_secs(2));
    let err = client.system_info().await.unwrap_err();
    assert_eq!(err.code(), "CW_CONNECT", "{err:?}");
    assert!(err.is_retryable());
    assert!(err.status.is_none());
}

#[tokio::test]
async fn malformed_success_body_is_decode_error() {
    let (fake, client) = setup().await;
    fake.inject(rule("GET", "/additions/100", Fault::Raw { status: 200, headers: vec![], body: "not json".into() }));
    let err = client.get_addition(10, 100).await.unwrap_err();
    assert_eq!(err.code(), "CW_DECODE");
    assert_eq!(err.status, Some(200));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn paging_follows_link_on_our_host_and_stops_loops() {
    let (fake, client) = setup().await;
    fake.add_board(FakeBoard::new(1, "Billing"));
    // First page claims the next page lives on another host: the client stays on the site.
    fake.inject(rule(
        "GET",
        "/service/boards",
        Fault::Raw {
            status: 200,
            headers: vec![(
                "Link".into(),
                "<http://evil.invalid:1/v4_6_release/apis/3.0/service/boards?page=2&pageSize=1000>; rel=\"next\"".into(),
            )],
            body: r#"[{"id": 99, "name": "Injected"}]"#.into(),
        },
    ));
    let boards = client.list_boards().await.unwrap();
    assert_eq!(boards.len(), 1, "page 2 of the real list is empty");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].query.contains("page=2"));
    assert!(reqs[1].authorized);

    // A next link pointing at the same page is a loop.
    fake.inject(rule(
        "GET",
        "/service/boards",
        Fault::Raw {
            status: 200,
            headers: vec![("Link".into(), "</v4_6_release/apis/3.0/service/boards?page=1&pageSize=1000>; rel=\"next\"".into())],
            body: r#"[{"id": 99, "name": "Injected"}]"#.into(),
        },
    ));
    let err = client.list_boards().await.unwrap_err();
    assert_eq!(err.code(), "CW_DECODE");
    assert!(err.to_string().contains("loop"), "{err}");
}

#[tokio::test]
async fn boards_and_board_items() {
    let (fake, client) = setup().await;
    let mut b = FakeBoard::new(3, "Billing");
    b.types = vec![(31, "Billing issue".into(), false), (32, "Other".into(), true)];
    b.subtypes = vec![(41, "Quantity".into(), false)];
    fake.add_board(b);
    fake.add_board(FakeBoard::new(4, "Help Desk"));
    let boards = client.list_boards().await.unwrap();
    assert_eq!(boards.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["Billing", "Help Desk"]);
    assert!(!boards[0].is_inactive());
    let statuses = client.list_board_items(3, BoardItemKind::Statuses).await.unwrap();
    assert_eq!(statuses.len(), 2);
    assert!(statuses[0].is_default());
    let types = client.list_board_items(3, BoardItemKind::Types).await.unwrap();
    assert!(types[1].is_default() && types[1].name == "Other");
    assert_eq!(client.list_board_items(3, BoardItemKind::Subtypes).await.unwrap().len(), 1);
    assert_eq!(client.list_board_items(3, BoardItemKind::Teams).await.unwrap()[0].id, Some(31));
    assert!(client.list_board_items(99, BoardItemKind::Teams).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn ticket_create_and_find_by_xref() {
    let (fake, client) = setup().await;
    fake.add_board(FakeBoard::new(3, "Billing"));
    let xref = "0190b5c3-7d1e-7000-8000-000000000001";
    assert!(client.find_ticket_by_xref(xref).await.unwrap().is_none());
    let t = NewTicket {
        summary: format!("Consumption Sync: Acme – M365 – {}", "x".repeat(120)),
        company_id: 5,
        board_id: 3,
        team_id: Some(31),
        status_id: None,
        type_id: None,
        subtype_id: None,
        initial_description: "The addition was deleted. Remap it.".into(),
        external_x_ref: xref.into(),
    };
    let created = client.create_ticket(&t).await.unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.body.id, Some(1000));
    assert_eq!(created.body.summary.chars().count(), 100);
    assert_eq!(created.body.external_x_ref.as_deref(), Some(xref));

    let found = client.find_ticket_by_xref(xref).await.unwrap().unwrap();
    assert_eq!(found.id, Some(1000));
    assert!(client.find_ticket_by_xref("other").await.unwrap().is_none());

    let stored = fake.tickets();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["initialDescription"], "The addition was deleted. Remap it.");
    assert_eq!(stored[0]["status"]["id"], 31, "board default status applies");
    assert_eq!(stored[0]["team"]["id"], 31);
    let q = fake.requests().last().unwrap().query.clone();
    assert!(q.contains("conditions=externalXRef%3D%22"), "{q}");

    // Invalid company → 400 InvalidObject, permanent.
    let err = client.create_ticket(&NewTicket { company_id: 404, ..t.clone() }).await.unwrap_err();
    assert_eq!(err.status, Some(400));
    assert_eq!(err.cw_code(), Some("InvalidObject"));
    assert_eq!(err.code(), "CW_BAD_REQUEST");
    assert!(err.to_string().contains("company"), "{err}");
}

#[tokio::test]
async fn discovers_codebase() {
    let fake = FakeConnectWise::start(cfg()).await;
    let http = lab_http();
    let site = url::Url::parse(&fake.site_url()).unwrap();
    let cb = discover_codebase(&http, &site, "msp", Duration::from_secs(5)).await.unwrap();
    assert_eq!(cb, "v4_6_release");
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/login/companyinfo/msp");
    assert!(!r.authorized, "no credentials are sent");
    let err = discover_codebase(&http, &site, "nobody", Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.code(), "CW_DECODE");
}

#[tokio::test]
async fn debug_and_display_never_show_the_private_key() {
    let (fake, _) = setup().await;
    let c = creds(&fake);
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(SECRET), "{dbg}");
    assert!(dbg.contains("REDACTED"));
    let client = CwClient::new(lab_http(), c.clone(), Duration::from_secs(5));
    assert!(!format!("{client:?}").contains(SECRET));

    let token = fake.expected_authorization();
    let mut errors = Vec::new();
    fake.inject(rule("GET", "/additions/100", Fault::Status(500)));
    errors.push(client.get_addition(10, 100).await.unwrap_err());
    fake.inject(rule("GET", "/additions/100", Fault::CloseConnection));
    errors.push(client.get_addition(10, 100).await.unwrap_err());
    let mut bad = c.clone();
    bad.private_key = SecretString::from(format!("{SECRET}-old"));
    let bad = CwClient::new(lab_http(), bad, Duration::from_secs(5));
    errors.push(bad.system_info().await.unwrap_err());
    for e in errors {
        for text in [format!("{e:?}"), e.to_string()] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains(&token[6..]), "{text}");
            assert!(!text.contains("Basic "), "{text}");
        }
    }
}
