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
        ("node", "query($id: ID!) { node(id: $id) { id __typename } }"),
        ("nodes", "query($id: ID!) { nodes(ids: [$id, $id]) { id } }"),
        ("pushCounts by run", "query($id: ID!) { pushCounts(syncRunId: $id) { total } }"),
        ("pushCounts by customer", "query($id: ID!) { pushCounts(customerId: $id) { total } }"),
        ("syncRun", "query($id: ID!) { syncRun(id: $id) { id status } }"),
        ("push", "query($id: ID!) { push(id: $id) { id status } }"),
        ("pushes by run", "query($id: ID!) { pushes(syncRunId: $id) { edges { node { id } } } }"),
        ("pushes by customer", "query($id: ID!) { pushes(customerId: $id) { edges { node { id } } } }"),
        (
            "consumption",
            r#"query($id: ID!) { consumption(customerId: $id, productModule: MICROSOFT_365, usage: ACTIVE_USERS, from: "2026-01-01", to: "2026-12-31") { day value } }"#,
        ),
        ("consumptionPreview", r#"query($id: ID!) { consumptionPreview(period: "2026-10", customerId: $id) { quantity } }"#),
        ("retryPush", "mutation($id: ID!) { retryPush(id: $id) { push { id } userErrors { code field message } } }"),
        (
            "retryFailedPushes",
            "mutation($id: ID!) { retryFailedPushes(syncRunId: $id) { pushes { id } userErrors { code field message } } }",
        ),
        (
            "runMonthlySync",
            r#"mutation($id: ID!) { runMonthlySync(period: "2026-10", dryRun: true, customerIds: [$id]) { syncRun { id } userErrors { code field message } } }"#,
        ),
        (
            "recordConsumption",
            r#"mutation($id: ID!) { recordConsumption(samples: [{customerId: $id, productModule: MICROSOFT_365, usage: ACTIVE_USERS, day: "2026-10-01", value: "1"}]) { result { accepted } userErrors { code field message } } }"#,
        ),
    ]
}

#[tokio::test]
async fn other_tenants_ids_look_like_missing_ids() {
    let app = spawn_app_with(AppOptions { with_worker: true, ..Default::default() }).await;
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
    // A dry run of tenant A, with its push rows (the aggregation is stepped in-process).
    let period = app.latest_closed().to_string();
    let run = app
        .gql_ok(
            &token("tenant-a", &["operator"]),
            "mutation($p: Period!) { runMonthlySync(period: $p, dryRun: true) { syncRun { id } userErrors { code } } }",
            json!({"p": period}),
        )
        .await;
    let a_run = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    app.wait_for_run("tenant-a", &a_run, 60).await;
    let pushes = app
        .gql_ok(&token("tenant-a", &["viewer"]), "query($r: ID) { pushes(syncRunId: $r) { edges { node { id } } } }", json!({"r": a_run}))
        .await;
    let a_push = pushes["pushes"]["edges"][0]["node"]["id"].as_str().expect("a push of tenant A").to_string();
    // Tenant B, fully set up too (so rules would otherwise pass).
    ready_tenant(&app, "tenant-b").await;
    let b = token("tenant-b", &["admin"]);
    let before = (app.count("product_mappings").await, app.count("customer_mappings").await);
    // A malformed id (a bare table key is one), and well-formed global ids of every type that no
    // row has: each argument answers all of them alike, and tenant A's ids the same way.
    let malformed = "987654321";
    let missing: Vec<String> = NodeType::ALL.iter().map(|t| global_id(*t, 987_654_321)).collect();
    for (name, q) in id_operations() {
        // Messages may echo the id the caller sent; that reveals nothing, so it is masked.
        let expected: Value = mask_id(app.gql(&b, q, json!({"id": malformed})).await, malformed);
        for id in missing.iter().chain([&a_customer, &a_mapping, &a_run, &a_push]) {
            let got: Value = mask_id(app.gql(&b, q, json!({"id": id})).await, id);
            assert_eq!(got, expected, "{name} with {id} (tenant A's or nobody's) must look like a malformed id");
        }
        // Tenant A's own ids resolve for A (so the comparison above is not vacuous for node).
        if name == "node" {
            for id in [&a_customer, &a_mapping, &a_run, &a_push] {
                let own = app.gql_ok(&token("tenant-a", &["admin"]), q, json!({"id": id})).await;
                assert_eq!(own["node"]["id"], json!(id), "{own}");
            }
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

/// Replace `id` as a whole word inside every `message` string.
fn mask_id(v: Value, id: &str) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("message", Value::String(m)) => {
                        let masked = m.split_inclusive(|c: char| !c.is_ascii_alphanumeric()).map(|w| {
                            let word = w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                            if word == id { w.replacen(id, "<id>", 1) } else { w.to_string() }
                        });
                        (k, Value::String(masked.collect()))
                    }
                    (_, v) => (k, mask_id(v, id)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| mask_id(x, id)).collect()),
        other => other,
    }
}
