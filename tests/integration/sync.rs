//! The monthly sync end to end: GraphQL → queue → worker → fake ConnectWise, with the exact
//! quantities that reach ConnectWise, failures, tickets, retries, crashes and lost queues.
use std::collections::HashMap;

use integration_tests::*;
use serde_json::{Value, json};

const RUN: &str = "mutation($p: Period!, $d: Boolean, $c: [ID!]) { runMonthlySync(period: $p, dryRun: $d, customerIds: $c) { syncRun { id status dryRun trigger period } userErrors { code field message } } }";
const PUSHES: &str = "query($r: ID) { pushes(syncRunId: $r, first: 100) { edges { node { id status quantity value fallback sampleDays skipReason attempts lastErrorCode ticketId cwAdditionId method attemptHistory { step httpStatus requestId durationMs } } } } }";

async fn record(app: &TestApp, tenant: &str, samples: Vec<Value>) -> Value {
    let d = app
        .gql_ok(
            &token(tenant, &["integration"]),
            "mutation($s: [ConsumptionSampleInput!]!) { recordConsumption(samples: $s) { result { accepted inserted updated unchanged staleMappings } userErrors { code field message } } }",
            json!({"s": samples}),
        )
        .await;
    d["recordConsumption"].clone()
}

async fn save(app: &TestApp, tenant: &str, customer: &str, mappings: Vec<(&str, &str, &str, i64, i64)>) -> Vec<Value> {
    let m: Vec<Value> = mappings
        .iter()
        .map(|(module, usage, interval, ag, seq)| json!({"customerId": customer, "productModule": module, "usage": usage, "interval": interval, "cwAgreementId": ag, "cwSequenceNumber": seq}))
        .collect();
    let d = app
        .gql_ok(
            &token(tenant, &["operator"]),
            "mutation($c: ID!, $m: [ProductMappingInput!]!) { saveProductMappings(customerId: $c, mappings: $m) { productMappings { id cwAdditionId usage } userErrors { code field message } } }",
            json!({"c": customer, "m": m}),
        )
        .await;
    assert_eq!(d["saveProductMappings"]["userErrors"], json!([]), "{d}");
    d["saveProductMappings"]["productMappings"].as_array().cloned().unwrap_or_default()
}

async fn pushes(app: &TestApp, tenant: &str, run: &str) -> Vec<Value> {
    let d = app.gql_ok(&token(tenant, &["viewer"]), PUSHES, json!({"r": run})).await;
    d["pushes"]["edges"].as_array().map(|e| e.iter().map(|x| x["node"].clone()).collect()).unwrap_or_default()
}

fn by_addition(pushes: &[Value]) -> HashMap<i64, Value> {
    pushes.iter().map(|p| (p["cwAdditionId"].as_i64().unwrap_or_default(), p.clone())).collect()
}

