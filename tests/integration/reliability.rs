//! The fault matrix (issue 7): 2,000 pushes over 20 tenants against a fake ConnectWise that answers
//! 30 % 5xx, 10 % 429 (Retry-After 1–2 s) and 5 % slower than the client timeout, drawn from a fixed
//! seed, never more than 5 faults in a row for one push. Every push must end SUCCEEDED within its
//! budget, attempts never overlap, no call comes before a Retry-After allows, and the attempts we
//! recorded are exactly the requests the fake saw.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use fake_connectwise::{FakeAddition, FakeAgreement, FakeCompany, RandomFaults};
use integration_tests::*;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;

const TENANTS: i64 = 20;
const PER_TENANT: i64 = 100;
/// (module, usage, method): nine slots per customer; SUM is left out so each push's expected
/// quantity is its own constant daily value.
const SLOTS: [(&str, &str, &str); 9] = [
    ("ENTERPRISE_WORKLOADS", "CLOUD_STORAGE", "MAXIMUM"),
    ("ENTERPRISE_WORKLOADS", "EARLY_DELETE_LTR_STORAGE", "AVERAGE"),
    ("ENTERPRISE_WORKLOADS", "LTR_STORAGE", "LAST_DAY"),
    ("MICROSOFT_365", "ACTIVE_USERS", "AVERAGE"),
    ("MICROSOFT_365", "PRESERVED_USERS", "MAXIMUM"),
    ("ENDPOINTS", "ACTIVE_USERS", "LAST_DAY"),
    ("ENDPOINTS", "PRESERVED_USERS", "AVERAGE"),
    ("GOOGLE_WORKSPACE", "ACTIVE_USERS", "MAXIMUM"),
    ("GOOGLE_WORKSPACE", "PRESERVED_USERS", "LAST_DAY"),
];

async fn exec(app: &TestApp, sql: String) {
    app.db.execute_raw(Statement::from_string(DbBackend::Postgres, sql)).await.expect("seed");
}

