//! The core flow on both deployment shapes (issue 5 point 4): the same function runs against the
//! embedded deployment (a SQLite file with the apalis-sqlite queue in it, no Redis) and against
//! PostgreSQL + Redis — mappings with validation, ingest with validation, aggregation (preview), a
//! dry run, a real run against the fake ConnectWise with one failing push and its ticket, the retry
//! of that push, and a re-run that sends nothing unchanged.
use std::collections::HashMap;

use integration_tests::*;
use serde_json::{Value, json};

pub(crate) const CREATE: &str = "mutation($i: ProductMappingInput!) { createProductMapping(input: $i) { productMapping { id version cwAdditionId } userErrors { code field message } } }";
const UPDATE: &str = "mutation($id: ID!, $i: ProductMappingInput!, $v: Int!) { updateProductMapping(id: $id, input: $i, expectedVersion: $v) { productMapping { id version interval } userErrors { code field } } }";
const SAVE: &str = "mutation($c: ID!, $m: [ProductMappingInput!]!) { saveProductMappings(customerId: $c, mappings: $m) { productMappings { id cwAdditionId usage interval } userErrors { code field message } } }";
const RECORD: &str = "mutation($s: [ConsumptionSampleInput!]!) { recordConsumption(samples: $s) { result { accepted inserted updated unchanged staleMappings } userErrors { code field message } } }";
const RUN: &str = "mutation($p: Period!, $d: Boolean) { runMonthlySync(period: $p, dryRun: $d) { syncRun { id status dryRun } userErrors { code field message } } }";
const PUSHES: &str = "query($r: ID) { pushes(syncRunId: $r, first: 100) { edges { node { id status quantity value fallback skipReason attempts lastErrorCode ticketId cwAdditionId } } } }";
const PREVIEW: &str = "query($p: Period!) { consumptionPreview(period: $p) { productMapping { cwAdditionId } value quantity method sampleDays fallback skipReason } }";

/// What reaches ConnectWise per addition (see [`month_of_consumption`]).
pub(crate) const EXPECTED: [(i64, i64); 5] = [(9001, 11), (9002, 8), (9003, 42), (9004, 121), (9030, 5)];

pub(crate) fn codes(payload: &Value) -> Vec<(String, Value)> {
    payload["userErrors"]
        .as_array()
        .map(|errs| errs.iter().map(|e| (e["code"].as_str().unwrap_or("").to_string(), e["field"].clone())).collect())
        .unwrap_or_default()
}

pub(crate) async fn pushes(app: &TestApp, run: &str) -> HashMap<i64, Value> {
    let d = app.gql_ok(&token("acme", &["viewer"]), PUSHES, json!({"r": run})).await;
    d["pushes"]["edges"]
        .as_array()
        .map(|e| e.iter().map(|x| (x["node"]["cwAdditionId"].as_i64().unwrap_or_default(), x["node"].clone())).collect())
        .unwrap_or_default()
}

pub(crate) async fn start_run(app: &TestApp, period: &str, dry_run: bool) -> String {
    let r = app.gql_ok(&token("acme", &["operator"]), RUN, json!({"p": period, "d": dry_run})).await;
    assert_eq!(r["runMonthlySync"]["userErrors"], json!([]), "{r}");
    r["runMonthlySync"]["syncRun"]["id"].as_str().expect("run id").to_string()
}

