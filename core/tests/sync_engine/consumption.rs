//! Ingest: validation codes, atomicity, large batches on both backends, corrections and staleness.
use domain::{IntervalMethod as M, ProductModule as PM, UsageMetric as U};
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use sync_core::service::consumption::{SampleInput, daily_consumption, record_consumption};

use super::support::{Backend, TestApp, d, spawn};

fn sample(id: Option<String>, ext: Option<&str>, module: PM, usage: U, day: &str, value: &str) -> SampleInput {
    SampleInput {
        customer_id: id,
        customer_external_id: ext.map(String::from),
        product_module: module,
        usage,
        day: day.into(),
        value: value.into(),
    }
}

async fn other_tenant_customer(app: &TestApp) -> i64 {
    let t = entity::tenant::ActiveModel { external_id: Set("t2".into()), created_at: Set(app.now()), ..Default::default() }
        .insert(&app.db)
        .await
        .unwrap();
    entity::customer::ActiveModel {
        tenant_id: Set(t.id),
        external_id: Set("foreign".into()),
        account_name: Set("Foreign".into()),
        created_at: Set(app.now()),
        updated_at: Set(app.now()),
        ..Default::default()
    }
    .insert(&app.db)
    .await
    .unwrap()
    .id
}

async fn validation(backend: Backend) {
    let app = spawn(backend).await;
    let acme = app.customer("acme", "Acme").await;
    let foreign = other_tenant_customer(&app).await;
    let id = Some(acme.to_string());
    let batch = vec![
        sample(id.clone(), None, PM::Microsoft365, U::ActiveUsers, "2026-02-01", "3"),
        sample(id.clone(), None, PM::Microsoft365, U::ActiveUsers, "2026-02-02", "abc"),
        sample(id.clone(), None, PM::Microsoft365, U::ActiveUsers, "2026-02-30", "3"),
        sample(Some(foreign.to_string()), None, PM::Microsoft365, U::ActiveUsers, "2026-02-03", "3"),
        sample(None, Some("nope"), PM::Microsoft365, U::ActiveUsers, "2026-02-04", "3"),
        sample(id.clone(), Some("acme"), PM::Microsoft365, U::ActiveUsers, "2026-02-05", "3"),
        sample(id.clone(), None, PM::Microsoft365, U::CloudStorage, "2026-02-06", "3"),
        sample(None, Some("acme"), PM::Microsoft365, U::ActiveUsers, "2026-02-01", "4"),
        sample(id.clone(), None, PM::Microsoft365, U::ActiveUsers, "2026-02-08", "-1"),
        sample(id.clone(), None, PM::Microsoft365, U::ActiveUsers, "2026-02-09", "1.0000001"),
        sample(None, None, PM::Microsoft365, U::ActiveUsers, "2026-02-10", "1"),
    ];
    let errors = record_consumption(&app.db, &app.principal(), batch, app.now()).await.unwrap().unwrap_err();
    let got: Vec<(String, Vec<String>)> = errors.iter().map(|e| (e.code.clone(), e.field.clone().unwrap())).collect();
    let f = |i: usize, name: &str| vec!["samples".to_string(), i.to_string(), name.to_string()];
    assert_eq!(
        got,
        vec![
            ("INVALID_VALUE".to_string(), f(1, "value")),
            ("INVALID_DAY".to_string(), f(2, "day")),
            ("UNKNOWN_CUSTOMER".to_string(), f(3, "customerId")),
            ("UNKNOWN_CUSTOMER".to_string(), f(4, "customerExternalId")),
            ("UNKNOWN_CUSTOMER".to_string(), f(5, "customerId")),
            ("USAGE_NOT_ALLOWED".to_string(), f(6, "usage")),
            ("DUPLICATE_SAMPLE".to_string(), f(7, "day")),
            ("INVALID_VALUE".to_string(), f(8, "value")),
            ("INVALID_VALUE".to_string(), f(9, "value")),
            ("UNKNOWN_CUSTOMER".to_string(), f(10, "customerId")),
        ]
    );
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM consumption_samples").await, 0, "an invalid batch writes nothing");

    let too_many: Vec<SampleInput> =
        (0..10_001).map(|_| sample(id.clone(), None, PM::Microsoft365, U::ActiveUsers, "2026-02-01", "1")).collect();
    let errors = record_consumption(&app.db, &app.principal(), too_many, app.now()).await.unwrap().unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].code.as_str(), errors[0].field.clone()), ("BATCH_TOO_LARGE", Some(vec!["samples".to_string()])));
}

