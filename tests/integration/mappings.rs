//! Product mappings: every mapping rule with its code, field, and nothing written; concurrency;
//! optimistic versions; atomic replace-all.
use integration_tests::*;
use serde_json::{Value, json};

pub const CREATE: &str = "mutation($i: ProductMappingInput!) { createProductMapping(input: $i) { productMapping { id version cwAdditionId cwProductId edition usage interval cwSequenceNumber cwAgreement { id nextInvoiceDate } } userErrors { code field message } } }";
const UPDATE: &str = "mutation($id: ID!, $i: ProductMappingInput!, $v: Int!) { updateProductMapping(id: $id, input: $i, expectedVersion: $v) { productMapping { id version cwAdditionId interval } userErrors { code field message } } }";
const DELETE: &str = "mutation($id: ID!) { deleteProductMapping(id: $id) { deletedId userErrors { code field message } } }";
const SAVE: &str = "mutation($c: ID!, $m: [ProductMappingInput!]!) { saveProductMappings(customerId: $c, mappings: $m) { productMappings { id version usage cwAdditionId interval } userErrors { code field message } } }";

async fn create(app: &TestApp, tenant: &str, i: Value) -> Value {
    app.gql_ok(&token(tenant, &["operator"]), CREATE, json!({"i": i})).await["createProductMapping"].clone()
}

