//! A full month for several customers, all four interval methods, on both backends; dry runs; re-runs.
use domain::{IntervalMethod as M, ProductModule as PM, UsageMetric as U};

use super::support::{Backend, TestApp, spawn};

/// Additions of the scenario.
const AVG: i64 = 5001;
const MAX: i64 = 5002;
const LAST: i64 = 5003;
const SUM: i64 = 5004;
const GONE: i64 = 5005;
const EMPTY: i64 = 5006;
const UNMAPPED: i64 = 5007;

/// Three mapped customers (and one without a company) with samples for February 2026.
async fn scenario(app: &TestApp) {
    let acme = app.customer("acme", "Acme Corp").await;
    app.map_customer(acme, 100, "Acme Corp").await;
    app.license(acme, PM::Microsoft365, "2026-02-10", None).await;
    app.license(acme, PM::Endpoints, "2025-01-01", None).await;
    app.map_product(acme, 100, PM::Microsoft365, U::ActiveUsers, M::Average, 1000, AVG).await;
    app.map_product(acme, 100, PM::Endpoints, U::PreservedUsers, M::Maximum, 1001, MAX).await;
    // docs/billing-rules.md, AVERAGE with a mid-month license: the provisioning day is excluded → (3.5 + 4) / 2 = 3.75 → 4.
    app.record(acme, PM::Microsoft365, U::ActiveUsers, &[("2026-02-10", "100"), ("2026-02-11", "3.5"), ("2026-02-12", "4")]).await;
    app.record(
        acme,
        PM::Endpoints,
        U::PreservedUsers,
        &[("2026-01-31", "50"), ("2026-02-01", "7"), ("2026-02-15", "12.000001"), ("2026-02-28", "3"), ("2026-03-01", "99")],
    )
    .await;

    let beta = app.customer("beta", "Beta GmbH").await;
    app.map_customer(beta, 200, "Beta GmbH").await;
    app.license(beta, PM::EnterpriseWorkloads, "2025-06-01", None).await;
    app.map_product(beta, 200, PM::EnterpriseWorkloads, U::CloudStorage, M::LastDay, 2000, LAST).await;
    app.map_product(beta, 200, PM::EnterpriseWorkloads, U::LtrStorage, M::Sum, 2001, SUM).await;
    // No sample on the 28th: LAST_DAY falls back to the 27th.
    app.record(beta, PM::EnterpriseWorkloads, U::CloudStorage, &[("2026-02-26", "20"), ("2026-02-27", "10.5")]).await;
    app.record(beta, PM::EnterpriseWorkloads, U::EarlyDeleteLtrStorage, &[("2026-02-28", "2.25")]).await;
    app.record(beta, PM::EnterpriseWorkloads, U::LtrStorage, &[("2026-02-01", "500"), ("2026-02-28", "1")]).await;

    let gamma = app.customer("gamma", "Gamma Ltd").await;
    app.map_customer(gamma, 300, "Gamma Ltd").await;
    app.license(gamma, PM::GoogleWorkspace, "2025-01-01", Some("2026-02-14")).await;
    app.license(gamma, PM::Microsoft365, "2025-01-01", None).await;
    app.map_product(gamma, 300, PM::GoogleWorkspace, U::ActiveUsers, M::LastDay, 3000, GONE).await;
    app.map_product(gamma, 300, PM::Microsoft365, U::ActiveUsers, M::Average, 3001, EMPTY).await;

    // A mapping whose customer has no company any more is not part of a run.
    let delta = app.customer("delta", "Delta").await;
    app.license(delta, PM::Microsoft365, "2025-01-01", None).await;
    app.map_product(delta, 400, PM::Microsoft365, U::ActiveUsers, M::Maximum, 4000, UNMAPPED).await;
    app.record(delta, PM::Microsoft365, U::ActiveUsers, &[("2026-02-10", "5")]).await;

    app.refresh_catalog().await;
}

/// (addition, status, skip reason, value, quantity, fallback) per push of the run.
async fn outcome(app: &TestApp, run_id: i64) -> Vec<(i64, String, Option<String>, Option<String>, Option<i64>, bool)> {
    app.pushes(run_id)
        .await
        .into_iter()
        .map(|p| (p.cw_addition_id, p.status, p.skip_reason, p.value_micros.map(domain::format_micros), p.quantity, p.fallback))
        .collect()
}

