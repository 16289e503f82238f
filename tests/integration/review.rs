//! Issue 15 (billing review): the catalog refresh keeps prices; `billingReview` pages, totals,
//! search and exceptions; the review of a period equals what a run of it pushes, line for line; the
//! CSV export carries the same numbers (parsed with the `csv` crate), names with commas, quotes and
//! newlines quoted per RFC 4180.
use std::collections::HashMap;

use fake_connectwise::FakeAddition;
use integration_tests::*;
use serde_json::{Value, json};

use crate::sqlite_core_flow::{EXPECTED, month_of_consumption, pushes, start_run};

const REVIEW: &str = "query($p: Period!, $first: Int, $after: String, $s: String, $x: Boolean) { \
    billingReview(period: $p, first: $first, after: $after, search: $s, onlyExceptions: $x) { \
      totals { lines amount previousAmount exceptions } pageInfo { hasNextPage endCursor } \
      edges { cursor node { cwAdditionId customer { id accountName externalId } productMapping { id } productModule usage interval unit \
        value quantity sampleDays missingDays fallback stale skipReason previousQuantity change changePercent unitPrice lessIncluded \
        amount previousAmount awaitingApproval exception lastPush { id } } } } }";

/// The customers' name with everything CSV must quote.
const TRICKY_NAME: &str = "Acme, \"The\" Corp\nNorth";

/// `(id, agreement, sequence, product, held quantity, unitPrice, lessIncluded)`.
type PricedAddition = (i64, i64, i64, i64, i64, Option<&'static str>, Option<&'static str>);

/// Additions of the standard catalog with prices, inclusions and what ConnectWise holds now.
const PRICED: [PricedAddition; 5] = [
    (9001, 500, 1, 701, 10, Some("12.3456789012345678"), Some("0")), // 10 → 11: +10 %
    (9002, 500, 2, 702, 0, Some("2.50"), Some("3")),                 // 0 → 8: always an exception
    (9003, 500, 3, 703, 40, Some("0.10"), None),                     // 40 → 42: +5 %
    (9004, 500, 4, 704, 121, None, Some("0")),                       // no price: no amount
    (9030, 502, 1, 730, 5, Some("1"), Some("10")),                   // all included: 0
];