/// Two customers, all four methods; returns (customer one, customer two).
async fn month_of_consumption(app: &TestApp, tenant: &str) -> (String, String) {
    let (period, last) = app.closed_period();
    app.seed_fake(&standard_catalog());
    let c1 = ready_tenant(app, tenant).await;
    let c2 = app.customer(tenant, "ext-2", "Customer Two", all_licenses()).await;
    assert_eq!(app.map_customer(tenant, &c2, 101).await["userErrors"], json!([]));
    save(
        app,
        tenant,
        &c1,
        vec![
            ("MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1),
            ("ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 500, 2),
            ("GOOGLE_WORKSPACE", "ACTIVE_USERS", "LAST_DAY", 500, 3),
            ("ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", "SUM", 500, 4),
        ],
    )
    .await;
    save(app, tenant, &c2, vec![("MICROSOFT_365", "PRESERVED_USERS", "LAST_DAY", 502, 1)]).await;
    let mut s = Vec::new();
    for d in 1..=last {
        // AVERAGE: 10.5 every day but the last, 11.5 on the last → mean 10.53… → 11.
        s.push(sample(&c1, "MICROSOFT_365", "ACTIVE_USERS", day(&period, d), if d == last { "11.5" } else { "10.5" }));
        // MAXIMUM: 3 every day, 7.000001 on the 15th → 8.
        s.push(sample(&c1, "ENDPOINTS", "ACTIVE_USERS", day(&period, d), if d == 15 { "7.000001" } else { "3" }));
        // LAST_DAY: 40 every day, 42 on the last → 42.
        s.push(sample(&c1, "GOOGLE_WORKSPACE", "ACTIVE_USERS", day(&period, d), if d == last { "42" } else { "40" }));
        // SUM: last-day values 100.25 + 0.5 + 20 → 120.75 → 121.
        s.push(sample(&c1, "ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", day(&period, d), if d == last { "100.25" } else { "90" }));
        s.push(sample(&c1, "ENTERPRISE_WORKLOADS", "EARLY_DELETE_LTR_STORAGE", day(&period, d), "0.5"));
        s.push(sample(&c1, "ENTERPRISE_WORKLOADS", "LTR_STORAGE", day(&period, d), "20"));
        // LAST_DAY with fallback: nothing after the 20th → 5, fallback.
        if d <= 20 {
            s.push(sample(&c2, "MICROSOFT_365", "PRESERVED_USERS", day(&period, d), "5"));
        }
    }
    let r = record(app, tenant, s).await;
    assert_eq!(r["userErrors"], json!([]), "{r}");
    (c1, c2)
}

const EXPECTED: [(i64, i64); 5] = [(9001, 11), (9002, 8), (9003, 42), (9004, 121), (9030, 5)];

#[tokio::test]
async fn a_full_month_reaches_connectwise_with_exact_quantities() {
    let app = spawn_app_with(AppOptions { with_worker: true, ..Default::default() }).await;
    let (c1, _c2) = month_of_consumption(&app, "acme").await;
    let (period, _) = app.closed_period();
    let op = token("acme", &["operator"]);
    // The preview shows what will be sent.
    let prev = app.gql_ok(&op, "query($p: Period!) { consumptionPreview(period: $p) { productMapping { cwAdditionId } value quantity method sampleDays fallback skipReason } }", json!({"p": period})).await;
    let preview: HashMap<i64, Value> = prev["consumptionPreview"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["productMapping"]["cwAdditionId"].as_i64().unwrap_or_default(), r.clone()))
        .collect();
    for (addition, q) in EXPECTED {
        assert_eq!(preview[&addition]["quantity"], q, "preview {addition}: {prev}");
    }
    assert_eq!(preview[&9030]["fallback"], true);
    assert_eq!(preview[&9002]["value"], "7.000001");
    // Dry run first: computes, calls nothing.
    let dry = app.gql_ok(&op, RUN, json!({"p": period, "d": true})).await;
    let dry_id = dry["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    let done = app.wait_for_run("acme", &dry_id, 60).await;
    assert_eq!(done["counts"]["skipped"], 5, "{done}");
    assert_eq!(app.fake.patch_count(), 0);
    // The real run.
    let run = app.gql_ok(&op, RUN, json!({"p": period})).await;
    assert_eq!(run["runMonthlySync"]["userErrors"], json!([]), "{run}");
    assert_eq!(run["runMonthlySync"]["syncRun"]["trigger"], "MANUAL");
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    let done = app.wait_for_run("acme", &run_id, 60).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["counts"]["succeeded"], 5, "{done}");
    for (addition, q) in EXPECTED {
        assert_eq!(app.fake.addition_quantity(addition), Some(q), "addition {addition}");
    }
    let ps = by_addition(&pushes(&app, "acme", &run_id).await);
    assert_eq!(ps[&9030]["fallback"], true);
    assert_eq!(ps[&9001]["value"], "10.532258", "half-even to 6 decimals of 326.5/31");
    let history = ps[&9001]["attemptHistory"].as_array().expect("history");
    assert_eq!(history.iter().map(|h| h["step"].as_str().unwrap_or("")).collect::<Vec<_>>(), vec!["GET_ADDITION", "PATCH_QUANTITY"]);
    assert!(history.iter().all(|h| h["httpStatus"] == 200 && h["requestId"].is_string()));
    assert_eq!(app.fake.patch_count(), 5);
    assert!(app.fake.max_concurrent_per_addition() <= 1);
    // The mapping shows its last push.
    let m = app
        .gql_ok(
            &op,
            "query($id: ID!) { customer(id: $id) { productMappings { cwAdditionId lastPush { status quantity } } } }",
            json!({"id": c1}),
        )
        .await;
    assert!(m["customer"]["productMappings"].as_array().expect("m").iter().all(|x| x["lastPush"]["status"] == "SUCCEEDED"), "{m}");
    // The customers page reads licenses, mappings and last pushes ahead for the whole page; a
    // single customer goes through the DataLoaders. Both must show the same.
    const NODE: &str = "id accountName addOns licenses { productModule edition } \
                        productMappings { id usage interval edition cwAdditionId lastPush { id status quantity } }";
    let page = app.gql_ok(&op, &format!("{{ customers(first: 50) {{ edges {{ node {{ {NODE} }} }} }} }}"), json!({})).await;
    let edges = page["customers"]["edges"].as_array().expect("edges");
    assert!(!edges.is_empty());
    for e in edges {
        let node = &e["node"];
        let one = app.gql_ok(&op, &format!("query($id: ID!) {{ customer(id: $id) {{ {NODE} }} }}"), json!({"id": node["id"]})).await;
        assert_eq!(node, &one["customer"], "page vs single customer");
    }
    let first = &edges.iter().find(|e| e["node"]["id"] == json!(c1)).expect("c1 on the page")["node"];
    assert!(first["productMappings"].as_array().expect("m").iter().all(|x| x["lastPush"]["status"] == "SUCCEEDED"), "{first}");
    assert!(!first["licenses"].as_array().expect("licenses").is_empty());
    // Re-running sends nothing unchanged.
    let again = app.gql_ok(&op, RUN, json!({"p": period})).await;
    let again_id = again["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    app.wait_for_run("acme", &again_id, 60).await;
    assert!(pushes(&app, "acme", &again_id).await.iter().all(|p| p["status"] == "SKIPPED" && p["skipReason"] == "UNCHANGED"));
    assert_eq!(app.fake.patch_count(), 5);
    // A correction flags the mapping stale; the next run re-sends only that one.
    let (_, last) = app.closed_period();
    let r = record(&app, "acme", vec![sample(&c1, "GOOGLE_WORKSPACE", "ACTIVE_USERS", day(&period, last), "45")]).await;
    assert_eq!(r["result"]["updated"], 1, "{r}");
    assert_eq!(r["result"]["staleMappings"], 1, "{r}");
    let third = app.gql_ok(&op, RUN, json!({"p": period})).await;
    let third_id = third["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    app.wait_for_run("acme", &third_id, 60).await;
    assert_eq!(app.fake.addition_quantity(9003), Some(45));
    assert_eq!(app.fake.patch_count(), 6);
    // Audit: runs, attempts and the correction are there.
    let audit = app.gql_ok(&op, "{ auditLog(first: 100) { edges { node { action } } } }", json!({})).await.to_string();
    for action in ["sync_run.started", "push.succeeded", "consumption.corrected"] {
        assert!(audit.contains(action), "audit lacks {action}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn period_rules_and_input_errors() {
    let app = spawn_app().await;
    ready_tenant(&app, "acme").await;
    let op = token("acme", &["operator"]);
    let today = app.today();
    let current = domain::Period::of(today).to_string();
    let old = domain::Period::latest_closed(today).previous().to_string();
    let code = |d: &Value| d["runMonthlySync"]["userErrors"][0]["code"].clone();
    assert_eq!(code(&app.gql_ok(&op, RUN, json!({"p": current})).await), "PERIOD_NOT_CLOSED");
    assert_eq!(code(&app.gql_ok(&op, RUN, json!({"p": old})).await), "PERIOD_SUPERSEDED");
    // Dry runs accept any month.
    assert_eq!(app.gql_ok(&op, RUN, json!({"p": old, "d": true})).await["runMonthlySync"]["userErrors"], json!([]));
    // Unknown customer ids.
    let (period, _) = app.closed_period();
    assert_eq!(code(&app.gql_ok(&op, RUN, json!({"p": period, "c": ["424242"]})).await), "NOT_FOUND");
    // A malformed period is a GraphQL input error.
    let body = app.gql(&op, RUN, json!({"p": "2026-13"})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    // Ingest validation: one bad sample rejects the batch.
    let c = app.customer("acme", "ext-x", "X", all_licenses()).await;
    let r = record(
        &app,
        "acme",
        vec![
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-10-01".into(), "1.5"),
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-02-30".into(), "1"),
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-10-02".into(), "1.1234567"),
            sample(&c, "MICROSOFT_365", "CLOUD_STORAGE", "2026-10-03".into(), "1"),
            sample("999999", "MICROSOFT_365", "ACTIVE_USERS", "2026-10-04".into(), "1"),
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-10-01".into(), "2"),
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-10-05".into(), "-1"),
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-10-06".into(), "1e3"),
        ],
    )
    .await;
    let errs: Vec<(String, Value)> = r["userErrors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["code"].as_str().unwrap_or("").to_string(), e["field"].clone()))
        .collect();
    for (code, field) in [
        ("INVALID_DAY", json!(["samples", "1", "day"])),
        ("INVALID_VALUE", json!(["samples", "2", "value"])),
        ("USAGE_NOT_ALLOWED", json!(["samples", "3", "usage"])),
        ("DUPLICATE_SAMPLE", json!(["samples", "5", "day"])),
        ("INVALID_VALUE", json!(["samples", "6", "value"])),
        ("INVALID_VALUE", json!(["samples", "7", "value"])),
    ] {
        assert!(errs.contains(&(code.to_string(), field.clone())), "missing {code} at {field}: {errs:?}");
    }
    assert!(errs.iter().any(|(c, _)| c == "UNKNOWN_CUSTOMER"), "{errs:?}");
    assert_eq!(app.count("consumption_samples").await, 0);
    // A batch over 10,000 samples.
    let big: Vec<Value> = (0..10_001)
        .map(|i| sample(&c, "MICROSOFT_365", "ACTIVE_USERS", format!("2025-{:02}-{:02}", 1 + (i / 28) % 12, 1 + i % 28), "1"))
        .collect();
    let r = record(&app, "acme", big).await;
    assert_eq!(r["userErrors"][0]["code"], "BATCH_TOO_LARGE", "{}", r["userErrors"][0]);
    // Daily values come back as exact decimal strings.
    record(
        &app,
        "acme",
        vec![
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-10-01".into(), "3.750000"),
            sample(&c, "MICROSOFT_365", "ACTIVE_USERS", "2026-10-02".into(), "4"),
        ],
    )
    .await;
    let d = app.gql_ok(&op, "query($c: ID!) { consumption(customerId: $c, productModule: MICROSOFT_365, usage: ACTIVE_USERS, from: \"2026-10-01\", to: \"2026-10-31\") { day value } }", json!({"c": c})).await;
    assert_eq!(d["consumption"], json!([{"day": "2026-10-01", "value": "3.75"}, {"day": "2026-10-02", "value": "4"}]));
    app.shutdown().await;
}

#[tokio::test]
async fn a_vanished_addition_dies_with_one_ticket_and_can_be_retried() {
    let app = spawn_app_with(AppOptions { with_worker: true, ..Default::default() }).await;
    month_of_consumption(&app, "acme").await;
    app.fake.remove_addition(500, 9002);
    let (period, _) = app.closed_period();
    let op = token("acme", &["operator"]);
    let run = app.gql_ok(&op, RUN, json!({"p": period})).await;
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    let done = app.wait_for_run("acme", &run_id, 60).await;
    assert_eq!(done["status"], "PARTIALLY_FAILED", "{done}");
    let dead = by_addition(&pushes(&app, "acme", &run_id).await)[&9002].clone();
    assert_eq!(dead["status"], "DEAD");
    assert_eq!(dead["lastErrorCode"], "ADDITION_NOT_FOUND");
    // Exactly one ticket, on the configured board, for the customer's company, naming the push.
    let ticket = app
        .wait_for(30, "the ticket", || async {
            let tickets = app.fake.tickets();
            (!tickets.is_empty()).then_some(tickets)
        })
        .await;
    assert_eq!(ticket.len(), 1, "{ticket:?}");
    let t = &ticket[0];
    // The ticket's de-duplication key is the push's table key (ConnectWise's side, not a GraphQL id).
    assert_eq!(t["externalXRef"], table_key(dead["id"].as_str().expect("id")).to_string());
    assert_eq!(t["board"]["id"], 1);
    assert_eq!(t["company"]["id"], 100);
    assert!(t["summary"].as_str().expect("summary").chars().count() <= 100);
    let with_ticket = app
        .wait_for(30, "the ticket id on the push", || async {
            let p = by_addition(&pushes(&app, "acme", &run_id).await)[&9002].clone();
            p["ticketId"].is_i64().then_some(p)
        })
        .await;
    assert_eq!(with_ticket["ticketId"], t["id"]);
    // Retrying a SUCCEEDED push is refused with a code.
    let ok = by_addition(&pushes(&app, "acme", &run_id).await)[&9001].clone();
    let r =
        app.gql_ok(&op, "mutation($id: ID!) { retryPush(id: $id) { push { status } userErrors { code } } }", json!({"id": ok["id"]})).await;
    assert_eq!(r["retryPush"]["userErrors"][0]["code"], "PUSH_NOT_RETRYABLE");
    // The addition comes back; the operator retries the dead push and it succeeds.
    app.seed_fake(&Catalog {
        additions: standard_catalog().additions.into_iter().filter(|a| a.id == 9002).collect(),
        ..Default::default()
    });
    let r = app
        .gql_ok(
            &op,
            "mutation($id: ID!) { retryPush(id: $id) { push { id status attempts } userErrors { code message } } }",
            json!({"id": dead["id"]}),
        )
        .await;
    assert_eq!(r["retryPush"]["userErrors"], json!([]), "{r}");
    let finished = app.wait_for_run("acme", &run_id, 60).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    assert_eq!(app.fake.addition_quantity(9002), Some(8));
    assert_eq!(app.fake.tickets().len(), 1, "no second ticket");
    let audit =
        app.gql_ok(&op, "{ auditLog(first: 100, action: \"push.retried\") { edges { node { actor entityId } } } }", json!({})).await;
    assert_eq!(audit["auditLog"]["edges"][0]["node"]["actor"], "user:user-of-acme");
    app.shutdown().await;
}

/// Many mappings, so a run takes a few seconds against a slow fake.
async fn many_mappings(app: &TestApp, tenant: &str, customers: i64, per_customer: i64) -> HashMap<i64, i64> {
    let (period, last) = app.closed_period();
    app.configure_cw(tenant).await;
    let mut cat = Catalog::default();
    for c in 0..customers {
        let company = 1000 + c;
        cat.companies.push(Company { id: company, identifier: format!("K{c}"), name: format!("Company {c:03}"), status: "Active".into() });
        cat.agreements.push(Agreement {
            id: 2000 + c,
            company_id: company,
            name: format!("Agreement {c}"),
            status: "Active".into(),
            cancelled_flag: false,
        });
        for k in 0..per_customer {
            let id = 30_000 + c * 10 + k;
            cat.additions.push(Addition {
                id,
                agreement_id: 2000 + c,
                sequence_number: k + 1,
                product_id: id,
                product_identifier: format!("P{id}"),
                description: "x".into(),
                quantity: "0".into(),
                cancelled_date: None,
            });
        }
    }
    app.seed_catalog(tenant, &cat).await;
    app.seed_fake(&cat);
    let slots = [
        ("ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", "MAXIMUM"),
        ("ENTERPRISE_WORKLOADS", "LTR_STORAGE", "AVERAGE"),
        ("MICROSOFT_365", "ACTIVE_USERS", "LAST_DAY"),
        ("ENDPOINTS", "ACTIVE_USERS", "MAXIMUM"),
    ];
    let mut expected = HashMap::new();
    let mut samples = Vec::new();
    for c in 0..customers {
        let id = app.customer(tenant, &format!("many-{c}"), &format!("Many {c:03}"), all_licenses()).await;
        assert_eq!(app.map_customer(tenant, &id, 1000 + c).await["userErrors"], json!([]));
        let maps: Vec<_> =
            (0..per_customer).map(|k| (slots[k as usize].0, slots[k as usize].1, slots[k as usize].2, 2000 + c, k + 1)).collect();
        save(app, tenant, &id, maps).await;
        for k in 0..per_customer {
            let v = 10 + c * 10 + k; // constant every day → every method gives v
            expected.insert(30_000 + c * 10 + k, v);
            for d in 1..=last {
                samples.push(sample(&id, slots[k as usize].0, slots[k as usize].1, day(&period, d), &v.to_string()));
            }
        }
    }
    for chunk in samples.chunks(5000) {
        assert_eq!(record(app, tenant, chunk.to_vec()).await["userErrors"], json!([]));
    }
    expected
}

#[tokio::test]
async fn a_worker_killed_mid_run_loses_nothing() {
    let app = spawn_app().await; // no in-process worker: separate processes below
    let expected = many_mappings(&app, "acme", 10, 4).await;
    app.fake.set_latency(std::time::Duration::from_millis(150));
    let (period, _) = app.closed_period();
    let mut w1 = app.spawn_worker_process(&[("PUSH_CONCURRENCY", "2")]);
    let run = app.gql_ok(&token("acme", &["operator"]), RUN, json!({"p": period})).await;
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    // Kill it after some pushes went through, but well before the end.
    app.wait_for(60, "a few pushes", || async { (app.fake.patch_count() >= 5).then_some(()) }).await;
    w1.kill();
    let at_kill = app.fake.patch_count();
    assert!(at_kill < expected.len(), "the run finished before the kill ({at_kill})");
    let _w2 = app.spawn_worker_process(&[("PUSH_CONCURRENCY", "4")]);
    let done = app.wait_for_run("acme", &run_id, 120).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    for (addition, q) in &expected {
        assert_eq!(app.fake.addition_quantity(*addition), Some(*q), "addition {addition}");
    }
    assert!(app.fake.max_concurrent_per_addition() <= 1, "two attempts of one push overlapped");
    app.shutdown().await;
}

#[tokio::test]
async fn a_lost_redis_queue_is_recovered_by_reconciliation() {
    let app =
        spawn_app_with(AppOptions { with_worker: true, env: vec![("PUSH_CONCURRENCY".into(), "2".into())], ..Default::default() }).await;
    let expected = many_mappings(&app, "acme", 6, 4).await;
    app.fake.set_latency(std::time::Duration::from_millis(150));
    let (period, _) = app.closed_period();
    let run = app.gql_ok(&token("acme", &["operator"]), RUN, json!({"p": period})).await;
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    app.wait_for(60, "a few pushes", || async { (app.fake.patch_count() >= 3).then_some(()) }).await;
    // Empty this deployment's part of Redis (never FLUSHDB: other tests share the server).
    let mut conn = app.queue.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", app.settings.redis_prefix)).query_async(&mut conn).await.expect("keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.expect("del");
    }
    let done = app.wait_for_run("acme", &run_id, 120).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    for (addition, q) in &expected {
        assert_eq!(app.fake.addition_quantity(*addition), Some(*q), "addition {addition}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn unmapping_during_a_run_cancels_that_mappings_pending_push() {
    let app =
        spawn_app_with(AppOptions { with_worker: true, env: vec![("PUSH_CONCURRENCY".into(), "1".into())], ..Default::default() }).await;
    many_mappings(&app, "acme", 3, 4).await;
    // Each call takes 2 s: while the only push slot waits on its first call, every other push of
    // the run stays PENDING (the queue's order does not matter).
    app.fake.set_latency(std::time::Duration::from_secs(2));
    let (period, _) = app.closed_period();
    let op = token("acme", &["operator"]);
    let run = app.gql_ok(&op, RUN, json!({"p": period})).await;
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    app.wait_for(30, "a push in flight", || async {
        let d = app
            .gql_ok(
                &op,
                "query($r: ID) { pushes(syncRunId: $r, status: RUNNING, first: 10) { edges { node { id } } } }",
                json!({"r": run_id}),
            )
            .await;
        d["pushes"]["edges"].as_array().is_some_and(|e| !e.is_empty()).then_some(())
    })
    .await;
    // Pick a push that is still pending and delete its mapping.
    let d = app
        .gql_ok(&op, "query($r: ID) { pushes(syncRunId: $r, status: PENDING, first: 100) { edges { node { id cwAdditionId productMapping { id } } } } }", json!({"r": run_id}))
        .await;
    let target = d["pushes"]["edges"]
        .as_array()
        .and_then(|e| e.iter().map(|x| x["node"].clone()).find(|n| n["productMapping"]["id"].is_string()))
        .expect("a pending push");
    let del = app
        .gql_ok(
            &op,
            "mutation($id: ID!) { deleteProductMapping(id: $id) { deletedId userErrors { code } } }",
            json!({"id": target["productMapping"]["id"]}),
        )
        .await;
    assert_eq!(del["deleteProductMapping"]["userErrors"], json!([]));
    app.fake.set_latency(std::time::Duration::from_millis(20));
    app.wait_for_run("acme", &run_id, 120).await;
    let p = app.gql_ok(&op, "query($id: ID!) { push(id: $id) { status lastErrorCode } }", json!({"id": target["id"]})).await;
    assert_eq!(p["push"]["status"], "CANCELLED", "{p}");
    let addition = target["cwAdditionId"].as_i64().expect("addition");
    assert!(app.fake.patches().iter().all(|r| !r.path.ends_with(&format!("/{addition}"))), "the cancelled push was sent");
    app.shutdown().await;
}

#[tokio::test]
async fn two_workers_on_one_cron_tick_make_one_run_per_tenant() {
    let app = spawn_app().await;
    app.configure_cw("acme").await;
    app.configure_cw("beta").await;
    let cron = [("SYNC_CRON", "*/2 * * * * *")];
    let _w1 = app.spawn_worker_process(&cron);
    let _w2 = app.spawn_worker_process(&cron);
    let (period, _) = app.closed_period();
    for tenant in ["acme", "beta"] {
        app.wait_for(60, "the scheduled run", || async {
            let d = app.gql_ok(&token(tenant, &["viewer"]), "{ syncRuns { edges { node { trigger period } } } }", json!({})).await;
            d["syncRuns"]["edges"].as_array().filter(|e| !e.is_empty()).map(|_| ())
        })
        .await;
    }
    // Several more ticks pass; still exactly one scheduled run per tenant and period.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    for tenant in ["acme", "beta"] {
        let d = app.gql_ok(&token(tenant, &["viewer"]), "{ syncRuns { edges { node { trigger period } } } }", json!({})).await;
        let runs = d["syncRuns"]["edges"].as_array().expect("runs").clone();
        assert_eq!(runs.len(), 1, "{tenant}: {runs:?}");
        assert_eq!(runs[0]["node"], json!({"trigger": "SCHEDULED", "period": period}));
    }
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_retries_of_one_push_make_one_attempt() {
    let app = spawn_app_with(AppOptions { with_worker: true, ..Default::default() }).await;
    month_of_consumption(&app, "acme").await;
    app.fake.remove_addition(500, 9002);
    let (period, _) = app.closed_period();
    let op = token("acme", &["operator"]);
    let run = app.gql_ok(&op, RUN, json!({"p": period})).await;
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string();
    app.wait_for_run("acme", &run_id, 60).await;
    let dead = by_addition(&pushes(&app, "acme", &run_id).await)[&9002].clone();
    assert_eq!(dead["status"], "DEAD");
    app.seed_fake(&Catalog {
        additions: standard_catalog().additions.into_iter().filter(|a| a.id == 9002).collect(),
        ..Default::default()
    });
    let before = app.fake.requests().iter().filter(|r| r.path.ends_with("/additions/9002")).count();
    let results =
        futures::future::join_all((0..20).map(|_| {
            let (app, op, id) = (&app, &op, dead["id"].clone());
            async move {
                app.gql_ok(op, "mutation($id: ID!) { retryPush(id: $id) { push { id } userErrors { code } } }", json!({"id": id})).await
            }
        }))
        .await;
    let winners = results.iter().filter(|r| r["retryPush"]["userErrors"] == json!([])).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r["retryPush"]["userErrors"] == json!([]) || r["retryPush"]["userErrors"][0]["code"] == "PUSH_NOT_RETRYABLE")
    );
    app.wait_for_run("acme", &run_id, 60).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = app.fake.requests().iter().filter(|r| r.path.ends_with("/additions/9002")).count();
    assert_eq!(after - before, 2, "exactly one attempt (GET + PATCH)");
    assert_eq!(app.fake.addition_quantity(9002), Some(8));
    app.shutdown().await;
}
