//! A tenant with one finished scheduled run whose pushes cover what the dashboard shows: one `DEAD`
//! push with eight failed attempts and a ticket, two `SUCCEEDED`, one `SKIPPED`. Written straight
//! into the database (a real run would need a month of samples and a failing ConnectWise); the
//! mappings and the fake ConnectWise are real, so retrying the dead push succeeds.
//!
//! Shared by the browser test and `tests/integration/dashboard.rs` (included there by path).
use integration_tests::*;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value as DbValue};
use serde_json::json;

pub const CREATE_MAPPING: &str = "mutation($i: ProductMappingInput!) { createProductMapping(input: $i) { productMapping { id cwAdditionId cwProductId } userErrors { code field message } } }";

/// Ids of what [`seed_run_with_dead_push`] wrote: `*_id` are table keys (for SQL), `run`,
/// `dead_push`, `succeeded_push` and `customer_id` the GraphQL global ids (for the API and the page).
#[allow(dead_code)]
pub struct Seeded {
    pub tenant_id: i64,
    pub customer_id: String,
    pub run_id: i64,
    pub run: String,
    pub period: String,
    pub dead_push_id: i64,
    pub dead_push: String,
    pub succeeded_push_id: i64,
    pub succeeded_push: String,
    pub mapping_ids: Vec<i64>,
}

async fn insert_returning_id(app: &TestApp, sql: &str, values: Vec<DbValue>) -> i64 {
    let row = app
        .db
        .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a returned row");
    row.try_get::<i64>("", "id").expect("id")
}

async fn exec(app: &TestApp, sql: &str, values: Vec<DbValue>) {
    app.db.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The month a scheduled run today would be for.
pub fn previous_period(app: &TestApp) -> String {
    app.latest_closed().to_string()
}

/// One push row of the seeded run.
struct PushSeed<'a> {
    mapping_id: i64,
    module: &'a str,
    usage: &'a str,
    method: &'a str,
    addition: i64,
    seq: i64,
    product: i64,
    status: &'a str,
    quantity: Option<i64>,
    value_micros: Option<i64>,
    skip_reason: Option<&'a str>,
}