/// One tenant: customers through the API, the catalog and mappings and a month of samples in bulk.
/// Returns addition id → expected quantity.
async fn seed_tenant(app: &TestApp, t: i64, period: &domain::Period) -> (String, HashMap<i64, i64>) {
    let tenant = format!("fm-{t}");
    app.configure_cw(&tenant).await;
    let tid = app.tenant_id(&tenant).await;
    let customers = (PER_TENANT + SLOTS.len() as i64 - 1) / SLOTS.len() as i64;
    let input: Vec<_> = (0..customers)
        .map(|c| json!({"externalId": format!("c{c}"), "accountName": format!("Customer {c:02}"), "licenses": all_licenses()}))
        .collect();
    let d = app
        .gql_ok(
            &token(&tenant, &["integration"]),
            "mutation($i: [CustomerInput!]!) { upsertCustomers(input: $i) { customers { id externalId } userErrors { code } } }",
            json!({"i": input}),
        )
        .await;
    let ids: Vec<i64> =
        d["upsertCustomers"]["customers"].as_array().expect("customers").iter().map(|c| table_key(c["id"].as_str().expect("id"))).collect();
    let mut expected = HashMap::new();
    let (mut companies, mut agreements, mut additions, mut cmaps, mut pmaps) = (vec![], vec![], vec![], vec![], vec![]);
    for (c, cid) in ids.iter().enumerate() {
        let c = c as i64;
        let company = t * 1000 + c + 1;
        let agreement = 100_000 + company;
        companies.push(format!("({tid},{company},'K{company}','Company {company}','Active',now())"));
        agreements.push(format!("({tid},{agreement},{company},'Agreement','Active',false,now())"));
        cmaps.push(format!("({tid},{cid},{company},now(),now())"));
        app.fake.add_company(FakeCompany {
            id: company,
            identifier: format!("K{company}"),
            name: format!("Company {company}"),
            status: "Active".into(),
            deleted: false,
        });
        app.fake.add_agreement(FakeAgreement {
            id: agreement,
            name: "Agreement".into(),
            company_id: company,
            status: "Active".into(),
            cancelled_flag: false,
            next_invoice_date: None,
        });
        for (k, (module, usage, method)) in SLOTS.iter().enumerate() {
            let k = k as i64;
            if c * SLOTS.len() as i64 + k >= PER_TENANT {
                break;
            }
            let addition = 1_000_000 + company * 10 + k;
            let quantity = 1 + (addition % 997);
            expected.insert(addition, quantity);
            additions.push(format!("({tid},{addition},{agreement},{},{addition},'P{addition}',now())", k + 1));
            pmaps.push(format!(
                "({tid},{cid},'{module}','{usage}','{method}',{agreement},{},{addition},{addition},1,false,now(),now())",
                k + 1
            ));
            app.fake.add_addition(FakeAddition {
                id: addition,
                agreement_id: agreement,
                sequence_number: k + 1,
                product_id: addition,
                product_identifier: format!("P{addition}"),
                quantity: 0,
                cancelled_date: None,
                effective_date: None,
                description: "fault matrix".into(),
                ..FakeAddition::default()
            });
        }
    }
    exec(app, format!("INSERT INTO cw_companies (tenant_id,id,identifier,name,status,refreshed_at) VALUES {}", companies.join(","))).await;
    exec(
        app,
        format!(
            "INSERT INTO cw_agreements (tenant_id,id,company_id,name,status,cancelled_flag,refreshed_at) VALUES {}",
            agreements.join(",")
        ),
    )
    .await;
    exec(
        app,
        format!(
            "INSERT INTO cw_additions (tenant_id,id,agreement_id,sequence_number,product_id,product_identifier,refreshed_at) VALUES {}",
            additions.join(",")
        ),
    )
    .await;
    exec(
        app,
        format!("INSERT INTO customer_mappings (tenant_id,customer_id,cw_company_id,created_at,updated_at) VALUES {}", cmaps.join(",")),
    )
    .await;
    exec(
        app,
        format!(
            "INSERT INTO product_mappings (tenant_id,customer_id,product_module,usage,interval_method,cw_agreement_id,cw_sequence_number,cw_addition_id,cw_product_id,version,stale,created_at,updated_at) VALUES {}",
            pmaps.join(",")
        ),
    )
    .await;
    // Every mapping gets its constant value on every day of the month.
    exec(
        app,
        format!(
            "INSERT INTO consumption_samples (tenant_id,customer_id,product_module,usage,day,value_micros) \
             SELECT m.tenant_id, m.customer_id, m.product_module, m.usage, d::date, (1 + m.cw_addition_id % 997) * 1000000 \
             FROM product_mappings m, generate_series('{}'::date, '{}'::date, interval '1 day') d WHERE m.tenant_id = {tid}",
            period.first_day(),
            period.last_day()
        ),
    )
    .await;
    (tenant, expected)
}

fn addition_of(path: &str) -> Option<i64> {
    let mut it = path.rsplit('/');
    let id = it.next()?.parse().ok()?;
    (it.next()? == "additions").then_some(id)
}

