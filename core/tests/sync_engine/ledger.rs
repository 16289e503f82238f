//! Regression tests of the billing ledger: each operator workflow that once left a wrong quantity
//! on an invoice (or burnt attempts, or made two tickets), stepped job by job against the fake
//! ConnectWise. What ConnectWise holds at the end is the assertion that matters.
use std::time::Duration;

use sea_orm::{ConnectionTrait, TransactionTrait};

use domain::{IntervalMethod as M, ProductModule as PM, UsageMetric as U};
use fake_connectwise::{Fault, FaultRule};
use sync_core::{
    engine,
    service::{self, mappings::MappingInput},
};

use super::support::{Backend, TestApp, spawn, spawn_with};

const AGREEMENT: i64 = 7000;
const X: i64 = 7001;
const Y: i64 = 7002;

fn rule(method: &str, path: &str, fault: Fault, times: usize) -> FaultRule {
    FaultRule { method: Some(method.into()), path_contains: Some(path.into()), fault, times }
}

async fn push_on(app: &TestApp, run_id: i64, addition: i64) -> entity::push::Model {
    app.pushes(run_id).await.into_iter().find(|p| p.cw_addition_id == addition).expect("push of the addition")
}

/// One customer, Microsoft 365 active users (MAXIMUM) on addition `X`.
async fn one_mapping(app: &TestApp, value: &str) -> (i64, i64) {
    let c = app.customer("acme", "Acme Corp").await;
    app.map_customer(c, 100, "Acme Corp").await;
    app.license(c, PM::Microsoft365, "2025-01-01", None).await;
    let m = app.map_product(c, 100, PM::Microsoft365, U::ActiveUsers, M::Maximum, AGREEMENT, X).await;
    app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-10", value)]).await;
    app.refresh_catalog().await;
    (c, m)
}

async fn retry_code(app: &TestApp, push_id: i64) -> Option<String> {
    let r = service::sync::retry_push(&app.db, app.queue.as_ref(), &app.settings, &app.principal(), &push_id.to_string(), app.now())
        .await
        .expect("retry");
    r.err().map(|e| e[0].code.clone())
}

/// Case 1: an old dead push retried after a newer run succeeded must not overwrite the newer
/// quantity — and a later run must see what ConnectWise holds.
#[tokio::test]
async fn a_retried_old_dead_push_cannot_overwrite_a_newer_quantity() {
    let app = spawn(Backend::Postgres).await;
    let (c, _) = one_mapping(&app, "5").await;
    app.fake.inject(rule("PATCH", &format!("additions/{X}"), Fault::Status(400), 1));
    let first = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let dead = push_on(&app, first.id, X).await;
    assert_eq!(dead.status, "DEAD");
    // The operator corrects the data and runs again: ConnectWise gets 9.
    app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-11", "9")]).await;
    let second = app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert_eq!(app.fake.addition_quantity(X), Some(9));
    // Retry of the old dead push: refused, nothing written, nothing sent.
    let patches = app.fake.patch_count();
    assert_eq!(retry_code(&app, dead.id).await.as_deref(), Some("PUSH_SUPERSEDED"));
    assert_eq!(app.push(dead.id).await.status, "DEAD");
    app.run_all().await;
    assert_eq!((app.fake.addition_quantity(X), app.fake.patch_count()), (Some(9), patches));
    // The newest push could be retried if it were dead; it is not: it succeeded.
    assert_eq!(push_on(&app, second.id, X).await.status, "SUCCEEDED");
}

/// Case 2: a dead push whose customer was unmapped (or whose mapping was deleted) must never PATCH
/// the old company's addition.
#[tokio::test]
async fn a_dead_push_whose_mapping_was_removed_is_never_sent() {
    for unmap in [true, false] {
        let app = spawn(Backend::Postgres).await;
        let (c, mapping) = one_mapping(&app, "5").await;
        app.fake.inject(rule("PATCH", &format!("additions/{X}"), Fault::Status(400), 1));
        let run = app.run_sync("2026-02", false).await;
        app.run_all().await;
        let dead = push_on(&app, run.id, X).await;
        assert_eq!(dead.status, "DEAD");
        if unmap {
            let r = service::customers::unmap_customer(&app.db, &app.principal(), &c.to_string(), true, app.now()).await.expect("unmap");
            assert!(r.is_ok(), "{r:?}");
        } else {
            let r = service::mappings::delete_product_mapping(&app.db, &app.principal(), &mapping.to_string(), app.now())
                .await
                .expect("delete");
            assert!(r.is_ok(), "{r:?}");
        }
        let patches = app.fake.patch_count();
        assert_eq!(retry_code(&app, dead.id).await.as_deref(), Some("MAPPING_REMOVED"), "unmap: {unmap}");
        let outcome = service::sync::retry_failed_pushes(
            &app.db,
            app.queue.as_ref(),
            &app.settings,
            &app.principal(),
            &run.id.to_string(),
            app.now(),
        )
        .await
        .expect("bulk retry")
        .expect("accepted");
        assert_eq!((outcome.retried.len(), outcome.skipped_orphaned), (0, 1));
        app.run_all().await;
        assert_eq!(app.fake.patch_count(), patches, "nothing sent after the removal");
    }
}

