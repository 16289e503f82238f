//! Operability: `/metrics` in the Prometheus text format and request ids on every response.
use integration_tests::*;
use serde_json::json;

use crate::dashboard::seed;

/// Every sample line is `name{labels} value` with a numeric value; every family has HELP and TYPE.
fn assert_exposition_format(text: &str) {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "value of {line}");
        let name = series.split('{').next().unwrap_or("");
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'), "{line}");
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f))).unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
        }
    }
}

/// The value of the exact series `series` (name with labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

async fn scrape(app: &TestApp) -> String {
    let res = app.http.get(format!("{}/metrics", app.address)).send().await.expect("scrape");
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    res.text().await.expect("body")
}

#[tokio::test]
async fn metrics_expose_http_graphql_push_run_queue_and_worker_families() {
    let app = spawn_app().await;
    let seeded = seed::seed_run_with_dead_push(&app, "acme-metrics-tenant").await;
    // Some traffic: a health check, a query, a forbidden query, a parse error, an unknown path.
    for _ in 0..3 {
        assert_eq!(app.http.get(format!("{}/healthz", app.address)).send().await.expect("healthz").status().as_u16(), 200);
    }
    app.gql_ok(&token("acme-metrics-tenant", &["viewer"]), "{ me { sub } }", json!({})).await;
    let forbidden = app.gql(&token("acme-metrics-tenant", &["integration"]), "{ systemStatus { workersAlive } }", json!({})).await;
    assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");
    app.gql_raw(Some(&token("acme-metrics-tenant", &["viewer"])), "{ me { sub ", json!({})).await;
    app.gql_raw(
        Some(&token("acme-metrics-tenant", &["operator"])),
        "mutation($id: ID!) { retryPush(id: $id) { userErrors { code } } }",
        json!({"id": seeded.succeeded_push}),
    )
    .await;
    let res = app.http.get(format!("{}/no/such/path-{}", app.address, seeded.run_id)).send().await.expect("404");
    assert_eq!(res.status().as_u16(), 404);

    let text = scrape(&app).await;
    assert_exposition_format(&text);
    for family in [
        "csync_http_requests_total counter",
        "csync_http_request_duration_seconds histogram",
        "csync_graphql_operations_total counter",
        "csync_graphql_errors_total counter",
        "csync_graphql_operation_duration_seconds histogram",
        "csync_pushes gauge",
        "csync_sync_runs gauge",
        "csync_push_attempt_duration_seconds histogram",
        "csync_queue_depth gauge",
        "csync_workers_alive gauge",
        "csync_connectwise_breakers_open gauge",
        "csync_scrape_source_up gauge",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "missing family {family}:\n{text}");
    }
    // HTTP: by matched route pattern, never the raw path. (Counters are process-wide: other tests
    // running in this binary add to them, hence `>=`.)
    assert!(sample(&text, r#"csync_http_requests_total{method="GET",route="/healthz",status="200"}"#).is_some_and(|n| n >= 3.0), "{text}");
    assert!(sample(&text, r#"csync_http_requests_total{method="POST",route="/graphql",status="200"}"#).is_some_and(|n| n >= 3.0));
    assert!(sample(&text, r#"csync_http_requests_total{method="GET",route="unmatched",status="404"}"#).is_some_and(|n| n >= 1.0));
    assert!(!text.contains("/no/such/path"), "a raw path leaked into a label");
    assert!(
        sample(&text, r#"csync_http_request_duration_seconds_bucket{method="GET",route="/healthz",le="+Inf"}"#).is_some_and(|n| n >= 3.0)
    );
    // GraphQL: by operation type and outcome; errors by code.
    assert!(sample(&text, r#"csync_graphql_operations_total{type="query",outcome="ok"}"#).is_some_and(|n| n >= 1.0));
    assert!(sample(&text, r#"csync_graphql_operations_total{type="query",outcome="error"}"#).is_some_and(|n| n >= 1.0));
    assert!(sample(&text, r#"csync_graphql_operations_total{type="mutation",outcome="ok"}"#).is_some_and(|n| n >= 1.0));
    assert!(sample(&text, r#"csync_graphql_errors_total{type="query",code="FORBIDDEN"}"#).is_some_and(|n| n >= 1.0));
    assert!(sample(&text, r#"csync_graphql_errors_total{type="unknown",code="GRAPHQL_PARSE_FAILED"}"#).is_some_and(|n| n >= 1.0));
    // From this app's database: exact.
    assert_eq!(sample(&text, r#"csync_pushes{status="DEAD"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"csync_pushes{status="SUCCEEDED"}"#), Some(2.0));
    assert_eq!(sample(&text, r#"csync_pushes{status="SKIPPED"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"csync_pushes{status="PENDING"}"#), Some(0.0), "every status is present");
    assert_eq!(sample(&text, r#"csync_sync_runs{status="PARTIALLY_FAILED"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"csync_sync_runs{status="RUNNING"}"#), Some(0.0));
    assert_eq!(sample(&text, r#"csync_workers_alive"#), Some(0.0));
    assert_eq!(sample(&text, r#"csync_connectwise_breakers_open"#), Some(0.0));
    // Attempt latency: 8 failed PATCHes (163…324 ms), 10 successful reads; cumulative buckets.
    let b = |step: &str, outcome: &str, le: &str| {
        sample(&text, &format!(r#"csync_push_attempt_duration_seconds_bucket{{step="{step}",outcome="{outcome}",le="{le}"}}"#))
    };
    assert_eq!(b("PATCH_QUANTITY", "ERROR", "+Inf"), Some(8.0), "{text}");
    assert_eq!(b("PATCH_QUANTITY", "ERROR", "0.1"), Some(0.0));
    assert_eq!(b("PATCH_QUANTITY", "ERROR", "0.25"), Some(4.0), "163, 186, 209, 232 ms");
    assert_eq!(b("PATCH_QUANTITY", "ERROR", "0.5"), Some(8.0));
    assert_eq!(sample(&text, r#"csync_push_attempt_duration_seconds_count{step="GET_ADDITION",outcome="OK"}"#), Some(10.0));
    let sum = sample(&text, r#"csync_push_attempt_duration_seconds_sum{step="PATCH_QUANTITY",outcome="ERROR"}"#).expect("sum");
    assert!((sum - 1.948).abs() < 1e-9, "8 × 140 ms + 23 ms × 36 = 1948 ms, got {sum}");
    assert!(text.lines().any(|l| l.starts_with("csync_queue_depth{queue=")), "{text}");
    assert_eq!(sample(&text, r#"csync_scrape_source_up{source="database"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"csync_scrape_source_up{source="queue"}"#), Some(1.0));
    // Aggregates only: no tenant appears.
    assert!(!text.contains("acme-metrics-tenant"));

    // A heartbeat shows up as a live worker; no token is needed to scrape.
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!("INSERT INTO worker_heartbeats (worker_name, started_at, last_seen_at) VALUES ('w-1', {now}, {now})", now = app.sql_now()),
    )
    .await
    .expect("heartbeat");
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "csync_workers_alive"), Some(1.0));
    app.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let app = spawn_app().await;
    let get = |path: &str, id: Option<&str>| {
        let mut req = app.http.get(format!("{}{path}", app.address));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let id_of = |res: &reqwest::Response| res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);

    let res = get("/healthz", Some("trace-42_abc-DEF")).await.expect("get");
    assert_eq!(id_of(&res).as_deref(), Some("trace-42_abc-DEF"));

    let res = get("/healthz", None).await.expect("get");
    let generated = id_of(&res).expect("a generated id");
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let again = id_of(&get("/healthz", None).await.expect("get")).expect("id");
    assert_ne!(generated, again, "a fresh id per request");

    for insane in ["has spaces in it", "semi;colon", &"x".repeat(65)] {
        let res = get("/healthz", Some(insane)).await.expect("get");
        let id = id_of(&res).expect("id");
        assert_ne!(id, insane);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
    // Every kind of response carries one: 404, 401, GraphQL, the dashboard, metrics.
    assert!(id_of(&get("/nope", None).await.expect("get")).is_some());
    assert!(id_of(&get("/dashboard", Some("dash-1")).await.expect("get")).as_deref() == Some("dash-1"));
    assert!(id_of(&get("/metrics", None).await.expect("get")).is_some());
    let res = app
        .http
        .post(format!("{}/graphql", app.address))
        .header("x-request-id", "gql-unauth-1")
        .json(&json!({"query": "{ me { sub } }"}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(id_of(&res).as_deref(), Some("gql-unauth-1"));
    app.shutdown().await;
}
