//! GraphQL over HTTP and bad input: coded errors, never a panic or a raw database error.
use integration_tests::*;
use serde_json::{Value, json};

async fn post(app: &TestApp, accept: Option<&str>, content_type: &str, body: String, auth: bool) -> (u16, String, Value) {
    let mut req = app.http.post(format!("{}/graphql", app.address)).header("content-type", content_type).body(body);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    if auth {
        req = req.bearer_auth(token("acme", &["admin"]));
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, ct, body)
}

const GRJ: &str = "application/graphql-response+json";

#[tokio::test]
async fn media_types_and_status_codes() {
    let app = spawn_app().await;
    let q = |s: &str| json!({"query": s}).to_string();
    // application/json by default; graphql-response+json when asked.
    let (s, ct, _) = post(&app, None, "application/json", q("{ me { sub } }"), true).await;
    assert_eq!((s, ct.starts_with("application/json")), (200, true));
    let (s, ct, _) = post(&app, Some(GRJ), "application/json", q("{ me { sub } }"), true).await;
    assert_eq!((s, ct.starts_with(GRJ)), (200, true));
    let (s, ct, _) = post(&app, Some("application/json"), "application/json", q("{ me { sub } }"), true).await;
    assert_eq!((s, ct.starts_with("application/json")), (200, true));
    let (s, _, _) = post(&app, Some("text/plain"), "application/json", q("{ me { sub } }"), true).await;
    assert_eq!(s, 406);
    // Malformed JSON, missing query: 400 under both.
    for accept in [Some(GRJ), Some("application/json")] {
        assert_eq!(post(&app, accept, "application/json", "{not json".into(), true).await.0, 400);
        assert_eq!(post(&app, accept, "application/json", json!({"variables": {}}).to_string(), true).await.0, 400);
        assert_eq!(
            post(&app, accept, "application/json", json!([{"query": "{ me { sub } }"}, {"query": "{ me { sub } }"}]).to_string(), true)
                .await
                .0,
            400,
            "batch"
        );
    }
    // Parse and validation errors: 400 under graphql-response+json, 200 under application/json.
    let (s, _, b) = post(&app, Some(GRJ), "application/json", q("{ me { sub "), true).await;
    assert_eq!(s, 400, "{b}");
    let (s, _, b) = post(&app, Some("application/json"), "application/json", q("{ me { sub "), true).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["errors"][0]["extensions"]["code"].is_string());
    let (s, _, b) = post(&app, Some(GRJ), "application/json", q("{ nope }"), true).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let (s, _, _) = post(&app, Some("application/json"), "application/json", q("{ nope }"), true).await;
    assert_eq!(s, 200);
    // Wrong content type.
    assert_eq!(post(&app, None, "text/plain", q("{ me { sub } }"), true).await.0, 415);
    // Unauthenticated.
    let (s, _, b) = post(&app, None, "application/json", q("{ me { sub } }"), false).await;
    assert_eq!((s, b["errors"][0]["extensions"]["code"].clone()), (401, json!("UNAUTHENTICATED")));
    // Body limit: 4 MiB.
    let big = json!({"query": "{ me { sub } }", "variables": {"pad": "x".repeat(5 * 1024 * 1024)}}).to_string();
    assert_eq!(post(&app, None, "application/json", big, true).await.0, 413);
    app.shutdown().await;
}