#[tokio::test]
async fn validation_postgres() {
    validation(Backend::Postgres).await;
}

#[tokio::test]
async fn validation_sqlite() {
    validation(Backend::Sqlite).await;
}

async fn large_batches(backend: Backend) {
    let app = spawn(backend).await;
    let mut customers = Vec::new();
    for i in 0..10 {
        customers.push(app.customer(&format!("c{i}"), &format!("Customer {i}")).await);
    }
    let start = d("2023-01-01");
    let batch = |changed: usize| -> Vec<SampleInput> {
        let mut out = Vec::with_capacity(10_000);
        for (ci, c) in customers.iter().enumerate() {
            for day in 0..1000 {
                let n = ci * 1000 + day;
                let value = if n < changed { format!("{}.5", n + 1) } else { format!("{n}.25") };
                // Half by id, half by external id: both resolve in the same query.
                let (id, ext) = if day % 2 == 0 { (Some(c.to_string()), None) } else { (None, Some(format!("c{ci}"))) };
                out.push(SampleInput {
                    customer_id: id,
                    customer_external_id: ext,
                    product_module: PM::EnterpriseWorkloads,
                    usage: U::CloudStorage,
                    day: (start + chrono::Duration::days(day as i64)).format("%Y-%m-%d").to_string(),
                    value,
                });
            }
        }
        out
    };
    let first = record_consumption(&app.db, &app.principal(), batch(0), app.now()).await.unwrap().unwrap();
    assert_eq!((first.accepted, first.inserted, first.updated, first.unchanged), (10_000, 10_000, 0, 0));
    let same = record_consumption(&app.db, &app.principal(), batch(0), app.now()).await.unwrap().unwrap();
    assert_eq!((same.inserted, same.updated, same.unchanged), (0, 0, 10_000));
    let corrected = record_consumption(&app.db, &app.principal(), batch(100), app.now()).await.unwrap().unwrap();
    assert_eq!((corrected.inserted, corrected.updated, corrected.unchanged), (0, 100, 9_900));
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM consumption_samples").await, 10_000);
    assert_eq!(app.audit("consumption.corrected").await.len(), 100);
    let days = daily_consumption(
        &app.db,
        &app.principal(),
        customers[0],
        PM::EnterpriseWorkloads,
        U::CloudStorage,
        d("2023-01-01"),
        d("2023-01-03"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(days, vec![(d("2023-01-01"), 1_500_000), (d("2023-01-02"), 2_500_000), (d("2023-01-03"), 3_500_000)]);
}

#[tokio::test]
async fn large_batches_postgres() {
    large_batches(Backend::Postgres).await;
}

#[tokio::test]
async fn large_batches_sqlite() {
    large_batches(Backend::Sqlite).await;
}

#[tokio::test]
async fn corrections_are_audited_and_flag_pushed_mappings_stale() {
    let app = spawn(Backend::Postgres).await;
    let c = app.customer("acme", "Acme").await;
    app.map_customer(c, 100, "Acme").await;
    app.license(c, PM::Microsoft365, "2025-01-01", None).await;
    app.license(c, PM::EnterpriseWorkloads, "2025-01-01", None).await;
    let users = app.map_product(c, 100, PM::Microsoft365, U::ActiveUsers, M::Maximum, 1, 11).await;
    let sum = app.map_product(c, 100, PM::EnterpriseWorkloads, U::LtrStorage, M::Sum, 2, 21).await;
    app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-01-31", "2"), ("2026-02-10", "5")]).await;
    app.record(c, PM::EnterpriseWorkloads, U::EarlyDeleteLtrStorage, &[("2026-02-28", "10")]).await;
    app.refresh_catalog().await;
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert_eq!(app.run(run.id).await.status, "SUCCEEDED");
    assert_eq!(app.fake.addition_quantity(11), Some(5));

    let stale = |id: i64| {
        let app = &app;
        async move { entity::product_mapping::Entity::find_by_id(id).one(&app.db).await.unwrap().unwrap().stale }
    };
    use sea_orm::EntityTrait;

    // A correction in a month never pushed flags nothing.
    let r = app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-01-31", "3")]).await;
    assert_eq!((r.updated, r.stale_mappings), (1, 0));
    assert!(!stale(users).await);

    // Corrections of a pushed month: the mapping of that usage, and SUM mappings for any storage type.
    let r = app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-10", "8"), ("2026-02-11", "1")]).await;
    assert_eq!((r.accepted, r.inserted, r.updated, r.unchanged, r.stale_mappings), (2, 1, 1, 0, 1));
    assert!(stale(users).await);
    assert!(!stale(sum).await);
    let r = app.record(c, PM::EnterpriseWorkloads, U::EarlyDeleteLtrStorage, &[("2026-02-28", "12")]).await;
    assert_eq!(r.stale_mappings, 1);
    assert!(stale(sum).await);

    let audit = app.audit("consumption.corrected").await;
    assert_eq!(audit.len(), 3);
    let feb = &audit[1];
    assert_eq!(feb.entity_type, "consumption");
    assert_eq!(feb.entity_id, format!("{c}:MICROSOFT_365:ACTIVE_USERS:2026-02-10"));
    assert_eq!(feb.before, Some(serde_json::json!({"value": "5"})));
    assert_eq!(feb.after, Some(serde_json::json!({"value": "8"})));
    assert_eq!(feb.actor, "user:alice");

    // A run re-sends the new values and clears the flags.
    let again = app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert_eq!(app.run(again.id).await.status, "SUCCEEDED");
    assert_eq!(app.fake.addition_quantity(11), Some(8));
    assert_eq!(app.fake.addition_quantity(21), Some(12));
    assert!(!stale(users).await && !stale(sum).await);

    // A correction that does not change the quantity: the re-run skips it as UNCHANGED, and the
    // mapping is current again.
    let r = app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-11", "1.5")]).await;
    assert_eq!(r.stale_mappings, 1);
    let third = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let pushes = app.pushes(third.id).await;
    assert!(pushes.iter().all(|p| p.skip_reason.as_deref() == Some("UNCHANGED")), "{pushes:?}");
    assert!(!stale(users).await);
}

#[tokio::test]
async fn daily_consumption_is_scoped_and_bounded() {
    let app = spawn(Backend::Sqlite).await;
    let c = app.customer("acme", "Acme").await;
    let foreign = other_tenant_customer(&app).await;
    app.record(c, PM::Endpoints, U::ActiveUsers, &[("2026-02-01", "1.5"), ("2026-02-03", "2")]).await;
    let p = app.principal();
    let days = daily_consumption(&app.db, &p, c, PM::Endpoints, U::ActiveUsers, d("2026-02-01"), d("2026-02-28")).await.unwrap().unwrap();
    assert_eq!(days, vec![(d("2026-02-01"), 1_500_000), (d("2026-02-03"), 2_000_000)]);
    assert!(
        daily_consumption(&app.db, &p, foreign, PM::Endpoints, U::ActiveUsers, d("2026-02-01"), d("2026-02-28")).await.unwrap().is_none()
    );
    let err = daily_consumption(&app.db, &p, c, PM::Endpoints, U::ActiveUsers, d("2025-01-01"), d("2026-02-28")).await.unwrap_err();
    assert_eq!(err.code(), "BAD_USER_INPUT");
}

/// Ingest throughput (run by hand: `cargo test -p sync-core --release --test sync_engine ingest_scale -- --ignored --nocapture`).
#[tokio::test]
#[ignore]
async fn ingest_scale() {
    let app = spawn(Backend::Postgres).await;
    let mut customers = Vec::new();
    for i in 0..100 {
        customers.push(app.customer(&format!("c{i}"), &format!("Customer {i}")).await);
    }
    let batches: Vec<Vec<SampleInput>> = (0..20)
        .map(|b| {
            (0..10_000)
                .map(|i| {
                    let n = b * 10_000 + i;
                    SampleInput {
                        customer_id: None,
                        customer_external_id: Some(format!("c{}", n % 100)),
                        product_module: PM::EnterpriseWorkloads,
                        usage: U::ALL[n % 3],
                        day: (d("2020-01-01") + chrono::Duration::days((n / 300) as i64)).format("%Y-%m-%d").to_string(),
                        value: format!("{}.125", n),
                    }
                })
                .collect()
        })
        .collect();
    let started = std::time::Instant::now();
    for batch in batches {
        let r = record_consumption(&app.db, &app.principal(), batch, app.now()).await.unwrap().unwrap();
        assert_eq!(r.inserted, 10_000);
    }
    let elapsed = started.elapsed();
    println!("200,000 samples in {elapsed:?}: {:.0} samples/s", 200_000.0 / elapsed.as_secs_f64());
}
