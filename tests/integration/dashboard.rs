//! The dashboard page and what it reads: `systemStatus`, `pushCounts`, retries as an operator and
//! as a viewer. (The page itself is driven in a real browser by `tests/browser`.)
use integration_tests::*;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

/// The seeded run with a dead push (shared with the browser test and `metrics`).
#[path = "../browser/seed.rs"]
pub mod seed;

const STATUS: &str = "{ systemStatus { workers { name startedAt lastSeenAt alive } workersAlive connectWiseConfigured consumptionSyncEnabled \
    connectionBroken connectionBrokenReason connectionBrokenSince pausedUntil nextScheduledRunAt staleMappings queueDepth { queue waiting } } }";

async fn status(app: &TestApp, tenant: &str) -> Value {
    app.gql_ok(&token(tenant, &["viewer"]), STATUS, json!({})).await["systemStatus"].clone()
}

async fn sql(app: &TestApp, statement: &str) {
    app.db.execute_unprepared(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn the_dashboard_page_and_its_assets_are_served_without_a_token() {
    let app = spawn_app().await;
    let res = app.http.get(format!("{}/dashboard", app.address)).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let csp = res.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = res.text().await.expect("body");
    for needle in ["Consumption Sync", "/dashboard/app.js", "/dashboard/app.css", "id=\"token-input\"", "id=\"status-tabs\""] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    for (path, kind) in [("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")] {
        let res = app.http.get(format!("{}{path}", app.address)).send().await.expect("get");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(res.text().await.expect("body").len() > 1000, "{path} is not empty");
    }
    // The script never parses data as HTML.
    let js = app.http.get(format!("{}/dashboard/app.js", app.address)).send().await.expect("get").text().await.expect("js");
    assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML") && !js.contains("document.write"));
    // A trailing slash redirects to the page.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let res = no_redirect.get(format!("{}/dashboard/", app.address)).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 308);
    // The bare address leads to the dashboard.
    let res = no_redirect.get(format!("{}/", app.address)).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 307);
    assert_eq!(res.headers().get("location").and_then(|v| v.to_str().ok()), Some("/dashboard"));
    app.shutdown().await;
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// GraphiQL comes from the binary, under a CSP without inline script, its files revalidated by
/// ETag; with introspection off it is not served. (tests/browser runs it offline.)
#[tokio::test]
async fn graphiql_is_served_from_the_binary_under_a_csp() {
    let app = spawn_app().await;
    let res = app.http.get(format!("{}/graphql", app.address)).header("accept", "text/html").send().await.expect("get");
    assert_eq!(res.status().as_u16(), 200);
    assert!(header(&res, "content-type").starts_with("text/html"));
    let csp = header(&res, "content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'") && !csp.contains("unsafe"), "{csp}");
    let html = res.text().await.expect("body");
    assert!(!html.contains("unpkg") && !html.contains("https://"), "the page loads nothing from elsewhere");
    for (path, kind, min_len) in [
        ("/graphiql/start.js", "text/javascript", 1_000),
        ("/graphiql/page.css", "text/css", 500),
        ("/graphiql/vendor/react.production.min.js", "text/javascript", 5_000),
        ("/graphiql/vendor/react-dom.production.min.js", "text/javascript", 100_000),
        ("/graphiql/vendor/graphiql.min.js", "text/javascript", 500_000),
        ("/graphiql/vendor/graphiql.min.css", "text/css", 100_000),
    ] {
        assert!(html.contains(path), "the page does not load {path}");
        let res = app.http.get(format!("{}{path}", app.address)).send().await.expect("get");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        assert!(header(&res, "content-type").starts_with(kind), "{path}");
        let etag = header(&res, "etag");
        assert!(etag.len() == 66 && etag.starts_with('"'), "{path}: a SHA-256 ETag, got {etag:?}");
        assert!(res.bytes().await.expect("body").len() > min_len, "{path}");
        let again = app.http.get(format!("{}{path}", app.address)).header("if-none-match", &etag).send().await.expect("get");
        assert_eq!(again.status().as_u16(), 304, "{path}: revalidated");
    }
    let res = app.http.get(format!("{}/graphiql/vendor/nope.js", app.address)).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 404);
    // A query over GET still answers JSON, whatever the browser accepts.
    let res = app.http.get(format!("{}/graphql?query=%7B__typename%7D", app.address)).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 401, "a query without a token");
    app.shutdown().await;

    let app = spawn_app_with(AppOptions { env: vec![("GRAPHQL_INTROSPECTION".into(), "false".into())], ..Default::default() }).await;
    for path in ["/graphql", "/graphiql/start.js", "/graphiql/vendor/graphiql.min.js"] {
        let res = app.http.get(format!("{}{path}", app.address)).header("accept", "text/html").send().await.expect("get");
        assert_eq!(res.status().as_u16(), 404, "{path} with GRAPHQL_INTROSPECTION=false");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn system_status_reports_workers_connection_stale_mappings_and_the_next_run() {
    let app = spawn_app_with(AppOptions { env: vec![("SYNC_CRON".into(), "0 30 7 3 * *".into())], ..Default::default() }).await;
    // Nothing configured, no worker.
    let s = status(&app, "acme").await;
    assert_eq!(s["workersAlive"], 0, "{s}");
    assert_eq!(s["workers"], json!([]));
    assert_eq!((s["connectWiseConfigured"].clone(), s["connectionBroken"].clone()), (json!(false), json!(false)));
    assert_eq!(s["staleMappings"], 0);
    assert!(s["queueDepth"].as_array().is_some_and(|q| q.iter().all(|d| d["waiting"].is_number())), "{s}");
    // The next tick of SYNC_CRON, in the future.
    let next = chrono::DateTime::parse_from_rfc3339(s["nextScheduledRunAt"].as_str().expect("next run")).expect("RFC 3339");
    let next = next.with_timezone(&chrono::Utc);
    assert!(next > app.now());
    assert_eq!(next.format("%d %H:%M:%S").to_string(), "03 07:30:00");

    // One live heartbeat and one that stopped two minutes ago.
    let now = app.sql_now();
    sql(&app, &format!("INSERT INTO worker_heartbeats (worker_name, started_at, last_seen_at) VALUES ('host-a:101', {now} - interval '1 hour', {now} - interval '3 seconds')")).await;
    sql(&app, &format!("INSERT INTO worker_heartbeats (worker_name, started_at, last_seen_at) VALUES ('host-b:202', {now} - interval '2 hours', {now} - interval '2 minutes')")).await;
    let s = status(&app, "acme").await;
    assert_eq!(s["workersAlive"], 1, "{s}");
    assert_eq!(s["workers"].as_array().map(Vec::len), Some(2));
    // Labels, not the deployment's host names and process ids.
    assert_eq!((s["workers"][0]["name"].clone(), s["workers"][0]["alive"].clone()), (json!("worker 1"), json!(true)));
    assert_eq!((s["workers"][1]["name"].clone(), s["workers"][1]["alive"].clone()), (json!("worker 2"), json!(false)));
    assert!(!s.to_string().contains("host-a") && !s.to_string().contains("101"), "{s}");

    // The tenant's breaker opens; another tenant's status is untouched.
    let seeded = seed::seed_run_with_dead_push(&app, "acme").await;
    let s = status(&app, "acme").await;
    assert_eq!((s["connectWiseConfigured"].clone(), s["consumptionSyncEnabled"].clone()), (json!(true), json!(true)), "{s}");
    assert_eq!(s["connectionBroken"], false);
    sql(
        &app,
        &format!(
            "UPDATE cw_settings SET breaker_open = TRUE, breaker_reason = 'ConnectWise answered HTTP 401: invalid API member', \
             breaker_opened_at = {now} - interval '5 minutes', paused_until = {now} + interval '10 minutes' WHERE tenant_id = {}",
            seeded.tenant_id,
            now = app.sql_now()
        ),
    )
    .await;
    sql(&app, &format!("UPDATE product_mappings SET stale = TRUE WHERE id IN ({}, {})", seeded.mapping_ids[0], seeded.mapping_ids[1]))
        .await;
    let s = status(&app, "acme").await;
    assert_eq!(s["connectionBroken"], true, "{s}");
    assert_eq!(s["connectionBrokenReason"], "ConnectWise answered HTTP 401: invalid API member");
    assert!(s["connectionBrokenSince"].is_string() && s["pausedUntil"].is_string(), "{s}");
    assert_eq!(s["staleMappings"], 2);
    let other = status(&app, "globex").await;
    assert_eq!((other["connectionBroken"].clone(), other["staleMappings"].clone()), (json!(false), json!(0)), "{other}");
    assert_eq!(other["workersAlive"], 1, "workers are shared by every tenant");

    // An integration token may not read it.
    let body = app.gql(&token("acme", &["integration"]), STATUS, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn push_counts_follow_the_filters_and_the_tenant() {
    let app = spawn_app().await;
    let seeded = seed::seed_run_with_dead_push(&app, "acme").await;
    let q = "query($r: ID, $p: Period, $c: ID) { pushCounts(syncRunId: $r, period: $p, customerId: $c) { total pending running succeeded failedRetrying dead skipped cancelled } }";
    let viewer = token("acme", &["viewer"]);
    let all = app.gql_ok(&viewer, q, json!({})).await["pushCounts"].clone();
    assert_eq!(
        all,
        json!({"total": 4, "pending": 0, "running": 0, "succeeded": 2, "failedRetrying": 0, "dead": 1, "skipped": 1, "cancelled": 0})
    );
    let by_run = app.gql_ok(&viewer, q, json!({"r": seeded.run, "p": seeded.period, "c": seeded.customer_id})).await;
    assert_eq!(by_run["pushCounts"], all);
    let none = app.gql_ok(&viewer, q, json!({"r": "999999"})).await;
    assert_eq!(none["pushCounts"]["total"], 0);
    let malformed = app.gql_ok(&viewer, q, json!({"c": "not-an-id"})).await;
    assert_eq!(malformed["pushCounts"]["total"], 0);
    let other = app.gql_ok(&token("globex", &["viewer"]), q, json!({})).await;
    assert_eq!(other["pushCounts"]["total"], 0, "another tenant sees none of them");
    app.shutdown().await;
}

const RETRY: &str = "mutation($id: ID!) { retryPush(id: $id) { push { id status attempts } userErrors { code field message } } }";

#[tokio::test]
async fn retrying_a_succeeded_push_is_refused_and_viewers_may_not_retry() {
    let app = spawn_app().await;
    let seeded = seed::seed_run_with_dead_push(&app, "acme").await;
    let operator = token("acme", &["operator"]);
    let r = app.gql_ok(&operator, RETRY, json!({"id": seeded.succeeded_push})).await["retryPush"].clone();
    assert_eq!(r["push"], Value::Null, "{r}");
    assert_eq!(r["userErrors"][0]["code"], "PUSH_NOT_RETRYABLE", "{r}");

    // A viewer gets FORBIDDEN and nothing changes.
    let body = app.gql(&token("acme", &["viewer"]), RETRY, json!({"id": seeded.dead_push})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");
    let bulk = app
        .gql(
            &token("acme", &["viewer"]),
            "mutation($r: ID!) { retryFailedPushes(syncRunId: $r) { pushes { id } userErrors { code } } }",
            json!({"r": seeded.run}),
        )
        .await;
    assert_eq!(bulk["errors"][0]["extensions"]["code"], "FORBIDDEN", "{bulk}");
    let push = app
        .gql_ok(
            &operator,
            "query($id: ID!) { push(id: $id) { status attempts ticketId attemptHistory { attempt } } }",
            json!({"id": seeded.dead_push}),
        )
        .await;
    assert_eq!(push["push"]["status"], "DEAD");
    assert_eq!(push["push"]["ticketId"], 7342);
    assert_eq!(push["push"]["attemptHistory"].as_array().map(Vec::len), Some(16));

    // The operator's retry of the dead push is accepted (no worker here: it stays queued).
    let r = app.gql_ok(&operator, RETRY, json!({"id": seeded.dead_push})).await["retryPush"].clone();
    assert_eq!(r["userErrors"], json!([]), "{r}");
    assert_eq!(r["push"]["status"], "PENDING");
    app.shutdown().await;
}