fn row(
    a: i64,
    status: &str,
    skip: Option<&str>,
    value: Option<&str>,
    q: Option<i64>,
    fallback: bool,
) -> (i64, String, Option<String>, Option<String>, Option<i64>, bool) {
    (a, status.to_string(), skip.map(String::from), value.map(String::from), q, fallback)
}

async fn full_month(backend: Backend) {
    let app = spawn(backend).await;
    scenario(&app).await;

    let run = app.run_sync("2026-02", false).await;
    assert_eq!(run.status, "RUNNING");
    assert_eq!(run.trigger, "MANUAL");
    assert_eq!(run.requested_by, "user:alice");
    assert_eq!(app.queue.len(), 1, "the aggregation is enqueued");
    app.run_all().await;

    assert_eq!(
        outcome(&app, run.id).await,
        vec![
            row(AVG, "SUCCEEDED", None, Some("3.75"), Some(4), false),
            row(MAX, "SUCCEEDED", None, Some("12.000001"), Some(13), false),
            row(LAST, "SUCCEEDED", None, Some("10.5"), Some(11), true),
            row(SUM, "SUCCEEDED", None, Some("13.75"), Some(14), true),
            row(GONE, "SUCCEEDED", None, Some("0"), Some(0), false),
            row(EMPTY, "SKIPPED", Some("NO_CONSUMPTION"), None, None, false),
        ]
    );
    for (addition, q) in [(AVG, 4), (MAX, 13), (LAST, 11), (SUM, 14), (GONE, 0)] {
        assert_eq!(app.fake.addition_quantity(addition), Some(q), "addition {addition}");
    }
    assert_eq!(app.fake.addition_quantity(EMPTY), Some(1), "nothing sent for a skipped push");
    assert_eq!(app.fake.addition_quantity(UNMAPPED), Some(1), "unmapped customers are not synced");
    assert_eq!(app.fake.patch_count(), 5);
    let patch = &app.fake.patches()[0];
    assert_eq!(patch.body, Some(serde_json::json!([{"op": "replace", "path": "quantity", "value": 4}])));

    let run = app.run(run.id).await;
    assert_eq!(run.status, "SUCCEEDED");
    assert!(run.aggregated_at.is_some() && run.finished_at.is_some());
    assert_eq!(app.audit("sync_run.started").await.len(), 1);
    assert_eq!(app.audit("sync_run.aggregated").await.len(), 1);
    assert_eq!(app.audit("sync_run.finished").await.len(), 1);
    let succeeded = app.audit("push.succeeded").await;
    assert_eq!(succeeded.len(), 5);
    let detail = succeeded[0].detail.clone().unwrap();
    assert_eq!(detail["attempt"], 1);
    assert_eq!(detail["httpStatus"], 200);
    assert!(detail["requestId"].is_string());

    // Every push made a GET and a PATCH, each logged as an attempt row.
    let first = app.pushes(run.id).await[0].clone();
    let attempts = app.attempts(first.id).await;
    assert_eq!(attempts.iter().map(|a| a.step.as_str()).collect::<Vec<_>>(), ["GET_ADDITION", "PATCH_QUANTITY"]);
    assert!(attempts.iter().all(|a| a.outcome == "OK" && a.http_status == Some(200) && a.request_id.is_some()));
    assert_eq!(attempts[1].quantity, Some(4));

    // The preview computes the same values from the same SQL.
    let preview =
        sync_core::service::consumption::preview(&app.db, &app.principal(), super::support::period("2026-02"), None).await.unwrap();
    let pushes = app.pushes(run.id).await;
    assert_eq!(preview.len(), pushes.len());
    for (p, push) in preview.iter().zip(&pushes) {
        assert_eq!(Some(p.product_mapping_id), push.product_mapping_id);
        assert_eq!(p.result.as_ref().ok().map(|v| v.quantity), push.quantity);
    }

    // Re-running the period sends nothing that did not change.
    let again = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let skipped = outcome(&app, again.id).await;
    assert!(skipped.iter().all(|r| r.1 == "SKIPPED"), "{skipped:?}");
    assert_eq!(skipped.iter().filter(|r| r.2.as_deref() == Some("UNCHANGED")).count(), 5);
    assert_eq!(app.fake.patch_count(), 5, "no new PATCH");
    assert_eq!(app.run(again.id).await.status, "SUCCEEDED");
}

#[tokio::test]
async fn full_month_postgres() {
    full_month(Backend::Postgres).await;
}

