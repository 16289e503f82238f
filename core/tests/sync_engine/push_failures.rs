//! Push attempts under failure: 429, 5xx, 404, 401, exhausted budgets, lost workers, manual retries.
use std::time::Duration;

use domain::{IntervalMethod as M, ProductModule as PM, UsageMetric as U};
use fake_connectwise::{Fault, FaultRule};
use sync_core::engine;

use super::support::{Backend, TestApp, spawn, spawn_with};

const A1: i64 = 6001;
const A2: i64 = 6002;
const A3: i64 = 6003;

/// One customer with three Microsoft 365/Endpoints/Google mappings (quantities 5, 7, 9).
async fn three_mappings(app: &TestApp) -> i64 {
    let c = app.customer("acme", "Acme Corp").await;
    app.map_customer(c, 100, "Acme Corp").await;
    for (module, addition, value) in [(PM::Microsoft365, A1, "5"), (PM::Endpoints, A2, "7"), (PM::GoogleWorkspace, A3, "9")] {
        app.license(c, module, "2025-01-01", None).await;
        app.map_product(c, 100, module, U::ActiveUsers, M::Maximum, addition - 1000, addition).await;
        app.record(c, module, U::ActiveUsers, &[("2026-02-20", value)]).await;
    }
    app.refresh_catalog().await;
    c
}

fn rule(method: &str, path: &str, fault: Fault, times: usize) -> FaultRule {
    FaultRule { method: Some(method.into()), path_contains: Some(path.into()), fault, times }
}

async fn push_for(app: &TestApp, run_id: i64, addition: i64) -> entity::push::Model {
    app.pushes(run_id).await.into_iter().find(|p| p.cw_addition_id == addition).unwrap()
}

#[tokio::test]
async fn rate_limit_pauses_the_tenant_and_retries_after_retry_after() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        rate_limit_pauses_the_tenant_and_retries_after_retry_after_on(backend).await;
    }
}

async fn rate_limit_pauses_the_tenant_and_retries_after_retry_after_on(backend: Backend) {
    let app = spawn(backend).await;
    three_mappings(&app).await;
    app.fake.inject(rule("GET", &format!("additions/{A1}"), Fault::RateLimit { retry_after_secs: 2 }, 1));
    let run = app.run_sync("2026-02", false).await;
    let t0 = app.now();
    app.run_due().await;

    let p1 = push_for(&app, run.id, A1).await;
    assert_eq!(p1.status, "FAILED_RETRYING");
    assert_eq!(p1.last_error_code.as_deref(), Some("CW_RATE_LIMITED"));
    assert_eq!(p1.last_http_status, Some(429));
    assert!(p1.next_attempt_at.unwrap() >= t0 + chrono::Duration::seconds(2), "{:?}", p1.next_attempt_at);
    let paused = app.cw_settings().await.paused_until.expect("tenant paused");
    assert!(paused >= t0 + chrono::Duration::seconds(2));
    // The tenant's other pushes wait for the pause without spending an attempt or calling: waiting
    // is not failing, they stay PENDING.
    let p2 = push_for(&app, run.id, A2).await;
    assert_eq!((p2.status.as_str(), p2.attempts), ("PENDING", 0));
    assert_eq!(p2.next_attempt_at, Some(paused));
    assert_eq!(app.fake.request_count(), 1);
    assert_eq!(app.audit("push.waiting").await.len(), 2);
    let retry = app.audit("push.retry_scheduled").await;
    assert_eq!(retry[0].detail.as_ref().unwrap()["httpStatus"], 429);

    app.run_all().await;
    let p1 = push_for(&app, run.id, A1).await;
    assert_eq!((p1.status.as_str(), p1.attempts), ("SUCCEEDED", 2));
    assert_eq!(app.fake.addition_quantity(A1), Some(5));
    assert_eq!(app.run(run.id).await.status, "SUCCEEDED");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_succeed() {
    let app = spawn(Backend::Postgres).await;
    three_mappings(&app).await;
    app.fake.inject(rule("GET", &format!("additions/{A1}"), Fault::Status(503), 2));
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let p = push_for(&app, run.id, A1).await;
    assert_eq!((p.status.as_str(), p.attempts), ("SUCCEEDED", 3));
    assert_eq!(p.last_error_code, None);
    let attempts = app.attempts(p.id).await;
    let seen: Vec<(i32, &str, Option<i32>, &str)> =
        attempts.iter().map(|a| (a.attempt_no, a.step.as_str(), a.http_status, a.outcome.as_str())).collect();
    assert_eq!(
        seen,
        [
            (1, "GET_ADDITION", Some(503), "ERROR"),
            (2, "GET_ADDITION", Some(503), "ERROR"),
            (3, "GET_ADDITION", Some(200), "OK"),
            (3, "PATCH_QUANTITY", Some(200), "OK"),
        ]
    );
    assert_eq!(attempts[0].error_code.as_deref(), Some("CW_SERVER_ERROR"));
    assert!(!attempts[0].error_message.as_deref().unwrap_or("").contains("priv"), "no credentials in messages");
    assert_eq!(app.audit("push.retry_scheduled").await.len(), 2);
    assert_eq!(app.fake.addition_quantity(A1), Some(5));
}

#[tokio::test]
async fn quantity_mismatch_is_retried() {
    let app = spawn(Backend::Postgres).await;
    three_mappings(&app).await;
    let body = serde_json::json!({"id": A1, "product": {"id": A1 * 10}, "quantity": 999}).to_string();
    app.fake.inject(rule("PATCH", &format!("additions/{A1}"), Fault::Raw { status: 200, headers: vec![], body }, 1));
    let run = app.run_sync("2026-02", false).await;
    app.run_due().await;
    let p = push_for(&app, run.id, A1).await;
    assert_eq!((p.status.as_str(), p.last_error_code.as_deref()), ("FAILED_RETRYING", Some("QUANTITY_MISMATCH")));
    app.run_all().await;
    assert_eq!(push_for(&app, run.id, A1).await.status, "SUCCEEDED");
}

#[tokio::test]
async fn missing_addition_dies_with_exactly_one_ticket() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        missing_addition_dies_with_exactly_one_ticket_on(backend).await;
    }
}