#[tokio::test]
async fn get_serves_queries_graphiql_and_refuses_mutations() {
    let app = spawn_app().await;
    let url = format!("{}/graphql", app.address);
    let t = token("acme", &["admin"]);
    let res = app.http.get(&url).query(&[("query", "{ me { tenantId } }")]).bearer_auth(&t).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.expect("json")["data"]["me"]["tenantId"], "acme");
    let res = app
        .http
        .get(&url)
        .query(&[("query", "mutation { setConsumptionSync(enabled: true) { userErrors { code } } }")])
        .bearer_auth(&t)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 405);
    let res = app.http.get(&url).header("accept", "text/html").send().await.expect("graphiql");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.text().await.expect("html").to_lowercase().contains("graphiql"));
    assert_eq!(app.http.get(format!("{}/healthz", app.address)).send().await.expect("h").status().as_u16(), 200);
    assert_eq!(app.http.get(format!("{}/readyz", app.address)).send().await.expect("r").status().as_u16(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn introspection_and_graphiql_can_be_switched_off() {
    let app = spawn_app_with(AppOptions { env: vec![("GRAPHQL_INTROSPECTION".into(), "false".into())], ..Default::default() }).await;
    let body = app.gql(&token("acme", &["viewer"]), "{ __schema { types { name } } }", json!({})).await;
    assert!(body["errors"].is_array() || body["data"]["__schema"].is_null(), "{body}");
    assert!(!body.to_string().contains("ProductMapping"), "{body}");
    let res = app.http.get(format!("{}/graphql", app.address)).header("accept", "text/html").send().await.expect("graphiql");
    assert_eq!(res.status().as_u16(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_coded_errors_never_a_panic() {
    let app = spawn_app().await;
    let t = token("acme", &["admin"]);
    let cases = [
        // Malformed ids: like missing ones.
        (r#"{ customer(id: "abc") { id } productMapping(id: "-1") { id } }"#, json!({})),
        (r#"{ customer(id: "99999999999999999999999") { id } }"#, json!({})),
        // Unknown enum value, wrong types, missing required args.
        ("{ usageOptions(productModule: NOT_A_MODULE) }", json!({})),
        ("query($m: ProductModule!) { usageOptions(productModule: $m) }", json!({"m": "NOT_A_MODULE"})),
        ("query($f: Int) { customers(first: $f) { edges { cursor } } }", json!({"f": "ten"})),
        ("{ cwAgreements(companyId: \"x\") { id } }", json!({})),
        ("{ cwAgreements { id } }", json!({})),
        (
            "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { userErrors { code } } }",
            json!({"i": [{"externalId": 1, "accountName": true, "licenses": "no"}]}),
        ),
        (
            "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { userErrors { code } } }",
            json!({"i": [{"externalId": "a", "accountName": "b", "licenses": [{"productModule": "ENDPOINTS", "edition": "BUSINESS", "provisionedOn": "2026-02-30"}]}]}),
        ),
    ];
    for (q, vars) in cases {
        let (status, body) = app.gql_raw(Some(&t), q, vars).await;
        assert_eq!(status, 200, "{q}: {body}");
        let text = body.to_string();
        assert!(
            !text.contains("panicked") && !text.contains("sqlx") && !text.contains("SQL") && !text.contains("duplicate key"),
            "{q}: {body}"
        );
        if let Some(errors) = body["errors"].as_array() {
            for e in errors {
                assert!(e["extensions"]["code"].is_string(), "{q}: {body}");
            }
        }
    }
    // Malformed ids return null, not errors.
    let d = app.gql_ok(&t, r#"{ customer(id: "abc") { id } productMapping(id: "-1") { id } }"#, json!({})).await;
    assert_eq!(d, json!({"customer": null, "productMapping": null}));
    // Strings over a field's limit are user errors; over the limit of any input string (4,096
    // characters), the request is refused before anything runs.
    let d = app
        .gql_ok(
            &t,
            "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { userErrors { code field } } }",
            json!({"i": [{"externalId": "e", "accountName": "n".repeat(1_000), "licenses": []}]}),
        )
        .await;
    assert_eq!(d["upsertCustomers"]["userErrors"][0], json!({"code": "INVALID_INPUT", "field": ["input", "0", "accountName"]}));
    let body = app
        .gql(
            &t,
            "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { userErrors { code field } } }",
            json!({"i": [{"externalId": "e", "accountName": "n".repeat(100_000), "licenses": []}]}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    assert!(body["data"].is_null(), "{body}");
    // Depth limit.
    let mut deep = "id".to_string();
    for _ in 0..10 {
        deep = format!("productMappings {{ customer {{ {deep} }} }}");
    }
    let deep = format!("{{ customers {{ edges {{ node {{ {deep} }} }} }} }}");
    let body = app.gql(&t, &deep, json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap_or("").to_lowercase().contains("deep"), "{body}");
    assert_eq!(app.count("customers").await, 0);
    app.shutdown().await;
}