/// Assert a single user error with this code and field, and that no mapping was written.
async fn rejected(app: &TestApp, tenant: &str, i: Value, code: &str, field: Value) {
    let before = app.count("product_mappings").await;
    let r = create(app, tenant, i).await;
    assert_eq!(r["productMapping"], json!(null), "{r}");
    assert_eq!(r["userErrors"][0]["code"], code, "{r}");
    assert_eq!(r["userErrors"][0]["field"], field, "{r}");
    assert!(r["userErrors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(app.count("product_mappings").await, before, "nothing written for {code}");
}

#[tokio::test]
async fn a_valid_mapping_resolves_addition_and_product_once() {
    let app = spawn_app().await;
    let c = ready_tenant(&app, "acme").await;
    let r = create(&app, "acme", mapping_input(&c, "ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 500, 2)).await;
    assert_eq!(r["userErrors"], json!([]));
    let m = &r["productMapping"];
    assert_eq!(m["cwAdditionId"], 9002);
    assert_eq!(m["cwProductId"], 702);
    assert_eq!(m["edition"], "ELITE");
    assert_eq!(m["version"], 1);
    assert_eq!(m["cwAgreement"], json!({"id": 500, "nextInvoiceDate": "2026-12-01"}));
    // Sequence numbers are display order, not keys: re-ordering in the catalog changes nothing stored.
    app.db.execute_unprepared("UPDATE cw_additions SET sequence_number = 77 WHERE id = 9002").await.expect("reorder");
    let q = app
        .gql_ok(
            &token("acme", &["viewer"]),
            "query($id: ID!) { productMapping(id: $id) { cwAdditionId cwSequenceNumber customer { id } } }",
            json!({"id": m["id"]}),
        )
        .await;
    assert_eq!(q["productMapping"]["cwAdditionId"], 9002);
    assert_eq!(q["productMapping"]["customer"]["id"], json!(c));
    // Audited.
    let audit = app
        .gql_ok(
            &token("acme", &["viewer"]),
            r#"{ auditLog(entityType: "product_mapping") { edges { node { action actor after } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(audit["auditLog"]["edges"][0]["node"]["action"], "product_mapping.created");
    assert_eq!(audit["auditLog"]["edges"][0]["node"]["after"]["cw_addition_id"], 9002);
    app.shutdown().await;
}

use sea_orm::ConnectionTrait;

#[tokio::test]
async fn consumption_sync_disabled() {
    let app = spawn_app().await;
    // Not configured at all.
    let c = app.customer("acme", "e", "E", all_licenses()).await;
    rejected(&app, "acme", mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1), "CONSUMPTION_SYNC_DISABLED", json!(null))
        .await;
    // Configured, switch off.
    let c = ready_tenant(&app, "beta").await;
    app.gql_ok(&token("beta", &["admin"]), "mutation { setConsumptionSync(enabled: false) { userErrors { code } } }", json!({})).await;
    rejected(&app, "beta", mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1), "CONSUMPTION_SYNC_DISABLED", json!(null))
        .await;
    app.shutdown().await;
}

#[tokio::test]
async fn every_rule_has_its_code_and_field() {
    let app = spawn_app().await;
    let c = ready_tenant(&app, "acme").await;
    let unmapped = app.customer("acme", "ext-u", "Unmapped", all_licenses()).await;
    let no_m365 = app
        .customer("acme", "ext-n", "No M365", json!([{"productModule": "ENDPOINTS", "edition": "BUSINESS", "provisionedOn": "2026-01-01"}]))
        .await;
    assert_eq!(app.map_customer("acme", &no_m365, 101).await["userErrors"], json!([]));
    let ended = app.customer("acme", "ext-d", "Ended", json!([{"productModule": "MICROSOFT_365", "edition": "BUSINESS", "provisionedOn": "2020-01-01", "deprovisionedOn": "2021-01-01"}])).await;
    let f = |n: &str| json!(["input", n]);
    rejected(
        &app,
        "acme",
        mapping_input(&unmapped, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1),
        "CUSTOMER_NOT_MAPPED",
        f("customerId"),
    )
    .await;
    rejected(
        &app,
        "acme",
        mapping_input(&no_m365, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 502, 1),
        "MODULE_NOT_PROVISIONED",
        f("productModule"),
    )
    .await;
    app.db.execute_unprepared("INSERT INTO cw_companies (tenant_id,id,identifier,name,status,refreshed_at) SELECT tenant_id, 103, 'C103', 'Delta', 'Active', now() FROM cw_companies WHERE id = 100").await.expect("seed");
    assert_eq!(app.map_customer("acme", &ended, 103).await["userErrors"], json!([]));
    rejected(
        &app,
        "acme",
        mapping_input(&ended, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1),
        "MODULE_NOT_PROVISIONED",
        f("productModule"),
    )
    .await;
    rejected(&app, "acme", mapping_input(&c, "MICROSOFT_365", "CLOUD_STORAGE", "AVERAGE", 500, 1), "USAGE_NOT_ALLOWED", f("usage")).await;
    rejected(&app, "acme", mapping_input(&c, "GOOGLE_WORKSPACE", "ACTIVE_USERS", "SUM", 500, 1), "INTERVAL_NOT_ALLOWED", f("interval"))
        .await;
    rejected(
        &app,
        "acme",
        mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 4242, 1),
        "AGREEMENT_NOT_FOUND",
        f("cwAgreementId"),
    )
    .await;
    rejected(
        &app,
        "acme",
        mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 502, 1),
        "AGREEMENT_NOT_FOUND",
        f("cwAgreementId"),
    )
    .await;
    rejected(&app, "acme", mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 501, 1), "AGREEMENT_INACTIVE", f("cwAgreementId"))
        .await;
    rejected(
        &app,
        "acme",
        mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 99),
        "ADDITION_NOT_FOUND",
        f("cwSequenceNumber"),
    )
    .await;
    rejected(
        &app,
        "acme",
        mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 10),
        "ADDITION_AMBIGUOUS",
        f("cwSequenceNumber"),
    )
    .await;
    rejected(
        &app,
        "acme",
        mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 12),
        "ADDITION_CANCELLED",
        f("cwSequenceNumber"),
    )
    .await;
    rejected(
        &app,
        "acme",
        mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 13),
        "ADDITION_PRODUCT_NOT_UNIQUE",
        f("cwSequenceNumber"),
    )
    .await;
    rejected(&app, "acme", mapping_input("999999", "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1), "NOT_FOUND", f("customerId")).await;
    rejected(&app, "acme", mapping_input("not-an-id", "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1), "NOT_FOUND", f("customerId"))
        .await;
    // The duplicates.
    assert_eq!(create(&app, "acme", mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1)).await["userErrors"], json!([]));
    rejected(
        &app,
        "acme",
        mapping_input(&c, "MICROSOFT_365", "PRESERVED_USERS", "AVERAGE", 500, 1),
        "DUPLICATE_ADDITION_MAPPING",
        f("cwSequenceNumber"),
    )
    .await;
    rejected(&app, "acme", mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "MAXIMUM", 500, 2), "DUPLICATE_USAGE_MAPPING", f("usage"))
        .await;
    app.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_creates_for_one_addition_one_wins() {
    let app = spawn_app().await;
    let c = ready_tenant(&app, "acme").await;
    let results = futures::future::join_all((0..20).map(|_| {
        let i = mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 3);
        let app = &app;
        async move { create(app, "acme", i).await }
    }))
    .await;
    assert_eq!(results.iter().filter(|r| r["userErrors"] == json!([])).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| r["userErrors"][0]["code"] == "DUPLICATE_ADDITION_MAPPING").count(), 19, "{results:?}");
    assert_eq!(app.count("product_mappings").await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_creates_for_one_usage_one_wins() {
    let app = spawn_app().await;
    let c = ready_tenant(&app, "acme").await;
    // Twenty distinct additions (own products) on agreement 500.
    for i in 0..20 {
        app.db
            .execute_unprepared(&format!(
                "INSERT INTO cw_additions (tenant_id,id,agreement_id,sequence_number,product_id,product_identifier,refreshed_at) SELECT tenant_id, {}, 500, {}, {}, 'P', now() FROM cw_agreements WHERE id = 500",
                9100 + i,
                100 + i,
                800 + i
            ))
            .await
            .expect("seed");
    }
    let results = futures::future::join_all((0..20).map(|i| {
        let i = mapping_input(&c, "ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", "SUM", 500, 100 + i);
        let app = &app;
        async move { create(app, "acme", i).await }
    }))
    .await;
    assert_eq!(results.iter().filter(|r| r["userErrors"] == json!([])).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| r["userErrors"][0]["code"] == "DUPLICATE_USAGE_MAPPING").count(), 19, "{results:?}");
    assert_eq!(app.count("product_mappings").await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn update_with_versions_and_delete() {
    let app = spawn_app().await;
    let c = ready_tenant(&app, "acme").await;
    let op = token("acme", &["operator"]);
    let m = create(&app, "acme", mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1)).await["productMapping"].clone();
    let id = m["id"].clone();
    let u = app
        .gql_ok(&op, UPDATE, json!({"id": id, "v": 1, "i": mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "LAST_DAY", 500, 2)}))
        .await;
    assert_eq!(u["updateProductMapping"]["userErrors"], json!([]), "{u}");
    assert_eq!(u["updateProductMapping"]["productMapping"]["version"], 2);
    assert_eq!(u["updateProductMapping"]["productMapping"]["cwAdditionId"], 9002);
    assert_eq!(u["updateProductMapping"]["productMapping"]["id"], id);
    // Stale version.
    let u = app
        .gql_ok(&op, UPDATE, json!({"id": id, "v": 1, "i": mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "MAXIMUM", 500, 2)}))
        .await;
    assert_eq!(u["updateProductMapping"]["userErrors"][0]["code"], "VERSION_CONFLICT");
    assert_eq!(u["updateProductMapping"]["userErrors"][0]["field"], json!(["expectedVersion"]));
    // Concurrent updates with the same version: exactly one wins.
    let results = futures::future::join_all((0..10).map(|i| {
        let vars = json!({"id": id, "v": 2, "i": mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", if i % 2 == 0 { "MAXIMUM" } else { "AVERAGE" }, 500, 2)});
        let (app, op) = (&app, &op);
        async move { app.gql_ok(op, UPDATE, vars).await }
    }))
    .await;
    assert_eq!(results.iter().filter(|r| r["updateProductMapping"]["userErrors"] == json!([])).count(), 1, "{results:?}");
    // Unknown ids.
    let u = app
        .gql_ok(&op, UPDATE, json!({"id": "424242", "v": 1, "i": mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "MAXIMUM", 500, 2)}))
        .await;
    assert_eq!(u["updateProductMapping"]["userErrors"][0]["code"], "NOT_FOUND");
    let d = app.gql_ok(&op, DELETE, json!({"id": "424242"})).await;
    assert_eq!(d["deleteProductMapping"]["userErrors"][0]["code"], "NOT_FOUND");
    let d = app.gql_ok(&op, DELETE, json!({"id": id})).await;
    assert_eq!(d["deleteProductMapping"]["deletedId"], id);
    assert_eq!(app.count("product_mappings").await, 0);
    let audit = app
        .gql_ok(
            &token("acme", &["viewer"]),
            r#"query($id: ID!) { auditLog(entityType: "product_mapping", entityId: $id) { edges { node { action before after } } } }"#,
            json!({"id": id}),
        )
        .await;
    let actions: Vec<_> = audit["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(actions, vec!["product_mapping.deleted", "product_mapping.updated", "product_mapping.updated", "product_mapping.created"]);
    app.shutdown().await;
}

#[tokio::test]
async fn save_product_mappings_is_atomic_and_keeps_ids() {
    let app = spawn_app().await;
    let c = ready_tenant(&app, "acme").await;
    let op = token("acme", &["operator"]);
    let s = app
        .gql_ok(&op, SAVE, json!({"c": c, "m": [mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1), mapping_input(&c, "ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 500, 2), mapping_input(&c, "ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", "SUM", 500, 3)]}))
        .await;
    assert_eq!(s["saveProductMappings"]["userErrors"], json!([]), "{s}");
    let first = s["saveProductMappings"]["productMappings"].as_array().expect("list").clone();
    assert_eq!(first.len(), 3);
    let id_of = |list: &[Value], usage: &str, add: i64| {
        list.iter().find(|m| m["usage"] == usage && m["cwAdditionId"] == add).map(|m| m["id"].clone())
    };
    let m365 = id_of(&first, "ACTIVE_USERS", 9001).expect("m365");
    // Swap additions between two kept mappings, drop one, add one: ids of kept ones stay.
    let s = app
        .gql_ok(&op, SAVE, json!({"c": c, "m": [mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 2), mapping_input(&c, "ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 500, 1), mapping_input(&c, "GOOGLE_WORKSPACE", "PRESERVED_USERS", "LAST_DAY", 500, 4)]}))
        .await;
    assert_eq!(s["saveProductMappings"]["userErrors"], json!([]), "{s}");
    let second = s["saveProductMappings"]["productMappings"].as_array().expect("list").clone();
    assert_eq!(second.len(), 3);
    assert_eq!(id_of(&second, "ACTIVE_USERS", 9002), Some(m365));
    assert!(second.iter().all(|m| m["usage"] != "CLOUD_STORAGE"));
    // One invalid entry: errors per entry, nothing written.
    let before = app
        .gql_ok(
            &token("acme", &["viewer"]),
            "query($id: ID!) { customer(id: $id) { productMappings { id version cwAdditionId } } }",
            json!({"id": c}),
        )
        .await;
    let s = app
        .gql_ok(&op, SAVE, json!({"c": c, "m": [mapping_input(&c, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 5), mapping_input(&c, "MICROSOFT_365", "CLOUD_STORAGE", "AVERAGE", 500, 4), mapping_input(&c, "ENDPOINTS", "ACTIVE_USERS", "AVERAGE", 500, 5)]}))
        .await;
    let errs = s["saveProductMappings"]["userErrors"].as_array().expect("errors").clone();
    assert!(errs.iter().any(|e| e["code"] == "USAGE_NOT_ALLOWED" && e["field"] == json!(["mappings", "1", "usage"])), "{errs:?}");
    assert!(
        errs.iter().any(|e| e["code"] == "DUPLICATE_ADDITION_MAPPING" && e["field"] == json!(["mappings", "2", "cwSequenceNumber"])),
        "{errs:?}"
    );
    let after = app
        .gql_ok(
            &token("acme", &["viewer"]),
            "query($id: ID!) { customer(id: $id) { productMappings { id version cwAdditionId } } }",
            json!({"id": c}),
        )
        .await;
    assert_eq!(before, after);
    // Unknown customer.
    let s = app.gql_ok(&op, SAVE, json!({"c": "999999", "m": []})).await;
    assert_eq!(s["saveProductMappings"]["userErrors"][0]["code"], "NOT_FOUND");
    // Empty list removes everything.
    let s = app.gql_ok(&op, SAVE, json!({"c": c, "m": []})).await;
    assert_eq!(s["saveProductMappings"]["productMappings"], json!([]));
    assert_eq!(app.count("product_mappings").await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn catalog_queries_and_options() {
    let app = spawn_app().await;
    ready_tenant(&app, "acme").await;
    let v = token("acme", &["viewer"]);
    let d = app.gql_ok(&v, "{ cwCompanies(search: \"acme\") { edges { node { id identifier name status } } } cwAgreements(companyId: 100) { id name status company { id } additions { id sequenceNumber productId productIdentifier quantity cancelledDate } } usageOptions(productModule: ENTERPRISE_WORKLOADS) intervalOptions(productModule: MICROSOFT_365) }", json!({})).await;
    assert_eq!(d["cwCompanies"]["edges"][0]["node"], json!({"id": 100, "identifier": "C100", "name": "Acme Corp", "status": "Active"}));
    let ags = d["cwAgreements"].as_array().expect("agreements");
    assert_eq!(ags.len(), 2);
    assert_eq!(
        ags[0]["additions"][0],
        json!({"id": 9001, "sequenceNumber": 1, "productId": 701, "productIdentifier": "PROD-701", "quantity": "0", "cancelledDate": null})
    );
    assert_eq!(d["usageOptions"], json!(["CLOUD_STORAGE", "EARLY_DELETE_LTR_STORAGE", "LTR_STORAGE"]));
    assert_eq!(d["intervalOptions"], json!(["AVERAGE", "MAXIMUM", "LAST_DAY"]));
    app.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_conflicting_mutations_one_wins() {
    let app = spawn_app().await;
    let c = ready_tenant(&app, "acme").await;
    let op = token("acme", &["operator"]);
    // 50 creates of the very same mapping.
    let results = futures::future::join_all((0..50).map(|_| {
        let i = mapping_input(&c, "ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 500, 5);
        let app = &app;
        async move { create(app, "acme", i).await }
    }))
    .await;
    assert_eq!(results.iter().filter(|r| r["userErrors"] == json!([])).count(), 1);
    let id = results.iter().find(|r| r["userErrors"] == json!([])).map(|r| r["productMapping"]["id"].clone()).expect("winner");
    // 50 updates with the same expected version, each to a different interval/addition.
    let results = futures::future::join_all((0..50).map(|i| {
        let vars = json!({"id": id, "v": 1, "i": mapping_input(&c, "ENDPOINTS", "ACTIVE_USERS", ["AVERAGE", "LAST_DAY"][i % 2], 500, [1, 2, 3, 4][i % 4])});
        let (app, op) = (&app, &op);
        async move { app.gql_ok(op, UPDATE, vars).await }
    }))
    .await;
    let winners = results.iter().filter(|r| r["updateProductMapping"]["userErrors"] == json!([])).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(results.iter().all(|r| r["updateProductMapping"]["userErrors"] == json!([])
        || r["updateProductMapping"]["userErrors"][0]["code"] == "VERSION_CONFLICT"));
    let v = app.gql_ok(&op, "query($id: ID!) { productMapping(id: $id) { version } }", json!({"id": id})).await;
    assert_eq!(v["productMapping"]["version"], 2);
    assert_eq!(app.count("product_mappings").await, 1);
    app.shutdown().await;
}
