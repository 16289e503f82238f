//! The calendar matrix: the service's clock pinned to each shape of month, so no result depends on
//! the day the suite runs. The core flow (ingest, preview, a real run, the quantities ConnectWise
//! receives) runs with "today" on the 1st after a 28-, 29-, 30- and 31-day month and after December;
//! the period rules and the monthly tick are checked one second before and one second after a month
//! (and a year) boundary on a clock that stands still.
use std::{collections::HashMap, sync::Arc};

use integration_tests::*;
use serde_json::{Value, json};
use sync_core::clock::ManualClock;

const SAVE: &str = "mutation($c: ID!, $m: [ProductMappingInput!]!) { saveProductMappings(customerId: $c, mappings: $m) { productMappings { id } userErrors { code field message } } }";
const RECORD: &str =
    "mutation($s: [ConsumptionSampleInput!]!) { recordConsumption(samples: $s) { result { inserted } userErrors { code field message } } }";
const PREVIEW: &str =
    "query($p: Period!) { consumptionPreview(period: $p) { productMapping { cwAdditionId } value quantity sampleDays fallback } }";
const RUN: &str = "mutation($p: Period!, $d: Boolean) { runMonthlySync(period: $p, dryRun: $d) { syncRun { id period } userErrors { code field message } } }";

/// One month shape: when "today" is, the month that must be billed, its length, and the AVERAGE
/// value of the flow's samples (10.5 every day, 11.5 on the last: 10.5 + 1/days, half-even to 6 places).
struct Shape {
    today: &'static str,
    period: &'static str,
    days: u32,
    average: &'static str,
}

const FEBRUARY_COMMON: Shape = Shape { today: "2026-03-01T09:00:00Z", period: "2026-02", days: 28, average: "10.535714" };
const FEBRUARY_LEAP: Shape = Shape { today: "2028-03-01T09:00:00Z", period: "2028-02", days: 29, average: "10.534483" };
const APRIL: Shape = Shape { today: "2026-05-01T09:00:00Z", period: "2026-04", days: 30, average: "10.533333" };
const JULY: Shape = Shape { today: "2026-08-01T09:00:00Z", period: "2026-07", days: 31, average: "10.532258" };
const DECEMBER: Shape = Shape { today: "2027-01-01T09:00:00Z", period: "2026-12", days: 31, average: "10.532258" };