pub async fn seed_run_with_dead_push(app: &TestApp, tenant: &str) -> Seeded {
    let customer_id = ready_tenant(app, tenant).await;
    app.seed_fake(&standard_catalog());
    let tenant_id = app.tenant_id(tenant).await;
    let operator = app.token(tenant, &["operator"]);
    let wanted = [
        ("MICROSOFT_365", "ACTIVE_USERS", "AVERAGE", 1),
        ("ENDPOINTS", "ACTIVE_USERS", "MAXIMUM", 2),
        ("GOOGLE_WORKSPACE", "ACTIVE_USERS", "LAST_DAY", 3),
        ("MICROSOFT_365", "PRESERVED_USERS", "AVERAGE", 4),
    ];
    let mut mapping_ids = Vec::new();
    for (module, usage, interval, seq) in wanted {
        let input = json!({"customerId": customer_id, "productModule": module, "usage": usage, "interval": interval, "cwAgreementId": 500, "cwSequenceNumber": seq});
        let r = app.gql_ok(&operator, CREATE_MAPPING, json!({"i": input})).await["createProductMapping"].clone();
        assert_eq!(r["userErrors"], json!([]), "{r}");
        mapping_ids.push(table_key(r["productMapping"]["id"].as_str().expect("mapping id")));
    }
    let cid = table_key(&customer_id);
    let period = previous_period(app);
    let now = app.sql_now();
    let run_id = insert_returning_id(
        app,
        &format!("INSERT INTO sync_runs (tenant_id, period, trigger, dry_run, status, requested_by, started_at, aggregated_at, finished_at) \
         VALUES ($1, $2, 'SCHEDULED', FALSE, 'PARTIALLY_FAILED', 'system', {now} - interval '3 hours', {now} - interval '3 hours' + interval '4 seconds', {now} - interval '2 hours') RETURNING id"),
        vec![tenant_id.into(), period.clone().into()],
    )
    .await;
    let seeds = [
        PushSeed {
            mapping_id: mapping_ids[0],
            module: "MICROSOFT_365",
            usage: "ACTIVE_USERS",
            method: "AVERAGE",
            addition: 9001,
            seq: 1,
            product: 701,
            status: "DEAD",
            quantity: Some(42),
            value_micros: Some(41_500_000),
            skip_reason: None,
        },
        PushSeed {
            mapping_id: mapping_ids[1],
            module: "ENDPOINTS",
            usage: "ACTIVE_USERS",
            method: "MAXIMUM",
            addition: 9002,
            seq: 2,
            product: 702,
            status: "SUCCEEDED",
            quantity: Some(17),
            value_micros: Some(17_000_000),
            skip_reason: None,
        },
        PushSeed {
            mapping_id: mapping_ids[2],
            module: "GOOGLE_WORKSPACE",
            usage: "ACTIVE_USERS",
            method: "LAST_DAY",
            addition: 9003,
            seq: 3,
            product: 703,
            status: "SUCCEEDED",
            quantity: Some(230),
            value_micros: Some(230_000_000),
            skip_reason: None,
        },
        PushSeed {
            mapping_id: mapping_ids[3],
            module: "MICROSOFT_365",
            usage: "PRESERVED_USERS",
            method: "AVERAGE",
            addition: 9004,
            seq: 4,
            product: 704,
            status: "SKIPPED",
            quantity: None,
            value_micros: None,
            skip_reason: Some("NO_SAMPLES"),
        },
    ];
    let mut push_ids = Vec::new();
    for s in &seeds {
        let dead = s.status == "DEAD";
        let attempts: i32 = match s.status {
            "DEAD" => 8,
            "SUCCEEDED" => 1,
            _ => 0,
        };
        let id = insert_returning_id(
            app,
            &format!("INSERT INTO pushes (tenant_id, sync_run_id, product_mapping_id, customer_id, period, dry_run, product_module, usage, interval_method, \
               cw_company_id, cw_agreement_id, cw_addition_id, cw_sequence_number, cw_product_id, status, value_micros, quantity, sample_days, \
               fallback, skip_reason, attempts, max_attempts, last_error_code, last_error, last_http_status, ticket_id, created_at, updated_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7, $8, 100, 500, $9, $10, $11, $12, $13, $14, $15, FALSE, $16, $17, 8, $18, $19, $20, $21, \
               {now} - interval '3 hours', {now} - interval '2 hours', {now} - interval '2 hours') RETURNING id"),
            vec![
                tenant_id.into(),
                run_id.into(),
                s.mapping_id.into(),
                cid.into(),
                period.clone().into(),
                s.module.into(),
                s.usage.into(),
                s.method.into(),
                s.addition.into(),
                s.seq.into(),
                s.product.into(),
                s.status.into(),
                s.value_micros.into(),
                s.quantity.into(),
                if s.skip_reason.is_some() { 0i32 } else { 28i32 }.into(),
                s.skip_reason.map(str::to_string).into(),
                attempts.into(),
                dead.then(|| "CW_SERVER_ERROR".to_string()).into(),
                dead.then(|| "ConnectWise answered HTTP 503: Service Unavailable (the maintenance window of the PSA)".to_string()).into(),
                dead.then_some(503i32).into(),
                dead.then_some(7342i64).into(),
            ],
        )
        .await;
        // Each attempt reads the addition, then PATCHes the quantity.
        if attempts > 0 {
            exec(
                app,
                &format!("INSERT INTO push_attempts (push_id, tenant_id, attempt_no, step, started_at, duration_ms, http_status, request_id, quantity, outcome) \
                 SELECT $1, $2, n, 'GET_ADDITION', {now} - interval '3 hours' + n * interval '4 minutes', 80 + 7 * n, 200, 'cw-' || $1 || '-get-' || n, 0, 'OK' \
                 FROM generate_series(1, $3) AS n"),
                vec![id.into(), tenant_id.into(), attempts.into()],
            )
            .await;
            let (status, outcome, code, message): (i32, _, _, _) = if dead {
                (503, "ERROR", Some("CW_SERVER_ERROR"), Some("ConnectWise answered HTTP 503: Service Unavailable"))
            } else {
                (200, "OK", None, None)
            };
            exec(
                app,
                &format!("INSERT INTO push_attempts (push_id, tenant_id, attempt_no, step, started_at, duration_ms, http_status, request_id, quantity, outcome, error_code, error_message) \
                 SELECT $1, $2, n, 'PATCH_QUANTITY', {now} - interval '3 hours' + n * interval '4 minutes' + interval '1 second', 140 + 23 * n, $4, 'cw-' || $1 || '-patch-' || n, $5, $6, $7, $8 \
                 FROM generate_series(1, $3) AS n"),
                vec![
                    id.into(),
                    tenant_id.into(),
                    attempts.into(),
                    status.into(),
                    s.quantity.into(),
                    outcome.into(),
                    code.map(str::to_string).into(),
                    message.map(str::to_string).into(),
                ],
            )
            .await;
        }
        push_ids.push(id);
    }
    Seeded {
        tenant_id,
        customer_id,
        run_id,
        run: global_id(NodeType::SyncRun, run_id),
        period,
        dead_push_id: push_ids[0],
        dead_push: global_id(NodeType::Push, push_ids[0]),
        succeeded_push_id: push_ids[1],
        succeeded_push: global_id(NodeType::Push, push_ids[1]),
        mapping_ids,
    }
}