async fn all_lines(app: &TestApp, tok: &str, period: &str, first: i64) -> (Vec<Value>, Value) {
    let mut lines = Vec::new();
    let mut after = Value::Null;
    let mut totals: Value;
    loop {
        let d = app.gql_ok(tok, REVIEW, json!({"p": period, "first": first, "after": after})).await;
        let r = &d["billingReview"];
        totals = r["totals"].clone();
        lines.extend(r["edges"].as_array().expect("edges").iter().map(|e| e["node"].clone()));
        if r["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = r["pageInfo"]["endCursor"].clone();
    }
    (lines, totals)
}

fn by_addition(lines: &[Value]) -> HashMap<i64, Value> {
    lines.iter().map(|l| (l["cwAdditionId"].as_i64().expect("cwAdditionId"), l.clone())).collect()
}

#[tokio::test]
async fn billing_review_on_postgres_and_redis() {
    billing_review_pages_prices_and_equals_the_run(false).await;
}

#[tokio::test]
async fn billing_review_on_sqlite() {
    billing_review_pages_prices_and_equals_the_run(true).await;
}

async fn billing_review_pages_prices_and_equals_the_run(sqlite: bool) {
    let app = spawn_app_with(AppOptions { with_worker: true, sqlite, ..Default::default() }).await;
    app.seed_fake(&standard_catalog());
    for (id, agreement, seq, product, held, price, less) in PRICED {
        app.fake.add_addition(
            FakeAddition { sequence_number: seq, description: format!("Addition {id}"), ..FakeAddition::new(id, agreement, product, held) }
                .with_unit_price(price)
                .with_less_included(less),
        );
    }
    app.configure_cw("acme").await;
    let op = token("acme", &["operator"]);
    let viewer = token("acme", &["viewer"]);

    // A: the refresh keeps unitPrice and lessIncluded exactly as ConnectWise wrote them.
    let r = app.gql_ok(&op, "mutation { refreshConnectWiseCatalog { queued userErrors { code } } }", json!({})).await;
    assert_eq!(r["refreshConnectWiseCatalog"]["queued"], true, "{r}");
    app.wait_for(60, "the catalog refresh", || async {
        let d = app.gql_ok(&op, "{ connectWiseSettings { catalogRefreshedAt } }", json!({})).await;
        (!d["connectWiseSettings"]["catalogRefreshedAt"].is_null()).then_some(())
    })
    .await;
    let t = app.tenant_id("acme").await;
    let stored = |id: i64| {
        let db = app.db.clone();
        async move {
            use sea_orm::EntityTrait;
            let a = entity::cw_addition::Entity::find_by_id((t, id)).one(&db).await.expect("query").expect("addition");
            (a.quantity, a.unit_price, a.less_included)
        }
    };
    assert_eq!(stored(9001).await, (Some("10".into()), Some("12.3456789012345678".into()), Some("0".into())));
    assert_eq!(stored(9003).await, (Some("40".into()), Some("0.10".into()), None));
    assert_eq!(stored(9004).await, (Some("121".into()), None, Some("0".into())));

    let c1 = app.customer("acme", "ext-1", "Customer One", all_licenses()).await;
    let c2 = app.customer("acme", "ext-2", "Customer Two", all_licenses()).await;
    assert_eq!(app.map_customer("acme", &c1, 100).await["userErrors"], json!([]));
    assert_eq!(app.map_customer("acme", &c2, 101).await["userErrors"], json!([]));
    // Names may hold what CSV must quote (the API refuses control characters in inputs; an
    // integration's name can still carry them through other channels).
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!("UPDATE customers SET account_name = '{}' WHERE id = {}", TRICKY_NAME.replace('\'', "''"), table_key(&c1)),
    )
    .await
    .expect("rename");
    month_of_consumption(&app, &c1, &c2).await;
    let (period, _) = app.closed_period();

    // B: every line, two per page; totals over all pages.
    let (lines, totals) = all_lines(&app, &viewer, &period, 2).await;
    assert_eq!(lines.len(), 5, "{lines:?}");
    let names: Vec<&str> = lines.iter().map(|l| l["customer"]["accountName"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, vec![TRICKY_NAME, TRICKY_NAME, TRICKY_NAME, TRICKY_NAME, "Customer Two"], "ordered by customer name");
    let review = by_addition(&lines);
    for (addition, quantity) in EXPECTED {
        assert_eq!(review[&addition]["quantity"], quantity, "addition {addition}");
    }
    let l = &review[&9001];
    assert_eq!((l["unit"].as_str(), l["previousQuantity"].as_str(), l["change"].as_str()), (Some("users"), Some("10"), Some("1")));
    assert_eq!(l["changePercent"], "10", "{l}");
    assert_eq!(l["amount"], "135.8024679135802458", "11 × 12.3456789012345678, exact: {l}");
    assert_eq!(l["previousAmount"], "123.456789012345678", "{l}");
    let l = &review[&9002];
    assert_eq!((l["amount"].as_str(), l["changePercent"].clone()), (Some("12.5"), Value::Null), "(8 − 3) × 2.50; no % of 0: {l}");
    assert_eq!(l["exception"], true, "0 → n is an exception: {l}");
    let l = &review[&9003];
    assert_eq!((l["amount"].as_str(), l["changePercent"].as_str()), (Some("4.2"), Some("5")), "{l}");
    assert_eq!(review[&9004]["amount"], Value::Null);
    assert_eq!(review[&9004]["unit"], "GB");
    assert_eq!(review[&9030]["amount"], "0", "{}", review[&9030]);
    assert_eq!(totals["lines"], 5);
    assert_eq!(totals["amount"], "152.5024679135802458", "{totals}");
    assert_eq!(totals["previousAmount"], "127.456789012345678", "{totals}");
    let exceptions = lines.iter().filter(|l| l["exception"] == true).count();
    assert_eq!(totals["exceptions"], exceptions as i64);

    // Search and only exceptions.
    let d = app.gql_ok(&viewer, REVIEW, json!({"p": period, "s": "EXT-2"})).await;
    assert_eq!(d["billingReview"]["totals"]["lines"], 1, "{d}");
    assert_eq!(d["billingReview"]["edges"][0]["node"]["cwAdditionId"], 9030);
    let d = app.gql_ok(&viewer, REVIEW, json!({"p": period, "x": true})).await;
    let kept = by_addition(&d["billingReview"]["edges"].as_array().expect("edges").iter().map(|e| e["node"].clone()).collect::<Vec<_>>());
    assert!(kept.contains_key(&9002) && !kept.contains_key(&9003), "{kept:?}");
    assert!(kept.values().all(|l| l["exception"] == true));
    assert_eq!(d["billingReview"]["totals"]["lines"], exceptions as i64);

    // Bad periods and cursors are BAD_USER_INPUT.
    for (vars, what) in [(json!({"p": "2026-13"}), "period"), (json!({"p": period, "after": "nope"}), "cursor")] {
        let (_, body) = app.gql_raw(Some(&viewer), REVIEW, vars).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{what}: {body}");
    }

    // C: the CSV export, parsed as RFC 4180, the same numbers as the query.
    let url = format!("{}/export/billing-review.csv?period={period}", app.address);
    let res = app.http.get(&url).bearer_auth(&viewer).send().await.expect("csv");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap_or_default().starts_with("text/csv"));
    let body = res.text().await.expect("body");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader.headers().expect("header").iter().map(str::to_string).collect();
    let rows: Vec<HashMap<String, String>> =
        reader.records().map(|r| header.iter().cloned().zip(r.expect("record").iter().map(str::to_string)).collect()).collect();
    assert_eq!(rows.len(), lines.len());
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for row in &rows {
        let line = &review[&row["cwAdditionId"].parse::<i64>().expect("addition id")];
        for field in [
            "value",
            "quantity",
            "sampleDays",
            "missingDays",
            "fallback",
            "stale",
            "skipReason",
            "previousQuantity",
            "change",
            "changePercent",
            "unitPrice",
            "amount",
            "previousAmount",
            "awaitingApproval",
            "exception",
            "unit",
        ] {
            assert_eq!(row[field], text(&line[field]), "{field} of {row:?}");
        }
        assert_eq!(row["customerName"], text(&line["customer"]["accountName"]));
        assert_eq!(row["productMappingId"], text(&line["productMapping"]["id"]));
        assert_eq!(row["customerId"], text(&line["customer"]["id"]));
    }
    assert!(rows.iter().any(|r| r["customerName"] == TRICKY_NAME), "the name survives quoting");
    // Viewer and up, Bearer only; a bad period is bad input.
    assert_eq!(app.http.get(&url).send().await.expect("csv").status(), 401);
    let bad =
        app.http.get(format!("{}/export/billing-review.csv?period=2026-1", app.address)).bearer_auth(&viewer).send().await.expect("csv");
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.expect("json")["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // One code path: a real run of the period pushes exactly the review's lines.
    let run = start_run(&app, &period, false).await;
    let done = app.wait_for_run("acme", &run, 90).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let pushed = pushes(&app, &run).await;
    assert_eq!(pushed.len(), review.len(), "{pushed:?}");
    for (addition, line) in &review {
        let push = &pushed[addition];
        for field in ["quantity", "value", "fallback"] {
            assert_eq!(push[field], line[field], "{field} of addition {addition}");
        }
        // The push reads the addition first: where the review shows no change, nothing is sent.
        let skip = if line["change"] == "0" { json!("UNCHANGED") } else { line["skipReason"].clone() };
        assert_eq!(push["skipReason"], skip, "skipReason of addition {addition}");
        assert_eq!(app.fake.addition_quantity(*addition), line["quantity"].as_i64(), "ConnectWise got the reviewed quantity");
    }
    app.shutdown().await;
}