/// Case 3: two storage mappings swapped between their additions and swapped back: each addition
/// ends with its own value, because "unchanged" is what ConnectWise holds, not our history.
#[tokio::test]
async fn mappings_swapped_and_swapped_back_leave_each_addition_its_value() {
    let app = spawn(Backend::Postgres).await;
    let c = app.customer("acme", "Acme Corp").await;
    app.map_customer(c, 100, "Acme Corp").await;
    app.license(c, PM::EnterpriseWorkloads, "2025-01-01", None).await;
    // Two additions on one agreement (sequence numbers 1 and 2), mapped through the service.
    app.fake.add_agreement(fake_connectwise::FakeAgreement::new(AGREEMENT, "Storage", 100));
    for (addition, seq) in [(X, 1), (Y, 2)] {
        app.fake.add_addition(fake_connectwise::FakeAddition {
            sequence_number: seq,
            ..fake_connectwise::FakeAddition::new(addition, AGREEMENT, addition * 10, 0)
        });
    }
    app.refresh_catalog().await;
    app.record(c, PM::EnterpriseWorkloads, U::CloudStorage, &[("2026-02-10", "10")]).await;
    app.record(c, PM::EnterpriseWorkloads, U::LtrStorage, &[("2026-02-10", "20")]).await;
    let save = |cloud_seq: i64, ltr_seq: i64| {
        let input = |usage, seq| MappingInput {
            customer_id: c.to_string(),
            product_module: PM::EnterpriseWorkloads,
            usage,
            interval: M::Maximum,
            cw_agreement_id: AGREEMENT,
            cw_sequence_number: seq,
        };
        let inputs = vec![input(U::CloudStorage, cloud_seq), input(U::LtrStorage, ltr_seq)];
        let (db, p, now) = (app.db.clone(), app.principal(), app.now());
        async move {
            let r = service::mappings::save_product_mappings(&db, &p, &c.to_string(), inputs, now).await.expect("save");
            assert!(r.is_ok(), "{r:?}");
        }
    };
    for (cloud, ltr, want_x, want_y) in [(1, 2, 10, 20), (2, 1, 20, 10), (1, 2, 10, 20)] {
        save(cloud, ltr).await;
        app.run_sync("2026-02", false).await;
        app.run_all().await;
        assert_eq!((app.fake.addition_quantity(X), app.fake.addition_quantity(Y)), (Some(want_x), Some(want_y)), "cloud on {cloud}");
    }
}

async fn stale(app: &TestApp, mapping: i64) -> bool {
    app.scalar_i64(&format!("SELECT CAST(CASE WHEN stale THEN 1 ELSE 0 END AS BIGINT) FROM product_mappings WHERE id = {mapping}")).await
        == 1
}

/// Case 4: a correction that arrives while the period's push is pending flags the mapping, and the
/// push's success (with the old snapshot) does not clear it; the next run's success does.
#[tokio::test]
async fn a_correction_while_the_push_is_pending_keeps_the_mapping_stale() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = spawn(backend).await;
        let (c, mapping) = one_mapping(&app, "5").await;
        app.run_sync("2026-02", false).await;
        app.run_due_only_aggregation().await;
        let r = app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-10", "8")]).await;
        assert_eq!(r.stale_mappings, 1, "flagged while its push is pending");
        app.run_all().await;
        assert_eq!(app.fake.addition_quantity(X), Some(5), "the pending push sent its snapshot");
        assert!(stale(&app, mapping).await, "its success does not clear a newer change");
        app.run_sync("2026-02", false).await;
        app.run_all().await;
        assert_eq!(app.fake.addition_quantity(X), Some(8));
        assert!(!stale(&app, mapping).await, "the run that sent the corrected value clears it");
    }
}