#[tokio::test]
async fn full_month_sqlite() {
    full_month(Backend::Sqlite).await;
}

#[tokio::test]
async fn dry_run_computes_and_calls_nothing() {
    let app = spawn(Backend::Postgres).await;
    scenario(&app).await;
    // Dry runs accept any month, here the current (open) one as well as the closed one.
    let run = app.run_sync("2026-02", true).await;
    assert!(run.dry_run);
    app.run_all().await;
    assert_eq!(app.fake.request_count(), 0, "a dry run never calls ConnectWise");
    let rows = outcome(&app, run.id).await;
    assert_eq!(rows[0], row(AVG, "SKIPPED", Some("DRY_RUN"), Some("3.75"), Some(4), false));
    assert_eq!(rows.iter().filter(|r| r.2.as_deref() == Some("DRY_RUN")).count(), 5);
    assert_eq!(app.run(run.id).await.status, "SUCCEEDED");
    let open = sync_core::service::sync::run_monthly_sync(
        &app.db,
        app.queue.as_ref(),
        &app.principal(),
        super::support::period("2026-03"),
        None,
        true,
        app.now(),
    )
    .await
    .unwrap();
    assert!(open.is_ok());

    // A dry run is never the comparison point for UNCHANGED: the real run sends everything.
    app.run_all().await;
    let real = app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert_eq!(app.fake.patch_count(), 5);
    assert_eq!(app.run(real.id).await.status, "SUCCEEDED");
}

#[tokio::test]
async fn run_rules_period_customers_and_one_running_run() {
    let app = spawn(Backend::Postgres).await;
    scenario(&app).await;
    let sync = |p: &'static str, customers: Option<Vec<String>>, dry: bool| {
        let app = &app;
        async move {
            sync_core::service::sync::run_monthly_sync(
                &app.db,
                app.queue.as_ref(),
                &app.principal(),
                super::support::period(p),
                customers,
                dry,
                app.now(),
            )
            .await
            .unwrap()
        }
    };
    let err = sync("2026-03", None, false).await.unwrap_err();
    assert_eq!((err[0].code.as_str(), err[0].field.clone()), ("PERIOD_NOT_CLOSED", Some(vec!["period".to_string()])));
    let err = sync("2026-01", None, false).await.unwrap_err();
    assert_eq!(err[0].code, "PERIOD_SUPERSEDED");
    let err = sync("2026-02", Some(vec!["999999".into(), "x".into()]), false).await.unwrap_err();
    assert_eq!(err.len(), 2);
    assert_eq!(err[1].field, Some(vec!["customerIds".to_string(), "1".to_string()]));
    assert!(err.iter().all(|e| e.code == "NOT_FOUND"));

    // Only one customer's mappings.
    let acme = app.scalar_i64("SELECT id FROM customers WHERE external_id = 'acme'").await;
    let run = sync("2026-02", Some(vec![acme.to_string()]), false).await.unwrap();
    let err = sync("2026-02", None, false).await.unwrap_err();
    assert_eq!(err[0].code, "RUN_IN_PROGRESS");
    app.run_all().await;
    let additions: Vec<i64> = app.pushes(run.id).await.iter().map(|p| p.cw_addition_id).collect();
    assert_eq!(additions, [AVG, MAX]);

    // Consumption sync off → refused.
    app.exec("UPDATE cw_settings SET consumption_sync_enabled = FALSE").await;
    let err = sync("2026-02", None, false).await.unwrap_err();
    assert_eq!(err[0].code, "CONSUMPTION_SYNC_DISABLED");
}

#[tokio::test]
async fn aggregation_is_idempotent_and_supersedes_older_pushes() {
    let app = spawn(Backend::Postgres).await;
    scenario(&app).await;
    let first = app.run_sync("2026-02", false).await;
    // Aggregate twice (duplicate delivery): one set of pushes.
    sync_core::engine::aggregate::aggregate_run(&app.deps, first.id).await.unwrap();
    sync_core::engine::aggregate::aggregate_run(&app.deps, first.id).await.unwrap();
    assert_eq!(app.pushes(first.id).await.len(), 6);
    app.queue.clear();
    // The first run's pushes never ran; finish the first run by hand so a second may start.
    app.exec(&format!("UPDATE sync_runs SET status = 'SUCCEEDED' WHERE id = {}", first.id)).await;
    let second = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let old = app.pushes(first.id).await;
    assert!(
        old.iter()
            .filter(|p| p.skip_reason.as_deref() != Some("NO_CONSUMPTION"))
            .all(|p| p.status == "CANCELLED" && p.cancel_reason.as_deref() == Some("PUSH_SUPERSEDED"))
    );
    assert_eq!(app.audit("push.cancelled").await.len(), 5);
    assert!(app.pushes(second.id).await.iter().filter(|p| p.status == "SUCCEEDED").count() == 5);
}

