//! Issue 14 point 4: against a fake ConnectWise in sparse mode — `null` wherever the official
//! schema allows it, optional fields left out — a catalog refresh and a full month's sync run green,
//! on both deployments (PostgreSQL + Redis, embedded SQLite). The period and the month of samples
//! come from the core-flow helpers.
use fake_connectwise::FakeAddition;
use integration_tests::*;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::sqlite_core_flow::{CREATE, EXPECTED, codes, month_of_consumption, pushes, start_run};

async fn sparse_flow(sqlite: bool) {
    let app = spawn_app_with(AppOptions { with_worker: true, sqlite, ..Default::default() }).await;
    app.fake.set_sparse(true);
    app.seed_fake(&standard_catalog());
    // ConnectWise's sequence numbers are doubles: 6.5 is kept and refused by name, 7.0 is 7.
    app.fake.add_addition(FakeAddition::new(9040, 500, 740, 0).with_sequence_number_text(Some("6.5")));
    app.fake.add_addition(FakeAddition::new(9041, 500, 741, 0).with_sequence_number_text(Some("7.0")));
    app.configure_cw("acme").await;
    let op = token("acme", &["operator"]);

    // The catalog comes from the sparse answers only (nothing seeded in the database).
    let r = app.gql_ok(&op, "mutation { refreshConnectWiseCatalog { queued userErrors { code } } }", json!({})).await;
    assert_eq!(r["refreshConnectWiseCatalog"]["queued"], true, "{r}");
    app.wait_for(60, "the catalog refresh", || async {
        let d = app.gql_ok(&op, "{ connectWiseSettings { catalogRefreshedAt } }", json!({})).await;
        (!d["connectWiseSettings"]["catalogRefreshedAt"].is_null()).then_some(())
    })
    .await;
    assert_eq!([app.count("cw_companies").await, app.count("cw_agreements").await, app.count("cw_additions").await], [3, 3, 15]);
    assert_eq!((app.count("cw_boards").await, app.count("cw_board_items").await), (1, 4));
    let t = app.tenant_id("acme").await;
    let db = &app.db;
    let seq = |id: i64| async move {
        let a = entity::cw_addition::Entity::find_by_id((t, id)).one(db).await.expect("query").expect("addition");
        (a.sequence_number, a.fractional_sequence_number)
    };
    assert_eq!(seq(9040).await, (6, Some("6.5".to_string())));
    assert_eq!(seq(9041).await, (7, None));

    let c1 = app.customer("acme", "ext-1", "Customer One", all_licenses()).await;
    let c2 = app.customer("acme", "ext-2", "Customer Two", all_licenses()).await;
    assert_eq!(app.map_customer("acme", &c1, 100).await["userErrors"], json!([]));
    assert_eq!(app.map_customer("acme", &c2, 101).await["userErrors"], json!([]));
    // A mapping naming the fractional sequence number is refused with a clear message.
    let r = app.gql_ok(&op, CREATE, json!({"i": mapping_input(&c1, "MICROSOFT_365", "PRESERVED_USERS", "LAST_DAY", 500, 6)})).await;
    assert_eq!(codes(&r["createProductMapping"]), vec![("ADDITION_NOT_FOUND".to_string(), json!(["input", "cwSequenceNumber"]))], "{r}");
    let message = r["createProductMapping"]["userErrors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("6.5") && message.contains("not a whole number"), "{message}");

    // A full month: mappings validated against the sparse catalog, samples, a run, exact quantities.
    month_of_consumption(&app, &c1, &c2).await;
    let (period, _) = app.closed_period();
    let run = start_run(&app, &period, false).await;
    let done = app.wait_for_run("acme", &run, 90).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let ps = pushes(&app, &run).await;
    for (addition, q) in EXPECTED {
        assert_eq!(ps[&addition]["status"], "SUCCEEDED", "{addition}: {ps:?}");
        assert_eq!(app.fake.addition_quantity(addition), Some(q), "addition {addition}");
    }
    assert!(app.fake.requests().iter().all(|r| r.status < 400), "no ConnectWise call was refused");
    app.shutdown().await;
}

#[tokio::test]
async fn sparse_connectwise_on_sqlite() {
    sparse_flow(true).await;
}

#[tokio::test]
async fn sparse_connectwise_on_postgres_and_redis() {
    sparse_flow(false).await;
}