/// Mapping validation: rejected inputs write nothing, the rule codes come back with their fields,
/// concurrent duplicates are stopped by the unique index, stale versions conflict.
async fn mappings_with_validation(app: &TestApp, c1: &str) {
    let op = token("acme", &["operator"]);
    let unmapped = app.customer("acme", "ext-u", "Unmapped", all_licenses()).await;
    let f = |n: &str| json!(["input", n]);
    for (input, code, field) in [
        (mapping_input(&unmapped, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1), "CUSTOMER_NOT_MAPPED", f("customerId")),
        (mapping_input(c1, "MICROSOFT_365", "CLOUD_STORAGE", "AVERAGE", 500, 1), "USAGE_NOT_ALLOWED", f("usage")),
        (mapping_input(c1, "GOOGLE_WORKSPACE", "ACTIVE_USERS", "SUM", 500, 1), "INTERVAL_NOT_ALLOWED", f("interval")),
        (mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 502, 1), "AGREEMENT_NOT_FOUND", f("cwAgreementId")),
        (mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 501, 1), "AGREEMENT_INACTIVE", f("cwAgreementId")),
        (mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 99), "ADDITION_NOT_FOUND", f("cwSequenceNumber")),
        (mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 10), "ADDITION_AMBIGUOUS", f("cwSequenceNumber")),
        (mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 12), "ADDITION_CANCELLED", f("cwSequenceNumber")),
        (mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 13), "ADDITION_PRODUCT_NOT_UNIQUE", f("cwSequenceNumber")),
    ] {
        let r = app.gql_ok(&op, CREATE, json!({"i": input})).await["createProductMapping"].clone();
        assert_eq!(codes(&r), vec![(code.to_string(), field)], "{r}");
        assert_eq!(app.count("product_mappings").await, 0, "nothing written for {code}");
    }
    // Ten concurrent creates of the same mapping: the unique indexes let exactly one through.
    let results = futures::future::join_all((0..10).map(|_| {
        let (app, op) = (app, &op);
        async move { app.gql_ok(op, CREATE, json!({"i": mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1)})).await }
    }))
    .await;
    let won: Vec<&Value> = results.iter().filter(|r| r["createProductMapping"]["userErrors"] == json!([])).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r["createProductMapping"]["userErrors"] != json!([]))
            .all(|r| r["createProductMapping"]["userErrors"][0]["code"] == "DUPLICATE_ADDITION_MAPPING"),
        "{results:?}"
    );
    assert_eq!(app.count("product_mappings").await, 1);
    // Optimistic versions.
    let id = won[0]["createProductMapping"]["productMapping"]["id"].clone();
    let u = app
        .gql_ok(&op, UPDATE, json!({"id": id, "v": 1, "i": mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "MAXIMUM", 500, 1)}))
        .await;
    assert_eq!(u["updateProductMapping"]["productMapping"]["version"], 2, "{u}");
    let u = app
        .gql_ok(&op, UPDATE, json!({"id": id, "v": 1, "i": mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1)}))
        .await;
    assert_eq!(codes(&u["updateProductMapping"]), vec![("VERSION_CONFLICT".to_string(), json!(["expectedVersion"]))], "{u}");
}