async fn missing_addition_dies_with_exactly_one_ticket_on(backend: Backend) {
    let app = spawn(backend).await;
    three_mappings(&app).await;
    app.fake.remove_addition(A1 - 1000, A1);
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;

    let p = push_for(&app, run.id, A1).await;
    assert_eq!((p.status.as_str(), p.last_error_code.as_deref(), p.last_http_status), ("DEAD", Some("ADDITION_NOT_FOUND"), Some(404)));
    assert!(p.finished_at.is_some());
    let tickets = app.fake.tickets();
    assert_eq!(tickets.len(), 1);
    let t = &tickets[0];
    assert_eq!(t["externalXRef"], p.id.to_string());
    assert_eq!(t["company"]["id"], 100);
    assert_eq!(t["board"]["id"], 1);
    assert_eq!(t["team"]["id"], 11);
    let summary = t["summary"].as_str().unwrap();
    assert!(summary.chars().count() <= 100);
    assert!(
        summary.contains("Acme Corp")
            && summary.contains("MICROSOFT_365")
            && summary.contains("ACTIVE_USERS")
            && summary.contains("2026-02"),
        "{summary}"
    );
    let description = t["initialDescription"].as_str().unwrap();
    assert!(description.contains("ADDITION_NOT_FOUND") && description.contains(&A1.to_string()) && description.contains("retryPush"));
    let cw_ticket = t["id"].as_i64().unwrap();
    assert_eq!(app.push(p.id).await.ticket_id, Some(cw_ticket));
    assert_eq!(app.run(run.id).await.status, "PARTIALLY_FAILED");
    assert_eq!(app.audit("ticket.created").await.len(), 1);

    // Twice more: once as is, once as if the worker died after creating but before storing.
    engine::ticket::open_ticket(&app.deps, p.id).await.unwrap();
    app.exec(&format!(
        "UPDATE tickets SET cw_ticket_id = NULL, status = 'PENDING' WHERE push_id = {0}; UPDATE pushes SET ticket_id = NULL WHERE id = {0}",
        p.id
    ))
    .await;
    engine::ticket::open_ticket(&app.deps, p.id).await.unwrap();
    assert_eq!(app.fake.tickets().len(), 1, "never two tickets for one push");
    assert_eq!(app.push(p.id).await.ticket_id, Some(cw_ticket));
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM tickets").await, 1);

    // A manual retry after fixing the addition succeeds, with a fresh budget, and reopens the run.
    app.fake.add_addition(fake_connectwise::FakeAddition::new(A1, A1 - 1000, A1 * 10, 1));
    let retried =
        sync_core::service::sync::retry_push(&app.db, app.queue.as_ref(), &app.settings, &app.principal(), &p.id.to_string(), app.now())
            .await
            .unwrap()
            .expect("retried");
    assert_eq!((retried.status.as_str(), retried.max_attempts), ("PENDING", retried.attempts + 5));
    assert_eq!(app.run(run.id).await.status, "RUNNING");
    let audit = app.audit("push.retried").await;
    assert_eq!(audit[0].actor, "user:alice");
    app.run_all().await;
    assert_eq!(push_for(&app, run.id, A1).await.status, "SUCCEEDED");
    assert_eq!(app.run(run.id).await.status, "SUCCEEDED");
    assert_eq!(app.fake.tickets().len(), 1);

    // Only DEAD/FAILED_RETRYING pushes can be retried; unknown ids are NOT_FOUND.
    let err =
        sync_core::service::sync::retry_push(&app.db, app.queue.as_ref(), &app.settings, &app.principal(), &p.id.to_string(), app.now())
            .await
            .unwrap()
            .unwrap_err();
    assert_eq!(err[0].code, "PUSH_NOT_RETRYABLE");
    for bad in ["abc", "999999", "-1"] {
        let err = sync_core::service::sync::retry_push(&app.db, app.queue.as_ref(), &app.settings, &app.principal(), bad, app.now())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err[0].code, "NOT_FOUND", "{bad}");
    }
}