/// Case 5: a late sample for a day that had none (the month's last day after a LAST_DAY fallback)
/// flags the mapping.
#[tokio::test]
async fn a_late_sample_for_an_empty_day_flags_the_mapping_stale() {
    let app = spawn(Backend::Postgres).await;
    let c = app.customer("acme", "Acme Corp").await;
    app.map_customer(c, 100, "Acme Corp").await;
    app.license(c, PM::Microsoft365, "2025-01-01", None).await;
    let mapping = app.map_product(c, 100, PM::Microsoft365, U::ActiveUsers, M::LastDay, AGREEMENT, X).await;
    app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-20", "5")]).await;
    app.refresh_catalog().await;
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert!(push_on(&app, run.id, X).await.fallback);
    assert!(!stale(&app, mapping).await);
    let r = app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-28", "7")]).await;
    assert_eq!((r.inserted, r.stale_mappings), (1, 1));
    assert!(stale(&app, mapping).await);
    // A new day of another month, with no push, flags nothing.
    let r = app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-03-01", "7")]).await;
    assert_eq!(r.stale_mappings, 0);
}

/// Case 6: a SUM mapping bills all three storage types: it may not stand beside another Enterprise
/// Workloads mapping of the customer (either order, a second SUM included).
#[tokio::test]
async fn a_sum_mapping_is_exclusive_with_other_enterprise_workloads_mappings() {
    let app = spawn(Backend::Postgres).await;
    let c = app.customer("acme", "Acme Corp").await;
    app.map_customer(c, 100, "Acme Corp").await;
    app.license(c, PM::EnterpriseWorkloads, "2025-01-01", None).await;
    app.fake.add_agreement(fake_connectwise::FakeAgreement::new(AGREEMENT, "Storage", 100));
    for (addition, seq) in [(X, 1), (Y, 2), (7003, 3)] {
        app.fake.add_addition(fake_connectwise::FakeAddition {
            sequence_number: seq,
            ..fake_connectwise::FakeAddition::new(addition, AGREEMENT, addition * 10, 0)
        });
    }
    app.refresh_catalog().await;
    let create = |usage, interval, seq| {
        let input = MappingInput {
            customer_id: c.to_string(),
            product_module: PM::EnterpriseWorkloads,
            usage,
            interval,
            cw_agreement_id: AGREEMENT,
            cw_sequence_number: seq,
        };
        let (db, p, now) = (app.db.clone(), app.principal(), app.now());
        async move { service::mappings::create_product_mapping(&db, &p, input, now).await.expect("create").err().map(|e| e[0].code.clone()) }
    };
    assert_eq!(create(U::CloudStorage, M::Average, 1).await, None);
    assert_eq!(create(U::LtrStorage, M::Sum, 2).await.as_deref(), Some("DUPLICATE_USAGE_MAPPING"), "SUM beside another");
    app.exec(&format!("DELETE FROM product_mappings WHERE customer_id = {c}")).await;
    assert_eq!(create(U::LtrStorage, M::Sum, 2).await, None);
    assert_eq!(create(U::CloudStorage, M::Average, 1).await.as_deref(), Some("DUPLICATE_USAGE_MAPPING"), "another beside SUM");
    assert_eq!(create(U::EarlyDeleteLtrStorage, M::Sum, 3).await.as_deref(), Some("DUPLICATE_USAGE_MAPPING"), "a second SUM");
    assert_eq!(app.scalar_i64(&format!("SELECT COUNT(*) FROM product_mappings WHERE customer_id = {c}")).await, 1);

    // Under concurrency: a SUM and two others racing for the empty customer — one side wins.
    app.exec(&format!("DELETE FROM product_mappings WHERE customer_id = {c}")).await;
    let (a, b, d) = tokio::join!(
        create(U::LtrStorage, M::Sum, 2),
        create(U::CloudStorage, M::Average, 1),
        create(U::EarlyDeleteLtrStorage, M::Maximum, 3)
    );
    let kinds = app.scalar_i64(&format!("SELECT COUNT(*) FROM product_mappings WHERE customer_id = {c} AND interval_method = 'SUM'")).await;
    let all = app.scalar_i64(&format!("SELECT COUNT(*) FROM product_mappings WHERE customer_id = {c}")).await;
    assert!((kinds == 1 && all == 1) || (kinds == 0 && all == 2), "SUM {kinds} of {all}: {a:?} {b:?} {d:?}");
}