/// Both customers' mappings (all four methods) and one month of samples, after a rejected batch.
pub(crate) async fn month_of_consumption(app: &TestApp, c1: &str, c2: &str) {
    let (period, last) = app.closed_period();
    let op = token("acme", &["operator"]);
    let save = |c: &str, m: Vec<Value>| {
        let (op, c) = (op.clone(), c.to_string());
        async move {
            let d = app.gql_ok(&op, SAVE, json!({"c": c, "m": m})).await;
            assert_eq!(d["saveProductMappings"]["userErrors"], json!([]), "{d}");
        }
    };
    save(
        c1,
        vec![
            mapping_input(c1, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1),
            mapping_input(c1, "ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 500, 2),
            mapping_input(c1, "GOOGLE_WORKSPACE", "ACTIVE_USERS", "LAST_DAY", 500, 3),
            mapping_input(c1, "ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", "SUM", 500, 4),
        ],
    )
    .await;
    save(c2, vec![mapping_input(c2, "MICROSOFT_365", "PRESERVED_USERS", "LAST_DAY", 502, 1)]).await;
    assert_eq!(app.count("product_mappings").await, 5);

    let integration = token("acme", &["integration"]);
    // One bad sample rejects the whole batch, with a code per sample.
    let bad = app
        .gql_ok(
            &integration,
            RECORD,
            json!({"s": [
                sample(c1, "MICROSOFT_365", "ACTIVE_USERS", day(&period, 1), "1.5"),
                sample(c1, "MICROSOFT_365", "ACTIVE_USERS", format!("{period}-32"), "1"),
                sample(c1, "MICROSOFT_365", "ACTIVE_USERS", day(&period, 2), "1.1234567"),
                sample(c1, "MICROSOFT_365", "CLOUD_STORAGE", day(&period, 3), "1"),
                sample(c1, "MICROSOFT_365", "ACTIVE_USERS", day(&period, 1), "2"),
            ]}),
        )
        .await["recordConsumption"]
        .clone();
    let errs = codes(&bad);
    for (code, field) in [
        ("INVALID_DAY", json!(["samples", "1", "day"])),
        ("INVALID_VALUE", json!(["samples", "2", "value"])),
        ("USAGE_NOT_ALLOWED", json!(["samples", "3", "usage"])),
        ("DUPLICATE_SAMPLE", json!(["samples", "4", "day"])),
    ] {
        assert!(errs.contains(&(code.to_string(), field.clone())), "missing {code} at {field}: {errs:?}");
    }
    assert_eq!(app.count("consumption_samples").await, 0);

    let mut s = Vec::new();
    for d in 1..=last {
        // AVERAGE: 10.5 every day but the last, 11.5 on the last → mean 10.53… → 11.
        s.push(sample(c1, "MICROSOFT_365", "ACTIVE_USERS", day(&period, d), if d == last { "11.5" } else { "10.5" }));
        // MAXIMUM: 3 every day, 7.000001 on the 15th → 8.
        s.push(sample(c1, "ENDPOINTS", "ACTIVE_USERS", day(&period, d), if d == 15 { "7.000001" } else { "3" }));
        // LAST_DAY: 40 every day, 42 on the last → 42.
        s.push(sample(c1, "GOOGLE_WORKSPACE", "ACTIVE_USERS", day(&period, d), if d == last { "42" } else { "40" }));
        // SUM: last-day values 100.25 + 0.5 + 20 → 120.75 → 121.
        s.push(sample(c1, "ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", day(&period, d), if d == last { "100.25" } else { "90" }));
        s.push(sample(c1, "ENTERPRISE_WORKLOADS", "EARLY_DELETE_LTR_STORAGE", day(&period, d), "0.5"));
        s.push(sample(c1, "ENTERPRISE_WORKLOADS", "LTR_STORAGE", day(&period, d), "20"));
        // LAST_DAY with fallback: nothing after the 20th → 5, fallback.
        if d <= 20 {
            s.push(sample(c2, "MICROSOFT_365", "PRESERVED_USERS", day(&period, d), "5"));
        }
    }
    let n = s.len() as i64;
    let ok = app.gql_ok(&integration, RECORD, json!({"s": s})).await["recordConsumption"].clone();
    assert_eq!(ok["userErrors"], json!([]), "{ok}");
    assert_eq!(ok["result"]["inserted"], n, "{ok}");
    assert_eq!(app.count("consumption_samples").await, n);
}

/// The whole core flow on one deployment shape.
async fn core_flow(sqlite: bool) {
    let app = spawn_app_with(AppOptions { with_worker: true, sqlite, ..Default::default() }).await;
    assert_eq!(app.is_sqlite(), sqlite);
    app.seed_fake(&standard_catalog());
    let c1 = ready_tenant(&app, "acme").await;
    let c2 = app.customer("acme", "ext-2", "Customer Two", all_licenses()).await;
    assert_eq!(app.map_customer("acme", &c2, 101).await["userErrors"], json!([]));

    mappings_with_validation(&app, &c1).await;
    month_of_consumption(&app, &c1, &c2).await;
    let (period, _) = app.closed_period();
    let op = token("acme", &["operator"]);

    // Aggregation, as the preview shows it.
    let prev = app.gql_ok(&op, PREVIEW, json!({"p": period})).await;
    let preview: HashMap<i64, Value> = prev["consumptionPreview"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["productMapping"]["cwAdditionId"].as_i64().unwrap_or_default(), r.clone()))
        .collect();
    for (addition, q) in EXPECTED {
        assert_eq!(preview[&addition]["quantity"], q, "preview of {addition}: {prev}");
    }
    assert_eq!(preview[&9030]["fallback"], true);
    assert_eq!(preview[&9001]["value"], "10.532258");
    assert_eq!(preview[&9002]["value"], "7.000001");

    // A dry run computes through the queue and the workers, and calls nothing.
    let dry = start_run(&app, &period, true).await;
    let done = app.wait_for_run("acme", &dry, 60).await;
    assert_eq!(done["counts"]["skipped"], 5, "{done}");
    assert!(pushes(&app, &dry).await.values().all(|p| p["skipReason"] == "DRY_RUN"));
    assert_eq!(app.fake.patch_count(), 0);

    // The real run, with one addition gone from ConnectWise: that push dies with one ticket.
    app.fake.remove_addition(500, 9002);
    let run = start_run(&app, &period, false).await;
    let done = app.wait_for_run("acme", &run, 60).await;
    assert_eq!(done["status"], "PARTIALLY_FAILED", "{done}");
    let ps = pushes(&app, &run).await;
    assert_eq!(ps[&9002]["status"], "DEAD", "{ps:?}");
    assert_eq!(ps[&9002]["lastErrorCode"], "ADDITION_NOT_FOUND");
    for (addition, q) in EXPECTED.iter().filter(|(a, _)| *a != 9002) {
        assert_eq!(ps[addition]["status"], "SUCCEEDED", "{addition}: {ps:?}");
        assert_eq!(app.fake.addition_quantity(*addition), Some(*q), "addition {addition}");
    }
    assert_eq!(ps[&9030]["fallback"], true);
    let dead_id = ps[&9002]["id"].as_str().expect("id").to_string();
    let tickets = app
        .wait_for(30, "the ticket", || async {
            let t = app.fake.tickets();
            (!t.is_empty()).then_some(t)
        })
        .await;
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0]["externalXRef"], table_key(&dead_id).to_string());

    // The addition comes back; the operator retries the dead push and the run completes.
    app.seed_fake(&Catalog {
        additions: standard_catalog().additions.into_iter().filter(|a| a.id == 9002).collect(),
        ..Default::default()
    });
    let r = app
        .gql_ok(&op, "mutation($id: ID!) { retryPush(id: $id) { push { id status } userErrors { code message } } }", json!({"id": dead_id}))
        .await;
    assert_eq!(r["retryPush"]["userErrors"], json!([]), "{r}");
    let finished = app
        .wait_for(60, "the retried push to succeed", || async {
            let d = app.gql_ok(&op, "query($id: ID!) { syncRun(id: $id) { status } }", json!({"id": run})).await;
            (d["syncRun"]["status"] == "SUCCEEDED").then_some(d)
        })
        .await;
    assert_eq!(finished["syncRun"]["status"], "SUCCEEDED");
    for (addition, q) in EXPECTED {
        assert_eq!(app.fake.addition_quantity(addition), Some(q), "addition {addition}");
    }
    assert_eq!(app.fake.tickets().len(), 1, "no second ticket");
    assert!(app.fake.max_concurrent_per_addition() <= 1);

    // Re-running sends nothing unchanged.
    let patches = app.fake.patch_count();
    let again = start_run(&app, &period, false).await;
    app.wait_for_run("acme", &again, 60).await;
    assert!(pushes(&app, &again).await.values().all(|p| p["status"] == "SKIPPED" && p["skipReason"] == "UNCHANGED"));
    assert_eq!(app.fake.patch_count(), patches);

    let audit = app.gql_ok(&op, "{ auditLog(first: 100) { edges { node { action } } } }", json!({})).await.to_string();
    for action in ["product_mapping.created", "sync_run.started", "push.succeeded", "push.retried"] {
        assert!(audit.contains(action), "audit lacks {action}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn core_flow_on_sqlite() {
    core_flow(true).await;
}

#[tokio::test]
async fn core_flow_on_postgres_and_redis() {
    core_flow(false).await;
}