#[tokio::test]
async fn concurrent_retries_of_one_push_have_one_winner() {
    let app = spawn(Backend::Postgres).await;
    three_mappings(&app).await;
    app.fake.remove_addition(A1 - 1000, A1);
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let p = push_for(&app, run.id, A1).await;
    assert_eq!(p.status, "DEAD");
    let id = p.id.to_string();
    let principal = app.principal();
    let (a, b) = tokio::join!(
        sync_core::service::sync::retry_push(&app.db, app.queue.as_ref(), &app.settings, &principal, &id, app.now()),
        sync_core::service::sync::retry_push(&app.db, app.queue.as_ref(), &app.settings, &principal, &id, app.now()),
    );
    let results = [a.unwrap(), b.unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(loser[0].code, "PUSH_NOT_RETRYABLE");
    assert_eq!(app.audit("push.retried").await.len(), 1);
}

#[tokio::test]
async fn auth_failure_trips_the_breaker_and_kills_the_run_without_more_calls() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        auth_failure_trips_the_breaker_and_kills_the_run_without_more_calls_on(backend).await;
    }
}

async fn auth_failure_trips_the_breaker_and_kills_the_run_without_more_calls_on(backend: Backend) {
    let app = spawn(backend).await;
    three_mappings(&app).await;
    app.configure_cw("wrong-key").await;
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    assert_eq!(app.fake.request_count(), 1, "one 401, then nothing");
    let pushes = app.pushes(run.id).await;
    assert!(pushes.iter().all(|p| p.status == "DEAD" && p.last_error_code.as_deref() == Some("CW_AUTH_FAILED")), "{pushes:?}");
    assert!(app.fake.tickets().is_empty(), "no tickets for auth failures");
    assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM tickets").await, 0);
    let s = app.cw_settings().await;
    assert!(s.breaker_open && s.breaker_opened_at.is_some() && s.breaker_reason.is_some());
    assert!(!s.breaker_reason.unwrap().contains("wrong-key"));
    assert_eq!(app.audit("cw_settings.breaker_opened").await.len(), 1);
    assert_eq!(app.audit("push.dead").await.len(), 3);
    assert_eq!(app.run(run.id).await.status, "FAILED");

    // While the breaker is open a retried push dies at once, without a call.
    let retried = sync_core::service::sync::retry_failed_pushes(
        &app.db,
        app.queue.as_ref(),
        &app.settings,
        &app.principal(),
        &run.id.to_string(),
        app.now(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(retried.retried.len(), 3);
    assert_eq!(app.audit("push.retried").await.len(), 3);
    app.run_all().await;
    assert_eq!(app.fake.request_count(), 1);
    assert_eq!(app.run(run.id).await.status, "FAILED");
}

#[tokio::test]
async fn exhausted_budget_goes_dead_with_the_last_error() {
    let app = spawn_with(Backend::Postgres, &[("PUSH_MAX_ATTEMPTS", "3")]).await;
    three_mappings(&app).await;
    app.fake.inject(rule("GET", &format!("additions/{A1}"), Fault::Status(502), usize::MAX));
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let p = push_for(&app, run.id, A1).await;
    assert_eq!((p.status.as_str(), p.attempts, p.last_error_code.as_deref()), ("DEAD", 3, Some("CW_SERVER_ERROR")));
    assert_eq!(app.attempts(p.id).await.len(), 3);
    assert_eq!(app.fake.tickets().len(), 1);
    assert_eq!(app.run(run.id).await.status, "PARTIALLY_FAILED");
}

#[tokio::test]
async fn reconciliation_recovers_lost_jobs_and_lost_attempts() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        reconciliation_recovers_lost_jobs_and_lost_attempts_on(backend).await;
    }
}

