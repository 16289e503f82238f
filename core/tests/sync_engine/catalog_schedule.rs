//! Catalog refresh into the cache tables, inactive companies, and the monthly schedule.
use chrono::{TimeZone, Utc};
use domain::{IntervalMethod as M, ProductModule as PM, UsageMetric as U};
use fake_connectwise::{FakeAddition, FakeAgreement, FakeBoard, FakeCompany};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use sync_core::engine;

use super::support::{Backend, period, spawn};

#[tokio::test]
async fn catalog_refresh_replaces_the_cache_from_connectwise() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = spawn(backend).await;
        app.fake.add_company(FakeCompany::new(1, "ACME", "Acme Corp"));
        app.fake.add_company(FakeCompany { status: "Inactive".into(), ..FakeCompany::new(2, "OLD", "Old Co") });
        app.fake.add_company(FakeCompany { deleted: true, ..FakeCompany::new(3, "DEL", "Deleted Co") });
        app.fake
            .add_agreement(FakeAgreement { next_invoice_date: Some("2026-04-01T00:00:00Z".into()), ..FakeAgreement::new(10, "MSA", 1) });
        app.fake.add_agreement(FakeAgreement { status: "Cancelled".into(), cancelled_flag: true, ..FakeAgreement::new(11, "Old MSA", 2) });
        app.fake.add_addition(FakeAddition::new(100, 10, 7, 3));
        app.fake.add_addition(FakeAddition {
            sequence_number: 2,
            cancelled_date: Some("2026-01-31T00:00:00Z".into()),
            ..FakeAddition::new(101, 10, 8, 0)
        });
        app.fake.add_addition(FakeAddition::new(102, 11, 9, 1));
        let mut board = FakeBoard::new(2, "Support");
        board.types = vec![(21, "Billing".into(), false)];
        board.subtypes = vec![(22, "Sync".into(), true)];
        app.fake.add_board(board);

        let report = engine::catalog::refresh_catalog(&app.deps, app.tenant_id, "user:alice").await.unwrap();
        assert_eq!((report.companies, report.agreements, report.additions, report.boards), (2, 2, 3, 2), "{backend:?}");
        // Board 1: team + 2 statuses; board 2: team + 2 statuses + type + subtype.
        assert_eq!(report.board_items, 8);
        assert!(report.error.is_none());

        let companies = entity::cw_company::Entity::find().all(&app.db).await.unwrap();
        let mut statuses: Vec<(i64, String)> = companies.iter().map(|c| (c.id, c.status.clone())).collect();
        statuses.sort();
        assert_eq!(statuses, vec![(1, "Active".into()), (2, "Inactive".into())]);
        let agreement = entity::cw_agreement::Entity::find_by_id((app.tenant_id, 10)).one(&app.db).await.unwrap().unwrap();
        assert_eq!((agreement.company_id, agreement.status.as_str()), (1, "Active"));
        assert_eq!(agreement.next_invoice_date, Some(super::support::d("2026-04-01")));
        let cancelled = entity::cw_addition::Entity::find_by_id((app.tenant_id, 101)).one(&app.db).await.unwrap().unwrap();
        assert_eq!(cancelled.cancelled_date, Some(super::support::d("2026-01-31")));
        assert_eq!((cancelled.sequence_number, cancelled.product_id, cancelled.quantity.as_deref()), (2, Some(8), Some("0")));
        let items = entity::cw_board_item::Entity::find().all(&app.db).await.unwrap();
        // ConnectWise's BoardSubType has no defaultFlag: a subtype is never stored as a default.
        assert!(items.iter().any(|i| i.board_id == 2 && i.kind == "SUBTYPE" && i.id == 22 && !i.default_flag));
        assert!(app.cw_settings().await.catalog_refreshed_at.is_some());
        let audit = app.audit("catalog.refreshed").await;
        assert_eq!(audit[0].actor, "user:alice");
        assert_eq!(audit[0].detail.as_ref().unwrap()["additions"], 3);

        // Replace-all: a second refresh mirrors ConnectWise again, without duplicates.
        app.fake.add_company(FakeCompany { deleted: true, ..FakeCompany::new(2, "OLD", "Old Co") });
        let report = engine::catalog::refresh_catalog(&app.deps, app.tenant_id, "user:alice").await.unwrap();
        assert_eq!(report.companies, 1);
        assert_eq!(app.scalar_i64("SELECT COUNT(*) FROM cw_additions").await, 3);
    }
}