/// Case 7: the monthly tick finds a manual run of the period still running: the scheduled run is
/// started by the sweep once that run has ended, with no restart.
#[tokio::test]
async fn a_tick_during_a_running_manual_run_starts_the_scheduled_run_when_it_ends() {
    let app = spawn(Backend::Postgres).await;
    one_mapping(&app, "5").await;
    let manual = app.run_sync("2026-02", false).await;
    let created = engine::schedule::start_scheduled_runs(&app.deps, super::support::period("2026-02")).await.expect("tick");
    assert!(created.is_empty(), "the running manual run blocks it for now");
    assert_eq!(app.cw_settings().await.owed_scheduled_period.as_deref(), Some("2026-02"));
    let report = engine::reconcile::reconcile(&app.deps).await.expect("sweep");
    assert_eq!(report.owed_runs_started, 0, "still running");
    app.run_all().await;
    assert_ne!(app.run(manual.id).await.status, "RUNNING");
    let report = engine::reconcile::reconcile(&app.deps).await.expect("sweep");
    assert_eq!(report.owed_runs_started, 1);
    let scheduled = app.scalar_i64("SELECT COUNT(*) FROM sync_runs WHERE trigger = 'SCHEDULED' AND period = '2026-02'").await;
    assert_eq!(scheduled, 1);
    assert_eq!(app.cw_settings().await.owed_scheduled_period, None);
    let report = engine::reconcile::reconcile(&app.deps).await.expect("sweep");
    assert_eq!(report.owed_runs_started, 0, "exactly once");
}

/// Case 8: a Retry-After longer than RECONCILE_STALE_S while other pushes of the tenant wait: none
/// is treated as lost, no attempt is burnt, nothing dies.
#[tokio::test]
async fn a_long_retry_after_never_makes_waiting_pushes_lost() {
    let app = spawn_with(Backend::Postgres, &[("RECONCILE_STALE_S", "5"), ("CW_TIMEOUT_MS", "1000")]).await;
    let c = app.customer("acme", "Acme Corp").await;
    app.map_customer(c, 100, "Acme Corp").await;
    let additions = [X, Y, 7003];
    for (i, (module, addition)) in [(PM::Microsoft365, X), (PM::Endpoints, Y), (PM::GoogleWorkspace, 7003)].into_iter().enumerate() {
        app.license(c, module, "2025-01-01", None).await;
        app.map_product(c, 100, module, U::ActiveUsers, M::Maximum, AGREEMENT + 10 + i as i64, addition).await;
        app.record(c, module, U::ActiveUsers, &[("2026-02-20", "5")]).await;
    }
    app.refresh_catalog().await;
    app.fake.inject(rule("GET", &format!("additions/{X}"), Fault::RateLimit { retry_after_secs: 120 }, 1));
    let run = app.run_sync("2026-02", false).await;
    app.run_due().await;
    // Past RECONCILE_STALE_S, long before the Retry-After: sweeps find nothing to reclaim.
    for _ in 0..6 {
        app.clock.advance(Duration::from_secs(15));
        let report = engine::reconcile::reconcile(&app.deps).await.expect("sweep");
        assert_eq!(report.pushes_requeued, 0, "{report:?}");
    }
    for p in app.pushes(run.id).await {
        assert!(p.status == "PENDING" || p.status == "FAILED_RETRYING", "{p:?}");
        assert!(p.attempts <= 1, "waiting consumed no attempt: {p:?}");
    }
    app.run_all().await;
    for addition in additions {
        let p = push_on(&app, run.id, addition).await;
        assert_eq!(p.status, "SUCCEEDED", "{p:?}");
        assert_eq!(p.attempts, if addition == X { 2 } else { 1 }, "{p:?}");
    }
    assert!(app.fake.tickets().is_empty());
    assert_eq!(app.audit("push.attempt_lost").await.len(), 0);
}

