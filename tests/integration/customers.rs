//! Customers with licenses, pagination/search/filter, customer mappings.
use integration_tests::*;
use serde_json::json;

const UPSERT: &str = "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { customers { id externalId accountName licenses { productModule edition provisionedOn deprovisionedOn addOns } } userErrors { code field message } } }";

#[tokio::test]
async fn upsert_is_idempotent_and_replaces_licenses() {
    let app = spawn_app().await;
    let t = token("acme", &["integration"]);
    let first = app
        .gql_ok(&t, UPSERT, json!({"i": [{"externalId": "e1", "accountName": "Zeta", "licenses": [{"productModule": "MICROSOFT_365", "edition": "ELITE", "provisionedOn": "2026-02-10", "addOns": ["Sensitive Data Governance"]}]}]}))
        .await;
    let c = &first["upsertCustomers"]["customers"][0];
    assert_eq!(
        c["licenses"][0],
        json!({"productModule": "MICROSOFT_365", "edition": "ELITE", "provisionedOn": "2026-02-10", "deprovisionedOn": null, "addOns": ["Sensitive Data Governance"]})
    );
    let id = c["id"].clone();
    let second = app
        .gql_ok(&t, UPSERT, json!({"i": [{"externalId": "e1", "accountName": "Zeta 2", "licenses": [{"productModule": "ENDPOINTS", "edition": "BUSINESS", "provisionedOn": "2026-01-01", "deprovisionedOn": "2026-03-31"}]}]}))
        .await;
    let c2 = &second["upsertCustomers"]["customers"][0];
    assert_eq!(c2["id"], id);
    assert_eq!(c2["accountName"], "Zeta 2");
    assert_eq!(c2["licenses"].as_array().map(Vec::len), Some(1));
    assert_eq!(c2["licenses"][0]["deprovisionedOn"], "2026-03-31");
    assert_eq!(app.count("customers").await, 1);
    assert_eq!(app.count("licenses").await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn upsert_validation_writes_nothing() {
    let app = spawn_app().await;
    let t = token("acme", &["integration"]);
    let data = app
        .gql_ok(
            &t,
            UPSERT,
            json!({"i": [
                {"externalId": "ok", "accountName": "Fine", "licenses": []},
                {"externalId": "", "accountName": "No id", "licenses": []},
                {"externalId": "dup", "accountName": "A", "licenses": [
                    {"productModule": "ENDPOINTS", "edition": "BUSINESS", "provisionedOn": "2026-01-01"},
                    {"productModule": "ENDPOINTS", "edition": "ELITE", "provisionedOn": "2026-01-01", "deprovisionedOn": "2025-01-01"}]},
                {"externalId": "x".repeat(300), "accountName": "Long", "licenses": []}
            ]}),
        )
        .await;
    let errs = data["upsertCustomers"]["userErrors"].as_array().expect("errors").clone();
    let fields: Vec<_> = errs.iter().map(|e| (e["code"].as_str().unwrap_or("").to_string(), e["field"].clone())).collect();
    assert!(fields.contains(&("INVALID_INPUT".into(), json!(["input", "1", "externalId"]))), "{fields:?}");
    assert!(fields.contains(&("DUPLICATE_LICENSE".into(), json!(["input", "2", "licenses", "1", "productModule"]))), "{fields:?}");
    assert!(fields.contains(&("INVALID_INPUT".into(), json!(["input", "2", "licenses", "1", "deprovisionedOn"]))), "{fields:?}");
    assert!(fields.contains(&("INVALID_INPUT".into(), json!(["input", "3", "externalId"]))), "{fields:?}");
    assert_eq!(app.count("customers").await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn customers_paginate_by_name_with_search_and_mapped_filter() {
    let app = spawn_app().await;
    app.configure_cw("acme").await;
    app.seed_catalog("acme", &standard_catalog()).await;
    let t = token("acme", &["integration"]);
    let names = ["delta", "Alpha", "charlie", "Bravo", "echo"];
    let input: Vec<_> =
        names.iter().enumerate().map(|(i, n)| json!({"externalId": format!("e{i}"), "accountName": n, "licenses": []})).collect();
    app.gql_ok(&t, UPSERT, json!({"i": input})).await;
    let viewer = token("acme", &["viewer"]);
    let q = "query($f: Int, $a: String, $s: String, $m: Boolean) { customers(first: $f, after: $a, search: $s, mapped: $m) { edges { cursor node { id accountName cwCompany { id name } } } pageInfo { hasNextPage endCursor } } }";
    let p1 = app.gql_ok(&viewer, q, json!({"f": 2})).await;
    let names1: Vec<_> = p1["customers"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["accountName"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names1, vec!["Alpha", "Bravo"]);
    assert_eq!(p1["customers"]["pageInfo"]["hasNextPage"], true);
    let p2 = app.gql_ok(&viewer, q, json!({"f": 10, "a": p1["customers"]["pageInfo"]["endCursor"]})).await;
    let names2: Vec<_> = p2["customers"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["accountName"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names2, vec!["charlie", "delta", "echo"]);
    assert_eq!(p2["customers"]["pageInfo"]["hasNextPage"], false);
    let s = app.gql_ok(&viewer, q, json!({"s": "HAR"})).await;
    assert_eq!(s["customers"]["edges"].as_array().map(Vec::len), Some(1));
    // Map one and filter.
    let id = p1["customers"]["edges"][0]["node"]["id"].as_str().expect("id").to_string();
    assert_eq!(app.map_customer("acme", &id, 100).await["userErrors"], json!([]));
    let mapped = app.gql_ok(&viewer, q, json!({"m": true})).await;
    assert_eq!(mapped["customers"]["edges"].as_array().map(Vec::len), Some(1));
    assert_eq!(mapped["customers"]["edges"][0]["node"]["cwCompany"], json!({"id": 100, "name": "Acme Corp"}));
    let unmapped = app.gql_ok(&viewer, q, json!({"m": false})).await;
    assert_eq!(unmapped["customers"]["edges"].as_array().map(Vec::len), Some(4));
    // first > 100 is a BAD_USER_INPUT error.
    let body = app.gql(&viewer, q, json!({"f": 101})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    let body = app.gql(&viewer, q, json!({"a": "garbage-cursor"})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    app.shutdown().await;
}

const MAP: &str = "mutation($c: ID!, $co: Int!, $u: Boolean) { mapCustomer(customerId: $c, cwCompanyId: $co, unmapProducts: $u) { customer { id cwCompany { id } } userErrors { code field message } } }";
const UNMAP: &str = "mutation($c: ID!, $u: Boolean) { unmapCustomer(customerId: $c, unmapProducts: $u) { customer { id cwCompany { id } } userErrors { code field message } } }";

#[tokio::test]
async fn customer_mapping_rules() {
    let app = spawn_app().await;
    let c1 = ready_tenant(&app, "acme").await; // mapped to 100
    let c2 = app.customer("acme", "ext-2", "Customer Two", all_licenses()).await;
    let op = token("acme", &["operator"]);
    let err =
        |d: &serde_json::Value| (d["mapCustomer"]["userErrors"][0]["code"].clone(), d["mapCustomer"]["userErrors"][0]["field"].clone());
    // Company not in the catalog.
    let d = app.gql_ok(&op, MAP, json!({"c": c2, "co": 4242})).await;
    assert_eq!(err(&d), (json!("NOT_FOUND"), json!(["cwCompanyId"])));
    // Inactive company.
    let d = app.gql_ok(&op, MAP, json!({"c": c2, "co": 102})).await;
    assert_eq!(err(&d), (json!("COMPANY_NOT_ACTIVE"), json!(["cwCompanyId"])));
    // One-to-one.
    let d = app.gql_ok(&op, MAP, json!({"c": c2, "co": 100})).await;
    assert_eq!(err(&d), (json!("COMPANY_ALREADY_MAPPED"), json!(["cwCompanyId"])));
    // Unknown customer.
    let d = app.gql_ok(&op, MAP, json!({"c": "999999", "co": 101})).await;
    assert_eq!(err(&d), (json!("NOT_FOUND"), json!(["customerId"])));
    assert_eq!(app.count("customer_mappings").await, 1);
    // With a product mapping, changing the company needs unmapProducts.
    let m = app
        .gql_ok(&op, crate::mappings::CREATE, json!({"i": {"customerId": c1, "productModule": "MICROSOFT_365", "usage": "ACTIVE_USERS", "interval": "AVERAGE", "cwAgreementId": 500, "cwSequenceNumber": 1}}))
        .await;
    assert_eq!(m["createProductMapping"]["userErrors"], json!([]), "{m}");
    let d = app.gql_ok(&op, MAP, json!({"c": c1, "co": 101})).await;
    assert_eq!(err(&d), (json!("CUSTOMER_HAS_PRODUCT_MAPPINGS"), json!(["unmapProducts"])));
    let d = app.gql_ok(&op, UNMAP, json!({"c": c1})).await;
    assert_eq!(d["unmapCustomer"]["userErrors"][0]["code"], "CUSTOMER_HAS_PRODUCT_MAPPINGS");
    assert_eq!(app.count("product_mappings").await, 1);
    let d = app.gql_ok(&op, MAP, json!({"c": c1, "co": 101, "u": true})).await;
    assert_eq!(d["mapCustomer"]["userErrors"], json!([]), "{d}");
    assert_eq!(d["mapCustomer"]["customer"]["cwCompany"]["id"], 101);
    assert_eq!(app.count("product_mappings").await, 0);
    let d = app.gql_ok(&op, UNMAP, json!({"c": c1})).await;
    assert_eq!(d["unmapCustomer"]["customer"]["cwCompany"], json!(null));
    assert_eq!(app.count("customer_mappings").await, 0);
    let audit = app
        .gql_ok(
            &token("acme", &["viewer"]),
            r#"{ auditLog(entityType: "customer") { edges { node { action before after } } } }"#,
            json!({}),
        )
        .await
        .to_string();
    assert!(audit.contains("customer_mapping.mapped") && audit.contains("customer_mapping.unmapped"), "{audit}");
    app.shutdown().await;
}
