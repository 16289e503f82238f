//! Tenant isolation: another tenant's id gets exactly the answer of an id that does not exist.
use integration_tests::*;
use serde_json::{Value, json};

/// (operation, query with `$id`) — every operation that takes an id of ours.
fn id_operations() -> Vec<(&'static str, &'static str)> {
    vec![
        ("customer", "query($id: ID!) { customer(id: $id) { id accountName } }"),
        ("productMapping", "query($id: ID!) { productMapping(id: $id) { id } }"),
        (
            "mapCustomer",
            "mutation($id: ID!) { mapCustomer(customerId: $id, cwCompanyId: 101) { customer { id } userErrors { code field message } } }",
        ),
        (
            "unmapCustomer",
            "mutation($id: ID!) { unmapCustomer(customerId: $id, unmapProducts: true) { customer { id } userErrors { code field message } } }",
        ),
        (
            "createProductMapping",
            "mutation($id: ID!) { createProductMapping(input: {customerId: $id, productModule: ENDPOINTS, usage: ACTIVE_USERS, interval: AVERAGE, cwAgreementId: 502, cwSequenceNumber: 1}) { productMapping { id } userErrors { code field message } } }",
        ),
        (
            "updateProductMapping",
            "mutation($id: ID!) { updateProductMapping(id: $id, expectedVersion: 1, input: {customerId: $id, productModule: ENDPOINTS, usage: ACTIVE_USERS, interval: AVERAGE, cwAgreementId: 502, cwSequenceNumber: 1}) { productMapping { id } userErrors { code field message } } }",
        ),
        ("deleteProductMapping", "mutation($id: ID!) { deleteProductMapping(id: $id) { deletedId userErrors { code field message } } }"),
        (
            "saveProductMappings",
            "mutation($id: ID!) { saveProductMappings(customerId: $id, mappings: []) { productMappings { id } userErrors { code field message } } }",
        ),
        ("auditLog", r#"query($id: ID!) { auditLog(entityId: $id) { edges { node { id } } } }"#),
    ]
}

#[tokio::test]
async fn other_tenants_ids_look_like_missing_ids() {
    let app = spawn_app().await;
    // Tenant A with a customer and a mapping.
    let a_customer = ready_tenant(&app, "tenant-a").await;
    let m = app
        .gql_ok(
            &token("tenant-a", &["operator"]),
            crate::mappings::CREATE,
            json!({"i": {"customerId": a_customer, "productModule": "MICROSOFT_365", "usage": "ACTIVE_USERS", "interval": "AVERAGE", "cwAgreementId": 500, "cwSequenceNumber": 1}}),
        )
        .await;
    let a_mapping = m["createProductMapping"]["productMapping"]["id"].as_str().expect("mapping").to_string();
    // Tenant B, fully set up too (so rules would otherwise pass).
    ready_tenant(&app, "tenant-b").await;
    let b = token("tenant-b", &["admin"]);
    let before = (app.count("product_mappings").await, app.count("customer_mappings").await);
    let missing = "987654321";
    for (name, q) in id_operations() {
        for foreign in [a_customer.as_str(), a_mapping.as_str()] {
            let got: Value = app.gql(&b, q, json!({"id": foreign})).await;
            let expected: Value = app.gql(&b, q, json!({"id": missing})).await;
            assert_eq!(got, expected, "{name} with tenant A's id {foreign} must look like a missing id");
        }
    }
    assert_eq!((app.count("product_mappings").await, app.count("customer_mappings").await), before);
    // Tenant A's catalog and customers are invisible to B's lists.
    let lists = app.gql_ok(&b, "{ customers { edges { node { externalId } } } }", json!({})).await;
    assert_eq!(lists["customers"]["edges"].as_array().map(Vec::len), Some(1));
    let a_id = app.tenant_id("tenant-a").await;
    app.db.execute_unprepared(&format!("INSERT INTO cw_companies (tenant_id,id,identifier,name,status,refreshed_at) VALUES ({a_id}, 777, 'A777', 'Only A', 'Active', now())")).await.expect("seed");
    let cos = app
        .gql_ok(&b, "{ cwCompanies(search: \"Only A\") { edges { node { id } } } cwAgreements(companyId: 777) { id } }", json!({}))
        .await;
    assert_eq!(cos, json!({"cwCompanies": {"edges": []}, "cwAgreements": []}));
    // Mapping B's customer to A's company: the answer of a company that does not exist.
    let b_customer = app.customer("tenant-b", "b-2", "B Two", all_licenses()).await;
    let foreign = app.map_customer("tenant-b", &b_customer, 777).await;
    let none = app.map_customer("tenant-b", &b_customer, 778).await;
    assert_eq!(foreign, none);
    app.shutdown().await;
}

use sea_orm::ConnectionTrait;