/// Found by the fault matrix: a 429 answering the read that verifies an unanswered PATCH closed
/// nobody's gate, so the tenant's other pushes kept calling during its Retry-After. Now it pauses
/// the tenant like any 429, and the push waits at least the Retry-After.
#[tokio::test]
async fn a_rate_limited_verifying_read_pauses_the_tenant() {
    let app = spawn_with(Backend::Postgres, &[("CW_TIMEOUT_MS", "1000")]).await;
    one_mapping(&app, "5").await;
    let path = format!("additions/{X}");
    // The first read passes, the PATCH is not answered in time (and not applied), the verifying
    // read is told to wait.
    app.fake.inject(rule("GET", &path, Fault::Delay(Duration::ZERO), 1));
    app.fake.inject(rule("PATCH", &path, Fault::Delay(Duration::from_secs(3)), 1));
    app.fake.inject(rule("GET", &path, Fault::RateLimit { retry_after_secs: 120 }, 1));
    let run = app.run_sync("2026-02", false).await;
    app.run_due().await;
    let p = push_on(&app, run.id, X).await;
    let steps: Vec<String> = app.attempts(p.id).await.iter().map(|a| a.step.clone()).collect();
    assert_eq!(steps, ["GET_ADDITION", "PATCH_QUANTITY", "VERIFY_ADDITION"]);
    assert_eq!(p.status, "FAILED_RETRYING", "{p:?}");
    let next = p.next_attempt_at.expect("scheduled");
    assert!(next >= app.now() + chrono::Duration::seconds(119), "waits the Retry-After: {next} vs {}", app.now());
    let paused = app.cw_settings().await.paused_until.expect("the tenant is paused");
    assert!(paused >= app.now() + chrono::Duration::seconds(119), "{paused}");
    // The gate is closed for the tenant's other calls right away.
    assert!(app.deps.rate.acquire_within(app.tenant_id, Duration::ZERO).await.is_err(), "the gate is closed");
    app.run_all().await;
    let p = push_on(&app, run.id, X).await;
    assert_eq!(p.status, "SUCCEEDED", "{p:?}");
    assert_eq!(app.fake.addition_quantity(X), Some(5));
}

/// Case 9a: two ticket jobs for one dead push create one ticket (the row is claimed first).
#[tokio::test]
async fn two_ticket_jobs_for_one_dead_push_make_one_ticket() {
    let app = spawn(Backend::Postgres).await;
    one_mapping(&app, "5").await;
    app.fake.inject(rule("PATCH", &format!("additions/{X}"), Fault::Status(400), 1));
    let run = app.run_sync("2026-02", false).await;
    app.run_due_only_aggregation().await;
    let p = push_on(&app, run.id, X).await;
    app.execute(sync_core::jobs::Job::Push(sync_core::jobs::PushJob { push_id: p.id })).await.expect("attempt");
    app.queue.clear();
    assert_eq!(app.push(p.id).await.status, "DEAD");
    // Both jobs look for the ticket by externalXRef at the same time; creating it takes a while.
    app.fake.inject(rule("POST", "/service/tickets", Fault::Delay(Duration::from_millis(500)), 2));
    let (a, b) = tokio::join!(engine::ticket::open_ticket(&app.deps, p.id), engine::ticket::open_ticket(&app.deps, p.id));
    a.expect("first job");
    b.expect("second job");
    assert_eq!(app.fake.tickets().len(), 1);
    assert!(app.push(p.id).await.ticket_id.is_some());
}

/// Case 9b: a PATCH answered 2xx with a body we cannot read, or not answered in time, is verified by
/// a GET before the push is judged: applied → `SUCCEEDED` at once (no ticket, no second PATCH); not
/// applied → the push tries again (and never dies of it).
#[tokio::test]
async fn an_applied_but_unreadable_or_late_answer_is_verified_and_succeeds() {
    for fault in [Fault::AppliedButUnreadable, Fault::AppliedThenHang(Duration::from_secs(3))] {
        let app = spawn_with(Backend::Postgres, &[("CW_TIMEOUT_MS", "1000")]).await;
        one_mapping(&app, "5").await;
        app.fake.inject(rule("PATCH", &format!("additions/{X}"), fault.clone(), 1));
        let run = app.run_sync("2026-02", false).await;
        app.run_all().await;
        let p = push_on(&app, run.id, X).await;
        assert_eq!((p.status.as_str(), p.attempts), ("SUCCEEDED", 1), "{fault:?}");
        let steps: Vec<String> = app.attempts(p.id).await.iter().map(|a| a.step.clone()).collect();
        assert_eq!(steps, ["GET_ADDITION", "PATCH_QUANTITY", "VERIFY_ADDITION"], "{fault:?}");
        assert_eq!((app.fake.addition_quantity(X), app.fake.patch_count()), (Some(5), 1), "{fault:?}");
        assert!(app.fake.tickets().is_empty());
    }
}