/// Scale check (run by hand: `cargo test -p sync-core --release --test sync_engine scale -- --ignored --nocapture`):
/// 50,000 mappings × 28 days, aggregation vs. one hand-written query computing the same quantities.
#[tokio::test]
#[ignore]
async fn aggregation_scale() {
    use sea_orm::ConnectionTrait;
    let app = spawn(Backend::Postgres).await;
    let t = app.tenant_id;
    let customers = 10_000;
    for sql in [
        format!(
            "INSERT INTO customers (tenant_id, external_id, account_name, created_at, updated_at) \
             SELECT {t}, 'c' || g, 'Customer ' || g, now(), now() FROM generate_series(1, {customers}) g"
        ),
        format!(
            "INSERT INTO customer_mappings (tenant_id, customer_id, cw_company_id, created_at, updated_at) SELECT {t}, id, id, now(), now() FROM customers"
        ),
        format!(
            "INSERT INTO licenses (tenant_id, customer_id, product_module, edition, provisioned_on, add_ons) \
             SELECT {t}, c.id, m, 'BUSINESS', DATE '2025-01-01', '[]' FROM customers c, \
             unnest(ARRAY['MICROSOFT_365', 'ENDPOINTS', 'GOOGLE_WORKSPACE', 'ENTERPRISE_WORKLOADS']) m"
        ),
        format!(
            "INSERT INTO product_mappings (tenant_id, customer_id, product_module, usage, interval_method, cw_agreement_id, \
               cw_sequence_number, cw_addition_id, cw_product_id, created_at, updated_at) \
             SELECT {t}, c.id, x.m, x.u, x.i, c.id, x.k, c.id * 10 + x.k, x.k, now(), now() FROM customers c, \
             (VALUES ('MICROSOFT_365', 'ACTIVE_USERS', 'AVERAGE', 1), ('ENDPOINTS', 'ACTIVE_USERS', 'MAXIMUM', 2), \
                     ('GOOGLE_WORKSPACE', 'ACTIVE_USERS', 'LAST_DAY', 3), ('ENTERPRISE_WORKLOADS', 'CLOUD_STORAGE', 'LAST_DAY', 4), \
                     ('ENTERPRISE_WORKLOADS', 'LTR_STORAGE', 'SUM', 5)) AS x(m, u, i, k)"
        ),
        format!(
            "INSERT INTO consumption_samples (tenant_id, customer_id, product_module, usage, day, value_micros) \
             SELECT {t}, c.id, x.m, x.u, d::date, (c.id * 1000 + extract(day FROM d)::bigint) * 1500 FROM customers c, \
             (VALUES ('MICROSOFT_365', 'ACTIVE_USERS'), ('ENDPOINTS', 'ACTIVE_USERS'), ('GOOGLE_WORKSPACE', 'ACTIVE_USERS'), \
                     ('ENTERPRISE_WORKLOADS', 'CLOUD_STORAGE'), ('ENTERPRISE_WORKLOADS', 'LTR_STORAGE'), \
                     ('ENTERPRISE_WORKLOADS', 'EARLY_DELETE_LTR_STORAGE')) AS x(m, u), \
             generate_series(DATE '2026-02-01', DATE '2026-02-28', INTERVAL '1 day') d"
        ),
        "ANALYZE".to_string(),
    ] {
        app.db.execute_unprepared(&sql).await.unwrap();
    }
    let baseline = "SELECT pm.id, CASE pm.interval_method \
          WHEN 'AVERAGE' THEN (SUM(s.value_micros) FILTER (WHERE s.day <> l.provisioned_on) + COUNT(*) FILTER (WHERE s.day <> l.provisioned_on) * 1000000 - 1) \
                              / (COUNT(*) FILTER (WHERE s.day <> l.provisioned_on) * 1000000) \
          WHEN 'MAXIMUM' THEN (MAX(s.value_micros) + 999999) / 1000000 \
          ELSE (SUM(s.value_micros) FILTER (WHERE s.day = DATE '2026-02-28') + 999999) / 1000000 END AS quantity \
        FROM product_mappings pm JOIN licenses l ON l.customer_id = pm.customer_id AND l.product_module = pm.product_module \
        JOIN consumption_samples s ON s.customer_id = pm.customer_id AND s.product_module = pm.product_module \
          AND (s.usage = pm.usage OR (pm.interval_method = 'SUM' AND s.usage IN ('CLOUD_STORAGE', 'EARLY_DELETE_LTR_STORAGE', 'LTR_STORAGE'))) \
          AND s.day BETWEEN DATE '2026-02-01' AND DATE '2026-02-28' \
        WHERE pm.tenant_id = $1 GROUP BY pm.id, pm.interval_method";
    let started = std::time::Instant::now();
    let rows =
        app.db.query_all_raw(sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, baseline, [t.into()])).await.unwrap();
    let base = started.elapsed();
    assert_eq!(rows.len(), customers as usize * 5);

    let run = app.run_sync("2026-02", false).await;
    let started = std::time::Instant::now();
    sync_core::engine::aggregate::aggregate_run(&app.deps, run.id).await.unwrap();
    let ours = started.elapsed();
    assert_eq!(app.scalar_i64(&format!("SELECT COUNT(*) FROM pushes WHERE sync_run_id = {}", run.id)).await, customers * 5);
    println!("baseline query: {base:?}; aggregate_run: {ours:?}; ratio {:.2}", ours.as_secs_f64() / base.as_secs_f64());
}

