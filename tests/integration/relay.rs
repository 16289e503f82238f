//! Relay object identification: every type implementing `Node` round-trips through `node(id:)`,
//! `nodes(ids:)` answers in order with `null` for foreign, missing and malformed ids, and the audit
//! log's `entityId` is an id `node` and `auditLog(entityId:)` take back.
use integration_tests::*;
use serde_json::{Value, json};

/// The object types implementing `Node`, and every object type with an `id: ID!` field, from the
/// running API's own introspection.
async fn node_types(app: &TestApp, t: &str) -> (Vec<String>, Vec<String>) {
    let d = app
        .gql_ok(
            t,
            "{ node: __type(name: \"Node\") { kind possibleTypes { name } } \
               schema: __schema { types { name kind fields { name type { kind ofType { name } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["node"]["kind"], "INTERFACE", "{d}");
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v.as_array().expect("list").iter().map(|t| t["name"].as_str().expect("name").to_string()).collect();
        n.sort();
        n
    };
    let implementors = names(&d["node"]["possibleTypes"]);
    let with_global_id: Vec<Value> = d["schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .filter(|t| t["kind"] == "OBJECT" && !t["name"].as_str().unwrap_or("_").starts_with("__"))
        .filter(|t| {
            t["fields"].as_array().is_some_and(|f| {
                f.iter().any(|f| f["name"] == "id" && f["type"]["kind"] == "NON_NULL" && f["type"]["ofType"]["name"] == "ID")
            })
        })
        .cloned()
        .collect();
    (implementors, names(&Value::Array(with_global_id)))
}

#[tokio::test]
async fn every_node_type_round_trips_and_foreign_or_malformed_ids_are_null() {
    let app = spawn_app_with(AppOptions { with_worker: true, ..Default::default() }).await;
    let admin = token("relay-a", &["admin"]);
    let customer = ready_tenant(&app, "relay-a").await;
    let m = app
        .gql_ok(&admin, crate::mappings::CREATE, json!({"i": mapping_input(&customer, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1)}))
        .await;
    assert_eq!(m["createProductMapping"]["userErrors"], json!([]), "{m}");
    let mapping = m["createProductMapping"]["productMapping"]["id"].as_str().expect("mapping").to_string();
    let run = app
        .gql_ok(
            &admin,
            "mutation($p: Period!, $c: [ID!]) { runMonthlySync(period: $p, dryRun: true, customerIds: $c) { syncRun { id customerIds } userErrors { code } } }",
            json!({"p": app.latest_closed().to_string(), "c": [customer]}),
        )
        .await;
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    // The run's customers are named by the ids the caller used.
    assert_eq!(run["runMonthlySync"]["syncRun"]["customerIds"], json!([customer]));
    app.wait_for_run("relay-a", &run_id, 60).await;
    let d = app
        .gql_ok(
            &admin,
            "query($r: ID) { pushes(syncRunId: $r) { edges { node { id } } } \
               auditLog(first: 1, entityType: \"product_mapping\") { edges { node { id entityId } } } }",
            json!({"r": run_id}),
        )
        .await;
    let push = d["pushes"]["edges"][0]["node"]["id"].as_str().expect("a push").to_string();
    let audit = d["auditLog"]["edges"][0]["node"]["id"].as_str().expect("an audit entry").to_string();
    // An audit entry of an entity of ours names it by its global id.
    assert_eq!(d["auditLog"]["edges"][0]["node"]["entityId"], json!(mapping), "{d}");

    let samples = [("Customer", &customer), ("ProductMapping", &mapping), ("SyncRun", &run_id), ("Push", &push), ("AuditEntry", &audit)];
    let (implementors, with_global_id) = node_types(&app, &admin).await;
    // Every object with an `id: ID!` is a Node (a new entity type cannot forget it) ...
    assert_eq!(implementors, with_global_id, "object types with `id: ID!` must implement Node");
    // ... and every Node has a sample here (a new one makes this test name it).
    let mut sampled: Vec<String> = samples.iter().map(|(t, _)| t.to_string()).collect();
    sampled.sort();
    assert_eq!(implementors, sampled, "add a sample of each new Node type to this test");

    for (type_name, id) in samples {
        let got = app.gql_ok(&admin, "query($id: ID!) { node(id: $id) { __typename id } }", json!({"id": id})).await;
        assert_eq!(got["node"], json!({"__typename": type_name, "id": id}), "{type_name} round-trips through node(id:)");
        // Ids are opaque: no table key in sight.
        assert!(id.parse::<i64>().is_err(), "{type_name} id {id} is not a bare number");
    }
    // The type's own field takes the id; an id of another type is null there.
    let own = app
        .gql_ok(
            &admin,
            "query($c: ID!, $m: ID!, $r: ID!, $p: ID!) { customer(id: $c) { id } productMapping(id: $m) { id } syncRun(id: $r) { id } push(id: $p) { id } \
               wrong: customer(id: $m) { id } wrongRun: syncRun(id: $p) { id } }",
            json!({"c": customer, "m": mapping, "r": run_id, "p": push}),
        )
        .await;
    assert_eq!(
        own,
        json!({"customer": {"id": customer}, "productMapping": {"id": mapping}, "syncRun": {"id": run_id}, "push": {"id": push}, "wrong": null, "wrongRun": null})
    );

    // Another tenant's ids, ids of rows that do not exist, malformed ids and bare table keys: null, in place.
    let other = ready_tenant(&app, "relay-b").await;
    let nobody = global_id(NodeType::Push, 987_654_321);
    let bare_key = table_key(&customer).to_string();
    let ids = json!([customer, other, "not an id", push, nobody, bare_key, "", mapping, customer]);
    let got = app.gql_ok(&admin, "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }", json!({"ids": ids})).await;
    assert_eq!(
        got["nodes"],
        json!([
            {"__typename": "Customer", "id": customer},
            null,
            null,
            {"__typename": "Push", "id": push},
            null,
            null,
            null,
            {"__typename": "ProductMapping", "id": mapping},
            {"__typename": "Customer", "id": customer}
        ]),
        "{got}"
    );
    // Tenant B sees its own customer and none of A's.
    let b = app
        .gql_ok(&token("relay-b", &["viewer"]), "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", json!({"ids": [other, customer, push]}))
        .await;
    assert_eq!(b["nodes"], json!([{"id": other}, null, null]));
    // More than 100 ids is a request error, like a page of more than 100.
    let many: Vec<&str> = std::iter::repeat_n(customer.as_str(), 101).collect();
    let body = app.gql(&admin, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", json!({"ids": many})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");

    // A type the caller's roles may not read is FORBIDDEN through node too, as through its own field.
    let integration = token("relay-a", &["integration"]);
    let c = app.gql_ok(&integration, "query($id: ID!) { node(id: $id) { id } }", json!({"id": customer})).await;
    assert_eq!(c["node"]["id"], json!(customer));
    let body = app.gql(&integration, "query($id: ID!) { node(id: $id) { id } }", json!({"id": push})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");

    // The audit log's entityId resolves through node and filters the log by the same id.
    let log = app
        .gql_ok(&admin, "query($id: ID) { auditLog(entityId: $id) { edges { node { entityType entityId } } } }", json!({"id": customer}))
        .await;
    let entries = log["auditLog"]["edges"].as_array().expect("entries");
    assert!(!entries.is_empty(), "{log}");
    assert!(entries.iter().all(|e| e["node"] == json!({"entityType": "customer", "entityId": customer})), "{log}");
    // A bare table key finds only entities without a global id (the settings, keyed by the tenant,
    // may share the number), never the customer.
    let log = app
        .gql_ok(&admin, "query($id: ID) { auditLog(entityId: $id) { edges { node { entityType entityId } } } }", json!({"id": bare_key}))
        .await;
    let entries = log["auditLog"]["edges"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .all(|e| e["node"]["entityId"] == json!(bare_key) && e["node"]["entityType"].as_str().is_some_and(|t| t.ends_with("settings"))),
        "a bare table key of a customer is not its id: {log}"
    );
    let log = app
        .gql_ok(
            &admin,
            "query($id: ID) { auditLog(entityType: \"push\", entityId: $id) { edges { node { id } } } }",
            json!({"id": customer}),
        )
        .await;
    assert_eq!(log["auditLog"]["edges"], json!([]), "a customer's id with another entity type matches nothing");
    app.shutdown().await;
}