#[tokio::test]
async fn two_thousand_pushes_survive_the_fault_matrix() {
    let app = spawn_app_with(AppOptions {
        with_worker: true,
        env: [
            ("PUSH_CONCURRENCY", "32"),
            ("PUSH_BACKOFF_MIN_MS", "50"),
            ("PUSH_BACKOFF_MAX_MS", "1000"),
            ("CW_TIMEOUT_MS", "1500"),
            ("CW_RATE_PER_TENANT", "1000"),
            ("RECONCILE_STALE_S", "60"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    })
    .await;
    let period = app.latest_closed();
    let mut expected = HashMap::new();
    let mut tenant_of_addition = HashMap::new();
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let (tenant, e) = seed_tenant(&app, t, &period).await;
        for a in e.keys() {
            tenant_of_addition.insert(*a, t);
        }
        expected.extend(e);
        tenants.push(tenant);
    }
    assert_eq!(expected.len() as i64, TENANTS * PER_TENANT);
    app.fake.clear_requests();
    app.fake.set_random_faults(
        20261124,
        RandomFaults {
            p_5xx_permille: 300,
            p_429_permille: 100,
            p_slow_permille: 50,
            retry_after_secs: (1, 2),
            slow: Duration::from_millis(2500),
            max_consecutive_per_path: 5,
        },
    );
    let started = Instant::now();
    let mut runs = Vec::new();
    for tenant in &tenants {
        let d = app
            .gql_ok(
                &token(tenant, &["operator"]),
                "mutation($p: Period!) { runMonthlySync(period: $p) { syncRun { id } userErrors { code message } } }",
                json!({"p": period.to_string()}),
            )
            .await;
        assert_eq!(d["runMonthlySync"]["userErrors"], json!([]), "{d}");
        runs.push((tenant.clone(), d["runMonthlySync"]["syncRun"]["id"].as_str().expect("run").to_string()));
    }
    for (tenant, run) in &runs {
        let done = app.wait_for_run(tenant, run, 600).await;
        assert_eq!(done["status"], "SUCCEEDED", "{tenant}: {done}");
        assert_eq!(done["counts"]["succeeded"], PER_TENANT, "{tenant}: {done}");
    }
    let elapsed = started.elapsed();

    // Exact final quantities.
    for (addition, q) in &expected {
        assert_eq!(app.fake.addition_quantity(*addition), Some(*q), "addition {addition}");
    }
    // No two attempts of one push (addition) ever overlapped.
    assert_eq!(app.fake.max_concurrent_per_addition(), 1);
    let requests: Vec<_> = app.fake.requests().into_iter().filter(|r| addition_of(&r.path).is_some()).collect();
    // No call of a tenant passes its gate after the worker received a 429 and before its
    // Retry-After has passed. "Received" is the worker's own record of that attempt (start +
    // duration); "passed the gate" is each later attempt's `started_at`, taken right after the gate
    // (so the time a loaded machine needs to get the request to the fake does not count). Calls
    // that had passed the gate before the pause was written cannot be recalled and are counted,
    // not failed. Writing the pause is one Redis round trip; on a loaded 2-core machine that can
    // take a while.
    const PAUSE_WRITE: chrono::Duration = chrono::Duration::milliseconds(250);
    let by_request_id: HashMap<&str, &fake_connectwise::RecordedRequest> = requests.iter().map(|r| (r.request_id.as_str(), r)).collect();
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT a.request_id, a.step, a.started_at, a.duration_ms, a.http_status, p.cw_addition_id FROM push_attempts a JOIN pushes p ON p.id = a.push_id WHERE a.request_id IS NOT NULL".to_string(),
        ))
        .await
        .expect("attempts");
    type Window = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>, String);
    let mut pauses: HashMap<i64, Vec<Window>> = HashMap::new();
    let mut passes: Vec<(i64, String, chrono::DateTime<chrono::Utc>)> = Vec::new();
    let mut rows_429 = 0usize;
    for row in &rows {
        let request_id: String = row.try_get("", "request_id").expect("request id");
        let step: String = row.try_get("", "step").expect("step");
        let started: chrono::DateTime<chrono::Utc> = row.try_get("", "started_at").expect("started");
        let duration: i64 = row.try_get("", "duration_ms").expect("duration");
        let status: Option<i32> = row.try_get("", "http_status").expect("status");
        let addition: i64 = row.try_get("", "cw_addition_id").expect("addition");
        let tenant = tenant_of_addition[&addition];
        passes.push((tenant, format!("{step} {request_id}"), started));
        if status != Some(429) {
            continue;
        }
        rows_429 += 1;
        let seen = by_request_id.get(request_id.as_str()).expect("every 429 we recorded was seen by the fake");
        // Both ends on the app's clock: Retry-After counts from the worker's receipt.
        let received = started + chrono::Duration::milliseconds(duration);
        let until = received + chrono::Duration::seconds(seen.retry_after_secs.expect("Retry-After recorded") as i64);
        pauses.entry(tenant).or_default().push((received, until, format!("{step} {request_id}")));
    }
    let (mut early, mut in_flight) = (Vec::new(), 0usize);
    for (tenant, request_id, passed) in &passes {
        for (received, until, cause) in pauses.get(tenant).map(Vec::as_slice).unwrap_or(&[]) {
            if passed < until && *passed > *received - chrono::Duration::seconds(2) {
                if *passed <= *received + PAUSE_WRITE {
                    in_flight += 1;
                } else {
                    early.push((request_id.clone(), cause.clone(), *passed - *received, *until - *passed));
                }
            }
        }
    }
    assert_eq!(rows_429, requests.iter().filter(|r| r.status == 429).count(), "every 429 is an attempt row");
    assert!(
        early.is_empty(),
        "{} calls passed the gate after a 429 was received and before its Retry-After (call, the 429, after receipt, before the end), e.g. {:?}",
        early.len(),
        &early[..early.len().min(5)]
    );
    // Attempts recorded = requests the fake saw. Two kinds of row sent nothing the fake could see:
    // a verification the closed gate held back (recorded for the operator), and a connection that
    // failed before the request went out (a pooled connection the server had just closed).
    let count = |sql: &str| {
        let db = app.db.clone();
        let sql = sql.to_string();
        async move {
            let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.expect("count").expect("row");
            row.try_get::<i64>("", "n").expect("n") as usize
        }
    };
    let attempts = count(
        "SELECT COUNT(*) AS n FROM push_attempts WHERE NOT (step = 'VERIFY_ADDITION' AND http_status IS NULL AND error_message LIKE '%not verified:%')",
    )
    .await;
    let unsent = count("SELECT COUNT(*) AS n FROM push_attempts WHERE request_id IS NULL AND http_status IS NULL AND error_code = 'CW_CONNECT' AND error_message NOT LIKE '%not verified:%'").await;
    if !(attempts - unsent..=attempts).contains(&requests.len()) {
        let breakdown = app
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT k || ': ' || COUNT(*) AS line FROM (SELECT step || ' ' || COALESCE(http_status::text, '-') || ' ' || COALESCE(error_code, '-') || ' ' || COALESCE(LEFT(error_message, 60), '-') AS k FROM push_attempts WHERE request_id IS NULL) t GROUP BY k ORDER BY k".to_string(),
            ))
            .await
            .expect("breakdown");
        let lines: Vec<String> = breakdown.iter().map(|r| r.try_get::<String>("", "line").expect("line")).collect();
        let fake_499 = requests.iter().filter(|r| r.status == 499).count();
        panic!(
            "attempt rows {attempts} ({unsent} connection failures) vs. requests seen by the fake {}; the fake saw {fake_499} abandoned; rows without a request id: {lines:#?}",
            requests.len()
        );
    }
    let faults = requests.iter().filter(|r| r.status != 200).count();
    let statuses: HashSet<u16> = requests.iter().map(|r| r.status).collect();
    assert!(statuses.contains(&429) && statuses.iter().any(|s| *s >= 500), "the matrix injected faults: {statuses:?}");
    // The figures for RELIABILITY.md.
    println!(
        "fault matrix: {} pushes over {TENANTS} tenants, {} requests ({faults} faulted: {} × 429, {} × 5xx, {} abandoned), {in_flight} calls already past the gate when a 429 arrived, {:.1} s",
        expected.len(),
        requests.len(),
        requests.iter().filter(|r| r.status == 429).count(),
        requests.iter().filter(|r| (500..600).contains(&r.status)).count(),
        requests.iter().filter(|r| r.status == 499).count(),
        elapsed.as_secs_f64()
    );
    app.shutdown().await;
}