/// The set-based SQL statistics agree with the domain's reference implementation
/// (`UsageMonthStats::from_samples`) on pseudo-random months, on both backends.
#[tokio::test]
async fn sql_statistics_match_the_reference_aggregation() {
    use domain::{LicenseWindow, UsageMonthStats, aggregate_month};
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = spawn(backend).await;
        let feb = super::support::period("2026-02");
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut expected = std::collections::HashMap::new();
        let methods = [M::Average, M::Maximum, M::LastDay];
        let mut addition = 9000;
        for ci in 0..12 {
            let c = app.customer(&format!("r{ci}"), &format!("Random {ci}")).await;
            app.map_customer(c, 500 + ci, "Random").await;
            // Windows that start before or inside the month and sometimes end inside it.
            let from = super::support::d("2026-01-20") + chrono::Duration::days(next(35) as i64);
            let to = (next(3) == 0).then(|| super::support::d("2026-02-05") + chrono::Duration::days(next(30) as i64));
            let window = LicenseWindow { provisioned_on: from, deprovisioned_on: to };
            let to_s = to.map(|t| t.to_string());
            app.license(c, PM::Microsoft365, &from.to_string(), to_s.as_deref()).await;
            app.license(c, PM::EnterpriseWorkloads, &from.to_string(), to_s.as_deref()).await;
            let mut samples = std::collections::HashMap::new();
            for (module, usage) in [
                (PM::Microsoft365, U::ActiveUsers),
                (PM::EnterpriseWorkloads, U::CloudStorage),
                (PM::EnterpriseWorkloads, U::EarlyDeleteLtrStorage),
                (PM::EnterpriseWorkloads, U::LtrStorage),
            ] {
                let density = next(4); // 0 = none at all
                let mut list = Vec::new();
                let mut input = Vec::new();
                for day in super::support::d("2026-01-25").iter_days().take(40) {
                    if density > 0 && next(4) < density {
                        let micros = next(1_000_000_000_000) as i64;
                        list.push((day, micros));
                        input.push((day.to_string(), domain::format_micros(micros)));
                    }
                }
                if !input.is_empty() {
                    let refs: Vec<(&str, &str)> = input.iter().map(|(d, v)| (d.as_str(), v.as_str())).collect();
                    app.record(c, module, usage, &refs).await;
                }
                samples.insert(usage, list);
            }
            let stats = |u: U| UsageMonthStats::from_samples(feb, &window, &samples[&u]);
            let method = methods[ci as usize % 3];
            addition += 1;
            let m = app.map_product(c, 500 + ci, PM::Microsoft365, U::ActiveUsers, method, addition, addition).await;
            expected.insert(m, aggregate_month(method, feb, &window, &[stats(U::ActiveUsers)]));
            addition += 1;
            let m = app
                .map_product(c, 500 + ci, PM::EnterpriseWorkloads, U::CloudStorage, methods[(ci as usize + 1) % 3], addition, addition)
                .await;
            expected.insert(m, aggregate_month(methods[(ci as usize + 1) % 3], feb, &window, &[stats(U::CloudStorage)]));
            addition += 1;
            let m = app.map_product(c, 500 + ci, PM::EnterpriseWorkloads, U::LtrStorage, M::Sum, addition, addition).await;
            let present: Vec<UsageMonthStats> = U::EW_STORAGE
                .iter()
                .filter(|u| samples[u].iter().any(|(d, _)| feb.contains(*d) && window.contains(*d)))
                .map(|u| stats(*u))
                .collect();
            expected.insert(m, aggregate_month(M::Sum, feb, &window, &present));
        }
        let ok: Vec<_> = expected.values().filter_map(|r| r.as_ref().ok()).collect();
        assert!(ok.len() >= 18 && ok.iter().any(|v| v.fallback) && ok.len() < expected.len(), "the data covers the cases");
        let preview = sync_core::service::consumption::preview(&app.db, &app.principal(), feb, None).await.unwrap();
        assert_eq!(preview.len(), expected.len());
        for row in preview {
            assert_eq!(row.result, expected[&row.product_mapping_id], "{backend:?} mapping {} ({:?})", row.product_mapping_id, row.method);
        }
    }
}