/// Case 9b, not applied: the garbage came from somewhere else; ConnectWise holds the old quantity,
/// so the push tries again (and never dies of it) — and succeeds.
#[tokio::test]
async fn an_unreadable_success_is_verified_before_the_push_is_judged() {
    let app = spawn(Backend::Postgres).await;
    one_mapping(&app, "5").await;
    let garbage = Fault::Raw { status: 200, headers: vec![], body: "<html>gateway</html>".into() };
    app.fake.inject(rule("PATCH", &format!("additions/{X}"), garbage, 1));
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let p = push_on(&app, run.id, X).await;
    assert_eq!((p.status.as_str(), p.attempts), ("SUCCEEDED", 2));
    let steps: Vec<String> = app.attempts(p.id).await.iter().map(|a| a.step.clone()).collect();
    assert_eq!(steps, ["GET_ADDITION", "PATCH_QUANTITY", "VERIFY_ADDITION", "GET_ADDITION", "PATCH_QUANTITY"]);
    assert!(app.fake.tickets().is_empty());
    assert_eq!(app.fake.addition_quantity(X), Some(5));
}

/// Drift: somebody set the addition by hand after our push; the next push records it.
#[tokio::test]
async fn a_quantity_changed_by_hand_is_recorded_as_drift() {
    let app = spawn(Backend::Postgres).await;
    let (c, _) = one_mapping(&app, "5").await;
    app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert_eq!(app.fake.addition_quantity(X), Some(5));
    app.fake.set_addition_quantity(X, 40);
    app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-11", "6")]).await;
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let p = push_on(&app, run.id, X).await;
    assert_eq!((p.status.as_str(), p.held_quantity, p.drift_from_quantity), ("SUCCEEDED", Some(40), Some(40)));
    assert_eq!(app.audit("push.drift").await.len(), 1);
    assert_eq!(app.fake.addition_quantity(X), Some(6));
    // What ConnectWise holds equals the value: unchanged, nothing sent, no drift.
    let patches = app.fake.patch_count();
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let p = push_on(&app, run.id, X).await;
    assert_eq!((p.status.as_str(), p.skip_reason.as_deref(), p.drift_from_quantity), ("SKIPPED", Some("UNCHANGED"), None));
    assert_eq!(app.fake.patch_count(), patches);
}

/// Sessions of this test's database waiting for a lock (the aggregation held by the test, an input
/// change waiting for the aggregation).
async fn lock_waiters(app: &TestApp) -> i64 {
    app.scalar_i64("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").await
}

/// A correction committed while a run was being aggregated (PostgreSQL) was lost to
/// both sides — the aggregation had read the old samples, and the correction could not see the
/// pushes the aggregation had not committed yet, so the push sent the old value and the mapping was
/// never flagged. Now the correction waits for the aggregation and flags the mapping. The test holds
/// the aggregation right after its snapshot (a lock on `pushes`) to land the correction in that window.
#[tokio::test]
async fn a_correction_during_aggregation_flags_the_mapping_stale() {
    let app = spawn(Backend::Postgres).await;
    let (c, mapping) = one_mapping(&app, "5").await;
    let run = app.run_sync("2026-02", false).await;
    app.queue.clear();
    let blocker = app.db.begin().await.expect("begin");
    blocker.execute_unprepared("LOCK TABLE pushes IN SHARE MODE").await.expect("lock pushes");
    let deps = app.deps.clone();
    let aggregation = tokio::spawn(async move { engine::aggregate::aggregate_run(&deps, run.id).await });
    for i in 0.. {
        assert!(i < 3000, "the aggregation never reached the lock");
        if lock_waiters(&app).await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (db, principal, now) = (app.db.clone(), app.principal(), app.now());
    let correction = tokio::spawn(async move {
        let sample = service::consumption::SampleInput {
            customer_id: Some(c.to_string()),
            customer_external_id: None,
            product_module: PM::Microsoft365,
            usage: U::ActiveUsers,
            day: "2026-02-10".into(),
            value: "8".into(),
        };
        service::consumption::record_consumption(&db, &principal, vec![sample], now).await
    });
    // The correction either completes at once (it did not wait for the run) or waits for it.
    for i in 0.. {
        assert!(i < 3000, "the correction neither finished nor waited");
        if correction.is_finished() || lock_waiters(&app).await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    blocker.commit().await.expect("release");
    aggregation.await.expect("aggregation task").expect("aggregate");
    let recorded = correction.await.expect("correction task").expect("record").expect("accepted");
    assert_eq!(recorded.updated, 1);
    app.run_all().await;
    assert_eq!(app.fake.addition_quantity(X), Some(5), "the run's snapshot predates the correction");
    assert!(stale(&app, mapping).await, "so the mapping is stale");
    app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert_eq!(app.fake.addition_quantity(X), Some(8));
    assert!(!stale(&app, mapping).await);
}
