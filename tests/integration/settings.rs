//! ConnectWise settings: write-only private key, encryption at rest, site URL guard, switch, audit.
use integration_tests::*;
use serde_json::json;

const CONFIGURE: &str = r#"mutation($i: ConnectWiseSettingsInput!) { configureConnectWise(input: $i) { settings { siteUrl companyId publicKey hasPrivateKey codebase consumptionSyncEnabled ticketBoardId ticketTeamId ticketStatusId ticketTypeId ticketSubtypeId } userErrors { code field message } } }"#;

#[tokio::test]
async fn configure_discovers_codebase_and_never_reveals_the_private_key() {
    let app = spawn_app().await;
    app.seed_fake(&standard_catalog());
    let admin = token("acme", &["admin"]);
    assert_eq!(app.gql_ok(&admin, "{ connectWiseSettings { siteUrl } }", json!({})).await["connectWiseSettings"], json!(null));
    let cfg = app.fake.config().clone();
    let data = app
        .gql_ok(&admin, CONFIGURE, json!({"i": {"siteUrl": app.fake.site_url(), "companyId": cfg.company_id, "publicKey": cfg.public_key, "privateKey": cfg.private_key, "ticketBoardId": 1, "ticketTeamId": 11, "ticketStatusId": 21, "ticketTypeId": 31}}))
        .await;
    let s = &data["configureConnectWise"];
    assert_eq!(s["userErrors"], json!([]));
    assert_eq!(s["settings"]["codebase"], "v4_6_release");
    assert_eq!(s["settings"]["hasPrivateKey"], true);
    assert_eq!(s["settings"]["consumptionSyncEnabled"], false);
    assert_eq!(s["settings"]["ticketTypeId"], 31);
    // Encrypted at rest: the stored value is not the key.
    let row = sync_core::service::settings::get(&app.db, app.tenant_id("acme").await).await.expect("db").expect("row");
    let enc = row.private_key_enc.clone().expect("stored");
    assert!(!enc.contains(&cfg.private_key));
    // Update without a private key keeps it.
    let data = app
        .gql_ok(&admin, CONFIGURE, json!({"i": {"siteUrl": app.fake.site_url(), "companyId": cfg.company_id, "publicKey": cfg.public_key, "codebase": "/v4_6_release/", "ticketBoardId": 1, "ticketTeamId": 11, "ticketStatusId": 21}}))
        .await;
    assert_eq!(data["configureConnectWise"]["settings"]["hasPrivateKey"], true);
    assert_eq!(data["configureConnectWise"]["settings"]["codebase"], "v4_6_release");
    let row2 = sync_core::service::settings::get(&app.db, app.tenant_id("acme").await).await.expect("db").expect("row");
    assert_eq!(row2.private_key_enc, Some(enc));
    // No response or audit entry contains the key.
    let audit = app.gql_ok(&admin, "{ auditLog { edges { node { action actor before after detail } } } }", json!({})).await;
    let text = audit.to_string();
    assert!(!text.contains(&cfg.private_key), "{text}");
    assert!(text.contains("settings.created") && text.contains("settings.updated") && text.contains("user:user-of-acme"));
    // The switch.
    let on = app
        .gql_ok(
            &admin,
            "mutation { setConsumptionSync(enabled: true) { settings { consumptionSyncEnabled } userErrors { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(on["setConsumptionSync"]["settings"]["consumptionSyncEnabled"], true);
    // Connection test against the fake: credentials and board/team/status/type exist together.
    let t =
        app.gql_ok(&admin, "mutation { testConnectWiseConnection { ok checks { name ok message } userErrors { code } } }", json!({})).await;
    assert_eq!(t["testConnectWiseConnection"]["ok"], true, "{t}");
    app.shutdown().await;
}

#[tokio::test]
async fn connection_test_reports_missing_board_items() {
    let app = spawn_app().await;
    app.seed_fake(&standard_catalog());
    app.configure_cw("acme").await;
    let admin = token("acme", &["admin"]);
    let cfg = app.fake.config().clone();
    app.gql_ok(&admin, CONFIGURE, json!({"i": {"siteUrl": app.fake.site_url(), "companyId": cfg.company_id, "publicKey": cfg.public_key, "ticketBoardId": 1, "ticketTeamId": 999, "ticketStatusId": 21}})).await;
    let t = app.gql_ok(&admin, "mutation { testConnectWiseConnection { ok checks { name ok message } } }", json!({})).await;
    assert_eq!(t["testConnectWiseConnection"]["ok"], false, "{t}");
    let checks = t["testConnectWiseConnection"]["checks"].as_array().expect("checks").clone();
    assert!(checks.iter().any(|c| c["name"] == "team" && c["ok"] == false), "{checks:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn insecure_site_urls_are_refused_and_nothing_is_written() {
    // CW_ALLOW_HTTP off: http and private addresses are refused.
    let app = spawn_app_with(AppOptions { env: vec![("CW_ALLOW_HTTP".into(), "false".into())], ..Default::default() }).await;
    let admin = token("acme", &["admin"]);
    for url in [
        "http://api-na.myconnectwise.net",
        "https://127.0.0.1",
        "https://10.0.0.5",
        "https://169.254.169.254",
        "https://[::1]",
        "https://localhost:8443",
        app.fake.site_url().as_str(),
    ] {
        let data = app
            .gql_ok(&admin, CONFIGURE, json!({"i": {"siteUrl": url, "companyId": "c", "publicKey": "p", "privateKey": "k", "codebase": "v4_6_release", "ticketBoardId": 1, "ticketTeamId": 1, "ticketStatusId": 1}}))
            .await;
        let errs = &data["configureConnectWise"]["userErrors"];
        assert_eq!(errs[0]["code"], "INSECURE_SITE_URL", "{url}: {data}");
        assert_eq!(errs[0]["field"], json!(["input", "siteUrl"]));
        assert_eq!(data["configureConnectWise"]["settings"], json!(null));
    }
    assert_eq!(app.count("cw_settings").await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn set_consumption_sync_requires_configuration() {
    let app = spawn_app().await;
    let data = app
        .gql_ok(
            &token("acme", &["admin"]),
            "mutation { setConsumptionSync(enabled: true) { settings { consumptionSyncEnabled } userErrors { code field } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["setConsumptionSync"]["userErrors"][0]["code"], "CONNECTWISE_NOT_CONFIGURED");
    app.shutdown().await;
}