#[tokio::test]
async fn inactive_company_kills_the_push_without_touching_the_addition() {
    let app = spawn(Backend::Postgres).await;
    let c = app.customer("acme", "Acme").await;
    app.map_customer(c, 100, "Acme").await;
    app.license(c, PM::Microsoft365, "2025-01-01", None).await;
    app.map_product(c, 100, PM::Microsoft365, U::ActiveUsers, M::Maximum, 1, 11).await;
    app.record(c, PM::Microsoft365, U::ActiveUsers, &[("2026-02-10", "5")]).await;
    app.fake.set_company_status(100, "Inactive");
    app.refresh_catalog().await;
    let run = app.run_sync("2026-02", false).await;
    app.run_all().await;
    let push = &app.pushes(run.id).await[0];
    assert_eq!((push.status.as_str(), push.last_error_code.as_deref()), ("DEAD", Some("COMPANY_NOT_ACTIVE")));
    assert_eq!(app.fake.patch_count(), 0);
    assert!(app.fake.requests().iter().all(|r| !r.path.contains("/additions/")), "no call to the addition");
    assert_eq!(app.fake.tickets().len(), 1, "so someone looks at it");
    assert_eq!(app.run(run.id).await.status, "FAILED");
}

#[tokio::test]
async fn scheduled_runs_are_created_once_per_tenant_and_period() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        scheduled_runs(backend).await;
    }
}

async fn scheduled_runs(backend: Backend) {
    let app = spawn(backend).await;
    // A second tenant with sync on, a third with sync off.
    for (key, enabled) in [("t2", true), ("t3", false)] {
        let t = entity::tenant::ActiveModel { external_id: Set(key.into()), created_at: Set(app.now()), ..Default::default() }
            .insert(&app.db)
            .await
            .unwrap();
        let mut s = sea_orm::IntoActiveModel::into_active_model(app.cw_settings().await).reset_all();
        s.tenant_id = Set(t.id);
        s.consumption_sync_enabled = Set(enabled);
        entity::cw_settings::Entity::insert(s).exec_without_returning(&app.db).await.unwrap();
    }
    let feb = period("2026-02");
    let created = engine::schedule::start_scheduled_runs(&app.deps, feb).await.unwrap();
    assert_eq!(created.len(), 2);
    assert_eq!(app.queue.len(), 2);
    assert!(engine::schedule::start_scheduled_runs(&app.deps, feb).await.unwrap().is_empty(), "exactly once");
    // Many workers firing the same tick at once still create one run per tenant.
    let (a, b) = tokio::join!(
        engine::schedule::start_scheduled_runs(&app.deps, period("2026-01")),
        engine::schedule::start_scheduled_runs(&app.deps, period("2026-01"))
    );
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 2);
    let run = app.run(created[0]).await;
    assert_eq!((run.trigger.as_str(), run.status.as_str(), run.requested_by.as_str()), ("SCHEDULED", "RUNNING", "system"));
    assert_eq!(app.audit("sync_run.started").await.len(), 4);

    // Catch-up: before this month's tick nothing; after it the latest closed month (already there).
    let before_tick = Utc.with_ymd_and_hms(2026, 3, 2, 5, 59, 59).unwrap();
    app.clock.set(before_tick);
    assert!(engine::schedule::catch_up(&app.deps).await.unwrap().is_empty());
    app.clock.set(super::support::start_time());
    assert!(engine::schedule::catch_up(&app.deps).await.unwrap().is_empty());
    // A worker that was down over the April tick creates March's runs when it starts.
    app.clock.set(Utc.with_ymd_and_hms(2026, 4, 5, 12, 0, 0).unwrap());
    let caught = engine::schedule::catch_up(&app.deps).await.unwrap();
    assert_eq!(caught.len(), 2);
    assert_eq!(app.run(caught[0]).await.period, "2026-03");
    assert!(engine::schedule::catch_up(&app.deps).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_catalog_refresh_is_queued_once_until_its_job_starts() {
    use sync_core::service::catalog::request_refresh;
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = spawn(backend).await;
        let (p, now) = (app.principal(), app.now());
        let first = request_refresh(&app.db, app.queue.as_ref(), &p, now).await.unwrap().unwrap();
        assert!(!first.already_queued, "{backend:?}");
        let second = request_refresh(&app.db, app.queue.as_ref(), &p, now + chrono::Duration::seconds(5)).await.unwrap().unwrap();
        assert!(second.already_queued, "{backend:?}");
        assert_eq!(second.requested_at, first.requested_at, "{backend:?}: the queued one is returned");
        assert_eq!(app.queue.len(), 1, "{backend:?}");
        // A request older than the stale limit (its job was lost) is taken over.
        let stale = now + sync_core::service::catalog::REFRESH_REQUEST_STALE + chrono::Duration::seconds(1);
        assert!(!request_refresh(&app.db, app.queue.as_ref(), &p, stale).await.unwrap().unwrap().already_queued, "{backend:?}");
        assert_eq!(app.queue.len(), 2, "{backend:?}");
        // The job starting frees the slot.
        engine::catalog::refresh_catalog(&app.deps, app.tenant_id, "test").await.unwrap();
        let after = stale + chrono::Duration::seconds(1);
        assert!(!request_refresh(&app.db, app.queue.as_ref(), &p, after).await.unwrap().unwrap().already_queued, "{backend:?}");
        assert_eq!(app.queue.len(), 3, "{backend:?}");
    }
}