/// Ingest, preview, run and check what ConnectWise holds, for the month before `shape.today`.
async fn core_flow_on(shape: &Shape, sqlite: bool) {
    let app = spawn_app_with(AppOptions { with_worker: true, sqlite, clock: Some(pinned_at(shape.today)), ..Default::default() }).await;
    let (period, days) = app.closed_period();
    assert_eq!((period.as_str(), days), (shape.period, shape.days), "the pinned clock's latest closed month");
    app.seed_fake(&standard_catalog());
    let customer = ready_tenant(&app, "acme").await;
    let (operator, integration) = (app.token("acme", &["operator"]), app.token("acme", &["integration"]));
    let saved = app
        .gql_ok(
            &operator,
            SAVE,
            json!({"c": customer, "m": [
                mapping_input(&customer, "MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 500, 1),
                mapping_input(&customer, "ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 500, 2),
                mapping_input(&customer, "GOOGLE_WORKSPACE", "ACTIVE_USERS", "LAST_DAY", 500, 3),
            ]}),
        )
        .await;
    assert_eq!(saved["saveProductMappings"]["userErrors"], json!([]), "{saved}");

    // The day after the month's last is not a day of it (29 February of a common year, 31 April, …).
    let past_end = app
        .gql_ok(&integration, RECORD, json!({"s": [sample(&customer, "MICROSOFT_365", "ACTIVE_USERS", day(&period, days + 1), "1")]}))
        .await;
    let code = &past_end["recordConsumption"]["userErrors"][0]["code"];
    if days < 31 {
        assert_eq!(code, "INVALID_DAY", "{past_end}");
    }
    // Every day of the month: AVERAGE 10.5 (11.5 on the last day), MAXIMUM and LAST_DAY the day's
    // number — so their quantities name the month's last day.
    let mut samples = Vec::new();
    for d in 1..=days {
        samples.push(sample(&customer, "MICROSOFT_365", "ACTIVE_USERS", day(&period, d), if d == days { "11.5" } else { "10.5" }));
        samples.push(sample(&customer, "ENDPOINTS", "ACTIVE_USERS", day(&period, d), &d.to_string()));
        samples.push(sample(&customer, "GOOGLE_WORKSPACE", "ACTIVE_USERS", day(&period, d), &d.to_string()));
    }
    let recorded = app.gql_ok(&integration, RECORD, json!({"s": samples})).await;
    assert_eq!(recorded["recordConsumption"]["result"]["inserted"], 3 * days, "{recorded}");

    let expected: [(i64, i64, String); 3] =
        [(9001, 11, shape.average.to_string()), (9002, i64::from(days), days.to_string()), (9003, i64::from(days), days.to_string())];
    let preview = app.gql_ok(&operator, PREVIEW, json!({"p": period})).await;
    let rows: HashMap<i64, Value> = preview["consumptionPreview"]
        .as_array()
        .expect("preview rows")
        .iter()
        .map(|r| (r["productMapping"]["cwAdditionId"].as_i64().unwrap_or_default(), r.clone()))
        .collect();
    for (addition, quantity, value) in &expected {
        let row = &rows[addition];
        assert_eq!((row["quantity"].clone(), row["value"].clone()), (json!(quantity), json!(value)), "{addition} in {period}: {row}");
        assert_eq!((row["sampleDays"].clone(), row["fallback"].clone()), (json!(days), json!(false)), "{row}");
    }

    let run = app.gql_ok(&operator, RUN, json!({"p": period, "d": false})).await;
    assert_eq!(run["runMonthlySync"]["userErrors"], json!([]), "{run}");
    let run_id = run["runMonthlySync"]["syncRun"]["id"].as_str().expect("run id").to_string();
    let done = app.wait_for_run("acme", &run_id, 60).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    for (addition, quantity, _) in &expected {
        assert_eq!(app.fake.addition_quantity(*addition), Some(*quantity), "ConnectWise's addition {addition} for {period}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn february_of_a_common_year_has_28_days() {
    core_flow_on(&FEBRUARY_COMMON, false).await;
}

#[tokio::test]
async fn february_of_a_leap_year_has_29_days_on_both_backends() {
    core_flow_on(&FEBRUARY_LEAP, false).await;
    core_flow_on(&FEBRUARY_LEAP, true).await;
}

#[tokio::test]
async fn april_has_30_days() {
    core_flow_on(&APRIL, false).await;
}

#[tokio::test]
async fn july_has_31_days() {
    core_flow_on(&JULY, false).await;
}

#[tokio::test]
async fn december_is_billed_in_january_of_the_next_year() {
    core_flow_on(&DECEMBER, false).await;
}

fn instant(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).expect("RFC 3339").to_utc()
}

/// The error code of a non-dry `runMonthlySync` of `period` (`None`: the run was accepted).
async fn run_code(app: &TestApp, period: &str) -> Option<String> {
    let d = app.gql_ok(&app.token("acme", &["operator"]), RUN, json!({"p": period, "d": false})).await;
    d["runMonthlySync"]["userErrors"][0]["code"].as_str().map(str::to_string)
}

/// Only the latest closed month may be pushed: one second before a boundary the month that is
/// ending is `PERIOD_NOT_CLOSED`; one second after, it is the one to push and the month before it is
/// `PERIOD_SUPERSEDED` — across a month and across a year.
#[tokio::test]
async fn period_rules_flip_exactly_at_the_month_boundary() {
    for (before, after, ending, previous) in [
        ("2026-03-31T23:59:59Z", "2026-04-01T00:00:00Z", "2026-03", "2026-02"),
        ("2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z", "2026-12", "2026-11"),
    ] {
        let clock = Arc::new(ManualClock::new(instant(before)));
        let app = spawn_app_with(AppOptions { clock: Some(clock.clone()), ..Default::default() }).await;
        app.configure_cw("acme").await;
        let next = domain::Period::parse(ending).expect("period").next().to_string();
        let older = domain::Period::parse(previous).expect("period").previous().to_string();

        assert_eq!(run_code(&app, ending).await.as_deref(), Some("PERIOD_NOT_CLOSED"), "{ending} at {before}");
        assert_eq!(run_code(&app, &older).await.as_deref(), Some("PERIOD_SUPERSEDED"), "{older} at {before}");
        assert_eq!(run_code(&app, previous).await, None, "{previous} is the latest closed month at {before}");

        clock.set(instant(after));
        assert_eq!(run_code(&app, &next).await.as_deref(), Some("PERIOD_NOT_CLOSED"), "{next} at {after}");
        assert_eq!(run_code(&app, previous).await.as_deref(), Some("PERIOD_SUPERSEDED"), "{previous} at {after}");
        assert_eq!(run_code(&app, ending).await, None, "{ending} is the latest closed month at {after}");
        app.shutdown().await;
    }
}

/// The monthly tick follows the service's clock: with `SYNC_CRON` at midnight on the 1st, nothing
/// starts at 23:59:59 on the 31st; one second past midnight the month that just ended gets its one
/// scheduled run.
#[tokio::test]
async fn the_scheduled_tick_fires_at_the_boundary_for_the_month_that_ended() {
    let clock = Arc::new(ManualClock::new(instant("2026-03-31T23:59:59Z")));
    let app = spawn_app_with(AppOptions {
        with_worker: true,
        clock: Some(clock.clone()),
        env: vec![("SYNC_CRON".into(), "0 0 0 1 * *".into())],
        ..Default::default()
    })
    .await;
    app.configure_cw("acme").await;
    let scheduled = || async { app.count("sync_runs WHERE trigger = 'SCHEDULED'").await };
    // The tick source looks at the clock at least every second: give it three looks.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(scheduled().await, 0, "no tick before the boundary");

    clock.set(instant("2026-04-01T00:00:01Z"));
    app.wait_for(30, "the scheduled run", || async { (scheduled().await > 0).then_some(()) }).await;
    let runs =
        app.gql_ok(&app.token("acme", &["viewer"]), "{ syncRuns(first: 10) { edges { node { period trigger } } } }", json!({})).await;
    assert_eq!(runs["syncRuns"]["edges"], json!([{"node": {"period": "2026-03", "trigger": "SCHEDULED"}}]), "one scheduled run, for March");
    app.shutdown().await;
}
