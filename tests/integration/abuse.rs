//! Abuse resistance (issue 13): what a valid low-privilege token (or none) can make the API do.
//! Query cost is bounded before any work, a tenant's request budget, de-duplicated enqueueing,
//! input strings, short 401 messages, no schema hints, and a tenant sees only its own status.
use std::time::{Duration, Instant};

use futures::future::join_all;
use integration_tests::*;
use serde_json::{Map, Value, json};

/// `levels` fragments, each spreading the previous one twice, the last spread once from `me`: a
/// ~1 KB document standing for 2^levels fields.
fn nested_fragments(levels: usize) -> String {
    let mut doc = String::from("fragment F0 on Principal { sub }\n");
    for i in 1..=levels {
        doc.push_str(&format!("fragment F{i} on Principal {{ ...F{p} ...F{p} }}\n", p = i - 1));
    }
    doc.push_str(&format!("{{ me {{ ...F{levels} }} }}"));
    doc
}

fn first_error(body: &Value) -> (String, String) {
    let e = &body["errors"][0];
    (e["extensions"]["code"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string())
}

async fn healthz_ms(app: &TestApp) -> f64 {
    let started = Instant::now();
    let res = app.http.get(format!("{}/healthz", app.address)).send().await.expect("healthz");
    assert_eq!(res.status().as_u16(), 200);
    started.elapsed().as_secs_f64() * 1000.0
}

/// The issue asks for these two timings. The refusal is the linear pre-check (the document is
/// never expanded), so the margins hold on a loaded machine: the work measured is microseconds.
#[tokio::test]
async fn nested_fragment_documents_are_refused_fast_and_healthz_stays_responsive() {
    let app = spawn_app().await;
    let t = token("acme", &["viewer"]);
    app.gql_ok(&t, "{ me { sub } }", json!({})).await; // the tenant row and a pooled connection
    for levels in [24, 30] {
        let doc = nested_fragments(levels);
        assert!(doc.len() < 2048, "a small document: {} bytes", doc.len());
        let started = Instant::now();
        let body = app.gql(&t, &doc, json!({})).await;
        let elapsed = started.elapsed();
        let (code, message) = first_error(&body);
        assert_eq!(code, "BAD_USER_INPUT", "{body}");
        assert!(message.contains("too complex"), "{body}");
        assert!(elapsed < Duration::from_millis(100), "{levels} levels refused in {elapsed:?}");
    }
    // /healthz while four of them are in flight, over five rounds (the median, so that one
    // scheduler hiccup of a shared CI machine does not decide).
    let mut rounds = Vec::new();
    let heavy_doc = nested_fragments(30);
    for _ in 0..5 {
        let heavy = (0..4).map(|_| app.gql_raw(Some(&t), &heavy_doc, json!({})));
        let (heavy, health) = tokio::join!(join_all(heavy), healthz_ms(&app));
        for (status, body) in heavy {
            assert_eq!((status, first_error(&body).0.as_str()), (200, "BAD_USER_INPUT"), "{body}");
        }
        rounds.push(health);
    }
    rounds.sort_by(f64::total_cmp);
    assert!(rounds[2] < 50.0, "/healthz took {rounds:?} ms while 4 heavy documents were in flight");
    app.shutdown().await;
}

#[tokio::test]
async fn aliases_and_root_fields_are_capped_before_anything_runs() {
    let app = spawn_app().await;
    let t = token("acme", &["admin"]);
    let aliased = |n: usize, field: &str| format!("{{ {} }}", (0..n).map(|i| format!("a{i}: {field}")).collect::<Vec<_>>().join(" "));
    for (n, field) in [(9_000, "systemStatus { workersAlive }"), (2_000, "me { sub }")] {
        let body = app.gql(&t, &aliased(n, field), json!({})).await;
        let (code, message) = first_error(&body);
        assert_eq!(code, "BAD_USER_INPUT", "{field}: {message}");
        assert!(message.contains("too complex") && message.contains("root fields"), "{message}");
        assert!(body["data"].is_null());
    }
    let mutation = format!(
        "mutation {{ {} }}",
        (0..50).map(|i| format!("r{i}: refreshConnectWiseCatalog {{ queued }}")).collect::<Vec<_>>().join(" ")
    );
    let body = app.gql(&t, &mutation, json!({})).await;
    assert_eq!(first_error(&body).0, "BAD_USER_INPUT", "{body}");
    // What fits runs.
    let d = app.gql_ok(&t, &aliased(20, "me { sub }"), json!({})).await;
    assert_eq!(d["a19"]["sub"], "user-of-acme");
    app.shutdown().await;
}

const REFRESH: &str = "mutation { refreshConnectWiseCatalog { queued alreadyQueued requestedAt userErrors { code } } }";

async fn queued_catalog_jobs(app: &TestApp) -> u64 {
    let stats = app.queue.stats().await.expect("queue stats");
    stats.iter().filter(|s| s.queue == "catalog").map(|s| s.ready + s.scheduled).sum()
}

/// The tenant's queued catalog refreshes as `systemStatus` reports them.
async fn catalog_depth(app: &TestApp, tenant: &str) -> Value {
    let s = app.gql_ok(&token(tenant, &["viewer"]), "{ systemStatus { queueDepth { queue waiting } } }", json!({})).await;
    let depth = s["systemStatus"]["queueDepth"].as_array().cloned().unwrap_or_default();
    depth.iter().find(|q| q["queue"] == "catalog").map(|q| q["waiting"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_catalog_refresh_is_queued_once_per_tenant() {
    let app = spawn_app().await;
    app.configure_cw("acme").await;
    app.configure_cw("globex").await;
    let operator = token("acme", &["operator"]);
    // Ten aliased requests in one document, then ten more concurrently: one job.
    let aliased = format!(
        "mutation {{ {} }}",
        (0..10).map(|i| format!("r{i}: refreshConnectWiseCatalog {{ queued alreadyQueued requestedAt }}")).collect::<Vec<_>>().join(" ")
    );
    let d = app.gql_ok(&operator, &aliased, json!({})).await;
    let answers: Vec<&Value> = (0..10).map(|i| &d[format!("r{i}")]).collect();
    assert_eq!(answers.iter().filter(|a| a["alreadyQueued"] == false).count(), 1, "{d}");
    assert!(answers.iter().all(|a| a["queued"] == true && a["requestedAt"] == answers[0]["requestedAt"]), "{d}");
    let concurrent = join_all((0..10).map(|_| app.gql_ok(&operator, REFRESH, json!({})))).await;
    assert!(concurrent.iter().all(|c| c["refreshConnectWiseCatalog"]["alreadyQueued"] == true), "{concurrent:?}");
    assert_eq!(queued_catalog_jobs(&app).await, 1);
    // Another tenant's refresh is not behind acme's.
    let other = app.gql_ok(&token("globex", &["operator"]), REFRESH, json!({})).await;
    assert_eq!(other["refreshConnectWiseCatalog"]["alreadyQueued"], false, "{other}");
    assert_eq!(queued_catalog_jobs(&app).await, 2);
    // The status shows each tenant its own queued refresh.
    assert_eq!(
        (catalog_depth(&app, "acme").await, catalog_depth(&app, "globex").await, catalog_depth(&app, "initech").await),
        (json!(1), json!(1), json!(0))
    );
    // When the job starts (here: run by hand, as a worker would), a new request queues again.
    let tenant_id = app.tenant_id("acme").await;
    let secrets = api::startup::secret_box(&app.settings).expect("secrets");
    let deps = worker::engine_deps(
        app.db.clone(),
        &app.queue.worker_queue(),
        app.settings.clone(),
        secrets,
        api::startup::cw_http(&app.settings).expect("http"),
        std::sync::Arc::new(sync_core::engine::LocalRateLimiter::new(100)),
        app.clock.clone(),
    );
    let report = sync_core::engine::catalog::refresh_catalog(&deps, tenant_id, "test").await.expect("refresh");
    assert_eq!(report.error, None);
    let again = app.gql_ok(&operator, REFRESH, json!({})).await;
    assert_eq!(again["refreshConnectWiseCatalog"]["alreadyQueued"], false, "{again}");
    app.shutdown().await;
}

#[tokio::test]
async fn runs_and_bulk_retries_are_not_duplicated_by_aliases() {
    let app = spawn_app().await;
    let seeded = crate::dashboard::seed::seed_run_with_dead_push(&app, "acme").await;
    let operator = token("acme", &["operator"]);
    // Five dry runs of one period in one document: one run, four RUN_IN_PROGRESS.
    let period = "2025-01";
    let runs = format!(
        "mutation {{ {} }}",
        (0..5)
            .map(|i| format!("r{i}: runMonthlySync(period: \"{period}\", dryRun: true) {{ syncRun {{ id }} userErrors {{ code }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let before = app.count("sync_runs").await;
    let d = app.gql_ok(&operator, &runs, json!({})).await;
    let started = (0..5).filter(|i| d[format!("r{i}")]["syncRun"].is_object()).count();
    let refused = (0..5).filter(|i| d[format!("r{i}")]["userErrors"][0]["code"] == "RUN_IN_PROGRESS").count();
    assert_eq!((started, refused), (1, 4), "{d}");
    assert_eq!(app.count("sync_runs").await, before + 1);
    // Two bulk retries of the run with a dead push: the first retries it, the second finds nothing.
    let retries = format!(
        "mutation {{ a: retryFailedPushes(syncRunId: \"{id}\") {{ pushes {{ id }} userErrors {{ code }} }} \
         b: retryFailedPushes(syncRunId: \"{id}\") {{ pushes {{ id }} userErrors {{ code }} }} }}",
        id = seeded.run
    );
    let d = app.gql_ok(&operator, &retries, json!({})).await;
    assert_eq!(d["a"]["pushes"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d["b"]["pushes"], json!([]), "{d}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_flooding_tenant_gets_429_and_the_others_are_served() {
    let app = spawn_app_with(AppOptions {
        env: vec![("API_RATE_PER_TENANT".into(), "5".into()), ("API_BURST_PER_TENANT".into(), "10".into())],
        ..Default::default()
    })
    .await;
    let flooder = token("flooder", &["viewer"]);
    let other = token("bystander", &["viewer"]);
    // 60 requests at once from one tenant, 8 from another in the middle of them.
    let flood = join_all((0..60).map(|_| {
        app.http
            .post(format!("{}/graphql", app.address))
            .bearer_auth(&flooder)
            .header("accept", "application/graphql-response+json")
            .json(&json!({"query": "{ me { sub } }"}))
            .send()
    }));
    let served = join_all((0..8).map(|_| app.gql_raw(Some(&other), "{ me { tenantId } }", json!({}))));
    let (flood, served) = tokio::join!(flood, served);
    let mut limited = 0;
    for res in flood {
        let res = res.expect("response");
        if res.status().as_u16() == 429 {
            limited += 1;
            let retry_after: u64 = res.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
            assert!((1..=2).contains(&retry_after), "{retry_after}");
            assert!(res.headers()["content-type"].to_str().unwrap_or("").starts_with("application/graphql-response+json"));
            let body: Value = res.json().await.expect("json");
            assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
        } else {
            assert_eq!(res.status().as_u16(), 200);
        }
    }
    assert!(limited >= 30, "only {limited} of 60 flood requests were refused (burst 10, 5/s)");
    for (status, body) in served {
        assert_eq!((status, body["data"]["me"]["tenantId"].clone()), (200, json!("bystander")), "{body}");
    }
    // The budget refills: after Retry-After the flooder is served again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.gql_ok(&flooder, "{ me { sub } }", json!({})).await["me"]["sub"], "user-of-flooder");
    app.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_answers_are_short_and_stable() {
    let app = spawn_app().await;
    let signed = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims("acme", &["admin"]);
        edit(&mut c);
        sign_hs256(&c, JWT_SECRET)
    };
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing bearer token"),
        (Some(signed(&|c| c["exp"] = json!(now() - 120))), "token expired"),
        (Some(signed(&|c| c["nbf"] = json!(now() + 600))), "token not yet valid"),
        (Some(sign_hs256(&claims("acme", &["admin"]), "another-secret-another-secret-another")), "invalid token"),
        (Some(signed(&|c| drop(c.as_object_mut().map(|o| o.remove("sub"))))), "invalid token"),
        (Some(signed(&|c| c["tenant"] = json!("ac\u{0}me"))), "invalid token"),
        (Some(signed(&|c| c["sub"] = json!("al\u{1b}[31mice"))), "invalid token"),
        (Some(signed(&|c| c["tenant"] = json!("t".repeat(5_000)))), "invalid token"),
        (Some("not.a.token".into()), "invalid token"),
    ];
    for (t, expected) in cases {
        let (status, body) = app.gql_raw(t.as_deref(), "{ me { sub } }", json!({})).await;
        assert_eq!(status, 401, "{expected}: {body}");
        assert_eq!(body["errors"][0]["message"], expected, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    assert_eq!(app.count("tenants").await, 0, "no refused claim reached the database");
    app.shutdown().await;
}

#[tokio::test]
async fn suggestions_are_off_when_introspection_is_off() {
    let typo = "{ connectWiseSettings { hasPrivateKe } }";
    let on = spawn_app().await;
    let body = on.gql(&token("acme", &["viewer"]), typo, json!({})).await;
    assert!(body.to_string().contains("Did you mean"), "with introspection the hint is given: {body}");
    on.shutdown().await;
    let off = spawn_app_with(AppOptions { env: vec![("GRAPHQL_INTROSPECTION".into(), "false".into())], ..Default::default() }).await;
    let body = off.gql(&token("acme", &["viewer"]), typo, json!({})).await;
    let text = body.to_string();
    assert!(body["errors"].is_array() && !text.contains("Did you mean") && !text.contains("hasPrivateKey"), "{text}");
    off.shutdown().await;
}

// ------------------------------------------------------------ every String argument of the schema

const INTROSPECT: &str = "{ __schema { queryType { name } mutationType { name } types { kind name \
    fields { name args { name type { ...T } } type { ...T } } inputFields { name type { ...T } } enumValues { name } } } } \
    fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }";

/// The schema as introspection tells it.
struct Schema {
    types: Map<String, Value>,
}

impl Schema {
    fn ty(&self, name: &str) -> &Value {
        &self.types[name]
    }

    /// The GraphQL spelling of a type reference (`[CustomerInput!]!`).
    fn spell(t: &Value) -> String {
        match t["kind"].as_str() {
            Some("NON_NULL") => format!("{}!", Self::spell(&t["ofType"])),
            Some("LIST") => format!("[{}]", Self::spell(&t["ofType"])),
            _ => t["name"].as_str().unwrap_or("").to_string(),
        }
    }

    /// A small valid value of a type; `target` (a path of input field names, `[]` for this
    /// value) is replaced by `bad`.
    fn value(&self, t: &Value, target: Option<&[String]>, bad: &str) -> Value {
        match t["kind"].as_str() {
            Some("NON_NULL") => self.value(&t["ofType"], target, bad),
            Some("LIST") => json!([self.value(&t["ofType"], target, bad)]),
            Some("INPUT_OBJECT") => {
                let mut o = Map::new();
                for f in self.ty(t["name"].as_str().unwrap_or(""))["inputFields"].as_array().into_iter().flatten() {
                    let name = f["name"].as_str().unwrap_or("").to_string();
                    let sub = target.and_then(|p| (p.first() == Some(&name)).then(|| &p[1..]));
                    if sub.is_some() || f["type"]["kind"] == "NON_NULL" {
                        o.insert(name, self.value(&f["type"], sub, bad));
                    }
                }
                Value::Object(o)
            }
            Some("ENUM") => self.ty(t["name"].as_str().unwrap_or(""))["enumValues"][0]["name"].clone(),
            _ => match (t["name"].as_str().unwrap_or(""), target) {
                ("String" | "ID", Some([])) => json!(bad),
                ("Int", _) => json!(1),
                ("Boolean", _) => json!(false),
                ("ID", _) => json!("1"),
                ("Date", _) => json!("2026-01-01"),
                ("Period", _) => json!("2026-01"),
                ("Decimal", _) => json!("1"),
                ("DateTime", _) => json!("2026-01-01T00:00:00Z"),
                _ => json!("x"),
            },
        }
    }

    /// Paths to every String or ID reachable from a type (through lists and input objects).
    fn string_paths(&self, t: &Value, depth: usize) -> Vec<Vec<String>> {
        match t["kind"].as_str() {
            Some("NON_NULL" | "LIST") => self.string_paths(&t["ofType"], depth),
            Some("SCALAR") if matches!(t["name"].as_str(), Some("String" | "ID")) => vec![vec![]],
            Some("INPUT_OBJECT") if depth < 5 => self.ty(t["name"].as_str().unwrap_or(""))["inputFields"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|f| {
                    let name = f["name"].as_str().unwrap_or("").to_string();
                    self.string_paths(&f["type"], depth + 1).into_iter().map(move |mut p| {
                        p.insert(0, name.clone());
                        p
                    })
                })
                .collect(),
            _ => vec![],
        }
    }

    /// The innermost named type of a reference.
    fn named(t: &Value) -> &Value {
        if t["ofType"].is_object() { Self::named(&t["ofType"]) } else { t }
    }
}

/// One request per (root field, String argument path, bad value), built from the schema.
fn string_cases(schema: &Schema, root: &str, op: &str, bad: &str) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for field in schema.ty(root)["fields"].as_array().into_iter().flatten() {
        let fname = field["name"].as_str().unwrap_or("");
        let args = field["args"].as_array().cloned().unwrap_or_default();
        let selection = match Schema::named(&field["type"])["kind"].as_str() {
            Some("OBJECT" | "INTERFACE" | "UNION") => " { __typename }",
            _ => "",
        };
        for target in &args {
            for path in schema.string_paths(&target["type"], 0) {
                let mut vars = Map::new();
                let mut decls = Vec::new();
                let mut uses = Vec::new();
                for a in &args {
                    let name = a["name"].as_str().unwrap_or("");
                    let is_target = a["name"] == target["name"];
                    if !is_target && a["type"]["kind"] != "NON_NULL" {
                        continue;
                    }
                    vars.insert(name.into(), schema.value(&a["type"], is_target.then_some(path.as_slice()), bad));
                    decls.push(format!("${name}: {}", Schema::spell(&a["type"])));
                    uses.push(format!("{name}: ${name}"));
                }
                let query = format!("{op}({}) {{ {fname}({}){selection} }}", decls.join(", "), uses.join(", "));
                let label = [vec![fname.to_string(), target["name"].as_str().unwrap_or("").to_string()], path.clone()].concat().join(".");
                out.push((label, query, Value::Object(vars)));
            }
        }
    }
    out
}

/// Every String and ID argument of every query and mutation — found by introspection, so a new
/// field is covered without touching this test — gets a NUL byte, a 1 MB string and a string at
/// the input cap: never `INTERNAL`, never a 500.
#[tokio::test]
async fn every_string_argument_refuses_nul_and_oversized_values_without_internal_errors() {
    let app = spawn_app().await;
    ready_tenant(&app, "acme").await;
    let admin = token("acme", &["admin"]);
    let data = app.gql_ok(&admin, INTROSPECT, json!({})).await;
    let types: Map<String, Value> = data["__schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| (t["name"].as_str().unwrap_or("").to_string(), t.clone()))
        .collect();
    let schema = Schema { types };
    // Printable characters of several widths, no control character: what a field may legitimately
    // receive, at the limit of any input string.
    let at_cap: String = "aé€😀 _-/%'\"\\".chars().cycle().take(api::graphql::limits::MAX_INPUT_CHARS).collect();
    let values = [("NUL", "before\u{0}after".to_string()), ("1 MB", "x".repeat(1_000_000)), ("at the cap", at_cap)];
    let mut labels = std::collections::BTreeSet::new();
    let mut requests = 0;
    for (kind, bad) in &values {
        let mut cases = string_cases(&schema, "Query", "query", bad);
        cases.extend(string_cases(&schema, "Mutation", "mutation", bad));
        for (label, query, vars) in cases {
            let (status, body) = app.gql_raw(Some(&admin), &query, vars).await;
            requests += 1;
            assert_ne!(status, 500, "{label} ({kind}): {body}");
            for e in body["errors"].as_array().into_iter().flatten() {
                assert_ne!(e["extensions"]["code"], "INTERNAL", "{label} ({kind}): {query}: {body}");
            }
            if *kind != "at the cap" {
                // Refused before anything ran.
                assert_eq!(first_error(&body).0, "BAD_USER_INPUT", "{label} ({kind}): {body}");
            }
            labels.insert(label);
        }
    }
    // The walk found what it must (a broken walk must not pass by finding nothing).
    for must in [
        "upsertCustomers.input.accountName",
        "upsertCustomers.input.externalId",
        "upsertCustomers.input.licenses.addOns",
        "customers.search",
        "customers.after",
        "auditLog.entityType",
        "auditLog.action",
        "configureConnectWise.input.codebase",
        "configureConnectWise.input.siteUrl",
        "recordConsumption.samples.customerExternalId",
        "recordConsumption.samples.day",
        "cwCompanies.search",
        "retryPush.id",
    ] {
        assert!(labels.contains(must), "the schema walk missed {must}: {labels:?}");
    }
    assert!(requests >= 3 * 30, "{requests} requests");
    app.shutdown().await;
}