/// A run that leaves many pushes pending while the planner's statistics still say "none in flight"
/// (here: analysed while `pushes` was empty) refreshes them, so the per-push statements are planned
/// on the primary key and not on a full scan of the in-flight index (`refresh_push_statistics`).
#[tokio::test]
async fn a_large_run_refreshes_stale_push_statistics() {
    let app = spawn(Backend::Postgres).await;
    let t = app.tenant_id;
    let customers = 600;
    app.exec(&format!(
        "INSERT INTO customers (tenant_id, external_id, account_name, created_at, updated_at) \
         SELECT {t}, 's' || g, 'Customer ' || g, now(), now() FROM generate_series(1, {customers}) g"
    ))
    .await;
    app.exec(&format!(
        "INSERT INTO customer_mappings (tenant_id, customer_id, cw_company_id, created_at, updated_at) \
         SELECT {t}, id, 700000 + id, now(), now() FROM customers WHERE tenant_id = {t}"
    ))
    .await;
    app.exec(&format!(
        "INSERT INTO licenses (tenant_id, customer_id, product_module, edition, provisioned_on, add_ons) \
         SELECT {t}, id, 'MICROSOFT_365', 'BUSINESS', DATE '2025-01-01', '[]' FROM customers WHERE tenant_id = {t}"
    ))
    .await;
    app.exec(&format!(
        "INSERT INTO product_mappings (tenant_id, customer_id, product_module, usage, interval_method, cw_agreement_id, \
           cw_sequence_number, cw_addition_id, cw_product_id, created_at, updated_at) \
         SELECT {t}, id, 'MICROSOFT_365', 'ACTIVE_USERS', 'LAST_DAY', 800000 + id, 1, 900000 + id, 1, now(), now() \
         FROM customers WHERE tenant_id = {t}"
    ))
    .await;
    app.exec(&format!(
        "INSERT INTO consumption_samples (tenant_id, customer_id, product_module, usage, day, value_micros) \
         SELECT {t}, id, 'MICROSOFT_365', 'ACTIVE_USERS', DATE '2026-02-27', 5000000 FROM customers WHERE tenant_id = {t}"
    ))
    .await;
    app.exec("ANALYZE pushes").await;
    let in_flight_estimate = "SELECT CAST(reltuples AS BIGINT) FROM pg_class WHERE relname = 'uq_pushes_in_flight'";
    assert!(app.scalar_i64(in_flight_estimate).await <= 0, "analysed while empty");

    let run = app.run_sync("2026-02", false).await;
    sync_core::engine::aggregate::aggregate_run(&app.deps, run.id).await.unwrap();
    let pending = app.scalar_i64(&format!("SELECT COUNT(*) FROM pushes WHERE sync_run_id = {} AND status = 'PENDING'", run.id)).await;
    assert_eq!(pending, customers);
    let estimate = app.scalar_i64(in_flight_estimate).await;
    assert!(estimate >= customers / 2, "the statistics were not refreshed: the planner estimates {estimate} pushes in flight");
}