async fn reconciliation_recovers_lost_jobs_and_lost_attempts_on(backend: Backend) {
    let app = spawn(backend).await;
    let customer = three_mappings(&app).await;
    let run = app.run_sync("2026-02", false).await;
    // The aggregation job is lost (e.g. Redis flushed).
    app.queue.clear();
    let report = engine::reconcile::reconcile(&app.deps).await.unwrap();
    assert_eq!(report, engine::ReconcileReport::default(), "nothing is stale yet");
    app.clock.advance(Duration::from_secs(61));
    let report = engine::reconcile::reconcile(&app.deps).await.unwrap();
    assert_eq!((report.runs_requeued, report.pushes_requeued), (1, 0));
    app.run_due_only_aggregation().await;
    // …and then the push jobs are lost too.
    app.queue.clear();
    app.clock.advance(Duration::from_secs(61));
    let report = engine::reconcile::reconcile(&app.deps).await.unwrap();
    assert_eq!((report.runs_requeued, report.pushes_requeued), (0, 3));
    app.run_all().await;
    assert_eq!(app.run(run.id).await.status, "SUCCEEDED");
    assert_eq!(app.fake.patch_count(), 3);

    // A worker dies in the middle of an attempt: the push stays RUNNING until the sweep.
    app.record(customer, PM::Microsoft365, U::ActiveUsers, &[("2026-02-21", "6")]).await;
    let second = app.run_sync("2026-02", false).await;
    app.run_due_only_aggregation().await;
    app.queue.clear();
    let p = push_for(&app, second.id, A1).await;
    assert_eq!(p.status, "PENDING");
    app.exec(&format!("UPDATE pushes SET status = 'RUNNING', attempts = 1 WHERE id = {}", p.id)).await;
    app.clock.advance(Duration::from_secs(61));
    let report = engine::reconcile::reconcile(&app.deps).await.unwrap();
    // The lost attempt, and the two other pushes of the run whose jobs were lost (every push reads
    // its addition: whether ConnectWise already holds a quantity is its answer, not our history).
    assert_eq!(report.pushes_requeued, 3);
    let lost = app.push(p.id).await;
    assert_eq!((lost.status.as_str(), lost.last_error_code.as_deref()), ("FAILED_RETRYING", Some("ATTEMPT_LOST")));
    assert_eq!(app.audit("push.attempt_lost").await.len(), 1);
    app.run_all().await;
    let done = app.push(p.id).await;
    assert_eq!((done.status.as_str(), done.attempts), ("SUCCEEDED", 2));
    assert_eq!(app.fake.addition_quantity(A1), Some(6));
    assert_eq!(app.run(second.id).await.status, "SUCCEEDED");

    // A run left RUNNING with only final pushes is finished by the sweep.
    app.exec(&format!("UPDATE sync_runs SET status = 'RUNNING', finished_at = NULL WHERE id = {}", second.id)).await;
    let report = engine::reconcile::reconcile(&app.deps).await.unwrap();
    assert_eq!(report.runs_finished, 1);
    assert_eq!(app.run(second.id).await.status, "SUCCEEDED");
}

#[tokio::test]
async fn removed_mappings_cancel_their_pushes() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        removed_mappings_cancel_their_pushes_on(backend).await;
    }
}

async fn removed_mappings_cancel_their_pushes_on(backend: Backend) {
    let app = spawn(backend).await;
    three_mappings(&app).await;
    let run = app.run_sync("2026-02", false).await;
    app.run_due_only_aggregation().await;
    let p = push_for(&app, run.id, A1).await;
    let mapping = p.product_mapping_id.unwrap();
    let txn = sea_orm::TransactionTrait::begin(&app.db).await.unwrap();
    let n = sync_core::service::sync::cancel_pushes_for_mapping(&txn, app.now(), app.tenant_id, &[mapping], "user:alice").await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(n, 1);
    let cancelled = app.push(p.id).await;
    assert_eq!(
        (cancelled.status.as_str(), cancelled.last_error_code.as_deref(), cancelled.skip_reason),
        ("CANCELLED", Some("MAPPING_REMOVED"), None)
    );
    assert_eq!(app.audit("push.cancelled").await[0].actor, "user:alice");
    app.run_all().await;
    assert_eq!(app.fake.addition_quantity(A1), Some(1), "a cancelled push is never sent");
    assert_eq!(app.run(run.id).await.status, "SUCCEEDED");
}
